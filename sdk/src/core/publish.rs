//! The local participant's publish session inside the stage session: what
//! the strategy wants published, the WHIP connection that carries it
//! ([`Link`]), and the events and `SET_STATE` frames that follow.

use super::error::{ErrorCategory, ErrorCode, HttpFailure, StageError};
use super::events::{PublishState, StageEvent, StreamRef};
use super::link::{Link, LinkState, LinkStep, PeerState};
use super::session::{Action, Ctx};
use super::strategy::{local_mute_state, normalize, plan_publish, DesiredStream, PublishAction};
use stagecast_protocol::events::ClientMessage;

/// A stream the strategy returned, with its current mute flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStream {
    pub stream: DesiredStream,
    pub muted: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Publish {
    link: Link,
    /// What is published (or being published): one stream per kind.
    streams: Vec<LocalStream>,
    /// `StreamsAdded` was emitted for `streams` (on the first connection);
    /// `StreamsRemoved` is owed when they go.
    announced: bool,
    /// The set that failed for good (not allowed, refused), so an unchanged
    /// refresh does not send the same request again.
    errored: Option<Vec<DesiredStream>>,
    state: PublishState,
    /// The simulcast layers someone receives (the SFU's last
    /// `PUBLISH_LAYERS`); `None`: not said, every layer is sent.
    layers: Option<Vec<String>>,
}

impl Default for Publish {
    fn default() -> Self {
        Publish {
            link: Link::default(),
            streams: Vec::new(),
            announced: false,
            errored: None,
            state: PublishState::NotPublished,
            layers: None,
        }
    }
}

impl Publish {
    pub fn op(&self) -> Option<u32> {
        self.link.op()
    }

    pub fn deadline(&self) -> Option<f64> {
        self.link.deadline()
    }

    pub fn is_up(&self) -> bool {
        self.link.state().up()
    }

