//! An ABR ladder with no transcoding: when the broadcaster sends simulcast,
//! each layer becomes a rendition of one multivariant playlist. The top
//! layer is the broadcast's own packager (its URLs, recording and restart
//! continuity are unchanged); every lower layer gets a [`Packager`] of its
//! own, served under `/hls/{id}/{rid}/`.
//!
//! Renditions must line up for a player to switch between them: the same
//! media sequence number for the same stretch of time (hls.js asks the new
//! rendition's playlist for the part after the last one it had), and
//! timestamps on one timeline. The ingest driver puts every layer on one
//! clock and asks every layer for a keyframe whenever one is wanted, so
//! each cuts its segments at the same frames; a lower rendition numbers its
//! first segment after the top one's ([`first_msn`]) and then counts on in
//! step with it.

use super::fmp4::VIDEO_TIMESCALE;
use super::packager::{bandwidth_estimate, Packager};
use crate::sfu::layers::known_rank;

/// One `EXT-X-STREAM-INF` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub uri: String,
    /// Peak bits per second.
    pub bandwidth: u64,
    /// `avc1.xxxxxx`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
}

/// A rid usable as a path segment (RFC 8851: 1–16 alphanumerics, `-`, `_`).
pub fn valid_rid(rid: &str) -> bool {
    (1..=16).contains(&rid.len()) && rid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The top layer of a simulcast offer: by name when every rid is one the
/// SFU knows (`low`/`mid`/`high`), else the last. WebRTC lists
/// `sendEncodings` lowest first by default (each `scaleResolutionDownBy`
/// defaults to 2^(n-1-i)), and so do our SDK, IVS and LiveKit.
pub fn top_rid(rids: &[String]) -> Option<&str> {
    if rids.iter().all(|r| known_rank(r).is_some()) {
        return rids.iter().max_by_key(|r| known_rank(r)).map(String::as_str);
    }
    rids.last().map(String::as_str)
}

/// The media sequence number of a lower rendition's first segment, which
/// starts now. `top_open`: the top rendition's open segment (its number
/// and how long it has run, 90 kHz), `top_next`: the number its next
/// segment takes. A top segment younger than half the segment target was
/// cut at this same keyframe (or a frame away): share its number; an older
/// one is about to end, and the lower rendition starts the next.
pub fn first_msn(top_open: Option<(u64, u64)>, top_next: u64, segment_target_ticks: u64) -> u64 {
    match top_open {
        Some((msn, age)) if age < segment_target_ticks / 2 => msn,
        Some((msn, _)) => msn.saturating_add(1),
        None => top_next,
    }
}

/// The multivariant playlist of `variants`, in the order given (a player
/// without a bandwidth estimate yet starts with the first). Each variant is
/// named by its own video group, as IVS's playlists do: without the groups
/// the IVS Player lists the qualities but never switches between them.
pub fn multivariant(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let name = format!("{}p", v.height);
        out.push_str(&format!(
            "#EXT-X-MEDIA:TYPE=VIDEO,GROUP-ID=\"{name}\",NAME=\"{name}\",AUTOSELECT=YES,DEFAULT=YES\n#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{},mp4a.40.2\",RESOLUTION={}x{},VIDEO=\"{name}\",FRAME-RATE=30.000\n{}\n",
            v.bandwidth, v.codec, v.width, v.height, v.uri
        ));
    }
    out
}

/// The variant a packager's media makes at `uri`, once its video is known.
/// Bandwidth: the peak segment bitrate measured (what `BANDWIDTH` means),
/// or a size-based guess before a segment completes.
pub fn variant_of(p: &Packager, uri: &str) -> Option<Variant> {
    let info = p.video_info()?;
    Some(Variant {
        uri: uri.to_owned(),
        bandwidth: p.peak_bitrate().unwrap_or_else(|| bandwidth_estimate(info.width, info.height)),
        codec: info.codec_string(),
        width: info.width,
        height: info.height,
    })
}

/// The lower renditions of one broadcast.
#[derive(Default)]
pub struct Ladder {
    /// The lower layers the current session announced (rids).
    expected: Vec<String>,
    renditions: Vec<(String, Packager)>,
}

/// How many lower renditions one broadcast may have (a simulcast offer
/// names at most a handful of layers).
const MAX_RENDITIONS: usize = 4;

