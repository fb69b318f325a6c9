//! The driver of one broadcast: a tokio task owning a str0m [`Rtc`] (ICE-lite,
//! H.264 + Opus, receive only) and its own UDP socket, like the `run()` loop
//! of str0m's chat example. Received frames go through [`MediaState`] (the
//! small piece that aligns timestamps, converts H.264 to AVCC and transcodes
//! Opus) into the broadcast's packager.

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaData, Mid, Rid, Rids};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;

use super::audio::{self, OpusToAac};
use super::broadcast::StopSignal;
use super::fmp4::{AudioParams, VIDEO_TIMESCALE};
use super::h264;
use super::ladder;
use super::lifecycle::SessionEnd;
use super::packager::PackagerConfig;
use super::{Broadcast, ChannelError};

/// A broadcast that has not connected (ICE + DTLS) by then is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A connected broadcaster that sends no media for this long is gone.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the loop wakes at least, to check the timeouts above.
const TICK: Duration = Duration::from_millis(250);

/// Media sequence numbers count half-seconds from this instant
/// (2025-01-01T00:00:00Z, Unix ms).
const MSN_EPOCH_MS: u64 = 1_735_689_600_000;

/// The packager settings of every broadcast. Media sequence numbers start
/// from the wall clock (two per second since [`MSN_EPOCH_MS`]), so each
/// broadcast has fresh, cache-safe segment URLs (segments are at least a
/// second long). They must stay below 2^31: the IVS Player keeps them in a
/// signed 32-bit integer, and from the Unix epoch (3.6e9 today) every
/// segment had the same saturated number, so it fetched the newest segment
/// again and again (~30 requests a second per viewer) and never used the
/// prefetch stream. From 2025 they reach 2^31 in 2059.
pub fn packager_config() -> PackagerConfig {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    PackagerConfig { first_msn: first_msn(ms), ..PackagerConfig::default() }
}

fn first_msn(unix_ms: u64) -> u64 {
    unix_ms.saturating_sub(MSN_EPOCH_MS) / 500
}

/// The audio track every broadcast is packaged with (the transcoder's output).
pub fn audio_params() -> AudioParams {
    AudioParams {
        asc: audio::audio_specific_config(audio::SAMPLE_RATE, audio::CHANNELS),
        sample_rate: audio::SAMPLE_RATE,
        channels: audio::CHANNELS,
    }
}

/// An accepted offer, ready to run.
pub struct IngestSetup {
    rtc: Rtc,
    udp: UdpSocket,
    candidate: SocketAddr,
}

/// Accept a WHIP offer: bind a socket, build the `Rtc`, answer. The offer
/// must carry H.264 video.
pub fn prepare(
    bind_ip: IpAddr,
    public_ip: IpAddr,
    cert: Option<&DtlsCert>,
    offer_sdp: &str,
) -> Result<(IngestSetup, String), ChannelError> {
    if !offer_sdp.contains("m=video") || !offer_sdp.to_ascii_uppercase().contains("H264/90000") {
        return Err(ChannelError::InvalidSdp("the offer needs an H.264 video section".to_owned()));
    }
    let std_socket = std::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
    std_socket.set_nonblocking(true)?;
    let udp = UdpSocket::from_std(std_socket)?;
    let candidate = SocketAddr::new(public_ip, udp.local_addr()?.port());

    let mut config = Rtc::builder().set_ice_lite(true).clear_codecs().enable_opus(true, false).enable_h264(true);
    if let Some(cert) = cert {
        config = config.set_dtls_cert(cert.clone());
    }
    let mut rtc = config.build(Instant::now());
    if let Ok(c) = Candidate::host(candidate, "udp") {
        rtc.add_local_candidate(c);
    }
    // A panic in the parser costs this request only.
    let answer = crate::sdp::accept_offer(&mut rtc, offer_sdp).map_err(|e| ChannelError::InvalidSdp(e.to_string()))?;
    if !answer.to_ascii_uppercase().contains("H264/90000") {
        return Err(ChannelError::InvalidSdp("no H.264 video could be negotiated".to_owned()));
    }
    Ok((IngestSetup { rtc, udp, candidate }, answer))
}

/// The wall clock, Unix ms.
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Maps each track's RTP clock onto one timeline starting at the first
/// packet's arrival, so audio and video line up (within network jitter).
#[derive(Default)]
struct TrackClock {
    offset: Option<i64>,
}

impl TrackClock {
    /// `rtp` is the frame's RTP time already in `rate`. The broadcaster
    /// picks RTP timestamps, so every step saturates instead of overflowing;
    /// the packager copes with the jumps that result.
    fn pts(&mut self, rtp: u64, rate: u64, arrival: Instant, base: Instant) -> u64 {
        let rtp = i64::try_from(rtp).unwrap_or(i64::MAX);
        let offset = *self.offset.get_or_insert_with(|| {
            let since = u64::try_from(arrival.saturating_duration_since(base).as_micros()).unwrap_or(u64::MAX);
            let since = i64::try_from(since.saturating_mul(rate) / 1_000_000).unwrap_or(i64::MAX);
            since.saturating_sub(rtp)
        });
        u64::try_from(rtp.saturating_add(offset)).unwrap_or(0)
    }
}

