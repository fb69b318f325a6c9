//! The router: the page for the current path (one page per file under `routes/`).

use leptos::prelude::*;

use crate::routes::{not_found::NotFound, watch::WatchPage};

/// The group id in `/watch/{groupId}`, if the path is a watch page.
fn group_from_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/watch/")?;
    let id = rest.trim_end_matches('/');
    (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
}

/// The app root.
#[component]
pub fn App() -> impl IntoView {
    let path = window().location().pathname().unwrap_or_default();
    match group_from_path(&path) {
        Some(group_id) => view! { <WatchPage group_id=group_id /> }.into_any(),
        None => view! { <NotFound /> }.into_any(),
    }
}
