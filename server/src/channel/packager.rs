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

use std::collections::VecDeque;
use std::time::Duration;

use super::fmp4::{self, AudioParams, Sample, TrackRun, VideoParams, AUDIO_TRACK_ID, VIDEO_TIMESCALE, VIDEO_TRACK_ID};
use super::h264::{self, AccessUnit, SpsInfo};

/// Samples per AAC-LC frame.
pub const AAC_FRAME_SAMPLES: u32 = 1024;

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
    /// Media sequence number of the first segment. Giving each broadcast of
    /// a channel a fresh range keeps segment URLs unique, so they can be
    /// cached as immutable.
    pub first_msn: u64,
}

impl Default for PackagerConfig {
    fn default() -> Self {
        Self {
            part_target: Duration::from_millis(300),
            segment_target: Duration::from_secs(1),
            target_duration_secs: 2,
            window_segments: 7,
            segments_with_parts: 3,
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
        (d.as_micros() as u64).saturating_mul(u64::from(VIDEO_TIMESCALE)) / 1_000_000
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
}

impl Segment {
    fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
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
    next_msn: u64,
    pending_video: Vec<PendingVideo>,
    pending_audio: VecDeque<(u64, Vec<u8>)>,
    part_start_pts: u64,
    fragment_seq: u32,
    /// Video pts and wall time (Unix ms) of the first frame.
    epoch: Option<(u64, i64)>,
    last_video_duration: u32,
    /// Video pts when a keyframe was last asked for in this segment.
    keyframe_asked_at: Option<u64>,
    want_keyframe: bool,
    metadata: Vec<String>,
    metadata_id: u32,
    ended: bool,
    version: u64,
}

impl Packager {
    /// A packager for one broadcast whose audio is AAC with `audio`.
    pub fn new(config: PackagerConfig, audio: AudioParams) -> Self {
        let first_msn = config.first_msn;
        Self {
            config,
            audio,
            video: None,
            sps_info: None,
            inits: Vec::new(),
            discontinuity_sequence: 0,
            discontinuity_next: false,
            segments: VecDeque::new(),
            next_msn: first_msn,
            pending_video: Vec::new(),
            pending_audio: VecDeque::new(),
            part_start_pts: 0,
            fragment_seq: 1,
            epoch: None,
            last_video_duration: 3000,
            keyframe_asked_at: None,
            want_keyframe: true,
            metadata: Vec::new(),
            metadata_id: 0,
            ended: false,
            version: 0,
        }
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

    /// The URI of init segment `version` in the playlist.
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

    /// Queue timed metadata (an ID3 `emsg`) for the next part.
    pub fn put_metadata(&mut self, text: String) {
        self.metadata.push(text);
    }

    fn open_segment(&self) -> Option<&Segment> {
        self.segments.back().filter(|s| !s.complete)
    }

    /// Add one video access unit at `pts` (90 kHz). `wall_ms` is the wall
    /// clock (Unix ms) now; only the first frame's is used.
    pub fn push_video(&mut self, pts: u64, au: AccessUnit, wall_ms: i64) {
        if self.ended {
            return;
        }
        if let (Some(sps), Some(pps), true) = (&au.sps, &au.pps, au.keyframe) {
            // Parameter sets also travel in-band with every keyframe, so only a
            // change a decoder must be re-initialised for (size, profile, level)
            // needs a new init segment.
            if let Some(info) = h264::parse_sps(sps).filter(|i| Some(*i) != self.sps_info) {
                let first = self.video.is_none();
                if !first && self.open_segment().is_some() {
                    self.close_part(pts);
                    self.close_segment();
                }
                let params = VideoParams { sps: sps.clone(), pps: pps.clone(), width: info.width, height: info.height };
                let version = if first { 0 } else { self.current_init() + 1 };
                self.inits.push((version, fmp4::init_segment(&params, &self.audio)));
                self.video = Some(params);
                self.sps_info = Some(info);
                self.discontinuity_next = !first;
                self.version += 1;
            }
        }
        if self.video.is_none() {
            return;
        }
        let Some(seg_start) = self.open_segment().map(|s| s.start_pts) else {
            // Nothing open: only a keyframe may start the stream.
            if !au.keyframe {
                self.want_keyframe = self.keyframe_asked_at.is_none();
                self.keyframe_asked_at.get_or_insert(pts);
                return;
            }
            let epoch = *self.epoch.get_or_insert((pts, wall_ms));
            self.start_segment(pts, epoch);
            self.pending_video.push(PendingVideo { pts, keyframe: au.keyframe, data: au.avcc });
            return;
        };
        if let Some(last) = self.pending_video.last() {
            if pts <= last.pts {
                // Out of order or duplicate timestamps: not representable without
                // composition offsets; drop the frame.
                return;
            }
        }
        let segment_ticks = pts.saturating_sub(seg_start);
        let due = segment_ticks >= PackagerConfig::ticks(self.config.segment_target);
        let overdue = segment_ticks >= u64::from(self.config.target_duration_secs) * u64::from(VIDEO_TIMESCALE);
        if (au.keyframe && due) || overdue {
            self.close_part(pts);
            self.close_segment();
            let epoch = self.epoch.unwrap_or((pts, wall_ms));
            self.start_segment(pts, epoch);
        } else {
            // Cut once the part is near its target, or when one more frame
            // (at the current frame interval) would take it past the target.
            let target = PackagerConfig::ticks(self.config.part_target);
            let duration = pts.saturating_sub(self.part_start_pts);
            let interval = self.pending_video.last().map_or(0, |last| pts.saturating_sub(last.pts));
            if duration >= target * 85 / 100 || duration + interval > target {
                self.close_part(pts);
            }
        }
        if due && !au.keyframe {
            // Ask when the boundary is due, and again if the encoder ignored it.
            let again = PackagerConfig::ticks(Duration::from_millis(500));
            if self.keyframe_asked_at.is_none_or(|at| pts.saturating_sub(at) >= again) {
                self.keyframe_asked_at = Some(pts);
                self.want_keyframe = true;
            }
        }
        self.pending_video.push(PendingVideo { pts, keyframe: au.keyframe, data: au.avcc });
    }

    /// Add one AAC frame at `pts` (audio sample rate).
    pub fn push_audio(&mut self, pts: u64, frame: Vec<u8>) {
        if self.ended {
            return;
        }
        let Some(seg) = self.segments.front() else { return };
        if self.audio_to_video(pts) < seg.start_pts {
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
        let offset_ms = (pts.saturating_sub(epoch.0) / 90) as i64;
        self.segments.push_back(Segment {
            msn: self.next_msn,
            start_pts: pts,
            parts: Vec::new(),
            complete: false,
            pdt_ms: epoch.1 + offset_ms,
            init: self.current_init(),
            discontinuity: std::mem::take(&mut self.discontinuity_next),
        });
        self.next_msn += 1;
        self.part_start_pts = pts;
        self.keyframe_asked_at = None;
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
            if self.segments.pop_front().is_some_and(|s| s.discontinuity) {
                self.discontinuity_sequence += 1;
            }
        }
        // Keep the init segments the window still needs (and the current one).
        let oldest = self.segments.front().map_or(u32::MAX, |s| s.init).min(self.current_init());
        self.inits.retain(|(v, _)| *v >= oldest);
        self.version += 1;
    }

    /// The broadcast ended: flush what is pending and add `EXT-X-ENDLIST`.
    pub fn finish(&mut self) {
        if self.ended {
            return;
        }
        if let Some(last) = self.pending_video.last() {
            let end = last.pts + u64::from(self.last_video_duration);
            self.close_part(end);
        }
        self.close_segment();
        self.ended = true;
        self.version += 1;
    }

    /// Whether the playlist can answer `_HLS_msn=msn[&_HLS_part=part]`.
    pub fn playlist_ready(&self, msn: u64, part: Option<u32>) -> Readiness {
        if self.ended {
            return Readiness::Ready;
        }
        let Some(last) = self.segments.back() else {
            return if msn > self.next_msn + 2 { Readiness::BadRequest } else { Readiness::Wait };
        };
        if msn > last.msn + 2 {
            return Readiness::BadRequest;
        }
        if msn < last.msn {
            return Readiness::Ready;
        }
        if msn > last.msn {
            return Readiness::Wait;
        }
        if last.complete {
            return Readiness::Ready;
        }
        match part {
            Some(p) if (p as usize) < last.parts.len() => Readiness::Ready,
            // A client far ahead of the open segment's parts is confused.
            Some(p) if p as usize > last.parts.len() + 20 => Readiness::BadRequest,
            _ => Readiness::Wait,
        }
    }

    /// Whether any part exists yet (a playlist without one is not served).
    pub fn has_media(&self) -> bool {
        self.segments.iter().any(|s| !s.parts.is_empty())
    }

    /// A complete segment: its parts back to back.
    pub fn segment(&self, msn: u64) -> Option<Vec<u8>> {
        let seg = self.segments.iter().find(|s| s.msn == msn && s.complete)?;
        Some(seg.parts.iter().flat_map(|p| p.data.iter().copied()).collect())
    }

    /// Part `index` of segment `msn`.
    pub fn part(&self, msn: u64, index: u32) -> PartLookup {
        let Some(seg) = self.segments.iter().find(|s| s.msn == msn) else {
            // The segment after the last one: its first part is upcoming too.
            let next = self.segments.back().map(|s| if s.complete { s.msn + 1 } else { u64::MAX });
            return if !self.ended && index == 0 && next == Some(msn) { PartLookup::Upcoming } else { PartLookup::Missing };
        };
        match seg.parts.get(index as usize) {
            Some(p) => PartLookup::Ready(p.data.clone()),
            None if !seg.complete && !self.ended && index as usize == seg.parts.len() => PartLookup::Upcoming,
            None => PartLookup::Missing,
        }
    }

    /// The LL-HLS media playlist (`media.m3u8`).
    pub fn media_playlist(&self) -> String {
        use std::fmt::Write as _;
        let c = &self.config;
        let mut out = String::with_capacity(2048);
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:9");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", c.target_duration_secs);
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
            c.part_hold_back().as_secs_f64()
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={:.3}", c.part_target.as_secs_f64());
        let first_msn = self.segments.front().map_or(self.next_msn, |s| s.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuity_sequence);
        }
        let complete = self.segments.iter().filter(|s| s.complete).count();
        let mut map: Option<u32> = None;
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.parts.is_empty() {
                continue;
            }
            if seg.discontinuity {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            if map != Some(seg.init) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", Self::init_uri(seg.init));
                map = Some(seg.init);
            }
            if let Some(t) = chrono::DateTime::from_timestamp_millis(seg.pdt_ms) {
                let _ =
                    writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            }
            let list_parts = !seg.complete || i + c.segments_with_parts >= complete;
            if list_parts {
                for (n, part) in seg.parts.iter().enumerate() {
                    let independent = if part.independent { ",INDEPENDENT=YES" } else { "" };
                    let _ = writeln!(
                        out,
                        "#EXT-X-PART:DURATION={:.5},URI=\"part{}.{}.m4s\"{}",
                        part.duration, seg.msn, n, independent
                    );
                }
            }
            if seg.complete {
                let _ = writeln!(out, "#EXTINF:{:.5},", seg.duration());
                let _ = writeln!(out, "seg{}.m4s", seg.msn);
            }
        }
        if self.ended {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
        } else if let Some(seg) = self.segments.back() {
            let (msn, n) = if seg.complete { (seg.msn + 1, 0) } else { (seg.msn, seg.parts.len()) };
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part{msn}.{n}.m4s\"");
        }
        out
    }

    /// The multivariant playlist (`index.m3u8`): one variant, the media playlist.
    pub fn multivariant_playlist(&self) -> String {
        let codec = self.sps_info.map_or_else(|| "avc1.42e01f".to_owned(), |s| s.codec_string());
        let (w, h) = self.sps_info.map_or((1280, 720), |s| (s.width, s.height));
        format!(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{codec},mp4a.40.2\",RESOLUTION={w}x{h}\nmedia.m3u8\n",
            bandwidth_estimate(w, h)
        )
    }

    /// Parse a media file name: `seg{msn}.m4s` or `part{msn}.{n}.m4s`.
    pub fn parse_media_name(name: &str) -> Option<MediaName> {
        let stem = name.strip_suffix(".m4s")?;
        if let Some(rest) = stem.strip_prefix("part") {
            let (msn, n) = rest.split_once('.')?;
            return Some(MediaName::Part(msn.parse().ok()?, n.parse().ok()?));
        }
        Some(MediaName::Segment(stem.strip_prefix("seg")?.parse().ok()?))
    }
}

/// A media resource name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaName {
    Segment(u64),
    Part(u64, u32),
}

/// A rough peak bitrate for `BANDWIDTH` (browsers send ~2.5 Mbps at 720p).
fn bandwidth_estimate(width: u32, height: u32) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    (pixels * 3).clamp(300_000, 8_000_000) + 128_000
}
