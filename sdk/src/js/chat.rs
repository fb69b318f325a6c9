//! `ChatRoom` with the API of `amazon-ivs-chat-messaging`: the room's state
//! machine (connect, refresh before expiry, reconnect, disconnect) over
//! [`ChatSocket`], with framing and correlation in [`crate::core::chat`].
//!
//! Connections are numbered; every socket callback carries its number, so
//! callbacks of a socket that was replaced or dropped are ignored.

use super::convert::{set, type_error};
use crate::core::backoff::Backoff;
use crate::core::chat::{
    RequestExt,
    self, ChatError, ChatEvent, ChatMessage, CloseAction, Correlator, DisconnectReason, Notice,
    Output, Request,
};
use crate::web::chat_socket::{ChatSocket, ChatSocketEvent};
use crate::web::timer::Timeout;
use js_sys::{Date, Function, Object, Promise, Reflect};
use std::cell::{Cell, RefCell};
use super::small_map::SmallMap;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{spawn_local, JsFuture};

/// `ConnectionState` of the official client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomState {
    Disconnected,
    Connecting,
    Connected,
}

impl RoomState {
    fn as_str(self) -> &'static str {
        match self {
            RoomState::Disconnected => "disconnected",
            RoomState::Connecting => "connecting",
            RoomState::Connected => "connected",
        }
    }
}

/// An open or opening connection.
struct Conn {
    n: u32,
    socket: ChatSocket,
    /// When this connection's session/token ends (ms since the epoch).
    ends_ms: Option<f64>,
}

struct St {
    state: RoomState,
    corr: Correlator,
    /// Pending requests' `resolve` / `reject`, by request id (a few at a
    /// time: a `BTreeMap` of these cost ~2.5 KB gzip of wasm).
    promises: SmallMap<String, (Function, Function)>,
    /// The connection in use.
    current: Option<Conn>,
    /// A refreshed connection that replaces `current` once open.
    next: Option<Conn>,
    /// Number of the latest connection attempt for each slot; a token that
    /// arrives for an older attempt is dropped.
    current_attempt: u32,
    next_attempt: u32,
    refresh_timer: Option<Timeout>,
    retry_timer: Option<Timeout>,
    request_timer: Option<Timeout>,
    backoff: Backoff,
}

struct Inner {
    url: String,
    token_provider: Function,
    st: RefCell<St>,
    listeners: RefCell<Vec<(u32, String, Function)>>,
    counter: Cell<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Current,
    Next,
}

/// A connection to one IVS-style chat room.
#[wasm_bindgen]
pub struct ChatRoom {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl ChatRoom {
    /// `new ChatRoom({regionOrUrl, tokenProvider})`. `regionOrUrl` is a
    /// `ws://`/`wss://` URL, or an AWS region (the IVS edge endpoint).
    #[wasm_bindgen(constructor)]
    pub fn new(config: JsValue) -> Result<ChatRoom, JsValue> {
        let region = get(&config, "regionOrUrl")
            .as_string()
            .ok_or_else(|| type_error("ChatRoom: regionOrUrl must be a string"))?;
        let token_provider = get(&config, "tokenProvider")
            .dyn_into::<Function>()
            .map_err(|_| type_error("ChatRoom: tokenProvider must be a function"))?;
        let url = if region.starts_with("ws://") || region.starts_with("wss://") {
            region
        } else if !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            format!("wss://edge.ivschat.{region}.amazonaws.com")
        } else {
            return Err(js_sys::Error::new("Region contains invalid characters").into());
        };
        Ok(ChatRoom {
            inner: Rc::new(Inner {
                url,
                token_provider,
                st: RefCell::new(St {
                    state: RoomState::Disconnected,
                    corr: Correlator::default(),
                    promises: SmallMap::default(),
                    current: None,
                    next: None,
                    current_attempt: 0,
                    next_attempt: 0,
                    refresh_timer: None,
                    retry_timer: None,
                    request_timer: None,
                    backoff: chat::default_backoff(),
                }),
                listeners: RefCell::new(Vec::new()),
                counter: Cell::new(0),
            }),
        })
    }

