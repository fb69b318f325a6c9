//! The demo backend (`/api`): the endpoints of the IVS multi-host sample
//! backend, so the sample app works with no account. Open to anyone but
//! rate-limited per client IP ([`Throttled`]); disconnect and delete need
//! the group host's own participant token as `Authorization: Bearer`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stagecast_protocol::control::{
    DemoAttributes, DemoChannel, DemoChat, DemoCreateRequest, DemoDeleteRequest, DemoDisconnectRequest,
    DemoJoinRequest, DemoListItem, DemoListRequest, DemoSessionResponse, DemoStageToken,
};
use stagecast_protocol::token::Capability;
use stagecast_protocol::{ParticipantId, StageId};

use super::control::{existing_stage, new_stage};
use crate::http::page::{next_token, page_query, Listing};
use super::{
    capabilities_from, mint_token, revoke_and_disconnect, ApiState, CreateThrottled, Throttled, TokenSpec,
    DEFAULT_TOKEN_MINUTES,
};
use crate::http::{iso8601, BaseUrls, OptionalJson, MAX_NAME_CHARS};
use crate::auth::{self, now_unix};
use crate::channel::recording::RecordingSettings;
use crate::channel;
use crate::chat::{ChatCapability, ChatRole, RoomSettings, TokenSpec as ChatTokenSpec, ROLE_ATTRIBUTE};
use crate::error::{JsonBody, QueryParams};
use crate::store::{DemoGroupRecord, Page};
use crate::AppError;

/// The `/api/list` response header that carries the next page's token
/// (the body stays the sample backend's plain array).
/// How the demo's channels record: a broadcast back within 30 s continues
/// its recording; a thumbnail every 10 s.
const DEMO_RECORDING: RecordingSettings =
    RecordingSettings { recording_reconnect_window_seconds: 30, thumbnail_interval_seconds: Some(10) };

pub const NEXT_TOKEN_HEADER: HeaderName = HeaderName::from_static("next-token");

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/create", post(create))
        .route("/api/join", post(join))
        .route("/api/list", post(list).get(list))
        .route("/api/disconnect", post(disconnect))
        .route("/api/delete", delete(delete_group))
        .route("/api/chat-token", post(viewer_chat_token))
        .route("/api/channels/{id}", get(watch_channel))
}

fn attributes(attrs: &DemoAttributes, is_host: bool) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("username".to_owned(), attrs.username.clone()),
        ("avatarUrl".to_owned(), attrs.avatar_url.clone()),
        ("isHost".to_owned(), is_host.to_string()),
    ])
}

