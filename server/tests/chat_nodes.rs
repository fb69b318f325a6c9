//! One chat room across two nodes that share a real `redis-server`
//! (distributed mode, `--redis`): members connected to different nodes
//! chat with each other, acknowledgements, moderation, control-plane events
//! and DeleteRoom reach every node, and late joiners on either node get the
//! room's history.

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::json;
use stagecast_server::Config;

mod common;
use common::chat::{expect_close, recv, recv_live, say, send, silent};
use common::redis::RedisServer as Redis;
use common::{temp_dir, Server};

/// Two servers sharing `redis`, each with its own data dir.
async fn two_nodes(redis: &Redis) -> Result<(Server, Server)> {
    let node = |name: &str| {
        let mut config = Config::for_tests(temp_dir(&format!("chat-node-{name}"))?);
        config.redis = Some(redis.url().parse().map_err(anyhow::Error::msg)?);
        config.node_id = Some(name.to_owned());
        anyhow::Ok(config)
    };
    let a = Server::start_config(node("a")?).await?;
    let b = Server::start_config(node("b")?).await?;
    Ok((a, b))
}

/// A node's counter from `/metrics` (`None`: not listed).
async fn metric(node: &Server, name: &str) -> Result<Option<u64>> {
    let metrics = node.http.get(format!("{}/metrics", node.base)).bearer_auth(&node.api_key).send().await?.text().await?;
    Ok(metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok()))
}

/// The client ids of the nodes' relay readers (blocked in `XREAD`).
fn relay_readers(redis: &Redis) -> Result<Vec<String>> {
    let clients: String = redis.pool()?.with(|c| redis::cmd("CLIENT").arg("LIST").query(c))?;
    Ok(clients
        .lines()
        .filter(|l| l.split(' ').any(|f| f == "cmd=xread"))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect())
}

