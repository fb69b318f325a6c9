//! The chat panel: the group's room through the SDK's Rust [`ChatRoom`].
//!
//! The page reads the room at once with a view-only token (the server sends
//! the room's recent messages on connect, so a late joiner or a reload sees
//! them); picking a name swaps in a token that may send. Tokens come from
//! `/api/chat-token`, which signs the viewer's role into them and derives
//! the chat id of a viewer who sends from a random secret kept in
//! `localStorage` (so the id survives reloads and nobody else can take it).
//! The reading token asks for no stable id: a fresh one per page load, so
//! the server, which replays history once per user, always replays it here
//! (even while another tab of the same viewer is open). Messages from the host
//! and the guests on stage carry a badge from that signed role, so a viewer
//! who calls themselves by the host's name is still told apart. Deletes and
//! kicks by a moderator arrive as `messageDelete` / `userDisconnect` events.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use send_wrapper::SendWrapper;
use stagecast_sdk::{ChatRoom, SendMessageRequest};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::api::{self, get, get_str, js_error_text};

/// Where the viewer's secret lives (the chat id is derived from it).
const SECRET_KEY: &str = "stagecast.viewerSecret";
/// The name the viewer chatted under last time (pre-filled).
const NAME_KEY: &str = "stagecast.chatName";

/// One chat message as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    id: String,
    sender: String,
    name: String,
    /// `host`, `guest`, `viewer`, or empty: from the sender's signed token.
    role: String,
    content: String,
}

/// The badge a role earns (viewers get none).
fn role_badge(role: &str) -> Option<&'static str> {
    match role {
        "host" => Some("Host"),
        "guest" => Some("Guest"),
        _ => None,
    }
}

/// Where the panel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opening the read-only connection.
    Connecting,
    /// Reading (view-only); the name form is shown.
    Reading,
    /// Getting a token that may send.
    Joining,
    /// May send.
    Connected,
    Disconnected,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Reading => "reading",
            Phase::Joining => "joining",
            Phase::Connected => "connected",
            Phase::Disconnected => "disconnected",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Phase::Connecting => "· connecting…",
            Phase::Reading => "· reading",
            Phase::Joining => "· joining…",
            Phase::Connected => "· connected",
            Phase::Disconnected => "· disconnected",
        }
    }
}

/// The room, and which connection attempt is current (events of replaced
/// rooms are ignored).
#[derive(Default)]
struct Held {
    room: RefCell<Option<ChatRoom>>,
    generation: Cell<u64>,
}

type Shared = SendWrapper<Rc<Held>>;

fn storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}

/// `n` random bytes as hex, from `crypto.getRandomValues` (any context).
fn random_hex(n: u32) -> String {
    let bytes = js_sys::Uint8Array::new_with_length(n);
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).unwrap_or_default();
    if let Ok(f) = js_sys::Reflect::get(&crypto, &JsValue::from_str("getRandomValues")) {
        if let Some(f) = f.dyn_ref::<js_sys::Function>() {
            let _ = f.call1(&crypto, &bytes);
        }
    }
    bytes.to_vec().iter().map(|b| format!("{b:02x}")).collect()
}

/// This browser's viewer secret, made on first use.
fn viewer_secret() -> String {
    let store = storage();
    if let Some(s) = store.as_ref().and_then(|s| s.get_item(SECRET_KEY).ok().flatten()) {
        if (16..=256).contains(&s.len()) {
            return s;
        }
    }
    let secret = random_hex(24);
    if let Some(s) = store {
        let _ = s.set_item(SECRET_KEY, &secret);
    }
    secret
}

fn view_only() -> bool {
    let search = window().location().search().unwrap_or_default();
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()
        .and_then(|p| p.get("viewOnly"))
        .is_some_and(|v| v == "1" || v == "true")
}

fn json_string(s: &str) -> String {
    js_sys::JSON::stringify(&JsValue::from_str(s))
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| "\"\"".into())
}

#[derive(Clone, Copy)]
struct Signals {
    phase: WriteSignal<Phase>,
    lines: WriteSignal<Vec<Line>>,
    notice: WriteSignal<Option<String>>,
    error: WriteSignal<Option<String>>,
}

fn listen(room: &ChatRoom, event: &str, f: impl FnMut(JsValue) + 'static) {
    let closure = Closure::<dyn FnMut(JsValue)>::new(f).into_js_value();
    if let Err(e) = room.add_listener(JsValue::from_str(event), closure) {
        leptos::logging::error!("chat: cannot listen to {event}: {}", js_error_text(&e));
    }
}

fn line_of(m: &JsValue) -> Line {
    let sender = get(m, "sender");
    let attributes = get(&sender, "attributes");
    Line {
        id: get_str(m, "id").unwrap_or_default(),
        sender: get_str(&sender, "userId").unwrap_or_default(),
        name: get_str(&attributes, "username").unwrap_or_default(),
        role: get_str(&attributes, "role").unwrap_or_default(),
        content: get_str(m, "content").unwrap_or_default(),
    }
}

