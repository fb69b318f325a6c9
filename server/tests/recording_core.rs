//! The recorder on a fake clock: segments in, objects out — the playlist
//! while recording and once ended (ended once those objects are written),
//! the reconnect window joining broadcasts on one media timeline with no
//! gap and no discontinuity (a new `EXT-X-MAP` when the init changed) or
//! starting a new recording, thumbnails at the interval, a storage gap;
//! and the directory store's keys.

use anyhow::{ensure, Context, Result};
use stagecast_server::channel::audio;
use stagecast_server::channel::fmp4::{self, AudioParams, Sample, TrackRun, VideoParams, AUDIO_TRACK_ID, VIDEO_TRACK_ID};
use stagecast_server::channel::packager::CompletedSegment;
use stagecast_server::channel::recording::core::{Action, Input, Recorder, RecordingSettings};
use stagecast_server::channel::recording::store::{valid_key, DirStore, RecordingStore};

mod common;

const T0: i64 = 1_700_000_000_000;

fn settings(window: u32, thumbs: Option<u32>) -> RecordingSettings {
    RecordingSettings { recording_reconnect_window_seconds: window, thumbnail_interval_seconds: thumbs }
}

/// An init segment (H.264 + 48 kHz AAC); `width` tells two apart.
fn init(width: u32) -> Vec<u8> {
    let video = VideoParams { sps: common::h264::SPS_320.to_vec(), pps: common::h264::PPS.to_vec(), width, height: 180 };
    fmp4::init_segment(&video, &AudioParams { asc: audio::audio_specific_config(48_000, 2), sample_rate: 48_000, channels: 2 })
}

/// A segment as the packager completes it: `frames` video frames (30 fps,
/// 3000 ticks of 90 kHz each) from video decode time `video_at`, then
/// `aac` audio frames of 1024 samples (48 kHz) from audio decode time
/// `audio_at`, in one fragment.
fn media(msn: u64, init: &[u8], video_at: u64, frames: usize, audio_at: u64, aac: usize, discontinuity: bool) -> CompletedSegment {
    let video: Vec<Sample> =
        (0..frames).map(|i| Sample { duration: 3000, keyframe: i == 0, data: vec![msn as u8; 40] }).collect();
    let audio: Vec<Sample> = (0..aac).map(|_| Sample { duration: 1024, keyframe: true, data: vec![0x21; 8] }).collect();
    let data = fmp4::fragment(
        msn as u32,
        &[
            TrackRun { track_id: VIDEO_TRACK_ID, base_decode_time: video_at, samples: &video },
            TrackRun { track_id: AUDIO_TRACK_ID, base_decode_time: audio_at, samples: &audio },
        ],
    );
    CompletedSegment {
        msn,
        duration: frames as f64 / 30.0,
        data,
        init: init.to_vec(),
        discontinuity,
        pdt_ms: T0 + msn as i64 * 1000,
        keyframe: Some(vec![0, 0, 0, 1, 0x65]),
        width: 320,
        height: 180,
    }
}

/// Segment `msn` of a broadcast whose media starts at decode time 0: one
/// second of video and 47 AAC frames from second `msn`.
fn segment(msn: u64, init: &[u8], discontinuity: bool) -> CompletedSegment {
    media(msn, init, msn * 90_000, 30, msn * 48_000, 47, discontinuity)
}

fn feed(r: &mut Recorder, s: RecordingSettings, seg: CompletedSegment, now: i64) -> Vec<Action> {
    r.handle(Input::Segment { channel: "ch-1".to_owned(), settings: s, segment: seg }, now)
}

fn puts(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Put { key, data, .. } => Some((key.clone(), String::from_utf8_lossy(data).into_owned())),
            _ => None,
        })
        .collect()
}

/// The bytes put for the recording's object `name` (under `media/hls/`).
fn put_data<'a>(actions: &'a [Action], name: &str) -> Option<&'a [u8]> {
    actions.iter().find_map(|a| match a {
        Action::Put { key, data, .. } if key.ends_with(&format!("/{name}")) => Some(data.as_slice()),
        _ => None,
    })
}

/// The decode-time spans (track, start, end in the track's timescale) of
/// the recorded segment `name` put by `actions`.
fn spans(actions: &[Action], name: &str) -> Result<Vec<(u32, u64, u64)>> {
    let data = put_data(actions, name).with_context(|| format!("{name} is put"))?;
    Ok(fmp4::track_spans(data)?.into_iter().map(|s| (s.track_id, s.start, s.end)).collect())
}

/// The `EXTINF` durations of a playlist.
fn extinfs(playlist: &str) -> Vec<f64> {
    playlist.lines().filter_map(|l| l.strip_prefix("#EXTINF:")?.trim_end_matches(',').parse().ok()).collect()
}