    /// `'disconnected' | 'connecting' | 'connected'`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.inner.st.borrow().state.as_str().to_owned()
    }

    /// Starts connecting with a token from the provider. Throws unless
    /// `disconnected`.
    pub fn connect(&self) -> Result<(), JsValue> {
        let state = self.inner.st.borrow().state;
        if state != RoomState::Disconnected {
            return Err(js_sys::Error::new(&format!(
                "State must be \"disconnected\" but is {}",
                state.as_str()
            ))
            .into());
        }
        self.inner.st.borrow_mut().backoff.reset();
        self.inner.set_state(RoomState::Connecting, None);
        Inner::open(&self.inner, Slot::Current);
        Ok(())
    }

    /// Closes the connection; emits `disconnect` with `'clientDisconnect'`.
    pub fn disconnect(&self) {
        self.inner.finish(DisconnectReason::ClientDisconnect);
    }

    /// Sends a `SendMessageRequest`; resolves with the room's copy of the
    /// message, rejects with a `ChatError`.
    #[wasm_bindgen(js_name = sendMessage)]
    pub fn send_message(&self, request: JsValue) -> Result<Promise, JsValue> {
        let content = get(&request, "content")
            .as_string()
            .ok_or_else(|| type_error("sendMessage: content must be a string"))?;
        let attributes = string_map(&get(&request, "attributes"), "attributes")?;
        self.submit(Request::SendMessage {
            request_id: request_id_of(&request),
            content,
            attributes,
        })
    }

    /// Sends a `DeleteMessageRequest`; resolves with the `DeleteMessageEvent`.
    #[wasm_bindgen(js_name = deleteMessage)]
    pub fn delete_message(&self, request: JsValue) -> Result<Promise, JsValue> {
        let id = get(&request, "id")
            .as_string()
            .ok_or_else(|| type_error("deleteMessage: id must be a string"))?;
        self.submit(Request::DeleteMessage {
            request_id: request_id_of(&request),
            id,
            reason: get(&request, "reason").as_string(),
        })
    }

    /// Sends a `DisconnectUserRequest`; resolves with the `DisconnectUserEvent`.
    #[wasm_bindgen(js_name = disconnectUser)]
    pub fn disconnect_user(&self, request: JsValue) -> Result<Promise, JsValue> {
        let user_id = get(&request, "userId")
            .as_string()
            .ok_or_else(|| type_error("disconnectUser: userId must be a string"))?;
        self.submit(Request::DisconnectUser {
            request_id: request_id_of(&request),
            user_id,
            reason: get(&request, "reason").as_string(),
        })
    }

    /// Adds a listener; returns a function that removes it.
    #[wasm_bindgen(js_name = addListener)]
    pub fn add_listener(&self, event: JsValue, listener: JsValue) -> Result<Function, JsValue> {
        let event = event
            .as_string()
            .ok_or_else(|| type_error("event name must be a string"))?;
        let listener = listener
            .dyn_into::<Function>()
            .map_err(|_| type_error("listener must be a function"))?;
        let id = self.inner.counter.get().wrapping_add(1);
        self.inner.counter.set(id);
        self.inner
            .listeners
            .borrow_mut()
            .push((id, event, listener));
        let weak = Rc::downgrade(&self.inner);
        let remove = Closure::<dyn FnMut()>::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner.listeners.borrow_mut().retain(|(i, ..)| *i != id);
            }
        });
        Ok(remove.into_js_value().unchecked_into())
    }

    /// Removes a listener added with `addListener`.
    #[wasm_bindgen(js_name = removeListener)]
    pub fn remove_listener(&self, event: JsValue, listener: JsValue) {
        let mut listeners = self.inner.listeners.borrow_mut();
        if let Some(i) = listeners
            .iter()
            .position(|(_, e, f)| JsValue::from_str(e) == event && JsValue::from(f) == listener)
        {
            listeners.remove(i);
        }
    }
}

impl ChatRoom {
    /// For Rust callers (e.g. a Leptos app): like `new ChatRoom({regionOrUrl,
    /// tokenProvider})` with an async Rust provider. It resolves to the
    /// CreateChatToken object `{token, sessionExpirationTime?,
    /// tokenExpirationTime?}` (e.g. `js_sys::JSON::parse` of the backend's
    /// answer). Listeners are added with [`ChatRoom::add_listener`] and
    /// requests built with [`SendMessageRequest::new`] etc. (`.into()`).
    pub fn with_token_provider<F, Fut>(
        region_or_url: &str,
        token_provider: F,
    ) -> Result<ChatRoom, JsValue>
    where
        F: Fn() -> Fut + 'static,
        Fut: std::future::Future<Output = Result<JsValue, JsValue>> + 'static,
    {
        let provider = Closure::<dyn Fn() -> Promise>::new(move || {
            wasm_bindgen_futures::future_to_promise(token_provider())
        });
        let config = Object::new();
        set(&config, "regionOrUrl", region_or_url);
        set(&config, "tokenProvider", provider.into_js_value());
        ChatRoom::new(config.into())
    }
}

