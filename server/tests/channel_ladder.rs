//! An ABR ladder from the broadcaster's simulcast (issue 11 item 4): a
//! str0m broadcaster sends two layers (rids `low` 320x180 and `high`
//! 640x360) over WHIP; the channel's multivariant playlist lists both, the
//! top first with the higher measured bandwidth; each rendition is a
//! playable LL-HLS stream of its own size with audio; their segments carry
//! the same media sequence numbers; keyframes are asked of both layers.

use anyhow::{ensure, Result};

mod common;
use common::channel::{listed_segments, probe_playlist, test_video_sized, wait_playlist, Broadcaster, ChannelApi};
use common::Server;

fn variants(index: &str) -> Vec<(u64, String, String)> {
    let lines: Vec<&str> = index.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let inf = w[0].strip_prefix("#EXT-X-STREAM-INF:")?;
            let attr = |name: &str| inf.split(',').find_map(|a| a.strip_prefix(name)).map(str::to_owned);
            Some((attr("BANDWIDTH=")?.parse().ok()?, attr("RESOLUTION=")?, w[1].to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_broadcast_becomes_one_rendition_per_layer() -> Result<()> {
    let server = Server::start("ladder").await?;
    let (Some(low), Some(high)) = (test_video_sized(&server.dir, 320, 180)?, test_video_sized(&server.dir, 640, 360)?) else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = server.create_channel().await?;
    let (mut host, offer) = Broadcaster::with_layers(&["low", "high"]).await?;
    ensure!(offer.contains("a=simulcast:send low;high"), "{offer}");
    let (_, answer) = server.whip(&ch.ingest, Some(&ch.key), &offer).await?.map_err(|e| anyhow::anyhow!("WHIP: {e:?}"))?;
    host.accept(&answer)?;
    host.connect().await?;
    let streaming = tokio::spawn(async move { host.stream_layers(&[&low, &high], 0, 180).await.map(|_| host) });

    let hls = format!("/hls/{}", ch.id);
    // Asked at the start, the multivariant playlist waits until each layer's bandwidth is measured.
    let index = server.get(&format!("{hls}/index.m3u8")).await?.text().await?;
    let listed = variants(&index);
    ensure!(listed.len() == 2, "two renditions:\n{index}");
    let (top, lower) = (&listed[0], &listed[1]);
    ensure!(top.1 == "640x360" && top.2 == "media.m3u8", "the top layer first, at the old URL:\n{index}");
    ensure!(lower.1 == "320x180" && lower.2 == "low/media.m3u8", "{index}");
    ensure!(top.0 > lower.0 && lower.0 > 10_000, "measured bandwidths, top above low:\n{index}");

    let top_hls = hls.clone();
    let low_hls = format!("{hls}/low");
    let enough = |s: u16, t: &str| s == 200 && t.matches("#EXTINF").count() >= 3;
    wait_playlist(&server, &low_hls, "three low segments", enough).await?;
    let host = streaming.await??;
    let top_list = wait_playlist(&server, &top_hls, "the top playlist", enough).await?;
    let low_list = wait_playlist(&server, &low_hls, "the low playlist", enough).await?;
    for list in [&top_list, &low_list] {
        ensure!(list.contains("#EXT-X-PART:") && list.contains("#EXT-X-PREFETCH:"), "LL-HLS and prefetch:\n{list}");
    }
    // The same numbers for the same stretch of time: a player switching
    // renditions asks the other playlist for the next part by number.
    let numbers = |list: &str| -> Result<Vec<u64>> { Ok(listed_segments(list)?.into_iter().map(|s| s.0).collect()) };
    let (top_msns, low_msns) = (numbers(&top_list)?, numbers(&low_list)?);
    ensure!(top_msns == low_msns, "aligned numbers: top {top_msns:?}, low {low_msns:?}");

    let top_secs = probe_playlist(&server, &top_hls, &top_list, &server.dir.join("top.mp4"), (640, 360)).await?;
    let low_secs = probe_playlist(&server, &low_hls, &low_list, &server.dir.join("low.mp4"), (320, 180)).await?;
    ensure!((top_secs - low_secs).abs() < 1.5, "both renditions hold the same stretch: {top_secs} s vs {low_secs} s");

    // Keyframes are asked of both layers together, so both cut at the same frames.
    let asked = |rid: &str| host.keyframe_requests_by_rid.iter().find(|(r, _)| r == rid).map_or(0, |(_, n)| *n);
    ensure!(asked("low") >= 1 && asked("high") >= 1, "{:?}", host.keyframe_requests_by_rid);

    // Only announced layers are renditions; a rid is never a path escape.
    for bad in ["mid/media.m3u8", "low/index.m3u8", "..%2F/media.m3u8"] {
        let status = server.get(&format!("{hls}/{bad}")).await?.status();
        ensure!(status == 404, "{bad}: {status}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_layer_broadcast_keeps_one_variant() -> Result<()> {
    let server = Server::start("ladder-single").await?;
    let Some(video) = test_video_sized(&server.dir, 320, 180)? else {
        return Ok(());
    };
    let ch = server.create_channel().await?;
    let (mut host, _) = common::channel::go_live(&server, &ch).await?;
    let streaming = tokio::spawn(async move { host.stream(&video, 0, 60).await });
    let index = server.get(&format!("/hls/{}/index.m3u8", ch.id)).await?.text().await?;
    let listed = variants(&index);
    ensure!(listed.len() == 1 && listed[0].2 == "media.m3u8" && listed[0].1 == "320x180", "{index}");
    streaming.await??;
    Ok(())
}
