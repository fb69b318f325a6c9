//! What a broadcaster's media does to the packager, the fMP4 writer and the
//! Opus → AAC transcoder when its timestamps, sizes and payloads are
//! hostile: the playlist stays valid (media sequence only grows, parts and
//! segments have sane durations and can be fetched, date-times never go
//! back), memory per segment is capped, and no input panics. The decode
//! times a recording reads and moves round-trip on any fragment, and no
//! bytes make the reader panic.
//! `cargo xtask fuzz fuzz_media --seconds N` runs the properties longer.

use proptest::prelude::*;
use stagecast_server::channel::audio::{self, OpusToAac};
use stagecast_server::channel::fmp4::{self, AudioParams, Sample, TrackRun};
use stagecast_server::channel::h264::{to_avcc, AccessUnit};
use stagecast_server::channel::packager::{
    Packager, PackagerConfig, PackagerError, PartLookup, MAX_SEGMENT_BYTES, MAX_SEGMENT_FRAMES,
};
use stagecast_testkit::{check, ensure, proptest};

mod common;
use common::h264::{PPS, SPS_320, SPS_360};


fn audio_params() -> AudioParams {
    AudioParams { asc: audio::audio_specific_config(48_000, 2), sample_rate: 48_000, channels: 2 }
}

/// Which SPS a keyframe carries.
#[derive(Debug, Clone)]
enum Params {
    None,
    Small,
    Large,
    Broken(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Input {
    /// Video `step` ticks after the previous video frame.
    Video { step: i64, keyframe: bool, size: usize, params: Params },
    /// AAC frame `step` samples after the previous one.
    Audio { step: i64 },
    Metadata,
}

fn frame(keyframe: bool, size: usize, params: &Params) -> AccessUnit {
    let mut slice = vec![if keyframe { 0x65 } else { 0x41 }, 0x88];
    slice.resize(size.max(2), 0xab);
    let sps: Option<Vec<u8>> = match params {
        Params::None => None,
        Params::Small => Some(SPS_320.to_vec()),
        Params::Large => Some(SPS_360.to_vec()),
        Params::Broken(bytes) => Some([&[0x67][..], bytes].concat()),
    };
    let mut nals: Vec<&[u8]> = Vec::new();
    if let Some(sps) = &sps {
        nals.push(sps);
        nals.push(&PPS);
    }
    nals.push(&slice);
    AccessUnit { avcc: to_avcc(&nals), keyframe, sps: sps.clone(), pps: sps.map(|_| PPS.to_vec()) }
}

fn input_strategy() -> impl Strategy<Value = Input> {
    let step = prop_oneof![
        8 => 1500i64..4500,              // 20–50 fps jitter
        1 => Just(0i64),                 // duplicate
        1 => -3000i64..0,                // reordered
        1 => prop_oneof![Just(-90_000_000i64), Just(90_000_000), Just(i64::MAX), Just(i64::MIN)], // jumps
        1 => 90_000i64..400_000,         // a stall of 1–4 s
    ];
    let params = prop_oneof![
        4 => Just(Params::Small),
        1 => Just(Params::None),
        1 => Just(Params::Large),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Params::Broken),
    ];
    prop_oneof![
        6 => (step, prop::bool::weighted(0.1), 0usize..3000, params)
            .prop_map(|(step, keyframe, size, params)| Input::Video { step, keyframe, size, params }),
        3 => prop_oneof![8 => Just(1024i64), 1 => -5000i64..100_000].prop_map(|step| Input::Audio { step }),
        1 => Just(Input::Metadata),
    ]
}

/// What one playlist says, and the checks that need the packager.
#[derive(Debug, Default)]
struct Seen {
    media_sequence: u64,
    discontinuity_sequence: u64,
    /// The date-time each segment was listed with: it must never change.
    pdt_ms: std::collections::BTreeMap<u64, i64>,
}

fn check_playlist(p: &Packager, previous: &mut Seen) -> Result<(), TestCaseError> {
    let text = p.media_playlist();
    let target: f64 = field(&text, "#EXT-X-TARGETDURATION:").unwrap_or(0.0);
    let media_sequence = field(&text, "#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0.0) as u64;
    let discontinuity_sequence = field(&text, "#EXT-X-DISCONTINUITY-SEQUENCE:").unwrap_or(0.0) as u64;
    ensure(media_sequence >= previous.media_sequence, || format!("media sequence went back:\n{text}"))?;
    ensure(discontinuity_sequence >= previous.discontinuity_sequence, || format!("discontinuity sequence went back:\n{text}"))?;
    let mut msn = media_sequence;
    let mut last_pdt = i64::MIN;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-PART:DURATION=") {
            let d: f64 = v.split(',').next().and_then(|d| d.parse().ok()).unwrap_or(-1.0);
            ensure(d >= 0.0 && d.is_finite(), || format!("part duration {d}:\n{text}"))?;
            let uri = v.split("URI=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default();
            let (m, n) = uri.trim_start_matches("part").trim_end_matches(".m4s").split_once('.').unwrap_or_default();
            let (m, n): (u64, u32) = (m.parse().unwrap_or(0), n.parse().unwrap_or(u32::MAX));
            ensure(m == msn, || format!("part of segment {m} listed under {msn}:\n{text}"))?;
            match p.part(m, n) {
                PartLookup::Ready(data) => boxes_tile(&data)?,
                other => return Err(TestCaseError::fail(format!("listed part {uri} is {other:?}"))),
            }
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d: f64 = v.trim_end_matches(',').parse().unwrap_or(-1.0);
            ensure(d >= 0.0 && d <= 2.0 * target, || format!("segment of {d} s (target {target}):\n{text}"))?;
        } else if let Some(seg) = line.strip_prefix("seg").and_then(|s| s.strip_suffix(".m4s")) {
            ensure(seg.parse::<u64>().ok() == Some(msn), || format!("segment {seg} where {msn} was due:\n{text}"))?;
            ensure(p.segment(msn).is_some(), || format!("listed segment {msn} is missing"))?;
            msn += 1;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            let t = chrono::DateTime::parse_from_rfc3339(v).map_err(|e| TestCaseError::fail(format!("{v}: {e}")))?;
            let ms = t.timestamp_millis();
            ensure(ms >= last_pdt, || format!("date-time went back at {v}:\n{text}"))?;
            let first = *previous.pdt_ms.entry(msn).or_insert(ms);
            ensure(first == ms, || format!("segment {msn} moved from {first} to {ms} ms:\n{text}"))?;
            last_pdt = ms;
        } else if let Some(uri) = line.strip_prefix("#EXT-X-MAP:URI=\"").and_then(|u| u.strip_suffix('"')) {
            let (file, tag) = uri.split_once("?v=").unwrap_or((uri, ""));
            let v = file.trim_start_matches("init").trim_end_matches(".mp4");
            let version = if v.is_empty() { 0 } else { v.parse().unwrap_or(u32::MAX) };
            let init = p.init_version(version);
            ensure(init.is_some(), || format!("{uri} is listed but missing"))?;
            // The URL names these bytes and no others (it is cached as immutable).
            ensure(init.is_some_and(|i| Packager::init_tag(i) == tag), || format!("{uri} does not tag its bytes"))?;
        }
    }
    previous.media_sequence = media_sequence;
    previous.discontinuity_sequence = discontinuity_sequence;
    Ok(())
}

fn field(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.parse().ok())
}

