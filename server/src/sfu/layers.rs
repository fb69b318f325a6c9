//! Simulcast layers: what the SFU measures of each layer a publisher sends,
//! and the per-subscriber choice of the one layer it forwards.
//!
//! Sans-IO like the core: every decision takes the time as an argument.
//!
//! - [`Layer`] meters one incoming layer (bitrate, frame rate, size from its
//!   keyframes) and bounds the keyframe requests the publisher gets for it
//!   to one per [`LAYER_KEYFRAME_INTERVAL`], whatever the subscribers ask.
//! - [`Selector`] picks a subscriber's layer: the best one whose measured
//!   bitrate fits its bandwidth estimate, capped by its preference; down at
//!   once, up only after the estimate has exceeded the next layer's rate by
//!   [`UP_MARGIN`] for [`UP_HOLD`]. It switches only at a keyframe of the
//!   target layer and rebases RTP time so the subscriber sees one stream.
//!
//! Layer names: publishers send rids `low`, `mid`, `high` (any subset), ranked
//! in that order; with any other name, layers rank by measured bitrate.

use std::time::{Duration, Instant};

use str0m::media::Rid;

use crate::channel::h264;

/// The rid names the SDK publishes, lowest quality first.
pub const KNOWN_RIDS: [&str; 3] = ["low", "mid", "high"];
/// At most one keyframe request per publisher layer in this interval, from
/// all subscribers together (keyframes are big; a flood degrades everyone).
pub const LAYER_KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);
/// Bitrate and frame rate are measured over windows this long...
const METER_WINDOW: Duration = Duration::from_secs(1);
/// ...and the bitrate is the mean of the last this many windows: a
/// keyframe or a burst of noise doubles one window's rate, and a subscriber
/// whose (itself smoothed) estimate had room for the layer fell off it on
/// one such spike.
const RATE_WINDOWS: usize = 3;
/// Go up one layer only when the estimate exceeds its rate by this factor...
pub const UP_MARGIN: f64 = 1.2;
/// ...for this long.
pub const UP_HOLD: Duration = Duration::from_secs(3);
/// A subscriber's keyframe requests reach the publisher at most this often.
const SUBSCRIBER_PLI_INTERVAL: Duration = Duration::from_secs(1);
/// This many keyframe requests from one subscriber within [`PLI_STORM_WINDOW`]
/// mean it cannot keep up: it is switched one layer down...
const PLI_STORM_COUNT: u32 = 3;
const PLI_STORM_WINDOW: Duration = Duration::from_secs(3);
/// ...and not raised again for this long.
const PLI_STORM_HOLD: Duration = Duration::from_secs(10);
/// A subscriber's receiver reports (RTCP, about every second) say its link
/// cannot carry its layer when they lose at least this fraction of the
/// packets...
pub const LOSS_DOWN: f32 = 0.2;
/// ...or when the round trip has grown this much above the least seen (a
/// queue building up in front of it; NACKs can keep the loss low for a
/// while). Either switches it down one layer at once, without waiting for
/// the bandwidth estimate (str0m averages it over three seconds) to fall.
pub const QUEUE_DOWN: Duration = Duration::from_millis(250);
/// A subscriber below its best layer is probed (padding toward the next
/// layer up, see [`Selector::may_probe`]) for at most this long at a time;
/// an episode that did not earn the next layer ends in a pause...
pub const PROBE_WINDOW: Duration = Duration::from_secs(15);
/// ...of this long at first, doubling after each failed episode or each
/// fall back within [`STABLE`] of climbing, up to [`PROBE_PAUSE_MAX`]. A
/// link that cannot take the next layer is then not kept full of padding
/// that delays the layer it does get.
pub const PROBE_PAUSE_MIN: Duration = Duration::from_secs(5);
pub const PROBE_PAUSE_MAX: Duration = Duration::from_secs(60);
/// A layer held this long after climbing to it resets the pause.
const STABLE: Duration = Duration::from_secs(30);

/// A layer of a track: its rid, or `None` for a track without simulcast.
pub type LayerKey = Option<Rid>;

/// The rank of a known rid name (`low` 0, `mid` 1, `high` 2).
pub fn known_rank(rid: &str) -> Option<usize> {
    KNOWN_RIDS.iter().position(|k| *k == rid)
}

/// One incoming layer of a publisher's video track, as measured.
#[derive(Debug, Clone)]
pub struct Layer {
    pub rid: LayerKey,
    /// From the last keyframe (0 until one was seen).
    pub width: u32,
    pub height: u32,
    /// The mean over the last [`RATE_WINDOWS`] full windows with media;
    /// kept while the layer is idle.
    pub bitrate_bps: u64,
    /// The last windows' rates, newest last.
    rates: std::collections::VecDeque<u64>,
    pub fps: f64,
    window_start: Option<Instant>,
    window_bytes: u64,
    window_frames: u32,
    last_request: Option<Instant>,
    /// A keyframe was asked for and not yet sent on to the publisher.
    pending: bool,
}

