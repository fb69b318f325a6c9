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

/// How an event-plane connection ended, as the adapter saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketEnd {
    /// The server sent DISCONNECT with a final reason.
    ServerDisconnect,
    /// The user called `leave()`.
    UserLeft,
    /// The socket closed or failed without a DISCONNECT frame.
    Unexpected,
}

/// Whether to reconnect after a socket ended.
pub fn should_reconnect(end: SocketEnd, token_expired: bool) -> bool {
    matches!(end, SocketEnd::Unexpected) && !token_expired
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
    fn only_unexpected_ends_reconnect() {
        assert!(should_reconnect(SocketEnd::Unexpected, false));
        assert!(!should_reconnect(SocketEnd::Unexpected, true));
        assert!(!should_reconnect(SocketEnd::ServerDisconnect, false));
        assert!(!should_reconnect(SocketEnd::UserLeft, false));
    }
}