fn last_playlist(actions: &[Action]) -> Option<String> {
    puts(actions).into_iter().filter(|(k, _)| k.ends_with("playlist.m3u8")).map(|(_, v)| v).next_back()
}

#[test]
fn a_broadcast_becomes_an_event_playlist_then_a_vod_when_the_window_passes() -> Result<()> {
    let mut r = Recorder::default();
    let s = settings(5, None);
    let first = feed(&mut r, s, segment(100, &init(320), false), T0);
    let keys: Vec<String> = puts(&first).into_iter().map(|(k, _)| k).collect();
    let id = format!("rec-{T0}");
    ensure!(keys[0] == format!("ch-1/{id}/events/recording-started.json"), "{keys:?}");
    ensure!(keys.contains(&format!("ch-1/{id}/media/hls/init0.mp4")) && keys.contains(&format!("ch-1/{id}/media/hls/seg0.m4s")));
    let playlist = last_playlist(&first).context("playlist")?;
    ensure!(playlist.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !playlist.contains("ENDLIST"), "{playlist}");
    ensure!(r.is_recording("ch-1", &id));
    feed(&mut r, s, segment(101, &init(320), false), T0 + 2000);

    // Away: nothing ends before the window closes.
    ensure!(r.handle(Input::Away { channel: "ch-1".to_owned() }, T0 + 2100).is_empty());
    ensure!(r.next_deadline() == Some(T0 + 7100));
    ensure!(r.poll(T0 + 7099).is_empty());
    let ended = r.poll(T0 + 7100);
    let playlist = last_playlist(&ended).context("final playlist")?;
    ensure!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    ensure!(playlist.matches("#EXTINF:1.00000,").count() == 2 && playlist.matches("#EXT-X-MAP").count() == 1, "{playlist}");
    let (_, meta) = puts(&ended).into_iter().find(|(k, _)| k.ends_with("recording-ended.json")).context("ended")?;
    let meta: serde_json::Value = serde_json::from_str(&meta)?;
    ensure!(meta["media"]["hls"]["duration_ms"] == 2000 && meta["recording_status"] == "RECORDING_ENDED", "{meta}");
    // It reads as recording (its playlist may change) until the driver
    // has put those final objects.
    ensure!(ended.last() == Some(&Action::Written { channel: "ch-1".to_owned(), recording: id.clone() }), "{ended:?}");
    ensure!(r.is_recording("ch-1", &id) && r.next_deadline().is_none());
    r.written("ch-1", &id);
    ensure!(!r.is_recording("ch-1", &id));
    Ok(())
}

#[test]
fn a_return_within_the_window_continues_and_a_later_one_starts_anew() -> Result<()> {
    let mut r = Recorder::default();
    let s = settings(5, None);
    feed(&mut r, s, segment(1, &init(320), false), T0);
    r.handle(Input::Away { channel: "ch-1".to_owned() }, T0 + 1000);
    // Back after 4 s with a new broadcast: same init, so no new map, and
    // its media continues the timeline, so no discontinuity either; the
    // wall clock jumped, so a program date-time.
    let back = feed(&mut r, s, segment(50, &init(320), false), T0 + 5000);
    let playlist = last_playlist(&back).context("playlist")?;
    ensure!(!playlist.contains("DISCONTINUITY") && playlist.matches("#EXT-X-MAP").count() == 1, "{playlist}");
    ensure!(playlist.matches("#EXT-X-PROGRAM-DATE-TIME:").count() == 2, "{playlist}");
    ensure!(spans(&back, "seg1.m4s")?[0] == (VIDEO_TRACK_ID, 180_000, 270_000), "on from 2 s: {:?}", spans(&back, "seg1.m4s"));
    // Then with new encoder parameters after a live-side discontinuity: a
    // new map, the timeline still continuous, so still no discontinuity.
    let changed = feed(&mut r, s, segment(51, &init(640), true), T0 + 6000);
    let playlist = last_playlist(&changed).context("playlist")?;
    ensure!(playlist.contains("#EXT-X-MAP:URI=\"init1.mp4\"") && !playlist.contains("DISCONTINUITY"), "{playlist}");
    ensure!(spans(&changed, "seg2.m4s")?[0] == (VIDEO_TRACK_ID, 270_000, 360_000), "{:?}", spans(&changed, "seg2.m4s"));

    // Away longer than the window, then a segment: the old recording ends and a new one starts.
    r.handle(Input::Away { channel: "ch-1".to_owned() }, T0 + 7000);
    let later = feed(&mut r, s, segment(90, &init(640), true), T0 + 13_000);
    let keys: Vec<String> = puts(&later).into_iter().map(|(k, _)| k).collect();
    ensure!(keys.iter().any(|k| k.ends_with("recording-ended.json") && k.contains(&format!("rec-{T0}/"))), "{keys:?}");
    ensure!(keys.iter().any(|k| k.ends_with("recording-started.json") && !k.contains(&format!("rec-{T0}/"))), "{keys:?}");
    let playlist = last_playlist(&later).context("new playlist")?;
    ensure!(!playlist.contains("DISCONTINUITY") && playlist.contains("init0.mp4"), "a fresh recording: {playlist}");
    Ok(())
}

