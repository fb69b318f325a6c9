//! Server configuration: flags, environment, embedded defaults.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How the server runs. Every field has an embedded default, so `stagecast`
/// with no flags serves HTTP on 127.0.0.1:8080 with media on UDP+TCP 8443 and data in
/// `./data`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "stagecast", about = "Self-hostable multi-host live streaming")]
pub struct Config {
    /// HTTP listen address.
    #[arg(long, env = "STAGECAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The port for all WebRTC media, UDP and ICE-TCP (0 picks one free for both).
    #[arg(long, env = "STAGECAST_MEDIA_PORT", default_value_t = 8443)]
    pub media_port: u16,
    /// Address the media sockets (UDP and TCP) bind to.
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
    /// Most members (publishers and subscribe-only) one stage admits; the
    /// next join is refused with 409 STAGE_FULL, while a member reconnecting
    /// always gets back in. IVS allows 10,000 subscribers per stage; 1,000
    /// keeps a stage's full STAGE_STATE (sent to each joiner) near 1 MB with
    /// 1 KB attributes and the event plane's memory and join cost within a
    /// small host. Raise it on a bigger one.
    #[arg(long, env = "STAGECAST_MAX_STAGE_MEMBERS", default_value_t = 1000)]
    pub max_stage_members: usize,
    /// Seconds a participant whose event socket dropped (without leaving)
    /// stays on the stage with its media sessions, so a reconnect within it
    /// shows the others no leave/join. LiveKit uses about 15–20 s.
    #[arg(long, env = "STAGECAST_RECONNECT_GRACE_SECS", default_value_t = 20)]
    pub reconnect_grace_secs: u64,
    /// Seconds without any frame from an event-plane client before it is
    /// taken for dead (the server sends a WebSocket Ping every third of it,
    /// which browsers answer; the SDK also sends PING every 20 s).
    #[arg(long, env = "STAGECAST_EVENT_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub event_idle_timeout_secs: u64,
    /// Chat: SEND_MESSAGE requests one connection may make per second, on
    /// average. Below a room's own limit (IVS default 10/s for the whole
    /// room), so one sender cannot use up everyone's budget; its excess gets
    /// 429 and does not count against the room.
    #[arg(long, env = "STAGECAST_CHAT_CONNECTION_RATE", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub chat_connection_rate: u32,
    /// Chat: how many messages one connection may send back to back before
    /// `--chat-connection-rate` applies.
    #[arg(long, env = "STAGECAST_CHAT_CONNECTION_BURST", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub chat_connection_burst: u32,
    /// Chat: messages each room keeps (in memory) and sends to everyone who
    /// connects later, marked `"History": true` (0 keeps none; at most 200).
    #[arg(long, env = "STAGECAST_CHAT_HISTORY", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(0..=200))]
    pub chat_history: u16,
    /// Chat: seconds without any frame from a `/v1/chat` client before it is
    /// taken for dead and dropped (the server sends a WebSocket Ping every
    /// third of it, which browsers and the official client answer).
    #[arg(long, env = "STAGECAST_CHAT_IDLE_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(3..=3600))]
    pub chat_idle_timeout_secs: u32,
    /// Demo groups (`/api/create`: a stage, a channel and a chat room)
    /// created per client IP per minute, on top of the request limit (0 = no limit).
    #[arg(long, env = "STAGECAST_DEMO_CREATE_RATE", default_value_t = 10)]
    pub demo_create_per_minute: u32,
    /// A demo group whose stage has had nobody connected and whose channel
    /// has not been live for this many seconds is deleted with its stage,
    /// channel and room (0 = keep groups until their host deletes them).
    #[arg(long, env = "STAGECAST_DEMO_IDLE_SECS", default_value_t = 1800)]
    pub demo_idle_secs: u64,
    /// Serve HTTPS/WSS with this certificate chain (PEM). Needs `--tls-key`.
    /// Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "STAGECAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "STAGECAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "STAGECAST_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Believe `X-Forwarded-Proto`/`-Host`/`-For` from the one reverse proxy
    /// in front of this server. Off by default: without a proxy that
    /// overwrites them, any client could set them to dodge the demo rate
    /// limit or put another host into the URLs of the tokens it gets.
    #[arg(long, env = "STAGECAST_TRUST_FORWARDED_HEADERS")]
    pub trust_forwarded_headers: bool,
    #[command(flatten)]
    pub http: HttpLimits,
    /// Most simultaneous ICE-TCP connections on the media port.
    #[arg(long, env = "STAGECAST_MEDIA_TCP_MAX_CONNECTIONS", default_value_t = 2000)]
    pub media_tcp_max_connections: usize,
    /// SFU worker tasks sharing the media port; a stage's sessions stay on
    /// one. 0: one per core.
    #[arg(long, env = "STAGECAST_SFU_WORKERS", default_value_t = 0)]
    pub sfu_workers: usize,
    #[command(flatten)]
    pub turn: TurnConfig,
    /// Seconds a broadcast whose ingest was lost (not stopped) waits for its
    /// broadcaster: a new WHIP with the stream key within this window,
    /// also after a server restart, continues the same playlist after a
    /// discontinuity instead of ending it. 0 ends at once.
    #[arg(long, env = "STAGECAST_BROADCAST_RECONNECT_SECS", default_value_t = 20)]
    pub broadcast_reconnect_secs: u64,
    /// Serve `/metrics` without the API key (for a scraper on a private network).
    #[arg(long, env = "STAGECAST_PUBLIC_METRICS")]
    pub public_metrics: bool,
    /// POST every event (participant joined/left/published/unpublished,
    /// stream start/end) to this URL, signed (repeat the flag, or
    /// comma-separate the env var). `http://` only: put a TLS-terminating
    /// proxy in front of an `https://` receiver.
    #[arg(long = "webhook-url", env = "STAGECAST_WEBHOOK_URLS", value_delimiter = ',', value_parser = parse_webhook_url)]
    pub webhook_urls: Vec<String>,
    /// The webhook signing secret; generated into `<data>/webhook-secret` when absent.
    #[arg(long, env = "STAGECAST_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,
    /// How long one webhook request may take before it counts as failed.
    #[arg(long, env = "STAGECAST_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,
    /// After SIGTERM, how long existing stages and broadcasts may go on
    /// (new ones are refused) before the server exits anyway.
    #[arg(long, env = "STAGECAST_DRAIN_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Distributed mode: the Redis every node of the deployment shares
    /// (`redis://host:6379/0`; a password in the URL stays out of logs).
    /// Without it the server is one node with its SQLite file.
    #[arg(long, env = "STAGECAST_REDIS", hide_env_values = true)]
    pub redis: Option<Secret>,
    /// This node's name in distributed mode (unique per deployment);
    /// defaults to the host name and the HTTP port.
    #[arg(long, env = "STAGECAST_NODE_ID")]
    pub node_id: Option<String>,
    /// How the other nodes reach this one over HTTP in distributed mode
    /// (e.g. `http://10.0.0.5:8080`); defaults to `http://` and the bound
    /// listen address.
    #[arg(long, env = "STAGECAST_NODE_URL")]
    pub node_url: Option<String>,
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
            max_stage_members: 1000,
            reconnect_grace_secs: 20,
            event_idle_timeout_secs: 30,
            chat_connection_rate: 3,
            chat_connection_burst: 5,
            chat_history: 50,
            chat_idle_timeout_secs: 30,
            demo_create_per_minute: 100_000,
            demo_idle_secs: 1800,
            tls_cert: None,
            tls_key: None,
            tls_reload_interval: Duration::from_secs(10),
            trust_forwarded_headers: false,
            http: HttpLimits::default(),
            media_tcp_max_connections: 2000,
            sfu_workers: 0,
            turn: TurnConfig::default(),
            broadcast_reconnect_secs: 20,
            public_metrics: false,
            webhook_urls: Vec::new(),
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30 * 60),
            redis: None,
            node_id: None,
            node_url: None,
            bound_http: None,
        }
    }

    /// Whether the listener serves TLS (`--tls-cert` and `--tls-key`).
    pub fn serves_tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

