//! WHIP publish, WHEP-style subscribe and session DELETE over HTTP.
//!
//! `POST /v1/stage/whip/publish` and `POST /v1/stage/whip/subscribe/{participantId}`
//! take `Authorization: Bearer <participant token>` and an SDP offer, and
//! answer `201 Created` with the SDP answer and a `Location` to `DELETE`.
//! The answer, and `OPTIONS` with a valid token, carry the participant's
//! STUN/TURN servers as `Link: <…>; rel="ice-server"` headers (RFC 9725 §4.4).
//!
//! Simulcast layers of a subscription (the WHEP layer extension, IVS's
//! `layerControls`): the subscribe answer links
//! `<…/sessions/{id}/layer>; rel="urn:ietf:params:whep:ext:core:layer"`.
//! `GET` there returns `{"layers":[{"rid","width","height","bitrateBps",
//! "framesPerSecond"}…], "selected", "adapting", "preferred", "paused"}`
//! (layers as the SFU measures them, lowest first; `selected` is the rid
//! forwarded now; `adapting`: a lower layer than the cap, for bandwidth).
//! `POST` there with `{"rid": "low"|"mid"|"high"|<publisher's rid>|null,
//! "paused"?: bool}` caps the layer (`null`: server-adaptive, the default;
//! absent: unchanged) and pauses video. The subscribe `POST` takes
//! `?layer=lowest|highest|<rid>`: start at the lowest layer (the default),
//! the highest, or capped at that rid. Both need the session owner's token.
//!
//! Publishing needs a PUBLISH token and a place on the stage: an event-plane
//! member publishes as such, and any other WHIP client (OBS, GStreamer)
//! joins the stage with its publish, until the session ends (see
//! `stage::hub`'s WHIP-only members). Subscribing needs membership — the
//! event plane, or a WHIP publish of one's own: a WHEP client needs the
//! event plane to learn who publishes anyway, and a subscriber that is on
//! no member list would escape the member cap.
//!
//! The routes hold a [`SfuState`]: the SFU handle and what admission needs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, options, post};
use axum::Json;
use axum::Router;
use stagecast_protocol::token::{Capability, ParticipantClaims};
use stagecast_protocol::{ParticipantId, StageId};
use tower_http::cors::{Any, CorsLayer};

use super::core::{LayerReport, LayerRequest, LayerStart};
use super::{SessionId, SfuError, SfuHandle};
use crate::auth::Auth;
use crate::error::{sdp_unreadable, JsonBody, QueryParams};
use crate::http::{need, participant_bearer, Participant};
use crate::ops::Ops;
use crate::stage::{refuse_new_stage_while_draining, StageHub};
use crate::{turn, AppError, Config};

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
            SfuError::NotASubscription(_) => AppError::bad_request("NOT_A_SUBSCRIPTION", e.to_string()),
            SfuError::UnknownLayer(_) => AppError::bad_request("INVALID_LAYER", e.to_string()),
            SfuError::Unavailable => AppError::internal(&e),
        }
    }
}

/// The `rel` of the subscribe answer's link to its layer controls.
pub const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// What the media-plane routes reach: the SFU, the stage hub (membership),
/// [`Auth`] (participant tokens), the configuration (member cap, TURN) and
/// [`Ops`] (draining). Cheap to clone.
#[derive(Clone, FromRef)]
pub struct SfuState {
    pub sfu: SfuHandle,
    pub stages: StageHub,
    pub auth: Auth,
    pub config: Arc<Config>,
    pub ops: Ops,
}

/// `Allow` of every media-plane endpoint.
const ALLOW: &str = "OPTIONS, GET, POST, DELETE, PATCH";

