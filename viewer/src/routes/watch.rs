//! `/watch/{groupId}` and `/watch/channel/{channelId}`: one page for both.
//!
//! The stream (player, state, latency) is the shared [`StreamView`] component,
//! so both get the same states and the same stuck-player replacement. A
//! stage's page adds its chat room once the backend has said the stage
//! exists, and drops it if the stage goes away; a channel has no chat room.
//! Below, both list the channel's past broadcasts ([`PastBroadcasts`]).

use leptos::prelude::*;
use web_sys::UrlSearchParams;

use crate::components::chat::ChatPanel;
use crate::components::recordings::PastBroadcasts;
use crate::components::stream::{Source, StreamView};
use crate::player::PlayerKind;
use crate::state::StreamState;

fn query_param(name: &str) -> Option<String> {
    let search = window().location().search().ok()?;
    UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

/// The watch page of one stage group or channel.
#[component]
pub fn WatchPage(source: Source) -> impl IntoView {
    let kind = PlayerKind::from_query(query_param("player").as_deref());
    let token = query_param("token").filter(|t| !t.is_empty());
    let state = RwSignal::new(StreamState::Connecting);
    let chat_group = match &source {
        Source::Stage(group_id) => Some(group_id.clone()),
        Source::Channel(_) => None,
    };
    let with_chat = chat_group.is_some();
    let chat_shown = move || with_chat && state.get().exists();

    view! {
        <header class="topbar">
            <a class="brand" href="/"><span class="logo" aria-hidden="true"></span>"Stagecast"</a>
            <span class="who" data-testid="player-kind">{kind.label()}</span>
        </header>
        <main class="viewer" class:solo=move || !chat_shown()>
            <StreamView source=source.clone() kind=kind token=token.clone() state=state />
            {chat_group.map(|group_id| view! {
                <Show when=chat_shown>
                    <ChatPanel group_id=group_id.clone() />
                </Show>
            })}
        </main>
        <PastBroadcasts source=source kind=kind token=token />
    }
}
