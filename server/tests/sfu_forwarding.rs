//! The SFU core between in-memory str0m peers (standing in for browsers),
//! with packets shuttled by hand and a fake clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use stagecast_protocol::{ParticipantId, StageId, MAX_PUBLISHERS_PER_STAGE};
use stagecast_server::sfu::core::{Sfu, SfuOutput};
use stagecast_server::sfu::{SessionId, SfuError, SfuEvent};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

mod common;

const STEP: Duration = Duration::from_millis(1);

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host], port))
}

fn stage() -> StageId {
    StageId::from("stage-1")
}

fn pid(s: &str) -> ParticipantId {
    ParticipantId::from(s)
}

/// A "browser": a full-ICE str0m peer.
struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    events: Vec<Event>,
}

impl Peer {
    fn media_data(&self, mid: Mid) -> Vec<Vec<u8>> {
        common::media_data(&self.events, mid)
    }

    fn keyframe_requests(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Event::KeyframeRequest(_))).count()
    }

    fn closed(&self) -> bool {
        !self.rtc.is_alive() || self.events.iter().any(|e| matches!(e, Event::Closed))
    }
}

struct World {
    now: Instant,
    sfu: Sfu,
    sfu_addr: SocketAddr,
    peers: Vec<Peer>,
    sfu_events: Vec<SfuEvent>,
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        let sfu_addr = addr(1, 8443);
        Self { now, sfu: Sfu::new(sfu_addr, now), sfu_addr, peers: Vec::new(), sfu_events: Vec::new() }
    }

    fn add_peer(&mut self, host: u8, config: RtcConfig) -> Result<usize> {
        let a = addr(host, 5000);
        let mut rtc = config.build(self.now);
        rtc.add_local_candidate(Candidate::host(a, "udp")?);
        self.peers.push(Peer { rtc, addr: a, events: Vec::new() });
        Ok(self.peers.len() - 1)
    }

    /// The peer's SDP offer for the given transceivers.
    fn offer(&mut self, peer: usize, media: &[(MediaKind, Direction)]) -> (String, SdpPendingOffer, Vec<Mid>) {
        let mut api = self.peers[peer].rtc.sdp_api();
        let mids = media.iter().map(|(k, d)| api.add_media(*k, *d, None, None, None)).collect();
        let (offer, pending) = api.apply().expect("invariant: an offer with media");
        (offer.to_sdp_string(), pending, mids)
    }

    fn accept(&mut self, peer: usize, pending: SdpPendingOffer, answer: &str) -> Result<()> {
        let answer = SdpAnswer::from_sdp_string(answer)?;
        self.peers[peer].rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(())
    }

    /// Offer from `peer`, publish it as `participant`, apply the answer.
    fn publish(&mut self, peer: usize, participant: &str, media: &[(MediaKind, Direction)]) -> Result<(SessionId, Vec<Mid>)> {
        let (offer, pending, mids) = self.offer(peer, media);
        let (session, answer) = self.sfu.publish(&stage(), &pid(participant), &offer, self.now)?;
        self.accept(peer, pending, &answer)?;
        Ok((session, mids))
    }

    fn subscribe(&mut self, peer: usize, subscriber: &str, publisher: &str) -> Result<(SessionId, Vec<Mid>)> {
        let media = [(MediaKind::Audio, Direction::RecvOnly), (MediaKind::Video, Direction::RecvOnly)];
        let (offer, pending, mids) = self.offer(peer, &media);
        let (session, answer) = self.sfu.subscribe(&stage(), &pid(subscriber), &pid(publisher), &offer, self.now)?;
        self.accept(peer, pending, &answer)?;
        Ok((session, mids))
    }

    /// Move every pending packet once, then advance the clock by one step.
    fn step(&mut self) -> Result<()> {
        for p in self.peers.iter_mut() {
            while p.rtc.is_alive() {
                match p.rtc.poll_output()? {
                    Output::Transmit(t) => self.sfu.handle_receive(self.now, p.addr, t.destination, &t.contents),
                    Output::Event(e) => p.events.push(e),
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
                    let input = Input::Receive(self.now, Receive::new(Protocol::Udp, self.sfu_addr, peer.addr, &t.bytes)?);
                    peer.rtc.handle_input(input)?;
                }
                SfuOutput::Event(e) => self.sfu_events.push(e),
                SfuOutput::Timeout(_) => break,
            }
        }
        self.now += STEP;
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

    fn published(&self, participant: &str) -> Option<Vec<String>> {
        self.sfu_events.iter().find_map(|e| match e {
            SfuEvent::PublishStarted { participant: p, kinds, .. } if p.as_str() == participant => Some(kinds.clone()),
            _ => None,
        })
    }

    fn stopped(&self, participant: &str) -> bool {
        self.sfu_events
            .iter()
            .any(|e| matches!(e, SfuEvent::PublishStopped { participant: p, .. } if p.as_str() == participant))
    }

    fn pt(&mut self, peer: usize, mid: Mid, codec: Codec) -> Result<str0m::media::Pt> {
        let writer = self.peers[peer].rtc.writer(mid).ok_or_else(|| anyhow!("no writer for {mid}"))?;
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .ok_or_else(|| anyhow!("{codec:?} was not negotiated"))?;
        Ok(pt)
    }

    fn write(&mut self, peer: usize, mid: Mid, pt: str0m::media::Pt, time: MediaTime, data: Vec<u8>) -> Result<()> {
        let now = self.now;
        let writer = self.peers[peer].rtc.writer(mid).ok_or_else(|| anyhow!("no writer for {mid}"))?;
        writer.write(pt, now, time, data)?;
        Ok(())
    }
}

