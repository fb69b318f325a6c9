//! The stage hub: every live stage's [`StageRoom`] and its event-plane
//! connections. Handlers, sockets and the SFU event task call it through
//! `&self`; one mutex guards the map and is never held across an await.
//!
//! Nothing is queued per connection. After every change the hub publishes
//! the stage's new [`RoomState`] in a `watch` (a latest-value slot shared by
//! the stage's connections); each connection's writer, when woken, builds
//! one frame from the newest state and what it last sent. A slow socket
//! therefore holds the latest state and at most one frame, never a backlog.
//! A DISCONNECT goes through a per-connection oneshot.
//!
//! A member holds its place through its event socket (or, within the
//! reconnect grace, the socket it lost), or — for a WHIP-only publisher such
//! as OBS — through its publish session ([`whip`]). Every change also wakes
//! the presence writer ([`super::presence`]), which copies the members to
//! the store off the lock so a restarted server can [`StageHub::restore`]
//! them.

mod whip;

pub use whip::WhipPublish;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stagecast_protocol::events::{DisconnectReason, ParticipantState};
use stagecast_protocol::token::ParticipantClaims;
use stagecast_protocol::{ParticipantId, StageId};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::room::{RoomState, StageRoom};
use crate::ops::EventSink;
use crate::sfu::{SessionId, SfuEvent, SfuHandle, WeakSfuHandle};

/// Why the hub refuses a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("the stage is full: it already has the maximum of {max} participants")]
    StageFull { max: usize },
    /// A WHIP publish by a participant whose event socket left the stage
    /// lately: a request from before it left (a browser's POST held up by a
    /// dead link), not a WHIP-only publisher.
    #[error("the participant left the stage; it publishes again after rejoining it")]
    LeftStage,
}

/// How long a participant whose event socket left cannot come back as a
/// WHIP-only member: longer than a request can sit in a browser's network
/// stack across a dropped link.
const SOCKET_LEFT_GUARD: Duration = Duration::from_secs(300);

/// One event-plane connection as the hub returns it from [`StageHub::join`].
pub struct Connection {
    /// Identifies this connection (a newer one with the same token replaces it).
    pub id: u64,
    /// The stage's latest state; `changed()` wakes the writer.
    pub state: watch::Receiver<Arc<RoomState>>,
    /// Resolves when the server ends this connection: send DISCONNECT with
    /// the reason and close. The hub has already removed the connection.
    pub disconnect: oneshot::Receiver<DisconnectReason>,
    /// The simulcast layers the SFU wants from this participant's publish
    /// (`PUBLISH_LAYERS`); `None` until it has said.
    pub layers: watch::Receiver<Option<Vec<String>>>,
}

/// A place on a stage, held from the check before the WebSocket upgrade to
/// the join after it, so concurrent upgrades cannot overfill a stage.
/// Dropping it unused gives the place back.
#[must_use]
pub struct Seat {
    hub: Weak<Mutex<HubInner>>,
    stage: StageId,
    /// Counted in the stage's `reserved` (false for a member reconnecting).
    counted: bool,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        if let Some(inner) = self.hub.upgrade() {
            if let Some(entry) = lock(&inner).stages.get_mut(&self.stage) {
                entry.reserved = entry.reserved.saturating_sub(1);
            }
        }
    }
}

struct Conn {
    id: u64,
    disconnect: oneshot::Sender<DisconnectReason>,
    layers: watch::Sender<Option<Vec<String>>>,
}

impl Conn {
    fn end(self, reason: DisconnectReason) {
        let _ = self.disconnect.send(reason);
    }
}

struct StageEntry {
    id: StageId,
    room: StageRoom,
    /// Webhooks: participant joined / left / published / unpublished.
    events: EventSink,
    /// Wakes the presence writer; `dirty` says this stage has news for it.
    changed: Arc<Notify>,
    dirty: bool,
    state: watch::Sender<Arc<RoomState>>,
    /// The live connection of each connected member.
    conns: HashMap<String, Conn>,
    /// Members whose socket was lost, with that connection's id: they stay
    /// members for the reconnect grace.
    lost: HashMap<String, u64>,
    /// The publish session each publishing member is announced with.
    publishing: HashMap<String, SessionId>,
    /// The layers the SFU last wanted from each publishing member.
    layers_wanted: HashMap<String, Vec<String>>,
    /// Seats held by upgrades in flight; they count toward the cap.
    reserved: usize,
    /// Members without an event socket whose WHIP publish holds their place.
    whip: HashMap<String, whip::WhipMember>,
    /// Event-plane members that left within [`SOCKET_LEFT_GUARD`], and when.
    socket_left: HashMap<String, Instant>,
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)).unwrap_or(0)
}

