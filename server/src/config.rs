//! Server configuration: flags, environment, embedded defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// How the server runs. Every field has an embedded default, so `stagecast`
/// with no flags serves on 127.0.0.1:8080 with media on UDP 8443 and data in
/// `./data`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "stagecast", about = "Self-hostable multi-host live streaming")]
pub struct Config {
    /// HTTP listen address.
    #[arg(long, env = "STAGECAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// UDP port for all WebRTC media (0 picks a free one).
    #[arg(long, env = "STAGECAST_MEDIA_PORT", default_value_t = 8443)]
    pub media_port: u16,
    /// Address the media socket binds to.
    #[arg(long, env = "STAGECAST_MEDIA_BIND", default_value = "127.0.0.1")]
    pub media_bind_ip: IpAddr,
    /// Address advertised in ICE candidates (set to the public IP behind NAT).
    #[arg(long, env = "STAGECAST_PUBLIC_IP", default_value = "127.0.0.1")]
    pub public_ip: IpAddr,
    /// Base URL put into tokens (`events_url`, `whip_url`). Default: the
    /// `Host` of the request that minted the token.
    #[arg(long, env = "STAGECAST_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where the SQLite file, signing key and API key live.
    #[arg(long, env = "STAGECAST_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Control-plane API key; generated into `<data>/api-key` when absent.
    #[arg(long, env = "STAGECAST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Directory of the sample app (served at `/`).
    #[arg(long, env = "STAGECAST_WWW", default_value = "www")]
    pub www_dir: PathBuf,
    /// Directory of the built npm package (served at `/sdk/`).
    #[arg(long, env = "STAGECAST_SDK_PKG", default_value = "sdk/pkg")]
    pub sdk_dir: PathBuf,
    /// Directory of the built watch page (`/watch/{groupId}`; `cargo xtask build`).
    #[arg(long, env = "STAGECAST_VIEWER", default_value = "viewer/dist")]
    pub viewer_dir: PathBuf,
    /// Demo backend requests allowed per client IP per minute.
    #[arg(long, env = "STAGECAST_DEMO_RATE", default_value_t = 600)]
    pub demo_rate_per_minute: u32,
    /// Set by `start` once the listener is bound.
    #[arg(skip)]
    pub bound_http: Option<SocketAddr>,
}

impl Config {
    /// A configuration for tests: loopback, free ports, the given data dir.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            listen: "127.0.0.1:0".to_owned(),
            media_port: 0,
            media_bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_url: None,
            data_dir,
            api_key: None,
            www_dir: PathBuf::from("www"),
            sdk_dir: PathBuf::from("sdk/pkg"),
            viewer_dir: PathBuf::from("viewer/dist"),
            demo_rate_per_minute: 100_000,
            bound_http: None,
        }
    }
}
