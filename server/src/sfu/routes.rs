//! Which SFU worker a packet belongs to (sans-IO; the dispatcher in
//! `driver.rs` owns one). Each worker holds the sessions of its stages, and
//! all of them share the one media port, so the dispatcher must send every
//! packet that arrives there to the worker whose session takes it.
//!
//! The route of a remote address is learned, not computed: a packet from an
//! address with no route goes to every worker as a *probe*, and the worker
//! whose session accepts it (its ICE credentials match: at most one can)
//! claims the address. A route whose worker later refuses a packet (the
//! session ended, the port was reused) is dropped, so the next packet probes
//! again. Routes unused for [`IDLE`] are forgotten: a live session hears
//! from its peer every few seconds (ICE consent checks), so only ended ones
//! go quiet, and the table stays as small as the sessions that use it.
//!
//! An ICE-TCP connection is refused when every worker refused its first
//! probe (nothing on this server expects it), as the single-task SFU did.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::Protocol;

/// A route not used for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(60);

/// Where one packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this worker only.
    Worker(usize),
    /// To every worker, each saying whether it took it.
    Probe,
}

/// What a worker's verdict on a packet changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    /// The first worker took traffic from this address (an ICE-TCP
    /// connection is now valid).
    Claimed(usize),
    /// Every worker refused the first probe from this ICE-TCP connection.
    Refused,
}

type Source = (Protocol, SocketAddr);

pub struct Routes {
    workers: usize,
    routes: HashMap<Source, (usize, Instant)>,
    /// ICE-TCP connections not yet claimed, with the refusals of their probes so far.
    pending_tcp: HashMap<SocketAddr, usize>,
}

