//! Forwarding with per-subscriber layers: each subscriber's [`Selector`]
//! picks which of a publisher's video layers it gets; keyframe requests to
//! the publisher are bounded per layer ([`Layer::want_keyframe`]); the set of
//! layers anyone wants is announced ([`SfuEvent::LayersWanted`]).

use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::media::{KeyframeRequest, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};
use str0m::stats::MediaEgressStats;
use str0m::Rtc;

use super::{Role, Session, Sfu, SfuOutput};
use crate::sfu::layers::{keyframe_size, UP_MARGIN, known_rank, sort_layers, Layer, LayerInfo, LayerKey, LayerReport, LayerRequest, PliAnswer, Selector};
use crate::sfu::{SessionId, SfuError, SfuEvent};
use stagecast_protocol::ParticipantId;

/// The least `desired` bitrate given to a subscriber's bandwidth estimator.
const MIN_DESIRED_BPS: u64 = 300_000;
/// `desired` before the layer it may get has been measured: IVS's top
/// default layer (2.5 Mbit/s) with the same headroom. The estimator's first
/// probes (3 and 6 times its start) are capped at twice `desired`: with the
/// minimum here, they stopped at 600 kbit/s and an open link took ~10 s of
/// slow growth to earn a 640×360 layer.
const UNKNOWN_DESIRED_BPS: u64 = 3_250_000;

impl Sfu {
    /// Write one frame from a publisher to each connected subscriber that
    /// gets its layer.
    pub(super) fn forward(&mut self, publisher_key: u64, data: &MediaData) {
        let now = self.last_now;
        let Some(p) = self.sessions.get_mut(&publisher_key) else {
            return;
        };
        if p.ended_at.is_some() {
            return;
        }
        let Role::Publisher { tracks, subscribers, .. } = &mut p.role else {
            return;
        };
        let Some(track) = tracks.iter_mut().find(|t| t.mid == data.mid) else {
            return;
        };
        let video = track.kind == MediaKind::Video;
        let keyframe = video && data.is_keyframe();
        let mut changed = false;
        if video {
            if !track.layers.iter().any(|l| l.rid == data.rid) {
                track.layers.push(Layer::new(data.rid));
                changed = true;
            }
            let size = if keyframe { keyframe_size(&data.data) } else { None };
            if let Some(layer) = track.layers.iter_mut().find(|l| l.rid == data.rid) {
                changed |= layer.on_frame(now, data.data.len(), keyframe, size);
            }
            if changed {
                sort_layers(&mut track.layers);
            }
        }
        // Taken so subscribers can be borrowed mutably; put back below.
        let layers = std::mem::take(&mut track.layers);
        let subs = std::mem::take(subscribers);
        let hz = u64::from(data.time.frequency().get());
        let mut keyframes: Vec<LayerKey> = Vec::new();
        let mut received = false;
        for &sub_key in &subs {
            let Some(sub) = self.sessions.get_mut(&sub_key) else {
                continue;
            };
            if !sub.connected || sub.ended_at.is_some() {
                continue;
            }
            let Role::Subscriber { audio, video: video_mid, selector, bwe_desired, bwe_primed, .. } = &mut sub.role else {
                continue;
            };
            let Some(mid) = (if video { *video_mid } else { *audio }) else {
                continue;
            };
            let mut time = data.time;
            if video {
                if selector.decide(&layers, now) {
                    changed = true;
                    let rates: Vec<u64> = layers.iter().map(|l| l.bitrate_bps).collect();
                    tracing::debug!(session = %sub.id, target = ?selector.target(), estimate = ?selector.estimate, ?rates, "layer target");
                }
                if let Some(target) = selector.switching() {
                    if !keyframes.contains(&target) {
                        keyframes.push(target);
                    }
                }
                set_desired(&mut sub.rtc, selector, &layers, bwe_desired, now);
                let Some(t) = selector.admit(data.rid, keyframe, data.time.numer(), hz, data.network_time) else {
                    continue;
                };
                if !*bwe_primed {
                    // str0m pads (and so probes) only beside active media:
                    // the estimator's first probes, at connection, had none
                    // and measured nothing, leaving ~10 s of slow growth to
                    // earn a 640×360 layer. Start it again from where it is,
                    // now that video flows, so those probes run.
                    *bwe_primed = true;
                    let from = selector.estimate.map_or_else(|| super::initial_estimate(selector.start), Bitrate::bps);
                    sub.rtc.bwe().reset(from);
                }
                received = true;
                time = MediaTime::new(t, data.time.frequency());
            }
            let Some(writer) = sub.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            if let Err(e) = writer.write(pt, data.network_time, time, data.data.clone()) {
                tracing::debug!(session = %sub.id, error = %e, "write to subscriber failed");
                continue;
            }
            self.stats.forwarded_frames += 1;
            self.stats.forwarded_bytes += data.data.len() as u64;
            if !sub.queued {
                sub.queued = true;
                self.queue.push(sub_key);
            }
        }
        if let Some(Session { role: Role::Publisher { subscribers, tracks, .. }, .. }) = self.sessions.get_mut(&publisher_key) {
            // Subscribers added while we held the list (none today) would be
            // lost by a plain assignment; keep both.
            let added = std::mem::replace(subscribers, subs);
            subscribers.extend(added);
            if let Some(track) = tracks.iter_mut().find(|t| t.mid == data.mid) {
                track.layers = layers;
            }
        }
        if video && !data.contiguous && received {
            // Lost upstream: those who get this layer cannot decode until a keyframe.
            keyframes.push(data.rid);
        }
        if video {
            self.request_keyframes(publisher_key, data.mid, &keyframes);
        }
        if changed {
            self.update_wanted(publisher_key);
        }
    }