/// `time` (numerator over `rate` Hz) in the `to` clock, saturating.
fn rescale(numer: u64, rate: u64, to: u32) -> u64 {
    let scaled = u128::from(numer) * u128::from(to) / u128::from(rate.max(1));
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

fn lost(why: &str) -> SessionEnd {
    SessionEnd::Lost(why.to_owned())
}

/// The video layers of a session: one without simulcast, else one per rid.
struct VideoLayers {
    mid: Mid,
    /// Every rid (empty without simulcast): a keyframe request goes to all,
    /// so the renditions cut their segments at the same frames.
    rids: Vec<Rid>,
    /// The top layer (the broadcast's own packager); `None` without simulcast.
    top: Option<Rid>,
}

/// Per-session media handling: what to do with each received frame.
struct MediaState {
    base: Option<Instant>,
    /// One clock per layer: each maps its own RTP times onto the timeline.
    video_clocks: Vec<(Option<Rid>, TrackClock)>,
    audio_clock: TrackClock,
    transcoder: Option<OpusToAac>,
    video: Option<VideoLayers>,
    last_media: Option<Instant>,
    /// Video frames refused so far (logged at warn the first time only).
    refused_video: u64,
}

impl MediaState {
    /// The first video frame: learn the layers (the offer's simulcast rids)
    /// and tell the broadcast which lower renditions to expect.
    fn learn_layers(&mut self, rtc: &Rtc, data: &MediaData, broadcast: &Broadcast) {
        if self.video.is_some() || data.params.spec().codec != Codec::H264 {
            return;
        }
        let rids: Vec<Rid> = match rtc.media(data.mid).map(|m| m.rids_rx()) {
            Some(Rids::Specific(list)) => list.clone(),
            _ => Vec::new(),
        };
        let names: Vec<String> = rids.iter().map(|r| r.to_string()).collect();
        let top = ladder::top_rid(&names).map(Rid::from);
        let lower = names.iter().filter(|n| Some(n.as_str()) != top.as_deref()).cloned().collect();
        tracing::info!(channel = %broadcast.channel, rids = ?names, "ingest video layers");
        broadcast.expect_renditions(lower);
        self.video = Some(VideoLayers { mid: data.mid, rids, top });
    }

    /// Handle one frame of `session`; true when a keyframe should be requested.
    fn on_media(&mut self, data: &MediaData, broadcast: &Broadcast, session: &str) -> bool {
        self.last_media = Some(data.network_time.max(self.last_media.unwrap_or(data.network_time)));
        let base = *self.base.get_or_insert(data.network_time);
        let rate = u64::from(data.time.denom()).max(1);
        match data.params.spec().codec {
            Codec::H264 => {
                let rtp = rescale(data.time.numer(), rate, VIDEO_TIMESCALE);
                if !self.video_clocks.iter().any(|(r, _)| *r == data.rid) && self.video_clocks.len() < 8 {
                    self.video_clocks.push((data.rid, TrackClock::default()));
                }
                let Some((_, clock)) = self.video_clocks.iter_mut().find(|(r, _)| *r == data.rid) else { return false };
                let pts = clock.pts(rtp, u64::from(VIDEO_TIMESCALE), data.network_time, base);
                let Some(au) = h264::access_unit_from_annex_b(&data.data) else { return false };
                let push = |p: &mut super::packager::Packager| (p.push_video(pts, au, wall_ms()), p.wants_keyframe());
                let top = self.video.as_ref().and_then(|v| v.top);
                let pushed = match data.rid {
                    Some(rid) if Some(rid) != top => broadcast.ingest_rendition(session, &rid, push),
                    _ => broadcast.ingest(session, data.network_time, push),
                };
                let Some((pushed, wants_keyframe)) = pushed else { return false };
                if let Err(reason) = pushed {
                    self.refused_video += 1;
                    if self.refused_video == 1 {
                        tracing::warn!(%session, %reason, "video frame refused; waiting for a keyframe");
                    } else {
                        tracing::debug!(%session, %reason, refused = self.refused_video, "video frame refused");
                    }
                }
                wants_keyframe
            }
            Codec::Opus => {
                let rtp = rescale(data.time.numer(), rate, audio::SAMPLE_RATE);
                let pts = self.audio_clock.pts(rtp, u64::from(audio::SAMPLE_RATE), data.network_time, base);
                if self.transcoder.is_none() {
                    match OpusToAac::new() {
                        Ok(t) => self.transcoder = Some(t),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot create the audio transcoder");
                            return false;
                        }
                    }
                }
                let Some(t) = self.transcoder.as_mut() else { return false };
                match t.push(pts, &data.data) {
                    Ok(frames) if !frames.is_empty() => {
                        let fed = broadcast.ingest(session, data.network_time, |p| {
                            for (pts, frame) in &frames {
                                p.push_audio(*pts, frame.clone());
                            }
                        });
                        // Every rendition carries the same audio.
                        if fed.is_some() {
                            broadcast.with_ladder(|l| {
                                l.each(|p| {
                                    for (pts, frame) in &frames {
                                        p.push_audio(*pts, frame.clone());
                                    }
                                })
                            });
                        }
                    }
                    Ok(_) => {}
                    // One undecodable packet is not worth ending the broadcast.
                    Err(e) => tracing::debug!(error = %e, "audio packet dropped"),
                }
                false
            }
            _ => false,
        }
    }
}