impl ChatRoom {
    fn submit(&self, request: Request) -> Result<Promise, JsValue> {
        let inner = &self.inner;
        {
            let mut st = inner.st.borrow_mut();
            let St {
                state,
                corr,
                current,
                ..
            } = &mut *st;
            if *state != RoomState::Connected {
                return Err(js_sys::Error::new("Room is not connected").into());
            }
            if corr.is_pending(request.request_id()) {
                return Err(js_sys::Error::new("Duplicate request id").into());
            }
            let sent = current
                .as_ref()
                .is_some_and(|c| c.socket.send(&request.to_json()));
            if !sent {
                return Err(js_sys::Error::new("Room is not connected").into());
            }
            if corr.submit(&request, Date::now()).is_err() {
                return Err(js_sys::Error::new("Duplicate request id").into());
            }
        }
        let mut slot = None;
        let promise = Promise::new(&mut |resolve, reject| slot = Some((resolve, reject)));
        if let Some(handlers) = slot {
            inner
                .st
                .borrow_mut()
                .promises
                .insert(request.request_id().to_owned(), handlers);
        }
        Inner::arm_request_timer(inner);
        Ok(promise)
    }
}

impl Drop for ChatRoom {
    fn drop(&mut self) {
        let mut st = self.inner.st.borrow_mut();
        st.current = None;
        st.next = None;
        st.refresh_timer = None;
        st.retry_timer = None;
        st.request_timer = None;
    }
}

impl Inner {
    fn emit(&self, event: &str, arg: &JsValue) {
        let targets: Vec<Function> = self
            .listeners
            .borrow()
            .iter()
            .filter(|(_, e, _)| e == event)
            .map(|(.., f)| f.clone())
            .collect();
        for f in targets {
            // A throwing listener must not stop the others (as EventEmitter).
            let _ = f.call1(&JsValue::UNDEFINED, arg);
        }
    }

    /// Sets the state and emits its event when it changed.
    fn set_state(&self, state: RoomState, reason: Option<DisconnectReason>) {
        let old = std::mem::replace(&mut self.st.borrow_mut().state, state);
        if old == state {
            return;
        }
        match state {
            RoomState::Connecting => self.emit("connecting", &JsValue::UNDEFINED),
            RoomState::Connected => self.emit("connect", &JsValue::UNDEFINED),
            RoomState::Disconnected => {
                let reason = reason.unwrap_or(DisconnectReason::ServerDisconnect);
                self.emit("disconnect", &JsValue::from_str(reason.as_str()));
            }
        }
    }

    /// Fetches a token, then opens a socket into `slot`.
    fn open(this: &Rc<Inner>, slot: Slot) {
        let attempt = {
            let mut st = this.st.borrow_mut();
            let n = match slot {
                Slot::Current => &mut st.current_attempt,
                Slot::Next => &mut st.next_attempt,
            };
            *n = n.wrapping_add(1);
            *n
        };
        let weak = Rc::downgrade(this);
        spawn_local(async move {
            let Some(provider) = weak.upgrade().map(|i| i.token_provider.clone()) else {
                return;
            };
            let token = fetch_token(&provider).await;
            let Some(this) = weak.upgrade() else {
                return;
            };
            {
                let st = this.st.borrow();
                let latest = match slot {
                    Slot::Current => st.current_attempt,
                    Slot::Next => st.next_attempt,
                };
                if latest != attempt || st.state == RoomState::Disconnected {
                    return;
                }
            }
            let Some((token, ends_ms)) = token else {
                match slot {
                    Slot::Current => this.finish(DisconnectReason::FetchTokenError),
                    // Keep the current connection; it is not over yet.
                    Slot::Next => {}
                }
                return;
            };
            let n = this.counter.get().wrapping_add(1);
            this.counter.set(n);
            let w = Rc::downgrade(&this);
            let socket = ChatSocket::connect(&this.url, &token, move |ev| {
                if let Some(inner) = w.upgrade() {
                    Inner::on_socket(&inner, n, ev);
                }
            });
            match socket {
                Ok(socket) => {
                    let conn = Some(Conn { n, socket, ends_ms });
                    let mut st = this.st.borrow_mut();
                    match slot {
                        Slot::Current => st.current = conn,
                        Slot::Next => st.next = conn,
                    }
                }
                Err(_) if slot == Slot::Current => this.finish(DisconnectReason::SocketError),
                Err(_) => {}
            }
        });
    }