fn send_only() -> [(MediaKind, Direction); 2] {
    [(MediaKind::Audio, Direction::SendOnly), (MediaKind::Video, Direction::SendOnly)]
}

fn vp8_frame(i: u8) -> Vec<u8> {
    // First byte bit 0 clear: a VP8 keyframe header; the rest is opaque.
    vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, i, i.wrapping_mul(7), 0xAB]
}

fn opus_frame(i: u8) -> Vec<u8> {
    vec![0xFC, 0xFF, 0xFE, i, 0x42]
}

#[test]
fn vp8_and_opus_frames_reach_the_subscriber_and_keyframe_requests_reach_the_publisher() -> Result<()> {
    let mut w = World::new();
    let alice = w.add_peer(2, Rtc::builder())?;
    let bob = w.add_peer(3, Rtc::builder())?;

    let (_, pub_mids) = w.publish(alice, "alice", &send_only())?;
    let (a_audio, a_video) = (pub_mids[0], pub_mids[1]);
    w.run_until(Duration::from_secs(5), "publisher connected", |w| {
        w.peers[0].rtc.is_connected() && w.published("alice").is_some()
    })?;
    assert_eq!(w.published("alice"), Some(vec!["audio".to_owned(), "video".to_owned()]));

    let vp8 = w.pt(alice, a_video, Codec::Vp8)?;
    let opus = w.pt(alice, a_audio, Codec::Opus)?;

    // Media flows before anyone subscribes (the SFU just drops it).
    let mut frame: u64 = 0;
    for _ in 0..5 {
        w.write(alice, a_video, vp8, MediaTime::from_90khz(frame * 3000), vp8_frame(frame as u8))?;
        w.write(alice, a_audio, opus, MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ), opus_frame(frame as u8))?;
        frame += 1;
        w.run_for(Duration::from_millis(20))?;
    }
    let before = w.peers[alice].keyframe_requests();

    let (_, sub_mids) = w.subscribe(bob, "bob", "alice")?;
    let (b_audio, b_video) = (sub_mids[0], sub_mids[1]);
    w.run_until(Duration::from_secs(5), "subscriber connected", |w| w.peers[1].rtc.is_connected())?;
    w.run_for(Duration::from_millis(50))?;

    // A new subscriber makes the SFU ask the publisher for a keyframe.
    w.run_until(Duration::from_secs(2), "keyframe request for the new subscriber", |w| {
        w.peers[0].keyframe_requests() > before
    })?;

    let first_forwarded = frame;
    for _ in 0..40 {
        w.write(alice, a_video, vp8, MediaTime::from_90khz(frame * 3000), vp8_frame(frame as u8))?;
        w.write(alice, a_audio, opus, MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ), opus_frame(frame as u8))?;
        frame += 1;
        w.run_for(Duration::from_millis(20))?;
    }
    w.run_for(Duration::from_millis(200))?;

    let video = w.peers[bob].media_data(b_video);
    let audio = w.peers[bob].media_data(b_audio);
    let sent_video: Vec<Vec<u8>> = (first_forwarded..frame).map(|i| vp8_frame(i as u8)).collect();
    let sent_audio: Vec<Vec<u8>> = (first_forwarded..frame).map(|i| opus_frame(i as u8)).collect();
    // The frames written after the subscription arrive byte for byte, in
    // order. The receiving peer may hold back the first packet of a new
    // stream and the last frame may still sit in its reorder buffer.
    assert_contiguous_run("video", &video, &sent_video)?;
    assert_contiguous_run("audio", &audio, &sent_audio)?;

    // A PLI from the subscriber turns into one to the publisher.
    w.run_for(Duration::from_millis(300))?;
    w.peers[alice].events.clear();
    w.peers[bob]
        .rtc
        .writer(b_video)
        .context("subscriber writer")?
        .request_keyframe(None, KeyframeRequestKind::Pli)?;
    w.run_until(Duration::from_secs(2), "subscriber's PLI at the publisher", |w| w.peers[0].keyframe_requests() > 0)?;
    Ok(())
}

