//! Recordings: every broadcast of a channel that records is written to a
//! [`RecordingStore`] as an HLS VOD with thumbnails and IVS-style metadata.
//!
//! - [`core`] is the sans-IO [`Recorder`]: segments and "the broadcast went
//!   away" in, objects to put out, with the reconnect window.
//! - [`Recordings`] is its driver: one tokio task fed by a bounded queue.
//!   Broadcasts hand it segments with `try_send`, so the media path never
//!   waits for storage; when the queue is full the segment is dropped,
//!   counted and logged, and the recording continues past the hole (on
//!   one media timeline, see [`core`]). Puts run on blocking threads in order; thumbnails are
//!   decoded on a blocking thread, one at a time (one due while another
//!   runs is skipped). A recording that ended reads as recording until its
//!   last objects and thumbnail are written.
//! - [`store`]: the storage trait and the directory implementation.
//! - [`http`]: list / delete (`/v1`, API key) and playback (`/recordings/…`).

pub mod core;
mod http;
pub mod store;
pub mod thumbnail;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

pub use self::core::{Input, Recorder, RecordingSettings};
use self::core::{Action, Content};
pub use http::{playlist_seconds, router, ListRecordingsResponse, RecordingView};
pub use store::{DirStore, RecordingStore};

/// Inputs waiting for the recorder; past this, segments are dropped.
pub const QUEUE: usize = 64;

