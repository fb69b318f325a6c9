//! LL-HLS playback under `/hls/{id}/` (CORS open): playlists with blocking
//! reload, init segments, parts, segments, and the segment being built
//! streamed as it grows for the IVS Player's `EXT-X-PREFETCH`.
//!
//! Every request may be held (a blocking reload, an upcoming part, a growing
//! segment), so each takes a [`HoldPermit`]: at most
//! [`super::holds::MAX_HOLDS_PER_IP`] per client address and
//! [`super::holds::MAX_HOLDS_PER_CHANNEL`] per channel at once (`429`
//! beyond), and none is held longer than
//! [`super::packager::PackagerConfig::blocking_timeout`] (a growing segment:
//! twice that).
//!
//! A private channel's requests pass [`super::access`] first (403 otherwise),
//! and its playlists hand out URIs that carry the playback session.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::cors::{Any, CorsLayer};

use super::access::{self, Access, Presented};
use super::holds::HoldPermit;
use super::ladder;
use super::packager::{MediaName, Packager, PartLookup, Readiness};
use super::{Broadcast, ChannelState};
use crate::http::range;
use crate::ops::{HlsKind, HlsMetrics};
use crate::serve::origin::client_ip;

const PLAYLIST: &str = "application/vnd.apple.mpegurl";
const MEDIA: &str = "video/iso.segment";
// What a shared cache in front of the server (a CDN, nginx's `proxy_cache`)
// may keep, so one origin fetch serves every viewer of a live edge: each
// part and complete segment has a URL of its own (fresh media sequence
// numbers per broadcast), so it never changes; a blocking reload names one
// playlist version or later, so it stays right for a while; the plain
// playlists change with every part, so a shared cache keeps them only a
// second (as MediaPackage does for LL-HLS) and a browser not at all.
const IMMUTABLE: &str = "public, max-age=3600, immutable";
const BLOCKING_PLAYLIST: &str = "public, max-age=2";
const LIVE_PLAYLIST: &str = "public, max-age=0, s-maxage=1";
/// The server's clock (Unix ms) on every HLS response, so a page can put
/// `EXT-X-PROGRAM-DATE-TIME` against it and show a real latency.
pub const SERVER_TIME_HEADER: &str = "x-server-time-ms";

/// LL-HLS playback.
pub fn router() -> Router<ChannelState> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        // Players on other origins ask for byte ranges of segments too.
        .allow_headers([header::RANGE])
        .expose_headers([HeaderName::from_static(SERVER_TIME_HEADER), header::DATE, header::CONTENT_RANGE]);
    Router::new()
        .route("/hls/{id}/{file}", get(hls_file))
        .route("/hls/{id}/{rid}/{file}", get(hls_rendition_file))
        .layer(cors)
}

/// One rendition of a broadcast: the top one (`rid: None`, files directly
/// under `/hls/{id}/`) or a lower simulcast layer (`/hls/{id}/{rid}/`).
#[derive(Clone)]
struct Feed {
    b: Arc<Broadcast>,
    rid: Option<String>,
}

impl Feed {
    /// `None` when the rendition is gone (or never was).
    fn with<R>(&self, f: impl FnOnce(&mut Packager) -> R) -> Option<R> {
        self.b.with_rendition(self.rid.as_deref(), f)
    }
}

/// The client's address, as the demo limits see it (the proxy's
/// `X-Forwarded-For` with `--trust-forwarded-headers`; unspecified when the
/// router runs without connect info).
pub(super) struct ClientIp(pub IpAddr);

impl FromRequestParts<ChannelState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &ChannelState) -> Result<Self, Self::Rejection> {
        // A request another node forwarded names its viewer.
        if let Some(ip) = state.channels.cluster().and_then(|c| c.forwarded_client(&parts.headers)) {
            return Ok(ClientIp(ip));
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
        let ip = client_ip(&state.config, &parts.headers, peer).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(ClientIp(ip))
    }
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-cache")], message).into_response()
}

