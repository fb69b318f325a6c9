//! `Stage`: joins a stage with a participant token and runs the strategy.
//!
//! Borrow discipline: state lives in one `RefCell`; JS (listeners and the
//! strategy) is never called while it is borrowed. Events are queued in
//! `St::pending` and delivered by `flush()` once the borrow is released, so
//! a listener may call back into the stage (e.g. `leave()`).

use super::convert::{
    array, participant_info, remote_stream, set, stage_error, type_error, update_info,
};
use super::listeners::Listeners;
use super::stream::{self, LocalShared};
use crate::core::backoff::{should_reconnect, Backoff, SocketEnd};
use crate::core::strategy::{local_mute_state, plan_publish, plan_subscription, DesiredStream};
use crate::core::token::{check_not_expired, decode_claims, TokenError};
use crate::core::{
    ErrorCategory, ErrorCode, ParticipantChange, PublishAction, StageError, StageView, StreamKind,
    SubscribeKind, SubscriptionAction,
};
use crate::web::http::{self, HttpError};
use crate::web::peer::{replace_track, PeerError, PeerHealth, PublishPeer, SubscribePeer};
use crate::web::socket::{EventSocket, SocketEvent};
use crate::web::timer::{Interval, Timeout};
use js_sys::{Function, Object, Promise};
use stagecast_protocol::events::{
    ClientMessage, DisconnectReason, ParticipantState, ServerMessage,
};
use stagecast_protocol::token::ParticipantClaims;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

const JOIN_TIMEOUT_MS: u32 = 15_000;
const PING_INTERVAL_MS: u32 = 20_000;

const CONNECTION_STATE_CHANGED: &str = "stageConnectionStateChanged";
const PARTICIPANT_JOINED: &str = "stageParticipantJoined";
const PARTICIPANT_LEFT: &str = "stageParticipantLeft";
const STREAMS_ADDED: &str = "stageParticipantStreamsAdded";
const STREAMS_REMOVED: &str = "stageParticipantStreamsRemoved";
const MUTE_CHANGED: &str = "stageStreamMuteChanged";
const PUBLISH_STATE_CHANGED: &str = "stageParticipantPublishStateChanged";
const SUBSCRIBE_STATE_CHANGED: &str = "stageParticipantSubscribeStateChanged";
const STAGE_LEFT: &str = "stageLeft";
const ERROR: &str = "error";

fn now_secs() -> f64 {
    js_sys::Date::now() / 1000.0
}

struct PubStream {
    desired: DesiredStream,
    shared: Rc<LocalShared>,
    /// The user's `LocalStageStream` object, handed back in events.
    obj: JsValue,
}

#[derive(Default)]
struct Publish {
    streams: Vec<PubStream>,
    peer: Option<PublishPeer>,
    /// Id of the attempt in flight or done; 0 = none. A finishing attempt
    /// whose id no longer matches was superseded and cleans up after itself.
    op: u32,
    errored: Option<Vec<DesiredStream>>,
    state: &'static str,
    announced: bool,
}

struct Sub {
    kind: SubscribeKind,
    peer: Option<SubscribePeer>,
    streams: Vec<(StreamKind, Object)>,
    exposed: Vec<StreamKind>,
    op: u32,
    stale: bool,
    state: &'static str,
}

