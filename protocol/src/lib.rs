//! Wire types shared by the Stagecast server, the browser SDK and the viewer.
//!
//! Everything here is plain data with serde derives and no I/O, so the same
//! definitions describe a message on both ends of the wire. JSON is camelCase
//! except the JWT claims (snake_case, as IVS tokens) and the chat wire
//! (PascalCase, IVS Chat).
#![forbid(unsafe_code)]

pub mod chat;
pub mod control;
pub mod events;
pub mod ids;
pub mod token;

pub use ids::{ParticipantId, StageId};

/// The JSON body of every error the server returns: a stable machine-readable
/// `code` and a human `message`. Never carries internal details.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

/// The most publishers one stage admits at a time (the IVS limit).
pub const MAX_PUBLISHERS_PER_STAGE: usize = 12;
/// The largest total size of a participant's attributes, in bytes (keys + values).
pub const MAX_ATTRIBUTES_BYTES: usize = 1024;
