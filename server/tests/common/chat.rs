//! Chat helpers for the server's integration tests: rooms and tokens through
//! the control plane, `GET /v1/chat` connections, and reading IVS Chat frames.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{Api, Upgrade, Ws};

pub const CHAT_PATH: &str = "/v1/chat";
pub const WAIT: Duration = Duration::from_secs(5);

/// Chat calls for any server under test (in process or a spawned binary).
impl Api {
    pub async fn create_room(&self, body: Value) -> Result<String> {
        let room = self.ok(Method::POST, "/v1/rooms", Some(body)).await?;
        Ok(room["id"].as_str().context("room id")?.to_owned())
    }

    pub async fn chat_token(&self, room: &str, user: &str, caps: &[&str]) -> Result<String> {
        let body = json!({"userId": user, "capabilities": caps, "attributes": {"username": user}});
        let reply = self.ok(Method::POST, &format!("/v1/rooms/{room}/tokens"), Some(body)).await?;
        Ok(reply["token"].as_str().context("token")?.to_owned())
    }

    pub fn chat_url(&self) -> String {
        self.ws_url(CHAT_PATH)
    }

    pub async fn chat_try_connect(&self, token: &str) -> Result<Upgrade> {
        self.ws_try_connect(CHAT_PATH, Some(token)).await
    }

    pub async fn chat_connect(&self, token: &str) -> Result<Ws> {
        self.ws_connect(CHAT_PATH, token).await
    }
}

/// The next frame as JSON (skipping transport pings); `Err` on close or timeout.
pub async fn recv(ws: &mut Ws) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.context("timed out waiting for a frame")?;
        match msg {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str())?),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => bail!("expected a frame, got {other:?}"),
        }
    }
}

/// The next frame that is not a replay of the room's history.
pub async fn recv_live(ws: &mut Ws) -> Result<Value> {
    loop {
        let frame = recv(ws).await?;
        if frame["History"] != true {
            return Ok(frame);
        }
    }
}

/// The socket closes now with a clean close frame (code 1000); returns its reason.
pub async fn expect_close(ws: &mut Ws) -> Result<String> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.context("timed out waiting for close")?;
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => {
                ensure!(u16::from(frame.code) == 1000, "close code {}", frame.code);
                return Ok(frame.reason.to_string());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => bail!("expected a close frame, got {other:?}"),
        }
    }
}

/// Nothing arrives for a short while.
pub async fn silent(ws: &mut Ws) -> Result<()> {
    match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        Err(_) => Ok(()),
        Ok(other) => bail!("expected silence, got {other:?}"),
    }
}

pub async fn send(ws: &mut Ws, value: Value) -> Result<()> {
    ws.send(Message::Text(value.to_string().into())).await?;
    Ok(())
}

pub async fn say(ws: &mut Ws, request_id: &str, content: &str) -> Result<()> {
    send(ws, json!({"Action": "SEND_MESSAGE", "RequestId": request_id, "Content": content, "Attributes": {"k": "v"}}))
        .await
}
