//! Chat that one hostile member cannot break, against a real server with its
//! default limits (a room's 10 messages a second, 3 a second per connection
//! with a burst of 5): a spammer at 50 messages a second starves neither a
//! moderator nor a well-behaved member; late joiners get the room's recent
//! messages.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::chat::{recv, say, send};
use common::{Server, Ws};

/// Frames until the answer to `request_id` (MESSAGE, EVENT or ERROR); other
/// people's frames on the way are skipped.
async fn answer(ws: &mut Ws, request_id: &str) -> Result<Value> {
    loop {
        let frame = recv(ws).await?;
        if frame["RequestId"] == request_id {
            return Ok(frame);
        }
    }
}

/// What a spammer saw: acknowledged messages and 429s.
#[derive(Debug, Default)]
struct SpamTally {
    accepted: usize,
    limited: usize,
    other: Vec<Value>,
}

/// Sends `count` messages `every` apart without waiting for answers, while
/// reading (so the server never sees a slow client), then drains the answers.
async fn spam(ws: Ws, count: usize, every: Duration) -> Result<SpamTally> {
    let (mut sink, mut stream) = ws.split();
    let writer = async move {
        let mut tick = tokio::time::interval(every);
        for i in 0..count {
            tick.tick().await;
            let request = json!({"Action": "SEND_MESSAGE", "RequestId": format!("spam-{i}"), "Content": "buy now"});
            sink.send(Message::Text(request.to_string().into())).await?;
        }
        anyhow::Ok(sink)
    };
    let reader = async move {
        let mut tally = SpamTally::default();
        while tally.accepted + tally.limited + tally.other.len() < count {
            let msg = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.context("spam answers")?;
            let Some(Ok(Message::Text(text))) = msg else {
                if matches!(msg, Some(Ok(Message::Ping(_) | Message::Pong(_)))) {
                    continue;
                }
                bail!("the spammer's socket ended: {msg:?}");
            };
            let frame: Value = serde_json::from_str(text.as_str())?;
            let ours = frame["RequestId"].as_str().is_some_and(|r| r.starts_with("spam-"));
            match (ours, frame["Type"].as_str()) {
                (false, _) => {}
                (true, Some("MESSAGE")) => tally.accepted += 1,
                (true, Some("ERROR")) if frame["ErrorCode"] == 429 => tally.limited += 1,
                (true, _) => tally.other.push(frame),
            }
        }
        anyhow::Ok(tally)
    };
    let (sink, tally) = tokio::try_join!(writer, reader)?;
    drop(sink);
    Ok(tally)
}

