//! Nobody can chat as someone else in a demo group: the demo backend derives
//! every chat user id and sets every role (issue: a viewer asking
//! `/api/chat-token` for the host's `userId` used to get the host's id, and
//! the host's DISCONNECT_USER of that id then disconnected the host too).

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use stagecast_server::chat::ChatClaims;

mod common;
use common::chat::{expect_close, recv, say, send};
use common::Server;

impl Server {
    /// `(status, body)` of a demo-backend call.
    async fn demo(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.call(Method::POST, path, Some(body), None).await
    }

    /// A demo call that must succeed.
    async fn demo_ok(&self, path: &str, body: Value) -> Result<Value> {
        let (status, body) = self.demo(path, body).await?;
        ensure!(status == 200, "{path}: {status} {body}");
        Ok(body)
    }

    /// The verified claims of a chat token.
    fn chat_claims(&self, token: &Value) -> Result<ChatClaims> {
        let token = token.as_str().context("token")?;
        Ok(self.running.state.chat.verify_token(token, chrono::Utc::now().timestamp())?)
    }
}

fn role(claims: &ChatClaims) -> Option<&str> {
    claims.attributes.get("role").map(String::as_str)
}

const SECRET_A: &str = "a-viewer-secret-0001";
const SECRET_B: &str = "a-viewer-secret-0002";

#[tokio::test]
async fn viewers_get_server_derived_ids_that_never_collide() -> Result<()> {
    let server = Server::start("identity").await?;
    let created = server
        .demo_ok("/api/create", json!({"userId": "alice", "attributes": {"username": "Alice", "avatarUrl": ""}}))
        .await?;
    let group = created["groupId"].as_str().context("groupId")?;
    let room = created["chat"]["id"].as_str().context("room")?;
    let host_pid = created["stage"]["participantId"].as_str().context("participantId")?;
    let host = server.chat_claims(&created["chat"]["token"])?;
    assert_eq!((host.user_id.as_str(), role(&host)), (host_pid, Some("host")));
    let joined = server
        .demo_ok("/api/join", json!({"groupId": group, "userId": "alice", "attributes": {"username": "Alice"}}))
        .await?;
    let guest = server.chat_claims(&joined["chat"]["token"])?;
    assert_eq!(guest.user_id, joined["stage"]["participantId"].as_str().context("participantId")?);
    assert_eq!(role(&guest), Some("guest"));
    assert_ne!(guest.user_id, host.user_id, "the same userId twice still chats as two people");

    // The attack: ask for the host's user id (the one it sent, or its chat id).
    for user_id in ["alice", host_pid] {
        let (status, body) = server
            .demo("/api/chat-token", json!({"groupId": group, "userId": user_id, "attributes": {"username": "Alice"}}))
            .await?;
        assert_eq!((status, body["code"].as_str()), (400, Some("USER_ID_NOT_ALLOWED")), "{body}");
    }

    // A forged role is refused by name (the server sets every role).
    let forged = json!({"groupId": group, "viewerSecret": SECRET_A, "attributes": {"username": "Alice", "role": "host"}});
    let (status, body) = server.demo("/api/chat-token", forged).await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("UNKNOWN_FIELD")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("attributes.role")), "{body}");

    // Two viewers: distinct ids, neither the host's nor a guest's.
    let ask = |secret: &str| json!({"groupId": group, "viewerSecret": secret, "attributes": {"username": "Alice"}});
    let a = server.demo_ok("/api/chat-token", ask(SECRET_A)).await?;
    let b = server.demo_ok("/api/chat-token", ask(SECRET_B)).await?;
    let (va, vb) = (server.chat_claims(&a["token"])?, server.chat_claims(&b["token"])?);
    assert_eq!(a["userId"], va.user_id.as_str());
    for v in [&va, &vb] {
        assert!(v.user_id.starts_with("viewer-"), "{}", v.user_id);
        assert_ne!(v.user_id, host.user_id);
        assert_ne!(v.user_id, guest.user_id);
        assert_eq!(role(v), Some("viewer"));
        assert_eq!(v.attributes.get("username").map(String::as_str), Some("Alice"));
        let caps = v.chat_capabilities();
        assert!(caps.send_message && !caps.delete_message && !caps.disconnect_user);
        assert_eq!(v.room, room);
    }
    assert_ne!(va.user_id, vb.user_id);
    // The same secret is the same viewer (a reload); in another group it is another id.
    let again = server.demo_ok("/api/chat-token", ask(SECRET_A)).await?;
    assert_eq!(again["userId"], a["userId"]);
    let other = server.demo_ok("/api/create", json!({"userId": "zed", "attributes": {"username": "Zed"}})).await?;
    let elsewhere = server
        .demo_ok("/api/chat-token", json!({"groupId": other["groupId"], "viewerSecret": SECRET_A}))
        .await?;
    assert_ne!(elsewhere["userId"], a["userId"]);
    // No secret: a new id every time. viewOnly: read, nothing else.
    let r1 = server.demo_ok("/api/chat-token", json!({"groupId": group, "viewOnly": true})).await?;
    let r2 = server.demo_ok("/api/chat-token", json!({"groupId": group, "viewOnly": true})).await?;
    assert_ne!(r1["userId"], r2["userId"]);
    let reader = server.chat_claims(&r1["token"])?;
    let caps = reader.chat_capabilities();
    assert!(!caps.send_message && !caps.delete_message && !caps.disconnect_user);
    assert_eq!(role(&reader), Some("viewer"));
    assert!(r1["endpoint"].as_str().is_some_and(|e| e.starts_with("ws://") && e.ends_with("/v1/chat")), "{r1}");
    assert!(r1["sessionExpirationTime"].as_str().is_some_and(|t| t.ends_with('Z')), "{r1}");

    // Refusals.
    for (body, status, code) in [
        (json!({"groupId": group, "viewerSecret": "short"}), 400, "INVALID_VIEWER_SECRET"),
        (json!({"groupId": group, "viewerSecret": "x".repeat(257)}), 400, "INVALID_VIEWER_SECRET"),
        (json!({"groupId": "nope", "viewerSecret": SECRET_A}), 404, "GROUP_NOT_FOUND"),
        (json!({"viewerSecret": SECRET_A}), 400, "INVALID_FIELD"),
        (json!({"groupId": group, "nickname": "x"}), 400, "UNKNOWN_FIELD"),
    ] {
        let (got, reply) = server.demo("/api/chat-token", body.clone()).await?;
        assert_eq!((got, reply["code"].as_str()), (status, Some(code)), "{body}: {reply}");
    }
    server.stop()
}

