//! The broadcast client's connection to a channel (WHIP ingest), sans-IO:
//! `startBroadcast()` → connected, and back after a drop or a server
//! restart by re-POSTing to the same ingest endpoint with the same stream
//! key ([`Link`]), reported as IVS `connectionStateChange` states.
//!
//! Kept apart from `broadcast.rs` (presets, limits, composition), which is
//! about what is broadcast; this is about staying connected.

use super::backoff::Jitter;
use super::broadcast::{BroadcastError, BroadcastErrorCode};
use super::error::HttpFailure;
use super::link::{Link, LinkState, LinkStep, Ops, Outcome, PeerState};

/// IVS `ConnectionState` of the broadcast client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastState {
    /// Before the first `startBroadcast()`.
    None,
    Connecting,
    Connected,
    /// The connection dropped; the client is reconnecting.
    Disconnected,
    /// Ended by a failure (see the `clientError` event).
    Failed,
    /// Ended by `stopBroadcast()`.
    Closed,
}

impl BroadcastState {
    pub const ALL: [BroadcastState; 6] = [
        BroadcastState::None,
        BroadcastState::Connecting,
        BroadcastState::Connected,
        BroadcastState::Disconnected,
        BroadcastState::Failed,
        BroadcastState::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BroadcastState::None => "none",
            BroadcastState::Connecting => "connecting",
            BroadcastState::Connected => "connected",
            BroadcastState::Disconnected => "disconnected",
            BroadcastState::Failed => "failed",
            BroadcastState::Closed => "closed",
        }
    }
}

/// IVS `networkReconnectConfig`: whether to reconnect after a drop and for
/// how long to keep trying.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectConfig {
    pub reconnect: bool,
    pub timeout_ms: f64,
}

impl ReconnectConfig {
    /// IVS refuses timeouts under 10 s.
    pub const MIN_TIMEOUT_MS: f64 = 10_000.0;
}

impl Default for ReconnectConfig {
    /// Reconnect for up to 5 minutes: long enough for a laptop changing
    /// networks or a server restart, short enough that a broadcast whose
    /// server is gone for good ends where the host can see it.
    fn default() -> Self {
        ReconnectConfig {
            reconnect: true,
            timeout_ms: 300_000.0,
        }
    }
}

/// What the adapter must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestAction {
    /// Ask the endpoint for ICE servers (`OPTIONS`), then POST a fresh
    /// offer for connection `op` and apply the answer.
    Open(u32),
    /// DELETE connection `op`'s session (best effort), then close it.
    Close(u32),
    /// Close connection `op` without a DELETE: it failed and the broadcast
    /// is reconnecting. A DELETE means "stopped" to the server and would
    /// end the broadcast (viewers told it ended) instead of letting the
    /// next offer continue it.
    Drop(u32),
    /// Resolve the `startBroadcast()` promise.
    Resolve,
    /// Reject it with this error.
    Reject(BroadcastError),
    /// `connectionStateChange`.
    State(BroadcastState),
    /// `activeStateChange`.
    Active(bool),
    /// `clientError`.
    Error(BroadcastError),
}

/// The ingest connection of one broadcast client.
#[derive(Debug, Clone)]
pub struct Ingest {
    link: Link,
    ops: Ops,
    jitter: Jitter,
    config: ReconnectConfig,
    state: BroadcastState,
    /// `startBroadcast()` has not settled yet.
    starting: bool,
    /// When the current outage began, for the reconnect timeout.
    down_since: Option<f64>,
    actions: Vec<IngestAction>,
}

impl Ingest {
    /// `seed` in `[0, 1)` seeds the backoff jitter.
    pub fn new(config: ReconnectConfig, seed: f64) -> Ingest {
        Ingest {
            link: Link::default(),
            ops: Ops::default(),
            jitter: Jitter::new(seed),
            config,
            state: BroadcastState::None,
            starting: false,
            down_since: None,
            actions: Vec::new(),
        }
    }

    pub fn state(&self) -> BroadcastState {
        self.state
    }

    /// Whether a broadcast is starting or running.
    pub fn busy(&self) -> bool {
        !matches!(self.link.state(), LinkState::Idle | LinkState::Failed)
    }

    pub fn take_actions(&mut self) -> Vec<IngestAction> {
        std::mem::take(&mut self.actions)
    }

    pub fn poll_timeout(&self) -> Option<f64> {
        let give_up = self
            .down_since
            .filter(|_| self.config.reconnect)
            .map(|t| t + self.config.timeout_ms);
        [self.link.deadline(), give_up].into_iter().flatten().reduce(f64::min)
    }

