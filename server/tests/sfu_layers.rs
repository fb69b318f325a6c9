//! Simulcast through the SFU core: a str0m publisher sends rids low / mid /
//! high with distinct payloads and RTP time bases; str0m subscribers get one
//! layer each, chosen per subscriber. Packets are shuttled by hand with a
//! fake clock (as in sfu_forwarding.rs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use stagecast_protocol::{ParticipantId, StageId};
use stagecast_server::sfu::core::{LayerRequest, LayerStart, Sfu, SfuOutput};
use stagecast_server::sfu::{SessionId, SfuError, SfuEvent};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const STEP: Duration = Duration::from_millis(1);
const RIDS: [&str; 3] = ["low", "mid", "high"];
/// Frame payload sizes: ~24, ~60 and ~144 kbit/s at 30 fps (small enough
/// for what str0m's estimate settles at on the in-memory link).
const SIZES: [usize; 3] = [100, 250, 600];
/// Each layer's RTP time starts elsewhere, as browsers' do.
const BASES: [u64; 3] = [0, 1_000_000, 5_000_000];
/// The width each layer's keyframes announce.
const WIDTHS: [u16; 3] = [320, 640, 1280];

fn addr(host: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host], 5000))
}

fn stage() -> StageId {
    StageId::from("stage-1")
}

fn pid(s: &str) -> ParticipantId {
    ParticipantId::from(s)
}

struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    events: Vec<Event>,
    /// Drop every packet the SFU sends to this peer while set.
    deaf: bool,
    /// Drop every n-th packet the SFU sends to this peer (n > 0).
    drop_every: usize,
    sent_to: usize,
}