    fn on_socket(this: &Rc<Inner>, n: u32, ev: ChatSocketEvent) {
        let (is_current, is_next) = {
            let st = this.st.borrow();
            (
                st.current.as_ref().is_some_and(|c| c.n == n),
                st.next.as_ref().is_some_and(|c| c.n == n),
            )
        };
        if !is_current && !is_next {
            return;
        }
        match ev {
            ChatSocketEvent::Open => {
                let ends_ms = {
                    let mut st = this.st.borrow_mut();
                    if is_next {
                        // The refreshed connection takes over; the old one closes.
                        st.current = st.next.take();
                    }
                    st.backoff.reset();
                    st.retry_timer = None;
                    st.current.as_ref().and_then(|c| c.ends_ms)
                };
                Inner::schedule_refresh(this, ends_ms);
                this.set_state(RoomState::Connected, None);
            }
            ChatSocketEvent::Text(text) => {
                let outputs = this.st.borrow_mut().corr.on_text(&text);
                for output in outputs {
                    Inner::apply(this, output);
                }
            }
            ChatSocketEvent::Closed { was_open, clean } => {
                if is_next {
                    this.st.borrow_mut().next = None;
                    return;
                }
                let action = {
                    let mut st = this.st.borrow_mut();
                    st.current = None;
                    chat::on_close(was_open, clean, &mut st.backoff, js_sys::Math::random())
                };
                match action {
                    CloseAction::Disconnect(reason) => this.finish(reason),
                    CloseAction::Reconnect => Inner::reconnect(this),
                    CloseAction::Retry { delay_ms } => {
                        let w = Rc::downgrade(this);
                        let timer = Timeout::new(delay_ms, move || {
                            if let Some(inner) = w.upgrade() {
                                Inner::open(&inner, Slot::Current);
                            }
                        });
                        this.st.borrow_mut().retry_timer = Some(timer);
                    }
                }
            }
        }
    }

    fn apply(this: &Rc<Inner>, output: Output) {
        match output {
            Output::Emit(notice) => {
                let (name, value) = notice_js(&notice);
                this.emit(name, &value);
            }
            Output::Resolve { request_id, value } => {
                let handlers = this.st.borrow_mut().promises.remove(&request_id);
                if let Some((resolve, _)) = handlers {
                    let _ = resolve.call1(&JsValue::UNDEFINED, &notice_js(&value).1);
                }
            }
            Output::Reject { request_id, error } => this.reject(&request_id, &error),
            Output::Reconnect => Inner::reconnect(this),
        }
    }

    fn reject(&self, request_id: &str, error: &ChatError) {
        let handlers = self.st.borrow_mut().promises.remove(request_id);
        if let Some((_, reject)) = handlers {
            let _ = reject.call1(&JsValue::UNDEFINED, &chat_error_js(error));
        }
    }

    /// The connection expired or broke: start over with a fresh token.
    fn reconnect(this: &Rc<Inner>) {
        {
            let mut st = this.st.borrow_mut();
            if st.state == RoomState::Disconnected {
                return;
            }
            st.current = None;
            st.next = None;
            st.refresh_timer = None;
        }
        this.set_state(RoomState::Connecting, None);
        Inner::open(this, Slot::Current);
    }

    /// Final disconnect: drops everything, rejects what is pending, emits
    /// `disconnect` (once).
    fn finish(&self, reason: DisconnectReason) {
        let failed = {
            let mut st = self.st.borrow_mut();
            st.current = None;
            st.next = None;
            st.refresh_timer = None;
            st.retry_timer = None;
            st.request_timer = None;
            st.current_attempt = st.current_attempt.wrapping_add(1);
            st.next_attempt = st.next_attempt.wrapping_add(1);
            st.corr
                .fail_all(&format!("the room disconnected ({})", reason.as_str()))
        };
        for (request_id, error) in failed {
            self.reject(&request_id, &error);
        }
        self.set_state(RoomState::Disconnected, Some(reason));
    }

