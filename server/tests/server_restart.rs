//! Issue 9: the real `stagecast` binary killed with SIGKILL and started again
//! on the same data dir shows the apps no leave/join pair. Four members, one
//! publishing through a str0m WHIP peer; after the restart three come back
//! one by one and none of them is ever sent a frame without the others (the
//! one not back yet included); the publisher publishes again and is seen
//! published; the fourth, who never comes back, leaves when the grace ends.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::json;
use stagecast_protocol::events::ServerMessage;
use str0m::Rtc;

mod common;
use common::events::{EventClient, StageView};
use common::process::Process;
use common::whip::{pump_until, sendonly, UdpPeer, PUBLISH_PATH};
use common::{Api, Token};

const GRACE_SECS: u64 = 8;

/// Publish from a fresh peer and pump until ICE/DTLS connected.
async fn publish(api: &Api, token: &Token) -> Result<UdpPeer> {
    let mut peer = UdpPeer::new(Rtc::builder()).await?;
    let (offer, pending, _) = peer.offer(&sendonly())?;
    let created = api.post_sdp(PUBLISH_PATH, Some(&token.token), &offer).await?.map_err(|e| anyhow!("publish refused: {e:?}"))?;
    peer.accept(pending, &created.answer)?;
    pump_until(&mut [&mut peer], "publisher connected", |p| p[0].rtc.is_connected()).await?;
    Ok(peer)
}

/// Read every frame `client` has been sent so far (and until `pred` holds),
/// checking after each one that every id in `present` is in its view.
async fn read_checking(client: &mut EventClient, present: &[&str], peer: &mut UdpPeer, pred: impl Fn(&StageView) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        peer.pump()?;
        match client.recv_within(Duration::from_millis(20)).await {
            Ok(ServerMessage::StageState { .. } | ServerMessage::StageDelta { .. }) => {
                let ids = client.view.ids();
                for id in present {
                    ensure!(ids.contains(id), "{} was sent a stage without {id}: {ids:?}", client.view.self_id);
                }
            }
            Ok(_) => {}
            Err(_) if pred(&client.view) => return Ok(()),
            Err(_) => ensure!(Instant::now() < deadline, "{} never saw the stage it waits for: {:?}", client.view.self_id, client.view.ids()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restores_every_member_in_its_grace() -> Result<()> {
    let grace = GRACE_SECS.to_string();
    let args = ["--reconnect-grace-secs", grace.as_str()];
    let server = Process::spawn("restart", &args)?;
    let stage = server.create_stage_with(json!({"name": "restart"})).await?;
    let mut tokens = Vec::new();
    for user in ["alice", "bob", "carol", "dave"] {
        let body = json!({"userId": user, "capabilities": ["PUBLISH", "SUBSCRIBE"], "attributes": {"name": user}});
        tokens.push(server.participant_token(&stage, body).await?);
    }
    let ids: Vec<&str> = tokens.iter().map(|t| t.participant_id.as_str()).collect();
    let (alice, bob, dave) = (ids[0], ids[1], ids[3]);

    // Before: all four joined, alice publishing, bob muted.
    let mut before = Vec::new();
    for token in &tokens {
        before.push(EventClient::connect(&server, token).await?);
    }
    let mut peer = publish(&server, &tokens[0]).await?;
    before[1].set_state(true, false).await?;
    read_checking(&mut before[2], &[], &mut peer, |v| {
        v.members.len() == 4 && v.get(alice).is_some_and(|m| m.published) && v.get(bob).is_some_and(|m| m.audio_muted)
    })
    .await?;
    // The presence writer coalesces for 250 ms; give it that and a write.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (dir, api_key) = server.kill_keeping_dir()?;
    let killed = Instant::now();
    drop(before);
    drop(peer);
    let server = Process::spawn_in(dir, api_key, &args)?;
    let restarted = killed.elapsed();

    // Bob first: he sees everyone, mute state kept, nobody publishing (no
    // media session outlived the process).
    let mut back = vec![EventClient::connect(&server, &tokens[1]).await?];
    let first = back[0].state().await?.clone();
    let mut seen = first.ids();
    seen.sort_unstable();
    let mut all = ids.clone();
    all.sort_unstable();
    assert_eq!(seen, all, "the first one back sees every member");
    assert!(first.get(bob).is_some_and(|m| m.audio_muted), "mute state kept");
    assert_eq!(first.get(alice).map(|m| (m.published, m.user_id.as_str())), Some((false, "alice")));
    assert_eq!(first.get(dave).and_then(|m| m.attributes.get("name")).map(String::as_str), Some("dave"));

    // Then carol, then alice; alice publishes again. Nobody who comes back
    // within the grace is ever missing from anyone's stage.
    back.push(EventClient::connect(&server, &tokens[2]).await?);
    back.push(EventClient::connect(&server, &tokens[0]).await?);
    let mut peer = publish(&server, &tokens[0]).await?;
    for client in &mut back {
        read_checking(client, &ids, &mut peer, |v| v.get(alice).is_some_and(|m| m.published)).await?;
    }
    ensure!(killed.elapsed() < Duration::from_secs(GRACE_SECS), "too slow to test the grace: {:?}", killed.elapsed());

    // Dave never comes back: he leaves when his grace ends, and only he.
    for client in &mut back {
        read_checking(client, &ids[..3], &mut peer, |v| v.get(dave).is_none()).await.context("dave's grace")?;
        let left: Vec<&str> = client.removed_seen.iter().map(String::as_str).collect();
        assert_eq!(left, [dave], "only dave left");
    }
    ensure!(killed.elapsed() >= Duration::from_secs(GRACE_SECS), "dave left before his grace ended");
    eprintln!("restart took {restarted:?}; dave left {:?} after the kill", killed.elapsed());
    Ok(())
}
