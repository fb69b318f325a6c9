//! The latency figure: how far the frame on screen is behind the server's
//! clock, from the frame's `EXT-X-PROGRAM-DATE-TIME`. Plain arithmetic and
//! text, so it builds and is tested on the host too.
//!
//! hls.js knows the program date-time of the frame on screen. The IVS
//! Player does not on our streams (its `getSyncTime()` stays 0: it reads
//! IVS's own timestamps), and its position starts at 0 when it plays through
//! Media Source Extensions, so the page maps the player's timeline onto the
//! playlist's itself ([`Timeline`]).

/// Seconds between the frame on screen (its program date-time, Unix ms) and
/// the server's clock now (`now_ms` on this device plus `server_offset_ms`).
/// `None` when the figure cannot be right (a negative or absurd value means
/// the clocks or the timestamps are off, not that the stream is early).
pub fn latency_secs(now_ms: f64, server_offset_ms: f64, pdt_ms: f64) -> Option<f64> {
    let latency = (now_ms + server_offset_ms - pdt_ms) / 1000.0;
    (latency.is_finite() && (0.0..600.0).contains(&latency)).then_some(latency)
}

/// Where a player's timeline (seconds, as the video's `currentTime`) sits in
/// program date-time. Each reading pairs the end of what the player has
/// buffered (read first) with the end of the newest complete segment of a
/// media playlist fetched afterwards ([`complete_edge_ms`]). The IVS Player
/// appends whole segments (measured: even in low-latency mode, reading the
/// segment being built as it grows, its buffer never ran past the newest
/// complete segment), so `edge − buffered end` bounds (date-time − position)
/// from above, and the smallest bound seen is the mapping. It is exact on
/// the first reading taken after the player appended the newest segment,
/// i.e. nearly every reading (measured: within 20 ms of the frames' own
/// capture times, from the first seconds of playback on).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Timeline {
    offset_ms: Option<f64>,
}

impl Timeline {
    /// A reading: the player's buffer ended at `buffered_end` s, and then
    /// the playlist's newest complete segment ended at date-time `edge_ms`.
    pub fn observe(&mut self, buffered_end: f64, edge_ms: f64) {
        if !(buffered_end.is_finite() && buffered_end > 0.0 && edge_ms.is_finite()) {
            return;
        }
        let bound = edge_ms - buffered_end * 1000.0;
        self.offset_ms = Some(self.offset_ms.map_or(bound, |o| o.min(bound)));
    }

    /// The program date-time (Unix ms) of position `position` s, once known.
    pub fn date_time_ms(&self, position: f64) -> Option<f64> {
        self.offset_ms.filter(|_| position.is_finite()).map(|o| o + position * 1000.0)
    }
}

/// The program date-time (Unix ms) at which the newest complete segment of
/// a media playlist ends: the `EXT-X-PROGRAM-DATE-TIME` of the last segment
/// with an `EXTINF` plus that duration (the parts of a segment still being
/// built are not counted). `None` without one.
pub fn complete_edge_ms(playlist: &str) -> Option<f64> {
    let (mut start, mut edge) = (None, None);
    for line in playlist.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            start = date_time_ms(t);
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            let duration = number(d.split(',').next().unwrap_or_default());
            // Segments without a date-time of their own follow on from the last.
            edge = start.or(edge).map(|s| s + duration * 1000.0);
            start = None;
        }
    }
    edge
}

fn number(s: &str) -> f64 {
    s.trim().parse::<f64>().ok().filter(|d| d.is_finite() && *d >= 0.0).unwrap_or(0.0)
}

/// The media playlist to read for `url`: the first variant a multivariant
/// playlist names (resolved against `url`), or `None` when `playlist` is a
/// media playlist itself.
pub fn media_playlist_url(url: &str, playlist: &str) -> Option<String> {
    let mut lines = playlist.lines().map(str::trim);
    if !lines.clone().any(|l| l.starts_with("#EXT-X-STREAM-INF")) {
        return None;
    }
    let uri = lines.find(|l| !l.is_empty() && !l.starts_with('#'))?;
    if uri.contains("://") {
        return Some(uri.to_owned());
    }
    let base = url.split(['?', '#']).next().unwrap_or(url);
    if let Some(path) = uri.strip_prefix('/') {
        // The origin: everything before the first '/' after "scheme://".
        let after_scheme = base.find("://").map_or(0, |i| i + 3);
        let origin_end = base[after_scheme..].find('/').map_or(base.len(), |i| after_scheme + i);
        return Some(format!("{}/{path}", &base[..origin_end]));
    }
    let dir_end = base.rfind('/').map_or(0, |i| i + 1);
    Some(format!("{}{uri}", &base[..dir_end]))
}