    /// Opens the replacement connection ahead of the session's end.
    fn schedule_refresh(this: &Rc<Inner>, ends_ms: Option<f64>) {
        let timer = ends_ms.map(|end| {
            let delay = chat::refresh_delay_ms(end, Date::now());
            let w = Rc::downgrade(this);
            Timeout::new(delay.clamp(0.0, f64::from(u32::MAX)) as u32, move || {
                if let Some(inner) = w.upgrade() {
                    if inner.st.borrow().state == RoomState::Connected {
                        Inner::open(&inner, Slot::Next);
                    }
                }
            })
        });
        this.st.borrow_mut().refresh_timer = timer;
    }

    fn arm_request_timer(this: &Rc<Inner>) {
        let deadline = this.st.borrow().corr.next_deadline();
        let timer = deadline.map(|d| {
            let w: Weak<Inner> = Rc::downgrade(this);
            Timeout::new(
                (d - Date::now()).clamp(0.0, 3_600_000.0) as u32 + 1,
                move || {
                    if let Some(inner) = w.upgrade() {
                        let expired = inner.st.borrow_mut().corr.expire(Date::now());
                        for (request_id, error) in expired {
                            inner.reject(&request_id, &error);
                        }
                        Inner::arm_request_timer(&inner);
                    }
                },
            )
        });
        this.st.borrow_mut().request_timer = timer;
    }
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn request_id_of(request: &JsValue) -> String {
    get(request, "requestId")
        .as_string()
        .unwrap_or_else(new_request_id)
}

fn new_request_id() -> String {
    let r = || (js_sys::Math::random() * 4_294_967_296.0) as u32;
    chat::request_id_from([r(), r(), r(), r()])
}

/// An optional object of string values.
fn string_map(v: &JsValue, what: &str) -> Result<Option<chat::Attributes>, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    let entries = Object::entries(
        v.dyn_ref::<Object>()
            .ok_or_else(|| type_error(&format!("{what} must be an object")))?,
    );
    let mut map = chat::Attributes::new();
    for entry in entries.iter() {
        let pair: js_sys::Array = entry.unchecked_into();
        match (pair.get(0).as_string(), pair.get(1).as_string()) {
            (Some(k), Some(v)) => map.insert(k, v),
            _ => return Err(type_error(&format!("{what} values must be strings"))),
        };
    }
    Ok(Some(map))
}

/// A `Date` or ISO 8601 string → ms since the epoch.
fn time_ms(v: &JsValue) -> Option<f64> {
    let ms = if let Some(s) = v.as_string() {
        Date::parse(&s)
    } else if let Some(d) = v.dyn_ref::<Date>() {
        d.get_time()
    } else {
        return None;
    };
    (!ms.is_nan()).then_some(ms)
}

/// Calls the provider; `(token, session end)` or `None` on any failure.
async fn fetch_token(provider: &Function) -> Option<(String, Option<f64>)> {
    let value = provider.call0(&JsValue::UNDEFINED).ok()?;
    let value = JsFuture::from(Promise::resolve(&value)).await.ok()?;
    let token = get(&value, "token").as_string()?;
    let ends = chat::session_end_ms(
        time_ms(&get(&value, "sessionExpirationTime")),
        time_ms(&get(&value, "tokenExpirationTime")),
    );
    Some((token, ends))
}

fn attributes_js(map: &chat::Attributes) -> Object {
    let o = Object::new();
    for (k, v) in map {
        set(&o, k, v.as_str());
    }
    o
}

fn set_request_id(o: &Object, request_id: &Option<String>) {
    if let Some(r) = request_id {
        set(o, "requestId", r.as_str());
    }
}

fn message_js(m: &ChatMessage) -> Object {
    let o = Object::new();
    set(&o, "id", m.id.as_str());
    set_request_id(&o, &m.request_id);
    set(&o, "content", m.content.as_str());
    set(&o, "attributes", attributes_js(&m.attributes));
    set(&o, "sendTime", Date::new(&JsValue::from_str(&m.send_time)));
    let sender = Object::new();
    set(&sender, "userId", m.sender.user_id.as_str());
    set(&sender, "attributes", attributes_js(&m.sender.attributes));
    set(&o, "sender", sender);
    o
}

