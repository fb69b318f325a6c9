//! The recorder on a fake clock: segments in, objects out — the playlist
//! while recording and once ended, the reconnect window joining broadcasts
//! (a discontinuity, a new `EXT-X-MAP` only when the init changed) or
//! starting a new recording, thumbnails at the interval, a storage gap;
//! and the directory store's keys.

use anyhow::{ensure, Context, Result};
use stagecast_server::channel::packager::CompletedSegment;
use stagecast_server::channel::recording::core::{Action, Input, Recorder, RecordingSettings};
use stagecast_server::channel::recording::store::{valid_key, DirStore, RecordingStore};

mod common;

const T0: i64 = 1_700_000_000_000;

fn settings(window: u32, thumbs: Option<u32>) -> RecordingSettings {
    RecordingSettings { recording_reconnect_window_seconds: window, thumbnail_interval_seconds: thumbs }
}

fn segment(msn: u64, init: &[u8], discontinuity: bool) -> CompletedSegment {
    CompletedSegment {
        msn,
        duration: 1.0,
        data: vec![msn as u8; 8],
        init: init.to_vec(),
        discontinuity,
        pdt_ms: T0 + msn as i64 * 1000,
        keyframe: Some(vec![0, 0, 0, 1, 0x65]),
        width: 320,
        height: 180,
    }
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

fn last_playlist(actions: &[Action]) -> Option<String> {
    puts(actions).into_iter().filter(|(k, _)| k.ends_with("playlist.m3u8")).map(|(_, v)| v).last()
}

#[test]
fn a_broadcast_becomes_an_event_playlist_then_a_vod_when_the_window_passes() -> Result<()> {
    let mut r = Recorder::default();
    let s = settings(5, None);
    let first = feed(&mut r, s, segment(100, b"init-a", false), T0);
    let keys: Vec<String> = puts(&first).into_iter().map(|(k, _)| k).collect();
    let id = format!("rec-{T0}");
    ensure!(keys[0] == format!("ch-1/{id}/events/recording-started.json"), "{keys:?}");
    ensure!(keys.contains(&format!("ch-1/{id}/media/hls/init0.mp4")) && keys.contains(&format!("ch-1/{id}/media/hls/seg0.m4s")));
    let playlist = last_playlist(&first).context("playlist")?;
    ensure!(playlist.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !playlist.contains("ENDLIST"), "{playlist}");
    ensure!(r.is_recording("ch-1", &id));
    feed(&mut r, s, segment(101, b"init-a", false), T0 + 2000);

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
    ensure!(!r.is_recording("ch-1", &id) && r.next_deadline().is_none());
    Ok(())
}

#[test]
fn a_return_within_the_window_continues_and_a_later_one_starts_anew() -> Result<()> {
    let mut r = Recorder::default();
    let s = settings(5, None);
    feed(&mut r, s, segment(1, b"init-a", false), T0);
    r.handle(Input::Away { channel: "ch-1".to_owned() }, T0 + 1000);
    // Back after 4 s with a new broadcast: same init, so no new map.
    let back = feed(&mut r, s, segment(50, b"init-a", false), T0 + 5000);
    let playlist = last_playlist(&back).context("playlist")?;
    ensure!(playlist.matches("#EXT-X-DISCONTINUITY\n").count() == 1 && playlist.matches("#EXT-X-MAP").count() == 1, "{playlist}");
    // Then with new encoder parameters after a live-side discontinuity: a new map.
    let changed = feed(&mut r, s, segment(51, b"init-b", true), T0 + 6000);
    let playlist = last_playlist(&changed).context("playlist")?;
    ensure!(playlist.contains("#EXT-X-MAP:URI=\"init1.mp4\""), "{playlist}");
    ensure!(playlist.matches("#EXT-X-DISCONTINUITY\n").count() == 2, "{playlist}");

    // Away longer than the window, then a segment: the old recording ends and a new one starts.
    r.handle(Input::Away { channel: "ch-1".to_owned() }, T0 + 7000);
    let later = feed(&mut r, s, segment(90, b"init-b", true), T0 + 13_000);
    let keys: Vec<String> = puts(&later).into_iter().map(|(k, _)| k).collect();
    ensure!(keys.iter().any(|k| k.ends_with("recording-ended.json") && k.contains(&format!("rec-{T0}/"))), "{keys:?}");
    ensure!(keys.iter().any(|k| k.ends_with("recording-started.json") && !k.contains(&format!("rec-{T0}/"))), "{keys:?}");
    let playlist = last_playlist(&later).context("new playlist")?;
    ensure!(!playlist.contains("DISCONTINUITY") && playlist.contains("init0.mp4"), "a fresh recording: {playlist}");
    Ok(())
}

#[test]
fn thumbnails_come_at_the_interval_and_a_gap_is_a_discontinuity() -> Result<()> {
    let mut r = Recorder::default();
    let s = settings(0, Some(3));
    let mut thumbs = Vec::new();
    for msn in 0..7 {
        let actions = feed(&mut r, s, segment(msn, b"init", false), T0 + msn as i64 * 1000);
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
    ensure!(playlist.matches("#EXT-X-DISCONTINUITY\n").count() == 1 && playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    // Forgetting a channel deletes its objects.
    feed(&mut r, s, segment(9, b"init", false), T0 + 9000);
    let gone = r.handle(Input::Forget { channel: "ch-1".to_owned() }, T0 + 9100);
    ensure!(gone == vec![Action::DeletePrefix { prefix: "ch-1/".to_owned() }], "{gone:?}");
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