#[tokio::test]
async fn the_host_disconnecting_an_impostor_does_not_disconnect_the_host() -> Result<()> {
    let server = Server::start("impostor").await?;
    let created = server
        .demo_ok("/api/create", json!({"userId": "alice", "attributes": {"username": "Alice", "avatarUrl": ""}}))
        .await?;
    let group = created["groupId"].as_str().context("groupId")?;
    let room = created["chat"]["id"].as_str().context("room")?;
    let mut host = server.chat_connect(created["chat"]["token"].as_str().context("token")?).await?;
    let impostor = server
        .demo_ok("/api/chat-token", json!({"groupId": group, "viewerSecret": SECRET_A, "attributes": {"username": "Alice"}}))
        .await?;
    let impostor_id = impostor["userId"].as_str().context("userId")?.to_owned();
    let mut fake = server.chat_connect(impostor["token"].as_str().context("token")?).await?;

    // Same display name, told apart by the signed role (and the id).
    say(&mut host, "h-1", "hi, I am the host").await?;
    let seen = recv(&mut fake).await?;
    assert_eq!(seen["Sender"]["Attributes"]["role"], "host");
    recv(&mut host).await?;
    say(&mut fake, "f-1", "hi, I am the host too").await?;
    let seen = recv(&mut host).await?;
    assert_eq!(seen["Sender"]["UserId"], impostor_id.as_str());
    assert_eq!(seen["Sender"]["Attributes"], json!({"username": "Alice", "role": "viewer"}));
    recv(&mut fake).await?;

    // The host removes the impostor: only the impostor goes.
    send(&mut host, json!({"Action": "DISCONNECT_USER", "RequestId": "h-2", "UserId": impostor_id})).await?;
    assert_eq!(recv(&mut host).await?["RequestId"], "h-2");
    assert_eq!(recv(&mut fake).await?["EventName"], "aws:DISCONNECT_USER");
    assert_eq!(expect_close(&mut fake).await?, "user disconnected");
    // And disconnecting the user id the host signed up with touches nobody.
    server.ok(Method::POST, &format!("/v1/rooms/{room}/users/alice/disconnect"), None).await?;
    assert_eq!(recv(&mut host).await?["EventName"], "aws:DISCONNECT_USER");
    say(&mut host, "h-3", "still here").await?;
    assert_eq!(recv(&mut host).await?["Content"], "still here");
    assert_eq!(server.running.state.chat.connection_count(room), 1);
    server.stop()
}
