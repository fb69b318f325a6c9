//! `Stage`: the IVS stage API over [`Session`], the sans-IO state machine
//! that decides everything. This file checks arguments, asks the JS
//! strategy, carries out the session's actions (socket, peer connections,
//! HTTP, one timer) and turns its events into JS objects for listeners.
//!
//! Borrow discipline: the session and the I/O state live in `RefCell`s
//! that are never borrowed while JS runs (the strategy, listeners, promise
//! callbacks). Events are queued and delivered by `flush()` once nothing is
//! borrowed, so a listener may call back into the stage (e.g. `leave()`).

use super::convert::{array, participant_info, remote_stream, set, stage_error, type_error, update_info};
use super::listeners::Listeners;
use super::stream::{self, LocalShared};
use crate::core::layers::{initial_layer_query, parse_layer_state, select_body, LayerState};
use crate::core::link::PeerState;
use crate::core::publish::LocalStream;
use crate::core::session::{Action, Input, Session, StrategyAnswer};
use crate::core::strategy::DesiredStream;
use crate::core::{HttpFailure, StageEvent, StreamKind, StreamRef, SubscribeKind};
use crate::web::http;
use crate::web::peer::{replace_track, track_size, PublishPeer, SubscribePeer};
use crate::web::socket::{EventSocket, SocketEvent};
use crate::web::timer::Timeout;
use crate::web::{defer, now_ms};
use js_sys::{Function, Object, Promise};
use stagecast_protocol::events::IceServer;
use super::small_map::SmallMap;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

/// A peer connection the session named `op`.
enum Peer {
    Publish(PublishPeer),
    /// With the `StageStream` objects of its tracks.
    Subscribe(SubscribePeer, Vec<(StreamKind, Object)>),
}

impl Peer {
    fn location(&self) -> Option<String> {
        match self {
            Peer::Publish(p) => p.location.clone(),
            Peer::Subscribe(p, _) => p.location.clone(),
        }
    }
}

