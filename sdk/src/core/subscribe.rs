//! Subscriptions to remote participants inside the stage session: one
//! WHEP-style connection ([`Link`]) per publisher, opened, retyped, closed
//! and recovered as the strategy and the snapshots say.

use super::error::{ErrorCategory, HttpFailure, StageError};
use super::events::{StageEvent, StreamRef, SubscribeState};
use super::layers::{LayerChange, LayerState, Preference, RemoteLayers};
use super::link::{Link, LinkState, LinkStep, PeerState};
use super::session::{Action, Ctx};
use super::strategy::{plan_subscription, StreamKind, SubscribeKind, SubscriptionAction};
use stagecast_protocol::events::ParticipantState;

#[derive(Debug, Clone)]
struct Subscription {
    id: String,
    kind: SubscribeKind,
    link: Link,
    /// The publisher republished since this was opened.
    stale: bool,
    /// Kinds handed to the app (`StreamsAdded`) on `exposed_op`.
    exposed: Vec<StreamKind>,
    exposed_op: u32,
    state: SubscribeState,
    /// The connection that has layer controls (the server linked them).
    controls: Option<u32>,
    /// The exposed video stream's simulcast layers (polled while exposed
    /// on a connection with layer controls).
    layers: RemoteLayers,
}

/// Every open (or opening, or recovering) subscription, by publisher id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subscriptions(Vec<Subscription>);

/// The track kinds a publisher offers (older servers list none: both).
fn kinds(remote: Option<&ParticipantState>) -> Vec<StreamKind> {
    let kinds: Vec<StreamKind> = remote
        .map(|r| r.tracks.iter().filter_map(|t| StreamKind::parse(t)).collect())
        .unwrap_or_default();
    if kinds.is_empty() {
        vec![StreamKind::Audio, StreamKind::Video]
    } else {
        kinds
    }
}

fn remote_ref(op: u32, kind: StreamKind, remote: Option<&ParticipantState>) -> StreamRef {
    let muted = remote.is_some_and(|r| match kind {
        StreamKind::Audio => r.audio_muted,
        StreamKind::Video => r.video_stopped,
    });
    StreamRef::Remote { op, kind, muted }
}

impl Subscription {
    fn steps(&mut self, steps: Vec<LinkStep>, delete: bool, remote: Option<&ParticipantState>, ctx: &mut Ctx) {
        for step in steps {
            match step {
                LinkStep::Open(op) => ctx.push(Action::OpenSubscribe {
                    op,
                    publisher: self.id.clone(),
                    ice_servers: ctx.ice_servers.clone(),
                }),
                LinkStep::Close(op) => {
                    self.expose(op, &[], remote, ctx);
                    ctx.push(Action::ClosePeer { op, delete });
                }
                LinkStep::Up(op) => {
                    // "subscribed" before the streams it brings.
                    self.set_state(SubscribeState::Subscribed, ctx);
                    let show: Vec<StreamKind> =
                        kinds(remote).into_iter().filter(|k| self.kind.exposes(*k)).collect();
                    self.expose(op, &show, remote, ctx);
                }
                LinkStep::Down(op) => self.expose(op, &[], remote, ctx),
            }
        }
        let state = match self.link.state() {
            LinkState::Idle => SubscribeState::NotSubscribed,
            LinkState::Connecting | LinkState::Waiting => SubscribeState::AttemptingSubscribe,
            LinkState::Up | LinkState::Interrupted => SubscribeState::Subscribed,
            LinkState::Failed => SubscribeState::Errored,
        };
        self.set_state(state, ctx);
    }

    /// Makes `show` the kinds the app has of connection `op`, emitting
    /// what was removed and what was added.
    fn expose(&mut self, op: u32, show: &[StreamKind], remote: Option<&ParticipantState>, ctx: &mut Ctx) {
        let before = if self.exposed_op == op {
            std::mem::take(&mut self.exposed)
        } else {
            Vec::new()
        };
        let refs = |ks: Vec<StreamKind>| ks.into_iter().map(|k| remote_ref(op, k, remote)).collect();
        let removed: Vec<StreamKind> = before.iter().filter(|k| !show.contains(k)).copied().collect();
        let added: Vec<StreamKind> = show.iter().filter(|k| !before.contains(k)).copied().collect();
        let video = StreamKind::Video;
        if removed.contains(&video) {
            self.layers.stop();
        }
        ctx.emit_streams(&self.id, false, refs(removed));
        if added.contains(&video) && self.controls == Some(op) {
            self.layers.start(ctx.now);
        }
        ctx.emit_streams(&self.id, true, refs(added));
        self.exposed = show.to_vec();
        self.exposed_op = op;
    }