fn reply(content_type: &'static str, cache: &'static str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

fn retry_later(status: StatusCode, message: &'static str) -> Response {
    let mut r = plain(status, message);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

enum Wait<T> {
    Done(T),
    Bad,
}

/// Re-evaluate `check` on every packager change until it answers or `timeout` passes.
async fn wait_for<T>(
    feed: &Feed,
    timeout: Duration,
    mut check: impl FnMut(&mut Packager) -> Option<Wait<T>>,
) -> Option<Wait<T>> {
    let mut changes = feed.b.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        changes.borrow_and_update();
        if let Some(v) = feed.with(&mut check).flatten() {
            return Some(v);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return feed.with(&mut check).flatten(),
        }
    }
}

fn parse_blocking(query: &HashMap<String, String>) -> Result<Option<(u64, Option<u32>)>, ()> {
    let msn = query.get("_HLS_msn").map(|v| v.parse::<u64>()).transpose().map_err(|_| ())?;
    let part = query.get("_HLS_part").map(|v| v.parse::<u32>()).transpose().map_err(|_| ())?;
    match (msn, part) {
        (None, Some(_)) => Err(()),
        (None, None) => Ok(None),
        (Some(m), p) => Ok(Some((m, p))),
    }
}

async fn hls_file(
    State(state): State<ChannelState>,
    Path((id, file)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    ClientIp(ip): ClientIp,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    handle(state, id, None, file, query, Asker { ip, uri, headers }).await
}

/// A lower rendition's files (its media playlist has relative URIs, so
/// they resolve under the same prefix).
async fn hls_rendition_file(
    State(state): State<ChannelState>,
    Path((id, rid, file)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    ClientIp(ip): ClientIp,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !ladder::valid_rid(&rid) || file == "index.m3u8" {
        return plain(StatusCode::NOT_FOUND, "no such file");
    }
    handle(state, id, Some(rid), file, query, Asker { ip, uri, headers }).await
}

/// Who asked, and how.
struct Asker {
    ip: IpAddr,
    uri: Uri,
    headers: HeaderMap,
}

async fn handle(
    state: ChannelState,
    id: String,
    rid: Option<String>,
    file: String,
    query: HashMap<String, String>,
    asker: Asker,
) -> Response {
    let Asker { ip, uri, headers } = asker;
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let presented = Presented { query: &query, origin };
    let access = access::check(&state.channels, &state.auth.keys, &id, &presented, crate::auth::now_unix());
    let mut response = match access {
        Err(refused) => refused.into_response(),
        Ok(access) => {
            let session = match &access {
                Access::Open => None,
                Access::Granted { session } => Some(session.as_str()),
            };
            let mut response = match state.channels.playback(&id) {
                None => match state.channels.cluster() {
                    // Distributed mode: another node may hold the broadcast.
                    Some(cluster) => {
                        let mut request = axum::extract::Request::new(Body::empty());
                        *request.uri_mut() = uri.clone();
                        *request.headers_mut() = headers.clone();
                        super::remote::forward(cluster, &id, request, ip, &super::remote::HLS_ANSWER).await
                    }
                    None => None,
                }
                .unwrap_or_else(|| plain(StatusCode::NOT_FOUND, "channel is offline")),
                Some(b) => match state.channels.hold(&id, ip) {
                    None => retry_later(StatusCode::TOO_MANY_REQUESTS, "too many requests held at once"),
                    Some(permit) => {
                        let asked = Asked { query: &query, session, headers: &headers };
                        serve(Feed { b, rid }, &file, &asked, permit, &state.ops.hls).await
                    }
                },
            };
            if session.is_some() {
                private_cache(&mut response);
            }
            response
        }
    };
    if let Ok(v) = HeaderValue::from_str(&super::ingest::wall_ms().to_string()) {
        response.headers_mut().insert(HeaderName::from_static(SERVER_TIME_HEADER), v);
    }
    response
}

/// What a private channel answers may be kept by the browser, never by a
/// shared cache: `public` becomes `private` (and `s-maxage` goes). A
/// cache keyed by the full URL would keep each playback session apart, but
/// one that drops the query (or a proxy that logs it) would hand one
/// viewer's authorised media to anyone, so the server does not rely on it.
fn private_cache(response: &mut Response) {
    let cache = response.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok());
    let Some(rest) = cache.and_then(|c| c.strip_prefix("public")) else { return };
    let kept: String = rest
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.starts_with("s-maxage"))
        .map(|d| format!(", {d}"))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("private{kept}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
}

/// What a request asked besides the file.
struct Asked<'a> {
    query: &'a HashMap<String, String>,
    /// A private channel's playback session, for the playlists' URIs.
    session: Option<&'a str>,
    /// For `Range`.
    headers: &'a HeaderMap,
}

async fn serve(feed: Feed, file: &str, asked: &Asked<'_>, permit: HoldPermit, metrics: &HlsMetrics) -> Response {
    let Asked { query, session, headers } = *asked;
    let Some(timeout) = feed.with(|p| p.config().blocking_timeout()) else {
        return plain(StatusCode::NOT_FOUND, "no such rendition");
    };
    let b = &feed.b;
    let feed = &feed;
    match file {
        "index.m3u8" => {
            metrics.count(HlsKind::Playlist);
            let _open = metrics.playlist_open();
            multivariant(b, session, timeout).await
        }
        "media.m3u8" => {
            metrics.count(HlsKind::Playlist);
            let _open = metrics.playlist_open();
            playlist(feed, query, session, timeout).await
        }
        name if name.starts_with("init") && name.ends_with(".mp4") => {
            metrics.count(HlsKind::Init);
            let version = name.trim_start_matches("init").trim_end_matches(".mp4");
            let parsed = if version.is_empty() { Ok(0) } else { version.parse::<u32>() };
            let Ok(version) = parsed else {
                return plain(StatusCode::NOT_FOUND, "no such file");
            };
            let result = wait_for(feed, timeout, |p| p.init_version(version).map(|i| Wait::Done(i.to_vec()))).await;
            match result {
                // The playlist's URL (`?v=` the content's tag) never names
                // other bytes; the bare file is each broadcast's in turn.
                Some(Wait::Done(init)) => {
                    let tagged = query.get("v").is_some_and(|v| *v == Packager::init_tag(&init));
                    range::respond(headers, "video/mp4", if tagged { IMMUTABLE } else { "no-cache" }, init)
                }
                _ => plain(StatusCode::NOT_FOUND, "no init segment yet"),
            }
        }
        name => match Packager::parse_media_name(name) {
            Some(MediaName::Segment(msn)) => segment(feed, msn, headers, timeout, permit, metrics),
            Some(MediaName::Part(msn, n)) => {
                metrics.count(HlsKind::Part);
                let result = wait_for(feed, timeout, |p| match p.part(msn, n) {
                    PartLookup::Ready(data) => Some(Wait::Done(data)),
                    PartLookup::Upcoming => None,
                    PartLookup::Missing => Some(Wait::Bad),
                })
                .await;
                match result {
                    Some(Wait::Done(data)) => range::respond(headers, MEDIA, IMMUTABLE, data),
                    _ => plain(StatusCode::NOT_FOUND, "no such part"),
                }
            }
            None => {
                metrics.count(HlsKind::Other);
                plain(StatusCode::NOT_FOUND, "no such file")
            }
        },
    }
}

/// The multivariant playlist, once the top rendition has media and every
/// announced lower one has a complete segment (its `BANDWIDTH` measured);
/// at the timeout, what there is.
async fn multivariant(b: &Arc<Broadcast>, session: Option<&str>, timeout: Duration) -> Response {
    let mut changes = b.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut text = None;
    loop {
        changes.borrow_and_update();
        match b.multivariant() {
            Some((t, true)) => {
                text = Some(t);
                break;
            }
            found => text = found.map(|(t, _)| t).or(text),
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    match text {
        Some(text) => {
            let text = session.map_or_else(|| text.clone(), |s| access::with_session(&text, s));
            reply(PLAYLIST, LIVE_PLAYLIST, text)
        }
        None => retry_later(StatusCode::SERVICE_UNAVAILABLE, "the broadcast has no media yet"),
    }
}

async fn playlist(feed: &Feed, query: &HashMap<String, String>, session: Option<&str>, timeout: Duration) -> Response {
    let Ok(blocking) = parse_blocking(query) else {
        return plain(StatusCode::BAD_REQUEST, "malformed _HLS_msn / _HLS_part");
    };
    let text = |p: &Packager| {
        let text = p.media_playlist();
        match session {
            Some(session) => access::with_session(&text, session),
            None => text,
        }
    };
    let result = wait_for(feed, timeout, |p| {
        if !p.has_media() && !p.is_ended() {
            return None;
        }
        if let Some((msn, part)) = blocking {
            match p.playlist_ready(msn, part) {
                Readiness::Ready => {}
                Readiness::Wait => return None,
                Readiness::BadRequest => return Some(Wait::Bad),
            }
        }
        Some(Wait::Done(text(p)))
    })
    .await;
    let cache = if blocking.is_some() { BLOCKING_PLAYLIST } else { LIVE_PLAYLIST };
    match result {
        Some(Wait::Done(body)) => reply(PLAYLIST, cache, body),
        Some(Wait::Bad) => plain(StatusCode::BAD_REQUEST, "_HLS_msn / _HLS_part is too far ahead"),
        // The broadcaster is away but may come back: the unchanged playlist
        // (players reload it and wait) rather than an error that hls.js
        // retries only twice.
        None if feed.b.is_reconnecting() && feed.with(|p| p.has_media()) == Some(true) => {
            reply(PLAYLIST, "no-cache", feed.with(|p| text(p)).unwrap_or_default())
        }
        None => retry_later(StatusCode::SERVICE_UNAVAILABLE, "the requested playlist update did not arrive in time"),
    }
}

/// `seg{msn}.m4s`: a complete segment at once (immutable, byte ranges
/// taken); the segment being built (or the next one) as a chunked `200`
/// that writes each part as it is cut and ends when the segment completes —
/// never cached as immutable.
fn segment(
    feed: &Feed,
    msn: u64,
    headers: &HeaderMap,
    timeout: Duration,
    permit: HoldPermit,
    metrics: &HlsMetrics,
) -> Response {
    let Some(first) = feed.with(|p| p.segment_from(msn, 0)).flatten() else {
        metrics.count(HlsKind::Segment);
        return plain(StatusCode::NOT_FOUND, "no such segment");
    };
    if first.complete {
        metrics.count(HlsKind::Segment);
        return range::respond(headers, MEDIA, IMMUTABLE, first.data);
    }
    metrics.count(HlsKind::Prefetch);
    // At most a segment's worth of waiting for its start plus its own length.
    let deadline = tokio::time::Instant::now() + timeout * 2;
    let state = Growing { feed: feed.clone(), msn, next_part: first.next_part, done: false, deadline, _permit: permit };
    let head = futures_util::stream::iter((!first.data.is_empty()).then(|| Ok(Bytes::from(first.data))));
    let rest = futures_util::stream::unfold(state, Growing::next);
    let mut r = reply(MEDIA, "no-cache", Body::from_stream(futures_util::StreamExt::chain(head, rest)));
    // nginx would buffer the parts before passing them on; unbuffered, it
    // streams them as they come (and, rightly, caches none of it).
    r.headers_mut().insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    r
}

/// The state of one growing-segment response.
struct Growing {
    feed: Feed,
    msn: u64,
    next_part: usize,
    done: bool,
    deadline: tokio::time::Instant,
    _permit: HoldPermit,
}

impl Growing {
    /// The next parts, once cut; `None` ends the response.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        if self.done {
            return None;
        }
        let mut changes = self.feed.b.subscribe();
        loop {
            changes.borrow_and_update();
            let (msn, next_part) = (self.msn, self.next_part);
            let chunk = self.feed.with(|p| p.segment_from(msn, next_part)).flatten()?;
            self.next_part = chunk.next_part;
            self.done = chunk.complete;
            if !chunk.data.is_empty() || chunk.complete {
                return Some((Ok(Bytes::from(chunk.data)), self));
            }
            match tokio::time::timeout_at(self.deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Held too long, or the broadcast is gone: end here.
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}
