//! Serves the sample app (`www/`, at `/`), the built npm package
//! (`sdk/pkg/`, at `/sdk/`) and the watch page (`viewer/dist/`: its
//! `index.html` for every `/watch/{groupId}` and `/watch/channel/{channelId}`,
//! its files at `/viewer/`), exactly the files a user would deploy.

use axum::Router;
use tower_http::services::{ServeDir, ServeFile};

use crate::Config;

/// Static files only: the router needs no state, so it fits any.
pub fn router<S: Clone + Send + Sync + 'static>(config: &Config) -> Router<S> {
    // The page reads the group or channel id from its own path, so all get the same file.
    let watch_page = ServeFile::new(config.viewer_dir.join("index.html"));
    Router::new()
        .route_service("/watch/{group_id}", watch_page.clone())
        .route_service("/watch/{group_id}/", watch_page.clone())
        .route_service("/watch/channel/{channel_id}", watch_page.clone())
        .route_service("/watch/channel/{channel_id}/", watch_page)
        .nest_service("/viewer", ServeDir::new(&config.viewer_dir))
        .nest_service("/sdk", ServeDir::new(&config.sdk_dir))
        .fallback_service(ServeDir::new(&config.www_dir).append_index_html_on_directories(true))
}
