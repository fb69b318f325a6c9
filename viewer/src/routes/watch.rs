//! `/watch/{groupId}`: the group's channel, its live state and its chat.
//!
//! The page asks `/api/list` every [`POLL_MS`] whether the group is live. When
//! it is, a player starts (muted, autoplay); when the list says it is not any
//! more, or the player reports the stream ended, the player is torn down and
//! the page shows Ended (if frames played) or Offline, and keeps polling, so a
//! later go-live plays again without a reload.
//!
//! A player that fails, or whose video stops advancing, while the list still
//! says live (the broadcaster reconnecting, the server restarting; a
//! broadcaster back after a reconnect window can leave hls.js stuck before
//! the gap) is dropped, and the page says Reconnecting… without leaving Live;
//! the poll loop then starts another player at the same playback URL, or
//! shows Ended if the list says the stream is over. Both cases take this one
//! path (`interrupt`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use send_wrapper::SendWrapper;
use web_sys::UrlSearchParams;

use crate::api;
use crate::components::chat::ChatPanel;
use crate::latency::latency_secs;
use crate::player::{Callbacks, Player, PlayerKind};

/// How often the list is asked whether the stream is live.
const POLL_MS: i32 = 2000;
/// How often the latency readout refreshes.
const LATENCY_MS: i32 = 1000;
/// The server's clock is asked again every this many readouts.
const CLOCK_EVERY: u32 = 30;
/// Polls in a row with the video not advancing (and not paused) before the
/// player is replaced: ~6 s, longer than any normal rebuffer of a live
/// stream, shorter than a viewer's patience.
const STALLED_POLLS: u32 = 3;

/// What the viewer sees of the stream (`player-state` shows exactly these words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    Offline,
    Live,
    Ended,
}

impl StreamState {
    fn label(self) -> &'static str {
        match self {
            StreamState::Offline => "Offline",
            StreamState::Live => "Live",
            StreamState::Ended => "Ended",
        }
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
    /// Cleared on unmount: the loops stop and late players are dropped.
    alive: Cell<bool>,
    /// Bumped per player, so a late "gone" of an old player is ignored.
    generation: Cell<u32>,
    /// The player was dropped while the stream may still be live (it
    /// failed or got stuck): the next poll starts another one, or ends the
    /// stream if the list says it is over.
    interrupted: Cell<bool>,
    /// The playback URL of the current player (its responses carry the
    /// server's clock).
    url: RefCell<Option<String>>,
    /// The video's position at the last poll, and how many polls in a row
    /// it has not moved.
    position: Cell<f64>,
    stalled: Cell<u32>,
}

impl Session {
    /// Whether the playing video has been stuck for [`STALLED_POLLS`]
    /// polls (a paused video is not stuck: the viewer paused it).
    fn stuck(&self, video: &web_sys::HtmlVideoElement) -> bool {
        let now = video.current_time();
        let moved = now > self.position.replace(now) + 0.05;
        if moved || video.paused() || !self.was_playing.get() || self.player.borrow().is_none() {
            self.stalled.set(0);
            return false;
        }
        self.stalled.set(self.stalled.get() + 1);
        self.stalled.get() >= STALLED_POLLS
    }
}

/// The reactive outputs the loops write.
#[derive(Clone, Copy)]
struct Outputs {
    state: WriteSignal<StreamState>,
    latency: WriteSignal<Option<f64>>,
    low_latency: WriteSignal<bool>,
    cue: WriteSignal<Option<String>>,
    message: WriteSignal<Option<String>>,
    title: WriteSignal<String>,
    muted: ReadSignal<bool>,
}

