//! Channel test support: channels over the control plane, WHIP calls, a
//! str0m broadcaster on a real UDP socket, ffmpeg test video and playlist
//! polling (used by the channel ingest tests).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use reqwest::header;
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::{Candidate, Event, Rtc};
use tokio::net::UdpSocket;

use super::Server;

pub struct Channel {
    pub id: String,
    pub ingest: String,
    pub playback: String,
    pub key: String,
}

/// The channel calls of the tests, against any running server: one in
/// this process ([`Server`]) or the `stagecast` binary ([`Process`]).
#[allow(async_fn_in_trait)]
pub trait ChannelApi {
    /// Where the calls go: the server's address, API key and client.
    fn server_api(&self) -> &super::Api;

    /// `http://127.0.0.1:<port>`.
    fn base(&self) -> &str {
        &self.server_api().base
    }
    fn api_key(&self) -> &str {
        &self.server_api().api_key
    }
    fn http(&self) -> &reqwest::Client {
        &self.server_api().http
    }

    async fn create_channel(&self) -> Result<Channel> {
        let res = self
            .http()
            .post(format!("{}/v1/channels", self.base()))
            .bearer_auth(self.api_key())
            .json(&json!({"name": "show"}))
            .send()
            .await?;
        ensure!(res.status() == 200, "create channel: {}", res.status());
        let body: Value = res.json().await?;
        let c = &body["channel"];
        let ch = Channel {
            id: c["id"].as_str().context("id")?.to_owned(),
            ingest: c["ingestEndpoint"].as_str().context("ingestEndpoint")?.to_owned(),
            playback: c["playbackUrl"].as_str().context("playbackUrl")?.to_owned(),
            key: body["streamKey"].as_str().context("streamKey")?.to_owned(),
        };
        ensure!(c["state"] == "OFFLINE" && c["name"] == "show", "{body}");
        ensure!(ch.ingest == format!("{}/v1/channels/{}/whip", self.base(), ch.id), "{}", ch.ingest);
        ensure!(ch.playback == format!("{}/hls/{}/index.m3u8", self.base(), ch.id), "{}", ch.playback);
        ensure!(!ch.playback.contains(&ch.key), "no stream key in the playback URL");
        Ok(ch)
    }

    async fn channel_state(&self, id: &str) -> Result<String> {
        let res =
            self.http().get(format!("{}/v1/channels/{id}", self.base())).bearer_auth(self.api_key()).send().await?;
        let body: Value = res.json().await?;
        Ok(body["channel"]["state"].as_str().context("state")?.to_owned())
    }

    /// POST an offer; Ok((location, answer)) or Err((status, code)).
    async fn whip(&self, url: &str, key: Option<&str>, sdp: &str) -> Result<std::result::Result<(String, String), (u16, String)>> {
        let mut req = self.http().post(url).header(header::CONTENT_TYPE, "application/sdp").body(sdp.to_owned());
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        if status == 201 {
            let location = res.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).context("Location")?.to_owned();
            return Ok(Ok((location, res.text().await?)));
        }
        let body: Value = res.json().await?;
        Ok(Err((status, body["code"].as_str().unwrap_or_default().to_owned())))
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base()) };
        Ok(self.http().get(url).header(header::ORIGIN, "http://viewer.example").send().await?)
    }
}

impl ChannelApi for super::Api {
    fn server_api(&self) -> &super::Api {
        self
    }
}

impl ChannelApi for Server {
    fn server_api(&self) -> &super::Api {
        &self.api
    }
}

/// A str0m peer on a real UDP socket, standing in for the host's browser.
pub struct Broadcaster {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    pub keyframe_requests: usize,
    /// Keyframe requests per rid (simulcast only).
    pub keyframe_requests_by_rid: Vec<(String, usize)>,
    /// Simulcast rids, lowest first (empty: one plain encoding).
    rids: Vec<&'static str>,
    audio_mid: Mid,
    video_mid: Mid,
    pending: Option<SdpPendingOffer>,
}

impl Broadcaster {
    pub async fn new() -> Result<(Self, String)> {
        Self::with_layers(&[]).await
    }

