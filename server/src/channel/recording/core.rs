//! The sans-IO recorder: complete segments of a channel's broadcasts in,
//! the objects of its recordings out (IVS auto-record to S3 is the model).
//!
//! A recording starts with the first segment of a broadcast of a channel
//! that records. Every later segment is appended to it (the bytes the live
//! packager served, never re-encoded) and the playlist is written again.
//! When the broadcast is interrupted or ends ([`Input::Away`]), the
//! recording waits [`RecordingSettings::reconnect_window`]: a segment
//! within it continues the same recording (after a new `EXT-X-MAP` if the
//! init segment changed); once it passes, the playlist gets `EXT-X-ENDLIST`
//! and `recording-ended.json` is written, and a later broadcast starts a new
//! recording.
//!
//! The recording's media runs on one timeline. A broadcast that comes back
//! is a new ingest session whose timestamps start again near 0 (or jump by
//! the time it was away, when the live playlist itself continued), and its
//! audio need not end where its video does (frames still in the
//! transcoder when a session ends are lost). So after every break (a
//! broadcast back within the window, a live-side discontinuity, dropped
//! segments) the recorded copy's decode times are moved so that the new
//! media starts where the recorded media ended, audio and video by the same
//! amount (they stay in sync), and early enough that no track has a gap:
//! the track that ended first continues exactly, the other may overlap by
//! as much as it ran on (a player drops what is overlapped; the `EXTINF` of
//! the segment before the break is shortened by that much, so every
//! `EXTINF` is the video the segment adds to the timeline). A gap would
//! split the buffered ranges, and the IVS Player does not play across one:
//! it stalls and then reports the end.
//!
//! With the timeline continuous, a break gets no `EXT-X-DISCONTINUITY`
//! (only an `EXT-X-PROGRAM-DATE-TIME`, since the wall clock jumped, and a new
//! `EXT-X-MAP` if the encoder's parameters changed): the media is one
//! sequence of timestamps, so HLS does not require the tag, and players do
//! worse with it: the IVS Player re-places the media after a discontinuity
//! itself (a gap again), and hls.js lost the page on a discontinuity whose
//! media overlaps what came before. Only a segment whose decode times cannot
//! be read or moved (its timestamps do jump) comes after a discontinuity.
//!
//! Every object of a recording lives under `{channel}/{recording}/`:
//! `events/recording-started.json`, `events/recording-ended.json`,
//! `media/hls/playlist.m3u8`, `media/hls/init{n}.mp4`, `media/hls/seg{n}.m4s`,
//! `media/thumbnails/thumb{n}.jpg`. Nothing here reads a clock: every call
//! takes the wall clock (Unix ms).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::super::fmp4::{self, Shift, TrackSpan, VIDEO_TIMESCALE, VIDEO_TRACK_ID};
use super::super::packager::CompletedSegment;

/// Longest reconnect window (IVS: 300 s).
pub const MAX_RECONNECT_WINDOW_SECS: u32 = 300;
/// Thumbnail interval bounds (IVS: 1–60 s).
pub const THUMBNAIL_INTERVAL_SECS: std::ops::RangeInclusive<u32> = 1..=60;
/// At a break, the most video (90 kHz ticks: 1 s) the new media may
/// overlap so that another track has no gap; a track that ended earlier
/// than that before the video keeps its gap (it had it live too).
const MAX_OVERLAP_TICKS: i64 = VIDEO_TIMESCALE as i64;

/// How a channel records (the fields of an IVS recording configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingSettings {
    /// A broadcast that resumes within this many seconds continues the
    /// same recording (0–300).
    pub recording_reconnect_window_seconds: u32,
    /// A JPEG every this many seconds of media; `None`: no thumbnails.
    pub thumbnail_interval_seconds: Option<u32>,
}

