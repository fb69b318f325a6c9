//! The SFU on several workers behind one media port: stages on different
//! workers forward at the same time, each session's requests find its
//! worker, and `/metrics` shows the sessions per worker.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use stagecast_protocol::StageId;
use stagecast_server::sfu::worker_of;
use str0m::format::Codec;
use str0m::media::{MediaTime, Mid};
use str0m::Event;

mod common;
use common::whip::{link, pump_until, Created, Link, UdpPeer, WAIT};
use common::{Server, Token};

const WORKERS: usize = 2;

/// One stage: alice publishes, bob subscribes.
struct Pair {
    stage: StageId,
    alice: Token,
    bob: Token,
    publisher: UdpPeer,
    video: Mid,
    subscriber: UdpPeer,
    sub_video: Mid,
    publish: Created,
    subscribe: Created,
    _sockets: Vec<common::events::EventClient>,
}

/// A new stage whose sessions land on worker `want`.
async fn stage_on(server: &Server, want: usize) -> Result<(StageId, Token, Token)> {
    for _ in 0..64 {
        let (_, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"]), ("bob", &["SUBSCRIBE"])]).await?;
        let topic = server.running.state.auth.keys.verify(&tokens[0].token, chrono::Utc::now().timestamp())?.topic;
        let stage = StageId(topic);
        if worker_of(&stage, WORKERS) == want {
            let mut tokens = tokens.into_iter();
            return Ok((stage, tokens.next().context("alice")?, tokens.next().context("bob")?));
        }
    }
    Err(anyhow!("no stage landed on worker {want} in 64 tries"))
}

async fn pair(server: &Server, worker: usize) -> Result<Pair> {
    let (stage, alice, bob) = stage_on(server, worker).await?;
    let sockets = vec![server.join(&alice).await?, server.join(&bob).await?];
    let Link { publisher, video, subscriber, sub_video, publish, subscribe } = link(server, server, &alice, &bob).await?;
    Ok(Pair { stage, alice, bob, publisher, video, subscriber, sub_video, publish, subscribe, _sockets: sockets })
}

fn vp8(pair: &mut Pair) -> Result<str0m::media::Pt> {
    let writer = pair.publisher.rtc.writer(pair.video).context("writer")?;
    let pt = writer.payload_params().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt());
    pt.context("vp8")
}

#[tokio::test]
async fn stages_on_two_workers_forward_at_once_through_one_port() -> Result<()> {
    let server = Server::start_with("workers", |c| c.sfu_workers = WORKERS).await?;
    let mut pairs = [pair(&server, 0).await?, pair(&server, 1).await?];
    assert_ne!(worker_of(&pairs[0].stage, WORKERS), worker_of(&pairs[1].stage, WORKERS));

    // Each worker holds its stage's two sessions.
    let by_worker = server.running.state.sfu.stats_by_worker().await.context("stats")?;
    let sessions: Vec<u64> = by_worker.iter().map(|s| s.publish_sessions + s.subscribe_sessions).collect();
    assert_eq!(sessions, [2, 2], "sessions per worker");
    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&server.api_key)
        .send()
        .await?
        .text()
        .await?;
    for worker in 0..WORKERS {
        let line = format!("stagecast_sfu_worker_sessions{{worker=\"{worker}\"}} 2");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // Both stages forward at the same time, each its own bytes.
    let pts = [vp8(&mut pairs[0])?, vp8(&mut pairs[1])?];
    let start = Instant::now();
    let deadline = start + WAIT;
    let mut frame = 0u64;
    while pairs.iter().any(|p| p.subscriber.media(p.sub_video).len() < 20) {
        ensure!(Instant::now() < deadline, "frames did not reach both subscribers");
        if start.elapsed() >= Duration::from_millis(frame * 20) {
            for (i, p) in pairs.iter_mut().enumerate() {
                let data = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, i as u8, frame as u8];
                let writer = p.publisher.rtc.writer(p.video).context("writer")?;
                writer.write(pts[i], Instant::now(), MediaTime::from_90khz(frame * 1800), data)?;
            }
            frame += 1;
        }
        for p in pairs.iter_mut() {
            p.publisher.pump()?;
            p.subscriber.pump()?;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for (i, p) in pairs.iter().enumerate() {
        let got = p.subscriber.media(p.sub_video);
        assert!(got.iter().all(|f| f.len() == 8 && f[6] == i as u8), "stage {i} got another stage's frames");
    }

    // Requests that name only a session find its worker, for either stage.
    for p in pairs.iter() {
        let layer = format!("{}{}/layer", server.base, p.subscribe.location);
        let res = server.http.get(&layer).bearer_auth(&p.bob.token).send().await?;
        assert_eq!(res.status().as_u16(), 200, "GET {layer}");
        assert_eq!(server.delete(&p.subscribe.location, &p.alice.token).await?, 404, "not alice's");
    }
    let p = &mut pairs[1];
    assert_eq!(server.delete(&p.publish.location, &p.alice.token).await?, 204);
    pump_until(&mut [&mut p.publisher, &mut p.subscriber], "worker 1's subscription closed", |p| {
        !p[1].rtc.is_alive() || p[1].events.iter().any(|e| matches!(e, Event::Closed))
    })
    .await?;
    let by_worker = server.running.state.sfu.stats_by_worker().await.context("stats")?;
    assert!(by_worker[0].forwarded_frames >= 20 && by_worker[1].forwarded_frames >= 20, "{by_worker:?}");
    assert_eq!(by_worker[0].publish_sessions + by_worker[0].subscribe_sessions, 2, "worker 0 untouched");
    Ok(())
}
