//! The stage event plane: a WebSocket to the token's `events_url`, the token
//! as the WebSocket subprotocol.
//!
//! Every connection opens with CONFIG and a full STAGE_STATE; after that
//! each change arrives as a STAGE_DELTA against the previous frame (sequence
//! numbers grow, from the wall clock in µs, also across server restarts).
//! The client keeps the whole stage and diffs consecutive states into
//! joined / left / published / mute events, so a reconnect never loses one.
//! A client leaves by closing with code 1000; any other end of the socket
//! keeps the participant on the stage for the server's reconnect grace.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One participant as every member of the stage sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantState {
    pub id: String,
    pub user_id: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Whether the token allows publishing / subscribing.
    #[serde(default)]
    pub can_publish: bool,
    #[serde(default)]
    pub can_subscribe: bool,
    /// Has a live publish session in the SFU (its media can be subscribed).
    pub published: bool,
    /// Kinds of the published tracks: "audio", "video".
    #[serde(default)]
    pub tracks: Vec<String>,
    pub audio_muted: bool,
    pub video_stopped: bool,
}

/// Why the server ended a participant's connection. String values are the
/// IVS `StageLeftReason`s where one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisconnectReason {
    /// The host or the control plane removed the participant.
    ParticipantDisconnected,
    StageDeleted,
    TokenExpired,
    /// The same token connected again; the older connection is closed.
    TokenReused,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ParticipantDisconnected => "participant-disconnected",
            DisconnectReason::StageDeleted => "stage-deleted",
            DisconnectReason::TokenExpired => "token-expired",
            DisconnectReason::TokenReused => "token-reused",
        }
    }
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerMessage {
    /// Full state of the stage. `self_id` is the receiving participant.
    #[serde(rename_all = "camelCase")]
    StageState {
        sequence_number: u64,
        self_id: String,
        participants: Vec<ParticipantState>,
    },
    /// The server ended this connection; it will not be accepted again when
    /// the reason is final (kicked, deleted, expired).
    #[serde(rename_all = "camelCase")]
    Disconnect {
        reason: DisconnectReason,
        #[serde(default)]
        message: String,
    },
    /// What changed since `base_sequence_number` (the last STAGE_STATE or
    /// STAGE_DELTA this connection received): `participants` holds every
    /// member that joined or changed, in join order (a new id is appended),
    /// `removed` the ids that left. The first frame on every connection is a
    /// full STAGE_STATE; a client whose last sequence number is not
    /// `base_sequence_number` must reconnect to get one.
    #[serde(rename_all = "camelCase")]
    StageDelta {
        sequence_number: u64,
        base_sequence_number: u64,
        #[serde(default)]
        participants: Vec<ParticipantState>,
        #[serde(default)]
        removed: Vec<String>,
    },
    /// Connection settings, sent once right after the socket opens (before
    /// the first STAGE_STATE): the ICE servers (STUN/TURN, with time-limited
    /// credentials) every peer connection of this participant must use.
    #[serde(rename_all = "camelCase")]
    Config {
        #[serde(default)]
        ice_servers: Vec<IceServer>,
    },
    /// The simulcast layers (rids, lowest first) of this participant's
    /// publish that some subscriber receives; the others may be paused
    /// (`RTCRtpEncodingParameters.active = false`) until a later
    /// PUBLISH_LAYERS lists them again. The lowest layer is always listed.
    /// Sent when the set changes, and again on a reconnect.
    /// `{"type":"PUBLISH_LAYERS","rids":["low","mid"]}`
    PublishLayers { rids: Vec<String> },
    /// A request on the socket was refused (bad JSON, unknown type...).
    #[serde(rename_all = "camelCase")]
    Error { code: String, message: String },
    Pong,
}

/// One entry of `RTCConfiguration.iceServers`, as the browser takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs (`?transport=tcp|udp` allowed).
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientMessage {
    #[serde(rename_all = "camelCase")]
    SetState { audio_muted: bool, video_stopped: bool },
    Ping,
}

/// Largest event-plane frame the server reads, in bytes.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4096;