    /// Keys of the streams being published.
    pub fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.streams.iter().map(|s| s.stream.key)
    }

    fn desired(&self) -> Vec<DesiredStream> {
        self.streams.iter().map(|s| s.stream).collect()
    }

    /// Applies the strategy's answer.
    pub fn apply(&mut self, can_publish: bool, should: bool, wanted: &[LocalStream], ctx: &mut Ctx) {
        let desired: Vec<DesiredStream> = wanted.iter().map(|s| s.stream).collect();
        let active = !matches!(self.link.state(), LinkState::Idle | LinkState::Failed);
        let current = active.then(|| self.desired());
        let pick = |want: Vec<DesiredStream>| -> Vec<LocalStream> {
            want.iter()
                .filter_map(|d| wanted.iter().find(|s| s.stream == *d).copied())
                .collect()
        };
        match plan_publish(
            can_publish,
            should,
            &desired,
            current.as_deref(),
            self.errored.as_deref(),
        ) {
            None => {
                // Same streams: only their mute flags may have changed.
                for w in wanted {
                    self.set_muted(w.stream.key, w.muted, ctx);
                }
            }
            Some(PublishAction::NotAllowed) => {
                self.unpublish(true, ctx);
                self.errored = Some(normalize(&desired));
                self.set_state(PublishState::Errored, ctx);
                ctx.emit(StageEvent::Error(StageError::new(
                    ErrorCategory::Publish,
                    ErrorCode::TokenNotAllowed,
                    "the participant token does not allow publishing",
                )));
            }
            Some(PublishAction::Unpublish) => self.unpublish(true, ctx),
            Some(PublishAction::Publish(want)) => self.start(pick(want), ctx),
            Some(PublishAction::Republish(want)) => {
                self.unpublish(true, ctx);
                self.start(pick(want), ctx);
            }
            Some(PublishAction::Replace(want)) => self.replace(pick(want), ctx),
        }
    }

    fn start(&mut self, streams: Vec<LocalStream>, ctx: &mut Ctx) {
        self.streams = streams;
        self.errored = None;
        // A new session: every layer is sent until the SFU says otherwise.
        self.layers = None;
        let mut steps = Vec::new();
        self.link.start(ctx.now, &mut ctx.ops, &mut steps);
        self.steps(steps, ctx);
    }

    /// Same kinds, other tracks: swap them on the connection if it has its
    /// answer; otherwise the next attempt simply offers the new ones.
    fn replace(&mut self, new: Vec<LocalStream>, ctx: &mut Ctx) {
        let old = std::mem::replace(&mut self.streams, new);
        let changed: Vec<DesiredStream> = self
            .streams
            .iter()
            .filter(|n| !old.iter().any(|o| o.stream == n.stream))
            .map(|n| n.stream)
            .collect();
        if let Some(op) = self.link.op() {
            if self.link.is_answered(op) {
                ctx.push(Action::ReplaceTracks {
                    op,
                    streams: changed.clone(),
                });
            } else {
                // Still negotiating: offer the new tracks instead.
                let mut steps = Vec::new();
                self.link.start(ctx.now, &mut ctx.ops, &mut steps);
                self.steps(steps, ctx);
            }
        }
        if self.announced {
            let removed: Vec<StreamRef> = old
                .iter()
                .filter(|o| changed.iter().any(|c| c.kind == o.stream.kind))
                .map(|o| StreamRef::Local(o.stream.key))
                .collect();
            let added: Vec<StreamRef> = changed.iter().map(|c| StreamRef::Local(c.key)).collect();
            ctx.streams_event(false, removed);
            ctx.streams_event(true, added);
        }
        self.send_state(ctx);
    }

    /// Stops publishing; `delete`: DELETE the session (the server still
    /// knows this participant).
    pub fn unpublish(&mut self, delete: bool, ctx: &mut Ctx) {
        let mut steps = Vec::new();
        self.link.stop(&mut steps);
        for step in steps {
            if let LinkStep::Close(op) = step {
                ctx.push(Action::ClosePeer { op, delete });
            }
        }
        let streams = std::mem::take(&mut self.streams);
        if std::mem::take(&mut self.announced) {
            let refs = streams.iter().map(|s| StreamRef::Local(s.stream.key)).collect();
            ctx.streams_event(false, refs);
        }
        self.set_state(PublishState::NotPublished, ctx);
    }

    /// The server lost the session (it restarted): publish again at once.
    pub fn restart(&mut self, ctx: &mut Ctx) {
        if self.link.op().is_some() {
            let mut steps = Vec::new();
            self.link.start(ctx.now, &mut ctx.ops, &mut steps);
            self.steps(steps, ctx);
        }
    }

    pub fn retry_now(&mut self, ctx: &mut Ctx) {
        let mut steps = Vec::new();
        self.link.retry_now(ctx.now, &mut ctx.ops, &mut steps);
        self.steps(steps, ctx);
    }

    pub fn answered(&mut self, op: u32, result: Result<(), HttpFailure>, ctx: &mut Ctx) {
        let outcome = HttpFailure::outcome(&result);
        let mut steps = Vec::new();
        self.link
            .answered(op, outcome, ctx.now, &mut ctx.jitter, &mut steps);
        self.steps(steps, ctx);
        if let (Err(f), LinkState::Failed) = (result, self.link.state()) {
            self.errored = Some(self.desired());
            let streams = std::mem::take(&mut self.streams);
            if std::mem::take(&mut self.announced) {
                let refs = streams.iter().map(|s| StreamRef::Local(s.stream.key)).collect();
                ctx.streams_event(false, refs);
            }
            ctx.emit(StageEvent::Error(StageError::from_failure(
                ErrorCategory::Publish,
                &f,
            )));
        }
    }

    pub fn peer_state(&mut self, op: u32, state: PeerState, ctx: &mut Ctx) {
        let mut steps = Vec::new();
        self.link
            .peer_state(op, state, ctx.now, &mut ctx.jitter, &mut steps);
        self.steps(steps, ctx);
    }

    /// `online`: the event plane is up (a retry waits for it otherwise).
    pub fn tick(&mut self, online: bool, ctx: &mut Ctx) {
        let mut steps = Vec::new();
        self.link
            .tick_gated(ctx.now, online, &mut ctx.ops, &mut ctx.jitter, &mut steps);
        self.steps(steps, ctx);
    }

    fn steps(&mut self, steps: Vec<LinkStep>, ctx: &mut Ctx) {
        for step in steps {
            match step {
                LinkStep::Open(op) => ctx.push(Action::OpenPublish {
                    op,
                    streams: self.desired(),
                    ice_servers: ctx.ice_servers.clone(),
                }),
                LinkStep::Close(op) => ctx.push(Action::ClosePeer { op, delete: true }),
                LinkStep::Up(op) => {
                    self.set_state(PublishState::Published, ctx);
                    // Said while this connection was being set up.
                    if let Some(rids) = self.layers.clone() {
                        ctx.push(Action::PublishLayers { op, rids });
                    }
                    if !std::mem::replace(&mut self.announced, true) {
                        let refs = self.keys().map(StreamRef::Local).collect();
                        ctx.streams_event(true, refs);
                    }
                    self.send_state(ctx);
                }
                LinkStep::Down(_) => {}
            }
        }
        let state = match self.link.state() {
            LinkState::Idle => PublishState::NotPublished,
            LinkState::Connecting | LinkState::Waiting => PublishState::AttemptingPublish,
            LinkState::Up | LinkState::Interrupted => PublishState::Published,
            LinkState::Failed => PublishState::Errored,
        };
        self.set_state(state, ctx);
    }

    fn set_state(&mut self, state: PublishState, ctx: &mut Ctx) {
        if self.state != state {
            self.state = state;
            ctx.emit(StageEvent::PublishStateChanged(state));
        }
    }

    /// The SFU's `PUBLISH_LAYERS`: only these layers are received.
    pub fn set_layers(&mut self, rids: Vec<String>, ctx: &mut Ctx) {
        if let (Some(op), true) = (self.link.op(), self.is_up()) {
            ctx.push(Action::PublishLayers { op, rids: rids.clone() });
        }
        self.layers = Some(rids);
    }

    /// A local stream was muted or unmuted.
    pub fn set_muted(&mut self, key: u32, muted: bool, ctx: &mut Ctx) {
        let Some(s) = self.streams.iter_mut().find(|s| s.stream.key == key) else {
            return;
        };
        if s.muted != muted {
            s.muted = muted;
            self.send_state(ctx);
        }
    }

    /// Tells the server the mute state, once media flows.
    pub fn send_state(&self, ctx: &mut Ctx) {
        if !self.is_up() {
            return;
        }
        let published: Vec<_> = self
            .streams
            .iter()
            .map(|s| (s.stream.kind, s.muted))
            .collect();
        let (audio_muted, video_stopped) = local_mute_state(&published);
        ctx.push(Action::Send(ClientMessage::SetState {
            audio_muted,
            video_stopped,
        }));
    }

    /// The announced local stream of `kind`, for a mute event.
    pub fn stream_ref(&self, kind: super::strategy::StreamKind) -> Option<StreamRef> {
        if !self.announced {
            return None;
        }
        self.streams
            .iter()
            .find(|s| s.stream.kind == kind)
            .map(|s| StreamRef::Local(s.stream.key))
    }
}
