//! kill -9 of a node in distributed mode (two nodes and a real
//! `redis-server`): node B is the home of a stage and holds chat members.
//! Every chat message B acknowledged before it died had reached the member
//! on node A. After the kill, the stage's members come back through node A
//! at once (A finds B unreachable, releases B's claim on the stage and
//! takes it over) and media flows again on A. The first member back finds
//! the other already on the stage (A put back B's presence from Redis, in
//! its reconnect grace), not a leave and a join.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use stagecast_protocol::StageId;
use stagecast_server::stage::presence::{PresenceStore, RedisPresence};
use stagecast_server::Config;

mod common;
use common::chat::{recv, say};
use common::process::Process;
use common::redis::RedisServer as Redis;
use common::whip::link;
use common::{temp_dir, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_home_node_hands_its_stage_over_and_loses_no_acknowledged_message() -> Result<()> {
    let redis = Redis::start()?;
    let (dir, b_dir) = (temp_dir("node-failure-a")?, temp_dir("node-failure-b")?);
    let mut config = Config::for_tests(dir);
    config.redis = Some(redis.url().parse().map_err(anyhow::Error::msg)?);
    config.node_id = Some("node-2".to_owned());
    let a = Server::start_config(config).await?;
    let b = Process::spawn_in(b_dir, a.api_key.clone(), &["--redis", &redis.url(), "--node-id", "node-1"])?;

    // Both idle: the registry gives the stage to the smallest id, node-1 (B).
    // alice comes through B, bob through A.
    let (_, tokens) = a.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"]), ("bob", &["SUBSCRIBE"])]).await?;
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let stage = StageId(a.running.state.auth.keys.verify(&alice.token, chrono::Utc::now().timestamp())?.topic);
    let mut alice_events = common::events::EventClient::connect(&b.api, alice).await?;
    alice_events.state().await?;
    let mut bob_events = a.join(bob).await?;
    bob_events.state_where(|s| s.ids().len() == 2).await?;
    ensure!(!a.running.state.stages.is_active(&stage), "the stage lives on B");

    // Chat: dave on B sends; carol on A must have every message B acknowledged.
    let room = a.create_room(serde_json::json!({"maximumMessageRatePerSecond": 100})).await?;
    let mut carol = a.chat_connect(&a.chat_token(&room, "carol", &[]).await?).await?;
    let mut dave = b.chat_connect(&b.chat_token(&room, "dave", &["SEND_MESSAGE"]).await?).await?;
    let mut acked = Vec::new();
    for i in 0..5 {
        let request = format!("d-{i}");
        say(&mut dave, &request, &format!("message {i}")).await?;
        let ack = recv(&mut dave).await?;
        ensure!(ack["RequestId"] == request.as_str(), "ack {ack}");
        acked.push(ack["Id"].as_str().context("Id")?.to_owned());
    }

    // B copies who is on the stage to Redis within presence::COALESCE of a
    // change (a kill -9 loses at most that much): wait until it has.
    let presence = RedisPresence::new(redis.pool()?);
    let deadline = Instant::now() + Duration::from_secs(5);
    while presence.load_stage(&stage)?.len() < 2 {
        ensure!(Instant::now() < deadline, "B did not store the stage's presence in Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (b_dir, _) = b.kill_keeping_dir()?;
    let killed = Instant::now();
    let mut got = Vec::new();
    for _ in 0..acked.len() {
        got.push(recv(&mut carol).await?["Id"].as_str().context("Id")?.to_owned());
    }
    ensure!(got == acked, "carol on A got {got:?}, B acknowledged {acked:?}");

    // bob's event plane (spliced to B) ends; he and alice reconnect through A.
    let deadline = Instant::now() + Duration::from_secs(15);
    while bob_events.recv_within(Duration::from_millis(200)).await.is_ok() {
        ensure!(Instant::now() < deadline, "bob's connection through A to the dead B did not end");
    }
    let mut bob_events = a.join(bob).await?;
    let first = bob_events.state_where(|_| true).await?.ids().join(", ");
    ensure!(
        first.split(", ").any(|id| id == alice.participant_id),
        "bob, back first, sees [{first}] on the stage: alice should still be there (B's presence, from Redis, in her grace)"
    );
    let _alice_events = a.join(alice).await?;
    bob_events.state_where(|s| s.ids().len() == 2).await?;
    ensure!(a.running.state.stages.is_active(&stage), "A is the stage's home now");
    link(&a, &a, alice, bob).await?.frames_arrive(9, 20).await?;
    let back = killed.elapsed();
    println!("members back with media {} ms after kill -9 of the home node", back.as_millis());
    ensure!(back < Duration::from_secs(15), "back after {back:?}");
    drop(bob_events);
    a.stop()?;
    std::fs::remove_dir_all(b_dir)?;
    Ok(())
}