impl StageEntry {
    fn new(id: &StageId, changed: &Arc<Notify>, events: &EventSink) -> Self {
        let room = StageRoom::new(now_micros());
        let (state, _) = watch::channel(Arc::new(room.state().clone()));
        Self {
            id: id.clone(),
            room,
            events: events.clone(),
            changed: changed.clone(),
            dirty: false,
            state,
            conns: HashMap::new(),
            lost: HashMap::new(),
            publishing: HashMap::new(),
            layers_wanted: HashMap::new(),
            reserved: 0,
            whip: HashMap::new(),
            socket_left: HashMap::new(),
        }
    }

    /// Wake every connection's writer (and the presence writer) with the
    /// room as it is now.
    fn publish(&mut self) {
        self.state.send_replace(Arc::new(self.room.state().clone()));
        self.mark_dirty();
    }

    /// The presence writer has something to copy (cheap: no I/O here).
    fn mark_dirty(&mut self) {
        self.dirty = true;
        self.changed.notify_one();
    }

    /// Tell the webhooks about member `id` (looked up for its user id).
    fn announce(&self, id: &str, event_name: &str) {
        if !self.events.is_enabled() {
            return;
        }
        let user_id = self.room.participants().find(|p| p.id == id).map(|p| p.user_id.clone()).unwrap_or_default();
        self.events.stage_update(self.id.as_str(), event_name, id, &user_id);
    }

    /// Add (or update) a member; a new one is announced as joined.
    fn join_member(&mut self, member: ParticipantState) -> bool {
        let id = member.id.clone();
        let new = !self.room.contains(&id);
        let changed = self.room.join(member);
        if new {
            self.announce(&id, "Participant Joined");
        }
        changed
    }

    fn remove_member(&mut self, id: &str) {
        if self.room.contains(id) {
            self.announce(id, "Participant Left");
        }
        self.lost.remove(id);
        self.publishing.remove(id);
        self.layers_wanted.remove(id);
        if self.whip.remove(id).is_some() {
            self.mark_dirty();
        } else if self.room.contains(id) {
            let now = Instant::now();
            self.socket_left.retain(|_, at| now.duration_since(*at) < SOCKET_LEFT_GUARD);
            self.socket_left.insert(id.to_owned(), now);
        }
        if self.room.leave(id) {
            self.publish();
        }
    }

    /// Whether `id`'s event socket left the stage within the guard.
    fn left_lately(&self, id: &str) -> bool {
        self.socket_left.get(id).is_some_and(|at| at.elapsed() < SOCKET_LEFT_GUARD)
    }

    fn is_current(&self, id: &str, conn: u64) -> bool {
        self.conns.get(id).map(|c| c.id) == Some(conn)
    }
}

#[derive(Default)]
struct HubInner {
    // Entries outlive their members (the sequence of a stage only grows);
    // `delete_stage` removes them.
    stages: HashMap<StageId, StageEntry>,
    next_conn: u64,
    events: EventSink,
    /// Stages deleted since the presence writer last looked.
    deleted: Vec<StageId>,
}

impl HubInner {
    fn next_conn(&mut self) -> u64 {
        self.next_conn += 1;
        self.next_conn
    }
}

/// Live stages. Shared by all handlers; methods take `&self`. Cheap to clone.
#[derive(Clone)]
pub struct StageHub {
    inner: Arc<Mutex<HubInner>>,
    sfu: SfuHandle,
    /// Notified on every change a presence writer should copy.
    changed: Arc<Notify>,
}

/// A [`StageHub`] that does not keep it alive, for tasks that outlive a
/// request (the presence writer, the grace of restored members).
#[derive(Clone)]
pub(crate) struct WeakHub {
    inner: Weak<Mutex<HubInner>>,
    sfu: WeakSfuHandle,
    changed: Arc<Notify>,
}

