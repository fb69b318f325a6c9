//! [`ChatHub`]: the stored rooms, the chat token signer, and for each room
//! with connections (or recent messages) its [`RoomCore`] plus one bounded
//! outbound queue per connection.
//!
//! Every change to a room happens under one lock and is applied to the
//! queues before the lock is released, so all members see frames in the
//! same order. A queue that is full means a client that cannot keep up: it
//! is dropped from the room and its socket is cut (no close handshake, so
//! the official client treats it as a broken connection and reconnects)
//! rather than silently skipping frames.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot};

use super::bus::{Bus, BusStats, HeldAck};
use super::identity::{BadViewerSecret, ViewerIds};
use super::limit::Keepalive;
use super::room::{ChatPolicy, ConnId, Member, Output, Relay, RoomCore, RoomLimits, MAX_ATTRIBUTES_BYTES};
use super::store::{RoomRecord, RoomStore, SqliteRoomStore};
use super::token::{ChatCapability, ChatClaims, ChatSigner};
use super::wire::{ErrorCode, Frame};
use super::ChatError;
use crate::auth;

/// Frames a connection may have queued before it counts as too slow.
pub const OUTBOUND_QUEUE: usize = 512;
/// Session length when CreateChatToken names none, in minutes (IVS default).
pub const DEFAULT_SESSION_MINUTES: u32 = 60;
/// Longest session, in minutes (IVS).
pub const MAX_SESSION_MINUTES: u32 = 180;
/// Longest room name, user id and custom event name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest SendEvent name (IVS).
pub const MAX_EVENT_NAME_CHARS: usize = 100;

/// What the socket task receives.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// Send a close frame and end; this connection is no longer in the room.
    Close(super::room::CloseReason),
}

/// A joined connection, owned by its socket task. Dropping it leaves the
/// room (so a handshake that never completes leaves no member behind).
pub struct Connection {
    hub: ChatHub,
    pub id: ConnId,
    pub room: String,
    pub outbound: mpsc::Receiver<Outbound>,
    /// Fires (`Ok`) when the hub cuts the connection; `Err` just means the
    /// hub let go of it and the close arrives through `outbound`.
    pub killed: oneshot::Receiver<()>,
    /// Session end, Unix ms.
    pub session_expires_ms: i64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub.leave(&self.room, self.id);
    }
}

struct ConnHandle {
    tx: mpsc::Sender<Outbound>,
    kill: oneshot::Sender<()>,
}

struct LiveRoom {
    core: RoomCore,
    conns: HashMap<ConnId, ConnHandle>,
}

impl LiveRoom {
    /// Apply the core's outputs in order; slow consumers are cut afterwards.
    fn apply(&mut self, outputs: Vec<Output>) {
        let mut slow = Vec::new();
        for output in outputs {
            match output {
                Output::Frame { to, frame } => {
                    // Serialized once; clones share the bytes.
                    let text = Utf8Bytes::from(frame.to_json());
                    for conn in to {
                        if let Some(handle) = self.conns.get(&conn) {
                            if handle.tx.try_send(Outbound::Text(text.clone())).is_err() {
                                slow.push(conn);
                            }
                        }
                    }
                }
                Output::Close { conn, reason } => {
                    if let Some(handle) = self.conns.remove(&conn) {
                        if handle.tx.try_send(Outbound::Close(reason)).is_err() {
                            let _ = handle.kill.send(());
                        }
                    }
                }
            }
        }
        for conn in slow {
            self.core.drop_slow(conn);
            if let Some(handle) = self.conns.remove(&conn) {
                tracing::info!(conn = conn.0, "chat client too slow; disconnecting it");
                let _ = handle.kill.send(());
            }
        }
    }

    /// [`LiveRoom::apply`], except that acknowledgements (a MESSAGE or
    /// EVENT carrying its requester's `RequestId`) are returned, to be sent
    /// once the room change is published to the other nodes.
    fn apply_holding_acks(&mut self, outputs: Vec<Output>) -> Vec<HeldAck> {
        let is_ack = |o: &Output| {
            matches!(o, Output::Frame { frame: Frame::Message { request_id: Some(_), .. } | Frame::Event { request_id: Some(_), .. }, .. })
        };
        let (acks, rest): (Vec<Output>, Vec<Output>) = outputs.into_iter().partition(is_ack);
        let held = acks
            .into_iter()
            .filter_map(|o| match o {
                Output::Frame { to, frame } => Some((to, Utf8Bytes::from(frame.to_json()))),
                Output::Close { .. } => None,
            })
            .flat_map(|(to, text)| to.into_iter().map(move |c| (c, text.clone())))
            .filter_map(|(conn, text)| self.conns.get(&conn).map(|h| (h.tx.clone(), text)))
            .collect();
        self.apply(rest);
        held
    }
}