impl Layer {
    pub fn new(rid: LayerKey) -> Self {
        Self {
            rid,
            width: 0,
            height: 0,
            bitrate_bps: 0,
            rates: std::collections::VecDeque::with_capacity(RATE_WINDOWS),
            fps: 0.0,
            window_start: None,
            window_bytes: 0,
            window_frames: 0,
            last_request: None,
            pending: false,
        }
    }

    /// The rid as text (`None` without simulcast).
    pub fn name(&self) -> Option<&str> {
        self.rid.as_deref()
    }

    /// Account one frame; `size` comes from a keyframe's header, when known.
    /// Returns true when a window closed (rates, and so the order, changed).
    pub fn on_frame(&mut self, now: Instant, bytes: usize, keyframe: bool, size: Option<(u32, u32)>) -> bool {
        if keyframe {
            // Whatever was asked for is answered.
            self.pending = false;
        }
        if let Some((w, h)) = size {
            self.width = w;
            self.height = h;
        }
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes += bytes as u64;
        self.window_frames += 1;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < METER_WINDOW {
            return false;
        }
        let secs = elapsed.as_secs_f64();
        if self.rates.len() == RATE_WINDOWS {
            self.rates.pop_front();
        }
        self.rates.push_back((self.window_bytes as f64 * 8.0 / secs) as u64);
        self.bitrate_bps = self.rates.iter().sum::<u64>() / self.rates.len() as u64;
        self.fps = f64::from(self.window_frames) / secs;
        self.window_start = Some(now);
        self.window_bytes = 0;
        self.window_frames = 0;
        true
    }

    /// Ask for a keyframe on this layer: true when the request may go to the
    /// publisher now; otherwise it is sent by a later [`Layer::poll_keyframe`].
    pub fn want_keyframe(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.poll_keyframe(now)
    }

    /// Whether a deferred keyframe request is due now (it then counts as sent).
    pub fn poll_keyframe(&mut self, now: Instant) -> bool {
        if !self.pending || self.last_request.is_some_and(|t| now.saturating_duration_since(t) < LAYER_KEYFRAME_INTERVAL) {
            return false;
        }
        self.pending = false;
        self.last_request = Some(now);
        true
    }
}

/// Put `layers` lowest quality first: by rid name when every rid is one of
/// [`KNOWN_RIDS`], else by measured bitrate.
pub fn sort_layers(layers: &mut [Layer]) {
    let all_known = layers.iter().all(|l| l.name().and_then(known_rank).is_some());
    if all_known {
        layers.sort_by_key(|l| l.name().and_then(known_rank));
    } else {
        layers.sort_by(|a, b| a.bitrate_bps.cmp(&b.bitrate_bps).then_with(|| a.name().cmp(&b.name())));
    }
}

/// The width and height a keyframe announces: the VP8 frame header, or an
/// H.264 SPS in the (Annex B) access unit.
pub fn keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    // VP8: 3-byte frame tag (bit 0 clear on keyframes), start code, sizes.
    if data.len() >= 10 && data[0] & 1 == 0 && data[3..6] == [0x9d, 0x01, 0x2a] {
        let w = u32::from(u16::from_le_bytes([data[6], data[7]]) & 0x3fff);
        let h = u32::from(u16::from_le_bytes([data[8], data[9]]) & 0x3fff);
        return (w > 0 && h > 0).then_some((w, h));
    }
    h264::split_annex_b(data)
        .into_iter()
        .find(|nal| h264::nal_type(nal) == 7)
        .and_then(|sps| h264::parse_sps(sps).ok())
        .map(|info| (info.width, info.height))
}

/// One layer as `GET …/sessions/{id}/layer` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    /// `null` for a publisher without simulcast.
    pub rid: Option<String>,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u64,
    pub frames_per_second: f64,
}

impl From<&Layer> for LayerInfo {
    fn from(l: &Layer) -> Self {
        Self {
            rid: l.name().map(str::to_owned),
            width: l.width,
            height: l.height,
            bitrate_bps: l.bitrate_bps,
            frames_per_second: (l.fps * 10.0).round() / 10.0,
        }
    }
}

/// The body of `POST …/sessions/{id}/layer`: `rid` caps the layer (`null`:
/// server-adaptive; absent: unchanged), `paused` stops (or resumes) video.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRequest {
    #[serde(default, deserialize_with = "present")]
    pub rid: Option<Option<String>>,
    #[serde(default)]
    pub paused: Option<bool>,
}

