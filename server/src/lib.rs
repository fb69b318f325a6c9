//! Stagecast server: one binary that is the control plane (`/v1`), the demo
//! backend (`/api`), the stage event plane (WebSocket), the stage SFU (WHIP /
//! WHEP-style over one media port, UDP and ICE-TCP, on str0m) and the web
//! host of the sample app, over HTTP or HTTPS.
//!
//! [`app`] builds the HTTP router from an [`AppState`] so tests can drive it
//! without a socket; [`start`] binds the sockets and runs everything.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod api;
pub mod auth;
pub mod channel;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod ops;
pub mod sdp;
pub mod serve;
pub mod sfu;
pub mod stage;
pub mod store;
pub mod turn;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRef;
use axum::Router;

pub use config::Config;
pub use error::AppError;

/// The server's shared state: every hub and handle. Cheap to clone. No
/// area's routes take it: each takes its own state (`ChatState`,
/// `ChannelState`, …), which `FromRef` impls below build from this one in
/// [`app`]; `main` and the tests reach the hubs through it.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

pub struct AppInner {
    pub config: Arc<Config>,
    /// Stages, participants, keys, demo groups: SQLite, or Redis in distributed mode.
    pub store: Arc<dyn store::Store>,
    /// The API key, the token keys, and participant token checks.
    pub auth: auth::Auth,
    /// Live stages: who is connected, their published/mute state, event-plane sockets.
    pub stages: stage::StageHub,
    /// The SFU driver (owns the UDP socket).
    pub sfu: sfu::SfuHandle,
    /// Chat rooms (IVS Chat protocol): stored rooms, chat tokens, live connections.
    pub chat: chat::ChatHub,
    /// Channels: stored channels, live broadcasts (WHIP ingest) and their LL-HLS packagers.
    pub channels: channel::ChannelHub,
    /// Operator's view: HLS counters for `/metrics`, the webhook sink, draining.
    pub ops: ops::Ops,
    /// Distributed mode (`--redis`): the other nodes.
    pub cluster: Option<cluster::Cluster>,
    /// Distributed mode's node registry (`None` on a single node).
    pub nodes: Option<Arc<cluster::NodeRegistry>>,
    /// Who is on each stage, kept for a restart (SQLite) or for the next
    /// home of a stage (Redis).
    pub presence: Arc<dyn stage::presence::PresenceStore>,
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

    /// A handle for background tasks that does not keep the server alive.
    pub fn downgrade(&self) -> WeakAppState {
        WeakAppState(Arc::downgrade(&self.inner))
    }
}

/// [`AppState::downgrade`]: the state while the server still exists.
#[derive(Clone)]
pub struct WeakAppState(std::sync::Weak<AppInner>);

impl WeakAppState {
    pub fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(|inner| AppState { inner })
    }
}

impl FromRef<AppState> for auth::Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for chat::ChatState {
    fn from_ref(state: &AppState) -> Self {
        Self { chat: state.chat.clone(), auth: state.auth.clone(), config: state.config.clone() }
    }
}

impl FromRef<AppState> for channel::ChannelState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            channels: state.channels.clone(),
            auth: state.auth.clone(),
            config: state.config.clone(),
            ops: state.ops.clone(),
        }
    }
}

impl FromRef<AppState> for sfu::SfuState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            sfu: state.sfu.clone(),
            stages: state.stages.clone(),
            auth: state.auth.clone(),
            config: state.config.clone(),
            ops: state.ops.clone(),
        }
    }
}

impl FromRef<AppState> for stage::StageState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            stages: state.stages.clone(),
            auth: state.auth.clone(),
            config: state.config.clone(),
            ops: state.ops.clone(),
        }
    }
}

impl FromRef<AppState> for ops::OpsState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            ops: state.ops.clone(),
            store: state.store.clone(),
            stages: state.stages.clone(),
            sfu: state.sfu.clone(),
            chat: state.chat.clone(),
            channels: state.channels.clone(),
            auth: state.auth.clone(),
            config: state.config.clone(),
            nodes: state.nodes.clone(),
        }
    }
}

impl FromRef<AppState> for api::ApiState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
            auth: state.auth.clone(),
            config: state.config.clone(),
            stages: state.stages.clone(),
            chat: state.chat.clone(),
            channels: state.channels.clone(),
        }
    }
}

/// The whole HTTP surface: each area's router with its own state (taken
/// from the [`AppState`] through `FromRef`), merged.
pub fn app(state: AppState) -> Router {
    // Distributed mode: the event plane and the media plane of a stage
    // homed on another node are forwarded there.
    let stage_planes = Router::new()
        .merge(stage::router().with_state(stage::StageState::from_ref(&state)))
        .merge(sfu::router().with_state(sfu::SfuState::from_ref(&state)));
    let stage_planes = match &state.cluster {
        Some(cluster) => {
            let routing = cluster::stages::Routing {
                cluster: cluster.clone(),
                keys: state.auth.keys.clone(),
                stages: state.stages.clone(),
                config: state.config.clone(),
                nodes: state.nodes.clone(),
                presence: state.presence.clone(),
                store: state.store.clone(),
            };
            stage_planes.layer(axum::middleware::from_fn_with_state(routing, cluster::stages::route))
        }
        None => stage_planes,
    };
    Router::new()
        .merge(api::router().with_state(api::ApiState::from_ref(&state)))
        .merge(stage_planes)
        .merge(chat::router().with_state(chat::ChatState::from_ref(&state)))
        .merge(channel::router().with_state(channel::ChannelState::from_ref(&state)))
        .merge(ops::router().with_state(ops::OpsState::from_ref(&state)))
        .merge(web::router(&state.config))
        .layer(axum::middleware::from_fn(error::json_for_bare_errors))
        .with_state(state)
}