    /// Ask the publisher for keyframes on `wanted` layers of track `mid`,
    /// and send deferred requests that are due; at most one per layer per
    /// [`crate::sfu::layers::LAYER_KEYFRAME_INTERVAL`].
    fn request_keyframes(&mut self, publisher_key: u64, mid: Mid, wanted: &[LayerKey]) {
        let now = self.last_now;
        let Some(p) = self.sessions.get_mut(&publisher_key) else {
            return;
        };
        let Role::Publisher { tracks, .. } = &mut p.role else {
            return;
        };
        let Some(track) = tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let mut requested = false;
        for layer in track.layers.iter_mut() {
            let due = if wanted.contains(&layer.rid) { layer.want_keyframe(now) } else { layer.poll_keyframe(now) };
            if !due {
                continue;
            }
            let Some(mut writer) = p.rtc.writer(mid) else {
                continue;
            };
            let kind = KeyframeRequestKind::Pli;
            // Fails until the first packet of the layer has arrived; the
            // first frame of a fresh stream is a keyframe anyway.
            if writer.is_request_keyframe_possible(kind) && writer.request_keyframe(layer.rid, kind).is_ok() {
                requested = true;
            }
        }
        if requested && !p.queued {
            p.queued = true;
            self.queue.push(publisher_key);
        }
    }

    /// A subscriber's PLI/FIR: answered per subscriber (throttled, or by
    /// switching it down), never passed on one for one.
    pub(super) fn relay_keyframe_request(&mut self, subscriber_key: u64, req: KeyframeRequest) {
        let now = self.last_now;
        let Some((publisher, mid, layers, selector)) = self.subscriber_layers(subscriber_key, Some(req.mid)) else {
            return;
        };
        match selector.on_pli(&layers, now) {
            PliAnswer::Drop => {}
            PliAnswer::Keyframe(layer) => self.request_keyframes(publisher, mid, &[layer]),
            PliAnswer::SwitchedDown => {
                tracing::debug!(session = %subscriber_key, "subscriber cannot keep up; switched down a layer");
                self.update_wanted(publisher);
            }
        }
    }

    /// A subscriber's receiver reports (str0m's egress stats, every second):
    /// heavy loss or a grown round trip on its video switches it down a
    /// layer at once. `loss` is there only when new reports came.
    pub(super) fn on_egress_stats(&mut self, subscriber_key: u64, stats: &MediaEgressStats) {
        let Some(loss) = stats.loss else {
            return;
        };
        let now = self.last_now;
        let Some((publisher, mid, layers, selector)) = self.subscriber_layers(subscriber_key, Some(stats.mid)) else {
            return;
        };
        tracing::trace!(session = %subscriber_key, loss, rtt = ?stats.rtt, "subscriber's receiver reports");
        if selector.on_report(loss, stats.rtt, &layers, now) {
            tracing::debug!(session = %subscriber_key, loss, rtt = ?stats.rtt, target = ?selector.target(), "subscriber's link cannot carry its layer; switched down");
            if let Some(target) = selector.switching() {
                self.request_keyframes(publisher, mid, &[target]);
            }
        }
    }

