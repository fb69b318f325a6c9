//! The reconnect window with real WHIP broadcasters (str0m peers on real
//! UDP, real H.264 from ffmpeg + Opus): a broadcaster whose connection
//! vanishes mid-stream and comes back continues the same playlist; one that
//! reconnects before the server noticed takes its own broadcast over; and
//! after `kill -9` of the real `stagecast` binary and a restart on the same
//! data dir, a re-ingest continues the numbering after a discontinuity.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

mod common;
use common::channel::{go_live, listed_segments, probe_playlist, test_video, wait_playlist, Broadcaster, Channel, ChannelApi};
use common::Server;

async fn health(server: &impl ChannelApi, id: &str) -> Result<(String, Option<String>)> {
    let url = format!("{}/v1/channels/{id}", server.base());
    let body: Value = server.http().get(url).bearer_auth(server.api_key()).send().await?.json().await?;
    let c = &body["channel"];
    Ok((c["state"].as_str().context("state")?.to_owned(), c["health"].as_str().map(str::to_owned)))
}

/// Connect a new broadcaster with the channel's key and stream `frames` frames.
async fn broadcast(
    server: &impl ChannelApi,
    ch: &Channel,
    video: &[Vec<u8>],
    frames: usize,
) -> Result<(Broadcaster, String)> {
    let (mut host, location) = go_live(server, ch).await?;
    host.stream(video, 0, frames).await?;
    Ok((host, location))
}

