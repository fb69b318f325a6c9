//! The stage hub: every live stage's [`StageRoom`] plus a sender per
//! event-plane connection. Handlers, sockets and the SFU event task call it
//! through `&self`; one mutex guards the map and is never held across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use stagecast_protocol::events::{DisconnectReason, ParticipantState, ServerMessage};
use stagecast_protocol::token::ParticipantClaims;
use stagecast_protocol::{ParticipantId, StageId};
use tokio::sync::mpsc;

use super::room::{Snapshot, StageRoom};
use crate::sfu::{SessionId, SfuEvent, SfuHandle};

/// What the hub hands a connection to write to its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A serialized [`ServerMessage`] (STAGE_STATE).
    Text(String),
    /// Send DISCONNECT with this reason, then close the socket. The hub has
    /// already removed the connection.
    Disconnect { reason: DisconnectReason, message: String },
}

/// One event-plane connection as the hub returns it from [`StageHub::join`].
pub struct Connection {
    /// Identifies this connection (a newer one with the same token replaces it).
    pub id: u64,
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
}

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
}

#[derive(Default)]
struct StageEntry {
    room: StageRoom,
    conns: HashMap<String, Conn>,
    /// The publish session each publishing member is announced with.
    publishing: HashMap<String, SessionId>,
}

#[derive(Default)]
struct HubInner {
    // Entries outlive their members so a stage's sequence numbers only grow
    // (clients reconnecting compare them); `delete_stage` removes them.
    stages: HashMap<StageId, StageEntry>,
    next_conn: u64,
}

/// Live stages. Shared by all handlers; methods take `&self`.
pub struct StageHub {
    inner: Arc<Mutex<HubInner>>,
    sfu: SfuHandle,
}

fn lock(inner: &Mutex<HubInner>) -> MutexGuard<'_, HubInner> {
    // A panic elsewhere must not take the event plane down with it.
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The STAGE_STATE frame for one recipient. The participants are serialized
/// once per change, not once per recipient.
fn stage_state_json(sequence_number: u64, self_id: &str, participants_json: &str) -> String {
    let self_id = serde_json::Value::String(self_id.to_owned());
    format!(r#"{{"type":"STAGE_STATE","sequenceNumber":{sequence_number},"selfId":{self_id},"participants":{participants_json}}}"#)
}

fn broadcast(entry: &StageEntry, snapshot: &Snapshot) {
    let participants = match serde_json::to_string(&snapshot.participants) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a stage snapshot");
            return;
        }
    };
    for (id, conn) in &entry.conns {
        let _ = conn.tx.send(Outbound::Text(stage_state_json(snapshot.sequence_number, id, &participants)));
    }
}

