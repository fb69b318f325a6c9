//! The IVS Player's low-latency path over HTTP: the playlist names the
//! segment being built in `EXT-X-PREFETCH`, and a GET of it answers 200 at
//! once and writes each part as it is cut (chunked), ending when the
//! segment completes, never cached as immutable. And the bounds on what a
//! viewer can make the server hold.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use reqwest::header;

mod common;
use common::channel::{go_live, test_video, wait_playlist, Broadcaster, ChannelApi};
use common::Server;

/// A server with a channel and a connected broadcaster (no media yet), the
/// test video and the channel's HLS path; `None` without ffmpeg.
async fn live_channel(name: &str) -> Result<Option<(Server, Vec<Vec<u8>>, String, Broadcaster)>> {
    let server = Server::start(name).await?;
    let Some(video) = test_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(None);
    };
    let ch = server.create_channel().await?;
    let (host, _) = go_live(&server, &ch).await?;
    Ok(Some((server, video, format!("/hls/{}", ch.id), host)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_segment_streams_its_parts_as_they_are_cut() -> Result<()> {
    let Some((server, video, hls, mut host)) = live_channel("prefetch").await? else {
        return Ok(());
    };
    let streaming = tokio::spawn(async move { host.stream(&video, 0, 150).await.map(|_| host) });

    let text = wait_playlist(&server, &hls, "a prefetch line", |s, t| s == 200 && t.contains("#EXT-X-PREFETCH:")).await?;
    ensure!(text.contains("#EXT-X-PART:") && text.contains("#EXT-X-PRELOAD-HINT"), "LL-HLS stays:\n{text}");
    let uri = text.lines().find_map(|l| l.strip_prefix("#EXT-X-PREFETCH:")).context("prefetch")?.to_owned();
    ensure!(!text.contains(&format!("\n{uri}\n")), "{uri} is not complete yet:\n{text}");

    let asked = Instant::now();
    let res = server.get(&format!("{hls}/{uri}")).await?;
    let headers_after = asked.elapsed();
    ensure!(res.status() == 200, "prefetch: {}", res.status());
    ensure!(res.headers()[header::CACHE_CONTROL] == "no-cache", "in progress: not immutable");
    ensure!(res.headers()["x-accel-buffering"] == "no", "a proxy passes it on part by part");
    ensure!(res.headers()[header::CONTENT_TYPE] == "video/iso.segment");
    ensure!(res.headers().get(header::CONTENT_LENGTH).is_none(), "chunked: its length is not known yet");
    let server_ms: i64 = res.headers()["x-server-time-ms"].to_str()?.parse()?;
    ensure!((server_ms - chrono::Utc::now().timestamp_millis()).abs() < 5000, "the server clock");
    let mut res = res;
    let mut streamed = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(8), res.chunk()).await.context("a chunk in time")?? {
        streamed.extend_from_slice(&chunk);
        arrivals.push(asked.elapsed());
    }
    let took = asked.elapsed();
    ensure!(headers_after < took, "headers ({headers_after:?}) before the end ({took:?})");
    ensure!(arrivals.len() >= 2, "written part by part: {arrivals:?}");
    let spread = arrivals.last().copied().unwrap_or_default() - arrivals.first().copied().unwrap_or_default();
    ensure!(spread >= Duration::from_millis(150), "parts arrive as they are cut, not at once: {arrivals:?}");

    // Complete now: the same URI is listed and serves exactly what was streamed, as immutable.
    let complete = server.get(&format!("{hls}/{uri}")).await?;
    ensure!(complete.headers()[header::CACHE_CONTROL].to_str()?.contains("immutable"));
    ensure!(complete.headers()[header::ACCEPT_RANGES] == "bytes", "a complete segment takes byte ranges");
    ensure!(complete.bytes().await?.to_vec() == streamed, "the streamed bytes are the segment");
    // A byte range of it (the IVS Player's bandwidth probe asks for one to
    // measure latency): 206 with exactly those bytes; past the end, 416.
    let url = format!("{}{hls}/{uri}", server.base);
    let part = server.http.get(&url).header(header::RANGE, "bytes=0-99").send().await?;
    ensure!(part.status() == 206, "a range: {}", part.status());
    ensure!(part.headers()[header::CONTENT_RANGE].to_str()? == format!("bytes 0-99/{}", streamed.len()));
    ensure!(part.bytes().await?.to_vec() == streamed[..100], "the first 100 bytes");
    let past = server.http.get(&url).header(header::RANGE, format!("bytes={}-", streamed.len())).send().await?;
    ensure!(past.status() == 416, "a range past the end: {}", past.status());
    let _host = streaming.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_than_its_share() -> Result<()> {
    let Some((server, video, hls, mut host)) = live_channel("holds").await? else {
        return Ok(());
    };
    host.stream(&video, 0, 45).await?;
    let text = wait_playlist(&server, &hls, "media", |s, t| s == 200 && t.contains("#EXT-X-PART:")).await?;
    let hint = text.lines().find_map(|l| l.split("URI=\"part").nth(1)).context("hint")?;
    let msn: u64 = hint.split('.').next().context("msn")?.parse()?;

    // The broadcaster pauses: blocking reloads for the next segment are held.
    let url = format!("{}{hls}/media.m3u8?_HLS_msn={}", server.base, msn + 1);
    let held: Vec<_> = (0..stagecast_server::channel::holds::MAX_HOLDS_PER_IP)
        .map(|_| {
            let (http, url) = (server.http.clone(), url.clone());
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let over = server.get(&format!("{hls}/media.m3u8")).await?;
    ensure!(over.status() == 429, "one request over the limit: {}", over.status());
    ensure!(over.headers().contains_key(header::RETRY_AFTER));
    // Media again: the held reloads are answered and their places given back.
    host.stream(&video, 45, 45).await?;
    for h in held {
        ensure!(h.await?? == 200, "a held reload was answered");
    }
    ensure!(server.get(&format!("{hls}/media.m3u8")).await?.status() == 200, "room again");
    Ok(())
}