/// Open the room: read-only when `name` is `None`, able to send (unless
/// the page was opened with `?viewOnly=1`) when it is `Some`. Replaces the
/// connection held so far.
fn connect(held: Shared, sig: Signals, group_id: String, secret: String, name: Option<String>) {
    let generation = held.generation.get() + 1;
    held.generation.set(generation);
    let current = {
        let held = held.clone();
        move || held.generation.get() == generation
    };
    let reading = name.is_none();
    sig.phase.set(if reading { Phase::Connecting } else { Phase::Joining });
    sig.error.set(None);
    sig.notice.set(None);
    let secret = if reading { String::new() } else { format!("\"viewerSecret\":{},", json_string(&secret)) };
    let body = format!(
        "{{\"groupId\":{},{secret}\"attributes\":{{\"username\":{}}},\"viewOnly\":{}}}",
        json_string(&group_id),
        json_string(name.as_deref().unwrap_or("")),
        reading || view_only()
    );
    // Where to go back to when this attempt fails.
    let fallback = move |held: &Shared| {
        if !reading && held.room.borrow().is_some() {
            Phase::Reading
        } else {
            Phase::Disconnected
        }
    };
    spawn_local(async move {
        // Asked once here for the endpoint and our id (and to fail early with
        // the backend's message), then by the provider for every connection.
        let failed = |e: String| {
            if current() {
                sig.error.set(Some(format!("Cannot {} the chat: {e}", if reading { "read" } else { "join" })));
                sig.phase.set(fallback(&held));
            }
        };
        let first = match api::post_json("/api/chat-token", Some(&body)).await {
            Ok(v) => v,
            Err(e) => return failed(e),
        };
        let (Some(endpoint), Some(me)) = (get_str(&first, "endpoint"), get_str(&first, "userId")) else {
            return failed("the token answer has no endpoint or userId".to_owned());
        };
        let cached = Rc::new(RefCell::new(Some(first)));
        let provider = move || {
            let cached = cached.clone();
            let body = body.clone();
            async move {
                if let Some(first) = cached.borrow_mut().take() {
                    return Ok(first);
                }
                api::post_json("/api/chat-token", Some(&body))
                    .await
                    .map_err(|e| JsValue::from(js_sys::Error::new(&e)))
            }
        };
        let room = match ChatRoom::with_token_provider(&endpoint, provider) {
            Ok(r) => r,
            Err(e) => return failed(js_error_text(&e)),
        };
        let kicked = Rc::new(Cell::new(false));
        let is_current = current.clone();
        listen(&room, "connect", move |_| {
            if is_current() {
                sig.phase.set(if reading { Phase::Reading } else { Phase::Connected });
                sig.notice.set(None);
            }
        });
        let (k, is_current) = (kicked.clone(), current.clone());
        listen(&room, "disconnect", move |reason| {
            if !is_current() {
                return;
            }
            sig.phase.set(Phase::Disconnected);
            let reason = reason.as_string().unwrap_or_default();
            if !k.get() && reason != "clientDisconnect" {
                sig.notice.set(Some(format!("You were disconnected from the chat ({reason}).")));
            }
        });
        listen(&room, "message", move |m| {
            let line = line_of(&m);
            sig.lines.update(|lines| {
                // History is sent again on every connection: show each message once.
                if !lines.iter().any(|l| l.id == line.id) {
                    lines.push(line);
                }
            });
        });
        listen(&room, "messageDelete", move |e| {
            if let Some(id) = get_str(&e, "messageId") {
                sig.lines.update(|lines| lines.retain(|l| l.id != id));
            }
        });
        let (held_kick, is_current) = (held.clone(), current.clone());
        listen(&room, "userDisconnect", move |e| {
            if !is_current() || get_str(&e, "userId").as_deref() != Some(me.as_str()) {
                return;
            }
            kicked.set(true);
            let why = get_str(&e, "reason").map(|r| format!(": {r}")).unwrap_or_default();
            sig.notice.set(Some(format!("You were removed from the chat by a moderator{why}.")));
            sig.phase.set(Phase::Disconnected);
            // Stop reconnecting, outside the SDK's own event dispatch.
            let held = held_kick.clone();
            spawn_local(async move {
                let room = held.room.borrow_mut().take();
                if let Some(room) = room {
                    room.disconnect();
                }
            });
        });
        if !current() {
            return; // a newer attempt started meanwhile
        }
        if let Err(e) = room.connect() {
            return failed(js_error_text(&e));
        }
        let old = held.room.borrow_mut().replace(room);
        if let Some(old) = old {
            old.disconnect();
        }
    });
}

