//! A stage across two nodes sharing a real `redis-server` (distributed
//! mode): the stage gets one home (the least-loaded node when first asked
//! for); the other node forwards that stage's event-plane WebSocket
//! (spliced) and WHIP/WHEP requests there, so members connected through
//! either node are on one stage and media flows between them through the
//! home's SFU.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use stagecast_protocol::StageId;
use stagecast_server::Config;
use str0m::format::Codec;
use str0m::media::MediaTime;
use str0m::Rtc;

mod common;
use common::redis::RedisServer as Redis;
use common::whip::{pump_until, recvonly, sendonly, UdpPeer, PUBLISH_PATH, WAIT};
use common::{temp_dir, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_through_either_node_share_the_stage_on_its_home() -> Result<()> {
    let redis = Redis::start()?;
    let node = |name: &str| -> Result<Config> {
        let mut config = Config::for_tests(temp_dir(&format!("stage-node-{name}"))?);
        config.redis = Some(redis.url().parse().map_err(anyhow::Error::msg)?);
        config.node_id = Some(name.to_owned());
        Ok(config)
    };
    let a = Server::start_config(node("a")?).await?;
    let b = Server::start_config(node("b")?).await?;

    let (_, tokens) = a.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"]), ("bob", &["SUBSCRIBE"])]).await?;
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let stage = StageId(a.running.state.auth.keys.verify(&alice.token, chrono::Utc::now().timestamp())?.topic);

    // alice comes through B, bob through A: both are on the one stage.
    let mut alice_events = b.join(alice).await?;
    let mut bob_events = a.join(bob).await?;
    let seen = bob_events.state_where(|s| s.ids().len() == 2).await?;
    ensure!(seen.get(&alice.participant_id).is_some(), "bob (through A) sees alice (through B)");
    alice_events.state_where(|s| s.ids().len() == 2).await?;
    let on = [a.running.state.stages.is_active(&stage), b.running.state.stages.is_active(&stage)];
    ensure!(on == [true, false] || on == [false, true], "the stage lives on exactly one node: {on:?}");
    let home = if on[0] { &a } else { &b };

    // alice publishes through A, bob subscribes through B: one of them is forwarded.
    let mut publisher = UdpPeer::new(Rtc::builder()).await?;
    let (offer, pending, mids) = publisher.offer(&sendonly())?;
    let publish = a.post_sdp(PUBLISH_PATH, Some(&alice.token), &offer).await?.map_err(|e| anyhow!("publish via A: {e:?}"))?;
    let home_port = home.running.media_addr.port().to_string();
    ensure!(publish.answer.contains(&home_port), "the answer names the home's media port {home_port}:\n{}", publish.answer);
    publisher.accept(pending, &publish.answer)?;
    pump_until(&mut [&mut publisher], "publisher connected to B", |p| p[0].rtc.is_connected()).await?;

    let mut subscriber = UdpPeer::new(Rtc::builder()).await?;
    let (offer, pending, sub_mids) = subscriber.offer(&recvonly())?;
    let path = format!("/v1/stage/whip/subscribe/{}", alice.participant_id);
    let deadline = Instant::now() + WAIT;
    let subscribe = loop {
        match b.post_sdp(&path, Some(&bob.token), &offer).await? {
            Ok(created) => break created,
            Err(_) if Instant::now() < deadline => {
                publisher.pump()?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(anyhow!("subscribe: {e:?}")),
        }
    };
    subscriber.accept(pending, &subscribe.answer)?;
    pump_until(&mut [&mut publisher, &mut subscriber], "subscriber connected", |p| p[1].rtc.is_connected()).await?;

    let pt = {
        let writer = publisher.rtc.writer(mids[1]).context("writer")?;
        let pt = writer.payload_params().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt());
        pt.context("vp8")?
    };
    let start = Instant::now();
    let mut frame = 0u64;
    while subscriber.media(sub_mids[1]).len() < 20 {
        ensure!(start.elapsed() < WAIT, "frames did not reach bob");
        if start.elapsed() >= Duration::from_millis(frame * 20) {
            let data = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 7, frame as u8];
            let writer = publisher.rtc.writer(mids[1]).context("writer")?;
            writer.write(pt, Instant::now(), MediaTime::from_90khz(frame * 1800), data)?;
            frame += 1;
        }
        publisher.pump()?;
        subscriber.pump()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    ensure!(subscriber.media(sub_mids[1]).iter().all(|f| f.len() == 8 && f[6] == 7), "bob gets alice's frames");

    // A bad token through A gets A's own 401: nothing is forwarded for it.
    let refused = a.post_sdp(PUBLISH_PATH, Some("not-a-token"), &offer).await?;
    ensure!(matches!(refused, Err((401, _))), "a bad token is refused: {:?}", refused.err());
    drop((alice_events, bob_events));
    a.stop()?;
    b.stop()?;
    Ok(())
}
