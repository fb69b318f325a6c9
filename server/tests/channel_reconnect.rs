//! The reconnect window on a fake clock: the broadcast lifecycle's
//! decisions (wait, resume, take over, end) and the packager continuing a
//! playlist across ingest sessions and across a restart (from a saved
//! `Continuity`): media sequence numbers keep growing, a discontinuity
//! before the first new segment, decode times and program date-time going
//! on at the wall-clock gap.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use stagecast_server::channel::audio;
use stagecast_server::channel::fmp4::AudioParams;
use stagecast_server::channel::h264::{to_avcc, AccessUnit};
use stagecast_server::channel::lifecycle::{Admission, Effect, Lifecycle, Phase, SessionEnd, ENDED_GRACE};
use stagecast_server::channel::packager::{Continuity, Packager, PackagerConfig, PartLookup};

mod common;
use common::h264::{PPS, SPS_320, SPS_360};

const WINDOW: Duration = Duration::from_secs(20);
const WALL: i64 = 1_700_000_000_000;

fn audio_params() -> AudioParams {
    AudioParams { asc: audio::audio_specific_config(48_000, 2), sample_rate: 48_000, channels: 2 }
}

fn frame(keyframe: bool, sps: &[u8]) -> AccessUnit {
    let slice: Vec<u8> = if keyframe { vec![0x65, 0x88, 1, 2, 3] } else { vec![0x41, 0x9a, 4, 5] };
    let mut nals: Vec<&[u8]> = Vec::new();
    if keyframe {
        nals.push(sps);
        nals.push(&PPS);
    }
    nals.push(&slice);
    AccessUnit {
        avcc: to_avcc(&nals),
        keyframe,
        sps: keyframe.then(|| sps.to_vec()),
        pps: keyframe.then(|| PPS.to_vec()),
    }
}

/// One ingest session's view: its own clock starting at `pts0`, 30 fps,
/// keyframes when the packager asks (one frame later, like an encoder
/// answering a PLI), audio alongside; wall time advances with the frames.
struct Session {
    pts0: u64,
    wall0: i64,
    sent: u64,
    audio_next: u64,
    key_due: bool,
}

impl Session {
    fn new(pts0: u64, wall0: i64, first_is_key: bool) -> Self {
        Self { pts0, wall0, sent: 0, audio_next: pts0 * 48_000 / 90_000, key_due: first_is_key }
    }

    fn feed(&mut self, p: &mut Packager, frames: u64, sps: &[u8]) {
        for _ in 0..frames {
            let pts = self.pts0 + self.sent * 3000;
            let wall = self.wall0 + (self.sent * 100 / 3) as i64;
            assert_eq!(p.push_video(pts, frame(self.key_due, sps), wall), Ok(()));
            self.key_due = p.wants_keyframe();
            while self.audio_next * 90_000 / 48_000 <= pts {
                p.push_audio(self.audio_next, vec![0x21, 0x10, 0x05]);
                self.audio_next += 1024;
            }
            self.sent += 1;
        }
    }
}

/// (msn, discontinuity before it, PDT ms) of every listed segment or open segment with parts.
fn segments(playlist: &str) -> Result<Vec<(u64, bool, i64)>> {
    let mut out = Vec::new();
    let mut disc = false;
    let mut pdt = None;
    let mut msn: u64 =
        playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).context("media sequence")?.parse()?;
    let mut open = false;
    for line in playlist.lines() {
        if line == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if let Some(t) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(chrono::DateTime::parse_from_rfc3339(t)?.timestamp_millis());
            open = true;
        } else if line.starts_with("seg") {
            ensure!(line == format!("seg{msn}.m4s"), "segment {line} is msn {msn}:\n{playlist}");
            out.push((msn, std::mem::take(&mut disc), pdt.take().context("PDT")?));
            msn += 1;
            open = false;
        }
    }
    if open {
        out.push((msn, disc, pdt.context("PDT")?));
    }
    Ok(out)
}

/// The video track's `tfdt` (base decode time) of a fragment.
fn video_tfdt(fragment: &[u8]) -> Option<u64> {
    let at = fragment.windows(4).position(|w| w == b"tfdt")?;
    let version = *fragment.get(at + 4)?;
    let body = fragment.get(at + 8..)?;
    Some(if version == 1 {
        u64::from_be_bytes(body.get(..8)?.try_into().ok()?)
    } else {
        u64::from(u32::from_be_bytes(body.get(..4)?.try_into().ok()?))
    })
}

