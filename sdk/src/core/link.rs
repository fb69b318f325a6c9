//! The life of one media connection — a stage publish, a subscription, a
//! channel ingest: offer POSTed → answer applied → ICE + DTLS connected —
//! and how it comes back after a failure.
//!
//! Recovery opens a **new session** (a fresh offer POSTed to the same
//! endpoint; the old peer connection is closed and its resource DELETEd
//! best-effort) rather than an ICE restart. A new session works whatever the
//! server remembers: after a restart or once it has dropped a silent
//! session (~15 s) an ICE restart has nothing to restart, and the server
//! replaces a participant's earlier publish / subscription itself. The cost
//! is a keyframe wait and, for subscriptions, new `MediaStreamTrack`s (the
//! app sees streams removed, then added).
//!
//! Each peer connection is named by an `op` number, unique within its owner,
//! so late callbacks of a connection that was replaced are recognised.

use super::backoff::{Backoff, Jitter};

/// `RTCPeerConnection.connectionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

impl PeerState {
    pub fn parse(s: &str) -> Option<PeerState> {
        Some(match s {
            "new" => PeerState::New,
            "connecting" => PeerState::Connecting,
            "connected" => PeerState::Connected,
            "disconnected" => PeerState::Disconnected,
            "failed" => PeerState::Failed,
            "closed" => PeerState::Closed,
            _ => return None,
        })
    }
}

/// "disconnected" for longer than this counts as failed (browsers report
/// "failed" only after much longer, if ever).
pub const DISCONNECTED_GRACE_MS: f64 = 3_000.0;
/// ICE + DTLS must connect within this long after the answer.
pub const CONNECT_TIMEOUT_MS: f64 = 20_000.0;
/// The offer's POST must be answered (and the answer applied) within this
/// long: a request made while offline can hang for minutes. A late answer
/// is closed. Generous, as a loaded machine can take seconds to set up.
pub const ANSWER_TIMEOUT_MS: f64 = 15_000.0;
/// A connection that stayed up this long starts the next recovery from the
/// base delay again; one that keeps failing right away backs off.
const STABLE_MS: f64 = 10_000.0;

/// Delay between attempts: 0.5 s doubling to 5 s (with jitter), for as
/// long as the owner wants the connection.
pub fn retry_backoff() -> Backoff {
    Backoff::new(500, 5_000, u32::MAX)
}

/// Hands out `op` numbers (never 0, wrapping).
#[derive(Debug, Default, Clone)]
pub struct Ops(u32);

impl Ops {
    pub fn fresh(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(1).max(1);
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    /// Offer POSTed, no answer yet; given up at `deadline`.
    Negotiating { op: u32, deadline: f64 },
    /// Answer applied; ICE/DTLS must connect by `deadline`.
    Connecting { op: u32, deadline: f64 },
    /// Media can flow. `disconnected_at`: when the browser said "disconnected".
    Up {
        op: u32,
        since: f64,
        disconnected_at: Option<f64>,
    },
    /// Waiting before the next attempt.
    Waiting { until: f64 },
    /// A retry fell due while the owner said it may not open (the stage's
    /// event plane is down): waits for [`Link::retry_now`], not a timer.
    Held,
    /// A failure retrying cannot fix (refused token, bad offer...).
    Failed,
}

/// What the owner of a link sees of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Idle,
    /// An offer is out or ICE/DTLS is connecting.
    Connecting,
    Up,
    /// Up, but the browser says "disconnected" (it may come back by itself).
    Interrupted,
    /// Between attempts.
    Waiting,
    Failed,
}

impl LinkState {
    /// Media flows, or flowed until a moment ago.
    pub fn up(self) -> bool {
        matches!(self, LinkState::Up | LinkState::Interrupted)
    }
}