fn reason_message(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::ParticipantDisconnected => "you were removed from the stage",
        DisconnectReason::StageDeleted => "the stage was deleted",
        DisconnectReason::TokenExpired => "the participant token expired",
        DisconnectReason::TokenReused => "the same token connected again; this connection is replaced",
    }
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
        Self { inner, sfu }
    }

    /// Add a participant's event-plane connection and send everyone the new
    /// snapshot. An older connection with the same participant id gets
    /// DISCONNECT token-reused.
    pub fn join(&self, claims: &ParticipantClaims) -> Connection {
        let stage = StageId(claims.topic.clone());
        let (tx, outbound) = mpsc::unbounded_channel();
        let mut inner = lock(&self.inner);
        inner.next_conn += 1;
        let id = inner.next_conn;
        let entry = inner.stages.entry(stage).or_default();
        if let Some(old) = entry.conns.insert(claims.jti.clone(), Conn { id, tx }) {
            let reason = DisconnectReason::TokenReused;
            let _ = old.tx.send(Outbound::Disconnect { reason, message: reason_message(reason).to_owned() });
        }
        let snapshot = entry.room.join(StageRoom::member_from_claims(claims));
        broadcast(entry, &snapshot);
        Connection { id, outbound }
    }

    /// Connection `conn` closed. If it is still the participant's current
    /// connection, the participant leaves and its media sessions end.
    pub fn leave(&self, stage: &StageId, participant: &ParticipantId, conn: u64) {
        let mut inner = lock(&self.inner);
        let Some(entry) = inner.stages.get_mut(stage) else { return };
        if entry.conns.get(participant.as_str()).map(|c| c.id) != Some(conn) {
            return;
        }
        entry.conns.remove(participant.as_str());
        entry.publishing.remove(participant.as_str());
        if let Some(snapshot) = entry.room.leave(participant.as_str()) {
            broadcast(entry, &snapshot);
        }
        // Queued under the lock: whoever sees the participant gone can rely
        // on the SFU handling the removal before any later request.
        self.sfu.remove_participant(stage.clone(), participant.clone());
    }

    /// SET_STATE from connection `conn`: mute / video-stopped flags.
    pub fn set_state(&self, stage: &StageId, participant: &ParticipantId, conn: u64, audio_muted: bool, video_stopped: bool) {
        let mut inner = lock(&self.inner);
        let Some(entry) = inner.stages.get_mut(stage) else { return };
        if entry.conns.get(participant.as_str()).map(|c| c.id) != Some(conn) {
            return;
        }
        if let Some(snapshot) = entry.room.set_state(participant.as_str(), audio_muted, video_stopped) {
            broadcast(entry, &snapshot);
        }
    }

    /// Whether the participant has a live event-plane connection (required
    /// before publishing or subscribing).
    pub fn is_connected(&self, stage: &StageId, participant: &ParticipantId) -> bool {
        lock(&self.inner).stages.get(stage).is_some_and(|e| e.conns.contains_key(participant.as_str()))
    }

    /// End one participant's event-plane connection (sending DISCONNECT with
    /// `reason`) and all of its media sessions. A no-op if not connected
    /// (its media sessions are still ended).
    pub fn disconnect(&self, stage: &StageId, participant: &ParticipantId, reason: DisconnectReason) {
        let mut inner = lock(&self.inner);
        if let Some(entry) = inner.stages.get_mut(stage) {
            if let Some(conn) = entry.conns.remove(participant.as_str()) {
                let _ = conn.tx.send(Outbound::Disconnect { reason, message: reason_message(reason).to_owned() });
            }
            entry.publishing.remove(participant.as_str());
            if let Some(snapshot) = entry.room.leave(participant.as_str()) {
                broadcast(entry, &snapshot);
            }
        }
        self.sfu.remove_participant(stage.clone(), participant.clone());
        drop(inner);
    }

    /// Disconnect everyone with `stage-deleted` and drop the stage's media.
    pub fn delete_stage(&self, stage: &StageId) {
        let mut inner = lock(&self.inner);
        if let Some(entry) = inner.stages.remove(stage) {
            let reason = DisconnectReason::StageDeleted;
            for conn in entry.conns.values() {
                let _ = conn.tx.send(Outbound::Disconnect { reason, message: reason_message(reason).to_owned() });
            }
        }
        self.sfu.remove_stage(stage.clone());
        drop(inner);
    }

    /// The stage's connected members, as the last snapshot showed them.
    pub fn participants(&self, stage: &StageId) -> Vec<ParticipantState> {
        lock(&self.inner).stages.get(stage).map(|e| e.room.participants().to_vec()).unwrap_or_default()
    }

    /// The stage's current snapshot, if anyone ever joined it.
    pub fn snapshot(&self, stage: &StageId) -> Option<Snapshot> {
        lock(&self.inner).stages.get(stage).map(|e| e.room.snapshot())
    }

    /// Apply one SFU event now (the event task does this for [`SfuHandle`]'s
    /// events; exposed for tests that drive a hub without a socket).
    pub fn apply_sfu_event(&self, event: SfuEvent) {
        if let Some((stage, participant)) = apply_sfu_event(&self.inner, event) {
            self.sfu.remove_participant(stage, participant);
        }
    }
}

/// Returns the publisher to remove from the SFU when it is not a member.
fn apply_sfu_event(inner: &Mutex<HubInner>, event: SfuEvent) -> Option<(StageId, ParticipantId)> {
    let mut inner = lock(inner);
    match event {
        SfuEvent::PublishStarted { stage, participant, session, kinds } => {
            let Some(entry) = inner.stages.get_mut(&stage) else { return Some((stage, participant)) };
            if !entry.room.contains(participant.as_str()) {
                return Some((stage, participant));
            }
            entry.publishing.insert(participant.0.clone(), session);
            if let Some(snapshot) = entry.room.set_published(participant.as_str(), true, kinds) {
                broadcast(entry, &snapshot);
            }
            None
        }
        SfuEvent::PublishStopped { stage, participant, session } => {
            let entry = inner.stages.get_mut(&stage)?;
            // A stop for a session that was already replaced changes nothing.
            if entry.publishing.get(participant.as_str()) != Some(&session) {
                return None;
            }
            entry.publishing.remove(participant.as_str());
            if let Some(snapshot) = entry.room.set_published(participant.as_str(), false, Vec::new()) {
                broadcast(entry, &snapshot);
            }
            None
        }
    }
}