fn part(p: &Packager, msn: u64, n: u32) -> Result<Vec<u8>> {
    match p.part(msn, n) {
        PartLookup::Ready(data) => Ok(data),
        other => anyhow::bail!("part {msn}.{n}: {other:?}"),
    }
}

#[test]
fn a_lost_session_waits_for_the_window_then_ends() {
    let t0 = Instant::now();
    let mut l = Lifecycle::live("a".to_owned(), WINDOW, t0);
    let lost = SessionEnd::Lost("ICE disconnected".to_owned());
    assert_eq!(l.session_ended("a", &lost, t0), Some(Effect::Interrupt), "flush, keep the playlist open");
    assert!(l.is_on_air() && l.is_reconnecting());
    assert_eq!(l.admit(t0 + Duration::from_secs(5)), Admission::Resume);
    assert_eq!(l.poll(t0 + WINDOW - Duration::from_millis(1)), None, "still within the window");
    assert_eq!(l.deadline(), Some(t0 + WINDOW));
    assert_eq!(l.poll(t0 + WINDOW), Some(Effect::Finish), "ENDLIST when the window closes");
    assert!(!l.is_on_air());
    assert_eq!(l.admit(t0 + WINDOW), Admission::Fresh, "a later broadcast is a new one");
    assert!(!l.expired(t0 + WINDOW + ENDED_GRACE - Duration::from_millis(1)));
    assert!(l.expired(t0 + WINDOW + ENDED_GRACE), "offline (404) after the grace");
}

#[test]
fn a_resumed_broadcast_is_live_again_and_can_be_lost_again() {
    let t0 = Instant::now();
    let mut l = Lifecycle::live("a".to_owned(), WINDOW, t0);
    l.session_ended("a", &SessionEnd::Lost("media timeout".to_owned()), t0);
    assert_eq!(l.start_session("b".to_owned(), t0 + Duration::from_secs(8)), None, "nothing to flush");
    assert_eq!(l.phase(), &Phase::Live { session: "b".to_owned() });
    assert_eq!(l.poll(t0 + WINDOW * 2), None, "a live broadcast has no deadline");
    assert_eq!(l.session_ended("a", &SessionEnd::Stopped, t0), None, "an old session's end changes nothing");
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(l.session_ended("b", &SessionEnd::Lost("gone".to_owned()), t1), Some(Effect::Interrupt));
    assert_eq!(l.deadline(), Some(t1 + WINDOW), "a fresh window from the second loss");
}

#[test]
fn a_deliberate_stop_ends_at_once() {
    let t0 = Instant::now();
    let mut l = Lifecycle::live("a".to_owned(), WINDOW, t0);
    assert_eq!(l.session_ended("a", &SessionEnd::Stopped, t0), Some(Effect::Finish));
    assert!(!l.is_on_air());
    // Stopping while waiting for the broadcaster ends too.
    let mut l = Lifecycle::live("a".to_owned(), WINDOW, t0);
    l.session_ended("a", &SessionEnd::Lost("gone".to_owned()), t0);
    assert_eq!(l.stop(t0 + Duration::from_secs(1)), Some(Effect::Finish));
    assert_eq!(l.stop(t0 + Duration::from_secs(2)), None, "once");
    // No window: a loss ends the broadcast as before.
    let mut l = Lifecycle::live("a".to_owned(), Duration::ZERO, t0);
    assert_eq!(l.session_ended("a", &SessionEnd::Lost("gone".to_owned()), t0), Some(Effect::Finish));
}

