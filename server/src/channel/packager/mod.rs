//! The sans-IO LL-HLS packager: H.264 access units and AAC frames with
//! timestamps in, fMP4 parts / segments and LL-HLS playlists out.
//!
//! Nothing here reads a clock or a socket. The ingest driver pushes samples
//! (with the wall-clock time of the broadcast start for
//! `EXT-X-PROGRAM-DATE-TIME`), asks [`Packager::wants_keyframe`] after each
//! video frame (and sends a PLI when it says so), and HTTP handlers read
//! playlists and media and ask [`Packager::playlist_ready`] to implement
//! blocking playlist reload.
//!
//! Timing model: video timestamps are in the 90 kHz clock, audio in the
//! audio sample rate, both on one timeline (the driver aligns them). No
//! B-frames (WebRTC H.264 has none), so decode time equals presentation time.
//! Parts are cut on video frame arrival once they reach ~85% of the part
//! target or the next frame would overshoot it; a segment ends at the first keyframe after the segment target
//! (or, without one, at the target duration).
//!
//! Hostile input: timestamps may repeat, go backwards or jump; frames may be
//! huge or carry a broken SPS. A small step back drops the frame; a jump of
//! more than the target duration either way ends the segment and starts the
//! next one after `EXT-X-DISCONTINUITY` at the next keyframe (with
//! `EXT-X-PROGRAM-DATE-TIME` carried on from where the stream was). An
//! access unit whose SPS does not parse is refused, and so is every frame
//! after it until the next keyframe (they would not decode). Each segment
//! holds at most [`MAX_SEGMENT_BYTES`] and [`MAX_SEGMENT_FRAMES`], so the
//! window's memory is bounded whatever the broadcaster sends.

use std::collections::VecDeque;
use std::time::Duration;

use super::fmp4::{self, AudioParams, Sample, TrackRun, VideoParams, AUDIO_TRACK_ID, VIDEO_TIMESCALE, VIDEO_TRACK_ID};
use super::h264::{self, AccessUnit, H264Error, SpsInfo, MAX_ACCESS_UNIT_BYTES};

mod playlist;
mod resume;
mod retired;
pub use playlist::{bandwidth_estimate, CompletedSegment, MediaName, SegmentChunk};
pub use resume::Continuity;

/// Samples per AAC-LC frame.
pub const AAC_FRAME_SAMPLES: u32 = 1024;
/// Video bytes one segment may hold (64 Mbit/s over a 2 s segment); frames
/// past it are refused until the next segment.
pub const MAX_SEGMENT_BYTES: usize = 16 << 20;
/// Video frames one segment may hold (240 fps over 4 s).
pub const MAX_SEGMENT_FRAMES: usize = 960;

/// Why a video frame was not packaged. The stream goes on; the driver logs
/// the reason and asks for a keyframe ([`Packager::wants_keyframe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PackagerError {
    #[error("the access unit's SPS cannot be used: {0}")]
    BadSps(H264Error),
    #[error("an access unit of {bytes} bytes is over the {MAX_ACCESS_UNIT_BYTES}-byte limit")]
    FrameTooLarge { bytes: usize },
    #[error("the segment is full ({MAX_SEGMENT_BYTES} bytes or {MAX_SEGMENT_FRAMES} frames)")]
    SegmentFull,
}