type Event = (&'static str, Vec<JsValue>);
/// Keeps this stage registered for local mute changes while alive.
type MuteHook = Rc<dyn Fn(u32)>;

#[derive(Default)]
struct Io {
    socket: Option<EventSocket>,
    /// `resolve` / `reject` of pending `join()` promises (a second one is
    /// refused by the session while the first is pending).
    joins: Vec<(Function, Function)>,
    timer: Option<(f64, Timeout)>,
    /// One `StageParticipantInfo` per participant, updated in place.
    infos: SmallMap<String, Object>,
    /// The `LocalStageStream`s the strategy returned, by key.
    locals: SmallMap<u32, (Rc<LocalShared>, JsValue)>,
    peers: SmallMap<u32, Peer>,
    /// Session resources to DELETE (each with its peer connection, closed
    /// once the server has heard: closing first would make it answer 404).
    deletes: Vec<(String, Peer)>,
    /// The socket to close deliberately once the DELETEs are sent.
    leaving: Option<EventSocket>,
}

pub(crate) struct Inner {
    core: RefCell<Session>,
    io: RefCell<Io>,
    strategy: RefCell<JsValue>,
    listeners: Listeners,
    pending: RefCell<Vec<Event>>,
    mute_hook: RefCell<Option<MuteHook>>,
}

/// A stage session: `new Stage(token, strategy)`, then `join()`.
#[wasm_bindgen]
pub struct Stage {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Stage {
    #[wasm_bindgen(constructor)]
    pub fn new(token: JsValue, strategy: JsValue) -> Result<Stage, JsValue> {
        let token = token.as_string().ok_or_else(|| type_error("Stage: token must be a string"))?;
        if !strategy.is_object() {
            return Err(type_error("Stage: strategy must be an object"));
        }
        let inner = Rc::new(Inner {
            core: RefCell::new(Session::new(token, js_sys::Math::random())),
            io: RefCell::new(Io::default()),
            strategy: RefCell::new(strategy),
            listeners: Listeners::default(),
            pending: RefCell::new(Vec::new()),
            mute_hook: RefCell::new(None),
        });
        let weak = Rc::downgrade(&inner);
        let hook: MuteHook = Rc::new(move |key| {
            if let Some(inner) = weak.upgrade() {
                let muted = inner.io.borrow().locals.get(&key).map(|(s, _)| s.muted.get());
                if let Some(muted) = muted {
                    inner.drive(Input::LocalMute { key, muted });
                }
            }
        });
        stream::add_mute_hook(&hook);
        *inner.mute_hook.borrow_mut() = Some(hook);
        Ok(Stage { inner })
    }

    /// Connects to the stage. Resolves once the first state snapshot
    /// arrived; rejects with a `StageError` (category `JOIN_ERROR`).
    pub fn join(&self) -> Promise {
        let mut slot = None;
        let promise = Promise::new(&mut |resolve, reject| slot = Some((resolve, reject)));
        if let Some(pair) = slot {
            self.inner.io.borrow_mut().joins.push(pair);
            self.inner.drive(Input::Join {
                unix_ms: js_sys::Date::now(),
            });
        }
        promise
    }

    /// Leaves the stage: unpublishes, unsubscribes, emits `stageLeft`
    /// with `'user-initiated'`.
    pub fn leave(&self) {
        self.inner.drive(Input::Leave);
    }

    /// Re-runs every strategy callback and applies the differences.
    #[wasm_bindgen(js_name = refreshStrategy)]
    pub fn refresh_strategy(&self) {
        self.inner.drive(Input::RefreshStrategy);
    }

    /// Swaps the strategy object and re-runs it.
    #[wasm_bindgen(js_name = replaceStrategy)]
    pub fn replace_strategy(&self, strategy: JsValue) -> Result<(), JsValue> {
        if !strategy.is_object() {
            return Err(type_error("replaceStrategy: strategy must be an object"));
        }
        *self.inner.strategy.borrow_mut() = strategy;
        self.refresh_strategy();
        Ok(())
    }

    /// Adds a listener for one of the `StageEvents`.
    pub fn on(&self, event: JsValue, callback: JsValue) -> Result<(), JsValue> {
        self.inner.listeners.add(event, callback)
    }

    /// Removes a listener added with `on`.
    pub fn off(&self, event: JsValue, callback: JsValue) -> Result<(), JsValue> {
        self.inner.listeners.remove(event, callback)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // The JS object was freed: stop everything without telling anyone
        // (the callbacks hold weak references and find nothing). The socket
        // closes as a leave: nothing can reconnect it within the grace.
        if let Ok(mut io) = self.inner.io.try_borrow_mut() {
            if let Some(socket) = io.socket.take() {
                socket.close(true);
            }
            io.timer = None;
            io.peers.clear();
        }
    }
}

fn call_method(obj: &JsValue, name: &str, arg: Option<&JsValue>) -> Result<JsValue, JsValue> {
    let f: Function = js_sys::Reflect::get(obj, &JsValue::from_str(name))?
        .dyn_into()
        .map_err(|_| type_error(&format!("strategy.{name} is not a function")))?;
    match arg {
        Some(a) => f.call1(obj, a),
        None => f.call0(obj),
    }
}

fn warn(message: &str, detail: &JsValue) {
    web_sys::console::warn_2(&JsValue::from_str(message), detail);
}

/// After a refused socket handshake the browser hides the HTTP status, so
/// ask the media plane (same token checks) why the token is refused.
async fn diagnose(whip_url: String, jti: String, can_subscribe: bool, token: String) -> Option<HttpFailure> {
    let url = if can_subscribe {
        format!("{whip_url}/subscribe/{}", js_sys::encode_uri_component(&jti))
    } else {
        format!("{whip_url}/publish")
    };
    http::post_offer(&url, &token, "v=0\r\n").await.err().map(HttpFailure::from)
}

impl Inner {
    /// Feeds `input` to the session and carries out what it decides.
    fn drive(self: &Rc<Self>, input: Input) {
        self.core.borrow_mut().handle(input, now_ms());
        self.run();
    }

    fn run(self: &Rc<Self>) {
        loop {
            let actions = self.core.borrow_mut().take_actions();
            if actions.is_empty() {
                break;
            }
            for action in actions {
                self.apply(action);
            }
        }
        let published = self.core.borrow().published_keys();
        self.io.borrow_mut().locals.retain(|k| published.contains(k));
        self.arm_timer();
        self.send_deletes();
        self.flush();
    }

    /// Delivers queued events to listeners, with no borrow held.
    fn flush(&self) {
        loop {
            let batch = match self.pending.try_borrow_mut() {
                Ok(mut p) => std::mem::take(&mut *p),
                Err(_) => return,
            };
            if batch.is_empty() {
                return;
            }
            for (event, args) in batch {
                let args: js_sys::Array = args.into_iter().collect();
                self.listeners.call(event, &args);
            }
        }
    }

    /// One timer, at the session's next deadline.
    fn arm_timer(self: &Rc<Self>) {
        let due = self.core.borrow().poll_timeout();
        let mut io = self.io.borrow_mut();
        if io.timer.as_ref().map(|(t, _)| *t) == due {
            return;
        }
        io.timer = due.map(|due| {
            let weak = Rc::downgrade(self);
            let delay = (due - now_ms()).clamp(0.0, f64::from(u32::MAX));
            let timer = Timeout::new(delay.ceil() as u32, move || {
                if let Some(inner) = weak.upgrade() {
                    inner.io.borrow_mut().timer = None;
                    inner.drive(Input::Tick);
                }
            });
            (due, timer)
        });
    }

    /// Sends the queued DELETEs, then closes what they kept open.
    fn send_deletes(&self) {
        let (deletes, leaving) = {
            let mut io = self.io.borrow_mut();
            (std::mem::take(&mut io.deletes), io.leaving.take())
        };
        if deletes.is_empty() {
            if let Some(socket) = leaving {
                socket.close(true);
            }
            return;
        }
        let token = self.core.borrow().token().to_owned();
        spawn_local(async move {
            for (url, peer) in deletes {
                let _ = http::delete(&url, &token).await;
                drop(peer);
            }
            if let Some(socket) = leaving {
                socket.close(true);
            }
        });
    }

    fn apply(self: &Rc<Self>, action: Action) {
        match action {
            Action::OpenSocket { gen } => self.open_socket(gen),
            Action::CloseSocket { deliberate } => {
                let mut io = self.io.borrow_mut();
                if let Some(socket) = io.socket.take() {
                    if deliberate {
                        io.leaving = Some(socket);
                    } else {
                        socket.close(false);
                    }
                }
            }
            Action::Send(msg) => {
                if let Some(s) = &self.io.borrow().socket {
                    s.send(&msg);
                }
            }
            Action::Diagnose { gen } => {
                let core = self.core.borrow();
                let Some(c) = core.claims() else { return };
                let probe = diagnose(
                    c.whip_url.clone(),
                    c.jti.clone(),
                    c.capabilities.allow_subscribe,
                    core.token().to_owned(),
                );
                let weak = Rc::downgrade(self);
                spawn_local(async move {
                    let failure = probe.await;
                    if let Some(inner) = weak.upgrade() {
                        inner.drive(Input::Diagnosed { gen, failure });
                    }
                });
            }
            Action::AskStrategy { publish, remotes } => {
                let answer = self.ask_strategy(publish, remotes);
                self.core.borrow_mut().handle(Input::Strategy(answer), now_ms());
            }
            Action::OpenPublish { op, streams, ice_servers } => self.open_publish(op, &streams, ice_servers),
            Action::ReplaceTracks { op, streams } => self.replace_tracks(op, &streams),
            Action::OpenSubscribe { op, publisher, ice_servers } => self.open_subscribe(op, publisher, ice_servers),
            Action::PublishLayers { op, rids } => {
                if let Some(Peer::Publish(p)) = self.io.borrow().peers.get(&op) {
                    p.set_layers(&rids);
                }
            }
            Action::PollLayers { op } => self.layer_request(op, None),
            Action::SelectLayer { op, rid } => self.layer_request(op, Some(select_body(rid.as_deref()))),
            Action::AskLayer { op, id } => {
                let preference = self.ask_layer(op, &id);
                self.core.borrow_mut().handle(Input::LayerPreference { op, preference }, now_ms());
            }
            Action::ClosePeer { op, delete } => {
                let mut io = self.io.borrow_mut();
                if let Some(peer) = io.peers.remove(&op) {
                    match peer.location().filter(|_| delete) {
                        Some(url) => io.deletes.push((url, peer)),
                        None => drop(peer),
                    }
                }
            }
            Action::ResolveJoin => {
                if let Some((resolve, _)) = self.io.borrow_mut().joins.pop() {
                    let _ = resolve.call0(&JsValue::UNDEFINED);
                }
            }
            Action::RejectJoin(e) => {
                if let Some((_, reject)) = self.io.borrow_mut().joins.pop() {
                    let _ = reject.call1(&JsValue::UNDEFINED, &stage_error(&e));
                }
            }
            Action::UpdateInfo(p) => {
                if let Some(info) = self.io.borrow().infos.get(&p.id) {
                    update_info(info, &p);
                }
            }
            Action::Emit(event) => {
                if let Some(js) = self.event_js(event) {
                    self.pending.borrow_mut().push(js);
                }
            }
        }
    }

    fn open_socket(self: &Rc<Self>, gen: u32) {
        let (url, token) = {
            let core = self.core.borrow();
            let Some(c) = core.claims() else { return };
            (c.events_url.clone(), core.token().to_owned())
        };
        let weak: Weak<Inner> = Rc::downgrade(self);
        let socket = EventSocket::connect(&url, &token, move |ev| {
            let Some(inner) = weak.upgrade() else { return };
            let input = match ev {
                SocketEvent::Open => Input::SocketOpened { gen },
                SocketEvent::Message(m) => Input::SocketFrame { gen, message: Some(m) },
                SocketEvent::Unparsable => Input::SocketFrame { gen, message: None },
                SocketEvent::Closed { was_open } => Input::SocketClosed { gen, was_open },
            };
            inner.drive(input);
        });
        match socket {
            Ok(s) => self.io.borrow_mut().socket = Some(s),
            Err(e) => {
                warn("stagecast: cannot open the event socket", &e);
                let inner = self.clone();
                defer(move || inner.drive(Input::SocketClosed { gen, was_open: false }));
            }
        }
    }

    /// Reports `op`'s connection state changes to the session.
    fn on_state(self: &Rc<Self>, op: u32) -> impl Fn(PeerState) + 'static {
        let weak = Rc::downgrade(self);
        move |state| {
            if let Some(inner) = weak.upgrade() {
                inner.drive(Input::PeerState { op, state });
            }
        }
    }

    /// Where the session's media requests go, with the token.
    fn media_endpoint(&self) -> Option<(String, String)> {
        let core = self.core.borrow();
        core.claims().map(|c| (c.whip_url.clone(), core.token().to_owned()))
    }

    /// Stores a finished setup's peer connection and tells the session.
    fn answered(self: &Rc<Self>, op: u32, result: Result<Peer, HttpFailure>) {
        let controls = matches!(&result, Ok(Peer::Subscribe(p, _)) if p.layers.is_some());
        let result = result.map(|peer| {
            self.io.borrow_mut().peers.insert(op, peer);
        });
        self.drive(Input::PeerAnswered { op, result });
        if controls {
            self.drive(Input::LayerControls { op });
        }
    }

    /// `GET` (`body: None`) or `POST` subscription `op`'s layer controls; a
    /// `GET`'s answer goes to the session (a failed one is simply retried
    /// at the next poll).
    fn layer_request(self: &Rc<Self>, op: u32, body: Option<String>) {
        let url = match self.io.borrow().peers.get(&op) {
            Some(Peer::Subscribe(p, _)) => p.layers.clone(),
            _ => None,
        };
        let (Some(url), Some((_, token))) = (url, self.media_endpoint()) else { return };
        let weak = Rc::downgrade(self);
        spawn_local(async move {
            let answer = http::layer_controls(&url, &token, body.as_deref()).await;
            let state = answer.ok().filter(|_| body.is_none()).and_then(|t| parse_layer_state(&t));
            if let (Some(state), Some(inner)) = (state, weak.upgrade()) {
                inner.drive(Input::LayersPolled { op, state });
            }
        });
    }

    /// `strategy.preferredLayerForStream(info, videoStream)`: a layer's or
    /// a string's label, or `None` (server-adaptive; also when the strategy
    /// has no such method or it throws).
    fn ask_layer(&self, op: u32, id: &str) -> Option<String> {
        let strategy = self.strategy.borrow().clone();
        let (info, stream) = {
            let io = self.io.borrow();
            let stream = match io.peers.get(&op) {
                Some(Peer::Subscribe(_, objs)) => objs.iter().find(|(k, _)| *k == StreamKind::Video).map(|(_, o)| o.clone()),
                _ => None,
            };
            (io.infos.get(id).cloned()?, stream?)
        };
        let f: Function = js_sys::Reflect::get(&strategy, &JsValue::from_str("preferredLayerForStream")).ok()?.dyn_into().ok()?;
        let v = f.call2(&strategy, &info, &stream).map_err(|e| warn("stagecast: preferredLayerForStream failed", &e)).ok()?;
        v.as_string().or_else(|| {
            v.is_object()
                .then(|| js_sys::Reflect::get(&v, &JsValue::from_str("label")).ok()?.as_string())
                .flatten()
        })
    }

    fn open_publish(self: &Rc<Self>, op: u32, streams: &[DesiredStream], ice_servers: Vec<IceServer>) {
        let Some((whip_url, token)) = self.media_endpoint() else { return };
        let (tracks, shared): (Vec<_>, Vec<Rc<LocalShared>>) = {
            let io = self.io.borrow();
            streams
                .iter()
                .filter_map(|d| {
                    let (s, _) = io.locals.get(&d.key)?;
                    // The core decides the layers from the track's size.
                    let encodings = match d.kind {
                        StreamKind::Video => crate::core::simulcast::encodings(&s.video, track_size(&s.track)),
                        StreamKind::Audio => Vec::new(),
                    };
                    Some(((d.kind, Clone::clone(&s.track), encodings), s.clone()))
                })
                .unzip()
        };
        let on_state = self.on_state(op);
        let weak = Rc::downgrade(self);
        spawn_local(async move {
            let result = PublishPeer::start(&whip_url, &token, &tracks, &ice_servers, on_state).await;
            if let Ok(peer) = &result {
                // Each stream's stats come from the sender now carrying it.
                for s in &shared {
                    s.sender.replace(peer.sender(s.kind));
                }
            }
            if let Some(inner) = weak.upgrade() {
                inner.answered(op, result.map(Peer::Publish).map_err(HttpFailure::from));
            }
        });
    }

    fn replace_tracks(&self, op: u32, streams: &[DesiredStream]) {
        let io = self.io.borrow();
        let Some(Peer::Publish(peer)) = io.peers.get(&op) else { return };
        for d in streams {
            let (Some(sender), Some((shared, _))) = (peer.sender(d.kind), io.locals.get(&d.key)) else {
                continue;
            };
            let track = Clone::clone(&shared.track);
            spawn_local(async move {
                if let Err(e) = replace_track(&sender, &track).await {
                    warn("stagecast: replaceTrack failed", &JsValue::from_str(&e.to_string()));
                }
            });
        }
    }

    fn open_subscribe(self: &Rc<Self>, op: u32, publisher: String, ice_servers: Vec<IceServer>) {
        let Some((whip_url, token)) = self.media_endpoint() else { return };
        let initial = initial_layer_query(self.initial_layer(&publisher).as_deref());
        let on_state = self.on_state(op);
        let weak = Rc::downgrade(self);
        spawn_local(async move {
            let result = SubscribePeer::start(&whip_url, &token, &publisher, initial, &ice_servers, on_state).await;
            let Some(inner) = weak.upgrade() else { return };
            let result = result.map_err(HttpFailure::from).map(|peer| {
                let objs = peer
                    .tracks
                    .iter()
                    .map(|(k, t, r)| {
                        let obj = remote_stream(*k, t, false);
                        crate::web::stats::attach(&obj, r);
                        (*k, obj)
                    })
                    .collect();
                Peer::Subscribe(peer, objs)
            });
            inner.answered(op, result);
        });
    }

    /// `strategy.subscribeConfiguration(info).simulcast.initialLayerPreference`.
    fn initial_layer(&self, id: &str) -> Option<String> {
        let strategy = self.strategy.borrow().clone();
        let info = self.io.borrow().infos.get(id).cloned()?;
        if !js_sys::Reflect::get(&strategy, &JsValue::from_str("subscribeConfiguration")).ok()?.is_function() {
            return None;
        }
        let config = call_method(&strategy, "subscribeConfiguration", Some(&info)).ok()?;
        let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &JsValue::from_str(k)).ok().filter(|v| v.is_object() || v.is_string());
        get(&get(&config, "simulcast")?, "initialLayerPreference")?.as_string()
    }

    /// Calls the strategy for the local participant (`publish`) and for
    /// `remotes`; a throwing or malformed callback counts as "no".
    fn ask_strategy(&self, publish: bool, remotes: Vec<String>) -> StrategyAnswer {
        let strategy = self.strategy.borrow().clone();
        let (self_info, infos) = {
            let io = self.io.borrow();
            let core = self.core.borrow();
            let me = core.view().self_id().and_then(|id| io.infos.get(id)).cloned();
            let infos: Vec<(String, Object)> = remotes
                .into_iter()
                .filter_map(|id| io.infos.get(&id).cloned().map(|i| (id, i)))
                .collect();
            (me, infos)
        };
        let publish = match (publish, self_info) {
            (true, Some(info)) => Some(self.ask_publish(&strategy, &info)),
            _ => None,
        };
        let subscribe = infos
            .into_iter()
            .map(|(id, info)| {
                let kind = match call_method(&strategy, "shouldSubscribeToParticipant", Some(&info)) {
                    Ok(v) if js_sys::Array::is_array(&v) => {
                        let types: Vec<String> = js_sys::Array::from(&v).iter().filter_map(|t| t.as_string()).collect();
                        SubscribeKind::from_stream_types(types.iter().map(String::as_str))
                    }
                    Ok(v) => SubscribeKind::parse(&v.as_string().unwrap_or_default()),
                    Err(e) => {
                        warn("stagecast: shouldSubscribeToParticipant failed", &e);
                        SubscribeKind::None
                    }
                };
                (id, kind)
            })
            .collect();
        StrategyAnswer { publish, subscribe }
    }

    fn ask_publish(&self, strategy: &JsValue, info: &Object) -> (bool, Vec<LocalStream>) {
        let should = match call_method(strategy, "shouldPublishParticipant", Some(info)) {
            Ok(v) => v.is_truthy(),
            Err(e) => {
                warn("stagecast: shouldPublishParticipant failed", &e);
                false
            }
        };
        if !should {
            return (false, Vec::new());
        }
        let list = match call_method(strategy, "stageStreamsToPublish", None) {
            Ok(v) if js_sys::Array::is_array(&v) => js_sys::Array::from(&v),
            Ok(v) => {
                warn("stagecast: stageStreamsToPublish must return an array", &v);
                return (true, Vec::new());
            }
            Err(e) => {
                warn("stagecast: stageStreamsToPublish failed", &e);
                return (true, Vec::new());
            }
        };
        let mut streams = Vec::new();
        let mut io = self.io.borrow_mut();
        for obj in list.iter() {
            let Some(shared) = stream::lookup(&obj) else {
                warn("stagecast: stageStreamsToPublish returned a non-LocalStageStream", &obj);
                continue;
            };
            streams.push(LocalStream {
                stream: DesiredStream {
                    key: shared.key,
                    kind: shared.kind,
                },
                muted: shared.muted.get(),
            });
            io.locals.insert(shared.key, (shared, obj));
        }
        (true, streams)
    }

    /// The JS listener arguments for `event` (`None` when the participant
    /// it concerns has no info object).
    fn event_js(&self, event: StageEvent) -> Option<Event> {
        let name = event.name();
        let mut io = self.io.borrow_mut();
        let info = |io: &Io, id: &str| io.infos.get(id).cloned().map(JsValue::from);
        let args = match event {
            StageEvent::ConnectionStateChanged(s) => vec![s.as_str().into()],
            StageEvent::ParticipantJoined(p) => {
                let is_local = self.core.borrow().view().self_id() == Some(p.id.as_str());
                let obj = participant_info(&p, is_local);
                io.infos.insert(p.id, obj.clone());
                vec![obj.into()]
            }
            StageEvent::ParticipantLeft(p) => {
                let obj = io.infos.remove(&p.id)?;
                update_info(&obj, &p);
                vec![obj.into()]
            }
            StageEvent::PublishStateChanged(s) => {
                let core = self.core.borrow();
                vec![info(&io, core.view().self_id()?)?, s.as_str().into()]
            }
            StageEvent::SubscribeStateChanged { id, state } => vec![info(&io, &id)?, state.as_str().into()],
            StageEvent::StreamsAdded { id, streams } | StageEvent::StreamsRemoved { id, streams } => {
                let objs: Vec<JsValue> = streams.iter().filter_map(|s| stream_js(&io, s)).collect();
                vec![info(&io, &id)?, array(objs)]
            }
            StageEvent::StreamMuteChanged { id, stream } => vec![info(&io, &id)?, stream_js(&io, &stream)?],
            StageEvent::StageLeft(r) => vec![r.as_str().into()],
            StageEvent::Error(e) => vec![stage_error(&e)],
            StageEvent::StreamLayersChanged { id, stream, state } => {
                let (obj, layers) = layer_stream(&io, &stream, &state)?;
                vec![info(&io, &id)?, obj, layers]
            }
            StageEvent::StreamLayerSelected { id, stream, state } => {
                let (obj, layers) = layer_stream(&io, &stream, &state)?;
                let at = state.layers.iter().position(|l| state.selected.as_ref() == Some(&l.label));
                let (layer, reason) = match at {
                    Some(i) => (js_sys::Array::from(&layers).get(i as u32), "selected"),
                    None => (JsValue::UNDEFINED, "unavailable"),
                };
                vec![info(&io, &id)?, obj, layer, reason.into()]
            }
            StageEvent::StreamAdaptionChanged { id, stream, state } => {
                let (obj, _) = layer_stream(&io, &stream, &state)?;
                vec![info(&io, &id)?, obj, state.adapting.into()]
            }
        };
        if name == "stageLeft" {
            io.infos.clear();
        }
        Some((name, args))
    }
}

