//! Channels: one WHIP broadcast in (H.264 + Opus), low-latency HLS out.
//!
//! - [`h264`], [`fmp4`], [`packager`] and [`audio`] are pure: bytes and
//!   timestamps in, bytes out, no clock, no socket.
//! - [`lifecycle`] is the sans-IO life of a broadcast across ingest
//!   sessions: live, waiting for the broadcaster within the reconnect
//!   window (the playlist stays open and continues after a discontinuity),
//!   ended.
//! - [`ingest`] is the thin driver of one ingest session: a tokio task that owns a
//!   str0m `Rtc` and its own UDP socket (bound to the media bind address on
//!   an ephemeral port, advertised on the public IP), feeds received frames
//!   to the transcoder and the packager, and sends a PLI when the packager
//!   wants a keyframe for the next segment.
//! - [`broadcast`] ties a packager to its lifecycle and saves where the
//!   playlist is, so a broadcast also continues after a server restart.
//! - [`ChannelHub`] holds the stored channels (their own SQLite table) and
//!   the broadcasts; [`router`] serves the control plane
//!   (`/v1/channels…`, API key), the WHIP ingest (stream key) and `/hls/…`,
//!   with a [`ChannelState`] that holds only what those routes reach.
//! - [`recording`] writes every broadcast of a channel that records as an
//!   HLS VOD with thumbnails (a reconnect window joins broadcasts into one
//!   recording) to a storage trait, and serves list, delete and playback.
//! - [`access`] decides who may play a private (`authorized`) channel:
//!   a playback token signed by one of the [`playback_keys`], then a
//!   short server-signed session value on every URL the playlists hand out.
//!
//! Stream keys are secrets: they are compared in constant time and never
//! logged or put into playback URLs.

pub mod access;
pub mod audio;
pub mod broadcast;
pub mod fmp4;
pub mod h264;
mod hls;
pub mod holds;
mod http;
pub mod ingest;
pub mod ladder;
pub mod lifecycle;
pub mod packager;
pub mod playback_keys;
pub mod recording;
pub mod remote;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRef;
use str0m::config::DtlsCert;

pub use broadcast::Broadcast;
use broadcast::{arm_window, drive, lock};
pub use http::{router, ChannelView, CreateChannelResponse, GetChannelResponse, ListChannelsResponse};
pub use lifecycle::{Admission, Health, SessionEnd, ENDED_GRACE};
use packager::Packager;
use store::{ChannelRecord, ChannelStore, SqliteChannelStore};

use crate::auth::{self, Auth};
use crate::ops::Ops;
use crate::store::StoreError;
use crate::Config;

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

/// The ARN-like name of a channel (IVS channels are named by ARN; playback
/// tokens carry it as `aws:channel-arn`).
pub fn channel_arn(id: &str) -> String {
    format!("arn:stagecast:ivs:local:channel/{id}")
}

/// What the channel routes reach: the channels, [`Auth`] (the API key, and
/// the keys private playback is checked with), the configuration (URLs,
/// TURN, client addresses) and [`Ops`] (HLS counters, draining). Cheap to
/// clone.
#[derive(Clone, FromRef)]
pub struct ChannelState {
    pub channels: ChannelHub,
    pub auth: Auth,
    pub config: Arc<Config>,
    pub ops: Ops,
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
    #[error("playback key {0} does not exist")]
    PlaybackKeyNotFound(String),
    #[error("this public key was already imported as a playback key")]
    PlaybackKeyExists,
    #[error("at most {} playback keys can be imported; delete one first", playback_keys::MAX_PLAYBACK_KEYS)]
    TooManyPlaybackKeys,
    #[error("the public key is not a PEM P-384 public key (SPKI)")]
    InvalidPublicKey,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Audio(#[from] audio::AudioError),
}

/// Stored channels and their broadcasts. Cheap to clone.
#[derive(Clone)]
pub struct ChannelHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    store: Arc<dyn ChannelStore>,
    /// Broadcasts by channel: live, waiting for their broadcaster, or ended
    /// less than [`ENDED_GRACE`] ago.
    live: Mutex<HashMap<String, Arc<Broadcast>>>,
    media_bind_ip: IpAddr,
    public_ip: IpAddr,
    cert: Option<DtlsCert>,
    reconnect_window: Duration,
    holds: holds::Holds,
    /// The ids of private channels (HLS asks on every request: no query).
    authorized: Mutex<HashSet<String>>,
    /// The imported playback keys that may sign playback tokens.
    playback_keys: auth::KeySet,
    /// Webhooks: stream start / end.
    events: crate::ops::EventSink,
    /// Auto-record: the recorder and its store (`<data-dir>/recordings`).
    recordings: recording::Recordings,
    /// Distributed mode: other nodes' broadcasts, served by forwarding.
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
    /// Distributed mode: the channels on air on any node (from Redis, about once a second).
    live_anywhere: Mutex<HashSet<String>>,
}