/// What the recorder is told.
#[derive(Debug)]
pub enum Input {
    /// A complete segment of a broadcast of `channel`, which records so.
    Segment { channel: String, settings: RecordingSettings, segment: CompletedSegment },
    /// The broadcast of `channel` was interrupted or ended.
    Away { channel: String },
    /// Segments of `channel` were dropped (storage fell behind): the next
    /// one follows a gap.
    Gap { channel: String },
    /// `channel` was deleted: forget its recording (its objects are deleted).
    Forget { channel: String },
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Put { key: String, data: Vec<u8>, content: Content },
    /// Decode `keyframe` (AVCC) and put it as a JPEG at `key`, if the
    /// decoder is free.
    Thumbnail { key: String, keyframe: Vec<u8> },
    /// Delete every object under `prefix` (after the puts before it).
    DeletePrefix { prefix: String },
    /// The objects of an ended recording are all put (once the actions
    /// before it are done): call [`Recorder::written`].
    Written { channel: String, recording: String },
}

/// What a put object is (how the playback route serves it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Playlist,
    Init,
    Segment,
    Metadata,
}

struct Entry {
    uri: String,
    duration: f64,
    /// `EXT-X-DISCONTINUITY` before it.
    discontinuity: bool,
    /// First after a break: `EXT-X-PROGRAM-DATE-TIME` before it.
    after_break: bool,
    /// `EXT-X-MAP` before it (the first segment, and after an init change).
    map: Option<String>,
    pdt_ms: i64,
}

/// One recording being written.
struct Active {
    id: String,
    channel: String,
    settings: RecordingSettings,
    started_ms: i64,
    entries: Vec<Entry>,
    init: Vec<u8>,
    inits: u32,
    media_secs: f64,
    next_thumbnail_secs: f64,
    thumbnails: u32,
    /// Interrupted since (wall ms): the reconnect window runs.
    away_since: Option<i64>,
    /// The next segment follows a break in the media.
    discontinuity_next: bool,
    size: (u32, u32),
    /// Where the recorded video ends on the recording's timeline, once
    /// a segment's decode times were read.
    timeline: Option<Timeline>,
}

/// The recording's media timeline.
#[derive(Debug, Clone)]
struct Timeline {
    /// Where each track's recorded media ends: (track id, decode time in
    /// 90 kHz ticks).
    ends: Vec<(u32, i128)>,
    /// What moves the current broadcast's decode times onto the
    /// recording's timeline (90 kHz ticks).
    shift: i64,
}

impl Timeline {
    fn end(&self, track: u32) -> Option<i128> {
        self.ends.iter().find(|(t, _)| *t == track).map(|(_, e)| *e)
    }
}

/// Where a segment went on the recording's timeline.
struct Placed {
    /// Seconds of video it adds.
    duration: f64,
    /// Seconds of recorded video its start overlaps.
    overlap: f64,
    /// Its media continues the recorded media (false: it could not be
    /// moved after a break).
    continuous: bool,
}

/// The recorder of every channel.
#[derive(Default)]
pub struct Recorder {
    active: HashMap<String, Active>,
    /// Ended recordings whose last objects (the VOD playlist, the ended
    /// metadata) are still being put: (channel, recording).
    ending: Vec<(String, String)>,
}

/// `{channel}/{recording}/`: the prefix every object of a recording has.
pub fn prefix(channel: &str, recording: &str) -> String {
    format!("{channel}/{recording}/")
}

