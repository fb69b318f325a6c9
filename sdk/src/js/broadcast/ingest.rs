//! `startBroadcast()` / `stopBroadcast()`: carries out what the sans-IO
//! [`Ingest`] decides (connections, DELETEs, one timer) and reports its
//! states and errors as the client's events.

use super::{client_error, reject, Inner, St, ACTIVE_STATE_CHANGE, CLIENT_ERROR, CONNECTION_STATE_CHANGE};
use crate::core::broadcast::{check_stream_key, BroadcastError, BroadcastErrorCode as Code};
use crate::core::ingest::{BroadcastState, Ingest, IngestAction, ReconnectConfig};
use crate::core::HttpFailure;
use crate::web::http;
use crate::web::ingest::{ice_servers, IngestPeer};
use crate::web::now_ms;
use crate::web::timer::Timeout;
use js_sys::{Function, Promise};
use std::rc::Rc;
use crate::js::small_map::SmallMap;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;

/// The broadcast's connection to the channel.
pub(super) struct Broadcast {
    pub ingest: Ingest,
    /// Connections by the `op` the ingest named them.
    pub peers: SmallMap<u32, IngestPeer>,
    /// The session of the last connection dropped while reconnecting: the
    /// server may still hold the broadcast for it, so ending the broadcast
    /// DELETEs it too (the server ignores it once a newer session exists).
    lost: Option<String>,
    url: String,
    stream_key: String,
    /// `resolve` / `reject` of a pending `startBroadcast()`.
    start: Option<(Function, Function)>,
    timer: Option<(f64, Timeout)>,
}

impl Broadcast {
    pub fn new(config: ReconnectConfig) -> Broadcast {
        Broadcast {
            ingest: Ingest::new(config, js_sys::Math::random()),
            peers: SmallMap::default(),
            lost: None,
            url: String::new(),
            stream_key: String::new(),
            start: None,
            timer: None,
        }
    }

    /// The WHIP session resource of the live connection, if any.
    pub fn location(&self) -> Option<&str> {
        self.peers.values().find_map(|p| p.location.as_deref())
    }
}

/// The WHIP URL for an ingest endpoint: a full URL is used as is, a bare
/// host (as IVS gives) gets `https://`.
fn whip_url(endpoint: &str) -> String {
    if endpoint.starts_with("http:") || endpoint.starts_with("https:") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    }
}

/// DELETEs the WHIP session, then closes the peer connection (closing it
/// first could make the server drop the session and answer 404).
fn spawn_delete(peer: IngestPeer, key: String) {
    spawn_local(async move {
        if let Some(url) = &peer.location {
            let _ = http::delete(url, &key).await;
        }
        drop(peer);
    });
}

impl Inner {
    pub(super) fn start_broadcast(self: &Rc<Self>, key: String, endpoint: Option<String>) -> Promise {
        let mut st = self.st.borrow_mut();
        if let Err(e) = Self::alive(&st) {
            return reject(&e);
        }
        if let Err(e) = check_stream_key(&key) {
            return reject(&e);
        }
        let Some(endpoint) = endpoint.filter(|e| !e.is_empty()).or_else(|| st.ingest_endpoint.clone()) else {
            return reject(&BroadcastError::new(
                Code::IngestEndpoint,
                "no ingestEndpoint given to create() or startBroadcast()",
            ));
        };
        if st.broadcast.ingest.busy() {
            return reject(&BroadcastError::new(Code::Broadcast, "already broadcasting"));
        }
        let mut slot = None;
        let promise = Promise::new(&mut |resolve, reject| slot = Some((resolve, reject)));
        st.broadcast.start = slot;
        st.broadcast.url = whip_url(&endpoint);
        st.broadcast.stream_key = key;
        if let Some(m) = &st.mixer {
            m.resume();
        }
        drop(st);
        self.drive(|ingest, now| ingest.start(now));
        promise
    }

    pub(super) fn stop_broadcast(self: &Rc<Self>) {
        self.drive(|ingest, _| ingest.stop());
    }

    /// Runs `f` on the ingest, then carries out its actions.
    fn drive(self: &Rc<Self>, f: impl FnOnce(&mut Ingest, f64)) {
        let actions = {
            let mut st = self.st.borrow_mut();
            f(&mut st.broadcast.ingest, now_ms());
            st.broadcast.ingest.take_actions()
        };
        for action in actions {
            self.apply(action);
        }
        self.arm_timer();
    }