/// Limits of the HTTP listener: what a slow, idle or numerous client can hold.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// A request head (and a TLS handshake) must arrive within this time of
    /// its first byte.
    #[arg(long = "http-header-timeout", env = "STAGECAST_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// A connection with no request in progress and no bytes coming in, or
    /// a request whose connection moves no bytes either way, is closed after
    /// this time. WebSockets, once upgraded, keep their own keepalive.
    #[arg(long = "http-idle-timeout", env = "STAGECAST_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// A request body must arrive in full within this time of the request head.
    #[arg(long = "http-body-timeout", env = "STAGECAST_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Most open HTTP connections (WebSockets included); keep it well below
    /// `ulimit -n`. Past it, new connections are closed at once.
    #[arg(long = "http-max-connections", env = "STAGECAST_HTTP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// External STUN/TURN servers handed to clients (`turn::ice_servers`).
#[derive(Debug, Clone, clap::Args)]
pub struct TurnConfig {
    /// A TURN server URL for clients, e.g. `turn:turn.example.com:3478?transport=tcp`
    /// or `turns:turn.example.com:5349` (repeat the flag, or comma-separate the env var).
    #[arg(long = "turn-url", env = "STAGECAST_TURN_URLS", value_delimiter = ',', requires = "secret", value_parser = parse_turn_url)]
    pub urls: Vec<String>,
    /// The TURN server's shared secret (coturn `use-auth-secret` +
    /// `static-auth-secret`): clients get time-limited credentials made from it.
    #[arg(long = "turn-secret", env = "STAGECAST_TURN_SECRET", hide_env_values = true, requires = "urls")]
    pub secret: Option<Secret>,
    /// How long a TURN credential stays valid (capped by the token's expiry).
    #[arg(long = "turn-credential-lifetime", env = "STAGECAST_TURN_CREDENTIAL_LIFETIME", default_value = "12h", value_parser = parse_duration)]
    pub lifetime: Duration,
    /// A STUN server URL for clients, e.g. `stun:stun.example.com:3478` (repeatable).
    #[arg(long = "stun-url", env = "STAGECAST_STUN_URLS", value_delimiter = ',', value_parser = parse_stun_url)]
    pub stun_urls: Vec<String>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self { urls: Vec::new(), secret: None, lifetime: Duration::from_secs(12 * 3600), stun_urls: Vec::new() }
    }
}