/// What the owner must do, or learns, after a link call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStep {
    /// Create a peer connection named `op` and POST its offer.
    Open(u32),
    /// Close peer connection `op`, DELETEing its session resource.
    Close(u32),
    /// Media flows on `op` (first time, or again after a recovery).
    Up(u32),
    /// Media on `op` stopped for good; a new attempt follows.
    Down(u32),
}

/// How an attempt ended, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    /// Network error, 5xx, a session the server does not know (yet)...
    Retry,
    /// Retrying would get the same answer.
    Fatal,
}

/// One media connection and its recovery.
#[derive(Debug, Clone)]
pub struct Link {
    phase: Phase,
    backoff: Backoff,
}

impl Default for Link {
    fn default() -> Self {
        Link::new(retry_backoff())
    }
}

impl Link {
    pub fn new(backoff: Backoff) -> Link {
        Link {
            phase: Phase::Idle,
            backoff,
        }
    }

    pub fn state(&self) -> LinkState {
        match self.phase {
            Phase::Idle => LinkState::Idle,
            Phase::Negotiating { .. } | Phase::Connecting { .. } => LinkState::Connecting,
            Phase::Up {
                disconnected_at: None,
                ..
            } => LinkState::Up,
            Phase::Up { .. } => LinkState::Interrupted,
            Phase::Waiting { .. } | Phase::Held => LinkState::Waiting,
            Phase::Failed => LinkState::Failed,
        }
    }

    /// The peer connection that exists now (negotiating, connecting or up).
    pub fn op(&self) -> Option<u32> {
        match self.phase {
            Phase::Negotiating { op, .. } | Phase::Connecting { op, .. } | Phase::Up { op, .. } => {
                Some(op)
            }
            _ => None,
        }
    }

    /// Whether `op`'s answer has been applied (it can carry track swaps).
    pub fn is_answered(&self, op: u32) -> bool {
        matches!(self.phase, Phase::Connecting { op: o, .. } | Phase::Up { op: o, .. } if o == op)
    }

    /// When [`Link::tick`] has something to do.
    pub fn deadline(&self) -> Option<f64> {
        match self.phase {
            Phase::Negotiating { deadline, .. } | Phase::Connecting { deadline, .. } => Some(deadline),
            Phase::Up {
                disconnected_at: Some(t),
                ..
            } => Some(t + DISCONNECTED_GRACE_MS),
            Phase::Waiting { until } => Some(until),
            _ => None,
        }
    }

    /// (Re)starts: closes the current peer connection, opens a new one now.
    pub fn start(&mut self, now: f64, ops: &mut Ops, out: &mut Vec<LinkStep>) {
        self.stop(out);
        self.backoff.reset();
        self.open(now, ops, out);
    }

    /// Stops: closes the current peer connection and forgets any failure.
    pub fn stop(&mut self, out: &mut Vec<LinkStep>) {
        if let Some(op) = self.op() {
            out.push(LinkStep::Close(op));
        }
        self.phase = Phase::Idle;
    }

    /// The network seems back (the event plane reconnected): a link waiting
    /// to retry tries now, from the base delay.
    pub fn retry_now(&mut self, now: f64, ops: &mut Ops, out: &mut Vec<LinkStep>) {
        if let Phase::Waiting { .. } | Phase::Held = self.phase {
            self.backoff.reset();
            self.open(now, ops, out);
        }
    }

    fn open(&mut self, now: f64, ops: &mut Ops, out: &mut Vec<LinkStep>) {
        let op = ops.fresh();
        self.phase = Phase::Negotiating {
            op,
            deadline: now + ANSWER_TIMEOUT_MS,
        };
        out.push(LinkStep::Open(op));
    }