    /// A broadcaster sending simulcast layers `rids` (lowest first), as a
    /// browser with `sendEncodings` does.
    pub async fn with_layers(rids: &[&'static str]) -> Result<(Self, String)> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let mut rtc = Rtc::builder().clear_codecs().enable_h264(true).enable_opus(true, false).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp")?);
        let mut api = rtc.sdp_api();
        let audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let simulcast = (!rids.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for rid in rids {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        let video_mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
        let (offer, pending) = api.apply().context("offer")?;
        let me = Self {
            rtc,
            socket,
            addr,
            keyframe_requests: 0,
            keyframe_requests_by_rid: Vec::new(),
            rids: rids.to_vec(),
            audio_mid,
            video_mid,
            pending: Some(pending),
        };
        Ok((me, offer.to_sdp_string()))
    }

    pub fn accept(&mut self, answer: &str) -> Result<()> {
        let pending = self.pending.take().context("offer pending")?;
        self.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(answer)?)?;
        Ok(())
    }

    pub fn pump(&mut self) -> Result<()> {
        let keyframe_requests = &mut self.keyframe_requests;
        let by_rid = &mut self.keyframe_requests_by_rid;
        super::pump_udp(&mut self.rtc, &self.socket, self.addr, |e| {
            if let Event::KeyframeRequest(req) = e {
                *keyframe_requests += 1;
                if let Some(rid) = req.rid {
                    match by_rid.iter_mut().find(|(r, _)| *r == *rid) {
                        Some((_, n)) => *n += 1,
                        None => by_rid.push((rid.to_string(), 1)),
                    }
                }
            }
        })
    }

    /// Close the connection as a browser's `pc.close()` does (DTLS
    /// close_notify), with no WHIP DELETE, and send the goodbye.
    pub async fn close(&mut self) -> Result<()> {
        self.rtc.close()?;
        for _ in 0..50 {
            self.pump()?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    pub async fn connect(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.rtc.is_connected() {
            ensure!(Instant::now() < deadline, "broadcaster did not connect");
            self.pump()?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    fn pt(&mut self, mid: Mid, codec: Codec) -> Result<str0m::media::Pt> {
        self.rtc
            .writer(mid)
            .context("writer")?
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .context("negotiated codec")
    }

    /// Send `video` (30 fps access units) and a 440 Hz Opus tone in real time,
    /// starting at frame `from`, for `frames` frames.
    pub async fn stream(&mut self, video: &[Vec<u8>], from: usize, frames: usize) -> Result<()> {
        self.stream_layers(&[video], from, frames).await
    }

    /// As [`Broadcaster::stream`], one video per simulcast layer (lowest
    /// first, same frame times on every layer).
    pub async fn stream_layers(&mut self, layers: &[&[Vec<u8>]], from: usize, frames: usize) -> Result<()> {
        let vpt = self.pt(self.video_mid, Codec::H264)?;
        let apt = self.pt(self.audio_mid, Codec::Opus)?;
        let mut opus = opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio)?;
        let start = Instant::now();
        let (mut v, mut a) = (0usize, 0u64);
        while v < frames {
            let elapsed = start.elapsed();
            if elapsed >= Duration::from_micros(v as u64 * 33_333) {
                let n = from + v;
                for (i, video) in layers.iter().enumerate() {
                    let au = video.get(n % video.len()).context("frame")?.clone();
                    let ts = MediaTime::new(n as u64 * 3000, Frequency::NINETY_KHZ);
                    let writer = self.rtc.writer(self.video_mid).context("writer")?;
                    let writer = match self.rids.get(i) {
                        Some(rid) => writer.rid(Rid::from(*rid)),
                        None => writer,
                    };
                    writer.write(vpt, Instant::now(), ts, au)?;
                }
                v += 1;
            }
            if elapsed >= Duration::from_millis(a * 20) {
                let samples = (from as u64 * 1600) + a * 960;
                let pcm: Vec<i16> = (0..1920)
                    .map(|i| (((samples + i / 2) as f64 / 48_000.0 * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16)
                    .collect();
                let packet = opus.encode_vec(&pcm, 4000)?;
                let ts = MediaTime::new(samples, Frequency::FORTY_EIGHT_KHZ);
                self.rtc.writer(self.audio_mid).context("writer")?.write(apt, Instant::now(), ts, packet)?;
                a += 1;
            }
            self.pump()?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

/// A new broadcaster connected to `ch` with its stream key (no media yet),
/// and the WHIP session's location.
pub async fn go_live(server: &impl ChannelApi, ch: &Channel) -> Result<(Broadcaster, String)> {
    let (mut host, offer) = Broadcaster::new().await?;
    let (location, answer) =
        server.whip(&ch.ingest, Some(&ch.key), &offer).await?.map_err(|e| anyhow::anyhow!("WHIP: {e:?}"))?;
    host.accept(&answer)?;
    host.connect().await?;
    Ok((host, location))
}

/// 320x180 H.264 from ffmpeg, split into Annex-B access units.
pub fn test_video(dir: &std::path::Path) -> Result<Option<Vec<Vec<u8>>>> {
    test_video_sized(dir, 320, 180)
}

/// `width`x`height` H.264 (a keyframe each second), as [`test_video`].
pub fn test_video_sized(dir: &std::path::Path, width: u32, height: u32) -> Result<Option<Vec<Vec<u8>>>> {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        return Ok(None);
    }
    let path = dir.join(format!("in{width}x{height}.h264"));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size={width}x{height}:rate=30"))
        .args(["-t", "6", "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "30"])
        .args(["-tune", "zerolatency", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
        .arg(&path)
        .status()?;
    ensure!(status.success(), "ffmpeg failed");
    Ok(Some(super::access_units(&std::fs::read(&path)?)))
}


pub async fn wait_playlist(server: &impl ChannelApi, hls: &str, what: &str, pred: impl Fn(u16, &str) -> bool) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let res = server.get(&format!("{hls}/media.m3u8")).await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        if pred(status, &text) {
            return Ok(text);
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}; last {status}:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A media playlist's segments in order: (msn, `EXT-X-DISCONTINUITY` before
/// it, its init URI), checking that numbers follow `EXT-X-MEDIA-SEQUENCE`
/// one by one.
pub fn listed_segments(playlist: &str) -> Result<Vec<(u64, bool, String)>> {
    let mut msn: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .context("EXT-X-MEDIA-SEQUENCE")?
        .parse()?;
    let (mut out, mut disc, mut map) = (Vec::new(), false, None::<String>);
    for line in playlist.lines() {
        if line == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if let Some(uri) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            // The file, without the content tag (`?v=`).
            map = uri.trim_end_matches('"').split('?').next().map(str::to_owned);
        } else if line.starts_with("seg") {
            ensure!(line == format!("seg{msn}.m4s"), "{line} is not msn {msn}:\n{playlist}");
            out.push((msn, std::mem::take(&mut disc), map.clone().context("EXT-X-MAP before a segment")?));
            msn += 1;
        }
    }
    Ok(out)
}

/// Fetch the init segment and every listed segment of `playlist` (all
/// under `hls`), write them as one file and check that ffprobe reads
/// H.264 and AAC at `width`x`height` and ffmpeg decodes every frame.
/// Returns the duration ffprobe reports.
pub async fn probe_playlist(server: &impl ChannelApi, hls: &str, playlist: &str, out: &std::path::Path, size: (u32, u32)) -> Result<f64> {
    let segments = listed_segments(playlist)?;
    let init = &segments.first().context("segments")?.2;
    let mut file = server.get(&format!("{hls}/{init}")).await?.bytes().await?.to_vec();
    for (msn, _, _) in &segments {
        let res = server.get(&format!("{hls}/seg{msn}.m4s")).await?;
        ensure!(res.status() == 200, "seg{msn}: {}", res.status());
        file.extend_from_slice(&res.bytes().await?);
    }
    std::fs::write(out, &file)?;
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width,height:format=duration"])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(out)
        .output()?;
    let text = String::from_utf8_lossy(&probe.stdout);
    ensure!(probe.status.success(), "ffprobe: {}", String::from_utf8_lossy(&probe.stderr));
    ensure!(text.contains("codec_name=h264") && text.contains("codec_name=aac"), "{text}");
    ensure!(text.contains(&format!("width={}", size.0)) && text.contains(&format!("height={}", size.1)), "{text}");
    let decode = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(out).args(["-f", "null", "-"]).output()?;
    ensure!(decode.status.success(), "decode: {}", String::from_utf8_lossy(&decode.stderr));
    Ok(text.lines().find_map(|l| l.strip_prefix("duration=")).context("duration")?.parse()?)
}
