//! `GET /v1/chat`: the chat WebSocket. The chat token is the subprotocol
//! (echoed back, as browsers require); it is verified before the upgrade,
//! so a bad, expired or room-less token gets a JSON error and no socket.
//!
//! How connections end, and what the official client then does:
//! - moderator/API DisconnectUser, DeleteRoom: close frame 1000 → the
//!   client reports `serverDisconnect` and does not reconnect;
//! - session expiry: ERROR 401 then close 1000 → the client reconnects with
//!   a fresh token from its provider;
//! - too slow to keep up: the TCP connection is cut without a close frame →
//!   the client sees a broken socket and reconnects.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use super::hub::{ChatHub, Connection, Outbound};
use super::room::CloseReason;
use super::now_ms;
use crate::auth::{accept_token_upgrade, now_unix, require_subprotocol_token};
use crate::{AppError, AppState};

/// Frames up to this size are read and answered (413 for long content);
/// larger ones end the connection at the transport.
const MAX_TRANSPORT_MESSAGE_BYTES: usize = 256 * 1024;
/// A client that does not take a frame within this long is cut.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's close frame after ours.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub(crate) async fn chat_socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = match require_subprotocol_token(&headers, "chat token") {
        Ok(token) => token,
        Err(e) => return e.into_response(),
    };
    let claims = match state.chat.verify_token(&token, now_unix()) {
        Ok(claims) => claims,
        Err(e) => return AppError::from(e).into_response(),
    };
    let upgrade = match accept_token_upgrade(upgrade, &token) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    // Joined before the 101 goes out: the client may send (and expect to
    // receive) as soon as it sees `open`. Frames wait in the queue meanwhile.
    let conn = match state.chat.join(&claims) {
        Ok(conn) => conn,
        Err(e) => return AppError::from(e).into_response(),
    };
    let hub = state.chat.clone();
    upgrade
        .max_message_size(MAX_TRANSPORT_MESSAGE_BYTES)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "chat upgrade failed"))
        .on_upgrade(move |socket| async move { run_connection(&hub, conn, socket).await })
}

/// How the loop ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The client closed or the socket failed.
    ClientGone,
    /// Server-initiated close with a close frame.
    Close(CloseReason),
    /// Cut without a close frame (too slow).
    Cut,
}

/// Serve one joined chat connection until it ends. Written against any
/// `Sink`/`Stream` of WebSocket messages so it can be driven without a network.
pub async fn run_connection<S, E>(hub: &ChatHub, mut conn: Connection, socket: S)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let room = conn.room.clone();

    let until_expiry = |expires_ms: i64| {
        // Capped so a far-future expiry cannot overflow the timer.
        Duration::from_millis(expires_ms.saturating_sub(now_ms()).clamp(0, 365 * 24 * 3600 * 1000) as u64)
    };
    let expiry = tokio::time::sleep(until_expiry(conn.session_expires_ms));
    tokio::pin!(expiry);
    let mut kill_armed = true;

    let ending = loop {
        tokio::select! {
            biased;
            killed = &mut conn.killed, if kill_armed => match killed {
                Ok(()) => break Ending::Cut,
                Err(_) => kill_armed = false,
            },
            outbound = conn.outbound.recv() => match outbound {
                Some(Outbound::Text(text)) => {
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break Ending::ClientGone,
                        Err(_) => {
                            tracing::info!(room = %room, conn = conn.id.0, "chat client stalled; cutting it");
                            break Ending::Cut;
                        }
                    }
                }
                Some(Outbound::Close(reason)) => break Ending::Close(reason),
                None => break Ending::Cut,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => hub.handle_text(&room, conn.id, text.as_str(), now_ms()),
                Some(Ok(Message::Binary(_))) => hub.handle_binary(&room, conn.id),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break Ending::ClientGone,
            },
            () = &mut expiry => {
                hub.tick(&room, now_ms());
                // Normally the 401 and close are queued now; re-check later in case of clock skew.
                expiry.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    };
    // A no-op when the hub already removed this connection.
    hub.leave(&room, conn.id);
    let why = match ending {
        Ending::ClientGone => "client closed",
        Ending::Close(reason) => reason.as_str(),
        Ending::Cut => "cut",
    };
    tracing::debug!(room = %room, conn = conn.id.0, why, "chat connection ended");

    match ending {
        Ending::Close(reason) => {
            let close = CloseFrame { code: 1000, reason: reason.as_str().into() };
            let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(Some(close)))).await;
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
        Ending::ClientGone => {
            // Flushes the close reply the transport queued for the client's close.
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.flush()).await;
        }
        Ending::Cut => {}
    }
}
