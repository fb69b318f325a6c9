//! ICE servers for clients: configured STUN URLs, and TURN URLs with
//! time-limited credentials in the TURN REST API scheme that coturn checks
//! with `use-auth-secret` / `static-auth-secret` (draft-uberti-behave-turn-rest):
//! username `<expiry unix time>:<user>`, credential
//! `base64(HMAC-SHA1(secret, username))`. The server never talks to the TURN
//! server; both only share the secret.
//!
//! The same list reaches browsers in the event plane's CONFIG frame and WHIP
//! clients as `Link: <url>; rel="ice-server"` headers (RFC 9725 §4.4,
//! [`link_headers`]).

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stagecast_protocol::events::IceServer;
use stagecast_protocol::token::ParticipantClaims;

pub use crate::config::TurnConfig;

/// The ICE servers for `user` (a participant or channel id) at `now_unix`:
/// one entry with every STUN URL, one with every TURN URL and a credential
/// valid for `config.lifetime`. Empty when nothing is configured.
pub fn ice_servers(config: &TurnConfig, now_unix: i64, user: &str) -> Vec<IceServer> {
    ice_servers_until(config, now_unix, user, i64::MAX)
}

/// [`ice_servers`] whose TURN credential expires no later than `not_after`
/// (e.g. the participant token's `exp`): a relay must not outlive the right
/// to be on the stage.
pub fn ice_servers_until(config: &TurnConfig, now_unix: i64, user: &str, not_after: i64) -> Vec<IceServer> {
    let mut servers = Vec::new();
    if !config.stun_urls.is_empty() {
        servers.push(IceServer { urls: config.stun_urls.clone(), username: None, credential: None });
    }
    if let Some(secret) = config.secret.as_ref().filter(|_| !config.urls.is_empty()) {
        let lifetime = i64::try_from(config.lifetime.as_secs()).unwrap_or(i64::MAX);
        let expiry = now_unix.saturating_add(lifetime).min(not_after);
        let username = format!("{expiry}:{}", username_part(user));
        let credential = credential(&secret.0, &username);
        servers.push(IceServer { urls: config.urls.clone(), username: Some(username), credential: Some(credential) });
    }
    servers
}

/// The ICE servers (STUN/TURN) a participant's peer connections must use
/// (`--stun-url`, `--turn-url` with `--turn-secret`), sent in the event
/// plane's CONFIG frame and as WHIP `Link` headers. TURN credentials expire
/// no later than the participant token.
pub fn for_participant(config: &TurnConfig, claims: &ParticipantClaims) -> Vec<IceServer> {
    ice_servers_until(config, crate::auth::now_unix(), &claims.jti, claims.exp)
}

/// `base64(HMAC-SHA1(secret, username))`, as coturn computes it.
pub fn credential(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The user part of a TURN username: ids are alphanumeric already, but the
/// username also travels inside a quoted `Link` parameter and coturn splits
/// it at the first `:`, so anything else becomes `_`.
fn username_part(user: &str) -> String {
    user.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// One `Link` header value per URL (RFC 9725 §4.4):
/// `<turn:host?transport=tcp>; rel="ice-server"; username="…"; credential="…"; credential-type="password"`.
pub fn link_headers(servers: &[IceServer]) -> Vec<String> {
    let mut out = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut value = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(username), Some(credential)) = (&server.username, &server.credential) {
                value.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quoted(username),
                    quoted(credential)
                ));
            }
            out.push(value);
        }
    }
    out
}

/// Append one `Link` header per entry of [`link_headers`] to `headers`.
pub fn add_links(headers: &mut HeaderMap, servers: &[IceServer]) {
    for link in link_headers(servers) {
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, value);
        }
    }
}

/// The answer to `OPTIONS` on a WHIP endpoint (RFC 9725 §4.4): 204 with
/// `Allow`, the CORS preflight headers (a browser on another origin
/// preflights its POST), and `servers` as `Link` headers. Callers pass
/// servers only for an authenticated request: a CORS preflight carries no
/// credentials, and TURN credentials must not go to anyone who asks.
pub fn whip_options_response(allow: &'static str, servers: &[IceServer]) -> Response {
    let cors: [(HeaderName, &'static str); 5] = [
        (header::ALLOW, allow),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (header::ACCESS_CONTROL_ALLOW_METHODS, allow),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, "authorization, content-type"),
        (header::ACCESS_CONTROL_EXPOSE_HEADERS, "location, content-type, link"),
    ];
    let mut response = (StatusCode::NO_CONTENT, cors.map(|(n, v)| (n, HeaderValue::from_static(v)))).into_response();
    add_links(response.headers_mut(), servers);
    response
}

/// The inside of an RFC 9110 quoted-string.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_ascii_control())
        .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::time::Duration;

    fn config() -> TurnConfig {
        TurnConfig {
            urls: vec!["turn:turn.example.com:3478?transport=tcp".into(), "turns:turn.example.com:5349".into()],
            secret: Some(Secret("north".into())),
            lifetime: Duration::from_secs(43_200),
            stun_urls: vec!["stun:stun.example.com:3478".into()],
        }
    }

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let servers = ice_servers(&config(), 1_700_000_000, "pAlice");
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0], IceServer { urls: vec!["stun:stun.example.com:3478".into()], username: None, credential: None });
        let turn = &servers[1];
        assert_eq!(turn.urls.len(), 2);
        assert_eq!(turn.username.as_deref(), Some("1700043200:pAlice"));
        // python3: base64(hmac.new(b"north", b"1700043200:pAlice", sha1).digest())
        assert_eq!(turn.credential.as_deref(), Some("mOGAic2IrwpiziM00aLlI0dgX8U="));
    }

    #[test]
    fn the_credential_never_outlives_the_token() {
        let servers = ice_servers_until(&config(), 1_700_000_000, "p", 1_700_000_600);
        assert_eq!(servers[1].username.as_deref(), Some("1700000600:p"));
        let servers = ice_servers_until(&config(), 1_700_000_000, "p", i64::MAX);
        assert_eq!(servers[1].username.as_deref(), Some("1700043200:p"));
    }

    #[test]
    fn nothing_configured_means_no_servers_and_no_headers() {
        assert!(ice_servers(&TurnConfig::default(), 0, "p").is_empty());
        let no_secret = TurnConfig { secret: None, ..config() };
        assert_eq!(ice_servers(&no_secret, 0, "p").len(), 1, "STUN only");
        assert!(link_headers(&[]).is_empty());
    }

    #[test]
    fn odd_user_ids_cannot_break_the_username_or_the_header() {
        let servers = ice_servers(&config(), 10, "a:b\"c>d");
        assert_eq!(servers[1].username.as_deref(), Some("43210:a_b_c_d"));
    }

    #[test]
    fn link_headers_carry_one_url_each_with_the_credential() {
        let links = link_headers(&ice_servers(&config(), 1_700_000_000, "pAlice"));
        assert_eq!(
            links,
            [
                "<stun:stun.example.com:3478>; rel=\"ice-server\"".to_owned(),
                "<turn:turn.example.com:3478?transport=tcp>; rel=\"ice-server\"; username=\"1700043200:pAlice\"; \
                 credential=\"mOGAic2IrwpiziM00aLlI0dgX8U=\"; credential-type=\"password\""
                    .to_owned(),
                "<turns:turn.example.com:5349>; rel=\"ice-server\"; username=\"1700043200:pAlice\"; \
                 credential=\"mOGAic2IrwpiziM00aLlI0dgX8U=\"; credential-type=\"password\""
                    .to_owned(),
            ]
        );
    }
}