#[tokio::test]
async fn a_spammer_starves_neither_the_moderator_nor_a_well_behaved_member() -> Result<()> {
    let server = Server::start("spam").await?;
    let room = server.create_room(json!({})).await?;
    let moderator = server.chat_token(&room, "host", &["SEND_MESSAGE", "DELETE_MESSAGE", "DISCONNECT_USER"]).await?;
    let mut moderator = server.chat_connect(&moderator).await?;
    let mut carol = server.chat_connect(&server.chat_token(&room, "carol", &["SEND_MESSAGE"]).await?).await?;
    let spammer = server.chat_connect(&server.chat_token(&room, "spammer", &["SEND_MESSAGE"]).await?).await?;

    // 50 messages a second for three seconds.
    let flood = tokio::spawn(spam(spammer, 150, Duration::from_millis(20)));
    let started = Instant::now();
    let mut round = 0;
    let mut carol_said = 0;
    while started.elapsed() < Duration::from_millis(2800) {
        round += 1;
        // carol, at a human pace (every other round, about once a second):
        // each message acknowledged, never a 429. The spammer gets at most
        // its burst plus its rate (8) of the room's 10 in any second.
        if round % 2 == 1 {
            say(&mut carol, &format!("c-{round}"), &format!("carol {round}")).await?;
            let ack = answer(&mut carol, &format!("c-{round}")).await?;
            ensure!(ack["Type"] == "MESSAGE", "carol was refused in round {round}: {ack}");
            carol_said += 1;
        }
        // The moderator speaks and deletes, each acknowledged.
        say(&mut moderator, &format!("m-{round}"), "please stop").await?;
        let ack = answer(&mut moderator, &format!("m-{round}")).await?;
        ensure!(ack["Type"] == "MESSAGE", "the moderator was refused in round {round}: {ack}");
        let id = ack["Id"].as_str().context("Id")?.to_owned();
        send(&mut moderator, json!({"Action": "DELETE_MESSAGE", "RequestId": format!("d-{round}"), "Id": id})).await?;
        let ack = answer(&mut moderator, &format!("d-{round}")).await?;
        ensure!(ack["EventName"] == "aws:DELETE_MESSAGE", "delete refused in round {round}: {ack}");
        // The control plane's moderation goes through too.
        let path = format!("/v1/rooms/{room}/events");
        server.ok(Method::POST, &path, Some(json!({"eventName": "notice", "attributes": {"round": round.to_string()}}))).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let tally = flood.await??;
    ensure!(tally.other.is_empty(), "unexpected answers to the spammer: {:?}", tally.other);
    // Its burst of 5, then about 3 a second: the rest was refused and cost the room nothing.
    ensure!((8..=16).contains(&tally.accepted), "spammer got {} through", tally.accepted);
    ensure!(tally.limited >= 125, "spammer refused only {} times", tally.limited);
    ensure!(round >= 5 && carol_said >= 3, "only {round} rounds, {carol_said} from carol, in the flood");

    // Finally the moderator removes the spammer, through the socket.
    send(&mut moderator, json!({"Action": "DISCONNECT_USER", "RequestId": "kick", "UserId": "spammer"})).await?;
    assert_eq!(answer(&mut moderator, "kick").await?["EventName"], "aws:DISCONNECT_USER");
    assert_eq!(server.running.state.chat.connection_count(&room), 2);
    server.stop()
}

#[tokio::test]
async fn late_joiners_see_recent_messages_but_not_deleted_ones() -> Result<()> {
    let server = Server::start("history").await?;
    let room = server.create_room(json!({})).await?;
    let alice_token = server.chat_token(&room, "alice", &["SEND_MESSAGE"]).await?;
    let mut alice = server.chat_connect(&alice_token).await?;
    let mut ids = Vec::new();
    for (i, text) in ["first", "oops", "third"].iter().enumerate() {
        let request_id = format!("a-{i}");
        say(&mut alice, &request_id, text).await?;
        ids.push(answer(&mut alice, &request_id).await?["Id"].as_str().context("Id")?.to_owned());
    }
    server.ok(Method::POST, &format!("/v1/rooms/{room}/messages/{}/delete", ids[1]), None).await?;
    assert_eq!(recv(&mut alice).await?["EventName"], "aws:DELETE_MESSAGE");
    // Everyone leaves; the room still remembers.
    alice.close(None).await?;
    drop(alice);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.running.state.chat.connection_count(&room) > 0 {
        ensure!(Instant::now() < deadline, "alice never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.running.state.chat.history_len(&room), 2);

    // A late joiner (view only) gets the two messages first, marked as history.
    let mut bob = server.chat_connect(&server.chat_token(&room, "bob", &[]).await?).await?;
    for (id, text) in [(&ids[0], "first"), (&ids[2], "third")] {
        let frame = recv(&mut bob).await?;
        assert_eq!((frame["Type"].as_str(), frame["Id"].as_str()), (Some("MESSAGE"), Some(id.as_str())), "{frame}");
        assert_eq!(frame["Content"], text);
        assert_eq!(frame["History"], true);
        assert_eq!(frame["Sender"]["UserId"], "alice");
        assert!(frame.get("RequestId").is_none(), "{frame}");
    }
    // Then live messages, not marked.
    let mut alice = server.chat_connect(&alice_token).await?;
    for _ in 0..2 {
        recv(&mut alice).await?; // alice's own history
    }
    say(&mut alice, "a-live", "live now").await?;
    let live = recv(&mut bob).await?;
    assert_eq!(live["Content"], "live now");
    assert!(live.get("History").is_none(), "{live}");

    // Deleting the room forgets its history.
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/{room}"), None, None).await?;
    assert_eq!(status, 204);
    assert_eq!(server.running.state.chat.history_len(&room), 0);
    server.stop()
}