fn query_param(name: &str) -> Option<String> {
    let search = window().location().search().ok()?;
    UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

/// The player failed (not an end of stream) or its video is stuck while
/// the stream may still be live: drop it and say Reconnecting…; the poll
/// loop decides between a new player at the same URL and the end. The one
/// replacement path for both cases.
fn interrupt(session: &Session, out: Outputs) {
    if session.player.borrow_mut().take().is_some() {
        // Late callbacks of the dropped player are ignored.
        session.generation.set(session.generation.get().wrapping_add(1));
        session.interrupted.set(true);
        session.stalled.set(0);
        out.latency.set(None);
        out.message.set(Some("Reconnecting…".to_owned()));
    }
}

/// The stream is over: tear the player down, Ended if it played.
fn stream_gone(session: &Session, out: Outputs) {
    let player = session.player.borrow_mut().take();
    let interrupted = session.interrupted.replace(false);
    if player.is_none() && !interrupted {
        return;
    }
    drop(player);
    let ended = session.was_playing.replace(false);
    out.state.set(if ended {
        StreamState::Ended
    } else {
        StreamState::Offline
    });
    out.latency.set(None);
    out.message.set(Some(if ended {
        "The stream has ended. It starts again here when the host goes live again.".to_owned()
    } else {
        "This stage is not live right now. The video starts as soon as the host goes live."
            .to_owned()
    }));
}

async fn start(
    session: Rc<Session>,
    out: Outputs,
    kind: PlayerKind,
    video: web_sys::HtmlVideoElement,
    url: String,
) {
    session.starting.set(true);
    *session.url.borrow_mut() = Some(url.clone());
    let generation = session.generation.get().wrapping_add(1);
    session.generation.set(generation);
    let s_play = Rc::downgrade(&session);
    let s_gone = Rc::downgrade(&session);
    let callbacks = Callbacks {
        on_playing: Box::new(move || {
            if let Some(s) = s_play.upgrade() {
                s.was_playing.set(true);
            }
            out.state.set(StreamState::Live);
            out.message.set(None);
        }),
        on_gone: Box::new(move |why| {
            leptos::logging::log!("player: stream gone ({why})");
            let weak = s_gone.clone();
            // Not from inside the player's own callback: tearing down frees it.
            spawn_local(async move {
                if let Some(s) = weak.upgrade() {
                    if s.generation.get() != generation {
                        return;
                    }
                    if why == "ended" {
                        stream_gone(&s, out);
                    } else {
                        interrupt(&s, out);
                    }
                }
            });
        }),
        on_cue: Box::new(move |text| out.cue.set(Some(text))),
    };
    let result = Player::start(kind, &video, &url, callbacks).await;
    session.starting.set(false);
    match result {
        Ok(player) if session.alive.get() => {
            if !out.muted.get_untracked() {
                player.set_muted(false);
            }
            *session.player.borrow_mut() = Some(player);
        }
        Ok(player) => drop(player),
        Err(e) => out.message.set(Some(format!("Cannot play: {e}"))),
    }
}

async fn poll_loop(
    session: Rc<Session>,
    out: Outputs,
    kind: PlayerKind,
    group_id: String,
    video: NodeRef<leptos::html::Video>,
) {
    while session.alive.get() {
        match api::group_status(&group_id).await {
            // The server is unreachable: try again on the next poll.
            Err(e) => leptos::logging::log!("list: {e}"),
            Ok(None) => {
                stream_gone(&session, out);
                out.message
                    .set(Some("This stage does not exist (any more).".to_owned()));
            }
            Ok(Some(status)) => {
                if let Some(host) = status.host_name.filter(|h| !h.is_empty()) {
                    out.title.set(format!("{host}'s stage"));
                }
                let video = video.get_untracked();
                let live = status.live && status.playback_url.is_some();
                if live && video.as_ref().is_some_and(|v| session.stuck(v)) {
                    leptos::logging::log!("player: stuck while live; starting another");
                    interrupt(&session, out);
                }
                // A player dropped by `interrupt` (just now, or failed since
                // the last poll) is replaced here while the list says live.
                let running = session.player.borrow().is_some() || session.starting.get();
                match (status.live, status.playback_url, video) {
                    (true, Some(url), Some(video)) if !running => {
                        session.interrupted.set(false);
                        spawn_local(start(session.clone(), out, kind, video, url));
                    }
                    (false, ..) if running || session.interrupted.get() => stream_gone(&session, out),
                    _ => {}
                }
            }
        }
        api::sleep(POLL_MS).await;
    }
}

/// The latency readout: the program date-time of the frame on screen
/// against the server's clock (both players; the same clock on one machine
/// is assumed until the server has been asked).
async fn latency_loop(session: Rc<Session>, out: Outputs) {
    let mut offset: Option<f64> = None;
    let mut readouts = 0u32;
    while session.alive.get() {
        let url = session.url.borrow().clone();
        if let Some(url) = url.filter(|_| offset.is_none() || readouts % CLOCK_EVERY == 0) {
            offset = api::server_clock_offset(&url).await.or(offset);
        }
        let pdt = session.player.borrow().as_ref().and_then(Player::program_date_time);
        let low = session.player.borrow().as_ref().is_some_and(Player::low_latency);
        out.low_latency.set(low);
        out.latency.set(pdt.and_then(|pdt| latency_secs(js_sys::Date::now(), offset.unwrap_or(0.0), pdt)));
        readouts = readouts.wrapping_add(1);
        api::sleep(LATENCY_MS).await;
    }
}

/// The watch page of one group.
#[component]
pub fn WatchPage(group_id: String) -> impl IntoView {
    let kind = PlayerKind::from_query(query_param("player").as_deref());
    let (state, set_state) = signal(StreamState::Offline);
    let (latency, set_latency) = signal(None::<f64>);
    let (low_latency, set_low_latency) = signal(false);
    let (cue, set_cue) = signal(None::<String>);
    let (message, set_message) = signal(Some("Looking for the stream…".to_owned()));
    let (title, set_title) = signal("Watch".to_owned());
    let (muted, set_muted) = signal(true);
    let video = NodeRef::<leptos::html::Video>::new();
    let out = Outputs {
        state: set_state,
        latency: set_latency,
        low_latency: set_low_latency,
        cue: set_cue,
        message: set_message,
        title: set_title,
        muted,
    };

    let session = Rc::new(Session::default());
    session.alive.set(true);
    spawn_local(poll_loop(
        session.clone(),
        out,
        kind,
        group_id.clone(),
        video,
    ));
    spawn_local(latency_loop(session.clone(), out));

    let for_unmute = SendWrapper::new(session.clone());
    let unmute = move |_| {
        set_muted.set(false);
        if let Some(p) = for_unmute.player.borrow().as_ref() {
            p.set_muted(false);
        } else if let Some(v) = video.get_untracked() {
            v.set_muted(false);
        }
    };
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
        <main class="viewer">
            <section class="stream">
                <div class="row">
                    <h1 data-testid="watch-title">{move || title.get()}</h1>
                    <span
                        class="badge"
                        data-testid="player-state"
                        data-state=move || state.get().label().to_lowercase()
                    >
                        {move || state.get().label()}
                    </span>
                    <span
                        class="latency"
                        data-testid="latency"
                        data-low-latency=move || low_latency.get().to_string()
                        title="Behind the server's live edge: the frame's program date-time against the server clock"
                    >
                        {move || match latency.get() {
                            Some(l) => format!("Latency {l:.1} s"),
                            None => "Latency –".to_owned(),
                        }}
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
                    <Show when=move || muted.get()>
                        <button class="unmute" data-testid="unmute" on:click=unmute.clone()>
                            "Tap to unmute"
                        </button>
                    </Show>
                </div>
            </section>
            <ChatPanel group_id=group_id />
        </main>
    }
}
