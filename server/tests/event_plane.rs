//! The stage event plane against a real server on port 0: WebSocket clients
//! with the participant token as subprotocol, tokens from the `/v1` control
//! plane.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use stagecast_protocol::events::{DisconnectReason, ParticipantState, ServerMessage};
use stagecast_protocol::token::ParticipantClaims;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{Server, Token, Upgrade, Ws, EVENTS_PATH};

const WAIT: Duration = Duration::from_secs(5);

impl Server {
    async fn create_stage(&self) -> Result<String> {
        self.create_stage_with(json!({"name": "test"})).await
    }

    async fn token(&self, stage: &str, user: &str, capabilities: &[&str]) -> Result<Token> {
        let body = json!({"userId": user, "attributes": {"username": user}, "capabilities": capabilities});
        self.participant_token(stage, body).await
    }

    fn events_url(&self) -> String {
        self.ws_url(EVENTS_PATH)
    }

    /// Connect with `token` as the subprotocol. `Err` carries the HTTP
    /// status and body when the upgrade is refused.
    async fn try_connect(&self, token: Option<&str>) -> Result<Upgrade> {
        self.ws_try_connect(EVENTS_PATH, token).await
    }

    async fn connect(&self, token: &Token) -> Result<Ws> {
        self.ws_connect(EVENTS_PATH, &token.token).await
    }

    async fn refused(&self, token: Option<&str>) -> Result<(u16, String)> {
        match self.try_connect(token).await? {
            Ok(_) => bail!("the upgrade was accepted"),
            Err((status, body)) => {
                ensure!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
                Ok((status, body["code"].as_str().unwrap_or_default().to_owned()))
            }
        }
    }
}

/// The next server message (skipping transport pings).
async fn recv(ws: &mut Ws) -> Result<ServerMessage> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.context("no message in time")?.context("socket ended")??;
        match msg {
            Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => bail!("unexpected frame {other:?}"),
        }
    }
}

/// The next STAGE_STATE.
async fn snapshot(ws: &mut Ws) -> Result<(u64, String, Vec<ParticipantState>)> {
    match recv(ws).await? {
        ServerMessage::StageState { sequence_number, self_id, participants } => Ok((sequence_number, self_id, participants)),
        other => bail!("expected STAGE_STATE, got {other:?}"),
    }
}

/// Snapshots until one satisfies `pred`.
async fn snapshot_where(ws: &mut Ws, pred: impl Fn(&[ParticipantState]) -> bool) -> Result<(u64, Vec<ParticipantState>)> {
    loop {
        let (seq, _, participants) = snapshot(ws).await?;
        if pred(&participants) {
            return Ok((seq, participants));
        }
    }
}

/// Messages until DISCONNECT, then the socket must close.
async fn disconnect_reason(ws: &mut Ws) -> Result<DisconnectReason> {
    let reason = loop {
        match recv(ws).await? {
            ServerMessage::Disconnect { reason, message } => {
                ensure!(!message.is_empty(), "DISCONNECT without a message");
                break reason;
            }
            ServerMessage::StageState { .. } => continue,
            other => bail!("expected DISCONNECT, got {other:?}"),
        }
    };
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.context("socket not closed in time")? {
            None | Some(Ok(Message::Close(_))) | Some(Err(_)) => return Ok(reason),
            Some(Ok(_)) => continue,
        }
    }
}

/// Alice and Bob (both PUBLISH + SUBSCRIBE) connected to a new stage, each
/// past their first snapshot, Alice having seen Bob join.
struct Pair {
    stage: String,
    alice: Token,
    bob: Token,
    a: Ws,
    b: Ws,
    /// The sequence number of Alice's snapshot with both members.
    joined: u64,
}

impl Pair {
    async fn connect(server: &Server) -> Result<Self> {
        let stage = server.create_stage().await?;
        let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
        let bob = server.token(&stage, "bob", &["PUBLISH", "SUBSCRIBE"]).await?;
        let mut a = server.connect(&alice).await?;
        snapshot(&mut a).await?;
        let mut b = server.connect(&bob).await?;
        snapshot(&mut b).await?;
        let (joined, _) = snapshot_where(&mut a, |p| p.len() == 2).await?;
        Ok(Self { stage, alice, bob, a, b, joined })
    }
}

fn ids(participants: &[ParticipantState]) -> Vec<&str> {
    participants.iter().map(|p| p.id.as_str()).collect()
}