impl ChannelHub {
    /// Open the channel table in `<data_dir>/stagecast.db`. Ingest sockets bind
    /// to `media_bind_ip` and advertise `public_ip` in their ICE candidate. A
    /// broadcast whose ingest is lost waits `reconnect_window` for its
    /// broadcaster; broadcasts saved by a previous run that are still within
    /// it wait for theirs again.
    pub fn open(
        data_dir: &Path,
        media_bind_ip: IpAddr,
        public_ip: IpAddr,
        reconnect_window: Duration,
        events: crate::ops::EventSink,
    ) -> Result<Self, StoreError> {
        let store = Arc::new(SqliteChannelStore::open(&data_dir.join("stagecast.db"))?);
        Self::open_with(store, data_dir, media_bind_ip, public_ip, reconnect_window, events)
    }

    /// [`ChannelHub::open`] on `store` (recordings still go to `<data_dir>/recordings`).
    pub fn open_with(
        store: Arc<dyn ChannelStore>,
        data_dir: &Path,
        media_bind_ip: IpAddr,
        public_ip: IpAddr,
        reconnect_window: Duration,
        events: crate::ops::EventSink,
    ) -> Result<Self, StoreError> {
        let authorized = Mutex::new(store.authorized_ids()?.into_iter().collect());
        let playback_keys = playback_keys::load(store.as_ref())?;
        // One DTLS certificate for all broadcasts: generating one per WHIP
        // request costs milliseconds.
        let cert = str0m::crypto::from_feature_flags().dtls_provider.generate_certificate();
        let hub = Self {
            inner: Arc::new(HubInner {
                store,
                live: Mutex::new(HashMap::new()),
                media_bind_ip,
                public_ip,
                cert,
                reconnect_window,
                holds: holds::Holds::default(),
                authorized,
                playback_keys,
                events,
                recordings: recording::Recordings::start(Arc::new(recording::DirStore::new(data_dir.join("recordings")))),
                cluster: std::sync::OnceLock::new(),
                live_anywhere: Mutex::new(HashSet::new()),
            }),
        };
        hub.restore()?;
        Ok(hub)
    }