impl WeakHub {
    pub(crate) fn upgrade(&self) -> Option<StageHub> {
        Some(StageHub { inner: self.inner.upgrade()?, sfu: self.sfu.upgrade()?, changed: self.changed.clone() })
    }

    /// Resolves at the next change (or at once, if one happened since the last call).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// One stage as the presence writer copies it.
pub(crate) struct PresenceChange {
    pub stage: StageId,
    pub state: Arc<RoomState>,
    /// Members whose place is held by a WHIP publish, sorted.
    pub whip_only: Vec<String>,
}

/// What changed since the presence writer last took it.
#[derive(Default)]
pub(crate) struct PresenceBatch {
    pub changed: Vec<PresenceChange>,
    pub deleted: Vec<StageId>,
}

/// What [`StageHub::counts`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCounts {
    pub stages: u64,
    pub publishing: u64,
    pub not_publishing: u64,
}

/// A member as a previous server run left it (from the presence store).
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredMember {
    pub state: ParticipantState,
    /// Its place was held by a WHIP publish, not an event socket.
    pub whip_only: bool,
}

fn lock(inner: &Mutex<HubInner>) -> MutexGuard<'_, HubInner> {
    // A panic elsewhere must not take the event plane down with it.
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ids(claims: &ParticipantClaims) -> (StageId, &str) {
    (StageId(claims.topic.clone()), claims.jti.as_str())
}

