//! Stagecast server: one binary that is the control plane (`/v1`), the demo
//! backend (`/api`), the stage event plane (WebSocket), the stage SFU (WHIP /
//! WHEP-style over one UDP port, on str0m) and the web host of the sample app.
//!
//! [`app`] builds the HTTP router from an [`AppState`] so tests can drive it
//! without a socket; [`start`] binds the sockets and runs everything.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod api;
pub mod auth;
pub mod channel;
pub mod chat;
pub mod config;
pub mod error;
pub mod sfu;
pub mod stage;
pub mod store;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;

pub use config::Config;
pub use error::AppError;

/// Everything a request handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

pub struct AppInner {
    pub config: Config,
    /// The embedded SQLite store (behind a trait so another backend can replace it).
    pub store: Arc<dyn store::Store>,
    /// Token signing key and imported public keys.
    pub keys: auth::KeyRing,
    /// The control-plane API key (`Authorization: Bearer <api key>` on `/v1`).
    pub api_key: String,
    /// Live stages: who is connected, their published/mute state, event-plane sockets.
    pub stages: stage::StageHub,
    /// The SFU driver (owns the UDP socket).
    pub sfu: sfu::SfuHandle,
    /// Chat rooms (IVS Chat protocol): stored rooms, chat tokens, live connections.
    pub chat: chat::ChatHub,
    /// Channels: stored channels, live broadcasts (WHIP ingest) and their LL-HLS packagers.
    pub channels: channel::ChannelHub,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self { inner: Arc::new(inner) }
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(api::router())
        .merge(stage::router())
        .merge(sfu::router())
        .merge(chat::router())
        .merge(channel::router())
        .merge(web::router(&state.config))
        .with_state(state)
}

/// A running server, as `start` returns it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub media_addr: SocketAddr,
    pub state: AppState,
    pub api_key_was_generated: bool,
    pub task: tokio::task::JoinHandle<()>,
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// Bind the HTTP listener and the media UDP socket, open the store, load or
/// create keys, and serve until the task is aborted.
pub async fn start(config: Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store: Arc<dyn store::Store> = Arc::new(store::SqliteStore::open(&config.data_dir.join("stagecast.db"))?);
    let keys = auth::KeyRing::load_or_create(&config.data_dir, store.as_ref())?;
    let (api_key, api_key_was_generated) = auth::load_or_create_api_key(&config)?;
    let chat = chat::ChatHub::open(&config.data_dir)?;
    let channels = channel::ChannelHub::open(&config.data_dir, config.media_bind_ip, config.public_ip)?;

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Bind { what: "HTTP", addr: config.listen.clone(), source })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { what: "HTTP", addr: config.listen.clone(), source })?;

    let media_bind = format!("{}:{}", config.media_bind_ip, config.media_port);
    let udp = tokio::net::UdpSocket::bind(&media_bind)
        .await
        .map_err(|source| StartError::Bind { what: "media UDP", addr: media_bind.clone(), source })?;
    let media_addr = udp
        .local_addr()
        .map_err(|source| StartError::Bind { what: "media UDP", addr: media_bind.clone(), source })?;
    let candidate = SocketAddr::new(config.public_ip, media_addr.port());

    let (sfu, sfu_events) = sfu::SfuHandle::start(udp, candidate);
    let stages = stage::StageHub::new(sfu.clone(), sfu_events);

    let mut config = config;
    config.bound_http = Some(http_addr);
    let state = AppState::new(AppInner { config, store, keys, api_key, stages, sfu, chat, channels });
    let router = app(state.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(Running { http_addr, media_addr, state, api_key_was_generated, task })
}