type Event = (&'static str, Vec<JsValue>);
/// Keeps this stage registered for local mute changes while alive.
type MuteHook = Rc<dyn Fn(u32)>;

struct St {
    token: String,
    strategy: JsValue,
    claims: Option<ParticipantClaims>,
    conn: &'static str,
    /// Bumped on every new socket; events from older sockets are ignored.
    sock_gen: u32,
    socket: Option<EventSocket>,
    ping: Option<Interval>,
    reconnect_timer: Option<Timeout>,
    join_timer: Option<Timeout>,
    backoff: Backoff,
    first_snapshot_pending: bool,
    /// `resolve` / `reject` of a pending `join()` promise.
    join: Option<(Function, Function)>,
    joined: bool,
    view: StageView,
    infos: HashMap<String, Object>,
    publish: Publish,
    subs: HashMap<String, Sub>,
    next_op: u32,
    pending: Vec<Event>,
    /// Session resources to DELETE, sent by `flush()`, each with the peer
    /// connection to close once the server has heard (closing it first
    /// would make the server drop the session and answer 404).
    deletes: Vec<(String, Box<dyn std::any::Any>)>,
}

pub(crate) struct Inner {
    st: RefCell<St>,
    listeners: Listeners,
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
        let token = token
            .as_string()
            .ok_or_else(|| type_error("Stage: token must be a string"))?;
        if !strategy.is_object() {
            return Err(type_error("Stage: strategy must be an object"));
        }
        let inner = Rc::new(Inner {
            st: RefCell::new(St {
                token,
                strategy,
                claims: None,
                conn: "disconnected",
                sock_gen: 0,
                socket: None,
                ping: None,
                reconnect_timer: None,
                join_timer: None,
                backoff: Backoff::default(),
                first_snapshot_pending: false,
                join: None,
                joined: false,
                view: StageView::new(),
                infos: HashMap::new(),
                publish: Publish {
                    state: "not_published",
                    ..Default::default()
                },
                subs: HashMap::new(),
                next_op: 0,
                pending: Vec::new(),
                deletes: Vec::new(),
            }),
            listeners: Listeners::default(),
            mute_hook: RefCell::new(None),
        });
        let weak = Rc::downgrade(&inner);
        let hook: Rc<dyn Fn(u32)> = Rc::new(move |key| {
            if let Some(inner) = weak.upgrade() {
                inner.on_local_mute(key);
                inner.flush();
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
        if let Some((resolve, reject)) = slot {
            self.inner.start_join(resolve, reject);
            self.inner.flush();
        }
        promise
    }

    /// Leaves the stage: unpublishes, unsubscribes, emits `stageLeft`
    /// with `'user-initiated'`.
    pub fn leave(&self) {
        let active = {
            let st = self.inner.st.borrow();
            st.joined || st.socket.is_some() || st.join.is_some() || st.reconnect_timer.is_some()
        };
        if active {
            self.inner.final_leave("user-initiated", None);
        }
        self.inner.flush();
    }

    /// Re-runs every strategy callback and applies the differences.
    #[wasm_bindgen(js_name = refreshStrategy)]
    pub fn refresh_strategy(&self) {
        Inner::reconcile(&self.inner, true, None);
        self.inner.flush();
    }

    /// Swaps the strategy object and re-runs it.
    #[wasm_bindgen(js_name = replaceStrategy)]
    pub fn replace_strategy(&self, strategy: JsValue) -> Result<(), JsValue> {
        if !strategy.is_object() {
            return Err(type_error("replaceStrategy: strategy must be an object"));
        }
        self.inner.st.borrow_mut().strategy = strategy;
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
        // The JS object was freed: stop everything without telling anyone.
        if let Ok(mut st) = self.inner.st.try_borrow_mut() {
            st.sock_gen = st.sock_gen.wrapping_add(1);
            st.socket = None;
            st.ping = None;
            st.reconnect_timer = None;
            st.join_timer = None;
            st.publish.op = 0;
            st.subs.clear();
            st.publish.peer = None;
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

fn peer_error(category: ErrorCategory, e: PeerError) -> StageError {
    match e {
        PeerError::Http(HttpError::Status { status, body }) => StageError::from_http(
            category,
            status,
            body.as_ref().map(|b| b.code.as_str()),
            body.as_ref().map(|b| b.message.as_str()),
        ),
        other => StageError::new(category, ErrorCode::Failed, other.to_string()),
    }
}

fn reason_code(reason: &str) -> ErrorCode {
    match reason {
        "participant-disconnected" => ErrorCode::ParticipantDisconnected,
        "stage-deleted" => ErrorCode::StageDeleted,
        "token-expired" => ErrorCode::TokenExpired,
        "user-initiated" => ErrorCode::Canceled,
        _ => ErrorCode::Failed,
    }
}

/// After a refused socket handshake the browser hides the HTTP status, so
/// ask the media plane (same token checks) why the token is refused.
async fn diagnose(claims: &ParticipantClaims, token: &str) -> StageError {
    let url = if claims.capabilities.allow_subscribe {
        format!(
            "{}/subscribe/{}",
            claims.whip_url,
            js_sys::encode_uri_component(&claims.jti)
        )
    } else {
        format!("{}/publish", claims.whip_url)
    };
    let fallback = StageError::new(
        ErrorCategory::Join,
        ErrorCode::Failed,
        "could not connect to the stage event plane",
    );
    match http::post_offer(&url, token, "v=0\r\n").await {
        Err(HttpError::Status {
            status,
            body: Some(body),
        }) => {
            let e = StageError::from_http(
                ErrorCategory::Join,
                status,
                Some(&body.code),
                Some(&body.message),
            );
            match e.code {
                ErrorCode::TokenMalformed
                | ErrorCode::TokenExpired
                | ErrorCode::StageDeleted
                | ErrorCode::ParticipantDisconnected => e,
                _ => fallback,
            }
        }
        _ => fallback,
    }
}

impl St {
    fn emit(&mut self, event: &'static str, args: Vec<JsValue>) {
        self.pending.push((event, args));
    }

    fn next_op(&mut self) -> u32 {
        self.next_op = self.next_op.wrapping_add(1).max(1);
        self.next_op
    }

    fn set_conn(&mut self, state: &'static str) {
        if self.conn != state {
            self.conn = state;
            self.emit(CONNECTION_STATE_CHANGED, vec![state.into()]);
        }
    }

    fn self_info(&self) -> Option<Object> {
        self.view
            .self_id()
            .and_then(|id| self.infos.get(id))
            .cloned()
    }

    fn set_publish_state(&mut self, state: &'static str) {
        if self.publish.state == state {
            return;
        }
        self.publish.state = state;
        if let Some(info) = self.self_info() {
            self.emit(PUBLISH_STATE_CHANGED, vec![info.into(), state.into()]);
        }
    }

    fn set_sub_state(&mut self, id: &str, state: &'static str) {
        if let Some(info) = self.infos.get(id).cloned() {
            self.emit(SUBSCRIBE_STATE_CHANGED, vec![info.into(), state.into()]);
        }
    }

    fn send(&self, msg: &ClientMessage) {
        if let Some(s) = &self.socket {
            s.send(msg);
        }
    }

    fn send_mute_state(&self) {
        if self.publish.peer.is_none() {
            return;
        }
        let published: Vec<(StreamKind, bool)> = self
            .publish
            .streams
            .iter()
            .map(|s| (s.desired.kind, s.shared.muted.get()))
            .collect();
        let (audio_muted, video_stopped) = local_mute_state(&published);
        self.send(&ClientMessage::SetState {
            audio_muted,
            video_stopped,
        });
    }

    fn publish_error(&mut self, e: StageError) {
        self.emit(ERROR, vec![stage_error(&e)]);
    }

    fn unpublish(&mut self) {
        self.publish.op = 0;
        if let Some(peer) = self.publish.peer.take() {
            self.delete_session(peer.location.clone(), Box::new(peer));
        }
        let streams = std::mem::take(&mut self.publish.streams);
        if std::mem::take(&mut self.publish.announced) {
            if let Some(info) = self.self_info() {
                self.emit(
                    STREAMS_REMOVED,
                    vec![info.into(), array(streams.into_iter().map(|s| s.obj))],
                );
            }
        }
        self.set_publish_state("not_published");
    }

    fn delete_session(&mut self, location: Option<String>, peer: Box<dyn std::any::Any>) {
        if let Some(url) = location {
            self.deletes.push((url, peer));
        }
    }

    /// Sends the queued DELETEs; `keep_alive` (the event socket on leave)
    /// is closed only afterwards, so the server still knows the token.
    fn spawn_deletes(&mut self, keep_alive: Option<EventSocket>) {
        let urls = std::mem::take(&mut self.deletes);
        if urls.is_empty() {
            return;
        }
        let token = self.token.clone();
        spawn_local(async move {
            for (url, peer) in urls {
                let _ = http::delete(&url, &token).await;
                drop(peer);
            }
            drop(keep_alive);
        });
    }

    /// Closes the subscription to `id`. `server_gone`: the publisher's
    /// session ended, so the server already dropped ours (no DELETE).
    fn close_sub(&mut self, id: &str, server_gone: bool) {
        let Some(sub) = self.subs.remove(id) else {
            return;
        };
        if let Some(info) = self.infos.get(id).cloned() {
            if !sub.exposed.is_empty() {
                let objs = sub
                    .streams
                    .iter()
                    .filter(|(k, _)| sub.exposed.contains(k))
                    .map(|(_, o)| o.into());
                self.emit(STREAMS_REMOVED, vec![info.into(), array(objs)]);
            }
        }
        if let Some(peer) = sub.peer {
            if !server_gone {
                self.delete_session(peer.location.clone(), Box::new(peer));
            }
        }
        if sub.state != "not_subscribed" {
            self.set_sub_state(id, "not_subscribed");
        }
    }

    fn retype_sub(&mut self, id: &str, to: SubscribeKind) {
        let Some(sub) = self.subs.get_mut(id) else {
            return;
        };
        sub.kind = to;
        if sub.peer.is_none() {
            return;
        }
        let new: Vec<StreamKind> = sub
            .streams
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| to.exposes(*k))
            .collect();
        let removed: Vec<JsValue> = sub
            .streams
            .iter()
            .filter(|(k, _)| sub.exposed.contains(k) && !new.contains(k))
            .map(|(_, o)| o.into())
            .collect();
        let added: Vec<JsValue> = sub
            .streams
            .iter()
            .filter(|(k, _)| !sub.exposed.contains(k) && new.contains(k))
            .map(|(_, o)| o.into())
            .collect();
        sub.exposed = new;
        let Some(info) = self.infos.get(id).cloned() else {
            return;
        };
        if !removed.is_empty() {
            self.emit(STREAMS_REMOVED, vec![info.clone().into(), array(removed)]);
        }
        if !added.is_empty() {
            self.emit(STREAMS_ADDED, vec![info.into(), array(added)]);
        }
    }

    /// Closes every peer connection (socket loss or leave).
    fn teardown_media(&mut self) {
        let ids: Vec<String> = self.subs.keys().cloned().collect();
        for id in ids {
            self.close_sub(&id, false);
        }
        self.unpublish();
    }
}

impl Inner {
    /// Delivers queued events to listeners, with no borrow held.
    fn flush(&self) {
        loop {
            let batch = match self.st.try_borrow_mut() {
                Ok(mut st) => {
                    st.spawn_deletes(None);
                    std::mem::take(&mut st.pending)
                }
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

    fn start_join(self: &Rc<Self>, resolve: Function, reject: Function) {
        let mut st = self.st.borrow_mut();
        if st.joined || st.join.is_some() || st.socket.is_some() {
            let e = StageError::new(
                ErrorCategory::Join,
                ErrorCode::Failed,
                "join() called while already joined or joining",
            );
            let _ = reject.call1(&JsValue::UNDEFINED, &stage_error(&e));
            return;
        }
        let claims = match decode_claims(&st.token)
            .and_then(|c| check_not_expired(&c, now_secs()).map(|()| c))
        {
            Ok(c) => c,
            Err(e) => {
                let code = match e {
                    TokenError::Malformed(_) => ErrorCode::TokenMalformed,
                    TokenError::Expired { .. } => ErrorCode::TokenExpired,
                };
                let e = StageError::new(ErrorCategory::Join, code, e.to_string());
                let _ = reject.call1(&JsValue::UNDEFINED, &stage_error(&e));
                return;
            }
        };
        st.claims = Some(claims);
        st.join = Some((resolve, reject));
        st.backoff.reset();
        st.set_conn("connecting");
        let weak = Rc::downgrade(self);
        st.join_timer = Some(Timeout::new(JOIN_TIMEOUT_MS, move || {
            if let Some(inner) = weak.upgrade() {
                let e = StageError::new(
                    ErrorCategory::Join,
                    ErrorCode::Timeout,
                    "timed out joining the stage",
                );
                inner.join_failed(e);
                inner.flush();
            }
        }));
        drop(st);
        self.connect_socket();
    }

    fn connect_socket(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        let Some(claims) = st.claims.clone() else {
            return;
        };
        st.sock_gen = st.sock_gen.wrapping_add(1);
        let gen = st.sock_gen;
        st.first_snapshot_pending = true;
        st.view.connection_reset();
        let weak: Weak<Inner> = Rc::downgrade(self);
        let result = EventSocket::connect(&claims.events_url, &st.token, move |ev| {
            if let Some(inner) = weak.upgrade() {
                Inner::on_socket(&inner, gen, ev);
                inner.flush();
            }
        });
        match result {
            Ok(socket) => st.socket = Some(socket),
            Err(e) => {
                warn("stagecast: cannot open the event socket", &e);
                drop(st);
                let inner = self.clone();
                crate::web::defer(move || {
                    Inner::on_socket(&inner, gen, SocketEvent::Closed { was_open: false });
                    inner.flush();
                });
            }
        }
    }

    fn on_socket(self: &Rc<Self>, gen: u32, ev: SocketEvent) {
        if self.st.borrow().sock_gen != gen {
            return;
        }
        match ev {
            SocketEvent::Open | SocketEvent::Unparsable => {}
            SocketEvent::Message(ServerMessage::StageState {
                sequence_number,
                self_id,
                participants,
            }) => self.on_snapshot(sequence_number, &self_id, participants),
            SocketEvent::Message(ServerMessage::Disconnect { reason, message }) => {
                let e = StageError::new(ErrorCategory::Join, reason_code(reason.as_str()), message);
                self.final_leave(reason.as_str(), Some(e));
            }
            SocketEvent::Message(ServerMessage::Error { code, message }) => {
                warn(
                    "stagecast: event plane error",
                    &JsValue::from_str(&format!("{code}: {message}")),
                );
            }
            SocketEvent::Message(ServerMessage::Pong) => {}
            SocketEvent::Closed { was_open } => self.on_closed(was_open),
        }
    }

    fn on_snapshot(self: &Rc<Self>, seq: u64, self_id: &str, participants: Vec<ParticipantState>) {
        let mut touched: Vec<String> = Vec::new();
        let first = {
            let mut st = self.st.borrow_mut();
            let first = std::mem::replace(&mut st.first_snapshot_pending, false);
            if first {
                // "connected" comes before the participant events it enables.
                st.set_conn("connected");
            }
            let changes = st.view.apply(seq, self_id, participants);
            for change in changes {
                Self::apply_change(&mut st, self_id, change, &mut touched);
            }
            if first {
                st.backoff.reset();
                st.joined = true;
                st.join_timer = None;
                let weak = Rc::downgrade(self);
                st.ping = Some(Interval::new(PING_INTERVAL_MS, move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.st.borrow().send(&ClientMessage::Ping);
                    }
                }));
                if let Some((resolve, _)) = st.join.take() {
                    let _ = resolve.call0(&JsValue::UNDEFINED);
                }
            }
            first
        };
        if first {
            Self::reconcile(self, true, None);
        } else if !touched.is_empty() {
            Self::reconcile(self, false, Some(touched));
        }
    }

    fn apply_change(
        st: &mut St,
        self_id: &str,
        change: ParticipantChange,
        touched: &mut Vec<String>,
    ) {
        match change {
            ParticipantChange::Joined(p) => {
                let is_local = p.id == self_id;
                let info = participant_info(&p, is_local);
                st.infos.insert(p.id.clone(), info.clone());
                st.emit(PARTICIPANT_JOINED, vec![info.into()]);
                if !is_local {
                    touched.push(p.id);
                }
            }
            ParticipantChange::Left(p) => {
                st.close_sub(&p.id, true);
                if let Some(info) = st.infos.remove(&p.id) {
                    update_info(
                        &info,
                        &ParticipantState {
                            published: false,
                            ..p
                        },
                    );
                    st.emit(PARTICIPANT_LEFT, vec![info.into()]);
                }
            }
            ParticipantChange::PublishChanged(p) => {
                if let Some(info) = st.infos.get(&p.id) {
                    update_info(info, &p);
                }
                if p.id == self_id {
                    return;
                }
                if !p.published {
                    st.close_sub(&p.id, true);
                } else {
                    if let Some(sub) = st.subs.get_mut(&p.id) {
                        sub.stale = true;
                    }
                    touched.push(p.id);
                }
            }
            ParticipantChange::MuteChanged {
                participant: p,
                kind,
                muted,
            } => {
                let Some(info) = st.infos.get(&p.id).cloned() else {
                    return;
                };
                update_info(&info, &p);
                let stream: Option<JsValue> = if p.id == self_id {
                    st.publish
                        .streams
                        .iter()
                        .find(|s| s.desired.kind == kind && st.publish.announced)
                        .map(|s| s.obj.clone())
                } else {
                    st.subs.get(&p.id).and_then(|sub| {
                        let (_, obj) = sub.streams.iter().find(|(k, _)| *k == kind)?;
                        set(obj, "isMuted", muted);
                        sub.exposed.contains(&kind).then(|| obj.into())
                    })
                };
                if let Some(stream) = stream {
                    st.emit(MUTE_CHANGED, vec![info.into(), stream]);
                }
            }
        }
    }

    fn on_closed(self: &Rc<Self>, was_open: bool) {
        let mut st = self.st.borrow_mut();
        st.socket = None;
        st.ping = None;
        if st.join.is_some() {
            // The first connection failed: find out why and reject join().
            let (Some(claims), token) = (st.claims.clone(), st.token.clone()) else {
                return;
            };
            let weak = Rc::downgrade(self);
            let gen = st.sock_gen;
            drop(st);
            spawn_local(async move {
                let e = if was_open {
                    StageError::new(
                        ErrorCategory::Join,
                        ErrorCode::Failed,
                        "the event plane closed before the stage state arrived",
                    )
                } else {
                    diagnose(&claims, &token).await
                };
                if let Some(inner) = weak.upgrade() {
                    if inner.st.borrow().sock_gen == gen {
                        inner.join_failed(e);
                        inner.flush();
                    }
                }
            });
            return;
        }
        if !st.joined {
            return;
        }
        st.teardown_media();
        let expired = st
            .claims
            .as_ref()
            .is_none_or(|c| check_not_expired(c, now_secs()).is_err());
        if !should_reconnect(SocketEnd::Unexpected, expired) {
            drop(st);
            self.final_leave("token-expired", None);
            return;
        }
        // A refused handshake while reconnecting may mean a final refusal
        // (kicked, stage deleted): ask before retrying.
        if !was_open && st.conn == "connecting" {
            let (Some(claims), token) = (st.claims.clone(), st.token.clone()) else {
                return;
            };
            let weak = Rc::downgrade(self);
            let gen = st.sock_gen;
            drop(st);
            spawn_local(async move {
                let e = diagnose(&claims, &token).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.st.borrow().sock_gen != gen {
                    return;
                }
                let reason = match e.code {
                    ErrorCode::ParticipantDisconnected => {
                        Some(DisconnectReason::ParticipantDisconnected)
                    }
                    ErrorCode::StageDeleted => Some(DisconnectReason::StageDeleted),
                    ErrorCode::TokenExpired => Some(DisconnectReason::TokenExpired),
                    _ => None,
                };
                match reason {
                    Some(r) => inner.final_leave(r.as_str(), None),
                    None => Inner::schedule_reconnect(&inner),
                }
                inner.flush();
            });
            return;
        }
        drop(st);
        Self::schedule_reconnect(self);
    }

    fn schedule_reconnect(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        match st.backoff.next_delay_ms(js_sys::Math::random()) {
            Some(delay) => {
                st.set_conn("connecting");
                let weak = Rc::downgrade(self);
                st.reconnect_timer = Some(Timeout::new(delay, move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.st.borrow_mut().reconnect_timer = None;
                        inner.connect_socket();
                        inner.flush();
                    }
                }));
            }
            None => {
                let e = StageError::new(
                    ErrorCategory::Join,
                    ErrorCode::Failed,
                    "lost the connection to the stage",
                );
                st.emit(ERROR, vec![stage_error(&e)]);
                drop(st);
                self.final_leave("unknown", None);
                self.st.borrow_mut().set_conn("errored");
            }
        }
    }

    fn join_failed(&self, e: StageError) {
        let mut st = self.st.borrow_mut();
        let Some((_, reject)) = st.join.take() else {
            return;
        };
        st.sock_gen = st.sock_gen.wrapping_add(1);
        st.socket = None;
        st.join_timer = None;
        st.set_conn("errored");
        let _ = reject.call1(&JsValue::UNDEFINED, &stage_error(&e));
    }

    /// Ends the session for good: everything is torn down and `stageLeft`
    /// is emitted with `reason`.
    fn final_leave(&self, reason: &'static str, error: Option<StageError>) {
        let mut st = self.st.borrow_mut();
        st.sock_gen = st.sock_gen.wrapping_add(1);
        let socket = st.socket.take();
        st.ping = None;
        st.reconnect_timer = None;
        st.join_timer = None;
        st.teardown_media();
        if reason != "user-initiated" {
            // The server ended the participant: its sessions are gone and
            // the token may no longer be accepted.
            st.deletes.clear();
        }
        st.spawn_deletes(socket);
        let self_id = st.view.self_id().map(str::to_owned);
        for change in st.view.clear() {
            let p = change.participant();
            if let Some(info) = st.infos.remove(&p.id) {
                if Some(&p.id) != self_id.as_ref() {
                    st.emit(PARTICIPANT_LEFT, vec![info.into()]);
                }
            }
        }
        st.infos.clear();
        if let Some((_, reject)) = st.join.take() {
            let e = error.unwrap_or_else(|| {
                StageError::new(
                    ErrorCategory::Join,
                    reason_code(reason),
                    "left before joining",
                )
            });
            let _ = reject.call1(&JsValue::UNDEFINED, &stage_error(&e));
        }
        let was_joined = std::mem::replace(&mut st.joined, false);
        st.set_conn("disconnected");
        if was_joined || reason == "user-initiated" {
            st.emit(STAGE_LEFT, vec![reason.into()]);
        }
    }

    fn on_local_mute(&self, key: u32) {
        let st = self.st.borrow();
        if st.publish.streams.iter().any(|s| s.shared.key == key) {
            st.send_mute_state();
        }
    }

    /// Asks the strategy and applies the publish/subscribe decisions.
    /// `publish`: re-evaluate the local publish set; `remotes`: which
    /// remote participants to re-evaluate (`None` = all).
    fn reconcile(self: &Rc<Self>, publish: bool, remotes: Option<Vec<String>>) {
        // 1. Gather inputs (borrow), 2. ask the strategy (no borrow), 3. apply.
        let (strategy, self_info, remote_infos) = {
            let st = self.st.borrow();
            if !st.joined || st.first_snapshot_pending || st.socket.is_none() {
                return;
            }
            let ids: Vec<String> = match remotes {
                Some(ids) => ids,
                None => st.view.remotes().map(|p| p.id.clone()).collect(),
            };
            let infos: Vec<(String, Object)> = ids
                .into_iter()
                .filter_map(|id| st.infos.get(&id).cloned().map(|i| (id, i)))
                .collect();
            (st.strategy.clone(), st.self_info(), infos)
        };

        let publish_answer = match (publish, &self_info) {
            (true, Some(info)) => Some(Self::ask_publish(&strategy, info)),
            _ => None,
        };
        let sub_answers: Vec<(String, SubscribeKind)> = remote_infos
            .into_iter()
            .map(|(id, info)| {
                let kind = match call_method(&strategy, "shouldSubscribeToParticipant", Some(&info))
                {
                    Ok(v) if js_sys::Array::is_array(&v) => {
                        let types: Vec<String> = js_sys::Array::from(&v)
                            .iter()
                            .filter_map(|t| t.as_string())
                            .collect();
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

        let mut st = self.st.borrow_mut();
        if let Some((should, wanted)) = publish_answer {
            self.apply_publish(&mut st, should, wanted);
        }
        for (id, kind) in sub_answers {
            self.apply_subscription(&mut st, &id, kind);
        }
    }

    fn ask_publish(strategy: &JsValue, info: &Object) -> (bool, Vec<PubStream>) {
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
        for obj in list.iter() {
            match stream::lookup(&obj) {
                Some(shared) => streams.push(PubStream {
                    desired: DesiredStream {
                        key: shared.key,
                        kind: shared.kind,
                    },
                    shared,
                    obj,
                }),
                None => warn(
                    "stagecast: stageStreamsToPublish returned a non-LocalStageStream",
                    &obj,
                ),
            }
        }
        (true, streams)
    }

    fn apply_publish(self: &Rc<Self>, st: &mut St, should: bool, wanted: Vec<PubStream>) {
        let desired: Vec<DesiredStream> = wanted.iter().map(|s| s.desired).collect();
        let current: Option<Vec<DesiredStream>> = (st.publish.op != 0 || st.publish.peer.is_some())
            .then(|| st.publish.streams.iter().map(|s| s.desired).collect());
        let can_publish = st
            .claims
            .as_ref()
            .is_some_and(|c| c.capabilities.allow_publish);
        let action = plan_publish(
            can_publish,
            should,
            &desired,
            current.as_deref(),
            st.publish.errored.as_deref(),
        );
        let pick = |want: &[DesiredStream], mut from: Vec<PubStream>| -> Vec<PubStream> {
            want.iter()
                .filter_map(|d| {
                    from.iter()
                        .position(|s| s.desired == *d)
                        .map(|i| from.swap_remove(i))
                })
                .collect()
        };
        match action {
            None => {}
            Some(PublishAction::NotAllowed) => {
                st.publish.errored = Some(crate::core::strategy::normalize(&desired));
                st.set_publish_state("errored");
                st.publish_error(StageError::new(
                    ErrorCategory::Publish,
                    ErrorCode::TokenNotAllowed,
                    "the participant token does not allow publishing",
                ));
            }
            Some(PublishAction::Unpublish) => st.unpublish(),
            Some(PublishAction::Publish(want)) => self.start_publish(st, pick(&want, wanted)),
            Some(PublishAction::Republish(want)) => {
                st.unpublish();
                self.start_publish(st, pick(&want, wanted));
            }
            Some(PublishAction::Replace(want)) => {
                let new = pick(&want, wanted);
                let Some(peer) = &st.publish.peer else {
                    st.unpublish();
                    self.start_publish(st, new);
                    return;
                };
                let mut removed = Vec::new();
                let mut added = Vec::new();
                let mut swaps = Vec::new();
                for s in &new {
                    let old = st
                        .publish
                        .streams
                        .iter()
                        .find(|o| o.desired.kind == s.desired.kind);
                    if old.is_some_and(|o| o.desired.key == s.desired.key) {
                        continue;
                    }
                    if let Some(o) = old {
                        removed.push(o.obj.clone());
                    }
                    added.push(s.obj.clone());
                    swaps.push((peer.sender(s.desired.kind), Clone::clone(&s.shared.track)));
                }
                for (sender, track) in swaps {
                    spawn_local(async move {
                        let Some(sender) = sender else { return };
                        if let Err(e) = replace_track(&sender, &track).await {
                            warn(
                                "stagecast: replaceTrack failed",
                                &JsValue::from_str(&e.to_string()),
                            );
                        }
                    });
                }
                st.publish.streams = new;
                if let Some(info) = st.self_info() {
                    if !removed.is_empty() {
                        st.emit(STREAMS_REMOVED, vec![info.clone().into(), array(removed)]);
                    }
                    if !added.is_empty() {
                        st.emit(STREAMS_ADDED, vec![info.into(), array(added)]);
                    }
                }
                st.send_mute_state();
            }
        }
    }
}

impl Inner {
    fn start_publish(self: &Rc<Self>, st: &mut St, streams: Vec<PubStream>) {
        let Some(claims) = st.claims.clone() else {
            return;
        };
        let op = st.next_op();
        let desired: Vec<DesiredStream> = streams.iter().map(|s| s.desired).collect();
        let tracks: Vec<(StreamKind, web_sys::MediaStreamTrack)> = streams
            .iter()
            .map(|s| (s.desired.kind, Clone::clone(&s.shared.track)))
            .collect();
        st.publish.op = op;
        st.publish.streams = streams;
        st.publish.errored = None;
        st.publish.announced = false;
        st.set_publish_state("attempting_publish");
        let token = st.token.clone();
        let weak = Rc::downgrade(self);
        let health_weak = weak.clone();
        spawn_local(async move {
            let result = PublishPeer::start(&claims.whip_url, &token, &tracks, move |health| {
                if let Some(inner) = health_weak.upgrade() {
                    inner.on_publish_health(op, health);
                    inner.flush();
                }
            })
            .await;
            let Some(inner) = weak.upgrade() else { return };
            {
                let mut st = inner.st.borrow_mut();
                if st.publish.op != op {
                    // Superseded (unpublished, republished or left) meanwhile.
                    if let Ok(peer) = result {
                        st.delete_session(peer.location.clone(), Box::new(peer));
                        st.spawn_deletes(None);
                    }
                    return;
                }
                match result {
                    Ok(peer) => {
                        st.publish.peer = Some(peer);
                        st.set_publish_state("published");
                        if let Some(info) = st.self_info() {
                            let objs = st
                                .publish
                                .streams
                                .iter()
                                .map(|s| s.obj.clone())
                                .collect::<Vec<_>>();
                            st.emit(STREAMS_ADDED, vec![info.into(), array(objs)]);
                        }
                        st.publish.announced = true;
                        st.send_mute_state();
                    }
                    Err(e) => {
                        st.publish.op = 0;
                        st.publish.streams.clear();
                        st.publish.errored = Some(desired);
                        st.set_publish_state("errored");
                        st.publish_error(peer_error(ErrorCategory::Publish, e));
                    }
                }
            }
            inner.flush();
        });
    }

    fn on_publish_health(&self, op: u32, health: PeerHealth) {
        let mut st = self.st.borrow_mut();
        if st.publish.op != op || health != PeerHealth::Failed {
            return;
        }
        let desired: Vec<DesiredStream> = st.publish.streams.iter().map(|s| s.desired).collect();
        st.unpublish();
        st.publish.errored = Some(desired);
        st.set_publish_state("errored");
        st.publish_error(StageError::new(
            ErrorCategory::Publish,
            ErrorCode::Failed,
            "the publish connection failed",
        ));
    }

    fn apply_subscription(self: &Rc<Self>, st: &mut St, id: &str, desired: SubscribeKind) {
        let Some(remote) = st.view.get(id) else {
            return;
        };
        let published = remote.published;
        let can_subscribe = st
            .claims
            .as_ref()
            .is_some_and(|c| c.capabilities.allow_subscribe);
        let current = st.subs.get(id).map(|s| s.kind);
        let stale = st.subs.get(id).is_some_and(|s| s.stale);
        match plan_subscription(published, can_subscribe, current, desired, stale) {
            None => {}
            Some(SubscriptionAction::Open(kind)) => self.open_sub(st, id, kind),
            Some(SubscriptionAction::Close) => st.close_sub(id, false),
            Some(SubscriptionAction::Retype { to, .. }) => st.retype_sub(id, to),
            Some(SubscriptionAction::Reopen(kind)) => {
                st.close_sub(id, true);
                self.open_sub(st, id, kind);
            }
        }
    }

    fn open_sub(self: &Rc<Self>, st: &mut St, id: &str, kind: SubscribeKind) {
        let Some(claims) = st.claims.clone() else {
            return;
        };
        let op = st.next_op();
        st.subs.insert(
            id.to_owned(),
            Sub {
                kind,
                peer: None,
                streams: Vec::new(),
                exposed: Vec::new(),
                op,
                stale: false,
                state: "attempting_subscribe",
            },
        );
        st.set_sub_state(id, "attempting_subscribe");
        let token = st.token.clone();
        let id = id.to_owned();
        let weak = Rc::downgrade(self);
        let health_weak = weak.clone();
        let health_id = id.clone();
        spawn_local(async move {
            let result = SubscribePeer::start(&claims.whip_url, &token, &id, move |health| {
                if let Some(inner) = health_weak.upgrade() {
                    inner.on_sub_health(&health_id, op, health);
                    inner.flush();
                }
            })
            .await;
            let Some(inner) = weak.upgrade() else { return };
            {
                let mut st = inner.st.borrow_mut();
                let st = &mut *st;
                let remote = st.view.get(&id).cloned();
                let Some(sub) = st.subs.get_mut(&id).filter(|s| s.op == op) else {
                    if let Ok(peer) = result {
                        st.delete_session(peer.location.clone(), Box::new(peer));
                        st.spawn_deletes(None);
                    }
                    return;
                };
                match result {
                    Ok(peer) => {
                        let (kinds, audio_muted, video_stopped) = match &remote {
                            Some(r) => {
                                let kinds: Vec<StreamKind> = r
                                    .tracks
                                    .iter()
                                    .filter_map(|t| StreamKind::parse(t))
                                    .collect();
                                (kinds, r.audio_muted, r.video_stopped)
                            }
                            None => (Vec::new(), false, false),
                        };
                        // Older servers may not list kinds: assume both.
                        let kinds = if kinds.is_empty() {
                            vec![StreamKind::Audio, StreamKind::Video]
                        } else {
                            kinds
                        };
                        sub.streams = peer
                            .tracks
                            .iter()
                            .filter(|(k, _)| kinds.contains(k))
                            .map(|(k, track)| {
                                let muted = match k {
                                    StreamKind::Audio => audio_muted,
                                    StreamKind::Video => video_stopped,
                                };
                                (*k, remote_stream(*k, track, muted))
                            })
                            .collect();
                        sub.exposed = sub
                            .streams
                            .iter()
                            .map(|(k, _)| *k)
                            .filter(|k| sub.kind.exposes(*k))
                            .collect();
                        sub.peer = Some(peer);
                        sub.state = "subscribed";
                        let objs: Vec<JsValue> = sub
                            .streams
                            .iter()
                            .filter(|(k, _)| sub.exposed.contains(k))
                            .map(|(_, o)| o.into())
                            .collect();
                        st.set_sub_state(&id, "subscribed");
                        if let (Some(info), false) = (st.infos.get(&id).cloned(), objs.is_empty()) {
                            st.emit(STREAMS_ADDED, vec![info.into(), array(objs)]);
                        }
                    }
                    Err(e) => {
                        sub.state = "errored";
                        st.set_sub_state(&id, "errored");
                        let mut e = peer_error(ErrorCategory::Subscribe, e);
                        e.participant_id = Some(id.clone());
                        st.emit(ERROR, vec![stage_error(&e)]);
                    }
                }
            }
            inner.flush();
        });
    }

    fn on_sub_health(&self, id: &str, op: u32, health: PeerHealth) {
        let mut st = self.st.borrow_mut();
        let Some(sub) = st.subs.get_mut(id).filter(|s| s.op == op) else {
            return;
        };
        if health != PeerHealth::Failed || sub.state == "errored" {
            return;
        }
        sub.state = "errored";
        st.set_sub_state(id, "errored");
        let mut e = StageError::new(
            ErrorCategory::Subscribe,
            ErrorCode::Failed,
            "the subscribe connection failed",
        );
        e.participant_id = Some(id.to_owned());
        st.emit(ERROR, vec![stage_error(&e)]);
    }
}