#[tokio::test]
async fn snapshots_follow_joins_and_leaves_with_growing_sequence_numbers() -> Result<()> {
    let server = Server::start("join-leave").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
    let bob = server.token(&stage, "bob", &["SUBSCRIBE"]).await?;

    let mut a = server.connect(&alice).await?;
    let (s1, self_id, participants) = snapshot(&mut a).await?;
    assert_eq!(self_id, alice.participant_id);
    assert_eq!(ids(&participants), [alice.participant_id.as_str()]);
    let me = &participants[0];
    assert_eq!(me.user_id, "alice");
    assert_eq!(me.attributes.get("username").map(String::as_str), Some("alice"));
    assert!(me.can_publish && me.can_subscribe && !me.published && !me.audio_muted && !me.video_stopped);

    // A subscribe-only participant is a member too.
    let mut b = server.connect(&bob).await?;
    let (s2, participants) = snapshot_where(&mut a, |p| p.len() == 2).await?;
    assert!(s2 > s1);
    assert_eq!(ids(&participants), [alice.participant_id.as_str(), bob.participant_id.as_str()]);
    assert!(!participants[1].can_publish && participants[1].can_subscribe);
    let (sb, self_id, participants) = snapshot(&mut b).await?;
    assert_eq!(sb, s2);
    assert_eq!(self_id, bob.participant_id);
    assert_eq!(participants.len(), 2);

    // The control plane sees both as connected.
    let (status, body) = server.api(reqwest::Method::GET, &format!("/v1/stages/{stage}/participants"), None).await?;
    assert_eq!(status, 200, "{body}");
    let connected = body["participants"].as_array().context("participants")?.iter().filter(|p| p["state"] == "CONNECTED").count();
    assert_eq!(connected, 2, "{body}");

    b.close(None).await?;
    let (s3, participants) = snapshot_where(&mut a, |p| p.len() == 1).await?;
    assert!(s3 > s2);
    assert_eq!(ids(&participants), [alice.participant_id.as_str()]);
    Ok(())
}

