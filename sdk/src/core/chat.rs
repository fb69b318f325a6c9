//! IVS Chat messaging, sans-IO: request encoding, frame parsing, `RequestId`
//! correlation, deduplication, and the timing/reconnect decisions of
//! `ChatRoom`. Semantics follow the official `amazon-ivs-chat-messaging`
//! client (its `ChatRoom.js`, `ChatConnection.js`, `utils/deserialize.js`);
//! the one addition is that pending requests time out.
//!
//! Wire shapes (see `server/src/chat/wire.rs`): requests are PascalCase JSON
//! `{"Action", "RequestId", ...}`; frames are `{"Type": MESSAGE|EVENT|ERROR,
//! "Id", ...}` with ISO 8601 `SendTime` and a numeric `ErrorCode`.

use super::backoff::Backoff;
use super::json::{self, Fields, Value};
use std::collections::{BTreeMap, VecDeque};

/// Built-in event the server sends when a message is deleted.
pub const EVENT_DELETE_MESSAGE: &str = "aws:DELETE_MESSAGE";
/// Built-in event the server sends when a user is disconnected.
pub const EVENT_DISCONNECT_USER: &str = "aws:DISCONNECT_USER";
/// The IVS "connection expired" error code: reconnect with a fresh token.
pub const UNAUTHORIZED: i64 = 401;
/// `errorCode` of the SDK's own timeout error (no server frame answered).
pub const TIMEOUT_CODE: i64 = 408;
/// How long a request waits for its MESSAGE / EVENT / ERROR.
pub const REQUEST_TIMEOUT_MS: f64 = 10_000.0;
/// How many frame ids are remembered to drop the duplicates two overlapping
/// connections deliver while a refreshed connection replaces the old one.
const SEEN_IDS: usize = 512;

pub type Attributes = BTreeMap<String, String>;

/// Which request a pending `RequestId` belongs to; only the matching frame
/// kind settles it (as the official client checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    SendMessage,
    DeleteMessage,
    DisconnectUser,
}

/// A request to the room (the wire type shared with the server).
pub use stagecast_protocol::chat::Request;

/// What the SDK adds to the shared request type: the kind of answer that
/// settles it, and its JSON (written by hand to keep serde out of the wasm).
pub trait RequestExt {
    fn kind(&self) -> RequestKind;
    fn to_json(&self) -> String;
}

impl RequestExt for Request {
    fn kind(&self) -> RequestKind {
        match self {
            Request::SendMessage { .. } => RequestKind::SendMessage,
            Request::DeleteMessage { .. } => RequestKind::DeleteMessage,
            Request::DisconnectUser { .. } => RequestKind::DisconnectUser,
        }
    }

    /// The request as the server reads it (PascalCase, optional fields left out).
    fn to_json(&self) -> String {
        let mut out = String::from("{\"Action\":");
        let (action, request_id) = match self {
            Request::SendMessage { request_id, .. } => ("SEND_MESSAGE", request_id),
            Request::DeleteMessage { request_id, .. } => ("DELETE_MESSAGE", request_id),
            Request::DisconnectUser { request_id, .. } => ("DISCONNECT_USER", request_id),
        };
        push_str(&mut out, action);
        out.push_str(",\"RequestId\":");
        push_str(&mut out, request_id);
        let field = |out: &mut String, key: &str, value: &str| {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":");
            push_str(out, value);
        };
        match self {
            Request::SendMessage {
                content,
                attributes,
                ..
            } => {
                field(&mut out, "Content", content);
                if let Some(attributes) = attributes {
                    out.push_str(",\"Attributes\":{");
                    for (i, (k, v)) in attributes.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        push_str(&mut out, k);
                        out.push(':');
                        push_str(&mut out, v);
                    }
                    out.push('}');
                }
            }
            Request::DeleteMessage { id, reason, .. } => {
                field(&mut out, "Id", id);
                if let Some(r) = reason {
                    field(&mut out, "Reason", r);
                }
            }
            Request::DisconnectUser {
                user_id, reason, ..
            } => {
                field(&mut out, "UserId", user_id);
                if let Some(r) = reason {
                    field(&mut out, "Reason", r);
                }
            }
        }
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 0xF] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A UUID-v4-shaped request id from 128 random bits.
pub fn request_id_from(random: [u32; 4]) -> String {
    let mut hex = String::with_capacity(36);
    for (i, word) in random.iter().enumerate() {
        let word = match i {
            1 => (word & 0xFFFF_0FFF) | 0x0000_4000,
            2 => (word & 0x3FFF_FFFF) | 0x8000_0000,
            _ => *word,
        };
        for shift in (0..8).rev() {
            let n = hex.len();
            if n == 8 || n == 13 || n == 18 || n == 23 {
                hex.push('-');
            }
            let d = (word >> (shift * 4)) & 0xF;
            hex.push(char::from_digit(d, 16).unwrap_or('0'));
        }
    }
    hex
}