fn assert_contiguous_run(what: &str, got: &[Vec<u8>], sent: &[Vec<u8>]) -> Result<()> {
    ensure!(got.len() + 2 >= sent.len(), "only {} of {} {what} frames arrived", got.len(), sent.len());
    let first = got.first().context("nothing arrived")?;
    let pos = sent.iter().position(|f| f == first).with_context(|| format!("unexpected {what} frame {first:?}"))?;
    ensure!(pos <= 1, "{what}: the first {pos} frames were lost");
    assert_eq!(got, &sent[pos..pos + got.len()], "{what} frames differ");
    Ok(())
}

#[test]
fn h264_frames_are_forwarded_with_payload_type_mapping() -> Result<()> {
    let mut w = World::new();
    // The publisher only speaks H.264; the subscriber offers everything.
    let alice = w.add_peer(2, Rtc::builder().clear_codecs().enable_h264(true).enable_opus(true, false))?;
    let bob = w.add_peer(3, Rtc::builder())?;
    let (_, pub_mids) = w.publish(alice, "alice", &send_only())?;
    let a_video = pub_mids[1];
    w.run_until(Duration::from_secs(5), "publisher connected", |w| w.published("alice").is_some())?;
    let (_, sub_mids) = w.subscribe(bob, "bob", "alice")?;
    let b_video = sub_mids[1];
    w.run_until(Duration::from_secs(5), "subscriber connected", |w| w.peers[1].rtc.is_connected())?;
    w.run_for(Duration::from_millis(50))?;

    let h264 = w.pt(alice, a_video, Codec::H264)?;
    // An IDR slice larger than one packet (FU-A fragmented), then small P slices.
    let mut sent = Vec::new();
    for i in 0..10u8 {
        let mut nal = vec![0, 0, 0, 1, if i == 0 { 0x65 } else { 0x41 }];
        let len = if i == 0 { 3000 } else { 200 };
        nal.extend((0..len).map(|j| (j as u8).wrapping_add(i)));
        w.write(alice, a_video, h264, MediaTime::from_90khz(u64::from(i) * 3000), nal.clone())?;
        sent.push(nal);
        w.run_for(Duration::from_millis(33))?;
    }
    w.run_for(Duration::from_millis(200))?;
    let got = w.peers[bob].media_data(b_video);
    assert_contiguous_run("H.264", &got, &sent)?;
    Ok(())
}

#[test]
fn removing_the_publisher_closes_its_subscriptions() -> Result<()> {
    let mut w = World::new();
    let alice = w.add_peer(2, Rtc::builder())?;
    let bob = w.add_peer(3, Rtc::builder())?;
    w.publish(alice, "alice", &send_only())?;
    w.run_until(Duration::from_secs(5), "publisher connected", |w| w.published("alice").is_some())?;
    let (bob_session, _) = w.subscribe(bob, "bob", "alice")?;
    w.run_until(Duration::from_secs(5), "subscriber connected", |w| w.peers[1].rtc.is_connected())?;
    assert_eq!(w.sfu.session_count(), 2);

    w.sfu.remove_participant(&stage(), &pid("alice"), w.now);
    w.run_until(Duration::from_secs(3), "subscriber sees the close", |w| w.peers[1].closed())?;
    assert!(w.stopped("alice"));
    assert_eq!(w.sfu.session_count(), 0);
    assert!(!w.sfu.has_session(&bob_session));
    assert!(w.sfu.publishers(&stage()).is_empty());
    // Nobody to subscribe to any more.
    let err = w.subscribe(bob, "bob", "alice").err().context("subscribe after the publisher left")?;
    assert_eq!(err.downcast_ref::<SfuError>(), Some(&SfuError::PublisherNotFound(pid("alice"))));
    Ok(())
}

