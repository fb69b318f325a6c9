//! The SFU load generator's Janus side (`--target janus`): Janus's HTTP API
//! (a session, handles attached to `janus.plugin.videoroom`, messages whose
//! answer arrives as an event on the session's long poll) and the pieces of
//! its messages the generator needs. What reads a message is kept apart from
//! the I/O and tested natively (`server/tests/sfu_load_janus.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The plugin every handle attaches to.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";
/// How long an asynchronous answer (the event after an `ack`) may take.
const EVENT_WAIT: Duration = Duration::from_secs(30);
/// Keepalives well inside Janus's 60 s session timeout.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Events one long poll may return at once.
const MAX_EVENTS: u32 = 64;

/// A JSEP description carried beside a message or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jsep {
    /// `offer` or `answer`.
    pub kind: String,
    pub sdp: String,
}

/// One trickled candidate (`candidate:…`, as in an SDP's `a=` line), or the
/// end of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trickle {
    Candidate { mid: Option<String>, candidate: String },
    Completed,
}

/// What the generator reads of a message from Janus: a synchronous reply to
/// a POST, or an event from the long poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `success`, `ack`, `event`, `error`, `webrtcup`, `media`, `hangup`, `trickle`, `keepalive`, …
    pub janus: String,
    pub transaction: Option<String>,
    /// The handle an event is about.
    pub sender: Option<u64>,
    /// `data` of a `success` (a new session's or handle's `id`).
    pub data: Option<Value>,
    /// The plugin's own reply (`plugindata.data`).
    pub plugin: Option<Value>,
    pub jsep: Option<Jsep>,
    pub trickle: Vec<Trickle>,
    /// The failure Janus or the plugin reported: Janus's `error`, or the
    /// plugin's `error_code` / `error`.
    pub error: Option<String>,
    /// `reason` of a `hangup`.
    pub reason: Option<String>,
}

impl Message {
    pub fn parse(value: &Value) -> Result<Self> {
        let janus = value.get("janus").and_then(Value::as_str).context("a Janus message without \"janus\"")?.to_owned();
        let transaction = value.get("transaction").and_then(Value::as_str).map(str::to_owned);
        let sender = value.get("sender").and_then(Value::as_u64);
        let data = value.get("data").cloned();
        let plugin = value.pointer("/plugindata/data").cloned();
        let jsep = match value.get("jsep") {
            Some(j) => Some(Jsep {
                kind: j.get("type").and_then(Value::as_str).context("a jsep without a type")?.to_owned(),
                sdp: j.get("sdp").and_then(Value::as_str).context("a jsep without an sdp")?.to_owned(),
            }),
            None => None,
        };
        // A trickle event names one candidate, a list of them, or the end.
        let trickle = match value.get("candidate") {
            Some(Value::Array(list)) => list.iter().filter_map(trickle_of).collect(),
            Some(one) => trickle_of(one).into_iter().collect(),
            None => Vec::new(),
        };
        let core_error = value.get("error").map(|e| {
            let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
            format!("{} ({code})", e.get("reason").and_then(Value::as_str).unwrap_or("no reason"))
        });
        let plugin_error = plugin.as_ref().and_then(|p| {
            let reason = p.get("error").and_then(Value::as_str)?;
            Some(format!("{reason} ({})", p.get("error_code").and_then(Value::as_i64).unwrap_or(0)))
        });
        let reason = value.get("reason").and_then(Value::as_str).map(str::to_owned);
        Ok(Self { janus, transaction, sender, data, plugin, jsep, trickle, error: core_error.or(plugin_error), reason })
    }

    /// The id in a `success` reply's `data` (a session or a handle).
    pub fn id(&self) -> Option<u64> {
        self.data.as_ref()?.get("id")?.as_u64()
    }

    /// The videoroom's event name (`created`, `joined`, `attached`, `event`, …).
    pub fn videoroom(&self) -> Option<&str> {
        self.plugin.as_ref()?.get("videoroom")?.as_str()
    }

    /// A publisher's feed id (`joined`: `id`).
    pub fn feed_id(&self) -> Option<u64> {
        self.plugin.as_ref()?.get("id")?.as_u64()
    }

