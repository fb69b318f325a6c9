//! Bounds on what viewers can make the server hold: HLS requests in flight
//! (blocking reloads, upcoming parts, growing segments) per client address
//! and per channel. A permit is taken per request and given back when the
//! response is done (for a streamed segment, when its body ends or the
//! client goes away).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::broadcast::lock;

/// HLS requests one client address may have in flight at once (a player
/// holds two or three; several viewers may share an address behind NAT).
pub const MAX_HOLDS_PER_IP: usize = 32;
/// HLS requests one channel may have in flight at once on this server.
pub const MAX_HOLDS_PER_CHANNEL: usize = 4096;

#[derive(Default)]
struct Counts {
    by_ip: HashMap<IpAddr, usize>,
    by_channel: HashMap<String, usize>,
}

/// The counts of requests in flight. Cheap to share.
#[derive(Default, Clone)]
pub struct Holds {
    counts: Arc<Mutex<Counts>>,
}

impl Holds {
    /// A permit for one request of `ip` on `channel`, if both are under their limits.
    pub fn try_hold(&self, channel: &str, ip: IpAddr) -> Option<HoldPermit> {
        let mut c = lock(&self.counts);
        let on_ip = c.by_ip.get(&ip).copied().unwrap_or(0);
        let on_channel = c.by_channel.get(channel).copied().unwrap_or(0);
        if on_ip >= MAX_HOLDS_PER_IP || on_channel >= MAX_HOLDS_PER_CHANNEL {
            return None;
        }
        c.by_ip.insert(ip, on_ip + 1);
        c.by_channel.insert(channel.to_owned(), on_channel + 1);
        Some(HoldPermit { holds: self.clone(), channel: channel.to_owned(), ip })
    }

    /// Requests in flight from `ip`.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        lock(&self.counts).by_ip.get(&ip).copied().unwrap_or(0)
    }
}

/// One request in flight; dropping it gives the place back.
pub struct HoldPermit {
    holds: Holds,
    channel: String,
    ip: IpAddr,
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for HoldPermit {
    fn drop(&mut self) {
        let mut c = lock(&self.holds.counts);
        release(&mut c.by_ip, &self.ip);
        release(&mut c.by_channel, &self.channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_it_back() {
        let holds = Holds::default();
        let ip: IpAddr = [192, 0, 2, 1].into();
        let permits: Vec<_> = (0..MAX_HOLDS_PER_IP).map_while(|_| holds.try_hold("ch-1", ip)).collect();
        assert_eq!(permits.len(), MAX_HOLDS_PER_IP);
        assert!(holds.try_hold("ch-2", ip).is_none(), "the limit is per address, across channels");
        assert!(holds.try_hold("ch-1", [192, 0, 2, 2].into()).is_some(), "another address is not affected");
        drop(permits);
        assert_eq!(holds.held_by(ip), 0, "every place given back");
        assert!(holds.try_hold("ch-1", ip).is_some());
    }
}
