//! The stage event plane against a real server on port 0: WebSocket clients
//! with the participant token as subprotocol, tokens from the `/v1` control
//! plane. Every connection opens with CONFIG and a full STAGE_STATE; later
//! changes come as STAGE_DELTAs that [`EventClient`] applies as the SDK does.

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use stagecast_protocol::events::{DisconnectReason, ServerMessage};
use stagecast_protocol::token::ParticipantClaims;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::events::{EventClient, WAIT};
use common::{Server, Token, Upgrade, EVENTS_PATH};

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

    /// Connect and read up to the first STAGE_STATE.
    async fn connect(&self, token: &Token) -> Result<EventClient> {
        let mut client = EventClient::connect(self, token).await?;
        client.state().await?;
        Ok(client)
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

/// Messages until DISCONNECT, then the socket must close.
async fn disconnect_reason(c: &mut EventClient) -> Result<DisconnectReason> {
    let reason = loop {
        match c.recv().await? {
            ServerMessage::Disconnect { reason, message } => {
                ensure!(!message.is_empty(), "DISCONNECT without a message");
                break reason;
            }
            ServerMessage::StageState { .. } | ServerMessage::StageDelta { .. } => continue,
            other => bail!("expected DISCONNECT, got {other:?}"),
        }
    };
    loop {
        match tokio::time::timeout(WAIT, c.ws.next()).await.context("socket not closed in time")? {
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
    a: EventClient,
    b: EventClient,
}

impl Pair {
    async fn connect(server: &Server) -> Result<Self> {
        let stage = server.create_stage().await?;
        let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
        let bob = server.token(&stage, "bob", &["PUBLISH", "SUBSCRIBE"]).await?;
        let mut a = server.connect(&alice).await?;
        let b = server.connect(&bob).await?;
        a.state_where(|v| v.members.len() == 2).await?;
        Ok(Self { stage, alice, bob, a, b })
    }
}

#[tokio::test]
async fn snapshots_follow_joins_and_leaves_with_growing_sequence_numbers() -> Result<()> {
    let server = Server::start("join-leave").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
    let bob = server.token(&stage, "bob", &["SUBSCRIBE"]).await?;

    let mut a = EventClient::connect(&server, &alice).await?;
    // CONFIG (no ICE servers configured) opens the connection, then the full state.
    assert_eq!(a.recv().await?, ServerMessage::Config { ice_servers: vec![] });
    let ServerMessage::StageState { sequence_number: s1, self_id, participants } = a.recv().await? else {
        bail!("the first stage frame must be STAGE_STATE");
    };
    assert_eq!(self_id, alice.participant_id);
    assert_eq!(participants.len(), 1);
    let me = &participants[0];
    assert_eq!(me.id, alice.participant_id);
    assert_eq!(me.user_id, "alice");
    assert_eq!(me.attributes.get("username").map(String::as_str), Some("alice"));
    assert!(me.can_publish && me.can_subscribe && !me.published && !me.audio_muted && !me.video_stopped);
    // Sequence numbers start from the wall clock (µs), so they keep growing across restarts.
    let now_micros = u64::try_from(chrono::Utc::now().timestamp_micros())?;
    ensure!(s1 > now_micros - 60_000_000 && s1 <= now_micros, "sequence {s1} is not from the clock ({now_micros})");

    // A subscribe-only participant is a member too; alice gets it as a delta with only bob in it.
    let b = server.connect(&bob).await?;
    match a.recv().await? {
        ServerMessage::StageDelta { sequence_number, base_sequence_number, participants, removed } => {
            assert!(sequence_number > s1 && base_sequence_number == s1);
            assert_eq!(participants.len(), 1);
            assert_eq!(participants[0].id, bob.participant_id);
            assert!(!participants[0].can_publish && participants[0].can_subscribe);
            assert!(removed.is_empty());
        }
        other => bail!("expected STAGE_DELTA, got {other:?}"),
    }
    assert_eq!(a.view.ids(), [alice.participant_id.as_str(), bob.participant_id.as_str()]);
    assert_eq!(b.view.self_id, bob.participant_id);
    assert_eq!(b.view.sequence, a.view.sequence);
    assert_eq!(b.view.ids(), a.view.ids());

    // The control plane sees both as connected.
    let (status, body) = server.api(reqwest::Method::GET, &format!("/v1/stages/{stage}/participants"), None).await?;
    assert_eq!(status, 200, "{body}");
    let connected = body["participants"].as_array().context("participants")?.iter().filter(|p| p["state"] == "CONNECTED").count();
    assert_eq!(connected, 2, "{body}");

    // Bob leaves (close 1000, as the SDK's leave()): gone at once, as a removal.
    let before = a.view.sequence;
    b.leave().await?;
    a.state_where(|v| v.members.len() == 1).await?;
    assert!(a.view.sequence > before);
    assert_eq!(a.removed_seen, std::slice::from_ref(&bob.participant_id));
    assert_eq!(a.view.ids(), [alice.participant_id.as_str()]);
    Ok(())
}

#[tokio::test]
async fn set_state_mute_reaches_the_other_members_and_ping_gets_pong() -> Result<()> {
    let server = Server::start("mute").await?;
    let Pair { alice, bob, mut a, mut b, .. } = Pair::connect(&server).await?;
    let before = a.view.sequence;

    b.set_state(true, false).await?;
    let bob_id = bob.participant_id.as_str();
    a.state_where(|v| v.get(bob_id).is_some_and(|m| m.audio_muted)).await?;
    assert!(a.view.sequence > before);
    assert!(!a.view.get(bob_id).context("bob")?.video_stopped);
    assert!(!a.view.get(&alice.participant_id).context("alice")?.audio_muted);

    b.ws.send(Message::text(r#"{"type":"SET_STATE","audioMuted":true,"videoStopped":true}"#)).await?;
    a.state_where(|v| v.get(bob_id).is_some_and(|m| m.audio_muted && m.video_stopped)).await?;

    a.ws.send(Message::text(r#"{"type":"PING"}"#)).await?;
    loop {
        match a.recv().await? {
            ServerMessage::Pong => break,
            ServerMessage::StageDelta { .. } => continue,
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
    let mut first = server.connect(&alice).await?;
    b.state_where(|v| v.members.len() == 2).await?;

    let mut second = server.connect(&alice).await?;
    assert_eq!(disconnect_reason(&mut first).await?, DisconnectReason::TokenReused);
    assert_eq!(second.view.self_id, alice.participant_id);
    assert_eq!(second.view.members.len(), 2);

    // Alice never left: bob saw no change at all, and the new socket works.
    second.set_state(true, false).await?;
    b.state_where(|v| v.get(&alice.participant_id).is_some_and(|m| m.audio_muted)).await?;
    assert!(b.removed_seen.is_empty(), "bob saw alice removed: {:?}", b.removed_seen);
    Ok(())
}

#[tokio::test]
async fn bad_frames_get_an_error_and_the_socket_stays_up() -> Result<()> {
    let server = Server::start("bad-frames").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
    let mut a = server.connect(&alice).await?;

    let cases: Vec<(Message, &str)> = vec![
        (Message::text("this is not json"), "INVALID_JSON"),
        (Message::text(r#"{"type":"LAUNCH_ROCKETS"}"#), "UNKNOWN_MESSAGE"),
        (Message::text(r#"{"hello":1}"#), "INVALID_MESSAGE"),
        (Message::text(r#"{"type":"SET_STATE","audioMuted":"yes"}"#), "INVALID_MESSAGE"),
        (Message::text(format!(r#"{{"type":"PING","pad":"{}"}}"#, "x".repeat(5000))), "MESSAGE_TOO_LARGE"),
        (Message::binary(vec![1u8, 2, 3]), "INVALID_MESSAGE"),
    ];
    for (frame, code) in cases {
        a.ws.send(frame).await?;
        match a.recv().await? {
            ServerMessage::Error { code: got, message } => {
                assert_eq!(got, code);
                assert!(!message.is_empty());
            }
            other => bail!("expected ERROR {code}, got {other:?}"),
        }
    }
    a.ws.send(Message::text(r#"{"type":"PING"}"#)).await?;
    assert_eq!(a.recv().await?, ServerMessage::Pong);
    Ok(())
}

#[tokio::test]
async fn disconnecting_a_participant_sends_disconnect_and_the_token_cannot_rejoin() -> Result<()> {
    let server = Server::start("kick").await?;
    let Pair { stage, alice, bob, mut a, mut b } = Pair::connect(&server).await?;

    let path = format!("/v1/stages/{stage}/participants/{}/disconnect", bob.participant_id);
    let (status, body) = server.api(reqwest::Method::POST, &path, Some(json!({"reason": "bye"}))).await?;
    ensure!((200..300).contains(&status), "disconnect: {status} {body}");
    assert_eq!(disconnect_reason(&mut b).await?, DisconnectReason::ParticipantDisconnected);
    a.state_where(|v| v.members.len() == 1).await?;
    assert_eq!(a.view.ids(), [alice.participant_id.as_str()]);

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
    let expired = server.running.state.auth.keys.mint(&claims_for(&server, &stage, "carol-expired", now - 60))?;
    assert_eq!(server.refused(Some(&expired)).await?, (401, "TOKEN_EXPIRED".to_owned()));

    // The genuine token still works.
    server.connect(&alice).await?;
    Ok(())
}

#[tokio::test]
async fn the_socket_closes_when_the_token_expires() -> Result<()> {
    let server = Server::start("expiry").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
    let mut a = server.connect(&alice).await?;

    let now = chrono::Utc::now().timestamp();
    let short = server.running.state.auth.keys.mint(&claims_for(&server, &stage, "carol", now + 2))?;
    let ws = server.try_connect(Some(&short)).await?.map_err(|(s, b)| anyhow!("refused: {s} {b}"))?;
    let mut c = EventClient::new(ws);
    c.state().await?;
    a.state_where(|v| v.members.len() == 2).await?;
    assert_eq!(disconnect_reason(&mut c).await?, DisconnectReason::TokenExpired);
    // Expiry is final: no reconnect grace.
    a.state_where(|v| v.members.len() == 1).await?;
    Ok(())
}

#[tokio::test]
async fn sequence_numbers_keep_growing_across_a_server_restart() -> Result<()> {
    let server = Server::start("restart").await?;
    let stage = server.create_stage().await?;
    let alice = server.token(&stage, "alice", &["PUBLISH", "SUBSCRIBE"]).await?;
    let mut a = server.connect(&alice).await?;
    let first = a.view.sequence.context("a sequence")?;
    for i in 0..20 {
        a.set_state(i % 2 == 0, false).await?;
    }
    a.state_where(|v| v.sequence.is_some_and(|s| s >= first + 20)).await?;
    let before = a.view.sequence.context("a sequence")?;
    drop(a);
    let dir = server.stop_keeping_dir();

    let server = Server::start_in(dir).await?;
    let a = server.connect(&alice).await?;
    let after = a.view.sequence.context("a sequence")?;
    assert!(after > before, "after the restart {after} <= {before}: an SDK comparing them would ignore the new server");
    drop(a);
    server.stop()
}
