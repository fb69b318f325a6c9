//! Where a request came from, as the URLs the server hands out and the
//! per-IP limits need it: the scheme and host the client used, and its IP.
//!
//! Directly, that is this listener's scheme (`https` with `--tls-cert`), the
//! `Host` header and the socket's peer address. Behind a TLS-terminating
//! reverse proxy, with `--trust-forwarded-headers`, it is what the proxy
//! says in `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-For`.
//! Of each, the last value counts: the one the proxy in front of us set or
//! appended (anything before it came from the client and proves nothing).

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap};

use crate::config::Config;

/// The scheme and host a client addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    /// `host[:port]`, if the request named a plausible one.
    pub host: Option<String>,
}

impl Origin {
    pub fn of(config: &Config, headers: &HeaderMap) -> Self {
        let forwarded = |name: &str| config.trust_forwarded_headers.then(|| last_value(headers, name)).flatten();
        let https = match forwarded("x-forwarded-proto") {
            Some(proto) => proto.eq_ignore_ascii_case("https"),
            None => config.serves_tls(),
        };
        let host = forwarded("x-forwarded-host")
            .filter(|h| is_plausible_host(h))
            .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| is_plausible_host(h)))
            .map(str::to_owned);
        Self { https, host }
    }

    pub fn http_scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    pub fn ws_scheme(&self) -> &'static str {
        if self.https {
            "wss"
        } else {
            "ws"
        }
    }
}

/// The client's IP: the socket peer, or with `--trust-forwarded-headers`
/// the last `X-Forwarded-For` entry (the address the proxy saw).
pub fn client_ip(config: &Config, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
    if config.trust_forwarded_headers {
        if let Some(ip) = last_value(headers, "x-forwarded-for").and_then(parse_ip) {
            return Some(ip);
        }
    }
    peer.map(|p| p.ip())
}

/// The last comma-separated value of the last `name` header.
fn last_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    value.rsplit(',').next().map(str::trim).filter(|v| !v.is_empty())
}

/// `203.0.113.7`, `2001:db8::1`, `203.0.113.7:4711` or `[2001:db8::1]:4711`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// A host goes into signed URLs, so only host[:port] characters pass.
pub fn is_plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::path::PathBuf;

    fn config(trust: bool, tls: bool) -> Config {
        let mut config = Config::for_tests(PathBuf::from("unused"));
        config.trust_forwarded_headers = trust;
        if tls {
            config.tls_cert = Some(PathBuf::from("cert.pem"));
            config.tls_key = Some(PathBuf::from("key.pem"));
        }
        config
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const PEER: Option<SocketAddr> = Some(SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)), 5000));

    #[test]
    fn without_trust_forwarded_headers_are_ignored() {
        let h = headers(&[
            ("host", "stage.example.com"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        let origin = Origin::of(&config(false, false), &h);
        assert_eq!(origin, Origin { https: false, host: Some("stage.example.com".into()) });
        assert_eq!(client_ip(&config(false, false), &h, PEER), PEER.map(|p| p.ip()));
        assert!(Origin::of(&config(false, true), &h).https, "our own TLS listener");
    }

    #[test]
    fn behind_a_trusted_proxy_its_last_word_counts() {
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "stage.example.com"),
            ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
        ]);
        let c = config(true, false);
        assert_eq!(Origin::of(&c, &h), Origin { https: true, host: Some("stage.example.com".into()) });
        assert_eq!(client_ip(&c, &h, PEER), Some("203.0.113.7".parse().unwrap_or(IpAddr::V4(0.into()))));
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:4711")]);
        assert_eq!(client_ip(&c, &h, PEER), Some("2001:db8::1".parse().unwrap_or(IpAddr::V4(0.into()))));
    }

    #[test]
    fn junk_in_forwarded_headers_falls_back_to_the_connection() {
        let h = headers(&[("host", "ok.example"), ("x-forwarded-host", "a/b?c"), ("x-forwarded-for", "not an ip")]);
        let c = config(true, true);
        assert_eq!(Origin::of(&c, &h), Origin { https: true, host: Some("ok.example".into()) });
        assert_eq!(client_ip(&c, &h, PEER), PEER.map(|p| p.ip()));
    }
}
