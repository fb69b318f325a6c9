//! Chat across nodes (distributed mode, `--redis`): a room's members may be
//! connected to different nodes. Each node's room core hands out what it
//! did room-wide as [`Relay`]s; this module appends them to one Redis
//! stream (`stagecast:chat-relays`, `XADD`, trimmed to about
//! [`STREAM_LENGTH`] entries) and applies what the other nodes appended,
//! reading the stream from the last entry it has seen (`XREAD BLOCK`).
//!
//! A stream rather than pub/sub: a node whose reading connection drops for
//! a moment (a Redis restart, a network blip) reads on from where it was,
//! so its members miss nothing sent meanwhile (as long as the gap is
//! shorter than the stream's length).
//!
//! A message's acknowledgement (the sender's copy, with its `RequestId`) is
//! held until Redis has taken the entry, so a message a client saw
//! acknowledged reaches every node, even if its own node dies right after.
//!
//! A gap longer than the stream (a node cut off while more than about
//! [`STREAM_LENGTH`] entries were added) cannot be read across: the node
//! notices on reconnecting (Redis counts the entries ever added and those
//! kept; more trimmed than it had read were lost to it), logs
//! it and counts it (`stagecast_chat_relay_gaps_total`), and reads on.
//!
//! Queues are bounded: [`PUBLISH_QUEUE`] appends wait for Redis; when it
//! is full a relay is dropped (counted, logged) and its acknowledgements go
//! out at once. The stream itself is trimmed.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::hub::{ChatHub, Outbound};
use super::room::Relay;
use crate::auth;

/// Publishes waiting for Redis before relays are dropped.
pub const PUBLISH_QUEUE: usize = 4096;
/// Longest a Redis command or connection attempt may take (a blocking
/// read gets [`READ_BLOCK`] more).
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one `XREAD` waits for new entries before asking again.
const READ_BLOCK: Duration = Duration::from_secs(2);
/// Entries taken per `XREAD`.
const READ_COUNT: usize = 512;
/// The stream keeps about this many entries (`MAXLEN ~`): the longest gap
/// a node can read across, in relays (minutes of a busy room).
pub const STREAM_LENGTH: usize = 10_000;
const STREAM: &str = "stagecast:chat-relays";
/// The entry's one field.
const FIELD: &str = "e";

/// A connection's acknowledgement, sent once its relay is published.
pub type HeldAck = (mpsc::Sender<Outbound>, Utf8Bytes);

/// What travels between nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<'a> {
    /// The publishing node's bus (random per process): a node skips its own.
    origin: Cow<'a, str>,
    room: Cow<'a, str>,
    relays: Cow<'a, [Relay]>,
}

struct Publish {
    room: String,
    relays: Vec<Relay>,
    acks: Vec<HeldAck>,
}

/// The sending half, held by the hub.
pub struct Bus {
    tx: mpsc::Sender<Publish>,
    dropped: AtomicU64,
    received: Arc<AtomicU64>,
    gaps: Arc<AtomicU64>,
}

/// Relays published and received by this node (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub dropped: u64,
    pub received: u64,
    /// Reconnections that found entries trimmed before this node read them.
    pub gaps: u64,
}

impl Bus {
    /// Queue `relays` of `room` for the other nodes; `acks` go out once Redis took them.
    pub fn publish(&self, room: &str, relays: Vec<Relay>, acks: Vec<HeldAck>) {
        let publish = Publish { room: room.to_owned(), relays, acks };
        if let Err(e) = self.tx.try_send(publish) {
            let publish = match e {
                mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p) => p,
            };
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(room, dropped, "chat relay queue full or closed: other nodes miss this room change");
            }
            deliver(publish.acks);
        }
    }

    pub fn stats(&self) -> BusStats {
        BusStats {
            dropped: self.dropped.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
        }
    }
}

fn deliver(acks: Vec<HeldAck>) {
    for (tx, text) in acks {
        // A full queue means a slow client; the hub cuts it on its next frame.
        let _ = tx.try_send(Outbound::Text(text));
    }
}

/// Why distributed chat could not start.
#[derive(Debug, thiserror::Error)]
#[error("chat over Redis: {0}")]
pub struct BusError(#[from] redis::RedisError);

/// Connect to Redis, note where the stream ends, and start relaying
/// `hub`'s rooms. Fails when Redis cannot be reached now.
pub async fn start(hub: &ChatHub, redis_url: &str) -> Result<Bus, BusError> {
    let client = redis::Client::open(redis_url)?;
    let origin = auth::random_alphanumeric(16);
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(REDIS_TIMEOUT)
        .set_response_timeout(REDIS_TIMEOUT);
    let conn = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
    let reader_config = config.set_response_timeout(REDIS_TIMEOUT + READ_BLOCK);
    let mut reader = ConnectionManager::new_with_config(client, reader_config).await?;
    // What is in the stream already is history: read from its end.
    let (added, _) = stream_counts(&mut reader).await?;
    let last: Vec<(String, Vec<Vec<u8>>)> =
        redis::cmd("XREVRANGE").arg(STREAM).arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut reader).await?;
    let from = last.into_iter().next().map_or_else(|| "0-0".to_owned(), |(id, _)| id);
    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
    let received = Arc::new(AtomicU64::new(0));
    let gaps = Arc::new(AtomicU64::new(0));
    tokio::spawn(publish_loop(conn, rx, origin.clone()));
    let counters = Counters { received: received.clone(), gaps: gaps.clone() };
    tokio::spawn(read_loop(reader, from, added, hub.clone(), origin, counters));
    Ok(Bus { tx, dropped: AtomicU64::new(0), received, gaps })
}

