//! The LL-HLS packager fed synthetic H.264 / AAC samples: parts, segments,
//! playlist tags, sliding window, blocking-reload readiness, and (when
//! ffmpeg is installed) output that ffprobe reads as H.264 + AAC.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use stagecast_server::channel::audio::{self, OpusToAac};
use stagecast_server::channel::fmp4::AudioParams;
use stagecast_server::channel::h264::AccessUnit;
use stagecast_server::channel::packager::{Packager, PackagerConfig, PartLookup, Readiness};

mod common;
use common::h264::{PPS, SPS_320 as SPS, SPS_360};


fn audio_params() -> AudioParams {
    AudioParams { asc: audio::audio_specific_config(48_000, 2), sample_rate: 48_000, channels: 2 }
}

fn frame(keyframe: bool) -> AccessUnit {
    let slice: Vec<u8> = if keyframe { vec![0x65, 0x88, 1, 2, 3] } else { vec![0x41, 0x9a, 4, 5] };
    let mut nals: Vec<&[u8]> = Vec::new();
    if keyframe {
        nals.push(&SPS);
        nals.push(&PPS);
    }
    nals.push(&slice);
    AccessUnit {
        avcc: stagecast_server::channel::h264::to_avcc(&nals),
        keyframe,
        sps: keyframe.then(|| SPS.to_vec()),
        pps: keyframe.then(|| PPS.to_vec()),
    }
}

/// Feed `seconds` of 30 fps video (keyframes only when the packager asks,
/// one frame later, like a browser encoder answering a PLI) and AAC frames.
fn feed(p: &mut Packager, from_frame: u64, frames: u64, audio_next: &mut u64) {
    let mut key_due = from_frame == 0;
    for n in from_frame..from_frame + frames {
        let pts = n * 3000;
        assert_eq!(p.push_video(pts, frame(key_due), 1_700_000_000_000), Ok(()));
        key_due = p.wants_keyframe();
        // Audio up to this video time.
        while *audio_next * 90_000 / 48_000 <= pts {
            p.push_audio(*audio_next, vec![0x21, 0x10, 0x05]);
            *audio_next += 1024;
        }
    }
}

struct Parsed {
    media_sequence: u64,
    parts: Vec<(f64, String, bool)>,
    segments: Vec<(f64, String)>,
    preload_hint: Option<String>,
    ended: bool,
}

fn parse(playlist: &str) -> Result<Parsed> {
    let mut out = Parsed { media_sequence: 0, parts: Vec::new(), segments: Vec::new(), preload_hint: None, ended: false };
    let mut extinf = None;
    for line in playlist.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            out.media_sequence = v.parse()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            let duration: f64 = v
                .split(',')
                .find_map(|kv| kv.strip_prefix("DURATION="))
                .context("part duration")?
                .parse()?;
            let uri = v.split("URI=\"").nth(1).and_then(|r| r.split('"').next()).context("part uri")?;
            out.parts.push((duration, uri.to_owned(), v.contains("INDEPENDENT=YES")));
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(v.trim_end_matches(',').parse::<f64>()?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            out.preload_hint = v.split("URI=\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned);
        } else if line == "#EXT-X-ENDLIST" {
            out.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            out.segments.push((extinf.take().context("EXTINF before URI")?, line.to_owned()));
        }
    }
    Ok(out)
}