/// Serialize a server message for the socket.
pub(crate) fn to_json(message: &ServerMessage) -> String {
    serde_json::to_string(message).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot serialize a server message");
        String::from(r#"{"type":"ERROR","code":"INTERNAL","message":"internal server error"}"#)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_state_frame_matches_the_protocol_type() -> Result<(), serde_json::Error> {
        let participants = vec![StageRoom::member_from_claims(&ParticipantClaims {
            topic: "st".into(),
            jti: "p\"1".into(),
            user_id: "u".into(),
            attributes: [("username".to_owned(), "Ann".to_owned())].into_iter().collect(),
            capabilities: Default::default(),
            exp: 0,
            iat: 0,
            events_url: String::new(),
            whip_url: String::new(),
            version: "1.0".into(),
        })];
        let json = stage_state_json(7, "p\"1", &serde_json::to_string(&participants)?);
        let parsed: ServerMessage = serde_json::from_str(&json)?;
        assert_eq!(parsed, ServerMessage::StageState { sequence_number: 7, self_id: "p\"1".into(), participants });
        Ok(())
    }

    fn claims(stage: &str, id: &str) -> ParticipantClaims {
        ParticipantClaims {
            topic: stage.into(),
            jti: id.into(),
            user_id: format!("user-{id}"),
            attributes: Default::default(),
            capabilities: stagecast_protocol::token::TokenCapabilities { allow_publish: true, allow_subscribe: true },
            exp: i64::MAX,
            iat: 0,
            events_url: String::new(),
            whip_url: String::new(),
            version: "1.0".into(),
        }
    }

    fn next_state(conn: &mut Connection) -> Option<(u64, Vec<ParticipantState>)> {
        let mut last = None;
        while let Ok(out) = conn.outbound.try_recv() {
            if let Outbound::Text(text) = out {
                if let Ok(ServerMessage::StageState { sequence_number, participants, .. }) = serde_json::from_str(&text) {
                    last = Some((sequence_number, participants));
                }
            }
        }
        last
    }

    fn next_disconnect(conn: &mut Connection) -> Option<DisconnectReason> {
        while let Ok(out) = conn.outbound.try_recv() {
            if let Outbound::Disconnect { reason, .. } = out {
                return Some(reason);
            }
        }
        None
    }

    #[tokio::test]
    async fn hub_fans_out_snapshots_and_applies_publish_events() -> Result<(), Box<dyn std::error::Error>> {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = udp.local_addr()?;
        let (sfu, events) = SfuHandle::start(udp, addr);
        let hub = StageHub::new(sfu, events);
        let stage = StageId::from("s");
        let (a, b) = (ParticipantId::from("a"), ParticipantId::from("b"));

        let mut ca = hub.join(&claims("s", "a"));
        let mut cb = hub.join(&claims("s", "b"));
        let (seq, members) = next_state(&mut ca).ok_or("a got no snapshot")?;
        assert_eq!(members.len(), 2);
        assert!(hub.is_connected(&stage, &b));

        let session = SessionId::from("s1");
        hub.apply_sfu_event(SfuEvent::PublishStarted {
            stage: stage.clone(),
            participant: a.clone(),
            session: session.clone(),
            kinds: vec!["video".into()],
        });
        let (seq2, members) = next_state(&mut cb).ok_or("b got no publish snapshot")?;
        assert!(seq2 > seq && members[0].published && members[0].tracks == ["video"]);

        // A stop for another (replaced) session changes nothing.
        hub.apply_sfu_event(SfuEvent::PublishStopped {
            stage: stage.clone(),
            participant: a.clone(),
            session: SessionId::from("old"),
        });
        assert!(next_state(&mut cb).is_none());
        hub.apply_sfu_event(SfuEvent::PublishStopped { stage: stage.clone(), participant: a.clone(), session });
        let (_, members) = next_state(&mut cb).ok_or("b got no unpublish snapshot")?;
        assert!(!members[0].published && members[0].tracks.is_empty());

        hub.set_state(&stage, &b, cb.id, true, false);
        let (_, members) = next_state(&mut ca).ok_or("a got no mute snapshot")?;
        assert!(members[1].audio_muted);
        // A stale connection id cannot change state.
        hub.set_state(&stage, &b, ca.id, false, false);
        assert!(next_state(&mut ca).is_none());

        // Same token again: the old connection is told, the member stays.
        let mut cb2 = hub.join(&claims("s", "b"));
        assert_eq!(next_disconnect(&mut cb), Some(DisconnectReason::TokenReused));
        hub.leave(&stage, &b, cb.id);
        assert_eq!(hub.participants(&stage).len(), 2);

        hub.disconnect(&stage, &b, DisconnectReason::ParticipantDisconnected);
        assert_eq!(next_disconnect(&mut cb2), Some(DisconnectReason::ParticipantDisconnected));
        let (_, members) = next_state(&mut ca).ok_or("a got no leave snapshot")?;
        assert_eq!(members.len(), 1);

        hub.delete_stage(&stage);
        assert_eq!(next_disconnect(&mut ca), Some(DisconnectReason::StageDeleted));
        assert!(hub.participants(&stage).is_empty());
        assert!(!hub.is_connected(&stage, &a));
        Ok(())
    }
}
