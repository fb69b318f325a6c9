//! A channel end to end: control plane, WHIP ingest from an in-process
//! str0m peer over real UDP (real H.264 from ffmpeg + Opus), LL-HLS over
//! HTTP validated with ffprobe, and the bad inputs (wrong key, second
//! broadcaster, garbage SDP, a broadcaster that vanishes).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use reqwest::header;
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::{Candidate, Event, Rtc};
use tokio::net::UdpSocket;

mod common;
use common::Server;

struct Channel {
    id: String,
    ingest: String,
    playback: String,
    key: String,
}

impl Server {
    async fn create_channel(&self) -> Result<Channel> {
        let res = self
            .http
            .post(format!("{}/v1/channels", self.base))
            .bearer_auth(&self.running.state.api_key)
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
        ensure!(ch.ingest == format!("{}/v1/channels/{}/whip", self.base, ch.id), "{}", ch.ingest);
        ensure!(ch.playback == format!("{}/hls/{}/index.m3u8", self.base, ch.id), "{}", ch.playback);
        ensure!(!ch.playback.contains(&ch.key), "no stream key in the playback URL");
        Ok(ch)
    }

    async fn channel_state(&self, id: &str) -> Result<String> {
        let res =
            self.http.get(format!("{}/v1/channels/{id}", self.base)).bearer_auth(&self.running.state.api_key).send().await?;
        let body: Value = res.json().await?;
        Ok(body["channel"]["state"].as_str().context("state")?.to_owned())
    }

    /// POST an offer; Ok((location, answer)) or Err((status, code)).
    async fn whip(&self, url: &str, key: Option<&str>, sdp: &str) -> Result<std::result::Result<(String, String), (u16, String)>> {
        let mut req = self.http.post(url).header(header::CONTENT_TYPE, "application/sdp").body(sdp.to_owned());
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
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        Ok(self.http.get(url).header(header::ORIGIN, "http://viewer.example").send().await?)
    }
}

/// A str0m peer on a real UDP socket, standing in for the host's browser.
struct Broadcaster {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    keyframe_requests: usize,
    audio_mid: Mid,
    video_mid: Mid,
    pending: Option<SdpPendingOffer>,
}

