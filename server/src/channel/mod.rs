//! Channels: one WHIP broadcast in (H.264 + Opus), low-latency HLS out.
//!
//! - [`h264`], [`fmp4`], [`packager`] and [`audio`] are pure: bytes and
//!   timestamps in, bytes out, no clock, no socket.
//! - [`ingest`] is the thin driver of one broadcast: a tokio task that owns a
//!   str0m `Rtc` and its own UDP socket (bound to the media bind address on
//!   an ephemeral port, advertised on the public IP), feeds received frames
//!   to the transcoder and the packager, and sends a PLI when the packager
//!   wants a keyframe for the next segment.
//! - [`ChannelHub`] holds the stored channels (their own SQLite table) and
//!   the live broadcasts; [`router`] serves the control plane
//!   (`/v1/channels…`, API key), the WHIP ingest (stream key) and `/hls/…`.
//!
//! Stream keys are secrets: they are compared in constant time and never
//! logged or put into playback URLs.

pub mod audio;
pub mod fmp4;
pub mod h264;
mod http;
pub mod ingest;
pub mod packager;
pub mod store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use tokio::sync::watch;

pub use http::{router, ChannelView, CreateChannelResponse, GetChannelResponse};
use packager::Packager;
use store::{ChannelRecord, ChannelStore};

use crate::auth;
use crate::store::StoreError;

/// How long an ended broadcast's playlist (with `EXT-X-ENDLIST`) stays
/// available before the channel reads as offline (404).
pub const ENDED_GRACE: Duration = Duration::from_secs(30);
/// Longest `PutMetadata` payload, in bytes (IVS: 1 KB).
pub const MAX_METADATA_BYTES: usize = 1024;

/// The WHIP URL of a channel, given this server's `http://host` base.
pub fn ingest_endpoint(base: &str, id: &str) -> String {
    format!("{base}/v1/channels/{id}/whip")
}

/// The multivariant playlist URL of a channel, given this server's `http://host` base.
pub fn playback_url(base: &str, id: &str) -> String {
    format!("{base}/hls/{id}/index.m3u8")
}

/// Channel errors; `http` maps them to status codes.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel {0} does not exist")]
    NotFound(String),
    #[error("channel {0} is not broadcasting")]
    NotBroadcasting(String),
    #[error("channel {0} already has a broadcast")]
    BroadcastInProgress(String),
    #[error("the stream key is not valid for this channel")]
    InvalidStreamKey,
    #[error("the SDP offer is not valid: {0}")]
    InvalidSdp(String),
    #[error("no such broadcast session")]
    SessionNotFound,
    #[error("metadata is at most {MAX_METADATA_BYTES} bytes")]
    MetadataTooLarge,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Audio(#[from] audio::AudioError),
}

/// One broadcast: the packager the ingest task writes and HLS handlers read.
pub struct Broadcast {
    /// The WHIP session id (the last segment of `Location`).
    pub session: String,
    packager: Mutex<Packager>,
    changed: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    ended_at: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while packaging must not take the channel down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Broadcast {
    fn new(session: String, packager: Packager) -> Self {
        Self {
            session,
            packager: Mutex::new(packager),
            changed: watch::Sender::new(0),
            stop: watch::Sender::new(false),
            ended_at: Mutex::new(None),
        }
    }

    /// Run `f` on the packager; readers are woken afterwards if it changed.
    pub fn with_packager<R>(&self, f: impl FnOnce(&mut Packager) -> R) -> R {
        let (result, version) = {
            let mut p = lock(&self.packager);
            let r = f(&mut p);
            (r, p.version())
        };
        self.changed.send_if_modified(|v| {
            let modified = *v != version;
            *v = version;
            modified
        });
        result
    }

    /// Woken on every packager change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Still ingesting.
    pub fn is_live(&self) -> bool {
        lock(&self.ended_at).is_none()
    }

    fn expired(&self, now: Instant) -> bool {
        lock(&self.ended_at).is_some_and(|t| now.duration_since(t) >= ENDED_GRACE)
    }

    /// Ask the ingest task to end the broadcast.
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Called by the ingest task when it is done: ENDLIST, and the channel is free.
    fn mark_ended(&self, now: Instant) {
        self.with_packager(|p| p.finish());
        lock(&self.ended_at).get_or_insert(now);
    }
}

/// Stored channels and their live broadcasts. Cheap to clone.
#[derive(Clone)]
pub struct ChannelHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    store: ChannelStore,
    live: Mutex<HashMap<String, Arc<Broadcast>>>,
    media_bind_ip: IpAddr,
    public_ip: IpAddr,
    cert: Option<DtlsCert>,
}

impl ChannelHub {
    /// Open the channel table in `<data_dir>/stagecast.db`. Ingest sockets bind
    /// to `media_bind_ip` and advertise `public_ip` in their ICE candidate.
    pub fn open(data_dir: &Path, media_bind_ip: IpAddr, public_ip: IpAddr) -> Result<Self, StoreError> {
        let store = ChannelStore::open(&data_dir.join("stagecast.db"))?;
        // One DTLS certificate for all broadcasts: generating one per WHIP
        // request costs milliseconds.
        let cert = str0m::crypto::from_feature_flags().dtls_provider.generate_certificate();
        Ok(Self {
            inner: Arc::new(HubInner { store, live: Mutex::new(HashMap::new()), media_bind_ip, public_ip, cert }),
        })
    }

