//! The stream of a watch page, one component for `/watch/{groupId}` and
//! `/watch/channel/{channelId}`: the title, the state badge, the latency
//! readout, the player and what is said over it.
//!
//! It asks the backend every [`POLL_MS`] whether the stream is live (a
//! stage: `/api/list`; a channel: `/api/channels/{id}`). When it is, a
//! player starts (muted, autoplay; "Tap to unmute" over live video); when
//! the backend says it is not any more, or the player reports the stream
//! ended, the player is torn down and the page shows Ended (if frames
//! played here) or Offline, and keeps asking, so a later broadcast plays
//! again without a reload. What is shown follows one [`StreamState`]
//! (`crate::state`): nothing is claimed before the first answer
//! (Connecting), and a stage or channel that does not exist shows only that.
//!
//! A player that fails, or whose video stops advancing, while the backend
//! still says live (the broadcaster reconnecting, the server restarting; a
//! broadcaster back after a reconnect window can leave hls.js stuck before
//! the gap) is dropped, and the page says Reconnecting… without leaving
//! Live; the poll loop then starts another player at the same playback URL,
//! or shows Ended if the backend says the stream is over. Both cases take
//! this one path (`interrupt`).
//!
//! A private channel plays with the page's `?token=<playback token>`, which
//! goes on the playback URL. A player refused with a 403 (no token, or one
//! that is refused) makes the page say the stream is private
//! ([`StreamState::Private`]); it tries again only once the stream has
//! stopped being live.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use send_wrapper::SendWrapper;

use crate::api;
use crate::latency::{complete_edge_ms, latency_secs, media_playlist_url, Timeline};
use crate::player::{self, Callbacks, Player, PlayerKind};
use crate::state::{Answer, SourceKind, StreamState};

/// How often the backend is asked whether the stream is live.
const POLL_MS: i32 = 2000;
/// How often the latency readout refreshes.
const LATENCY_MS: i32 = 1000;
/// The server's clock is asked again every this many readouts.
const CLOCK_EVERY: u32 = 30;
/// Polls in a row with the video not advancing (and not paused) before the
/// player is replaced: ~6 s, longer than any normal rebuffer of a live
/// stream, shorter than a viewer's patience.
const STALLED_POLLS: u32 = 3;

/// The stream a page follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A sample-app stage group: its channel.
    Stage(String),
    /// Any channel.
    Channel(String),
}

impl Source {
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Stage(_) => SourceKind::Stage,
            Source::Channel(_) => SourceKind::Channel,
        }
    }

    /// The title before the backend names the stream.
    fn default_title(&self) -> String {
        match self {
            Source::Stage(_) => "Watch".to_owned(),
            Source::Channel(id) => id.clone(),
        }
    }
}

/// What a poll learned of an existing stream.
struct Status {
    live: bool,
    playback_url: Option<String>,
    title: Option<String>,
}

/// Asks the backend: `Ok(None)` when the stage or channel does not exist
/// (any more), `Err` when the backend could not be asked.
async fn ask(source: &Source) -> Result<Option<Status>, String> {
    Ok(match source {
        Source::Stage(id) => api::group_status(id).await?.map(|s| Status {
            live: s.live && s.playback_url.is_some(),
            playback_url: s.playback_url,
            title: s.host_name.filter(|h| !h.is_empty()).map(|h| format!("{h}'s stage")),
        }),
        Source::Channel(id) => api::channel_status(id).await?.map(|s| Status {
            live: s.live,
            playback_url: Some(s.playback_url),
            title: Some(s.name).filter(|n| !n.is_empty()),
        }),
    })
}

/// The component's non-reactive state: the running player and the loop flags.
#[derive(Default)]
struct Session {
    player: RefCell<Option<Player>>,
    /// A player is being started (the bundle import is async).
    starting: Cell<bool>,
    /// The current player has shown frames.
    was_playing: Cell<bool>,
    /// Some player on this page has shown frames (a stream that stops
    /// being live has then ended, rather than never started).
    played: Cell<bool>,
    /// Cleared on unmount: the loops stop and late players are dropped.
    alive: Cell<bool>,
    /// Bumped per player, so a late "gone" of an old player is ignored.
    generation: Cell<u32>,
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
    state: RwSignal<StreamState>,
    /// Said instead of the state's own message ("Reconnecting…", a player
    /// that cannot start); cleared by every change of state.
    notice: WriteSignal<Option<String>>,
    latency: WriteSignal<Option<f64>>,
    low_latency: WriteSignal<bool>,
    cue: WriteSignal<Option<String>>,
    title: WriteSignal<String>,
    muted: ReadSignal<bool>,
}

