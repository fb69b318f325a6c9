//! Distributed mode (`--redis`): a channel's broadcast is packaged on the
//! node its ingest landed on, and any node serves its HLS. The ingest node
//! owns `stagecast:channel:<id>:origin` in Redis while it holds the
//! broadcast (renewed by [`crate::cluster::Cluster::spawn_renewer`]);
//! another node asked for that channel's HLS forwards the request there and
//! streams the answer back with its cache headers, so an HTTP cache in
//! front of all nodes works as with one. The ingest node applies its
//! per-viewer limits to the viewer the forwarding node names. WHIP requests
//! for a channel whose broadcast another node holds go there too, so a
//! broadcaster that reconnects through another node (a load balancer's
//! choice) resumes its broadcast where it is instead of starting a second.
//!
//! Which channels are on air anywhere is a sorted set in Redis
//! (`stagecast:channels:live`, each id scored by when its entry expires):
//! every node adds its own every [`LIVE_SYNC`] and reads the whole set
//! back, so "LIVE" in any node's answers means live on any node. Every 5 s
//! it also reloads which channels are private and the playback keys (a
//! node reads a channel afresh when a broadcast of it starts there).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderName};
use axum::response::Response;

use super::ChannelHub;
use crate::cluster::{forward, Cluster};

/// HLS answer headers passed back (the forwarding node sets its own CORS and server time).
pub const HLS_ANSWER: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::CONTENT_RANGE,
    header::CONTENT_LENGTH,
    header::ACCEPT_RANGES,
    header::RETRY_AFTER,
    header::ETAG,
];

const LIVE_SET: &str = "stagecast:channels:live";
/// How often a node publishes its channels on air and reads everyone's.
pub const LIVE_SYNC: Duration = Duration::from_secs(1);
/// Every this many syncs (5 s), a node reloads which channels are private
/// and the playback keys, so one made on another node applies here too.
const REFRESH_EVERY_SYNCS: u64 = 5;

/// The Redis key naming the node that holds a channel's broadcast.
pub fn key(channel: &str) -> String {
    format!("stagecast:channel:{channel}:origin")
}

/// Keep this node the origin of the broadcasts `hub` holds, and `hub`'s
/// view of the channels on air on other nodes current.
pub fn spawn_renewer(cluster: &Cluster, hub: &ChannelHub) {
    let held = hub.clone();
    cluster.spawn_renewer("channel origins", move || held.playback_ids().iter().map(|id| key(id)).collect());
    let (cluster, hub) = (cluster.clone(), hub.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LIVE_SYNC);
        let mut failures = 0u64;
        for round in 0u64.. {
            tick.tick().await;
            if round % REFRESH_EVERY_SYNCS == 0 {
                let hub = hub.clone();
                match tokio::task::spawn_blocking(move || hub.refresh_from_store()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot reload private channels and playback keys from the store"),
                    Err(_) => {}
                }
            }
            match sync_live(&cluster, &hub.on_air_ids()).await {
                Ok(anywhere) => hub.set_live_anywhere(anywhere),
                Err(e) => {
                    failures += 1;
                    if failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures, "cannot share the channels on air through Redis");
                    }
                }
            }
        }
    });
}

/// Add `ours` to the set of channels on air (for another TTL) and read the set back.
async fn sync_live(cluster: &Cluster, ours: &[String]) -> Result<HashSet<String>, redis::RedisError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let ttl_ms = i64::try_from(crate::cluster::OWNER_TTL.as_millis()).unwrap_or(10_000);
    let mut pipe = redis::pipe();
    pipe.cmd("ZREMRANGEBYSCORE").arg(LIVE_SET).arg("-inf").arg(now_ms).ignore();
    for id in ours {
        pipe.zadd(LIVE_SET, id, now_ms + ttl_ms).ignore();
    }
    pipe.cmd("ZRANGEBYSCORE").arg(LIVE_SET).arg(now_ms).arg("+inf");
    let mut conn = cluster.redis();
    let (ids,): (Vec<String>,) = pipe.query_async(&mut conn).await?;
    Ok(ids.into_iter().collect())
}

/// WHIP answer headers passed back: the session's `Location` and the ICE
/// servers' `Link`s (the broadcaster's ICE goes to the origin).
pub const WHIP_ANSWER: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::LINK];

/// Serve `request` for `channel` from the node holding its broadcast, or
/// `None` when no other node does; `passed`: the answer headers kept. A
/// request that another node already forwarded is never forwarded again.
pub async fn forward(
    cluster: &Cluster,
    channel: &str,
    request: Request,
    client: IpAddr,
    passed: &[HeaderName],
) -> Option<Response> {
    if cluster.forwarded_client(request.headers()).is_some() {
        return None;
    }
    let key = key(channel);
    let origin = cluster.owner(&key).await.filter(|o| o != cluster.own_url())?;
    match forward::http(cluster, &origin, request, client, Some(passed)).await {
        Ok(response) => Some(response),
        Err(forward::Unreachable) => {
            // Its node is gone, and the broadcast with it.
            cluster.release_if(&key, &origin).await;
            None
        }
    }
}
