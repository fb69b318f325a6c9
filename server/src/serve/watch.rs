//! Sans-IO decisions of the HTTP listener: when a connection has been slow
//! or quiet for too long ([`ConnWatch`]), and how often a refusal may be
//! logged ([`LogThrottle`]). Time is passed in; the adapter in `serve/`
//! feeds events and sleeps until [`ConnWatch::deadline`].

use std::time::{Duration, Instant};

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No request and no bytes for the idle timeout.
    Idle,
    /// A request head (or TLS handshake) started but did not complete in time.
    Header,
    /// A request was in progress but no bytes moved either way for the idle timeout.
    Stalled,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Header => "request head too slow",
            Self::Stalled => "request stalled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request; nothing of it has arrived. Since when.
    Idle(Instant),
    /// Bytes of a request head (or handshake) arrived; since the first one.
    Head(Instant),
    /// Requests in progress; the time of the last byte in either direction.
    Busy(Instant),
}

/// The timers of one HTTP/1 connection.
///
/// - idle: after the previous response (or the accept), no byte for
///   `idle_timeout` → close;
/// - head: from the first byte of a request head, the whole head must be in
///   within `header_timeout` (a slowloris sending a byte a second is closed
///   however steady it is);
/// - busy: while a request is being handled, some byte must move either way
///   every `idle_timeout` (a client that stops reading its response).
#[derive(Debug, Clone)]
pub struct ConnWatch {
    header_timeout: Duration,
    idle_timeout: Duration,
    phase: Phase,
    in_flight: u32,
}

impl ConnWatch {
    pub fn new(header_timeout: Duration, idle_timeout: Duration, now: Instant) -> Self {
        Self { header_timeout, idle_timeout, phase: Phase::Idle(now), in_flight: 0 }
    }

    /// Bytes arrived from the client.
    pub fn on_read(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle(_) => self.phase = Phase::Head(now),
            Phase::Head(_) => {}
            Phase::Busy(_) => self.phase = Phase::Busy(now),
        }
    }

    /// Bytes went out to the client.
    pub fn on_write(&mut self, now: Instant) {
        if let Phase::Busy(_) = self.phase {
            self.phase = Phase::Busy(now);
        }
    }

    /// A complete request head was parsed and handed to the application.
    pub fn on_request(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_add(1);
        self.phase = Phase::Busy(now);
    }

    /// A response was sent in full (or abandoned).
    pub fn on_response_done(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.phase = Phase::Idle(now);
        } else {
            self.phase = Phase::Busy(now);
        }
    }

    /// When the current phase runs out.
    pub fn deadline(&self) -> Instant {
        match self.phase {
            Phase::Idle(since) | Phase::Busy(since) => since + self.idle_timeout,
            Phase::Head(since) => since + self.header_timeout,
        }
    }

    /// Whether the connection must be closed at `now`, and why.
    pub fn expired(&self, now: Instant) -> Option<Expiry> {
        if now < self.deadline() {
            return None;
        }
        Some(match self.phase {
            Phase::Idle(_) => Expiry::Idle,
            Phase::Head(_) => Expiry::Header,
            Phase::Busy(_) => Expiry::Stalled,
        })
    }
}

/// At most one log line per `interval` for a repeated event, counting the
/// ones it swallowed.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    swallowed: u64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: None, swallowed: 0 }
    }

    /// The event happened at `now`: `Some(n)` when it should be logged now
    /// (with `n` occurrences since the last line, this one included).
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.swallowed = self.swallowed.saturating_add(1);
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < self.interval) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.swallowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_quiet_connection_is_closed_after_the_idle_timeout() {
        let t0 = Instant::now();
        let w = ConnWatch::new(HEAD, IDLE, t0);
        assert_eq!(w.expired(secs(t0, 59)), None);
        assert_eq!(w.expired(secs(t0, 60)), Some(Expiry::Idle));
    }

    #[test]
    fn a_slowloris_is_closed_after_the_header_timeout_however_steady() {
        let t0 = Instant::now();
        let mut w = ConnWatch::new(HEAD, IDLE, t0);
        for s in 1..=9 {
            w.on_read(secs(t0, s));
            assert_eq!(w.expired(secs(t0, s)), None);
        }
        assert_eq!(w.deadline(), secs(t0, 11));
        w.on_read(secs(t0, 10));
        assert_eq!(w.expired(secs(t0, 11)), Some(Expiry::Header));
    }

    #[test]
    fn keep_alive_restarts_the_idle_clock_after_each_response() {
        let t0 = Instant::now();
        let mut w = ConnWatch::new(HEAD, IDLE, t0);
        w.on_read(secs(t0, 50));
        w.on_request(secs(t0, 50));
        // A long request (e.g. a blocking playlist reload) is not idle...
        assert_eq!(w.expired(secs(t0, 100)), None);
        w.on_write(secs(t0, 100));
        w.on_response_done(secs(t0, 100));
        assert_eq!(w.expired(secs(t0, 159)), None);
        assert_eq!(w.expired(secs(t0, 160)), Some(Expiry::Idle));
    }

    #[test]
    fn a_request_that_moves_no_bytes_for_the_idle_timeout_is_stalled() {
        let t0 = Instant::now();
        let mut w = ConnWatch::new(HEAD, IDLE, t0);
        w.on_request(t0);
        w.on_write(secs(t0, 30));
        assert_eq!(w.expired(secs(t0, 89)), None);
        assert_eq!(w.expired(secs(t0, 90)), Some(Expiry::Stalled));
    }

    #[test]
    fn pipelined_requests_stay_busy_until_the_last_response() {
        let t0 = Instant::now();
        let mut w = ConnWatch::new(HEAD, IDLE, t0);
        w.on_request(t0);
        w.on_request(t0);
        w.on_response_done(secs(t0, 1));
        assert_eq!(w.deadline(), secs(t0, 61));
        w.on_read(secs(t0, 2));
        assert_eq!(w.deadline(), secs(t0, 62), "bytes during a request are activity, not a new head");
        w.on_response_done(secs(t0, 3));
        w.on_read(secs(t0, 4));
        assert_eq!(w.deadline(), secs(t0, 14), "the next head has the header timeout");
    }

    #[test]
    fn refusals_are_logged_at_most_once_per_interval_with_a_count() {
        let t0 = Instant::now();
        let mut log = LogThrottle::new(Duration::from_secs(1));
        assert_eq!(log.hit(t0), Some(1));
        assert_eq!(log.hit(t0 + Duration::from_millis(10)), None);
        assert_eq!(log.hit(t0 + Duration::from_millis(900)), None);
        assert_eq!(log.hit(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(log.hit(t0 + Duration::from_millis(1500)), None);
    }
}