/// Who sent a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub user_id: String,
    pub attributes: Attributes,
}

/// A MESSAGE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: String,
    /// Set only on the sender's own copy (its acknowledgement).
    pub request_id: Option<String>,
    pub content: String,
    pub attributes: Attributes,
    /// ISO 8601, as sent.
    pub send_time: String,
    pub sender: Sender,
}

/// An EVENT frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatEvent {
    pub id: String,
    pub request_id: Option<String>,
    pub event_name: String,
    pub attributes: Attributes,
    pub send_time: String,
}

/// An ERROR frame (also the shape of the SDK's own timeout error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatError {
    pub id: String,
    pub request_id: Option<String>,
    pub error_code: i64,
    pub error_message: String,
}

/// A server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(ChatMessage),
    Event(ChatEvent),
    Error(ChatError),
}

/// Parses one server frame; `None` for anything malformed or of unknown
/// `Type` (the official client logs and drops those too).
pub fn parse_frame(text: &str) -> Option<Frame> {
    let doc = json::parse(text.as_bytes())?;
    let f = Fields::of(&doc)?;
    let opt = |key: &str| match doc.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(Value::Str(s)) => Some(Some(s.clone())),
        Some(_) => None,
    };
    Some(match f.req_str("Type")?.as_str() {
        "MESSAGE" => {
            let sender = doc.get("Sender")?;
            let s = Fields::of(sender)?;
            Frame::Message(ChatMessage {
                id: f.req_str("Id")?,
                request_id: opt("RequestId")?,
                content: f.req_str("Content")?,
                attributes: attributes(&f, "Attributes")?,
                send_time: f.req_str("SendTime")?,
                sender: Sender {
                    user_id: s.req_str("UserId")?,
                    attributes: attributes(&s, "Attributes")?,
                },
            })
        }
        "EVENT" => Frame::Event(ChatEvent {
            id: f.req_str("Id")?,
            request_id: opt("RequestId")?,
            event_name: f.req_str("EventName")?,
            attributes: attributes(&f, "Attributes")?,
            send_time: f.req_str("SendTime")?,
        }),
        "ERROR" => Frame::Error(ChatError {
            id: f.req_str("Id")?,
            request_id: opt("RequestId")?,
            error_code: i64::try_from(f.req_int("ErrorCode")?).ok()?,
            error_message: f.req_str("ErrorMessage")?,
        }),
        _ => return None,
    })
}

/// String attributes; absent or `null` is empty.
fn attributes(f: &Fields<'_>, key: &str) -> Option<Attributes> {
    match f.0.get(key) {
        Some(Value::Null) => Some(Attributes::new()),
        _ => f.opt_str_map(key),
    }
}

/// What a frame means to the application (the official client's events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `message`
    Message(ChatMessage),
    /// `event` (custom events only)
    Event(ChatEvent),
    /// `messageDelete`: an `aws:DELETE_MESSAGE` event.
    MessageDelete {
        event: ChatEvent,
        message_id: String,
        reason: Option<String>,
    },
    /// `userDisconnect`: an `aws:DISCONNECT_USER` event.
    UserDisconnect {
        event: ChatEvent,
        user_id: String,
        reason: Option<String>,
    },
}

