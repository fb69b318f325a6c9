//! Sans-IO rate limits and liveness for chat connections; time (Unix or
//! monotonic milliseconds, the caller's choice) is always an argument.
//!
//! - [`TokenBucket`]: `rate` per second with a `burst`; the per-connection
//!   message limit of [`super::room::RoomCore`] and the frame limit below.
//! - [`ConnectionGuard`]: what the socket driver asks about every inbound
//!   WebSocket frame (Ping and Pong included) and on every keepalive tick:
//!   too many frames means an abuser to close (1008); a peer that has said
//!   nothing for too long is dead and is dropped; otherwise ping it.

/// A token bucket in whole milli-tokens, so it needs no floating point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: u32,
    /// Most tokens held at once.
    burst: u32,
    /// Tokens now, in thousandths.
    milli: u64,
    /// When `milli` was last brought up to date.
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`. A `burst` of 0 is taken as 1, so a bucket
    /// always lets something through eventually.
    pub fn new(rate: u32, burst: u32, now_ms: i64) -> Self {
        let burst = burst.max(1);
        Self { rate, burst, milli: u64::from(burst) * 1000, last_ms: now_ms }
    }

    fn refill(&mut self, now_ms: i64) {
        // A clock that goes backwards adds nothing (and does not move `last_ms` back).
        let elapsed = u64::try_from(now_ms.saturating_sub(self.last_ms)).unwrap_or(0);
        if elapsed > 0 {
            // rate tokens/s = rate milli-tokens/ms.
            let added = elapsed.saturating_mul(u64::from(self.rate));
            self.milli = self.milli.saturating_add(added).min(u64::from(self.burst) * 1000);
            self.last_ms = now_ms;
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Frames a client may send per second, over a window of a couple of
/// seconds ([`FRAME_BURST`]). A chat client sends a few messages and a pong
/// every [`KEEPALIVE_INTERVAL_MS`]; a hundred frames a second for two
/// seconds is a flood (a ping flood runs at tens of thousands).
pub const FRAME_RATE: u32 = 100;
/// See [`FRAME_RATE`].
pub const FRAME_BURST: u32 = 200;
/// The server pings every connection this often.
pub const KEEPALIVE_INTERVAL_MS: u64 = 10_000;
/// A connection that has sent nothing (not even a pong) for this long is dropped.
pub const KEEPALIVE_TIMEOUT_MS: u64 = 30_000;

/// Keepalive timing (the defaults above; tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Keepalive {
    /// Drop after `timeout_ms` of silence, pinging every third of it (so a
    /// live peer has answered twice before it could be taken for dead).
    pub fn for_idle_timeout_ms(timeout_ms: u64) -> Self {
        Self { interval_ms: (timeout_ms / 3).max(1), timeout_ms }
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Self { interval_ms: KEEPALIVE_INTERVAL_MS, timeout_ms: KEEPALIVE_TIMEOUT_MS }
    }
}

/// What to do with a connection after an inbound frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    /// Handle the frame.
    Accept,
    /// Over the frame limit: close the connection (1008, policy violation).
    Abuse,
}

/// What to do on a keepalive tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickAction {
    /// Send a ping.
    Ping,
    /// Nothing heard for [`Keepalive::timeout_ms`]: drop the connection.
    Dead,
}

/// Per-connection transport policy: the inbound frame limit and keepalive.
#[derive(Debug, Clone)]
pub struct ConnectionGuard {
    frames: TokenBucket,
    keepalive: Keepalive,
    last_heard_ms: i64,
}

impl ConnectionGuard {
    pub fn new(keepalive: Keepalive, now_ms: i64) -> Self {
        Self { frames: TokenBucket::new(FRAME_RATE, FRAME_BURST, now_ms), keepalive, last_heard_ms: now_ms }
    }

    /// Any inbound frame, control frames included: it proves the peer alive
    /// and costs one token.
    pub fn on_frame(&mut self, now_ms: i64) -> FrameVerdict {
        self.last_heard_ms = self.last_heard_ms.max(now_ms);
        if self.frames.try_take(now_ms) {
            FrameVerdict::Accept
        } else {
            FrameVerdict::Abuse
        }
    }

    /// The keepalive timer fired at `now_ms`.
    pub fn on_tick(&self, now_ms: i64) -> TickAction {
        let silent = u64::try_from(now_ms.saturating_sub(self.last_heard_ms)).unwrap_or(0);
        if silent >= self.keepalive.timeout_ms {
            TickAction::Dead
        } else {
            TickAction::Ping
        }
    }

    pub fn keepalive(&self) -> Keepalive {
        self.keepalive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_the_burst_then_the_rate() {
        let mut b = TokenBucket::new(3, 5, 0);
        assert_eq!((0..8).filter(|_| b.try_take(0)).count(), 5);
        // 3 per second: one token every 333.3 ms.
        assert!(!b.try_take(333));
        assert!(b.try_take(334));
        assert!(!b.try_take(400));
        assert!(b.try_take(667));
        // Never more than the burst, however long it rested.
        assert_eq!((0..10).filter(|_| b.try_take(100_000)).count(), 5);
    }

    #[test]
    fn a_bucket_survives_clocks_that_jump() {
        let mut b = TokenBucket::new(u32::MAX, u32::MAX, i64::MIN);
        assert!(b.try_take(i64::MAX));
        let mut b = TokenBucket::new(1, 1, 1000);
        assert!(b.try_take(1000));
        assert!(!b.try_take(0), "a clock going back adds nothing");
        assert!(!b.try_take(1999));
        assert!(b.try_take(2000));
        let mut b = TokenBucket::new(1, 0, 0);
        assert!(b.try_take(0), "a zero burst still lets one through");
    }

    #[test]
    fn the_guard_closes_floods_and_drops_the_silent() {
        let keepalive = Keepalive { interval_ms: 100, timeout_ms: 300 };
        let mut g = ConnectionGuard::new(keepalive, 0);
        let accepted = (0..10_000).take_while(|_| g.on_frame(10) == FrameVerdict::Accept).count();
        assert_eq!(accepted, FRAME_BURST as usize);
        assert_eq!(g.on_tick(200), TickAction::Ping);
        assert_eq!(g.on_tick(309), TickAction::Ping);
        assert_eq!(g.on_tick(310), TickAction::Dead);

        let mut g = ConnectionGuard::new(keepalive, 0);
        assert_eq!(g.on_tick(299), TickAction::Ping);
        assert_eq!(g.on_frame(299), FrameVerdict::Accept, "a pong");
        assert_eq!(g.on_tick(500), TickAction::Ping);
        assert_eq!(g.on_tick(599), TickAction::Dead);
        // A steady client well under the limit is never refused.
        let mut g = ConnectionGuard::new(keepalive, 0);
        assert!((0..5_000).all(|i| g.on_frame(i * 20) == FrameVerdict::Accept));
    }
}
