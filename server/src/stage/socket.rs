//! `GET /v1/stage/events`: the event-plane WebSocket. The participant token
//! is the WebSocket subprotocol; it is verified before the upgrade, so a bad
//! token gets a plain JSON error response and no socket.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use stagecast_protocol::events::{ClientMessage, ServerMessage, MAX_CLIENT_MESSAGE_BYTES};
use stagecast_protocol::token::{Capability, ParticipantClaims};
use stagecast_protocol::{ParticipantId, StageId};

use super::hub::{to_json, Outbound, StageHub};
use crate::auth::{accept_token_upgrade, require_subprotocol_token};
use crate::AppState;

/// Frames larger than this end the connection at the transport; frames
/// between [`MAX_CLIENT_MESSAGE_BYTES`] and this get an ERROR and the socket stays.
const MAX_TRANSPORT_MESSAGE_BYTES: usize = 64 * 1024;
/// How long to wait for the client's close frame after ours.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = match require_subprotocol_token(&headers, "participant token") {
        Ok(token) => token,
        Err(e) => return e.into_response(),
    };
    let claims = match state.authorize(&token, Capability::Join) {
        Ok(claims) => claims,
        Err(e) => return e.into_response(),
    };
    let upgrade = match accept_token_upgrade(upgrade, &token) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    upgrade
        .max_message_size(MAX_TRANSPORT_MESSAGE_BYTES)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "event-plane upgrade failed"))
        .on_upgrade(move |socket| async move {
            state.participant_joined(&claims);
            run_connection(&state.stages, &claims, socket).await;
        })
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn error_frame(code: &str, message: impl Into<String>) -> Message {
    Message::Text(to_json(&ServerMessage::Error { code: code.to_owned(), message: message.into() }).into())
}

/// What a client frame asks for, or the ERROR it earns.
fn parse_client_frame(text: &str) -> Result<ClientMessage, Message> {
    if text.len() > MAX_CLIENT_MESSAGE_BYTES {
        return Err(error_frame(
            "MESSAGE_TOO_LARGE",
            format!("event-plane messages are limited to {MAX_CLIENT_MESSAGE_BYTES} bytes"),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| error_frame("INVALID_JSON", format!("the message is not JSON: {e}")))?;
    let kind = value.get("type").and_then(|t| t.as_str()).map(str::to_owned);
    serde_json::from_value(value).map_err(|e| match kind {
        Some(k) if k != "SET_STATE" && k != "PING" => error_frame("UNKNOWN_MESSAGE", format!("unknown message type {k:?}")),
        None => error_frame("INVALID_MESSAGE", "the message has no \"type\""),
        Some(_) => error_frame("INVALID_MESSAGE", format!("invalid message: {e}")),
    })
}

/// Serve one joined connection until it closes or the server ends it, then
/// leave the stage. Written against any `Sink`/`Stream` of WebSocket
/// messages so it can be driven without a network.
pub async fn run_connection<S, E>(hub: &StageHub, claims: &ParticipantClaims, socket: S)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
{
    let stage = StageId(claims.topic.clone());
    let participant = ParticipantId(claims.jti.clone());
    let mut conn = hub.join(claims);
    let (mut sink, mut stream) = socket.split();

    // Capped so a far-future `exp` cannot overflow the timer.
    let seconds_left = claims.exp.saturating_sub(now_unix()).clamp(0, 10 * 365 * 24 * 3600) as u64;
    let expiry = tokio::time::sleep(Duration::from_secs(seconds_left));
    tokio::pin!(expiry);

    let ending: Option<(stagecast_protocol::events::DisconnectReason, String)> = loop {
        tokio::select! {
            outbound = conn.outbound.recv() => match outbound {
                Some(Outbound::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break None;
                    }
                }
                Some(Outbound::Disconnect { reason, message }) => break Some((reason, message)),
                None => break None,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = match parse_client_frame(text.as_str()) {
                        Ok(ClientMessage::SetState { audio_muted, video_stopped }) => {
                            hub.set_state(&stage, &participant, conn.id, audio_muted, video_stopped);
                            None
                        }
                        Ok(ClientMessage::Ping) => Some(Message::Text(to_json(&ServerMessage::Pong).into())),
                        Err(error) => Some(error),
                    };
                    if let Some(reply) = reply {
                        if sink.send(reply).await.is_err() {
                            break None;
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    if sink.send(error_frame("INVALID_MESSAGE", "send JSON text frames")).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
            },
            _ = &mut expiry => {
                let reason = stagecast_protocol::events::DisconnectReason::TokenExpired;
                break Some((reason, "the participant token expired".to_owned()));
            }
        }
    };

    if let Some((reason, message)) = ending {
        let frame = to_json(&ServerMessage::Disconnect { reason, message });
        let _ = sink.send(Message::Text(frame.into())).await;
        let close = CloseFrame { code: 1000, reason: reason.as_str().into() };
        let _ = sink.send(Message::Close(Some(close))).await;
        // Let the client's close frame arrive so it sees a clean close.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    // A no-op when the hub already removed this connection (kick, delete,
    // reuse); otherwise the participant leaves and its media ends.
    hub.leave(&stage, &participant, conn.id);
}
