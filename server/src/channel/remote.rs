//! Distributed mode (`--redis`): a channel's broadcast is packaged on the
//! node its ingest landed on, and any node serves its HLS. The ingest node
//! owns `stagecast:channel:<id>:origin` in Redis while it holds the
//! broadcast (renewed by [`crate::cluster::Cluster::spawn_renewer`]);
//! another node asked for that channel's HLS forwards the request there and
//! streams the answer back with its cache headers, so an HTTP cache in
//! front of all nodes works as with one. The ingest node applies its
//! per-viewer limits to the viewer the forwarding node names.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{header, HeaderName};
use axum::response::Response;

use super::ChannelHub;
use crate::cluster::{forward, Cluster};

/// Answer headers passed back (the forwarding node sets its own CORS and server time).
const PASSED_ANSWER: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::CONTENT_RANGE,
    header::CONTENT_LENGTH,
    header::ACCEPT_RANGES,
    header::RETRY_AFTER,
    header::ETAG,
];

/// The Redis key naming the node that holds a channel's broadcast.
pub fn key(channel: &str) -> String {
    format!("stagecast:channel:{channel}:origin")
}

/// Keep this node the origin of the broadcasts `hub` holds.
pub fn spawn_renewer(cluster: &Cluster, hub: &ChannelHub) {
    let hub = hub.clone();
    cluster.spawn_renewer("channel origins", move || hub.playback_ids().iter().map(|id| key(id)).collect());
}

/// Serve `request` for `channel` from the node holding its broadcast, or
/// `None` when no other node does. A request that another node already
/// forwarded is never forwarded again.
pub async fn forward(cluster: &Cluster, channel: &str, request: Request, client: IpAddr) -> Option<Response> {
    if cluster.forwarded_client(request.headers()).is_some() {
        return None;
    }
    let origin = cluster.owner(&key(channel)).await.filter(|o| o != cluster.own_url())?;
    Some(forward::http(cluster, &origin, request, client, Some(&PASSED_ANSWER)).await)
}
