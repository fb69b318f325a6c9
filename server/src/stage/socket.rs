//! `GET /v1/stage/events`: the event-plane WebSocket. The participant token
//! is the WebSocket subprotocol; it is verified, and a place on the stage
//! held, before the upgrade, so a bad token or a full stage gets a plain
//! JSON error response and no socket.
//!
//! A connection is a reader and a writer ([`super::connection`]) run side by
//! side until one of them, or the token's expiry, ends it. How it ends
//! decides what happens to the participant:
//! - the server ends it (kicked, stage deleted, token reused or expired):
//!   DISCONNECT with the reason, close 1000, the participant leaves now;
//! - the client closes with code 1000 (the SDK's `leave()`, reason
//!   "user-initiated"): the participant leaves now;
//! - anything else — the socket drops, closes with another code, goes
//!   silent past the idle timeout, cannot take a frame within the send
//!   timeout, or floods far past the rate limit (closed with 1008): the
//!   participant stays a member, media untouched, for the reconnect grace;
//!   reconnecting with the same token in that time is invisible to the
//!   others (so a flooder that reconnects costs them no leave/join churn).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use stagecast_protocol::events::{DisconnectReason, IceServer, ServerMessage};
use stagecast_protocol::token::{Capability, ParticipantClaims};
use stagecast_protocol::{ParticipantId, StageId};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use super::connection::{error_frame, read_loop, write_loop, End, FRAGMENT_BYTES, REPLY_SLOTS};
use super::handshake::Handshake;
use super::hub::{HubError, Seat, StageHub};
use super::limit::RateLimit;
use super::StageState;
use crate::auth::require_subprotocol_token;
use crate::{turn, AppError, Config};

/// Frames larger than this end the connection at the transport; frames
/// between [`stagecast_protocol::events::MAX_CLIENT_MESSAGE_BYTES`] and this
/// get an ERROR and the socket stays.
const MAX_TRANSPORT_MESSAGE_BYTES: usize = 64 * 1024;
/// Our sockets read small frames; tungstenite zero-fills its whole read
/// buffer on every poll (see `auth::accept_token_upgrade`).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// tungstenite writes out once this much is buffered (we flush every frame anyway).
const WRITE_BUFFER_BYTES: usize = 2 * FRAGMENT_BYTES;
/// The most tungstenite may buffer for one socket: a few fragments. Past
/// it, the Pongs it owes a client that never reads are coalesced instead of
/// piling up.
const MAX_WRITE_BUFFER_BYTES: usize = 8 * FRAGMENT_BYTES;
/// How long to wait for the client's close frame after ours.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Most frames read while waiting for it (a flooder keeps sending).
const CLOSE_DRAIN_FRAMES: usize = 2048;
/// A frame the client does not take within this long cuts the connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest idle timeout or reconnect grace taken from the configuration (a day).
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;

/// How event-plane connections behave; [`ConnectionSettings::new`] takes
/// them from the server configuration.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Sent in the CONFIG frame that opens every connection.
    pub ice_servers: Vec<IceServer>,
    /// A WebSocket Ping goes out this often (browsers answer by themselves).
    pub ping_interval: Duration,
    /// No frame at all from the client for this long: the peer is dead.
    pub idle_timeout: Duration,
    /// A frame the client does not take within this long cuts the connection.
    pub send_timeout: Duration,
    /// How long a member whose socket was lost stays on the stage.
    pub reconnect_grace: Duration,
    pub rate: RateLimit,
}

impl ConnectionSettings {
    /// The server's settings; a Ping every third of the idle timeout, so a
    /// live peer answers two or three before it would be declared dead.
    pub fn new(config: &Config, ice_servers: Vec<IceServer>) -> Self {
        // Clamped so no timer arithmetic can overflow.
        let idle_timeout = Duration::from_secs(config.event_idle_timeout_secs.clamp(1, MAX_TIMEOUT_SECS));
        Self {
            ice_servers,
            ping_interval: idle_timeout / 3,
            idle_timeout,
            send_timeout: SEND_TIMEOUT,
            reconnect_grace: reconnect_grace(config),
            rate: RateLimit::default(),
        }
    }
}

/// How long a member whose socket was lost (or who was restored after a
/// restart) stays on the stage.
pub fn reconnect_grace(config: &Config) -> Duration {
    Duration::from_secs(config.reconnect_grace_secs.min(MAX_TIMEOUT_SECS))
}

fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_TRANSPORT_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_TRANSPORT_MESSAGE_BYTES))
}

impl From<HubError> for AppError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::StageFull { .. } => AppError::conflict("STAGE_FULL", e.to_string()),
            HubError::LeftStage => AppError::conflict("NOT_JOINED", e.to_string()),
        }
    }
}

pub(crate) async fn events(State(state): State<StageState>, request: Request) -> Response {
    upgrade(state, request).unwrap_or_else(IntoResponse::into_response)
}