/// The media-plane routes, with CORS open to any origin (browsers on other
/// origins publish too). `OPTIONS` is routed outside the CORS layer (which
/// would answer it itself) to [`whip_options`], which answers preflights
/// and WHIP clients asking for ICE servers alike.
pub fn router() -> Router<SfuState> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS, Method::PATCH])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION, header::CONTENT_TYPE, header::LINK]);
    let paths = [
        "/v1/stage/whip/publish",
        "/v1/stage/whip/subscribe/{participant_id}",
        "/v1/stage/whip/sessions/{session_id}",
        "/v1/stage/whip/sessions/{session_id}/layer",
    ];
    let media = Router::new()
        .route(paths[0], post(publish))
        .route(paths[1], post(subscribe))
        .route(paths[2], delete(delete_session))
        .route(paths[3], get(get_layers).post(set_layer))
        .layer(DefaultBodyLimit::max(MAX_SDP_BYTES))
        .layer(cors);
    paths.into_iter().fold(media, |router, path| router.route(path, options(whip_options)))
}

/// 204 with CORS preflight headers; with a valid participant token, also
/// that participant's ICE servers as `Link` headers.
async fn whip_options(State(state): State<SfuState>, headers: HeaderMap) -> Response {
    let servers = participant_bearer(&headers)
        .ok()
        .and_then(|token| state.auth.authorize(token, Capability::Join).ok())
        .map(|claims| turn::for_participant(&state.config.turn, &claims))
        .unwrap_or_default();
    turn::whip_options_response(ALLOW, &servers)
}

/// Membership (subscribing), after the token (its extractor).
fn admit(state: &SfuState, who: &Participant<need::Subscribe>) -> Result<(StageId, ParticipantId), AppError> {
    let (stage, participant) = who.ids();
    if !state.stages.is_connected(&stage, &participant) {
        // Tells an SDK whose event-plane upgrade was refused (browsers hide
        // the status) that the stage is full.
        if state.stages.is_full(&stage, state.config.max_stage_members) {
            return Err(AppError::conflict("STAGE_FULL", "the stage is full; try again when someone leaves"));
        }
        return Err(AppError::conflict(
            "NOT_JOINED",
            "connect to the stage event plane (events_url) before publishing or subscribing",
        ));
    }
    Ok((stage, participant))
}

/// The participant may have left while the SFU built the session, after the
/// hub asked the SFU to drop its sessions: drop this one too.
async fn still_joined(state: &SfuState, stage: &StageId, participant: &ParticipantId, session: &SessionId) -> Result<(), AppError> {
    if state.stages.is_connected(stage, participant) {
        return Ok(());
    }
    let _ = state.sfu.close_session(session.clone(), None).await;
    Err(not_joined())
}

fn sdp_body(body: Result<Bytes, BytesRejection>) -> Result<String, AppError> {
    let body = body.map_err(|r| sdp_unreadable(r.status()))?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| AppError::bad_request("INVALID_SDP", "the SDP offer is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(AppError::bad_request("INVALID_SDP", "the request body must be an SDP offer"));
    }
    Ok(text)
}

fn created(state: &SfuState, claims: &ParticipantClaims, session: &SessionId, answer: String) -> Response {
    let location = format!("{SESSIONS_PATH}/{session}");
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    turn::add_links(headers, &turn::for_participant(&state.config.turn, claims));
    response
}

/// Token, capability, a place on the stage (membership or room for a
/// WHIP-only member), SDP; the session; then that it still holds a place.
async fn publish(
    State(state): State<SfuState>,
    who: Participant<need::Publish>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let (stage, participant) = who.ids();
    let claims = who.claims;
    refuse_new_stage_while_draining(&state.stages, &state.ops, &claims)?;
    let admission = state.stages.begin_whip_publish(&claims, state.config.max_stage_members)?;
    let offer = sdp_body(body)?;
    let (session, answer) = state.sfu.publish(stage.clone(), participant.clone(), offer).await?;
    if !admission.is_whip_only() {
        drop(admission);
        still_joined(&state, &stage, &participant, &session).await?;
        return Ok(created(&state, &claims, &session, answer));
    }
    if !admission.commit(&claims, &session) {
        let _ = state.sfu.close_session(session, None).await;
        return Err(not_joined());
    }
    // Removed (or its session ended) between the answer and the commit:
    // the SFU has handled that by now, so a live session is still held.
    if state.sfu.session_owner(session.clone()).await.is_none() {
        state.stages.whip_session_ended(&stage, &participant, &session);
        return Err(not_joined());
    }
    state.auth.participant_joined(&claims);
    Ok(created(&state, &claims, &session, answer))
}