    /// Broadcasts the previous run saved: those whose broadcaster was last
    /// heard from within the reconnect window wait for it again (same
    /// playback URL, numbering continued); the rest are forgotten.
    fn restore(&self) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let window = self.inner.reconnect_window;
        let (now, now_ms) = (Instant::now(), ingest::wall_ms());
        for saved in store.saved_broadcasts()? {
            let away = Duration::from_millis(u64::try_from(now_ms.saturating_sub(saved.updated_ms)).unwrap_or(0));
            if away >= window || store.get(&saved.channel_id)?.is_none() {
                store.delete_broadcast(&saved.channel_id)?;
                continue;
            }
            let since = now.checked_sub(away).unwrap_or(now);
            let packager = Packager::resume(ingest::packager_config(), ingest::audio_params(), &saved.continuity);
            let channel = saved.channel_id.clone();
            tracing::info!(channel = %channel, away_ms = away.as_millis() as u64, "waiting for the broadcaster to come back after a restart");
            let b = Broadcast::restored(saved, packager, window, since, Some(store.clone()), self.inner.events.clone());
            if let Some(settings) = store.get(&channel)?.and_then(|c| c.recording) {
                b.record(self.inner.recordings.clone(), settings);
            }
            arm_window(&b, since + window);
            lock(&self.inner.live).insert(channel, b);
        }
        Ok(())
    }

    /// Create a channel with a fresh id and stream key; `authorized`:
    /// private; `recording`: auto-record every broadcast so.
    pub fn create(
        &self,
        name: String,
        authorized: bool,
        recording: Option<recording::RecordingSettings>,
    ) -> Result<ChannelRecord, ChannelError> {
        let record = ChannelRecord {
            id: format!("ch-{}", auth::random_alphanumeric(12)),
            name,
            stream_key: format!("{}{}", auth::STREAM_KEY_PREFIX, auth::random_alphanumeric(32)),
            create_time: auth::now_unix(),
            authorized,
            recording,
        };
        self.inner.store.insert(&record)?;
        if authorized {
            lock(&self.inner.authorized).insert(record.id.clone());
        }
        tracing::info!(channel = %record.id, authorized, "channel created");
        Ok(record)
    }

    /// The recorder and the store of every channel's recordings.
    pub fn recordings(&self) -> &recording::Recordings {
        &self.inner.recordings
    }

    /// Whether playing channel `id` needs a playback token.
    pub fn is_authorized(&self, id: &str) -> bool {
        lock(&self.inner.authorized).contains(id)
    }

    /// ListChannels, one page, oldest first.
    pub fn list(&self, page: crate::store::PageQuery) -> Result<crate::store::Page<ChannelRecord>, ChannelError> {
        Ok(self.inner.store.list(page)?)
    }

    pub fn get(&self, id: &str) -> Result<ChannelRecord, ChannelError> {
        self.inner.store.get(id)?.ok_or_else(|| ChannelError::NotFound(id.to_owned()))
    }

    /// UpdateChannel's recording part: how the channel records from its
    /// next broadcast on (`None`: not at all); a broadcast on air keeps
    /// what it started with.
    pub fn set_recording(&self, id: &str, recording: Option<recording::RecordingSettings>) -> Result<ChannelRecord, ChannelError> {
        if !self.inner.store.set_recording(id, recording)? {
            return Err(ChannelError::NotFound(id.to_owned()));
        }
        tracing::info!(channel = %id, ?recording, "channel recording updated");
        self.get(id)
    }

    /// Delete a channel, ending its broadcast.
    pub fn delete(&self, id: &str) -> Result<(), ChannelError> {
        if !self.inner.store.delete(id)? {
            return Err(ChannelError::NotFound(id.to_owned()));
        }
        lock(&self.inner.authorized).remove(id);
        if let Some(b) = lock(&self.inner.live).remove(id) {
            let _ = b.stop(None, Instant::now());
        }
        self.inner.store.delete_broadcast(id)?;
        self.inner.recordings.delete_channel(id);
        tracing::info!(channel = %id, "channel deleted");
        Ok(())
    }

    /// The broadcast of a channel while it is on air: live, or waiting for
    /// its broadcaster within the reconnect window.
    pub fn live_broadcast(&self, id: &str) -> Option<Arc<Broadcast>> {
        self.playback(id).filter(|b| b.is_on_air())
    }

    /// The broadcast HLS serves: on air, or ended less than [`ENDED_GRACE`] ago.
    pub fn playback(&self, id: &str) -> Option<Arc<Broadcast>> {
        let mut live = lock(&self.inner.live);
        let now = Instant::now();
        let b = live.get(id)?.clone();
        // The window timer does this too; a lookup must not wait for it.
        b.poll(now);
        if b.expired(now) {
            live.remove(id);
            return None;
        }
        Some(b)
    }

    /// A place for one HLS request of `ip` on channel `id`, if under the limits.
    pub fn hold(&self, id: &str, ip: IpAddr) -> Option<holds::HoldPermit> {
        self.inner.holds.try_hold(id, ip)
    }

    /// Distributed mode: advertise this node's broadcasts and serve other
    /// nodes' through `cluster`. False if one was attached already.
    pub fn attach_cluster(&self, cluster: crate::cluster::Cluster) -> bool {
        remote::spawn_renewer(&cluster, self);
        self.inner.cluster.set(cluster).is_ok()
    }

    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.inner.cluster.get()
    }

    /// The channels on air on this node.
    pub fn on_air_ids(&self) -> Vec<String> {
        lock(&self.inner.live).iter().filter(|(_, b)| b.is_on_air()).map(|(id, _)| id.clone()).collect()
    }

    /// Distributed mode: reload which channels are private and the playback
    /// keys from the shared store (changes other nodes made). Blocking.
    pub fn refresh_from_store(&self) -> Result<(), StoreError> {
        let authorized: HashSet<String> = self.inner.store.authorized_ids()?.into_iter().collect();
        let keys = playback_keys::load(self.inner.store.as_ref())?;
        *lock(&self.inner.authorized) = authorized;
        self.inner.playback_keys.replace_with(keys);
        Ok(())
    }

    /// Distributed mode: the channels on air on any node, as Redis says now.
    pub fn set_live_anywhere(&self, ids: HashSet<String>) {
        *lock(&self.inner.live_anywhere) = ids;
    }

    /// The channels whose HLS this node serves now (on air or just ended).
    pub fn playback_ids(&self) -> Vec<String> {
        let now = Instant::now();
        lock(&self.inner.live).iter().filter(|(_, b)| !b.expired(now)).map(|(id, _)| id.clone()).collect()
    }

    /// Channels on air now (`/metrics`).
    pub fn live_count(&self) -> u64 {
        lock(&self.inner.live).values().filter(|b| b.is_on_air()).count() as u64
    }

    /// Whether the channel is on air (live or reconnecting).
    pub fn is_live(&self, id: &str) -> bool {
        self.live_broadcast(id).is_some() || lock(&self.inner.live_anywhere).contains(id)
    }

    /// The ingest health of an on-air channel.
    pub fn health(&self, id: &str) -> Option<Health> {
        self.live_broadcast(id).and_then(|b| b.health())
    }

    /// Start an ingest session from a WHIP offer: a new broadcast, or the
    /// current one continued (its broadcaster is back within the reconnect
    /// window, or its live session went silent). Returns the session id and
    /// the SDP answer.
    pub fn start_broadcast(&self, id: &str, stream_key: &str, offer: &str) -> Result<(String, String), ChannelError> {
        let record = self.get(id)?;
        if !auth::constant_time_eq(stream_key, &record.stream_key) {
            return Err(ChannelError::InvalidStreamKey);
        }
        // The node that serves the broadcast knows whether it is private as
        // of now (in distributed mode the channel may come from another node).
        match record.authorized {
            true => lock(&self.inner.authorized).insert(id.to_owned()),
            false => lock(&self.inner.authorized).remove(id),
        };
        let now = Instant::now();
        let mut live = lock(&self.inner.live);
        if let Some(b) = live.get(id) {
            b.poll(now);
        }
        let current = live.get(id).cloned();
        let admission = current.as_ref().map_or(Admission::Fresh, |b| b.admit(now));
        if admission == Admission::Refuse {
            return Err(ChannelError::BroadcastInProgress(id.to_owned()));
        }
        let (setup, answer) =
            ingest::prepare(self.inner.media_bind_ip, self.inner.public_ip, self.inner.cert.as_ref(), offer)?;
        let session = auth::random_alphanumeric(16);
        let (broadcast, stop) = match (admission.clone(), current) {
            (Admission::Resume | Admission::TakeOver { .. }, Some(b)) => {
                let stop = b.start_session(session.clone(), now);
                (b, stop)
            }
            _ => {
                let packager = Packager::new(ingest::packager_config(), ingest::audio_params());
                let store = Some(self.inner.store.clone());
                let window = self.inner.reconnect_window;
                let events = self.inner.events.clone();
                let (b, stop) = Broadcast::fresh(id.to_owned(), session.clone(), packager, window, store, events, now);
                if let Some(settings) = record.recording {
                    b.record(self.inner.recordings.clone(), settings);
                }
                live.insert(id.to_owned(), b.clone());
                self.inner.events.stream_state(id, "Stream Start", &session);
                (b, stop)
            }
        };
        drop(live);
        if let Some(cluster) = self.inner.cluster.get() {
            // Other nodes forward this channel's HLS here from now, not from the next renewal.
            let (cluster, key) = (cluster.clone(), remote::key(id));
            tokio::spawn(async move {
                if let Err(e) = cluster.renew(&[key]).await {
                    tracing::warn!(error = %e, "cannot advertise a new broadcast in Redis");
                }
            });
        }
        tracing::info!(channel = %id, session = %session, ?admission, "ingest session started");
        let run = ingest::run(setup, broadcast.clone(), session.clone(), stop);
        tokio::spawn(drive(broadcast, session.clone(), run));
        Ok((session, answer))
    }

    /// End a broadcast deliberately; with `session`, only if it is the
    /// newest session's (live or lost).
    pub fn stop_broadcast(&self, id: &str, session: Option<&str>) -> Result<(), ChannelError> {
        match self.live_broadcast(id) {
            Some(b) => b.stop(session, Instant::now()),
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
        b.with_ladder(|l| l.each(|p| p.put_metadata(metadata.clone())));
        b.with_packager(|p| p.put_metadata(metadata));
        Ok(())
    }

    /// The stream key of a channel (for the demo backend, which hands it to the host).
    pub fn stream_key(&self, id: &str) -> Result<String, ChannelError> {
        Ok(self.get(id)?.stream_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcast(window: Duration) -> Arc<Broadcast> {
        let packager = Packager::new(ingest::packager_config(), ingest::audio_params());
        Broadcast::fresh("ch-1".to_owned(), "s".to_owned(), packager, window, None, crate::ops::EventSink::none(), Instant::now()).0
    }

    #[tokio::test]
    async fn a_panicking_ingest_task_still_ends_its_session() {
        let b = broadcast(Duration::ZERO);
        let task = tokio::spawn(drive(b.clone(), "s".to_owned(), async { panic!("a parser bug") }));
        assert!(task.await.is_ok(), "the panic is caught and logged");
        assert!(!b.is_on_air(), "the channel is free for a new broadcast");
        assert!(b.with_packager(|p| p.is_ended()), "without a reconnect window the playlist has its ENDLIST");
    }

    #[tokio::test]
    async fn a_lost_session_waits_for_the_broadcaster_within_the_window() {
        let b = broadcast(Duration::from_secs(20));
        drive(b.clone(), "s".to_owned(), async { SessionEnd::Lost("ICE disconnected".to_owned()) }).await;
        assert!(b.is_reconnecting() && b.is_on_air(), "on air, waiting");
        assert!(!b.with_packager(|p| p.is_ended()), "no ENDLIST while waiting");
        assert_eq!(b.admit(Instant::now()), Admission::Resume, "the broadcaster may come back");
    }

    #[tokio::test]
    async fn a_cancelled_ingest_task_still_ends_its_session() {
        let b = broadcast(Duration::ZERO);
        let task = tokio::spawn(drive(b.clone(), "s".to_owned(), std::future::pending::<SessionEnd>()));
        tokio::task::yield_now().await;
        assert!(b.is_on_air());
        task.abort();
        let _ = task.await;
        assert!(!b.is_on_air(), "dropping the task (runtime shutdown) frees the channel too");
    }

    #[tokio::test]
    async fn a_poisoned_packager_does_not_keep_the_channel_live() {
        let b = broadcast(Duration::ZERO);
        let poison = b.clone();
        let _ = std::thread::spawn(move || poison.with_packager(|_| panic!("mid-packaging"))).join();
        drive(b.clone(), "s".to_owned(), async { SessionEnd::Stopped }).await;
        assert!(!b.is_on_air());
    }
}