/// Packager tuning.
#[derive(Debug, Clone)]
pub struct PackagerConfig {
    /// `EXT-X-PART-INF:PART-TARGET`; parts never exceed it unless frames do.
    pub part_target: Duration,
    /// A segment ends at the first keyframe at or after this duration.
    pub segment_target: Duration,
    /// `EXT-X-TARGETDURATION` (whole seconds); a segment without a keyframe
    /// by then is cut anyway.
    pub target_duration_secs: u32,
    /// Completed segments kept in the playlist (sliding window).
    pub window_segments: usize,
    /// Completed segments (the newest) whose parts are still listed.
    pub segments_with_parts: usize,
    /// How long (in media time) a segment stays fetchable after it leaves
    /// the playlist, within [`PackagerConfig::retain_bytes`]. RFC 8216
    /// §6.2.2 asks for at least the playlist's duration; the IVS Player's
    /// bandwidth probe re-fetches one old segment for as long as it stays on
    /// a quality, and drops that quality when the fetch fails.
    pub retain: Duration,
    /// The most bytes kept for segments that left the playlist.
    pub retain_bytes: usize,
    /// Media sequence number of the first segment. Giving each broadcast of
    /// a channel a fresh range keeps segment URLs unique, so they can be
    /// cached as immutable.
    pub first_msn: u64,
}

impl Default for PackagerConfig {
    fn default() -> Self {
        Self {
            // 200 ms parts and a hold-back of three of them put hls.js ~0.6 s
            // behind the newest part (0.9 s with 300 ms parts): the main lever
            // of its glass-to-glass latency.
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
            target_duration_secs: 2,
            window_segments: 7,
            segments_with_parts: 3,
            retain: Duration::from_secs(30),
            retain_bytes: 24 << 20,
            first_msn: 0,
        }
    }
}

impl PackagerConfig {
    /// `PART-HOLD-BACK`: three part targets, as the spec recommends.
    pub fn part_hold_back(&self) -> Duration {
        self.part_target * 3
    }
    /// How long a blocking playlist request may be held: three target durations.
    pub fn blocking_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.target_duration_secs) * 3)
    }
    fn ticks(d: Duration) -> u64 {
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX).saturating_mul(u64::from(VIDEO_TIMESCALE)) / 1_000_000
    }
    /// A step between two video frames larger than this (either way) is a
    /// break in the timeline, not jitter: the target duration.
    fn max_step(&self) -> u64 {
        u64::from(self.target_duration_secs).saturating_mul(u64::from(VIDEO_TIMESCALE)).max(1)
    }
}

/// One partial segment.
#[derive(Debug, Clone)]
pub struct Part {
    /// Seconds.
    pub duration: f64,
    /// Starts with a keyframe.
    pub independent: bool,
    pub data: Vec<u8>,
}

/// One media segment; the last one in [`Packager`] may still be open.
#[derive(Debug, Clone)]
struct Segment {
    msn: u64,
    start_pts: u64,
    parts: Vec<Part>,
    complete: bool,
    /// Wall-clock time of the first frame (Unix ms).
    pdt_ms: i64,
    /// Which init segment (version) its media needs.
    init: u32,
    /// Preceded by `EXT-X-DISCONTINUITY` (new video parameters).
    discontinuity: bool,
    /// Its first frame when that is a keyframe (AVCC, parameter sets in
    /// band): what a recording's thumbnail is decoded from.
    keyframe: Option<Vec<u8>>,
}

impl Segment {
    fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }
    /// Wall-clock time (Unix ms) just after its media.
    fn end_pdt_ms(&self) -> i64 {
        self.pdt_ms.saturating_add((self.duration() * 1000.0) as i64)
    }
}

/// Whether a blocking playlist request can be answered now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The playlist holds what was asked for (or the stream ended).
    Ready,
    /// Not yet: wait for the next change (up to [`PackagerConfig::blocking_timeout`]).
    Wait,
    /// Too far in the future: answer 400 now.
    BadRequest,
}

/// What a part request finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartLookup {
    Ready(Vec<u8>),
    /// The part named in `EXT-X-PRELOAD-HINT`: not cut yet, wait for it.
    Upcoming,
    Missing,
}

struct PendingVideo {
    pts: u64,
    keyframe: bool,
    data: Vec<u8>,
}