#[test]
fn playlist_has_the_ll_hls_tags_parts_and_segments() -> Result<()> {
    let mut p = Packager::new(PackagerConfig { first_msn: 100, ..PackagerConfig::default() }, audio_params());
    assert!(p.wants_keyframe(), "a new packager asks for a keyframe");
    let mut audio_next = 0;
    feed(&mut p, 0, 30 * 5, &mut audio_next);
    let text = p.media_playlist();
    for tag in [
        "#EXTM3U",
        "#EXT-X-VERSION:9",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600",
        "#EXT-X-PART-INF:PART-TARGET=0.200",
        "#EXT-X-MAP:URI=\"init.mp4?v=",
        "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z",
    ] {
        ensure!(text.contains(tag), "missing {tag} in\n{text}");
    }
    let parsed = parse(&text)?;
    ensure!(parsed.media_sequence == 100, "media sequence starts at first_msn");
    ensure!((4..=5).contains(&parsed.segments.len()), "5 s of 1 s segments: {text}");
    for (d, uri) in &parsed.segments {
        ensure!((1.0..=2.0).contains(d), "segment {uri} lasts {d}");
    }
    for (d, uri, _) in &parsed.parts {
        ensure!(*d <= 0.200 + 1e-6 && *d > 0.0, "part {uri} lasts {d}");
    }
    // Every segment starts with an independent part.
    for (_, uri, independent) in &parsed.parts {
        if uri.ends_with(".0.m4s") {
            ensure!(*independent, "first part {uri} is INDEPENDENT");
        }
    }
    // Parts of a complete segment add up to it, and its bytes are its parts'.
    let (dur, seg_uri) = parsed.segments.last().context("a segment")?;
    let msn: u64 = seg_uri.trim_start_matches("seg").trim_end_matches(".m4s").parse()?;
    let prefix = format!("part{msn}.");
    let part_sum: f64 = parsed.parts.iter().filter(|(_, u, _)| u.starts_with(&prefix)).map(|(d, _, _)| d).sum();
    ensure!((part_sum - dur).abs() < 1e-3, "parts {part_sum} vs segment {dur}");
    let mut concatenated = Vec::new();
    for (_, uri, _) in parsed.parts.iter().filter(|(_, u, _)| u.starts_with(&prefix)) {
        let (m, n) = uri.trim_start_matches("part").trim_end_matches(".m4s").split_once('.').context("part name")?;
        match p.part(m.parse()?, n.parse()?) {
            PartLookup::Ready(data) => concatenated.extend(data),
            other => anyhow::bail!("part {uri} not ready: {other:?}"),
        }
    }
    ensure!(p.segment(msn) == Some(concatenated), "segment = its parts");
    // Preload hint names the next part of the open segment, which is "upcoming".
    let hint = parsed.preload_hint.context("preload hint while live")?;
    let (m, n) = hint.trim_start_matches("part").trim_end_matches(".m4s").split_once('.').context("hint name")?;
    ensure!(p.part(m.parse()?, n.parse()?) == PartLookup::Upcoming, "hint {hint} is upcoming");

    let init = p.init_segment().context("init segment")?;
    ensure!(&init[4..8] == b"ftyp", "init starts with ftyp");
    ensure!(p.multivariant_playlist().contains("CODECS=\"avc1.42c00d,mp4a.40.2\",RESOLUTION=320x180"));

    p.finish();
    let ended = parse(&p.media_playlist())?;
    ensure!(ended.ended && ended.preload_hint.is_none(), "ENDLIST and no hint after finish");
    Ok(())
}

#[test]
fn sliding_window_drops_old_segments_and_advances_media_sequence() -> Result<()> {
    let config = PackagerConfig { window_segments: 4, retain: Duration::from_millis(3500), ..PackagerConfig::default() };
    let mut p = Packager::new(config, audio_params());
    let mut audio_next = 0;
    feed(&mut p, 0, 30 * 12, &mut audio_next);
    let parsed = parse(&p.media_playlist())?;
    ensure!(parsed.segments.len() == 4, "window of 4: {:?}", parsed.segments);
    let first: u64 = parsed.segments[0].1.trim_start_matches("seg").trim_end_matches(".m4s").parse()?;
    ensure!(parsed.media_sequence == first, "MEDIA-SEQUENCE = first listed segment");
    ensure!(first >= 6, "old segments dropped (first is {first})");
    ensure!(p.segment(0).is_none(), "segments dropped longer ago than `retain` are gone");
    // The three before the window are still served whole (a late fetch, the
    // IVS Player's bandwidth probe), from the segment request too.
    for msn in first - 3..first {
        let data = p.segment(msn).with_context(|| format!("seg{msn} kept after leaving the window"))?;
        let chunk = p.segment_from(msn, 0).context("served as a complete segment")?;
        ensure!(chunk.complete && chunk.data == data && !data.is_empty(), "seg{msn} whole and complete");
    }
    ensure!(p.segment(first - 4).is_none(), "no more than `retain` of media is kept: {}", first - 4);
    // Parts are listed only for the newest segments.
    let oldest_prefix = format!("part{first}.");
    ensure!(!parsed.parts.iter().any(|(_, u, _)| u.starts_with(&oldest_prefix)), "old parts not listed");
    Ok(())
}

