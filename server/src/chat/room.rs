//! The sans-IO core of one chat room: who is connected (by connection id),
//! the room's limits, its recent messages, and what each request or timeout
//! produces.
//!
//! Limits: the room's own `maximumMessageRatePerSecond` (IVS semantics, one
//! budget for everyone) and, before it, a per-connection limit from the
//! server-wide [`ChatPolicy`], so one sender cannot use up the room's budget:
//! its excess is refused (429) without touching the room's. Members who can
//! moderate (DELETE_MESSAGE or DISCONNECT_USER) are never refused by the
//! room's budget, and moderation itself is never rate limited here (the
//! socket's frame limit still applies to every connection).
//!
//! Nothing here touches a socket or the clock: callers pass `now_ms` (Unix
//! milliseconds) and apply the returned [`Output`]s, in order. A frame names
//! its recipients as they were when it was produced (so a user being
//! disconnected still gets the event that says why), and the driver
//! serializes it once for all of them.
//!
//! A room can span several nodes (distributed mode): each node runs a core
//! for its own connections, and what one core does room-wide is also handed
//! out as a [`Relay`] (when [`RoomCore::relaying`] is on) for the driver to
//! publish; the other nodes' cores apply it with [`RoomCore::apply_relay`].
//! Rate limits stay per node.

use std::collections::{BTreeMap, VecDeque};

use super::history::History;
use super::limit::TokenBucket;
use super::wire::{
    parse_request, ErrorCode, Frame, RejectedRequest, Request, Sender, EVENT_DELETE_MESSAGE, EVENT_DISCONNECT_USER,
};

/// Room limits (IVS CreateRoom).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// SEND_MESSAGE requests accepted per second, for the whole room (1–100).
    pub max_messages_per_second: u32,
    /// Longest message content, in Unicode code points (1–500).
    pub max_message_length: u32,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self { max_messages_per_second: 10, max_message_length: 500 }
    }
}

/// Server-wide chat settings (`--chat-connection-rate`, `--chat-connection-burst`,
/// `--chat-history`), the same for every room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatPolicy {
    /// SEND_MESSAGE requests one connection may make per second, on average.
    pub connection_messages_per_second: u32,
    /// How many a connection may send back to back before that rate applies.
    pub connection_burst: u32,
    /// Messages a room keeps and replays to connections that open later (0: none).
    pub history: usize,
}

impl Default for ChatPolicy {
    fn default() -> Self {
        Self { connection_messages_per_second: 3, connection_burst: 5, history: 50 }
    }
}

/// Largest message or event attributes (sum of key and value bytes), as IVS.
pub const MAX_ATTRIBUTES_BYTES: usize = 1024;
/// Longest delete / disconnect reason, in code points (IVS: 256).
pub const MAX_REASON_CHARS: usize = 256;
/// Longest message id or user id in a request.
pub const MAX_ID_CHARS: usize = 128;

/// What a chat token allows beyond reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChatCapabilities {
    pub send_message: bool,
    pub delete_message: bool,
    pub disconnect_user: bool,
}

impl ChatCapabilities {
    /// May delete messages or disconnect users.
    pub fn moderates(&self) -> bool {
        self.delete_message || self.disconnect_user
    }
}

/// One connection's identity, from its verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub attributes: BTreeMap<String, String>,
    pub capabilities: ChatCapabilities,
    /// When the session ends (Unix ms): the connection then gets a 401 ERROR and is closed.
    pub session_expires_ms: i64,
}

/// A connection, as numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// DISCONNECT_USER (from a moderator or the API).
    UserDisconnected,
    /// The token's session ended (a 401 ERROR was sent first).
    SessionExpired,
    /// DeleteRoom.
    RoomDeleted,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::UserDisconnected => "user disconnected",
            CloseReason::SessionExpired => "session expired",
            CloseReason::RoomDeleted => "room deleted",
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Frame { to: Vec<ConnId>, frame: Frame },
    /// Close this connection after the frames before it; it is no longer a member.
    Close { conn: ConnId, reason: CloseReason },
}

/// What one node's room did room-wide, for the room's cores on other nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Relay {
    /// A MESSAGE or EVENT (no `RequestId`) for everyone. A message joins the
    /// history; an `aws:DELETE_MESSAGE` event removes one from it.
    Frame(Frame),
    /// DisconnectUser: the user's connections close (after the event frame
    /// relayed before this).
    DisconnectUser { user_id: String },
    /// DeleteRoom: every connection closes.
    CloseAll,
    /// A message (relayed just before) took a place in the room's
    /// messages-per-second budget at `at_ms`: the other nodes' windows count
    /// it too, so the room's rate holds across nodes, not per node (up to
    /// the relay's delay).
    RoomBudget { at_ms: i64 },
}