/// A running server, as `start` returns it.
pub struct Running {
    pub http_addr: SocketAddr,
    /// The media port's address: UDP and ICE-TCP.
    pub media_addr: SocketAddr,
    /// Whether the listener speaks HTTPS/WSS.
    pub tls: bool,
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
    #[error("TLS: {0}")]
    Tls(#[from] serve::TlsError),
    #[error(transparent)]
    ChatBus(#[from] chat::bus::BusError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

impl Running {
    /// `http://host:port` or `https://host:port` of the listener.
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.http_addr)
    }
}

/// Bind the HTTP listener and the media sockets (UDP and TCP on one port),
/// load the TLS certificate if configured, open the store, load or create
/// keys, and serve until the task is aborted.
pub async fn start(config: Config) -> Result<Running, StartError> {
    store::private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    // Bound first: a node's default id (distributed mode) names its port.
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Bind { what: "HTTP", addr: config.listen.clone(), source })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { what: "HTTP", addr: config.listen.clone(), source })?;
    let db = config.data_dir.join("stagecast.db");
    let redis = match &config.redis {
        Some(url) => Some(Arc::new(store::RedisPool::open(&url.0)?)),
        None => None,
    };
    let mut api_key_was_generated = false;
    if let Some(pool) = &redis {
        share_secrets(pool, &config, &mut api_key_was_generated)?;
    }
    let store: Arc<dyn store::Store> = match &redis {
        Some(pool) => Arc::new(store::RedisStore::new(pool.clone())),
        None => Arc::new(store::SqliteStore::open(&db)?),
    };
    let keys = auth::KeyRing::load_or_create(&config.data_dir, store.as_ref())?;
    let (api_key, generated_here) = auth::load_or_create_api_key(&config)?;
    let api_key_was_generated = api_key_was_generated || generated_here;
    let webhooks = match config.webhook_urls.is_empty() {
        true => ops::EventSink::none(),
        false => {
            let secret = auth::load_or_create_webhook_secret(&config)?;
            tracing::info!(urls = config.webhook_urls.len(), "webhooks on (signing secret: --webhook-secret or <data-dir>/webhook-secret)");
            ops::webhook::start(&config.webhook_urls, &secret, config.webhook_timeout)
        }
    };
    let node_id = config.node_id.clone().filter(|id| !id.trim().is_empty()).unwrap_or_else(|| default_node_id(http_addr.port()));
    let (rooms, channel_store): (Arc<dyn chat::store::RoomStore>, Arc<dyn channel::store::ChannelStore>) =
        match &redis {
            Some(pool) => (
                Arc::new(chat::store::RedisRoomStore::new(pool.clone())),
                Arc::new(channel::store::RedisChannelStore::new(pool.clone(), &node_id)),
            ),
            None => (
                Arc::new(chat::store::SqliteRoomStore::open(&db)?),
                Arc::new(channel::store::SqliteChannelStore::open(&db)?),
            ),
        };
    let chat = chat::ChatHub::open_with(rooms, &config.data_dir, chat::HubSettings::from(&config))?;
    if let Some(redis) = &config.redis {
        chat.attach_bus(chat::bus::start(&chat, &redis.0).await?);
        tracing::info!("chat rooms span the nodes sharing this Redis");
    }
    let reconnect_window = std::time::Duration::from_secs(config.broadcast_reconnect_secs);
    let channels = channel::ChannelHub::open_with(
        channel_store,
        &config.data_dir,
        config.media_bind_ip,
        config.public_ip,
        reconnect_window,
        webhooks.clone(),
    )?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let store = serve::CertStore::open(serve::TlsFiles { cert: cert.clone(), key: key.clone() })?;
            let acceptor = store.acceptor()?;
            serve::tls::spawn_reloader(&store, config.tls_reload_interval);
            Some(acceptor)
        }
        _ => None,
    };


    let media_bind = SocketAddr::new(config.media_bind_ip, config.media_port);
    let bind_error = |source| StartError::Bind { what: "media UDP+TCP", addr: media_bind.to_string(), source };
    let (udp, tcp) = sfu::bind_media(media_bind).await.map_err(bind_error)?;
    let media_addr = udp.local_addr().map_err(bind_error)?;
    let candidate = SocketAddr::new(config.public_ip, media_addr.port());

    let workers = match config.sfu_workers {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    let (sfu, sfu_events) = sfu::SfuHandle::start_with_tcp(udp, tcp, candidate, config.media_tcp_max_connections, workers);
    let stages = stage::StageHub::new(sfu.clone(), sfu_events).with_events(webhooks.clone());
    // Members of the previous run come back in their reconnect grace before
    // anyone can connect, so nobody is shown them leaving and joining. In
    // distributed mode presence is in Redis, and a stage's members come
    // back when a node becomes its home (cluster::stages::route).
    let presence: Arc<dyn stage::presence::PresenceStore> = match &redis {
        Some(pool) => Arc::new(stage::presence::RedisPresence::new(pool.clone())),
        None => {
            let presence = Arc::new(stage::presence::SqlitePresence::open(&config.data_dir.join("stagecast.db"))?);
            let grace = stage::reconnect_grace(&config);
            let restored = stage::presence::restore(&stages, presence.as_ref(), store.as_ref(), grace, auth::now_unix())?;
            if restored.members > 0 {
                tracing::info!(stages = restored.stages, members = restored.members, "restored stage presence");
            }
            presence
        }
    };
    stage::presence::spawn_writer(stages.downgrade(), presence.clone());

    let cluster = match &config.redis {
        Some(redis) => {
            let own_url = config.node_url.clone().unwrap_or_else(|| format!("http://{http_addr}"));
            let node_key = keys.derive_key("stagecast node-to-node v1");
            let cluster = cluster::Cluster::connect(&redis.0, own_url, node_key).await?;
            channels.attach_cluster(cluster.clone());
            cluster::stages::spawn_renewer(&cluster, &stages);
            tracing::info!(node = cluster.own_url(), "distributed mode: stages, channels and chat span the nodes sharing this Redis");
            Some(cluster)
        }
        None => None,
    };
    let mut config = config;
    config.bound_http = Some(http_addr);
    let limits = config.http.clone();
    let state = AppState::new(AppInner {
        config: Arc::new(config),
        auth: auth::Auth::new(keys, api_key, store.clone()),
        store,
        stages,
        sfu,
        chat,
        channels,
        ops: ops::Ops::new(ops::HlsMetrics::default(), webhooks),
        cluster,
        nodes: redis.map(|pool| Arc::new(cluster::NodeRegistry::new(pool, node_id))),
        presence,
    });
    if let Some(nodes) = &state.nodes {
        let server = state.downgrade();
        nodes.start_heartbeat(move || {
            let server = server.upgrade();
            async move { Some(this_node(&server?, candidate).await) }
        });
        tracing::info!(node = nodes.node_id(), "distributed mode: sharing state through Redis");
    }
    let server = state.downgrade();
    api::spawn_idle_sweeper(state.config.demo_idle_secs, move || server.upgrade().map(|s| api::ApiState::from_ref(&s)));
    let router = app(state.clone());
    let serves_tls = tls.is_some();
    let task = tokio::spawn(serve::serve(listener, router, limits, tls));
    Ok(Running { http_addr, media_addr, tls: serves_tls, state, api_key_was_generated, task })
}

