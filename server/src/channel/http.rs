//! HTTP for channels: the control plane (`/v1/channels…`, API key) and
//! WHIP ingest (`Bearer <streamKey>`); playback is in [`super::hls`].

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, options, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::cors::{Any, CorsLayer};

use super::recording::core::{MAX_RECONNECT_WINDOW_SECS, THUMBNAIL_INTERVAL_SECS};
use super::recording::RecordingSettings;
use super::store::ChannelRecord;
use super::hls::ClientIp;
use super::{ChannelError, ChannelState};
use stagecast_protocol::control::ListRequest;

use crate::http::page::{next_token, page_query, Listing};
use crate::http::{ApiKey, BaseUrls, OptionalJson, MAX_NAME_CHARS};
use crate::auth::now_unix;
use crate::error::{JsonBody, QueryParams};
use crate::{turn, AppError};

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
            ChannelError::PlaybackKeyNotFound(_) => AppError::not_found("PLAYBACK_KEY_NOT_FOUND", e.to_string()),
            ChannelError::PlaybackKeyExists => AppError::conflict("PLAYBACK_KEY_EXISTS", e.to_string()),
            ChannelError::TooManyPlaybackKeys => AppError::conflict("PLAYBACK_KEY_LIMIT", e.to_string()),
            ChannelError::InvalidPublicKey => AppError::bad_request("INVALID_PUBLIC_KEY", e.to_string()),
            ChannelError::Store(_) | ChannelError::Io(_) | ChannelError::Audio(_) => AppError::internal(&e),
        }
    }
}

/// A channel as the control plane shows it (IVS `Channel`, trimmed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub id: String,
    /// `arn:stagecast:ivs:local:channel/{id}`: what a playback token's
    /// `aws:channel-arn` names (the bare id works too).
    pub arn: String,
    pub name: String,
    /// Private: playback needs a playback token (`?token=`), signed by an
    /// imported playback key.
    pub authorized: bool,
    /// The WHIP URL: `POST` an offer here with `Authorization: Bearer <streamKey>`.
    pub ingest_endpoint: String,
    /// The multivariant HLS playlist.
    pub playback_url: String,
    /// `LIVE` (also while waiting for the broadcaster to come back within
    /// the reconnect window) or `OFFLINE`.
    pub state: String,
    /// While live: `HEALTHY`, or `STARVING` while the broadcaster is away
    /// and the reconnect window is open (IVS `StreamHealth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Present when every broadcast is recorded (`/v1/channels/{id}/recordings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_configuration: Option<RecordingConfiguration>,
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

/// `GET /v1/channels` (IVS ListChannels): no stream keys here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListChannelsResponse {
    pub channels: Vec<ChannelView>,
    /// Present when there are more channels: pass it as `nextToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateChannelRequest {
    name: Option<String>,
    /// IVS `authorized`: a private channel (default false).
    authorized: Option<bool>,
    /// Auto-record every broadcast (absent: no recording).
    recording_configuration: Option<RecordingConfiguration>,
}

/// The fields of an IVS recording configuration, given with the channel
/// (see the README for why there is no separate resource).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordingConfiguration {
    /// 0–300 (default 0): a broadcast that resumes within this many seconds
    /// continues the same recording.
    #[serde(default)]
    pub recording_reconnect_window_seconds: u32,
    #[serde(default)]
    pub thumbnail_configuration: Option<ThumbnailConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThumbnailConfiguration {
    /// `INTERVAL` (default) or `DISABLED`.
    #[serde(default)]
    pub recording_mode: Option<String>,
    /// 1–60 (default 60).
    #[serde(default)]
    pub target_interval_seconds: Option<u32>,
}

impl RecordingConfiguration {
    fn settings(self) -> Result<RecordingSettings, AppError> {
        let window = self.recording_reconnect_window_seconds;
        if window > MAX_RECONNECT_WINDOW_SECS {
            return Err(AppError::bad_request(
                "INVALID_RECORDING_CONFIGURATION",
                format!("recordingReconnectWindowSeconds is 0 to {MAX_RECONNECT_WINDOW_SECS}"),
            ));
        }
        let thumbs = self.thumbnail_configuration.unwrap_or(ThumbnailConfiguration { recording_mode: None, target_interval_seconds: None });
        let interval = match thumbs.recording_mode.as_deref().unwrap_or("INTERVAL") {
            "DISABLED" => None,
            "INTERVAL" => {
                let every = thumbs.target_interval_seconds.unwrap_or(60);
                if !THUMBNAIL_INTERVAL_SECS.contains(&every) {
                    return Err(AppError::bad_request(
                        "INVALID_RECORDING_CONFIGURATION",
                        "thumbnailConfiguration.targetIntervalSeconds is 1 to 60",
                    ));
                }
                Some(every)
            }
            _ => {
                return Err(AppError::bad_request(
                    "INVALID_RECORDING_CONFIGURATION",
                    "thumbnailConfiguration.recordingMode is INTERVAL or DISABLED",
                ))
            }
        };
        Ok(RecordingSettings { recording_reconnect_window_seconds: window, thumbnail_interval_seconds: interval })
    }