impl StageHub {
    /// A hub that applies `events` from the SFU (publish started/stopped)
    /// to the rooms. Must be called inside a tokio runtime (it spawns the
    /// task that reads `events`).
    pub fn new(sfu: SfuHandle, mut events: mpsc::UnboundedReceiver<SfuEvent>) -> Self {
        let inner = Arc::new(Mutex::new(HubInner::default()));
        let weak = Arc::downgrade(&inner);
        let weak_sfu = sfu.downgrade();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    while let Some(event) = events.recv().await {
                        let Some(inner) = weak.upgrade() else { break };
                        if let Some((stage, participant)) = apply_sfu_event(&inner, event) {
                            // Published by someone no longer on the stage (left
                            // while the session was being set up): end it.
                            if let Some(sfu) = weak_sfu.upgrade() {
                                sfu.remove_participant(stage, participant);
                            }
                        }
                    }
                });
            }
            Err(_) => tracing::error!("StageHub created outside a tokio runtime: publish state will not update"),
        }
        Self { inner, sfu, changed: Arc::new(Notify::new()) }
    }

    /// Send participant joined / left / published / unpublished to `events`
    /// (call before the first member joins).
    pub fn with_events(self, events: EventSink) -> Self {
        lock(&self.inner).events = events;
        self
    }

    /// Stages with members, and their members by whether they publish (`/metrics`).
    pub fn counts(&self) -> StageCounts {
        let inner = lock(&self.inner);
        let mut counts = StageCounts::default();
        for entry in inner.stages.values().filter(|e| !e.room.is_empty()) {
            counts.stages += 1;
            for p in entry.room.participants() {
                match p.published {
                    true => counts.publishing += 1,
                    false => counts.not_publishing += 1,
                }
            }
        }
        counts
    }

    pub(crate) fn downgrade(&self) -> WeakHub {
        WeakHub { inner: Arc::downgrade(&self.inner), sfu: self.sfu.downgrade(), changed: self.changed.clone() }
    }

    /// Take every stage changed since the last call (their latest state)
    /// and the stages deleted since. Cheap: clones `Arc`s under the lock.
    pub(crate) fn take_presence(&self) -> PresenceBatch {
        let mut inner = lock(&self.inner);
        let deleted = std::mem::take(&mut inner.deleted);
        let mut changed = Vec::new();
        for (stage, entry) in inner.stages.iter_mut().filter(|(_, e)| e.dirty) {
            entry.dirty = false;
            let mut whip_only: Vec<String> = entry.whip.keys().cloned().collect();
            whip_only.sort_unstable();
            changed.push(PresenceChange { stage: stage.clone(), state: entry.state.borrow().clone(), whip_only });
        }
        PresenceBatch { changed, deleted }
    }

    /// A presence write of `stages` failed: offer them again (in full).
    pub(crate) fn retry_presence(&self, stages: Vec<StageId>) {
        let mut inner = lock(&self.inner);
        for stage in stages {
            match inner.stages.get_mut(&stage) {
                Some(entry) => entry.mark_dirty(),
                None => inner.deleted.push(stage),
            }
        }
        self.changed.notify_one();
    }

    /// Put back the members a previous run of the server had on `stage`, as
    /// if each had just lost its socket (or, WHIP-only, its publish): none
    /// is publishing (its media sessions died with that server), mute
    /// states are kept, and each leaves unless it reconnects (or publishes
    /// again) within `grace`. Members already on the stage are left alone.
    /// Must be called inside a tokio runtime (it spawns the grace timer).
    pub fn restore(&self, stage: &StageId, members: Vec<RestoredMember>, grace: Duration) {
        let mut inner = lock(&self.inner);
        let inner = &mut *inner;
        let events = inner.events.clone();
        let entry = inner.stages.entry(stage.clone()).or_insert_with(|| StageEntry::new(stage, &self.changed, &events));
        let mut restored = Vec::with_capacity(members.len());
        for member in members {
            let id = member.state.id.clone();
            if entry.room.contains(&id) {
                continue;
            }
            let state = ParticipantState { published: false, tracks: Vec::new(), ..member.state };
            entry.room.join(state);
            inner.next_conn += 1;
            entry.lost.insert(id.clone(), inner.next_conn);
            if member.whip_only {
                entry.whip.insert(id.clone(), whip::WhipMember::restored());
            }
            restored.push((ParticipantId(id), inner.next_conn));
        }
        entry.publish();
        restored_grace(self.downgrade(), stage.clone(), restored, grace);
    }

    /// Hold a place on the claims' stage for a connection about to be
    /// upgraded. A member (connected or within its reconnect grace) always
    /// gets one; anyone else only while the stage has fewer than
    /// `max_members` members and held places.
    pub fn reserve(&self, claims: &ParticipantClaims, max_members: usize) -> Result<Seat, HubError> {
        let (stage, id) = ids(claims);
        let mut inner = lock(&self.inner);
        let events = inner.events.clone();
        let entry = inner.stages.entry(stage.clone()).or_insert_with(|| StageEntry::new(&stage, &self.changed, &events));
        let counted = !entry.room.contains(id);
        if counted {
            if entry.room.len().saturating_add(entry.reserved) >= max_members {
                return Err(HubError::StageFull { max: max_members });
            }
            entry.reserved += 1;
        }
        Ok(Seat { hub: Arc::downgrade(&self.inner), stage, counted })
    }

    /// The stages with members (or seats being taken) on this server.
    pub fn active_stages(&self) -> Vec<StageId> {
        lock(&self.inner).stages.iter().filter(|(_, e)| !e.room.is_empty() || e.reserved > 0).map(|(id, _)| id.clone()).collect()
    }

    /// Whether the stage has members (or seats being taken) on this server.
    pub fn is_active(&self, stage: &StageId) -> bool {
        lock(&self.inner).stages.get(stage).is_some_and(|e| !e.room.is_empty() || e.reserved > 0)
    }

    pub fn is_full(&self, stage: &StageId, max_members: usize) -> bool {
        lock(&self.inner)
            .stages
            .get(stage)
            .is_some_and(|e| e.room.len().saturating_add(e.reserved) >= max_members)
    }

    /// Add a participant's event-plane connection in the place `seat` held.
    /// An older connection with the same participant id gets DISCONNECT
    /// token-reused; a member within its reconnect grace simply continues.
    pub fn join(&self, mut seat: Seat, claims: &ParticipantClaims) -> Connection {
        let (tx, disconnect) = oneshot::channel();
        let mut inner = lock(&self.inner);
        let id = inner.next_conn();
        let counted = std::mem::replace(&mut seat.counted, false);
        let Some(entry) = inner.stages.get_mut(&seat.stage) else {
            // Deleted since the seat was taken.
            let _ = tx.send(DisconnectReason::StageDeleted);
            let (_, state) = watch::channel(Arc::new(StageRoom::new(0).state().clone()));
            let (_, layers) = watch::channel(None);
            return Connection { id, state, disconnect, layers };
        };
        if counted {
            entry.reserved = entry.reserved.saturating_sub(1);
        }
        let (layers_tx, layers) = watch::channel(entry.layers_wanted.get(&claims.jti).cloned());
        if let Some(old) = entry.conns.insert(claims.jti.clone(), Conn { id, disconnect: tx, layers: layers_tx }) {
            old.end(DisconnectReason::TokenReused);
        }
        entry.lost.remove(&claims.jti);
        entry.socket_left.remove(&claims.jti);
        // From now on the socket holds the place, not a WHIP publish.
        if entry.whip.remove(&claims.jti).is_some() {
            entry.mark_dirty();
        }
        if entry.join_member(StageRoom::member_from_claims(claims)) {
            entry.publish();
        }
        Connection { id, state: entry.state.subscribe(), disconnect, layers }
    }

    /// Connection `conn` ended for good (a deliberate leave, token expiry,
    /// abuse). If it is still the participant's current connection, the
    /// participant leaves now and its media sessions end.
    pub fn leave(&self, stage: &StageId, participant: &ParticipantId, conn: u64) {
        let mut inner = lock(&self.inner);
        let Some(entry) = inner.stages.get_mut(stage) else { return };
        if !entry.is_current(participant.as_str(), conn) {
            return;
        }
        entry.conns.remove(participant.as_str());
        entry.remove_member(participant.as_str());
        // Queued under the lock: whoever sees the participant gone can rely
        // on the SFU handling the removal before any later request.
        self.sfu.remove_participant(stage.clone(), participant.clone());
    }

    /// The socket of `conn` ended without a deliberate leave (dropped,
    /// silent, too slow). If it was the participant's current connection,
    /// the participant stays a member, media untouched, and `true` says to
    /// call [`StageHub::grace_over`] once the reconnect grace has passed.
    pub fn lost(&self, stage: &StageId, participant: &ParticipantId, conn: u64) -> bool {
        let mut inner = lock(&self.inner);
        let Some(entry) = inner.stages.get_mut(stage) else { return false };
        if !entry.is_current(participant.as_str(), conn) {
            return false;
        }
        entry.conns.remove(participant.as_str());
        entry.lost.insert(participant.0.clone(), conn);
        true
    }

    /// The reconnect grace of lost connection `conn` is over: the
    /// participant leaves (and its media ends) unless it reconnected, was
    /// removed, or lost a newer connection since.
    pub fn grace_over(&self, stage: &StageId, participant: &ParticipantId, conn: u64) {
        let mut inner = lock(&self.inner);
        let Some(entry) = inner.stages.get_mut(stage) else { return };
        if entry.lost.get(participant.as_str()) != Some(&conn) {
            return;
        }
        entry.remove_member(participant.as_str());
        self.sfu.remove_participant(stage.clone(), participant.clone());
    }

    /// SET_STATE from connection `conn`: mute / video-stopped flags.
    pub fn set_state(&self, stage: &StageId, participant: &ParticipantId, conn: u64, audio_muted: bool, video_stopped: bool) {
        let mut inner = lock(&self.inner);
        let Some(entry) = inner.stages.get_mut(stage) else { return };
        if !entry.is_current(participant.as_str(), conn) {
            return;
        }
        if entry.room.set_state(participant.as_str(), audio_muted, video_stopped) {
            entry.publish();
        }
    }

    /// Whether the participant is a member of the stage: connected to the
    /// event plane, or within the reconnect grace after losing its socket.
    /// Required before publishing or subscribing; a member whose socket
    /// blinked can re-publish at once.
    pub fn is_connected(&self, stage: &StageId, participant: &ParticipantId) -> bool {
        lock(&self.inner).stages.get(stage).is_some_and(|e| e.room.contains(participant.as_str()))
    }

    /// End one participant's membership now (sending DISCONNECT with
    /// `reason` on its connection, if any) and all of its media sessions.
    pub fn disconnect(&self, stage: &StageId, participant: &ParticipantId, reason: DisconnectReason) {
        let mut inner = lock(&self.inner);
        if let Some(entry) = inner.stages.get_mut(stage) {
            if let Some(conn) = entry.conns.remove(participant.as_str()) {
                conn.end(reason);
            }
            entry.remove_member(participant.as_str());
        }
        self.sfu.remove_participant(stage.clone(), participant.clone());
        drop(inner);
    }

    /// Disconnect everyone with `stage-deleted` and drop the stage's media.
    pub fn delete_stage(&self, stage: &StageId) {
        let mut inner = lock(&self.inner);
        if let Some(entry) = inner.stages.remove(stage) {
            for p in entry.room.participants() {
                entry.announce(&p.id, "Participant Left");
            }
            for conn in entry.conns.into_values() {
                conn.end(DisconnectReason::StageDeleted);
            }
            inner.deleted.push(stage.clone());
            self.changed.notify_one();
        }
        self.sfu.remove_stage(stage.clone());
        drop(inner);
    }

    /// The stage's members (connected or within the reconnect grace).
    pub fn participants(&self, stage: &StageId) -> Vec<ParticipantState> {
        lock(&self.inner).stages.get(stage).map(|e| e.room.participants().cloned().collect()).unwrap_or_default()
    }

    /// Apply one SFU event now (the event task does this for [`SfuHandle`]'s
    /// events; exposed for tests that drive a hub without a socket).
    pub fn apply_sfu_event(&self, event: SfuEvent) {
        if let Some((stage, participant)) = apply_sfu_event(&self.inner, event) {
            self.sfu.remove_participant(stage, participant);
        }
    }
}