/// Settings of a new room (CreateRoom); `None` means the IVS default.
#[derive(Debug, Clone, Default)]
pub struct RoomSettings {
    pub name: Option<String>,
    pub max_messages_per_second: Option<u32>,
    pub max_message_length: Option<u32>,
}

/// What to put in a chat token (CreateChatToken).
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub user_id: String,
    pub capabilities: Vec<ChatCapability>,
    pub attributes: BTreeMap<String, String>,
    /// `None` means [`DEFAULT_SESSION_MINUTES`].
    pub session_minutes: Option<u32>,
}

/// A minted chat token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    pub token: String,
    /// Unix seconds; the token can connect until then and the session ends then.
    pub expires: i64,
}

/// Server-wide chat settings (from the server's configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubSettings {
    pub policy: ChatPolicy,
    pub keepalive: Keepalive,
}

/// Chat rooms: cheap to clone.
#[derive(Clone)]
pub struct ChatHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    store: Arc<dyn RoomStore>,
    signer: ChatSigner,
    viewer_ids: ViewerIds,
    settings: HubSettings,
    /// Rooms with connections or history.
    live: Mutex<HashMap<String, LiveRoom>>,
    next_conn: AtomicU64,
    /// Messages accepted and sent to a room, since start (`/metrics`).
    messages_sent: AtomicU64,
    /// Distributed mode: rooms span nodes through Redis ([`super::bus`]).
    bus: OnceLock<Bus>,
}

/// What [`ChatHub::stats`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatStats {
    pub connections: u64,
    pub messages_sent: u64,
    /// Distributed mode only.
    pub bus: Option<BusStats>,
}