fn not_joined() -> AppError {
    AppError::conflict("NOT_JOINED", "the participant is no longer on the stage")
}

/// The subscribe query: `?layer=lowest|highest|<rid>`.
#[derive(Debug, Default, serde::Deserialize)]
struct SubscribeQuery {
    layer: Option<String>,
}

async fn subscribe(
    State(state): State<SfuState>,
    who: Participant<need::Subscribe>,
    Path(publisher): Path<String>,
    QueryParams(query): QueryParams<SubscribeQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let (stage, subscriber) = admit(&state, &who)?;
    let claims = who.claims;
    let (start, cap) = match query.layer.as_deref() {
        None | Some("lowest" | "lowest_quality") => (LayerStart::Lowest, None),
        Some("highest" | "highest_quality") => (LayerStart::Highest, None),
        Some(rid) => (LayerStart::Highest, Some(rid.to_owned())),
    };
    let offer = sdp_body(body)?;
    let (session, answer) =
        state.sfu.subscribe(stage.clone(), subscriber.clone(), ParticipantId(publisher), offer, start, cap).await?;
    still_joined(&state, &stage, &subscriber, &session).await?;
    let mut response = created(&state, &claims, &session, answer);
    let link = format!("<{SESSIONS_PATH}/{session}/layer>; rel=\"{LAYER_REL}\"");
    if let Ok(v) = HeaderValue::from_str(&link) {
        response.headers_mut().append(header::LINK, v);
    }
    Ok(response)
}

/// The session's stage must be the token's (else it reads as not found);
/// the SFU checks the participant.
async fn owned(state: &SfuState, who: &Participant<need::Join>, session: &SessionId) -> Result<ParticipantId, AppError> {
    let (stage, participant) = who.ids();
    match state.sfu.session_owner(session.clone()).await {
        Some((s, _)) if s == stage => Ok(participant),
        _ => Err(SfuError::SessionNotFound(session.clone()).into()),
    }
}

async fn get_layers(
    State(state): State<SfuState>,
    who: Participant<need::Join>,
    Path(session): Path<String>,
) -> Result<Json<LayerReport>, AppError> {
    let session = SessionId(session);
    let participant = owned(&state, &who, &session).await?;
    Ok(Json(state.sfu.layers(session, participant).await?))
}

async fn set_layer(
    State(state): State<SfuState>,
    who: Participant<need::Join>,
    Path(session): Path<String>,
    JsonBody(req): JsonBody<LayerRequest>,
) -> Result<StatusCode, AppError> {
    let session = SessionId(session);
    let participant = owned(&state, &who, &session).await?;
    state.sfu.set_layer(session, participant, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_session(
    State(state): State<SfuState>,
    who: Participant<need::Join>,
    Path(session): Path<String>,
) -> Result<StatusCode, AppError> {
    let (stage, participant) = who.ids();
    let session = SessionId(session);
    match state.sfu.session_owner(session.clone()).await {
        Some((s, _)) if s != stage => return Err(SfuError::SessionNotFound(session).into()),
        Some(_) => {}
        None => return Err(SfuError::SessionNotFound(session).into()),
    }
    state.sfu.close_session(session.clone(), Some(participant.clone())).await?;
    // A WHIP-only member leaves with its publish, now rather than when the
    // SFU's event arrives.
    state.stages.whip_session_ended(&stage, &participant, &session);
    Ok(StatusCode::NO_CONTENT)
}