impl Notice {
    fn request_id(&self) -> Option<&str> {
        match self {
            Notice::Message(m) => m.request_id.as_deref(),
            Notice::Event(e)
            | Notice::MessageDelete { event: e, .. }
            | Notice::UserDisconnect { event: e, .. } => e.request_id.as_deref(),
        }
    }

    fn settles(&self) -> Option<RequestKind> {
        match self {
            Notice::Message(_) => Some(RequestKind::SendMessage),
            Notice::MessageDelete { .. } => Some(RequestKind::DeleteMessage),
            Notice::UserDisconnect { .. } => Some(RequestKind::DisconnectUser),
            Notice::Event(_) => None,
        }
    }
}

/// Classifies an EVENT; a built-in event without its required attribute is
/// dropped (`None`), as the official client does.
pub fn notice_of_event(event: ChatEvent) -> Option<Notice> {
    let reason = event.attributes.get("Reason").cloned();
    Some(match event.event_name.as_str() {
        EVENT_DELETE_MESSAGE => Notice::MessageDelete {
            message_id: event.attributes.get("MessageID")?.clone(),
            reason,
            event,
        },
        EVENT_DISCONNECT_USER => Notice::UserDisconnect {
            user_id: event.attributes.get("UserId")?.clone(),
            reason,
            event,
        },
        _ => Notice::Event(event),
    })
}

/// What the adapter must do after a frame, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Dispatch to the listeners.
    Emit(Notice),
    /// Resolve the pending request's promise with this notice.
    Resolve { request_id: String, value: Notice },
    /// Reject the pending request's promise.
    Reject {
        request_id: String,
        error: ChatError,
    },
    /// The connection expired (ERROR 401): reconnect with a fresh token.
    Reconnect,
}

/// Why a request could not be submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    DuplicateRequestId,
}

/// Pending requests (by `RequestId`) and recently seen frame ids.
#[derive(Debug, Default)]
pub struct Correlator {
    pending: Vec<(String, RequestKind, f64)>,
    seen: VecDeque<String>,
}

impl Correlator {
    /// Records a request sent at `now_ms`; it times out at
    /// `now_ms + REQUEST_TIMEOUT_MS`.
    pub fn submit(&mut self, request: &Request, now_ms: f64) -> Result<(), SubmitError> {
        if self.is_pending(request.request_id()) {
            return Err(SubmitError::DuplicateRequestId);
        }
        self.pending.push((
            request.request_id().to_owned(),
            request.kind(),
            now_ms + REQUEST_TIMEOUT_MS,
        ));
        Ok(())
    }

    pub fn is_pending(&self, request_id: &str) -> bool {
        self.pending.iter().any(|(id, ..)| id == request_id)
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The earliest timeout among pending requests.
    pub fn next_deadline(&self) -> Option<f64> {
        self.pending.iter().map(|p| p.2).reduce(f64::min)
    }

    fn take(&mut self, request_id: &str) -> Option<RequestKind> {
        let i = self.pending.iter().position(|(id, ..)| id == request_id)?;
        Some(self.pending.remove(i).1)
    }

    /// Handles one text frame from the server.
    pub fn on_text(&mut self, text: &str) -> Vec<Output> {
        let Some(frame) = parse_frame(text) else {
            return Vec::new();
        };
        let id = match &frame {
            Frame::Message(m) => &m.id,
            Frame::Event(e) => &e.id,
            Frame::Error(e) => &e.id,
        };
        if self.seen.iter().any(|s| s == id) {
            return Vec::new();
        }
        if self.seen.len() >= SEEN_IDS {
            self.seen.pop_front();
        }
        self.seen.push_back(id.clone());

        let mut out = Vec::new();
        match frame {
            Frame::Error(error) => {
                if let Some(rid) = &error.request_id {
                    if self.take(rid).is_some() {
                        out.push(Output::Reject {
                            request_id: rid.clone(),
                            error: error.clone(),
                        });
                    }
                }
                if error.error_code == UNAUTHORIZED {
                    out.push(Output::Reconnect);
                }
            }
            Frame::Message(m) => self.notice(Notice::Message(m), &mut out),
            Frame::Event(e) => {
                if let Some(n) = notice_of_event(e) {
                    self.notice(n, &mut out);
                }
            }
        }
        out
    }

    fn notice(&mut self, notice: Notice, out: &mut Vec<Output>) {
        let settle = match (notice.request_id(), notice.settles()) {
            (Some(rid), Some(kind)) => {
                let i = self
                    .pending
                    .iter()
                    .position(|(id, k, _)| id == rid && *k == kind);
                i.map(|i| self.pending.remove(i).0)
            }
            _ => None,
        };
        out.push(Output::Emit(notice.clone()));
        if let Some(request_id) = settle {
            out.push(Output::Resolve {
                request_id,
                value: notice,
            });
        }
    }

    /// Removes and returns the requests whose time is up.
    pub fn expire(&mut self, now_ms: f64) -> Vec<(String, ChatError)> {
        let (done, keep) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.2 <= now_ms);
        self.pending = keep;
        done.into_iter()
            .map(|(id, ..)| {
                let e = local_error(&id, TIMEOUT_CODE, "no answer from the chat server in time");
                (id, e)
            })
            .collect()
    }