    fn from_settings(s: RecordingSettings) -> Self {
        let thumbnail_configuration = Some(match s.thumbnail_interval_seconds {
            Some(every) => ThumbnailConfiguration { recording_mode: Some("INTERVAL".to_owned()), target_interval_seconds: Some(every) },
            None => ThumbnailConfiguration { recording_mode: Some("DISABLED".to_owned()), target_interval_seconds: None },
        });
        Self { recording_reconnect_window_seconds: s.recording_reconnect_window_seconds, thumbnail_configuration }
    }
}

/// UpdateChannel: `recordingConfiguration` absent leaves it, `null` stops
/// recording, an object sets it (from the next broadcast on).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateChannelRequest {
    #[serde(default, deserialize_with = "present")]
    recording_configuration: Option<Option<RecordingConfiguration>>,
}

/// A field that is there (`Some`), `null` included (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PutMetadataRequest {
    metadata: String,
}

/// Channel control plane, WHIP ingest and HLS.
pub fn router() -> Router<ChannelState> {
    let whip_cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION, header::CONTENT_TYPE, header::LINK]);
    // OPTIONS outside the CORS layer, which would answer it without Link headers.
    let whip = Router::new()
        .route("/v1/channels/{id}/whip", post(whip_publish))
        .route("/v1/channels/{id}/whip/{session}", delete(whip_delete))
        .layer(DefaultBodyLimit::max(MAX_SDP_BYTES))
        .layer(whip_cors)
        .route("/v1/channels/{id}/whip", options(whip_options))
        .route("/v1/channels/{id}/whip/{session}", options(whip_options));
    Router::new()
        .route("/v1/channels", post(create_channel).get(list_channels))
        .route("/v1/channels/{id}", get(get_channel).patch(update_channel).delete(delete_channel))
        .route("/v1/channels/{id}/metadata", post(put_metadata))
        .route("/v1/channels/{id}/stop", post(stop_stream))
        .merge(whip)
        .merge(super::playback_keys::router())
        .merge(super::recording::router())
        .merge(super::hls::router())
}

/// 204 with CORS preflight headers; with the channel's stream key, also the
/// ICE servers for the broadcaster as `Link` headers (RFC 9725 §4.4).
async fn whip_options(State(state): State<ChannelState>, Path(params): Path<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let servers = params
        .get("id")
        .and_then(|id| broadcaster(&state, id, &headers).ok())
        .map(|id| ice_servers(&state, &id))
        .unwrap_or_default();
    turn::whip_options_response("OPTIONS, POST, DELETE", &servers)
}

/// The broadcaster's STUN/TURN servers; the TURN username names the channel.
fn ice_servers(state: &ChannelState, channel: &str) -> Vec<stagecast_protocol::events::IceServer> {
    turn::ice_servers(&state.config.turn, now_unix(), channel)
}

/// The channel's id if `headers` carry its stream key.
fn broadcaster(state: &ChannelState, id: &str, headers: &HeaderMap) -> Result<String, AppError> {
    let key = stream_key(headers)?;
    let record = state.channels.get(id)?;
    if !crate::auth::constant_time_eq(key, &record.stream_key) {
        return Err(ChannelError::InvalidStreamKey.into());
    }
    Ok(record.id)
}

fn view(state: &ChannelState, headers: &HeaderMap, record: &ChannelRecord) -> ChannelView {
    let urls = BaseUrls::for_request(&state.config, headers);
    let base = urls.http_base();
    ChannelView {
        id: record.id.clone(),
        arn: super::channel_arn(&record.id),
        name: record.name.clone(),
        authorized: record.authorized,
        ingest_endpoint: super::ingest_endpoint(base, &record.id),
        playback_url: super::playback_url(base, &record.id),
        state: if state.channels.is_live(&record.id) { "LIVE" } else { "OFFLINE" }.to_owned(),
        health: state.channels.health(&record.id).map(|h| h.as_str().to_owned()),
        recording_configuration: record.recording.map(RecordingConfiguration::from_settings),
    }
}

async fn create_channel(
    _: ApiKey,
    State(state): State<ChannelState>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<CreateChannelRequest>,
) -> Result<Json<CreateChannelResponse>, AppError> {
    let name = req.name.unwrap_or_default();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_request("INVALID_NAME", format!("name is at most {MAX_NAME_CHARS} characters")));
    }
    let recording = req.recording_configuration.map(RecordingConfiguration::settings).transpose()?;
    let record = state.channels.create(name, req.authorized.unwrap_or(false), recording)?;
    Ok(Json(CreateChannelResponse { channel: view(&state, &headers, &record), stream_key: record.stream_key.clone() }))
}

