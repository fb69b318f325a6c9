//! `GET /v1/chat`: the chat WebSocket. The chat token is the subprotocol
//! (echoed back, as browsers require); it is verified before the upgrade,
//! so a bad, expired or room-less token gets a JSON error and no socket.
//!
//! How connections end, and what the official client then does:
//! - moderator/API DisconnectUser, DeleteRoom: close frame 1000 → the
//!   client reports `serverDisconnect` and does not reconnect;
//! - session expiry: ERROR 401 then close 1000 → the client reconnects with
//!   a fresh token from its provider;
//! - too slow to keep up (its queue is full, or a write does not complete
//!   within [`SEND_TIMEOUT`]), or silent for the keepalive timeout (30 s; the
//!   server pings every 10 s and any frame, a pong included, counts): the TCP
//!   connection is cut without a close frame → the client sees a broken
//!   socket and reconnects;
//! - more than [`limit::FRAME_RATE`] frames a second, Ping and Pong included
//!   (a ping flood): close 1008 (policy violation), without waiting.
//!
//! Memory per connection is bounded: the outbound queue holds at most
//! `OUTBOUND_QUEUE` frames, and tungstenite's write buffer at most
//! [`MAX_WRITE_BUFFER_BYTES`] (past that, automatic pongs are coalesced into
//! one and our own writes fail, which cuts the client).

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use super::hub::{ChatHub, Connection, Outbound};
use super::limit::{self, ConnectionGuard, FrameVerdict, TickAction};
use super::room::CloseReason;
use super::{now_ms, ChatState};
use crate::auth::{accept_token_upgrade, now_unix, require_subprotocol_token};
use crate::AppError;

/// Frames up to this size are read and answered (413 for long content);
/// larger ones end the connection at the transport.
const MAX_TRANSPORT_MESSAGE_BYTES: usize = 256 * 1024;
/// A client that does not take a frame within this long is cut.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's close frame after ours.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Bytes tungstenite may hold for a client that does not read (above the
/// largest frame we send, a MESSAGE of a few KiB).
pub const MAX_WRITE_BUFFER_BYTES: usize = 64 * 1024;

pub(crate) async fn chat_socket(
    State(state): State<ChatState>,
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
        // Written through at once; what a non-reading client leaves unsent is capped.
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
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
    /// Cut without a close frame (too slow, or silent).
    Cut,
    /// Over the frame limit: close 1008 without waiting for the client.
    Abuse,
}

/// Milliseconds on the runtime's monotonic clock since `start` (the
/// connection guard must not see wall-clock jumps).
fn mono_ms(start: tokio::time::Instant) -> i64 {
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
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
    let start = tokio::time::Instant::now();
    let mut guard = ConnectionGuard::new(hub.settings().keepalive, 0);
    let interval = Duration::from_millis(guard.keepalive().interval_ms.max(1));
    let mut keepalive = tokio::time::interval_at(start + interval, interval);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

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
            incoming = stream.next() => {
                let Some(Ok(message)) = incoming else { break Ending::ClientGone };
                if guard.on_frame(mono_ms(start)) == FrameVerdict::Abuse {
                    tracing::info!(room = %room, conn = conn.id.0, "chat client over {} frames/s; closing it", limit::FRAME_RATE);
                    break Ending::Abuse;
                }
                match message {
                    Message::Text(text) => hub.handle_text(&room, conn.id, text.as_str(), now_ms()),
                    Message::Binary(_) => hub.handle_binary(&room, conn.id),
                    // Pongs are answered by the transport; both only prove the peer alive.
                    Message::Ping(_) | Message::Pong(_) => {}
                    Message::Close(_) => break Ending::ClientGone,
                }
            },
            _ = keepalive.tick() => match guard.on_tick(mono_ms(start)) {
                TickAction::Dead => {
                    tracing::info!(room = %room, conn = conn.id.0, "chat client silent too long; cutting it");
                    break Ending::Cut;
                }
                TickAction::Ping => {
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break Ending::ClientGone,
                        Err(_) => {
                            tracing::info!(room = %room, conn = conn.id.0, "chat client stalled; cutting it");
                            break Ending::Cut;
                        }
                    }
                }
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
        Ending::Abuse => "frame flood",
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
        Ending::Abuse => {
            let close = CloseFrame { code: 1008, reason: "too many frames".into() };
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(close)))).await;
        }
        Ending::Cut => {}
    }
}
