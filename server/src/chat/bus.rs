//! Chat across nodes (distributed mode, `--redis`): a room's members may be
//! connected to different nodes. Each node's room core hands out what it
//! did room-wide as [`Relay`]s; this module publishes them on Redis pub/sub
//! (channel `stagecast:chat:<room>`) and applies what other nodes publish.
//!
//! A message's acknowledgement (the sender's copy, with its `RequestId`) is
//! held until Redis has taken the publish, so a message a client saw
//! acknowledged has reached every node subscribed at that moment, even if
//! its own node dies right after. Pub/sub keeps nothing: a node whose
//! subscription is down for a moment misses what was sent meanwhile (its
//! clients see a gap, as after a reconnect).
//!
//! Queues are bounded: [`PUBLISH_QUEUE`] publishes wait for Redis; when it
//! is full a relay is dropped (counted, logged) and its acknowledgements go
//! out at once.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::hub::{ChatHub, Outbound};
use super::room::Relay;
use crate::auth;

/// Publishes waiting for Redis before relays are dropped.
pub const PUBLISH_QUEUE: usize = 4096;
/// Longest a Redis command or connection attempt may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a node pings its own subscription (through Redis).
const PING_EVERY: Duration = Duration::from_secs(5);
/// A subscription that hears nothing (not even its own pings) this long is reopened.
const SUBSCRIPTION_IDLE: Duration = Duration::from_secs(16);
const CHANNEL_PREFIX: &str = "stagecast:chat:";
/// The channel pings go to (matched by the pattern, never a room id: room ids are alphanumeric).
const PING_CHANNEL: &str = "stagecast:chat:~ping";

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
}

/// Relays published and received by this node (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub dropped: u64,
    pub received: u64,
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
        BusStats { dropped: self.dropped.load(Ordering::Relaxed), received: self.received.load(Ordering::Relaxed) }
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

/// Connect to Redis, subscribe to every room's channel, and start relaying
/// `hub`'s rooms. Fails when Redis cannot be reached now.
pub async fn start(hub: &ChatHub, redis_url: &str) -> Result<Bus, BusError> {
    let client = redis::Client::open(redis_url)?;
    let origin = auth::random_alphanumeric(16);
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(REDIS_TIMEOUT)
        .set_response_timeout(REDIS_TIMEOUT);
    let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
    let subscription = subscribe(&client).await?;
    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
    let received = Arc::new(AtomicU64::new(0));
    tokio::spawn(publish_loop(conn, rx, origin.clone()));
    tokio::spawn(subscribe_loop(client, subscription, hub.clone(), origin, received.clone()));
    Ok(Bus { tx, dropped: AtomicU64::new(0), received })
}

async fn subscribe(client: &redis::Client) -> Result<redis::aio::PubSub, redis::RedisError> {
    let timed_out = || redis::RedisError::from((redis::ErrorKind::IoError, "timed out"));
    let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub()).await.map_err(|_| timed_out())??;
    tokio::time::timeout(REDIS_TIMEOUT, pubsub.psubscribe(format!("{CHANNEL_PREFIX}*")))
        .await
        .map_err(|_| timed_out())??;
    Ok(pubsub)
}

async fn publish_loop(mut conn: ConnectionManager, mut rx: mpsc::Receiver<Publish>, origin: String) {
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut failures = 0u64;
    loop {
        let (channel, payload, acks) = tokio::select! {
            next = rx.recv() => match next {
                Some(Publish { room, relays, acks }) => {
                    let envelope = Envelope { origin: Cow::Borrowed(&origin), room: Cow::Borrowed(&room), relays: Cow::Owned(relays) };
                    (format!("{CHANNEL_PREFIX}{room}"), serde_json::to_string(&envelope), acks)
                }
                None => return,
            },
            _ = ping.tick() => {
                let envelope = Envelope { origin: Cow::Borrowed(&origin), room: Cow::Borrowed(""), relays: Cow::Owned(Vec::new()) };
                (PING_CHANNEL.to_owned(), serde_json::to_string(&envelope), Vec::new())
            }
        };
        let Ok(payload) = payload else {
            // Strings and string maps always serialize.
            deliver(acks);
            continue;
        };
        let sent: Result<i64, _> = redis::cmd("PUBLISH").arg(&channel).arg(payload).query_async(&mut conn).await;
        if let Err(e) = sent {
            failures += 1;
            if failures.is_power_of_two() {
                tracing::warn!(error = %e, failures, "chat relay: PUBLISH to Redis failed; other nodes miss this room change");
            }
        }
        deliver(acks);
    }
}

async fn subscribe_loop(
    client: redis::Client,
    first: redis::aio::PubSub,
    hub: ChatHub,
    origin: String,
    received: Arc<AtomicU64>,
) {
    let mut subscription = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        let pubsub = match subscription.take() {
            Some(s) => s,
            None => match subscribe(&client).await {
                Ok(s) => {
                    tracing::info!("chat relay: subscribed to Redis again");
                    backoff = Duration::from_millis(100);
                    s
                }
                Err(e) => {
                    tracing::warn!(error = %e, "chat relay: cannot subscribe to Redis; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let mut messages = pubsub.into_on_message();
        loop {
            let message = match tokio::time::timeout(SUBSCRIPTION_IDLE, messages.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    tracing::warn!("chat relay: the Redis subscription closed; reopening it");
                    break;
                }
                Err(_) => {
                    tracing::warn!("chat relay: nothing from Redis for {SUBSCRIPTION_IDLE:?} (not even pings); reopening");
                    break;
                }
            };
            let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(message.get_payload_bytes()) else {
                tracing::warn!(channel = message.get_channel_name(), "chat relay: unreadable message on the chat channel");
                continue;
            };
            if envelope.origin == origin || envelope.relays.is_empty() {
                continue;
            }
            received.fetch_add(1, Ordering::Relaxed);
            hub.apply_remote(&envelope.room, envelope.relays.into_owned());
        }
    }
}
