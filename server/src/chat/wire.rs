//! The IVS Chat messaging wire: PascalCase JSON over a WebSocket.
//!
//! Clients send [`Request`]s (`{"Action": ..., "RequestId": ...}`); the server
//! sends [`Frame`]s (`{"Type": "MESSAGE" | "EVENT" | "ERROR", "Id": ...}`).
//! Shapes follow what the official `amazon-ivs-chat-messaging` client
//! serializes and parses (its `serialize.js` / `deserialize.js`): every frame
//! has a string `Id` (the client dedupes on it), `SendTime` is ISO 8601,
//! `ErrorCode` is a number, attribute values are strings.
//!
//! Serde only, no I/O. [`Request`] lives in `stagecast-protocol`, shared with
//! the SDK's `ChatRoom`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use stagecast_protocol::chat::Request;

/// Who sent a MESSAGE: the user id and attributes from their chat token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Sender {
    pub user_id: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A frame from the server, tagged by `Type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum Frame {
    #[serde(rename = "MESSAGE", rename_all = "PascalCase")]
    Message {
        id: String,
        /// Only on the copy sent back to the sender (its acknowledgement).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        content: String,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
        send_time: String,
        sender: Sender,
        /// `true` on a message from before this connection opened (the
        /// room's history, replayed on connect). Left out otherwise; the
        /// official client ignores fields it does not know.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        history: bool,
    },
    #[serde(rename = "EVENT", rename_all = "PascalCase")]
    Event {
        id: String,
        /// Only on the copy sent to the client whose request caused it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        event_name: String,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
        send_time: String,
    },
    #[serde(rename = "ERROR", rename_all = "PascalCase")]
    Error {
        id: String,
        /// The failed request's id, when the request had a readable one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        error_code: u16,
        error_message: String,
    },
}

impl Frame {
    /// The same frame with `RequestId` set (for the requester's copy).
    pub fn with_request_id(mut self, id: Option<String>) -> Self {
        match &mut self {
            Frame::Message { request_id, .. } | Frame::Event { request_id, .. } | Frame::Error { request_id, .. } => {
                *request_id = id
            }
        }
        self
    }

    /// The same frame marked as history (MESSAGE only; others unchanged).
    pub fn as_history(mut self) -> Self {
        if let Frame::Message { history, .. } = &mut self {
            *history = true;
        }
        self
    }

    pub fn to_json(&self) -> String {
        // Strings, numbers and string maps always serialize.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Built-in event sent when a message is deleted (`Attributes.MessageID`, `Attributes.Reason`).
pub const EVENT_DELETE_MESSAGE: &str = "aws:DELETE_MESSAGE";
/// Built-in event sent when a user is disconnected (`Attributes.UserId`, `Attributes.Reason`).
pub const EVENT_DISCONNECT_USER: &str = "aws:DISCONNECT_USER";

/// The `ErrorCode`s of IVS Chat (the client's `chatErrorCodes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or invalid.
    BadRequest,
    /// The connection has expired; the official client reconnects with a fresh token.
    Unauthorized,
    /// The token's capabilities do not permit this action.
    Forbidden,
    /// The room does not exist.
    NotFound,
    /// Rejected by message review.
    NotAcceptable,
    /// A field is too large (content over the room's maximum length, attributes, reason).
    PayloadTooLarge,
    /// Over the room's messages-per-second limit.
    TooManyRequests,
    InternalServerError,
}

impl ErrorCode {
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::NotAcceptable => 406,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::InternalServerError => 500,
        }
    }
}

/// Why a client text frame is not a request: the code and message for the
/// ERROR frame, and the request id when one could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRequest {
    pub code: ErrorCode,
    pub message: String,
    pub request_id: Option<String>,
}

const ACTIONS: [&str; 3] = ["SEND_MESSAGE", "DELETE_MESSAGE", "DISCONNECT_USER"];

/// Parse a client text frame. Anything not a well-formed request is a 400
/// that carries the `RequestId` when the frame had a string one, so the
/// client can match the ERROR to its pending request.
pub fn parse_request(text: &str) -> Result<Request, RejectedRequest> {
    let bad = |message: String, request_id: Option<String>| RejectedRequest {
        code: ErrorCode::BadRequest,
        message,
        request_id,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("the request is {}", crate::error::json_error_text(&e)), None))?;
    let Some(object) = value.as_object() else {
        return Err(bad("the request must be a JSON object".to_owned(), None));
    };
    let request_id = object.get("RequestId").and_then(|v| v.as_str()).map(str::to_owned);
    let Some(request_id_text) = request_id.as_deref() else {
        return Err(bad("the request has no string \"RequestId\"".to_owned(), None));
    };
    if request_id_text.is_empty() {
        return Err(bad("\"RequestId\" is empty".to_owned(), None));
    }
    match object.get("Action").and_then(|v| v.as_str()) {
        None => return Err(bad("the request has no string \"Action\"".to_owned(), request_id)),
        Some(action) if !ACTIONS.contains(&action) => {
            return Err(bad(format!("unknown Action {action:?}"), request_id));
        }
        Some(_) => {}
    }
    serde_json::from_value(value)
        .map_err(|e| bad(format!("invalid request: {}", crate::error::json_error_text(&e)), request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_client_send_message_parses() {
        let text = r#"{"Action":"SEND_MESSAGE","RequestId":"r1","Content":"hi","Attributes":{"a":"b"}}"#;
        let req = parse_request(text).expect("parses");
        assert_eq!(
            req,
            Request::SendMessage {
                request_id: "r1".into(),
                content: "hi".into(),
                attributes: Some(BTreeMap::from([("a".into(), "b".into())]))
            }
        );
    }
}
