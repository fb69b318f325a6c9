//! Support shared by the server's integration tests (`mod common;` in each):
//! a server on port 0 with a temp data dir, control-plane calls with the API
//! key, WebSocket connections with a token subprotocol, and a few media
//! helpers. Each test binary uses only some of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use reqwest::Method;
use serde_json::Value;
use stagecast_server::{Config, Running};
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{tungstenite, MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An accepted socket, or the HTTP status and JSON body of a refused upgrade.
pub type Upgrade = std::result::Result<Ws, (u16, Value)>;

/// The stage event plane's WebSocket path.
pub const EVENTS_PATH: &str = "/v1/stage/events";

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(name: &str) -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let dir = std::env::temp_dir().join(format!("stagecast-test-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A running server (HTTP and media on port 0). Dropping it stops the
/// server and removes its data dir.
pub struct Server {
    pub running: Running,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub api_key: String,
    pub http: reqwest::Client,
    pub dir: PathBuf,
    keep_dir: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.running.task.abort();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A participant token minted through the control plane.
pub struct Token {
    pub participant_id: String,
    pub token: String,
}

impl Server {
    /// A server on a fresh temp data dir.
    pub async fn start(name: &str) -> Result<Self> {
        Self::start_in(temp_dir(name)?).await
    }

    /// A server on `dir` (which may hold a previous server's data).
    pub async fn start_in(dir: PathBuf) -> Result<Self> {
        let running = stagecast_server::start(Config::for_tests(dir.clone())).await?;
        let base = format!("http://{}", running.http_addr);
        let api_key = running.state.api_key.clone();
        Ok(Self { running, base, api_key, http: reqwest::Client::new(), dir, keep_dir: false })
    }

    /// Stop the server and remove its data dir, reporting a failure to remove it.
    pub fn stop(mut self) -> Result<()> {
        self.keep_dir = true;
        let dir = std::mem::take(&mut self.dir);
        drop(self);
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }

    /// Stop the server but keep its data dir (to start another on it).
    pub fn stop_keeping_dir(mut self) -> PathBuf {
        self.keep_dir = true;
        std::mem::take(&mut self.dir)
    }

    /// `(status, body)` of a request with the API key (or `key`); an empty
    /// body is `Null`.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>, key: Option<&str>) -> Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        req = req.bearer_auth(key.unwrap_or(&self.api_key));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? };
        Ok((status, body))
    }

    /// [`Server::call`] with the API key.
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        self.call(method, path, body, None).await
    }

    /// The body of a request with the API key that must succeed (2xx).
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, body) = self.api(method, path, body).await?;
        ensure!((200..300).contains(&status), "status {status}: {body}");
        Ok(body)
    }

    /// `POST` with the API key that must succeed.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.ok(Method::POST, path, Some(body)).await
    }

    /// `POST /v1/stages` with `body`; the new stage's id.
    pub async fn create_stage_with(&self, body: Value) -> Result<String> {
        let (status, body) = self.api(Method::POST, "/v1/stages", Some(body)).await?;
        ensure!(status == 200 || status == 201, "create stage: {status} {body}");
        body["stage"]["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no stage id in {body}"))
    }

    /// `POST /v1/stages/{stage}/tokens` with `body`.
    pub async fn participant_token(&self, stage: &str, body: Value) -> Result<Token> {
        let (status, body) = self.api(Method::POST, &format!("/v1/stages/{stage}/tokens"), Some(body)).await?;
        ensure!(status == 200 || status == 201, "create token: {status} {body}");
        let t = &body["participantToken"];
        Ok(Token {
            participant_id: t["participantId"].as_str().context("participantId")?.to_owned(),
            token: t["token"].as_str().context("token")?.to_owned(),
        })
    }

    /// `ws://<host><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.running.http_addr)
    }

    /// Open a WebSocket to `path` with `token` as the subprotocol, which the
    /// server must echo back. `Ok(Err(..))` when the upgrade is refused.
    pub async fn ws_try_connect(&self, path: &str, token: Option<&str>) -> Result<Upgrade> {
        let mut req = self.ws_url(path).into_client_request()?;
        if let Some(token) = token {
            req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(token)?);
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, response)) => {
                let echoed = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
                ensure!(echoed == token, "the server must echo the token subprotocol, got {echoed:?}");
                Ok(Ok(ws))
            }
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().map(serde_json::from_slice).transpose()?.unwrap_or(Value::Null);
                Ok(Err((status, body)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Server::ws_try_connect`] that must be accepted.
    pub async fn ws_connect(&self, path: &str, token: &str) -> Result<Ws> {
        self.ws_try_connect(path, Some(token)).await?.map_err(|(s, b)| anyhow!("upgrade refused: {s} {b}"))
    }
}

/// Split an Annex-B file into access units (one slice per frame, as x264 writes).
pub fn access_units(data: &[u8]) -> Vec<Vec<u8>> {
    use stagecast_server::channel::h264::{nal_type, split_annex_b};
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut has_slice = false;
    for nal in split_annex_b(data) {
        let t = nal_type(nal);
        let is_slice = t == 1 || t == 5;
        // A slice with first_mb_in_slice == 0 (ue(v) "1" bit) starts a new picture.
        let first_slice = is_slice && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        if has_slice && (first_slice || matches!(t, 6..=9)) {
            out.push(std::mem::take(&mut current));
            has_slice = false;
        }
        current.extend_from_slice(&[0, 0, 0, 1]);
        current.extend_from_slice(nal);
        has_slice |= is_slice;
    }
    if has_slice {
        out.push(current);
    }
    out
}

/// The payloads of the media received on `mid`, in order.
pub fn media_data(events: &[Event], mid: str0m::media::Mid) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MediaData(d) if d.mid == mid => Some(d.data.to_vec()),
            _ => None,
        })
        .collect()
}


/// One round for a str0m peer (standing in for a browser) on a real UDP
/// socket bound to `addr`: send what str0m wants sent, handing its events to
/// `on_event`, take in what arrived, advance time.
pub fn pump_udp(rtc: &mut Rtc, socket: &UdpSocket, addr: SocketAddr, mut on_event: impl FnMut(Event)) -> Result<()> {
    while rtc.is_alive() {
        match rtc.poll_output()? {
            Output::Transmit(t) => {
                let _ = socket.try_send_to(&t.contents, t.destination);
            }
            Output::Event(e) => on_event(e),
            Output::Timeout(_) => break,
        }
    }
    let mut buf = [0u8; 2048];
    while let Ok((n, source)) = socket.try_recv_from(&mut buf) {
        let Some(bytes) = buf.get(..n) else { continue };
        let Ok(receive) = Receive::new(Protocol::Udp, source, addr, bytes) else { continue };
        rtc.handle_input(Input::Receive(Instant::now(), receive))?;
    }
    rtc.handle_input(Input::Timeout(Instant::now()))?;
    Ok(())
}