    fn arm_timer(self: &Rc<Self>) {
        let mut st = self.st.borrow_mut();
        let due = st.broadcast.ingest.poll_timeout();
        if st.broadcast.timer.as_ref().map(|(t, _)| *t) == due {
            return;
        }
        st.broadcast.timer = due.map(|due| {
            let weak = Rc::downgrade(self);
            let delay = (due - now_ms()).clamp(0.0, f64::from(u32::MAX));
            let timer = Timeout::new(delay.ceil() as u32, move || {
                if let Some(inner) = weak.upgrade() {
                    inner.st.borrow_mut().broadcast.timer = None;
                    inner.drive(|ingest, now| ingest.tick(now));
                }
            });
            (due, timer)
        });
    }

    fn apply(self: &Rc<Self>, action: IngestAction) {
        match action {
            IngestAction::Open(op) => self.open(op),
            IngestAction::Close(op) => {
                let mut st = self.st.borrow_mut();
                if let Some(peer) = st.broadcast.peers.remove(&op) {
                    spawn_delete(peer, st.broadcast.stream_key.clone());
                }
            }
            IngestAction::Drop(op) => {
                let mut st = self.st.borrow_mut();
                if let Some(location) = st.broadcast.peers.remove(&op).and_then(|p| p.location) {
                    st.broadcast.lost = Some(location);
                }
            }
            IngestAction::Resolve => {
                if let Some((resolve, _)) = self.st.borrow_mut().broadcast.start.take() {
                    let _ = resolve.call0(&JsValue::UNDEFINED);
                }
            }
            IngestAction::Reject(e) => {
                if let Some((_, reject)) = self.st.borrow_mut().broadcast.start.take() {
                    let _ = reject.call1(&JsValue::UNDEFINED, &client_error(&e));
                }
            }
            IngestAction::State(s) => {
                if matches!(s, BroadcastState::Closed | BroadcastState::Failed) {
                    Self::delete_lost(&mut self.st.borrow_mut());
                }
                self.emit(CONNECTION_STATE_CHANGE, s.as_str().into())
            }
            IngestAction::Active(a) => self.emit(ACTIVE_STATE_CHANGE, a.into()),
            IngestAction::Error(e) => self.emit(CLIENT_ERROR, client_error(&e)),
        }
    }

    /// A new connection `op`: ICE servers from `OPTIONS`, then the offer.
    fn open(self: &Rc<Self>, op: u32) {
        let st = self.st.borrow();
        let (url, key, config) = (st.broadcast.url.clone(), st.broadcast.stream_key.clone(), st.config);
        let encodings = st.encodings.clone();
        let video = Clone::clone(st.compositor.track());
        let audio = st.mixer.as_ref().and_then(|m| m.track());
        drop(st);
        let weak = Rc::downgrade(self);
        let state_weak = weak.clone();
        spawn_local(async move {
            let ice = ice_servers(&url, &key).await;
            let on_state = move |state| {
                if let Some(inner) = state_weak.upgrade() {
                    inner.drive(|ingest, now| ingest.peer_state(op, state, now));
                }
            };
            let result = IngestPeer::start(&url, &key, &video, audio.as_ref(), &config, &encodings, &ice, on_state).await;
            let Some(inner) = weak.upgrade() else { return };
            let result = result.map_err(HttpFailure::from).map(|peer| {
                inner.st.borrow_mut().broadcast.peers.insert(op, peer);
            });
            inner.drive(|ingest, now| ingest.answered(op, result, now));
        });
    }

    /// Ends the broadcast without events (the client is being deleted).
    pub(super) fn end_broadcast(st: &mut St) {
        st.broadcast.timer = None;
        let key = st.broadcast.stream_key.clone();
        for (_, peer) in st.broadcast.peers.drain() {
            spawn_delete(peer, key.clone());
        }
        Self::delete_lost(st);
    }

    fn delete_lost(st: &mut St) {
        if let Some(url) = st.broadcast.lost.take() {
            let key = st.broadcast.stream_key.clone();
            spawn_local(async move {
                let _ = http::delete(&url, &key).await;
            });
        }
    }
}
