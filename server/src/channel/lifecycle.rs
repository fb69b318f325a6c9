//! The sans-IO life of one broadcast across ingest sessions: live, waiting
//! for the broadcaster to come back (the reconnect window), ended.
//!
//! A broadcast is what viewers see at one playback URL; an ingest session is
//! one WHIP connection feeding it. When a session ends for any reason other
//! than a deliberate stop (WHIP `DELETE`, `StopStream`, channel delete), the
//! broadcast waits [`Lifecycle::window`] for a new session with the stream
//! key, which continues the same playlist after a discontinuity; only then
//! does it end (`EXT-X-ENDLIST`). IVS's recording reconnect window is the
//! model. Nothing here reads a clock: every call takes `now`.

use std::time::{Duration, Instant};

/// How long an ended broadcast's playlist (with `EXT-X-ENDLIST`) stays
/// available before the channel reads as offline (404).
pub const ENDED_GRACE: Duration = Duration::from_secs(30);
/// A live session that has sent no media for this long may be replaced by
/// a new WHIP offer with the stream key (the broadcaster reconnecting before
/// the server noticed the old connection is gone).
pub const TAKEOVER_AFTER: Duration = Duration::from_secs(1);
/// A live session that has not delivered any media yet (still connecting)
/// may be replaced after this long: the broadcaster gave up on it and
/// tries again.
pub const TAKEOVER_UNSTARTED_AFTER: Duration = Duration::from_secs(5);

/// Why an ingest session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// WHIP `DELETE`, `StopStream` or the channel was deleted: end now.
    Stopped,
    /// A newer session of the same broadcaster took over.
    Replaced,
    /// The connection was lost (peer vanished, ICE disconnected, media
    /// timeout, a fault in the task): the broadcaster may come back.
    Lost(String),
}

/// Where the broadcast is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Session `session` is ingesting.
    Live { session: String },
    /// No session; a new one within the window continues the broadcast.
    Reconnecting { since: Instant },
    /// Over: the playlist has its ENDLIST.
    Ended { at: Instant },
}

/// What the caller must do to the packager after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Flush what is pending and keep the playlist open for a resume.
    Interrupt,
    /// Flush and add `EXT-X-ENDLIST`.
    Finish,
}

/// How a new WHIP offer for this broadcast is admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The broadcaster is back within the window: continue the playlist.
    Resume,
    /// The live session went silent: replace it (stop it as
    /// [`SessionEnd::Replaced`]) and continue the playlist.
    TakeOver { old: String },
    /// A healthy session is ingesting: refuse the second broadcaster.
    Refuse,
    /// The broadcast is over: start a new one.
    Fresh,
}

/// Health of the ingest as the control plane reports it (IVS `StreamHealth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Waiting for the broadcaster to come back.
    Starving,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Starving => "STARVING",
        }
    }
}

/// The state machine of one broadcast.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    window: Duration,
    phase: Phase,
    last_media: Option<Instant>,
    started: Instant,
}

impl Lifecycle {
    /// A broadcast whose first session `session` starts at `now`.
    pub fn live(session: String, window: Duration, now: Instant) -> Self {
        Self { window, phase: Phase::Live { session }, last_media: None, started: now }
    }

    /// A broadcast found waiting for its broadcaster (after a restart):
    /// the window runs from `since`.
    pub fn reconnecting(since: Instant, window: Duration) -> Self {
        Self { window, phase: Phase::Reconnecting { since }, last_media: None, started: since }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// The session whose media the packager takes.
    pub fn current_session(&self) -> Option<&str> {
        match &self.phase {
            Phase::Live { session } => Some(session),
            _ => None,
        }
    }

    /// Live or waiting for the broadcaster: viewers keep the stream.
    pub fn is_on_air(&self) -> bool {
        !matches!(self.phase, Phase::Ended { .. })
    }

    pub fn is_reconnecting(&self) -> bool {
        matches!(self.phase, Phase::Reconnecting { .. })
    }

    pub fn health(&self) -> Option<Health> {
        match self.phase {
            Phase::Live { .. } => Some(Health::Healthy),
            Phase::Reconnecting { .. } => Some(Health::Starving),
            Phase::Ended { .. } => None,
        }
    }

    /// The current session delivered media at `now`.
    pub fn on_media(&mut self, now: Instant) {
        self.last_media = Some(self.last_media.map_or(now, |t| t.max(now)));
    }

    /// How a new offer is admitted at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        match &self.phase {
            Phase::Reconnecting { .. } => Admission::Resume,
            Phase::Ended { .. } => Admission::Fresh,
            Phase::Live { session } => {
                let (quiet_since, patience) = match self.last_media {
                    Some(t) => (t, TAKEOVER_AFTER),
                    None => (self.started, TAKEOVER_UNSTARTED_AFTER),
                };
                if now.saturating_duration_since(quiet_since) >= patience {
                    Admission::TakeOver { old: session.clone() }
                } else {
                    Admission::Refuse
                }
            }
        }
    }

    /// Session `session` was admitted ([`Admission::Resume`] or
    /// [`Admission::TakeOver`]) and now feeds the broadcast. A take-over
    /// returns [`Effect::Interrupt`]: the old session's pending media is
    /// flushed before the new one's.
    pub fn start_session(&mut self, session: String, now: Instant) -> Option<Effect> {
        let effect = matches!(self.phase, Phase::Live { .. }).then_some(Effect::Interrupt);
        self.phase = Phase::Live { session };
        self.last_media = None;
        self.started = now;
        effect
    }

    /// Session `session` ended. Only the current session's end changes anything.
    pub fn session_ended(&mut self, session: &str, end: &SessionEnd, now: Instant) -> Option<Effect> {
        if self.current_session() != Some(session) {
            return None;
        }
        match end {
            SessionEnd::Stopped => {
                self.phase = Phase::Ended { at: now };
                Some(Effect::Finish)
            }
            // A replacement already moved the phase on; seen here only if
            // the replacing session never started.
            SessionEnd::Replaced | SessionEnd::Lost(_) if self.window.is_zero() => {
                self.phase = Phase::Ended { at: now };
                Some(Effect::Finish)
            }
            SessionEnd::Replaced | SessionEnd::Lost(_) => {
                self.phase = Phase::Reconnecting { since: now };
                Some(Effect::Interrupt)
            }
        }
    }

    /// End the broadcast now, whatever its phase (the channel was deleted
    /// or stopped while reconnecting).
    pub fn stop(&mut self, now: Instant) -> Option<Effect> {
        if matches!(self.phase, Phase::Ended { .. }) {
            return None;
        }
        self.phase = Phase::Ended { at: now };
        Some(Effect::Finish)
    }

    /// When the reconnect window closes, if it is open.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Reconnecting { since } => Some(since + self.window),
            _ => None,
        }
    }

    /// Advance to `now`: a window that has passed ends the broadcast.
    pub fn poll(&mut self, now: Instant) -> Option<Effect> {
        match self.deadline() {
            Some(deadline) if now >= deadline => {
                self.phase = Phase::Ended { at: now };
                Some(Effect::Finish)
            }
            _ => None,
        }
    }

    /// Ended long enough ago that the channel reads as offline.
    pub fn expired(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Ended { at } if now.saturating_duration_since(at) >= ENDED_GRACE)
    }
}
