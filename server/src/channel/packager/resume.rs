//! A broadcast that continues across ingest sessions: the packager is
//! interrupted when a session is lost and resumed by the next one (in the
//! same process), or rebuilt from a saved [`Continuity`] after a restart.
//!
//! Either way the media sequence keeps growing, the first new segment comes
//! after `EXT-X-DISCONTINUITY`, init segments keep fresh version numbers and
//! the new session's timestamps are shifted onto the old timeline at the
//! wall-clock gap, so decode times and `EXT-X-PROGRAM-DATE-TIME` both go on
//! from where the broadcast was, plus the time it was away.

use serde::{Deserialize, Serialize};

use super::{Packager, PackagerConfig, Segment};
use crate::channel::fmp4::{AudioParams, VIDEO_TIMESCALE};

/// Where a broadcast's playlist left off: what a new packager needs to
/// continue it. Saved at every segment start and when a session is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Continuity {
    /// The media sequence number the next segment takes (no segment with
    /// this number or above has been listed).
    pub next_msn: u64,
    /// The discontinuity sequence number of the newest segment.
    pub discontinuity_sequence: u64,
    /// The newest init segment version; the next one takes a higher number.
    pub init_version: u32,
    /// A point of the timeline: a video time (90 kHz) …
    pub anchor_pts: u64,
    /// … and its wall-clock time (Unix ms).
    pub anchor_wall_ms: i64,
}

/// `pts + offset`, clamped to the `u64` range.
pub(super) fn shift(pts: u64, offset: i64) -> u64 {
    let shifted = i128::from(pts) + i128::from(offset);
    u64::try_from(shifted.max(0)).unwrap_or(u64::MAX)
}

impl Packager {
    /// A packager that continues the broadcast `from` (saved before a
    /// restart): it waits for a keyframe, then lists it after a
    /// discontinuity at media sequence `from.next_msn`.
    pub fn resume(config: PackagerConfig, audio: AudioParams, from: &Continuity) -> Self {
        let mut p = Self::new(PackagerConfig { first_msn: from.next_msn, ..config }, audio);
        p.discontinuity_sequence = from.discontinuity_sequence;
        p.discontinuity_next = true;
        p.init_base = from.init_version.saturating_add(1);
        p.resume_anchor = Some((from.anchor_pts, from.anchor_wall_ms));
        p.resumed_from = Some(from.clone());
        p
    }

    /// The ingest session was lost: flush what is pending into a last,
    /// complete segment and wait for the next session. The playlist stays
    /// open (no `EXT-X-ENDLIST`) and hints no part until media comes again.
    pub fn interrupt(&mut self) {
        if self.ended || self.resume_anchor.is_some() {
            return;
        }
        if let Some(last) = self.pending_video.last() {
            let end = last.pts.saturating_add(u64::from(self.last_video_duration));
            self.close_part(end);
        }
        self.close_segment();
        self.pending_audio.clear();
        self.resume_anchor = self.timeline_end();
        self.discontinuity_next = self.resume_anchor.is_some();
        self.audio_floor = None;
        self.need_keyframe = false;
        self.keyframe_asked_at = None;
        self.want_keyframe = true;
        self.version += 1;
    }

    /// Waiting for a session to resume the broadcast.
    pub fn is_interrupted(&self) -> bool {
        self.resume_anchor.is_some() && !self.ended
    }

    /// Where the broadcast is now, to save; `None` before its first segment.
    pub fn continuity(&self) -> Option<Continuity> {
        let Some(newest) = self.segments.back() else {
            return self.resumed_from.clone();
        };
        let discontinuities = self.segments.iter().filter(|s| s.discontinuity).count() as u64;
        let (anchor_pts, anchor_wall_ms) = self.resume_anchor.unwrap_or((newest.start_pts, newest.pdt_ms));
        Some(Continuity {
            next_msn: self.next_msn,
            discontinuity_sequence: self.discontinuity_sequence.saturating_add(discontinuities),
            init_version: self.inits.last().map_or(self.init_base, |(v, _)| *v),
            anchor_pts,
            anchor_wall_ms,
        })
    }

    /// The end of the newest segment as (video time, wall ms).
    fn timeline_end(&self) -> Option<(u64, i64)> {
        let seg: &Segment = self.segments.back()?;
        let since_start_ms = i64::try_from(self.part_start_pts.saturating_sub(seg.start_pts) / 90).unwrap_or(i64::MAX);
        Some((self.part_start_pts.max(seg.start_pts), seg.pdt_ms.saturating_add(since_start_ms)))
    }

    /// The first video frame of a resumed session: a keyframe at `pts` (its
    /// own clock) at wall time `wall_ms`. Sets the offset that puts it on
    /// the old timeline at the wall-clock gap (at least one frame after the
    /// end), so decode times keep growing.
    pub(super) fn resume_timeline(&mut self, pts: u64, wall_ms: i64) {
        let Some((anchor_pts, anchor_wall_ms)) = self.resume_anchor.take() else { return };
        let gap_ms = u64::try_from(wall_ms.saturating_sub(anchor_wall_ms)).unwrap_or(0);
        let gap = gap_ms.saturating_mul(u64::from(VIDEO_TIMESCALE) / 1000).max(u64::from(self.last_video_duration));
        let target = anchor_pts.saturating_add(gap);
        let offset = i128::from(target) - i128::from(pts);
        self.video_offset = i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
        // The new session's first frame sets program date-time and the audio floor.
        self.epoch = None;
        self.audio_floor = None;
    }

    /// The audio offset (audio sample rate) matching the video offset.
    pub(super) fn audio_offset(&self) -> i64 {
        let scaled = i128::from(self.video_offset) * i128::from(self.audio.sample_rate) / i128::from(VIDEO_TIMESCALE);
        i64::try_from(scaled).unwrap_or(if scaled < 0 { i64::MIN } else { i64::MAX })
    }
}