fn attributes_size(attributes: &BTreeMap<String, String>) -> usize {
    attributes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn check_attributes(attributes: &BTreeMap<String, String>) -> Result<(), ChatError> {
    let size = attributes_size(attributes);
    if size > MAX_ATTRIBUTES_BYTES {
        return Err(ChatError::invalid(
            "ATTRIBUTES_TOO_LARGE",
            format!("attributes are {size} bytes; at most {MAX_ATTRIBUTES_BYTES} are allowed"),
        ));
    }
    Ok(())
}

impl ChatHub {
    /// Open the rooms table in `<data_dir>/stagecast.db` and load the
    /// server's signing key (which `auth::KeyRing` created).
    pub fn open(data_dir: &Path, settings: HubSettings) -> Result<Self, crate::StartError> {
        Self::open_with(Arc::new(SqliteRoomStore::open(&data_dir.join("stagecast.db"))?), data_dir, settings)
    }

    /// Rooms in `store`, the signing key of `data_dir`.
    pub fn open_with(store: Arc<dyn RoomStore>, data_dir: &Path, settings: HubSettings) -> Result<Self, crate::StartError> {
        let signer = ChatSigner::load(&auth::signing_key_path(data_dir)).map_err(auth::AuthError::Key)?;
        Ok(Self::with_parts(store, signer, settings))
    }

    fn with_parts(store: Arc<dyn RoomStore>, signer: ChatSigner, settings: HubSettings) -> Self {
        let viewer_ids = ViewerIds::new(signer.derive_key("stagecast chat viewer ids v1"));
        Self {
            inner: Arc::new(HubInner {
                store,
                signer,
                viewer_ids,
                settings,
                live: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                messages_sent: AtomicU64::new(0),
                bus: OnceLock::new(),
            }),
        }
    }

    /// The server-wide chat settings.
    pub fn settings(&self) -> HubSettings {
        self.inner.settings
    }

    /// The chat user id of the viewer holding `secret`, in `room` (see [`super::identity`]).
    pub fn viewer_user_id(&self, room: &str, secret: &str) -> Result<String, BadViewerSecret> {
        self.inner.viewer_ids.user_id(room, secret)
    }

    /// Distributed mode: from now on every room change is relayed to the
    /// other nodes through `bus` (before any room is live). False if a bus
    /// was attached already.
    pub fn attach_bus(&self, bus: Bus) -> bool {
        self.inner.bus.set(bus).is_ok()
    }

    fn new_core(&self, limits: RoomLimits) -> RoomCore {
        let core = RoomCore::new(limits, self.inner.settings.policy, auth::random_alphanumeric(6));
        if self.inner.bus.get().is_some() {
            core.relaying()
        } else {
            core
        }
    }

    /// Apply a core's outputs; in distributed mode also publish what it
    /// relayed, holding the acknowledgements until Redis took it.
    fn settle(&self, room: &str, entry: &mut LiveRoom, outputs: Vec<Output>) {
        let relays = entry.core.take_relays();
        match self.inner.bus.get() {
            Some(bus) if !relays.is_empty() => {
                let acks = entry.apply_holding_acks(outputs);
                bus.publish(room, relays, acks);
            }
            _ => entry.apply(outputs),
        }
    }

    /// Relays that a core outside any live room made (the control plane
    /// acting on a room nobody here is connected to): other nodes may have
    /// members.
    fn publish_only(&self, room: &str, relays: Vec<Relay>) {
        if let Some(bus) = self.inner.bus.get() {
            if !relays.is_empty() {
                bus.publish(room, relays, Vec::new());
            }
        }
    }

    /// What another node's room did (from [`super::bus`]): applied to this
    /// node's connections of the room. A room nobody here is connected to
    /// (and with no history here) is left alone.
    pub fn apply_remote(&self, room: &str, relays: Vec<Relay>) {
        let mut live = self.live();
        let Some(entry) = live.get_mut(room) else { return };
        let mut deleted = false;
        for relay in relays {
            deleted |= matches!(relay, Relay::CloseAll);
            let outputs = entry.core.apply_relay(relay);
            entry.apply(outputs);
        }
        if deleted || (entry.conns.is_empty() && entry.core.is_idle()) {
            live.remove(room);
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, LiveRoom>> {
        // A poisoned lock means a panic elsewhere; the map itself is still consistent
        // because every mutation completes before any call that could panic.
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// CreateRoom.
    pub fn create_room(&self, settings: RoomSettings, now_unix: i64) -> Result<RoomRecord, ChatError> {
        let name = settings.name.unwrap_or_default();
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ChatError::invalid("INVALID_NAME", format!("name is at most {MAX_NAME_CHARS} characters")));
        }
        let defaults = RoomLimits::default();
        let rate = settings.max_messages_per_second.unwrap_or(defaults.max_messages_per_second);
        if !(1..=100).contains(&rate) {
            return Err(ChatError::invalid(
                "INVALID_MESSAGE_RATE",
                "maximumMessageRatePerSecond is from 1 to 100",
            ));
        }
        let length = settings.max_message_length.unwrap_or(defaults.max_message_length);
        if !(1..=500).contains(&length) {
            return Err(ChatError::invalid("INVALID_MESSAGE_LENGTH", "maximumMessageLength is from 1 to 500"));
        }
        let record = RoomRecord {
            id: auth::random_alphanumeric(12),
            name,
            create_time: now_unix,
            limits: RoomLimits { max_messages_per_second: rate, max_message_length: length },
        };
        self.inner.store.insert(&record)?;
        tracing::info!(room = %record.id, "chat room created");
        Ok(record)
    }

    /// GetRoom (404 ROOM_NOT_FOUND).
    pub fn get_room(&self, id: &str) -> Result<RoomRecord, ChatError> {
        self.inner.store.get(id)?.ok_or_else(|| ChatError::RoomNotFound { room: id.to_owned() })
    }

    /// ListRooms, one page.
    pub fn list_rooms(&self, page: crate::store::PageQuery) -> Result<crate::store::Page<RoomRecord>, ChatError> {
        Ok(self.inner.store.list(page)?)
    }

    /// DeleteRoom: every connection is closed.
    pub fn delete_room(&self, id: &str) -> Result<(), ChatError> {
        let mut live = self.live();
        if !self.inner.store.delete(id)? {
            return Err(ChatError::RoomNotFound { room: id.to_owned() });
        }
        match live.remove(id) {
            Some(mut room) => {
                let outputs = room.core.close_all();
                self.settle(id, &mut room, outputs);
            }
            None => self.publish_only(id, vec![Relay::CloseAll]),
        }
        tracing::info!(room = %id, "chat room deleted");
        Ok(())
    }

    /// CreateChatToken for an existing room.
    pub fn create_token(&self, room_id: &str, spec: TokenSpec, now_unix: i64) -> Result<MintedToken, ChatError> {
        let room = self.get_room(room_id)?;
        let user_chars = spec.user_id.chars().count();
        if user_chars == 0 || user_chars > MAX_NAME_CHARS {
            return Err(ChatError::invalid("INVALID_USER_ID", format!("userId is 1 to {MAX_NAME_CHARS} characters")));
        }
        let minutes = spec.session_minutes.unwrap_or(DEFAULT_SESSION_MINUTES);
        if !(1..=MAX_SESSION_MINUTES).contains(&minutes) {
            return Err(ChatError::invalid(
                "INVALID_DURATION",
                format!("sessionDurationInMinutes is from 1 to {MAX_SESSION_MINUTES}"),
            ));
        }
        check_attributes(&spec.attributes)?;
        let mut capabilities = spec.capabilities;
        capabilities.dedup();
        let expires = now_unix + i64::from(minutes) * 60;
        let claims = ChatClaims::new(
            room.id,
            spec.user_id,
            spec.attributes,
            capabilities,
            now_unix,
            expires,
            auth::random_alphanumeric(16),
        );
        let token = self.inner.signer.mint(&claims)?;
        Ok(MintedToken { token, expires })
    }

    /// Check a token for connecting: signature, expiry, and that its room exists.
    pub fn verify_token(&self, token: &str, now_unix: i64) -> Result<ChatClaims, ChatError> {
        let claims = self.inner.signer.verify(token, now_unix)?;
        self.get_room(&claims.room)?;
        Ok(claims)
    }

    /// Join a verified connection to its room; the room's history (if any)
    /// is queued for it at once.
    pub fn join(&self, claims: &ChatClaims) -> Result<Connection, ChatError> {
        let mut live = self.live();
        if !live.contains_key(&claims.room) {
            // Checked under the lock so a concurrent DeleteRoom cannot leave a live room behind.
            let record = self.get_room(&claims.room)?;
            let core = self.new_core(record.limits);
            live.insert(claims.room.clone(), LiveRoom { core, conns: HashMap::new() });
        }
        let room = live.get_mut(&claims.room).ok_or_else(|| ChatError::RoomNotFound { room: claims.room.clone() })?;
        let id = ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        let (tx, outbound) = mpsc::channel(OUTBOUND_QUEUE);
        let (kill, killed) = oneshot::channel();
        let session_expires_ms = claims.exp.saturating_mul(1000);
        let member = Member {
            user_id: claims.user_id.clone(),
            attributes: claims.attributes.clone(),
            capabilities: claims.chat_capabilities(),
            session_expires_ms,
        };
        let history = room.core.join(id, member, super::now_ms());
        room.conns.insert(id, ConnHandle { tx, kill });
        // At most MAX_HISTORY (< OUTBOUND_QUEUE) frames into an empty queue: never "slow".
        room.apply(history);
        Ok(Connection { hub: self.clone(), id, room: claims.room.clone(), outbound, killed, session_expires_ms })
    }

    fn with_room<T>(&self, room: &str, f: impl FnOnce(&mut RoomCore) -> (T, Vec<Output>)) -> Option<T> {
        let mut live = self.live();
        let entry = live.get_mut(room)?;
        let (value, outputs) = f(&mut entry.core);
        // Each message sent is acknowledged to its sender once (with its RequestId).
        let acked = |o: &&Output| matches!(o, Output::Frame { frame: Frame::Message { request_id: Some(_), .. }, .. });
        let sent = outputs.iter().filter(acked).count();
        if sent > 0 {
            self.inner.messages_sent.fetch_add(sent as u64, Ordering::Relaxed);
        }
        self.settle(room, entry, outputs);
        Some(value)
    }

    /// A text frame from a connection.
    pub fn handle_text(&self, room: &str, conn: ConnId, text: &str, now_ms: i64) {
        self.with_room(room, |core| ((), core.handle_text(conn, text, now_ms)));
    }

    /// A binary frame from a connection.
    pub fn handle_binary(&self, room: &str, conn: ConnId) {
        self.with_room(room, |core| ((), core.handle_binary(conn)));
    }

    /// Expire sessions that have ended by `now_ms`.
    pub fn tick(&self, room: &str, now_ms: i64) {
        self.with_room(room, |core| ((), core.handle_timeout(now_ms)));
    }

    /// The connection ended. A room with nobody in it and no history is
    /// forgotten until someone joins again; one with history is kept (until
    /// DeleteRoom or a restart) so the next person to join sees it.
    pub fn leave(&self, room: &str, conn: ConnId) {
        let mut live = self.live();
        if let Some(entry) = live.get_mut(room) {
            entry.core.leave(conn);
            entry.conns.remove(&conn);
            if entry.conns.is_empty() && entry.core.is_idle() {
                live.remove(room);
            }
        }
    }

    /// Open connections in all rooms, and messages sent since start (`/metrics`).
    pub fn stats(&self) -> ChatStats {
        let connections = self.live().values().map(|r| r.conns.len() as u64).sum();
        ChatStats {
            connections,
            messages_sent: self.inner.messages_sent.load(Ordering::Relaxed),
            bus: self.inner.bus.get().map(Bus::stats),
        }
    }

    /// How many connections a room has now.
    pub fn connection_count(&self, room: &str) -> usize {
        self.live().get(room).map(|r| r.conns.len()).unwrap_or(0)
    }

    /// How many messages a room keeps for late joiners now.
    pub fn history_len(&self, room: &str) -> usize {
        self.live().get(room).map(|r| r.core.history_len()).unwrap_or(0)
    }

    /// SendEvent: a custom EVENT to everyone connected. Returns the event id.
    pub fn send_event(
        &self,
        room: &str,
        event_name: &str,
        attributes: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<String, ChatError> {
        self.get_room(room)?;
        let chars = event_name.chars().count();
        if chars == 0 || chars > MAX_EVENT_NAME_CHARS {
            return Err(ChatError::invalid(
                "INVALID_EVENT_NAME",
                format!("eventName is 1 to {MAX_EVENT_NAME_CHARS} characters"),
            ));
        }
        if event_name.starts_with("aws:") {
            return Err(ChatError::invalid("INVALID_EVENT_NAME", "event names starting with \"aws:\" are reserved"));
        }
        check_attributes(&attributes)?;
        if let Some(id) = self.with_room(room, |core| core.send_event(event_name, attributes.clone(), now_ms)) {
            return Ok(id);
        }
        // Nobody connected here: the event still gets an id, as IVS, and
        // goes to the room's members on other nodes.
        let mut scratch = self.new_core(RoomLimits::default());
        let (id, _) = scratch.send_event(event_name, attributes, now_ms);
        self.publish_only(room, scratch.take_relays());
        Ok(id)
    }

    /// DeleteMessage: an `aws:DELETE_MESSAGE` event to everyone. Returns the event id.
    pub fn delete_message(
        &self,
        room: &str,
        message_id: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<String, ChatError> {
        self.get_room(room)?;
        self.moderate(room, |core| core.api_delete_message(message_id, reason, now_ms))
    }

    /// DisconnectUser: an `aws:DISCONNECT_USER` event to everyone, then every
    /// connection of that user is closed. Returns the event id.
    pub fn disconnect_user(
        &self,
        room: &str,
        user_id: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<String, ChatError> {
        self.get_room(room)?;
        self.moderate(room, |core| core.api_disconnect_user(user_id, reason, now_ms))
    }

    fn moderate(
        &self,
        room: &str,
        op: impl FnOnce(&mut RoomCore) -> Result<(String, Vec<Output>), (ErrorCode, String)>,
    ) -> Result<String, ChatError> {
        let refused = |(code, message): (ErrorCode, String)| match code {
            ErrorCode::PayloadTooLarge => ChatError::invalid("FIELD_TOO_LARGE", message),
            _ => ChatError::invalid("INVALID_REQUEST", message),
        };
        let mut live = self.live();
        match live.get_mut(room) {
            Some(entry) => {
                let (id, outputs) = op(&mut entry.core).map_err(refused)?;
                self.settle(room, entry, outputs);
                Ok(id)
            }
            None => {
                // Nobody connected here: validated the same way, sent only
                // to the room's members on other nodes.
                let mut scratch = self.new_core(RoomLimits::default());
                let id = op(&mut scratch).map(|(id, _)| id).map_err(refused)?;
                self.publish_only(room, scratch.take_relays());
                Ok(id)
            }
        }
    }
}