/// Token, WebSocket request, a place on the stage — in that order — then
/// 101 and the connection.
fn upgrade(state: StageState, request: Request) -> Result<Response, AppError> {
    let (mut parts, _body) = request.into_parts();
    let token = require_subprotocol_token(&parts.headers, "participant token")?;
    let claims = state.auth.authorize(&token, Capability::Join)?;
    super::refuse_new_stage_while_draining(&state.stages, &state.ops, &claims)?;
    let handshake = Handshake::from_parts(&mut parts)?;
    // Browsers drop a connection whose offered subprotocol is not echoed.
    let protocol = HeaderValue::from_str(&token)
        .map_err(|_| AppError::unauthorized("TOKEN_MALFORMED", "the token is not a valid header value"))?;
    let seat = state.stages.reserve(&claims, state.config.max_stage_members)?;
    let settings = ConnectionSettings::new(&state.config, turn::for_participant(&state.config.turn, &claims));
    Ok(handshake.accept(protocol, websocket_config(), move |socket| async move {
        state.auth.participant_joined(&claims);
        run_connection(&state.stages, seat, &claims, &settings, socket).await;
    }))
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn text(message: &ServerMessage) -> Message {
    Message::Text(super::to_json(message).into())
}

/// Send `frames` then a close frame, giving up after `limit`.
async fn close_with<K: Sink<Message> + Unpin>(sink: &mut K, frames: Vec<Message>, close: CloseFrame, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        for frame in frames {
            if sink.send(frame).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(Some(close))).await;
    })
    .await;
}

/// Read and drop what the client still sends until its close frame (for
/// at most [`CLOSE_GRACE`] and [`CLOSE_DRAIN_FRAMES`]): closing a socket with
/// unread data resets it, and the client would lose our close frame.
async fn drain_until_close<R, E>(stream: &mut R)
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let mut frames = 0;
        while let Some(Ok(m)) = stream.next().await {
            frames += 1;
            if matches!(m, Message::Close(_)) || frames >= CLOSE_DRAIN_FRAMES {
                break;
            }
        }
    })
    .await;
}

/// Serve one connection in the place `seat` holds until it ends, then
/// leave the stage now or after the reconnect grace. Written against any
/// `Sink`/`Stream` of WebSocket messages so it can be driven without a
/// network.
pub async fn run_connection<S, E>(hub: &StageHub, seat: Seat, claims: &ParticipantClaims, settings: &ConnectionSettings, socket: S)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message>,
{
    let stage = StageId(claims.topic.clone());
    let participant = ParticipantId(claims.jti.clone());
    let conn = hub.join(seat, claims);
    let id = conn.id;
    let (mut sink, mut stream) = socket.split();
    let (replies, reply_rx) = mpsc::channel(REPLY_SLOTS);

    // Capped so a far-future `exp` cannot overflow the timer.
    let seconds_left = claims.exp.saturating_sub(now_unix()).clamp(0, 10 * 365 * 24 * 3600) as u64;
    let expiry = tokio::time::sleep(Duration::from_secs(seconds_left));

    let end = tokio::select! {
        end = write_loop(&mut sink, conn.state, conn.disconnect, conn.layers, reply_rx, &claims.jti, settings) => end,
        end = read_loop(&mut stream, hub, &stage, &participant, id, replies, settings) => end,
        _ = expiry => End::Server(DisconnectReason::TokenExpired),
    };

    match end {
        End::Server(reason) => {
            let message = reason_message(reason).to_owned();
            let frame = text(&ServerMessage::Disconnect { reason, message });
            let close = CloseFrame { code: CloseCode::Normal, reason: reason.as_str().into() };
            close_with(&mut sink, vec![frame], close, settings.send_timeout).await;
            drain_until_close(&mut stream).await;
            // A no-op when the hub already removed this connection (kick,
            // deletion, reuse); on expiry the participant leaves here.
            hub.leave(&stage, &participant, id);
        }
        End::Left => {
            // Completes the close handshake tungstenite started.
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
            hub.leave(&stage, &participant, id);
        }
        End::Abusive => {
            tracing::info!(stage = %stage, participant = %participant, "event-plane client far over the rate limit; closed");
            let frame = error_frame("RATE_LIMITED", "too many messages; the connection is closed");
            let close = CloseFrame { code: CloseCode::Policy, reason: "rate limit exceeded".into() };
            close_with(&mut sink, vec![frame], close, CLOSE_GRACE).await;
            drain_until_close(&mut stream).await;
            drop((sink, stream));
            wait_out_the_grace(hub, &stage, &participant, id, settings.reconnect_grace).await;
        }
        End::Lost(why) => {
            tracing::debug!(stage = %stage, participant = %participant, why, "event-plane socket lost");
            drop((sink, stream));
            wait_out_the_grace(hub, &stage, &participant, id, settings.reconnect_grace).await;
        }
        End::Silent => {
            tracing::debug!(stage = %stage, participant = %participant, "event-plane client silent for the idle timeout");
            drop((sink, stream));
            let left = settings.reconnect_grace.saturating_sub(settings.idle_timeout);
            wait_out_the_grace(hub, &stage, &participant, id, left).await;
        }
    }
}

/// The socket is gone (not a leave): the participant stays for what is
/// `left` of the reconnect grace and leaves after it unless it came back.
async fn wait_out_the_grace(hub: &StageHub, stage: &StageId, participant: &ParticipantId, conn: u64, left: Duration) {
    if hub.lost(stage, participant, conn) {
        tokio::time::sleep(left).await;
        hub.grace_over(stage, participant, conn);
    }
}

fn reason_message(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::ParticipantDisconnected => "you were removed from the stage",
        DisconnectReason::StageDeleted => "the stage was deleted",
        DisconnectReason::TokenExpired => "the participant token expired",
        DisconnectReason::TokenReused => "the same token connected again; this connection is replaced",
    }
}
