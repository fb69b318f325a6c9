//! The router: the page for the current path (one page per file under `routes/`).

use leptos::prelude::*;

use crate::components::stream::Source;
use crate::routes::{not_found::NotFound, watch::WatchPage};

/// The one id segment of `rest` (a trailing slash allowed).
fn single_segment(rest: &str) -> Option<String> {
    let id = rest.trim_end_matches('/');
    (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
}

/// The stream a path names: `/watch/{groupId}` a stage group of the sample
/// app, `/watch/channel/{channelId}` any channel.
fn route(path: &str) -> Option<Source> {
    let rest = path.strip_prefix("/watch/")?;
    match rest.strip_prefix("channel/") {
        Some(channel) => single_segment(channel).map(Source::Channel),
        None => single_segment(rest).map(Source::Stage),
    }
}

/// The app root.
#[component]
pub fn App() -> impl IntoView {
    let path = window().location().pathname().unwrap_or_default();
    match route(&path) {
        Some(source) => view! { <WatchPage source=source /> }.into_any(),
        None => view! { <NotFound /> }.into_any(),
    }
}