/// Makes frame ids: a per-room-instance prefix plus a counter, so ids are
/// unique without the core needing a random source.
#[derive(Debug, Clone)]
struct IdGen {
    prefix: String,
    next: u64,
}

impl IdGen {
    fn next(&mut self) -> String {
        self.next += 1;
        format!("{}{:08}", self.prefix, self.next)
    }
}

/// ISO 8601 UTC with milliseconds, as IVS `SendTime`.
pub fn send_time(now_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn attributes_size(attributes: &BTreeMap<String, String>) -> usize {
    attributes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// A member and its own message budget.
#[derive(Debug, Clone)]
struct Slot {
    member: Member,
    sends: TokenBucket,
}

/// One room's live state.
#[derive(Debug, Clone)]
pub struct RoomCore {
    limits: RoomLimits,
    policy: ChatPolicy,
    members: BTreeMap<ConnId, Slot>,
    /// Times (ms) of the messages accepted in the last second, oldest first.
    recent_sends: VecDeque<i64>,
    ids: IdGen,
    history: History,
    /// Whether room-wide effects are kept for [`RoomCore::take_relays`].
    relaying: bool,
    relays: Vec<Relay>,
}

/// A request that cannot go through: its ERROR.
struct Refusal {
    code: ErrorCode,
    message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

impl RoomCore {
    /// `id_prefix` makes frame ids unique across room instances (the driver
    /// passes a random string; tests a fixed one).
    pub fn new(limits: RoomLimits, policy: ChatPolicy, id_prefix: impl Into<String>) -> Self {
        Self {
            limits,
            policy,
            members: BTreeMap::new(),
            recent_sends: VecDeque::new(),
            ids: IdGen { prefix: id_prefix.into(), next: 0 },
            history: History::new(policy.history),
            relaying: false,
            relays: Vec::new(),
        }
    }

    /// Keep every room-wide effect as a [`Relay`] for other nodes.
    pub fn relaying(mut self) -> Self {
        self.relaying = true;
        self
    }

    /// The room-wide effects since the last call, in order (empty unless relaying).
    pub fn take_relays(&mut self) -> Vec<Relay> {
        std::mem::take(&mut self.relays)
    }

    fn relay(&mut self, relay: impl FnOnce() -> Relay) {
        if self.relaying {
            self.relays.push(relay());
        }
    }

    /// What another node's core relayed: the same frames to this node's
    /// members, the same history, the same connections closed. Relays
    /// nothing further.
    pub fn apply_relay(&mut self, relay: Relay) -> Vec<Output> {
        match relay {
            Relay::Frame(frame) => {
                match &frame {
                    Frame::Message { .. } => self.history.push(&frame),
                    Frame::Event { event_name, attributes, .. } if event_name == EVENT_DELETE_MESSAGE => {
                        if let Some(id) = attributes.get("MessageID") {
                            self.history.remove(id);
                        }
                    }
                    _ => {}
                }
                vec![Output::Frame { to: self.everyone(), frame }]
            }
            Relay::DisconnectUser { user_id } => self.close_user(&user_id),
            Relay::CloseAll => self.close_all_here(),
            Relay::RoomBudget { at_ms } => {
                // Kept in time order (another node's clock may lag ours a little).
                let at = self.recent_sends.partition_point(|t| *t <= at_ms);
                self.recent_sends.insert(at, at_ms);
                // Pruned here too (a node whose members only listen never
                // sends), and bounded: a full window is all that counts.
                let newest = self.recent_sends.back().copied().unwrap_or(at_ms);
                self.slide_window(newest);
                while self.recent_sends.len() > self.limits.max_messages_per_second as usize {
                    self.recent_sends.pop_front();
                }
                Vec::new()
            }
        }
    }

    /// Drop the sends that left the room's one-second window by `now_ms`.
    fn slide_window(&mut self, now_ms: i64) {
        while self.recent_sends.front().is_some_and(|t| *t <= now_ms.saturating_sub(1000)) {
            self.recent_sends.pop_front();
        }
    }

    pub fn limits(&self) -> RoomLimits {
        self.limits
    }

    pub fn member(&self, conn: ConnId) -> Option<&Member> {
        self.members.get(&conn).map(|s| &s.member)
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Messages kept for late joiners.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// No members and nothing to remember: the driver may forget the room.
    pub fn is_idle(&self) -> bool {
        self.members.is_empty() && self.history.is_empty()
    }

    fn everyone(&self) -> Vec<ConnId> {
        self.members.keys().copied().collect()
    }

    /// A verified connection joins at `now_ms`. It is sent the room's recent
    /// messages (oldest first, marked as history), unless the same user
    /// already has a connection here: that is how a token refresh looks (the
    /// official client opens the next connection before it closes the
    /// current one, and forgets which ids it has shown shortly after each
    /// swap, so a second replay would show old messages twice); the user has
    /// been shown the history on the connection it already has.
    pub fn join(&mut self, conn: ConnId, member: Member, now_ms: i64) -> Vec<Output> {
        let handover = self.members.values().any(|s| s.member.user_id == member.user_id);
        let sends =
            TokenBucket::new(self.policy.connection_messages_per_second, self.policy.connection_burst, now_ms);
        self.members.insert(conn, Slot { member, sends });
        if handover {
            return Vec::new();
        }
        self.history.replay().map(|frame| Output::Frame { to: vec![conn], frame }).collect()
    }

    /// The connection ended on its own (or the driver dropped it). True if it was a member.
    pub fn leave(&mut self, conn: ConnId) -> bool {
        self.members.remove(&conn).is_some()
    }

    /// The earliest session expiry (Unix ms), for the driver's timer.
    pub fn next_timeout(&self) -> Option<i64> {
        self.members.values().map(|s| s.member.session_expires_ms).min()
    }

    /// End every session that has expired by `now_ms`: a 401 ERROR (which
    /// makes the official client reconnect with a fresh token), then close.
    pub fn handle_timeout(&mut self, now_ms: i64) -> Vec<Output> {
        let expired: Vec<ConnId> =
            self.members.iter().filter(|(_, s)| s.member.session_expires_ms <= now_ms).map(|(c, _)| *c).collect();
        let mut out = Vec::new();
        for conn in expired {
            self.expire(conn, &mut out);
        }
        out
    }

    fn expire(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        let frame = Frame::Error {
            id: self.ids.next(),
            request_id: None,
            error_code: ErrorCode::Unauthorized.as_u16(),
            error_message: "the chat session has expired; connect again with a new token".to_owned(),
        };
        out.push(Output::Frame { to: vec![conn], frame });
        self.members.remove(&conn);
        out.push(Output::Close { conn, reason: CloseReason::SessionExpired });
    }

    /// A text frame from `conn`.
    pub fn handle_text(&mut self, conn: ConnId, text: &str, now_ms: i64) -> Vec<Output> {
        match parse_request(text) {
            Ok(request) => self.handle_request(conn, request, now_ms),
            Err(RejectedRequest { code, message, request_id }) => {
                if !self.members.contains_key(&conn) {
                    return Vec::new();
                }
                vec![self.error_to(conn, request_id, code, message)]
            }
        }
    }

    /// A binary frame from `conn`: the protocol is JSON text only.
    pub fn handle_binary(&mut self, conn: ConnId) -> Vec<Output> {
        if !self.members.contains_key(&conn) {
            return Vec::new();
        }
        vec![self.error_to(conn, None, ErrorCode::BadRequest, "send requests as JSON text frames".to_owned())]
    }

    fn error_to(&mut self, conn: ConnId, request_id: Option<String>, code: ErrorCode, message: String) -> Output {
        let frame = Frame::Error { id: self.ids.next(), request_id, error_code: code.as_u16(), error_message: message };
        Output::Frame { to: vec![conn], frame }
    }

    /// A parsed request from `conn`. A connection that is not (or no longer)
    /// a member gets nothing: its close is already under way.
    pub fn handle_request(&mut self, conn: ConnId, request: Request, now_ms: i64) -> Vec<Output> {
        let Some(member) = self.member(conn) else {
            return Vec::new();
        };
        if member.session_expires_ms <= now_ms {
            let mut out = Vec::new();
            self.expire(conn, &mut out);
            return out;
        }
        let member = member.clone();
        let request_id = request.request_id().to_owned();
        let result = match request {
            Request::SendMessage { content, attributes, .. } => {
                self.send_message(conn, &member, &request_id, content, attributes.unwrap_or_default(), now_ms)
            }
            Request::DeleteMessage { id, reason, .. } => {
                if !member.capabilities.delete_message {
                    Err(refuse(ErrorCode::Forbidden, "this token does not have the DELETE_MESSAGE capability"))
                } else {
                    self.delete_message(&id, reason.as_deref(), now_ms, Some((conn, request_id.clone())))
                        .map(|(_, out)| out)
                }
            }
            Request::DisconnectUser { user_id, reason, .. } => {
                if !member.capabilities.disconnect_user {
                    Err(refuse(ErrorCode::Forbidden, "this token does not have the DISCONNECT_USER capability"))
                } else {
                    self.disconnect_user(&user_id, reason.as_deref(), now_ms, Some((conn, request_id.clone())))
                        .map(|(_, out)| out)
                }
            }
        };
        match result {
            Ok(out) => out,
            Err(Refusal { code, message }) => vec![self.error_to(conn, Some(request_id), code, message)],
        }
    }

    fn send_message(
        &mut self,
        conn: ConnId,
        member: &Member,
        request_id: &str,
        content: String,
        attributes: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Vec<Output>, Refusal> {
        if !member.capabilities.send_message {
            return Err(refuse(ErrorCode::Forbidden, "this token does not have the SEND_MESSAGE capability"));
        }
        let length = content.chars().count();
        let max = self.limits.max_message_length as usize;
        if length > max {
            return Err(refuse(
                ErrorCode::PayloadTooLarge,
                format!("the message is {length} characters; this room allows at most {max}"),
            ));
        }
        if attributes_size(&attributes) > MAX_ATTRIBUTES_BYTES {
            return Err(refuse(
                ErrorCode::PayloadTooLarge,
                format!("message attributes are limited to {MAX_ATTRIBUTES_BYTES} bytes"),
            ));
        }
        // This connection's own budget first: its excess never reaches the room's.
        let own_budget = self.members.get_mut(&conn).is_some_and(|s| s.sends.try_take(now_ms));
        if !own_budget {
            return Err(refuse(
                ErrorCode::TooManyRequests,
                format!(
                    "you are sending too fast: at most {} messages per second",
                    self.policy.connection_messages_per_second
                ),
            ));
        }
        // Then the room's: a sliding one-second window over everyone but moderators.
        if !member.capabilities.moderates() {
            self.slide_window(now_ms);
            if self.recent_sends.len() >= self.limits.max_messages_per_second as usize {
                return Err(refuse(
                    ErrorCode::TooManyRequests,
                    format!("this room accepts at most {} messages per second", self.limits.max_messages_per_second),
                ));
            }
            self.recent_sends.push_back(now_ms);
        }
        let counted = !member.capabilities.moderates();
        let frame = Frame::Message {
            id: self.ids.next(),
            request_id: None,
            content,
            attributes,
            send_time: send_time(now_ms),
            sender: Sender { user_id: member.user_id.clone(), attributes: member.attributes.clone() },
            history: false,
        };
        self.history.push(&frame);
        self.relay(|| Relay::Frame(frame.clone()));
        if counted {
            self.relay(|| Relay::RoomBudget { at_ms: now_ms });
        }
        Ok(self.to_everyone_acking(conn, request_id.to_owned(), frame))
    }

    /// Everyone gets `frame`; `requester` gets it with its `RequestId`.
    fn to_everyone_acking(&self, requester: ConnId, request_id: String, frame: Frame) -> Vec<Output> {
        let ack = frame.clone().with_request_id(Some(request_id));
        let others = self.members.keys().copied().filter(|c| *c != requester).collect();
        vec![Output::Frame { to: others, frame }, Output::Frame { to: vec![requester], frame: ack }]
    }

    fn check_reason(reason: Option<&str>) -> Result<(), Refusal> {
        if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
            return Err(refuse(ErrorCode::PayloadTooLarge, format!("Reason is at most {MAX_REASON_CHARS} characters")));
        }
        Ok(())
    }

    fn check_id(field: &str, value: &str) -> Result<(), Refusal> {
        if value.is_empty() {
            return Err(refuse(ErrorCode::BadRequest, format!("{field} is empty")));
        }
        if value.chars().count() > MAX_ID_CHARS {
            return Err(refuse(ErrorCode::PayloadTooLarge, format!("{field} is at most {MAX_ID_CHARS} characters")));
        }
        Ok(())
    }

    /// A moderation event with a fresh id: `subject` (the message or user it
    /// is about) and the optional `Reason` as its attributes.
    fn moderation_event(
        &mut self,
        event_name: &str,
        subject: (&str, &str),
        reason: Option<&str>,
        now_ms: i64,
    ) -> (String, Frame) {
        let mut attributes = BTreeMap::from([(subject.0.to_owned(), subject.1.to_owned())]);
        if let Some(reason) = reason {
            attributes.insert("Reason".to_owned(), reason.to_owned());
        }
        let id = self.ids.next();
        let frame = Frame::Event {
            id: id.clone(),
            request_id: None,
            event_name: event_name.to_owned(),
            attributes,
            send_time: send_time(now_ms),
        };
        (id, frame)
    }

    /// `frame` to everyone; with the requester's request id on its copy when
    /// a client (not the control plane) asked.
    fn to_everyone_maybe_acking(&self, requester: Option<(ConnId, String)>, frame: Frame) -> Vec<Output> {
        match requester {
            Some((conn, request_id)) => self.to_everyone_acking(conn, request_id, frame),
            None => vec![Output::Frame { to: self.everyone(), frame }],
        }
    }

    fn delete_message(
        &mut self,
        message_id: &str,
        reason: Option<&str>,
        now_ms: i64,
        requester: Option<(ConnId, String)>,
    ) -> Result<(String, Vec<Output>), Refusal> {
        Self::check_id("Id", message_id)?;
        Self::check_reason(reason)?;
        let (id, frame) = self.moderation_event(EVENT_DELETE_MESSAGE, ("MessageID", message_id), reason, now_ms);
        self.history.remove(message_id);
        self.relay(|| Relay::Frame(frame.clone()));
        let out = self.to_everyone_maybe_acking(requester, frame);
        Ok((id, out))
    }

    fn disconnect_user(
        &mut self,
        user_id: &str,
        reason: Option<&str>,
        now_ms: i64,
        requester: Option<(ConnId, String)>,
    ) -> Result<(String, Vec<Output>), Refusal> {
        Self::check_id("UserId", user_id)?;
        Self::check_reason(reason)?;
        let (id, frame) = self.moderation_event(EVENT_DISCONNECT_USER, ("UserId", user_id), reason, now_ms);
        // The event goes out before the closes, so the user sees why.
        self.relay(|| Relay::Frame(frame.clone()));
        self.relay(|| Relay::DisconnectUser { user_id: user_id.to_owned() });
        let mut out = self.to_everyone_maybe_acking(requester, frame);
        out.extend(self.close_user(user_id));
        Ok((id, out))
    }

    /// This node's connections of `user_id` leave and close.
    fn close_user(&mut self, user_id: &str) -> Vec<Output> {
        let targets: Vec<ConnId> =
            self.members.iter().filter(|(_, s)| s.member.user_id == user_id).map(|(c, _)| *c).collect();
        targets
            .into_iter()
            .map(|conn| {
                self.members.remove(&conn);
                Output::Close { conn, reason: CloseReason::UserDisconnected }
            })
            .collect()
    }

    /// DeleteMessage from the control plane: the event id and what to send.
    pub fn api_delete_message(
        &mut self,
        message_id: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<(String, Vec<Output>), (ErrorCode, String)> {
        self.delete_message(message_id, reason, now_ms, None).map_err(|r| (r.code, r.message))
    }

    /// DisconnectUser from the control plane.
    pub fn api_disconnect_user(
        &mut self,
        user_id: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<(String, Vec<Output>), (ErrorCode, String)> {
        self.disconnect_user(user_id, reason, now_ms, None).map_err(|r| (r.code, r.message))
    }

    /// SendEvent from the control plane: a custom EVENT to everyone. The
    /// caller validates the name and attributes.
    pub fn send_event(
        &mut self,
        event_name: &str,
        attributes: BTreeMap<String, String>,
        now_ms: i64,
    ) -> (String, Vec<Output>) {
        let id = self.ids.next();
        let frame = Frame::Event {
            id: id.clone(),
            request_id: None,
            event_name: event_name.to_owned(),
            attributes,
            send_time: send_time(now_ms),
        };
        self.relay(|| Relay::Frame(frame.clone()));
        (id, vec![Output::Frame { to: self.everyone(), frame }])
    }

    /// DeleteRoom: everyone is closed, on every node.
    pub fn close_all(&mut self) -> Vec<Output> {
        self.relay(|| Relay::CloseAll);
        self.close_all_here()
    }

    fn close_all_here(&mut self) -> Vec<Output> {
        let conns: Vec<ConnId> = self.members.keys().copied().collect();
        self.members.clear();
        conns.into_iter().map(|conn| Output::Close { conn, reason: CloseReason::RoomDeleted }).collect()
    }

    /// The driver could not deliver to `conn` (its queue is full): it is
    /// dropped from the room so nothing is silently skipped.
    pub fn drop_slow(&mut self, conn: ConnId) -> bool {
        self.members.remove(&conn).is_some()
    }
}
