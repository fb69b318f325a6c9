//! Distributed mode (`--redis`): a channel's broadcast is packaged on the
//! node its ingest landed on, and any node serves its HLS. The ingest node
//! advertises each broadcast it holds in Redis (`stagecast:channel:<id>:origin`
//! → its node URL, refreshed every [`ADVERTISE_EVERY`], gone
//! [`ADVERTISE_TTL`] after it stops); another node asked for that channel's
//! HLS forwards the request there and streams the answer back, cache
//! headers included, so an HTTP cache in front of all nodes works as with
//! one.
//!
//! A forwarded request carries the node-to-node key (derived from the
//! deployment's shared signing key) and the viewer's address, so the
//! ingest node applies its per-viewer limits to the viewer, not to the
//! forwarding node, and never forwards it again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;

use super::ChannelHub;

/// How often the ingest node renews its channels' entries.
pub const ADVERTISE_EVERY: Duration = Duration::from_secs(3);
/// How long an entry outlives its last renewal.
pub const ADVERTISE_TTL: Duration = Duration::from_secs(10);
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause inside one forwarded answer (a growing segment gets a
/// part every fraction of a second; a blocking reload answers within its timeout).
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest forwarded request in all (a growing segment streams for a few seconds).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const NODE_KEY_HEADER: &str = "x-stagecast-node-key";
const CLIENT_IP_HEADER: &str = "x-stagecast-client-ip";
/// Request headers a player's HLS request may carry that matter to the origin.
const PASSED_REQUEST: [HeaderName; 4] = [header::RANGE, header::ORIGIN, header::IF_NONE_MATCH, header::ACCEPT];
/// Answer headers passed back (the forwarding node sets its own CORS and server time).
const PASSED_ANSWER: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::CONTENT_RANGE,
    header::CONTENT_LENGTH,
    header::ACCEPT_RANGES,
    header::RETRY_AFTER,
];

fn key(channel: &str) -> String {
    format!("stagecast:channel:{channel}:origin")
}

/// This node's view of the other nodes' channels.
#[derive(Clone)]
pub struct Remote {
    inner: Arc<Inner>,
}

struct Inner {
    redis: ConnectionManager,
    /// How other nodes reach this one (`--node-url`).
    own_url: String,
    /// Hex of the node-to-node key.
    node_key: String,
    http: reqwest::Client,
}

/// Why distributed HLS could not start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("HLS across nodes, Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("HLS across nodes, HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl Remote {
    /// Connect to Redis; `own_url` is how other nodes reach this one and
    /// `node_key` the deployment's node-to-node key.
    pub async fn connect(redis_url: &str, own_url: String, node_key: [u8; 32]) -> Result<Self, RemoteError> {
        let client = redis::Client::open(redis_url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let redis = ConnectionManager::new_with_config(client, config).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(REDIS_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let node_key = node_key.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { inner: Arc::new(Inner { redis, own_url: own_url.trim_end_matches('/').to_owned(), node_key, http }) })
    }

    /// Renew this node's entries for the broadcasts `hub` holds.
    pub fn spawn_advertiser(&self, hub: &ChannelHub) {
        let remote = self.clone();
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ADVERTISE_EVERY);
            let mut failures = 0u64;
            loop {
                tick.tick().await;
                let ids = hub.playback_ids();
                if ids.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.set_ex(key(id), &remote.inner.own_url, ADVERTISE_TTL.as_secs()).ignore();
                }
                let mut conn = remote.inner.redis.clone();
                if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                    failures += 1;
                    if failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures, "cannot advertise this node's channels in Redis");
                    }
                }
            }
        });
    }

    /// The viewer's address of a request another node forwarded (carrying
    /// the node-to-node key); `None` for any other request.
    pub fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let presented = headers.get(NODE_KEY_HEADER)?.as_bytes();
        if !constant_time_eq(presented, self.inner.node_key.as_bytes()) {
            return None;
        }
        headers.get(CLIENT_IP_HEADER)?.to_str().ok()?.parse().ok()
    }

    /// The node holding `channel`'s broadcast, if another one does.
    async fn origin_of(&self, channel: &str) -> Option<String> {
        let mut conn = self.inner.redis.clone();
        let url: Option<String> = match redis::cmd("GET").arg(key(channel)).query_async(&mut conn).await {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %e, channel, "cannot look the channel's node up in Redis");
                None
            }
        };
        url.filter(|u| *u != self.inner.own_url)
    }

    /// Serve `path_and_query` of `channel` from the node holding it, or
    /// `None` when no other node does. A request that another node already
    /// forwarded is never forwarded again.
    pub async fn forward(&self, channel: &str, path_and_query: &str, headers: &HeaderMap, client: IpAddr) -> Option<Response> {
        if headers.contains_key(NODE_KEY_HEADER) {
            return None;
        }
        let origin = self.origin_of(channel).await?;
        let mut request = self
            .inner
            .http
            .get(format!("{origin}{path_and_query}"))
            .header(NODE_KEY_HEADER, &self.inner.node_key)
            .header(CLIENT_IP_HEADER, client.to_string());
        for name in PASSED_REQUEST {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value);
            }
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, channel, origin, "the channel's node did not answer");
                let mut r = (StatusCode::BAD_GATEWAY, "the channel's node did not answer").into_response();
                r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                return Some(r);
            }
        };
        let mut response = Response::builder().status(answer.status().as_u16());
        for name in PASSED_ANSWER {
            if let Some(value) = answer.headers().get(&name) {
                response = response.header(name, value);
            }
        }
        let body = Body::from_stream(answer.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)));
        Some(response.body(body).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
