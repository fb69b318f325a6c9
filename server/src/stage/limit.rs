//! Per-connection rate limit on client frames (sans-IO: the time comes in).
//!
//! Every frame counts — SET_STATE, PING, unknown or malformed text, binary,
//! and WebSocket-level Ping/Pong — because each costs the server work and a
//! WebSocket Ping also costs a Pong. A token bucket admits `rate` frames per
//! second with bursts of `burst`; frames over it are dropped. The drops feed
//! a second bucket that refills at `rate` and holds `abuse_allowance`: a
//! client dropping frames faster than it refills (say 10× the rate for a few
//! seconds, or a flood) empties it and is closed.

use std::time::{Duration, Instant};

/// The limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Frames per second admitted on average.
    pub rate: f64,
    /// Frames admitted at once after a quiet spell.
    pub burst: f64,
    /// Dropped frames (net of `rate` per second) tolerated before the
    /// connection is closed.
    pub abuse_allowance: f64,
}

impl Default for RateLimit {
    /// 10 frames/s, bursts of 20: the SDK sends a PING every 20 s, a
    /// SET_STATE per mute toggle and a Pong per server Ping, so a person
    /// clicking as fast as they can stays well inside. Closed after about
    /// 250 dropped frames: ~3 s at 10× the rate, at once for a flood.
    fn default() -> Self {
        Self { rate: 10.0, burst: 20.0, abuse_allowance: 250.0 }
    }
}

/// What to do with one client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Over the limit: drop it; `notify` is true at most once a second
    /// (send one ERROR RATE_LIMITED).
    Drop { notify: bool },
    /// Far over the limit: close the connection.
    Close,
}

/// Between two ERROR RATE_LIMITED frames to one connection.
const NOTIFY_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct FrameLimiter {
    limit: RateLimit,
    tokens: f64,
    allowance: f64,
    last: Instant,
    last_notice: Option<Instant>,
}

impl FrameLimiter {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self { limit, tokens: limit.burst, allowance: limit.abuse_allowance, last: now, last_notice: None }
    }

    /// Count one frame arriving at `now`.
    pub fn on_frame(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        let refill = elapsed * self.limit.rate;
        self.tokens = (self.tokens + refill).min(self.limit.burst);
        self.allowance = (self.allowance + refill).min(self.limit.abuse_allowance);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Accept;
        }
        self.allowance -= 1.0;
        if self.allowance < 0.0 {
            return Verdict::Close;
        }
        let notify = self.last_notice.is_none_or(|t| now.saturating_duration_since(t) >= NOTIFY_EVERY);
        if notify {
            self.last_notice = Some(now);
        }
        Verdict::Drop { notify }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(limiter: &mut FrameLimiter, start: Instant, per_second: u32, seconds: u32) -> (u32, u32, u32, Option<f64>) {
        let (mut accepted, mut dropped, mut notices) = (0, 0, 0);
        for i in 0..per_second * seconds {
            let t = start + Duration::from_secs_f64(f64::from(i) / f64::from(per_second));
            match limiter.on_frame(t) {
                Verdict::Accept => accepted += 1,
                Verdict::Drop { notify } => {
                    dropped += 1;
                    notices += u32::from(notify);
                }
                Verdict::Close => return (accepted, dropped, notices, Some((t - start).as_secs_f64())),
            }
        }
        (accepted, dropped, notices, None)
    }

    #[test]
    fn within_the_rate_everything_is_accepted() {
        let start = Instant::now();
        let mut l = FrameLimiter::new(RateLimit::default(), start);
        assert_eq!(run(&mut l, start, 10, 60), (600, 0, 0, None));
    }

    #[test]
    fn a_burst_is_accepted_then_the_excess_dropped_with_one_notice_per_second() {
        let start = Instant::now();
        let mut l = FrameLimiter::new(RateLimit::default(), start);
        // 20 at once pass; the 21st is dropped and notified, the next not.
        for _ in 0..20 {
            assert_eq!(l.on_frame(start), Verdict::Accept);
        }
        assert_eq!(l.on_frame(start), Verdict::Drop { notify: true });
        assert_eq!(l.on_frame(start), Verdict::Drop { notify: false });
        // Twice the rate for 20 s: half dropped, about one notice a second, never closed.
        let later = start + Duration::from_secs(10);
        let (accepted, dropped, notices, closed) = run(&mut l, later, 20, 20);
        assert_eq!(closed, None);
        assert!((195..=225).contains(&accepted), "{accepted}");
        assert!(dropped >= 175, "{dropped}");
        assert!((17..=21).contains(&notices), "{notices}");
    }

    #[test]
    fn ten_times_the_rate_is_closed_within_a_few_seconds_and_a_flood_at_once() {
        let start = Instant::now();
        let mut l = FrameLimiter::new(RateLimit::default(), start);
        let (_, _, _, closed) = run(&mut l, start, 100, 10);
        let after = closed.unwrap_or(f64::MAX);
        assert!((2.0..=4.5).contains(&after), "closed after {after} s");

        let mut l = FrameLimiter::new(RateLimit::default(), start);
        let (accepted, dropped, _, closed) = run(&mut l, start, 60_000, 1);
        assert!(closed.is_some_and(|t| t < 0.05), "{closed:?}");
        assert!(accepted + dropped < 300);
    }

    #[test]
    fn time_going_backwards_does_not_refill() {
        let start = Instant::now() + Duration::from_secs(5);
        let mut l = FrameLimiter::new(RateLimit { rate: 1.0, burst: 1.0, abuse_allowance: 0.5 }, start);
        assert_eq!(l.on_frame(start), Verdict::Accept);
        assert_eq!(l.on_frame(start - Duration::from_secs(5)), Verdict::Close);
    }
}
