//! A stream's connection quality, as IVS reports it in `requestQualityStats()`
//! (`NetworkQuality`: 4 EXCELLENT … 0 DOWN): graded from the packet-loss
//! ratio since the previous look, so a loss burst that is over stops counting.
//! The package's JS reads the browser's stats report into counters and keeps
//! the previous look; this decides.

/// IVS's `NetworkQuality` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkQuality {
    Down = 0,
    Poor = 1,
    Normal = 2,
    Good = 3,
    Excellent = 4,
}

/// Cumulative counters of one stream, as the browser's stats report them:
/// packets that arrived (a receiver's `packetsReceived`, or a sender's
/// `packetsSent` less what the far end reports lost) and packets lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossCounters {
    pub arrived: u64,
    pub lost: u64,
}

/// Grades `arrived` and `lost` packets of one interval: no packet at all is
/// DOWN; otherwise below 1 % loss EXCELLENT, 3 % GOOD, 8 % NORMAL, else POOR
/// (NACK/RTX repairs a few percent without a visible freeze; beyond that
/// video stalls).
pub fn grade(arrived: u64, lost: u64) -> NetworkQuality {
    if arrived == 0 {
        return NetworkQuality::Down;
    }
    // In f64: no overflow for any counters (and no 128-bit division in wasm).
    let ratio = lost as f64 / (arrived as f64 + lost as f64);
    if ratio < 0.01 {
        NetworkQuality::Excellent
    } else if ratio < 0.03 {
        NetworkQuality::Good
    } else if ratio < 0.08 {
        NetworkQuality::Normal
    } else {
        NetworkQuality::Poor
    }
}

/// Grades the interval between two looks at a stream's counters. Counters
/// that went back (a connection re-made) start a new interval from zero;
/// the first look has `prev` all zero and grades everything so far.
pub fn grade_interval(prev: LossCounters, now: LossCounters) -> NetworkQuality {
    if now.arrived < prev.arrived || now.lost < prev.lost {
        return grade(now.arrived, now.lost);
    }
    grade(now.arrived - prev.arrived, now.lost - prev.lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grades_follow_the_loss_ratio() {
        assert_eq!(grade(0, 0), NetworkQuality::Down, "nothing arrives");
        assert_eq!(grade(0, 50), NetworkQuality::Down);
        assert_eq!(grade(1000, 0), NetworkQuality::Excellent);
        assert_eq!(grade(995, 5), NetworkQuality::Excellent);
        assert_eq!(grade(980, 20), NetworkQuality::Good);
        assert_eq!(grade(950, 50), NetworkQuality::Normal);
        assert_eq!(grade(900, 100), NetworkQuality::Poor);
        assert_eq!(grade(u64::MAX, u64::MAX), NetworkQuality::Poor, "no overflow");
    }

    const fn at(arrived: u64, lost: u64) -> LossCounters {
        LossCounters { arrived, lost }
    }

    #[test]
    fn each_interval_is_graded_not_the_whole_history() {
        assert_eq!(grade_interval(at(0, 0), at(900, 100)), NetworkQuality::Poor, "first look: everything so far");
        // The burst is over: 1000 more packets, none lost.
        assert_eq!(grade_interval(at(900, 100), at(1900, 100)), NetworkQuality::Excellent);
        // Nothing new arrived since: the stream is down.
        assert_eq!(grade_interval(at(1900, 100), at(1900, 100)), NetworkQuality::Down);
    }

    #[test]
    fn counters_that_go_back_start_over() {
        // A new peer connection: its counters start at zero again.
        assert_eq!(grade_interval(at(5000, 10), at(300, 0)), NetworkQuality::Excellent);
        assert_eq!(grade_interval(at(300, 0), at(600, 10)), NetworkQuality::Normal);
    }
}
