//! A channel end to end: control plane, WHIP ingest from an in-process
//! str0m peer over real UDP (real H.264 from ffmpeg + Opus), LL-HLS over
//! HTTP validated with ffprobe, and the bad inputs (wrong key, second
//! broadcaster, garbage SDP, a broadcaster that vanishes).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use reqwest::header;
use serde_json::{json, Value};

mod common;
use common::channel::{listed_segments, probe_playlist, test_video, wait_playlist, Broadcaster, ChannelApi};
use common::Server;

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
    // A shared cache keeps the live playlists a second, a browser not at all.
    ensure!(res.headers()[header::CACHE_CONTROL] == "public, max-age=0, s-maxage=1");
    let index = res.text().await?;
    ensure!(index.contains("CODECS=\"avc1.42c00d,mp4a.40.2\"") && index.contains("RESOLUTION=320x180"), "{index}");
    let res = server.get(&format!("{hls}/media.m3u8")).await?;
    ensure!(res.headers()[header::CACHE_CONTROL] == "public, max-age=0, s-maxage=1");
    let media = res.text().await?;
    ensure!(media.contains("#EXT-X-PART-INF:PART-TARGET=") && media.contains("CAN-BLOCK-RELOAD=YES"), "{media}");
    ensure!(media.contains("#EXTINF:"), "a complete segment after 2.5 s:\n{media}");

    // The init: the playlist's URL tags its bytes and is cached for good;
    // the bare file (the next broadcast's too) and a stale tag revalidate.
    let map = media.lines().find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"")?.strip_suffix('"')).context("EXT-X-MAP")?;
    ensure!(map.starts_with("init.mp4?v=") && map.len() == "init.mp4?v=".len() + 16, "{map}");
    let tagged = server.get(&format!("{hls}/{map}")).await?;
    ensure!(tagged.status() == 200 && tagged.headers()[header::CACHE_CONTROL] == "public, max-age=3600, immutable");
    let bytes = tagged.bytes().await?;
    let bare = server.get(&format!("{hls}/init.mp4")).await?;
    ensure!(bare.headers()[header::CACHE_CONTROL] == "no-cache", "the bare file is each broadcast's in turn");
    ensure!(bare.bytes().await? == bytes, "the same bytes");
    let stale = server.get(&format!("{hls}/init.mp4?v=0123456789abcdef")).await?;
    ensure!(stale.status() == 200 && stale.headers()[header::CACHE_CONTROL] == "no-cache", "a tag of other bytes is not cached");

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
        let cache = res.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        Ok::<_, anyhow::Error>((started.elapsed(), res.status().as_u16(), cache, res.text().await?))
    });
    // Nothing new is sent meanwhile, so the request must still be held.
    tokio::time::sleep(Duration::from_millis(400)).await;
    ensure!(!blocked.is_finished(), "the blocking request waits for the part");
    server
        .http
        .post(format!("{}/v1/channels/{}/metadata", server.base, ch.id))
        .bearer_auth(server.running.state.auth.api_key())
        .json(&json!({"metadata": "hello viewers"}))
        .send()
        .await?
        .error_for_status()?;
    host.stream(&video, 75, 45).await?;
    let (took, status, cache, text) = blocked.await??;
    ensure!(status == 200, "blocking reload answered {status}");
    ensure!(cache == "public, max-age=2", "a blocking reload names one playlist version: cacheable ({cache})");
    ensure!(took >= Duration::from_millis(400), "it was held ({took:?})");
    ensure!(text.contains(&format!("part{msn}.{part}.m4s")), "the asked part is listed:\n{text}");

    // The hinted part itself, and a part's headers.
    let res = server.get(&format!("{hls}/part{msn}.{part}.m4s")).await?;
    ensure!(res.status() == 200 && res.headers()[header::CONTENT_TYPE] == "video/iso.segment");
    let cache = &res.headers()[header::CACHE_CONTROL];
    ensure!(cache == "public, max-age=3600, immutable", "a part asked before it was cut is cacheable once answered");

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
        .bearer_auth(server.running.state.auth.api_key())
        .json(&json!({"metadata": "late"}))
        .send()
        .await?;
    ensure!(res.status() == 404, "metadata when offline: {}", res.status());

    // init + every segment -> ffprobe.
    let segments = listed_segments(&ended)?;
    ensure!(segments.len() >= 3, "{} segments:\n{ended}", segments.len());
    // ffmpeg's stream has a keyframe every second: segments are cut there.
    for line in ended.lines().filter_map(|l| l.strip_prefix("#EXTINF:")) {
        let d: f64 = line.trim_end_matches(',').parse()?;
        ensure!(d <= 1.5, "segment of {d} s:\n{ended}");
    }
    ensure!(ended.lines().filter(|l| l.contains("INDEPENDENT=YES")).count() >= 3, "independent parts:\n{ended}");
    let duration = probe_playlist(&server, &hls, &ended, &server.dir.join("out.mp4"), (320, 180)).await?;
    ensure!((2.5..=6.0).contains(&duration), "duration {duration} for 4 s streamed");
    Ok(())
}

