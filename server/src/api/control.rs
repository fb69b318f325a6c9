//! The `/v1` control plane for stages, participant tokens and public keys.
//! Every handler takes [`ApiKey`] first, so a missing or wrong key is a 401
//! before any body is read.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use stagecast_protocol::control::{
    CreateParticipantTokenRequest, CreateStageRequest, DisconnectParticipantRequest, ImportPublicKeyRequest,
    ListParticipantsResponse, ListRequest, ListStagesResponse, Participant, ParticipantTokenResponse, PublicKey,
    PublicKeyResponse, Stage, StageResponse,
};
use stagecast_protocol::{ParticipantId, StageId};

use crate::http::page::{next_token, page_query, Listing};
use super::{capabilities_from, mint_token, revoke_and_disconnect, ApiState, TokenSpec, DEFAULT_TOKEN_MINUTES};
use crate::http::{iso8601, ApiKey, BaseUrls, OptionalJson, MAX_NAME_CHARS};
use crate::auth::{self, now_unix};
use crate::error::{JsonBody, QueryParams};
use crate::store::{PublicKeyRecord, StageRecord};
use crate::AppError;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/stages", post(create_stage).get(list_stages))
        .route("/v1/stages/{id}", get(get_stage).delete(delete_stage))
        .route("/v1/stages/{id}/tokens", post(create_token))
        .route("/v1/stages/{id}/participants", get(list_participants))
        .route("/v1/stages/{id}/participants/{pid}/disconnect", post(disconnect_participant))
        .route("/v1/public-keys", post(import_public_key))
}

fn stage_view(record: &StageRecord, urls: &BaseUrls) -> Stage {
    Stage {
        id: record.id.0.clone(),
        name: record.name.clone(),
        create_time: iso8601(record.create_time),
        endpoints: urls.endpoints(),
    }
}

pub(super) fn stage_not_found(id: &StageId) -> AppError {
    AppError::not_found("STAGE_NOT_FOUND", format!("stage {id} does not exist"))
}

/// The stage, or 404 STAGE_NOT_FOUND.
pub(super) fn existing_stage(state: &ApiState, id: &StageId) -> Result<StageRecord, AppError> {
    state.store.get_stage(id).map_err(AppError::internal)?.ok_or_else(|| stage_not_found(id))
}

/// Create a stage record with a fresh id.
pub(super) fn new_stage(state: &ApiState, name: String) -> Result<StageRecord, AppError> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_request("INVALID_NAME", format!("name is at most {MAX_NAME_CHARS} characters")));
    }
    let record =
        StageRecord { id: StageId(format!("st-{}", auth::random_alphanumeric(12))), name, create_time: now_unix() };
    state.store.create_stage(&record).map_err(AppError::internal)?;
    tracing::info!(stage = %record.id, "stage created");
    Ok(record)
}

async fn create_stage(
    _: ApiKey,
    State(state): State<ApiState>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<CreateStageRequest>,
) -> Result<Json<StageResponse>, AppError> {
    let record = new_stage(&state, req.name.unwrap_or_default())?;
    let urls = BaseUrls::for_request(&state.config, &headers);
    Ok(Json(StageResponse { stage: stage_view(&record, &urls) }))
}

async fn list_stages(
    _: ApiKey,
    State(state): State<ApiState>,
    headers: HeaderMap,
    QueryParams(req): QueryParams<ListRequest>,
) -> Result<Json<ListStagesResponse>, AppError> {
    let page = page_query(Listing::Stages, req.max_results, req.next_token.as_deref())?;
    let urls = BaseUrls::for_request(&state.config, &headers);
    let stages = state.store.list_stages(page).map_err(AppError::internal)?;
    Ok(Json(ListStagesResponse {
        stages: stages.items.iter().map(|s| stage_view(s, &urls)).collect(),
        next_token: next_token(Listing::Stages, stages.next),
    }))
}