pub const STARTED: &str = "events/recording-started.json";
pub const ENDED: &str = "events/recording-ended.json";
pub const PLAYLIST: &str = "media/hls/playlist.m3u8";
pub const THUMBNAILS: &str = "media/thumbnails/";

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl Recorder {
    /// Whether `channel` has a recording in progress (`recording` names it).
    /// It stays so until its final objects are written ([`Action::Written`]):
    /// until then its playlist may still change.
    pub fn is_recording(&self, channel: &str, recording: &str) -> bool {
        self.active.get(channel).is_some_and(|a| a.id == recording)
            || self.ending.iter().any(|(c, r)| c == channel && r == recording)
    }

    /// The driver has done everything before [`Action::Written`].
    pub fn written(&mut self, channel: &str, recording: &str) {
        self.ending.retain(|(c, r)| !(c == channel && r == recording));
    }

    /// End `a`: its final puts, then [`Action::Written`].
    fn finish(&mut self, a: Active, now_ms: i64, out: &mut Vec<Action>) {
        let (channel, recording) = (a.channel.clone(), a.id.clone());
        a.finish(now_ms, out);
        self.ending.push((channel.clone(), recording.clone()));
        out.push(Action::Written { channel, recording });
    }

    /// When [`Recorder::poll`] has something to do next (wall ms).
    pub fn next_deadline(&self) -> Option<i64> {
        self.active.values().filter_map(Active::deadline).min()
    }

    pub fn handle(&mut self, input: Input, now_ms: i64) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Segment { channel, settings, segment } => {
                if self.active.get(&channel).is_some_and(|a| a.deadline().is_some_and(|d| now_ms > d)) {
                    if let Some(a) = self.active.remove(&channel) {
                        self.finish(a, now_ms, &mut out);
                    }
                }
                let active = self.active.entry(channel.clone()).or_insert_with(|| {
                    let a = Active::start(channel, settings, segment.pdt_ms.min(now_ms));
                    out.push(a.put(STARTED, a.metadata(None), Content::Metadata));
                    a
                });
                active.append(segment, &mut out);
            }
            Input::Away { channel } => {
                if let Some(a) = self.active.get_mut(&channel) {
                    a.away_since.get_or_insert(now_ms);
                    a.discontinuity_next = true;
                }
            }
            Input::Gap { channel } => {
                if let Some(a) = self.active.get_mut(&channel) {
                    a.discontinuity_next = true;
                }
            }
            Input::Forget { channel } => {
                self.active.remove(&channel);
                self.ending.retain(|(c, _)| *c != channel);
                out.push(Action::DeletePrefix { prefix: format!("{channel}/") });
            }
        }
        out.extend(self.poll(now_ms));
        out
    }

    /// Finish every recording whose reconnect window has passed.
    pub fn poll(&mut self, now_ms: i64) -> Vec<Action> {
        let mut out = Vec::new();
        let due: Vec<String> =
            self.active.iter().filter(|(_, a)| a.deadline().is_some_and(|d| now_ms >= d)).map(|(c, _)| c.clone()).collect();
        for channel in due {
            if let Some(a) = self.active.remove(&channel) {
                self.finish(a, now_ms, &mut out);
            }
        }
        out
    }
}

impl Active {
    fn start(channel: String, settings: RecordingSettings, started_ms: i64) -> Self {
        tracing::info!(channel = %channel, "recording started");
        Self {
            id: format!("rec-{started_ms}"),
            channel,
            settings,
            started_ms,
            entries: Vec::new(),
            init: Vec::new(),
            inits: 0,
            media_secs: 0.0,
            next_thumbnail_secs: 0.0,
            thumbnails: 0,
            away_since: None,
            discontinuity_next: false,
            size: (0, 0),
            timeline: None,
        }
    }

    fn deadline(&self) -> Option<i64> {
        let window = i64::from(self.settings.recording_reconnect_window_seconds) * 1000;
        self.away_since.map(|t| t.saturating_add(window))
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", prefix(&self.channel, &self.id))
    }

    fn put(&self, name: &str, data: Vec<u8>, content: Content) -> Action {
        Action::Put { key: self.key(name), data, content }
    }

    fn append(&mut self, segment: CompletedSegment, out: &mut Vec<Action>) {
        self.away_since = None;
        let map = (segment.init != self.init || self.entries.is_empty()).then(|| {
            let name = format!("init{}.mp4", self.inits);
            self.inits += 1;
            self.init = segment.init.clone();
            out.push(self.put(&format!("media/hls/{name}"), segment.init.clone(), Content::Init));
            name
        });
        let index = self.entries.len();
        let uri = format!("seg{index}.m4s");
        let after_break = !self.entries.is_empty() && (std::mem::take(&mut self.discontinuity_next) || segment.discontinuity);
        self.discontinuity_next = false;
        let mut data = segment.data;
        let placed = self.place(&mut data, &segment.init, after_break);
        if let (Some(placed), Some(last)) = (&placed, self.entries.last_mut()) {
            let cut = placed.overlap.min(last.duration);
            last.duration -= cut;
            self.media_secs -= cut;
        }
        let duration = placed.as_ref().map_or(segment.duration, |p| p.duration);
        let discontinuity = !self.entries.is_empty()
            && match &placed {
                Some(p) => !p.continuous,
                None => after_break || map.is_some(),
            };
        out.push(self.put(&format!("media/hls/{uri}"), data, Content::Segment));
        if let (Some(every), Some(keyframe)) = (self.settings.thumbnail_interval_seconds, segment.keyframe) {
            if self.media_secs >= self.next_thumbnail_secs {
                let key = self.key(&format!("{THUMBNAILS}thumb{}.jpg", self.thumbnails));
                self.thumbnails += 1;
                self.next_thumbnail_secs = self.media_secs + f64::from(every.max(1));
                out.push(Action::Thumbnail { key, keyframe });
            }
        }
        self.size = (segment.width, segment.height);
        self.media_secs += duration;
        self.entries.push(Entry { uri, duration, discontinuity, after_break, map, pdt_ms: segment.pdt_ms });
        out.push(self.put(PLAYLIST, self.playlist(false).into_bytes(), Content::Playlist));
    }

