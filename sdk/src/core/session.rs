//! The stage session as a sans-IO state machine: `new Stage(token,
//! strategy)` → `join()` → … → `leave()`, with every decision about the
//! event plane, the publish and the subscriptions made here.
//!
//! The adapter (`js/stage.rs`) feeds [`Input`]s with the current time
//! (`performance.now()`), carries out the [`Action`]s, and calls
//! [`Session::handle`] with [`Input::Tick`] at [`Session::poll_timeout`].
//!
//! Recovery, without the app doing anything:
//! - the event socket reconnects with backoff (0.5 s doubling to 5 s) for as
//!   long as the token is valid; a socket that goes silent (no frame for
//!   [`SILENT_MS`], PINGs every [`PING_MS`]) or does not open in time counts
//!   as dropped. Media connections are left alone meanwhile: the server
//!   keeps a dropped participant for a grace period, so a short drop shows
//!   nobody a leave or a join (the snapshots after the reconnect diff to
//!   nothing);
//! - a STAGE_DELTA that does not follow the last frame (one was lost)
//!   reopens the socket at once for a full STAGE_STATE, as a drop;
//! - a publish or subscription whose peer connection fails is re-made
//!   ([`super::link`]: a new session, with backoff); a reconnect of the event
//!   plane makes the waiting ones try at once;
//! - after a server restart the first snapshot says this participant is
//!   not published: it publishes again at once;
//! - a `DISCONNECT` with a reason (removed, stage deleted, token expired,
//!   token reused) ends the session with that `stageLeft` reason; so does the
//!   token's `exp` passing (the server refuses the token from then on).

use super::backoff::{Backoff, Jitter};
use super::error::{ErrorCategory, ErrorCode, HttpFailure, StageError};
use super::events::{ConnectionState, LeftReason, StageEvent};
use super::link::{Ops, PeerState};
use super::publish::Publish;
use super::state::{ParticipantChange, StageView};
use super::subscribe::Subscriptions;
use super::token::{check_not_expired, decode_claims, TokenError};
use stagecast_protocol::events::{ClientMessage, ParticipantState, ServerMessage};
use stagecast_protocol::token::ParticipantClaims;

/// `join()` fails if the first snapshot has not arrived by then.
pub const JOIN_TIMEOUT_MS: f64 = 15_000.0;
/// A reconnecting socket must deliver its first snapshot by then.
pub const OPEN_TIMEOUT_MS: f64 = 10_000.0;
/// PING interval on an open socket.
pub const PING_MS: f64 = 10_000.0;
/// An open socket that has received nothing for this long is dead.
pub const SILENT_MS: f64 = 25_000.0;
/// The session ends this long after the token's `exp` (the server ends it
/// at `exp`; this covers a socket that is down then, and clock skew).
pub const EXPIRY_GRACE_MS: f64 = 2_000.0;

mod io;
#[cfg(test)]
mod tests;

pub(crate) use io::Ctx;
pub use io::{Action, Input, StrategyAnswer};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Socket {
    /// None (not joined, or left).
    Closed,
    /// Connecting; the first snapshot is due by `deadline`.
    Opening { deadline: f64 },
    /// Live: last frame at `heard_at`, next PING at `ping_at`.
    Open { heard_at: f64, ping_at: f64 },
    /// The handshake was refused; asking the media plane why (until
    /// `deadline`: the answer may never come while offline).
    Diagnosing { deadline: f64 },
    /// Reconnect at `until`.
    Waiting { until: f64 },
}

/// One stage session.
#[derive(Debug)]
pub struct Session {
    token: String,
    claims: Option<ParticipantClaims>,
    /// When the token expires, on the `now` clock.
    expires_at: f64,
    conn: ConnectionState,
    socket: Socket,
    gen: u32,
    socket_backoff: Backoff,
    /// A `join()` is pending until this deadline.
    joining: Option<f64>,
    joined: bool,
    view: StageView,
    publish: Publish,
    subs: Subscriptions,
    ctx: Ctx,
}