/// The recorder's driver and the store it writes. Cheap to clone.
#[derive(Clone)]
pub struct Recordings {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Input>,
    store: Arc<dyn RecordingStore>,
    recorder: std::sync::Mutex<Recorder>,
    /// Segments dropped because storage fell behind.
    dropped: AtomicU64,
    thumbnail_busy: AtomicBool,
    /// The thumbnail being made, if any: a recording is written once it is.
    thumbnail_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Recordings {
    /// Start the recorder task (needs a tokio runtime) writing to `store`.
    /// Recordings a previous run left unfinished are ended first (at
    /// startup, before any broadcast can start a new one).
    pub fn start(store: Arc<dyn RecordingStore>) -> Self {
        close_orphans(store.as_ref());
        let (tx, rx) = mpsc::channel(QUEUE);
        let inner = Arc::new(Inner {
            tx,
            store,
            recorder: std::sync::Mutex::new(Recorder::default()),
            dropped: AtomicU64::new(0),
            thumbnail_busy: AtomicBool::new(false),
            thumbnail_task: std::sync::Mutex::new(None),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(run(Arc::downgrade(&inner), rx));
        } else {
            tracing::warn!("no async runtime: recordings are off");
        }
        Self { inner }
    }

    pub fn store(&self) -> &Arc<dyn RecordingStore> {
        &self.inner.store
    }

    /// Hand the recorder `input` without waiting. A segment that does not
    /// fit is dropped (and the recording marks the gap).
    pub fn submit(&self, input: Input) {
        let channel = match &input {
            Input::Segment { channel, .. } => Some(channel.clone()),
            _ => None,
        };
        match self.inner.tx.try_send(input) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(?channel, dropped, "recording storage is behind: segment dropped");
                if let Some(channel) = channel {
                    // Best effort: if this does not fit either, the next segment that does still continues.
                    let _ = self.inner.tx.try_send(Input::Gap { channel });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Segments dropped so far because storage fell behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Whether `recording` of `channel` is still being written.
    pub fn is_recording(&self, channel: &str, recording: &str) -> bool {
        self.inner.recorder.lock().unwrap_or_else(|p| p.into_inner()).is_recording(channel, recording)
    }

    /// Forget `channel`'s recording in progress and delete all its
    /// recordings (the channel was deleted), after what is queued is written.
    pub fn delete_channel(&self, channel: &str) {
        let input = Input::Forget { channel: channel.to_owned() };
        if let Err(mpsc::error::TrySendError::Full(input)) = self.inner.tx.try_send(input) {
            let tx = self.inner.tx.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { tx.send(input).await });
            }
        }
    }
}

/// End the recordings a previous run left in progress (the server stopped
/// while they were being written): their playlists become VODs at their
/// last segment and get `recording-ended.json`. A broadcast that continues
/// after the restart starts a new recording.
fn close_orphans(store: &dyn RecordingStore) {
    let keys = match store.list("") {
        Ok(keys) => keys,
        Err(e) => return tracing::warn!(error = %e, "cannot look for unfinished recordings"),
    };
    for started in keys.iter().filter(|k| k.ends_with(core::STARTED)) {
        let prefix = &started[..started.len() - core::STARTED.len()];
        let (ended, playlist) = (format!("{prefix}{}", core::ENDED), format!("{prefix}{}", core::PLAYLIST));
        if keys.contains(&ended) {
            continue;
        }
        let closed = (|| -> std::io::Result<bool> {
            let (Some(meta), Some(text)) = (store.get(started)?, store.get(&playlist)?) else { return Ok(false) };
            let Some((vod, doc)) = core::close_orphan(&meta, &String::from_utf8_lossy(&text)) else { return Ok(false) };
            store.put(&playlist, vod.as_bytes())?;
            store.put(&ended, &doc)?;
            Ok(true)
        })();
        match closed {
            Ok(true) => tracing::info!(recording = %prefix, "an unfinished recording of a previous run was ended"),
            Ok(false) => tracing::warn!(recording = %prefix, "an unfinished recording cannot be read; left as it is"),
            Err(e) => tracing::warn!(recording = %prefix, error = %e, "cannot end an unfinished recording"),
        }
    }
}

fn wall_ms() -> i64 {
    super::ingest::wall_ms()
}

/// The recorder task: ends when every [`Recordings`] handle is gone.
async fn run(inner: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<Input>) {
    loop {
        let deadline = {
            let Some(inner) = inner.upgrade() else { return };
            let r = inner.recorder.lock().unwrap_or_else(|p| p.into_inner());
            r.next_deadline()
        };
        let sleep = async {
            match deadline {
                Some(at) => {
                    let wait = u64::try_from(at.saturating_sub(wall_ms())).unwrap_or(0);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await
                }
                None => std::future::pending().await,
            }
        };
        let input = tokio::select! {
            input = rx.recv() => match input {
                Some(input) => Some(input),
                None => return,
            },
            () = sleep => None,
        };
        let Some(inner) = inner.upgrade() else { return };
        let actions = {
            let mut r = inner.recorder.lock().unwrap_or_else(|p| p.into_inner());
            match input {
                Some(input) => r.handle(input, wall_ms()),
                None => r.poll(wall_ms()),
            }
        };
        for action in actions {
            execute(&inner, action).await;
        }
    }
}

async fn execute(inner: &Arc<Inner>, action: Action) {
    match action {
        Action::Put { key, data, content } => {
            let store = inner.store.clone();
            let k = key.clone();
            let result = tokio::task::spawn_blocking(move || store.put(&k, &data)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(%key, ?content, error = %e, "cannot write a recording object"),
                Err(e) => tracing::warn!(%key, ?content, error = %e, "writing a recording object failed"),
            }
            if content == Content::Playlist {
                tracing::debug!(%key, "recording playlist written");
            }
        }
        Action::DeletePrefix { prefix } => {
            let store = inner.store.clone();
            let p = prefix.clone();
            match tokio::task::spawn_blocking(move || store.delete_prefix(&p)).await {
                Ok(Ok(n)) => tracing::info!(%prefix, objects = n, "recordings deleted with their channel"),
                Ok(Err(e)) => tracing::warn!(%prefix, error = %e, "cannot delete recordings"),
                Err(e) => tracing::warn!(%prefix, error = %e, "deleting recordings failed"),
            }
        }
        Action::Written { channel, recording } => {
            // Its last thumbnail may still be being made.
            let thumbnail = inner.thumbnail_task.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(task) = thumbnail {
                let _ = task.await;
            }
            inner.recorder.lock().unwrap_or_else(|p| p.into_inner()).written(&channel, &recording);
        }
        Action::Thumbnail { key, keyframe } => {
            if inner.thumbnail_busy.swap(true, Ordering::AcqRel) {
                tracing::info!(%key, "a thumbnail is still being made: this one is skipped");
                return;
            }
            let owner = inner.clone();
            let task = tokio::task::spawn_blocking(move || {
                // Frees the decoder whatever happens, a panic included.
                struct Free(Arc<Inner>);
                impl Drop for Free {
                    fn drop(&mut self) {
                        self.0.thumbnail_busy.store(false, Ordering::Release);
                    }
                }
                let free = Free(owner);
                match thumbnail::jpeg_from_keyframe(&keyframe) {
                    Ok(jpeg) => {
                        if let Err(e) = free.0.store.put(&key, &jpeg) {
                            tracing::warn!(%key, error = %e, "cannot write a thumbnail");
                        }
                    }
                    Err(e) => tracing::warn!(%key, error = %e, "cannot make a thumbnail"),
                }
            });
            *inner.thumbnail_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
    }
}
