//! ICE servers from WHIP `Link` headers (RFC 9725 §4.4): a WHIP endpoint
//! may answer `OPTIONS` (and the offer's POST) with
//!
//! ```text
//! Link: <turn:turn.example.net?transport=udp>; rel="ice-server";
//!       username="user"; credential="pass"; credential-type="password"
//! ```
//!
//! one link per server. `fetch` joins repeated headers with ", ", so the
//! value may hold several links (RFC 8288 syntax).

use stagecast_protocol::events::IceServer;

/// At most this many servers are taken from one response.
pub const MAX_ICE_SERVERS: usize = 16;

/// The ICE servers in a `Link` header value; links that are not
/// `rel="ice-server"` and malformed links are skipped.
///
/// Written without byte-index slicing: a slicing panic path would link
/// Rust's formatting and Unicode tables into the wasm.
pub fn ice_servers_from_link(header: &str) -> Vec<IceServer> {
    split_top(header, ',')
        .iter()
        .filter_map(|link| ice_server(link))
        .take(MAX_ICE_SERVERS)
        .collect()
}

/// One `<uri>; rel="ice-server"; username=...; credential=...` link.
fn ice_server(link: &str) -> Option<IceServer> {
    let (uri, username, credential) = parse_link(link, "ice-server")?;
    Some(IceServer {
        urls: vec![uri],
        username,
        credential,
    })
}

/// One `<uri>; rel=...; ...` link whose `rel` includes `rel`: its URI, with
/// its `username` and `credential` parameters.
fn parse_link(link: &str, rel: &str) -> Option<(String, Option<String>, Option<String>)> {
    let (uri, params) = link.trim().strip_prefix('<')?.split_once('>')?;
    let uri = uri.trim();
    let params = split_top(params, ';');
    // Nothing but white space between `>` and the first `;`.
    let (first, params) = params.split_first()?;
    if uri.is_empty() || !first.trim().is_empty() {
        return None;
    }
    let (mut found, mut username, mut credential) = (false, None, None);
    for param in params {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let value = unquote(value.trim())?;
        match name.trim().to_ascii_lowercase().as_str() {
            "rel" => found = value.split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case(rel)),
            "username" => username = Some(value),
            "credential" => credential = Some(value),
            _ => {}
        }
    }
    found.then(|| (uri.to_owned(), username, credential))
}

/// The URI of the first link in a `Link` header value whose `rel` is `rel`
/// (e.g. WHEP's layer controls, `urn:ietf:params:whep:ext:core:layer`).
pub fn link_with_rel(header: &str, rel: &str) -> Option<String> {
    split_top(header, ',').iter().find_map(|link| parse_link(link, rel).map(|(uri, ..)| uri))
}

/// A token as is, or a quoted string without its quotes and escapes;
/// `None` for a token with a quote in it (an unterminated string).
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return (!v.contains('"')).then(|| v.to_owned());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// Splits at `sep` outside quoted strings and `<...>`.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let (mut quoted, mut escaped, mut angle) = (false, false, false);
    for c in s.chars() {
        if c == sep && !quoted && !angle {
            parts.push(String::new());
            continue;
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str, user: Option<&str>, cred: Option<&str>) -> IceServer {
        IceServer {
            urls: vec![url.to_owned()],
            username: user.map(str::to_owned),
            credential: cred.map(str::to_owned),
        }
    }

    #[test]
    fn finds_a_link_by_rel() {
        let layer = "urn:ietf:params:whep:ext:core:layer";
        let header = r#"<turn:t.example>; rel="ice-server", </v1/stage/whip/sessions/s1/layer>; rel="urn:ietf:params:whep:ext:core:layer""#;
        assert_eq!(link_with_rel(header, layer).as_deref(), Some("/v1/stage/whip/sessions/s1/layer"));
        assert_eq!(link_with_rel("<x>; rel=ice-server", layer), None);
        assert_eq!(link_with_rel("<>; rel=\"urn:ietf:params:whep:ext:core:layer\"", layer), None);
        assert_eq!(link_with_rel("garbage", layer), None);
    }

    #[test]
    fn reads_the_rfc_9725_examples() {
        let header = r#"<stun:stun.example.net>; rel="ice-server", <turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; credential="myPassword"; credential-type="password", <turn:turn.example.net?transport=tcp>; rel="ice-server"; username="user"; credential="myPassword"; credential-type="password""#;
        assert_eq!(
            ice_servers_from_link(header),
            [
                server("stun:stun.example.net", None, None),
                server("turn:turn.example.net?transport=udp", Some("user"), Some("myPassword")),
                server("turn:turn.example.net?transport=tcp", Some("user"), Some("myPassword")),
            ]
        );
    }

    #[test]
    fn skips_other_links_and_garbage() {
        let header = concat!(
            r#"<https://example.net/layer>; rel="urn:ietf:params:whep:ext:core:layer", "#,
            r#"garbage without brackets; rel="ice-server", "#,
            r#"<turns:t.example.net:5349?transport=tcp>; REL=ice-server; username=1700000000:p1; credential="a\"b,c", "#,
            r#"<stun:unterminated>; rel="ice-server; username="x"#
        );
        assert_eq!(
            ice_servers_from_link(header),
            [server("turns:t.example.net:5349?transport=tcp", Some("1700000000:p1"), Some("a\"b,c"))]
        );
        assert!(ice_servers_from_link("").is_empty());
        assert!(ice_servers_from_link("<").is_empty());
        assert!(ice_servers_from_link(r#"<>; rel="ice-server""#).is_empty());
        assert!(ice_servers_from_link(r#"<stun:x>; rel="ice-server" trailing, <stun:y>; rel=ice-server"#)
            .iter()
            .map(|s| s.urls[0].as_str())
            .eq(["stun:y"]));
    }

    #[test]
    fn takes_a_bounded_number() {
        let header = vec![r#"<stun:x>; rel="ice-server""#; 100].join(", ");
        assert_eq!(ice_servers_from_link(&header).len(), MAX_ICE_SERVERS);
    }
}
