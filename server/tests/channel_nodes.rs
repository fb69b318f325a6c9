//! A channel ingested on one node plays from another (distributed mode,
//! `--redis` with a real `redis-server`): node B forwards HLS requests for
//! node A's broadcast to A and streams the answers back unchanged — the same
//! playlist, the same part bytes, the same cache headers — and a channel
//! nobody ingests stays 404 on both. A broadcaster that reconnects through
//! the other node resumes its broadcast where it is.

use anyhow::{ensure, Context, Result};
use reqwest::header;
use stagecast_server::Config;

mod common;
use common::channel::{go_live, listed_segments, test_video, wait_playlist, Channel, ChannelApi};
use common::redis::RedisServer as Redis;
use common::{temp_dir, Server};

/// Nodes `a` and `b` sharing `redis`.
async fn two_nodes(redis: &Redis, test: &str) -> Result<(Server, Server)> {
    let node = |name: &str| -> Result<Config> {
        let mut config = Config::for_tests(temp_dir(&format!("{test}-{name}"))?);
        config.redis = Some(redis.url().parse().map_err(anyhow::Error::msg)?);
        config.node_id = Some(name.to_owned());
        Ok(config)
    };
    Ok((Server::start_config(node("a")?).await?, Server::start_config(node("b")?).await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_b_plays_a_broadcast_ingested_on_node_a() -> Result<()> {
    let redis = Redis::start()?;
    let (a, b) = two_nodes(&redis, "channel-node").await?;
    let Some(video) = test_video(&a.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = a.create_channel().await?;
    let hls = format!("/hls/{}", ch.id);
    ensure!(b.get(&format!("{hls}/media.m3u8")).await?.status() == 404, "offline everywhere: 404 on B");

    let (mut host, _location) = go_live(&a, &ch).await?;
    let (streamed, on_b) = tokio::join!(host.stream(&video, 0, 150), async {
        wait_playlist(&b, &hls, "two segments through node B", |status, text| {
            status == 200 && listed_segments(text).is_ok_and(|s| s.len() >= 2)
        })
        .await
    });
    streamed?;
    let playlist = on_b?;
    ensure!(playlist.contains("#EXT-X-PART:"), "an LL-HLS playlist came through B:\n{playlist}");

    // One part, asked of both nodes: the same bytes and cache headers.
    let part = playlist
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .find_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .context("a part URI")?
        .to_owned();
    let url = format!("{hls}/{part}");
    let (from_a, from_b) = (a.get(&url).await?, b.get(&url).await?);
    ensure!(from_a.status() == 200 && from_b.status() == 200, "{} / {}", from_a.status(), from_b.status());
    let cache = |r: &reqwest::Response| r.headers().get(header::CACHE_CONTROL).cloned();
    ensure!(cache(&from_a) == cache(&from_b), "cache headers differ: {:?} / {:?}", cache(&from_a), cache(&from_b));
    ensure!(
        from_b.headers().get(header::CONTENT_TYPE) == from_a.headers().get(header::CONTENT_TYPE),
        "content types differ"
    );
    let (bytes_a, bytes_b) = (from_a.bytes().await?, from_b.bytes().await?);
    ensure!(!bytes_a.is_empty() && bytes_a == bytes_b, "part bytes differ: {} / {}", bytes_a.len(), bytes_b.len());

    // A byte range through B is answered by A's range logic.
    let ranged = b.http().get(format!("{}{url}", b.base())).header(header::RANGE, "bytes=0-9").send().await?;
    ensure!(ranged.status() == 206, "range through B: {}", ranged.status());
    ensure!(ranged.bytes().await?.as_ref() == &bytes_a[..10], "range bytes");

    // An unknown channel stays 404 on B (nothing to forward to).
    ensure!(b.get("/hls/ch-nope/media.m3u8").await?.status() == 404);

    // A private channel made on B and ingested on A: A, which serves it,
    // refuses a viewer without a playback token (it read the channel when
    // the broadcast started), and so does B, forwarding or not.
    let body = b.post("/v1/channels", serde_json::json!({"name": "members only", "authorized": true})).await?;
    let c = &body["channel"];
    let private = Channel {
        id: c["id"].as_str().context("id")?.to_owned(),
        ingest: format!("{}/v1/channels/{}/whip", a.base(), c["id"].as_str().context("id")?),
        playback: String::new(),
        key: body["streamKey"].as_str().context("streamKey")?.to_owned(),
    };
    let (mut host2, _) = go_live(&a, &private).await?;
    host2.stream(&video, 0, 30).await?;
    let url = format!("/hls/{}/media.m3u8", private.id);
    for node in [&a, &b] {
        let status = node.get(&url).await?.status();
        ensure!(status == 403, "a private channel without a token: {status} from {}", node.base());
    }

    // StopStream through B ends A's broadcast of the first channel.
    let status = b.http().post(format!("{}/v1/channels/{}/stop", b.base(), ch.id)).bearer_auth(&b.api_key).send().await?.status();
    ensure!(status == 204, "StopStream through B: {status}");
    wait_playlist(&a, &hls, "ENDLIST after StopStream through B", |s, t| s == 200 && t.contains("#EXT-X-ENDLIST")).await?;
    a.stop()?;
    b.stop()?;
    Ok(())
}

/// The broadcaster's connection to A vanishes and it comes back through B
/// (a load balancer's choice) within the reconnect window: B sends the
/// WHIP request, and later its DELETE, to A, where the broadcast goes on
/// (numbering continues after a discontinuity). Without that B would start
/// a second broadcast of the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcaster_back_through_another_node_resumes_its_broadcast_where_it_is() -> Result<()> {
    let redis = Redis::start()?;
    let (a, b) = two_nodes(&redis, "channel-resume-node").await?;
    let Some(video) = test_video(&a.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = a.create_channel().await?;
    let hls = format!("/hls/{}", ch.id);
    let (mut host, _) = go_live(&a, &ch).await?;
    host.stream(&video, 0, 60).await?;
    let before = listed_segments(&a.get(&format!("{hls}/media.m3u8")).await?.text().await?)?;
    drop(host);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let through_b = Channel {
        id: ch.id.clone(),
        ingest: format!("{}/v1/channels/{}/whip", b.base(), ch.id),
        playback: ch.playback.clone(),
        key: ch.key.clone(),
    };
    let (mut again, location) = go_live(&b, &through_b).await?;
    again.stream(&video, 0, 60).await?;
    ensure!(b.running.state.channels.playback(&ch.id).is_none(), "B started a broadcast of its own");
    ensure!(a.running.state.channels.playback(&ch.id).is_some(), "the broadcast is still A's");
    let url = format!("{}{location}", b.base());
    let status = b.http().delete(url).bearer_auth(&ch.key).send().await?.status();
    ensure!(status == 204, "DELETE through B: {status}");
    let ended = wait_playlist(&b, &hls, "ENDLIST through B", |s, t| s == 200 && t.contains("#EXT-X-ENDLIST")).await?;
    let segments = listed_segments(&ended)?;
    let resumed = segments.iter().find(|s| s.1).context(format!("a DISCONTINUITY:\n{ended}"))?;
    ensure!(resumed.0 > before.last().context("segments")?.0, "numbering goes on:\n{ended}");
    a.stop()?;
    b.stop()?;
    Ok(())
}
