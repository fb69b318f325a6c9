//! One broadcast: the packager that ingest sessions write and HLS handlers
//! read, the [`Lifecycle`] that decides what a session's end means, and the
//! saved [`Continuity`] that lets it survive a restart.
//!
//! Locks: `control` before `packager` before `ladder`, never the other way
//! round. The saved state is written under `control`, so saves and deletes
//! cannot reorder.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::watch;

use super::ladder::{self, Ladder};
use super::lifecycle::{Admission, Effect, Health, Lifecycle, SessionEnd};
use super::packager::Packager;
use super::recording::{Input, RecordingSettings, Recordings};
use super::store::{ChannelStore, SavedBroadcast};
use super::ChannelError;
use crate::ops::EventSink;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while packaging must not take the channel down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The stop signal of one ingest session: `Some(end)` asks it to end so.
pub type StopSignal = watch::Receiver<Option<SessionEnd>>;

struct Control {
    lifecycle: Lifecycle,
    /// The newest session: live, or the one that was lost (its WHIP
    /// `DELETE` still ends the broadcast while it waits).
    session: String,
    stop: watch::Sender<Option<SessionEnd>>,
    /// The media sequence number last saved.
    saved_msn: Option<u64>,
    /// The newest segment handed to the recorder.
    recorded_msn: Option<u64>,
}

/// One broadcast, possibly fed by several ingest sessions in turn.
pub struct Broadcast {
    pub channel: String,
    /// The top rendition (the only one without simulcast).
    packager: Mutex<Packager>,
    /// The lower renditions of a simulcast broadcast.
    ladder: Mutex<Ladder>,
    control: Mutex<Control>,
    changed: watch::Sender<u64>,
    store: Option<Arc<dyn ChannelStore>>,
    /// Webhooks: "Stream End" when the broadcast finishes.
    events: EventSink,
    /// The `stream_id` webhooks name the broadcast by: its first session.
    pub stream_id: String,
    /// Auto-record: where complete segments go.
    recorder: std::sync::OnceLock<(Recordings, RecordingSettings)>,
}

impl Broadcast {
    fn build(
        channel: String,
        packager: Packager,
        lifecycle: Lifecycle,
        session: String,
        store: Option<Arc<dyn ChannelStore>>,
        events: EventSink,
    ) -> (Arc<Self>, StopSignal) {
        let (stop, signal) = watch::channel(None);
        let stream_id = session.clone();
        let control = Control { lifecycle, session, stop, saved_msn: None, recorded_msn: None };
        let b = Self {
            channel,
            packager: Mutex::new(packager),
            ladder: Mutex::new(Ladder::default()),
            control: Mutex::new(control),
            changed: watch::Sender::new(0),
            store,
            events,
            stream_id,
            recorder: std::sync::OnceLock::new(),
        };
        (Arc::new(b), signal)
    }

    /// A new broadcast whose first session is `session`.
    pub fn fresh(
        channel: String,
        session: String,
        packager: Packager,
        window: Duration,
        store: Option<Arc<dyn ChannelStore>>,
        events: EventSink,
        now: Instant,
    ) -> (Arc<Self>, StopSignal) {
        Self::build(channel, packager, Lifecycle::live(session.clone(), window, now), session, store, events)
    }

    /// A broadcast saved before a restart, waiting for its broadcaster
    /// since `since`; `packager` continues its playlist.
    pub fn restored(
        saved: SavedBroadcast,
        packager: Packager,
        window: Duration,
        since: Instant,
        store: Option<Arc<dyn ChannelStore>>,
        events: EventSink,
    ) -> Arc<Self> {
        let lifecycle = Lifecycle::reconnecting(since, window);
        let (b, _) = Self::build(saved.channel_id, packager, lifecycle, saved.session, store, events);
        lock(&b.control).saved_msn = Some(saved.continuity.next_msn);
        b
    }