#[test]
fn blocking_reload_waits_for_the_asked_part_and_rejects_far_futures() -> Result<()> {
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    let mut audio_next = 0;
    ensure!(p.playlist_ready(0, None) == Readiness::Wait, "nothing yet");
    feed(&mut p, 0, 45, &mut audio_next); // 1.5 s
    let parsed = parse(&p.media_playlist())?;
    let hint = parsed.preload_hint.context("hint")?;
    let (m, n) = hint.trim_start_matches("part").trim_end_matches(".m4s").split_once('.').context("hint")?;
    let (msn, part): (u64, u32) = (m.parse()?, n.parse()?);
    ensure!(p.playlist_ready(msn, Some(part)) == Readiness::Wait, "the hinted part is not there yet");
    ensure!(p.playlist_ready(msn, None) == Readiness::Wait, "the open segment is not complete");
    ensure!(p.playlist_ready(msn - 1, None) == Readiness::Ready, "the previous segment is complete");
    ensure!(p.playlist_ready(msn, Some(part.saturating_sub(1))) == Readiness::Ready, "an existing part");
    ensure!(p.playlist_ready(msn + 3, None) == Readiness::BadRequest, "more than two segments ahead");
    // Feed until the hinted part exists (about one part duration on a fake clock).
    let before = p.version();
    feed(&mut p, 45, 9, &mut audio_next);
    ensure!(p.version() > before, "version bumps so waiters wake");
    ensure!(p.playlist_ready(msn, Some(part)) == Readiness::Ready, "the hinted part arrived");
    ensure!(p.config().blocking_timeout().as_secs() == 6, "held at most 3 target durations");
    p.finish();
    ensure!(p.playlist_ready(msn + 2, None) == Readiness::Ready, "an ended stream answers at once");
    Ok(())
}

#[test]
fn metadata_goes_into_the_next_part_as_an_id3_emsg() -> Result<()> {
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    let mut audio_next = 0;
    feed(&mut p, 0, 15, &mut audio_next);
    p.put_metadata("{\"question\":\"hello\"}".to_owned());
    feed(&mut p, 15, 15, &mut audio_next);
    let parsed = parse(&p.media_playlist())?;
    let mut found = false;
    for (_, uri, _) in &parsed.parts {
        let (m, n) = uri.trim_start_matches("part").trim_end_matches(".m4s").split_once('.').context("part")?;
        if let PartLookup::Ready(data) = p.part(m.parse()?, n.parse()?) {
            if &data[4..8] == b"emsg" {
                // Two emsg boxes lead the part: version 1 in the AOM scheme
                // (hls.js), then version 0 in `urn:twitch:id3` (IVS Player).
                let mut boxes = Vec::new();
                let mut at = 0;
                while at + 8 <= data.len() && &data[at + 4..at + 8] == b"emsg" {
                    let size = u32::from_be_bytes(data[at..at + 4].try_into()?) as usize;
                    ensure!(size > 12 && at + size <= data.len(), "emsg size");
                    boxes.push((data[at + 8], String::from_utf8_lossy(&data[at..at + size]).into_owned()));
                    at += size;
                }
                ensure!(&data[at + 4..at + 8] == b"moof", "the fragment follows the emsg boxes");
                ensure!(boxes.len() == 2, "two emsg boxes, got {}", boxes.len());
                ensure!(boxes[0].0 == 1 && boxes[0].1.contains("https://aomedia.org/emsg/ID3"), "AOM scheme, v1");
                ensure!(boxes[1].0 == 0 && boxes[1].1.contains("urn:twitch:id3"), "twitch scheme, v0");
                for (_, text) in &boxes {
                    ensure!(text.contains("ID3") && text.contains("TXXX") && text.contains("hello"), "ID3 TXXX payload");
                }
                found = true;
            }
        }
    }
    ensure!(found, "one part starts with an emsg");
    Ok(())
}