    /// Create a channel with a fresh id and stream key.
    pub fn create(&self, name: String) -> Result<ChannelRecord, ChannelError> {
        let record = ChannelRecord {
            id: format!("ch-{}", auth::random_alphanumeric(12)),
            name,
            stream_key: format!("sk_{}", auth::random_alphanumeric(32)),
            create_time: auth::now_unix(),
        };
        self.inner.store.insert(&record)?;
        tracing::info!(channel = %record.id, "channel created");
        Ok(record)
    }

    pub fn get(&self, id: &str) -> Result<ChannelRecord, ChannelError> {
        self.inner.store.get(id)?.ok_or_else(|| ChannelError::NotFound(id.to_owned()))
    }

    /// Delete a channel, ending its broadcast.
    pub fn delete(&self, id: &str) -> Result<(), ChannelError> {
        if !self.inner.store.delete(id)? {
            return Err(ChannelError::NotFound(id.to_owned()));
        }
        if let Some(b) = lock(&self.inner.live).remove(id) {
            b.request_stop();
        }
        tracing::info!(channel = %id, "channel deleted");
        Ok(())
    }

    /// The live (still ingesting) broadcast of a channel.
    pub fn live_broadcast(&self, id: &str) -> Option<Arc<Broadcast>> {
        lock(&self.inner.live).get(id).filter(|b| b.is_live()).cloned()
    }

    /// The broadcast HLS serves: live, or ended less than [`ENDED_GRACE`] ago.
    pub fn playback(&self, id: &str) -> Option<Arc<Broadcast>> {
        let mut live = lock(&self.inner.live);
        let now = Instant::now();
        if live.get(id).is_some_and(|b| b.expired(now)) {
            live.remove(id);
        }
        live.get(id).cloned()
    }

    /// Whether the channel is broadcasting now.
    pub fn is_live(&self, id: &str) -> bool {
        self.live_broadcast(id).is_some()
    }

    /// Start a broadcast from a WHIP offer. Returns the session id and the SDP answer.
    pub fn start_broadcast(&self, id: &str, stream_key: &str, offer: &str) -> Result<(String, String), ChannelError> {
        let record = self.get(id)?;
        if !auth::constant_time_eq(stream_key, &record.stream_key) {
            return Err(ChannelError::InvalidStreamKey);
        }
        let mut live = lock(&self.inner.live);
        if live.get(id).is_some_and(|b| b.is_live()) {
            return Err(ChannelError::BroadcastInProgress(id.to_owned()));
        }
        let (setup, answer) =
            ingest::prepare(self.inner.media_bind_ip, self.inner.public_ip, self.inner.cert.as_ref(), offer)?;
        let session = auth::random_alphanumeric(16);
        let packager = Packager::new(ingest::packager_config(), ingest::audio_params());
        let broadcast = Arc::new(Broadcast::new(session.clone(), packager));
        live.insert(id.to_owned(), broadcast.clone());
        drop(live);
        tracing::info!(channel = %id, session = %session, "broadcast started");
        let stop = broadcast.stop.subscribe();
        let channel = id.to_owned();
        tokio::spawn(async move {
            let reason = ingest::run(setup, broadcast.clone(), stop).await;
            broadcast.mark_ended(Instant::now());
            tracing::info!(channel = %channel, session = %broadcast.session, %reason, "broadcast ended");
        });
        Ok((session, answer))
    }

    /// End a broadcast; with `session`, only if it is that one.
    pub fn stop_broadcast(&self, id: &str, session: Option<&str>) -> Result<(), ChannelError> {
        let b = self.live_broadcast(id);
        match b {
            Some(b) if session.is_none_or(|s| s == b.session) => {
                b.request_stop();
                Ok(())
            }
            Some(_) => Err(ChannelError::SessionNotFound),
            None if session.is_some() => Err(ChannelError::SessionNotFound),
            None => Err(ChannelError::NotBroadcasting(id.to_owned())),
        }
    }

    /// Queue ID3 timed metadata for the next part of the live broadcast.
    pub fn put_metadata(&self, id: &str, metadata: String) -> Result<(), ChannelError> {
        if metadata.len() > MAX_METADATA_BYTES {
            return Err(ChannelError::MetadataTooLarge);
        }
        self.get(id)?;
        let b = self.live_broadcast(id).ok_or_else(|| ChannelError::NotBroadcasting(id.to_owned()))?;
        b.with_packager(|p| p.put_metadata(metadata));
        Ok(())
    }

    /// The stream key of a channel (for the demo backend, which hands it to the host).
    pub fn stream_key(&self, id: &str) -> Result<String, ChannelError> {
        Ok(self.get(id)?.stream_key)
    }
}