    /// Hand every complete segment from now on to `recordings` (the
    /// channel records with `settings`). Set once, before media flows.
    pub fn record(&self, recordings: Recordings, settings: RecordingSettings) {
        let thumbnails = settings.thumbnail_interval_seconds.is_some();
        if self.recorder.set((recordings, settings)).is_ok() {
            self.with_packager(|p| p.keep_keyframes(thumbnails));
        }
    }

    /// Hand the segments completed since the last call to the recorder
    /// (never waits: see [`Recordings::submit`]); `away`: then tell it the
    /// broadcast was interrupted or ended.
    fn forward_to_recorder(&self, ctl: &mut Control, away: bool) {
        let Some((recordings, settings)) = self.recorder.get() else { return };
        let after = ctl.recorded_msn;
        let segments =
            self.with_packager(|p| if p.last_completed() == after { Vec::new() } else { p.completed_after(after) });
        for segment in segments {
            ctl.recorded_msn = Some(segment.msn);
            recordings.submit(Input::Segment { channel: self.channel.clone(), settings: *settings, segment });
        }
        if away {
            recordings.submit(Input::Away { channel: self.channel.clone() });
        }
    }

    /// Run `f` on the packager; readers are woken afterwards if it changed.
    pub fn with_packager<R>(&self, f: impl FnOnce(&mut Packager) -> R) -> R {
        let (result, changed) = {
            let mut p = lock(&self.packager);
            let before = p.version();
            let r = f(&mut p);
            (r, p.version() != before)
        };
        self.wake(changed);
        result
    }

    /// Run `f` on the lower renditions; readers are woken if any changed.
    pub fn with_ladder<R>(&self, f: impl FnOnce(&mut Ladder) -> R) -> R {
        let (result, changed) = {
            let mut l = lock(&self.ladder);
            let mut before = 0u64;
            l.each(|p| before = before.wrapping_add(p.version()));
            let r = f(&mut l);
            let mut after = 0u64;
            l.each(|p| after = after.wrapping_add(p.version()));
            (r, after != before)
        };
        self.wake(changed);
        result
    }

    /// Run `f` on rendition `rid` (`None`: the top one); `None` when there is no such rendition.
    pub fn with_rendition<R>(&self, rid: Option<&str>, f: impl FnOnce(&mut Packager) -> R) -> Option<R> {
        match rid {
            None => Some(self.with_packager(f)),
            Some(rid) => self.with_ladder(|l| l.get_mut(rid).map(f)),
        }
    }