async fn delete(server: &impl ChannelApi, location: &str, key: &str) -> Result<u16> {
    let url = format!("{}{location}", server.base());
    Ok(server.http().delete(url).bearer_auth(key).send().await?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcaster_that_comes_back_within_the_window_continues_the_playlist() -> Result<()> {
    let server = Server::start("resume").await?;
    let Some(video) = test_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = server.create_channel().await?;
    let hls = format!("/hls/{}", ch.id);
    let (host, first_location) = broadcast(&server, &ch, &video, 75).await?;
    let before = wait_playlist(&server, &hls, "segments", |s, t| s == 200 && t.contains("#EXTINF")).await?;

    // The connection vanishes: no DELETE, no more packets.
    drop(host);
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&server, &ch.id).await? != ("LIVE".to_owned(), Some("STARVING".to_owned())) {
        ensure!(Instant::now() < deadline, "the server noticed the broadcaster is gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waiting = server.get(&format!("{hls}/media.m3u8")).await?.text().await?;
    ensure!(
        !waiting.contains("#EXT-X-ENDLIST") && !waiting.contains("PRELOAD-HINT"),
        "open, nothing hinted:\n{waiting}"
    );
    let last_before = listed_segments(&waiting)?.last().context("segments")?.0;
    ensure!(listed_segments(&before)?.last().is_some_and(|s| s.0 <= last_before));

    // A blocking reload for the next segment is held, then answered with the
    // unchanged playlist (not an error) while the broadcaster is away.
    let res = server.get(&format!("{hls}/media.m3u8?_HLS_msn={}&_HLS_part=0", last_before + 1)).await?;
    ensure!(res.status() == 200, "a held reload while waiting: {}", res.status());

    // Back, with a new connection and its own clock.
    let (_again, location) = broadcast(&server, &ch, &video, 75).await?;
    ensure!(location != first_location, "a new WHIP session");
    ensure!(health(&server, &ch.id).await? == ("LIVE".to_owned(), Some("HEALTHY".to_owned())));
    ensure!(delete(&server, &first_location, &ch.key).await? == 404, "the lost session's DELETE no longer ends it");
    ensure!(delete(&server, &location, &ch.key).await? == 204, "the current session's DELETE ends it");
    let ended = wait_playlist(&server, &hls, "ENDLIST", |s, t| s == 200 && t.contains("#EXT-X-ENDLIST")).await?;

    let segments = listed_segments(&ended)?;
    let resumed = segments.iter().position(|s| s.1).context(format!("a DISCONTINUITY:\n{ended}"))?;
    ensure!(segments[resumed].0 == last_before + 1, "numbering goes on after {last_before}:\n{ended}");
    ensure!(
        segments.iter().filter(|s| s.1).count() == 1 && resumed > 0,
        "one discontinuity, old segments kept:\n{ended}"
    );
    ensure!(segments.iter().all(|s| s.2 == "init.mp4"), "same parameters, one init:\n{ended}");
    let pdt: Vec<i64> = ended
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).map(|d| d.timestamp_millis()))
        .collect::<Result<_, _>>()?;
    ensure!(pdt.windows(2).all(|w| w[1] > w[0]), "program date-time keeps growing: {pdt:?}");
    let streamed = 150.0 / 30.0;
    let duration = probe_playlist(&server, &hls, &ended, &server.dir.join("resumed.mp4"), (320, 180)).await?;
    // The timeline keeps the time away (≥ 5 s until the server noticed).
    ensure!(duration > streamed + 4.0, "decodable across the gap; {duration} s includes the time away");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcaster_that_reconnects_before_the_server_noticed_takes_over_its_broadcast() -> Result<()> {
    let server = Server::start("takeover").await?;
    let Some(video) = test_video(&server.dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let ch = server.create_channel().await?;
    let hls = format!("/hls/{}", ch.id);
    let (mut host, _) = broadcast(&server, &ch, &video, 45).await?;
    // A second broadcaster while media flows: refused.
    let (_intruder, offer) = Broadcaster::new().await?;
    ensure!(server.whip(&ch.ingest, Some(&ch.key), &offer).await? == Err((409, "STREAM_IN_PROGRESS".into())));
    host.stream(&video, 45, 15).await?;
    let before = listed_segments(&server.get(&format!("{hls}/media.m3u8")).await?.text().await?)?;
    drop(host);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Silent for 1.5 s, still "live" for the ingest (its media timeout is 5 s): the broadcaster is back.
    let (_again, location) = broadcast(&server, &ch, &video, 45).await?;
    ensure!(delete(&server, &location, &ch.key).await? == 204);
    let ended = wait_playlist(&server, &hls, "ENDLIST", |s, t| s == 200 && t.contains("#EXT-X-ENDLIST")).await?;
    let segments = listed_segments(&ended)?;
    let resumed = segments.iter().find(|s| s.1).context(format!("a DISCONTINUITY:\n{ended}"))?;
    ensure!(resumed.0 > before.last().context("segments")?.0, "numbering goes on:\n{ended}");
    probe_playlist(&server, &hls, &ended, &server.dir.join("takeover.mp4"), (320, 180)).await?;
    Ok(())
}

/// The `stagecast` binary on a data dir, killed with SIGKILL when dropped.
struct Process {
    child: Child,
    api: common::Api,
}

impl Process {
    /// Start the binary on `dir`, HTTP on `listen`; wait until it says where it runs.
    fn start(dir: &std::path::Path, listen: &str) -> Result<Self> {
        let api_key = "test-api-key-for-restart".to_owned();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stagecast"))
            .args(["--listen", listen, "--media-port", "0", "--data-dir"])
            .arg(dir)
            .env("STAGECAST_API_KEY", &api_key)
            .env("RUST_LOG", "stagecast_server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("sample app http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).context("the server said where it runs")?;
        Ok(Self { child, api: common::Api::new(&addr, api_key) })
    }

    fn kill_9(mut self) -> Result<()> {
        // Child::kill is SIGKILL on Unix: nothing gets to clean up.
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChannelApi for Process {
    fn server_api(&self) -> &common::Api {
        &self.api
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_and_a_restart_a_re_ingest_continues_the_numbering() -> Result<()> {
    let dir = common::temp_dir("kill9")?;
    let Some(video) = test_video(&dir)? else {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    };
    let first = Process::start(&dir, "127.0.0.1:0")?;
    let ch = first.create_channel().await?;
    let hls = format!("/hls/{}", ch.id);
    let (_host, location) = broadcast(&first, &ch, &video, 90).await?;
    let before = first.get(&format!("{hls}/media.m3u8")).await?.text().await?;
    let seen = listed_segments(&before)?;
    // The open segment's parts were listed too: its number must not be reused.
    let open_msn = before
        .lines()
        .filter_map(|l| l.split("URI=\"part").nth(1))
        .filter_map(|u| u.split('.').next()?.parse::<u64>().ok())
        .max()
        .context(format!("parts:\n{before}"))?;
    ensure!(seen.last().is_some_and(|s| s.0 <= open_msn));

    let listen = first.base().trim_start_matches("http://").to_owned();
    first.kill_9()?;
    let killed = Instant::now();
    let second = Process::start(&dir, &listen)?;
    ensure!(second.base() == format!("http://{listen}"), "same address, same playback URL");
    let (state, health_now) = health(&second, &ch.id).await?;
    ensure!(
        state == "LIVE" && health_now.as_deref() == Some("STARVING"),
        "waiting for the broadcaster: {state} {health_now:?}"
    );

    // Between the restart and the re-ingest there is nothing new to list: a
    // reload is held for a while, then answered 503 with Retry-After (which
    // players retry), never 404 (offline) or an ENDLIST.
    let res = second.get(&format!("{hls}/media.m3u8")).await?;
    ensure!(res.status() == 503 && res.headers().contains_key("retry-after"), "before the re-ingest: {}", res.status());

    let (_again, new_location) = broadcast(&second, &ch, &video, 60).await?;
    let after = wait_playlist(&second, &hls, "a resumed segment", |s, t| s == 200 && t.contains("#EXTINF")).await?;
    ensure!(killed.elapsed() < Duration::from_secs(20), "resumed within the window");
    ensure!(!after.contains("#EXT-X-ENDLIST"), "{after}");
    let segments = listed_segments(&after)?;
    let first_new = segments.first().context("segments")?;
    ensure!(
        first_new.0 > open_msn,
        "numbering continues past {open_msn} (the open segment's parts were seen):\n{after}"
    );
    ensure!(first_new.1, "a discontinuity before the first new segment:\n{after}");
    ensure!(first_new.2 != "init.mp4", "a fresh init URI (cached ones stay valid):\n{after}");
    // The session that was live before the restart can still end the broadcast… but the new one is current.
    ensure!(delete(&second, &location, &ch.key).await? == 404, "the old session is not the current one");
    ensure!(delete(&second, &new_location, &ch.key).await? == 204);
    let ended = wait_playlist(&second, &hls, "ENDLIST", |s, t| s == 200 && t.contains("#EXT-X-ENDLIST")).await?;
    probe_playlist(&second, &hls, &ended, &dir.join("restarted.mp4"), (320, 180)).await?;
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
