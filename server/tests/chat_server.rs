//! Chat rooms against a real server on port 0: the `/v1/rooms` control plane
//! and `GET /v1/chat` with tokio-tungstenite clients speaking the IVS Chat
//! protocol.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures_util::SinkExt;
use reqwest::Method;
use serde_json::{json, Value};
use stagecast_server::chat::{ChatCapability, ChatClaims, Outbound, TokenSpec, OUTBOUND_QUEUE};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::chat::{expect_close, recv, recv_live, say, send, silent};
use common::{Server, Ws};

impl Server {
    /// `(status, code)` of an error reply.
    async fn error(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, String)> {
        let (status, body) = self.call(method, path, body, None).await?;
        ensure!(status >= 400, "expected an error, got {status}: {body}");
        ensure!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {body}");
        Ok((status, body["code"].as_str().unwrap_or_default().to_owned()))
    }
}

#[tokio::test]
async fn control_plane_creates_gets_lists_and_validates_rooms() -> Result<()> {
    let server = Server::start("control").await?;
    let room = server.ok(Method::POST, "/v1/rooms", Some(json!({"name": "lobby"}))).await?;
    let id = room["id"].as_str().context("id")?;
    assert_eq!(id.len(), 12);
    assert_eq!(room["name"], "lobby");
    assert_eq!(room["maximumMessageRatePerSecond"], 10);
    assert_eq!(room["maximumMessageLength"], 500);
    assert_eq!(room["endpoint"], server.chat_url());
    assert!(room["arn"].as_str().is_some_and(|a| a.ends_with(id)));
    assert!(room["createTime"].as_str().is_some_and(|t| t.ends_with('Z')));

    // No body at all is fine: IVS defaults.
    let (status, bare) = server.call(Method::POST, "/v1/rooms", None, None).await?;
    assert_eq!(status, 200, "{bare}");
    let custom = json!({"maximumMessageRatePerSecond": 100, "maximumMessageLength": 1});
    let custom = server.ok(Method::POST, "/v1/rooms", Some(custom)).await?;
    assert_eq!(custom["maximumMessageRatePerSecond"], 100);
    assert_eq!(custom["maximumMessageLength"], 1);

    let got = server.ok(Method::GET, &format!("/v1/rooms/{id}"), None).await?;
    assert_eq!(got, room);
    let list = server.ok(Method::GET, "/v1/rooms", None).await?;
    assert_eq!(list["rooms"].as_array().map(Vec::len), Some(3));

    for (body, code) in [
        (json!({"maximumMessageRatePerSecond": 0}), "INVALID_MESSAGE_RATE"),
        (json!({"maximumMessageRatePerSecond": 101}), "INVALID_MESSAGE_RATE"),
        (json!({"maximumMessageLength": 0}), "INVALID_MESSAGE_LENGTH"),
        (json!({"maximumMessageLength": 501}), "INVALID_MESSAGE_LENGTH"),
        (json!({"maximumMessageLength": "long"}), "INVALID_FIELD"),
    ] {
        assert_eq!(server.error(Method::POST, "/v1/rooms", Some(body)).await?, (400, code.to_owned()));
    }
    let (status, body) = server.call(Method::POST, "/v1/rooms", None, Some("wrong")).await?;
    assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
    assert_eq!(server.error(Method::GET, "/v1/rooms/nope", None).await?, (404, "ROOM_NOT_FOUND".into()));

    // Tokens.
    let tokens = format!("/v1/rooms/{id}/tokens");
    let minted = server.ok(Method::POST, &tokens, Some(json!({"userId": "u1"}))).await?;
    assert!(minted["token"].as_str().is_some_and(|t| t.split('.').count() == 3));
    let token_exp = chrono::DateTime::parse_from_rfc3339(minted["tokenExpirationTime"].as_str().context("exp")?)?;
    let session_exp = chrono::DateTime::parse_from_rfc3339(minted["sessionExpirationTime"].as_str().context("exp")?)?;
    let minutes = (session_exp.timestamp() - chrono::Utc::now().timestamp() + 30) / 60;
    assert_eq!(minutes, 60, "default session is 60 minutes");
    assert!(token_exp <= session_exp);
    for (body, code) in [
        (json!({}), "INVALID_USER_ID"),
        (json!({"userId": ""}), "INVALID_USER_ID"),
        (json!({"userId": "u", "sessionDurationInMinutes": 0}), "INVALID_DURATION"),
        (json!({"userId": "u", "sessionDurationInMinutes": 181}), "INVALID_DURATION"),
        (json!({"userId": "u", "capabilities": ["FLY"]}), "INVALID_FIELD"),
        (json!({"userId": "u", "attributes": {"k": "x".repeat(1100)}}), "ATTRIBUTES_TOO_LARGE"),
    ] {
        assert_eq!(server.error(Method::POST, &tokens, Some(body)).await?, (400, code.to_owned()));
    }
    assert_eq!(
        server.error(Method::POST, "/v1/rooms/nope/tokens", Some(json!({"userId": "u"}))).await?,
        (404, "ROOM_NOT_FOUND".into())
    );
    // SendEvent validation.
    let events = format!("/v1/rooms/{id}/events");
    assert_eq!(
        server.error(Method::POST, &events, Some(json!({"eventName": "aws:DELETE_MESSAGE"}))).await?,
        (400, "INVALID_EVENT_NAME".into())
    );
    assert_eq!(server.error(Method::POST, &events, Some(json!({}))).await?, (400, "INVALID_FIELD".into()));
    let sent = server.ok(Method::POST, &events, Some(json!({"eventName": "nobody-listening"}))).await?;
    assert!(sent["id"].as_str().is_some_and(|s| !s.is_empty()));

    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/{id}"), None, None).await?;
    assert_eq!(status, 204);
    assert_eq!(server.error(Method::DELETE, &format!("/v1/rooms/{id}"), None).await?, (404, "ROOM_NOT_FOUND".into()));
    server.stop()?;
    Ok(())
}

