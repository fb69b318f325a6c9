//! Control plane (`/v1`, API key) and demo backend (`/api`).
//!
//! Both mint participant tokens the same way ([`mint_token`]); they differ in
//! who may call them: the control plane needs the API key, the demo backend
//! is open but rate-limited per client IP, and its host-only operations need
//! the host's own participant token. Both take an [`ApiState`].

mod control;
mod demo;
mod idle;
mod throttle;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::FromRef;
use axum::{Extension, Router};
use stagecast_protocol::control::{ParticipantCapability, ParticipantToken};
use stagecast_protocol::token::{ParticipantClaims, TokenCapabilities};
use stagecast_protocol::{ParticipantId, StageId};

use crate::auth::{self, now_unix, Auth};
use crate::channel::ChannelHub;
use crate::chat::ChatHub;
use crate::http::{iso8601, BaseUrls, MAX_NAME_CHARS};
use crate::stage::StageHub;
use crate::store::{ParticipantRecord, Store};
use crate::{AppError, Config};

pub use idle::{spawn_idle_sweeper, GroupActivity, IdleSweep};
pub use throttle::{CreateThrottled, Throttled};

/// Token lifetime when the request names none, in minutes (IVS default).
pub const DEFAULT_TOKEN_MINUTES: u32 = 720;
/// Longest token lifetime, in minutes (14 days, as IVS).
pub const MAX_TOKEN_MINUTES: u32 = 20_160;

/// What the control plane and the demo backend reach: the store (stages,
/// participants, public keys, demo groups), [`Auth`] (API key, token keys),
/// the configuration, and the hubs whose stages, channels and rooms they
/// make, list and remove. Cheap to clone.
#[derive(Clone, FromRef)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub auth: Auth,
    pub config: Arc<Config>,
    pub stages: StageHub,
    pub chat: ChatHub,
    pub channels: ChannelHub,
}

/// `/v1` and `/api`.
pub fn router() -> Router<ApiState> {
    let demo = demo::router().layer(Extension(Arc::new(throttle::DemoLimits::default())));
    Router::new().merge(control::router()).merge(demo)
}

/// What to put in a new participant token.
pub struct TokenSpec {
    pub user_id: String,
    pub attributes: BTreeMap<String, String>,
    pub capabilities: TokenCapabilities,
    pub duration_minutes: u32,
}

/// Validate, sign and record a participant token for `stage` (which the
/// caller has checked exists).
pub fn mint_token(
    state: &ApiState,
    urls: &BaseUrls,
    stage: &StageId,
    spec: TokenSpec,
) -> Result<ParticipantToken, AppError> {
    if !(1..=MAX_TOKEN_MINUTES).contains(&spec.duration_minutes) {
        return Err(AppError::bad_request(
            "INVALID_DURATION",
            format!("duration is in minutes, from 1 to {MAX_TOKEN_MINUTES}"),
        ));
    }
    if spec.user_id.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_request("INVALID_USER_ID", format!("userId is at most {MAX_NAME_CHARS} characters")));
    }
    if !spec.capabilities.allow_publish && !spec.capabilities.allow_subscribe {
        return Err(AppError::bad_request(
            "INVALID_CAPABILITIES",
            "capabilities must include PUBLISH, SUBSCRIBE or both",
        ));
    }
    let now = now_unix();
    let exp = now + i64::from(spec.duration_minutes) * 60;
    let participant_id = ParticipantId(auth::random_alphanumeric(12));
    let claims = ParticipantClaims {
        topic: stage.0.clone(),
        jti: participant_id.0.clone(),
        user_id: spec.user_id,
        attributes: spec.attributes,
        capabilities: spec.capabilities,
        exp,
        iat: now,
        events_url: urls.events_url.clone(),
        whip_url: urls.whip_url.clone(),
        version: "1.0".to_owned(),
    };
    let token = state.auth.keys.mint(&claims)?;
    state
        .store
        .insert_participant(&ParticipantRecord {
            stage_id: stage.clone(),
            participant_id: participant_id.clone(),
            user_id: claims.user_id.clone(),
            attributes: claims.attributes.clone(),
            capabilities: claims.capabilities,
            expiration: exp,
            first_join_time: None,
            revoked: false,
            revoke_reason: None,
        })
        .map_err(AppError::internal)?;
    Ok(ParticipantToken {
        participant_id: participant_id.0,
        token,
        user_id: claims.user_id,
        attributes: claims.attributes,
        capabilities: capability_list(claims.capabilities),
        expiration_time: iso8601(exp),
    })
}

/// `[PUBLISH, SUBSCRIBE]` from the token's booleans.
pub fn capability_list(caps: TokenCapabilities) -> Vec<ParticipantCapability> {
    let mut list = Vec::new();
    if caps.allow_publish {
        list.push(ParticipantCapability::Publish);
    }
    if caps.allow_subscribe {
        list.push(ParticipantCapability::Subscribe);
    }
    list
}

/// Both when absent, as IVS.
pub fn capabilities_from(list: Option<&[ParticipantCapability]>) -> TokenCapabilities {
    match list {
        None => TokenCapabilities { allow_publish: true, allow_subscribe: true },
        Some(list) => TokenCapabilities {
            allow_publish: list.contains(&ParticipantCapability::Publish),
            allow_subscribe: list.contains(&ParticipantCapability::Subscribe),
        },
    }
}

/// Disconnect a participant for good: its token is revoked in the store
/// and its live connection (if any) is closed. Returns false if neither
/// the store nor the hub knows it.
pub fn revoke_and_disconnect(
    state: &ApiState,
    stage: &StageId,
    participant: &ParticipantId,
    reason: &str,
) -> Result<bool, AppError> {
    let mut known = state.store.revoke_participant(stage, participant, reason).map_err(AppError::internal)?;
    if !known {
        // Connected with a token we never minted nor saw join (a race with
        // participant_joined): record it so the revocation sticks.
        if let Some(live) = state.stages.participants(stage).into_iter().find(|p| p.id == participant.0) {
            let record = ParticipantRecord {
                stage_id: stage.clone(),
                participant_id: participant.clone(),
                user_id: live.user_id,
                attributes: live.attributes,
                capabilities: TokenCapabilities {
                    allow_publish: live.can_publish,
                    allow_subscribe: live.can_subscribe,
                },
                expiration: now_unix() + i64::from(MAX_TOKEN_MINUTES) * 60,
                first_join_time: None,
                revoked: false,
                revoke_reason: None,
            };
            state.store.record_join(&record, now_unix()).map_err(AppError::internal)?;
            known = state.store.revoke_participant(stage, participant, reason).map_err(AppError::internal)?;
        }
    }
    if known {
        state.stages.disconnect(
            stage,
            participant,
            stagecast_protocol::events::DisconnectReason::ParticipantDisconnected,
        );
    }
    Ok(known)
}