/// The key that lets a group's host join it as its host again: an HMAC of
/// the group id under a key derived from the server's signing key, so the
/// server stores nothing and nobody else can compute it.
fn host_key(state: &ApiState, group_id: &str) -> String {
    use hmac::{Hmac, Mac};
    let key = state.auth.keys.derive_key("stagecast demo host keys v1");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("invariant: HMAC takes any key length");
    mac.update(group_id.as_bytes());
    mac.finalize().into_bytes().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What only the host gets: its channel with the stream key.
fn host_channel(base: &str, channel: channel::store::ChannelRecord) -> DemoChannel {
    DemoChannel {
        playback_url: channel::playback_url(base, &channel.id),
        ingest_endpoint: channel::ingest_endpoint(base, &channel.id),
        stream_key: channel.stream_key,
        id: channel.id,
    }
}

fn group_not_found(group_id: &str) -> AppError {
    AppError::not_found("GROUP_NOT_FOUND", format!("group {group_id} does not exist"))
}

fn existing_group(state: &ApiState, group_id: &str) -> Result<DemoGroupRecord, AppError> {
    state.store.get_demo_group(group_id).map_err(AppError::internal)?.ok_or_else(|| group_not_found(group_id))
}

fn guest_or_host_spec(user_id: String, attrs: &DemoAttributes, is_host: bool) -> TokenSpec {
    TokenSpec {
        user_id,
        attributes: attributes(attrs, is_host),
        capabilities: capabilities_from(None),
        duration_minutes: DEFAULT_TOKEN_MINUTES,
    }
}

/// A chat token for a group member. Members chat as their participant id,
/// never as the user id they sent (anyone can send any user id), with their
/// server-set `role`; see `chat::identity`.
fn chat_token(
    state: &ApiState,
    room_id: &str,
    participant_id: &str,
    attrs: &DemoAttributes,
    role: ChatRole,
) -> Result<String, AppError> {
    let capabilities = match role {
        ChatRole::Host => vec![ChatCapability::SendMessage, ChatCapability::DeleteMessage, ChatCapability::DisconnectUser],
        ChatRole::Guest | ChatRole::Viewer => vec![ChatCapability::SendMessage],
    };
    let spec = ChatTokenSpec {
        user_id: participant_id.to_owned(),
        capabilities,
        attributes: BTreeMap::from([
            ("username".to_owned(), attrs.username.clone()),
            ("avatarUrl".to_owned(), attrs.avatar_url.clone()),
            (ROLE_ATTRIBUTE.to_owned(), role.as_str().to_owned()),
        ]),
        session_minutes: None,
    };
    Ok(state.chat.create_token(room_id, spec, now_unix())?.token)
}

/// What `create` made so far, removed again if a later step fails.
#[derive(Default)]
struct Created {
    stage: Option<StageId>,
    channel: Option<String>,
    room: Option<String>,
}

impl Created {
    fn undo(self, state: &ApiState) {
        if let Some(stage) = self.stage {
            if let Err(e) = state.store.delete_stage(&stage) {
                tracing::warn!(stage = %stage, error = %e, "cannot remove stage after failed create");
            }
        }
        if let Some(channel) = self.channel {
            if let Err(e) = state.channels.delete(&channel) {
                tracing::warn!(channel = %channel, error = %e, "cannot remove channel after failed create");
            }
        }
        if let Some(room) = self.room {
            if let Err(e) = state.chat.delete_room(&room) {
                tracing::warn!(room = %room, error = %e, "cannot remove chat room after failed create");
            }
        }
    }
}

async fn create(
    _: Throttled,
    _: CreateThrottled,
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DemoCreateRequest>,
) -> Result<Json<DemoSessionResponse>, AppError> {
    let mut created = Created::default();
    match create_group(&state, &headers, req, &mut created) {
        Ok(response) => Ok(Json(response)),
        Err(e) => {
            // Leave no hostless stage, channel or room behind (e.g. attributes too large).
            created.undo(&state);
            Err(e)
        }
    }
}

fn create_group(
    state: &ApiState,
    headers: &HeaderMap,
    req: DemoCreateRequest,
    created: &mut Created,
) -> Result<DemoSessionResponse, AppError> {
    let urls = BaseUrls::for_request(&state.config, headers);
    let name: String = format!("{}'s stage", req.attributes.username).chars().take(MAX_NAME_CHARS).collect();
    let stage = new_stage(state, name.clone())?;
    created.stage = Some(stage.id.clone());
    let token = mint_token(state, &urls, &stage.id, guest_or_host_spec(req.user_id.clone(), &req.attributes, true))?;
    // The demo's channels stay public: its watch page has no token to give.
    // They record, so the watch page can list and play past broadcasts.
    let channel = state.channels.create(name.clone(), false, Some(DEMO_RECORDING))?;
    created.channel = Some(channel.id.clone());
    let room = state.chat.create_room(RoomSettings { name: Some(name), ..RoomSettings::default() }, now_unix())?;
    created.room = Some(room.id.clone());
    let chat = chat_token(state, &room.id, &token.participant_id, &req.attributes, ChatRole::Host)?;
    let group = DemoGroupRecord {
        group_id: auth::random_alphanumeric(10),
        stage_id: stage.id.clone(),
        host_user_id: req.user_id,
        host_participant_id: ParticipantId(token.participant_id.clone()),
        host_attributes: BTreeMap::from([
            ("username".to_owned(), req.attributes.username),
            ("avatarUrl".to_owned(), req.attributes.avatar_url),
        ]),
        create_time: now_unix(),
        channel_id: Some(channel.id.clone()),
        room_id: Some(room.id.clone()),
    };
    state.store.create_demo_group(&group).map_err(AppError::internal)?;
    tracing::info!(group = %group.group_id, stage = %stage.id, channel = %channel.id, room = %room.id, "demo group created");
    Ok(DemoSessionResponse {
        host_key: Some(host_key(state, &group.group_id)),
        group_id: group.group_id,
        // The stream key goes to the host only.
        channel: Some(host_channel(urls.http_base(), channel)),
        stage: DemoStageToken { id: stage.id.0, token: token.token, participant_id: token.participant_id },
        chat: Some(DemoChat { id: room.id, token: chat }),
    })
}

/// Whether `/api/join` comes from the group's host: its `hostKey` must be
/// the group's, and the host must not have been removed from the stage.
fn rejoining_host(state: &ApiState, group: &DemoGroupRecord, key: Option<&str>) -> Result<bool, AppError> {
    let Some(key) = key else { return Ok(false) };
    if !auth::constant_time_eq(key, &host_key(state, &group.group_id)) {
        return Err(AppError::forbidden("NOT_HOST", "this hostKey is not the host key of this group"));
    }
    let removed = state
        .store
        .get_participant(&group.stage_id, &group.host_participant_id)
        .map_err(AppError::internal)?
        .is_some_and(|p| p.revoked);
    if removed {
        return Err(AppError::forbidden("PARTICIPANT_DISCONNECTED", "the host was removed from this stage"));
    }
    Ok(true)
}

async fn join(
    _: Throttled,
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DemoJoinRequest>,
) -> Result<Json<DemoSessionResponse>, AppError> {
    let group = existing_group(&state, &req.group_id)?;
    let stage = existing_stage(&state, &group.stage_id)?;
    let is_host = rejoining_host(&state, &group, req.host_key.as_deref())?;
    // A removal sticks: the same user does not walk back in through the invite.
    if !is_host && state.store.user_removed(&stage.id, &req.user_id).map_err(AppError::internal)? {
        return Err(AppError::forbidden("REMOVED", "you were removed from this stage by its host"));
    }
    let urls = BaseUrls::for_request(&state.config, &headers);
    let token =
        mint_token(&state, &urls, &stage.id, guest_or_host_spec(req.user_id.clone(), &req.attributes, is_host))?;
    let role = if is_host { ChatRole::Host } else { ChatRole::Guest };
    let chat = match &group.room_id {
        Some(room) => Some(DemoChat {
            id: room.clone(),
            token: chat_token(&state, room, &token.participant_id, &req.attributes, role)?,
        }),
        None => None,
    };
    // Guests do not go live: no stream key for them.
    let channel = match (&group.channel_id, is_host) {
        (Some(id), true) => Some(host_channel(urls.http_base(), state.channels.get(id)?)),
        _ => None,
    };
    Ok(Json(DemoSessionResponse {
        host_key: is_host.then(|| req.host_key.clone()).flatten(),
        group_id: group.group_id,
        channel,
        stage: DemoStageToken { id: stage.id.0, token: token.token, participant_id: token.participant_id },
        chat,
    }))
}

/// `/api/list`: the newest groups first, a page at a time (`maxResults`,
/// `nextToken`; the next token comes back in the `Next-Token` header), or
/// only `groupId`. Query parameters on `GET`, an optional body on `POST`.
async fn list(
    _: Throttled,
    State(state): State<ApiState>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<DemoListRequest>,
    OptionalJson(body): OptionalJson<DemoListRequest>,
) -> Result<Response, AppError> {
    let req = DemoListRequest {
        max_results: body.max_results.or(query.max_results),
        next_token: body.next_token.or(query.next_token),
        group_id: body.group_id.or(query.group_id),
    };
    let page = page_query(Listing::DemoGroups, req.max_results, req.next_token.as_deref())?;
    let groups = match &req.group_id {
        Some(id) => {
            let group = state.store.get_demo_group(id).map_err(AppError::internal)?;
            Page { items: group.into_iter().collect(), next: None }
        }
        None => state.store.list_demo_groups(page).map_err(AppError::internal)?,
    };
    let urls = BaseUrls::for_request(&state.config, &headers);
    let base = urls.http_base();
    let items: Vec<DemoListItem> = groups
        .items
        .into_iter()
        .map(|g| DemoListItem {
            participant_count: state.stages.participants(&g.stage_id).len(),
            live: g.channel_id.as_deref().is_some_and(|c| state.channels.is_live(c)),
            playback_url: g.channel_id.as_deref().map(|c| channel::playback_url(base, c)),
            group_id: g.group_id,
            stage_id: g.stage_id.0,
            channel_id: g.channel_id,
            room_id: g.room_id,
            stage_attributes: g.host_attributes,
        })
        .collect();
    let mut response = Json(items).into_response();
    if let Some(token) = next_token(Listing::DemoGroups, groups.next) {
        if let Ok(value) = HeaderValue::from_str(&token) {
            response.headers_mut().insert(NEXT_TOKEN_HEADER, value);
        }
    }
    Ok(response)
}

/// The group, if the request's Bearer token is its host's participant
/// token and still good: checked by [`Auth::authorize`](crate::auth::Auth::authorize) like every
/// participant token (signature, expiry, the stage exists, not
/// disconnected), so a host removed through DisconnectParticipant loses
/// host powers with the token.
fn require_host(state: &ApiState, headers: &HeaderMap, group_id: &str) -> Result<DemoGroupRecord, AppError> {
    let token = auth::bearer(headers.get(header::AUTHORIZATION)).ok_or_else(|| {
        AppError::unauthorized("UNAUTHORIZED", "this needs the host's participant token: Authorization: Bearer <token>")
    })?;
    let claims = state.auth.authorize(token, Capability::Join)?;
    let group = existing_group(state, group_id)?;
    // The creator's token, or one the host got back with its host key (the
    // server sets `isHost`; a guest's attributes cannot carry it).
    let host_token = claims.jti == group.host_participant_id.0
        || claims.attributes.get("isHost").is_some_and(|v| v == "true");
    if claims.topic != group.stage_id.0 || !host_token {
        return Err(AppError::forbidden("NOT_HOST", "only the stage's host can do this"));
    }
    Ok(group)
}

async fn disconnect(
    _: Throttled,
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DemoDisconnectRequest>,
) -> Result<Json<Value>, AppError> {
    let group = require_host(&state, &headers, &req.group_id)?;
    let participant = ParticipantId(req.participant_id);
    let reason = req.reason.unwrap_or_else(|| "removed by the host".to_owned());
    let reason: String = reason.chars().take(MAX_NAME_CHARS).collect();
    if !revoke_and_disconnect(&state, &group.stage_id, &participant, &reason)? {
        return Err(AppError::not_found(
            "PARTICIPANT_NOT_FOUND",
            format!("participant {participant} is not in this stage"),
        ));
    }
    tracing::info!(group = %group.group_id, participant = %participant, "guest removed by host");
    Ok(Json(json!({ "status": "success" })))
}

async fn delete_group(
    _: Throttled,
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DemoDeleteRequest>,
) -> Result<Json<Value>, AppError> {
    let group = require_host(&state, &headers, &req.group_id)?;
    remove_group(&state, &group)?;
    tracing::info!(group = %group.group_id, stage = %group.stage_id, "demo group deleted");
    Ok(Json(json!({ "status": "success" })))
}

/// Delete a group with its stage (members are disconnected), channel (a
/// broadcast is stopped) and chat room.
pub(super) fn remove_group(state: &ApiState, group: &DemoGroupRecord) -> Result<(), AppError> {
    let stage: &StageId = &group.stage_id;
    // Deleting the stage removes its groups with it.
    state.store.delete_stage(stage).map_err(AppError::internal)?;
    state.store.delete_demo_group(&group.group_id).map_err(AppError::internal)?;
    state.stages.delete_stage(stage);
    // The channel and room may already be gone (deleted through /v1): not an error here.
    if let Some(channel) = &group.channel_id {
        if let Err(e) = state.channels.delete(channel) {
            tracing::debug!(channel = %channel, error = %e, "group channel not deleted");
        }
    }
    if let Some(room) = &group.room_id {
        if let Err(e) = state.chat.delete_room(room) {
            tracing::debug!(room = %room, error = %e, "group chat room not deleted");
        }
    }
    Ok(())
}

/// `POST /api/chat-token`: a watch-page viewer's token for the group's room.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ViewerChatTokenRequest {
    group_id: String,
    /// A random secret the page keeps (localStorage): the viewer's chat id is
    /// derived from it, so it stays the same across reloads. Without one the
    /// viewer gets a new id every time.
    #[serde(default)]
    viewer_secret: Option<String>,
    /// Refused: the server chooses viewer ids (kept only to say so clearly).
    #[serde(default)]
    user_id: Option<serde_json::Value>,
    #[serde(default)]
    attributes: Option<ViewerChatAttributes>,
    /// A token with no capabilities: the viewer reads but cannot send.
    #[serde(default)]
    view_only: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ViewerChatAttributes {
    #[serde(default)]
    username: String,
}

/// A viewer's chat token: SEND_MESSAGE (or nothing when `viewOnly`), never
/// moderation, `role: viewer`, and a user id the server derives
/// (`viewer-…`, see `chat::identity`), which no stage member and no other
/// viewer can have.
async fn viewer_chat_token(
    _: Throttled,
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ViewerChatTokenRequest>,
) -> Result<Json<Value>, AppError> {
    let group = existing_group(&state, &req.group_id)?;
    let room = group
        .room_id
        .ok_or_else(|| AppError::not_found("ROOM_NOT_FOUND", format!("group {} has no chat room", req.group_id)))?;
    if req.user_id.is_some() {
        return Err(AppError::bad_request(
            "USER_ID_NOT_ALLOWED",
            "the server chooses viewer chat ids; send viewerSecret (a random string the page keeps) instead of userId",
        ));
    }
    let secret = req.viewer_secret.unwrap_or_else(|| auth::random_alphanumeric(32));
    let user_id = state
        .chat
        .viewer_user_id(&room, &secret)
        .map_err(|e| AppError::bad_request("INVALID_VIEWER_SECRET", e.to_string()))?;
    let username = req.attributes.unwrap_or_default().username;
    let spec = ChatTokenSpec {
        user_id: user_id.clone(),
        capabilities: if req.view_only { Vec::new() } else { vec![ChatCapability::SendMessage] },
        attributes: BTreeMap::from([
            ("username".to_owned(), username),
            (ROLE_ATTRIBUTE.to_owned(), ChatRole::Viewer.as_str().to_owned()),
        ]),
        session_minutes: None,
    };
    let minted = state.chat.create_token(&room, spec, now_unix())?;
    let urls = BaseUrls::for_request(&state.config, &headers);
    let endpoint = match urls.events_url.strip_suffix("/v1/stage/events") {
        Some(base) => format!("{base}/v1/chat"),
        None => urls.events_url.replace("/v1/stage/events", "/v1/chat"),
    };
    Ok(Json(json!({
        "roomId": room,
        "userId": user_id,
        "token": minted.token,
        "endpoint": endpoint,
        "sessionExpirationTime": iso8601(minted.expires),
    })))
}

/// `GET /api/channels/{id}`: what a watch page needs to play a channel,
/// any channel (one made through `/v1` too): no stream key, no ingest
/// endpoint, nothing a viewer could broadcast with.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WatchChannel {
    id: String,
    name: String,
    /// `LIVE` or `OFFLINE`, as GetChannel says.
    state: &'static str,
    playback_url: String,
}

async fn watch_channel(
    _: Throttled,
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<WatchChannel>, AppError> {
    let record = state.channels.get(&id)?;
    let urls = BaseUrls::for_request(&state.config, &headers);
    Ok(Json(WatchChannel {
        state: if state.channels.is_live(&record.id) { "LIVE" } else { "OFFLINE" },
        playback_url: channel::playback_url(urls.http_base(), &record.id),
        id: record.id,
        name: record.name,
    }))
}
