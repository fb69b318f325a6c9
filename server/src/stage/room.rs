//! The sans-IO stage room: who is in a stage, and what a connection must be
//! sent to catch up.
//!
//! Every change bumps the sequence number and stamps the members it touched
//! with it (their `version`); a member's JSON is written once per change and
//! shared by every frame that carries it. Removals leave a tombstone (a
//! bounded number of them). A connection that last saw sequence `base` is
//! sent a STAGE_DELTA with the members whose version is newer and the ids
//! removed since — O(changed members) bytes, however big the stage — or a
//! full STAGE_STATE on its first frame, or when its base is older than the
//! oldest tombstone kept. A change that changes nothing returns `false` and
//! is not published.

use std::collections::VecDeque;
use std::sync::Arc;

use stagecast_protocol::events::ParticipantState;
use stagecast_protocol::token::ParticipantClaims;

/// Removals remembered for deltas. A connection further behind than this
/// gets a full STAGE_STATE instead, so the room never grows with churn.
pub const MAX_TOMBSTONES: usize = 256;

/// One member as every connection sees it. Immutable: a change replaces it.
#[derive(Debug)]
pub struct Member {
    pub state: ParticipantState,
    /// The sequence number of the change that last touched this member.
    pub version: u64,
    /// `state` as JSON, written once and copied into every frame.
    json: String,
}

impl Member {
    fn new(state: ParticipantState, version: u64) -> Arc<Self> {
        let json = serde_json::to_string(&state).unwrap_or_else(|e| {
            // Strings, bools and a string map always serialize; keep going
            // with a member the SDK will reject rather than panic.
            tracing::error!(error = %e, "cannot serialize a participant");
            String::from("{}")
        });
        Arc::new(Self { state, version, json })
    }
}

/// The stage at one sequence number: what a connection's writer reads to
/// build its next frame. Cheap to clone (members are shared).
#[derive(Debug, Clone)]
pub struct RoomState {
    sequence: u64,
    /// Join order.
    members: Vec<Arc<Member>>,
    /// `(sequence of the removal, the id as a JSON string)`, oldest first.
    tombstones: VecDeque<(u64, Arc<str>)>,
    /// A delta can be built from any base at or after this; removals before
    /// it were forgotten.
    horizon: u64,
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

impl RoomState {
    pub fn sequence_number(&self) -> u64 {
        self.sequence
    }

    pub fn participants(&self) -> impl Iterator<Item = &ParticipantState> {
        self.members.iter().map(|m| &m.state)
    }

    /// The next frame for the connection of `self_id` whose last frame
    /// carried `last_sent` (`None`: nothing sent yet), or `None` when it is
    /// up to date.
    pub fn frame(&self, self_id: &str, last_sent: Option<u64>) -> Option<String> {
        match last_sent {
            Some(base) if base == self.sequence => None,
            Some(base) if base >= self.horizon && base < self.sequence => Some(self.delta(base)),
            _ => Some(self.full(self_id)),
        }
    }

