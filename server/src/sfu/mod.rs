//! The stage SFU: a sans-IO core on str0m ([`core::Sfu`]), the tokio driver
//! that spreads stages over worker tasks behind the one media port
//! ([`SfuHandle`]), and the WHIP / WHEP-style HTTP endpoints ([`router`]).
//!
//! Model: every publish and every subscription is its own peer connection
//! (the IVS model). A publisher's frames are forwarded to each of its
//! subscribers; keyframe requests flow back. The server is ICE-lite with a
//! UDP host candidate and a passive TCP one on the same port (RFC 4571
//! framing, for networks that block UDP), so clients need no trickle ICE.

pub mod core;
mod driver;
mod framing;
mod http;
pub mod layers;
mod routes;
mod tcp;

use std::fmt;

use stagecast_protocol::{ParticipantId, StageId, MAX_PUBLISHERS_PER_STAGE};

pub use driver::{SfuHandle, WeakSfuHandle};
pub use http::{router, SfuState};
pub use tcp::bind_media;

/// The worker (of `workers`) that holds the media sessions of `stage`.
pub fn worker_of(stage: &StageId, workers: usize) -> usize {
    routes::Routes::worker_of(&stage.0, workers)
}

/// A media session (one peer connection): the `{id}` in
/// `Location: /v1/stage/whip/sessions/{id}`. Random, so not guessable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(pub String);

impl SessionId {
    /// A fresh random id (128 bits, hex).
    pub fn random() -> Self {
        let bytes: [u8; 16] = rand::random();
        let mut s = String::with_capacity(32);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SessionId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the SFU tells the stage hub, so snapshots show who is publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// A publish session connected: its media can be subscribed to.
    /// `kinds` are "audio" and/or "video".
    PublishStarted {
        stage: StageId,
        participant: ParticipantId,
        session: SessionId,
        kinds: Vec<String>,
    },
    /// The simulcast layers (rids, lowest first) of a publish session that
    /// some subscriber receives or is switching to, plus always the lowest
    /// (a new subscriber starts fast). Emitted when the set changes; the
    /// stage hub tells the publisher (`PUBLISH_LAYERS`) so it can stop
    /// encoding the others. Never emitted for a publisher without simulcast.
    LayersWanted {
        stage: StageId,
        participant: ParticipantId,
        session: SessionId,
        rids: Vec<String>,
    },
    /// A publish session ended (closed, failed, replaced, or never
    /// connected: then without a `PublishStarted` before it).
    PublishStopped {
        stage: StageId,
        participant: ParticipantId,
        session: SessionId,
    },
}

/// Why the SFU refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    #[error("the SDP offer was not accepted: {0}")]
    InvalidSdp(String),
    #[error("stage {0} already has {MAX_PUBLISHERS_PER_STAGE} publishers")]
    StageAtCapacity(StageId),
    #[error("participant {0} is not publishing")]
    PublisherNotFound(ParticipantId),
    #[error("no media session {0}")]
    SessionNotFound(SessionId),
    #[error("media session {0} is not a subscription")]
    NotASubscription(SessionId),
    #[error("no layer {0:?}: use low, mid, high or a rid the publisher sends")]
    UnknownLayer(String),
    #[error("the media server is not running")]
    Unavailable,
}