impl Routes {
    pub fn new(workers: usize) -> Self {
        Self { workers: workers.max(1), routes: HashMap::new(), pending_tcp: HashMap::new() }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Where a packet from `source` goes now.
    pub fn route(&mut self, proto: Protocol, source: SocketAddr, now: Instant) -> Route {
        if self.workers == 1 {
            return Route::Worker(0);
        }
        match self.routes.get_mut(&(proto, source)) {
            Some((worker, used)) => {
                *used = now;
                Route::Worker(*worker)
            }
            None => Route::Probe,
        }
    }

    /// A new ICE-TCP connection from `peer`: it must be claimed.
    pub fn tcp_opened(&mut self, peer: SocketAddr) {
        self.routes.remove(&(Protocol::Tcp, peer));
        self.pending_tcp.insert(peer, 0);
    }

    pub fn tcp_closed(&mut self, peer: SocketAddr) {
        self.routes.remove(&(Protocol::Tcp, peer));
        self.pending_tcp.remove(&peer);
    }

    /// Worker `worker` took (`accepted`) or refused a packet from `source`
    /// that was a probe (`probe`) or routed to it.
    pub fn verdict(&mut self, proto: Protocol, source: SocketAddr, worker: usize, accepted: bool, probe: bool, now: Instant) -> Outcome {
        let key = (proto, source);
        if accepted {
            let first = !self.routes.contains_key(&key);
            self.routes.insert(key, (worker, now));
            let was_pending = proto == Protocol::Tcp && self.pending_tcp.remove(&source).is_some();
            return if first || was_pending { Outcome::Claimed(worker) } else { Outcome::Nothing };
        }
        if !probe {
            // Its session is gone (or moved): find the owner again.
            if self.routes.get(&key).is_some_and(|(w, _)| *w == worker) {
                self.routes.remove(&key);
            }
            return Outcome::Nothing;
        }
        if proto != Protocol::Tcp {
            return Outcome::Nothing;
        }
        let Some(refusals) = self.pending_tcp.get_mut(&source) else {
            return Outcome::Nothing;
        };
        *refusals += 1;
        if *refusals >= self.workers {
            self.pending_tcp.remove(&source);
            return Outcome::Refused;
        }
        Outcome::Nothing
    }

    /// Drop routes unused for [`IDLE`].
    pub fn expire(&mut self, now: Instant) {
        self.routes.retain(|_, (_, used)| now.saturating_duration_since(*used) < IDLE);
    }

    /// Which worker holds the sessions of the stage with this id: a hash,
    /// the same for the life of the process.
    pub fn worker_of(stage: &str, workers: usize) -> usize {
        // FNV-1a: stable, and spreads random ids evenly.
        let hash = stage.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        usize::try_from(hash % workers.max(1) as u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn an_unknown_source_probes_until_a_worker_claims_it() {
        let now = Instant::now();
        let mut r = Routes::new(3);
        assert_eq!(r.route(Protocol::Udp, addr(1), now), Route::Probe);
        assert_eq!(r.verdict(Protocol::Udp, addr(1), 0, false, true, now), Outcome::Nothing);
        assert_eq!(r.verdict(Protocol::Udp, addr(1), 2, true, true, now), Outcome::Claimed(2));
        assert_eq!(r.route(Protocol::Udp, addr(1), now), Route::Worker(2));
        // Same address over TCP is another route.
        assert_eq!(r.route(Protocol::Tcp, addr(1), now), Route::Probe);
        // A second probe answered before the route was learned claims nothing new.
        assert_eq!(r.verdict(Protocol::Udp, addr(1), 2, true, true, now), Outcome::Nothing);
    }

    #[test]
    fn a_refused_routed_packet_drops_the_route_and_probes_again() {
        let now = Instant::now();
        let mut r = Routes::new(2);
        r.verdict(Protocol::Udp, addr(1), 1, true, true, now);
        // A late refusal from another worker's probe does not touch it.
        r.verdict(Protocol::Udp, addr(1), 0, false, false, now);
        assert_eq!(r.route(Protocol::Udp, addr(1), now), Route::Worker(1));
        r.verdict(Protocol::Udp, addr(1), 1, false, false, now);
        assert_eq!(r.route(Protocol::Udp, addr(1), now), Route::Probe);
        assert!(r.is_empty());
    }

    #[test]
    fn a_tcp_connection_every_worker_refuses_is_refused_once() {
        let now = Instant::now();
        let mut r = Routes::new(2);
        r.tcp_opened(addr(5));
        assert_eq!(r.verdict(Protocol::Tcp, addr(5), 0, false, true, now), Outcome::Nothing);
        assert_eq!(r.verdict(Protocol::Tcp, addr(5), 1, false, true, now), Outcome::Refused);
        assert_eq!(r.verdict(Protocol::Tcp, addr(5), 1, false, true, now), Outcome::Nothing);

        // One that a worker takes is claimed, whatever the others say later.
        r.tcp_opened(addr(6));
        assert_eq!(r.verdict(Protocol::Tcp, addr(6), 0, false, true, now), Outcome::Nothing);
        assert_eq!(r.verdict(Protocol::Tcp, addr(6), 1, true, true, now), Outcome::Claimed(1));
        assert_eq!(r.verdict(Protocol::Tcp, addr(6), 0, false, true, now), Outcome::Nothing);
        assert_eq!(r.route(Protocol::Tcp, addr(6), now), Route::Worker(1));
        r.tcp_closed(addr(6));
        assert_eq!(r.route(Protocol::Tcp, addr(6), now), Route::Probe);
    }

    #[test]
    fn routes_unused_for_a_minute_are_forgotten() {
        let start = Instant::now();
        let mut r = Routes::new(2);
        r.verdict(Protocol::Udp, addr(1), 0, true, true, start);
        r.verdict(Protocol::Udp, addr(2), 1, true, true, start);
        let later = start + IDLE - Duration::from_secs(1);
        assert_eq!(r.route(Protocol::Udp, addr(2), later), Route::Worker(1));
        r.expire(start + IDLE);
        assert_eq!(r.len(), 1);
        assert_eq!(r.route(Protocol::Udp, addr(1), start + IDLE), Route::Probe);
        assert_eq!(r.route(Protocol::Udp, addr(2), start + IDLE), Route::Worker(1));
    }

    #[test]
    fn one_worker_needs_no_table_and_stages_spread_over_workers() {
        let now = Instant::now();
        let mut r = Routes::new(1);
        assert_eq!(r.route(Protocol::Udp, addr(1), now), Route::Worker(0));
        assert!(r.is_empty());

        let mut per_worker = [0usize; 4];
        for i in 0..400 {
            let w = Routes::worker_of(&format!("st-{i:012x}"), 4);
            per_worker[w] += 1;
            assert_eq!(w, Routes::worker_of(&format!("st-{i:012x}"), 4), "stable");
        }
        assert!(per_worker.iter().all(|n| (60..=140).contains(n)), "{per_worker:?}");
        assert_eq!(Routes::worker_of("anything", 1), 0);
    }
}
