//! Recordings with real WHIP broadcasters (str0m peers on real UDP, a
//! solid red H.264 picture from ffmpeg + an Opus tone): a broadcast of a
//! channel that records becomes an HLS VOD as long as the broadcast, whose
//! every URI is served and decodes, with metadata files and thumbnails
//! that are red JPEGs; a drop shorter than the reconnect window continues
//! the recording on the same media timeline, a longer one starts a new one;
//! list, delete and their 404s.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};

mod common;
use common::channel::{go_live, listed_segments, probe_playlist, Broadcaster, Channel, ChannelApi};
use common::Server;

/// 320x180 solid red H.264 (keyframe every second), as Annex-B access units.
fn red_video(dir: &std::path::Path) -> Result<Option<Vec<Vec<u8>>>> {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        return Ok(None);
    }
    let path = dir.join("red.h264");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=0xff0000:size=320x180:rate=30"])
        .args(["-t", "4", "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "30"])
        .args(["-tune", "zerolatency", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
        .arg(&path)
        .status()?;
    ensure!(status.success(), "ffmpeg failed");
    Ok(Some(common::access_units(&std::fs::read(&path)?)))
}

async fn recording_channel(server: &Server, window: u32, thumbnails: u32) -> Result<Channel> {
    let body = json!({
        "name": "show",
        "recordingConfiguration": {
            "recordingReconnectWindowSeconds": window,
            "thumbnailConfiguration": {"recordingMode": "INTERVAL", "targetIntervalSeconds": thumbnails},
        },
    });
    let created = server.ok(Method::POST, "/v1/channels", Some(body)).await?;
    let c = &created["channel"];
    ensure!(c["recordingConfiguration"]["recordingReconnectWindowSeconds"] == window, "{created}");
    ensure!(c["recordingConfiguration"]["thumbnailConfiguration"]["targetIntervalSeconds"] == thumbnails, "{created}");
    Ok(Channel {
        id: c["id"].as_str().context("id")?.to_owned(),
        ingest: c["ingestEndpoint"].as_str().context("ingest")?.to_owned(),
        playback: c["playbackUrl"].as_str().context("playback")?.to_owned(),
        key: created["streamKey"].as_str().context("key")?.to_owned(),
    })
}

async fn recordings(server: &Server, channel: &str) -> Result<Vec<Value>> {
    let listed = server.ok(Method::GET, &format!("/v1/channels/{channel}/recordings"), None).await?;
    Ok(listed["recordings"].as_array().context("recordings")?.clone())
}

/// Wait until the channel has `count` recordings, all ended.
async fn wait_ended(server: &Server, channel: &str, count: usize) -> Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = recordings(server, channel).await?;
        if list.len() == count && list.iter().all(|r| r["state"] == "ENDED") {
            return Ok(list);
        }
        ensure!(Instant::now() < deadline, "{count} ended recordings; have {list:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn delete_session(server: &Server, location: &str, key: &str) -> Result<u16> {
    let url = format!("{}{location}", server.base());
    Ok(server.http().delete(url).bearer_auth(key).send().await?.status().as_u16())
}

/// `playbackUrl` without the host and the file: the recording's HLS folder.
fn hls_dir(server: &Server, recording: &Value) -> Result<String> {
    let url = recording["playbackUrl"].as_str().context("playbackUrl")?;
    let path = url.strip_prefix(server.base()).context("same host")?;
    Ok(path.strip_suffix("/playlist.m3u8").context("playlist.m3u8")?.to_owned())
}

/// The average RGB of a JPEG's centre.
fn jpeg_centre(data: &[u8]) -> Result<(u8, u8, u8)> {
    ensure!(data.starts_with(&[0xFF, 0xD8]) && data.ends_with(&[0xFF, 0xD9]), "JPEG markers");
    let mut decoder = jpeg_decoder::Decoder::new(data);
    let pixels = decoder.decode()?;
    let info = decoder.info().context("JPEG info")?;
    ensure!(info.pixel_format == jpeg_decoder::PixelFormat::RGB24, "{:?}", info.pixel_format);
    ensure!((info.width, info.height) == (320, 180), "{}x{}", info.width, info.height);
    let at = ((usize::from(info.height) / 2) * usize::from(info.width) + usize::from(info.width) / 2) * 3;
    Ok((pixels[at], pixels[at + 1], pixels[at + 2]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_is_recorded_as_a_vod_with_thumbnails_and_metadata() -> Result<()> {
    let server = Server::start("recording").await?;
    let Some(video) = red_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = recording_channel(&server, 0, 1).await?;
    ensure!(recordings(&server, &ch.id).await?.is_empty(), "no recording before a broadcast");
    let (mut host, location) = go_live(&server, &ch).await?;
    host.stream(&video, 0, 120).await?;
    ensure!(delete_session(&server, &location, &ch.key).await? == 204);
    let list = wait_ended(&server, &ch.id, 1).await?;
    let rec = &list[0];
    ensure!(rec["channelId"] == ch.id.as_str() && rec["id"].as_str().is_some_and(|id| id.starts_with("rec-")), "{rec}");
    ensure!(rec["startTime"].as_str().is_some() && rec["endTime"].as_str().is_some(), "{rec}");

    // The VOD: every URI served, as long as the broadcast (4 s of frames).
    let dir = hls_dir(&server, rec)?;
    let res = server.get(&format!("{dir}/playlist.m3u8")).await?;
    ensure!(res.status() == 200);
    ensure!(res.headers()["content-type"] == "application/vnd.apple.mpegurl");
    ensure!(res.headers()["cache-control"].to_str()?.contains("immutable"), "an ended recording never changes");
    let playlist = res.text().await?;
    ensure!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    ensure!(!playlist.contains("#EXT-X-DISCONTINUITY"), "{playlist}");
    let listed = rec["durationSeconds"].as_f64().context("durationSeconds")?;
    let extinf = stagecast_server::channel::recording::playlist_seconds(&playlist);
    ensure!((listed - extinf).abs() < 0.01, "{listed} vs {extinf}");
    ensure!((extinf - 4.0).abs() <= 1.0, "the recording lasts as long as the broadcast: {extinf} s\n{playlist}");
    for (n, _, init) in listed_segments(&playlist)? {
        let seg = server.get(&format!("{dir}/seg{n}.m4s")).await?;
        ensure!(seg.status() == 200 && seg.headers()["content-type"] == "video/iso.segment", "seg{n}");
        let init = server.get(&format!("{dir}/{init}")).await?;
        ensure!(init.status() == 200 && init.headers()["content-type"] == "video/mp4", "{init:?}");
    }
    let probed = probe_playlist(&server, &dir, &playlist, &server.dir.join("vod.mp4"), (320, 180)).await?;
    ensure!((probed - 4.0).abs() <= 1.0, "ffprobe: {probed} s");

    // Thumbnails: about one a second, red JPEGs.
    let thumbs = rec["thumbnails"].as_array().context("thumbnails")?;
    ensure!(thumbs.len() >= 2, "{rec}");
    for t in thumbs {
        let res = server.get(t.as_str().context("url")?).await?;
        ensure!(res.status() == 200 && res.headers()["content-type"] == "image/jpeg", "{t}");
        let (r, g, b) = jpeg_centre(&res.bytes().await?)?;
        ensure!(r > 200 && g < 60 && b < 60, "a red thumbnail, got ({r}, {g}, {b})");
    }

    // IVS's metadata files.
    let base = dir.strip_suffix("/media/hls").context("layout")?;
    let started: Value = server.get(&format!("{base}/events/recording-started.json")).await?.json().await?;
    ensure!(started["recording_status"] == "RECORDING_STARTED" && started["channel_id"] == ch.id.as_str(), "{started}");
    let ended: Value = server.get(&format!("{base}/events/recording-ended.json")).await?.json().await?;
    ensure!(ended["recording_status"] == "RECORDING_ENDED" && ended["recording_id"] == rec["id"], "{ended}");
    let ms = ended["media"]["hls"]["duration_ms"].as_f64().context("duration_ms")?;
    ensure!((ms / 1000.0 - extinf).abs() < 0.01, "{ended}");
    ensure!(ended["media"]["hls"]["renditions"][0]["resolution_width"] == 320, "{ended}");
    ensure!(ended["media"]["thumbnails"]["path"] == "media/thumbnails", "{ended}");

    // One recording by id; 404s; delete removes every file.
    let id = rec["id"].as_str().context("id")?;
    let one = server.ok(Method::GET, &format!("/v1/channels/{}/recordings/{id}", ch.id), None).await?;
    ensure!(one == *rec, "{one}");
    let (status, body) = server.api(Method::GET, "/v1/channels/ch-nope/recordings", None).await?;
    ensure!(status == 404 && body["code"] == "CHANNEL_NOT_FOUND", "{status} {body}");
    let (status, body) = server.api(Method::DELETE, &format!("/v1/channels/{}/recordings/rec-1", ch.id), None).await?;
    ensure!(status == 404 && body["code"] == "RECORDING_NOT_FOUND", "{status} {body}");
    let (status, _) = server.call(Method::GET, &format!("/v1/channels/{}/recordings", ch.id), None, Some("wrong")).await?;
    ensure!(status == 401, "the API key guards the list: {status}");
    let metrics = server.http().get(format!("{}/metrics", server.base())).bearer_auth(server.api_key()).send().await?.text().await?;
    ensure!(metrics.contains("\nstagecast_recording_segments_dropped_total 0\n"), "storage kept up:\n{metrics}");
    let public: Value = server.get(&format!("/recordings/{}", ch.id)).await?.json().await?;
    ensure!(public["recordings"][0] == *rec, "players get the same list: {public}");
    let (status, _) = server.api(Method::DELETE, &format!("/v1/channels/{}/recordings/{id}", ch.id), None).await?;
    ensure!(status == 204, "delete: {status}");
    ensure!(!server.dir.join("recordings").join(&ch.id).join(id).exists(), "the files are gone");
    ensure!(server.get(&format!("{dir}/playlist.m3u8")).await?.status() == 404);
    ensure!(recordings(&server, &ch.id).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_within_the_window_continues_the_recording_and_a_longer_one_starts_another() -> Result<()> {
    // Without a broadcast reconnect window every drop ends the broadcast:
    // only the recording's window joins them.
    let server = Server::start_with("recording-window", |c| c.broadcast_reconnect_secs = 0).await?;
    let Some(video) = red_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = recording_channel(&server, 4, 10).await?;
    let (mut first, _) = go_live(&server, &ch).await?;
    first.stream(&video, 0, 60).await?;
    first.close().await?;
    drop(first);
    // Back at once: the same recording.
    let mut back: Option<(Broadcaster, String)> = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while back.is_none() {
        match go_live(&server, &ch).await {
            Ok(b) => back = Some(b),
            Err(e) => ensure!(Instant::now() < deadline, "the broadcaster gets back in: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut second, location) = back.context("back")?;
    second.stream(&video, 0, 60).await?;
    let during = recordings(&server, &ch.id).await?;
    ensure!(during.len() == 1 && during[0]["state"] == "RECORDING", "{during:?}");
    let id = during[0]["id"].as_str().context("id")?.to_owned();
    let (status, body) = server.api(Method::DELETE, &format!("/v1/channels/{}/recordings/{id}", ch.id), None).await?;
    ensure!(status == 409 && body["code"] == "RECORDING_IN_PROGRESS", "{status} {body}");
    ensure!(delete_session(&server, &location, &ch.key).await? == 204);
    let list = wait_ended(&server, &ch.id, 1).await?;
    let dir = hls_dir(&server, &list[0])?;
    let playlist = server.get(&format!("{dir}/playlist.m3u8")).await?.text().await?;
    // The second broadcast's media continues the first's timeline: no
    // discontinuity, only the date-time again (the wall clock jumped).
    ensure!(!playlist.contains("DISCONTINUITY"), "one timeline:\n{playlist}");
    ensure!(playlist.matches("#EXT-X-PROGRAM-DATE-TIME:").count() == 2, "dated again after the break:\n{playlist}");
    let segments = listed_segments(&playlist)?;
    ensure!(segments.iter().all(|s| s.2 == "init0.mp4"), "same parameters, one init:\n{playlist}");
    let seconds = list[0]["durationSeconds"].as_f64().context("duration")?;
    ensure!((seconds - 4.0).abs() <= 1.0, "two 2 s broadcasts: {seconds}\n{playlist}");
    // Played as one file, the joined media lasts what the playlist says.
    let probed = probe_playlist(&server, &dir, &playlist, &server.dir.join("joined.mp4"), (320, 180)).await?;
    ensure!((probed - seconds).abs() <= 0.1, "media {probed} s, playlist {seconds} s\n{playlist}");

    // The window has passed: the next broadcast is a new recording.
    let (mut third, location) = go_live(&server, &ch).await?;
    third.stream(&video, 0, 45).await?;
    ensure!(delete_session(&server, &location, &ch.key).await? == 204);
    let list = wait_ended(&server, &ch.id, 2).await?;
    ensure!(list[1]["id"] == id.as_str() && list[0]["id"] != id.as_str(), "newest first: {list:?}");
    let seconds = list[0]["durationSeconds"].as_f64().context("duration")?;
    ensure!((seconds - 1.5).abs() <= 1.0, "{seconds}");

    // Deleting the channel deletes its recordings.
    let (status, _) = server.api(Method::DELETE, &format!("/v1/channels/{}", ch.id), None).await?;
    ensure!(status == 204);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.dir.join("recordings").join(&ch.id).exists() {
        ensure!(Instant::now() < deadline, "the channel's recordings are deleted with it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn recording_configurations_are_checked() -> Result<()> {
    let server = Server::start("recording-config").await?;
    for bad in [
        json!({"recordingReconnectWindowSeconds": 301}),
        json!({"thumbnailConfiguration": {"recordingMode": "INTERVAL", "targetIntervalSeconds": 0}}),
        json!({"thumbnailConfiguration": {"recordingMode": "INTERVAL", "targetIntervalSeconds": 61}}),
        json!({"thumbnailConfiguration": {"recordingMode": "SOMETIMES"}}),
    ] {
        let (status, body) = server.api(Method::POST, "/v1/channels", Some(json!({"recordingConfiguration": bad}))).await?;
        ensure!(status == 400 && body["code"] == "INVALID_RECORDING_CONFIGURATION", "{bad}: {status} {body}");
    }
    let plain = server.ok(Method::POST, "/v1/channels", Some(json!({"name": "no recording"}))).await?;
    ensure!(plain["channel"].get("recordingConfiguration").is_none(), "{plain}");
    let off = json!({"thumbnailConfiguration": {"recordingMode": "DISABLED"}});
    let made = server.ok(Method::POST, "/v1/channels", Some(json!({"recordingConfiguration": off}))).await?;
    let id = made["channel"]["id"].as_str().context("id")?;
    let got = server.ok(Method::GET, &format!("/v1/channels/{id}"), None).await?;
    ensure!(got["channel"]["recordingConfiguration"]["thumbnailConfiguration"]["recordingMode"] == "DISABLED", "{got}");
    ensure!(got["channel"]["recordingConfiguration"]["recordingReconnectWindowSeconds"] == 0, "{got}");

    // UpdateChannel: set, leave, stop; checked the same way; 404 for no channel.
    let plain_id = plain["channel"]["id"].as_str().context("id")?;
    let path = format!("/v1/channels/{plain_id}");
    let set = json!({"recordingConfiguration": {"recordingReconnectWindowSeconds": 30}});
    let updated = server.ok(Method::PATCH, &path, Some(set)).await?;
    ensure!(updated["channel"]["recordingConfiguration"]["recordingReconnectWindowSeconds"] == 30, "{updated}");
    let left = server.ok(Method::PATCH, &path, Some(json!({}))).await?;
    ensure!(left["channel"]["recordingConfiguration"]["recordingReconnectWindowSeconds"] == 30, "{left}");
    let bad = json!({"recordingConfiguration": {"recordingReconnectWindowSeconds": 900}});
    let (status, body) = server.api(Method::PATCH, &path, Some(bad)).await?;
    ensure!(status == 400 && body["code"] == "INVALID_RECORDING_CONFIGURATION", "{status} {body}");
    let stopped = server.ok(Method::PATCH, &path, Some(json!({"recordingConfiguration": null}))).await?;
    ensure!(stopped["channel"].get("recordingConfiguration").is_none(), "{stopped}");
    let (status, body) = server.api(Method::PATCH, "/v1/channels/ch-nope", Some(json!({"recordingConfiguration": null}))).await?;
    ensure!(status == 404 && body["code"] == "CHANNEL_NOT_FOUND", "{status} {body}");
    Ok(())
}

/// A JWT over `payload`, signed with `key` (a playback token).
fn playback_token(key: &p384::ecdsa::SigningKey, kid: &str, payload: &Value) -> Result<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use p384::ecdsa::signature::Signer;
    let part = |v: &Value| serde_json::to_vec(v).map(|bytes| URL_SAFE_NO_PAD.encode(bytes));
    let header = json!({"alg": "ES384", "typ": "JWT", "kid": kid});
    let input = format!("{}.{}", part(&header)?, part(payload)?);
    let sig: p384::ecdsa::Signature = key.sign(input.as_bytes());
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_channels_recordings_take_its_playback_token() -> Result<()> {
    use p384::pkcs8::{EncodePublicKey, LineEnding};
    let server = Server::start("recording-private").await?;
    let Some(video) = red_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let key = p384::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let pem = p384::ecdsa::VerifyingKey::from(&key).to_public_key_pem(LineEnding::LF)?;
    let imported = server.post("/v1/playback-keys", json!({"publicKeyMaterial": pem, "name": "site"})).await?;
    let kid = imported["keyPair"]["id"].as_str().context("keyPair.id")?;
    let off = json!({"thumbnailConfiguration": {"recordingMode": "DISABLED"}});
    let body = json!({"name": "members", "authorized": true, "recordingConfiguration": off});
    let created = server.ok(Method::POST, "/v1/channels", Some(body)).await?;
    let c = &created["channel"];
    let ch = Channel {
        id: c["id"].as_str().context("id")?.to_owned(),
        ingest: c["ingestEndpoint"].as_str().context("ingest")?.to_owned(),
        playback: c["playbackUrl"].as_str().context("playback")?.to_owned(),
        key: created["streamKey"].as_str().context("key")?.to_owned(),
    };
    let (mut host, location) = go_live(&server, &ch).await?;
    host.stream(&video, 0, 60).await?;
    ensure!(delete_session(&server, &location, &ch.key).await? == 204);
    let rec = wait_ended(&server, &ch.id, 1).await?.remove(0);
    ensure!(rec["thumbnails"].as_array().is_some_and(|t| t.is_empty()), "thumbnails off: {rec}");
    let exp = chrono::Utc::now().timestamp() + 300;
    let token = playback_token(&key, kid, &json!({"aws:channel-arn": ch.id, "exp": exp}))?;
    let other = playback_token(&key, kid, &json!({"aws:channel-arn": "ch-other", "exp": exp}))?;

    let dir = hls_dir(&server, &rec)?;
    for url in [format!("/recordings/{}", ch.id), format!("{dir}/playlist.m3u8"), format!("{dir}/seg0.m4s")] {
        let refused = server.get(&url).await?;
        ensure!(refused.status() == 403, "{url} without a token: {}", refused.status());
        let refused = server.get(&format!("{url}?token={other}")).await?;
        ensure!(refused.status() == 403, "{url} with another channel's token: {}", refused.status());
    }
    let listed: Value = server.get(&format!("/recordings/{}?token={token}", ch.id)).await?.json().await?;
    ensure!(listed["recordings"][0]["id"] == rec["id"], "{listed}");
    let res = server.get(&format!("{dir}/playlist.m3u8?token={token}")).await?;
    ensure!(res.status() == 200, "{}", res.status());
    ensure!(res.headers()["cache-control"].to_str()?.starts_with("private"), "never in a shared cache");
    let playlist = res.text().await?;
    let uris: Vec<&str> = playlist
        .lines()
        .filter_map(|l| if l.starts_with('#') { l.split("URI=\"").nth(1)?.split('"').next() } else { Some(l) })
        .filter(|u| !u.is_empty())
        .collect();
    ensure!(uris.len() >= 2 && uris.iter().all(|u| u.contains("session=")), "every URI carries the session:\n{playlist}");
    for uri in uris {
        let res = server.get(&format!("{dir}/{uri}")).await?;
        ensure!(res.status() == 200, "{uri}: {}", res.status());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_left_unfinished_by_a_stopped_server_is_ended_at_the_next_start() -> Result<()> {
    let server = Server::start("recording-restart").await?;
    let Some(video) = red_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = recording_channel(&server, 300, 60).await?;
    let (mut host, location) = go_live(&server, &ch).await?;
    host.stream(&video, 0, 60).await?;
    ensure!(delete_session(&server, &location, &ch.key).await? == 204);
    // The window (300 s) is open when the server stops.
    let list = recordings(&server, &ch.id).await?;
    ensure!(list.len() == 1 && list[0]["state"] == "RECORDING" && list[0].get("endTime").is_none(), "{list:?}");
    let dir = server.stop_keeping_dir();
    let server = Server::start_in(dir).await?;
    let list = recordings(&server, &ch.id).await?;
    ensure!(list.len() == 1 && list[0]["state"] == "ENDED" && list[0]["endTime"].is_string(), "{list:?}");
    let playlist = server.get(&format!("{}/playlist.m3u8", hls_dir(&server, &list[0])?)).await?.text().await?;
    ensure!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    let seconds = list[0]["durationSeconds"].as_f64().context("duration")?;
    ensure!((seconds - 2.0).abs() <= 1.0, "{seconds}");
    Ok(())
}