async fn publish_loop(mut conn: ConnectionManager, mut rx: mpsc::Receiver<Publish>, origin: String) {
    let mut failures = 0u64;
    while let Some(Publish { room, relays, acks }) = rx.recv().await {
        let envelope = Envelope { origin: Cow::Borrowed(&origin), room: Cow::Borrowed(&room), relays: Cow::Owned(relays) };
        let Ok(payload) = serde_json::to_string(&envelope) else {
            // Strings and string maps always serialize.
            deliver(acks);
            continue;
        };
        let added: Result<String, _> = redis::cmd("XADD")
            .arg(STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_LENGTH)
            .arg("*")
            .arg(FIELD)
            .arg(payload)
            .query_async(&mut conn)
            .await;
        if let Err(e) = added {
            failures += 1;
            if failures.is_power_of_two() {
                tracing::warn!(error = %e, failures, "chat relay: XADD to Redis failed; other nodes miss this room change");
            }
        }
        deliver(acks);
    }
}

/// One `XREAD` answer: per stream, its entries (id, [field, value, …]).
type StreamRead = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;

/// What the reader counts for `/metrics`.
struct Counters {
    received: Arc<AtomicU64>,
    gaps: Arc<AtomicU64>,
}

/// How many entries were ever added to the stream, and how many it holds
/// (`XINFO STREAM`, Redis ≥ 7; `(0, 0)` while it does not exist). The
/// difference is how many were trimmed, oldest first.
async fn stream_counts(conn: &mut ConnectionManager) -> redis::RedisResult<(u64, u64)> {
    let info: Result<std::collections::HashMap<String, redis::Value>, _> =
        redis::cmd("XINFO").arg("STREAM").arg(STREAM).query_async(conn).await;
    let info = match info {
        Ok(info) => info,
        // No such key: nothing added yet.
        Err(e) if e.kind() == redis::ErrorKind::ResponseError => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let count = |key: &str| info.get(key).and_then(|v| redis::from_redis_value::<u64>(v).ok()).unwrap_or(0);
    Ok((count("entries-added"), count("length")))
}

/// Entries this node never read that the stream no longer holds: trimmed
/// (oldest first) beyond the `read` entries it has passed.
fn missed(read: u64, (added, length): (u64, u64)) -> u64 {
    added.saturating_sub(length).saturating_sub(read)
}

/// Read the stream from `from` on, forever; after an error, from the last
/// entry read (the connection reconnects by itself).
/// `passed`: how many of the stream's entries it had passed at `from`.
async fn read_loop(mut conn: ConnectionManager, mut from: String, mut passed: u64, hub: ChatHub, origin: String, counters: Counters) {
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    // Set when a read failed: look for a gap before the next read.
    let mut check_gap = false;
    loop {
        if check_gap {
            // Before reading on: were entries this node has not read trimmed
            // meanwhile? They are lost to its members; say so.
            match stream_counts(&mut conn).await {
                Ok(counts) => {
                    check_gap = false;
                    let lost = missed(passed, counts);
                    if lost > 0 {
                        counters.gaps.fetch_add(1, Ordering::Relaxed);
                        // Read on from the oldest entry kept.
                        passed += lost;
                        tracing::warn!(
                            from,
                            lost,
                            "chat relay: the stream was trimmed past where this node stopped reading; \
                             its members missed room changes made on other nodes meanwhile"
                        );
                    }
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let read: Result<StreamRead, _> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(&from)
            .query_async(&mut conn)
            .await;
        let streams = match read {
            Ok(streams) => {
                if failing {
                    tracing::info!(from, "chat relay: reading from Redis again, from where it stopped");
                    failing = false;
                    backoff = Duration::from_millis(100);
                }
                streams.unwrap_or_default()
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "chat relay: cannot read from Redis; retrying");
                    failing = true;
                }
                check_gap = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        for (_, entries) in streams {
            for (id, fields) in entries {
                from = id;
                passed += 1;
                let payload = fields.chunks(2).find(|kv| kv.len() == 2 && kv[0] == FIELD.as_bytes()).map(|kv| &kv[1]);
                let Some(Ok(envelope)) = payload.map(|p| serde_json::from_slice::<Envelope<'_>>(p)) else {
                    tracing::warn!(id = from, "chat relay: unreadable entry in the chat stream");
                    continue;
                };
                if envelope.origin == origin || envelope.relays.is_empty() {
                    continue;
                }
                counters.received.fetch_add(1, Ordering::Relaxed);
                hub.apply_remote(&envelope.room, envelope.relays.into_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::missed;

    #[test]
    fn what_was_trimmed_beyond_what_was_read_is_missed() {
        // 100 added, 100 kept: nothing trimmed.
        assert_eq!(missed(40, (100, 100)), 0);
        // 30 trimmed, 40 read: the trimmed ones had been read.
        assert_eq!(missed(40, (100, 70)), 0);
        assert_eq!(missed(40, (100, 60)), 0);
        // 55 trimmed, 40 read: 15 were never read.
        assert_eq!(missed(40, (100, 45)), 15);
        // The stream was deleted and started again: nothing known missed.
        assert_eq!(missed(40, (3, 3)), 0);
    }
}
