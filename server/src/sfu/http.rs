//! WHIP publish, WHEP-style subscribe and session DELETE over HTTP.
//!
//! `POST /v1/stage/whip/publish` and `POST /v1/stage/whip/subscribe/{participantId}`
//! take `Authorization: Bearer <participant token>` and an SDP offer, and
//! answer `201 Created` with the SDP answer and a `Location` to `DELETE`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use stagecast_protocol::token::{Capability, ParticipantClaims};
use stagecast_protocol::{ParticipantId, StageId};
use tower_http::cors::{Any, CorsLayer};

use super::{SessionId, SfuError};
use crate::{AppError, AppState};

/// Largest SDP offer accepted. Chrome's offers are a few KB.
const MAX_SDP_BYTES: usize = 64 * 1024;

/// The path prefix every `Location` points under.
pub const SESSIONS_PATH: &str = "/v1/stage/whip/sessions";

impl From<SfuError> for AppError {
    fn from(e: SfuError) -> Self {
        match &e {
            SfuError::InvalidSdp(_) => AppError::bad_request("INVALID_SDP", e.to_string()),
            SfuError::StageAtCapacity(_) => AppError::conflict("STAGE_AT_CAPACITY", e.to_string()),
            SfuError::PublisherNotFound(_) => AppError::not_found("PUBLISHER_NOT_FOUND", e.to_string()),
            SfuError::SessionNotFound(_) => AppError::not_found("SESSION_NOT_FOUND", e.to_string()),
            SfuError::Unavailable => AppError::internal(&e),
        }
    }
}

/// The media-plane routes, with CORS open to any origin (browsers on other
/// origins publish too) and `OPTIONS` answered for WHIP clients that probe.
pub fn router() -> Router<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::DELETE, Method::OPTIONS, Method::PATCH])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION, header::CONTENT_TYPE]);
    Router::new()
        .route("/v1/stage/whip/publish", post(publish).options(options))
        .route("/v1/stage/whip/subscribe/{participant_id}", post(subscribe).options(options))
        .route("/v1/stage/whip/sessions/{session_id}", delete(delete_session).options(options))
        .layer(DefaultBodyLimit::max(MAX_SDP_BYTES))
        .layer(cors)
        .layer(axum::middleware::from_fn(options_no_content))
}

/// The CORS layer answers every `OPTIONS` itself with 200; WHIP clients
/// expect 204 No Content (any 2xx satisfies a browser preflight).
async fn options_no_content(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let is_options = request.method() == Method::OPTIONS;
    let mut response = next.run(request).await;
    if is_options && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NO_CONTENT;
        if !response.headers().contains_key(header::ALLOW) {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST, DELETE"));
        }
    }
    response
}

async fn options() -> Response {
    (StatusCode::NO_CONTENT, [(header::ALLOW, "OPTIONS, POST, DELETE")]).into_response()
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str, AppError> {
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

fn ids(claims: &ParticipantClaims) -> (StageId, ParticipantId) {
    (StageId(claims.topic.clone()), ParticipantId(claims.jti.clone()))
}

/// Token, capability and event-plane membership, in that order.
fn admit(state: &AppState, headers: &HeaderMap, need: Capability) -> Result<(StageId, ParticipantId), AppError> {
    let claims = state.authorize(bearer(headers)?, need)?;
    let (stage, participant) = ids(&claims);
    if !state.stages.is_connected(&stage, &participant) {
        return Err(AppError::conflict(
            "NOT_JOINED",
            "connect to the stage event plane (events_url) before publishing or subscribing",
        ));
    }
    Ok((stage, participant))
}

/// The participant may have left while the SFU built the session, after the
/// hub asked the SFU to drop its sessions: drop this one too.
async fn still_joined(state: &AppState, stage: &StageId, participant: &ParticipantId, session: &SessionId) -> Result<(), AppError> {
    if state.stages.is_connected(stage, participant) {
        return Ok(());
    }
    let _ = state.sfu.close_session(session.clone(), None).await;
    Err(AppError::conflict("NOT_JOINED", "the participant left the stage event plane"))
}

fn sdp_body(body: Result<Bytes, BytesRejection>) -> Result<String, AppError> {
    let body = body.map_err(|r| AppError::new(r.status(), "INVALID_SDP", format!("cannot read the SDP offer: {}", r.body_text())))?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| AppError::bad_request("INVALID_SDP", "the SDP offer is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(AppError::bad_request("INVALID_SDP", "the request body must be an SDP offer"));
    }
    Ok(text)
}

fn created(session: &SessionId, answer: String) -> Response {
    let location = format!("{SESSIONS_PATH}/{session}");
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    response
}

async fn publish(State(state): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, AppError> {
    let (stage, participant) = admit(&state, &headers, Capability::Publish)?;
    let offer = sdp_body(body)?;
    let (session, answer) = state.sfu.publish(stage.clone(), participant.clone(), offer).await?;
    still_joined(&state, &stage, &participant, &session).await?;
    Ok(created(&session, answer))
}

async fn subscribe(
    State(state): State<AppState>,
    Path(publisher): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let (stage, subscriber) = admit(&state, &headers, Capability::Subscribe)?;
    let offer = sdp_body(body)?;
    let (session, answer) = state.sfu.subscribe(stage.clone(), subscriber.clone(), ParticipantId(publisher), offer).await?;
    still_joined(&state, &stage, &subscriber, &session).await?;
    Ok(created(&session, answer))
}

async fn delete_session(State(state): State<AppState>, Path(session): Path<String>, headers: HeaderMap) -> Result<StatusCode, AppError> {
    let claims = state.authorize(bearer(&headers)?, Capability::Join)?;
    let (stage, participant) = ids(&claims);
    let session = SessionId(session);
    match state.sfu.session_owner(session.clone()).await {
        Some((s, _)) if s != stage => return Err(SfuError::SessionNotFound(session).into()),
        Some(_) => {}
        None => return Err(SfuError::SessionNotFound(session).into()),
    }
    state.sfu.close_session(session, Some(participant)).await?;
    Ok(StatusCode::NO_CONTENT)
}