    fn full(&self, self_id: &str) -> String {
        let size: usize = self.members.iter().map(|m| m.json.len() + 1).sum();
        let mut out = String::with_capacity(size + self_id.len() + 96);
        out.push_str(r#"{"type":"STAGE_STATE","sequenceNumber":"#);
        out.push_str(&self.sequence.to_string());
        out.push_str(r#","selfId":"#);
        out.push_str(&json_string(self_id));
        out.push_str(r#","participants":["#);
        push_members(&mut out, self.members.iter());
        out.push_str("]}");
        out
    }

    fn delta(&self, base: u64) -> String {
        let changed = self.members.iter().filter(|m| m.version > base);
        let removed = self.tombstones.iter().filter(|(seq, _)| *seq > base);
        let size: usize = changed.clone().map(|m| m.json.len() + 1).sum::<usize>()
            + removed.clone().map(|(_, id)| id.len() + 1).sum::<usize>();
        let mut out = String::with_capacity(size + 128);
        out.push_str(r#"{"type":"STAGE_DELTA","sequenceNumber":"#);
        out.push_str(&self.sequence.to_string());
        out.push_str(r#","baseSequenceNumber":"#);
        out.push_str(&base.to_string());
        out.push_str(r#","participants":["#);
        push_members(&mut out, changed);
        out.push_str(r#"],"removed":["#);
        for (i, (_, id)) in removed.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(id);
        }
        out.push_str("]}");
        out
    }
}

/// What changed in a room since a sequence number, for a copy kept outside
/// it (the presence store): members as `(id, JSON)`.
#[derive(Debug, PartialEq, Eq)]
pub enum Changes<'a> {
    /// Every member, in join order: the copy is new, or further behind than
    /// the removals the room remembers.
    Full(Vec<(&'a str, &'a str)>),
    /// The members changed (or added) since, and the ids removed since.
    Delta { changed: Vec<(&'a str, &'a str)>, removed: Vec<String> },
}

impl RoomState {
    /// What a copy that is up to date with sequence `base` (`None`: an empty
    /// copy) must change to match this state.
    pub fn changes_since(&self, base: Option<u64>) -> Changes<'_> {
        match base {
            Some(base) if base >= self.horizon && base <= self.sequence => Changes::Delta {
                changed: self.members.iter().filter(|m| m.version > base).map(pair).collect(),
                removed: self
                    .tombstones
                    .iter()
                    .filter(|(seq, _)| *seq > base)
                    .filter_map(|(_, id)| serde_json::from_str::<String>(id).ok())
                    .collect(),
            },
            _ => Changes::Full(self.members.iter().map(pair).collect()),
        }
    }
}

fn pair(m: &Arc<Member>) -> (&str, &str) {
    (m.state.id.as_str(), m.json.as_str())
}

fn push_members<'a>(out: &mut String, members: impl Iterator<Item = &'a Arc<Member>>) {
    for (i, m) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&m.json);
    }
}

/// Members, tombstones and the sequence number of one stage.
#[derive(Debug, Clone)]
pub struct StageRoom {
    state: RoomState,
}

impl StageRoom {
    /// An empty room whose first change gets `first_sequence + 1`. Start it
    /// from the wall clock in microseconds so sequence numbers keep growing
    /// across server restarts (a client that compares them then never
    /// mistakes the new server's frames for stale ones).
    pub fn new(first_sequence: u64) -> Self {
        Self {
            state: RoomState {
                sequence: first_sequence,
                members: Vec::new(),
                tombstones: VecDeque::new(),
                horizon: first_sequence,
            },
        }
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

    /// The stage as it is now.
    pub fn state(&self) -> &RoomState {
        &self.state
    }

    pub fn participants(&self) -> impl Iterator<Item = &ParticipantState> {
        self.state.participants()
    }

    pub fn sequence_number(&self) -> u64 {
        self.state.sequence
    }

    pub fn len(&self) -> usize {
        self.state.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.members.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.position(id).is_some()
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.state.members.iter().position(|m| m.state.id == id)
    }

    fn bump(&mut self) -> u64 {
        self.state.sequence = self.state.sequence.saturating_add(1);
        self.state.sequence
    }

    /// Replace the member at `index` with `state` (a change).
    fn replace(&mut self, index: usize, state: ParticipantState) {
        let version = self.bump();
        if let Some(slot) = self.state.members.get_mut(index) {
            *slot = Member::new(state, version);
        }
    }

    /// Add a member (at the end). Joining again with the same id (a
    /// reconnect) keeps its place and its published/mute state, taking the
    /// token's identity fields; that is a change only if they differ (the
    /// new connection gets a full STAGE_STATE either way).
    pub fn join(&mut self, member: ParticipantState) -> bool {
        let Some(index) = self.position(&member.id) else {
            // A rejoin after a removal is an update for anyone who still
            // had it, and a join for anyone who did not: no tombstone needed.
            let id = json_string(&member.id);
            self.state.tombstones.retain(|(_, t)| **t != *id);
            let version = self.bump();
            self.state.members.push(Member::new(member, version));
            return true;
        };
        let Some(existing) = self.state.members.get(index) else { return false };
        let old = &existing.state;
        if old.user_id == member.user_id
            && old.attributes == member.attributes
            && old.can_publish == member.can_publish
            && old.can_subscribe == member.can_subscribe
        {
            return false;
        }
        let updated = ParticipantState {
            user_id: member.user_id,
            attributes: member.attributes,
            can_publish: member.can_publish,
            can_subscribe: member.can_subscribe,
            ..old.clone()
        };
        self.replace(index, updated);
        true
    }

    /// Remove a member.
    pub fn leave(&mut self, id: &str) -> bool {
        let Some(index) = self.position(id) else { return false };
        self.state.members.remove(index);
        let seq = self.bump();
        self.state.tombstones.push_back((seq, Arc::from(json_string(id))));
        while self.state.tombstones.len() > MAX_TOMBSTONES {
            if let Some((forgotten, _)) = self.state.tombstones.pop_front() {
                self.state.horizon = forgotten;
            }
        }
        true
    }

    /// The member's mute state (SET_STATE).
    pub fn set_state(&mut self, id: &str, audio_muted: bool, video_stopped: bool) -> bool {
        let Some(index) = self.position(id) else { return false };
        let Some(m) = self.state.members.get(index) else { return false };
        if m.state.audio_muted == audio_muted && m.state.video_stopped == video_stopped {
            return false;
        }
        let updated = ParticipantState { audio_muted, video_stopped, ..m.state.clone() };
        self.replace(index, updated);
        true
    }

    /// The member's publish state, from the SFU.
    pub fn set_published(&mut self, id: &str, published: bool, tracks: Vec<String>) -> bool {
        let Some(index) = self.position(id) else { return false };
        let Some(m) = self.state.members.get(index) else { return false };
        let tracks = if published { tracks } else { Vec::new() };
        if m.state.published == published && m.state.tracks == tracks {
            return false;
        }
        let updated = ParticipantState { published, tracks, ..m.state.clone() };
        self.replace(index, updated);
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use stagecast_protocol::events::ServerMessage;

    /// A member as a token with `id` makes it (presence tests use it too).
    pub(crate) fn member(id: &str) -> ParticipantState {
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

    fn parse(frame: Option<String>) -> Result<ServerMessage, Box<dyn std::error::Error>> {
        Ok(serde_json::from_str(&frame.ok_or("no frame")?)?)
    }

    fn ids(participants: &[ParticipantState]) -> Vec<&str> {
        participants.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn every_change_bumps_the_sequence_and_no_ops_do_not() {
        let mut room = StageRoom::new(1000);
        assert!(room.join(member("a")));
        assert_eq!(room.sequence_number(), 1001);
        assert!(room.join(member("b")));
        assert!(room.set_state("b", true, false));
        assert!(!room.set_state("b", true, false));
        assert!(room.set_published("a", true, vec!["audio".into(), "video".into()]));
        assert!(room.set_published("a", false, vec!["audio".into()]));
        assert!(room.participants().all(|p| p.tracks.is_empty()));
        assert!(!room.join(member("a")), "a reconnect with the same identity changes nothing");
        let before = room.sequence_number();
        assert!(room.leave("a"));
        assert!(room.sequence_number() > before);
        assert!(!room.leave("a"));
        assert!(!room.set_state("a", true, true));
        assert!(!room.set_published("a", true, vec![]));
    }

    #[test]
    fn rejoining_keeps_place_and_state() {
        let mut room = StageRoom::new(0);
        room.join(member("a"));
        room.join(member("b"));
        room.set_state("a", true, true);
        let renamed = ParticipantState { user_id: "new".into(), ..member("a") };
        assert!(room.join(renamed));
        let members: Vec<_> = room.participants().collect();
        assert_eq!(members.len(), 2);
        assert_eq!((members[0].id.as_str(), members[0].user_id.as_str()), ("a", "new"));
        assert!(members[0].audio_muted);
    }

    #[test]
    fn first_frame_is_full_state_then_deltas_carry_only_changes() -> Result<(), Box<dyn std::error::Error>> {
        let mut room = StageRoom::new(10);
        room.join(member("a"));
        room.join(member("b"));
        room.join(member("c"));
        let s = room.state().clone();
        match parse(s.frame("b", None))? {
            ServerMessage::StageState { sequence_number, self_id, participants } => {
                assert_eq!((sequence_number, self_id.as_str()), (13, "b"));
                assert_eq!(ids(&participants), ["a", "b", "c"]);
            }
            other => return Err(format!("expected STAGE_STATE, got {other:?}").into()),
        }
        assert_eq!(s.frame("b", Some(13)), None, "up to date: nothing to send");

        room.set_state("c", true, false);
        room.leave("a");
        room.join(member("d"));
        match parse(room.state().frame("b", Some(13)))? {
            ServerMessage::StageDelta { sequence_number, base_sequence_number, participants, removed } => {
                assert_eq!((sequence_number, base_sequence_number), (16, 13));
                assert_eq!(ids(&participants), ["c", "d"]);
                assert!(participants[0].audio_muted);
                assert_eq!(removed, ["a"]);
            }
            other => return Err(format!("expected STAGE_DELTA, got {other:?}").into()),
        }
        // From a later base only the later changes.
        match parse(room.state().frame("b", Some(15)))? {
            ServerMessage::StageDelta { participants, removed, .. } => {
                assert_eq!(ids(&participants), ["d"]);
                assert!(removed.is_empty());
            }
            other => return Err(format!("expected STAGE_DELTA, got {other:?}").into()),
        }
        // A base from the future (another server) gets the full state.
        assert!(matches!(parse(room.state().frame("b", Some(99)))?, ServerMessage::StageState { .. }));
        Ok(())
    }

    #[test]
    fn a_rejoin_after_a_removal_is_not_reported_as_removed() -> Result<(), Box<dyn std::error::Error>> {
        let mut room = StageRoom::new(0);
        room.join(member("a"));
        room.join(member("b"));
        room.leave("a");
        room.join(member("a"));
        match parse(room.state().frame("b", Some(2)))? {
            ServerMessage::StageDelta { participants, removed, .. } => {
                assert_eq!(ids(&participants), ["a"]);
                assert!(removed.is_empty(), "{removed:?}");
            }
            other => return Err(format!("expected STAGE_DELTA, got {other:?}").into()),
        }
        Ok(())
    }

    #[test]
    fn tombstones_are_bounded_and_a_connection_behind_them_gets_full_state() -> Result<(), Box<dyn std::error::Error>> {
        let mut room = StageRoom::new(0);
        room.join(member("observer"));
        let base = room.sequence_number();
        for i in 0..MAX_TOMBSTONES + 10 {
            let id = format!("m{i}");
            room.join(member(&id));
            room.leave(&id);
        }
        assert_eq!(room.state().tombstones.len(), MAX_TOMBSTONES);
        assert!(matches!(parse(room.state().frame("observer", Some(base)))?, ServerMessage::StageState { .. }));
        // A recent base still gets a delta with just what it missed.
        let recent = room.sequence_number() - 2;
        match parse(room.state().frame("observer", Some(recent)))? {
            ServerMessage::StageDelta { participants, removed, .. } => {
                assert!(participants.is_empty());
                assert_eq!(removed.len(), 1);
            }
            other => return Err(format!("expected STAGE_DELTA, got {other:?}").into()),
        }
        Ok(())
    }

    #[test]
    fn changes_since_a_copy_are_what_it_lacks() {
        let mut room = StageRoom::new(0);
        room.join(member("a"));
        room.join(member("b"));
        let ids = |pairs: &[(&str, &str)]| pairs.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>();
        let Changes::Full(all) = room.state().changes_since(None) else { panic!("an empty copy needs everything") };
        assert_eq!(ids(&all), ["a", "b"]);
        assert!(all[0].1.contains(r#""userId":"user-a""#), "members as JSON: {}", all[0].1);
        let base = room.sequence_number();
        assert_eq!(room.state().changes_since(Some(base)), Changes::Delta { changed: vec![], removed: vec![] });

        room.set_state("b", true, false);
        room.leave("a");
        room.join(member("c"));
        let Changes::Delta { changed, removed } = room.state().changes_since(Some(base)) else { panic!("a delta") };
        assert_eq!((ids(&changed), removed), (vec!["b".to_owned(), "c".to_owned()], vec!["a".to_owned()]));

        for i in 0..MAX_TOMBSTONES + 1 {
            room.join(member(&format!("m{i}")));
            room.leave(&format!("m{i}"));
        }
        assert!(matches!(room.state().changes_since(Some(base)), Changes::Full(_)), "behind the tombstones");
    }

    #[test]
    fn member_json_is_shared_not_copied_per_state() {
        let mut room = StageRoom::new(0);
        room.join(member("a"));
        room.join(member("b"));
        let before = room.state().clone();
        room.set_state("b", true, false);
        let after = room.state();
        assert!(Arc::ptr_eq(&before.members[0], &after.members[0]), "unchanged member is shared");
        assert!(!Arc::ptr_eq(&before.members[1], &after.members[1]), "changed member is new");
    }
}
