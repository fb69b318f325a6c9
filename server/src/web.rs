//! Serves the sample app (`www/`, at `/`) and the built npm package
//! (`sdk/pkg/`, at `/sdk/`), exactly the files a user would deploy.

use axum::Router;
use tower_http::services::ServeDir;

use crate::{AppState, Config};

pub fn router(config: &Config) -> Router<AppState> {
    Router::new()
        .nest_service("/sdk", ServeDir::new(&config.sdk_dir))
        .fallback_service(ServeDir::new(&config.www_dir).append_index_html_on_directories(true))
}