    /// Removes and returns every pending request (the room disconnected for good).
    pub fn fail_all(&mut self, message: &str) -> Vec<(String, ChatError)> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(id, ..)| {
                let e = local_error(&id, TIMEOUT_CODE, message);
                (id, e)
            })
            .collect()
    }
}

fn local_error(request_id: &str, code: i64, message: &str) -> ChatError {
    ChatError {
        id: String::new(),
        request_id: Some(request_id.to_owned()),
        error_code: code,
        error_message: message.to_owned(),
    }
}

/// When to open the replacement connection, in ms from now, for a session
/// that ends at `expires_ms`: 60 s before, or 30 s before when it has 60 s
/// or less left (never negative), as the official client schedules it.
pub fn refresh_delay_ms(expires_ms: f64, now_ms: f64) -> f64 {
    let left = expires_ms - now_ms;
    if left <= 60_000.0 {
        (left - 30_000.0).max(0.0)
    } else {
        left - 60_000.0
    }
}

/// The earlier of the token's two expiry times (ms since the epoch); the
/// connection must be replaced before either passes.
pub fn session_end_ms(session_ms: Option<f64>, token_ms: Option<f64>) -> Option<f64> {
    match (session_ms, token_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The official `DisconnectReason`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    ClientDisconnect,
    ServerDisconnect,
    SocketError,
    FetchTokenError,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientDisconnect => "clientDisconnect",
            DisconnectReason::ServerDisconnect => "serverDisconnect",
            DisconnectReason::SocketError => "socketError",
            DisconnectReason::FetchTokenError => "fetchTokenError",
        }
    }
}

/// What to do after the current socket closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// The open connection broke: start over with a fresh token (`connecting`).
    Reconnect,
    /// Opening failed: try again after this delay.
    Retry { delay_ms: u32 },
    /// Final: the room is `disconnected` for this reason.
    Disconnect(DisconnectReason),
}

/// The default reconnect policy: three attempts (the official
/// `maxReconnectAttempts`), 0.5 s doubling to 4 s.
pub fn default_backoff() -> Backoff {
    Backoff::new(500, 4_000, 3)
}

