//! The demo backend (`/api`): the endpoints of the IVS multi-host sample
//! backend, so the sample app works with no account. Open to anyone but
//! rate-limited per client IP ([`Throttled`]); disconnect and delete need
//! the group host's own participant token as `Authorization: Bearer`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stagecast_protocol::control::{
    DemoAttributes, DemoCreateRequest, DemoDeleteRequest, DemoDisconnectRequest, DemoJoinRequest, DemoListItem,
    DemoSessionResponse, DemoStageToken,
};
use stagecast_protocol::{ParticipantId, StageId};

use super::control::{existing_stage, new_stage};
use super::{
    capabilities_from, mint_token, revoke_and_disconnect, BaseUrls, Throttled, TokenSpec, DEFAULT_TOKEN_MINUTES,
};
use crate::auth::{self, now_unix};
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

async fn create(
    _: Throttled,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DemoCreateRequest>,
) -> Result<Json<DemoSessionResponse>, AppError> {
    let urls = BaseUrls::for_request(&state, &headers);
    let name: String = format!("{}'s stage", req.attributes.username).chars().take(super::MAX_NAME_CHARS).collect();
    let stage = new_stage(&state, name)?;
    let spec = guest_or_host_spec(req.user_id.clone(), &req.attributes, true);
    let token = match mint_token(&state, &urls, &stage.id, spec) {
        Ok(token) => token,
        Err(e) => {
            // Do not leave a hostless stage behind (e.g. attributes too large).
            if let Err(store_err) = state.store.delete_stage(&stage.id) {
                tracing::warn!(stage = %stage.id, error = %store_err, "cannot remove stage after failed create");
            }
            return Err(e);
        }
    };
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
    };
    state.store.create_demo_group(&group).map_err(AppError::internal)?;
    tracing::info!(group = %group.group_id, stage = %stage.id, "demo group created");
    Ok(Json(DemoSessionResponse {
        group_id: group.group_id,
        channel: None,
        stage: DemoStageToken { id: stage.id.0, token: token.token, participant_id: token.participant_id },
        chat: None,
    }))
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
    let token = mint_token(&state, &urls, &stage.id, guest_or_host_spec(req.user_id, &req.attributes, false))?;
    Ok(Json(DemoSessionResponse {
        group_id: group.group_id,
        channel: None,
        stage: DemoStageToken { id: stage.id.0, token: token.token, participant_id: token.participant_id },
        chat: None,
    }))
}

async fn list(_: Throttled, State(state): State<AppState>) -> Result<Json<Vec<DemoListItem>>, AppError> {
    let groups = state.store.list_demo_groups().map_err(AppError::internal)?;
    Ok(Json(
        groups
            .into_iter()
            .map(|g| DemoListItem {
                participant_count: state.stages.participants(&g.stage_id).len(),
                group_id: g.group_id,
                stage_id: g.stage_id.0,
                channel_id: None,
                room_id: None,
                stage_attributes: g.host_attributes,
                live: false,
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
    tracing::info!(group = %group.group_id, stage = %stage, "demo group deleted");
    Ok(Json(json!({ "status": "success" })))
}
