//! Control plane (`/v1`, API key) and demo backend (`/api`).
//!
//! Both mint participant tokens the same way ([`mint_token`]); they differ in
//! who may call them: the control plane needs the API key, the demo backend
//! is open but rate-limited per client IP, and its host-only operations need
//! the host's own participant token.

mod control;
mod demo;
mod idle;
pub mod page;
mod throttle;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::{Extension, Router};
use stagecast_protocol::control::{ParticipantCapability, ParticipantToken, StageEndpoints};
use stagecast_protocol::token::{ParticipantClaims, TokenCapabilities};
use stagecast_protocol::{ParticipantId, StageId};

use crate::auth::{self, now_unix};
use crate::serve::origin::Origin;
use crate::error::JsonBody;
use crate::store::ParticipantRecord;
use crate::{AppError, AppState};

pub use idle::{spawn_idle_sweeper, GroupActivity, IdleSweep};
pub use throttle::{CreateThrottled, Throttled};

/// Token lifetime when the request names none, in minutes (IVS default).
pub const DEFAULT_TOKEN_MINUTES: u32 = 720;
/// Longest token lifetime, in minutes (14 days, as IVS).
pub const MAX_TOKEN_MINUTES: u32 = 20_160;
/// Longest user id, stage name and disconnect reason, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// `/v1` and `/api`.
pub fn router() -> Router<AppState> {
    let demo = demo::router().layer(Extension(Arc::new(throttle::DemoLimits::default())));
    Router::new().merge(control::router()).merge(demo)
}

/// Extractor: the request carries the control-plane API key as a Bearer
/// token (401 UNAUTHORIZED otherwise).
pub struct ApiKey;

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match auth::bearer(parts.headers.get(header::AUTHORIZATION)) {
            Some(key) if auth::constant_time_eq(key, &state.api_key) => Ok(ApiKey),
            // A stream key where the API key belongs: say so (the prefix is not secret).
            Some(key) if looks_like_stream_key(key, &state.api_key) => Err(AppError::unauthorized(
                "UNAUTHORIZED",
                "that is a channel stream key (sk_…); the control plane needs the API key (sck_…)",
            )),
            Some(_) => Err(AppError::unauthorized("UNAUTHORIZED", "the API key is not valid")),
            None => Err(AppError::unauthorized(
                "UNAUTHORIZED",
                "this endpoint needs the API key: Authorization: Bearer <api key>",
            )),
        }
    }
}

/// A stream key sent where the API key belongs (unless the API key itself
/// is an old `sk_` one).
fn looks_like_stream_key(key: &str, api_key: &str) -> bool {
    key.starts_with(auth::STREAM_KEY_PREFIX) && !api_key.starts_with(auth::STREAM_KEY_PREFIX)
}

/// A JSON body that may be absent: an empty body means `T::default()`,
/// anything else goes through [`JsonBody`] (so bad JSON is 400 INVALID_JSON).
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty_by_length =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() == "0");
        let no_body_declared = !req.headers().contains_key(header::CONTENT_LENGTH)
            && !req.headers().contains_key(header::TRANSFER_ENCODING);
        if empty_by_length || no_body_declared {
            return Ok(Self(T::default()));
        }
        let JsonBody(value) = JsonBody::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// The URLs put into tokens and stage descriptions.
#[derive(Debug, Clone)]
pub struct BaseUrls {
    pub events_url: String,
    pub whip_url: String,
}

impl BaseUrls {
    /// From `config.public_url` when set, else from the scheme and host the
    /// request addressed (`https`/`wss` when served over TLS, directly or
    /// behind a trusted proxy: [`Origin`]).
    pub fn for_request(state: &AppState, headers: &HeaderMap) -> Self {
        let origin = Origin::of(&state.config, headers);
        let public = state.config.public_url.as_deref().map(|u| u.trim().trim_end_matches('/')).filter(|u| !u.is_empty());
        let (http, ws) = match public {
            Some(public) => {
                if let Some(rest) = public.strip_prefix("https://") {
                    (public.to_owned(), format!("wss://{rest}"))
                } else if let Some(rest) = public.strip_prefix("http://") {
                    (public.to_owned(), format!("ws://{rest}"))
                } else {
                    (format!("{}://{public}", origin.http_scheme()), format!("{}://{public}", origin.ws_scheme()))
                }
            }
            None => {
                let host = origin
                    .host
                    .clone()
                    .or_else(|| state.config.bound_http.map(|a| a.to_string()))
                    .unwrap_or_else(|| state.config.listen.clone());
                (format!("{}://{host}", origin.http_scheme()), format!("{}://{host}", origin.ws_scheme()))
            }
        };
        Self { events_url: format!("{ws}/v1/stage/events"), whip_url: format!("{http}/v1/stage/whip") }
    }

    pub fn endpoints(&self) -> StageEndpoints {
        StageEndpoints { events: self.events_url.clone(), whip: self.whip_url.clone() }
    }

    /// `http(s)://host` of this server, the base of every other URL it hands out.
    pub fn http_base(&self) -> &str {
        self.whip_url.strip_suffix("/v1/stage/whip").unwrap_or(&self.whip_url)
    }
}

/// ISO 8601 (UTC, seconds) for a Unix time.
pub fn iso8601(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
    state: &AppState,
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
    let token = state.keys.mint(&claims)?;
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
    state: &AppState,
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