    /// The POST for `op` finished (and on success the answer is applied).
    /// A step for an `op` that is not current only closes it.
    pub fn answered(
        &mut self,
        op: u32,
        outcome: Outcome,
        now: f64,
        jitter: &mut Jitter,
        out: &mut Vec<LinkStep>,
    ) {
        if !matches!(self.phase, Phase::Negotiating { op: o, .. } if o == op) {
            if outcome == Outcome::Answered && self.op() != Some(op) {
                out.push(LinkStep::Close(op));
            }
            return;
        }
        match outcome {
            Outcome::Answered => {
                self.phase = Phase::Connecting {
                    op,
                    deadline: now + CONNECT_TIMEOUT_MS,
                }
            }
            Outcome::Retry => self.fail(op, now, jitter, out),
            Outcome::Fatal => {
                out.push(LinkStep::Close(op));
                self.phase = Phase::Failed;
            }
        }
    }

    /// The browser reported `state` for `op`.
    pub fn peer_state(
        &mut self,
        op: u32,
        state: PeerState,
        now: f64,
        jitter: &mut Jitter,
        out: &mut Vec<LinkStep>,
    ) {
        if self.op() != Some(op) {
            return;
        }
        match (state, self.phase) {
            (PeerState::Connected, Phase::Up { since, .. }) => {
                self.phase = Phase::Up {
                    op,
                    since,
                    disconnected_at: None,
                }
            }
            (PeerState::Connected, _) => {
                self.phase = Phase::Up {
                    op,
                    since: now,
                    disconnected_at: None,
                };
                out.push(LinkStep::Up(op));
            }
            (
                PeerState::Disconnected,
                Phase::Up {
                    since,
                    disconnected_at: None,
                    ..
                },
            ) => {
                self.phase = Phase::Up {
                    op,
                    since,
                    disconnected_at: Some(now),
                }
            }
            // Our own close removes the listener first, so "closed" here
            // means something else closed it: as good as failed.
            (PeerState::Failed | PeerState::Closed, _) => self.fail(op, now, jitter, out),
            _ => {}
        }
    }

    /// Time passed: connect timeouts, long disconnections, due retries.
    pub fn tick(&mut self, now: f64, ops: &mut Ops, jitter: &mut Jitter, out: &mut Vec<LinkStep>) {
        self.tick_gated(now, true, ops, jitter, out);
    }

    /// [`Link::tick`], but a retry that falls due while `may_open` is false
    /// is held until [`Link::retry_now`]: a stage member whose event plane
    /// is down must not publish (the server would take it for a WHIP-only
    /// publisher) and cannot usefully subscribe.
    pub fn tick_gated(&mut self, now: f64, may_open: bool, ops: &mut Ops, jitter: &mut Jitter, out: &mut Vec<LinkStep>) {
        if !self.deadline().is_some_and(|d| d <= now) {
            return;
        }
        match self.phase {
            Phase::Negotiating { op, .. } | Phase::Connecting { op, .. } | Phase::Up { op, .. } => {
                self.fail(op, now, jitter, out)
            }
            Phase::Waiting { .. } if may_open => self.open(now, ops, out),
            Phase::Waiting { .. } => self.phase = Phase::Held,
            _ => {}
        }
    }