fn event_js(e: &ChatEvent) -> Object {
    let o = Object::new();
    set(&o, "id", e.id.as_str());
    set_request_id(&o, &e.request_id);
    set(&o, "eventName", e.event_name.as_str());
    set(&o, "attributes", attributes_js(&e.attributes));
    set(&o, "sendTime", Date::new(&JsValue::from_str(&e.send_time)));
    o
}

/// The listener event name and payload of a notice.
fn notice_js(n: &Notice) -> (&'static str, JsValue) {
    match n {
        Notice::Message(m) => ("message", message_js(m).into()),
        Notice::Event(e) => ("event", event_js(e).into()),
        Notice::MessageDelete {
            event,
            message_id,
            reason,
        } => {
            let o = event_js(event);
            set(&o, "messageId", message_id.as_str());
            if let Some(r) = reason {
                set(&o, "reason", r.as_str());
            }
            ("messageDelete", o.into())
        }
        Notice::UserDisconnect {
            event,
            user_id,
            reason,
        } => {
            let o = event_js(event);
            set(&o, "userId", user_id.as_str());
            if let Some(r) = reason {
                set(&o, "reason", r.as_str());
            }
            ("userDisconnect", o.into())
        }
    }
}

/// A `ChatError`: an `Error` named "ChatError" with the official fields
/// `{id, errorCode, errorMessage, requestId}`.
fn chat_error_js(e: &ChatError) -> JsValue {
    let err = js_sys::Error::new(&e.error_message);
    err.set_name("ChatError");
    set(&err, "id", e.id.as_str());
    set(&err, "errorCode", e.error_code as f64);
    set(&err, "errorMessage", e.error_message.as_str());
    set_request_id(&err, &e.request_id);
    err.into()
}

/// `new SendMessageRequest(content, attributes?)`.
#[wasm_bindgen(getter_with_clone)]
pub struct SendMessageRequest {
    #[wasm_bindgen(readonly)]
    pub action: String,
    #[wasm_bindgen(readonly, js_name = requestId)]
    pub request_id: String,
    #[wasm_bindgen(readonly)]
    pub content: String,
    #[wasm_bindgen(readonly)]
    pub attributes: JsValue,
}

#[wasm_bindgen]
impl SendMessageRequest {
    #[wasm_bindgen(constructor)]
    pub fn new(content: String, attributes: JsValue) -> SendMessageRequest {
        SendMessageRequest {
            action: "SEND_MESSAGE".into(),
            request_id: new_request_id(),
            content,
            attributes,
        }
    }
}

/// `new DeleteMessageRequest(id, reason?)`.
#[wasm_bindgen(getter_with_clone)]
pub struct DeleteMessageRequest {
    #[wasm_bindgen(readonly)]
    pub action: String,
    #[wasm_bindgen(readonly, js_name = requestId)]
    pub request_id: String,
    #[wasm_bindgen(readonly)]
    pub id: String,
    #[wasm_bindgen(readonly)]
    pub reason: Option<String>,
}

#[wasm_bindgen]
impl DeleteMessageRequest {
    #[wasm_bindgen(constructor)]
    pub fn new(id: String, reason: Option<String>) -> DeleteMessageRequest {
        DeleteMessageRequest {
            action: "DELETE_MESSAGE".into(),
            request_id: new_request_id(),
            id,
            reason,
        }
    }
}

/// `new DisconnectUserRequest(userId, reason?)`.
#[wasm_bindgen(getter_with_clone)]
pub struct DisconnectUserRequest {
    #[wasm_bindgen(readonly)]
    pub action: String,
    #[wasm_bindgen(readonly, js_name = requestId)]
    pub request_id: String,
    #[wasm_bindgen(readonly, js_name = userId)]
    pub user_id: String,
    #[wasm_bindgen(readonly)]
    pub reason: Option<String>,
}