#[test]
fn a_silent_live_session_is_taken_over_but_a_healthy_one_is_not() {
    let t0 = Instant::now();
    let mut l = Lifecycle::live("a".to_owned(), WINDOW, t0);
    l.on_media(t0 + Duration::from_secs(3));
    assert_eq!(l.admit(t0 + Duration::from_millis(3500)), Admission::Refuse, "media 0.5 s ago: a second broadcaster");
    let later = t0 + Duration::from_millis(4000);
    assert_eq!(l.admit(later), Admission::TakeOver { old: "a".to_owned() }, "silent for 1 s: the broadcaster is back");
    assert_eq!(
        l.start_session("b".to_owned(), later),
        Some(Effect::Interrupt),
        "the old session's media is flushed first"
    );
    assert_eq!(l.session_ended("a", &SessionEnd::Replaced, later), None, "the replaced session's end is ignored");
    assert_eq!(l.current_session(), Some("b"));
    // A session still connecting (no media yet) gets longer before a retry replaces it.
    let l = Lifecycle::live("c".to_owned(), WINDOW, t0);
    assert_eq!(l.admit(t0 + Duration::from_secs(2)), Admission::Refuse, "still connecting");
    assert!(matches!(l.admit(t0 + Duration::from_secs(5)), Admission::TakeOver { .. }), "given up on");
}

#[test]
fn an_interrupted_playlist_stays_open_and_continues_after_a_discontinuity() -> Result<()> {
    let mut p = Packager::new(PackagerConfig { first_msn: 500, ..PackagerConfig::default() }, audio_params());
    let mut first = Session::new(0, WALL, true);
    first.feed(&mut p, 30 * 3 + 10, &SPS_320);
    p.interrupt();
    ensure!(p.is_interrupted());
    let waiting = p.media_playlist();
    let last_before = segments(&waiting)?.last().context("segments")?.0;
    ensure!(!waiting.contains("#EXT-X-ENDLIST"), "no ENDLIST while waiting:\n{waiting}");
    ensure!(!waiting.contains("#EXT-X-PRELOAD-HINT"), "no part is on its way:\n{waiting}");
    ensure!(waiting.contains(&format!("seg{last_before}.m4s")), "the open segment was completed:\n{waiting}");
    ensure!(p.part(last_before + 1, 0) == PartLookup::Upcoming, "the next segment's first part is awaited");

    // 8 s later a new session, on its own clock from 0, opens with a delta frame.
    let gap_ms = 8000;
    let end_wall = WALL + (first.sent * 100 / 3) as i64;
    let mut second = Session::new(0, end_wall + gap_ms, false);
    second.feed(&mut p, 1, &SPS_320);
    ensure!(p.wants_keyframe() || second.key_due, "a delta frame is dropped and a keyframe asked for");
    second.key_due = true;
    second.feed(&mut p, 30 * 2, &SPS_320);
    ensure!(!p.is_interrupted());

    let text = p.media_playlist();
    let after = segments(&text)?;
    let resumed = after.iter().find(|s| s.1).context(format!("a DISCONTINUITY:\n{text}"))?;
    ensure!(resumed.0 == last_before + 1, "numbering goes on: {} after {last_before}\n{text}", resumed.0);
    ensure!(text.matches("#EXT-X-DISCONTINUITY\n").count() == 1, "one discontinuity:\n{text}");
    ensure!(!text.contains("init1.mp4"), "same parameters, same init:\n{text}");
    let wall_of_key = end_wall + gap_ms + 33;
    ensure!((resumed.2 - wall_of_key).abs() <= 34, "PDT {} is the new session's wall clock {wall_of_key}", resumed.2);
    let last_old = after.iter().rfind(|s| s.0 < resumed.0).context("old segment")?;
    ensure!(resumed.2 - last_old.2 >= gap_ms, "PDT jumps by the time away");

    // Decode times go on at the wall-clock gap, not back to the new session's zero.
    let old_tfdt = video_tfdt(&part(&p, last_old.0, 0)?).context("tfdt")?;
    let new_tfdt = video_tfdt(&part(&p, resumed.0, 0)?).context("tfdt")?;
    let expected = old_tfdt + ((resumed.2 - last_old.2) as u64) * 90;
    ensure!(new_tfdt.abs_diff(expected) <= 3000, "tfdt {new_tfdt} ≈ {expected} (old {old_tfdt})");
    Ok(())
}

#[test]
fn new_parameters_after_a_resume_get_a_new_init() -> Result<()> {
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    let mut first = Session::new(0, WALL, true);
    first.feed(&mut p, 45, &SPS_320);
    p.interrupt();
    let mut second = Session::new(90_000 * 1000, WALL + 10_000, true);
    second.feed(&mut p, 45, &SPS_360);
    let text = p.media_playlist();
    let disc = text.find("#EXT-X-DISCONTINUITY\n").context(format!("discontinuity:\n{text}"))?;
    let map = text.find("#EXT-X-MAP:URI=\"init1.mp4?v=").context(format!("new init:\n{text}"))?;
    ensure!(disc < map, "DISCONTINUITY then the new MAP:\n{text}");
    ensure!(text.matches("#EXT-X-DISCONTINUITY\n").count() == 1, "one discontinuity for one resume:\n{text}");
    Ok(())
}

