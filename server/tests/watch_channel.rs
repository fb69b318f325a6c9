//! A channel made through `/v1` can be watched: `/watch/channel/{id}` serves
//! the watch page, and `GET /api/channels/{id}` (no key) tells that page
//! what to play: the channel's state and playback URL, never its stream key
//! or ingest endpoint. Against a real server on port 0 and a real WHIP
//! broadcaster (str0m on a UDP socket).

use anyhow::{ensure, Result};
use serde_json::{json, Value};

mod common;
use common::channel::{Broadcaster, ChannelApi};
use common::{temp_dir, Server};

/// `GET /api/channels/{id}` as a viewer's page asks it: no Authorization.
async fn watch_status(server: &Server, id: &str) -> Result<(u16, Value)> {
    let res = server.http.get(format!("{}/api/channels/{id}", server.base)).send().await?;
    Ok((res.status().as_u16(), res.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_channel_has_a_watch_page_that_knows_when_it_is_live() -> Result<()> {
    let dir = temp_dir("watch-channel")?;
    let mut config = stagecast_server::Config::for_tests(dir.clone());
    config.viewer_dir = dir.join("viewer");
    std::fs::create_dir_all(&config.viewer_dir)?;
    std::fs::write(config.viewer_dir.join("index.html"), "<!doctype html><title>the watch page</title>")?;
    let server = Server::start_config(config).await?;
    let ch = server.create_channel().await?;

    for path in [format!("/watch/channel/{}", ch.id), format!("/watch/channel/{}/", ch.id)] {
        let res = server.http.get(format!("{}{path}", server.base)).send().await?;
        ensure!(res.status() == 200, "{path}: {}", res.status());
        ensure!(res.text().await?.contains("the watch page"), "{path} serves the viewer's index.html");
    }

    let offline = json!({"id": ch.id, "name": "show", "state": "OFFLINE", "playbackUrl": ch.playback});
    assert_eq!(watch_status(&server, &ch.id).await?, (200, offline));

    let (mut broadcaster, offer) = Broadcaster::new().await?;
    let (_, answer) = server.whip(&ch.ingest, Some(&ch.key), &offer).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    broadcaster.accept(&answer)?;
    broadcaster.connect().await?;
    let (status, live) = watch_status(&server, &ch.id).await?;
    assert_eq!((status, live["state"].as_str()), (200, Some("LIVE")), "{live}");
    let text = live.to_string();
    ensure!(!text.contains(&ch.key) && !text.contains("/whip"), "nothing to broadcast with: {text}");

    let (status, missing) = watch_status(&server, "ch-nope").await?;
    assert_eq!((status, missing["code"].as_str()), (404, Some("CHANNEL_NOT_FOUND")), "{missing}");
    server.stop()
}