    /// Put segment `data` (media of `init`) on the recording's timeline
    /// (see the module docs). `None`: its decode times cannot be read, and
    /// it is left as it came.
    fn place(&mut self, data: &mut [u8], init: &[u8], after_break: bool) -> Option<Placed> {
        let read = fmp4::track_spans(data).and_then(|spans| Ok((spans, fmp4::timescales(init)?)));
        let (spans, timescales) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(channel = %self.channel, recording = %self.id, error = %e, "a segment's decode times cannot be read");
                return None;
            }
        };
        // Each track's start and end in 90 kHz ticks.
        let spans: Vec<(u32, i128, i128)> = spans
            .iter()
            .filter_map(|s: &TrackSpan| {
                let timescale = timescales.iter().find(|(t, _)| *t == s.track_id).map(|(_, ts)| *ts)?;
                let at = |v: u64| Shift { ticks: i64::try_from(v).unwrap_or(i64::MAX), timescale }.in_timescale(VIDEO_TIMESCALE);
                Some((s.track_id, i128::from(at(s.start)), i128::from(at(s.end))))
            })
            .collect();
        let (_, video_start, video_end) = *spans.iter().find(|s| s.0 == VIDEO_TRACK_ID)?;
        let (shift, continuous) = match &self.timeline {
            Some(t) if after_break => {
                // Each track would continue exactly with its own shift; the
                // smallest leaves no track a gap.
                let video_own = t.end(VIDEO_TRACK_ID).map_or(0, |end| end - video_start);
                let own = |&(track, start, _): &(u32, i128, i128)| Some(t.end(track)? - start);
                let least = spans.iter().filter_map(own).min().unwrap_or(video_own);
                let shift = least.max(video_own - i128::from(MAX_OVERLAP_TICKS));
                (i64::try_from(shift).unwrap_or(0), true)
            }
            Some(t) => (t.shift, true),
            // The first segment: the recording's timeline is its broadcast's.
            None => (0, !after_break),
        };
        let moved = shift == 0 || {
            let moving = fmp4::shift_decode_times(data, init, Shift { ticks: shift, timescale: VIDEO_TIMESCALE });
            if let Err(e) = &moving {
                tracing::warn!(channel = %self.channel, recording = %self.id, error = %e, "a segment cannot be moved onto the recording's timeline");
            }
            moving.is_ok()
        };
        let shift = if moved { shift } else { 0 };
        let overlap = match &self.timeline {
            Some(t) if after_break && moved => t.end(VIDEO_TRACK_ID).map_or(0, |end| end - (video_start + i128::from(shift))),
            _ => 0,
        };
        let mut timeline = self.timeline.take().unwrap_or(Timeline { ends: Vec::new(), shift });
        timeline.shift = shift;
        for &(track, _, end) in &spans {
            timeline.ends.retain(|(t, _)| *t != track);
            timeline.ends.push((track, end + i128::from(shift)));
        }
        self.timeline = Some(timeline);
        let seconds = |t: i128| t.max(0) as f64 / f64::from(VIDEO_TIMESCALE);
        Some(Placed { duration: seconds(video_end - video_start), overlap: seconds(overlap), continuous: continuous && moved })
    }

    fn finish(self, now_ms: i64, out: &mut Vec<Action>) {
        tracing::info!(channel = %self.channel, recording = %self.id, seconds = self.media_secs, "recording ended");
        out.push(self.put(PLAYLIST, self.playlist(true).into_bytes(), Content::Playlist));
        let ended = self.away_since.unwrap_or(now_ms);
        out.push(self.put(ENDED, self.metadata(Some(ended)), Content::Metadata));
    }

    /// The HLS playlist: `EVENT` while recording, `VOD` with `EXT-X-ENDLIST` once ended.
    fn playlist(&self, ended: bool) -> String {
        let longest = self.entries.iter().map(|e| e.duration).fold(0.0, f64::max);
        let mut out = String::with_capacity(64 * self.entries.len() + 256);
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:7");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", (longest.ceil() as u64).max(1));
        let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:{}", if ended { "VOD" } else { "EVENT" });
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:0");
        let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
        for e in &self.entries {
            if e.discontinuity {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            if let Some(map) = &e.map {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{map}\"");
            }
            if e.after_break || e.map.is_some() {
                let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso(e.pdt_ms));
            }
            let _ = writeln!(out, "#EXTINF:{:.5},", e.duration);
            let _ = writeln!(out, "{}", e.uri);
        }
        if ended {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
        }
        out
    }

    /// `recording-started.json` (`ended`: `None`) or `recording-ended.json`,
    /// in IVS's shape plus our ids.
    fn metadata(&self, ended: Option<i64>) -> Vec<u8> {
        let mut hls = serde_json::json!({
            "path": "media/hls",
            "playlist": "playlist.m3u8",
            "renditions": [{
                "path": "",
                "playlist": "playlist.m3u8",
                "resolution_width": self.size.0,
                "resolution_height": self.size.1,
            }],
        });
        let thumbnails = match self.settings.thumbnail_interval_seconds {
            Some(every) => serde_json::json!({
                "path": "media/thumbnails",
                "recording_mode": "INTERVAL",
                "target_interval_seconds": every,
                "renditions": [{"path": "", "resolution_width": self.size.0, "resolution_height": self.size.1}],
            }),
            None => serde_json::json!({"recording_mode": "DISABLED"}),
        };
        let mut doc = serde_json::json!({
            "version": "v1",
            "channel_arn": super::super::channel_arn(&self.channel),
            "channel_id": self.channel,
            "recording_id": self.id,
            "recording_started_at": iso(self.started_ms),
            "recording_status": if ended.is_some() { "RECORDING_ENDED" } else { "RECORDING_STARTED" },
            "recording_reconnect_window_seconds": self.settings.recording_reconnect_window_seconds,
            "media": {"hls": {}, "thumbnails": thumbnails},
        });
        if let Some(ended) = ended {
            let duration_ms = (self.media_secs * 1000.0).round() as u64;
            hls["duration_ms"] = duration_ms.into();
            doc["recording_ended_at"] = iso(ended).into();
            doc["media"]["hls"] = hls;
        } else {
            doc["media"]["hls"] = serde_json::json!({"path": "media/hls", "playlist": "playlist.m3u8"});
        }
        serde_json::to_vec_pretty(&doc).unwrap_or_default()
    }
}

