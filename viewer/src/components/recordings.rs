//! Past broadcasts: the recordings of the channel a watch page follows
//! (`/recordings/{channelId}`, ended ones only), each with its first
//! thumbnail, its start and its length; "Play" plays one in a player of its
//! own (the page's player kind) below the live one, which it never touches.
//!
//! The list is asked for again every [`POLL_MS`], so a broadcast that just
//! ended appears once its recording's reconnect window has passed. A
//! channel that does not record, or a page that cannot ask, shows nothing.

use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use send_wrapper::SendWrapper;

use crate::api::{self, Recording};
use crate::components::stream::Source;
use crate::player::{Callbacks, Player, PlayerKind};

/// How often the list is asked for.
const POLL_MS: i32 = 5000;

/// Where the recording player is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Playback {
    Idle,
    Loading,
    Playing,
    /// Played to the end.
    Ended,
    Failed,
}

impl Playback {
    fn as_str(self) -> &'static str {
        match self {
            Playback::Idle => "idle",
            Playback::Loading => "loading",
            Playback::Playing => "playing",
            Playback::Ended => "ended",
            Playback::Failed => "failed",
        }
    }
}

/// The channel a source plays: a stage group's from `/api/list`.
async fn channel_of(source: &Source) -> Option<String> {
    match source {
        Source::Channel(id) => Some(id.clone()),
        Source::Stage(group) => api::group_status(group).await.ok().flatten().and_then(|g| g.channel_id),
    }
}

#[component]
pub fn PastBroadcasts(source: Source, kind: PlayerKind, token: Option<String>) -> impl IntoView {
    let (items, set_items) = signal(Vec::<Recording>::new());
    let (selected, set_selected) = signal(None::<String>);
    let (playback, set_playback) = signal(Playback::Idle);
    let alive = Rc::new(std::cell::Cell::new(true));
    let player: Rc<RefCell<Option<Player>>> = Rc::default();
    let video = NodeRef::<leptos::html::Video>::new();

    let poll_alive = alive.clone();
    let poll_token = token.clone();
    spawn_local(async move {
        let mut channel = None;
        while poll_alive.get() {
            if channel.is_none() {
                channel = channel_of(&source).await;
            }
            if let Some(id) = &channel {
                match api::recordings(id, poll_token.as_deref()).await {
                    Ok(list) => {
                        let ended: Vec<Recording> = list.into_iter().filter(|r| r.ended).collect();
                        // Unchanged: leave the list (and its images) as they are.
                        if items.get_untracked() != ended {
                            set_items.set(ended);
                        }
                    }
                    Err(e) => leptos::logging::log!("recordings: {e}"),
                }
            }
            api::sleep(POLL_MS).await;
        }
    });

    let for_play = SendWrapper::new(player.clone());
    let play = move |url: String| {
        let Some(video) = video.get_untracked() else { return };
        drop(for_play.borrow_mut().take());
        set_selected.set(Some(url.clone()));
        set_playback.set(Playback::Loading);
        let url = match &token {
            Some(t) => format!("{url}?token={}", String::from(js_sys::encode_uri_component(t))),
            None => url,
        };
        let slot = Rc::downgrade(&*for_play);
        spawn_local(async move {
            let callbacks = Callbacks {
                on_playing: Box::new(move || set_playback.set(Playback::Playing)),
                on_gone: Box::new(move |why| {
                    leptos::logging::log!("recording player: {why}");
                    set_playback.set(if why == "ended" { Playback::Ended } else { Playback::Failed });
                }),
                on_cue: Box::new(|_| {}),
            };
            match Player::start(kind, &video, &url, callbacks).await {
                Ok(p) => match slot.upgrade() {
                    Some(slot) => *slot.borrow_mut() = Some(p),
                    None => drop(p),
                },
                Err(e) => {
                    leptos::logging::log!("recording player: {e}");
                    set_playback.set(Playback::Failed);
                }
            }
        });
    };
    let for_cleanup = SendWrapper::new((alive, player));
    on_cleanup(move || {
        for_cleanup.0.set(false);
        drop(for_cleanup.1.borrow_mut().take());
    });

    view! {
        <section class="recordings" data-testid="recordings" hidden=move || items.get().is_empty()>
            <h2>"Past broadcasts"</h2>
            <ul>
                // A plain list, rebuilt on each change (a handful of items):
                // smaller than a keyed <For> in the page's wasm.
                {move || {
                    items
                        .get()
                        .into_iter()
                        .map(|r| {
                            let play = play.clone();
                            let url = r.playback_url.clone();
                            let total = r.duration_seconds.round() as u64;
                            view! {
                                <li data-testid="recording" data-id=r.id.clone()>
                                    {r.thumbnail.clone().map(|src| view! {
                                        <img data-testid="recording-thumbnail" src=src alt="" width="160" />
                                    })}
                                    <span class="when">{r.start_time.replace('T', " ").chars().take(16).collect::<String>()}</span>
                                    <span class="length">{format!("{}:{:02}", total / 60, total % 60)}</span>
                                    <button data-testid="recording-play" on:click=move |_| play(url.clone())>"Play"</button>
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ul>
            <video
                node_ref=video
                data-testid="recording-video"
                data-playback=move || playback.get().as_str()
                hidden=move || selected.get().is_none()
                muted=true
                playsinline=true
                controls=true
            ></video>
        </section>
    }
}