/// Decides after a close. `clean` is a close frame (the server ended the
/// connection on purpose: disconnect user, room deleted); `was_open` tells a
/// broken connection from one that never opened.
pub fn on_close(was_open: bool, clean: bool, backoff: &mut Backoff, jitter: f64) -> CloseAction {
    if clean && was_open {
        return CloseAction::Disconnect(DisconnectReason::ServerDisconnect);
    }
    if was_open {
        return CloseAction::Reconnect;
    }
    match backoff.next_delay_ms(jitter) {
        Some(delay_ms) => CloseAction::Retry { delay_ms },
        None => CloseAction::Disconnect(DisconnectReason::SocketError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value as J};

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parsed(s: &str) -> J {
        serde_json::from_str(s).expect("request JSON must be valid")
    }

    #[test]
    fn requests_encode_as_the_server_reads_them() {
        let send = Request::SendMessage {
            request_id: "r1".into(),
            content: "hi \"there\"\n\u{1}é😀".into(),
            attributes: Some(attrs(&[("a", "b"), ("k\\", "v")])),
        };
        assert_eq!(
            parsed(&send.to_json()),
            json!({"Action":"SEND_MESSAGE","RequestId":"r1","Content":"hi \"there\"\n\u{1}é😀","Attributes":{"a":"b","k\\":"v"}})
        );
        let bare = Request::SendMessage {
            request_id: "r2".into(),
            content: String::new(),
            attributes: None,
        };
        assert_eq!(
            parsed(&bare.to_json()),
            json!({"Action":"SEND_MESSAGE","RequestId":"r2","Content":""})
        );
        let del = Request::DeleteMessage {
            request_id: "r3".into(),
            id: "m1".into(),
            reason: Some("spam".into()),
        };
        assert_eq!(
            parsed(&del.to_json()),
            json!({"Action":"DELETE_MESSAGE","RequestId":"r3","Id":"m1","Reason":"spam"})
        );
        let kick = Request::DisconnectUser {
            request_id: "r4".into(),
            user_id: "bob".into(),
            reason: None,
        };
        assert_eq!(
            parsed(&kick.to_json()),
            json!({"Action":"DISCONNECT_USER","RequestId":"r4","UserId":"bob"})
        );
        assert_eq!(kick.kind(), RequestKind::DisconnectUser);
        assert_eq!(kick.request_id(), "r4");
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id_from([0xFFFF_FFFF, 0, 0, 0x1234_5678]);
        assert_eq!(id, "ffffffff-0000-4000-8000-000012345678");
        assert_eq!(request_id_from([1, 2, 3, 4]).len(), 36);
    }

    fn message_json(id: &str, rid: Option<&str>) -> String {
        let mut v = json!({"Type":"MESSAGE","Id":id,"Content":"hello","Attributes":{"x":"y"},
            "SendTime":"2026-11-25T12:00:00.000Z","Sender":{"UserId":"alice","Attributes":{"n":"A"}}});
        if let Some(r) = rid {
            v["RequestId"] = json!(r);
        }
        v.to_string()
    }

    fn event_json(id: &str, name: &str, rid: Option<&str>, attributes: J) -> String {
        let mut v = json!({"Type":"EVENT","Id":id,"EventName":name,"Attributes":attributes,
            "SendTime":"2026-11-25T12:00:01Z"});
        if let Some(r) = rid {
            v["RequestId"] = json!(r);
        }
        v.to_string()
    }

    #[test]
    fn parses_every_frame_shape() {
        assert_eq!(
            parse_frame(&message_json("m1", Some("r1"))),
            Some(Frame::Message(ChatMessage {
                id: "m1".into(),
                request_id: Some("r1".into()),
                content: "hello".into(),
                attributes: attrs(&[("x", "y")]),
                send_time: "2026-11-25T12:00:00.000Z".into(),
                sender: Sender {
                    user_id: "alice".into(),
                    attributes: attrs(&[("n", "A")]),
                },
            }))
        );
        assert_eq!(
            parse_frame(&event_json("e1", "custom", None, json!({"a":"b"}))),
            Some(Frame::Event(ChatEvent {
                id: "e1".into(),
                request_id: None,
                event_name: "custom".into(),
                attributes: attrs(&[("a", "b")]),
                send_time: "2026-11-25T12:00:01Z".into(),
            }))
        );
        let err =
            json!({"Type":"ERROR","Id":"x1","RequestId":"r9","ErrorCode":403,"ErrorMessage":"no"});
        assert_eq!(
            parse_frame(&err.to_string()),
            Some(Frame::Error(ChatError {
                id: "x1".into(),
                request_id: Some("r9".into()),
                error_code: 403,
                error_message: "no".into(),
            }))
        );
        // Optional parts absent or null.
        let minimal = r#"{"Type":"MESSAGE","Id":"m","Content":"c","SendTime":"t","Sender":{"UserId":"u"},"RequestId":null,"Attributes":null}"#;
        assert!(
            matches!(parse_frame(minimal), Some(Frame::Message(m)) if m.attributes.is_empty() && m.request_id.is_none())
        );
    }

    #[test]
    fn rejects_malformed_frames() {
        for bad in [
            "not json",
            "[]",
            r#"{"Type":"NOPE","Id":"1"}"#,
            r#"{"Type":"MESSAGE","Id":"1","Content":"c","SendTime":"t"}"#,
            r#"{"Type":"MESSAGE","Id":1,"Content":"c","SendTime":"t","Sender":{"UserId":"u"}}"#,
            r#"{"Type":"EVENT","Id":"1","SendTime":"t"}"#,
            r#"{"Type":"EVENT","Id":"1","EventName":"e","SendTime":"t","Attributes":{"a":1}}"#,
            r#"{"Type":"ERROR","Id":"1","ErrorCode":"400","ErrorMessage":"m"}"#,
            r#"{"Type":"ERROR","Id":"1","ErrorCode":400.5,"ErrorMessage":"m"}"#,
            r#"{"Type":"ERROR","Id":"1","ErrorCode":400,"ErrorMessage":"m","RequestId":5}"#,
        ] {
            assert_eq!(parse_frame(bad), None, "{bad}");
        }
    }

    fn send(rid: &str) -> Request {
        Request::SendMessage {
            request_id: rid.into(),
            content: "hello".into(),
            attributes: None,
        }
    }

    #[test]
    fn own_message_resolves_the_send_and_is_emitted() {
        let mut c = Correlator::default();
        assert_eq!(c.submit(&send("r1"), 0.0), Ok(()));
        assert_eq!(
            c.submit(&send("r1"), 0.0),
            Err(SubmitError::DuplicateRequestId)
        );
        let out = c.on_text(&message_json("m1", Some("r1")));
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[0], Output::Emit(Notice::Message(m)) if m.id == "m1"));
        assert!(
            matches!(&out[1], Output::Resolve { request_id, value: Notice::Message(m) } if request_id == "r1" && m.content == "hello")
        );
        assert_eq!(c.pending_count(), 0);
        // Someone else's message: emitted only.
        let out = c.on_text(&message_json("m2", None));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn duplicates_by_id_are_dropped() {
        let mut c = Correlator::default();
        assert_eq!(c.on_text(&message_json("m1", None)).len(), 1);
        assert!(c.on_text(&message_json("m1", None)).is_empty());
    }

    #[test]
    fn built_in_events_settle_their_requests() {
        let mut c = Correlator::default();
        let del = Request::DeleteMessage {
            request_id: "d1".into(),
            id: "m1".into(),
            reason: None,
        };
        let kick = Request::DisconnectUser {
            request_id: "k1".into(),
            user_id: "bob".into(),
            reason: Some("bye".into()),
        };
        c.submit(&del, 0.0).expect("fresh id");
        c.submit(&kick, 0.0).expect("fresh id");
        // A DELETE event carrying the kick's id does not settle the kick.
        let wrong = c.on_text(&event_json(
            "e0",
            EVENT_DELETE_MESSAGE,
            Some("k1"),
            json!({"MessageID":"m0"}),
        ));
        assert_eq!(wrong.len(), 1);
        assert!(c.is_pending("k1"));

        let out = c.on_text(&event_json(
            "e1",
            EVENT_DELETE_MESSAGE,
            Some("d1"),
            json!({"MessageID":"m1","Reason":"spam"}),
        ));
        assert!(
            matches!(&out[..], [Output::Emit(Notice::MessageDelete { message_id, reason, .. }), Output::Resolve { request_id, .. }]
                if message_id == "m1" && reason.as_deref() == Some("spam") && request_id == "d1")
        );
        let out = c.on_text(&event_json(
            "e2",
            EVENT_DISCONNECT_USER,
            Some("k1"),
            json!({"UserId":"bob","Reason":"bye"}),
        ));
        assert!(
            matches!(&out[..], [Output::Emit(Notice::UserDisconnect { user_id, .. }), Output::Resolve { request_id, .. }]
                if user_id == "bob" && request_id == "k1")
        );
        // Custom events are `event`; built-ins missing their attribute are dropped.
        let out = c.on_text(&event_json("e3", "game:score", None, json!({})));
        assert!(
            matches!(&out[..], [Output::Emit(Notice::Event(e))] if e.event_name == "game:score")
        );
        assert!(c
            .on_text(&event_json("e4", EVENT_DELETE_MESSAGE, None, json!({})))
            .is_empty());
    }

    #[test]
    fn errors_reject_and_401_reconnects() {
        let mut c = Correlator::default();
        c.submit(&send("r1"), 0.0).expect("fresh id");
        let err = r#"{"Type":"ERROR","Id":"x1","RequestId":"r1","ErrorCode":403,"ErrorMessage":"no SEND_MESSAGE"}"#;
        let out = c.on_text(err);
        assert!(
            matches!(&out[..], [Output::Reject { request_id, error }] if request_id == "r1" && error.error_code == 403)
        );
        // An error for nobody's request does nothing; a 401 reconnects.
        assert!(c
            .on_text(r#"{"Type":"ERROR","Id":"x2","ErrorCode":400,"ErrorMessage":"?"}"#)
            .is_empty());
        assert_eq!(
            c.on_text(r#"{"Type":"ERROR","Id":"x3","ErrorCode":401,"ErrorMessage":"expired"}"#),
            vec![Output::Reconnect]
        );
        assert!(c.on_text("garbage").is_empty());
    }

    #[test]
    fn pending_requests_time_out() {
        let mut c = Correlator::default();
        c.submit(&send("a"), 0.0).expect("fresh id");
        c.submit(&send("b"), 5_000.0).expect("fresh id");
        assert_eq!(c.next_deadline(), Some(REQUEST_TIMEOUT_MS));
        assert!(c.expire(REQUEST_TIMEOUT_MS - 1.0).is_empty());
        let done = c.expire(REQUEST_TIMEOUT_MS);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, "a");
        assert_eq!(done[0].1.error_code, TIMEOUT_CODE);
        assert_eq!(c.next_deadline(), Some(5_000.0 + REQUEST_TIMEOUT_MS));
        assert_eq!(c.fail_all("gone").len(), 1);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn refresh_timing_follows_the_official_client() {
        assert_eq!(refresh_delay_ms(3_600_000.0, 0.0), 3_540_000.0);
        assert_eq!(refresh_delay_ms(50_000.0, 0.0), 20_000.0);
        assert_eq!(refresh_delay_ms(10_000.0, 0.0), 0.0);
        assert_eq!(refresh_delay_ms(0.0, 5.0), 0.0);
        assert_eq!(session_end_ms(Some(5.0), Some(3.0)), Some(3.0));
        assert_eq!(session_end_ms(None, Some(3.0)), Some(3.0));
        assert_eq!(session_end_ms(None, None), None);
    }

    #[test]
    fn close_decisions() {
        let mut b = default_backoff();
        assert_eq!(
            on_close(true, true, &mut b, 0.0),
            CloseAction::Disconnect(DisconnectReason::ServerDisconnect)
        );
        assert_eq!(on_close(true, false, &mut b, 0.0), CloseAction::Reconnect);
        for _ in 0..3 {
            assert!(matches!(
                on_close(false, false, &mut b, 0.0),
                CloseAction::Retry { .. }
            ));
        }
        assert_eq!(
            on_close(false, false, &mut b, 0.0),
            CloseAction::Disconnect(DisconnectReason::SocketError)
        );
        assert_eq!(
            DisconnectReason::FetchTokenError.as_str(),
            "fetchTokenError"
        );
    }
}