async fn get_stage(
    _: ApiKey,
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<StageResponse>, AppError> {
    let record = existing_stage(&state, &StageId(id))?;
    let urls = BaseUrls::for_request(&state.config, &headers);
    Ok(Json(StageResponse { stage: stage_view(&record, &urls) }))
}

async fn delete_stage(
    _: ApiKey,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = StageId(id);
    if !state.store.delete_stage(&id).map_err(AppError::internal)? {
        return Err(stage_not_found(&id));
    }
    state.stages.delete_stage(&id);
    tracing::info!(stage = %id, "stage deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn create_token(
    _: ApiKey,
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<CreateParticipantTokenRequest>,
) -> Result<Json<ParticipantTokenResponse>, AppError> {
    let stage = existing_stage(&state, &StageId(id))?;
    let urls = BaseUrls::for_request(&state.config, &headers);
    let spec = TokenSpec {
        user_id: req.user_id.unwrap_or_default(),
        attributes: req.attributes.unwrap_or_default(),
        capabilities: capabilities_from(req.capabilities.as_deref()),
        duration_minutes: req.duration.unwrap_or(DEFAULT_TOKEN_MINUTES),
    };
    let participant_token = mint_token(&state, &urls, &stage.id, spec)?;
    Ok(Json(ParticipantTokenResponse { participant_token }))
}

/// ListParticipants, a page at a time in minting order. Connected members
/// the store does not know yet (a self-signed token racing its join record)
/// come on the last page, as far as it has room.
async fn list_participants(
    _: ApiKey,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    QueryParams(req): QueryParams<ListRequest>,
) -> Result<Json<ListParticipantsResponse>, AppError> {
    let stage = existing_stage(&state, &StageId(id))?;
    let page = page_query(Listing::Participants, req.max_results, req.next_token.as_deref())?;
    let minted = state.store.list_participants(&stage.id, page).map_err(AppError::internal)?;
    let mut live = state.stages.participants(&stage.id);
    let mut participants = Vec::with_capacity(minted.items.len());
    for record in minted.items {
        let connected = live.iter().position(|p| p.id == record.participant_id.0).map(|i| live.swap_remove(i));
        participants.push(Participant {
            participant_id: record.participant_id.0,
            user_id: record.user_id,
            state: if connected.is_some() { "CONNECTED" } else { "DISCONNECTED" }.to_owned(),
            attributes: record.attributes,
            published: connected.as_ref().is_some_and(|p| p.published),
            first_join_time: record.first_join_time.map(iso8601),
        });
    }
    if minted.next.is_none() {
        let cap = usize::try_from(page.limit).unwrap_or(usize::MAX);
        for p in live {
            if participants.len() >= cap {
                break;
            }
            let id = ParticipantId(p.id.clone());
            if state.store.get_participant(&stage.id, &id).map_err(AppError::internal)?.is_some() {
                continue; // on another page
            }
            participants.push(Participant {
                participant_id: p.id,
                user_id: p.user_id,
                state: "CONNECTED".to_owned(),
                attributes: p.attributes,
                published: p.published,
                first_join_time: None,
            });
        }
    }
    Ok(Json(ListParticipantsResponse { participants, next_token: next_token(Listing::Participants, minted.next) }))
}

async fn disconnect_participant(
    _: ApiKey,
    State(state): State<ApiState>,
    Path((id, pid)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<DisconnectParticipantRequest>,
) -> Result<StatusCode, AppError> {
    let stage = existing_stage(&state, &StageId(id))?;
    let reason = req.reason.unwrap_or_default();
    if reason.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_request("INVALID_REASON", format!("reason is at most {MAX_NAME_CHARS} characters")));
    }
    let participant = ParticipantId(pid);
    if !revoke_and_disconnect(&state, &stage.id, &participant, &reason)? {
        return Err(AppError::not_found(
            "PARTICIPANT_NOT_FOUND",
            format!("participant {participant} is not in stage {}", stage.id),
        ));
    }
    tracing::info!(stage = %stage.id, participant = %participant, "participant disconnected");
    Ok(StatusCode::NO_CONTENT)
}

async fn import_public_key(
    _: ApiKey,
    State(state): State<ApiState>,
    JsonBody(req): JsonBody<ImportPublicKeyRequest>,
) -> Result<Json<PublicKeyResponse>, AppError> {
    let parsed = auth::parse_public_key(&req.public_key_material)?;
    if state.store.find_public_key_by_fingerprint(&parsed.fingerprint).map_err(AppError::internal)?.is_some() {
        return Err(AppError::conflict("PUBLIC_KEY_EXISTS", "this public key was already imported"));
    }
    let name = req.name.unwrap_or_default();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_request("INVALID_NAME", format!("name is at most {MAX_NAME_CHARS} characters")));
    }
    let record = PublicKeyRecord {
        id: format!("pk-{}", auth::random_alphanumeric(12)),
        name,
        pem: req.public_key_material.trim().to_owned(),
        fingerprint: parsed.fingerprint,
    };
    state.store.insert_public_key(&record).map_err(AppError::internal)?;
    state.auth.keys.add_public_key(&record.id, parsed.key);
    tracing::info!(key_id = %record.id, "public key imported");
    Ok(Json(PublicKeyResponse {
        public_key: PublicKey { id: record.id, name: record.name, fingerprint: record.fingerprint },
    }))
}