    fn wake(&self, changed: bool) {
        if changed {
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// The current session sends these lower simulcast layers (rids).
    pub fn expect_renditions(&self, rids: Vec<String>) {
        self.with_ladder(|l| l.expect(rids));
    }

    /// Feed lower rendition `rid` from session `session` (made on its first
    /// frame, numbered in step with the top rendition); `None` when that
    /// session no longer feeds the broadcast or `rid` was not announced.
    pub fn ingest_rendition<R>(&self, session: &str, rid: &str, f: impl FnOnce(&mut Packager) -> R) -> Option<R> {
        let ctl = lock(&self.control);
        if ctl.lifecycle.current_session() != Some(session) {
            return None;
        }
        let (config, top_open, top_next, target) = self.with_packager(|p| {
            let mut config = p.config().clone();
            config.first_msn = p.next_msn();
            (config, p.open_segment_age(), p.next_msn(), ladder::segment_ticks(p))
        });
        self.with_ladder(|l| {
            let p = l.get_or_make(rid, || Packager::new(config, super::ingest::audio_params()))?;
            p.start_at_msn(ladder::first_msn(top_open, top_next, target));
            Some(f(p))
        })
    }

    /// The multivariant playlist: `None` until the top rendition has media;
    /// `settled` is false while an announced lower rendition has no
    /// complete segment yet (its bandwidth is unknown).
    pub fn multivariant(&self) -> Option<(String, bool)> {
        let (lower, settled) = self.with_ladder(|l| (l.variants(), l.settled()));
        self.with_packager(|p| {
            if !p.has_media() && !p.is_ended() {
                return None;
            }
            let text = match ladder::variant_of(p, "media.m3u8") {
                Some(top) if !lower.is_empty() => ladder::multivariant(&[vec![top], lower].concat()),
                _ => p.multivariant_playlist(),
            };
            Some((text, settled))
        })
    }

    /// Woken on every packager change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The newest ingest session's id.
    pub fn session(&self) -> String {
        lock(&self.control).session.clone()
    }

    /// Live, or waiting for the broadcaster within the reconnect window.
    pub fn is_on_air(&self) -> bool {
        lock(&self.control).lifecycle.is_on_air()
    }

    pub fn is_reconnecting(&self) -> bool {
        lock(&self.control).lifecycle.is_reconnecting()
    }

    pub fn health(&self) -> Option<Health> {
        lock(&self.control).lifecycle.health()
    }

    pub(super) fn expired(&self, now: Instant) -> bool {
        lock(&self.control).lifecycle.expired(now)
    }

    /// How a new WHIP offer would be admitted now.
    pub fn admit(&self, now: Instant) -> Admission {
        lock(&self.control).lifecycle.admit(now)
    }

    /// Session `session` (admitted by [`Broadcast::admit`]) feeds the
    /// broadcast from now on; a live session it replaces is told to end.
    pub fn start_session(&self, session: String, now: Instant) -> StopSignal {
        let mut ctl = lock(&self.control);
        let (stop, signal) = watch::channel(None);
        let old = std::mem::replace(&mut ctl.stop, stop);
        let _ = old.send(Some(SessionEnd::Replaced));
        let effect = ctl.lifecycle.start_session(session.clone(), now);
        ctl.session = session;
        if let Some(effect) = effect {
            self.apply(&mut ctl, effect);
        }
        signal
    }

    /// Feed the packager from session `session` at `now`; `None` (and
    /// nothing done) when that session no longer feeds the broadcast.
    pub fn ingest<R>(&self, session: &str, now: Instant, f: impl FnOnce(&mut Packager) -> R) -> Option<R> {
        let mut ctl = lock(&self.control);
        if ctl.lifecycle.current_session() != Some(session) {
            return None;
        }
        ctl.lifecycle.on_media(now);
        let (result, continuity) = self.with_packager(|p| {
            let r = f(p);
            (r, p.continuity())
        });
        // Saved once per segment: enough to continue numbering after a restart.
        if let Some(c) = continuity.filter(|c| ctl.saved_msn != Some(c.next_msn)) {
            ctl.saved_msn = Some(c.next_msn);
            self.save(&ctl, c);
        }
        self.forward_to_recorder(&mut ctl, false);
        Some(result)
    }

    /// Session `session` ended with `end`. Returns when the reconnect
    /// window closes, if it opened.
    pub fn session_ended(&self, session: &str, end: &SessionEnd, now: Instant) -> Option<Instant> {
        let mut ctl = lock(&self.control);
        let effect = ctl.lifecycle.session_ended(session, end, now)?;
        self.apply(&mut ctl, effect);
        ctl.lifecycle.deadline()
    }

    /// End the broadcast deliberately (WHIP `DELETE` of the newest session
    /// when `session` is given, `StopStream` or channel delete otherwise).
    pub fn stop(&self, session: Option<&str>, now: Instant) -> Result<(), ChannelError> {
        let mut ctl = lock(&self.control);
        if session.is_some_and(|s| s != ctl.session) {
            return Err(ChannelError::SessionNotFound);
        }
        if !ctl.lifecycle.is_on_air() {
            return Err(ChannelError::NotBroadcasting(self.channel.clone()));
        }
        if ctl.lifecycle.current_session().is_some() {
            // The ingest task ends with `Stopped`, which finishes the playlist.
            let _ = ctl.stop.send(Some(SessionEnd::Stopped));
        } else if let Some(effect) = ctl.lifecycle.stop(now) {
            self.apply(&mut ctl, effect);
        }
        Ok(())
    }

    /// Advance to `now`: a reconnect window that has passed ends the broadcast.
    pub fn poll(&self, now: Instant) {
        let mut ctl = lock(&self.control);
        if let Some(effect) = ctl.lifecycle.poll(now) {
            tracing::info!(channel = %self.channel, "the broadcaster did not come back in time: broadcast ended");
            self.apply(&mut ctl, effect);
        }
    }

    fn apply(&self, ctl: &mut Control, effect: Effect) {
        if effect == Effect::Finish {
            // The broadcast is over whatever the packager makes of it.
            self.events.stream_state(&self.channel, "Stream End", &self.stream_id);
        }
        // A packager left inconsistent by a panic only loses this step, never the state change.
        let step = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let apply = |p: &mut Packager| match effect {
                Effect::Interrupt => p.interrupt(),
                Effect::Finish => p.finish(),
            };
            self.with_ladder(|l| l.each(apply));
            self.with_packager(|p| {
                apply(p);
                p.continuity()
            })
        }));
        self.forward_to_recorder(ctl, true);
        match (effect, step) {
            (_, Err(_)) => tracing::error!(channel = %self.channel, ?effect, "the packager could not be updated"),
            (Effect::Interrupt, Ok(Some(c))) => {
                ctl.saved_msn = Some(c.next_msn);
                self.save(ctl, c);
            }
            (Effect::Interrupt, Ok(None)) => {}
            (Effect::Finish, Ok(_)) => {
                if let Some(store) = &self.store {
                    if let Err(e) = store.delete_broadcast(&self.channel) {
                        tracing::warn!(channel = %self.channel, error = %e, "cannot forget the ended broadcast");
                    }
                }
            }
        }
    }

    fn save(&self, ctl: &Control, continuity: super::packager::Continuity) {
        let Some(store) = &self.store else { return };
        let saved = SavedBroadcast {
            channel_id: self.channel.clone(),
            session: ctl.session.clone(),
            continuity,
            updated_ms: super::ingest::wall_ms(),
        };
        if let Err(e) = store.save_broadcast(&saved) {
            tracing::warn!(channel = %self.channel, error = %e, "cannot save the broadcast's continuity");
        }
    }
}

