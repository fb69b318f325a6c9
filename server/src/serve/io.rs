//! Thin adapters between hyper and [`ConnWatch`]: a socket wrapper that
//! reports bytes in and out (and holds the connection's slot under the cap
//! for as long as the socket lives, WebSocket upgrades included), a request
//! body that fails once its deadline passes, and a response body that
//! reports when it is done.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

use super::watch::ConnWatch;

/// The shared timers of one connection.
pub type SharedWatch = Arc<Mutex<ConnWatch>>;

pub fn lock(watch: &SharedWatch) -> MutexGuard<'_, ConnWatch> {
    // A panic while holding this lock cannot leave the timers inconsistent
    // enough to matter; keep serving.
    watch.lock().unwrap_or_else(|p| p.into_inner())
}

/// A socket that tells its [`ConnWatch`] about traffic.
pub struct WatchedIo<T> {
    inner: T,
    watch: SharedWatch,
    _slot: OwnedSemaphorePermit,
}

impl<T> WatchedIo<T> {
    pub fn new(inner: T, watch: SharedWatch, slot: OwnedSemaphorePermit) -> Self {
        Self { inner, watch, _slot: slot }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            lock(&self.watch).on_read(Instant::now());
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            lock(&self.watch).on_write(Instant::now());
        }
        result
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            lock(&self.watch).on_write(Instant::now());
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The request body did not arrive within `--http-body-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that errors once its deadline has passed, and says so
/// through [`DeadlineBody::expired_flag`] so the response can be a 408
/// whatever the handler made of the error.
pub struct DeadlineBody<B> {
    inner: B,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        Self { inner, limit, deadline: Box::pin(tokio::time::sleep(limit)), expired: Arc::new(AtomicBool::new(false)) }
    }

    /// Set once the deadline has cut the body off.
    pub fn expired_flag(&self) -> Arc<AtomicBool> {
        self.expired.clone()
    }
}

/// Whether a [`DeadlineBody::expired_flag`] is set.
pub fn has_expired(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyTimeout(self.limit).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells the connection's watch when it is finished
/// (sent in full, or dropped).
pub struct TrackedBody<B> {
    inner: B,
    done: Option<Done>,
}

struct Done(SharedWatch);

impl Drop for Done {
    fn drop(&mut self) {
        lock(&self.0).on_response_done(Instant::now());
    }
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, watch: SharedWatch) -> Self {
        Self { inner, done: Some(Done(watch)) }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.done = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
