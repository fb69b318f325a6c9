//! Playback authorization for private channels (IVS `authorized: true`).
//!
//! The first request a player makes (a playlist) carries `?token=<JWT>`: an
//! ES384 playback token signed by an imported playback key
//! ([`super::playback_keys`]) whose `aws:channel-arn` names this channel (its
//! ARN or id), before `exp`, from an allowed origin
//! (`aws:access-control-allow-origin`, checked on the token's request as
//! IVS does). The answer's playlist then hands out every URI with
//! `?session=<exp>.<key id>.<mac>`: a value the server signs (HMAC under a
//! key derived from its signing key) that binds the channel, the token's
//! expiry and the key that signed it. Every later request (playlist
//! reloads, init, parts, segments, prefetch streams) shows that value, so
//! the player needs no new token per request; past `exp`, or once the key
//! is deleted, the next request is refused. Refusals are `403` with the
//! JSON error shape (the IVS Player reports 403 as an authorization error).
//!
//! Tokens and session values are credentials: nothing here logs them.

use std::collections::HashMap;

use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};

use super::ChannelHub;
use crate::auth::{self, AuthError, KeyRing};
use crate::AppError;

/// The query parameter that carries a playback token.
pub const TOKEN_PARAM: &str = "token";
/// The query parameter that carries a session value.
pub const SESSION_PARAM: &str = "session";
/// What the session MAC key is derived for (from the server's signing key).
pub const SESSION_KEY_PURPOSE: &str = "stagecast channel playback session v1";
/// Bytes of HMAC-SHA256 kept in a session value (128 bits).
const MAC_BYTES: usize = 16;

/// How an HLS request of a channel may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A public channel: no token needed.
    Open,
    /// A private channel, authorized: every URI a playlist hands out
    /// carries this session value.
    Granted { session: String },
}

/// What an HLS request shows: its query and its `Origin` header.
pub struct Presented<'a> {
    pub query: &'a HashMap<String, String>,
    pub origin: Option<&'a str>,
}

/// Decide whether this request of `channel` may be served (`now`: Unix
/// seconds). `keys` gives the session MAC key (derived from the server's
/// signing key, so sessions survive a restart).
pub fn check(
    hub: &ChannelHub,
    keys: &KeyRing,
    channel: &str,
    req: &Presented<'_>,
    now: i64,
) -> Result<Access, AppError> {
    if !hub.is_authorized(channel) {
        return Ok(Access::Open);
    }
    let secret = &keys.derive_key(SESSION_KEY_PURPOSE);
    if let Some(token) = req.query.get(TOKEN_PARAM).filter(|t| !t.is_empty()) {
        let verified = auth::verify_playback(hub.playback_keys(), token, now).map_err(refused)?;
        let claims = &verified.claims;
        if claims.channel_arn != channel && claims.channel_arn != super::channel_arn(channel) {
            return Err(forbidden("TOKEN_NOT_ALLOWED", "this playback token is for another channel"));
        }
        if let (Some(allowed), Some(origin)) = (claims.allow_origin.as_deref(), req.origin) {
            if !origin_allowed(allowed, origin) {
                let message = "this playback token does not allow playback on this origin";
                return Err(forbidden("ORIGIN_NOT_ALLOWED", message));
            }
        }
        return Ok(Access::Granted { session: session_value(secret, channel, claims.exp, &verified.key_id) });
    }
    if let Some(session) = req.query.get(SESSION_PARAM).filter(|s| !s.is_empty()) {
        check_session(hub, secret, channel, session, now)?;
        return Ok(Access::Granted { session: session.clone() });
    }
    Err(forbidden(
        "PLAYBACK_TOKEN_REQUIRED",
        "this channel is private: play it with ?token=<playback token> on its playback URL",
    ))
}

fn forbidden(code: &'static str, message: &str) -> AppError {
    AppError::new(StatusCode::FORBIDDEN, code, message)
}

/// A token that does not check out is a 403 (what players expect of a
/// private stream), with the token error's code.
fn refused(e: AuthError) -> AppError {
    let mut error = AppError::from(e);
    if error.status == StatusCode::UNAUTHORIZED {
        error.status = StatusCode::FORBIDDEN;
    }
    error
}

fn mac(secret: &[u8; 32], channel: &str, exp: i64, key_id: &str) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("invariant: HMAC takes any key length");
    mac.update(format!("{channel}\n{exp}\n{key_id}").as_bytes());
    mac.finalize().into_bytes().iter().take(MAC_BYTES).copied().collect()
}

/// `<exp>.<key id>.<mac>`: URL-safe as it is (digits, the key id's letters,
/// digits and `-`, base64url).
fn session_value(secret: &[u8; 32], channel: &str, exp: i64, key_id: &str) -> String {
    format!("{exp}.{key_id}.{}", URL_SAFE_NO_PAD.encode(mac(secret, channel, exp, key_id)))
}

