//! What the stage session tells the app: the IVS `StageEvents` and the
//! states they carry, as Rust enums. `sdk/npm/index.d.ts` and `index.js`
//! mirror these names and values (a test below reads both files).

use super::error::StageError;
use super::layers::LayerState;
use super::strategy::StreamKind;
use stagecast_protocol::events::{DisconnectReason, ParticipantState};

/// `StageConnectionState`. After a drop the session goes back to
/// `Connecting` until the event plane answers again, so an app can show
/// "Reconnecting…" for `Connecting` after `Connected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Disconnected,
    Connecting,
    Connected,
    Errored,
}

/// `StageParticipantPublishState` of the local participant. `Published`
/// only once ICE and DTLS are connected (media can flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishState {
    NotPublished,
    AttemptingPublish,
    Published,
    Errored,
}

/// `StageParticipantSubscribeState` of one remote participant.
/// `Subscribed` only once ICE and DTLS are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeState {
    NotSubscribed,
    AttemptingSubscribe,
    Subscribed,
    Errored,
}

/// `StageLeftReason` (the values this SDK can produce).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftReason {
    Unknown,
    UserInitiated,
    ParticipantDisconnected,
    StageDeleted,
    TokenExpired,
    TokenReused,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Errored => "errored",
        }
    }
}

impl PublishState {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishState::NotPublished => "not_published",
            PublishState::AttemptingPublish => "attempting_publish",
            PublishState::Published => "published",
            PublishState::Errored => "errored",
        }
    }
}

impl SubscribeState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscribeState::NotSubscribed => "not_subscribed",
            SubscribeState::AttemptingSubscribe => "attempting_subscribe",
            SubscribeState::Subscribed => "subscribed",
            SubscribeState::Errored => "errored",
        }
    }
}

impl LeftReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeftReason::Unknown => "unknown",
            LeftReason::UserInitiated => "user-initiated",
            LeftReason::ParticipantDisconnected => "participant-disconnected",
            LeftReason::StageDeleted => "stage-deleted",
            LeftReason::TokenExpired => "token-expired",
            LeftReason::TokenReused => "token-reused",
        }
    }
}

impl From<DisconnectReason> for LeftReason {
    fn from(r: DisconnectReason) -> Self {
        match r {
            DisconnectReason::ParticipantDisconnected => LeftReason::ParticipantDisconnected,
            DisconnectReason::StageDeleted => LeftReason::StageDeleted,
            DisconnectReason::TokenExpired => LeftReason::TokenExpired,
            DisconnectReason::TokenReused => LeftReason::TokenReused,
        }
    }
}

/// A stream named in an event. The adapter owns the JS objects: a local
/// stream by its `LocalStageStream` key, a remote one by the peer
/// connection (`op`) that receives it and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRef {
    Local(u32),
    Remote {
        op: u32,
        kind: StreamKind,
        /// The value for `isMuted` (from the latest snapshot).
        muted: bool,
    },
}

/// One `StageEvents` emission. Participants are named by id; the adapter
/// keeps one `StageParticipantInfo` object per id (created on `Joined`,
/// updated in place, dropped after `Left`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageEvent {
    ConnectionStateChanged(ConnectionState),
    ParticipantJoined(ParticipantState),
    ParticipantLeft(ParticipantState),
    /// The local participant's publish state.
    PublishStateChanged(PublishState),
    SubscribeStateChanged {
        id: String,
        state: SubscribeState,
    },
    StreamsAdded {
        id: String,
        streams: Vec<StreamRef>,
    },
    StreamsRemoved {
        id: String,
        streams: Vec<StreamRef>,
    },
    StreamMuteChanged {
        id: String,
        stream: StreamRef,
    },
    StageLeft(LeftReason),
    Error(StageError),
    /// A remote video stream's layers changed (`stageStreamLayersChanged`).
    StreamLayersChanged {
        id: String,
        stream: StreamRef,
        state: LayerState,
    },
    /// Another layer is forwarded: `state.selected` (`'selected'`), or none
    /// (`'unavailable'`) (`stageStreamLayerSelected`).
    StreamLayerSelected {
        id: String,
        stream: StreamRef,
        state: LayerState,
    },
    /// The server started or stopped adapting (`stageStreamAdaptionChanged`).
    StreamAdaptionChanged {
        id: String,
        stream: StreamRef,
        state: LayerState,
    },
}