/// Drive ingest session `session` until the peer leaves, goes silent, or
/// `stop` says how to end. Returns why it ended.
pub async fn run(setup: IngestSetup, broadcast: Arc<Broadcast>, session: String, mut stop: StopSignal) -> SessionEnd {
    let IngestSetup { mut rtc, udp, candidate } = setup;
    let started = Instant::now();
    let mut connected = false;
    let mut media = MediaState {
        base: None,
        video_clocks: Vec::new(),
        audio_clock: TrackClock::default(),
        transcoder: None,
        video: None,
        last_media: None,
        refused_video: 0,
    };
    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = loop {
            let polled = match std::panic::catch_unwind(AssertUnwindSafe(|| rtc.poll_output())) {
                Ok(p) => p,
                Err(_) => return lost("panic in the WebRTC stack"),
            };
            match polled {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    if let Err(e) = udp.send_to(&t.contents, t.destination).await {
                        tracing::debug!(error = %e, "ingest UDP send failed");
                    }
                }
                Ok(Output::Event(event)) => match event {
                    Event::Connected => {
                        connected = true;
                        tracing::info!(%session, "ingest session connected");
                    }
                    Event::MediaData(data) => {
                        media.learn_layers(&rtc, &data, &broadcast);
                        let wants_keyframe = media.on_media(&data, &broadcast, &session);
                        if let (true, Some(video)) = (wants_keyframe, &media.video) {
                            if let Some(mut writer) = rtc.writer(video.mid) {
                                // Not possible only before the track is set up; the
                                // packager asks again if the keyframe does not come.
                                if video.rids.is_empty() {
                                    let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
                                }
                                for rid in &video.rids {
                                    let _ = writer.request_keyframe(Some(*rid), KeyframeRequestKind::Pli);
                                }
                            }
                        }
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return lost("ICE disconnected");
                    }
                    // A DTLS close_notify: the broadcaster closed its peer
                    // connection on purpose (a page that stops or leaves
                    // without its WHIP DELETE getting through first). A lost
                    // link never says goodbye, so this is not a drop to wait
                    // out in the reconnect window.
                    Event::Closed => {
                        tracing::info!(%session, "the broadcaster closed its connection");
                        return SessionEnd::Stopped;
                    }
                    _ => {}
                },
                Err(e) => return SessionEnd::Lost(format!("WebRTC error: {e}")),
            }
        };
        if !rtc.is_alive() {
            return lost("connection closed");
        }
        let now = Instant::now();
        if !connected && now.duration_since(started) > CONNECT_TIMEOUT {
            return lost("did not connect in time");
        }
        let silent = match media.last_media {
            Some(last) => now.saturating_duration_since(last) > MEDIA_TIMEOUT,
            None => now.duration_since(started) > CONNECT_TIMEOUT,
        };
        if connected && silent {
            return lost("no media from the broadcaster");
        }
        let wake = deadline.min(now + TICK);
        tokio::select! {
            changed = stop.changed() => {
                let end = if changed.is_err() { Some(SessionEnd::Replaced) } else { stop.borrow().clone() };
                if let Some(end) = end {
                    rtc.disconnect();
                    return end;
                }
            }
            received = udp.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    let Ok(contents) = DatagramRecv::try_from(buf.get(..n).unwrap_or_default()) else { continue };
                    let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: candidate, contents });
                    if rtc.accepts(&input) {
                        // Packets are untrusted: a panic in str0m's parsers ends this broadcast only.
                        match std::panic::catch_unwind(AssertUnwindSafe(|| rtc.handle_input(input))) {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return SessionEnd::Lost(format!("WebRTC input error: {e}")),
                            Err(_) => return lost("panic in the WebRTC stack"),
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "ingest UDP receive failed"),
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                if let Err(e) = rtc.handle_input(Input::Timeout(Instant::now())) {
                    return SessionEnd::Lost(format!("WebRTC timeout error: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_sequence_numbers_fit_a_signed_32_bit_player_for_decades() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let in_thirty_years = now + 30 * 365 * 24 * 3600 * 1000;
        assert!(first_msn(in_thirty_years) < i32::MAX as u64, "{}", first_msn(in_thirty_years));
        // Later broadcasts still start later (fresh segment URLs).
        assert!(first_msn(now + 1000) > first_msn(now));
        assert!(packager_config().first_msn <= first_msn(now + 60_000));
    }
}
