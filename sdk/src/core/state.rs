//! Snapshot diffing: the server sends the whole stage first (STAGE_STATE),
//! then what changed (STAGE_DELTA); a delta is turned back into the whole
//! stage ([`StageView::snapshot_from_delta`]) and every snapshot is diffed
//! against the last into the IVS participant events.

use super::strategy::StreamKind;
use stagecast_protocol::events::ParticipantState;

/// One thing that changed between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParticipantChange {
    /// A participant appeared (the local one included, on the first snapshot).
    Joined(ParticipantState),
    /// A participant is gone; carries its last known state.
    Left(ParticipantState),
    /// `published` flipped, or the published track kinds changed (a
    /// republish): existing subscriptions to it are stale.
    PublishChanged(ParticipantState),
    /// `audioMuted` or `videoStopped` flipped.
    MuteChanged {
        participant: ParticipantState,
        kind: StreamKind,
        muted: bool,
    },
}

impl ParticipantChange {
    pub fn participant(&self) -> &ParticipantState {
        match self {
            ParticipantChange::Joined(p)
            | ParticipantChange::Left(p)
            | ParticipantChange::PublishChanged(p)
            | ParticipantChange::MuteChanged { participant: p, .. } => p,
        }
    }
}

/// A STAGE_DELTA that does not follow the last frame of this connection:
/// the socket must be reopened for a full STAGE_STATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stage delta from sequence {base} does not follow {last:?}")]
pub struct DeltaMismatch {
    pub base: u64,
    pub last: Option<u64>,
}

/// The SDK's view of the stage, fed with snapshots.
#[derive(Debug, Default, Clone)]
pub struct StageView {
    self_id: Option<String>,
    /// Snapshot order, so events come out in join order.
    participants: Vec<ParticipantState>,
    last_seq: Option<u64>,
}

impl StageView {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn self_id(&self) -> Option<&str> {
        self.self_id.as_deref()
    }

    pub fn get(&self, id: &str) -> Option<&ParticipantState> {
        self.participants.iter().find(|p| p.id == id)
    }

    pub fn participants(&self) -> &[ParticipantState] {
        &self.participants
    }

    /// Remote participants, in join order.
    pub fn remotes(&self) -> impl Iterator<Item = &ParticipantState> {
        let me = self.self_id.clone();
        self.participants
            .iter()
            .filter(move |p| Some(&p.id) != me.as_ref())
    }

    /// A new socket starts a new sequence; the state itself is kept so the
    /// first snapshot after a reconnect is diffed against what we knew.
    pub fn connection_reset(&mut self) {
        self.last_seq = None;
    }

    /// Applies a snapshot. Stale or duplicate snapshots (sequence not
    /// greater than the last one on this connection) change nothing.
    pub fn apply(
        &mut self,
        sequence_number: u64,
        self_id: &str,
        snapshot: Vec<ParticipantState>,
    ) -> Vec<ParticipantChange> {
        if self.last_seq.is_some_and(|last| sequence_number <= last) {
            return Vec::new();
        }
        self.last_seq = Some(sequence_number);
        self.self_id = Some(self_id.to_owned());

        let mut changes = Vec::new();
        for old in &self.participants {
            if !snapshot.iter().any(|p| p.id == old.id) {
                changes.push(ParticipantChange::Left(old.clone()));
            }
        }
        for new in &snapshot {
            let Some(old) = self.participants.iter().find(|p| p.id == new.id) else {
                changes.push(ParticipantChange::Joined(new.clone()));
                continue;
            };
            if old.published != new.published || (new.published && old.tracks != new.tracks) {
                changes.push(ParticipantChange::PublishChanged(new.clone()));
            }
            if old.audio_muted != new.audio_muted {
                changes.push(ParticipantChange::MuteChanged {
                    participant: new.clone(),
                    kind: StreamKind::Audio,
                    muted: new.audio_muted,
                });
            }
            if old.video_stopped != new.video_stopped {
                changes.push(ParticipantChange::MuteChanged {
                    participant: new.clone(),
                    kind: StreamKind::Video,
                    muted: new.video_stopped,
                });
            }
        }
        // Keep the existing order for known participants, append new ones.
        let mut ordered: Vec<ParticipantState> = self
            .participants
            .iter()
            .filter_map(|old| snapshot.iter().find(|p| p.id == old.id).cloned())
            .collect();
        for new in snapshot {
            if !ordered.iter().any(|p| p.id == new.id) {
                ordered.push(new);
            }
        }
        self.participants = ordered;
        changes
    }

    /// The whole stage a STAGE_DELTA describes, to [`apply`](Self::apply)
    /// with the delta's sequence number: the last snapshot without
    /// `removed`, with `changed` members replaced in place and new ones
    /// appended. `base` must be the last sequence number applied on this
    /// connection.
    pub fn snapshot_from_delta(
        &self,
        base: u64,
        changed: Vec<ParticipantState>,
        removed: &[String],
    ) -> Result<Vec<ParticipantState>, DeltaMismatch> {
        if self.last_seq != Some(base) {
            return Err(DeltaMismatch {
                base,
                last: self.last_seq,
            });
        }
        let mut snapshot: Vec<ParticipantState> = self
            .participants
            .iter()
            .filter(|p| !removed.contains(&p.id))
            .cloned()
            .collect();
        for p in changed {
            match snapshot.iter_mut().find(|old| old.id == p.id) {
                Some(old) => *old = p,
                None => snapshot.push(p),
            }
        }
        Ok(snapshot)
    }