/// A field that is present, `null` or not: `Some(None)` for `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    <Option<String> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A subscription's layers and choice (`GET …/sessions/{id}/layer`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    /// The publisher's layers as measured, lowest quality first.
    pub layers: Vec<LayerInfo>,
    /// The rid forwarded now (`null`: none yet, paused, or no simulcast).
    pub selected: Option<String>,
    /// A lower layer than the cap is forwarded because of bandwidth.
    pub adapting: bool,
    /// The cap set with `POST` (`null`: server-adaptive).
    pub preferred: Option<String>,
    pub paused: bool,
}

/// Where a subscriber starts before its bandwidth is known (IVS
/// `initialLayerPreference`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Start {
    /// The lowest layer; the estimate raises it (the default).
    #[default]
    Lowest,
    Highest,
}

/// What one subscriber's video should get next from [`Selector::on_pli`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PliAnswer {
    /// Nothing reaches the publisher (throttled, or nothing forwarded).
    Drop,
    /// Ask the publisher for a keyframe on this layer (still bounded per layer).
    Keyframe(LayerKey),
    /// The subscriber cannot keep up: it was switched down; the switch asks
    /// for the keyframe it needs.
    SwitchedDown,
}

/// One subscriber's choice of layer, and the RTP time rebase across switches.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// The highest layer wanted (`None`: the top, server-adaptive).
    pub cap: Option<Rid>,
    /// No video at all (a hidden tile).
    pub paused: bool,
    pub start: Start,
    /// The last bandwidth estimate, bit/s (`None` before the first).
    pub estimate: Option<u64>,
    /// The layer forwarded now (`None`: nothing yet, until a keyframe).
    current: Option<LayerKey>,
    /// The layer wanted; a switch happens at its next keyframe.
    target: Option<LayerKey>,
    adapting: bool,
    up_since: Option<Instant>,
    /// No climbing and no probing before this (a pause, or a PLI storm).
    no_up_until: Option<Instant>,
    /// Since when the current probing episode runs.
    probing_since: Option<Instant>,
    /// The next pause (zero: [`PROBE_PAUSE_MIN`]).
    pause: Duration,
    /// When it last climbed a layer.
    up_at: Option<Instant>,
    /// The least round trip its receiver reports showed.
    min_rtt: Option<Duration>,
    last_pli: Option<Instant>,
    storm: (Option<Instant>, u32),
    /// Added to the source RTP time (in the track's clock) of what is forwarded.
    offset: i64,
    /// The last forwarded (output time, network time).
    last_out: Option<(u64, Instant)>,
    /// The output time between the last two forwarded frames.
    last_step: u64,
}

impl Selector {
    pub fn new(start: Start) -> Self {
        Self { start, ..Self::default() }
    }

    pub fn current(&self) -> Option<LayerKey> {
        self.current
    }

    pub fn target(&self) -> Option<LayerKey> {
        self.target
    }

    /// The index in `layers` of the best layer this subscriber may get (its
    /// cap): what it climbs back to when its estimate allows.
    pub fn best_allowed(&self, layers: &[Layer]) -> usize {
        self.top(layers)
    }

    /// Forwarding a lower layer than the cap allows because of bandwidth.
    pub fn adapting(&self) -> bool {
        self.adapting
    }

    /// Whether padding toward the next layer up may raise this subscriber's
    /// bandwidth estimate now: below its best layer, in a probing episode,
    /// not in a pause.
    pub fn may_probe(&self, now: Instant) -> bool {
        !self.paused && self.probing_since.is_some() && self.no_up_until.is_none_or(|t| now >= t)
    }

    /// Stop probing for the next pause, longer each time it follows a
    /// failure (a fall back soon after climbing, or an episode that earned
    /// nothing); a layer held for [`STABLE`] starts again from the shortest.
    fn pause_probing(&mut self, now: Instant, failed: bool) {
        let fresh = !failed && self.up_at.is_none_or(|t| now.saturating_duration_since(t) >= STABLE);
        self.pause = if fresh || self.pause.is_zero() { PROBE_PAUSE_MIN } else { (self.pause * 2).min(PROBE_PAUSE_MAX) };
        let until = now + self.pause;
        self.no_up_until = Some(self.no_up_until.map_or(until, |t| t.max(until)));
        self.probing_since = None;
        self.up_since = None;
    }

    /// Waiting for a keyframe of the target layer.
    pub fn switching(&self) -> Option<LayerKey> {
        self.target.filter(|t| !self.paused && self.current != Some(*t))
    }

