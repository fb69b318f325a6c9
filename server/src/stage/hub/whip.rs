//! Members whose place on a stage is their WHIP publish, not an event
//! socket: OBS, GStreamer, any WHIP client with a PUBLISH token.
//!
//! A WHIP publish by a participant that is not on the stage joins it (the
//! others see it in their snapshots with its token's identity, counted
//! against the member cap like a socket). It leaves when that publish
//! session ends — WHIP DELETE, ICE gone silent, never connected — with no
//! grace: the SFU's media timeout already was one, and a member without
//! media shows the others nothing. A new publish by the same participant
//! while one is live (OBS reconnecting, a renegotiation) replaces it without
//! a leave: the stop of the old session while the new one is being set up
//! is not taken for a leave. A WHIP-only member that also opens the event
//! socket is an ordinary member from then on. A participant whose event
//! socket left the stage lately does not come back as a WHIP-only member: a
//! browser's publish request held up by a dead link and delivered when the
//! link returns would otherwise join it for a moment before its client,
//! which no longer wants that session, deletes it.

use stagecast_protocol::token::ParticipantClaims;
use stagecast_protocol::{ParticipantId, StageId};

use super::{ids, lock, HubError, Seat, StageEntry, StageHub, StageRoom, WeakHub};
use crate::sfu::SessionId;

/// The publish session holding a WHIP-only member's place.
#[derive(Debug)]
pub(super) struct WhipMember {
    /// `None`: restored after a server restart and not back yet.
    session: Option<SessionId>,
    /// Publishes being set up that will replace `session`.
    pending: u32,
    /// `session` ended while a replacement was pending: leave unless one commits.
    stopped: bool,
}

impl WhipMember {
    /// A member a previous server run had; its grace decides until it publishes.
    pub(super) fn restored() -> Self {
        Self { session: None, pending: 0, stopped: false }
    }
}

impl StageEntry {
    /// Publish `session` of member `id` ended (an SFU event, or DELETE).
    /// True when the member left for it.
    pub(super) fn whip_session_ended(&mut self, id: &str, session: &SessionId) -> bool {
        let Some(member) = self.whip.get_mut(id) else { return false };
        if member.session.as_ref() != Some(session) {
            return false;
        }
        if member.pending > 0 {
            member.stopped = true;
            return false;
        }
        self.remove_member(id);
        true
    }
}

enum Kind {
    /// An event-plane member (connected or within its grace): the socket
    /// holds its place; the publish changes nothing about membership.
    EventPlane,
    /// A WHIP-only member publishing again (counted in its `pending`).
    Returning,
    /// Not on the stage yet: the place it will take.
    New(Seat),
}

/// A WHIP publish between its admission and the SFU's answer.
/// [`WhipPublish::commit`] makes the new session hold a WHIP-only
/// participant's place; dropping it uncommitted (the SFU refused the offer,
/// the client went away) undoes the admission.
#[must_use]
pub struct WhipPublish {
    hub: WeakHub,
    stage: StageId,
    participant: ParticipantId,
    kind: Option<Kind>,
}

impl StageHub {
    /// Admit a WHIP publish by verified `claims` that allow publishing: an
    /// event-plane member publishes as such; anyone else will be a WHIP-only
    /// member, if the stage has room for one more (`max_members`).
    pub fn begin_whip_publish(&self, claims: &ParticipantClaims, max_members: usize) -> Result<WhipPublish, HubError> {
        let (stage, id) = ids(claims);
        let mut inner = lock(&self.inner);
        let kind = match inner.stages.get_mut(&stage) {
            Some(entry) if entry.whip.contains_key(id) => {
                if let Some(member) = entry.whip.get_mut(id) {
                    member.pending = member.pending.saturating_add(1);
                }
                Kind::Returning
            }
            Some(entry) if entry.room.contains(id) => Kind::EventPlane,
            Some(entry) if entry.left_lately(id) => return Err(HubError::LeftStage),
            _ => {
                drop(inner);
                Kind::New(self.reserve(claims, max_members)?)
            }
        };
        Ok(WhipPublish { hub: self.downgrade(), stage, participant: ParticipantId(id.to_owned()), kind: Some(kind) })
    }

