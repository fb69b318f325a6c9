//! The event plane's WebSocket handshake (RFC 6455 §4.2), done here rather
//! than by axum's `WebSocketUpgrade` so the connection writes tungstenite
//! frames itself: a big STAGE_STATE goes out as a fragmented message, and
//! tungstenite's write buffer — which keeps its largest size for the
//! connection's whole life — stays at one fragment instead of growing to the
//! largest snapshot the connection was ever sent (~550 KB in a 500-member
//! stage with 1 KB attributes, for every member).

use std::future::Future;

use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::AppError;

/// A server-side WebSocket over an upgraded HTTP/1.1 connection.
pub type ServerSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A valid WebSocket upgrade request, ready to be answered.
pub struct Handshake {
    on_upgrade: OnUpgrade,
    accept: HeaderValue,
}

fn not_a_websocket(what: &str) -> AppError {
    AppError::bad_request("NOT_A_WEBSOCKET", format!("this endpoint takes a WebSocket upgrade request: {what}"))
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl Handshake {
    /// Check `parts` is a WebSocket upgrade request and take its upgrade.
    pub fn from_parts(parts: &mut Parts) -> Result<Self, AppError> {
        if parts.method != Method::GET {
            return Err(AppError::new(StatusCode::METHOD_NOT_ALLOWED, "NOT_A_WEBSOCKET", "use GET with a WebSocket upgrade"));
        }
        let headers = &parts.headers;
        if !header_has_token(headers, header::CONNECTION, "upgrade") || !header_has_token(headers, header::UPGRADE, "websocket") {
            return Err(not_a_websocket("`Connection: upgrade` and `Upgrade: websocket` are required"));
        }
        if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
            return Err(not_a_websocket("`Sec-WebSocket-Version: 13` is required"));
        }
        let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| not_a_websocket("`Sec-WebSocket-Key` is missing"))?;
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(AppError::internal)?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            AppError::new(StatusCode::UPGRADE_REQUIRED, "NOT_A_WEBSOCKET", "this connection cannot be upgraded to a WebSocket")
        })?;
        Ok(Self { on_upgrade, accept })
    }

    /// The 101 response selecting `protocol`; once it is sent, `serve` runs
    /// with the socket (on a task of its own).
    pub fn accept<F, Fut>(self, protocol: HeaderValue, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(ServerSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Self { on_upgrade, accept } = self;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => serve(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await).await,
                Err(e) => tracing::debug!(error = %e, "event-plane upgrade failed"),
            }
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        response
    }
}
