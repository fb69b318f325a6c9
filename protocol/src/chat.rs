//! IVS Chat messaging requests (PascalCase JSON tagged by `Action`), shared
//! by the server's chat socket and the SDK's `ChatRoom`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request from a client, tagged by `Action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Action")]
pub enum Request {
    /// Needs the `SEND_MESSAGE` capability. Answered by the MESSAGE itself
    /// (with this `RequestId`) or an ERROR.
    #[serde(rename = "SEND_MESSAGE", rename_all = "PascalCase")]
    SendMessage {
        request_id: String,
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attributes: Option<BTreeMap<String, String>>,
    },
    /// Needs `DELETE_MESSAGE`. Answered by an `aws:DELETE_MESSAGE` EVENT.
    #[serde(rename = "DELETE_MESSAGE", rename_all = "PascalCase")]
    DeleteMessage {
        request_id: String,
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Needs `DISCONNECT_USER`. Answered by an `aws:DISCONNECT_USER` EVENT.
    #[serde(rename = "DISCONNECT_USER", rename_all = "PascalCase")]
    DisconnectUser {
        request_id: String,
        user_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Request {
    pub fn request_id(&self) -> &str {
        match self {
            Request::SendMessage { request_id, .. }
            | Request::DeleteMessage { request_id, .. }
            | Request::DisconnectUser { request_id, .. } => request_id,
        }
    }
}