#[test]
fn a_silent_peer_is_dropped() -> Result<()> {
    let mut w = World::new();
    let alice = w.add_peer(2, Rtc::builder())?;
    w.publish(alice, "alice", &send_only())?;
    w.run_until(Duration::from_secs(5), "publisher connected", |w| w.published("alice").is_some())?;
    // The browser vanishes: no more packets from it, only the SFU's clock runs.
    w.peers.clear();
    let end = w.now + Duration::from_secs(60);
    while w.now < end && !w.stopped("alice") {
        loop {
            match w.sfu.poll_output() {
                SfuOutput::Event(e) => w.sfu_events.push(e),
                SfuOutput::Transmit(_) => {}
                SfuOutput::Timeout(_) => break,
            }
        }
        w.now += Duration::from_millis(100);
        w.sfu.handle_timeout(w.now);
    }
    ensure!(w.stopped("alice"), "the silent publisher was not dropped");
    Ok(())
}

#[test]
fn a_session_that_never_connects_times_out() -> Result<()> {
    let mut w = World::new();
    let alice = w.add_peer(2, Rtc::builder())?;
    let (offer, _, _) = w.offer(alice, &send_only());
    let (session, _) = w.sfu.publish(&stage(), &pid("alice"), &offer, w.now)?;
    assert!(w.sfu.has_session(&session));
    let mut t = w.now;
    let mut events = Vec::new();
    for _ in 0..400 {
        t += Duration::from_millis(100);
        w.sfu.handle_timeout(t);
        loop {
            match w.sfu.poll_output() {
                SfuOutput::Event(e) => events.push(e),
                SfuOutput::Transmit(_) => {}
                SfuOutput::Timeout(_) => break,
            }
        }
    }
    assert!(!w.sfu.has_session(&session));
    assert_eq!(w.sfu.session_count(), 0);
    // Said although it never started: a WHIP-only member leaves with it.
    assert_eq!(events, [SfuEvent::PublishStopped { stage: stage(), participant: pid("alice"), session }]);
    Ok(())
}

#[test]
fn the_thirteenth_publisher_is_refused() -> Result<()> {
    let mut w = World::new();
    for i in 0..MAX_PUBLISHERS_PER_STAGE {
        let peer = w.add_peer(10 + i as u8, Rtc::builder())?;
        w.publish(peer, &format!("p{i}"), &send_only())?;
    }
    let extra = w.add_peer(100, Rtc::builder())?;
    let (offer, _, _) = w.offer(extra, &send_only());
    let err = w.sfu.publish(&stage(), &pid("p-extra"), &offer, w.now).err().context("13th publisher accepted")?;
    assert_eq!(err, SfuError::StageAtCapacity(stage()));

    // Publishing again as one of the twelve replaces that session.
    let again = w.add_peer(101, Rtc::builder())?;
    let (offer, _, _) = w.offer(again, &send_only());
    w.sfu.publish(&stage(), &pid("p0"), &offer, w.now)?;
    assert_eq!(w.sfu.publishers(&stage()).len(), MAX_PUBLISHERS_PER_STAGE);

    // Another stage has its own limit.
    let other = w.add_peer(102, Rtc::builder())?;
    let (offer, _, _) = w.offer(other, &send_only());
    w.sfu.publish(&StageId::from("stage-2"), &pid("p-extra"), &offer, w.now)?;

    // When one leaves, there is room again.
    w.sfu.remove_participant(&stage(), &pid("p1"), w.now);
    let (offer, _, _) = w.offer(extra, &send_only());
    w.sfu.publish(&stage(), &pid("p-extra"), &offer, w.now)?;
    Ok(())
}

