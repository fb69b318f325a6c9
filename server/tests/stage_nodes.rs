//! A stage across two nodes sharing a real `redis-server` (distributed
//! mode): the stage gets one home (the least-loaded node when first asked
//! for); the other node forwards that stage's event-plane WebSocket
//! (spliced) and WHIP/WHEP requests there, so members connected through
//! either node are on one stage and media flows between them through the
//! home's SFU.

use anyhow::{ensure, Result};
use stagecast_protocol::StageId;
use stagecast_server::Config;
use str0m::Rtc;

mod common;
use common::redis::RedisServer as Redis;
use common::whip::{link, sendonly, UdpPeer, PUBLISH_PATH};
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
    let mut media = link(&a, &b, alice, bob).await?;
    let home_port = home.running.media_addr.port().to_string();
    ensure!(media.publish.answer.contains(&home_port), "the answer names the home's media port {home_port}:\n{}", media.publish.answer);
    media.frames_arrive(7, 20).await?;

    // A bad token through A gets A's own 401: nothing is forwarded for it.
    let (offer, _, _) = UdpPeer::new(Rtc::builder()).await?.offer(&sendonly())?;
    let refused = a.post_sdp(PUBLISH_PATH, Some("not-a-token"), &offer).await?;
    ensure!(matches!(refused, Err((401, _))), "a bad token is refused: {:?}", refused.err());
    drop((alice_events, bob_events));
    a.stop()?;
    b.stop()?;
    Ok(())
}