/// A channel on `server` with a str0m broadcaster live on it (1.5 s of
/// video streamed, parts in the playlist): `(broadcaster, channel, hls path,
/// video)`, or None without ffmpeg.
async fn live_broadcast(server: &Server) -> Result<Option<(Broadcaster, common::channel::Channel, String, Vec<Vec<u8>>)>> {
    let Some(video) = test_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(None);
    };
    let ch = server.create_channel().await?;
    let hls = format!("/hls/{}", ch.id);
    let (mut host, offer) = Broadcaster::new().await?;
    let (_location, answer) = server.whip(&ch.ingest, Some(&ch.key), &offer).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    host.accept(&answer)?;
    host.connect().await?;
    host.stream(&video, 0, 45).await?;
    wait_playlist(server, &hls, "first parts", |s, t| s == 200 && t.contains("#EXT-X-PART:")).await?;
    Ok(Some((host, ch, hls, video)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_broadcaster_ends_the_stream_after_the_reconnect_window_and_frees_the_channel() -> Result<()> {
    let server = Server::start_with("vanish", |c| c.broadcast_reconnect_secs = 2).await?;
    let Some((host, ch, hls, _video)) = live_broadcast(&server).await? else {
        return Ok(());
    };

    // Gone without a DELETE: no packets at all from now on.
    drop(host);
    let vanished = Instant::now();
    let waiting = wait_playlist(&server, &hls, "the playlist", |_, _| true).await?;
    ensure!(!waiting.contains("#EXT-X-ENDLIST"), "not ended at once:\n{waiting}");
    wait_playlist(&server, &hls, "ENDLIST after the broadcaster vanished", |s, t| {
        s == 404 || (s == 200 && t.contains("#EXT-X-ENDLIST"))
    })
    .await?;
    // Noticed within the media timeout (5 s), then the 2 s window.
    let took = vanished.elapsed();
    ensure!(took >= Duration::from_secs(2) && took < Duration::from_secs(11), "ended after the window ({took:?})");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcaster_that_closes_its_connection_ends_the_stream_at_once() -> Result<()> {
    // The default reconnect window (20 s) is for drops; a closed connection is a stop.
    let server = Server::start("closes").await?;
    let Some((mut host, ch, hls, _video)) = live_broadcast(&server).await? else {
        return Ok(());
    };

    let closed = Instant::now();
    host.close().await?;
    wait_playlist(&server, &hls, "ENDLIST after the broadcaster closed", |s, t| {
        s == 404 || (s == 200 && t.contains("#EXT-X-ENDLIST"))
    })
    .await?;
    let took = closed.elapsed();
    ensure!(took < Duration::from_secs(5), "ended only after {took:?}: waited out the reconnect window");
    ensure!(server.channel_state(&ch.id).await? == "OFFLINE");
    Ok(())
}

#[tokio::test]
async fn control_plane_needs_the_api_key_and_knows_missing_channels() -> Result<()> {
    let server = Server::start("control").await?;
    let res = server.http.post(format!("{}/v1/channels", server.base)).send().await?;
    ensure!(res.status() == 401, "no API key: {}", res.status());
    let ch = server.create_channel().await?;
    let key = server.running.state.auth.api_key().to_owned();
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