    /// The highest index of `layers` (lowest first) the cap allows.
    fn top(&self, layers: &[Layer]) -> usize {
        let last = layers.len().saturating_sub(1);
        let Some(cap) = self.cap else { return last };
        if let Some(i) = layers.iter().position(|l| l.rid == Some(cap)) {
            return i;
        }
        // A known name the publisher does not send: the best layer below it.
        let Some(cap_rank) = known_rank(&cap) else { return last };
        layers.iter().rposition(|l| l.name().and_then(known_rank).is_some_and(|r| r <= cap_rank)).unwrap_or(0)
    }

    /// Re-decide the target layer. Returns true when it changed.
    pub fn decide(&mut self, layers: &[Layer], now: Instant) -> bool {
        let before = self.target;
        if self.paused || layers.is_empty() {
            self.target = None;
            self.adapting = false;
            self.up_since = None;
            self.probing_since = None;
            return before != self.target;
        }
        let top = self.top(layers);
        let initial = match self.start {
            Start::Lowest => 0,
            Start::Highest => top,
        };
        let at = self.target.and_then(|t| layers.iter().position(|l| l.rid == t)).unwrap_or(initial);
        let rate = |i: usize| layers[i].bitrate_bps;
        // Without an estimate (no TWCC), nothing limits the subscriber.
        let estimate = self.estimate.unwrap_or(u64::MAX);
        let next = match at {
            i if i > top => {
                self.up_since = None;
                top
            }
            i if i > 0 && rate(i) > estimate => {
                // Down at once, to the best layer that fits; a fall soon
                // after a climb pauses probing for longer.
                let recent = self.up_at.is_some_and(|t| now.saturating_duration_since(t) < STABLE);
                self.pause_probing(now, recent);
                (0..i).rev().find(|&j| rate(j) <= estimate).unwrap_or(0)
            }
            // A layer not measured yet (just appeared) is not known to fit.
            i if i < top
                    && rate(i + 1) > 0
                    && estimate as f64 > rate(i + 1) as f64 * UP_MARGIN
                    && self.no_up_until.is_none_or(|t| now >= t) =>
            {
                let since = *self.up_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= UP_HOLD {
                    self.up_since = None;
                    self.up_at = Some(now);
                    // The next layer up is a new episode.
                    self.probing_since = None;
                    i + 1
                } else {
                    i
                }
            }
            i => {
                self.up_since = None;
                i
            }
        };
        self.adapting = next < top;
        if !self.adapting {
            self.probing_since = None;
        } else if self.no_up_until.is_none_or(|t| now >= t) {
            let since = *self.probing_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= PROBE_WINDOW {
                // This episode did not earn the next layer.
                self.pause_probing(now, true);
            }
        }
        self.target = Some(layers[next].rid);
        before != self.target
    }

    /// Whether a frame of layer `key` is forwarded, and at which RTP time
    /// (`time` in the track's clock of `hz` ticks per second).
    pub fn admit(&mut self, key: LayerKey, keyframe: bool, time: u64, hz: u64, network: Instant) -> Option<u64> {
        if self.paused {
            // Resuming needs a keyframe.
            self.current = None;
            return None;
        }
        let mut switched = false;
        // Without simulcast there is nothing to switch between: forward at
        // once, as before layers existed (the decoder asks for a keyframe).
        if (keyframe || key.is_none()) && self.target == Some(key) && self.current != Some(key) {
            switched = self.current.is_some() || self.last_out.is_some();
            self.current = Some(key);
        }
        if self.current != Some(key) {
            return None;
        }
        if switched {
            if let Some((last, at)) = self.last_out {
                let elapsed = network.saturating_duration_since(at).as_micros() as u64;
                // Layers of one capture share its instant: a switch-in frame
                // may arrive with the old layer's last one; it still comes a
                // frame later in the stream.
                let ticks = (elapsed.saturating_mul(hz) / 1_000_000).max(self.last_step).max(1);
                let want = i128::from(last) + i128::from(ticks);
                self.offset = i64::try_from(want - i128::from(time)).unwrap_or(0);
            }
        }
        let out = (i128::from(time) + i128::from(self.offset)).clamp(0, i128::from(u64::MAX)) as u64;
        if let Some((last, _)) = self.last_out {
            if !switched && out > last {
                self.last_step = out - last;
            }
        }
        self.last_out = Some((out, network));
        Some(out)
    }