/// ISO BMFF boxes that exactly tile `data`.
fn boxes_tile(data: &[u8]) -> Result<(), TestCaseError> {
    let mut rest = data;
    while let Some((size, _)) = rest.split_first_chunk::<4>() {
        let size = u32::from_be_bytes(*size) as usize;
        ensure(size >= 8 && size <= rest.len(), || format!("box of {size} bytes with {} left", rest.len()))?;
        rest = rest.get(size..).unwrap_or_default();
    }
    ensure(rest.is_empty(), || format!("{} stray bytes", rest.len()))
}

#[test]
fn hostile_timestamps_and_sizes_keep_the_playlist_valid() {
    let start = prop_oneof![Just(0u64), Just(1u64 << 40), Just(u64::MAX - 1_000_000)];
    let inputs = prop::collection::vec(input_strategy(), 1..160);
    check("packager playlist", 96, (start, inputs), |(start, inputs)| {
        let config = PackagerConfig { window_segments: 4, segments_with_parts: 2, ..PackagerConfig::default() };
        let mut p = Packager::new(config, audio_params());
        let (mut video_pts, mut audio_pts) = (start, start / 90_000 * 48_000);
        let mut seen = Seen::default();
        for (i, input) in inputs.into_iter().enumerate() {
            match input {
                Input::Video { step, keyframe, size, params } => {
                    video_pts = video_pts.saturating_add_signed(step);
                    match p.push_video(video_pts, frame(keyframe, size, &params), 1_700_000_000_000) {
                        Ok(()) | Err(PackagerError::BadSps(_)) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
                    }
                    let _ = p.wants_keyframe();
                }
                Input::Audio { step } => {
                    audio_pts = audio_pts.saturating_add_signed(step);
                    p.push_audio(audio_pts, vec![0x21, 0x10, 0x05]);
                }
                Input::Metadata => p.put_metadata(format!("cue {i}")),
            }
            if i % 8 == 0 {
                check_playlist(&p, &mut seen)?;
            }
        }
        check_playlist(&p, &mut seen)?;
        p.finish();
        check_playlist(&p, &mut seen)?;
        ensure(p.media_playlist().contains("#EXT-X-ENDLIST"), || "no ENDLIST after finish".to_owned())
    });
}