#[tokio::test]
async fn two_clients_chat_delete_and_disconnect() -> Result<()> {
    let server = Server::start("two").await?;
    let room = server.create_room(json!({})).await?;
    let mod_token = server.chat_token(&room, "mod", &["SEND_MESSAGE", "DELETE_MESSAGE", "DISCONNECT_USER"]).await?;
    let guest_token = server.chat_token(&room, "guest", &["SEND_MESSAGE"]).await?;
    let mut moderator = server.chat_connect(&mod_token).await?;
    let mut guest = server.chat_connect(&guest_token).await?;

    // The guest speaks: both get the MESSAGE, only the guest with its RequestId.
    say(&mut guest, "g-1", "hello 👋").await?;
    let ack = recv(&mut guest).await?;
    let seen = recv(&mut moderator).await?;
    assert_eq!(ack["Type"], "MESSAGE");
    assert_eq!(ack["RequestId"], "g-1");
    assert_eq!(ack["Content"], "hello 👋");
    assert_eq!(ack["Attributes"], json!({"k": "v"}));
    assert_eq!(ack["Sender"], json!({"UserId": "guest", "Attributes": {"username": "guest"}}));
    assert!(chrono::DateTime::parse_from_rfc3339(ack["SendTime"].as_str().context("SendTime")?).is_ok());
    assert_eq!(seen["Id"], ack["Id"]);
    assert!(seen.get("RequestId").is_none(), "{seen}");
    let message_id = ack["Id"].as_str().context("Id")?.to_owned();

    // The guest cannot delete (403); the moderator can (everyone gets the event).
    send(&mut guest, json!({"Action": "DELETE_MESSAGE", "RequestId": "g-2", "Id": message_id})).await?;
    let refused = recv(&mut guest).await?;
    assert_eq!((refused["Type"].as_str(), refused["ErrorCode"].as_u64()), (Some("ERROR"), Some(403)));
    assert_eq!(refused["RequestId"], "g-2");
    silent(&mut moderator).await?;

    send(&mut moderator, json!({"Action": "DELETE_MESSAGE", "RequestId": "m-1", "Id": message_id, "Reason": "spam"}))
        .await?;
    for ws in [&mut moderator, &mut guest] {
        let event = recv(ws).await?;
        assert_eq!(event["Type"], "EVENT");
        assert_eq!(event["EventName"], "aws:DELETE_MESSAGE");
        assert_eq!(event["Attributes"], json!({"MessageID": message_id, "Reason": "spam"}));
    }

    // Delete through the API reaches both too.
    let path = format!("/v1/rooms/{room}/messages/{message_id}/delete");
    server.ok(Method::POST, &path, Some(json!({"reason": "api"}))).await?;
    for ws in [&mut moderator, &mut guest] {
        let event = recv(ws).await?;
        assert_eq!(event["EventName"], "aws:DELETE_MESSAGE");
        assert_eq!(event["Attributes"]["Reason"], "api");
    }

    // SendEvent reaches every client.
    let path = format!("/v1/rooms/{room}/events");
    let sent = server.ok(Method::POST, &path, Some(json!({"eventName": "poll", "attributes": {"q": "?"}}))).await?;
    for ws in [&mut moderator, &mut guest] {
        let event = recv(ws).await?;
        assert_eq!(event["EventName"], "poll");
        assert_eq!(event["Id"], sent["id"]);
        assert_eq!(event["Attributes"], json!({"q": "?"}));
    }

    // The moderator disconnects the guest: both see why, the guest's socket closes cleanly.
    send(&mut moderator, json!({"Action": "DISCONNECT_USER", "RequestId": "m-2", "UserId": "guest", "Reason": "bye"}))
        .await?;
    let event = recv(&mut moderator).await?;
    assert_eq!(event["EventName"], "aws:DISCONNECT_USER");
    assert_eq!(event["RequestId"], "m-2");
    let told = recv(&mut guest).await?;
    assert_eq!(told["EventName"], "aws:DISCONNECT_USER");
    assert_eq!(told["Attributes"], json!({"UserId": "guest", "Reason": "bye"}));
    assert_eq!(expect_close(&mut guest).await?, "user disconnected");

    // The moderator is unaffected.
    say(&mut moderator, "m-3", "still here").await?;
    assert_eq!(recv(&mut moderator).await?["Content"], "still here");

    // DisconnectUser through the API, for a fresh guest connection (which
    // is first sent the room's recent messages).
    let mut again = server.chat_connect(&guest_token).await?;
    let path = format!("/v1/rooms/{room}/users/guest/disconnect");
    server.ok(Method::POST, &path, Some(json!({"reason": "api kick"}))).await?;
    assert_eq!(recv_live(&mut again).await?["Attributes"]["Reason"], "api kick");
    assert_eq!(expect_close(&mut again).await?, "user disconnected");
    assert_eq!(recv(&mut moderator).await?["EventName"], "aws:DISCONNECT_USER");
    server.stop()?;
    Ok(())
}