/// The LL-HLS state of one broadcast.
pub struct Packager {
    config: PackagerConfig,
    audio: AudioParams,
    video: Option<VideoParams>,
    sps_info: Option<SpsInfo>,
    /// Init segments by version: a new one when the video parameters change
    /// (the encoder switched resolution or profile).
    inits: Vec<(u32, Vec<u8>)>,
    /// Discontinuities dropped off the front of the window.
    discontinuity_sequence: u64,
    /// The next segment starts after a discontinuity.
    discontinuity_next: bool,
    /// Completed segments in the window, then the open one (if live).
    segments: VecDeque<Segment>,
    /// Complete segments that left the window (bounded by
    /// [`PackagerConfig::retain`] and [`PackagerConfig::retain_bytes`]).
    retired: retired::Retired,
    next_msn: u64,
    pending_video: Vec<PendingVideo>,
    pending_audio: VecDeque<(u64, Vec<u8>)>,
    part_start_pts: u64,
    fragment_seq: u32,
    /// Video pts and wall time (Unix ms) of the first frame (of the stream,
    /// or of the timeline after a break).
    epoch: Option<(u64, i64)>,
    /// Audio before this video pts is dropped: the start of the timeline.
    audio_floor: Option<u64>,
    /// A frame was refused: later frames wait for a keyframe.
    need_keyframe: bool,
    /// Video bytes and frames in the open segment (pending ones included).
    open_bytes: usize,
    open_frames: usize,
    last_video_duration: u32,
    /// Video pts when a keyframe was last asked for in this segment.
    keyframe_asked_at: Option<u64>,
    want_keyframe: bool,
    metadata: Vec<String>,
    metadata_id: u32,
    ended: bool,
    version: u64,
    /// The version the first init segment takes (above every version a
    /// broadcast this one continues has used).
    init_base: u32,
    /// Set while interrupted: the timeline point (video time, wall ms) the
    /// next session continues from.
    resume_anchor: Option<(u64, i64)>,
    /// Added to the current session's video times (90 kHz) to put them on
    /// the broadcast's timeline.
    video_offset: i64,
    /// What a packager rebuilt after a restart continues.
    resumed_from: Option<Continuity>,
    /// Keep each segment's first keyframe (a recorder makes thumbnails of them).
    keep_keyframes: bool,
}

impl Packager {
    /// A packager for one broadcast whose audio is AAC with `audio`.
    pub fn new(config: PackagerConfig, audio: AudioParams) -> Self {
        let first_msn = config.first_msn;
        let retired = retired::Retired::new(config.retain, config.retain_bytes);
        Self {
            config,
            audio,
            video: None,
            sps_info: None,
            inits: Vec::new(),
            discontinuity_sequence: 0,
            discontinuity_next: false,
            segments: VecDeque::new(),
            retired,
            next_msn: first_msn,
            pending_video: Vec::new(),
            pending_audio: VecDeque::new(),
            part_start_pts: 0,
            fragment_seq: 1,
            epoch: None,
            audio_floor: None,
            need_keyframe: false,
            open_bytes: 0,
            open_frames: 0,
            last_video_duration: 3000,
            keyframe_asked_at: None,
            want_keyframe: true,
            metadata: Vec::new(),
            metadata_id: 0,
            ended: false,
            version: 0,
            init_base: 0,
            resume_anchor: None,
            video_offset: 0,
            resumed_from: None,
            keep_keyframes: false,
        }
    }

    /// Keep each segment's first keyframe for [`Packager::completed_after`]
    /// (off by default: only a recorder making thumbnails needs the copy).
    pub fn keep_keyframes(&mut self, keep: bool) {
        self.keep_keyframes = keep;
    }

    pub fn config(&self) -> &PackagerConfig {
        &self.config
    }

    /// Bumped on every change a reader could see (new part, end).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The first init segment, once the first SPS/PPS arrived.
    pub fn init_segment(&self) -> Option<&[u8]> {
        self.inits.first().map(|(_, data)| data.as_slice())
    }

    /// Init segment `version` (`init.mp4` is version 0, `init{v}.mp4` later ones).
    pub fn init_version(&self, version: u32) -> Option<&[u8]> {
        self.inits.iter().find(|(v, _)| *v == version).map(|(_, data)| data.as_slice())
    }