#[test]
fn a_broken_sps_drops_frames_until_the_next_good_keyframe() {
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    for n in 0..40u64 {
        let params = if n == 0 { Params::Small } else { Params::None };
        assert_eq!(p.push_video(n * 3000, frame(n % 30 == 0, 100, &params), 0), Ok(()));
    }
    let bad = Params::Broken(vec![0x42, 0xc0, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x01]);
    assert!(matches!(p.push_video(40 * 3000, frame(true, 100, &bad), 0), Err(PackagerError::BadSps(_))));
    assert!(p.wants_keyframe(), "a refused keyframe asks for another");
    let parts_before = p.media_playlist().matches("#EXT-X-PART:").count();
    for n in 41..60u64 {
        assert_eq!(p.push_video(n * 3000, frame(false, 100, &Params::None), 0), Ok(()));
    }
    assert_eq!(p.media_playlist().matches("#EXT-X-PART:").count(), parts_before, "P-frames after it are held back");
    assert_eq!(p.push_video(60 * 3000, frame(true, 100, &Params::Small), 0), Ok(()));
    for n in 61..80u64 {
        assert_eq!(p.push_video(n * 3000, frame(false, 100, &Params::None), 0), Ok(()));
    }
    assert!(p.media_playlist().matches("#EXT-X-PART:").count() > parts_before, "the stream goes on after a good keyframe");
}

