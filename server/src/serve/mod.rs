//! The HTTP listener: HTTP/1.1 (optionally over TLS) with the limits that
//! `axum::serve` lacks, so no client can hold the server's sockets:
//!
//! - a cap on open connections (WebSockets included); past it new ones are
//!   closed at once and the refusal is logged at most once a second;
//! - per connection, the timers of [`watch::ConnWatch`]: a request head (and
//!   TLS handshake) must arrive within `--http-header-timeout` of its first
//!   byte, a connection with nothing to do is closed after
//!   `--http-idle-timeout`, and so is a request that moves no bytes for
//!   that long;
//! - request bodies must arrive within `--http-body-timeout`.
//!
//! A WebSocket leaves these timers once upgraded (the event plane and chat
//! keep their own keepalives) but keeps its slot under the cap.

mod io;
pub mod origin;
pub mod tls;
pub mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::Service;

pub use self::tls::{CertStore, TlsError, TlsFiles};
use self::io::{has_expired, lock, DeadlineBody, SharedWatch, TrackedBody, WatchedIo};
use self::watch::{ConnWatch, LogThrottle};
use crate::config::HttpLimits;
use crate::AppError;

/// Largest request head hyper buffers (it needs at least 8 KiB). Tokens in
/// headers are a few KB; this bounds what a slow client makes us hold.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// After an accept error that is not about one connection (e.g. out of file
/// descriptors), wait this long before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serve `router` on `listener` (TLS when `tls` is set) until the task is
/// dropped.
pub async fn serve(listener: TcpListener, router: Router, limits: HttpLimits, tls: Option<TlsAcceptor>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut refused = LogThrottle::new(Duration::from_secs(1));
    let mut accept_errors = LogThrottle::new(Duration::from_secs(1));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(n) = accept_errors.hit(Instant::now()) {
                    tracing::warn!(error = %e, count = n, "HTTP accept failed");
                }
                if !is_per_connection(&e) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            if let Some(n) = refused.hit(Instant::now()) {
                tracing::warn!(
                    max = limits.max_connections,
                    refused = n,
                    "HTTP connection limit reached; closing new connections"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, peer, slot, router.clone(), limits.clone(), tls.clone()));
    }
}

fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    router: Router,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
) {
    let watch: SharedWatch = Arc::new(Mutex::new(ConnWatch::new(limits.header_timeout, limits.idle_timeout, Instant::now())));
    let io = WatchedIo::new(stream, watch.clone(), slot);
    match tls {
        None => http(io, peer, router, &limits, watch).await,
        Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
            Ok(Ok(io)) => http(io, peer, router, &limits, watch).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
}

/// 408 with the JSON error shape and `Connection: close`.
fn body_timeout_response(limit: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    let message = format!("the request body did not arrive within {} ms", limit.as_millis());
    let mut response = AppError::new(axum::http::StatusCode::REQUEST_TIMEOUT, "BODY_TIMEOUT", message).into_response();
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

/// HTTP/1.1 on one connection until it ends, upgrades, or a timer of
/// `watch` runs out (then it is dropped, which closes the socket).
async fn http<I>(io: I, peer: SocketAddr, router: Router, limits: &HttpLimits, watch: SharedWatch)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_timeout;
    let service_watch = watch.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        lock(&service_watch).on_request(Instant::now());
        let done = service_watch.clone();
        let (parts, body) = request.into_parts();
        let body = DeadlineBody::new(body, body_timeout);
        let body_expired = body.expired_flag();
        let mut request = hyper::Request::from_parts(parts, Body::new(body));
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move {
            // The router answers every request (errors are responses).
            let mut response = router.call(request).await.unwrap_or_else(|never: Infallible| match never {});
            if has_expired(&body_expired) {
                // Whatever the handler made of the cut-off body, the client
                // hears why, and the connection (mid-body) ends.
                response = body_timeout_response(body_timeout);
            }
            Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, done)))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).max_buf_size(MAX_HEAD_BYTES).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(connection);
    loop {
        let deadline = lock(&watch).deadline();
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if let Some(why) = lock(&watch).expired(Instant::now()) {
                    tracing::debug!(%peer, reason = why.as_str(), "HTTP connection closed by the server");
                    return;
                }
            }
        }
    }
}
