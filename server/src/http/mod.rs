//! The HTTP layer every area shares: the error type and JSON extractors,
//! the API-key and participant-token extractors, the base URLs a request
//! addressed, paging and limits on names. `api/` (control plane, demo backend), `chat/`,
//! `channel/` and `ops/` build their routes on it, and none of them imports
//! another area's HTTP module for these. The extractors need only
//! [`Auth`] from an area's state (`Auth: FromRef<S>`), and [`BaseUrls`]
//! only the configuration, so no area depends on the server's whole state.

pub mod page;
pub mod range;

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use stagecast_protocol::control::StageEndpoints;
use stagecast_protocol::token::ParticipantClaims;
use stagecast_protocol::{ParticipantId, StageId};

use crate::auth::{self, Auth};
use crate::config::Config;
pub use crate::error::{AppError, JsonBody};
use crate::serve::origin::Origin;

/// Longest user id, stage name and disconnect reason, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Extractor: the request carries the control-plane API key as a Bearer
/// token (401 UNAUTHORIZED otherwise).
pub struct ApiKey;

impl<S: Send + Sync> FromRequestParts<S> for ApiKey
where
    Auth: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_ref(state);
        match auth::bearer(parts.headers.get(header::AUTHORIZATION)) {
            Some(key) if auth::constant_time_eq(key, auth.api_key()) => Ok(ApiKey),
            // A stream key where the API key belongs: say so (the prefix is not secret).
            Some(key) if looks_like_stream_key(key, auth.api_key()) => Err(AppError::unauthorized(
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

/// The capability a [`Participant`] extractor demands, as a type: a
/// handler's signature says what its token must allow.
pub mod need {
    use stagecast_protocol::token::Capability;

    pub trait Need: Send + Sync + 'static {
        const CAPABILITY: Capability;
    }

    /// Any participant of the stage (every token may join).
    pub struct Join;
    pub struct Publish;
    pub struct Subscribe;

    impl Need for Join {
        const CAPABILITY: Capability = Capability::Join;
    }
    impl Need for Publish {
        const CAPABILITY: Capability = Capability::Publish;
    }
    impl Need for Subscribe {
        const CAPABILITY: Capability = Capability::Subscribe;
    }
}

/// Extractor: a participant token as `Authorization: Bearer`, verified by
/// [`Auth::authorize`] (signature, expiry, the stage exists, not
/// disconnected) for capability `C`; `401 TOKEN_MALFORMED` without one.
pub struct Participant<C> {
    pub claims: ParticipantClaims,
    _need: PhantomData<C>,
}

impl<C> Participant<C> {
    /// The token's stage and participant.
    pub fn ids(&self) -> (StageId, ParticipantId) {
        (StageId(self.claims.topic.clone()), ParticipantId(self.claims.jti.clone()))
    }
}

impl<S: Send + Sync, C: need::Need> FromRequestParts<S> for Participant<C>
where
    Auth: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let claims = Auth::from_ref(state).authorize(participant_bearer(&parts.headers)?, C::CAPABILITY)?;
        Ok(Participant { claims, _need: PhantomData })
    }
}

/// The participant token of `Authorization: Bearer <token>`, or why not.
pub fn participant_bearer(headers: &HeaderMap) -> Result<&str, AppError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AppError::unauthorized("TOKEN_MALFORMED", "missing Authorization: Bearer <participant token>"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| AppError::unauthorized("TOKEN_MALFORMED", "the Authorization header must be `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AppError::unauthorized("TOKEN_MALFORMED", "the Authorization header must be `Bearer <token>`"));
    }
    Ok(token.trim())
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
    pub fn for_request(config: &Config, headers: &HeaderMap) -> Self {
        let origin = Origin::of(config, headers);
        let public = config.public_url.as_deref().map(|u| u.trim().trim_end_matches('/')).filter(|u| !u.is_empty());
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
                    .or_else(|| config.bound_http.map(|a| a.to_string()))
                    .unwrap_or_else(|| config.listen.clone());
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