impl StageEvent {
    /// Every event name, in `StageEvents` order.
    pub const NAMES: [&'static str; 13] = [
        "stageConnectionStateChanged",
        "stageParticipantJoined",
        "stageParticipantLeft",
        "stageParticipantPublishStateChanged",
        "stageParticipantSubscribeStateChanged",
        "stageParticipantStreamsAdded",
        "stageParticipantStreamsRemoved",
        "stageStreamMuteChanged",
        "stageLeft",
        "error",
        "stageStreamLayersChanged",
        "stageStreamLayerSelected",
        "stageStreamAdaptionChanged",
    ];

    /// The `StageEvents` string value `stage.on()` listens for.
    pub fn name(&self) -> &'static str {
        let i = match self {
            StageEvent::ConnectionStateChanged(_) => 0,
            StageEvent::ParticipantJoined(_) => 1,
            StageEvent::ParticipantLeft(_) => 2,
            StageEvent::PublishStateChanged(_) => 3,
            StageEvent::SubscribeStateChanged { .. } => 4,
            StageEvent::StreamsAdded { .. } => 5,
            StageEvent::StreamsRemoved { .. } => 6,
            StageEvent::StreamMuteChanged { .. } => 7,
            StageEvent::StageLeft(_) => 8,
            StageEvent::Error(_) => 9,
            StageEvent::StreamLayersChanged { .. } => 10,
            StageEvent::StreamLayerSelected { .. } => 11,
            StageEvent::StreamAdaptionChanged { .. } => 12,
        };
        Self::NAMES[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DTS: &str = include_str!("../../npm/index.d.ts");
    const JS: &str = include_str!("../../npm/index.js");

    /// The text of `export declare const NAME: { ... };` in the .d.ts, or
    /// of `export const NAME = freeze({ ... });` in index.js.
    fn block<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
        let from = text.find(start).unwrap_or_else(|| panic!("{start} is missing"));
        let rest = &text[from..];
        &rest[..rest.find(end).unwrap_or(rest.len())]
    }

    fn assert_mirrored(name: &str, values: &[&str]) {
        let dts = block(DTS, &format!("export declare const {name}:"), "};");
        let js = block(JS, &format!("export const {name} = freeze("), "});");
        for v in values {
            let quoted = format!("'{v}'");
            assert!(dts.contains(&quoted), "index.d.ts {name} lacks {quoted}");
            assert!(js.contains(&quoted), "index.js {name} lacks {quoted}");
        }
        let count = |s: &str| s.matches(": '").count();
        assert_eq!(count(dts), values.len(), "index.d.ts {name} has other values: {dts}");
        assert_eq!(count(js), values.len(), "index.js {name} has other values: {js}");
    }

    #[test]
    fn typescript_declarations_mirror_the_event_enum_and_states() {
        assert_mirrored("StageEvents", &StageEvent::NAMES);
        let map = block(DTS, "export interface StageEventMap", "\n}");
        for name in StageEvent::NAMES {
            assert!(map.contains(&format!("  {name}: (")), "StageEventMap lacks {name}");
        }
        use ConnectionState as C;
        let conn = [C::Disconnected, C::Connecting, C::Connected, C::Errored];
        assert_mirrored("StageConnectionState", &conn.map(C::as_str));
        use PublishState as P;
        let publish = [P::NotPublished, P::AttemptingPublish, P::Published, P::Errored];
        assert_mirrored("StageParticipantPublishState", &publish.map(P::as_str));
        use SubscribeState as S;
        let subscribe = [S::NotSubscribed, S::AttemptingSubscribe, S::Subscribed, S::Errored];
        assert_mirrored("StageParticipantSubscribeState", &subscribe.map(S::as_str));
        use LeftReason as L;
        let left = [
            L::Unknown,
            L::UserInitiated,
            L::ParticipantDisconnected,
            L::StageDeleted,
            L::TokenExpired,
            L::TokenReused,
        ];
        assert_mirrored("StageLeftReason", &left.map(L::as_str));
    }

    #[test]
    fn event_names_follow_the_variants() {
        let e = StageEvent::SubscribeStateChanged {
            id: "a".into(),
            state: SubscribeState::Subscribed,
        };
        assert_eq!(e.name(), "stageParticipantSubscribeStateChanged");
        assert_eq!(StageEvent::StageLeft(LeftReason::Unknown).name(), "stageLeft");
        assert_eq!(
            LeftReason::from(DisconnectReason::TokenReused).as_str(),
            DisconnectReason::TokenReused.as_str()
        );
    }
}