#[test]
fn real_h264_and_transcoded_audio_package_into_what_ffprobe_reads() -> Result<()> {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("SKIPPED: ffmpeg is not on PATH (cargo xtask setup installs it)");
        return Ok(());
    }
    let dir = tempfile_dir()?;
    let h264_path = dir.join("in.h264");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=30"])
        .args(["-t", "4", "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "30"])
        .args(["-bsf:v", "h264_mp4toannexb", "-f", "h264"])
        .arg(&h264_path)
        .status()?;
    ensure!(status.success(), "ffmpeg made the test stream");
    let aus = common::access_units(&std::fs::read(&h264_path)?);
    ensure!(aus.len() == 120, "120 frames, got {}", aus.len());

    let mut transcoder = OpusToAac::new()?;
    let mut opus = opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio)?;
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    let mut opus_pts = 0u64;
    for (n, au) in aus.iter().enumerate() {
        let pts = n as u64 * 3000;
        let unit = stagecast_server::channel::h264::access_unit_from_annex_b(au).context("access unit")?;
        p.push_video(pts, unit, 0)?;
        while opus_pts * 90_000 / 48_000 <= pts {
            let pcm: Vec<i16> = (0..960 * 2)
                .map(|i| {
                    let t = (opus_pts + i as u64 / 2) as f64 / 48_000.0;
                    ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            let packet = opus.encode_vec(&pcm, 4000)?;
            for (apts, frame) in transcoder.push(opus_pts, &packet)? {
                p.push_audio(apts, frame);
            }
            opus_pts += 960;
        }
    }
    p.finish();
    let parsed = parse(&p.media_playlist())?;
    let mut file = p.init_segment().context("init")?.to_vec();
    for (_, uri) in &parsed.segments {
        let msn: u64 = uri.trim_start_matches("seg").trim_end_matches(".m4s").parse()?;
        file.extend(p.segment(msn).context("segment")?);
    }
    let mp4 = dir.join("out.mp4");
    std::fs::write(&mp4, &file)?;
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width,height,sample_rate,channels", "-show_entries"])
        .args(["format=duration", "-of", "default=noprint_wrappers=1"])
        .arg(&mp4)
        .output()?;
    let out = String::from_utf8_lossy(&probe.stdout);
    ensure!(probe.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&probe.stderr));
    ensure!(out.contains("codec_name=h264") && out.contains("codec_name=aac"), "streams: {out}");
    ensure!(out.contains("width=320") && out.contains("height=180"), "size: {out}");
    let duration: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .context("duration")?
        .parse()?;
    ensure!((3.5..=4.5).contains(&duration), "duration {duration}");
    // Decoding every frame must not error.
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&mp4)
        .args(["-f", "null", "-"])
        .output()?;
    ensure!(decode.status.success() && decode.stderr.is_empty(), "decode: {}", String::from_utf8_lossy(&decode.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("stagecast-hls-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[test]
fn jittery_frame_timing_keeps_parts_within_the_part_target() -> Result<()> {
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    // Canvas capture: 30 fps on average, frames 20–50 ms apart.
    let gaps = [33u64, 20, 47, 33, 25, 41, 33, 50, 22, 36];
    let mut pts = 0u64;
    let mut key_due = true;
    for n in 0..300 {
        p.push_video(pts, frame(key_due), 0)?;
        key_due = p.wants_keyframe();
        pts += gaps[n % gaps.len()] * 90;
    }
    let parsed = parse(&p.media_playlist())?;
    ensure!(!parsed.parts.is_empty());
    for (d, uri, _) in &parsed.parts {
        ensure!(*d <= 0.200 + 1e-6, "part {uri} lasts {d}");
    }
    for (d, uri) in &parsed.segments {
        ensure!((1.0..=2.0).contains(d), "segment {uri} lasts {d}");
    }
    Ok(())
}

#[test]
fn a_resolution_change_starts_a_new_segment_with_a_new_init_after_a_discontinuity() -> Result<()> {
    let config = PackagerConfig { window_segments: 3, ..PackagerConfig::default() };
    let mut p = Packager::new(config, audio_params());
    let mut audio_next = 0;
    feed(&mut p, 0, 45, &mut audio_next);
    // The encoder switches to 640x360 with a keyframe mid-segment.
    let slice = [0x65u8, 0x88, 9, 9];
    let nals: Vec<&[u8]> = vec![&SPS_360, &PPS, &slice];
    let au = AccessUnit {
        avcc: stagecast_server::channel::h264::to_avcc(&nals),
        keyframe: true,
        sps: Some(SPS_360.to_vec()),
        pps: Some(PPS.to_vec()),
    };
    p.push_video(45 * 3000, au, 0)?;
    let mut n = 46;
    let mut key_due = false;
    while n < 46 + 30 {
        let mut f = frame(key_due);
        if key_due {
            f = AccessUnit {
                avcc: stagecast_server::channel::h264::to_avcc(&nals),
                keyframe: true,
                sps: Some(SPS_360.to_vec()),
                pps: Some(PPS.to_vec()),
            };
        }
        p.push_video(n * 3000, f, 0)?;
        key_due = p.wants_keyframe();
        n += 1;
    }
    let text = p.media_playlist();
    ensure!(text.matches("#EXT-X-DISCONTINUITY\n").count() == 1, "one discontinuity:\n{text}");
    let map_new = text.find("#EXT-X-MAP:URI=\"init1.mp4?v=").context("new MAP")?;
    let disc = text.find("#EXT-X-DISCONTINUITY\n").context("discontinuity")?;
    ensure!(disc < map_new, "DISCONTINUITY, then the new MAP:\n{text}");
    ensure!(p.init_version(1).is_some() && p.init_version(0).is_some(), "both inits while both are in the window");
    ensure!(p.multivariant_playlist().contains("RESOLUTION=640x360"));
    // Once the old segments leave the window, the discontinuity is counted.
    let mut key_due = false;
    for n in n..n + 30 * 6 {
        let f = if key_due {
            AccessUnit {
                avcc: stagecast_server::channel::h264::to_avcc(&nals),
                keyframe: true,
                sps: Some(SPS_360.to_vec()),
                pps: Some(PPS.to_vec()),
            }
        } else {
            frame(false)
        };
        p.push_video(n * 3000, f, 0)?;
        key_due = p.wants_keyframe();
    }
    let text = p.media_playlist();
    ensure!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1") && !text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    ensure!(text.contains("#EXT-X-MAP:URI=\"init1.mp4?v=") && !text.contains("init.mp4"), "{text}");
    ensure!(p.init_version(0).is_none(), "the old init is released");
    Ok(())
}

#[test]
fn the_open_segment_is_prefetchable_and_streams_part_by_part() -> Result<()> {
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    let mut audio_next = 0;
    feed(&mut p, 0, 45, &mut audio_next); // 1.5 s: one complete segment, one open
    let text = p.media_playlist();
    let parsed = parse(&text)?;
    let open: u64 = parsed.segments.last().context("a segment")?.1.trim_start_matches("seg").trim_end_matches(".m4s").parse::<u64>()? + 1;
    let prefetch: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("#EXT-X-PREFETCH:")).collect();
    ensure!(prefetch == [format!("seg{open}.m4s")], "the open segment is prefetched:\n{text}");
    ensure!(text.trim_end().ends_with(&format!("#EXT-X-PREFETCH:seg{open}.m4s")), "after everything else:\n{text}");

    // A prefetch reader gets the parts so far, then each new one, then the end.
    let first = p.segment_from(open, 0).context("the open segment")?;
    ensure!(!first.complete && first.next_part > 0 && !first.data.is_empty(), "parts so far");
    ensure!(p.segment_from(open + 1, 0).is_some_and(|c| c.data.is_empty() && !c.complete), "the next one: wait");
    ensure!(p.segment_from(open + 2, 0).is_none(), "further ahead: no such segment");
    let mut streamed = first.data.clone();
    let mut next = first.next_part;
    let mut n = 45;
    loop {
        feed(&mut p, n, 1, &mut audio_next);
        n += 1;
        let chunk = p.segment_from(open, next).context("still there")?;
        streamed.extend(&chunk.data);
        next = chunk.next_part;
        if chunk.complete {
            break;
        }
        ensure!(n < 200, "the segment completes");
    }
    ensure!(p.segment(open) == Some(streamed), "the streamed bytes are the complete segment");
    ensure!(!p.media_playlist().contains(&format!("#EXT-X-PREFETCH:seg{open}.m4s")), "complete: listed, not prefetched");

    // No prefetch while the open segment follows a discontinuity, nor while the broadcaster is away.
    p.interrupt();
    ensure!(!p.media_playlist().contains("#EXT-X-PREFETCH"), "nothing to prefetch while away");
    ensure!(p.segment_from(p.continuity().context("c")?.next_msn, 0).is_none(), "nothing upcoming while away");
    feed(&mut p, 1000, 10, &mut audio_next);
    let text = p.media_playlist();
    ensure!(text.contains("#EXT-X-DISCONTINUITY") && !text.contains("#EXT-X-PREFETCH"), "not right after a discontinuity:\n{text}");
    feed(&mut p, 1010, 45, &mut audio_next);
    ensure!(p.media_playlist().contains("#EXT-X-PREFETCH"), "again once the first segment after it is complete");
    p.finish();
    ensure!(!p.media_playlist().contains("#EXT-X-PREFETCH"), "none after the end");
    Ok(())
}
