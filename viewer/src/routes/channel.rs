//! `/watch/channel/{channelId}`: any channel, one made through `/v1` too.
//!
//! The page asks `/api/channels/{id}` every [`POLL_MS`] whether the channel
//! is live. When it is, a player starts (muted, autoplay; the video's own
//! controls unmute it); when the channel goes offline, or the player reports
//! that the stream ended or failed, the player is torn down, the page says
//! Ended (if frames played) or Offline, and keeps asking, so the next
//! broadcast plays without a reload. A channel has no chat room, so the
//! page has no chat panel. Until the first answer the badge is hidden: the
//! page does not claim Offline before it knows.
//!
//! A private channel plays with the page's `?token=<playback token>`, which
//! goes on the playback URL. Without one (or with one that is refused) the
//! player reports a 403: the page says the stream is private, and tries
//! again only when the channel next goes live.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use send_wrapper::SendWrapper;
use web_sys::UrlSearchParams;

use crate::api;
use crate::player::{self, Callbacks, Player, PlayerKind};
use crate::routes::watch::StreamState;

/// How often the channel's state is asked.
const POLL_MS: i32 = 2000;

const OFFLINE: &str =
    "This channel is not live right now. The video starts as soon as it goes live.";
const ENDED: &str =
    "The stream has ended. It starts again here when the channel goes live again.";
const MISSING: &str = "This channel does not exist (any more).";
const PRIVATE: &str = "This stream is private: it plays only with a valid playback token. \
Open the link you were given (with its ?token=…), or ask for a new one if it has expired.";

fn label(state: StreamState) -> &'static str {
    match state {
        StreamState::Offline => "Offline",
        StreamState::Live => "Live",
        StreamState::Ended => "Ended",
    }
}

/// The page's non-reactive state: the running player and the loop flags.
#[derive(Default)]
struct Session {
    player: RefCell<Option<Player>>,
    /// A player is being started (the bundle import is async).
    starting: Cell<bool>,
    /// The current player has shown frames.
    was_playing: Cell<bool>,
    /// Cleared on unmount: the loop stops and a late player is dropped.
    alive: Cell<bool>,
    /// Bumped per player, so a late "gone" of an old player is ignored.
    generation: Cell<u32>,
    /// The stream refused this page (private channel, no valid token): no
    /// new player until the channel has been offline.
    refused: Cell<bool>,
}

/// What the loop and the player's callbacks show.
#[derive(Clone, Copy)]
struct Outputs {
    /// `None` until the first answer.
    state: RwSignal<Option<StreamState>>,
    cue: WriteSignal<Option<String>>,
    message: WriteSignal<Option<String>>,
    title: WriteSignal<String>,
}

/// The stream is over (or the channel is gone): tear the player down and
/// say Ended if it played, Offline otherwise.
fn stream_gone(session: &Session, out: Outputs) {
    drop(session.player.borrow_mut().take());
    let ended = session.was_playing.replace(false);
    out.state.set(Some(if ended { StreamState::Ended } else { StreamState::Offline }));
    out.cue.set(None);
    out.message.set(Some(if ended { ENDED } else { OFFLINE }.to_owned()));
}

/// The player was refused (HTTP 403): the stream is private.
fn stream_refused(session: &Session, out: Outputs) {
    drop(session.player.borrow_mut().take());
    session.was_playing.set(false);
    session.refused.set(true);
    out.state.set(None);
    out.cue.set(None);
    out.message.set(Some(PRIVATE.to_owned()));
}

/// `url` with the page's playback token, if it has one.
fn with_token(url: String, token: Option<&str>) -> String {
    match token {
        Some(token) => {
            let join = if url.contains('?') { '&' } else { '?' };
            format!("{url}{join}token={}", String::from(js_sys::encode_uri_component(token)))
        }
        None => url,
    }
}

async fn start(
    session: Rc<Session>,
    out: Outputs,
    kind: PlayerKind,
    video: web_sys::HtmlVideoElement,
    url: String,
) {
    session.starting.set(true);
    let generation = session.generation.get().wrapping_add(1);
    session.generation.set(generation);
    let s_play = Rc::downgrade(&session);
    let s_gone = Rc::downgrade(&session);
    let callbacks = Callbacks {
        on_playing: Box::new(move || {
            if let Some(s) = s_play.upgrade() {
                s.was_playing.set(true);
            }
            out.state.set(Some(StreamState::Live));
            out.message.set(None);
        }),
        on_gone: Box::new(move |why| {
            leptos::logging::log!("player: stream gone ({why})");
            let weak = s_gone.clone();
            let refused = player::is_forbidden(&why);
            // Not from inside the player's own callback: tearing down frees it.
            spawn_local(async move {
                if let Some(s) = weak.upgrade() {
                    if s.generation.get() == generation && s.player.borrow().is_some() {
                        if refused {
                            stream_refused(&s, out);
                        } else {
                            stream_gone(&s, out);
                        }
                    }
                }
            });
        }),
        on_cue: Box::new(move |text| out.cue.set(Some(text))),
    };
    let result = Player::start(kind, &video, &url, callbacks).await;
    session.starting.set(false);
    match result {
        Ok(player) if session.alive.get() => *session.player.borrow_mut() = Some(player),
        Ok(player) => drop(player),
        Err(e) => out.message.set(Some(format!("Cannot play: {e}"))),
    }
}

