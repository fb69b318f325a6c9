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

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
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
/// Frames already queued for a client are written together, up to this
/// many: one write (one syscall) for a batch instead of one per frame.
const MAX_BATCH: usize = 64;
/// A client's next write waits until this long after its last one,
/// gathering what arrives meanwhile. A busy room (tens of messages a
/// second) then costs each socket a few frames per write instead of one
/// write (the bulk of fan-out's CPU) per frame; a client written to less
/// often than this waits for nothing.
const WRITE_INTERVAL: Duration = Duration::from_millis(40);
/// Bytes a batch collects before they go to the socket (flushed at the end
/// of every batch in any case).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;
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
        // Batches are written once they pass this, and at their end; what a
        // non-reading client leaves unsent is capped.
        .write_buffer_size(WRITE_BUFFER_BYTES)
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

/// [`send_batch`] within [`SEND_TIMEOUT`]; `Some` when the connection ends.
async fn write_out<K>(
    sink: &mut K,
    queue: &mut tokio::sync::mpsc::Receiver<Outbound>,
    first: Utf8Bytes,
    room: &str,
    conn: u64,
) -> Option<Ending>
where
    K: Sink<Message> + Unpin,
{
    let mut batch = std::pin::pin!(send_batch(sink, queue, first));
    // Almost always done at once (the socket takes it): no timer for that.
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(batch.as_mut().poll(cx))).await;
    let sent = match polled {
        std::task::Poll::Ready(sent) => Ok(sent),
        std::task::Poll::Pending => tokio::time::timeout(SEND_TIMEOUT, batch).await,
    };
    match sent {
        Ok(Ok(None)) => None,
        Ok(Ok(Some(reason))) => Some(Ending::Close(reason)),
        Ok(Err(_)) => Some(Ending::ClientGone),
        Err(_) => {
            tracing::info!(room, conn, "chat client stalled; cutting it");
            Some(Ending::Cut)
        }
    }
}

/// Writes `first` and whatever else is already queued (up to [`MAX_BATCH`]
/// frames), then flushes once. A close met in the queue ends the batch and
/// is returned, to be sent after the frames before it.
async fn send_batch<K>(
    sink: &mut K,
    queue: &mut tokio::sync::mpsc::Receiver<Outbound>,
    first: Utf8Bytes,
) -> Result<Option<CloseReason>, K::Error>
where
    K: Sink<Message> + Unpin,
{
    sink.feed(Message::Text(first)).await?;
    let mut close = None;
    for _ in 1..MAX_BATCH {
        match queue.try_recv() {
            Ok(Outbound::Text(text)) => sink.feed(Message::Text(text)).await?,
            Ok(Outbound::Close(reason)) => {
                close = Some(reason);
                break;
            }
            Err(_) => break,
        }
    }
    sink.flush().await?;
    Ok(close)
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
    // Writes are spaced by WRITE_INTERVAL: a frame that comes sooner is held
    // (and the queue behind it waits) until the gate opens; reading goes on.
    let mut next_write_at = start;
    let mut held: Option<Utf8Bytes> = None;
    let write_gate = tokio::time::sleep_until(start);
    tokio::pin!(write_gate);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let ending = loop {
        tokio::select! {
            biased;
            killed = &mut conn.killed, if kill_armed => match killed {
                Ok(()) => break Ending::Cut,
                Err(_) => kill_armed = false,
            },
            () = &mut write_gate, if held.is_some() => {
                let Some(first) = held.take() else { continue };
                next_write_at = tokio::time::Instant::now() + WRITE_INTERVAL;
                if let Some(ending) = write_out(&mut sink, &mut conn.outbound, first, &room, conn.id.0).await {
                    break ending;
                }
            },
            outbound = conn.outbound.recv(), if held.is_none() => match outbound {
                Some(Outbound::Text(text)) => {
                    let now = tokio::time::Instant::now();
                    if now < next_write_at {
                        held = Some(text);
                        write_gate.as_mut().reset(next_write_at);
                        continue;
                    }
                    next_write_at = now + WRITE_INTERVAL;
                    if let Some(ending) = write_out(&mut sink, &mut conn.outbound, text, &room, conn.id.0).await {
                        break ending;
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