    fn current_init(&self) -> u32 {
        self.inits.last().map_or(0, |(v, _)| *v)
    }

    /// What the playlist's `EXT-X-MAP` names for init segment `version`:
    /// its file with `?v=` its content's tag ([`Packager::init_tag`]). The
    /// file name is reused by the next broadcast (versions start again), the
    /// tagged URL never names other bytes: it is served `immutable`, and an
    /// HTTP cache fetches it once for every viewer, not once per viewer.
    pub fn init_map_uri(&self, version: u32) -> String {
        let file = Self::init_uri(version);
        match self.init_version(version) {
            Some(data) => format!("{file}?v={}", Self::init_tag(data)),
            None => file,
        }
    }

    /// A init segment's content tag: the first 8 bytes of its SHA-256, in hex.
    pub fn init_tag(data: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(data).iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The file of init segment `version`.
    pub fn init_uri(version: u32) -> String {
        if version == 0 {
            "init.mp4".to_owned()
        } else {
            format!("init{version}.mp4")
        }
    }

    /// `avc1.xxxxxx` of the stream and its size, once known.
    pub fn video_info(&self) -> Option<SpsInfo> {
        self.sps_info
    }

    /// True once per needed keyframe: the driver should send a PLI.
    pub fn wants_keyframe(&mut self) -> bool {
        std::mem::take(&mut self.want_keyframe)
    }

    /// The open segment's number and how long it has run (90 kHz, up to
    /// the newest video frame).
    pub fn open_segment_age(&self) -> Option<(u64, u64)> {
        let open = self.open_segment()?;
        let newest = self.pending_video.last().map_or(self.part_start_pts, |f| f.pts);
        Some((open.msn, newest.saturating_sub(open.start_pts)))
    }

    /// The number the next segment takes.
    pub fn next_msn(&self) -> u64 {
        self.next_msn
    }

    /// Number the first segment `msn` (no later than it starts; a packager
    /// with segments keeps counting on, so its playlist has no gap).
    pub fn start_at_msn(&mut self, msn: u64) {
        if self.segments.is_empty() {
            self.next_msn = self.next_msn.max(msn);
        }
    }

    /// The peak bitrate of the complete segments in the window (bits per
    /// second): what a multivariant playlist's `BANDWIDTH` means.
    pub fn peak_bitrate(&self) -> Option<u64> {
        self.segments
            .iter()
            .filter(|s| s.complete && s.duration() > 0.1)
            .map(|s| {
                let bytes: usize = s.parts.iter().map(|p| p.data.len()).sum();
                (bytes as f64 * 8.0 / s.duration()) as u64
            })
            .max()
    }

    /// Queue timed metadata (an ID3 `emsg`) for the next part.
    pub fn put_metadata(&mut self, text: String) {
        self.metadata.push(text);
    }

    fn open_segment(&self) -> Option<&Segment> {
        self.segments.back().filter(|s| !s.complete)
    }

    /// Add one video access unit at `pts` (90 kHz). `wall_ms` is the wall
    /// clock (Unix ms) now; only the first frame's is used. An error says
    /// why the frame was refused (the stream goes on).
    pub fn push_video(&mut self, pts: u64, au: AccessUnit, wall_ms: i64) -> Result<(), PackagerError> {
        if self.ended {
            return Ok(());
        }
        if let Err(e) = self.check_frame(&au) {
            self.refuse_until_keyframe(pts);
            return Err(e);
        }
        if self.resume_anchor.is_some() {
            // A resumed session starts at a keyframe, on the old timeline.
            if !au.keyframe {
                self.ask_keyframe(pts);
                return Ok(());
            }
            self.resume_timeline(pts, wall_ms);
        }
        let pts = resume::shift(pts, self.video_offset);
        if let Some(last) = self.pending_video.last().map(|f| f.pts) {
            let step_back = last.saturating_sub(pts);
            let step = pts.saturating_sub(last);
            if step_back > self.config.max_step() || step > self.config.max_step() {
                self.break_timeline(last, pts);
            } else if pts <= last {
                // Out of order or duplicate timestamps: not representable without
                // composition offsets; drop the frame.
                return Ok(());
            }
        }
        if let (Some(sps), Some(pps), true) = (&au.sps, &au.pps, au.keyframe) {
            // Checked above: the SPS parses.
            if let Some(info) = h264::parse_sps(sps).ok().filter(|i| Some(*i) != self.sps_info) {
                self.new_video_params(pts, sps.clone(), pps.clone(), info);
            }
        }
        if self.video.is_none() {
            return Ok(());
        }
        if self.need_keyframe && !au.keyframe {
            self.ask_keyframe(pts);
            return Ok(());
        }
        self.need_keyframe = false;
        let Some(seg_start) = self.open_segment().map(|s| s.start_pts) else {
            // Nothing open: only a keyframe may start the stream.
            if !au.keyframe {
                self.ask_keyframe(pts);
                return Ok(());
            }
            let epoch = *self.epoch.get_or_insert((pts, wall_ms));
            self.audio_floor.get_or_insert(pts);
            self.start_segment(pts, epoch);
            self.add_pending(pts, au);
            return Ok(());
        };
        let segment_ticks = pts.saturating_sub(seg_start);
        let due = segment_ticks >= PackagerConfig::ticks(self.config.segment_target);
        let overdue = segment_ticks >= u64::from(self.config.target_duration_secs) * u64::from(VIDEO_TIMESCALE);
        if (au.keyframe && due) || overdue {
            self.close_part(pts);
            self.close_segment();
            let epoch = self.epoch.unwrap_or((pts, wall_ms));
            self.start_segment(pts, epoch);
        } else {
            if self.open_bytes.saturating_add(au.avcc.len()) > MAX_SEGMENT_BYTES
                || self.open_frames >= MAX_SEGMENT_FRAMES
            {
                self.refuse_until_keyframe(pts);
                return Err(PackagerError::SegmentFull);
            }
            // Cut once the part is near its target, or when one more frame
            // (at the longest frame interval seen in this part: capture
            // jitters) could take it past the target.
            let target = PackagerConfig::ticks(self.config.part_target);
            let duration = pts.saturating_sub(self.part_start_pts);
            let last_gap = self.pending_video.last().map_or(0, |last| pts.saturating_sub(last.pts));
            let interval = self
                .pending_video
                .windows(2)
                .filter_map(|w| match w {
                    [a, b] => Some(b.pts.saturating_sub(a.pts)),
                    _ => None,
                })
                .fold(last_gap, u64::max);
            if duration >= target * 85 / 100 || duration.saturating_add(interval) > target {
                self.close_part(pts);
            }
        }
        if due && !au.keyframe {
            self.ask_keyframe(pts);
        }
        self.add_pending(pts, au);
        Ok(())
    }

    /// Size limits and a usable SPS (on any frame that carries one: a
    /// decoder would choke on a broken one in-band too).
    fn check_frame(&self, au: &AccessUnit) -> Result<(), PackagerError> {
        if au.avcc.len() > MAX_ACCESS_UNIT_BYTES {
            return Err(PackagerError::FrameTooLarge { bytes: au.avcc.len() });
        }
        if let Some(sps) = &au.sps {
            h264::parse_sps(sps).map_err(PackagerError::BadSps)?;
        }
        Ok(())
    }

    /// Ask for a keyframe now, and again if the encoder ignored it.
    fn ask_keyframe(&mut self, pts: u64) {
        let again = PackagerConfig::ticks(Duration::from_millis(500));
        if self.keyframe_asked_at.is_none_or(|at| pts.saturating_sub(at) >= again) {
            self.keyframe_asked_at = Some(pts);
            self.want_keyframe = true;
        }
    }

    /// Later frames reference the refused one: drop them until a keyframe.
    fn refuse_until_keyframe(&mut self, pts: u64) {
        self.need_keyframe = true;
        self.ask_keyframe(pts);
    }

    /// The encoder sent new parameters (or the first): a new init segment,
    /// and a new segment after a discontinuity.
    fn new_video_params(&mut self, pts: u64, sps: Vec<u8>, pps: Vec<u8>, info: SpsInfo) {
        let first = self.video.is_none();
        if !first && self.open_segment().is_some() {
            self.close_part(pts);
            self.close_segment();
        }
        let params = VideoParams { sps, pps, width: info.width, height: info.height };
        let version = if first { self.init_base } else { self.current_init().saturating_add(1) };
        self.inits.push((version, fmp4::init_segment(&params, &self.audio)));
        self.video = Some(params);
        self.sps_info = Some(info);
        if !first {
            self.discontinuity_next = true;
        }
        self.version += 1;
    }

    /// Timestamps jumped from `last` to `pts`: end the open segment after
    /// its last frame and continue, after a discontinuity, at the next
    /// keyframe, with program date-time going on from where it was.
    fn break_timeline(&mut self, last: u64, pts: u64) {
        let end = last.saturating_add(u64::from(self.last_video_duration));
        self.close_part(end);
        self.close_segment();
        self.pending_audio.clear();
        let wall = self.segments.back().map(Segment::end_pdt_ms).or(self.epoch.map(|e| e.1)).unwrap_or(0);
        self.epoch = Some((pts, wall));
        self.audio_floor = Some(pts);
        self.discontinuity_next = true;
        self.keyframe_asked_at = None;
    }

    fn add_pending(&mut self, pts: u64, au: AccessUnit) {
        self.open_bytes = self.open_bytes.saturating_add(au.avcc.len());
        self.open_frames = self.open_frames.saturating_add(1);
        if let Some(seg) = self.segments.back_mut().filter(|s| !s.complete && s.keyframe.is_none() && s.parts.is_empty()) {
            if self.keep_keyframes && au.keyframe && self.pending_video.is_empty() {
                seg.keyframe = Some(au.avcc.clone());
            }
        }
        self.pending_video.push(PendingVideo { pts, keyframe: au.keyframe, data: au.avcc });
    }

    /// Add one AAC frame at `pts` (audio sample rate).
    pub fn push_audio(&mut self, pts: u64, frame: Vec<u8>) {
        if self.ended {
            return;
        }
        let Some(floor) = self.audio_floor else { return };
        let pts = resume::shift(pts, self.audio_offset());
        if self.audio_to_video(pts) < floor {
            return;
        }
        // Video stopped but audio goes on: keep ~10 s at most.
        if self.pending_audio.len() > 500 {
            self.pending_audio.pop_front();
        }
        self.pending_audio.push_back((pts, frame));
    }

    fn audio_to_video(&self, pts: u64) -> u64 {
        pts.saturating_mul(u64::from(VIDEO_TIMESCALE)) / u64::from(self.audio.sample_rate.max(1))
    }

    fn start_segment(&mut self, pts: u64, epoch: (u64, i64)) {
        let offset_ms = i64::try_from(pts.saturating_sub(epoch.0) / 90).unwrap_or(i64::MAX);
        self.segments.push_back(Segment {
            msn: self.next_msn,
            start_pts: pts,
            parts: Vec::new(),
            complete: false,
            pdt_ms: epoch.1.saturating_add(offset_ms),
            init: self.current_init(),
            discontinuity: std::mem::take(&mut self.discontinuity_next),
            keyframe: None,
        });
        self.next_msn = self.next_msn.saturating_add(1);
        self.part_start_pts = pts;
        self.keyframe_asked_at = None;
        self.open_bytes = 0;
        self.open_frames = 0;
    }

    /// Cut the pending samples before `end_pts` into a part of the open segment.
    fn close_part(&mut self, end_pts: u64) {
        if self.pending_video.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_video);
        let mut video = Vec::with_capacity(pending.len());
        for (i, frame) in pending.iter().enumerate() {
            let next = pending.get(i + 1).map_or(end_pts, |n| n.pts);
            let duration = next.saturating_sub(frame.pts).min(u64::from(u32::MAX)) as u32;
            video.push(Sample { duration, keyframe: frame.keyframe, data: Vec::new() });
        }
        if let Some(last) = video.last() {
            if last.duration > 0 {
                self.last_video_duration = last.duration;
            }
        }
        let first_pts = pending.first().map_or(end_pts, |f| f.pts);
        let independent = pending.first().is_some_and(|f| f.keyframe);
        for (sample, frame) in video.iter_mut().zip(pending) {
            sample.data = frame.data;
        }

        let mut audio = Vec::new();
        let mut audio_base = None;
        while let Some((pts, _)) = self.pending_audio.front() {
            if self.audio_to_video(*pts) >= end_pts {
                break;
            }
            let Some((pts, data)) = self.pending_audio.pop_front() else { break };
            audio_base.get_or_insert(pts);
            audio.push(Sample { duration: AAC_FRAME_SAMPLES, keyframe: true, data });
        }

        let mut out = Vec::new();
        for text in std::mem::take(&mut self.metadata) {
            self.metadata_id = self.metadata_id.wrapping_add(1);
            let id3 = fmp4::id3_txxx(&text);
            out.extend(fmp4::emsg_id3(VIDEO_TIMESCALE, first_pts, self.metadata_id, &id3));
            out.extend(fmp4::emsg_id3_twitch(VIDEO_TIMESCALE, self.metadata_id, &id3));
        }
        let runs = [
            TrackRun { track_id: VIDEO_TRACK_ID, base_decode_time: first_pts, samples: &video },
            TrackRun { track_id: AUDIO_TRACK_ID, base_decode_time: audio_base.unwrap_or(0), samples: &audio },
        ];
        out.extend(fmp4::fragment(self.fragment_seq, &runs));
        self.fragment_seq = self.fragment_seq.wrapping_add(1);
        let duration = end_pts.saturating_sub(self.part_start_pts) as f64 / f64::from(VIDEO_TIMESCALE);
        self.part_start_pts = end_pts;
        if let Some(seg) = self.segments.back_mut().filter(|s| !s.complete) {
            seg.parts.push(Part { duration, independent, data: out });
            self.version += 1;
        }
    }