async fn poll_loop(
    session: Rc<Session>,
    out: Outputs,
    kind: PlayerKind,
    channel_id: String,
    token: Option<String>,
    video: NodeRef<leptos::html::Video>,
) {
    while session.alive.get() {
        match api::channel_status(&channel_id).await {
            // The server is unreachable: try again on the next poll.
            Err(e) => leptos::logging::log!("channel: {e}"),
            Ok(None) => {
                stream_gone(&session, out);
                out.state.set(Some(StreamState::Offline));
                out.message.set(Some(MISSING.to_owned()));
            }
            Ok(Some(status)) => {
                if !status.name.is_empty() {
                    out.title.set(status.name);
                }
                let running = session.player.borrow().is_some() || session.starting.get();
                if !status.live {
                    session.refused.set(false);
                }
                match (status.live, video.get_untracked()) {
                    (true, _) if session.refused.get() => {}
                    (true, Some(video)) if !running => {
                        let url = with_token(status.playback_url, token.as_deref());
                        spawn_local(start(session.clone(), out, kind, video, url));
                    }
                    (false, _) if running => stream_gone(&session, out),
                    (false, _) if out.state.get_untracked().is_none() => {
                        out.state.set(Some(StreamState::Offline));
                        out.message.set(Some(OFFLINE.to_owned()));
                    }
                    _ => {}
                }
            }
        }
        api::sleep(POLL_MS).await;
    }
}

/// The watch page of one channel.
#[component]
pub fn ChannelPage(channel_id: String) -> impl IntoView {
    let query = window().location().search().ok();
    let params = query.and_then(|q| UrlSearchParams::new_with_str(&q).ok());
    let kind = PlayerKind::from_query(params.as_ref().and_then(|p| p.get("player")).as_deref());
    let token = params.and_then(|p| p.get("token")).filter(|t| !t.is_empty());
    let state = RwSignal::new(None::<StreamState>);
    let (cue, set_cue) = signal(None::<String>);
    let (message, set_message) = signal(Some("Looking for the stream…".to_owned()));
    let (title, set_title) = signal(channel_id.clone());
    let video = NodeRef::<leptos::html::Video>::new();
    let out = Outputs { state, cue: set_cue, message: set_message, title: set_title };

    let session = Rc::new(Session::default());
    session.alive.set(true);
    spawn_local(poll_loop(session.clone(), out, kind, channel_id, token, video));
    let for_cleanup = SendWrapper::new(session);
    on_cleanup(move || {
        for_cleanup.alive.set(false);
        drop(for_cleanup.player.borrow_mut().take());
    });
    Effect::new(move |_| {
        document().set_title(&format!("Stagecast — {}", title.get()));
    });

    view! {
        <header class="topbar">
            <a class="brand" href="/"><span class="logo" aria-hidden="true"></span>"Stagecast"</a>
            <span class="who" data-testid="player-kind">{kind.label()}</span>
        </header>
        <main class="viewer solo">
            <section class="stream">
                <div class="row">
                    <h1 data-testid="watch-title">{move || title.get()}</h1>
                    <span
                        class="badge"
                        data-testid="player-state"
                        data-state=move || {
                            state.get().map(|s| label(s).to_lowercase()).unwrap_or_default()
                        }
                        hidden=move || state.get().is_none()
                    >
                        {move || state.get().map(label).unwrap_or_default()}
                    </span>
                </div>
                <div class="frame">
                    <video
                        node_ref=video
                        data-testid="player-video"
                        muted=true
                        autoplay=true
                        playsinline=true
                        controls=true
                    ></video>
                    <p class="cue" data-testid="metadata-cue" hidden=move || cue.get().is_none()>
                        {move || cue.get().unwrap_or_default()}
                    </p>
                    <p class="message" data-testid="watch-message" hidden=move || message.get().is_none()>
                        {move || message.get().unwrap_or_default()}
                    </p>
                </div>
            </section>
        </main>
    }
}
