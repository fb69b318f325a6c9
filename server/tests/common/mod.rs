//! Support shared by the server's integration tests (`mod common;` in each):
//! a server on port 0 with a temp data dir, control-plane calls with the API
//! key, WebSocket connections with a token subprotocol, and a few media
//! helpers. Each test binary uses only some of it.
#![allow(dead_code)]

pub mod channel;
pub mod chat;
pub mod coturn;
pub mod events;
pub mod h264;
// Needs the `stagecast` binary cargo builds for integration tests only (the
// soak example includes this module too).
#[cfg(test)]
pub mod process;
pub mod redis;
pub mod tls;
pub mod whip;

#[allow(unused_imports)]
pub use whip::{recvonly, sendonly, Created};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use reqwest::Method;
use serde_json::Value;
use stagecast_server::{Config, Running};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
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
/// server and removes its data dir. Its HTTP calls are [`Api`]'s.
pub struct Server {
    pub running: Running,
    pub api: Api,
    pub dir: PathBuf,
    keep_dir: bool,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
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

    /// A server on a fresh temp data dir, with `adjust` applied to the test configuration.
    pub async fn start_with(name: &str, adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        let mut config = Config::for_tests(temp_dir(name)?);
        adjust(&mut config);
        Self::start_config(config).await
    }

    /// A server on `dir` (which may hold a previous server's data).
    pub async fn start_in(dir: PathBuf) -> Result<Self> {
        Self::start_config(Config::for_tests(dir)).await
    }

    /// A server with exactly `config` (its `data_dir` is removed on drop).
    pub async fn start_config(config: Config) -> Result<Self> {
        let dir = config.data_dir.clone();
        let running = stagecast_server::start(config).await?;
        let mut api = Api::new(&running.http_addr.to_string(), running.state.auth.api_key().to_owned());
        // `https://…` when the server serves TLS.
        api.base = running.base_url();
        Ok(Self { running, api, dir, keep_dir: false })
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
}

/// HTTP and WebSocket calls to a server, in process or not.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `127.0.0.1:<port>`.
    pub host: String,
    pub api_key: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(host: &str, api_key: String) -> Self {
        Self { base: format!("http://{host}"), host: host.to_owned(), api_key, http: reqwest::Client::new() }
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

    /// [`Api::call`] with the API key.
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
        format!("ws://{}{path}", self.host)
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

    /// [`Api::ws_try_connect`] that must be accepted.
    pub async fn ws_connect(&self, path: &str, token: &str) -> Result<Ws> {
        self.ws_try_connect(path, Some(token)).await?.map_err(|(s, b)| anyhow!("upgrade refused: {s} {b}"))
    }
}

impl Server {
    /// A new stage and a token per `(userId, capabilities)`.
    pub async fn stage_and_tokens(&self, users: &[(&str, &[&str])]) -> Result<(String, Vec<Token>)> {
        let stage = self.create_stage_with(serde_json::json!({})).await?;
        let mut tokens = Vec::new();
        for (user, caps) in users {
            tokens.push(self.participant_token(&stage, serde_json::json!({"userId": user, "capabilities": caps})).await?);
        }
        Ok((stage, tokens))
    }

