//! The stage event plane: who is connected to each stage, their published
//! and mute state, and the WebSocket that sends snapshots.
//!
//! [`room::StageRoom`] is the sans-IO core (members + sequence number; every
//! change returns the new snapshot). [`StageHub`] holds one room per stage
//! and a sender per connection, and applies the SFU's publish events.
//! [`socket`] serves `GET /v1/stage/events`.

mod hub;
pub mod room;
pub mod socket;

use axum::routing::get;
use axum::Router;

use crate::AppState;

pub use hub::{Connection, Outbound, StageHub};

/// `GET /v1/stage/events` (WebSocket, token as subprotocol).
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stage/events", get(socket::events))
}
