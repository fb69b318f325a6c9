//! Reconnect policy for the event plane. Time and randomness come in as
//! arguments, so the schedule is testable.

/// Exponential backoff with jitter and an attempt limit.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base_ms: u32,
    max_ms: u32,
    max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(500, 8_000, 10)
    }
}

impl Backoff {
    pub fn new(base_ms: u32, max_ms: u32, max_attempts: u32) -> Self {
        Self {
            attempt: 0,
            base_ms,
            max_ms,
            max_attempts,
        }
    }

    /// The delay before the next attempt, or `None` when it is time to give
    /// up. `jitter` in `[0, 1)` spreads clients that lost the server at the
    /// same moment: the delay is in `[d/2, d)`.
    pub fn next_delay_ms(&mut self, jitter: f64) -> Option<u32> {
        if self.attempt >= self.max_attempts {
            return None;
        }
        let exp = self
            .base_ms
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max_ms);
        self.attempt += 1;
        let jitter = jitter.clamp(0.0, 0.999);
        Some((exp as f64 * (0.5 + jitter / 2.0)) as u32)
    }

    /// A connection succeeded: the next failure starts from the base delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Jitter for backoff delays: a small xorshift generator seeded by the
/// caller (the browser passes `Math.random()`), so the core stays free of
/// I/O and tests are deterministic.
#[derive(Debug, Clone)]
pub struct Jitter {
    state: u64,
    fixed: Option<f64>,
}

impl Jitter {
    /// From a seed in `[0, 1)` (e.g. `Math.random()`).
    pub fn new(seed: f64) -> Jitter {
        let bits = (seed.clamp(0.0, 1.0) * (u64::MAX >> 11) as f64) as u64;
        Jitter {
            // Never zero: xorshift would stay at zero.
            state: bits ^ 0x9E37_79B9_7F4A_7C15,
            fixed: None,
        }
    }

    /// Always `value` (tests).
    pub fn fixed(value: f64) -> Jitter {
        Jitter {
            state: 1,
            fixed: Some(value),
        }
    }

    /// The next value in `[0, 1)`.
    pub fn sample(&mut self) -> f64 {
        if let Some(v) = self.fixed {
            return v;
        }
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_gives_up() {
        let mut b = Backoff::new(500, 4000, 5);
        let delays: Vec<_> = std::iter::from_fn(|| b.next_delay_ms(0.0)).collect();
        assert_eq!(delays, vec![250, 500, 1000, 2000, 2000]);
        assert_eq!(b.next_delay_ms(0.0), None);
        b.reset();
        assert_eq!(b.next_delay_ms(0.999), Some(499));
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let mut j = Jitter::new(0.5);
        let v: Vec<f64> = (0..100).map(|_| j.sample()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(v.windows(2).any(|w| w[0] != w[1]));
        assert_eq!(Jitter::fixed(0.25).sample(), 0.25);
        assert!((0.0..1.0).contains(&Jitter::new(0.0).sample()));
    }
}