impl Outputs {
    fn set_state(&self, next: StreamState) {
        if self.state.get_untracked() != next {
            self.state.set(next);
            self.notice.set(None);
        }
    }
}

/// The player failed (not an end of stream) or its video is stuck while
/// the stream may still be live: drop it and say Reconnecting…; the poll
/// loop decides between a new player at the same URL and the end. The one
/// replacement path for both cases.
fn interrupt(session: &Session, out: Outputs) {
    if session.player.borrow_mut().take().is_some() {
        // Late callbacks of the dropped player are ignored.
        session.generation.set(session.generation.get().wrapping_add(1));
        session.stalled.set(0);
        out.latency.set(None);
        out.notice.set(Some("Reconnecting…".to_owned()));
    }
}

/// No player any more (the stream is over, or gone).
fn teardown(session: &Session, out: Outputs) {
    drop(session.player.borrow_mut().take());
    session.was_playing.set(false);
    session.stalled.set(0);
    out.latency.set(None);
    out.cue.set(None);
    out.notice.set(None);
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

/// The stream is over: no player, Ended if it played here, else Offline.
fn stream_over(session: &Session, out: Outputs, answer: Answer) {
    teardown(session, out);
    out.set_state(out.state.get_untracked().after_answer(answer, session.played.get()));
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
                s.played.set(true);
            }
            out.set_state(StreamState::Live);
            out.notice.set(None);
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
                        stream_over(&s, out, Answer::NotLive);
                    } else if player::is_forbidden(&why) {
                        teardown(&s, out);
                        out.set_state(StreamState::Private);
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
        Err(e) => out.notice.set(Some(format!("Cannot play: {e}"))),
    }
}

async fn poll_loop(
    session: Rc<Session>,
    out: Outputs,
    kind: PlayerKind,
    source: Source,
    token: Option<String>,
    video: NodeRef<leptos::html::Video>,
) {
    while session.alive.get() {
        match ask(&source).await {
            // The server is unreachable: try again on the next poll.
            Err(e) => leptos::logging::log!("stream status: {e}"),
            Ok(None) => stream_over(&session, out, Answer::Missing),
            Ok(Some(status)) => {
                if let Some(title) = status.title {
                    out.title.set(title);
                }
                let video = video.get_untracked();
                if status.live && video.as_ref().is_some_and(|v| session.stuck(v)) {
                    leptos::logging::log!("player: stuck while live; starting another");
                    interrupt(&session, out);
                }
                // A player dropped by `interrupt` (just now, or failed since
                // the last poll) is replaced here while the backend says live.
                let running = session.player.borrow().is_some() || session.starting.get();
                match (status.live, status.playback_url, video) {
                    (true, Some(url), Some(video)) => {
                        out.set_state(out.state.get_untracked().after_answer(Answer::Live, session.played.get()));
                        if !running && out.state.get_untracked() != StreamState::Private {
                            let url = with_token(url, token.as_deref());
                            spawn_local(start(session.clone(), out, kind, video, url));
                        }
                    }
                    (true, ..) => {}
                    (false, ..) => stream_over(&session, out, Answer::NotLive),
                }
            }
        }
        api::sleep(POLL_MS).await;
    }
}