fn check_session(hub: &ChannelHub, secret: &[u8; 32], channel: &str, value: &str, now: i64) -> Result<(), AppError> {
    let invalid = || forbidden("TOKEN_INVALID", "the playback session is not valid for this channel");
    let mut parts = value.split('.');
    let (Some(exp), Some(key_id), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let exp: i64 = exp.parse().map_err(|_| invalid())?;
    let expected = URL_SAFE_NO_PAD.encode(mac(secret, channel, exp, key_id));
    if !auth::constant_time_eq(&expected, tag) {
        return Err(invalid());
    }
    if exp <= now {
        return Err(forbidden("TOKEN_EXPIRED", "the playback token has expired: load the stream with a new one"));
    }
    if !hub.playback_keys().contains(key_id) {
        return Err(forbidden("TOKEN_INVALID", "the playback key that signed this token was deleted"));
    }
    Ok(())
}

/// Whether `origin` (an `Origin` header) is in `allowed`: a comma-separated
/// list of origins, each exact (case aside), `*`, or with a host that starts
/// with `*.` (any subdomain, e.g. `https://*.example.com`).
pub fn origin_allowed(allowed: &str, origin: &str) -> bool {
    let origin = origin.trim();
    allowed.split(',').map(str::trim).filter(|a| !a.is_empty()).any(|a| {
        if a == "*" || a.eq_ignore_ascii_case(origin) {
            return true;
        }
        let Some((scheme, domain)) = a.split_once("://*.") else {
            return false;
        };
        let Some(host) = origin.get(..scheme.len() + 3).filter(|p| p.eq_ignore_ascii_case(&format!("{scheme}://")))
        else {
            return false;
        };
        let rest = &origin[host.len()..];
        let suffix = format!(".{domain}");
        rest.len() > suffix.len()
            && rest.get(rest.len() - suffix.len()..).is_some_and(|s| s.eq_ignore_ascii_case(&suffix))
    })
}

/// `playlist` with `session=<value>` added to every URI it names: the URI
/// lines, every `URI="…"` attribute (maps, parts, preload hints, rendition
/// reports) and `#EXT-X-PREFETCH:` lines.
pub fn with_session(playlist: &str, session: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + playlist.len() / 2);
    let add = |out: &mut String, uri: &str| {
        out.push_str(uri);
        out.push(if uri.contains('?') { '&' } else { '?' });
        out.push_str(SESSION_PARAM);
        out.push('=');
        out.push_str(session);
    };
    for line in playlist.lines() {
        if let Some(uri) = line.strip_prefix("#EXT-X-PREFETCH:") {
            out.push_str("#EXT-X-PREFETCH:");
            add(&mut out, uri);
        } else if line.starts_with('#') {
            let mut rest = line;
            while let Some(at) = rest.find("URI=\"") {
                let (head, tail) = rest.split_at(at + 5);
                out.push_str(head);
                let Some(end) = tail.find('"') else {
                    rest = tail;
                    break;
                };
                add(&mut out, &tail[..end]);
                rest = &tail[end..];
            }
            out.push_str(rest);
        } else if line.trim().is_empty() {
            out.push_str(line);
        } else {
            add(&mut out, line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_uri_of_a_playlist_carries_the_session() {
        let playlist = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PART:DURATION=0.33,URI=\"part3.0.m4s\",INDEPENDENT=YES\n\
#EXTINF:1.0,\nseg3.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part4.1.m4s\"\n#EXT-X-PREFETCH:seg4.m4s\n\
#EXT-X-STREAM-INF:BANDWIDTH=1\nmedia.m3u8?x=1\n";
        let out = with_session(playlist, "9.pbk-a.M");
        let expected = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4?session=9.pbk-a.M\"\n\
#EXT-X-PART:DURATION=0.33,URI=\"part3.0.m4s?session=9.pbk-a.M\",INDEPENDENT=YES\n#EXTINF:1.0,\nseg3.m4s?session=9.pbk-a.M\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part4.1.m4s?session=9.pbk-a.M\"\n#EXT-X-PREFETCH:seg4.m4s?session=9.pbk-a.M\n\
#EXT-X-STREAM-INF:BANDWIDTH=1\nmedia.m3u8?x=1&session=9.pbk-a.M\n";
        assert_eq!(out, expected);
        assert_eq!(with_session("#EXT-X-MAP:URI=\"broken\n", "s"), "#EXT-X-MAP:URI=\"broken\n", "no closing quote: as is");
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        assert!(origin_allowed("*", "https://a.example"));
        assert!(origin_allowed("https://a.example, https://b.example", "https://b.example"));
        assert!(origin_allowed("https://*.example.com", "https://www.example.com"));
        assert!(origin_allowed("HTTPS://*.Example.com", "https://a.b.example.com"));
        assert!(!origin_allowed("https://*.example.com", "https://example.com"));
        assert!(!origin_allowed("https://*.example.com", "https://evil-example.com"));
        assert!(!origin_allowed("https://*.example.com", "http://www.example.com"));
        assert!(!origin_allowed("https://a.example", "https://a.example.evil"));
        assert!(!origin_allowed("", "https://a.example"));
    }

    #[test]
    fn a_session_is_bound_to_its_channel_expiry_and_key() {
        let secret = [7u8; 32];
        let value = session_value(&secret, "ch-a", 100, "pbk-1");
        let tag = value.rsplit('.').next().unwrap_or_default();
        assert_eq!(URL_SAFE_NO_PAD.encode(mac(&secret, "ch-a", 100, "pbk-1")), tag);
        assert_ne!(URL_SAFE_NO_PAD.encode(mac(&secret, "ch-b", 100, "pbk-1")), tag, "another channel");
        assert_ne!(URL_SAFE_NO_PAD.encode(mac(&secret, "ch-a", 101, "pbk-1")), tag, "a later expiry");
        assert_ne!(URL_SAFE_NO_PAD.encode(mac(&secret, "ch-a", 100, "pbk-2")), tag, "another key");
        assert_ne!(URL_SAFE_NO_PAD.encode(mac(&[8u8; 32], "ch-a", 100, "pbk-1")), tag, "another server");
        assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "URL-safe: {value}");
    }
}