#[wasm_bindgen]
impl DisconnectUserRequest {
    #[wasm_bindgen(constructor)]
    pub fn new(user_id: String, reason: Option<String>) -> DisconnectUserRequest {
        DisconnectUserRequest {
            action: "DISCONNECT_USER".into(),
            request_id: new_request_id(),
            user_id,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::*;

    wasm_bindgen_test_configure!(run_in_browser);

    fn config(url: &str, provider: &str) -> JsValue {
        let c = Object::new();
        set(&c, "regionOrUrl", url);
        set(&c, "tokenProvider", Function::new_no_args(provider));
        c.into()
    }

    async fn sleep(ms: i32) {
        let p = Promise::new(&mut |resolve, _| {
            let _ = web_sys::window()
                .expect("test runs in a window")
                .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        });
        let _ = JsFuture::from(p).await;
    }

    /// Records the events of `room` as "name" or "name:arg".
    fn record(room: &ChatRoom, names: &[&str]) -> (Rc<RefCell<Vec<String>>>, Vec<Function>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut offs = Vec::new();
        for name in names {
            let (log, name_s) = (log.clone(), (*name).to_owned());
            let f = Closure::<dyn FnMut(JsValue)>::new(move |arg: JsValue| {
                let entry = match arg.as_string() {
                    Some(a) => format!("{name_s}:{a}"),
                    None => name_s.clone(),
                };
                log.borrow_mut().push(entry);
            })
            .into_js_value();
            offs.push(
                room.add_listener(JsValue::from_str(name), f)
                    .expect("valid listener"),
            );
        }
        (log, offs)
    }

    #[wasm_bindgen_test]
    fn config_is_validated() {
        assert!(ChatRoom::new(JsValue::UNDEFINED).is_err());
        assert!(ChatRoom::new(config("bad region!", "return {}")).is_err());
        let no_provider = Object::new();
        set(&no_provider, "regionOrUrl", "us-west-2");
        assert!(ChatRoom::new(no_provider.into()).is_err());
        let room = ChatRoom::new(config("us-west-2", "return {}")).expect("region accepted");
        assert_eq!(room.inner.url, "wss://edge.ivschat.us-west-2.amazonaws.com");
        assert_eq!(room.state(), "disconnected");
        let msg = SendMessageRequest::new("hi".into(), JsValue::UNDEFINED);
        assert!(room.send_message(msg.into()).is_err(), "not connected");
        assert!(room.send_message(JsValue::NULL).is_err(), "no content");
    }

    #[wasm_bindgen_test]
    async fn token_provider_failure_is_fetch_token_error() {
        let room = ChatRoom::new(config(
            "ws://127.0.0.1:9/",
            "return Promise.reject(new Error('no token'))",
        ))
        .expect("valid config");
        let (log, offs) = record(&room, &["connecting", "connect", "disconnect"]);
        room.connect().expect("starts");
        assert!(room.connect().is_err(), "already connecting");
        sleep(50).await;
        assert_eq!(*log.borrow(), ["connecting", "disconnect:fetchTokenError"]);
        assert_eq!(room.state(), "disconnected");
        // Unsubscribed listeners hear nothing more.
        for off in offs {
            let _ = off.call0(&JsValue::UNDEFINED);
        }
        room.connect().expect("starts again");
        sleep(50).await;
        assert_eq!(log.borrow().len(), 2);
    }

    #[wasm_bindgen_test]
    async fn unreachable_server_gives_up_with_socket_error() {
        let room = ChatRoom::new(config("ws://127.0.0.1:9/", "return {token: 't'}"))
            .expect("valid config");
        let (log, _offs) = record(&room, &["connecting", "connect", "disconnect"]);
        room.connect().expect("starts");
        // Three retries: at most 0.5 + 1 + 2 s of backoff.
        for _ in 0..60 {
            if room.state() == "disconnected" {
                break;
            }
            sleep(100).await;
        }
        assert_eq!(*log.borrow(), ["connecting", "disconnect:socketError"]);
    }

    #[wasm_bindgen_test]
    async fn rust_token_provider() {
        let room = ChatRoom::with_token_provider("ws://127.0.0.1:9/", || async {
            Err(JsValue::from_str("backend down"))
        })
        .expect("valid config");
        let (log, _offs) = record(&room, &["connecting", "disconnect"]);
        room.connect().expect("starts");
        sleep(50).await;
        assert_eq!(*log.borrow(), ["connecting", "disconnect:fetchTokenError"]);
    }

    #[wasm_bindgen_test]
    fn client_disconnect_while_connecting() {
        let room = ChatRoom::new(config("ws://127.0.0.1:9/", "return new Promise(() => {})"))
            .expect("valid config");
        let (log, _offs) = record(&room, &["connecting", "disconnect"]);
        room.connect().expect("starts");
        room.disconnect();
        room.disconnect();
        assert_eq!(*log.borrow(), ["connecting", "disconnect:clientDisconnect"]);
    }
}