    /// The app's video stream of this subscription, if it has one.
    fn video_op(&self) -> Option<u32> {
        self.exposed.contains(&StreamKind::Video).then_some(self.exposed_op)
    }

    fn set_state(&mut self, state: SubscribeState, ctx: &mut Ctx) {
        if self.state != state {
            self.state = state;
            ctx.emit(StageEvent::SubscribeStateChanged {
                id: self.id.clone(),
                state,
            });
        }
    }
}

impl Subscriptions {
    fn find(&mut self, id: &str) -> Option<&mut Subscription> {
        self.0.iter_mut().find(|s| s.id == id)
    }

    pub fn deadline(&self) -> Option<f64> {
        self.0
            .iter()
            .flat_map(|s| [s.link.deadline(), s.layers.deadline()])
            .flatten()
            .reduce(f64::min)
    }

    fn by_video_op(&mut self, op: u32) -> Option<&mut Subscription> {
        self.0.iter_mut().find(|s| s.video_op() == Some(op))
    }

    /// A layer-controls answer for the video stream of connection `op`:
    /// the events it means, and `preferredLayerForStream` asked again when
    /// the layers changed.
    pub fn layers_polled(&mut self, op: u32, state: LayerState, remote: Option<&ParticipantState>, ctx: &mut Ctx) {
        let Some(sub) = self.by_video_op(op) else { return };
        let changes = sub.layers.update(state);
        let stream = remote_ref(op, StreamKind::Video, remote);
        for change in &changes {
            let (id, state) = (sub.id.clone(), sub.layers.state.clone());
            ctx.emit(match change {
                LayerChange::Layers => StageEvent::StreamLayersChanged { id, stream, state },
                LayerChange::Selected => StageEvent::StreamLayerSelected { id, stream, state },
                LayerChange::Adaption => StageEvent::StreamAdaptionChanged { id, stream, state },
            });
        }
        if changes.contains(&LayerChange::Layers) {
            ctx.push(Action::AskLayer { op, id: sub.id.clone() });
        }
    }

    /// Connection `op` has layer controls: its video stream's layers are
    /// polled while the app has it.
    pub fn layer_controls(&mut self, op: u32, now: f64) {
        let Some(sub) = self.0.iter_mut().find(|s| s.link.op() == Some(op)) else { return };
        sub.controls = Some(op);
        if sub.video_op() == Some(op) && sub.layers.deadline().is_none() {
            sub.layers.start(now);
        }
    }

    /// `preferredLayerForStream`'s answer for the video stream of `op`.
    pub fn layer_preference(&mut self, op: u32, preference: Preference, ctx: &mut Ctx) {
        let Some(sub) = self.by_video_op(op) else { return };
        if let Some(rid) = sub.layers.prefer(preference) {
            ctx.push(Action::SelectLayer { op, rid });
        }
    }

    /// `refreshStrategy()`: asks `preferredLayerForStream` for every video
    /// stream the app has.
    pub fn ask_layers(&self, ctx: &mut Ctx) {
        for sub in &self.0 {
            if let Some(op) = sub.video_op() {
                ctx.push(Action::AskLayer { op, id: sub.id.clone() });
            }
        }
    }

    /// Whose connection `op` is.
    pub fn owner(&self, op: u32) -> Option<String> {
        self.0
            .iter()
            .find(|s| s.link.op() == Some(op))
            .map(|s| s.id.clone())
    }

    pub fn ids(&self) -> Vec<String> {
        self.0.iter().map(|s| s.id.clone()).collect()
    }