/// Returns a participant whose media sessions the SFU must end: a publisher
/// that is not a member, or a WHIP-only member whose publish ended.
fn apply_sfu_event(inner: &Mutex<HubInner>, event: SfuEvent) -> Option<(StageId, ParticipantId)> {
    let mut inner = lock(inner);
    match event {
        SfuEvent::PublishStarted { stage, participant, session, kinds } => {
            let Some(entry) = inner.stages.get_mut(&stage) else { return Some((stage, participant)) };
            if !entry.room.contains(participant.as_str()) {
                return Some((stage, participant));
            }
            entry.publishing.insert(participant.0.clone(), session);
            let was = entry.room.participants().any(|p| p.id == participant.as_str() && p.published);
            if entry.room.set_published(participant.as_str(), true, kinds) {
                entry.publish();
            }
            if !was {
                entry.announce(participant.as_str(), "Participant Published");
            }
            None
        }
        SfuEvent::LayersWanted { stage, participant, session, rids } => {
            let entry = inner.stages.get_mut(&stage)?;
            // Only for the publish session the member is announced with.
            if entry.publishing.get(participant.as_str()) == Some(&session) {
                if let Some(conn) = entry.conns.get(participant.as_str()) {
                    conn.layers.send_replace(Some(rids.clone()));
                }
                entry.layers_wanted.insert(participant.0.clone(), rids);
            }
            None
        }
        SfuEvent::PublishStopped { stage, participant, session } => {
            let entry = inner.stages.get_mut(&stage)?;
            // A stop for a session that was already replaced changes nothing.
            if entry.publishing.get(participant.as_str()) == Some(&session) {
                entry.publishing.remove(participant.as_str());
                entry.layers_wanted.remove(participant.as_str());
                let was = entry.room.participants().any(|p| p.id == participant.as_str() && p.published);
                if entry.room.set_published(participant.as_str(), false, Vec::new()) {
                    entry.publish();
                }
                if was {
                    entry.announce(participant.as_str(), "Participant Unpublished");
                }
            }
            // A WHIP-only member leaves with its publish session (its other
            // sessions, subscriptions, end with it).
            entry.whip_session_ended(participant.as_str(), &session).then_some((stage, participant))
        }
    }
}

/// After `grace`, end the grace of each restored member of `stage` (no-op
/// for those that came back).
fn restored_grace(hub: WeakHub, stage: StageId, members: Vec<(ParticipantId, u64)>, grace: Duration) {
    if members.is_empty() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::error!(stage = %stage, "members restored outside a tokio runtime: they stay until they leave");
        return;
    };
    rt.spawn(async move {
        tokio::time::sleep(grace).await;
        let Some(hub) = hub.upgrade() else { return };
        for (participant, conn) in members {
            hub.grace_over(&stage, &participant, conn);
        }
    });
}

#[cfg(test)]
mod tests;