/// A string that never shows in `Debug` output (logs, panics).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("the secret must not be empty".to_owned());
        }
        Ok(Self(s.to_owned()))
    }
}

/// `90`, `90s`, `500ms`, `15m` or `12h`: a duration on the command line.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 10s, 500ms, 15m or 12h"))?;
    let millis = match unit {
        "ms" => Some(value),
        "" | "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        _ => return Err(format!("`{text}`: the unit must be ms, s, m or h")),
    };
    millis.map(Duration::from_millis).ok_or_else(|| format!("`{text}` is too long"))
}

/// An `http://` URL (the webhook client speaks plain HTTP).
fn parse_webhook_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    match text.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => Ok(text.to_owned()),
        _ if text.starts_with("https://") => {
            Err(format!("`{text}`: webhooks are sent over plain HTTP; use a TLS-terminating proxy for https"))
        }
        _ => Err(format!("`{text}` is not an http:// URL")),
    }
}

/// A `turn:`/`turns:` URI (RFC 7065) without spaces or characters that
/// would break a `Link` header.
fn parse_turn_url(text: &str) -> Result<String, String> {
    parse_ice_url(text, &["turn:", "turns:"])
}

/// A `stun:`/`stuns:` URI (RFC 7064).
fn parse_stun_url(text: &str) -> Result<String, String> {
    parse_ice_url(text, &["stun:", "stuns:"])
}

fn parse_ice_url(text: &str, schemes: &[&str]) -> Result<String, String> {
    let text = text.trim();
    let Some(rest) = schemes.iter().find_map(|s| text.strip_prefix(s)) else {
        return Err(format!("`{text}` must start with {}", schemes.join(" or ")));
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:[]?=&%".contains(c);
    if rest.is_empty() || !rest.chars().all(allowed) {
        return Err(format!("`{text}` is not a valid {} URL", schemes.join("/")));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        for bad in ["", "s", "-1s", "1.5s", "10 d", "10d", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ice_urls_need_their_scheme_and_no_header_breaking_characters() {
        assert!(parse_turn_url("turn:turn.example.com:3478?transport=tcp").is_ok());
        assert!(parse_turn_url("turns:[2001:db8::1]:5349").is_ok());
        assert!(parse_turn_url("stun:x").is_err());
        assert!(parse_turn_url("turn:a>; rel=\"x\"").is_err());
        assert!(parse_turn_url("turn:").is_err());
        assert!(parse_stun_url("stun:stun.example.com:3478").is_ok());
        assert!(parse_stun_url("turn:x").is_err());
    }

    #[test]
    fn webhook_urls_must_be_plain_http() {
        assert_eq!(parse_webhook_url(" http://backend.internal:9000/hooks "), Ok("http://backend.internal:9000/hooks".to_owned()));
        assert!(parse_webhook_url("https://example.com/hooks").is_err_and(|e| e.contains("TLS-terminating proxy")));
        for bad in ["", "http://", "ftp://x", "backend/hooks", "http://a b"] {
            assert!(parse_webhook_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = TurnConfig { secret: Some(Secret("hunter2".to_owned())), ..TurnConfig::default() };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
