//! The router: the page for the current path (one page per file under `routes/`).

use leptos::prelude::*;

use crate::routes::{channel::ChannelPage, not_found::NotFound, watch::WatchPage};

/// The pages a path can name.
enum Route {
    /// `/watch/{groupId}`: a stage group of the sample app.
    Group(String),
    /// `/watch/channel/{channelId}`: any channel.
    Channel(String),
}

/// The one id segment of `rest` (a trailing slash allowed).
fn single_segment(rest: &str) -> Option<String> {
    let id = rest.trim_end_matches('/');
    (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/watch/")?;
    match rest.strip_prefix("channel/") {
        Some(channel) => single_segment(channel).map(Route::Channel),
        None => single_segment(rest).map(Route::Group),
    }
}

/// The app root.
#[component]
pub fn App() -> impl IntoView {
    let path = window().location().pathname().unwrap_or_default();
    match route(&path) {
        Some(Route::Group(group_id)) => view! { <WatchPage group_id=group_id /> }.into_any(),
        Some(Route::Channel(channel_id)) => {
            view! { <ChannelPage channel_id=channel_id /> }.into_any()
        }
        None => view! { <NotFound /> }.into_any(),
    }
}
