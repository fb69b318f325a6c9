//! A stage lives on one node, its home: the event plane (who is on the
//! stage, in what state) and the SFU sessions of its members are there, so
//! its media never crosses nodes. The first node asked for a stage that has
//! no home gives it to the least-loaded live node of the registry (not
//! draining; this node when the registry cannot say) and records that in
//! `stagecast:stage:<id>:home` (SET NX, so nodes asked at once agree). The
//! home renews it while the stage has members; a home that cannot be
//! connected to is released at once, and one that stops renewing loses it
//! [`super::OWNER_TTL`] later, so the members' reconnects (the SDK's
//! reconnect path, through any node) make a live node the new home.
//!
//! Any node accepts the event-plane WebSocket and the WHIP/WHEP requests of
//! any stage: [`route`] finds the stage in the participant token and
//! forwards what belongs to another node there (the WebSocket spliced).
//! Media then flows between the browser and the home node directly: the
//! SDP answer carries the home's ICE candidates.
//!
//! A node about to serve a stage it has no members of (it is, or just
//! became, the stage's home) first puts back the members Redis says the
//! stage had ([`Routing::adopt`]), in their reconnect grace: after a home
//! dies, the members reconnecting through the new one see each other still
//! there, not a leave and a join.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stagecast_protocol::StageId;

use super::{forward, Cluster, NodeRegistry};
use crate::auth::{self, KeyRing};
use crate::config::Config;
use crate::stage::presence::{self, PresenceStore};
use crate::stage::StageHub;
use crate::store::Store;

/// Largest request body forwarded to a stage's home (WHIP/WHEP offers are
/// a few KB; the media routes themselves take at most 64 KiB).
const MAX_FORWARDED_BODY: usize = 128 * 1024;

/// The Redis key naming a stage's home node.
pub fn key(stage: &StageId) -> String {
    format!("stagecast:stage:{}:home", stage.0)
}

/// What [`route`] needs.
#[derive(Clone)]
pub struct Routing {
    pub cluster: Cluster,
    pub keys: Arc<KeyRing>,
    pub stages: StageHub,
    pub config: Arc<Config>,
    /// Where new stages go (least loaded); `None`: to this node.
    pub nodes: Option<Arc<NodeRegistry>>,
    /// Stage presence in Redis, read when this node becomes a stage's home.
    pub presence: Arc<dyn PresenceStore>,
    /// For the participants' revocation and expiry.
    pub store: Arc<dyn Store>,
}

/// Keep this node the home of every stage that has members here.
pub fn spawn_renewer(cluster: &Cluster, stages: &StageHub) {
    let stages = stages.clone();
    cluster.spawn_renewer("stage homes", move || stages.active_stages().iter().map(key).collect());
}

impl Routing {
    /// The node a request for `stage` belongs on: this one when the stage
    /// has members here or this node just became its home; `None` to serve
    /// it here because Redis cannot say (logged by the cluster).
    async fn home(&self, stage: &StageId) -> Option<String> {
        if self.stages.is_active(stage) {
            return None;
        }
        let key = key(stage);
        let home = match self.cluster.owner(&key).await {
            Some(home) => home,
            None => {
                let candidate = self.least_loaded().await.unwrap_or_else(|| self.cluster.own_url().to_owned());
                self.cluster.claim_for(&key, &candidate).await?
            }
        };
        (home != self.cluster.own_url()).then_some(home)
    }

    /// About to serve `stage` here: when it has no members here, put back
    /// those its presence in Redis lists (a previous home's), in their
    /// reconnect grace. Errors are logged: the stage is then served as new.
    async fn adopt(&self, stage: &StageId) {
        if self.stages.is_active(stage) {
            return;
        }
        let (hub, store, presence) = (self.stages.clone(), self.store.clone(), self.presence.clone());
        let grace = crate::stage::reconnect_grace(&self.config);
        let stage = stage.clone();
        let restored = tokio::task::spawn_blocking(move || {
            let rows = presence.load_stage(&stage)?;
            // Checked again: a request that came meanwhile may have adopted it.
            if rows.is_empty() || hub.is_active(&stage) {
                return Ok(None);
            }
            let count = presence::restore_stage(&hub, presence.as_ref(), store.as_ref(), &stage, rows, grace, auth::now_unix())?;
            Ok::<_, crate::store::StoreError>(count.map(|n| (stage, n)))
        })
        .await;
        match restored {
            Ok(Ok(Some((stage, members)))) => {
                tracing::info!(stage = %stage.0, members, "this node is the stage's home now; its members are back in their grace");
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the stage's presence; serving it as new"),
            Err(e) => tracing::warn!(error = %e, "the presence read failed"),
        }
    }

    /// The URL of the live node with the least load, if the registry says.
    async fn least_loaded(&self) -> Option<String> {
        let nodes = self.nodes.clone()?;
        match tokio::task::spawn_blocking(move || nodes.least_loaded()).await {
            Ok(Ok(node)) => node.map(|n| n.node_url).filter(|u| !u.is_empty()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the node registry; the stage stays here");
                None
            }
            Err(_) => None,
        }
    }
}

/// The participant token of an event-plane upgrade (subprotocol) or a media
/// request (`Authorization: Bearer`).
fn token(request: &Request) -> Option<String> {
    auth::subprotocol_token(request.headers()).or_else(|| {
        crate::http::participant_bearer(request.headers()).ok().map(str::to_owned)
    })
}

/// Middleware on the event-plane and media-plane routes: a request for a
/// stage whose home is another node goes there. Requests with no valid
/// token, and requests another node forwarded, are served here (and get
/// this node's answer, e.g. 401).
pub async fn route(State(routing): State<Routing>, request: Request, next: Next) -> Response {
    let forwarded = routing.cluster.forwarded_client(request.headers()).is_some();
    let Some(claims) = token(&request).and_then(|t| routing.keys.verify(&t, auth::now_unix()).ok()) else {
        return next.run(request).await;
    };
    let stage = StageId(claims.topic);
    if forwarded {
        // Another node sent it here: this node is the stage's home.
        routing.adopt(&stage).await;
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
    let client = crate::serve::origin::client_ip(&routing.config, request.headers(), peer)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // A body is read first (WHIP offers are small) so a request can be
    // sent twice: a home that cannot be reached is released, and the stage
    // claimed again (by this node, unless another node was faster).
    let (parts, body) = request.into_parts();
    let upgrade = forward::is_upgrade(&parts.headers);
    let body = if upgrade {
        Bytes::new()
    } else {
        match axum::body::to_bytes(body, MAX_FORWARDED_BODY).await {
            Ok(bytes) => bytes,
            Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
        }
    };
    let mut parts = parts;
    for _ in 0..2 {
        let Some(home) = routing.home(&stage).await else { break };
        if upgrade {
            match forward::upgrade(&routing.cluster, &home, Request::from_parts(parts, Body::empty()), client).await {
                Ok(response) => return response,
                Err((forward::Unreachable, request)) => parts = request.into_parts().0,
            }
        } else {
            let request = Request::from_parts(parts.clone(), Body::from(body.clone()));
            if let Ok(response) = forward::http(&routing.cluster, &home, request, client, None).await {
                return response;
            }
        }
        tracing::warn!(stage = %stage.0, home, "the stage's home node cannot be reached; releasing it");
        routing.cluster.release_if(&key(&stage), &home).await;
    }
    routing.adopt(&stage).await;
    next.run(Request::from_parts(parts, Body::from(body))).await
}