    /// New receiver reports from the subscriber: `loss` (0–1) of what it
    /// was sent lately, and the round trip `rtt`. Heavy loss or a queue
    /// ([`LOSS_DOWN`], [`QUEUE_DOWN`]) on the layer it gets switches it one
    /// layer down and pauses climbing and probing (longer after a recent
    /// climb). Returns true when it switched.
    pub fn on_report(&mut self, loss: f32, rtt: Option<Duration>, layers: &[Layer], now: Instant) -> bool {
        let queued = rtt.is_some_and(|rtt| {
            let least = *self.min_rtt.get_or_insert(rtt);
            self.min_rtt = Some(least.min(rtt));
            rtt.saturating_sub(least) >= QUEUE_DOWN
        });
        if !(queued || loss >= LOSS_DOWN) || self.paused {
            return false;
        }
        let Some(current) = self.current else {
            return false;
        };
        let Some(at) = layers.iter().position(|l| l.rid == current) else {
            return false;
        };
        let target = self.target.and_then(|t| layers.iter().position(|l| l.rid == t)).unwrap_or(at);
        // The lowest already, or on its way lower.
        if at == 0 || target < at {
            return false;
        }
        self.target = Some(layers[at - 1].rid);
        self.adapting = true;
        let recent = self.up_at.is_some_and(|t| now.saturating_duration_since(t) < STABLE);
        self.pause_probing(now, recent);
        true
    }

