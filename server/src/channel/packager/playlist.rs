//! The read side of the packager: what the HLS handlers ask for —
//! blocking-reload readiness, segments and parts, and the playlists.

use super::{Packager, PartLookup, Readiness};

/// A piece of `seg{msn}.m4s` as a prefetch request streams it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentChunk {
    /// The parts from the one asked for on, back to back (may be empty).
    pub data: Vec<u8>,
    /// The part to ask for next.
    pub next_part: usize,
    /// No part will follow: the segment is complete.
    pub complete: bool,
}

/// A complete segment as a recording keeps it (see [`Packager::completed_after`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedSegment {
    pub msn: u64,
    /// Seconds.
    pub duration: f64,
    /// Its parts back to back: a `.m4s` as served live.
    pub data: Vec<u8>,
    /// The init segment its media needs.
    pub init: Vec<u8>,
    /// Preceded by `EXT-X-DISCONTINUITY` in the live playlist.
    pub discontinuity: bool,
    /// Wall-clock time of its first frame (Unix ms).
    pub pdt_ms: i64,
    /// Its first frame (AVCC) when that is a keyframe.
    pub keyframe: Option<Vec<u8>>,
    /// The video size (from the SPS).
    pub width: u32,
    pub height: u32,
}

impl Packager {
    /// The complete segments of the window after media sequence `after`
    /// (all of them with `None`), oldest first. A recorder asks after each
    /// change and remembers the last msn it got; segments that slid out of
    /// the window in between are not returned.
    pub fn completed_after(&self, after: Option<u64>) -> Vec<CompletedSegment> {
        let (width, height) = self.sps_info.map_or((0, 0), |i| (i.width, i.height));
        self.segments
            .iter()
            .filter(|s| s.complete && after.is_none_or(|a| s.msn > a))
            .filter_map(|s| {
                let init = self.init_version(s.init)?.to_vec();
                Some(CompletedSegment {
                    msn: s.msn,
                    duration: s.duration(),
                    data: s.parts.iter().flat_map(|p| p.data.iter().copied()).collect(),
                    init,
                    discontinuity: s.discontinuity,
                    pdt_ms: s.pdt_ms,
                    keyframe: s.keyframe.clone(),
                    width,
                    height,
                })
            })
            .collect()
    }

    /// The media sequence number of the newest complete segment.
    pub fn last_completed(&self) -> Option<u64> {
        self.segments.iter().rev().find(|s| s.complete).map(|s| s.msn)
    }

    /// Whether the playlist can answer `_HLS_msn=msn[&_HLS_part=part]`.
    pub fn playlist_ready(&self, msn: u64, part: Option<u32>) -> Readiness {
        if self.ended {
            return Readiness::Ready;
        }
        let Some(last) = self.segments.back() else {
            return if msn > self.next_msn.saturating_add(2) { Readiness::BadRequest } else { Readiness::Wait };
        };
        if msn > last.msn.saturating_add(2) {
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
            Some(p) if p as usize > last.parts.len().saturating_add(20) => Readiness::BadRequest,
            _ => Readiness::Wait,
        }
    }

    /// Whether any part exists yet (a playlist without one is not served).
    pub fn has_media(&self) -> bool {
        self.segments.iter().any(|s| !s.parts.is_empty())
    }

    /// A complete segment: its parts back to back.
    pub fn segment(&self, msn: u64) -> Option<Vec<u8>> {
        let Some(seg) = self.segments.iter().find(|s| s.msn == msn && s.complete) else {
            return self.retired(msn).map(<[u8]>::to_vec);
        };
        Some(seg.parts.iter().flat_map(|p| p.data.iter().copied()).collect())
    }

    /// Segment `msn` from part `from` on, also while it is being built (the
    /// IVS Player's `EXT-X-PREFETCH`) or before it starts when it is the next
    /// one (an empty chunk: wait); a segment that left the window but is
    /// still kept comes whole. `None`: not kept, or nothing more will come
    /// (the stream ended or the broadcaster is away).
    pub fn segment_from(&self, msn: u64, from: usize) -> Option<SegmentChunk> {
        let Some(seg) = self.segments.iter().find(|s| s.msn == msn) else {
            if let Some(data) = self.retired(msn) {
                let data = if from == 0 { data.to_vec() } else { Vec::new() };
                return Some(SegmentChunk { data, next_part: usize::MAX, complete: true });
            }
            let upcoming = !self.ended && !self.is_interrupted() && msn == self.next_msn;
            return upcoming.then(|| SegmentChunk { data: Vec::new(), next_part: 0, complete: false });
        };
        let parts = seg.parts.get(from..).unwrap_or_default();
        let data = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        Some(SegmentChunk { data, next_part: from.max(seg.parts.len()), complete: seg.complete })
    }

    /// Part `index` of segment `msn`.
    pub fn part(&self, msn: u64, index: u32) -> PartLookup {
        let Some(seg) = self.segments.iter().find(|s| s.msn == msn) else {
            // The segment after the last one: its first part is upcoming too.
            let next = self.segments.back().map(|s| if s.complete { s.msn.saturating_add(1) } else { u64::MAX });
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
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", self.init_map_uri(seg.init));
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
        } else if self.is_interrupted() {
            // The broadcaster is away: no part is on its way to hint.
        } else if let Some(seg) = self.segments.back() {
            let (msn, n) = if seg.complete { (seg.msn.saturating_add(1), 0) } else { (seg.msn, seg.parts.len()) };
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part{msn}.{n}.m4s\"");
            // The IVS Player plays low latency only on LHLS prefetch: the open
            // segment, streamed as it grows. Not right after a discontinuity
            // (it has no EXT-X-PREFETCH-DISCONTINUITY): from the next segment on.
            if !seg.complete && !seg.discontinuity {
                let _ = writeln!(out, "#EXT-X-PREFETCH:seg{}.m4s", seg.msn);
            }
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
pub fn bandwidth_estimate(width: u32, height: u32) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    (pixels * 3).clamp(300_000, 8_000_000) + 128_000
}
