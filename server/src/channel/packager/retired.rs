//! Complete segments that left the playlist window, still served to players
//! that fetch them late (RFC 8216 §6.2.2; the IVS Player's bandwidth probe
//! re-fetches one just older than the window). Bounded by media time, bytes
//! and count, oldest dropped first.

use std::collections::VecDeque;
use std::time::Duration;

/// The most segments kept, whatever their length (a broadcaster cutting
/// very short ones cannot grow the list).
const MAX_SEGMENTS: usize = 64;

struct Kept {
    msn: u64,
    data: Vec<u8>,
    /// Seconds.
    duration: f64,
}

pub(super) struct Retired {
    kept: VecDeque<Kept>,
    /// Sums over `kept`.
    secs: f64,
    bytes: usize,
    max_secs: f64,
    max_bytes: usize,
}

impl Retired {
    pub(super) fn new(max_time: Duration, max_bytes: usize) -> Self {
        Self { kept: VecDeque::new(), secs: 0.0, bytes: 0, max_secs: max_time.as_secs_f64(), max_bytes }
    }

    /// Keeps segment `msn`, dropping the oldest ones beyond the bounds.
    pub(super) fn push(&mut self, msn: u64, data: Vec<u8>, duration: f64) {
        self.secs += duration;
        self.bytes = self.bytes.saturating_add(data.len());
        self.kept.push_back(Kept { msn, data, duration });
        while self.secs > self.max_secs || self.bytes > self.max_bytes || self.kept.len() > MAX_SEGMENTS {
            let Some(old) = self.kept.pop_front() else { break };
            self.secs -= old.duration;
            self.bytes = self.bytes.saturating_sub(old.data.len());
        }
    }

    pub(super) fn get(&self, msn: u64) -> Option<&[u8]> {
        self.kept.iter().find(|k| k.msn == msn).map(|k| k.data.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_time_bytes_and_count_oldest_dropped_first() {
        let mut r = Retired::new(Duration::from_secs(3), 1000);
        for msn in 0..5 {
            r.push(msn, vec![0; 100], 1.0);
        }
        assert!(r.get(1).is_none() && r.get(2).is_some() && r.get(4).is_some(), "3 s of media");
        let mut r = Retired::new(Duration::from_secs(60), 250);
        for msn in 0..5 {
            r.push(msn, vec![0; 100], 1.0);
        }
        assert!(r.get(2).is_none() && r.get(3).is_some(), "250 bytes");
        let mut r = Retired::new(Duration::from_secs(60), usize::MAX);
        for msn in 0..100 {
            r.push(msn, vec![0; 1], 0.0);
        }
        assert!(r.get(35).is_none() && r.get(36).is_some(), "64 segments");
    }
}