    /// `startBroadcast()` (the caller checked the key and the endpoint).
    pub fn start(&mut self, now: f64) {
        self.starting = true;
        self.down_since = None;
        let mut steps = Vec::new();
        self.link.start(now, &mut self.ops, &mut steps);
        self.steps(steps, now);
    }

    /// `stopBroadcast()` / `delete()`.
    pub fn stop(&mut self) {
        let was_busy = self.busy();
        let mut steps = Vec::new();
        self.link.stop(&mut steps);
        self.steps(steps, 0.0);
        if self.starting {
            self.starting = false;
            self.actions.push(IngestAction::Reject(BroadcastError::new(
                BroadcastErrorCode::Broadcast,
                "the broadcast was stopped while starting",
            )));
        }
        if was_busy {
            self.set_state(BroadcastState::Closed);
        }
    }

    /// The offer of `op` was answered (and applied), or not.
    pub fn answered(&mut self, op: u32, result: Result<(), HttpFailure>, now: f64) {
        if self.link.op() != Some(op) {
            if result.is_ok() {
                // A late answer: while reconnecting, our next offer takes
                // its session over.
                let close = self.close(op);
                self.actions.push(close);
            }
            return;
        }
        let mut outcome = HttpFailure::outcome(&result);
        // The first attempt answers `startBroadcast()` itself: a wrong key
        // or an unreachable server is the caller's to see, not to retry.
        if self.starting && outcome == Outcome::Retry {
            outcome = Outcome::Fatal;
        }
        let mut steps = Vec::new();
        self.link
            .answered(op, outcome, now, &mut self.jitter, &mut steps);
        self.steps(steps, now);
        match result {
            Ok(()) if self.starting => {
                self.starting = false;
                self.actions.push(IngestAction::Resolve);
            }
            Err(f) if self.link.state() == LinkState::Failed => {
                let e = BroadcastError::from_failure(&f);
                if std::mem::take(&mut self.starting) {
                    self.actions.push(IngestAction::Reject(e.clone()));
                }
                self.actions.push(IngestAction::Error(e));
            }
            _ => {}
        }
    }

    /// `connectionState` of connection `op` changed.
    pub fn peer_state(&mut self, op: u32, state: PeerState, now: f64) {
        let mut steps = Vec::new();
        self.link
            .peer_state(op, state, now, &mut self.jitter, &mut steps);
        self.steps(steps, now);
    }

    pub fn tick(&mut self, now: f64) {
        if self.starting && self.link.deadline().is_some_and(|d| d <= now) {
            // The first offer got no answer in time: `startBroadcast()`
            // fails rather than offering again (the server may still be
            // setting up the first one, and would refuse a second).
            self.starting = false;
            let e = BroadcastError::new(BroadcastErrorCode::PeerSetup, "the ingest server did not answer in time");
            self.actions.push(IngestAction::Reject(e.clone()));
            let mut steps = Vec::new();
            self.link.stop(&mut steps);
            self.steps(steps, now);
            self.set_state(BroadcastState::Failed);
            self.actions.push(IngestAction::Error(e));
            return;
        }
        if self.config.reconnect && self.down_since.is_some_and(|t| now >= t + self.config.timeout_ms) {
            self.give_up("could not reconnect to the ingest server in time");
            return;
        }
        let mut steps = Vec::new();
        self.link
            .tick(now, &mut self.ops, &mut self.jitter, &mut steps);
        self.steps(steps, now);
    }

    fn give_up(&mut self, message: &str) {
        let mut steps = Vec::new();
        self.link.stop(&mut steps);
        self.steps(steps, 0.0);
        self.down_since = None;
        self.set_state(BroadcastState::Failed);
        self.actions.push(IngestAction::Error(BroadcastError::new(
            BroadcastErrorCode::PeerConnection,
            message,
        )));
    }

    /// How to close connection `op`: a link still busy is reconnecting, so
    /// the connection is dropped, not ended (see [`IngestAction::Drop`]).
    fn close(&self, op: u32) -> IngestAction {
        if self.busy() {
            IngestAction::Drop(op)
        } else {
            IngestAction::Close(op)
        }
    }

