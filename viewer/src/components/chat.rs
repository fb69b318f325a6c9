//! The chat panel: the group's room through the SDK's Rust [`ChatRoom`].
//!
//! A viewer picks a name; the page asks the demo backend for a chat token
//! (`/api/chat-token`, SEND_MESSAGE) and connects. The token provider asks
//! again whenever the SDK needs a fresh token (session refresh). Deletes and
//! kicks by a moderator arrive as `messageDelete` / `userDisconnect` events.

use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use send_wrapper::SendWrapper;
use stagecast_sdk::{ChatRoom, SendMessageRequest};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::api::{self, get, get_str, js_error_text};

/// One chat message as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    id: String,
    sender: String,
    name: String,
    content: String,
}

/// Where the panel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    PickName,
    Connecting,
    Connected,
    Disconnected,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::PickName => "idle",
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Disconnected => "disconnected",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Phase::PickName => "",
            Phase::Connecting => "· connecting…",
            Phase::Connected => "· connected",
            Phase::Disconnected => "· disconnected",
        }
    }
}

/// The room and the JS listeners that must live as long as it.
#[derive(Default)]
struct Held {
    room: Option<ChatRoom>,
}

type Shared = SendWrapper<Rc<RefCell<Held>>>;

fn random_user_id() -> String {
    let n = (js_sys::Math::random() * 1e12) as u64;
    format!("viewer-{n:x}")
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

fn connect(held: Shared, sig: Signals, group_id: String, user_id: String, name: String) {
    sig.phase.set(Phase::Connecting);
    sig.error.set(None);
    sig.notice.set(None);
    let body = format!(
        "{{\"groupId\":{},\"userId\":{},\"attributes\":{{\"username\":{}}},\"viewOnly\":{}}}",
        json_string(&group_id),
        json_string(&user_id),
        json_string(&name),
        view_only()
    );
    spawn_local(async move {
        // Asked once here for the endpoint (and to fail early with the
        // backend's message), then by the provider for every connection.
        let first = match api::post_json("/api/chat-token", Some(&body)).await {
            Ok(v) => v,
            Err(e) => {
                sig.error.set(Some(format!("Cannot join the chat: {e}")));
                sig.phase.set(Phase::PickName);
                return;
            }
        };
        let Some(endpoint) = get_str(&first, "endpoint") else {
            sig.error.set(Some(
                "Cannot join the chat: no endpoint in the token answer".to_owned(),
            ));
            sig.phase.set(Phase::PickName);
            return;
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
            Err(e) => {
                sig.error
                    .set(Some(format!("Cannot join the chat: {}", js_error_text(&e))));
                sig.phase.set(Phase::PickName);
                return;
            }
        };
        let kicked = Rc::new(std::cell::Cell::new(false));
        listen(&room, "connect", move |_| {
            sig.phase.set(Phase::Connected);
            sig.notice.set(None);
        });
        let k = kicked.clone();
        listen(&room, "disconnect", move |reason| {
            sig.phase.set(Phase::Disconnected);
            let reason = reason.as_string().unwrap_or_default();
            if !k.get() && reason != "clientDisconnect" {
                sig.notice.set(Some(format!(
                    "You were disconnected from the chat ({reason})."
                )));
            }
        });
        listen(&room, "message", move |m| {
            let sender = get(&m, "sender");
            let line = Line {
                id: get_str(&m, "id").unwrap_or_default(),
                sender: get_str(&sender, "userId").unwrap_or_default(),
                name: get_str(&get(&sender, "attributes"), "username").unwrap_or_default(),
                content: get_str(&m, "content").unwrap_or_default(),
            };
            sig.lines.update(|lines| {
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
        let me = user_id.clone();
        let held_kick = held.clone();
        listen(&room, "userDisconnect", move |e| {
            if get_str(&e, "userId").as_deref() != Some(me.as_str()) {
                return;
            }
            kicked.set(true);
            let why = get_str(&e, "reason")
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            sig.notice.set(Some(format!(
                "You were removed from the chat by a moderator{why}."
            )));
            sig.phase.set(Phase::Disconnected);
            // Stop reconnecting, outside the SDK's own event dispatch.
            let held = held_kick.clone();
            spawn_local(async move {
                if let Some(room) = held.borrow_mut().room.take() {
                    room.disconnect();
                }
            });
        });
        if let Err(e) = room.connect() {
            sig.error
                .set(Some(format!("Cannot join the chat: {}", js_error_text(&e))));
            sig.phase.set(Phase::PickName);
            return;
        }
        if let Some(old) = held.borrow_mut().room.replace(room) {
            old.disconnect();
        }
    });
}

async fn send(held: Shared, sig: Signals, text: String) -> bool {
    let request: JsValue = SendMessageRequest::new(text, JsValue::UNDEFINED).into();
    let promise = match held.borrow().room.as_ref() {
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
            sig.error
                .set(Some(format!("Not sent: {}", js_error_text(&e))));
            false
        }
    }
}

/// The chat panel of a group's room.
#[component]
pub fn ChatPanel(group_id: String) -> impl IntoView {
    let (phase, set_phase) = signal(Phase::PickName);
    let (lines, set_lines) = signal(Vec::<Line>::new());
    let (notice, set_notice) = signal(None::<String>);
    let (error, set_error) = signal(None::<String>);
    let (name, set_name) = signal(String::new());
    let (draft, set_draft) = signal(String::new());
    let sig = Signals {
        phase: set_phase,
        lines: set_lines,
        notice: set_notice,
        error: set_error,
    };
    let user_id = random_user_id();
    let held: Shared = SendWrapper::new(Rc::new(RefCell::new(Held::default())));

    let h = held.clone();
    on_cleanup(move || {
        if let Some(room) = h.borrow_mut().room.take() {
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
        connect(h.clone(), sig, group_id.clone(), user_id.clone(), n);
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

    view! {
        <aside class="chat" data-testid="chat">
            <h2>
                "Chat "
                <span class="chat-state" data-testid="chat-state" data-state=move || phase.get().as_str()>
                    {move || phase.get().label()}
                </span>
            </h2>
            <ul class="messages" data-testid="chat-messages">
                <For each=move || lines.get() key=|l| l.id.clone() let(l)>
                    <li data-testid="chat-message" data-message-id=l.id.clone() data-sender=l.sender.clone()>
                        <b class="sender">{if l.name.is_empty() { l.sender.clone() } else { l.name.clone() }}</b>
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
                                placeholder="Your name"
                                maxlength="64"
                                prop:value=move || name.get()
                                on:input=move |ev| set_name.set(event_target_value(&ev))
                            />
                            <button type="submit" data-testid="chat-join" disabled=move || phase.get() == Phase::Connecting>
                                {move || if phase.get() == Phase::Connecting { "Joining…" } else { "Join chat" }}
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
