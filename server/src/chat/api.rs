//! `/v1/rooms`: CreateRoom, GetRoom, ListRooms, DeleteRoom, CreateChatToken,
//! SendEvent, DeleteMessage, DisconnectUser. Every handler takes
//! [`ApiKey`] first, as the stage control plane does.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::hub::{RoomSettings, TokenSpec};
use super::store::RoomRecord;
use super::token::ChatCapability;
use super::{now_ms, ChatState};
use stagecast_protocol::control::ListRequest;

use crate::http::page::{next_token, page_query, Listing};
use crate::http::{iso8601, ApiKey, BaseUrls, OptionalJson};
use crate::auth::now_unix;
use crate::error::{JsonBody, QueryParams};
use crate::{AppError, Config};

pub(super) fn router() -> Router<ChatState> {
    Router::new()
        .route("/v1/rooms", post(create_room).get(list_rooms))
        .route("/v1/rooms/{id}", get(get_room).delete(delete_room))
        .route("/v1/rooms/{id}/tokens", post(create_token))
        .route("/v1/rooms/{id}/events", post(send_event))
        .route("/v1/rooms/{id}/messages/{message_id}/delete", post(delete_message))
        .route("/v1/rooms/{id}/users/{user_id}/disconnect", post(disconnect_user))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRoomRequest {
    name: Option<String>,
    maximum_message_rate_per_second: Option<u32>,
    maximum_message_length: Option<u32>,
}

/// A room as the control plane shows it (IVS GetRoom, plus the WebSocket endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    pub id: String,
    pub arn: String,
    pub name: String,
    pub create_time: String,
    pub update_time: String,
    pub maximum_message_rate_per_second: u32,
    pub maximum_message_length: u32,
    /// `ws://<host>/v1/chat`: give it to the chat client as `regionOrUrl`.
    pub endpoint: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListRoomsResponse {
    rooms: Vec<RoomView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTokenRequest {
    user_id: Option<String>,
    capabilities: Option<Vec<ChatCapability>>,
    attributes: Option<BTreeMap<String, String>>,
    session_duration_in_minutes: Option<u32>,
}

/// CreateChatToken's answer: what the chat client's token provider returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatTokenResponse {
    pub token: String,
    pub token_expiration_time: String,
    pub session_expiration_time: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendEventRequest {
    event_name: String,
    #[serde(default)]
    attributes: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReasonRequest {
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct IdResponse {
    id: String,
}

/// The chat endpoint for this request's host (or `config.public_url`).
fn chat_endpoint(config: &Config, headers: &HeaderMap) -> String {
    let events = BaseUrls::for_request(config, headers).events_url;
    let base = events.strip_suffix("/v1/stage/events").unwrap_or(&events);
    format!("{base}/v1/chat")
}

pub(crate) fn room_view(record: &RoomRecord, endpoint: &str) -> RoomView {
    RoomView {
        id: record.id.clone(),
        arn: format!("arn:stagecast:ivschat:local:room/{}", record.id),
        name: record.name.clone(),
        create_time: iso8601(record.create_time),
        update_time: iso8601(record.create_time),
        maximum_message_rate_per_second: record.limits.max_messages_per_second,
        maximum_message_length: record.limits.max_message_length,
        endpoint: endpoint.to_owned(),
    }
}

async fn create_room(
    _: ApiKey,
    State(state): State<ChatState>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<CreateRoomRequest>,
) -> Result<Json<RoomView>, AppError> {
    let settings = RoomSettings {
        name: req.name,
        max_messages_per_second: req.maximum_message_rate_per_second,
        max_message_length: req.maximum_message_length,
    };
    let record = state.chat.create_room(settings, now_unix())?;
    Ok(Json(room_view(&record, &chat_endpoint(&state.config, &headers))))
}

/// ListRooms, oldest first, a page at a time (`maxResults`, `nextToken`).
async fn list_rooms(
    _: ApiKey,
    State(state): State<ChatState>,
    headers: HeaderMap,
    QueryParams(req): QueryParams<ListRequest>,
) -> Result<Json<ListRoomsResponse>, AppError> {
    let page = page_query(Listing::Rooms, req.max_results, req.next_token.as_deref())?;
    let endpoint = chat_endpoint(&state.config, &headers);
    let listed = state.chat.list_rooms(page)?;
    Ok(Json(ListRoomsResponse {
        rooms: listed.items.iter().map(|r| room_view(r, &endpoint)).collect(),
        next_token: next_token(Listing::Rooms, listed.next),
    }))
}

async fn get_room(
    _: ApiKey,
    State(state): State<ChatState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RoomView>, AppError> {
    let record = state.chat.get_room(&id)?;
    Ok(Json(room_view(&record, &chat_endpoint(&state.config, &headers))))
}

async fn delete_room(_: ApiKey, State(state): State<ChatState>, Path(id): Path<String>) -> Result<StatusCode, AppError> {
    state.chat.delete_room(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_token(
    _: ApiKey,
    State(state): State<ChatState>,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<CreateTokenRequest>,
) -> Result<Json<ChatTokenResponse>, AppError> {
    let spec = TokenSpec {
        user_id: req.user_id.unwrap_or_default(),
        capabilities: req.capabilities.unwrap_or_default(),
        attributes: req.attributes.unwrap_or_default(),
        session_minutes: req.session_duration_in_minutes,
    };
    let minted = state.chat.create_token(&id, spec, now_unix())?;
    let expires = iso8601(minted.expires);
    Ok(Json(ChatTokenResponse {
        token: minted.token,
        token_expiration_time: expires.clone(),
        session_expiration_time: expires,
    }))
}

async fn send_event(
    _: ApiKey,
    State(state): State<ChatState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SendEventRequest>,
) -> Result<Json<IdResponse>, AppError> {
    let id = state.chat.send_event(&id, &req.event_name, req.attributes.unwrap_or_default(), now_ms())?;
    Ok(Json(IdResponse { id }))
}

async fn delete_message(
    _: ApiKey,
    State(state): State<ChatState>,
    Path((id, message_id)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<ReasonRequest>,
) -> Result<Json<IdResponse>, AppError> {
    let id = state.chat.delete_message(&id, &message_id, req.reason.as_deref(), now_ms())?;
    Ok(Json(IdResponse { id }))
}

async fn disconnect_user(
    _: ApiKey,
    State(state): State<ChatState>,
    Path((id, user_id)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<ReasonRequest>,
) -> Result<Json<IdResponse>, AppError> {
    let id = state.chat.disconnect_user(&id, &user_id, req.reason.as_deref(), now_ms())?;
    Ok(Json(IdResponse { id }))
}
