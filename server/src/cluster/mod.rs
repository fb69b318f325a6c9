//! Distributed mode (`--redis`): how a node reaches the others. Every node
//! accepts every request; what must happen on one particular node (a
//! stage's event plane and media on the stage's home node, a channel's HLS
//! on its ingest node) is forwarded there ([`forward`]), and Redis says
//! which node that is ([`Cluster::owner`], [`Cluster::claim`]).
//!
//! A forwarded request carries the node-to-node key (derived from the
//! deployment's shared signing key) and the client's address, so the
//! receiving node knows the client and never forwards it again.

pub mod forward;
pub mod registry;
pub mod stages;

pub use registry::{NodeInfo, NodeRegistry, HEARTBEAT_EVERY, NODE_TTL};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use redis::aio::ConnectionManager;

/// Longest a Redis command or connection attempt may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a node renews what it owns.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How long an ownership outlives its last renewal: a node that dies
/// loses its stages and channels this long after.
pub const OWNER_TTL: Duration = Duration::from_secs(10);
pub(crate) const NODE_KEY_HEADER: &str = "x-stagecast-node-key";
pub(crate) const CLIENT_IP_HEADER: &str = "x-stagecast-client-ip";

/// This node's handle on the others. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
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

/// Why distributed mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("distributed mode, Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("distributed mode, HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl Cluster {
    /// Connect to Redis; `own_url` is how other nodes reach this one and
    /// `node_key` the deployment's node-to-node key.
    pub async fn connect(redis_url: &str, own_url: String, node_key: [u8; 32]) -> Result<Self, ClusterError> {
        let client = redis::Client::open(redis_url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT);
        let redis = ConnectionManager::new_with_config(client, config).await?;
        let http = forward::client()?;
        let node_key = node_key.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { inner: Arc::new(Inner { redis, own_url: own_url.trim_end_matches('/').to_owned(), node_key, http }) })
    }

    pub fn own_url(&self) -> &str {
        &self.inner.own_url
    }

    pub(crate) fn node_key(&self) -> &str {
        &self.inner.node_key
    }

    /// A handle on the shared Redis connection.
    pub(crate) fn redis(&self) -> ConnectionManager {
        self.inner.redis.clone()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The client's address of a request another node forwarded (carrying
    /// the node-to-node key); `None` for any other request.
    pub fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let presented = headers.get(NODE_KEY_HEADER)?.to_str().ok()?;
        if !crate::auth::constant_time_eq(presented, &self.inner.node_key) {
            return None;
        }
        headers.get(CLIENT_IP_HEADER)?.to_str().ok()?.parse().ok()
    }

    /// The node that owns `key` now, if any (`None` also when Redis fails: logged).
    pub async fn owner(&self, key: &str) -> Option<String> {
        let mut conn = self.inner.redis.clone();
        match redis::cmd("GET").arg(key).query_async(&mut conn).await {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %e, key, "cannot read an owner from Redis");
                None
            }
        }
    }

    /// The owner of `key`, making it `candidate` (a node's URL) when it has
    /// none. Two nodes claiming at once agree (SET NX). `None` when Redis fails.
    pub async fn claim_for(&self, key: &str, candidate: &str) -> Option<String> {
        let mut conn = self.inner.redis.clone();
        let claimed: Result<Option<String>, _> = redis::cmd("SET")
            .arg(key)
            .arg(candidate)
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(OWNER_TTL.as_secs())
            .query_async(&mut conn)
            .await;
        match claimed {
            // NX with GET answers the value that was there, or nil when it set ours.
            Ok(previous) => Some(previous.unwrap_or_else(|| candidate.to_owned())),
            Err(e) => {
                tracing::warn!(error = %e, key, "cannot claim an owner in Redis");
                None
            }
        }
    }

    /// Keep owning `keys` for another [`OWNER_TTL`]: each one that names
    /// this node or nobody (expired). One another node took over meanwhile
    /// (this node was unreachable) stays that node's.
    pub async fn renew(&self, keys: &[String]) -> Result<(), redis::RedisError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.inner.redis.clone();
        RENEW
            .key(keys)
            .arg(&self.inner.own_url)
            .arg(OWNER_TTL.as_secs())
            .invoke_async::<()>(&mut conn)
            .await
    }

    /// `owner` could not be reached: if `key` still names it, forget that,
    /// so the next [`Cluster::claim`] (this node's, or another's) takes it over.
    pub async fn release_if(&self, key: &str, owner: &str) {
        let mut conn = self.inner.redis.clone();
        if let Err(e) = RELEASE_IF.key(key).arg(owner).invoke_async::<i64>(&mut conn).await {
            tracing::warn!(error = %e, key, "cannot release an unreachable owner in Redis");
        }
    }

    /// Every [`RENEW_EVERY`], renew the keys `owned` names (logging failures).
    pub fn spawn_renewer(&self, what: &'static str, owned: impl Fn() -> Vec<String> + Send + 'static) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_EVERY);
            let mut failures = 0u64;
            loop {
                tick.tick().await;
                if let Err(e) = cluster.renew(&owned()).await {
                    failures += 1;
                    if failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures, what, "cannot renew this node's ownership in Redis");
                    }
                }
            }
        });
    }
}

static RENEW: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "for _, k in ipairs(KEYS) do \
           local v = redis.call('GET', k) \
           if (not v) or v == ARGV[1] then redis.call('SET', k, ARGV[1], 'EX', ARGV[2]) end \
         end \
         return 0",
    )
});

static RELEASE_IF: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
});