/// A recording left in progress by a previous run (its `recording-started.json`
/// and playlist, no `recording-ended.json`): the playlist as a VOD with
/// `EXT-X-ENDLIST` and the `recording-ended.json` to write, ending it at
/// its last segment. `None` if the metadata does not parse.
pub fn close_orphan(started: &[u8], playlist: &str) -> Option<(String, Vec<u8>)> {
    let mut doc: serde_json::Value = serde_json::from_slice(started).ok()?;
    let start = doc.get("recording_started_at")?.as_str()?;
    let start_ms = chrono::DateTime::parse_from_rfc3339(start).ok()?.timestamp_millis();
    let seconds = super::http::playlist_seconds(playlist);
    let mut vod = playlist.replace("#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-PLAYLIST-TYPE:VOD");
    if !vod.contains("#EXT-X-ENDLIST") {
        vod.push_str("#EXT-X-ENDLIST\n");
    }
    // Without a better clock, the end is where the media ends.
    let last_pdt = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
        .next_back();
    let ended = last_pdt.unwrap_or(start_ms).max(start_ms.saturating_add((seconds * 1000.0) as i64));
    doc["recording_status"] = "RECORDING_ENDED".into();
    doc["recording_ended_at"] = iso(ended).into();
    doc["media"]["hls"]["duration_ms"] = ((seconds * 1000.0).round() as u64).into();
    Some((vod, serde_json::to_vec_pretty(&doc).unwrap_or_default()))
}