/// The latency readout: the program date-time of the frame on screen
/// against the server's clock (the same clock on one machine is assumed
/// until the server has been asked). hls.js knows the frame's date-time;
/// for a player that does not (the IVS Player on our streams) each readout
/// also reads the media playlist, whose date-times and the player's buffer
/// map its timeline ([`Timeline`]), one map per player.
async fn latency_loop(session: Rc<Session>, out: Outputs, video: NodeRef<leptos::html::Video>) {
    let mut offset: Option<f64> = None;
    let mut readouts = 0u32;
    let mut timeline = (0u32, Timeline::default());
    let mut media_url: Option<(String, String)> = None;
    while session.alive.get() {
        let url = session.url.borrow().clone();
        let video = video.get_untracked();
        let (pdt, low) = match session.player.borrow().as_ref() {
            Some(p) => (p.program_date_time(), p.low_latency()),
            None => (None, false),
        };
        let generation = session.generation.get();
        if timeline.0 != generation {
            timeline = (generation, Timeline::default());
        }
        let mapping = pdt.is_none() && session.player.borrow().is_some();
        match (url, video.as_ref()) {
            (Some(url), Some(video)) if mapping => {
                // What the player holds, read before the playlist is asked.
                let ranges = video.buffered();
                let end = ranges.length().checked_sub(1).and_then(|i| ranges.end(i).ok());
                if media_url.as_ref().is_none_or(|(for_url, _)| *for_url != url) {
                    let (body, _) = api::hls_fetch("GET", &url).await;
                    let media = body.and_then(|b| media_playlist_url(&url, &b)).unwrap_or_else(|| url.clone());
                    media_url = Some((url.clone(), media));
                }
                let media = media_url.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
                let (body, clock) = api::hls_fetch("GET", &media).await;
                offset = clock.or(offset);
                if let (Some(end), Some(edge)) = (end, body.as_deref().and_then(complete_edge_ms)) {
                    timeline.1.observe(end, edge);
                }
            }
            (Some(url), _) if offset.is_none() || readouts.is_multiple_of(CLOCK_EVERY) => {
                offset = api::hls_fetch("HEAD", &url).await.1.or(offset);
            }
            _ => {}
        }
        let pdt = pdt.or_else(|| {
            let position = video.as_ref().map(|v| v.current_time())?;
            timeline.1.date_time_ms(position).filter(|_| mapping)
        });
        out.low_latency.set(low);
        out.latency.set(pdt.and_then(|pdt| latency_secs(js_sys::Date::now(), offset.unwrap_or(0.0), pdt)));
        readouts = readouts.wrapping_add(1);
        api::sleep(LATENCY_MS).await;
    }
}

/// The stream of one stage or channel. `state` is the page's, so the page
/// can show what depends on it (the chat of a stage that exists).
#[component]
pub fn StreamView(
    source: Source,
    kind: PlayerKind,
    /// The page's playback token (`?token=`), for a private channel.
    token: Option<String>,
    state: RwSignal<StreamState>,
) -> impl IntoView {
    let (notice, set_notice) = signal(None::<String>);
    let (latency, set_latency) = signal(None::<f64>);
    let (low_latency, set_low_latency) = signal(false);
    let (cue, set_cue) = signal(None::<String>);
    let (title, set_title) = signal(source.default_title());
    let (muted, set_muted) = signal(true);
    let video = NodeRef::<leptos::html::Video>::new();
    let out = Outputs {
        state,
        notice: set_notice,
        latency: set_latency,
        low_latency: set_low_latency,
        cue: set_cue,
        title: set_title,
        muted,
    };
    let source_kind = source.kind();

    let session = Rc::new(Session::default());
    session.alive.set(true);
    spawn_local(poll_loop(session.clone(), out, kind, source, token, video));
    spawn_local(latency_loop(session.clone(), out, video));

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
    let has_video = move || state.get().has_video();
    let message = move || notice.get().or_else(|| state.get().message(source_kind).map(str::to_owned));

    view! {
        <section class="stream">
            <div class="row">
                <h1 data-testid="watch-title">{move || title.get()}</h1>
                <span
                    class="badge"
                    data-testid="player-state"
                    data-state=move || state.get().as_str()
                    hidden=move || state.get().badge().is_none()
                >
                    {move || state.get().badge().unwrap_or_default()}
                </span>
                <span
                    class="latency"
                    data-testid="latency"
                    data-low-latency=move || low_latency.get().to_string()
                    hidden=move || !has_video()
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
                    controls=has_video
                ></video>
                <p class="cue" data-testid="metadata-cue" hidden=move || cue.get().is_none() || !has_video()>
                    {move || cue.get().unwrap_or_default()}
                </p>
                <p class="message" data-testid="watch-message" hidden=move || message().is_none()>
                    {move || message().unwrap_or_default()}
                </p>
                // Over the top corner of live video: the player's own
                // controls are along the bottom.
                <Show when=move || muted.get() && has_video()>
                    <button class="unmute" data-testid="unmute" on:click=unmute.clone()>
                        "Tap to unmute"
                    </button>
                </Show>
            </div>
        </section>
    }
}