#[test]
fn huge_frames_are_refused_and_a_segment_holds_a_bounded_amount() {
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    let huge = frame(true, stagecast_server::channel::h264::MAX_ACCESS_UNIT_BYTES + 1, &Params::Small);
    assert!(matches!(p.push_video(0, huge, 0), Err(PackagerError::FrameTooLarge { .. })));
    // 1 MiB frames at 30 fps: each segment stops taking frames at its cap.
    let mut refused = 0;
    for n in 0..120u64 {
        match p.push_video(n * 3000, frame(n % 30 == 0, 1 << 20, &Params::Small), 0) {
            Ok(()) => {}
            Err(PackagerError::SegmentFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused > 0, "the segment cap was reached");
    p.finish();
    let playlist = p.media_playlist();
    for msn in playlist.lines().filter_map(|l| l.strip_prefix("seg")?.strip_suffix(".m4s")?.parse::<u64>().ok()) {
        let bytes = p.segment(msn).map_or(0, |s| s.len());
        assert!(bytes <= MAX_SEGMENT_BYTES + 64 * 1024, "segment {msn} holds {bytes} bytes");
    }
    // Tiny frames one tick apart: the frame cap, not the byte cap. The first
    // frame past it is refused; the rest wait for a keyframe.
    let mut p = Packager::new(PackagerConfig::default(), audio_params());
    let mut results = Vec::new();
    for n in 0..(MAX_SEGMENT_FRAMES as u64 + 50) {
        results.push(p.push_video(n, frame(n == 0, 10, &Params::Small), 0));
        if n == 0 {
            let _ = p.wants_keyframe();
        }
    }
    assert_eq!(results.iter().position(Result::is_err), Some(MAX_SEGMENT_FRAMES), "frame {MAX_SEGMENT_FRAMES} is the first refused");
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    assert!(p.wants_keyframe(), "and the packager asks for a keyframe");
}

/// Parse the `trun` sample sizes of a fragment and the `mdat` payload.
fn fragment_samples(data: &[u8]) -> Option<(Vec<Vec<u32>>, Vec<u8>)> {
    fn children(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        let mut rest = data;
        while let Some((size, tail)) = rest.split_first_chunk::<4>() {
            let size = u32::from_be_bytes(*size) as usize;
            let (Some(kind), Some(body)) = (tail.first_chunk::<4>(), rest.get(8..size)) else { break };
            out.push((*kind, body));
            rest = rest.get(size..).unwrap_or_default();
        }
        out
    }
    let top = children(data);
    let moof = top.iter().find(|(k, _)| k == b"moof")?.1;
    let mdat = top.iter().find(|(k, _)| k == b"mdat")?.1.to_vec();
    let mut runs = Vec::new();
    for (kind, traf) in children(moof) {
        if &kind != b"traf" {
            continue;
        }
        let trun = children(traf).into_iter().find(|(k, _)| k == b"trun")?.1;
        let count = u32::from_be_bytes(*trun.get(4..8)?.first_chunk::<4>()?) as usize;
        let mut sizes = Vec::new();
        for i in 0..count {
            let at = 12 + i * 12 + 4;
            sizes.push(u32::from_be_bytes(*trun.get(at..at + 4)?.first_chunk::<4>()?));
        }
        runs.push(sizes);
    }
    Some((runs, mdat))
}

#[test]
fn fragments_round_trip_their_samples() {
    let sample = (any::<u32>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(duration, keyframe, data)| Sample { duration, keyframe, data });
    let tracks = (prop::collection::vec(sample.clone(), 0..12), prop::collection::vec(sample, 0..12), any::<u64>());
    check("fmp4 fragment", 512, tracks, |(video, audio, base)| {
        let runs = [
            TrackRun { track_id: fmp4::VIDEO_TRACK_ID, base_decode_time: base, samples: &video },
            TrackRun { track_id: fmp4::AUDIO_TRACK_ID, base_decode_time: base / 2, samples: &audio },
        ];
        let data = fmp4::fragment(7, &runs);
        boxes_tile(&data)?;
        let (sizes, mdat) = fragment_samples(&data).ok_or_else(|| TestCaseError::fail("unreadable fragment"))?;
        let expected: Vec<Vec<u32>> = [&video, &audio]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.iter().map(|x| x.data.len() as u32).collect())
            .collect();
        ensure(sizes == expected, || format!("trun sizes {sizes:?}"))?;
        let payload: Vec<u8> = video.iter().chain(&audio).flat_map(|s| s.data.clone()).collect();
        ensure(mdat == payload, || "mdat differs from the samples".to_owned())
    });
}

fn init() -> Vec<u8> {
    let video = fmp4::VideoParams { sps: SPS_320.to_vec(), pps: PPS.to_vec(), width: 320, height: 180 };
    fmp4::init_segment(&video, &audio_params())
}

#[test]
fn decode_times_are_read_and_moved_on_any_fragments() {
    let sample = (0u32..100_000, prop::collection::vec(any::<u8>(), 0..16))
        .prop_map(|(duration, data)| Sample { duration, keyframe: true, data });
    let fragment = (prop::collection::vec(sample.clone(), 0..8), prop::collection::vec(sample, 0..8), any::<u64>(), any::<bool>());
    let input = (prop::collection::vec(fragment, 1..4), any::<i64>());
    let init = init();
    check("fmp4 decode times", 512, input, |(fragments, ticks)| {
        // A segment: fragments back to back, each after an emsg.
        let mut data = Vec::new();
        let mut expected: Vec<(u32, u64, u64)> = Vec::new();
        for (video, audio, base, with_emsg) in &fragments {
            if *with_emsg {
                data.extend(fmp4::emsg_id3(fmp4::VIDEO_TIMESCALE, *base, 1, &fmp4::id3_txxx("cue")));
            }
            let runs = [(fmp4::VIDEO_TRACK_ID, *base, video), (fmp4::AUDIO_TRACK_ID, *base / 2, audio)];
            data.extend(fmp4::fragment(
                1,
                &runs.map(|(track_id, base_decode_time, samples)| TrackRun { track_id, base_decode_time, samples }),
            ));
            for (track, start, samples) in runs.iter().filter(|r| !r.2.is_empty()) {
                let end = start.saturating_add(samples.iter().map(|s| u64::from(s.duration)).sum());
                match expected.iter_mut().find(|e| e.0 == *track) {
                    Some(e) => *e = (*track, e.1.min(*start), e.2.max(end)),
                    None => expected.push((*track, *start, end)),
                }
            }
        }
        let spans = fmp4::track_spans(&data).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let spans: Vec<(u32, u64, u64)> = spans.iter().map(|s| (s.track_id, s.start, s.end)).collect();
        ensure(spans == expected, || format!("{spans:?} != {expected:?}"))?;
        let shift = fmp4::Shift { ticks, timescale: fmp4::VIDEO_TIMESCALE };
        let mut moved = data.clone();
        match fmp4::shift_decode_times(&mut moved, &init, shift) {
            Ok(()) => {
                let after = fmp4::track_spans(&moved).map_err(|e| TestCaseError::fail(e.to_string()))?;
                for (s, (track, start, _)) in after.iter().zip(&expected) {
                    let by = shift.in_timescale(if *track == fmp4::VIDEO_TRACK_ID { fmp4::VIDEO_TIMESCALE } else { 48_000 });
                    let want = i128::from(*start) + i128::from(by);
                    ensure(i128::from(s.start) == want, || format!("track {track}: {} != {want}", s.start))?;
                }
                ensure(moved.len() == data.len(), || "the size changed".to_owned())
            }
            Err(_) => ensure(moved == data, || "a refused move changed bytes".to_owned()),
        }
    });
}

#[test]
fn any_bytes_in_a_fragment_or_init_never_make_the_reader_panic() {
    let real = {
        let v = [Sample { duration: 3000, keyframe: true, data: vec![1; 10] }];
        let a = [Sample { duration: 1024, keyframe: true, data: vec![2; 5] }];
        let mut d = fmp4::emsg_id3(fmp4::VIDEO_TIMESCALE, 9, 1, &fmp4::id3_txxx("x"));
        d.extend(fmp4::fragment(
            3,
            &[
                TrackRun { track_id: fmp4::VIDEO_TRACK_ID, base_decode_time: 90_000, samples: &v },
                TrackRun { track_id: fmp4::AUDIO_TRACK_ID, base_decode_time: 48_000, samples: &a },
            ],
        ));
        d
    };
    let init = init();
    let mutated = |base: Vec<u8>| {
        let len = base.len();
        prop::collection::vec((0..len, any::<u8>()), 1..6).prop_map(move |edits| {
            let mut d = base.clone();
            for (at, byte) in edits {
                d[at] = byte;
            }
            d
        })
    };
    let bytes = prop_oneof![prop::collection::vec(any::<u8>(), 0..256), mutated(real), mutated(init.clone())];
    check("fmp4 reader", 1024, (bytes, any::<i64>()), |(mut data, ticks)| {
        let _ = fmp4::track_spans(&data);
        let _ = fmp4::timescales(&data);
        let _ = fmp4::shift_decode_times(&mut data.clone(), &data, fmp4::Shift { ticks, timescale: 1 });
        let _ = fmp4::shift_decode_times(&mut data, &init, fmp4::Shift { ticks, timescale: fmp4::VIDEO_TIMESCALE });
        Ok(())
    });
}

#[test]
fn any_opus_packets_at_any_timestamps_give_ordered_aac() {
    let mut encoder = opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).ok();
    let real: Vec<u8> = encoder.as_mut().and_then(|e| e.encode_vec(&[1000i16; 1920], 4000).ok()).unwrap_or_default();
    let packet = prop_oneof![
        3 => Just(real.clone()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(move |(i, b)| {
            let mut p = real.clone();
            if !p.is_empty() {
                let at = i.index(p.len());
                p[at] ^= b;
            }
            p
        }),
    ];
    let step = prop_oneof![6 => Just(960i64), 1 => -2000i64..60_000, 1 => prop_oneof![Just(i64::MAX), Just(-(1i64 << 40))]];
    let start = prop_oneof![Just(0u64), Just(u64::MAX - 100_000)];
    check("opus to aac", 48, (start, prop::collection::vec((step, packet), 1..60)), |(start, packets)| {
        let mut t = OpusToAac::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut pts = start;
        let mut last_out: Option<u64> = None;
        for (step, packet) in packets {
            pts = pts.saturating_add_signed(step);
            // An undecodable packet is an error for the caller to drop; never a panic.
            let Ok(frames) = t.push(pts, &packet) else { continue };
            for (out, frame) in frames {
                ensure(!frame.is_empty(), || "empty AAC frame".to_owned())?;
                if let Some(last) = last_out {
                    ensure(out >= last.saturating_add(1024) || out == u64::MAX, || format!("AAC pts {out} after {last}"))?;
                }
                last_out = Some(out);
            }
        }
        Ok(())
    });
}