    /// Applies the strategy's answer for `remote`.
    pub fn reconcile(&mut self, remote: &ParticipantState, can_subscribe: bool, desired: SubscribeKind, ctx: &mut Ctx) {
        let id = remote.id.as_str();
        let current = self.find(id).map(|s| (s.kind, s.stale));
        let action = plan_subscription(
            remote.published,
            can_subscribe,
            current.map(|c| c.0),
            desired,
            current.is_some_and(|c| c.1),
        );
        match action {
            None => {}
            Some(SubscriptionAction::Open(kind)) => self.open(id, kind, ctx),
            Some(SubscriptionAction::Close) => self.close(id, true, Some(remote), ctx),
            Some(SubscriptionAction::Reopen(kind)) => {
                // The publisher's old session is gone, and ours with it.
                self.close(id, false, Some(remote), ctx);
                self.open(id, kind, ctx);
            }
            Some(SubscriptionAction::Retype { to, .. }) => {
                if let Some(sub) = self.find(id) {
                    sub.kind = to;
                    if let (Some(op), true) = (sub.link.op(), sub.link.state().up()) {
                        let show: Vec<StreamKind> =
                            kinds(Some(remote)).into_iter().filter(|k| to.exposes(*k)).collect();
                        sub.expose(op, &show, Some(remote), ctx);
                    }
                }
            }
        }
    }

    fn open(&mut self, id: &str, kind: SubscribeKind, ctx: &mut Ctx) {
        let mut sub = Subscription {
            id: id.to_owned(),
            kind,
            link: Link::default(),
            stale: false,
            exposed: Vec::new(),
            exposed_op: 0,
            state: SubscribeState::NotSubscribed,
            controls: None,
            layers: RemoteLayers::default(),
        };
        let mut steps = Vec::new();
        sub.link.start(ctx.now, &mut ctx.ops, &mut steps);
        sub.steps(steps, true, None, ctx);
        self.0.push(sub);
    }

    /// Ends the subscription to `id`. `delete`: DELETE the session (not
    /// when the publisher is gone: the server already ended ours).
    pub fn close(&mut self, id: &str, delete: bool, remote: Option<&ParticipantState>, ctx: &mut Ctx) {
        let Some(i) = self.0.iter().position(|s| s.id == id) else {
            return;
        };
        let mut sub = self.0.remove(i);
        let mut steps = Vec::new();
        sub.link.stop(&mut steps);
        sub.steps(steps, delete, remote, ctx);
    }

    /// The publisher republished: the next reconcile reopens.
    pub fn mark_stale(&mut self, id: &str) {
        if let Some(sub) = self.find(id) {
            sub.stale = true;
        }
    }

    /// The app's stream of `kind` from `id`, if it has one.
    pub fn stream_ref(&self, remote: &ParticipantState, kind: StreamKind) -> Option<StreamRef> {
        let sub = self.0.iter().find(|s| s.id == remote.id)?;
        sub.exposed
            .contains(&kind)
            .then(|| remote_ref(sub.exposed_op, kind, Some(remote)))
    }

    pub fn retry_now(&mut self, ctx: &mut Ctx) {
        for sub in &mut self.0 {
            let mut steps = Vec::new();
            sub.link.retry_now(ctx.now, &mut ctx.ops, &mut steps);
            sub.steps(steps, true, None, ctx);
        }
    }

    /// `online`: the event plane is up (retries wait for it otherwise).
    pub fn tick(&mut self, view: &super::StageView, online: bool, ctx: &mut Ctx) {
        for sub in &mut self.0 {
            let mut steps = Vec::new();
            sub.link
                .tick_gated(ctx.now, online, &mut ctx.ops, &mut ctx.jitter, &mut steps);
            sub.steps(steps, true, view.get(&sub.id), ctx);
            if let (Some(op), true) = (sub.video_op(), sub.layers.due(ctx.now)) {
                ctx.push(Action::PollLayers { op });
            }
        }
    }

    pub fn answered(&mut self, id: &str, op: u32, result: Result<(), HttpFailure>, ctx: &mut Ctx) {
        let Some(sub) = self.find(id) else { return };
        let mut steps = Vec::new();
        sub.link
            .answered(op, HttpFailure::outcome(&result), ctx.now, &mut ctx.jitter, &mut steps);
        sub.steps(steps, true, None, ctx);
        if let (Err(f), LinkState::Failed) = (result, sub.link.state()) {
            let mut e = StageError::from_failure(ErrorCategory::Subscribe, &f);
            e.participant_id = Some(sub.id.clone());
            ctx.emit(StageEvent::Error(e));
        }
    }

    pub fn peer_state(&mut self, id: &str, op: u32, state: PeerState, remote: Option<&ParticipantState>, ctx: &mut Ctx) {
        let Some(sub) = self.find(id) else { return };
        let mut steps = Vec::new();
        sub.link
            .peer_state(op, state, ctx.now, &mut ctx.jitter, &mut steps);
        sub.steps(steps, true, remote, ctx);
    }
}