/// Unix ms of an RFC 3339 date-time as playlists write it
/// (`2025-03-01T12:00:00.250Z`, or with a `+hh:mm` / `-hh:mm` offset).
pub fn date_time_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let field = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (field(0..4)?, field(5..7)?, field(8..10)?);
    let (hour, minute, second) = (field(11..13)?, field(14..16)?, field(17..19)?);
    let seps = s.as_bytes();
    let at = |i: usize| seps.get(i).copied();
    if at(4) != Some(b'-') || at(7) != Some(b'-') || !matches!(at(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    if at(13) != Some(b':') || at(16) != Some(b':') {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0.0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        millis = format!("0.{}", &frac[..digits]).parse::<f64>().ok()? * 1000.0;
        rest = &frac[digits..];
    }
    let zone_minutes = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |b: &u8| b.is_ascii_digit().then(|| i64::from(b - b'0'));
            let minutes = (digit(h1)? * 10 + digit(h2)?) * 60 + digit(m1)? * 10 + digit(m2)?;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 in the proleptic Gregorian calendar (the
    // era-based count: 400-year eras of 146 097 days, March-based years so
    // the leap day falls last).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - zone_minutes * 60;
    Some(seconds as f64 * 1000.0 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_the_server_clock_minus_the_frame_time() {
        assert_eq!(latency_secs(10_000.0, 500.0, 9_300.0), Some(1.2));
        assert_eq!(latency_secs(10_000.0, -2_000.0, 7_000.0), Some(1.0), "a device clock ahead of the server");
        assert_eq!(latency_secs(10_000.0, 0.0, 11_000.0), None, "a frame from the future: clocks off");
        assert_eq!(latency_secs(10_000.0, 0.0, f64::NAN), None);
    }

    #[test]
    fn date_times_as_playlists_write_them() {
        assert_eq!(date_time_ms("1970-01-01T00:00:00.000Z"), Some(0.0));
        assert_eq!(date_time_ms("2000-03-01T00:00:00Z"), Some(951_868_800_000.0), "after a leap day");
        assert_eq!(date_time_ms("2024-02-29T23:59:59.250Z"), Some(1_709_251_199_250.0));
        assert_eq!(date_time_ms("2025-06-01T12:00:00.5+02:00"), date_time_ms("2025-06-01T10:00:00.500Z"));
        assert_eq!(date_time_ms("2025-06-01T12:00:00-01:30"), date_time_ms("2025-06-01T13:30:00Z"));
        assert_eq!(date_time_ms("1969-12-31T23:59:59Z"), Some(-1000.0));
        for bad in ["", "2025-06-01", "2025-13-01T00:00:00Z", "2025-06-01T00:00:00", "2025-06-01T00:00:00.Z", "2025/06/01T00:00:00Z", "2025-06-01T00:00:00+0200", "20x5-06-01T00:00:00Z"] {
            assert_eq!(date_time_ms(bad), None, "{bad}");
        }
    }

    const MEDIA: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART-INF:PART-TARGET=0.200\n\
        #EXT-X-MAP:URI=\"init0.mp4\"\n\
        #EXT-X-PROGRAM-DATE-TIME:2025-06-01T10:00:00.000Z\n#EXTINF:1.00000,\nseg4.m4s\n\
        #EXT-X-PROGRAM-DATE-TIME:2025-06-01T10:00:01.000Z\n\
        #EXT-X-PART:DURATION=0.20000,URI=\"part5.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=0.20000,URI=\"part5.1.m4s\"\n#EXTINF:1.00000,\nseg5.m4s\n\
        #EXT-X-PROGRAM-DATE-TIME:2025-06-01T10:00:02.000Z\n\
        #EXT-X-PART:DURATION=0.20000,URI=\"part6.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=0.16667,URI=\"part6.1.m4s\"\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part6.2.m4s\"\n#EXT-X-PREFETCH:seg6.m4s\n";

    #[test]
    fn the_edge_is_the_end_of_the_newest_complete_segment() {
        let at = |s| date_time_ms(s).expect("date");
        // Not the parts of seg6, still being built.
        assert_eq!(complete_edge_ms(MEDIA), Some(at("2025-06-01T10:00:02Z")));
        let plain = "#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:2025-06-01T10:00:00Z\n#EXTINF:2.0,\na.ts\n#EXTINF:1.5,\nb.ts\n";
        assert_eq!(complete_edge_ms(plain), Some(at("2025-06-01T10:00:03.500Z")), "one date-time for two segments");
        assert_eq!(complete_edge_ms("#EXTM3U\n#EXTINF:1.0,\nseg0.m4s\n"), None, "no date-time");
        assert_eq!(complete_edge_ms("#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:2025-06-01T10:00:00Z\n#EXT-X-PART:DURATION=0.2,URI=\"p\"\n"), None);
    }

    #[test]
    fn the_media_playlist_of_a_multivariant_one() {
        let multi = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1\"\nmedia.m3u8\n";
        let url = "http://127.0.0.1:8080/hls/ch-1/index.m3u8";
        assert_eq!(media_playlist_url(url, multi).as_deref(), Some("http://127.0.0.1:8080/hls/ch-1/media.m3u8"));
        assert_eq!(
            media_playlist_url("https://h/hls/ch-1/index.m3u8?token=x", multi).as_deref(),
            Some("https://h/hls/ch-1/media.m3u8")
        );
        let rooted = multi.replace("media.m3u8", "/other/low.m3u8");
        assert_eq!(media_playlist_url(url, &rooted).as_deref(), Some("http://127.0.0.1:8080/other/low.m3u8"));
        let absolute = multi.replace("media.m3u8", "https://cdn/x.m3u8");
        assert_eq!(media_playlist_url(url, &absolute).as_deref(), Some("https://cdn/x.m3u8"));
        assert_eq!(media_playlist_url(url, MEDIA), None, "a media playlist is read as it is");
    }

    #[test]
    fn the_timeline_keeps_the_tightest_bound() {
        let mut t = Timeline::default();
        assert_eq!(t.date_time_ms(1.0), None);
        t.observe(0.0, 5_000.0);
        assert_eq!(t.date_time_ms(1.0), None, "nothing buffered yet: no reading");
        // The player was 300 ms short of the edge, then had the newest part.
        t.observe(2.0, 10_300.0);
        t.observe(3.0, 11_000.0);
        t.observe(4.0, 12_200.0);
        assert_eq!(t.date_time_ms(2.5), Some(10_500.0));
        t.observe(f64::NAN, 1.0);
        assert_eq!(t.date_time_ms(2.5), Some(10_500.0), "a broken reading changes nothing");
        assert_eq!(t.date_time_ms(f64::NAN), None);
    }
}
