//! The demo backend (`/api`): the endpoints of the IVS multi-host sample
//! backend, so the sample app works with no account. Open to anyone but
//! rate-limited per client IP ([`Throttled`]); disconnect and delete need
//! the group host's own participant token as `Authorization: Bearer`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stagecast_protocol::control::{
    DemoAttributes, DemoChannel, DemoChat, DemoCreateRequest, DemoDeleteRequest, DemoDisconnectRequest,
    DemoJoinRequest, DemoListItem, DemoSessionResponse, DemoStageToken,
};
use stagecast_protocol::{ParticipantId, StageId};

use super::control::{existing_stage, new_stage};
use super::{
    capabilities_from, mint_token, revoke_and_disconnect, BaseUrls, Throttled, TokenSpec, DEFAULT_TOKEN_MINUTES,
};
use crate::auth::{self, now_unix};
use crate::channel;
use crate::chat::{ChatCapability, RoomSettings, TokenSpec as ChatTokenSpec};
use crate::error::JsonBody;
use crate::store::DemoGroupRecord;
use crate::{AppError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/create", post(create))
        .route("/api/join", post(join))
        .route("/api/list", post(list).get(list))
        .route("/api/disconnect", post(disconnect))
        .route("/api/delete", delete(delete_group))
        .route("/api/chat-token", post(viewer_chat_token))
}

fn attributes(attrs: &DemoAttributes, is_host: bool) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("username".to_owned(), attrs.username.clone()),
        ("avatarUrl".to_owned(), attrs.avatar_url.clone()),
        ("isHost".to_owned(), is_host.to_string()),
    ])
}

fn group_not_found(group_id: &str) -> AppError {
    AppError::not_found("GROUP_NOT_FOUND", format!("group {group_id} does not exist"))
}