/// Distributed mode: make this node's signing key, generated API key and
/// webhook secret the deployment's (see [`auth::shared`]); notes in
/// `generated` whether the API key was generated here now.
fn share_secrets(pool: &store::RedisPool, config: &Config, generated: &mut bool) -> Result<(), StartError> {
    auth::shared::sync_secret(pool, "signing-key", &auth::signing_key_path(&config.data_dir), auth::generate_signing_key_pem)?;
    if config.api_key.as_deref().map(str::trim).is_none_or(str::is_empty) {
        let new_key = || Ok(format!("{}{}", auth::API_KEY_PREFIX, auth::random_alphanumeric(40)));
        *generated = auth::shared::sync_secret(pool, "api-key", &auth::api_key_path(config), new_key)?;
    }
    if !config.webhook_urls.is_empty() && config.webhook_secret.is_none() {
        let new_secret = || Ok(format!("whsec_{}", auth::random_alphanumeric(40)));
        auth::shared::sync_secret(pool, "webhook-secret", &config.data_dir.join("webhook-secret"), new_secret)?;
    }
    Ok(())
}

/// A node's default id: the host's name and its HTTP port.
fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{port}")
}

/// This node as the registry lists it: where it is (`media`: the address
/// its ICE candidates advertise) and how loaded.
pub async fn this_node(state: &AppState, media: SocketAddr) -> cluster::NodeInfo {
    let config = &state.config;
    let http_url = config
        .public_url
        .as_deref()
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .or_else(|| config.bound_http.map(|a| format!("http://{a}")))
        .unwrap_or_default();
    let counts = state.stages.counts();
    let sessions = state.sfu.stats().await.map_or(0, |s| s.publish_sessions + s.subscribe_sessions);
    cluster::NodeInfo {
        node_id: state.nodes.as_ref().map_or_else(String::new, |n| n.node_id().to_owned()),
        http_url,
        node_url: state.cluster.as_ref().map_or_else(String::new, |c| c.own_url().to_owned()),
        media_addr: media.to_string(),
        stages: counts.stages,
        participants: counts.publishing + counts.not_publishing,
        sessions,
        draining: state.ops.is_draining(),
    }
}