struct World {
    now: Instant,
    sfu: Sfu,
    sfu_addr: SocketAddr,
    peers: Vec<Peer>,
    sfu_events: Vec<SfuEvent>,
    /// The publisher's video mid and payload type, once known.
    video: Option<(Mid, Pt)>,
    frame: u64,
    /// Steps taken (milliseconds).
    tick: u64,
    /// Layers that owe a keyframe (asked for by the SFU, or never sent one).
    owe_keyframe: [bool; 3],
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        let sfu_addr = SocketAddr::from(([10, 0, 0, 1], 8443));
        Self {
            now,
            sfu: Sfu::new(sfu_addr, now),
            sfu_addr,
            peers: Vec::new(),
            sfu_events: Vec::new(),
            video: None,
            frame: 0,
            tick: 0,
            owe_keyframe: [true; 3],
        }
    }

    fn add_peer(&mut self, host: u8) -> Result<usize> {
        let a = addr(host);
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(a, "udp")?);
        self.peers.push(Peer { rtc, addr: a, events: Vec::new(), deaf: false, drop_every: 0, sent_to: 0 });
        Ok(self.peers.len() - 1)
    }

    /// Peer 0 publishes video with three simulcast layers as "alice".
    fn publish(&mut self) -> Result<SessionId> {
        let peer = self.add_peer(2)?;
        let mut simulcast = Simulcast::new();
        for rid in RIDS {
            simulcast.add_send_layer(SimulcastLayer::new(rid));
        }
        let mut api = self.peers[peer].rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, Some(simulcast));
        let (offer, pending) = api.apply().context("an offer")?;
        let (session, answer) = self.sfu.publish(&stage(), &pid("alice"), &offer.to_sdp_string(), self.now)?;
        self.peers[peer].rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
        self.run_until(Duration::from_secs(5), "publisher connected", |w| {
            w.sfu_events.iter().any(|e| matches!(e, SfuEvent::PublishStarted { .. }))
        })?;
        let writer = self.peers[peer].rtc.writer(mid).context("publisher writer")?;
        let pt = writer.payload_params().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt()).context("VP8")?;
        self.video = Some((mid, pt));
        Ok(session)
    }

    fn subscribe(&mut self, host: u8, name: &str, start: LayerStart, cap: Option<&str>) -> Result<(usize, SessionId, Mid)> {
        let peer = self.add_peer(host)?;
        let mut api = self.peers[peer].rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().context("an offer")?;
        let (session, answer) =
            self.sfu.subscribe_with(&stage(), &pid(name), &pid("alice"), &offer.to_sdp_string(), start, cap, self.now)?;
        self.peers[peer].rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
        self.run_until(Duration::from_secs(5), "subscriber connected", |w| w.peers[peer].rtc.is_connected())?;
        Ok((peer, session, mid))
    }

    /// One frame on every layer (a keyframe where one is owed).
    fn send_frames(&mut self) -> Result<()> {
        let Some((mid, pt)) = self.video else { return Ok(()) };
        let now = self.now;
        let frame = self.frame;
        self.frame += 1;
        for (i, rid) in RIDS.iter().enumerate() {
            let key = std::mem::replace(&mut self.owe_keyframe[i], false);
            let data = payload(i, frame, key);
            let time = MediaTime::from_90khz(BASES[i] + frame * 3000);
            let writer = self.peers[0].rtc.writer(mid).context("publisher writer")?;
            writer.rid(Rid::from(*rid)).write(pt, now, time, data)?;
        }
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        for (i, p) in self.peers.iter_mut().enumerate() {
            while p.rtc.is_alive() {
                match p.rtc.poll_output()? {
                    Output::Transmit(t) => self.sfu.handle_receive(self.now, p.addr, t.destination, &t.contents),
                    Output::Event(e) => {
                        if let (0, Event::KeyframeRequest(req)) = (i, &e) {
                            if let Some(layer) = req.rid.and_then(|r| RIDS.iter().position(|n| *n == &*r)) {
                                self.owe_keyframe[layer] = true;
                            }
                        }
                        p.events.push(e);
                    }
                    Output::Timeout(_) => break,
                }
            }
        }
        loop {
            match self.sfu.poll_output() {
                SfuOutput::Transmit(t) => {
                    let peer = self
                        .peers
                        .iter_mut()
                        .find(|p| p.addr == t.destination)
                        .ok_or_else(|| anyhow!("SFU sent to unknown address {}", t.destination))?;
                    peer.sent_to += 1;
                    if peer.deaf || (peer.drop_every > 0 && peer.sent_to.is_multiple_of(peer.drop_every)) {
                        continue;
                    }
                    let input = Input::Receive(self.now, Receive::new(Protocol::Udp, self.sfu_addr, peer.addr, &t.bytes)?);
                    peer.rtc.handle_input(input)?;
                }
                SfuOutput::Event(e) => self.sfu_events.push(e),
                SfuOutput::Timeout(_) => break,
            }
        }
        self.now += STEP;
        // 30 fps.
        self.tick += 1;
        if self.video.is_some() && self.tick.is_multiple_of(33) {
            self.send_frames()?;
        }
        for p in self.peers.iter_mut() {
            p.rtc.handle_input(Input::Timeout(self.now))?;
        }
        self.sfu.handle_timeout(self.now);
        Ok(())
    }

    fn run_until(&mut self, max: Duration, what: &str, done: impl Fn(&World) -> bool) -> Result<()> {
        let deadline = self.now + max;
        while !done(self) {
            ensure!(self.now < deadline, "timed out waiting for: {what}");
            self.step()?;
        }
        Ok(())
    }

    fn run_for(&mut self, d: Duration) -> Result<()> {
        let end = self.now + d;
        while self.now < end {
            self.step()?;
        }
        Ok(())
    }

    /// (layer index, RTP time) of each video frame `peer` received on `mid`.
    fn received(&self, peer: usize, mid: Mid) -> Vec<(usize, u64)> {
        self.peers[peer]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::MediaData(d) if d.mid == mid => Some((usize::from(d.data[10]), d.time.numer())),
                _ => None,
            })
            .collect()
    }

    fn keyframe_requests_at_publisher(&self) -> usize {
        self.peers[0].events.iter().filter(|e| matches!(e, Event::KeyframeRequest(_))).count()
    }

    fn layers_wanted(&self) -> Vec<Vec<String>> {
        self.sfu_events
            .iter()
            .filter_map(|e| match e {
                SfuEvent::LayersWanted { rids, .. } => Some(rids.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A VP8 frame of layer `i`: a keyframe header announcing the layer's size
/// when `key`, and the layer index at byte 10, padded to its size.
fn payload(i: usize, frame: u64, key: bool) -> Vec<u8> {
    let mut d = vec![if key { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    let w = WIDTHS[i];
    d.extend_from_slice(&w.to_le_bytes());
    d.extend_from_slice(&(w * 9 / 16).to_le_bytes());
    d.push(i as u8);
    d.push(frame as u8);
    d.resize(SIZES[i], 0xAB);
    d
}

fn layers_of(got: &[(usize, u64)]) -> Vec<usize> {
    let mut l: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    l.dedup();
    l
}

#[test]
fn lowest_start_gets_low_and_a_cap_of_high_switches_at_its_keyframe_with_continuous_time() -> Result<()> {
    let mut w = World::new();
    w.publish()?;
    w.run_for(Duration::from_millis(1500))?;
    let (bob, bob_session, mid) = w.subscribe(3, "bob", LayerStart::Lowest, None)?;
    w.run_for(Duration::from_millis(1500))?;
    let got = w.received(bob, mid);
    ensure!(got.len() >= 30, "only {} frames in 1.5 s", got.len());
    assert_eq!(layers_of(&got), [0], "a lowest start forwards only the low layer first");

    // Capped at mid: never above it; adaptive up to it.
    w.sfu.set_layer(&bob_session, &pid("bob"), &LayerRequest { rid: Some(Some("mid".into())), paused: None }, w.now)?;
    w.run_for(Duration::from_secs(8))?;
    let got = w.received(bob, mid);
    ensure!(got.iter().all(|(i, _)| *i <= 1), "above the cap: {:?}", layers_of(&got));

    // To high (the in-memory link has room): switched once, at a keyframe of high.
    let before = got.len();
    w.sfu.set_layer(&bob_session, &pid("bob"), &LayerRequest { rid: Some(Some("high".into())), paused: None }, w.now)?;
    w.run_until(Duration::from_secs(20), "the high layer", |w| w.received(bob, mid).last().is_some_and(|(i, _)| *i == 2))?;
    w.run_for(Duration::from_secs(1))?;
    let got = w.received(bob, mid);
    let seq = layers_of(&got);
    ensure!(seq.ends_with(&[2]) && seq.windows(2).all(|p| p[0] < p[1]), "layers in order: {seq:?}");
    let first_high = got.iter().position(|(i, _)| *i == 2).context("no high")?;
    let key = w.peers[bob].events.iter().filter_map(|e| match e {
        Event::MediaData(d) if d.mid == mid => Some(d.data[0] & 1 == 0),
        _ => None,
    });
    ensure!(key.clone().nth(first_high) == Some(true), "the switch to high was not at a keyframe");
    // Time runs on: one frame interval (3000 at 90 kHz) per frame, give or take the clock's jitter.
    for pair in got[before.saturating_sub(5)..].windows(2) {
        let d = pair[1].1 as i64 - pair[0].1 as i64;
        ensure!((1500..=9000).contains(&d), "RTP time jumped by {d} across {pair:?}");
    }
    let report = w.sfu.layer_report(&bob_session, &pid("bob"))?;
    assert_eq!(report.selected.as_deref(), Some("high"));
    Ok(())
}

#[test]
fn the_layer_report_has_measured_layers_lowest_first() -> Result<()> {
    let mut w = World::new();
    w.publish()?;
    let (_, session, _) = w.subscribe(3, "bob", LayerStart::Highest, Some("mid"))?;
    w.run_for(Duration::from_secs(3))?;
    let report = w.sfu.layer_report(&session, &pid("bob"))?;
    let json = serde_json::to_value(&report)?;
    let layers = json["layers"].as_array().context("layers")?;
    assert_eq!(layers.len(), 3, "{json}");
    for (i, layer) in layers.iter().enumerate() {
        assert_eq!(layer["rid"], RIDS[i], "{json}");
        assert_eq!(layer["width"], u64::from(WIDTHS[i]), "{json}");
        assert_eq!(layer["height"], u64::from(WIDTHS[i] * 9 / 16), "{json}");
        let bps = layer["bitrateBps"].as_u64().context("bitrateBps")?;
        let want = SIZES[i] as u64 * 8 * 30;
        ensure!(bps > want / 2 && bps < want * 2, "layer {i}: {bps} bit/s, sent ~{want}: {json}");
        let fps = layer["framesPerSecond"].as_f64().context("fps")?;
        ensure!((25.0..=35.0).contains(&fps), "{json}");
    }
    assert_eq!(json["selected"], "mid", "{json}");
    assert_eq!(json["preferred"], "mid", "{json}");
    assert_eq!(json["adapting"], false, "{json}");

    // Not the owner, not a subscription, not a layer.
    assert_eq!(w.sfu.layer_report(&session, &pid("mallory")).err(), Some(SfuError::SessionNotFound(session.clone())));
    let bad = LayerRequest { rid: Some(Some("ultra".into())), paused: None };
    assert_eq!(w.sfu.set_layer(&session, &pid("bob"), &bad, w.now).err(), Some(SfuError::UnknownLayer("ultra".into())));
    Ok(())
}

#[test]
fn a_paused_subscription_gets_no_video_until_resumed() -> Result<()> {
    let mut w = World::new();
    w.publish()?;
    let (bob, session, mid) = w.subscribe(3, "bob", LayerStart::Lowest, None)?;
    w.run_for(Duration::from_secs(1))?;
    ensure!(!w.received(bob, mid).is_empty(), "nothing before the pause");
    w.sfu.set_layer(&session, &pid("bob"), &LayerRequest { rid: None, paused: Some(true) }, w.now)?;
    w.run_for(Duration::from_millis(200))?;
    let paused_at = w.received(bob, mid).len();
    w.run_for(Duration::from_secs(2))?;
    assert_eq!(w.received(bob, mid).len(), paused_at, "video arrived while paused");
    assert_eq!(w.sfu.layer_report(&session, &pid("bob"))?.selected, None);
    w.sfu.set_layer(&session, &pid("bob"), &LayerRequest { rid: None, paused: Some(false) }, w.now)?;
    w.run_for(Duration::from_secs(2))?;
    ensure!(w.received(bob, mid).len() > paused_at + 20, "no video after resuming");
    Ok(())
}

#[test]
fn a_pli_storm_from_one_subscriber_keeps_the_publishers_keyframes_bounded() -> Result<()> {
    let mut w = World::new();
    w.publish()?;
    let (bob, _, bob_mid) = w.subscribe(3, "bob", LayerStart::Highest, None)?;
    let (carol, _, carol_mid) = w.subscribe(4, "carol", LayerStart::Lowest, None)?;
    w.run_for(Duration::from_secs(1))?;
    let before = w.keyframe_requests_at_publisher();
    let seconds = 10;
    for _ in 0..seconds * 50 {
        for (peer, mid) in [(bob, bob_mid), (carol, carol_mid)] {
            let mut writer = w.peers[peer].rtc.writer(mid).context("writer")?;
            writer.request_keyframe(None, KeyframeRequestKind::Pli)?;
        }
        w.run_for(Duration::from_millis(20))?;
    }
    let requests = w.keyframe_requests_at_publisher() - before;
    // At most one per layer per second, from everyone together.
    ensure!(requests <= RIDS.len() * (seconds + 1), "{requests} keyframe requests in {seconds} s");
    // The stormy subscriber was moved down, and both still get video.
    let tail = |peer, mid| w.received(peer, mid).iter().rev().take(30).count();
    ensure!(tail(bob, bob_mid) == 30 && tail(carol, carol_mid) == 30, "video stopped");
    Ok(())
}

#[test]
fn layers_wanted_follows_what_subscribers_receive() -> Result<()> {
    let mut w = World::new();
    let publish = w.publish()?;
    let (_, high_session, _) = w.subscribe(3, "bob", LayerStart::Highest, Some("high"))?;
    w.run_for(Duration::from_secs(1))?;
    let (_, _, _) = w.subscribe(4, "carol", LayerStart::Lowest, Some("low"))?;
    w.run_for(Duration::from_secs(1))?;
    // bob may get high (and every layer on the way up): all stay wanted, nothing to announce.
    assert_eq!(w.layers_wanted(), Vec::<Vec<String>>::new());
    // The last subscriber that may get more than low leaves: only the lowest is wanted.
    w.sfu.close_session(&high_session, Some(&pid("bob")), w.now)?;
    w.run_for(Duration::from_millis(100))?;
    assert_eq!(w.layers_wanted().last().cloned(), Some(vec!["low".to_owned()]));
    let event = w.sfu_events.iter().rev().find(|e| matches!(e, SfuEvent::LayersWanted { .. })).context("event")?;
    assert_eq!(
        event,
        &SfuEvent::LayersWanted { stage: stage(), participant: pid("alice"), session: publish, rids: vec!["low".into()] }
    );
    // Emitted on change only.
    let n = w.layers_wanted().len();
    w.run_for(Duration::from_secs(2))?;
    assert_eq!(w.layers_wanted().len(), n);
    Ok(())
}

#[test]
fn a_subscriber_whose_link_fails_is_moved_down_by_its_estimate() -> Result<()> {
    let mut w = World::new();
    w.publish()?;
    let (bob, session, mid) = w.subscribe(3, "bob", LayerStart::Highest, None)?;
    w.run_for(Duration::from_secs(2))?;
    ensure!(w.received(bob, mid).last().is_some_and(|(i, _)| *i == 2), "not at high first");
    // Drop 3 of every 4 milliseconds of what the SFU sends to bob.
    let mut by_layer: HashMap<usize, usize> = HashMap::new();
    for ms in 0..6000 {
        w.peers[bob].deaf = ms % 4 != 0;
        w.step()?;
    }
    w.peers[bob].deaf = false;
    for (i, _) in w.received(bob, mid) {
        *by_layer.entry(i).or_default() += 1;
    }
    let report = w.sfu.layer_report(&session, &pid("bob"))?;
    ensure!(report.selected.as_deref() != Some("high") && report.adapting, "still at high: {report:?} {by_layer:?}");
    Ok(())
}

#[test]
fn packets_lost_toward_a_subscriber_are_recovered_by_nack_and_rtx() -> Result<()> {
    let mut w = World::new();
    w.publish()?;
    let (bob, _, mid) = w.subscribe(3, "bob", LayerStart::Highest, Some("high"))?;
    w.run_for(Duration::from_secs(1))?;
    let before = w.peers[bob].events.len();
    // Every 10th packet from the SFU to bob is lost (RTCP and all).
    w.peers[bob].drop_every = 10;
    w.run_for(Duration::from_secs(3))?;
    w.peers[bob].drop_every = 0;
    w.run_for(Duration::from_millis(500))?;
    let frames: Vec<u8> = w.peers[bob].events[before..]
        .iter()
        .filter_map(|e| match e {
            Event::MediaData(d) if d.mid == mid && d.data[10] == 2 => Some(d.data[11]),
            _ => None,
        })
        .collect();
    ensure!(frames.len() >= 100, "only {} high frames in 3.5 s", frames.len());
    // Every frame arrived, in order: none was lost for good.
    for pair in frames.windows(2) {
        ensure!(pair[1] == pair[0].wrapping_add(1), "frame {} followed by {}", pair[0], pair[1]);
    }
    Ok(())
}

/// A subscriber that starts on (or is held to) a lower layer still wants
/// every layer up to its best: the publisher keeps sending them, so their
/// bitrates stay measured and the subscriber can climb back. Only a cap
/// below them, or a pause, lets the publisher stop them.
#[test]
fn layers_up_to_a_subscribers_best_stay_wanted_while_it_gets_a_lower_one() -> Result<()> {
    let mut w = World::new();
    w.publish()?;
    let (_, session, _) = w.subscribe(3, "bob", LayerStart::Lowest, None)?;
    w.run_for(Duration::from_secs(1))?;
    // Every layer is wanted from the start (what the publisher sends anyway): no change to announce.
    assert_eq!(w.layers_wanted(), Vec::<Vec<String>>::new(), "bob gets low and may climb to high");
    w.sfu.set_layer(&session, &pid("bob"), &LayerRequest { rid: Some(Some("low".into())), paused: None }, w.now)?;
    w.run_for(Duration::from_millis(100))?;
    assert_eq!(w.layers_wanted().last().cloned(), Some(vec!["low".to_owned()]), "capped to low: only low");
    // The cap lifted while bob still gets low: every layer up to high again.
    w.sfu.set_layer(&session, &pid("bob"), &LayerRequest { rid: Some(None), paused: None }, w.now)?;
    w.run_for(Duration::from_millis(100))?;
    let all: Vec<String> = RIDS.iter().map(|r| (*r).to_owned()).collect();
    assert_eq!(w.layers_wanted().last().cloned(), Some(all), "no cap: bob may climb to high");
    Ok(())
}
