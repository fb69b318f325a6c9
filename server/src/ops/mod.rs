//! The operator's view: `GET /healthz`, Prometheus `GET /metrics`, the
//! live nodes of a distributed deployment (`GET /v1/nodes`) and webhooks
//! ([`webhook`]).
//!
//! Metrics are read when scraped: gauges from the hubs (one lock each),
//! counters from plain integers the SFU task and the hubs keep, through an
//! [`OpsState`] that holds the hubs. `/metrics` needs the API key as a
//! Bearer token unless `--public-metrics` is set.

pub mod webhook;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub use webhook::EventSink;

use crate::auth::Auth;
use crate::channel::ChannelHub;
use crate::chat::ChatHub;
use crate::cluster::{NodeInfo, NodeRegistry};
use crate::http::ApiKey;
use crate::sfu::SfuHandle;
use crate::stage::StageHub;
use crate::store::Store;
use crate::Config;

/// The kinds of HLS request `/metrics` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HlsKind {
    Playlist,
    Init,
    Part,
    Segment,
    /// A segment requested before it is complete (the IVS Player's
    /// `EXT-X-PREFETCH`), streamed as it grows.
    Prefetch,
    Other,
}

const HLS_KINDS: [(HlsKind, &str); 6] = [
    (HlsKind::Playlist, "playlist"),
    (HlsKind::Init, "init"),
    (HlsKind::Part, "part"),
    (HlsKind::Segment, "segment"),
    (HlsKind::Prefetch, "prefetch"),
    (HlsKind::Other, "other"),
];

/// HLS counters, bumped by the HLS handler.
#[derive(Debug, Default)]
pub struct HlsMetrics {
    requests: [AtomicU64; 6],
    /// Playlist requests being answered now (blocking reloads wait here).
    open_playlists: AtomicU64,
}

impl HlsMetrics {
    pub fn count(&self, kind: HlsKind) {
        if let Some(i) = HLS_KINDS.iter().position(|(k, _)| *k == kind) {
            if let Some(c) = self.requests.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one open playlist request until the guard is dropped.
    pub fn playlist_open(&self) -> OpenPlaylist<'_> {
        self.open_playlists.fetch_add(1, Ordering::Relaxed);
        OpenPlaylist(&self.open_playlists)
    }
}

pub struct OpenPlaylist<'a>(&'a AtomicU64);

impl Drop for OpenPlaylist<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the operator's endpoints keep. Cheap to clone (the areas that
/// count HLS requests or refuse new work while draining hold one).
#[derive(Clone, Default)]
pub struct Ops {
    pub hls: Arc<HlsMetrics>,
    pub webhooks: EventSink,
    /// Set by SIGTERM: existing stages and broadcasts go on until they end,
    /// new ones are refused (`503 SERVER_DRAINING`) and `/healthz` says so,
    /// so a load balancer sends them to another node.
    draining: Arc<AtomicBool>,
}