#[tokio::test]
async fn members_on_two_nodes_chat_moderate_and_see_history() -> Result<()> {
    let redis = Redis::start()?;
    let (a, b) = two_nodes(&redis).await?;
    let room = a.create_room(json!({"name": "across"})).await?;
    let mod_caps = ["SEND_MESSAGE", "DELETE_MESSAGE", "DISCONNECT_USER"];
    let alice_token = a.chat_token(&room, "alice", &mod_caps).await?;
    // Minted by node B, used on both.
    let bob_token = b.chat_token(&room, "bob", &["SEND_MESSAGE"]).await?;
    let carol_token = a.chat_token(&room, "carol", &[]).await?;

    let mut bob = b.chat_connect(&bob_token).await?;
    let mut carol = b.chat_connect(&carol_token).await?;
    // An event through node A, where nobody is connected yet, reaches B's members.
    let events = format!("/v1/rooms/{room}/events");
    let sent = a.ok(Method::POST, &events, Some(json!({"eventName": "opening", "attributes": {"n": "1"}}))).await?;
    for ws in [&mut bob, &mut carol] {
        let event = recv(ws).await?;
        assert_eq!(event["EventName"], "opening");
        assert_eq!(event["Id"], sent["id"]);
    }

    let mut alice = a.chat_connect(&alice_token).await?;
    // bob on B speaks: alice on A gets it, bob his acknowledgement, carol on B hers.
    say(&mut bob, "b-1", "hello from B").await?;
    let ack = recv(&mut bob).await?;
    assert_eq!((ack["RequestId"].as_str(), ack["Content"].as_str()), (Some("b-1"), Some("hello from B")));
    for ws in [&mut alice, &mut carol] {
        let seen = recv(ws).await?;
        assert_eq!(seen["Content"], "hello from B");
        assert_eq!(seen["Id"], ack["Id"]);
        assert!(seen.get("RequestId").is_none(), "{seen}");
    }
    let from_b = ack["Id"].as_str().context("Id")?.to_owned();

    // alice on A answers: both members on B get it, once each.
    say(&mut alice, "a-1", "hello from A").await?;
    assert_eq!(recv(&mut alice).await?["RequestId"], "a-1");
    for ws in [&mut bob, &mut carol] {
        assert_eq!(recv(ws).await?["Content"], "hello from A");
        silent(ws).await?;
    }

    // A late joiner on A sees both messages as history, B's included.
    let dave_token = b.chat_token(&room, "dave", &[]).await?;
    let mut dave = a.chat_connect(&dave_token).await?;
    let history: Vec<String> = [recv(&mut dave).await?, recv(&mut dave).await?]
        .iter()
        .map(|f| format!("{}:{}", f["History"], f["Content"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(history, ["true:hello from B", "true:hello from A"]);

    // alice (on A) deletes bob's message: everyone on both nodes is told.
    send(&mut alice, json!({"Action": "DELETE_MESSAGE", "RequestId": "a-2", "Id": from_b, "Reason": "test"})).await?;
    for ws in [&mut alice, &mut dave, &mut bob, &mut carol] {
        let event = recv(ws).await?;
        assert_eq!(event["EventName"], "aws:DELETE_MESSAGE");
        assert_eq!(event["Attributes"]["MessageID"], from_b.as_str());
    }
    // ...and B's history forgot it: a late joiner on B gets only alice's.
    let mut erin = b.chat_connect(&b.chat_token(&room, "erin", &[]).await?).await?;
    assert_eq!(recv(&mut erin).await?["Content"], "hello from A");
    silent(&mut erin).await?;

    // DisconnectUser through A's API closes bob's socket on B, after the event.
    a.ok(Method::POST, &format!("/v1/rooms/{room}/users/bob/disconnect"), Some(json!({"reason": "bye"}))).await?;
    assert_eq!(recv_live(&mut bob).await?["EventName"], "aws:DISCONNECT_USER");
    assert_eq!(expect_close(&mut bob).await?, "user disconnected");
    for ws in [&mut alice, &mut carol, &mut dave, &mut erin] {
        assert_eq!(recv(ws).await?["EventName"], "aws:DISCONNECT_USER");
    }

    // DeleteRoom through B closes alice's and dave's sockets on A.
    let (status, _) = b.call(Method::DELETE, &format!("/v1/rooms/{room}"), None, None).await?;
    assert_eq!(status, 204);
    for ws in [&mut alice, &mut dave, &mut carol, &mut erin] {
        assert_eq!(expect_close(ws).await?, "room deleted");
    }
    // Node A counted what it received from B: bob's message and the DeleteRoom.
    assert_eq!(metric(&a, "stagecast_chat_relays_received_total").await?, Some(2));
    assert_eq!(metric(&a, "stagecast_chat_relays_dropped_total").await?, Some(0));
    a.stop()?;
    b.stop()?;
    Ok(())
}

/// The connections the nodes read relays on (blocked in `XREAD`) are cut,
/// as by a Redis restart or a network blip, and node B's member speaks at
/// once: node A reads on from where it stopped, so its member gets every
/// message B acknowledged, in order.
#[tokio::test]
async fn a_node_whose_relay_reader_drops_reads_on_and_misses_nothing() -> Result<()> {
    let redis = Redis::start()?;
    let (a, b) = two_nodes(&redis).await?;
    let room = a.create_room(json!({"maximumMessageRatePerSecond": 100})).await?;
    let mut alice = a.chat_connect(&a.chat_token(&room, "alice", &[]).await?).await?;
    // Four senders on B, each within its own burst (5 back to back).
    let mut senders = Vec::new();
    for i in 0..4 {
        senders.push(b.chat_connect(&b.chat_token(&room, &format!("bob-{i}"), &["SEND_MESSAGE"]).await?).await?);
    }
    say(&mut senders[0], "warm-up", "before").await?;
    recv(&mut senders[0]).await?;
    anyhow::ensure!(recv(&mut alice).await?["Content"] == "before");

    let pool = redis.pool()?;
    let readers = relay_readers(&redis)?;
    anyhow::ensure!(readers.len() == 2, "one relay reader per node: {readers:?}");
    for id in readers {
        let _: i64 = pool.with(|c| redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query(c))?;
    }
    let mut acked = Vec::new();
    for i in 0..16 {
        let bob = &mut senders[i % 4];
        say(bob, &format!("b-{i}"), &format!("message {i}")).await?;
        // Its answer, past the others' messages.
        let ack = loop {
            let frame = recv_live(bob).await?;
            if frame["RequestId"] == format!("b-{i}").as_str() {
                break frame;
            }
        };
        anyhow::ensure!(ack["Type"] == "MESSAGE", "not accepted: {ack}");
        acked.push(ack["Id"].as_str().context("Id")?.to_owned());
    }
    let mut got = Vec::new();
    for _ in 0..acked.len() {
        got.push(recv(&mut alice).await?["Id"].as_str().context("Id")?.to_owned());
    }
    anyhow::ensure!(got == acked, "alice on A got {got:?}, B acknowledged {acked:?}");
    Ok(())
}

/// The nodes' relay readers are cut off while the stream moves on further
/// than it keeps (here, in one transaction with the cut: three entries from
/// a node that is gone, then the stream trimmed to its newest): neither
/// node can read across the gap. Each says so in `/metrics` on
/// reconnecting, and chat across the nodes goes on.
#[tokio::test]
async fn a_node_cut_off_longer_than_the_stream_counts_the_gap_and_chats_on() -> Result<()> {
    let redis = Redis::start()?;
    let (a, b) = two_nodes(&redis).await?;
    let room = a.create_room(json!({})).await?;
    let mut alice = a.chat_connect(&a.chat_token(&room, "alice", &[]).await?).await?;
    let mut bob = b.chat_connect(&b.chat_token(&room, "bob", &["SEND_MESSAGE"]).await?).await?;
    say(&mut bob, "b-0", "before").await?;
    recv(&mut bob).await?;
    anyhow::ensure!(recv(&mut alice).await?["Content"] == "before");
    for node in [&a, &b] {
        anyhow::ensure!(metric(node, "stagecast_chat_relay_gaps_total").await? == Some(0), "no gap yet");
    }

    let readers = relay_readers(&redis)?;
    anyhow::ensure!(readers.len() == 2, "one relay reader per node: {readers:?}");
    let mut cut = redis::pipe();
    cut.atomic();
    for id in &readers {
        cut.cmd("CLIENT").arg("KILL").arg("ID").arg(id).ignore();
    }
    for _ in 0..3 {
        cut.cmd("XADD").arg("stagecast:chat-relays").arg("*").arg("e").arg(r#"{"origin":"gone","room":"elsewhere","relays":[]}"#).ignore();
    }
    cut.cmd("XTRIM").arg("stagecast:chat-relays").arg("MAXLEN").arg(1).ignore();
    let () = redis.pool()?.with(|c| cut.query(c))?;

    for node in [&a, &b] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while metric(node, "stagecast_chat_relay_gaps_total").await? != Some(1) {
            anyhow::ensure!(std::time::Instant::now() < deadline, "the gap was not counted within 10 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    say(&mut bob, "b-1", "after").await?;
    recv(&mut bob).await?;
    anyhow::ensure!(recv(&mut alice).await?["Content"] == "after", "chat goes on across the nodes");
    a.stop()?;
    b.stop()?;
    Ok(())
}