    fn close_segment(&mut self) {
        if let Some(seg) = self.segments.back_mut() {
            if !seg.complete {
                seg.complete = true;
                if seg.parts.is_empty() {
                    self.segments.pop_back();
                }
            }
        }
        while self.segments.iter().filter(|s| s.complete).count() > self.config.window_segments {
            let Some(old) = self.segments.pop_front() else { break };
            if old.discontinuity {
                self.discontinuity_sequence = self.discontinuity_sequence.saturating_add(1);
            }
            self.retire(old);
        }
        // Keep the init segments the window still needs (and the current one).
        let oldest = self.segments.front().map_or(u32::MAX, |s| s.init).min(self.current_init());
        self.inits.retain(|(v, _)| *v >= oldest);
        self.version += 1;
    }

    /// Keeps `old` (which left the window) fetchable for a while.
    fn retire(&mut self, old: Segment) {
        if old.complete {
            let duration = old.duration();
            self.retired.push(old.msn, old.parts.into_iter().flat_map(|p| p.data).collect(), duration);
        }
    }

    /// A segment that left the window but is still kept.
    fn retired(&self, msn: u64) -> Option<&[u8]> {
        self.retired.get(msn)
    }

    /// The broadcast ended: flush what is pending and add `EXT-X-ENDLIST`.
    pub fn finish(&mut self) {
        if self.ended {
            return;
        }
        if let Some(last) = self.pending_video.last() {
            let end = last.pts.saturating_add(u64::from(self.last_video_duration));
            self.close_part(end);
        }
        self.close_segment();
        self.ended = true;
        self.version += 1;
    }

}