#[test]
fn thumbnails_come_at_the_interval_and_a_gap_continues_the_timeline() -> Result<()> {
    let mut r = Recorder::default();
    let s = settings(0, Some(3));
    let mut thumbs = Vec::new();
    for msn in 0..7 {
        let actions = feed(&mut r, s, segment(msn, &init(320), false), T0 + msn as i64 * 1000);
        thumbs.extend(actions.into_iter().filter_map(|a| match a {
            Action::Thumbnail { key, .. } => Some(key),
            _ => None,
        }));
        if msn == 4 {
            r.handle(Input::Gap { channel: "ch-1".to_owned() }, T0 + 4500);
        }
    }
    ensure!(thumbs.len() == 3 && thumbs[2].ends_with("media/thumbnails/thumb2.jpg"), "at 0, 3 and 6 s: {thumbs:?}");
    // Window 0: ended as soon as the broadcast goes away.
    let ended = r.handle(Input::Away { channel: "ch-1".to_owned() }, T0 + 8000);
    let playlist = last_playlist(&ended).context("final")?;
    ensure!(!playlist.contains("DISCONTINUITY") && playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    ensure!(playlist.matches("#EXT-X-PROGRAM-DATE-TIME:").count() == 2, "dated again after the gap: {playlist}");
    // Forgetting a channel deletes its objects.
    feed(&mut r, s, segment(9, &init(320), false), T0 + 9000);
    let gone = r.handle(Input::Forget { channel: "ch-1".to_owned() }, T0 + 9100);
    ensure!(gone == vec![Action::DeletePrefix { prefix: "ch-1/".to_owned() }], "{gone:?}");
    Ok(())
}

/// A broadcast of three 1 s segments whose audio ends `short` AAC frames
/// before its video (frames still in the transcoder when it stopped),
/// away at `T0 + 3 s`: the recorder waiting within a 30 s window.
fn first_half(short: usize) -> (Recorder, RecordingSettings) {
    let mut r = Recorder::default();
    let s = settings(30, None);
    for msn in 0..3u64 {
        let aac = if msn == 2 { 47 - short } else { 47 };
        feed(&mut r, s, media(msn, &init(320), msn * 90_000, 30, msn * 47 * 1024, aac, false), T0 + msn as i64 * 1000);
    }
    r.handle(Input::Away { channel: "ch-1".to_owned() }, T0 + 3000);
    (r, s)
}

/// Audio ticks (48 kHz) in 90 kHz ticks.
fn audio_in_video_ticks(samples: u64) -> u64 {
    samples * 90_000 / 48_000
}

#[test]
fn a_broadcast_back_within_the_window_continues_the_media_without_a_gap() -> Result<()> {
    // The first broadcast's audio ends 4 AAC frames (85 ms) before its video, at 3 s.
    let (mut r, s) = first_half(4);
    let audio_end = (2 * 47 + 43) * 1024;
    // 8 s later a new broadcast: its own clock starts again near 0, the
    // video at 44 ms and the audio 20 ms after it.
    let mut last = Vec::new();
    for k in 0..3u64 {
        let seg = media(10 + k, &init(320), 3960 + k * 90_000, 30, 3072 + k * 47 * 1024, 47, false);
        last = feed(&mut r, s, seg, T0 + 11_000 + k as i64 * 1000);
        if k == 0 {
            // The track that ended first (audio) goes on exactly where it
            // ended; the video by as much, so it overlaps the old video's end.
            let joined = spans(&last, "seg3.m4s")?;
            let (video, audio) = (joined[0], joined[1]);
            ensure!(audio.0 == AUDIO_TRACK_ID && audio.1 == audio_end, "audio on from {audio_end}: {joined:?}");
            let video_start = audio_in_video_ticks(audio_end) - 1800;
            ensure!(video.0 == VIDEO_TRACK_ID && video.1.abs_diff(video_start) <= 1, "video 20 ms before it: {joined:?}");
            ensure!(video.2 - video.1 == 90_000, "a second of video: {joined:?}");
        }
    }
    r.handle(Input::Away { channel: "ch-1".to_owned() }, T0 + 14_000);
    let ended = r.poll(T0 + 44_000);
    let playlist = last_playlist(&ended).context("final playlist")?;
    ensure!(!playlist.contains("DISCONTINUITY") && playlist.matches("#EXT-X-MAP").count() == 1, "one timeline: {playlist}");
    ensure!(playlist.matches("#EXT-X-PROGRAM-DATE-TIME:").count() == 2, "{playlist}");
    // Every EXTINF is the video the segment adds: the one before the break
    // loses what the new video overlaps.
    let durations = extinfs(&playlist);
    let video_end = spans(&last, "seg5.m4s")?[0].2;
    let overlap = 270_000 - (audio_in_video_ticks(audio_end) - 1800);
    ensure!((durations[2] - (90_000 - overlap) as f64 / 90_000.0).abs() < 1e-4, "{durations:?}");
    ensure!((durations.iter().sum::<f64>() - video_end as f64 / 90_000.0).abs() < 1e-3, "{durations:?} to {video_end}");
    let (_, meta) = puts(&ended).into_iter().find(|(k, _)| k.ends_with("recording-ended.json")).context("ended")?;
    let meta: serde_json::Value = serde_json::from_str(&meta)?;
    ensure!(meta["media"]["hls"]["duration_ms"] == (video_end as f64 / 90.0).round() as u64, "{meta}");
    Ok(())
}

#[test]
fn a_resumed_live_playlist_that_jumped_by_the_time_away_is_recorded_without_the_jump() -> Result<()> {
    // The live packager continued the broadcast: its next segment comes
    // after a discontinuity, 8 s later on the same clock.
    let (mut r, s) = first_half(0);
    let back = media(3, &init(320), 11 * 90_000, 30, 11 * 48_000, 47, true);
    let actions = feed(&mut r, s, back, T0 + 11_000);
    let joined = spans(&actions, "seg3.m4s")?;
    // Both tracks ran to 3 s (the audio 8 ms past): the video goes on exactly.
    ensure!(joined[0] == (VIDEO_TRACK_ID, 270_000, 360_000), "{joined:?}");
    ensure!(joined[1].1 == 3 * 48_000, "the audio back by the same 8 s: {joined:?}");
    let playlist = last_playlist(&actions).context("playlist")?;
    ensure!(!playlist.contains("DISCONTINUITY") && extinfs(&playlist) == vec![1.0; 4], "{playlist}");
    Ok(())
}

#[test]
fn a_segment_whose_decode_times_cannot_be_read_keeps_its_discontinuity() -> Result<()> {
    let (mut r, s) = first_half(0);
    let mut odd = segment(20, &init(320), false);
    odd.data = vec![0xff; 16];
    let actions = feed(&mut r, s, odd, T0 + 11_000);
    let playlist = last_playlist(&actions).context("playlist")?;
    ensure!(playlist.matches("#EXT-X-DISCONTINUITY\n").count() == 1, "{playlist}");
    ensure!(put_data(&actions, "seg3.m4s") == Some(&[0xff; 16][..]), "stored as it came");
    Ok(())
}

#[test]
fn the_directory_store_keeps_objects_by_key_and_refuses_paths_outside_it() -> Result<()> {
    for bad in ["", "/abs", "a/../b", "a//b", "a/./b", "..", "a/b c", "a\\b"] {
        ensure!(!valid_key(bad), "{bad:?} is refused");
    }
    let dir = common::temp_dir("recording-store")?;
    let store = DirStore::new(dir.join("recordings"));
    ensure!(store.put("../escape", b"x").is_err() && !dir.join("escape").exists());
    store.put("ch-1/rec-1/media/hls/seg0.m4s", b"one")?;
    store.put("ch-1/rec-1/media/hls/seg1.m4s", b"two")?;
    store.put("ch-1/rec-2/events/recording-started.json", b"{}")?;
    store.put("ch-10/rec-1/x.json", b"{}")?;
    ensure!(store.get("ch-1/rec-1/media/hls/seg1.m4s")?.as_deref() == Some(&b"two"[..]));
    ensure!(store.get("ch-1/nothing")?.is_none());
    let listed = store.list("ch-1/")?;
    ensure!(listed.len() == 3 && listed.iter().all(|k| k.starts_with("ch-1/")), "{listed:?}");
    ensure!(store.delete_prefix("ch-1/rec-1/")? == 2);
    ensure!(!dir.join("recordings/ch-1/rec-1").exists(), "empty folders go too");
    ensure!(store.list("ch-1/")? == vec!["ch-1/rec-2/events/recording-started.json".to_owned()]);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