    /// A new viewer cannot decode until a keyframe of its first layer: ask now.
    pub(super) fn subscriber_connected(&mut self, key: u64) {
        let now = self.last_now;
        let Some((publisher, mid, layers, selector)) = self.subscriber_layers(key, None) else {
            return;
        };
        selector.decide(&layers, now);
        if let Some(target) = selector.switching() {
            self.request_keyframes(publisher, mid, &[target]);
        }
        self.update_wanted(publisher);
    }

    /// For subscriber `key` (whose video is `mid`, when given): its
    /// publisher, the publisher's video mid and a copy of its layers, and
    /// the subscriber's selector.
    fn subscriber_layers(&mut self, key: u64, mid: Option<Mid>) -> Option<(u64, Mid, Vec<Layer>, &mut Selector)> {
        let Some(Session { role: Role::Subscriber { publisher, video, .. }, .. }) = self.sessions.get(&key) else {
            return None;
        };
        if mid.is_some_and(|m| *video != Some(m)) {
            return None;
        }
        let publisher = *publisher;
        let (publisher_mid, layers) = self.video_layers(publisher)?;
        let Some(Session { role: Role::Subscriber { selector, .. }, .. }) = self.sessions.get_mut(&key) else {
            return None;
        };
        Some((publisher, publisher_mid, layers, selector))
    }

    /// A copy of the layers of a publisher's (first) video track, and its mid.
    fn video_layers(&self, publisher_key: u64) -> Option<(Mid, Vec<Layer>)> {
        let Some(Session { role: Role::Publisher { tracks, .. }, .. }) = self.sessions.get(&publisher_key) else {
            return None;
        };
        tracks.iter().find(|t| t.kind == MediaKind::Video).map(|t| (t.mid, t.layers.clone()))
    }

    /// Recompute the layers some subscriber of a publisher receives, is
    /// switching to, or may climb to (every layer up to its cap; always the
    /// lowest); emit [`SfuEvent::LayersWanted`] when that changed. A
    /// subscriber held low by its bandwidth still wants the layers above:
    /// paused, the next one would measure nothing, the padding toward it
    /// would stop, and the subscriber could never earn it back.
    pub(super) fn update_wanted(&mut self, publisher_key: u64) {
        let Some(p) = self.sessions.get(&publisher_key) else {
            return;
        };
        if p.ended_at.is_some() {
            return;
        }
        let Role::Publisher { tracks, subscribers, .. } = &p.role else {
            return;
        };
        let Some((index, track)) = tracks.iter().enumerate().find(|(_, t)| t.kind == MediaKind::Video) else {
            return;
        };
        if track.layers.iter().all(|l| l.rid.is_none()) {
            return;
        }
        let wants = |index: usize, key: LayerKey| {
            subscribers.iter().filter_map(|k| self.sessions.get(k)).any(|s| {
                s.ended_at.is_none()
                    && matches!(&s.role, Role::Subscriber { selector, .. }
                        if !selector.paused
                            && (index <= selector.best_allowed(&track.layers)
                                || selector.target() == Some(key)
                                || selector.current() == Some(key)))
            })
        };
        let rids: Vec<String> = track
            .layers
            .iter()
            .enumerate()
            .filter(|(i, l)| *i == 0 || wants(*i, l.rid))
            .filter_map(|(_, l)| l.name().map(str::to_owned))
            .collect();
        if rids == track.wanted {
            return;
        }
        let event =
            SfuEvent::LayersWanted { stage: p.stage.clone(), participant: p.participant.clone(), session: p.id.clone(), rids: rids.clone() };
        if let Some(Session { role: Role::Publisher { tracks, .. }, .. }) = self.sessions.get_mut(&publisher_key) {
            if let Some(track) = tracks.get_mut(index) {
                track.wanted = rids;
            }
        }
        self.out.push_back(SfuOutput::Event(event));
    }

    /// The subscription `id` of `owner`: its key and publisher.
    fn owned_subscription(&self, id: &SessionId, owner: &ParticipantId) -> Result<(u64, u64), SfuError> {
        let key = *self.by_id.get(id).ok_or_else(|| SfuError::SessionNotFound(id.clone()))?;
        let s = self.sessions.get(&key).ok_or_else(|| SfuError::SessionNotFound(id.clone()))?;
        if &s.participant != owner {
            return Err(SfuError::SessionNotFound(id.clone()));
        }
        match s.role {
            Role::Subscriber { publisher, .. } => Ok((key, publisher)),
            Role::Publisher { .. } => Err(SfuError::NotASubscription(id.clone())),
        }
    }

