//! Any path that is not `/watch/{groupId}` or `/watch/channel/{channelId}`.

use leptos::prelude::*;

/// "No such page", with a way back to the sample app.
#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <main class="viewer">
            <h1>"Not found"</h1>
            <p>
                "Open a stage as " <code>"/watch/{groupId}"</code> ", a channel as "
                <code>"/watch/channel/{channelId}"</code> "." <a href="/">" Back to Stagecast"</a>
            </p>
        </main>
    }
}
