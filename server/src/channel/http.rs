//! HTTP for channels: the control plane (`/v1/channels…`, API key), WHIP
//! ingest (`Bearer <streamKey>`) and LL-HLS playback under `/hls/{id}/`
//! (no auth, CORS open, blocking playlist reload).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::cors::{Any, CorsLayer};

use super::packager::{MediaName, PartLookup, Readiness};
use super::store::ChannelRecord;
use super::{Broadcast, ChannelError};
use crate::api::{ApiKey, BaseUrls, OptionalJson, MAX_NAME_CHARS};
use crate::error::JsonBody;
use crate::{AppError, AppState};

/// Largest SDP offer accepted.
const MAX_SDP_BYTES: usize = 64 * 1024;

impl From<ChannelError> for AppError {
    fn from(e: ChannelError) -> Self {
        match &e {
            ChannelError::NotFound(_) => AppError::not_found("CHANNEL_NOT_FOUND", e.to_string()),
            ChannelError::NotBroadcasting(_) => AppError::not_found("CHANNEL_NOT_BROADCASTING", e.to_string()),
            ChannelError::BroadcastInProgress(_) => AppError::conflict("STREAM_IN_PROGRESS", e.to_string()),
            ChannelError::InvalidStreamKey => AppError::unauthorized("STREAM_KEY_INVALID", e.to_string()),
            ChannelError::InvalidSdp(_) => AppError::bad_request("INVALID_SDP", e.to_string()),
            ChannelError::SessionNotFound => AppError::not_found("SESSION_NOT_FOUND", e.to_string()),
            ChannelError::MetadataTooLarge => AppError::bad_request("INVALID_METADATA", e.to_string()),
            ChannelError::Store(_) | ChannelError::Io(_) | ChannelError::Audio(_) => AppError::internal(&e),
        }
    }
}

/// A channel as the control plane shows it (IVS `Channel`, trimmed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub id: String,
    pub name: String,
    /// The WHIP URL: `POST` an offer here with `Authorization: Bearer <streamKey>`.
    pub ingest_endpoint: String,
    /// The multivariant HLS playlist.
    pub playback_url: String,
    /// `LIVE` or `OFFLINE`.
    pub state: String,
}

/// `POST /v1/channels` → the channel and its stream key (shown only here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateChannelResponse {
    pub channel: ChannelView,
    pub stream_key: String,
}

/// `GET /v1/channels/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetChannelResponse {
    pub channel: ChannelView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateChannelRequest {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutMetadataRequest {
    metadata: String,
}

/// Channel control plane, WHIP ingest and HLS.
pub fn router() -> Router<AppState> {
    let whip_cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION, header::CONTENT_TYPE]);
    let whip = Router::new()
        .route("/v1/channels/{id}/whip", post(whip_publish).options(options))
        .route("/v1/channels/{id}/whip/{session}", delete(whip_delete).options(options))
        .layer(DefaultBodyLimit::max(MAX_SDP_BYTES))
        .layer(whip_cors);
    let hls_cors = CorsLayer::new().allow_origin(Any).allow_methods([Method::GET, Method::HEAD, Method::OPTIONS]);
    let hls = Router::new().route("/hls/{id}/{file}", get(hls_file)).layer(hls_cors);
    Router::new()
        .route("/v1/channels", post(create_channel))
        .route("/v1/channels/{id}", get(get_channel).delete(delete_channel))
        .route("/v1/channels/{id}/metadata", post(put_metadata))
        .route("/v1/channels/{id}/stop", post(stop_stream))
        .merge(whip)
        .merge(hls)
}

async fn options() -> Response {
    (StatusCode::NO_CONTENT, [(header::ALLOW, "OPTIONS, POST, DELETE")]).into_response()
}

/// `http://host` of this server, as the stage URLs are built.
fn http_base(state: &AppState, headers: &HeaderMap) -> String {
    let whip = BaseUrls::for_request(state, headers).whip_url;
    whip.strip_suffix("/v1/stage/whip").unwrap_or(&whip).to_owned()
}