    /// A layer cap for a subscription to `publisher_key`: `low`, `mid`,
    /// `high` or a rid the publisher sends.
    pub(super) fn layer_cap(&self, publisher_key: u64, rid: &str) -> Result<Rid, SfuError> {
        let layers = self.video_layers(publisher_key).map(|(_, l)| l).unwrap_or_default();
        if known_rank(rid).is_some() || layers.iter().any(|l| l.name() == Some(rid)) {
            Ok(Rid::from(rid))
        } else {
            Err(SfuError::UnknownLayer(rid.chars().take(32).collect()))
        }
    }

    /// Cap a subscription's video at a layer (`rid: Some(None)`: server-
    /// adaptive; `None`: unchanged) and/or pause it (no video at all).
    pub fn set_layer(&mut self, id: &SessionId, owner: &ParticipantId, req: &LayerRequest, now: Instant) -> Result<(), SfuError> {
        self.last_now = self.last_now.max(now);
        let (key, publisher) = self.owned_subscription(id, owner)?;
        let layers = self.video_layers(publisher).map(|(_, l)| l).unwrap_or_default();
        let cap = match &req.rid {
            Some(Some(r)) => Some(Some(self.layer_cap(publisher, r)?)),
            Some(None) => Some(None),
            None => None,
        };
        let Some(Session { role: Role::Subscriber { selector, .. }, .. }) = self.sessions.get_mut(&key) else {
            return Err(SfuError::SessionNotFound(id.clone()));
        };
        if let Some(cap) = cap {
            selector.cap = cap;
        }
        if let Some(paused) = req.paused {
            selector.paused = paused;
        }
        // A lower cap or a pause applies now; a higher cap at the next keyframe.
        selector.decide(&layers, self.last_now);
        self.update_wanted(publisher);
        Ok(())
    }

    /// A subscription's layers, as measured, and what it gets.
    pub fn layer_report(&self, id: &SessionId, owner: &ParticipantId) -> Result<LayerReport, SfuError> {
        let (key, publisher) = self.owned_subscription(id, owner)?;
        let layers = self.video_layers(publisher).map(|(_, l)| l).unwrap_or_default();
        let Some(Session { role: Role::Subscriber { selector, .. }, .. }) = self.sessions.get(&key) else {
            return Err(SfuError::SessionNotFound(id.clone()));
        };
        let name = |k: LayerKey| k.map(|r| (*r).to_owned());
        Ok(LayerReport {
            layers: layers.iter().map(LayerInfo::from).collect(),
            selected: selector.current().and_then(name),
            adapting: selector.adapting(),
            preferred: selector.cap.map(|r| (*r).to_owned()),
            paused: selector.paused,
        })
    }
}

/// Tell a subscriber's bandwidth estimator what to probe for: the top layer
/// it may get, with headroom; and what to keep sending (padding fills the
/// gap, within the estimate): the next layer up from the one forwarded now,
/// with the margin a climb needs ([`UP_MARGIN`]).
/// Without that floor the estimate cannot grow past ~1.5 times what is
/// sent, so a subscriber that started on the lowest layer never earns the
/// next one. Only while the selector probes ([`Selector::may_probe`]): a
/// link that cannot take the next layer is not kept full of padding. Set
/// again only when either moved by more than 10 %.
fn set_desired(rtc: &mut Rtc, selector: &Selector, layers: &[Layer], last: &mut (u64, u64), now: Instant) {
    let top_index = layers
        .iter()
        .rposition(|l| selector.cap.is_none() || l.rid == selector.cap)
        .or(layers.len().checked_sub(1));
    let top = top_index.map_or(0, |i| layers[i].bitrate_bps);
    let desired = if top == 0 { UNKNOWN_DESIRED_BPS } else { ((top as f64 * 1.3) as u64).max(MIN_DESIRED_BPS) };
    let current = selector.current().and_then(|c| layers.iter().position(|l| l.rid == c));
    let minimum = match (current, top_index) {
        // Enough to show the margin the climb needs (the estimate grows
        // with what is sent).
        (Some(c), Some(t)) if c < t && selector.may_probe(now) => (layers[c + 1].bitrate_bps as f64 * UP_MARGIN * 1.05) as u64,
        _ => 0,
    };
    let moved = |new: u64, old: u64| new.abs_diff(old) * 10 > old;
    if moved(desired, last.0) || moved(minimum, last.1) {
        *last = (desired, minimum);
        tracing::debug!(desired, minimum, "subscriber bandwidth goal");
        rtc.bwe().set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
    }
}