/// ListChannels, oldest first, a page at a time (`maxResults`, `nextToken`).
async fn list_channels(
    _: ApiKey,
    State(state): State<ChannelState>,
    headers: HeaderMap,
    QueryParams(req): QueryParams<ListRequest>,
) -> Result<Json<ListChannelsResponse>, AppError> {
    let page = page_query(Listing::Channels, req.max_results, req.next_token.as_deref())?;
    let listed = state.channels.list(page)?;
    Ok(Json(ListChannelsResponse {
        channels: listed.items.iter().map(|c| view(&state, &headers, c)).collect(),
        next_token: next_token(Listing::Channels, listed.next),
    }))
}

async fn get_channel(
    _: ApiKey,
    State(state): State<ChannelState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<GetChannelResponse>, AppError> {
    let record = state.channels.get(&id)?;
    Ok(Json(GetChannelResponse { channel: view(&state, &headers, &record) }))
}

async fn update_channel(
    _: ApiKey,
    State(state): State<ChannelState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<UpdateChannelRequest>,
) -> Result<Json<GetChannelResponse>, AppError> {
    let record = match req.recording_configuration {
        None => state.channels.get(&id)?,
        Some(config) => {
            let recording = config.map(RecordingConfiguration::settings).transpose()?;
            state.channels.set_recording(&id, recording)?
        }
    };
    Ok(Json(GetChannelResponse { channel: view(&state, &headers, &record) }))
}

async fn delete_channel(_: ApiKey, State(state): State<ChannelState>, Path(id): Path<String>) -> Result<StatusCode, AppError> {
    state.channels.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_metadata(
    _: ApiKey,
    State(state): State<ChannelState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PutMetadataRequest>,
) -> Result<StatusCode, AppError> {
    state.channels.put_metadata(&id, req.metadata)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop_stream(
    _: ApiKey,
    State(state): State<ChannelState>,
    Path(id): Path<String>,
    client: ClientIp,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state.channels.get(&id)?;
    // Distributed mode: the broadcast may be another node's.
    if let Some(answer) = at_origin(&state, &id, (Method::POST, &uri, &headers), Bytes::new(), client).await {
        return Ok(answer);
    }
    state.channels.stop_broadcast(&id, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The stream key of `Authorization: Bearer <key>` (401 otherwise).
fn stream_key(headers: &HeaderMap) -> Result<&str, AppError> {
    crate::auth::bearer(headers.get(header::AUTHORIZATION))
        .ok_or_else(|| AppError::unauthorized("STREAM_KEY_INVALID", "missing Authorization: Bearer <stream key>"))
}

/// Distributed mode: a WHIP request (or StopStream) for a channel whose
/// broadcast another live node holds is answered there (see [`super::remote`]); `None`: serve
/// it here (this node holds it, nobody does, or the holder is gone).
async fn at_origin(
    state: &ChannelState,
    id: &str,
    (method, uri, headers): (Method, &Uri, &HeaderMap),
    body: Bytes,
    client: ClientIp,
) -> Option<Response> {
    let cluster = state.channels.cluster()?;
    if state.channels.playback(id).is_some() {
        return None;
    }
    let mut request = axum::extract::Request::new(axum::body::Body::from(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers.clone();
    super::remote::forward(cluster, id, request, client.0, &super::remote::WHIP_ANSWER).await
}

async fn whip_publish(
    State(state): State<ChannelState>,
    Path(id): Path<String>,
    client: ClientIp,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, AppError> {
    // Existence and key first: a bad body from an unauthorised caller is a 401.
    broadcaster(&state, &id, &headers)?;
    let key = stream_key(&headers)?;
    if let Ok(bytes) = &body {
        if let Some(answer) = at_origin(&state, &id, (Method::POST, &uri, &headers), bytes.clone(), client).await {
            return Ok(answer);
        }
    }
    // Draining: a broadcast on air (or reconnecting) goes on, a new one goes elsewhere.
    if state.ops.is_draining() && !state.channels.is_live(&id) {
        return Err(crate::ops::draining_error("broadcasts"));
    }
    let body = body.map_err(|r| crate::error::sdp_unreadable(r.status()))?;
    let offer = std::str::from_utf8(&body).map_err(|_| AppError::bad_request("INVALID_SDP", "the offer is not UTF-8"))?;
    let (session, answer) = state.channels.start_broadcast(&id, key, offer)?;
    let location = format!("/v1/channels/{id}/whip/{session}");
    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    turn::add_links(h, &ice_servers(&state, &id));
    Ok(response)
}

async fn whip_delete(
    State(state): State<ChannelState>,
    Path((id, session)): Path<(String, String)>,
    client: ClientIp,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    broadcaster(&state, &id, &headers)?;
    if let Some(answer) = at_origin(&state, &id, (Method::DELETE, &uri, &headers), Bytes::new(), client).await {
        return Ok(answer);
    }
    state.channels.stop_broadcast(&id, Some(&session))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