fn view(state: &AppState, headers: &HeaderMap, record: &ChannelRecord) -> ChannelView {
    let base = http_base(state, headers);
    ChannelView {
        id: record.id.clone(),
        name: record.name.clone(),
        ingest_endpoint: super::ingest_endpoint(&base, &record.id),
        playback_url: super::playback_url(&base, &record.id),
        state: if state.channels.is_live(&record.id) { "LIVE" } else { "OFFLINE" }.to_owned(),
    }
}

async fn create_channel(
    _: ApiKey,
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<CreateChannelRequest>,
) -> Result<Json<CreateChannelResponse>, AppError> {
    let name = req.name.unwrap_or_default();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_request("INVALID_NAME", format!("name is at most {MAX_NAME_CHARS} characters")));
    }
    let record = state.channels.create(name)?;
    Ok(Json(CreateChannelResponse { channel: view(&state, &headers, &record), stream_key: record.stream_key.clone() }))
}

async fn get_channel(
    _: ApiKey,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<GetChannelResponse>, AppError> {
    let record = state.channels.get(&id)?;
    Ok(Json(GetChannelResponse { channel: view(&state, &headers, &record) }))
}

async fn delete_channel(_: ApiKey, State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, AppError> {
    state.channels.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_metadata(
    _: ApiKey,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PutMetadataRequest>,
) -> Result<StatusCode, AppError> {
    state.channels.put_metadata(&id, req.metadata)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop_stream(_: ApiKey, State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, AppError> {
    state.channels.get(&id)?;
    state.channels.stop_broadcast(&id, None)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The stream key of `Authorization: Bearer <key>` (401 otherwise).
fn stream_key(headers: &HeaderMap) -> Result<&str, AppError> {
    crate::auth::bearer(headers.get(header::AUTHORIZATION))
        .ok_or_else(|| AppError::unauthorized("STREAM_KEY_INVALID", "missing Authorization: Bearer <stream key>"))
}

async fn whip_publish(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, AppError> {
    let key = stream_key(&headers)?;
    // Existence and key first: a bad body from an unauthorised caller is a 401.
    let record = state.channels.get(&id)?;
    if !crate::auth::constant_time_eq(key, &record.stream_key) {
        return Err(ChannelError::InvalidStreamKey.into());
    }
    let body = body.map_err(|e| AppError::bad_request("INVALID_SDP", format!("cannot read the offer: {e}")))?;
    let offer = std::str::from_utf8(&body).map_err(|_| AppError::bad_request("INVALID_SDP", "the offer is not UTF-8"))?;
    let (session, answer) = state.channels.start_broadcast(&id, key, offer)?;
    let location = format!("/v1/channels/{id}/whip/{session}");
    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn whip_delete(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let key = stream_key(&headers)?;
    let record = state.channels.get(&id)?;
    if !crate::auth::constant_time_eq(key, &record.stream_key) {
        return Err(ChannelError::InvalidStreamKey.into());
    }
    state.channels.stop_broadcast(&id, Some(&session))?;
    Ok(StatusCode::NO_CONTENT)
}

const PLAYLIST: &str = "application/vnd.apple.mpegurl";

fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-cache")], message).into_response()
}

fn reply(content_type: &'static str, cache: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

enum Wait<T> {
    Done(T),
    Bad,
}

/// Re-evaluate `check` on every packager change until it answers or `timeout` passes.
async fn wait_for<T>(
    b: &Broadcast,
    timeout: Duration,
    mut check: impl FnMut(&mut super::packager::Packager) -> Option<Wait<T>>,
) -> Option<Wait<T>> {
    let mut changes = b.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        changes.borrow_and_update();
        if let Some(v) = b.with_packager(&mut check) {
            return Some(v);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return b.with_packager(&mut check),
        }
    }
}

fn parse_blocking(query: &HashMap<String, String>) -> Result<Option<(u64, Option<u32>)>, ()> {
    let msn = query.get("_HLS_msn").map(|v| v.parse::<u64>()).transpose().map_err(|_| ())?;
    let part = query.get("_HLS_part").map(|v| v.parse::<u32>()).transpose().map_err(|_| ())?;
    match (msn, part) {
        (None, Some(_)) => Err(()),
        (None, None) => Ok(None),
        (Some(m), p) => Ok(Some((m, p))),
    }
}

async fn hls_file(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(b) = state.channels.playback(&id) else {
        return plain(StatusCode::NOT_FOUND, "channel is offline");
    };
    serve(&b, &file, &query).await
}

async fn serve(b: &Arc<Broadcast>, file: &str, query: &HashMap<String, String>) -> Response {
    let timeout = b.with_packager(|p| p.config().blocking_timeout());
    match file {
        "index.m3u8" | "media.m3u8" => {
            let Ok(blocking) = parse_blocking(query) else {
                return plain(StatusCode::BAD_REQUEST, "malformed _HLS_msn / _HLS_part");
            };
            let multivariant = file == "index.m3u8";
            let result = wait_for(b, timeout, |p| {
                if !p.has_media() && !p.is_ended() {
                    return None;
                }
                if let (Some((msn, part)), false) = (blocking, multivariant) {
                    match p.playlist_ready(msn, part) {
                        Readiness::Ready => {}
                        Readiness::Wait => return None,
                        Readiness::BadRequest => return Some(Wait::Bad),
                    }
                }
                Some(Wait::Done(if multivariant { p.multivariant_playlist() } else { p.media_playlist() }))
            })
            .await;
            // Blocking responses name one playlist version, so caches may keep them briefly.
            let cache = if blocking.is_some() { "public, max-age=2" } else { "no-cache" };
            match result {
                Some(Wait::Done(text)) => reply(PLAYLIST, cache, text),
                Some(Wait::Bad) => plain(StatusCode::BAD_REQUEST, "_HLS_msn / _HLS_part is too far ahead"),
                None => plain(StatusCode::SERVICE_UNAVAILABLE, "the requested playlist update did not arrive in time"),
            }
        }
        name if name.starts_with("init") && name.ends_with(".mp4") => {
            let version = name.trim_start_matches("init").trim_end_matches(".mp4");
            let parsed = if version.is_empty() { Ok(0) } else { version.parse::<u32>() };
            let Ok(version) = parsed else {
                return plain(StatusCode::NOT_FOUND, "no such file");
            };
            let result = wait_for(b, timeout, |p| p.init_version(version).map(|i| Wait::Done(i.to_vec()))).await;
            match result {
                // The same URL serves each broadcast's init: revalidate.
                Some(Wait::Done(init)) => reply("video/mp4", "no-cache", init),
                _ => plain(StatusCode::NOT_FOUND, "no init segment yet"),
            }
        }
        name => match super::packager::Packager::parse_media_name(name) {
            Some(MediaName::Segment(msn)) => match b.with_packager(|p| p.segment(msn)) {
                Some(data) => reply("video/iso.segment", "public, max-age=3600, immutable", data),
                None => plain(StatusCode::NOT_FOUND, "no such segment"),
            },
            Some(MediaName::Part(msn, n)) => {
                let result = wait_for(b, timeout, |p| match p.part(msn, n) {
                    PartLookup::Ready(data) => Some(Wait::Done(data)),
                    PartLookup::Upcoming => None,
                    PartLookup::Missing => Some(Wait::Bad),
                })
                .await;
                match result {
                    Some(Wait::Done(data)) => reply("video/iso.segment", "public, max-age=3600, immutable", data),
                    _ => plain(StatusCode::NOT_FOUND, "no such part"),
                }
            }
            None => plain(StatusCode::NOT_FOUND, "no such file"),
        },
    }
}