impl Session {
    /// `seed` in `[0, 1)` seeds the backoff jitter (`Math.random()`).
    pub fn new(token: String, seed: f64) -> Session {
        Session {
            token,
            claims: None,
            expires_at: f64::INFINITY,
            conn: ConnectionState::Disconnected,
            socket: Socket::Closed,
            gen: 0,
            socket_backoff: Backoff::new(500, 5_000, u32::MAX),
            joining: None,
            joined: false,
            view: StageView::new(),
            publish: Publish::default(),
            subs: Subscriptions::default(),
            ctx: Ctx {
                now: 0.0,
                ops: Ops::default(),
                jitter: Jitter::new(seed),
                ice_servers: Vec::new(),
                self_id: String::new(),
                actions: Vec::new(),
            },
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The claims, once `join()` decoded them.
    pub fn claims(&self) -> Option<&ParticipantClaims> {
        self.claims.as_ref()
    }

    pub fn view(&self) -> &StageView {
        &self.view
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.conn
    }

    /// Keys of the local streams being published.
    pub fn published_keys(&self) -> Vec<u32> {
        self.publish.keys().collect()
    }

    /// Whether `leave()` has anything to end.
    fn active(&self) -> bool {
        self.joined || self.joining.is_some() || self.socket != Socket::Closed
    }

    /// The actions decided so far, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.ctx.actions)
    }

    /// When to call `handle(Input::Tick, ..)` next.
    pub fn poll_timeout(&self) -> Option<f64> {
        let socket = match self.socket {
            Socket::Opening { deadline } | Socket::Diagnosing { deadline } => Some(deadline),
            Socket::Open { heard_at, ping_at } => Some(ping_at.min(heard_at + SILENT_MS)),
            Socket::Waiting { until } => Some(until),
            Socket::Closed => None,
        };
        let expiry = (self.joined || self.joining.is_some())
            .then_some(self.expires_at + EXPIRY_GRACE_MS);
        [self.joining, socket, expiry, self.publish.deadline(), self.subs.deadline()]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }

    /// Feeds one input at time `now` (ms, monotonic).
    pub fn handle(&mut self, input: Input, now: f64) {
        self.ctx.now = now;
        match input {
            Input::Join { unix_ms } => self.join(unix_ms),
            Input::Leave => {
                if self.active() {
                    self.end(LeftReason::UserInitiated, None);
                }
            }
            Input::RefreshStrategy => {
                if self.joined {
                    self.ask_strategy(true, self.remote_ids());
                    self.subs.ask_layers(&mut self.ctx);
                }
            }
            Input::Strategy(answer) => self.apply_strategy(answer),
            Input::SocketOpened { .. } => {}
            Input::SocketFrame { gen, message } if gen == self.gen => self.on_frame(message),
            Input::SocketClosed { gen, was_open } if gen == self.gen => self.on_closed(was_open),
            Input::Diagnosed { gen, failure } if gen == self.gen => self.on_diagnosed(failure),
            Input::SocketFrame { .. } | Input::SocketClosed { .. } | Input::Diagnosed { .. } => {}
            Input::PeerAnswered { op, result } => self.peer_answered(op, result),
            Input::PeerState { op, state } => self.peer_state(op, state),
            Input::LocalMute { key, muted } => self.publish.set_muted(key, muted, &mut self.ctx),
            Input::LayerControls { op } => self.subs.layer_controls(op, now),
            Input::LayersPolled { op, state } => {
                let remote = self.subs.owner(op).and_then(|id| self.view.get(&id));
                self.subs.layers_polled(op, state, remote, &mut self.ctx);
            }
            Input::LayerPreference { op, preference } => self.subs.layer_preference(op, preference, &mut self.ctx),
            Input::Tick => self.tick(),
        }
    }

    fn set_conn(&mut self, state: ConnectionState) {
        if self.conn != state {
            self.conn = state;
            self.ctx.emit(StageEvent::ConnectionStateChanged(state));
        }
    }

    fn remote_ids(&self) -> Vec<String> {
        self.view.remotes().map(|p| p.id.clone()).collect()
    }

    fn ask_strategy(&mut self, publish: bool, remotes: Vec<String>) {
        self.ctx.push(Action::AskStrategy { publish, remotes });
    }

    fn join(&mut self, unix_ms: f64) {
        if self.active() {
            self.ctx.push(Action::RejectJoin(StageError::new(
                ErrorCategory::Join,
                ErrorCode::Failed,
                "join() called while already joined or joining",
            )));
            return;
        }
        let claims = decode_claims(&self.token)
            .and_then(|c| check_not_expired(&c, unix_ms / 1000.0).map(|()| c));
        let claims = match claims {
            Ok(c) => c,
            Err(e) => {
                let code = match e {
                    TokenError::Malformed(_) => ErrorCode::TokenMalformed,
                    TokenError::Expired { .. } => ErrorCode::TokenExpired,
                };
                let e = StageError::new(ErrorCategory::Join, code, e.to_string());
                self.ctx.push(Action::RejectJoin(e));
                return;
            }
        };
        self.expires_at = self.ctx.now + (claims.exp as f64 * 1000.0 - unix_ms);
        self.claims = Some(claims);
        self.joining = Some(self.ctx.now + JOIN_TIMEOUT_MS);
        self.socket_backoff.reset();
        self.set_conn(ConnectionState::Connecting);
        self.open_socket(self.ctx.now + JOIN_TIMEOUT_MS);
    }

    fn open_socket(&mut self, deadline: f64) {
        self.gen = self.gen.wrapping_add(1);
        self.view.connection_reset();
        self.socket = Socket::Opening { deadline };
        self.ctx.push(Action::OpenSocket { gen: self.gen });
    }

    /// Reopens the socket at once for a full STAGE_STATE (the old one is
    /// closed as a drop: the server keeps us meanwhile).
    /// One that never had a STAGE_STATE is retried with backoff instead.
    fn resync(&mut self) {
        if !matches!(self.socket, Socket::Open { .. }) {
            self.reconnect_later();
            return;
        }
        self.ctx.push(Action::CloseSocket { deliberate: false });
        self.open_socket(self.ctx.now + OPEN_TIMEOUT_MS);
    }

    /// Drops the current socket (without telling it: its events are
    /// ignored from now on) and reconnects after a delay.
    fn reconnect_later(&mut self) {
        self.gen = self.gen.wrapping_add(1);
        if matches!(self.socket, Socket::Opening { .. } | Socket::Open { .. }) {
            self.ctx.push(Action::CloseSocket { deliberate: false });
        }
        self.set_conn(ConnectionState::Connecting);
        if self.ctx.now >= self.expires_at {
            // The server refuses an expired token: no point trying.
            self.token_expired();
            return;
        }
        let delay = self.socket_backoff.next_delay_ms(self.ctx.jitter.sample());
        self.socket = Socket::Waiting {
            until: self.ctx.now + f64::from(delay.unwrap_or(5_000)),
        };
    }

    fn on_frame(&mut self, message: Option<ServerMessage>) {
        if let Socket::Open { ping_at, .. } = self.socket {
            self.socket = Socket::Open {
                heard_at: self.ctx.now,
                ping_at,
            };
        }
        match message {
            Some(ServerMessage::StageState {
                sequence_number,
                self_id,
                participants,
            }) => self.on_snapshot(sequence_number, self_id, participants),
            Some(ServerMessage::Disconnect { reason, message }) => {
                let reason = LeftReason::from(reason);
                let e = StageError::new(ErrorCategory::Join, reason_code(reason), message);
                self.end(reason, Some(e));
            }
            Some(ServerMessage::StageDelta {
                sequence_number,
                base_sequence_number,
                participants,
                removed,
            }) => {
                let self_id = self.ctx.self_id.clone();
                match self.view.snapshot_from_delta(base_sequence_number, participants, &removed) {
                    Ok(snapshot) => self.on_snapshot(sequence_number, self_id, snapshot),
                    // A frame was missed: a new socket starts with a STAGE_STATE.
                    // The old one closes as a drop, so the server keeps us.
                    Err(_) => self.resync(),
                }
            }
            Some(ServerMessage::Config { ice_servers }) => self.ctx.ice_servers = ice_servers,
            Some(ServerMessage::PublishLayers { rids }) => self.publish.set_layers(rids, &mut self.ctx),
            Some(ServerMessage::Error { .. } | ServerMessage::Pong) | None => {}
        }
    }

    fn on_closed(&mut self, was_open: bool) {
        if self.joining.is_some() {
            if was_open {
                self.join_failed(StageError::new(
                    ErrorCategory::Join,
                    ErrorCode::Failed,
                    "the event plane closed before the stage state arrived",
                ));
            } else {
                self.diagnose();
            }
        } else if self.joined {
            // Media stays up: the server keeps us for a grace period.
            self.set_conn(ConnectionState::Connecting);
            if was_open {
                self.socket = Socket::Closed;
                self.reconnect_later();
            } else {
                // A refused handshake may be final (removed, stage deleted).
                self.diagnose();
            }
        }
    }

    fn diagnose(&mut self) {
        self.socket = Socket::Diagnosing {
            deadline: self.ctx.now + OPEN_TIMEOUT_MS,
        };
        self.ctx.push(Action::Diagnose { gen: self.gen });
    }

    fn on_diagnosed(&mut self, failure: Option<HttpFailure>) {
        if !matches!(self.socket, Socket::Diagnosing { .. }) {
            return;
        }
        let said = failure
            .map(|f| StageError::from_failure(ErrorCategory::Join, &f))
            .filter(|e| {
                matches!(
                    e.code,
                    ErrorCode::TokenMalformed
                        | ErrorCode::TokenExpired
                        | ErrorCode::StageDeleted
                        | ErrorCode::StageAtCapacity
                        | ErrorCode::ParticipantDisconnected
                )
            });
        if self.joining.is_some() {
            let e = said.unwrap_or_else(|| {
                StageError::new(
                    ErrorCategory::Join,
                    ErrorCode::Failed,
                    "could not connect to the stage event plane",
                )
            });
            self.join_failed(e);
            return;
        }
        let reason = said.as_ref().and_then(|e| match e.code {
            ErrorCode::ParticipantDisconnected => Some(LeftReason::ParticipantDisconnected),
            ErrorCode::StageDeleted => Some(LeftReason::StageDeleted),
            ErrorCode::TokenExpired => Some(LeftReason::TokenExpired),
            _ => None,
        });
        match reason {
            Some(r) => self.end(r, said),
            None => {
                self.socket = Socket::Closed;
                self.reconnect_later();
            }
        }
    }

    fn on_snapshot(&mut self, seq: u64, self_id: String, participants: Vec<ParticipantState>) {
        let first = matches!(self.socket, Socket::Opening { .. });
        if first {
            self.socket = Socket::Open {
                heard_at: self.ctx.now,
                ping_at: self.ctx.now + PING_MS,
            };
            self.socket_backoff.reset();
            // "connected" comes before the participant events it enables.
            self.set_conn(ConnectionState::Connected);
        }
        let changes = self.view.apply(seq, &self_id, participants);
        self.ctx.self_id = self_id;
        let mut touched = Vec::new();
        for change in changes {
            self.apply_change(change, &mut touched);
        }
        if !first {
            if !touched.is_empty() {
                self.ask_strategy(false, touched);
            }
            return;
        }
        if self.joining.take().is_some() {
            self.joined = true;
            self.ctx.push(Action::ResolveJoin);
        } else {
            // Reconnected: the network works again.
            let lost = self
                .view
                .get(&self.ctx.self_id)
                .is_some_and(|me| !me.published);
            if lost && self.publish.is_up() {
                // The server does not know our publish: it restarted.
                self.publish.restart(&mut self.ctx);
            }
            self.publish.retry_now(&mut self.ctx);
            self.subs.retry_now(&mut self.ctx);
            self.publish.send_state(&mut self.ctx);
        }
        self.ask_strategy(true, self.remote_ids());
    }

    fn apply_change(&mut self, change: ParticipantChange, touched: &mut Vec<String>) {
        let is_self = change.participant().id == self.ctx.self_id;
        match change {
            ParticipantChange::Joined(p) => {
                if !is_self {
                    touched.push(p.id.clone());
                }
                self.ctx.emit(StageEvent::ParticipantJoined(p));
            }
            ParticipantChange::Left(p) => {
                self.subs.close(&p.id, false, Some(&p), &mut self.ctx);
                let p = ParticipantState {
                    published: false,
                    ..p
                };
                self.ctx.push(Action::UpdateInfo(p.clone()));
                self.ctx.emit(StageEvent::ParticipantLeft(p));
            }
            ParticipantChange::PublishChanged(p) => {
                self.ctx.push(Action::UpdateInfo(p.clone()));
                if is_self {
                    return;
                }
                if p.published {
                    self.subs.mark_stale(&p.id);
                    touched.push(p.id);
                } else {
                    self.subs.close(&p.id, false, Some(&p), &mut self.ctx);
                }
            }
            ParticipantChange::MuteChanged {
                participant: p,
                kind,
                ..
            } => {
                self.ctx.push(Action::UpdateInfo(p.clone()));
                let stream = if is_self {
                    self.publish.stream_ref(kind)
                } else {
                    self.subs.stream_ref(&p, kind)
                };
                if let Some(stream) = stream {
                    let id = p.id;
                    self.ctx.emit(StageEvent::StreamMuteChanged { id, stream });
                }
            }
        }
    }

    fn apply_strategy(&mut self, answer: StrategyAnswer) {
        if !self.joined {
            return;
        }
        let caps = self.claims.as_ref().map(|c| c.capabilities);
        if let Some((should, streams)) = answer.publish {
            let can = caps.is_some_and(|c| c.allow_publish);
            self.publish.apply(can, should, &streams, &mut self.ctx);
        }
        let can = caps.is_some_and(|c| c.allow_subscribe);
        for (id, kind) in answer.subscribe {
            if let Some(remote) = self.view.get(&id) {
                self.subs.reconcile(remote, can, kind, &mut self.ctx);
            }
        }
    }

    fn peer_answered(&mut self, op: u32, result: Result<(), HttpFailure>) {
        if self.publish.op() == Some(op) {
            self.publish.answered(op, result, &mut self.ctx);
        } else if let Some(id) = self.subs.owner(op) {
            self.subs.answered(&id, op, result, &mut self.ctx);
        } else if result.is_ok() {
            // Superseded while its offer was out: end the session it made.
            self.ctx.push(Action::ClosePeer { op, delete: true });
        }
    }

    fn peer_state(&mut self, op: u32, state: PeerState) {
        if self.publish.op() == Some(op) {
            self.publish.peer_state(op, state, &mut self.ctx);
        } else if let Some(id) = self.subs.owner(op) {
            let remote = self.view.get(&id);
            self.subs.peer_state(&id, op, state, remote, &mut self.ctx);
        }
    }

    fn tick(&mut self) {
        let now = self.ctx.now;
        if self.joining.is_some_and(|d| d <= now) {
            self.join_failed(StageError::new(
                ErrorCategory::Join,
                ErrorCode::Timeout,
                "timed out joining the stage",
            ));
            return;
        }
        if (self.joined || self.joining.is_some()) && now >= self.expires_at + EXPIRY_GRACE_MS {
            self.token_expired();
            return;
        }
        match self.socket {
            Socket::Opening { deadline } | Socket::Diagnosing { deadline } if deadline <= now => {
                self.reconnect_later()
            }
            Socket::Open { heard_at, .. } if heard_at + SILENT_MS <= now => self.reconnect_later(),
            Socket::Open { heard_at, ping_at } if ping_at <= now => {
                self.ctx.push(Action::Send(ClientMessage::Ping));
                self.socket = Socket::Open {
                    heard_at,
                    ping_at: now + PING_MS,
                };
            }
            Socket::Waiting { until } if until <= now && now >= self.expires_at => {
                // The server refuses an expired token: no point trying.
                self.token_expired();
                return;
            }
            Socket::Waiting { until } if until <= now => self.open_socket(now + OPEN_TIMEOUT_MS),
            _ => {}
        }
        // While the event socket is down the server may already have let us
        // go: media is made again only once it has taken us back (the first
        // snapshot retries at once), never as a WHIP-only publisher first.
        let online = matches!(self.socket, Socket::Open { .. });
        self.publish.tick(online, &mut self.ctx);
        self.subs.tick(&self.view, online, &mut self.ctx);
    }

    fn token_expired(&mut self) {
        let e = StageError::new(
            ErrorCategory::Join,
            ErrorCode::TokenExpired,
            "the participant token expired",
        );
        self.end(LeftReason::TokenExpired, Some(e));
    }

    fn join_failed(&mut self, e: StageError) {
        self.joining = None;
        self.gen = self.gen.wrapping_add(1);
        if self.socket != Socket::Closed {
            self.ctx.push(Action::CloseSocket { deliberate: true });
        }
        self.socket = Socket::Closed;
        self.set_conn(ConnectionState::Errored);
        self.ctx.push(Action::RejectJoin(e));
    }

    /// Ends the session for good: everything is closed and `stageLeft` is
    /// emitted with `reason`; `error` (a server's reason) is emitted first.
    fn end(&mut self, reason: LeftReason, error: Option<StageError>) {
        // Only a participant still on the stage can DELETE its sessions;
        // otherwise the server already ended them.
        let delete = reason == LeftReason::UserInitiated;
        for id in self.subs.ids() {
            let remote = self.view.get(&id);
            self.subs.close(&id, delete, remote, &mut self.ctx);
        }
        self.publish.unpublish(delete, &mut self.ctx);
        let self_id = self.ctx.self_id.clone();
        for change in self.view.clear() {
            let p = change.participant();
            if p.id != self_id {
                self.ctx.emit(StageEvent::ParticipantLeft(p.clone()));
            }
        }
        self.gen = self.gen.wrapping_add(1);
        if matches!(self.socket, Socket::Opening { .. } | Socket::Open { .. }) {
            self.ctx.push(Action::CloseSocket { deliberate: true });
        }
        self.socket = Socket::Closed;
        if self.joining.take().is_some() {
            let e = error.clone().unwrap_or_else(|| {
                StageError::new(ErrorCategory::Join, reason_code(reason), "left before joining")
            });
            self.ctx.push(Action::RejectJoin(e));
        }
        let was_joined = std::mem::replace(&mut self.joined, false);
        self.set_conn(ConnectionState::Disconnected);
        if was_joined {
            if let Some(e) = error {
                self.ctx.emit(StageEvent::Error(e));
            }
        }
        if was_joined || reason == LeftReason::UserInitiated {
            self.ctx.emit(StageEvent::StageLeft(reason));
        }
    }
}

/// The `StageError` code that goes with a left reason.
fn reason_code(reason: LeftReason) -> ErrorCode {
    match reason {
        LeftReason::ParticipantDisconnected => ErrorCode::ParticipantDisconnected,
        LeftReason::StageDeleted => ErrorCode::StageDeleted,
        LeftReason::TokenExpired => ErrorCode::TokenExpired,
        LeftReason::UserInitiated => ErrorCode::Canceled,
        LeftReason::Unknown | LeftReason::TokenReused => ErrorCode::Failed,
    }
}