    /// Connect `token` to the stage event plane and read its first state.
    pub async fn join(&self, token: &Token) -> Result<events::EventClient> {
        let mut client = events::EventClient::connect(self, token).await?;
        client.state().await?;
        Ok(client)
    }
}

/// When the server closed `stream` (EOF or reset), if within `within`.
pub async fn closed_at(stream: &mut TcpStream, within: Duration) -> Option<Instant> {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(stream, &mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Every `Link` header value.
pub fn link_values(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers.get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
}

/// A str0m peer standing in for a browser on some transport.
pub trait Pump {
    /// Send what str0m wants sent, take in what arrived, advance time.
    fn pump(&mut self) -> Result<()>;
}

/// Pump `peers` until `done` holds (or fail after 10 s, naming `what`).
pub async fn pump_until<P: Pump>(peers: &mut [&mut P], what: &str, done: impl Fn(&[&mut P]) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(peers) {
        ensure!(Instant::now() < deadline, "timed out waiting for: {what}");
        for p in peers.iter_mut() {
            p.pump()?;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The payload type the peer negotiated for VP8 on `mid`.
pub fn vp8_pt(rtc: &mut Rtc, mid: Mid) -> Result<str0m::media::Pt> {
    rtc.writer(mid)
        .context("writer")?
        .payload_params()
        .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
        .map(|p| p.pt())
        .context("vp8")
}

/// A str0m peer's SDP offer for the given transceivers.
pub fn offer(rtc: &mut Rtc, media: &[(MediaKind, Direction)]) -> Result<(String, SdpPendingOffer, Vec<Mid>)> {
    let mut api = rtc.sdp_api();
    let mids = media.iter().map(|(k, d)| api.add_media(*k, *d, None, None, None)).collect();
    let (offer, pending) = api.apply().context("offer")?;
    Ok((offer.to_sdp_string(), pending, mids))
}

/// Apply the server's SDP answer to a str0m peer.
pub fn accept(rtc: &mut Rtc, pending: SdpPendingOffer, answer: &str) -> Result<()> {
    rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(answer)?)?;
    Ok(())
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

/// A sendonly offer as Chrome writes it: BUNDLE, rtcp-mux, many codecs and
/// extmaps, an mDNS host candidate, no trickle.
pub const CHROME_SENDONLY_OFFER: &str = "v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
a=extmap-allow-mixed\r
a=msid-semantic: WMS 6a2c\r
m=audio 54400 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r
c=IN IP4 192.168.1.10\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=candidate:1467250027 1 udp 2122260223 192.168.1.10 54400 typ host generation 0 network-id 1 network-cost 10\r
a=candidate:3127134163 1 udp 2122262783 4a8d3c2b-1234-4c5d-8e9f-0123456789ab.local 54401 typ host generation 0 network-id 2\r
a=candidate:1467250028 1 tcp 1518280447 192.168.1.10 9 typ host tcptype active generation 0 network-id 1 network-cost 10\r
a=ice-ufrag:Xk1v\r
a=ice-pwd:3d4A2bWnIQy7fTq1mBx0hZ3k\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:0\r
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=sendonly\r
a=msid:6a2c 0b6e\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 minptime=10;useinbandfec=1\r
a=rtpmap:63 red/48000/2\r
a=fmtp:63 111/111\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:13 CN/8000\r
a=rtpmap:110 telephone-event/48000\r
a=rtpmap:126 telephone-event/8000\r
a=ssrc:1001 cname:Qx1wT3\r
a=ssrc:1001 msid:6a2c 0b6e\r
m=video 54400 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 100 101 112 113 116 117 118\r
c=IN IP4 192.168.1.10\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=candidate:1467250027 1 udp 2122260223 192.168.1.10 54400 typ host generation 0 network-id 1 network-cost 10\r
a=ice-ufrag:Xk1v\r
a=ice-pwd:3d4A2bWnIQy7fTq1mBx0hZ3k\r
a=ice-options:trickle\r
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r
a=setup:actpass\r
a=mid:1\r
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:13 urn:3gpp:video-orientation\r
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type\r
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing\r
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r
a=sendonly\r
a=msid:6a2c 9c1f\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 goog-remb\r
a=rtcp-fb:96 transport-cc\r
a=rtcp-fb:96 ccm fir\r
a=rtcp-fb:96 nack\r
a=rtcp-fb:96 nack pli\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
a=rtpmap:102 H264/90000\r
a=rtcp-fb:102 goog-remb\r
a=rtcp-fb:102 transport-cc\r
a=rtcp-fb:102 ccm fir\r
a=rtcp-fb:102 nack\r
a=rtcp-fb:102 nack pli\r
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r
a=rtpmap:103 rtx/90000\r
a=fmtp:103 apt=102\r
a=rtpmap:104 H264/90000\r
a=rtcp-fb:104 goog-remb\r
a=rtcp-fb:104 transport-cc\r
a=rtcp-fb:104 ccm fir\r
a=rtcp-fb:104 nack\r
a=rtcp-fb:104 nack pli\r
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r
a=rtpmap:105 rtx/90000\r
a=fmtp:105 apt=104\r
a=rtpmap:106 H264/90000\r
a=rtcp-fb:106 goog-remb\r
a=rtcp-fb:106 transport-cc\r
a=rtcp-fb:106 ccm fir\r
a=rtcp-fb:106 nack\r
a=rtcp-fb:106 nack pli\r
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r
a=rtpmap:107 rtx/90000\r
a=fmtp:107 apt=106\r
a=rtpmap:108 H264/90000\r
a=rtcp-fb:108 goog-remb\r
a=rtcp-fb:108 transport-cc\r
a=rtcp-fb:108 ccm fir\r
a=rtcp-fb:108 nack\r
a=rtcp-fb:108 nack pli\r
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r
a=rtpmap:109 rtx/90000\r
a=fmtp:109 apt=108\r
a=rtpmap:127 H264/90000\r
a=rtcp-fb:127 goog-remb\r
a=rtcp-fb:127 transport-cc\r
a=rtcp-fb:127 ccm fir\r
a=rtcp-fb:127 nack\r
a=rtcp-fb:127 nack pli\r
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r
a=rtpmap:125 rtx/90000\r
a=fmtp:125 apt=127\r
a=rtpmap:39 H264/90000\r
a=rtcp-fb:39 goog-remb\r
a=rtcp-fb:39 transport-cc\r
a=rtcp-fb:39 ccm fir\r
a=rtcp-fb:39 nack\r
a=rtcp-fb:39 nack pli\r
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f\r
a=rtpmap:40 rtx/90000\r
a=fmtp:40 apt=39\r
a=rtpmap:45 AV1/90000\r
a=rtcp-fb:45 goog-remb\r
a=rtcp-fb:45 transport-cc\r
a=rtcp-fb:45 ccm fir\r
a=rtcp-fb:45 nack\r
a=rtcp-fb:45 nack pli\r
a=fmtp:45 level-idx=5;profile=0;tier=0\r
a=rtpmap:46 rtx/90000\r
a=fmtp:46 apt=45\r
a=rtpmap:98 VP9/90000\r
a=rtcp-fb:98 goog-remb\r
a=rtcp-fb:98 transport-cc\r
a=rtcp-fb:98 ccm fir\r
a=rtcp-fb:98 nack\r
a=rtcp-fb:98 nack pli\r
a=fmtp:98 profile-id=0\r
a=rtpmap:99 rtx/90000\r
a=fmtp:99 apt=98\r
a=rtpmap:100 VP9/90000\r
a=rtcp-fb:100 goog-remb\r
a=rtcp-fb:100 transport-cc\r
a=rtcp-fb:100 ccm fir\r
a=rtcp-fb:100 nack\r
a=rtcp-fb:100 nack pli\r
a=fmtp:100 profile-id=2\r
a=rtpmap:101 rtx/90000\r
a=fmtp:101 apt=100\r
a=rtpmap:112 H264/90000\r
a=rtcp-fb:112 goog-remb\r
a=rtcp-fb:112 transport-cc\r
a=rtcp-fb:112 ccm fir\r
a=rtcp-fb:112 nack\r
a=rtcp-fb:112 nack pli\r
a=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f\r
a=rtpmap:113 rtx/90000\r
a=fmtp:113 apt=112\r
a=rtpmap:116 red/90000\r
a=rtpmap:117 rtx/90000\r
a=fmtp:117 apt=116\r
a=rtpmap:118 ulpfec/90000\r
a=ssrc-group:FID 2001 2002\r
a=ssrc:2001 cname:Qx1wT3\r
a=ssrc:2001 msid:6a2c 9c1f\r
a=ssrc:2002 cname:Qx1wT3\r
a=ssrc:2002 msid:6a2c 9c1f\r
";