    fn steps(&mut self, steps: Vec<LinkStep>, now: f64) {
        let mut dropped = false;
        for step in steps {
            match step {
                LinkStep::Open(op) => self.actions.push(IngestAction::Open(op)),
                LinkStep::Close(op) => {
                    let close = self.close(op);
                    self.actions.push(close);
                }
                LinkStep::Up(_) => self.down_since = None,
                LinkStep::Down(_) => {
                    dropped = true;
                    self.down_since.get_or_insert(now);
                }
            }
        }
        if dropped && !self.config.reconnect {
            self.give_up("the connection to the ingest server failed");
            return;
        }
        let state = match self.link.state() {
            LinkState::Idle => return,
            LinkState::Connecting if self.down_since.is_none() => BroadcastState::Connecting,
            LinkState::Up => BroadcastState::Connected,
            LinkState::Connecting | LinkState::Interrupted | LinkState::Waiting => {
                BroadcastState::Disconnected
            }
            LinkState::Failed => BroadcastState::Failed,
        };
        if state == BroadcastState::Disconnected {
            self.down_since.get_or_insert(now);
        }
        self.set_state(state);
    }

    fn set_state(&mut self, state: BroadcastState) {
        if self.state == state {
            return;
        }
        let was_active = self.state == BroadcastState::Connected;
        self.state = state;
        self.actions.push(IngestAction::State(state));
        if was_active != (state == BroadcastState::Connected) {
            self.actions
                .push(IngestAction::Active(state == BroadcastState::Connected));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::link::{CONNECT_TIMEOUT_MS, DISCONNECTED_GRACE_MS};
    use BroadcastState as S;
    use IngestAction::*;

    fn ingest() -> Ingest {
        let mut i = Ingest::new(ReconnectConfig::default(), 0.0);
        i.jitter = Jitter::fixed(0.0);
        i
    }

    fn connected(i: &mut Ingest) {
        i.start(0.0);
        i.answered(1, Ok(()), 10.0);
        i.peer_state(1, PeerState::Connected, 20.0);
        i.take_actions();
    }

    #[test]
    fn starts_connecting_then_connected_once_ice_connects() {
        let mut i = ingest();
        i.start(0.0);
        assert_eq!(i.take_actions(), [Open(1), State(S::Connecting)]);
        i.answered(1, Ok(()), 10.0);
        assert_eq!(i.take_actions(), [Resolve]);
        i.peer_state(1, PeerState::Connected, 20.0);
        assert_eq!(i.take_actions(), [State(S::Connected), Active(true)]);
    }

    #[test]
    fn a_refused_or_unreachable_first_attempt_rejects_start() {
        for f in [
            HttpFailure::http(401, Some("STREAM_KEY_INVALID".into()), None),
            HttpFailure::network("connection refused"),
        ] {
            let mut i = ingest();
            i.start(0.0);
            i.take_actions();
            i.answered(1, Err(f.clone()), 5.0);
            let actions = i.take_actions();
            assert_eq!(actions[..2], [Close(1), State(S::Failed)], "{f:?}");
            let e = BroadcastError::from_failure(&f);
            assert_eq!(actions[2..], [Reject(e.clone()), Error(e)]);
            assert!(!i.busy());
        }
    }

    #[test]
    fn a_drop_reconnects_to_the_same_endpoint_with_backoff() {
        let mut i = ingest();
        connected(&mut i);
        i.peer_state(1, PeerState::Disconnected, 1_000.0);
        assert_eq!(i.take_actions(), [State(S::Disconnected), Active(false)]);
        let t = 1_000.0 + DISCONNECTED_GRACE_MS;
        i.tick(t);
        // Still disconnected: dropped, never DELETEd (the server would end
        // the broadcast instead of letting the next offer continue it).
        assert_eq!(i.take_actions(), [Drop(1)]);
        i.tick(t + 250.0);
        assert_eq!(i.take_actions(), [Open(2)]);
        // The server restarted and is not back yet.
        i.answered(2, Err(HttpFailure::network("connection refused")), t + 300.0);
        assert_eq!(i.take_actions(), [Drop(2)]);
        i.tick(t + 800.0);
        assert_eq!(i.take_actions(), [Open(3)]);
        i.answered(3, Ok(()), t + 900.0);
        i.peer_state(3, PeerState::Connected, t + 1_000.0);
        assert_eq!(i.take_actions(), [State(S::Connected), Active(true)]);
        assert_eq!(i.poll_timeout(), None);
    }

    #[test]
    fn a_channel_still_holding_the_old_broadcast_is_retried() {
        let mut i = ingest();
        connected(&mut i);
        i.peer_state(1, PeerState::Failed, 1_000.0);
        assert_eq!(i.take_actions(), [Drop(1), State(S::Disconnected), Active(false)]);
        i.tick(1_250.0);
        i.take_actions();
        let busy = HttpFailure::http(409, Some("STREAM_IN_PROGRESS".into()), None);
        i.answered(2, Err(busy), 1_300.0);
        assert_eq!(i.take_actions(), [Drop(2)]);
        assert_eq!(i.state(), S::Disconnected);
        i.tick(1_800.0);
        assert_eq!(i.take_actions(), [Open(3)]);
    }

    #[test]
    fn gives_up_after_the_reconnect_timeout() {
        let mut i = ingest();
        connected(&mut i);
        i.peer_state(1, PeerState::Failed, 1_000.0);
        let mut now = 1_000.0;
        let give_up = 1_000.0 + ReconnectConfig::default().timeout_ms;
        let mut actions = Vec::new();
        while now < give_up {
            now = i.poll_timeout().expect("something is due");
            i.tick(now);
            actions = i.take_actions();
            if let Some(&Open(op)) = actions.iter().find(|a| matches!(a, Open(_))) {
                i.answered(op, Err(HttpFailure::network("offline")), now);
                actions.extend(i.take_actions());
            }
        }
        assert_eq!(actions.last(), Some(&Error(BroadcastError::new(
            BroadcastErrorCode::PeerConnection,
            "could not reconnect to the ingest server in time",
        ))));
        assert_eq!(i.state(), S::Failed);
        assert_eq!(i.poll_timeout(), None);
    }

    #[test]
    fn without_reconnect_a_drop_fails() {
        let mut i = Ingest::new(
            ReconnectConfig {
                reconnect: false,
                timeout_ms: 10_000.0,
            },
            0.5,
        );
        connected(&mut i);
        i.peer_state(1, PeerState::Failed, 1_000.0);
        let actions = i.take_actions();
        assert!(actions.contains(&State(S::Failed)), "{actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, Open(_))));
        assert!(matches!(actions.last(), Some(Error(_))));
    }

    #[test]
    fn never_connecting_after_the_answer_is_retried_not_reported_connected() {
        let mut i = ingest();
        i.start(0.0);
        i.answered(1, Ok(()), 10.0);
        i.take_actions();
        i.tick(10.0 + CONNECT_TIMEOUT_MS);
        assert_eq!(i.take_actions(), [Drop(1), State(S::Disconnected)]);
    }

    #[test]
    fn a_late_answer_while_reconnecting_is_dropped_and_stop_deletes() {
        let mut i = ingest();
        connected(&mut i);
        i.peer_state(1, PeerState::Failed, 1_000.0);
        i.tick(1_250.0);
        assert_eq!(
            i.take_actions(),
            [Drop(1), State(S::Disconnected), Active(false), Open(2)]
        );
        let due = i.poll_timeout().expect("an answer deadline");
        i.tick(due);
        assert_eq!(i.take_actions(), [Drop(2)]);
        i.answered(2, Ok(()), due + 1.0);
        assert_eq!(
            i.take_actions(),
            [Drop(2)],
            "its session is taken over by the next offer"
        );
        i.stop();
        assert_eq!(
            i.take_actions(),
            [State(S::Closed)],
            "nothing open to DELETE"
        );
    }

    #[test]
    fn stop_closes_and_rejects_a_pending_start() {
        let mut i = ingest();
        i.start(0.0);
        i.take_actions();
        i.stop();
        let actions = i.take_actions();
        assert_eq!(actions[0], Close(1));
        assert!(matches!(actions[1], Reject(_)));
        assert_eq!(actions[2], State(S::Closed));
        // Its late answer only closes what it opened.
        i.answered(1, Ok(()), 50.0);
        assert_eq!(i.take_actions(), [Close(1)]);
    }

    #[test]
    fn a_first_offer_without_an_answer_fails_the_start_and_its_late_answer_is_closed() {
        let mut i = ingest();
        i.start(0.0);
        i.take_actions();
        let due = i.poll_timeout().expect("an answer deadline");
        i.tick(due);
        let e = BroadcastError::new(BroadcastErrorCode::PeerSetup, "the ingest server did not answer in time");
        assert_eq!(i.take_actions(), [Reject(e.clone()), Close(1), State(S::Failed), Error(e)]);
        assert_eq!(i.poll_timeout(), None);
        i.answered(1, Ok(()), due + 1.0);
        assert_eq!(i.take_actions(), [Close(1)]);
    }

    #[test]
    fn typescript_declarations_list_every_state() {
        let dts = include_str!("../../npm/index.d.ts");
        let from = dts.find("export declare const ConnectionState:").expect("declared");
        let block = &dts[from..from + dts[from..].find("};").expect("closed")];
        for s in BroadcastState::ALL {
            assert!(block.contains(&format!("'{}'", s.as_str())), "{}", s.as_str());
        }
    }
}
