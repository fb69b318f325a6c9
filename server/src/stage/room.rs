//! The sans-IO stage room: who is in a stage and what everyone sees. Every
//! change returns the new snapshot (with a higher sequence number); a
//! change that changes nothing returns `None`, so nothing is sent.

use stagecast_protocol::events::ParticipantState;
use stagecast_protocol::token::ParticipantClaims;

/// The full state of a stage as the event plane sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub sequence_number: u64,
    pub participants: Vec<ParticipantState>,
}

/// Members in join order and the sequence number of the last snapshot.
#[derive(Debug, Default, Clone)]
pub struct StageRoom {
    members: Vec<ParticipantState>,
    sequence: u64,
}

impl StageRoom {
    pub fn new() -> Self {
        Self::default()
    }

    /// A member as its token describes it, not publishing, nothing muted.
    pub fn member_from_claims(claims: &ParticipantClaims) -> ParticipantState {
        ParticipantState {
            id: claims.jti.clone(),
            user_id: claims.user_id.clone(),
            attributes: claims.attributes.clone(),
            can_publish: claims.capabilities.allow_publish,
            can_subscribe: claims.capabilities.allow_subscribe,
            published: false,
            tracks: Vec::new(),
            audio_muted: false,
            video_stopped: false,
        }
    }

    /// The current snapshot (without changing the sequence number).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { sequence_number: self.sequence, participants: self.members.clone() }
    }

    pub fn participants(&self) -> &[ParticipantState] {
        &self.members
    }

    pub fn sequence_number(&self) -> u64 {
        self.sequence
    }

    pub fn contains(&self, id: &str) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn bump(&mut self) -> Snapshot {
        self.sequence += 1;
        self.snapshot()
    }

    /// Add a member (at the end). Joining again with the same id (a
    /// reconnect) keeps its place and its published/mute state, taking the
    /// token's identity fields; the snapshot is sent either way so the new
    /// connection gets one.
    pub fn join(&mut self, member: ParticipantState) -> Snapshot {
        if let Some(existing) = self.members.iter_mut().find(|m| m.id == member.id) {
            existing.user_id = member.user_id;
            existing.attributes = member.attributes;
            existing.can_publish = member.can_publish;
            existing.can_subscribe = member.can_subscribe;
        } else {
            self.members.push(member);
        }
        self.bump()
    }

    /// Remove a member.
    pub fn leave(&mut self, id: &str) -> Option<Snapshot> {
        let before = self.members.len();
        self.members.retain(|m| m.id != id);
        (self.members.len() != before).then(|| self.bump())
    }

    /// The member's mute state (SET_STATE).
    pub fn set_state(&mut self, id: &str, audio_muted: bool, video_stopped: bool) -> Option<Snapshot> {
        let m = self.members.iter_mut().find(|m| m.id == id)?;
        if m.audio_muted == audio_muted && m.video_stopped == video_stopped {
            return None;
        }
        m.audio_muted = audio_muted;
        m.video_stopped = video_stopped;
        Some(self.bump())
    }

    /// The member's publish state, from the SFU.
    pub fn set_published(&mut self, id: &str, published: bool, tracks: Vec<String>) -> Option<Snapshot> {
        let m = self.members.iter_mut().find(|m| m.id == id)?;
        let tracks = if published { tracks } else { Vec::new() };
        if m.published == published && m.tracks == tracks {
            return None;
        }
        m.published = published;
        m.tracks = tracks;
        Some(self.bump())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> ParticipantState {
        ParticipantState {
            id: id.to_owned(),
            user_id: format!("user-{id}"),
            attributes: Default::default(),
            can_publish: true,
            can_subscribe: true,
            published: false,
            tracks: Vec::new(),
            audio_muted: false,
            video_stopped: false,
        }
    }

    #[test]
    fn every_change_bumps_the_sequence_and_no_ops_do_not() {
        let mut room = StageRoom::new();
        let s1 = room.join(member("a"));
        let s2 = room.join(member("b"));
        assert!(s2.sequence_number > s1.sequence_number);
        assert_eq!(s2.participants.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);

        let s3 = room.set_state("b", true, false).expect("mute is a change");
        assert!(s3.participants[1].audio_muted);
        assert!(room.set_state("b", true, false).is_none());

        let s4 = room.set_published("a", true, vec!["audio".into(), "video".into()]).expect("publish is a change");
        assert!(s4.participants[0].published);
        assert_eq!(s4.participants[0].tracks, ["audio", "video"]);
        let s5 = room.set_published("a", false, vec!["audio".into()]).expect("unpublish is a change");
        assert!(s5.participants[0].tracks.is_empty());

        let s6 = room.leave("a").expect("a was there");
        assert!(s6.sequence_number > s5.sequence_number);
        assert!(room.leave("a").is_none());
        assert!(room.set_state("a", true, true).is_none());
    }

    #[test]
    fn rejoining_keeps_place_and_state() {
        let mut room = StageRoom::new();
        room.join(member("a"));
        room.join(member("b"));
        room.set_state("a", true, true);
        let s = room.join(member("a"));
        assert_eq!(s.participants.len(), 2);
        assert_eq!(s.participants[0].id, "a");
        assert!(s.participants[0].audio_muted);
    }
}