    /// Publish `session` ended by the participant's WHIP DELETE: a WHIP-only
    /// member leaves now (its other sessions end too).
    pub fn whip_session_ended(&self, stage: &StageId, participant: &ParticipantId, session: &SessionId) {
        let mut inner = lock(&self.inner);
        let Some(entry) = inner.stages.get_mut(stage) else { return };
        if entry.whip_session_ended(participant.as_str(), session) {
            self.sfu.remove_participant(stage.clone(), participant.clone());
        }
    }

    fn commit_returning(&self, stage: &StageId, id: &str, session: &SessionId) -> bool {
        let mut inner = lock(&self.inner);
        let Some(entry) = inner.stages.get_mut(stage) else { return false };
        // Gone if it was removed meanwhile (disconnected, its restored grace over).
        let Some(member) = entry.whip.get_mut(id) else { return false };
        member.pending = member.pending.saturating_sub(1);
        member.session = Some(session.clone());
        member.stopped = false;
        // A restored member is back: its grace no longer applies.
        entry.lost.remove(id);
        true
    }

    fn commit_new(&self, mut seat: Seat, claims: &ParticipantClaims, session: &SessionId) -> bool {
        let (stage, id) = ids(claims);
        let counted = std::mem::replace(&mut seat.counted, false);
        let mut inner = lock(&self.inner);
        let Some(entry) = inner.stages.get_mut(&stage) else { return false };
        if counted {
            entry.reserved = entry.reserved.saturating_sub(1);
        }
        if entry.room.contains(id) && !entry.whip.contains_key(id) {
            // Joined through the event plane meanwhile: the socket holds the place.
            return true;
        }
        match entry.whip.get_mut(id) {
            Some(member) => member.session = Some(session.clone()),
            None => {
                let member = WhipMember { session: Some(session.clone()), pending: 0, stopped: false };
                entry.whip.insert(id.to_owned(), member);
            }
        }
        entry.lost.remove(id);
        if entry.join_member(StageRoom::member_from_claims(claims)) {
            entry.publish();
        } else {
            entry.mark_dirty();
        }
        true
    }
}

impl WhipPublish {
    /// Whether the participant is (to be) a member through this publish
    /// rather than an event socket.
    pub fn is_whip_only(&self) -> bool {
        !matches!(self.kind, Some(Kind::EventPlane))
    }

    /// The SFU created `session` for this publish: a WHIP-only participant
    /// is now a member held by it. False when it can no longer be one (the
    /// stage was deleted, or the participant removed, meanwhile): end the
    /// session.
    pub fn commit(mut self, claims: &ParticipantClaims, session: &SessionId) -> bool {
        let Some(kind) = self.kind.take() else { return false };
        let Some(hub) = self.hub.upgrade() else { return false };
        match kind {
            Kind::EventPlane => true,
            Kind::Returning => hub.commit_returning(&self.stage, self.participant.as_str(), session),
            Kind::New(seat) => hub.commit_new(seat, claims, session),
        }
    }
}

impl Drop for WhipPublish {
    fn drop(&mut self) {
        // A `New` seat gives its place back by itself.
        let Some(Kind::Returning) = self.kind.take() else { return };
        let Some(hub) = self.hub.upgrade() else { return };
        let mut inner = lock(&hub.inner);
        let Some(entry) = inner.stages.get_mut(&self.stage) else { return };
        let id = self.participant.as_str();
        let Some(member) = entry.whip.get_mut(id) else { return };
        member.pending = member.pending.saturating_sub(1);
        if member.pending == 0 && member.stopped {
            // Its session ended while this publish was being set up, and
            // this one failed: nothing holds the place any more.
            entry.remove_member(id);
            hub.sfu.remove_participant(self.stage.clone(), self.participant.clone());
        }
    }
}
