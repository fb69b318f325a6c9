//! The two halves of one event-plane connection.
//!
//! The writer owns the sink. It opens with CONFIG, then, whenever the stage
//! changes, builds ONE frame from the newest [`RoomState`] and the sequence
//! number it last sent (a full STAGE_STATE first, STAGE_DELTAs after; a long
//! one fragmented); it also sends the reader's replies and a WebSocket Ping
//! every `ping_interval`. Every send has a timeout. It never holds the hub
//! lock.
//!
//! The reader owns the stream: it rate-limits every frame, applies SET_STATE,
//! and hands replies (PONG, ERROR) to the writer through a few slots — a
//! client that does not read its replies loses them rather than growing a
//! queue. No frame at all for `idle_timeout` means the peer is dead.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use stagecast_protocol::events::{ClientMessage, DisconnectReason, ServerMessage, MAX_CLIENT_MESSAGE_BYTES};
use stagecast_protocol::{ParticipantId, StageId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{timeout, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::hub::StageHub;
use super::limit::{FrameLimiter, Verdict};
use super::room::RoomState;
use super::socket::ConnectionSettings;
use super::to_json;

/// Replies (PONG, ERROR) waiting for the writer; more are dropped.
pub(crate) const REPLY_SLOTS: usize = 4;
/// A text frame longer than this goes out as a fragmented message, so
/// tungstenite never buffers more than a fragment of it.
pub(crate) const FRAGMENT_BYTES: usize = 16 * 1024;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The server ends it with DISCONNECT (kicked, deleted, reused, expired).
    Server(DisconnectReason),
    /// The client closed with code 1000: a deliberate leave.
    Left,
    /// Far over the rate limit: closed with 1008, then the grace applies.
    Abusive,
    /// Dropped, closed otherwise or too slow: the grace applies.
    Lost(&'static str),
    /// Nothing heard for the idle timeout: the grace applies, counted from
    /// when the peer was last heard (a link that died 30 s ago is past a
    /// 20 s grace, however late a dead socket is noticed).
    Silent,
}

pub(crate) fn error_frame(code: &str, message: impl Into<String>) -> Message {
    Message::Text(to_json(&ServerMessage::Error { code: code.to_owned(), message: message.into() }).into())
}

async fn send<K: Sink<Message> + Unpin>(sink: &mut K, message: Message, settings: &ConnectionSettings) -> Result<(), End> {
    match timeout(settings.send_timeout, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Lost("send failed")),
        Err(_) => Err(End::Lost("send timed out")),
    }
}

/// `text` as one message of [`FRAGMENT_BYTES`]-sized frames (RFC 6455 §5.4;
/// browsers reassemble it). Cuts may fall inside a UTF-8 sequence: only the
/// whole message must be valid.
pub(crate) fn fragments(text: String) -> Vec<Message> {
    if text.len() <= FRAGMENT_BYTES {
        return vec![Message::Text(text.into())];
    }
    let bytes = Bytes::from(text);
    let count = bytes.len().div_ceil(FRAGMENT_BYTES);
    (0..count)
        .map(|i| {
            let start = i * FRAGMENT_BYTES;
            let end = (start + FRAGMENT_BYTES).min(bytes.len());
            let opcode = if i == 0 { Data::Text } else { Data::Continue };
            Message::Frame(Frame::message(bytes.slice(start..end), OpCode::Data(opcode), i + 1 == count))
        })
        .collect()
}

/// Send `text`, fragmented if long; each fragment has the send timeout.
async fn send_text<K: Sink<Message> + Unpin>(sink: &mut K, text: String, settings: &ConnectionSettings) -> Result<(), End> {
    for message in fragments(text) {
        send(sink, message, settings).await?;
    }
    Ok(())
}

/// Write frames until the server ends the connection or a send fails.
pub(crate) async fn write_loop<K: Sink<Message> + Unpin>(
    sink: &mut K,
    mut state: watch::Receiver<Arc<RoomState>>,
    mut disconnect: oneshot::Receiver<DisconnectReason>,
    mut layers: watch::Receiver<Option<Vec<String>>>,
    mut replies: mpsc::Receiver<Message>,
    self_id: &str,
    settings: &ConnectionSettings,
) -> End {
    match write_frames(sink, &mut state, &mut disconnect, &mut layers, &mut replies, self_id, settings).await {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

async fn write_frames<K: Sink<Message> + Unpin>(
    sink: &mut K,
    state: &mut watch::Receiver<Arc<RoomState>>,
    disconnect: &mut oneshot::Receiver<DisconnectReason>,
    layers: &mut watch::Receiver<Option<Vec<String>>>,
    replies: &mut mpsc::Receiver<Message>,
    self_id: &str,
    settings: &ConnectionSettings,
) -> Result<std::convert::Infallible, End> {
    let config = ServerMessage::Config { ice_servers: settings.ice_servers.clone() };
    send_text(sink, to_json(&config), settings).await?;
    let mut layers_open = true;
    // Said before this connection existed (a reconnect): say it again.
    let wanted = layers.borrow_and_update().clone();
    if let Some(rids) = wanted {
        send_text(sink, to_json(&ServerMessage::PublishLayers { rids }), settings).await?;
    }
    let start = tokio::time::Instant::now() + settings.ping_interval;
    let mut ping = tokio::time::interval_at(start, settings.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_sent: Option<u64> = None;
    loop {
        match disconnect.try_recv() {
            Ok(reason) => return Err(End::Server(reason)),
            Err(oneshot::error::TryRecvError::Closed) => return Err(End::Lost("removed from the hub")),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        // Cloned out so the hub never waits on a frame being built.
        let latest = state.borrow_and_update().clone();
        let frame = latest.frame(self_id, last_sent).map(|f| (f, latest.sequence_number()));
        drop(latest);
        if let Some((frame, sequence)) = frame {
            send_text(sink, frame, settings).await?;
            last_sent = Some(sequence);
        }
        tokio::select! {
            biased;
            reason = &mut *disconnect => {
                return Err(reason.map_or(End::Lost("removed from the hub"), End::Server));
            }
            changed = state.changed() => {
                // The stage entry went away without a DISCONNECT (the hub was dropped).
                changed.map_err(|_| End::Lost("the stage is gone"))?;
            }
            changed = layers.changed(), if layers_open => match changed {
                Ok(()) => {
                    let wanted = layers.borrow_and_update().clone();
                    if let Some(rids) = wanted {
                        send_text(sink, to_json(&ServerMessage::PublishLayers { rids }), settings).await?;
                    }
                }
                Err(_) => layers_open = false,
            },
            Some(reply) = replies.recv() => send(sink, reply, settings).await?,
            _ = ping.tick() => send(sink, Message::Ping(Bytes::new()), settings).await?,
        }
    }
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

/// Read client frames until the client leaves, goes silent, or floods.
pub(crate) async fn read_loop<R, E>(
    stream: &mut R,
    hub: &StageHub,
    stage: &StageId,
    participant: &ParticipantId,
    conn: u64,
    replies: mpsc::Sender<Message>,
    settings: &ConnectionSettings,
) -> End
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let mut limiter = FrameLimiter::new(settings.rate, Instant::now());
    loop {
        let message = match timeout(settings.idle_timeout, stream.next()).await {
            Err(_) => return End::Silent,
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(_)) | None) => return End::Lost("the socket closed"),
        };
        if let Message::Close(frame) = &message {
            return match frame {
                Some(f) if f.code == CloseCode::Normal => End::Left,
                _ => End::Lost("closed by the client without leaving"),
            };
        }
        match limiter.on_frame(Instant::now()) {
            Verdict::Accept => {}
            Verdict::Drop { notify } => {
                if notify {
                    let _ = replies.try_send(error_frame("RATE_LIMITED", "too many messages; some were dropped"));
                }
                continue;
            }
            Verdict::Close => return End::Abusive,
        }
        let reply = match message {
            Message::Text(text) => match parse_client_frame(text.as_str()) {
                Ok(ClientMessage::SetState { audio_muted, video_stopped }) => {
                    hub.set_state(stage, participant, conn, audio_muted, video_stopped);
                    None
                }
                Ok(ClientMessage::Ping) => Some(Message::Text(to_json(&ServerMessage::Pong).into())),
                Err(error) => Some(error),
            },
            Message::Binary(_) => Some(error_frame("INVALID_MESSAGE", "send JSON text frames")),
            // tungstenite answers Pings itself; both only count as life.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => None,
        };
        if let Some(reply) = reply {
            let _ = replies.try_send(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_one_message_of_fragments() {
        assert!(matches!(fragments("short".into()).as_slice(), [Message::Text(t)] if t.as_str() == "short"));
        let text = "é".repeat(FRAGMENT_BYTES); // 2 bytes each: cuts fall inside characters
        let parts = fragments(text.clone());
        assert_eq!(parts.len(), 2);
        let mut joined = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let Message::Frame(frame) = part else { panic!("fragment {i} is not a raw frame") };
            let header = frame.header();
            assert_eq!(header.is_final, i == 1);
            assert_eq!(header.opcode, OpCode::Data(if i == 0 { Data::Text } else { Data::Continue }));
            joined.extend_from_slice(frame.payload());
        }
        assert_eq!(joined, text.as_bytes());
    }
}