    /// Forgets everyone (leave / final disconnect); returns a `Left` for each.
    pub fn clear(&mut self) -> Vec<ParticipantChange> {
        self.last_seq = None;
        self.participants
            .drain(..)
            .map(ParticipantChange::Left)
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn p(id: &str) -> ParticipantState {
        ParticipantState {
            id: id.into(),
            user_id: format!("u-{id}"),
            attributes: Default::default(),
            can_publish: true,
            can_subscribe: true,
            published: false,
            tracks: vec![],
            audio_muted: false,
            video_stopped: false,
        }
    }

    fn published(id: &str) -> ParticipantState {
        ParticipantState {
            published: true,
            tracks: vec!["audio".into(), "video".into()],
            ..p(id)
        }
    }

    fn ids(changes: &[ParticipantChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let kind = match c {
                    ParticipantChange::Joined(_) => "joined",
                    ParticipantChange::Left(_) => "left",
                    ParticipantChange::PublishChanged(_) => "publish",
                    ParticipantChange::MuteChanged {
                        kind: StreamKind::Audio,
                        ..
                    } => "audio",
                    ParticipantChange::MuteChanged {
                        kind: StreamKind::Video,
                        ..
                    } => "video",
                };
                format!("{kind}:{}", c.participant().id)
            })
            .collect()
    }

    #[test]
    fn first_snapshot_joins_everyone_including_self() {
        let mut v = StageView::new();
        let c = v.apply(1, "me", vec![published("a"), p("me")]);
        assert_eq!(ids(&c), ["joined:a", "joined:me"]);
        assert_eq!(v.self_id(), Some("me"));
        assert_eq!(
            v.remotes().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
    }

    #[test]
    fn diffs_join_leave_publish_and_mute() {
        let mut v = StageView::new();
        v.apply(1, "me", vec![p("me"), p("a"), p("b")]);
        let mut a = published("a");
        a.audio_muted = true;
        let c = v.apply(2, "me", vec![p("me"), a.clone(), p("c")]);
        assert_eq!(ids(&c), ["left:b", "publish:a", "audio:a", "joined:c"]);
        a.video_stopped = true;
        a.audio_muted = false;
        let c = v.apply(3, "me", vec![p("me"), a.clone(), p("c")]);
        assert_eq!(ids(&c), ["audio:a", "video:a"]);
        // Republish with different kinds while staying published.
        a.tracks = vec!["audio".into()];
        let c = v.apply(4, "me", vec![p("me"), a.clone(), p("c")]);
        assert_eq!(ids(&c), ["publish:a"]);
    }

    #[test]
    fn stale_snapshots_are_ignored_until_reconnect() {
        let mut v = StageView::new();
        v.apply(5, "me", vec![p("me"), p("a")]);
        assert!(v.apply(5, "me", vec![p("me")]).is_empty());
        assert!(v.apply(4, "me", vec![p("me")]).is_empty());
        v.connection_reset();
        // After a reconnect the server may start numbering again; whatever
        // happened while we were away comes out as a diff.
        let c = v.apply(1, "me", vec![p("me"), p("b")]);
        assert_eq!(ids(&c), ["left:a", "joined:b"]);
    }

    #[test]
    fn a_delta_gives_the_same_events_as_the_full_snapshot() -> Result<(), DeltaMismatch> {
        let mut full = StageView::new();
        full.apply(10, "me", vec![p("me"), p("a"), p("b")]);
        let mut delta = full.clone();

        let mut a = published("a");
        a.audio_muted = true;
        let expected = full.apply(11, "me", vec![p("me"), a.clone(), p("c")]);
        let snapshot = delta.snapshot_from_delta(10, vec![a.clone(), p("c")], &["b".into()])?;
        assert_eq!(delta.apply(11, "me", snapshot), expected);
        assert_eq!(ids(&expected), ["left:b", "publish:a", "audio:a", "joined:c"]);
        assert_eq!(delta.participants(), full.participants());

        // An empty delta (nothing changed for us) changes nothing.
        let snapshot = delta.snapshot_from_delta(11, vec![], &[])?;
        assert!(delta.apply(12, "me", snapshot).is_empty());
        Ok(())
    }

    #[test]
    fn a_delta_that_does_not_follow_the_last_frame_is_refused() {
        let mut v = StageView::new();
        assert_eq!(
            v.snapshot_from_delta(1, vec![p("a")], &[]),
            Err(DeltaMismatch {
                base: 1,
                last: None
            }),
            "a delta before any STAGE_STATE"
        );
        v.apply(5, "me", vec![p("me")]);
        assert!(v.snapshot_from_delta(4, vec![], &[]).is_err());
        assert!(v.snapshot_from_delta(5, vec![], &[]).is_ok());
        // A new socket needs a STAGE_STATE first.
        v.connection_reset();
        assert!(v.snapshot_from_delta(5, vec![], &[]).is_err());
    }

    #[test]
    fn clear_leaves_everyone() {
        let mut v = StageView::new();
        v.apply(1, "me", vec![p("me"), p("a")]);
        assert_eq!(ids(&v.clear()), ["left:me", "left:a"]);
        assert!(v.participants().is_empty());
    }
}