fn existing_group(state: &AppState, group_id: &str) -> Result<DemoGroupRecord, AppError> {
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

/// `http://host` of this server, as the stage URLs are built.
fn http_base(urls: &BaseUrls) -> String {
    urls.whip_url.strip_suffix("/v1/stage/whip").unwrap_or(&urls.whip_url).to_owned()
}

/// A chat token for a group member. The chat user id must not be empty, so
/// an anonymous member chats under their participant id.
fn chat_token(
    state: &AppState,
    room_id: &str,
    user_id: &str,
    participant_id: &str,
    attrs: &DemoAttributes,
    capabilities: Vec<ChatCapability>,
) -> Result<String, AppError> {
    let user_id = if user_id.is_empty() { participant_id } else { user_id };
    let spec = ChatTokenSpec {
        user_id: user_id.to_owned(),
        capabilities,
        attributes: BTreeMap::from([
            ("username".to_owned(), attrs.username.clone()),
            ("avatarUrl".to_owned(), attrs.avatar_url.clone()),
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
    fn undo(self, state: &AppState) {
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
    State(state): State<AppState>,
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
    state: &AppState,
    headers: &HeaderMap,
    req: DemoCreateRequest,
    created: &mut Created,
) -> Result<DemoSessionResponse, AppError> {
    let urls = BaseUrls::for_request(state, headers);
    let name: String = format!("{}'s stage", req.attributes.username).chars().take(super::MAX_NAME_CHARS).collect();
    let stage = new_stage(state, name.clone())?;
    created.stage = Some(stage.id.clone());
    let token = mint_token(state, &urls, &stage.id, guest_or_host_spec(req.user_id.clone(), &req.attributes, true))?;
    let channel = state.channels.create(name.clone())?;
    created.channel = Some(channel.id.clone());
    let room = state.chat.create_room(RoomSettings { name: Some(name), ..RoomSettings::default() }, now_unix())?;
    created.room = Some(room.id.clone());
    let chat = chat_token(
        state,
        &room.id,
        &req.user_id,
        &token.participant_id,
        &req.attributes,
        vec![ChatCapability::SendMessage, ChatCapability::DeleteMessage, ChatCapability::DisconnectUser],
    )?;
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
    let base = http_base(&urls);
    Ok(DemoSessionResponse {
        group_id: group.group_id,
        channel: Some(DemoChannel {
            playback_url: channel::playback_url(&base, &channel.id),
            ingest_endpoint: channel::ingest_endpoint(&base, &channel.id),
            // The stream key goes to the host only, and only here.
            stream_key: channel.stream_key,
            id: channel.id,
        }),
        stage: DemoStageToken { id: stage.id.0, token: token.token, participant_id: token.participant_id },
        chat: Some(DemoChat { id: room.id, token: chat }),
    })
}

async fn join(
    _: Throttled,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DemoJoinRequest>,
) -> Result<Json<DemoSessionResponse>, AppError> {
    let group = existing_group(&state, &req.group_id)?;
    let stage = existing_stage(&state, &group.stage_id)?;
    let urls = BaseUrls::for_request(&state, &headers);
    let token =
        mint_token(&state, &urls, &stage.id, guest_or_host_spec(req.user_id.clone(), &req.attributes, false))?;
    let chat = match &group.room_id {
        Some(room) => Some(DemoChat {
            id: room.clone(),
            token: chat_token(
                &state,
                room,
                &req.user_id,
                &token.participant_id,
                &req.attributes,
                vec![ChatCapability::SendMessage],
            )?,
        }),
        None => None,
    };
    Ok(Json(DemoSessionResponse {
        group_id: group.group_id,
        // Guests do not go live: no stream key for them.
        channel: None,
        stage: DemoStageToken { id: stage.id.0, token: token.token, participant_id: token.participant_id },
        chat,
    }))
}

async fn list(
    _: Throttled,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<DemoListItem>>, AppError> {
    let groups = state.store.list_demo_groups().map_err(AppError::internal)?;
    let base = http_base(&BaseUrls::for_request(&state, &headers));
    Ok(Json(
        groups
            .into_iter()
            .map(|g| DemoListItem {
                participant_count: state.stages.participants(&g.stage_id).len(),
                live: g.channel_id.as_deref().is_some_and(|c| state.channels.is_live(c)),
                playback_url: g.channel_id.as_deref().map(|c| channel::playback_url(&base, c)),
                group_id: g.group_id,
                stage_id: g.stage_id.0,
                channel_id: g.channel_id,
                room_id: g.room_id,
                stage_attributes: g.host_attributes,
            })
            .collect(),
    ))
}

/// The group, if the request's Bearer token is its host's participant token.
fn require_host(state: &AppState, headers: &HeaderMap, group_id: &str) -> Result<DemoGroupRecord, AppError> {
    let token = auth::bearer(headers.get(header::AUTHORIZATION)).ok_or_else(|| {
        AppError::unauthorized("UNAUTHORIZED", "this needs the host's participant token: Authorization: Bearer <token>")
    })?;
    let claims = state.keys.verify(token, now_unix())?;
    let group = existing_group(state, group_id)?;
    if claims.topic != group.stage_id.0 || claims.jti != group.host_participant_id.0 {
        return Err(AppError::forbidden("NOT_HOST", "only the stage's host can do this"));
    }
    Ok(group)
}

async fn disconnect(
    _: Throttled,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DemoDisconnectRequest>,
) -> Result<Json<Value>, AppError> {
    let group = require_host(&state, &headers, &req.group_id)?;
    let participant = ParticipantId(req.participant_id);
    let reason = req.reason.unwrap_or_else(|| "removed by the host".to_owned());
    let reason: String = reason.chars().take(super::MAX_NAME_CHARS).collect();
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
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DemoDeleteRequest>,
) -> Result<Json<Value>, AppError> {
    let group = require_host(&state, &headers, &req.group_id)?;
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
    tracing::info!(group = %group.group_id, stage = %stage, "demo group deleted");
    Ok(Json(json!({ "status": "success" })))
}

/// `POST /api/chat-token`: a watch-page viewer's token for the group's room.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ViewerChatTokenRequest {
    group_id: String,
    user_id: String,
    #[serde(default)]
    attributes: Option<ViewerChatAttributes>,
    /// A token with no capabilities: the viewer reads but cannot send.
    #[serde(default)]
    view_only: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ViewerChatAttributes {
    #[serde(default)]
    username: String,
}

/// A viewer's chat token: SEND_MESSAGE (or nothing when `viewOnly`), never
/// moderation. The viewer is not a stage participant, so the user id is the
/// one it sent (non-empty; the room checks it).
async fn viewer_chat_token(
    _: Throttled,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ViewerChatTokenRequest>,
) -> Result<Json<Value>, AppError> {
    let group = existing_group(&state, &req.group_id)?;
    let room = group
        .room_id
        .ok_or_else(|| AppError::not_found("ROOM_NOT_FOUND", format!("group {} has no chat room", req.group_id)))?;
    let username = req.attributes.unwrap_or_default().username;
    let spec = ChatTokenSpec {
        user_id: req.user_id,
        capabilities: if req.view_only { Vec::new() } else { vec![ChatCapability::SendMessage] },
        attributes: BTreeMap::from([("username".to_owned(), username)]),
        session_minutes: None,
    };
    let minted = state.chat.create_token(&room, spec, now_unix())?;
    let urls = BaseUrls::for_request(&state, &headers);
    let endpoint = match urls.events_url.strip_suffix("/v1/stage/events") {
        Some(base) => format!("{base}/v1/chat"),
        None => urls.events_url.replace("/v1/stage/events", "/v1/chat"),
    };
    Ok(Json(json!({
        "roomId": room,
        "token": minted.token,
        "endpoint": endpoint,
        "sessionExpirationTime": super::iso8601(minted.expires),
    })))
}