impl Ladder {
    /// The current session sends these lower layers (rids, lowest first).
    /// A rendition it no longer sends (a broadcaster back without
    /// simulcast) ends, so the multivariant playlist stops listing it.
    pub fn expect(&mut self, rids: Vec<String>) {
        self.expected = rids.into_iter().filter(|r| valid_rid(r)).take(MAX_RENDITIONS).collect();
        for (rid, p) in &mut self.renditions {
            if !self.expected.contains(rid) {
                p.finish();
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.renditions.is_empty()
    }

    pub fn get_mut(&mut self, rid: &str) -> Option<&mut Packager> {
        self.renditions.iter_mut().find(|(r, _)| r == rid).map(|(_, p)| p)
    }

    /// Rendition `rid`, made with `make` the first time (only for an
    /// expected rid: a client cannot add renditions by inventing rids).
    pub fn get_or_make(&mut self, rid: &str, make: impl FnOnce() -> Packager) -> Option<&mut Packager> {
        // Ended when a session came without it; a later one brings it back afresh.
        self.renditions.retain(|(r, p)| r != rid || !p.is_ended());
        if self.get_mut(rid).is_none() {
            if !self.expected.iter().any(|r| r == rid) || self.renditions.len() >= MAX_RENDITIONS {
                return None;
            }
            self.renditions.push((rid.to_owned(), make()));
        }
        self.get_mut(rid)
    }

    pub fn each(&mut self, mut f: impl FnMut(&mut Packager)) {
        for (_, p) in &mut self.renditions {
            f(p);
        }
    }

    /// Every expected rendition has a complete segment (so its bandwidth is measured).
    pub fn settled(&self) -> bool {
        self.expected.iter().all(|rid| self.renditions.iter().any(|(r, p)| r == rid && p.last_completed().is_some()))
    }

    /// The variants of the lower renditions with media, highest first.
    pub fn variants(&self) -> Vec<Variant> {
        let mut out: Vec<Variant> = self
            .renditions
            .iter()
            .filter(|(_, p)| p.has_media() && !p.is_ended())
            .filter_map(|(rid, p)| variant_of(p, &format!("{rid}/media.m3u8")))
            .collect();
        out.sort_by_key(|v| std::cmp::Reverse((v.width * v.height, v.bandwidth)));
        out
    }
}

/// The segment target of `p` at the video timescale: see [`first_msn`].
pub fn segment_ticks(p: &Packager) -> u64 {
    let micros = u64::try_from(p.config().segment_target.as_micros()).unwrap_or(u64::MAX);
    micros.saturating_mul(u64::from(VIDEO_TIMESCALE)) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_layer_is_the_last_rid() {
        let rids = ["low", "mid", "high"].map(String::from);
        assert_eq!(top_rid(&rids), Some("high"));
        assert_eq!(top_rid(&["high", "low"].map(String::from)), Some("high"));
        assert_eq!(top_rid(&["h", "f", "q"].map(String::from)), Some("q"));
        assert_eq!(top_rid(&[]), None);
    }

    #[test]
    fn rids_that_are_not_path_safe_are_refused() {
        assert!(valid_rid("low") && valid_rid("q_1-a"));
        assert!(!valid_rid("") && !valid_rid("../x") && !valid_rid("a/b") && !valid_rid("abcdefghijklmnopq"));
        let mut l = Ladder::default();
        l.expect(vec!["..".into(), "low".into()]);
        assert_eq!(l.expected, vec!["low".to_owned()]);
    }

    #[test]
    fn a_lower_rendition_starts_on_the_top_ones_segment_numbers() {
        let second = u64::from(VIDEO_TIMESCALE);
        // The top rendition cut at (nearly) the same keyframe: share its number.
        assert_eq!(first_msn(Some((40, 0)), 41, second), 40);
        assert_eq!(first_msn(Some((40, second / 3)), 41, second), 40);
        // Its segment is old: it is about to end, start the next one.
        assert_eq!(first_msn(Some((40, second * 9 / 10)), 41, second), 41);
        // Nothing open yet (both start together).
        assert_eq!(first_msn(None, 7, second), 7);
    }

    #[test]
    fn only_announced_rids_become_renditions_and_only_so_many() {
        let mut l = Ladder::default();
        let make = || Packager::new(Default::default(), super::super::ingest::audio_params());
        assert!(l.get_or_make("low", make).is_none(), "not announced");
        l.expect(vec!["low".into()]);
        assert!(l.get_or_make("low", make).is_some());
        assert!(l.get_or_make("mid", make).is_none());
        assert!(!l.settled(), "no complete segment yet");
        // Back without simulcast: the rendition ends.
        l.expect(Vec::new());
        assert!(l.get_mut("low").is_some_and(|p| p.is_ended()));
        assert!(l.settled(), "nothing expected");
        l.expect(vec!["low".into()]);
        assert!(l.get_or_make("low", make).is_some_and(|p| !p.is_ended()), "back afresh");
    }

    #[test]
    fn the_multivariant_playlist_lists_each_variant_in_order() {
        let v = |uri: &str, bw, w, h| Variant { uri: uri.into(), bandwidth: bw, codec: "avc1.42e01f".into(), width: w, height: h };
        let text = multivariant(&[v("media.m3u8", 1_600_000, 852, 480), v("low/media.m3u8", 450_000, 426, 240)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#EXTM3U");
        assert_eq!(lines[3], "#EXT-X-MEDIA:TYPE=VIDEO,GROUP-ID=\"480p\",NAME=\"480p\",AUTOSELECT=YES,DEFAULT=YES");
        assert_eq!(
            lines[4],
            "#EXT-X-STREAM-INF:BANDWIDTH=1600000,CODECS=\"avc1.42e01f,mp4a.40.2\",RESOLUTION=852x480,VIDEO=\"480p\",FRAME-RATE=30.000"
        );
        assert_eq!(lines[5], "media.m3u8");
        assert!(lines[7].contains("BANDWIDTH=450000") && lines[7].contains("RESOLUTION=426x240"));
        assert_eq!(lines[8], "low/media.m3u8");
    }
}
