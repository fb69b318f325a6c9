//! Recordings over HTTP: list and delete under `/v1/channels/{id}/recordings`
//! (API key), the same list for players at `/recordings/{id}` (public, or
//! with the channel's playback token if it is private), and playback of
//! every object at `/recordings/{id}/{recording}/{path}` (CORS open).
//!
//! A private channel's recordings take the same playback token as its live
//! stream ([`crate::channel::access`]): the playlist hands out URIs that
//! carry the playback session.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::cors::{Any, CorsLayer};

use super::core::{self, ENDED, PLAYLIST, STARTED, THUMBNAILS};
use super::store::valid_key;
use crate::http::{ApiKey, BaseUrls};
use crate::channel::access::{self, Access, Presented};
use crate::channel::ChannelState;
use crate::AppError;

/// One recording (IVS has no list API for recordings; these are the fields
/// of its metadata files a player needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingView {
    pub id: String,
    pub channel_id: String,
    /// `RECORDING` while broadcasts still go into it, then `ENDED`.
    pub state: String,
    /// ISO 8601.
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Seconds of media in the playlist.
    pub duration_seconds: f64,
    /// The HLS playlist (a VOD once ended).
    pub playback_url: String,
    /// JPEG URLs, oldest first.
    pub thumbnails: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRecordingsResponse {
    /// Newest first.
    pub recordings: Vec<RecordingView>,
}

pub fn router() -> Router<ChannelState> {
    let cors = CorsLayer::new().allow_origin(Any).allow_methods([Method::GET, Method::HEAD, Method::OPTIONS]);
    let public = Router::new()
        .route("/recordings/{id}", get(public_list))
        .route("/recordings/{id}/{recording}/{*path}", get(playback))
        .layer(cors);
    Router::new()
        .route("/v1/channels/{id}/recordings", get(list))
        .route("/v1/channels/{id}/recordings/{recording}", get(get_one).delete(delete))
        .merge(public)
}

fn not_found(recording: &str) -> AppError {
    AppError::not_found("RECORDING_NOT_FOUND", format!("recording {recording} does not exist"))
}

/// Run blocking store work off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, AppError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(AppError::internal(format!("recording store: {e}"))),
        Err(e) => Err(AppError::internal(format!("recording store task: {e}"))),
    }
}

/// Every recording of `channel`, newest first.
async fn recordings(state: &ChannelState, headers: &HeaderMap, channel: &str) -> Result<Vec<RecordingView>, AppError> {
    let store = state.channels.recordings().store().clone();
    let prefix = format!("{channel}/");
    let (keys, docs) = blocking(move || {
        let keys = store.list(&prefix)?;
        let mut docs = HashMap::new();
        for key in keys.iter().filter(|k| k.ends_with(STARTED) || k.ends_with(ENDED) || k.ends_with(PLAYLIST)) {
            if let Some(data) = store.get(key)? {
                docs.insert(key.clone(), data);
            }
        }
        Ok((keys, docs))
    })
    .await?;
    let base = BaseUrls::for_request(&state.config, headers).http_base().to_owned();
    let mut ids: Vec<&str> = keys.iter().filter_map(|k| k.strip_prefix(&format!("{channel}/"))?.split('/').next()).collect();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        let p = core::prefix(channel, id);
        let json = |name: &str| docs.get(&format!("{p}{name}")).and_then(|d| serde_json::from_slice::<serde_json::Value>(d).ok());
        let Some(started) = json(STARTED) else { continue };
        let ended = json(ENDED);
        let text = |v: &serde_json::Value, f: &str| v.get(f).and_then(|s| s.as_str()).map(str::to_owned);
        let duration = docs.get(&format!("{p}{PLAYLIST}")).map_or(0.0, |d| playlist_seconds(&String::from_utf8_lossy(d)));
        let mut thumbs: Vec<(u64, &String)> = keys
            .iter()
            .filter_map(|k| {
                let name = k.strip_prefix(&format!("{p}{THUMBNAILS}"))?;
                Some((name.strip_prefix("thumb")?.strip_suffix(".jpg")?.parse().ok()?, k))
            })
            .collect();
        thumbs.sort();
        let recording = state.channels.recordings().is_recording(channel, id);
        out.push(RecordingView {
            id: id.to_owned(),
            channel_id: channel.to_owned(),
            state: if recording { "RECORDING" } else { "ENDED" }.to_owned(),
            start_time: text(&started, "recording_started_at").unwrap_or_default(),
            end_time: ended.as_ref().and_then(|e| text(e, "recording_ended_at")),
            duration_seconds: (duration * 1000.0).round() / 1000.0,
            playback_url: format!("{base}/recordings/{p}{PLAYLIST}"),
            thumbnails: thumbs.into_iter().map(|(_, k)| format!("{base}/recordings/{k}")).collect(),
        });
    }
    out.sort_by(|a, b| b.start_time.cmp(&a.start_time));
    Ok(out)
}