impl Broadcaster {
    async fn new() -> Result<(Self, String)> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let mut rtc = Rtc::builder().clear_codecs().enable_h264(true).enable_opus(true, false).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp")?);
        let mut api = rtc.sdp_api();
        let audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video_mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().context("offer")?;
        let me = Self { rtc, socket, addr, keyframe_requests: 0, audio_mid, video_mid, pending: Some(pending) };
        Ok((me, offer.to_sdp_string()))
    }

    fn accept(&mut self, answer: &str) -> Result<()> {
        let pending = self.pending.take().context("offer pending")?;
        self.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(answer)?)?;
        Ok(())
    }

    fn pump(&mut self) -> Result<()> {
        let keyframe_requests = &mut self.keyframe_requests;
        common::pump_udp(&mut self.rtc, &self.socket, self.addr, |e| {
            if matches!(e, Event::KeyframeRequest(_)) {
                *keyframe_requests += 1;
            }
        })
    }

    async fn connect(&mut self) -> Result<()> {
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
    async fn stream(&mut self, video: &[Vec<u8>], from: usize, frames: usize) -> Result<()> {
        let vpt = self.pt(self.video_mid, Codec::H264)?;
        let apt = self.pt(self.audio_mid, Codec::Opus)?;
        let mut opus = opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio)?;
        let start = Instant::now();
        let (mut v, mut a) = (0usize, 0u64);
        while v < frames {
            let elapsed = start.elapsed();
            if elapsed >= Duration::from_micros(v as u64 * 33_333) {
                let n = from + v;
                let au = video.get(n % video.len()).context("frame")?.clone();
                let ts = MediaTime::new(n as u64 * 3000, Frequency::NINETY_KHZ);
                self.rtc.writer(self.video_mid).context("writer")?.write(vpt, Instant::now(), ts, au)?;
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

/// 320x180 H.264 from ffmpeg, split into Annex-B access units.
fn test_video(dir: &std::path::Path) -> Result<Option<Vec<Vec<u8>>>> {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        return Ok(None);
    }
    let path = dir.join("in.h264");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=30"])
        .args(["-t", "6", "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "30"])
        .args(["-tune", "zerolatency", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
        .arg(&path)
        .status()?;
    ensure!(status.success(), "ffmpeg failed");
    Ok(Some(common::access_units(&std::fs::read(&path)?)))
}

fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split(&format!("{key}=")).nth(1)?;
    Some(rest.trim_start_matches('"').split(['"', ',']).next().unwrap_or_default())
}

/// (msn, part index) named by the preload hint.
fn preload_hint(playlist: &str) -> Option<(u64, u32)> {
    let line = playlist.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))?;
    let uri = attr(line, "URI")?;
    let (m, n) = uri.trim_start_matches("part").trim_end_matches(".m4s").split_once('.')?;
    Some((m.parse().ok()?, n.parse().ok()?))
}

async fn wait_playlist(server: &Server, hls: &str, what: &str, pred: impl Fn(u16, &str) -> bool) -> Result<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_broadcast_becomes_ll_hls_that_ffprobe_reads() -> Result<()> {
    let server = Server::start("e2e").await?;
    let Some(video) = test_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = server.create_channel().await?;
    let hls = format!("/hls/{}", ch.id);
    ensure!(server.get(&format!("{hls}/index.m3u8")).await?.status() == 404, "offline channel: 404");

    // Bad inputs.
    let (mut host, offer) = Broadcaster::new().await?;
    ensure!(server.whip(&ch.ingest, Some("sk_wrong"), &offer).await? == Err((401, "STREAM_KEY_INVALID".into())));
    ensure!(server.whip(&ch.ingest, None, &offer).await? == Err((401, "STREAM_KEY_INVALID".into())));
    ensure!(server.whip(&ch.ingest, Some(&ch.key), "v=0 garbage").await? == Err((400, "INVALID_SDP".into())));
    let missing = format!("{}/v1/channels/ch-nope/whip", server.base);
    ensure!(server.whip(&missing, Some(&ch.key), &offer).await? == Err((404, "CHANNEL_NOT_FOUND".into())));

    // Publish.
    let (location, answer) = server.whip(&ch.ingest, Some(&ch.key), &offer).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    ensure!(location.starts_with(&format!("/v1/channels/{}/whip/", ch.id)), "{location}");
    host.accept(&answer)?;
    host.connect().await?;
    ensure!(server.channel_state(&ch.id).await? == "LIVE");
    let (_second, offer2) = Broadcaster::new().await?;
    ensure!(server.whip(&ch.ingest, Some(&ch.key), &offer2).await? == Err((409, "STREAM_IN_PROGRESS".into())));

    host.stream(&video, 0, 75).await?;
    ensure!(host.keyframe_requests > 0, "the server asked for a keyframe");

    // Playlists, headers, CORS.
    let res = server.get(&ch.playback).await?;
    ensure!(res.status() == 200, "index: {}", res.status());
    ensure!(res.headers()[header::CONTENT_TYPE] == "application/vnd.apple.mpegurl");
    ensure!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN] == "*");
    ensure!(res.headers()[header::CACHE_CONTROL] == "no-cache");
    let index = res.text().await?;
    ensure!(index.contains("CODECS=\"avc1.42c00d,mp4a.40.2\"") && index.contains("RESOLUTION=320x180"), "{index}");
    let media = server.get(&format!("{hls}/media.m3u8")).await?.text().await?;
    ensure!(media.contains("#EXT-X-PART-INF:PART-TARGET=") && media.contains("CAN-BLOCK-RELOAD=YES"), "{media}");
    ensure!(media.contains("#EXTINF:"), "a complete segment after 2.5 s:\n{media}");

    // Malformed blocking params.
    ensure!(server.get(&format!("{hls}/media.m3u8?_HLS_msn=x")).await?.status() == 400);
    ensure!(server.get(&format!("{hls}/media.m3u8?_HLS_part=1")).await?.status() == 400);

    // Blocking reload: ask for the hinted part, then produce it.
    let (msn, part) = preload_hint(&media).context("preload hint")?;
    let url = format!("{}{hls}/media.m3u8?_HLS_msn={msn}&_HLS_part={part}", server.base);
    let http = server.http.clone();
    let blocked = tokio::spawn(async move {
        let started = Instant::now();
        let res = http.get(url).send().await?;
        Ok::<_, anyhow::Error>((started.elapsed(), res.status().as_u16(), res.text().await?))
    });
    // Nothing new is sent meanwhile, so the request must still be held.
    tokio::time::sleep(Duration::from_millis(400)).await;
    ensure!(!blocked.is_finished(), "the blocking request waits for the part");
    server
        .http
        .post(format!("{}/v1/channels/{}/metadata", server.base, ch.id))
        .bearer_auth(&server.running.state.api_key)
        .json(&json!({"metadata": "hello viewers"}))
        .send()
        .await?
        .error_for_status()?;
    host.stream(&video, 75, 45).await?;
    let (took, status, text) = blocked.await??;
    ensure!(status == 200, "blocking reload answered {status}");
    ensure!(took >= Duration::from_millis(400), "it was held ({took:?})");
    ensure!(text.contains(&format!("part{msn}.{part}.m4s")), "the asked part is listed:\n{text}");

    // The hinted part itself, and a part's headers.
    let res = server.get(&format!("{hls}/part{msn}.{part}.m4s")).await?;
    ensure!(res.status() == 200 && res.headers()[header::CONTENT_TYPE] == "video/iso.segment");
    ensure!(res.headers()[header::CACHE_CONTROL].to_str()?.contains("max-age"), "media is cacheable");

    // Only the stream key ends the broadcast.
    let res = server.http.delete(format!("{}{location}", server.base)).bearer_auth("sk_wrong").send().await?;
    ensure!(res.status() == 401, "DELETE with a wrong key: {}", res.status());

    // End with DELETE: ENDLIST soon after, channel offline, metadata refused.
    let res = server.http.delete(format!("{}{location}", server.base)).bearer_auth(&ch.key).send().await?;
    ensure!(res.status() == 204, "DELETE: {}", res.status());
    let ended = wait_playlist(&server, &hls, "ENDLIST", |s, t| s == 200 && t.contains("#EXT-X-ENDLIST")).await?;
    ensure!(server.channel_state(&ch.id).await? == "OFFLINE");
    let res = server
        .http
        .post(format!("{}/v1/channels/{}/metadata", server.base, ch.id))
        .bearer_auth(&server.running.state.api_key)
        .json(&json!({"metadata": "late"}))
        .send()
        .await?;
    ensure!(res.status() == 404, "metadata when offline: {}", res.status());

    // init + every segment -> ffprobe.
    let mut file = server.get(&format!("{hls}/init.mp4")).await?.bytes().await?.to_vec();
    let mut segments = 0;
    for line in ended.lines().filter(|l| l.starts_with("seg")) {
        let res = server.get(&format!("{hls}/{line}")).await?;
        ensure!(res.status() == 200, "{line}: {}", res.status());
        file.extend_from_slice(&res.bytes().await?);
        segments += 1;
    }
    ensure!(segments >= 3, "{segments} segments:\n{ended}");
    // ffmpeg's stream has a keyframe every second: segments are cut there.
    for line in ended.lines().filter_map(|l| l.strip_prefix("#EXTINF:")) {
        let d: f64 = line.trim_end_matches(',').parse()?;
        ensure!(d <= 1.5, "segment of {d} s:\n{ended}");
    }
    ensure!(ended.lines().filter(|l| l.contains("INDEPENDENT=YES")).count() >= 3, "independent parts:\n{ended}");
    let mp4 = server.dir.join("out.mp4");
    std::fs::write(&mp4, &file)?;
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width,height:format=duration"])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(&mp4)
        .output()?;
    let out = String::from_utf8_lossy(&probe.stdout);
    ensure!(probe.status.success(), "ffprobe: {}", String::from_utf8_lossy(&probe.stderr));
    ensure!(out.contains("codec_name=h264") && out.contains("codec_name=aac"), "{out}");
    ensure!(out.contains("width=320") && out.contains("height=180"), "{out}");
    let duration: f64 = out.lines().find_map(|l| l.strip_prefix("duration=")).context("duration")?.parse()?;
    ensure!((2.5..=6.0).contains(&duration), "duration {duration} for 4 s streamed");
    let decode = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&mp4).args(["-f", "null", "-"]).output()?;
    ensure!(decode.status.success(), "decode: {}", String::from_utf8_lossy(&decode.stderr));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_broadcaster_ends_the_stream_and_frees_the_channel() -> Result<()> {
    let server = Server::start("vanish").await?;
    let Some(video) = test_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = server.create_channel().await?;
    let hls = format!("/hls/{}", ch.id);
    let (mut host, offer) = Broadcaster::new().await?;
    let (_location, answer) = server.whip(&ch.ingest, Some(&ch.key), &offer).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    host.accept(&answer)?;
    host.connect().await?;
    host.stream(&video, 0, 45).await?;
    wait_playlist(&server, &hls, "first parts", |s, t| s == 200 && t.contains("#EXT-X-PART:")).await?;

    // Gone without a DELETE: no packets at all from now on.
    drop(host);
    let vanished = Instant::now();
    wait_playlist(&server, &hls, "ENDLIST after the broadcaster vanished", |s, t| {
        s == 404 || (s == 200 && t.contains("#EXT-X-ENDLIST"))
    })
    .await?;
    ensure!(vanished.elapsed() < Duration::from_secs(9), "ended within a few seconds ({:?})", vanished.elapsed());
    ensure!(server.channel_state(&ch.id).await? == "OFFLINE");

    // The channel takes a new broadcast.
    let (mut again, offer) = Broadcaster::new().await?;
    let Ok((_, answer)) = server.whip(&ch.ingest, Some(&ch.key), &offer).await? else {
        bail!("the channel did not accept a new broadcast");
    };
    again.accept(&answer)?;
    again.connect().await?;
    Ok(())
}

#[tokio::test]
async fn control_plane_needs_the_api_key_and_knows_missing_channels() -> Result<()> {
    let server = Server::start("control").await?;
    let res = server.http.post(format!("{}/v1/channels", server.base)).send().await?;
    ensure!(res.status() == 401, "no API key: {}", res.status());
    let ch = server.create_channel().await?;
    let key = server.running.state.api_key.clone();
    let res = server.http.post(format!("{}/v1/channels/{}/stop", server.base, ch.id)).bearer_auth(&key).send().await?;
    ensure!(res.status() == 404, "stop when offline: {}", res.status());
    let big = "x".repeat(1025);
    let res = server
        .http
        .post(format!("{}/v1/channels/{}/metadata", server.base, ch.id))
        .bearer_auth(&key)
        .json(&json!({ "metadata": big }))
        .send()
        .await?;
    ensure!(res.status() == 400, "metadata over 1 KB: {}", res.status());
    let res = server.http.delete(format!("{}/v1/channels/{}", server.base, ch.id)).bearer_auth(&key).send().await?;
    ensure!(res.status() == 204, "delete: {}", res.status());
    let res = server.http.get(format!("{}/v1/channels/{}", server.base, ch.id)).bearer_auth(&key).send().await?;
    ensure!(res.status() == 404, "deleted: {}", res.status());
    let body: Value = res.json().await?;
    ensure!(body["code"] == "CHANNEL_NOT_FOUND", "{body}");
    Ok(())
}

#[tokio::test]
async fn channels_survive_a_restart() -> Result<()> {
    let first = Server::start("restart").await?;
    let body: Value = first
        .http
        .post(format!("{}/v1/channels", first.base))
        .bearer_auth(&first.api_key)
        .json(&json!({"name": "kept"}))
        .send()
        .await?
        .json()
        .await?;
    let id = body["channel"]["id"].as_str().context("id")?.to_owned();
    let dir = first.stop_keeping_dir();

    let second = Server::start_in(dir).await?;
    let res = second.http.get(format!("{}/v1/channels/{id}", second.base)).bearer_auth(&second.api_key).send().await?;
    ensure!(res.status() == 200, "after restart: {}", res.status());
    let body: Value = res.json().await?;
    ensure!(body["channel"]["name"] == "kept" && body["channel"]["state"] == "OFFLINE", "{body}");
    Ok(())
}