#[tokio::test]
async fn view_only_tokens_and_bad_frames_get_errors_and_others_are_unaffected() -> Result<()> {
    let server = Server::start("bad").await?;
    let room = server.create_room(json!({"maximumMessageLength": 10, "maximumMessageRatePerSecond": 5})).await?;
    let mut viewer = server.chat_connect(&server.chat_token(&room, "viewer", &[]).await?).await?;
    let mut rude = server.chat_connect(&server.chat_token(&room, "rude", &["SEND_MESSAGE"]).await?).await?;
    let mut nice = server.chat_connect(&server.chat_token(&room, "nice", &["SEND_MESSAGE"]).await?).await?;

    say(&mut viewer, "v-1", "hi").await?;
    let error = recv(&mut viewer).await?;
    assert_eq!((error["ErrorCode"].as_u64(), error["RequestId"].as_str()), (Some(403), Some("v-1")));

    let cases: Vec<(Message, u64, Option<&str>)> = vec![
        (Message::Text("this is not json".into()), 400, None),
        (Message::Binary(vec![1, 2, 3].into()), 400, None),
        (Message::Text(json!({"Action": "SEND_MESSAGE", "Content": "no id"}).to_string().into()), 400, None),
        (Message::Text(json!({"Action": "SHOUT", "RequestId": "r-1"}).to_string().into()), 400, Some("r-1")),
        (
            Message::Text(json!({"Action": "SEND_MESSAGE", "RequestId": "r-2", "Content": "x".repeat(11)}).to_string().into()),
            413,
            Some("r-2"),
        ),
        (
            Message::Text(
                json!({"Action": "SEND_MESSAGE", "RequestId": "r-3", "Content": "y".repeat(100_000)}).to_string().into(),
            ),
            413,
            Some("r-3"),
        ),
    ];
    for (frame, code, request_id) in cases {
        rude.send(frame).await?;
        let error = recv(&mut rude).await?;
        assert_eq!(error["Type"], "ERROR", "{error}");
        assert_eq!(error["ErrorCode"].as_u64(), Some(code), "{error}");
        assert_eq!(error.get("RequestId").and_then(Value::as_str), request_id, "{error}");
        assert!(error["Id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // A flood above the room's rate: the excess gets 429, the rest goes through.
    for i in 0..8 {
        say(&mut rude, &format!("f-{i}"), "flood").await?;
    }
    let mut accepted = 0;
    let mut limited = 0;
    for _ in 0..8 {
        let frame = recv(&mut rude).await?;
        match frame["Type"].as_str() {
            Some("MESSAGE") => accepted += 1,
            Some("ERROR") if frame["ErrorCode"] == 429 => limited += 1,
            _ => bail!("unexpected {frame}"),
        }
    }
    assert_eq!((accepted, limited), (5, 3));
    for _ in 0..5 {
        assert_eq!(recv(&mut nice).await?["Content"], "flood");
        assert_eq!(recv(&mut viewer).await?["Content"], "flood");
    }
    // None of the bad input reached the others, and their sockets still work.
    silent(&mut nice).await?;
    silent(&mut viewer).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    say(&mut nice, "n-1", "all good").await?;
    assert_eq!(recv(&mut nice).await?["RequestId"], "n-1");
    assert_eq!(recv(&mut viewer).await?["Content"], "all good");
    assert_eq!(recv(&mut rude).await?["Content"], "all good");
    server.stop()?;
    Ok(())
}

#[tokio::test]
async fn bad_tokens_are_refused_at_the_handshake_and_delete_room_closes_everyone() -> Result<()> {
    let server = Server::start("tokens").await?;
    let room = server.create_room(json!({})).await?;
    let token = server.chat_token(&room, "u1", &["SEND_MESSAGE"]).await?;

    let refused = |r: std::result::Result<Ws, (u16, Value)>| match r {
        Ok(_) => Err(anyhow!("the upgrade was accepted")),
        Err((status, body)) => Ok((status, body["code"].as_str().unwrap_or_default().to_owned())),
    };
    assert_eq!(refused(server.chat_try_connect("garbage").await?)?, (401, "TOKEN_MALFORMED".into()));
    let mut forged: Vec<&str> = token.split('.').collect();
    forged[2] = "AAAA";
    assert_eq!(refused(server.chat_try_connect(&forged.join(".")).await?)?.0, 401);
    // A stage participant token is not a chat token.
    let stage = server.ok(Method::POST, "/v1/stages", Some(json!({"name": "s"}))).await?;
    let stage_id = stage["stage"]["id"].as_str().context("stage id")?;
    let stage_token = server.ok(Method::POST, &format!("/v1/stages/{stage_id}/tokens"), Some(json!({}))).await?;
    let stage_token = stage_token["participantToken"]["token"].as_str().context("token")?;
    assert_eq!(refused(server.chat_try_connect(stage_token).await?)?, (401, "TOKEN_INVALID".into()));

    let mut a = server.chat_connect(&token).await?;
    let mut b = server.chat_connect(&server.chat_token(&room, "u2", &[]).await?).await?;
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/{room}"), None, None).await?;
    assert_eq!(status, 204);
    assert_eq!(expect_close(&mut a).await?, "room deleted");
    assert_eq!(expect_close(&mut b).await?, "room deleted");
    assert_eq!(refused(server.chat_try_connect(&token).await?)?, (404, "ROOM_NOT_FOUND".into()));
    server.stop()?;
    Ok(())
}

#[tokio::test]
async fn an_expired_session_gets_401_and_a_clean_close() -> Result<()> {
    let server = Server::start("expiry").await?;
    let room = server.create_room(json!({})).await?;
    // Minted as if 59 min 58 s ago with a 60-minute session: two seconds left.
    let spec = TokenSpec {
        user_id: "short".into(),
        capabilities: vec![ChatCapability::SendMessage],
        session_minutes: Some(60),
        ..TokenSpec::default()
    };
    let minted = server.running.state.chat.create_token(&room, spec, chrono::Utc::now().timestamp() - 3598)?;
    let mut ws = server.chat_connect(&minted.token).await?;
    say(&mut ws, "s-1", "before").await?;
    assert_eq!(recv(&mut ws).await?["Content"], "before");
    let error = recv(&mut ws).await?;
    assert_eq!((error["Type"].as_str(), error["ErrorCode"].as_u64()), (Some("ERROR"), Some(401)), "{error}");
    assert_eq!(expect_close(&mut ws).await?, "session expired");
    // The same token cannot connect again.
    match server.chat_try_connect(&minted.token).await? {
        Err((401, body)) => assert_eq!(body["code"], "TOKEN_EXPIRED"),
        other => bail!("expected 401 TOKEN_EXPIRED, got {:?}", other.err()),
    }
    server.stop()?;
    Ok(())
}

#[tokio::test]
async fn rooms_and_tokens_survive_a_restart() -> Result<()> {
    let server = Server::start("restart").await?;
    let room = server.create_room(json!({"name": "kept", "maximumMessageLength": 42})).await?;
    let token = server.chat_token(&room, "u1", &["SEND_MESSAGE"]).await?;
    let dir = server.stop_keeping_dir();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let server = Server::start_in(dir).await?;
    let got = server.ok(Method::GET, &format!("/v1/rooms/{room}"), None).await?;
    assert_eq!((got["name"].as_str(), got["maximumMessageLength"].as_u64()), (Some("kept"), Some(42)));
    let mut ws = server.chat_connect(&token).await?;
    say(&mut ws, "r-1", &"z".repeat(43)).await?;
    assert_eq!(recv(&mut ws).await?["ErrorCode"], 413);
    say(&mut ws, "r-2", "fits").await?;
    assert_eq!(recv(&mut ws).await?["Content"], "fits");
    server.stop()?;
    Ok(())
}

#[tokio::test]
async fn a_client_that_cannot_keep_up_is_cut_not_skipped() -> Result<()> {
    // Only the room's limit here: this is about the outbound queue.
    let server = Server::start_with("slow", |c| c.chat_connection_rate = 1000).await?;
    let hub = &server.running.state.chat;
    let room = server.create_room(json!({"maximumMessageRatePerSecond": 100})).await?;
    let now = chrono::Utc::now().timestamp();
    let claims = |user: &str| {
        ChatClaims::new(
            room.clone(),
            user.to_owned(),
            Default::default(),
            vec![ChatCapability::SendMessage],
            now,
            now + 3600,
            user.to_owned(),
        )
    };
    let mut fast = hub.join(&claims("fast"))?;
    let mut slow = hub.join(&claims("slow"))?;
    assert_eq!(hub.connection_count(&room), 2);

    // `fast` sends and drains its queue; `slow` never reads. Fake clock: 11 ms apart.
    let total = OUTBOUND_QUEUE + 10;
    let mut clock = chrono::Utc::now().timestamp_millis();
    let mut acks = 0;
    for i in 0..total {
        clock += 11;
        let request = json!({"Action": "SEND_MESSAGE", "RequestId": format!("r{i}"), "Content": format!("m{i}")});
        hub.handle_text(&room, fast.id, &request.to_string(), clock);
        while let Ok(Outbound::Text(text)) = fast.outbound.try_recv() {
            let frame: Value = serde_json::from_str(text.as_str())?;
            assert_eq!(frame["RequestId"], format!("r{acks}"), "{frame}");
            acks += 1;
        }
    }
    assert_eq!(acks, total, "every message was acknowledged to its sender");
    // The slow client was cut (not skipped): its queue holds the first
    // OUTBOUND_QUEUE messages in order, with no gap, and it is out of the room.
    assert!(slow.killed.try_recv().is_ok(), "the slow connection is cut");
    let mut queued = 0;
    while let Ok(Outbound::Text(text)) = slow.outbound.try_recv() {
        let frame: Value = serde_json::from_str(text.as_str())?;
        assert_eq!(frame["Content"], format!("m{queued}"));
        queued += 1;
    }
    assert_eq!(queued, OUTBOUND_QUEUE);
    assert_eq!(hub.connection_count(&room), 1);
    drop(slow);
    drop(fast);
    assert_eq!(hub.connection_count(&room), 0);
    server.stop()?;
    Ok(())
}
