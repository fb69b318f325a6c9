//! Chat rooms that speak the IVS Chat messaging protocol, so the official
//! `amazon-ivs-chat-messaging` client works against Stagecast unchanged
//! (with `regionOrUrl: "ws://host:port/v1/chat"`).
//!
//! - [`wire`]: the PascalCase requests and frames (serde only).
//! - [`room::RoomCore`]: the sans-IO core of one room: members, limits
//!   (messages per second for the whole room and for each connection,
//!   message length in code points), capability checks, session expiry,
//!   and the room's [`history`] for late joiners. Time is an argument.
//! - [`limit`]: sans-IO token buckets, and the socket's frame limit and
//!   keepalive decisions.
//! - [`identity`]: server-derived chat user ids and roles for demo groups.
//! - [`ChatHub`]: stored rooms (own `chat_rooms` table in the server's SQLite
//!   file), chat tokens (ES384, the server's key), and the live rooms with a
//!   bounded queue per connection.
//! - `api`: the `/v1/rooms` control plane (API key); `socket`: `GET /v1/chat`.
//!   Both take [`ChatState`], which holds only what chat needs.

mod api;
pub mod bus;
pub mod history;
mod hub;
pub mod identity;
pub mod limit;
pub mod room;
pub mod socket;
pub mod store;
pub mod token;
pub mod wire;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::get;
use axum::Router;

use crate::auth::Auth;
use crate::{AppError, Config};

pub use api::{ChatTokenResponse, RoomView};
pub use hub::{ChatHub, ChatStats, Connection, HubSettings, MintedToken, Outbound, RoomSettings, TokenSpec, OUTBOUND_QUEUE};
pub use identity::{ChatRole, ROLE_ATTRIBUTE};
pub use limit::Keepalive;
pub use room::ChatPolicy;
pub use store::RoomRecord;
pub use token::{ChatCapability, ChatClaims, TokenError};

/// What the chat routes reach: the rooms, [`Auth`] for the API key, and the
/// configuration the endpoint URL is made from. Cheap to clone.
#[derive(Clone, FromRef)]
pub struct ChatState {
    pub chat: ChatHub,
    pub auth: Auth,
    pub config: Arc<Config>,
}

/// `/v1/rooms/...` (API key) and `GET /v1/chat` (WebSocket, chat token as subprotocol).
pub fn router() -> Router<ChatState> {
    api::router().route("/v1/chat", get(socket::chat_socket))
}

/// Chat failures outside the socket (the socket answers with ERROR frames).
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat room {room} does not exist")]
    RoomNotFound { room: String },
    /// A request field is out of range; `code` is the stable API error code.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ChatError {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { code, message: message.into() }
    }
}

impl From<ChatError> for AppError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::RoomNotFound { .. } => AppError::not_found("ROOM_NOT_FOUND", e.to_string()),
            ChatError::Invalid { code, message } => AppError::bad_request(code, message),
            ChatError::Token(TokenError::Malformed(_)) => AppError::unauthorized("TOKEN_MALFORMED", e.to_string()),
            ChatError::Token(TokenError::Invalid(_)) => AppError::unauthorized("TOKEN_INVALID", e.to_string()),
            ChatError::Token(TokenError::Expired) => AppError::unauthorized("TOKEN_EXPIRED", e.to_string()),
            ChatError::Token(TokenError::Sign(_)) | ChatError::Store(_) => AppError::internal(e),
        }
    }
}

impl From<&crate::Config> for HubSettings {
    fn from(config: &crate::Config) -> Self {
        HubSettings {
            policy: ChatPolicy {
                connection_messages_per_second: config.chat_connection_rate,
                connection_burst: config.chat_connection_burst,
                history: usize::from(config.chat_history),
            },
            keepalive: Keepalive::for_idle_timeout_ms(u64::from(config.chat_idle_timeout_secs) * 1000),
        }
    }
}

/// Unix milliseconds from the system clock (the drivers' only clock).
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