    /// `op` stopped working: close it and wait before the next attempt.
    fn fail(&mut self, op: u32, now: f64, jitter: &mut Jitter, out: &mut Vec<LinkStep>) {
        if let Phase::Up { since, .. } = self.phase {
            if now - since >= STABLE_MS {
                self.backoff.reset();
            }
            out.push(LinkStep::Down(op));
        }
        out.push(LinkStep::Close(op));
        // The backoff never gives up (u32::MAX attempts); a bounded one
        // that did would make this link fail for good.
        self.phase = match self.backoff.next_delay_ms(jitter.sample()) {
            Some(delay) => Phase::Waiting {
                until: now + f64::from(delay),
            },
            None => Phase::Failed,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T {
        link: Link,
        ops: Ops,
        jitter: Jitter,
        out: Vec<LinkStep>,
    }

    impl T {
        fn new() -> T {
            T {
                link: Link::default(),
                ops: Ops::default(),
                jitter: Jitter::fixed(0.0),
                out: Vec::new(),
            }
        }
        fn take(&mut self) -> Vec<LinkStep> {
            std::mem::take(&mut self.out)
        }
        fn answered(&mut self, op: u32, o: Outcome, now: f64) -> Vec<LinkStep> {
            self.link.answered(op, o, now, &mut self.jitter, &mut self.out);
            self.take()
        }
        fn state(&mut self, op: u32, s: PeerState, now: f64) -> Vec<LinkStep> {
            self.link.peer_state(op, s, now, &mut self.jitter, &mut self.out);
            self.take()
        }
        fn tick(&mut self, now: f64) -> Vec<LinkStep> {
            self.link.tick(now, &mut self.ops, &mut self.jitter, &mut self.out);
            self.take()
        }
    }

    use LinkStep::*;

    #[test]
    fn up_only_once_ice_and_dtls_connect() {
        let mut t = T::new();
        t.link.start(0.0, &mut t.ops, &mut t.out);
        assert_eq!(t.take(), [Open(1)]);
        assert_eq!(t.answered(1, Outcome::Answered, 100.0), []);
        assert_eq!(t.link.state(), LinkState::Connecting, "an answer is not media");
        assert_eq!(t.state(1, PeerState::Connecting, 150.0), []);
        assert_eq!(t.state(1, PeerState::Connected, 200.0), [Up(1)]);
        assert_eq!(t.link.state(), LinkState::Up);
        assert_eq!(t.link.deadline(), None);
    }

    #[test]
    fn never_connecting_times_out_and_retries() {
        let mut t = T::new();
        t.link.start(0.0, &mut t.ops, &mut t.out);
        t.take();
        t.answered(1, Outcome::Answered, 0.0);
        assert_eq!(t.tick(CONNECT_TIMEOUT_MS - 1.0), []);
        assert_eq!(t.tick(CONNECT_TIMEOUT_MS), [Close(1)]);
        assert_eq!(t.link.state(), LinkState::Waiting);
        // Jitter 0 → half the base delay.
        assert_eq!(t.link.deadline(), Some(CONNECT_TIMEOUT_MS + 250.0));
        assert_eq!(t.tick(CONNECT_TIMEOUT_MS + 250.0), [Open(2)]);
    }

    #[test]
    fn a_short_disconnection_is_ridden_out_a_long_one_is_a_failure() {
        let mut t = T::new();
        t.link.start(0.0, &mut t.ops, &mut t.out);
        t.take();
        t.answered(1, Outcome::Answered, 0.0);
        t.state(1, PeerState::Connected, 10.0);
        assert_eq!(t.state(1, PeerState::Disconnected, 1_000.0), []);
        assert_eq!(t.link.state(), LinkState::Interrupted);
        assert_eq!(t.state(1, PeerState::Connected, 3_500.0), [], "back by itself");
        assert_eq!(t.link.deadline(), None);
        t.state(1, PeerState::Disconnected, 5_000.0);
        assert_eq!(t.tick(5_000.0 + DISCONNECTED_GRACE_MS - 1.0), []);
        assert_eq!(t.tick(5_000.0 + DISCONNECTED_GRACE_MS), [Down(1), Close(1)]);
        // Late news from the closed connection changes nothing.
        assert_eq!(t.state(1, PeerState::Connected, 8_100.0), []);
        assert_eq!(t.tick(8_250.0), [Open(2)]);
        assert_eq!(t.answered(2, Outcome::Answered, 8_300.0), []);
        assert_eq!(t.state(2, PeerState::Connected, 8_400.0), [Up(2)]);
    }

    #[test]
    fn retries_back_off_to_a_cap_and_restart_from_base_after_a_stable_run() {
        let mut t = T::new();
        t.link.start(0.0, &mut t.ops, &mut t.out);
        t.take();
        let mut now = 0.0;
        let mut delays = Vec::new();
        for op in 1..=7 {
            assert_eq!(t.answered(op, Outcome::Retry, now), [Close(op)]);
            let due = t.link.deadline().expect("waiting");
            delays.push(due - now);
            now = due;
            assert_eq!(t.tick(now), [Open(op + 1)]);
        }
        assert_eq!(delays, [250.0, 500.0, 1000.0, 2000.0, 2500.0, 2500.0, 2500.0]);
        // Up for 10 s, then failed: the next delay is the base one again.
        t.answered(8, Outcome::Answered, now);
        t.state(8, PeerState::Connected, now);
        now += STABLE_MS;
        assert_eq!(t.state(8, PeerState::Failed, now), [Down(8), Close(8)]);
        assert_eq!(t.link.deadline(), Some(now + 250.0));
    }

    #[test]
    fn fatal_answers_stop_and_superseded_answers_are_closed() {
        let mut t = T::new();
        t.link.start(0.0, &mut t.ops, &mut t.out);
        t.take();
        t.link.start(0.0, &mut t.ops, &mut t.out);
        assert_eq!(t.take(), [Close(1), Open(2)]);
        assert_eq!(t.answered(1, Outcome::Answered, 0.0), [Close(1)]);
        assert_eq!(t.answered(2, Outcome::Fatal, 0.0), [Close(2)]);
        assert_eq!(t.link.state(), LinkState::Failed);
        assert_eq!(t.link.deadline(), None);
        t.link.stop(&mut t.out);
        assert_eq!(t.take(), []);
        assert_eq!(t.link.state(), LinkState::Idle);
    }

    #[test]
    fn retry_now_skips_the_wait() {
        let mut t = T::new();
        t.link.start(0.0, &mut t.ops, &mut t.out);
        t.take();
        for op in 1..=4 {
            t.answered(op, Outcome::Retry, 0.0);
            t.tick(10_000.0);
        }
        t.answered(5, Outcome::Retry, 0.0);
        t.take();
        t.link.retry_now(0.0, &mut t.ops, &mut t.out);
        assert_eq!(t.take(), [Open(6)]);
        t.answered(6, Outcome::Retry, 0.0);
        assert_eq!(t.link.deadline(), Some(250.0), "from the base delay again");
    }

    #[test]
    fn a_retry_due_while_it_may_not_open_waits_for_retry_now() {
        let mut t = T::new();
        t.link.start(0.0, &mut t.ops, &mut t.out);
        t.take();
        assert_eq!(t.answered(1, Outcome::Retry, 0.0), [Close(1)]);
        t.link.tick_gated(250.0, false, &mut t.ops, &mut t.jitter, &mut t.out);
        assert_eq!(t.take(), [], "held: nothing opened");
        assert_eq!(t.link.state(), LinkState::Waiting);
        assert_eq!(t.link.deadline(), None, "no timer to spin on");
        assert_eq!(t.tick(60_000.0), [], "only retry_now opens it");
        t.link.retry_now(60_000.0, &mut t.ops, &mut t.out);
        assert_eq!(t.take(), [Open(2)]);
    }

    #[test]
    fn an_offer_nobody_answers_is_given_up_and_its_late_answer_closed() {
        let mut t = T::new();
        t.link.start(0.0, &mut t.ops, &mut t.out);
        t.take();
        assert_eq!(t.link.deadline(), Some(ANSWER_TIMEOUT_MS));
        assert_eq!(t.tick(ANSWER_TIMEOUT_MS), [Close(1)]);
        assert_eq!(t.answered(1, Outcome::Answered, ANSWER_TIMEOUT_MS + 1.0), [Close(1)]);
        assert_eq!(t.link.state(), LinkState::Waiting);
    }

    #[test]
    fn browser_states_parse() {
        assert_eq!(PeerState::parse("failed"), Some(PeerState::Failed));
        assert_eq!(PeerState::parse("checking"), None);
    }
}
