//! The stage event plane: who is on each stage, their published and mute
//! state, and the WebSocket that keeps every member up to date.
//!
//! [`room::StageRoom`] is the sans-IO core (members, sequence numbers, and
//! the one frame a connection needs to catch up); [`limit`] the sans-IO rate
//! limit on client frames. [`StageHub`] holds one room per stage, publishes
//! each change to the stage's connections, applies the SFU's publish events
//! and keeps a lost member for the reconnect grace; a WHIP-only publisher
//! (OBS) is a member through its publish session. [`presence`] copies the
//! members to the store so a restarted server restores them. [`socket`]
//! serves `GET /v1/stage/events` with a [`StageState`]; `connection` holds
//! its reader and writer.

mod connection;
mod handshake;
mod hub;
pub mod limit;
pub mod presence;
pub mod room;
pub mod socket;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::get;
use axum::Router;
use stagecast_protocol::events::ServerMessage;
use stagecast_protocol::token::ParticipantClaims;
use stagecast_protocol::StageId;

use crate::auth::Auth;
use crate::ops::Ops;
use crate::{AppError, Config};

pub use hub::{Connection, HubError, RestoredMember, Seat, StageHub, WhipPublish};
pub use socket::{reconnect_grace, run_connection, ConnectionSettings};

/// What the event plane reaches: the stages, [`Auth`] (participant tokens,
/// join records), the configuration (member cap, timeouts, TURN) and
/// [`Ops`] (draining). Cheap to clone.
#[derive(Clone, FromRef)]
pub struct StageState {
    pub stages: StageHub,
    pub auth: Auth,
    pub config: Arc<Config>,
    pub ops: Ops,
}

/// `GET /v1/stage/events` (WebSocket, token as subprotocol).
pub fn router() -> Router<StageState> {
    Router::new().route("/v1/stage/events", get(socket::events))
}

/// While draining, a stage with no one on it here takes no one (its
/// members go to another node); a stage in progress goes on.
pub fn refuse_new_stage_while_draining(stages: &StageHub, ops: &Ops, claims: &ParticipantClaims) -> Result<(), AppError> {
    if ops.is_draining() && !stages.is_active(&StageId(claims.topic.clone())) {
        return Err(crate::ops::draining_error("stages"));
    }
    Ok(())
}

/// Serialize a server message for the socket.
pub(crate) fn to_json(message: &ServerMessage) -> String {
    serde_json::to_string(message).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot serialize a server message");
        String::from(r#"{"type":"ERROR","code":"INTERNAL","message":"internal server error"}"#)
    })
}