impl Ops {
    pub fn new(hls: HlsMetrics, webhooks: EventSink) -> Self {
        Self { hls: Arc::new(hls), webhooks, draining: Arc::new(AtomicBool::new(false)) }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// What the operator's endpoints read: [`Ops`], the store (`/healthz`), every
/// hub (the gauges of `/metrics`), [`Auth`] and the configuration (whether
/// `/metrics` needs the API key). Cheap to clone.
#[derive(Clone, FromRef)]
pub struct OpsState {
    pub ops: Ops,
    pub store: Arc<dyn Store>,
    pub stages: StageHub,
    pub sfu: SfuHandle,
    pub chat: ChatHub,
    pub channels: ChannelHub,
    pub auth: Auth,
    pub config: Arc<Config>,
    /// Distributed mode's node registry (`None` on a single node).
    #[from_ref(skip)]
    pub nodes: Option<Arc<NodeRegistry>>,
}

/// Resolves once no stage has members here and no broadcast is on air
/// (checked twice a second): a draining server may exit then.
pub async fn drained(stages: &StageHub, channels: &ChannelHub) {
    loop {
        if stages.counts().stages == 0 && channels.live_count() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `503 SERVER_DRAINING`: what a draining node answers to anything new.
pub fn draining_error(what: &str) -> crate::AppError {
    crate::AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVER_DRAINING",
        format!("this server is shutting down and takes no new {what}; try another node"),
    )
}

pub fn router() -> Router<OpsState> {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).route("/v1/nodes", get(nodes))
}

/// The live nodes (their heartbeat has not expired), `None` on a single node.
async fn live_nodes(state: &OpsState) -> Result<Option<Vec<NodeInfo>>, crate::AppError> {
    let Some(registry) = state.nodes.clone() else { return Ok(None) };
    let live = tokio::task::spawn_blocking(move || registry.live_nodes()).await.map_err(crate::AppError::internal)?;
    Ok(Some(live.map_err(crate::AppError::internal)?))
}

/// `GET /v1/nodes` (API key): `{"distributed": bool, "nodes": [...]}`,
/// every live node of a distributed deployment with its load; empty on a
/// single node.
async fn nodes(_: ApiKey, State(state): State<OpsState>) -> Result<Json<serde_json::Value>, crate::AppError> {
    let live = live_nodes(&state).await?;
    Ok(Json(json!({ "distributed": live.is_some(), "nodes": live.unwrap_or_default() })))
}

/// 200 `{"status":"ok"}` when the store answers a query; 503 with the
/// reason otherwise, or `{"status":"draining"}` after SIGTERM.
async fn healthz(State(state): State<OpsState>) -> Response {
    if state.ops.is_draining() {
        let body = json!({ "status": "draining", "reason": "shutting down: existing stages and broadcasts go on, new ones go elsewhere" });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let store = state.store.clone();
    let probe = tokio::task::spawn_blocking(move || store.list_stages(crate::store::PageQuery::first(1)));
    let reason = match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
        Ok(Ok(Ok(_))) => return Json(json!({ "status": "ok" })).into_response(),
        Ok(Ok(Err(e))) => format!("the store failed: {e}"),
        Ok(Err(_)) => "the store check panicked".to_owned(),
        Err(_) => "the store did not answer within 5 s".to_owned(),
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "reason": reason }))).into_response()
}

