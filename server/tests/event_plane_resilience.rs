//! The event plane against unlucky and hostile clients, on a real server
//! with short timeouts: the member cap, the per-connection rate limit,
//! keepalive and dead peers, and the reconnect grace.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use stagecast_protocol::events::ServerMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::events::EventClient;
use common::{Server, Token, EVENTS_PATH};

async fn stage_with(server: &Server, users: &[&str]) -> Result<(String, Vec<Token>)> {
    let stage = server.create_stage_with(json!({"name": "resilience"})).await?;
    let mut tokens = Vec::new();
    for user in users {
        tokens.push(server.participant_token(&stage, json!({"userId": user})).await?);
    }
    Ok((stage, tokens))
}

async fn join(server: &Server, token: &Token) -> Result<EventClient> {
    let mut client = EventClient::connect(server, token).await?;
    client.state().await?;
    Ok(client)
}

/// PING answered with PONG within a second (stage frames may come first).
async fn answers_within_a_second(c: &mut EventClient) -> Result<()> {
    c.ws.send(Message::text(r#"{"type":"PING"}"#)).await?;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv_within(left).await.context("no PONG within 1 s")? {
            ServerMessage::Pong => return Ok(()),
            ServerMessage::StageState { .. } | ServerMessage::StageDelta { .. } => continue,
            other => bail!("expected PONG, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_full_stage_refuses_the_next_join_but_never_a_member() -> Result<()> {
    let server = Server::start_with("cap", |c| c.max_stage_members = 3).await?;
    let (_, t) = stage_with(&server, &["a", "b", "c", "d"]).await?;
    let mut a = join(&server, &t[0]).await?;
    let b = join(&server, &t[1]).await?;
    let _c = join(&server, &t[2]).await?;

    // The fourth is refused before the upgrade, with a JSON error.
    let Err((status, body)) = server.ws_try_connect(EVENTS_PATH, Some(&t[3].token)).await? else {
        bail!("a fourth member was admitted to a stage capped at 3");
    };
    assert_eq!((status, body["code"].as_str()), (409, Some("STAGE_FULL")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("full")), "{body}");
    // What the SDK asks the media plane when the browser hides the status.
    let res = server.http.post(format!("{}/v1/stage/whip/publish", server.base)).bearer_auth(&t[3].token).body("v=0\r\n").send().await?;
    assert_eq!(res.status().as_u16(), 409);
    assert_eq!(res.json::<serde_json::Value>().await?["code"], "STAGE_FULL");

    // A member reconnecting (same token) is never refused.
    let a2 = join(&server, &t[0]).await?;
    assert_eq!(a2.view.members.len(), 3);
    drop(a);
    a = a2;

    // Once someone leaves there is room again.
    b.leave().await?;
    a.state_where(|v| v.members.len() == 2).await?;
    let d = join(&server, &t[3]).await?;
    assert_eq!(d.view.members.len(), 3);
    Ok(())
}

#[tokio::test]
async fn a_flooder_is_rate_limited_then_closed_and_the_others_are_unaffected() -> Result<()> {
    let server = Server::start_with("flood", |c| c.reconnect_grace_secs = 2).await?;
    let (_, t) = stage_with(&server, &["observer", "flooder"]).await?;
    let mut observer = join(&server, &t[0]).await?;
    let flooder_id = t[1].participant_id.clone();
    let mut flooder = join(&server, &t[1]).await?;
    observer.state_where(|v| v.members.len() == 2).await?;

    // Within the limit: applied.
    flooder.set_state(true, false).await?;
    observer.state_where(|v| v.get(&flooder_id).is_some_and(|m| m.audio_muted)).await?;

    // As fast as it can: SET_STATE, PINGs, garbage, binary and WebSocket
    // pings all count. (A burst the server reads out before closing, so
    // the close frame is not lost to a reset.)
    let started = Instant::now();
    let (mut sink, mut stream) = flooder.ws.split();
    let writer = tokio::spawn(async move {
        let mut sent = 0u32;
        for i in 0..1500u32 {
            let frame = match i % 5 {
                0 => Message::text(format!(r#"{{"type":"SET_STATE","audioMuted":{},"videoStopped":false}}"#, i % 2 == 0)),
                1 => Message::text(r#"{"type":"PING"}"#),
                2 => Message::text("garbage"),
                3 => Message::binary(vec![0u8; 16]),
                _ => Message::Ping(vec![1u8; 16].into()),
            };
            if sink.send(frame).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let (mut limited, mut close_code) = (0, None);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        match msg {
            Message::Text(text) => {
                if let Ok(ServerMessage::Error { code, .. }) = serde_json::from_str(text.as_str()) {
                    limited += u32::from(code == "RATE_LIMITED");
                }
            }
            Message::Close(frame) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    let closed_after = started.elapsed();
    let sent = writer.await?;
    assert_eq!(close_code, Some(1008), "closed for the policy violation");
    ensure!(limited >= 1 && limited <= closed_after.as_secs() as u32 + 2, "{limited} RATE_LIMITED in {closed_after:?}");
    ensure!(closed_after < Duration::from_secs(3), "a flood was tolerated for {closed_after:?}");
    ensure!(sent > 300, "the flood stopped after {sent} frames");

    // The others are served throughout; the flooder is closed like a lost
    // socket (it could reconnect within the grace without churn for them),
    // so it leaves once the grace is over.
    answers_within_a_second(&mut observer).await?;
    ensure!(observer.view.get(&flooder_id).is_some(), "the flooder left before the grace was over");
    observer.state_where(|v| v.get(&flooder_id).is_none()).await?;
    let left = started.elapsed();
    ensure!(left >= Duration::from_secs(2) && left < Duration::from_secs(6), "the flooder left after {left:?}");
    Ok(())
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_idle_timeout_and_leaves_after_the_grace() -> Result<()> {
    // The grace counts from when the peer was last heard: dropped at 2 s,
    // gone at 4 s.
    let server = Server::start_with("keepalive", |c| {
        c.event_idle_timeout_secs = 2;
        c.reconnect_grace_secs = 4;
    })
    .await?;
    let (_, t) = stage_with(&server, &["observer", "dead", "quiet"]).await?;
    let mut observer = join(&server, &t[0]).await?;
    let dead_id = t[1].participant_id.clone();
    // The server hears nothing from `dead` after its handshake.
    let stopped = Instant::now();
    let mut dead = join(&server, &t[1]).await?;
    let mut quiet = join(&server, &t[2]).await?;
    observer.state_where(|v| v.members.len() == 3).await?;

    // `dead` never reads (so it answers no Ping); `quiet` reads (tungstenite
    // answers Pings) but sends nothing itself.
    let quiet_task = tokio::spawn(async move {
        let mut pings = 0u32;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(8), quiet.ws.next()).await {
            pings += u32::from(matches!(msg, Message::Ping(_)));
            if stopped.elapsed() > Duration::from_secs(6) {
                break;
            }
        }
        (quiet, pings)
    });
    observer.state_where(|v| v.get(&dead_id).is_none()).await?;
    let gone = stopped.elapsed();
    ensure!(gone >= Duration::from_secs(4), "left after {gone:?}: before the grace (4 s from when it was last heard)");
    ensure!(gone < Duration::from_secs(7), "left only after {gone:?}");
    // The server dropped the dead socket: reading it now ends at once.
    let end = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match dead.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    ensure!(end.is_ok(), "the dead peer's socket is still open");

    let (mut quiet, pings) = quiet_task.await?;
    ensure!(pings >= 3, "the server sent {pings} keepalive Pings in 6 s (every ~0.7 s expected)");
    answers_within_a_second(&mut quiet).await?;
    ensure!(observer.view.get(&t[2].participant_id).is_some(), "a quiet but live peer was dropped");
    Ok(())
}

#[tokio::test]
async fn a_reconnect_within_the_grace_is_invisible_and_a_leave_is_immediate() -> Result<()> {
    let server = Server::start_with("grace", |c| c.reconnect_grace_secs = 3).await?;
    let (_, t) = stage_with(&server, &["observer", "blinky", "leaver", "goer"]).await?;
    let blinky_id = t[1].participant_id.clone();
    let mut observer = join(&server, &t[0]).await?;
    let blinky = join(&server, &t[1]).await?;
    observer.state_where(|v| v.members.len() == 2).await?;

    // The TCP connection drops (no close frame); back after 1 s with the same token.
    drop(blinky);
    let dropped = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut blinky = EventClient::connect(&server, &t[1]).await?;
    blinky.state().await?;
    assert_eq!(blinky.view.members.len(), 2, "the reconnect gets the full state");
    // Past the first socket's grace: still there, and it never looked gone.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(dropped.elapsed()) + Duration::from_millis(500)).await;
    blinky.set_state(true, false).await?;
    observer.state_where(|v| v.get(&blinky_id).is_some_and(|m| m.audio_muted)).await?;
    assert!(observer.removed_seen.is_empty(), "the observer saw {:?} leave", observer.removed_seen);

    // A close with another code than 1000 (a tab going away, a network
    // switch) is not a leave: the grace applies.
    let dropped = Instant::now();
    let away = CloseFrame { code: CloseCode::Away, reason: "".into() };
    blinky.ws.close(Some(away)).await?;
    observer.state_where(|v| v.get(&blinky_id).is_none()).await?;
    ensure!(dropped.elapsed() >= Duration::from_secs(3), "left after {:?}, within the grace", dropped.elapsed());
    ensure!(dropped.elapsed() < Duration::from_secs(5), "left only after {:?}", dropped.elapsed());

    // A deliberate leave (close 1000, as the SDK's leave()) is immediate.
    let leaver = join(&server, &t[2]).await?;
    observer.state_where(|v| v.members.len() == 2).await?;
    let left = Instant::now();
    leaver.leave().await?;
    observer.state_where(|v| v.get(&t[2].participant_id).is_none()).await?;
    ensure!(left.elapsed() < Duration::from_secs(1), "a leave took {:?}", left.elapsed());

    // The control plane's disconnect is immediate too, also within a grace.
    let goer = join(&server, &t[3]).await?;
    observer.state_where(|v| v.members.len() == 2).await?;
    drop(goer);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stage = server.running.state.auth.keys.verify(&t[3].token, chrono::Utc::now().timestamp())?.topic;
    let path = format!("/v1/stages/{stage}/participants/{}/disconnect", t[3].participant_id);
    server.post(&path, json!({})).await?;
    let kicked = Instant::now();
    observer.state_where(|v| v.members.len() == 1).await?;
    ensure!(kicked.elapsed() < Duration::from_secs(1), "a disconnect within the grace took {:?}", kicked.elapsed());
    Ok(())
}