/// The sum of a playlist's `EXTINF` durations.
pub fn playlist_seconds(playlist: &str) -> f64 {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:")?.split(',').next()?.parse::<f64>().ok())
        .sum()
}

async fn list(
    _: ApiKey,
    State(state): State<ChannelState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ListRecordingsResponse>, AppError> {
    state.channels.get(&id)?;
    Ok(Json(ListRecordingsResponse { recordings: recordings(&state, &headers, &id).await? }))
}

async fn get_one(
    _: ApiKey,
    State(state): State<ChannelState>,
    headers: HeaderMap,
    Path((id, recording)): Path<(String, String)>,
) -> Result<Json<RecordingView>, AppError> {
    state.channels.get(&id)?;
    let all = recordings(&state, &headers, &id).await?;
    all.into_iter().find(|r| r.id == recording).map(Json).ok_or_else(|| not_found(&recording))
}

async fn delete(
    _: ApiKey,
    State(state): State<ChannelState>,
    Path((id, recording)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    state.channels.get(&id)?;
    if !valid_key(&recording) || recording.contains('/') {
        return Err(not_found(&recording));
    }
    let recordings = state.channels.recordings();
    if recordings.is_recording(&id, &recording) {
        return Err(AppError::conflict(
            "RECORDING_IN_PROGRESS",
            format!("recording {recording} is still being written (its reconnect window is open)"),
        ));
    }
    let store = recordings.store().clone();
    let prefix = core::prefix(&id, &recording);
    let removed = blocking(move || store.delete_prefix(&prefix)).await?;
    if removed == 0 {
        return Err(not_found(&recording));
    }
    tracing::info!(channel = %id, %recording, objects = removed, "recording deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// What a player may do with channel `id`'s recordings (403 as JSON otherwise).
fn authorize(state: &ChannelState, id: &str, query: &HashMap<String, String>, headers: &HeaderMap) -> Result<Access, AppError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let presented = Presented { query, origin };
    access::check(&state.channels, &state.auth.keys, id, &presented, crate::auth::now_unix())
}

async fn public_list(
    State(state): State<ChannelState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = state.channels.get(&id) {
        return AppError::from(e).into_response();
    }
    if let Err(refused) = authorize(&state, &id, &query, &headers) {
        return refused.into_response();
    }
    match recordings(&state, &headers, &id).await {
        Ok(recordings) => {
            let mut r = Json(ListRecordingsResponse { recordings }).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => e.into_response(),
    }
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-cache")], message).into_response()
}

async fn playback(
    State(state): State<ChannelState>,
    headers: HeaderMap,
    Path((id, recording, path)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let key = format!("{id}/{recording}/{path}");
    if !valid_key(&key) {
        return plain(StatusCode::NOT_FOUND, "no such file");
    }
    let session = match authorize(&state, &id, &query, &headers) {
        Err(refused) => return refused.into_response(),
        Ok(Access::Open) => None,
        Ok(Access::Granted { session }) => Some(session),
    };
    let content_type = match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mp4") => "video/mp4",
        Some("m4s") => "video/iso.segment",
        Some("jpg") => "image/jpeg",
        Some("json") => "application/json",
        _ => return plain(StatusCode::NOT_FOUND, "no such file"),
    };
    let store = state.channels.recordings().store().clone();
    let k = key.clone();
    let data = match blocking(move || store.get(&k)).await {
        Ok(Some(data)) => data,
        Ok(None) => return plain(StatusCode::NOT_FOUND, "no such file"),
        Err(e) => return e.into_response(),
    };
    let playlist = path.ends_with(".m3u8");
    let ended = !state.channels.recordings().is_recording(&id, &recording);
    // Media never changes once written; the playlist and metadata do until the recording ends.
    let changing = (playlist || path.ends_with(".json")) && !ended;
    let cache = if changing { "no-cache" } else { "public, max-age=31536000, immutable" };
    let body = match (&session, playlist) {
        (Some(session), true) => access::with_session(&String::from_utf8_lossy(&data), session).into_bytes(),
        _ => data,
    };
    let mut r = Response::new(axum::body::Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let cache = if session.is_some() { cache.replacen("public", "private", 1) } else { cache.to_owned() };
    if let Ok(v) = HeaderValue::from_str(&cache) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    r
}