async fn metrics(State(state): State<OpsState>, parts: axum::http::request::Parts) -> Response {
    if !state.config.public_metrics {
        let mut parts = parts;
        if let Err(e) = <ApiKey as FromRequestParts<OpsState>>::from_request_parts(&mut parts, &state).await {
            return e.into_response();
        }
    }
    let body = render(&state).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// One metric family: `# HELP`, `# TYPE` and its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The Prometheus text exposition (format 0.0.4).
pub async fn render(state: &OpsState) -> String {
    let mut out = String::with_capacity(4096);
    let stages = state.stages.counts();
    family(&mut out, "stagecast_stages", "gauge", "Stages with at least one member.", &[("", stages.stages)]);
    family(
        &mut out,
        "stagecast_participants",
        "gauge",
        "Stage members (connected or within the reconnect grace), by whether they publish now.",
        &[("state=\"publishing\"", stages.publishing), ("state=\"subscribe_only\"", stages.not_publishing)],
    );
    let by_worker = state.sfu.stats_by_worker().await.unwrap_or_default();
    let sfu: crate::sfu::core::SfuStats = by_worker.iter().copied().sum();
    family(
        &mut out,
        "stagecast_sfu_sessions",
        "gauge",
        "Open SFU media sessions (peer connections).",
        &[("role=\"publish\"", sfu.publish_sessions), ("role=\"subscribe\"", sfu.subscribe_sessions)],
    );
    let per_worker: Vec<(String, u64)> = by_worker
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("worker=\"{i}\""), s.publish_sessions + s.subscribe_sessions))
        .collect();
    let per_worker: Vec<(&str, u64)> = per_worker.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(
        &mut out,
        "stagecast_sfu_worker_sessions",
        "gauge",
        "Open SFU media sessions by worker (a stage's sessions stay on one worker).",
        &per_worker,
    );
    family(&mut out, "stagecast_sfu_forwarded_frames_total", "counter", "Media frames forwarded to subscribers.", &[("", sfu.forwarded_frames)]);
    family(&mut out, "stagecast_sfu_forwarded_bytes_total", "counter", "Media payload bytes forwarded to subscribers.", &[("", sfu.forwarded_bytes)]);
    family(&mut out, "stagecast_sfu_sent_packets_total", "counter", "Datagrams the SFU sent (RTP, RTCP, STUN, DTLS).", &[("", sfu.sent_packets)]);
    family(&mut out, "stagecast_sfu_sent_bytes_total", "counter", "Bytes of the datagrams the SFU sent.", &[("", sfu.sent_bytes)]);
    let chat = state.chat.stats();
    family(&mut out, "stagecast_chat_connections", "gauge", "Open chat connections.", &[("", chat.connections)]);
    family(&mut out, "stagecast_chat_messages_sent_total", "counter", "Chat messages accepted and sent to their room.", &[("", chat.messages_sent)]);
    if let Some(bus) = chat.bus {
        family(&mut out, "stagecast_chat_relays_received_total", "counter", "Room changes received from other nodes through Redis.", &[("", bus.received)]);
        family(&mut out, "stagecast_chat_relays_dropped_total", "counter", "Room changes not published to other nodes (queue full).", &[("", bus.dropped)]);
        family(&mut out, "stagecast_chat_relay_gaps_total", "counter", "Reconnections to Redis that found room changes trimmed from the stream before this node read them.", &[("", bus.gaps)]);
    }
    // A single node counts itself; a registry that does not answer counts 0.
    let nodes = match live_nodes(state).await {
        Ok(Some(live)) => live.len() as u64,
        Ok(None) => 1,
        Err(_) => 0,
    };
    family(&mut out, "stagecast_nodes", "gauge", "Live nodes of the deployment (heartbeat within the TTL); 1 on a single node.", &[("", nodes)]);
    family(&mut out, "stagecast_draining", "gauge", "1 while the server drains after SIGTERM (new stages and broadcasts refused).", &[("", u64::from(state.ops.is_draining()))]);
    family(&mut out, "stagecast_channels_live", "gauge", "Channels on air (live, or waiting for their broadcaster to reconnect).", &[("", state.channels.live_count())]);
    family(&mut out, "stagecast_recording_segments_dropped_total", "counter", "Recording segments dropped because storage fell behind (the recording goes on after a gap).", &[("", state.channels.recordings().dropped())]);
    let hls = &state.ops.hls;
    let by_kind: Vec<(String, u64)> = HLS_KINDS
        .iter()
        .zip(hls.requests.iter())
        .map(|((_, label), c)| (format!("kind=\"{label}\""), c.load(Ordering::Relaxed)))
        .collect();
    let by_kind: Vec<(&str, u64)> = by_kind.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(&mut out, "stagecast_hls_requests_total", "counter", "HLS requests for a channel that plays (offline, refused and limited ones are not counted), by kind.", &by_kind);
    family(
        &mut out,
        "stagecast_hls_viewers",
        "gauge",
        "HLS playlist requests open now: an LL-HLS player holds about one (a blocking reload) at all times.",
        &[("", hls.open_playlists.load(Ordering::Relaxed))],
    );
    let hooks = state.ops.webhooks.stats();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    family(&mut out, "stagecast_webhook_delivered_total", "counter", "Webhook events delivered.", &[("", load(&hooks.delivered))]);
    family(&mut out, "stagecast_webhook_failed_total", "counter", "Webhook events given up on after every try.", &[("", load(&hooks.failed))]);
    family(&mut out, "stagecast_webhook_failed_tries_total", "counter", "Webhook tries that failed.", &[("", load(&hooks.failed_tries))]);
    family(&mut out, "stagecast_webhook_dropped_total", "counter", "Webhook events dropped from a full queue.", &[("", load(&hooks.dropped))]);
    if let Some(rss) = resident_bytes() {
        family(&mut out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", &[("", rss)]);
    }
    out
}

/// `VmRSS` of `/proc/self/status` (Linux only).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}