#[tokio::test]
async fn set_state_mute_reaches_the_other_members_and_ping_gets_pong() -> Result<()> {
    let server = Server::start("mute").await?;
    let Pair { alice, bob, mut a, mut b, joined: before, .. } = Pair::connect(&server).await?;

    b.send(Message::text(json!({"type": "SET_STATE", "audioMuted": true, "videoStopped": false}).to_string())).await?;
    let (after, participants) =
        snapshot_where(&mut a, |p| p.iter().any(|m| m.id == bob.participant_id && m.audio_muted)).await?;
    assert!(after > before);
    let bob_state = participants.iter().find(|m| m.id == bob.participant_id).context("bob")?;
    assert!(!bob_state.video_stopped);
    let alice_state = participants.iter().find(|m| m.id == alice.participant_id).context("alice")?;
    assert!(!alice_state.audio_muted);

    b.send(Message::text(r#"{"type":"SET_STATE","audioMuted":true,"videoStopped":true}"#)).await?;
    snapshot_where(&mut a, |p| p.iter().any(|m| m.id == bob.participant_id && m.audio_muted && m.video_stopped)).await?;

    a.send(Message::text(r#"{"type":"PING"}"#)).await?;
    loop {
        match recv(&mut a).await? {
            ServerMessage::Pong => break,
            ServerMessage::StageState { .. } => continue,
            other => bail!("expected PONG, got {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_second_connection_with_the_same_token_replaces_the_first() -> Result<()> {
    let server = Server::start("reuse").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
    let bob = server.token(&stage, "bob", &["SUBSCRIBE"]).await?;
    let mut b = server.connect(&bob).await?;
    snapshot(&mut b).await?;
    let mut first = server.connect(&alice).await?;
    snapshot(&mut first).await?;
    snapshot_where(&mut b, |p| p.len() == 2).await?;

    let mut second = server.connect(&alice).await?;
    assert_eq!(disconnect_reason(&mut first).await?, DisconnectReason::TokenReused);
    let (_, self_id, participants) = snapshot(&mut second).await?;
    assert_eq!(self_id, alice.participant_id);
    assert_eq!(participants.len(), 2);

    // Alice never left: bob sees two members throughout, and the new socket works.
    let (_, participants) = snapshot_where(&mut b, |_| true).await?;
    assert_eq!(participants.len(), 2);
    second.send(Message::text(r#"{"type":"SET_STATE","audioMuted":true,"videoStopped":false}"#)).await?;
    snapshot_where(&mut b, |p| p.iter().any(|m| m.id == alice.participant_id && m.audio_muted)).await?;
    Ok(())
}

#[tokio::test]
async fn bad_frames_get_an_error_and_the_socket_stays_up() -> Result<()> {
    let server = Server::start("bad-frames").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
    let mut a = server.connect(&alice).await?;
    snapshot(&mut a).await?;

    let cases: Vec<(Message, &str)> = vec![
        (Message::text("this is not json"), "INVALID_JSON"),
        (Message::text(r#"{"type":"LAUNCH_ROCKETS"}"#), "UNKNOWN_MESSAGE"),
        (Message::text(r#"{"hello":1}"#), "INVALID_MESSAGE"),
        (Message::text(r#"{"type":"SET_STATE","audioMuted":"yes"}"#), "INVALID_MESSAGE"),
        (Message::text(format!(r#"{{"type":"PING","pad":"{}"}}"#, "x".repeat(5000))), "MESSAGE_TOO_LARGE"),
        (Message::binary(vec![1u8, 2, 3]), "INVALID_MESSAGE"),
    ];
    for (frame, code) in cases {
        a.send(frame).await?;
        match recv(&mut a).await? {
            ServerMessage::Error { code: got, message } => {
                assert_eq!(got, code);
                assert!(!message.is_empty());
            }
            other => bail!("expected ERROR {code}, got {other:?}"),
        }
    }
    a.send(Message::text(r#"{"type":"PING"}"#)).await?;
    assert_eq!(recv(&mut a).await?, ServerMessage::Pong);
    Ok(())
}

#[tokio::test]
async fn disconnecting_a_participant_sends_disconnect_and_the_token_cannot_rejoin() -> Result<()> {
    let server = Server::start("kick").await?;
    let Pair { stage, alice, bob, mut a, mut b, .. } = Pair::connect(&server).await?;

    let path = format!("/v1/stages/{stage}/participants/{}/disconnect", bob.participant_id);
    let (status, body) = server.api(reqwest::Method::POST, &path, Some(json!({"reason": "bye"}))).await?;
    ensure!((200..300).contains(&status), "disconnect: {status} {body}");
    assert_eq!(disconnect_reason(&mut b).await?, DisconnectReason::ParticipantDisconnected);
    let (_, participants) = snapshot_where(&mut a, |p| p.len() == 1).await?;
    assert_eq!(ids(&participants), [alice.participant_id.as_str()]);

    assert_eq!(server.refused(Some(&bob.token)).await?, (403, "PARTICIPANT_DISCONNECTED".to_owned()));
    Ok(())
}

#[tokio::test]
async fn deleting_the_stage_disconnects_everyone() -> Result<()> {
    let server = Server::start("delete").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
    let bob = server.token(&stage, "bob", &["SUBSCRIBE"]).await?;
    let mut a = server.connect(&alice).await?;
    let mut b = server.connect(&bob).await?;
    snapshot(&mut b).await?;

    let (status, body) = server.api(reqwest::Method::DELETE, &format!("/v1/stages/{stage}"), None).await?;
    ensure!((200..300).contains(&status), "delete: {status} {body}");
    assert_eq!(disconnect_reason(&mut a).await?, DisconnectReason::StageDeleted);
    assert_eq!(disconnect_reason(&mut b).await?, DisconnectReason::StageDeleted);
    assert_eq!(server.refused(Some(&alice.token)).await?, (404, "STAGE_NOT_FOUND".to_owned()));
    Ok(())
}

fn claims_for(server: &Server, stage: &str, participant: &str, exp: i64) -> ParticipantClaims {
    let now = chrono::Utc::now().timestamp();
    ParticipantClaims {
        topic: stage.to_owned(),
        jti: participant.to_owned(),
        user_id: "carol".to_owned(),
        attributes: Default::default(),
        capabilities: stagecast_protocol::token::TokenCapabilities { allow_publish: true, allow_subscribe: true },
        exp,
        iat: now,
        events_url: server.events_url(),
        whip_url: format!("{}/v1/stage/whip", server.base),
        version: "1.0".to_owned(),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_at_the_upgrade() -> Result<()> {
    let server = Server::start("bad-tokens").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;

    assert_eq!(server.refused(None).await?, (401, "TOKEN_MALFORMED".to_owned()));
    assert_eq!(server.refused(Some("not-a-token")).await?, (401, "TOKEN_MALFORMED".to_owned()));

    // Flip one character of the signature.
    let mut tampered = alice.token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    let (status, code) = server.refused(Some(&tampered)).await?;
    assert_eq!(status, 401);
    assert!(code == "TOKEN_INVALID" || code == "TOKEN_MALFORMED", "{code}");

    let now = chrono::Utc::now().timestamp();
    let expired = server.running.state.keys.mint(&claims_for(&server, &stage, "carol-expired", now - 60))?;
    assert_eq!(server.refused(Some(&expired)).await?, (401, "TOKEN_EXPIRED".to_owned()));

    // The genuine token still works.
    let mut a = server.connect(&alice).await?;
    snapshot(&mut a).await?;
    Ok(())
}

#[tokio::test]
async fn the_socket_closes_when_the_token_expires() -> Result<()> {
    let server = Server::start("expiry").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
    let mut a = server.connect(&alice).await?;
    snapshot(&mut a).await?;

    let now = chrono::Utc::now().timestamp();
    let short = server.running.state.keys.mint(&claims_for(&server, &stage, "carol", now + 2))?;
    let mut c = server.try_connect(Some(&short)).await?.map_err(|(s, b)| anyhow!("refused: {s} {b}"))?;
    snapshot(&mut c).await?;
    snapshot_where(&mut a, |p| p.len() == 2).await?;
    assert_eq!(disconnect_reason(&mut c).await?, DisconnectReason::TokenExpired);
    snapshot_where(&mut a, |p| p.len() == 1).await?;
    Ok(())
}