async fn send(held: Shared, sig: Signals, text: String) -> bool {
    let request: JsValue = SendMessageRequest::new(text, JsValue::UNDEFINED).into();
    let promise = match held.room.borrow().as_ref() {
        Some(room) => room.send_message(request),
        None => {
            sig.error.set(Some("Not connected to the chat".to_owned()));
            return false;
        }
    };
    let result = match promise {
        Ok(p) => JsFuture::from(p).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => {
            sig.error.set(None);
            true
        }
        Err(e) => {
            sig.error.set(Some(format!("Not sent: {}", js_error_text(&e))));
            false
        }
    }
}

/// The chat panel of a group's room.
#[component]
pub fn ChatPanel(group_id: String) -> impl IntoView {
    let (phase, set_phase) = signal(Phase::Connecting);
    let (lines, set_lines) = signal(Vec::<Line>::new());
    let (notice, set_notice) = signal(None::<String>);
    let (error, set_error) = signal(None::<String>);
    let saved_name = storage().and_then(|s| s.get_item(NAME_KEY).ok().flatten()).unwrap_or_default();
    let (name, set_name) = signal(saved_name);
    let (draft, set_draft) = signal(String::new());
    let sig = Signals { phase: set_phase, lines: set_lines, notice: set_notice, error: set_error };
    let secret = viewer_secret();
    let held: Shared = SendWrapper::new(Rc::new(Held::default()));

    // Read at once, before (and without) picking a name.
    connect(held.clone(), sig, group_id.clone(), secret.clone(), None);

    let h = held.clone();
    on_cleanup(move || {
        h.generation.set(h.generation.get() + 1);
        let room = h.room.borrow_mut().take();
        if let Some(room) = room {
            room.disconnect();
        }
    });

    let h = held.clone();
    let join = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let n = name.get_untracked().trim().to_owned();
        if n.is_empty() {
            set_error.set(Some("Pick a name first".to_owned()));
            return;
        }
        if let Some(s) = storage() {
            let _ = s.set_item(NAME_KEY, &n);
        }
        connect(h.clone(), sig, group_id.clone(), secret.clone(), Some(n));
    };
    let h = held;
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = draft.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        let h = h.clone();
        spawn_local(async move {
            if send(h, sig, text).await {
                set_draft.set(String::new());
            }
        });
    };
    let busy = move || matches!(phase.get(), Phase::Connecting | Phase::Joining);

    view! {
        <aside class="chat" data-testid="chat">
            <h2>
                "Chat "
                <span class="chat-state" data-testid="chat-state" data-state=move || phase.get().as_str()>
                    {move || phase.get().label()}
                </span>
            </h2>
            <ul class="messages" data-testid="chat-messages">
                <li class="empty" data-testid="chat-empty" hidden=move || !lines.get().is_empty() || busy()>
                    "No messages yet."
                </li>
                <For each=move || lines.get() key=|l| l.id.clone() let(l)>
                    <li
                        data-testid="chat-message"
                        data-message-id=l.id.clone()
                        data-sender=l.sender.clone()
                        data-role=l.role.clone()
                    >
                        <b class="sender" data-testid="chat-sender-name">
                            {if l.name.is_empty() { l.sender.clone() } else { l.name.clone() }}
                        </b>
                        {role_badge(&l.role).map(|label| view! {
                            " "
                            <span class="role-badge" data-testid="chat-badge" data-role=l.role.clone()>{label}</span>
                        })}
                        " "
                        <span class="content">{l.content.clone()}</span>
                    </li>
                </For>
            </ul>
            <p class="notice" data-testid="chat-notice" hidden=move || notice.get().is_none()>
                {move || notice.get().unwrap_or_default()}
            </p>
            <p class="error" data-testid="chat-error" hidden=move || error.get().is_none()>
                {move || error.get().unwrap_or_default()}
            </p>
            <Show
                when=move || phase.get() == Phase::Connected
                fallback=move || {
                    view! {
                        <form class="chat-form" on:submit=join.clone()>
                            <input
                                data-testid="chat-name"
                                placeholder="Your name, to chat"
                                maxlength="64"
                                prop:value=move || name.get()
                                on:input=move |ev| set_name.set(event_target_value(&ev))
                            />
                            <button type="submit" data-testid="chat-join" disabled=move || phase.get() == Phase::Joining>
                                {move || if phase.get() == Phase::Joining { "Joining…" } else { "Join chat" }}
                            </button>
                        </form>
                    }
                }
            >
                <form class="chat-form" on:submit=submit.clone()>
                    <input
                        data-testid="chat-input"
                        placeholder="Say something"
                        prop:value=move || draft.get()
                        on:input=move |ev| set_draft.set(event_target_value(&ev))
                    />
                    <button type="submit" data-testid="chat-send">"Send"</button>
                </form>
            </Show>
        </aside>
    }
}