    /// The subscriber's own mid of the first stream of `kind` (`attached`
    /// and `updated` list them under `streams`).
    pub fn stream_mid(&self, kind: &str) -> Option<String> {
        let streams = self.plugin.as_ref()?.get("streams")?.as_array()?;
        streams
            .iter()
            .find(|s| s.get("type").and_then(Value::as_str) == Some(kind))?
            .get("mid")?
            .as_str()
            .map(str::to_owned)
    }
}

fn trickle_of(value: &Value) -> Option<Trickle> {
    if value.get("completed").and_then(Value::as_bool) == Some(true) {
        return Some(Trickle::Completed);
    }
    let candidate = value.get("candidate")?.as_str()?;
    // As str0m reads it: `candidate:…`, without the SDP's `a=`.
    let candidate = candidate.strip_prefix("a=").unwrap_or(candidate);
    let candidate =
        if candidate.starts_with("candidate:") { candidate.to_owned() } else { format!("candidate:{candidate}") };
    let mid = value.get("sdpMid").and_then(Value::as_str).map(str::to_owned);
    Some(Trickle::Candidate { mid, candidate })
}

/// The events of one long poll: a list with `maxev` above one, else one.
pub fn events_of(value: Value) -> Vec<Value> {
    match value {
        Value::Array(list) => list,
        one => vec![one],
    }
}

/// The UDP ports of the host candidates in an SDP (Janus has one per handle:
/// the generator watches their socket drops).
pub fn candidate_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            // foundation component transport priority address port …
            f.get(2)?.eq_ignore_ascii_case("udp").then_some(())?;
            f.get(5)?.parse().ok()
        })
        .collect()
}

/// The videoroom `create` request for a room of the benchmark: VP8 and
/// Opus, room for `publishers`, no bitrate cap (`bitrate` 0), not saved.
pub fn create_room(room: u64, publishers: usize) -> Value {
    json!({
        "request": "create",
        "room": room,
        "description": format!("sfu-load-{room}"),
        "publishers": publishers,
        "bitrate": 0,
        "videocodec": "vp8",
        "audiocodec": "opus",
        "permanent": false,
        "notify_joining": false,
    })
}

/// Waiters for asynchronous answers, by transaction; trickled candidates by handle.
#[derive(Default)]
struct Pending {
    answers: HashMap<String, oneshot::Sender<Message>>,
    candidates: HashMap<u64, Vec<Trickle>>,
}

