//! Issue 8 item 3 over the real path: a WHIP broadcaster sends access units
//! whose SPS used to panic the ingest task (and left the channel LIVE for
//! good). Now the bad access units are refused, the broadcast goes on from
//! the next good keyframe, ends on request, and the channel takes a second
//! broadcast that plays.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

mod common;
use common::channel::{test_video, wait_playlist, Broadcaster, ChannelApi};
use common::h264::{sps_with_huge_scaling_delta, sps_with_huge_width, PPS};
use common::Server;

/// An Annex-B access unit: `sps`, a PPS and an IDR slice.
fn keyframe_with(sps: &[u8]) -> Vec<u8> {
    let mut au = Vec::new();
    for nal in [sps, &PPS[..], &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff][..]] {
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(nal);
    }
    au
}

fn part_count(playlist: &str) -> usize {
    playlist.lines().filter(|l| l.starts_with("#EXT-X-PART:")).count()
        + playlist.lines().filter(|l| l.starts_with("seg")).count() * 100
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_sps_cannot_lock_the_channel() -> Result<()> {
    let server = Server::start("bad-sps").await?;
    let Some(mut video) = test_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = server.create_channel().await?;
    let hls = format!("/hls/{}", ch.id);
    // Frames 40 and 50 carry the two crafted SPSes (keyframes the packager
    // must refuse); ffmpeg's next real keyframe is frame 60.
    video[40] = keyframe_with(&sps_with_huge_width());
    video[50] = keyframe_with(&sps_with_huge_scaling_delta());

    let (mut host, offer) = Broadcaster::new().await?;
    let Ok((location, answer)) = server.whip(&ch.ingest, Some(&ch.key), &offer).await? else {
        bail!("the first broadcast was not accepted");
    };
    host.accept(&answer)?;
    host.connect().await?;
    host.stream(&video, 0, 40).await?;
    let before = wait_playlist(&server, &hls, "parts before the bad SPS", |s, t| s == 200 && t.contains("#EXT-X-PART:")).await?;
    let requests_before = host.keyframe_requests;
    host.stream(&video, 40, 60).await?;

    // The ingest task survived: the stream went on after the refused frames.
    let after = wait_playlist(&server, &hls, "parts after the bad SPS", |s, t| s == 200 && part_count(t) > part_count(&before)).await?;
    ensure!(server.channel_state(&ch.id).await? == "LIVE", "still live:\n{after}");
    ensure!(host.keyframe_requests > requests_before, "a refused keyframe makes the server ask for another");

    // StopStream (the API) takes effect: ENDLIST and OFFLINE within a few seconds.
    let stopped = Instant::now();
    let (status, _) = server
        .api(reqwest::Method::POST, &format!("/v1/channels/{}/stop", ch.id), None)
        .await?;
    ensure!(status == 204, "StopStream: {status}");
    wait_playlist(&server, &hls, "ENDLIST", |s, t| s == 404 || (s == 200 && t.contains("#EXT-X-ENDLIST"))).await?;
    while server.channel_state(&ch.id).await? != "OFFLINE" {
        ensure!(stopped.elapsed() < Duration::from_secs(5), "the channel is still LIVE after StopStream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(host);
    ensure!(location.starts_with(&format!("/v1/channels/{}/whip/", ch.id)), "{location}");

    // A second broadcast is accepted (201) and plays.
    let (mut again, offer) = Broadcaster::new().await?;
    let Ok((_, answer)) = server.whip(&ch.ingest, Some(&ch.key), &offer).await? else {
        bail!("the channel did not accept a second broadcast");
    };
    again.accept(&answer)?;
    again.connect().await?;
    again.stream(&video, 60, 45).await?;
    let playlist = wait_playlist(&server, &hls, "the second broadcast's parts", |s, t| {
        s == 200 && t.contains("#EXT-X-PART:") && !t.contains("#EXT-X-ENDLIST")
    })
    .await?;
    let init = server.get(&format!("{hls}/init.mp4")).await?;
    ensure!(init.status() == 200, "init of the second broadcast: {}\n{playlist}", init.status());
    ensure!(server.channel_state(&ch.id).await? == "LIVE");
    Ok(())
}
