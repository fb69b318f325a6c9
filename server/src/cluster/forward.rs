//! Forwarding a request to the node that must answer it: plain HTTP (bodies
//! streamed both ways) and WebSocket upgrades (the handshake forwarded,
//! then the two connections spliced byte for byte).

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Cluster, CLIENT_IP_HEADER, NODE_KEY_HEADER};

/// Longest pause inside one forwarded answer (a growing HLS segment gets a
/// part every fraction of a second; a blocking reload answers within its timeout).
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest forwarded request in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response head a node may send to a forwarded upgrade.
const MAX_HEAD: usize = 16 * 1024;

/// The client forwarded requests go out on.
pub(super) fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-authenticate" | "proxy-authorization" | "te" | "trailer"
            | "transfer-encoding" | "upgrade" | "host" | NODE_KEY_HEADER | CLIENT_IP_HEADER
    )
}

pub(crate) fn bad_gateway(what: &'static str) -> Response {
    let mut r = (StatusCode::BAD_GATEWAY, what).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The node could not be connected to at all (refused, or no answer to
/// the connection attempt): it is probably gone.
#[derive(Debug)]
pub struct Unreachable;

/// Whether a request asks to become a WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Send `request` to the node at `origin` (`http://host:port`) on behalf of
/// `client` and answer with what it answers. Only the headers named in
/// `keep` come back when it is `Some` (the caller adds its own, e.g. CORS);
/// otherwise every end-to-end header does.
pub async fn http(
    cluster: &Cluster,
    origin: &str,
    request: Request,
    client: IpAddr,
    keep: Option<&[HeaderName]>,
) -> Result<Response, Unreachable> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or(parts.uri.path(), |p| p.as_str());
    let mut out = cluster
        .http()
        .request(parts.method.clone(), format!("{origin}{path}"))
        .header(NODE_KEY_HEADER, cluster.node_key())
        .header(CLIENT_IP_HEADER, client.to_string());
    for (name, value) in parts.headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
        out = out.header(name, value);
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let answer = match out.body(reqwest::Body::wrap_stream(stream)).send().await {
        Ok(answer) => answer,
        Err(e) if e.is_connect() => {
            tracing::warn!(error = %e, origin, path, "cannot connect to the node that owns this request");
            return Err(Unreachable);
        }
        Err(e) => {
            tracing::warn!(error = %e, origin, path, "the node that owns this request did not answer");
            return Ok(bad_gateway("the node that serves this did not answer"));
        }
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        let wanted = match keep {
            Some(keep) => keep.contains(name),
            None => !hop_by_hop(name),
        };
        if wanted {
            response = response.header(name, value);
        }
    }
    let body = Body::from_stream(answer.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok(response.body(body).unwrap_or_else(|_| bad_gateway("unreadable answer")))
}

/// Forward a WebSocket upgrade request to `origin` and, when it switches
/// protocols, splice the client's connection to it. Whatever else it
/// answers (a refused token, a full stage) is passed back as is. When the
/// node cannot be connected to, the request comes back untouched.
pub async fn upgrade(
    cluster: &Cluster,
    origin: &str,
    mut request: Request,
    client: IpAddr,
) -> Result<Response, (Unreachable, Request)> {
    let Some(authority) = origin.strip_prefix("http://") else {
        tracing::warn!(origin, "cannot forward a WebSocket to a node that is not plain http://");
        return Ok(bad_gateway("the node that serves this cannot be reached"));
    };
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, origin, "cannot connect to the node that owns this WebSocket");
            return Err((Unreachable, request));
        }
        Err(_) => return Err((Unreachable, request)),
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return Ok((StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded").into_response());
    };
    let path = request.uri().path_and_query().map_or(request.uri().path(), |p| p.as_str()).to_owned();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n");
    for (name, value) in request.headers().iter().filter(|(n, _)| !hop_by_hop(n)) {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!("{NODE_KEY_HEADER}: {}\r\n{CLIENT_IP_HEADER}: {client}\r\n\r\n", cluster.node_key()));

    let exchange = async {
        upstream.write_all(head.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        let end = loop {
            let mut chunk = [0u8; 2048];
            let n = upstream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed before answering"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(std::io::Error::other("answer head too large"));
            }
        };
        Ok::<_, std::io::Error>((buf, end))
    };
    let (buf, end) = match tokio::time::timeout(CONNECT_TIMEOUT * 2, exchange).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, origin, "forwarded WebSocket handshake failed");
            return Ok(bad_gateway("the node that serves this did not answer"));
        }
        Err(_) => return Ok(bad_gateway("the node that serves this did not answer in time")),
    };
    let Some((status, headers)) = parse_head(&buf[..end]) else {
        return Ok(bad_gateway("unreadable answer"));
    };
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { continue };
        // A 101 keeps its Connection/Upgrade; any other answer gets its body re-framed here.
        if switching || !hop_by_hop(&name) {
            response = response.header(name, value.as_str());
        }
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // An error answer: its body (JSON, small) follows the head.
        let length = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse::<usize>().ok());
        let mut body = buf[end..].to_vec();
        if let Some(length) = length.filter(|l| *l <= MAX_HEAD) {
            let rest = async {
                while body.len() < length {
                    let mut chunk = [0u8; 2048];
                    let n = upstream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            };
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, rest).await;
            body.truncate(length);
        }
        return Ok(response.body(Body::from(body)).unwrap_or_else(|_| bad_gateway("unreadable answer")));
    }
    let early = buf[end..].to_vec();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "forwarded WebSocket: the client's upgrade failed");
                return;
            }
        };
        let mut downstream = TokioIo::new(upgraded);
        // Frames the node sent right after its 101, before we read on.
        if !early.is_empty() && downstream.write_all(&early).await.is_err() {
            return;
        }
        // Both ends keep their own WebSocket keepalive; the splice ends when either closes.
        let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
    });
    Ok(response.body(Body::empty()).unwrap_or_else(|_| bad_gateway("unreadable answer")))
}

/// The status and headers of an HTTP/1.1 response head.
fn parse_head(head: &[u8]) -> Option<(StatusCode, Vec<(String, String)>)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse::<u16>().ok()?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some((StatusCode::from_u16(status).ok()?, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_parse_and_garbage_does_not() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: abc=\r\n\r\n";
        let (status, headers) = parse_head(head).expect("a head");
        assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(headers[1], ("Sec-WebSocket-Accept".to_owned(), "abc=".to_owned()));
        assert!(parse_head(b"\xff\xfe").is_none());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_none());
        assert!(parse_head(b"").is_none());
    }

    #[test]
    fn hop_by_hop_and_internal_headers_are_not_forwarded() {
        for name in ["connection", "upgrade", "host", NODE_KEY_HEADER, CLIENT_IP_HEADER] {
            assert!(hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        assert!(!hop_by_hop(&header::AUTHORIZATION));
        assert!(!hop_by_hop(&header::SEC_WEBSOCKET_PROTOCOL));
    }
}