/// A remote video stream's object, brought up to date with `state` (its
/// layers, lowest first, for `getLayers()`, and `isAdapting`), and the layers.
fn layer_stream(io: &Io, stream: &StreamRef, state: &LayerState) -> Option<(JsValue, JsValue)> {
    let obj = stream_js(io, stream)?;
    let layers = array(state.layers.iter().map(|l| {
        let o = Object::new();
        set(&o, "label", l.label.as_str());
        set(&o, "bitrateBps", l.bitrate_bps);
        set(&o, "width", l.width);
        set(&o, "height", l.height);
        set(&o, "framesPerSecond", l.frames_per_second);
        set(&o, "selected", state.selected.as_deref() == Some(l.label.as_str()));
        o.into()
    }));
    let target: &Object = obj.unchecked_ref();
    set(target, "__layers", layers.clone());
    set(target, "isAdapting", state.adapting);
    Some((obj, layers))
}

/// The JS object of a stream named in an event.
fn stream_js(io: &Io, s: &StreamRef) -> Option<JsValue> {
    match *s {
        StreamRef::Local(key) => io.locals.get(&key).map(|(_, obj)| obj.clone()),
        StreamRef::Remote { op, kind, muted } => {
            // The session names a connection's streams before closing it.
            let Some(Peer::Subscribe(_, objs)) = io.peers.get(&op) else { return None };
            let (_, obj) = objs.iter().find(|(k, _)| *k == kind)?;
            set(obj, "isMuted", muted);
            Some(obj.into())
        }
    }
}