    /// The subscriber asked for a keyframe (PLI/FIR).
    pub fn on_pli(&mut self, layers: &[Layer], now: Instant) -> PliAnswer {
        let Some(current) = self.current else {
            // Nothing forwarded yet: ask again for the first layer's keyframe
            // (at most once a second from this subscriber). The request made
            // when the subscriber connected fails while the publisher has not
            // sent its first packet (right after a server restart), and
            // without a retry the subscriber waited for the encoder's next
            // own keyframe (~10 s).
            let Some(target) = self.target else {
                return PliAnswer::Drop;
            };
            if self.last_pli.is_some_and(|t| now.saturating_duration_since(t) < SUBSCRIBER_PLI_INTERVAL) {
                return PliAnswer::Drop;
            }
            self.last_pli = Some(now);
            return PliAnswer::Keyframe(target);
        };
        let (since, count) = &mut self.storm;
        if since.is_none_or(|t| now.saturating_duration_since(t) > PLI_STORM_WINDOW) {
            *since = Some(now);
            *count = 0;
        }
        *count += 1;
        let at = layers.iter().position(|l| l.rid == current).unwrap_or(0);
        if *count >= PLI_STORM_COUNT && at > 0 {
            self.storm = (None, 0);
            self.target = Some(layers[at - 1].rid);
            self.adapting = true;
            self.up_since = None;
            self.probing_since = None;
            self.no_up_until = Some(now + PLI_STORM_HOLD);
            return PliAnswer::SwitchedDown;
        }
        if self.last_pli.is_some_and(|t| now.saturating_duration_since(t) < SUBSCRIBER_PLI_INTERVAL) {
            return PliAnswer::Drop;
        }
        self.last_pli = Some(now);
        PliAnswer::Keyframe(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(rates: &[(&str, u64)]) -> Vec<Layer> {
        rates
            .iter()
            .map(|(rid, bps)| {
                let mut l = Layer::new(Some(Rid::from(*rid)));
                l.bitrate_bps = *bps;
                l
            })
            .collect()
    }

    fn ls() -> Vec<Layer> {
        layers(&[("low", 200_000), ("mid", 700_000), ("high", 2_500_000)])
    }

    /// A selector getting the top layer of `l` since `t0`, with plenty of bandwidth.
    fn on_high(l: &[Layer], t0: Instant) -> Selector {
        let mut s = Selector::new(Start::Highest);
        s.estimate = Some(10_000_000);
        s.decide(l, t0);
        s.admit(l.last().map(|l| l.rid).unwrap_or_default(), true, 0, 90_000, t0);
        s
    }

    fn rid(s: &str) -> Option<LayerKey> {
        Some(Some(Rid::from(s)))
    }

    #[test]
    fn known_names_rank_low_mid_high_and_others_by_bitrate() {
        let mut l = layers(&[("high", 1), ("low", 3), ("mid", 2)]);
        sort_layers(&mut l);
        assert_eq!(l.iter().map(|l| l.name().unwrap_or("")).collect::<Vec<_>>(), ["low", "mid", "high"]);
        let mut l = layers(&[("f", 2_000_000), ("q", 100_000), ("h", 500_000)]);
        sort_layers(&mut l);
        assert_eq!(l.iter().map(|l| l.name().unwrap_or("")).collect::<Vec<_>>(), ["q", "h", "f"]);
    }

    #[test]
    fn starts_low_and_goes_up_only_after_the_hold_then_down_at_once() {
        let t0 = Instant::now();
        let l = ls();
        let mut s = Selector::new(Start::Lowest);
        s.estimate = Some(5_000_000);
        assert!(s.decide(&l, t0));
        assert_eq!(s.target(), rid("low"));
        assert!(s.adapting());
        // Plenty of bandwidth, but not for long enough yet.
        s.decide(&l, t0 + Duration::from_secs(2));
        assert_eq!(s.target(), rid("low"));
        s.decide(&l, t0 + UP_HOLD);
        assert_eq!(s.target(), rid("mid"));
        // One step at a time, each after its own hold.
        s.decide(&l, t0 + UP_HOLD + Duration::from_secs(1));
        assert_eq!(s.target(), rid("mid"));
        s.decide(&l, t0 + UP_HOLD * 2 + Duration::from_secs(1));
        assert_eq!(s.target(), rid("high"));
        assert!(!s.adapting());
        // The estimate drops: straight to the best layer that fits.
        s.estimate = Some(300_000);
        s.decide(&l, t0 + Duration::from_secs(8));
        assert_eq!(s.target(), rid("low"));
        // Fits the next layer, but not with the margin: stays.
        s.estimate = Some(800_000);
        for i in 9..20 {
            s.decide(&l, t0 + Duration::from_secs(i));
        }
        assert_eq!(s.target(), rid("low"));
    }

    #[test]
    fn probing_comes_in_episodes_with_longer_pauses_after_each_failure() {
        let t0 = Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let l = ls();
        let mut s = Selector::new(Start::Lowest);
        // Enough for the lowest layer only, never for the next with margin.
        s.estimate = Some(400_000);
        let probing = |s: &mut Selector, secs: f64| {
            s.decide(&l, at(secs));
            s.may_probe(at(secs))
        };
        let (w, p) = (PROBE_WINDOW.as_secs_f64(), PROBE_PAUSE_MIN.as_secs_f64());
        assert!(probing(&mut s, 0.0), "below its best, it probes at once");
        assert!(probing(&mut s, w - 0.1));
        // The episode earned nothing: a pause of the shortest length...
        assert!(!probing(&mut s, w));
        assert!(!probing(&mut s, w + p - 0.1));
        assert!(probing(&mut s, w + p));
        // ...then twice as long after the next failed one.
        assert!(probing(&mut s, 2.0 * w + p - 0.1));
        assert!(!probing(&mut s, 2.0 * w + p));
        assert!(!probing(&mut s, 2.0 * w + 3.0 * p - 0.1));
        assert!(probing(&mut s, 2.0 * w + 3.0 * p));
        assert_eq!(s.target(), rid("low"));
        // A hidden tile is never probed.
        s.paused = true;
        assert!(!probing(&mut s, 2.0 * w + 3.0 * p + 1.0));
    }

    #[test]
    fn a_fall_soon_after_a_climb_pauses_probing_and_a_held_layer_resets_the_pause() {
        let t0 = Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let l = ls();
        let mut s = Selector::new(Start::Lowest);
        s.estimate = Some(1_000_000);
        s.decide(&l, at(0.0));
        s.decide(&l, at(3.0));
        assert_eq!(s.target(), rid("mid"), "climbed after the hold");
        s.decide(&l, at(3.5));
        assert!(s.may_probe(at(3.5)), "toward high now");
        // The link shrinks right after the climb: down, and no probing for the pause.
        s.estimate = Some(300_000);
        s.decide(&l, at(4.0));
        assert_eq!(s.target(), rid("low"));
        for secs in [4.5, 8.9] {
            s.decide(&l, at(secs));
            assert!(!s.may_probe(at(secs)), "paused at {secs} s");
        }
        // Back up, and straight down again: the pause doubles.
        s.estimate = Some(1_000_000);
        for secs in [9.0, 10.0, 12.0] {
            s.decide(&l, at(secs));
        }
        assert_eq!(s.target(), rid("mid"));
        s.estimate = Some(300_000);
        s.decide(&l, at(13.0));
        s.decide(&l, at(22.9));
        assert!(!s.may_probe(at(22.9)), "a 10 s pause");
        s.decide(&l, at(23.0));
        assert!(s.may_probe(at(23.0)));
        // Mid held for longer than STABLE: the next fall pauses the shortest time again.
        s.estimate = Some(1_000_000);
        for secs in [24.0, 27.0] {
            s.decide(&l, at(secs));
        }
        assert_eq!(s.target(), rid("mid"));
        // (just below high with margin: stays on mid, probing in episodes)
        s.estimate = Some(2_900_000);
        for secs in (28..=60).map(f64::from) {
            s.decide(&l, at(secs));
        }
        assert_eq!(s.target(), rid("mid"));
        s.estimate = Some(300_000);
        s.decide(&l, at(61.0));
        assert_eq!(s.target(), rid("low"));
        s.decide(&l, at(66.0));
        assert!(s.may_probe(at(66.0)), "the shortest pause again");
    }

    #[test]
    fn heavy_loss_switches_down_one_layer_at_once_and_holds_it() {
        let t0 = Instant::now();
        let l = ls();
        let mut s = on_high(&l, t0);
        // Light loss (what NACKs repair) changes nothing.
        assert!(!s.on_report(0.05, None, &l, t0));
        assert_eq!(s.target(), rid("high"));
        // Heavy loss: one layer down now, while the estimate still says plenty.
        assert!(s.on_report(0.5, None, &l, t0 + Duration::from_millis(100)));
        assert_eq!(s.target(), rid("mid"));
        assert!(s.adapting());
        // Reports still lossy before the switch happened: not lower again.
        assert!(!s.on_report(0.5, None, &l, t0 + Duration::from_millis(200)));
        assert_eq!(s.target(), rid("mid"));
        // And it does not climb back during the pause, estimate or not.
        for ms in [1_000, 3_000, 4_000] {
            s.decide(&l, t0 + Duration::from_millis(ms));
        }
        assert_eq!(s.target(), rid("mid"));
        s.decide(&l, t0 + PROBE_PAUSE_MIN + Duration::from_millis(200));
        assert_eq!(s.target(), rid("mid"));
        s.decide(&l, t0 + PROBE_PAUSE_MIN + UP_HOLD + Duration::from_millis(200));
        assert_eq!(s.target(), rid("high"), "after the pause and the hold it climbs again");
    }

    #[test]
    fn a_round_trip_grown_by_a_queue_switches_down_at_once() {
        let t0 = Instant::now();
        let l = ls();
        let mut s = on_high(&l, t0);
        let ms = Duration::from_millis;
        // Jitter around the least round trip seen changes nothing.
        for (i, rtt) in [40, 20, 90, 200].into_iter().enumerate() {
            assert!(!s.on_report(0.0, Some(ms(rtt)), &l, t0 + ms(1000 * i as u64)), "{rtt} ms");
        }
        assert_eq!(s.target(), rid("high"));
        // 20 ms + a 250 ms queue: down one layer, with no loss reported yet.
        assert!(s.on_report(0.0, Some(ms(270)), &l, t0 + ms(5000)));
        assert_eq!(s.target(), rid("mid"));
    }

    #[test]
    fn a_layer_not_measured_yet_is_not_climbed_to() {
        let t0 = Instant::now();
        let mut l = layers(&[("low", 150_000), ("high", 0)]);
        let mut s = Selector::new(Start::Lowest);
        s.estimate = Some(150_000);
        for secs in 0..6 {
            s.decide(&l, t0 + Duration::from_secs(secs));
        }
        assert_eq!(s.target(), rid("low"), "a 0 bit/s layer does not fit a 150 kbit/s link");
        l[1].bitrate_bps = 100_000;
        for secs in 6..10 {
            s.decide(&l, t0 + Duration::from_secs(secs));
        }
        assert_eq!(s.target(), rid("high"), "measured, and it fits");
    }

    #[test]
    fn a_flapping_estimate_does_not_raise_the_layer() {
        let t0 = Instant::now();
        let l = ls();
        let mut s = Selector::new(Start::Lowest);
        for i in 0..40u64 {
            s.estimate = Some(if i % 4 == 3 { 500_000 } else { 1_000_000 });
            s.decide(&l, t0 + Duration::from_millis(500 * i));
        }
        assert_eq!(s.target(), rid("low"));
    }

    #[test]
    fn the_cap_limits_and_highest_start_begins_at_the_cap() {
        let t0 = Instant::now();
        let l = ls();
        let mut s = Selector::new(Start::Highest);
        s.decide(&l, t0);
        assert_eq!(s.target(), rid("high"));
        s.cap = Some(Rid::from("mid"));
        s.decide(&l, t0);
        assert_eq!(s.target(), rid("mid"));
        assert!(!s.adapting());
        // A cap the publisher does not send: the best layer below it.
        let two = layers(&[("low", 200_000), ("high", 2_500_000)]);
        let mut s = Selector::new(Start::Highest);
        s.cap = Some(Rid::from("mid"));
        s.decide(&two, t0);
        assert_eq!(s.target(), rid("low"));
        s.paused = true;
        s.decide(&two, t0);
        assert_eq!(s.target(), None);
    }

    #[test]
    fn switches_at_the_target_keyframe_with_continuous_time() {
        let t0 = Instant::now();
        let l = ls();
        let mut s = Selector::new(Start::Lowest);
        s.decide(&l, t0);
        let low = Some(Rid::from("low"));
        let high = Some(Rid::from("high"));
        // Nothing until the first keyframe of the target.
        assert_eq!(s.admit(low, false, 1000, 90_000, t0), None);
        assert_eq!(s.admit(low, true, 4000, 90_000, t0), Some(4000));
        assert_eq!(s.admit(high, true, 777_000, 90_000, t0), None);
        // The target moves up (as `decide` does after the hold).
        s.target = Some(high);
        assert_eq!(s.switching(), Some(high));
        // The old layer keeps flowing until the new one has a keyframe.
        let t1 = t0 + Duration::from_millis(33);
        assert_eq!(s.admit(low, false, 4000 + 2970, 90_000, t1), Some(6970));
        assert_eq!(s.admit(high, false, 900_000, 90_000, t1), None);
        // The keyframe of high arrives with low's frame of the same capture
        // (already forwarded): it still lands one frame interval later.
        let t2 = t1 + Duration::from_millis(33);
        assert_eq!(s.admit(low, false, 4000 + 2970 * 2, 90_000, t2), Some(6970 + 2970));
        s.target = Some(high);
        assert_eq!(s.admit(high, true, 902_970, 90_000, t2), Some(6970 + 2970 * 2));
        assert_eq!(s.admit(low, false, 4000 + 2970 * 3, 90_000, t2), None);
        assert_eq!(s.admit(high, false, 905_940, 90_000, t2 + Duration::from_millis(33)), Some(6970 + 2970 * 3));
        assert_eq!(s.switching(), None);
    }

    #[test]
    fn without_simulcast_frames_flow_without_waiting_for_a_keyframe() {
        let t0 = Instant::now();
        let l = vec![Layer::new(None)];
        let mut s = Selector::new(Start::Lowest);
        s.decide(&l, t0);
        assert_eq!(s.admit(None, false, 3000, 90_000, t0), Some(3000));
        assert_eq!(s.on_pli(&l, t0), PliAnswer::Keyframe(None));
    }

    #[test]
    fn a_pli_storm_switches_down_instead_of_flooding() {
        let t0 = Instant::now();
        let l = ls();
        let mut s = Selector::new(Start::Highest);
        s.decide(&l, t0);
        let high = Some(Rid::from("high"));
        s.admit(high, true, 0, 90_000, t0);
        assert_eq!(s.on_pli(&l, t0), PliAnswer::Keyframe(high));
        assert_eq!(s.on_pli(&l, t0 + Duration::from_millis(100)), PliAnswer::Drop);
        assert_eq!(s.on_pli(&l, t0 + Duration::from_millis(200)), PliAnswer::SwitchedDown);
        assert_eq!(s.target(), rid("mid"));
        // And it stays down for a while despite a good estimate.
        s.estimate = Some(10_000_000);
        for i in 0..8 {
            s.decide(&l, t0 + Duration::from_secs(i));
        }
        assert_eq!(s.target(), rid("mid"));
    }

    #[test]
    fn a_layer_bounds_keyframe_requests_and_measures() {
        let t0 = Instant::now();
        let mut l = Layer::new(None);
        assert!(l.want_keyframe(t0));
        for ms in (10..1000).step_by(10) {
            assert!(!l.want_keyframe(t0 + Duration::from_millis(ms)));
        }
        assert!(l.poll_keyframe(t0 + Duration::from_secs(1)));
        assert!(!l.poll_keyframe(t0 + Duration::from_secs(3)));
        for i in 0..=30u64 {
            l.on_frame(t0 + Duration::from_millis(i * 1000 / 30), 1000, i == 0, (i == 0).then_some((640, 360)));
        }
        assert_eq!((l.width, l.height), (640, 360));
        assert!((230_000..=260_000).contains(&l.bitrate_bps), "{}", l.bitrate_bps);
        assert!((29.0..=32.0).contains(&l.fps), "{}", l.fps);
        // Two more seconds at the same rate, then one at four times it (a
        // burst): the bitrate is the mean of the last three windows.
        let frame = |l: &mut Layer, i: u64, bytes: usize| l.on_frame(t0 + Duration::from_millis(1000 + i * 1000 / 30), bytes, false, None);
        for i in 1..=60u64 {
            frame(&mut l, i, 1000);
        }
        for i in 61..=90u64 {
            frame(&mut l, i, 4000);
        }
        assert!((460_000..=520_000).contains(&l.bitrate_bps), "(240 + 240 + 960) / 3 kbit/s: {}", l.bitrate_bps);
    }

    #[test]
    fn keyframe_sizes_from_vp8_and_h264() {
        let vp8 = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0xAB];
        assert_eq!(keyframe_size(&vp8), Some((640, 360)));
        assert_eq!(keyframe_size(&[0x11, 0, 0]), None);
        assert_eq!(keyframe_size(&[]), None);
    }
}