#[test]
fn bad_requests_are_refused_with_typed_errors() -> Result<()> {
    let mut w = World::new();
    let err = w.sfu.publish(&stage(), &pid("a"), "not sdp at all", w.now).err().context("garbage accepted")?;
    assert!(matches!(err, SfuError::InvalidSdp(_)), "{err:?}");
    let err = w.sfu.publish(&stage(), &pid("a"), "", w.now).err().context("empty accepted")?;
    assert!(matches!(err, SfuError::InvalidSdp(_)), "{err:?}");

    let bob = w.add_peer(3, Rtc::builder())?;
    let (offer, _, _) = w.offer(bob, &[(MediaKind::Video, Direction::RecvOnly)]);
    let err = w.sfu.subscribe(&stage(), &pid("bob"), &pid("nobody"), &offer, w.now).err().context("subscribed to nobody")?;
    assert_eq!(err, SfuError::PublisherNotFound(pid("nobody")));

    // Only the owner may close a session.
    let alice = w.add_peer(2, Rtc::builder())?;
    let (session, _) = w.publish(alice, "alice", &send_only())?;
    assert_eq!(
        w.sfu.close_session(&session, Some(&pid("mallory")), w.now),
        Err(SfuError::SessionNotFound(session.clone()))
    );
    w.sfu.close_session(&session, Some(&pid("alice")), w.now)?;
    assert!(!w.sfu.has_session(&session));
    assert_eq!(
        w.sfu.close_session(&session, Some(&pid("alice")), w.now),
        Err(SfuError::SessionNotFound(session.clone()))
    );
    Ok(())
}


#[test]
fn a_chrome_style_offer_gets_an_ice_lite_answer() -> Result<()> {
    let mut w = World::new();
    let (session, answer) = w.sfu.publish(&stage(), &pid("chrome"), common::CHROME_SENDONLY_OFFER, w.now)?;
    assert!(w.sfu.has_session(&session));
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains(&format!("{} typ host", "10.0.0.1 8443")), "{answer}");
    assert!(answer.contains("a=group:BUNDLE 0 1"), "{answer}");
    assert!(answer.contains("a=mid:0") && answer.contains("a=mid:1"), "{answer}");
    assert_eq!(answer.matches("a=recvonly").count(), 2, "{answer}");
    assert!(answer.contains("opus/48000/2"), "{answer}");
    assert!(answer.contains("VP8/90000") || answer.contains("H264/90000"), "{answer}");
    assert!(answer.contains("a=rtcp-mux"), "{answer}");
    // The answer is itself valid SDP.
    SdpAnswer::from_sdp_string(&answer)?;

    // The same offer turned into a recvonly one subscribes.
    let recv = common::CHROME_SENDONLY_OFFER.replace("a=sendonly", "a=recvonly").replace("a=ice-ufrag:Xk1v", "a=ice-ufrag:Yk2w");
    let (_, answer) = w.sfu.subscribe(&stage(), &pid("viewer"), &pid("chrome"), &recv, w.now)?;
    assert_eq!(answer.matches("a=sendonly").count(), 2, "{answer}");
    Ok(())
}


#[test]
fn mangled_offers_are_refused_or_accepted_but_never_take_the_sfu_down() -> Result<()> {
    let mut w = World::new();
    let lines: Vec<&str> = common::CHROME_SENDONLY_OFFER.split("\r\n").collect();
    let mut offers: Vec<String> = Vec::new();
    for skip in 0..lines.len() {
        offers.push(lines.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, l)| *l).collect::<Vec<_>>().join("\r\n"));
    }
    for cut in (0..common::CHROME_SENDONLY_OFFER.len()).step_by(97) {
        offers.push(common::CHROME_SENDONLY_OFFER[..cut].to_owned());
    }
    for (from, to) in [
        ("sha-256", "sha-1"),
        ("a=setup:actpass", "a=setup:passive"),
        ("UDP/TLS/RTP/SAVPF", "RTP/AVP"),
        ("a=mid:1", "a=mid:0"),
        ("opus/48000/2", "opus/0/0"),
        ("profile-level-id=42e01f", "profile-level-id=zz"),
        ("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8/banana"),
        ("\r\n", "\n"),
        ("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2 3"),
        ("54400 typ host", "99999 typ host"),
    ] {
        offers.push(common::CHROME_SENDONLY_OFFER.replace(from, to));
    }
    let (mut accepted, mut refused) = (0, 0);
    for (i, offer) in offers.iter().enumerate() {
        match w.sfu.publish(&stage(), &pid(&format!("p{}", i % 10)), offer, w.now) {
            Ok(_) => accepted += 1,
            Err(SfuError::InvalidSdp(_)) => refused += 1,
            Err(other) => anyhow::bail!("offer {i}: unexpected {other:?}"),
        }
        while !matches!(w.sfu.poll_output(), SfuOutput::Timeout(_)) {}
    }
    assert!(accepted > 0 && refused > 0, "accepted {accepted}, refused {refused}");
    // Still serving.
    let alice = w.add_peer(2, Rtc::builder())?;
    w.publish(alice, "alice", &send_only())?;
    w.run_until(Duration::from_secs(5), "publisher connected", |w| w.published("alice").is_some())?;
    Ok(())
}