#[test]
fn a_restarted_packager_continues_numbering_from_the_saved_continuity() -> Result<()> {
    let config = PackagerConfig { first_msn: 9_000, window_segments: 3, ..PackagerConfig::default() };
    let mut p = Packager::new(config.clone(), audio_params());
    let mut first = Session::new(0, WALL, true);
    first.feed(&mut p, 30 * 4, &SPS_320);
    let saved = p.continuity().context("continuity once segments exist")?;
    // What a viewer saw last: every segment and part below next_msn.
    let seen = segments(&p.media_playlist())?;
    ensure!(seen.iter().all(|s| s.0 < saved.next_msn), "next_msn {} is past what was listed", saved.next_msn);
    // It survives being stored as JSON.
    let json = serde_json::to_string(&saved)?;
    let restored: Continuity = serde_json::from_str(&json)?;
    ensure!(restored == saved);

    // The process dies; a new one resumes from the saved state, 5 s later.
    let mut q = Packager::resume(config, audio_params(), &restored);
    ensure!(q.is_interrupted() && !q.has_media(), "waiting for the broadcaster");
    ensure!(q.continuity() == Some(restored.clone()), "a second restart before the re-ingest keeps the same state");
    let mut second = Session::new(0, saved.anchor_wall_ms + 5000, true);
    second.feed(&mut q, 30 * 2, &SPS_320);
    let text = q.media_playlist();
    ensure!(text.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{}", saved.next_msn)), "numbering goes on:\n{text}");
    ensure!(text.starts_with("#EXTM3U") && text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    ensure!(
        text.contains(&format!("#EXT-X-MAP:URI=\"init{}.mp4?v=", saved.init_version + 1)),
        "a fresh init URI:\n{text}"
    );
    ensure!(q.init_version(saved.init_version + 1).is_some());
    let resumed = segments(&text)?;
    ensure!(resumed.first().is_some_and(|s| s.1 && s.2 >= saved.anchor_wall_ms + 5000), "{resumed:?}");
    let first_tfdt = video_tfdt(&part(&q, saved.next_msn, 0)?).context("tfdt")?;
    ensure!(
        first_tfdt >= saved.anchor_pts + 5 * 90_000,
        "decode time {first_tfdt} after the saved anchor {}",
        saved.anchor_pts
    );

    // The discontinuity sequence: once the tagged segment leaves the window, it is counted.
    second.feed(&mut q, 30 * 6, &SPS_320);
    let text = q.media_playlist();
    ensure!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    let expected = saved.discontinuity_sequence + 1;
    ensure!(text.contains(&format!("#EXT-X-DISCONTINUITY-SEQUENCE:{expected}")), "sequence {expected}:\n{text}");
    let again = q.continuity().context("continuity")?;
    ensure!(again.discontinuity_sequence == expected && again.next_msn > saved.next_msn, "{again:?}");
    Ok(())
}

#[test]
fn audio_of_a_resumed_session_lands_on_the_new_timeline() -> Result<()> {
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    let mut first = Session::new(0, WALL, true);
    first.feed(&mut p, 60, &SPS_320);
    p.interrupt();
    let mut second = Session::new(0, WALL + 2000 + 3000, true);
    second.feed(&mut p, 60, &SPS_320);
    let text = p.media_playlist();
    let resumed = segments(&text)?.into_iter().find(|s| s.1).context("resumed segment")?;
    let data = part(&p, resumed.0, 1)?;
    // Two trafs: video then audio; the audio one has samples (a trun with a non-zero count).
    let truns: Vec<usize> = data.windows(4).enumerate().filter(|(_, w)| *w == b"trun").map(|(i, _)| i).collect();
    ensure!(truns.len() == 2, "video and audio runs");
    let audio_count = u32::from_be_bytes(data[truns[1] + 8..truns[1] + 12].try_into()?);
    ensure!(audio_count > 0, "the resumed session's audio is packaged");
    Ok(())
}