/// Close the reconnect window of `b` at `deadline` (and wake its viewers).
pub fn arm_window(b: &Arc<Broadcast>, deadline: Instant) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let b = b.clone();
    runtime.spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
        b.poll(Instant::now());
    });
}

/// Owned by an ingest task: when the task ends — returns, panics, or is
/// dropped with the runtime — the session's end is recorded, so the channel
/// takes a new session whatever happened inside.
pub struct EndGuard {
    broadcast: Arc<Broadcast>,
    session: String,
    end: Option<SessionEnd>,
}

impl EndGuard {
    pub fn new(broadcast: Arc<Broadcast>, session: String) -> Self {
        Self { broadcast, session, end: None }
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let end = self.end.take().unwrap_or_else(|| SessionEnd::Lost("the ingest task stopped".to_owned()));
        if let Some(deadline) = self.broadcast.session_ended(&self.session, &end, Instant::now()) {
            arm_window(&self.broadcast, deadline);
        }
    }
}

/// Run one ingest session to its end and record the end on every path.
pub async fn drive(broadcast: Arc<Broadcast>, session: String, run: impl Future<Output = SessionEnd>) {
    let mut guard = EndGuard::new(broadcast.clone(), session.clone());
    let end = match AssertUnwindSafe(run).catch_unwind().await {
        Ok(end) => end,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(channel = %broadcast.channel, %session, panic = %what, "ingest task panicked");
            SessionEnd::Lost("ingest task panicked".to_owned())
        }
    };
    tracing::info!(channel = %broadcast.channel, %session, ?end, "ingest session ended");
    guard.end = Some(end);
    drop(guard);
}
