//! The session's interface: the [`Input`]s the adapter feeds it and the
//! [`Action`]s it returns, plus what its parts share while handling one.

use crate::core::error::{HttpFailure, StageError};
use crate::core::events::{StageEvent, StreamRef};
use crate::core::backoff::Jitter;
use crate::core::layers::{LayerState, Preference};
use crate::core::link::{Ops, PeerState};
use crate::core::publish::LocalStream;
use crate::core::strategy::{DesiredStream, SubscribeKind};
use stagecast_protocol::events::{ClientMessage, IceServer, ParticipantState, ServerMessage};

/// What happened, as the adapter tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `join()`; `unix_ms` is `Date.now()` (for the token's `exp`).
    Join { unix_ms: f64 },
    /// `leave()`.
    Leave,
    /// `refreshStrategy()` / `replaceStrategy()`.
    RefreshStrategy,
    /// The strategy's answers to an [`Action::AskStrategy`].
    Strategy(StrategyAnswer),
    /// The event socket `gen` opened.
    SocketOpened { gen: u32 },
    /// A frame arrived on socket `gen` (`None`: not a known message).
    SocketFrame { gen: u32, message: Option<ServerMessage> },
    /// Socket `gen` closed; `was_open` is false when the handshake failed.
    SocketClosed { gen: u32, was_open: bool },
    /// Why the media plane refuses the token (after a refused handshake);
    /// `None` when it did not say.
    Diagnosed { gen: u32, failure: Option<HttpFailure> },
    /// The offer of peer connection `op` was answered (and applied), or not.
    PeerAnswered { op: u32, result: Result<(), HttpFailure> },
    /// `connectionState` of peer connection `op` changed.
    PeerState { op: u32, state: PeerState },
    /// A `LocalStageStream` was muted or unmuted.
    LocalMute { key: u32, muted: bool },
    /// Subscription `op`'s answer linked layer controls.
    LayerControls { op: u32 },
    /// The layer controls of subscription `op` answered a
    /// [`Action::PollLayers`].
    LayersPolled { op: u32, state: LayerState },
    /// `preferredLayerForStream`'s answer to an [`Action::AskLayer`].
    LayerPreference { op: u32, preference: Preference },
    /// [`Session::poll_timeout`] passed.
    Tick,
}

/// The strategy's answers: the publish decision when asked for it, and a
/// subscribe type per remote participant asked about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrategyAnswer {
    /// `shouldPublishParticipant` and `stageStreamsToPublish`.
    pub publish: Option<(bool, Vec<LocalStream>)>,
    pub subscribe: Vec<(String, SubscribeKind)>,
}

/// What the adapter must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open the event socket (`events_url`, token as subprotocol), named `gen`.
    OpenSocket { gen: u32 },
    /// Close the event socket. `deliberate`: the participant leaves (close
    /// code 1000, so the server does not wait for a reconnect); otherwise a
    /// drop the server may wait out.
    CloseSocket { deliberate: bool },
    /// Send on the event socket.
    Send(ClientMessage),
    /// Ask the media plane why socket `gen`'s handshake was refused.
    Diagnose { gen: u32 },
    /// Call the strategy (`publish`: the local participant too; `remotes`:
    /// these remote participants) and answer with [`Input::Strategy`].
    AskStrategy { publish: bool, remotes: Vec<String> },
    /// A publish peer connection named `op` with these streams' tracks.
    OpenPublish { op: u32, streams: Vec<DesiredStream>, ice_servers: Vec<IceServer> },
    /// Swap these streams' tracks onto publish connection `op`'s senders.
    ReplaceTracks { op: u32, streams: Vec<DesiredStream> },
    /// A subscription peer connection named `op` to `publisher`.
    OpenSubscribe { op: u32, publisher: String, ice_servers: Vec<IceServer> },
    /// Close peer connection `op`; `delete`: DELETE its session first
    /// (best effort, with the event socket kept open until it is sent).
    ClosePeer { op: u32, delete: bool },
    /// Send only these simulcast layers (by rid) on publish connection
    /// `op`'s video sender; deactivate its other encodings.
    PublishLayers { op: u32, rids: Vec<String> },
    /// `GET` subscription `op`'s layer controls; answer with
    /// [`Input::LayersPolled`] (nothing when it has none or it failed).
    PollLayers { op: u32 },
    /// Ask `preferredLayerForStream(info of id, video stream of op)`;
    /// answer with [`Input::LayerPreference`].
    AskLayer { op: u32, id: String },
    /// `POST {rid}` to subscription `op`'s layer controls (`None`: adapt).
    SelectLayer { op: u32, rid: Option<String> },
    ResolveJoin,
    RejectJoin(StageError),
    /// The participant's info object changed (published, mute flags).
    UpdateInfo(ParticipantState),
    Emit(StageEvent),
}

/// What the session's parts share while handling one input.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub now: f64,
    pub ops: Ops,
    pub jitter: Jitter,
    pub ice_servers: Vec<IceServer>,
    pub self_id: String,
    pub actions: Vec<Action>,
}

impl Ctx {
    pub fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    pub fn emit(&mut self, event: StageEvent) {
        self.actions.push(Action::Emit(event));
    }

    /// `StreamsAdded` / `StreamsRemoved` for `id`, unless `streams` is empty.
    pub fn emit_streams(&mut self, id: &str, added: bool, streams: Vec<StreamRef>) {
        if streams.is_empty() {
            return;
        }
        let id = id.to_owned();
        self.emit(if added {
            StageEvent::StreamsAdded { id, streams }
        } else {
            StageEvent::StreamsRemoved { id, streams }
        });
    }

    /// The same for the local participant.
    pub fn streams_event(&mut self, added: bool, streams: Vec<StreamRef>) {
        let id = self.self_id.clone();
        self.emit_streams(&id, added, streams);
    }
}
