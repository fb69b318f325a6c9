//! Per-client-IP limits of the open demo backend: every `/api` request
//! counts against `config.demo_rate_per_minute`, and `/api/create` (which
//! makes a stage, a channel and a chat room) also against the much lower
//! `config.demo_create_per_minute`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;

use crate::serve::origin::client_ip;
use crate::{AppError, Config};

/// Fixed one-minute windows of request counts per client IP. Time is
/// passed in, so the limiter is tested with a fake clock.
#[derive(Default)]
pub(crate) struct RateLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    const WINDOW: Duration = Duration::from_secs(60);
    /// Past this many tracked IPs, expired windows are swept out.
    const SWEEP_AT: usize = 10_000;

    /// Count one request from `ip`; false when it is over `per_minute`
    /// (0 means unlimited).
    pub(crate) fn allow(&self, ip: IpAddr, per_minute: u32, now: Instant) -> bool {
        if per_minute == 0 {
            return true;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= Self::SWEEP_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Self::WINDOW);
        }
        let entry = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Self::WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= per_minute
    }
}

/// The demo backend's limiters, one per limit; an `Extension` on its router.
#[derive(Default)]
pub(crate) struct DemoLimits {
    requests: RateLimiter,
    creates: RateLimiter,
}

/// Count the request against one limiter; 429 THROTTLED with `message`
/// when over.
fn check(
    parts: &Parts,
    config: &Config,
    pick: fn(&DemoLimits) -> &RateLimiter,
    per_minute: u32,
    message: impl FnOnce() -> String,
) -> Result<(), AppError> {
    // The limiters come from the layer in `api::router()`; without it (a
    // router built some other way) there is nothing to count against.
    let Some(limits) = parts.extensions.get::<Arc<DemoLimits>>() else {
        return Ok(());
    };
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
    let ip = client_ip(config, &parts.headers, peer).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if pick(limits).allow(ip, per_minute, Instant::now()) {
        Ok(())
    } else {
        Err(AppError::new(StatusCode::TOO_MANY_REQUESTS, "THROTTLED", message()))
    }
}

/// Extractor: the client IP is within `config.demo_rate_per_minute`
/// (429 THROTTLED otherwise).
pub struct Throttled;

impl<S: Send + Sync> FromRequestParts<S> for Throttled
where
    Arc<Config>: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let config = Arc::<Config>::from_ref(state);
        check(parts, &config, |l| &l.requests, config.demo_rate_per_minute, || {
            "too many requests from this address; try again in a minute".to_owned()
        })?;
        Ok(Throttled)
    }
}

/// Extractor for `/api/create`: the client IP is within
/// `config.demo_create_per_minute` (429 THROTTLED otherwise). Taken after
/// [`Throttled`], so a create counts against both limits.
pub struct CreateThrottled;

impl<S: Send + Sync> FromRequestParts<S> for CreateThrottled
where
    Arc<Config>: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let config = Arc::<Config>::from_ref(state);
        let per_minute = config.demo_create_per_minute;
        check(parts, &config, |l| &l.creates, per_minute, || {
            format!("at most {per_minute} stages a minute can be created from one address; try again in a minute")
        })?;
        Ok(CreateThrottled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_per_ip_and_reset_after_a_minute() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert!((0..10).all(|_| limiter.allow(a, 10, t0)));
        assert!(!limiter.allow(a, 10, t0 + Duration::from_secs(59)));
        assert!(limiter.allow(b, 10, t0 + Duration::from_secs(59)), "another address has its own window");
        assert!(limiter.allow(a, 10, t0 + Duration::from_secs(60)), "a new minute, a new window");
        assert!((0..1000).all(|_| limiter.allow(a, 0, t0)), "0 is unlimited");
    }
}