/// A Janus session on the HTTP API: every handle of the run is on it, one
/// long poll reads every event.
pub struct Janus {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/janus`.
    base: String,
    session: u64,
    next: AtomicU64,
    pending: Arc<Mutex<Pending>>,
    /// Handles Janus hung up (ICE or DTLS failed, …), with the reason.
    hangups: Arc<Mutex<Vec<String>>>,
}

impl Janus {
    /// Create a session on `base` and start its long poll and keepalives.
    pub async fn connect(base: &str) -> Result<Arc<Self>> {
        let http = reqwest::Client::new();
        let base = base.trim_end_matches('/').to_owned();
        let reply: Value = http
            .post(&base)
            .json(&json!({"janus": "create", "transaction": "session"}))
            .send()
            .await
            .with_context(|| format!("Janus at {base}"))?
            .json()
            .await?;
        let reply = Message::parse(&reply)?;
        let session = reply.id().with_context(|| format!("Janus created no session: {reply:?}"))?;
        let janus = Arc::new(Self {
            http,
            base,
            session,
            next: AtomicU64::new(1),
            pending: Arc::default(),
            hangups: Arc::default(),
        });
        tokio::spawn(Self::poll(janus.clone()));
        tokio::spawn(Self::keepalive(janus.clone()));
        Ok(janus)
    }

    fn transaction(&self) -> String {
        format!("t{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Read the session's events until the process ends: hand answers to
    /// their waiters, keep trickled candidates and hangups.
    async fn poll(self: Arc<Self>) {
        let url = format!("{}/{}?maxev={MAX_EVENTS}", self.base, self.session);
        loop {
            let events = match self.http.get(&url).send().await {
                Ok(res) => match res.json::<Value>().await {
                    Ok(v) => events_of(v),
                    Err(e) => {
                        eprintln!("sfu_load: a Janus long poll returned no JSON: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
                Err(e) => {
                    eprintln!("sfu_load: the Janus long poll failed: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for event in &events {
                let Ok(message) = Message::parse(event) else { continue };
                self.dispatch(message);
            }
        }
    }

    fn dispatch(&self, message: Message) {
        let mut pending = self.pending.lock().expect("invariant: the lock is never poisoned");
        if message.janus == "hangup" {
            let reason = message.reason.clone().unwrap_or_default();
            self.hangups.lock().expect("invariant: not poisoned").push(format!("{:?}: {reason}", message.sender));
        }
        if let (Some(sender), false) = (message.sender, message.trickle.is_empty()) {
            pending.candidates.entry(sender).or_default().extend(message.trickle.iter().cloned());
        }
        // An `event` with the transaction of a message answers it.
        if message.janus == "event" {
            if let Some(waiter) = message.transaction.as_ref().and_then(|t| pending.answers.remove(t)) {
                let _ = waiter.send(message);
            }
        }
    }

    async fn keepalive(self: Arc<Self>) {
        let url = format!("{}/{}", self.base, self.session);
        loop {
            tokio::time::sleep(KEEPALIVE).await;
            let body = json!({"janus": "keepalive", "transaction": self.transaction()});
            if let Err(e) = self.http.post(&url).json(&body).send().await {
                eprintln!("sfu_load: a Janus keepalive failed: {e}");
            }
        }
    }

    async fn post(&self, path: &str, mut body: Value) -> Result<Message> {
        let transaction = self.transaction();
        body["transaction"] = json!(transaction);
        let url = format!("{}/{}{path}", self.base, self.session);
        let reply: Value = self.http.post(&url).json(&body).send().await?.error_for_status()?.json().await?;
        let reply = Message::parse(&reply)?;
        if let Some(e) = &reply.error {
            bail!("Janus refused {body}: {e}");
        }
        Ok(reply)
    }

    /// Attach a handle to the videoroom plugin.
    pub async fn attach(&self) -> Result<u64> {
        let reply = self.post("", json!({"janus": "attach", "plugin": VIDEOROOM})).await?;
        reply.id().with_context(|| format!("Janus attached no handle: {reply:?}"))
    }

    /// Send `body` (and `jsep`) to the plugin on `handle`; the plugin's answer:
    /// the reply itself for a synchronous request, else the event that
    /// carries the message's transaction.
    pub async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> Result<Message> {
        let transaction = self.transaction();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("invariant: not poisoned").answers.insert(transaction.clone(), tx);
        let mut request = json!({"janus": "message", "body": body, "transaction": transaction});
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        let url = format!("{}/{}/{handle}", self.base, self.session);
        let sent = async {
            let reply: Value = self.http.post(&url).json(&request).send().await?.error_for_status()?.json().await?;
            Message::parse(&reply)
        }
        .await;
        let reply = match sent {
            Ok(r) if r.janus == "ack" => None,
            Ok(r) => Some(r),
            Err(e) => Some(Err(e).context("a Janus message")?),
        };
        let answer = match reply {
            Some(r) => {
                self.pending.lock().expect("invariant: not poisoned").answers.remove(&transaction);
                r
            }
            None => tokio::time::timeout(EVENT_WAIT, rx)
                .await
                .map_err(|_| anyhow!("no answer from Janus in {EVENT_WAIT:?} to {}", request["body"]))?
                .context("the Janus long poll stopped")?,
        };
        if let Some(e) = &answer.error {
            bail!("the videoroom refused {}: {e}", request["body"]);
        }
        Ok(answer)
    }

    /// Candidates Janus trickled for `handle` so far (taken).
    pub fn take_candidates(&self, handle: u64) -> Vec<Trickle> {
        self.pending.lock().expect("invariant: not poisoned").candidates.remove(&handle).unwrap_or_default()
    }

    pub fn hangups(&self) -> Vec<String> {
        self.hangups.lock().expect("invariant: not poisoned").clone()
    }
}
