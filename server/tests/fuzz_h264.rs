//! H.264 parsing of broadcaster bytes: the crafted SPS values that used to
//! panic the ingest task (issue 8 item 3), an SPS writer that round-trips
//! through `parse_sps`, and properties over arbitrary and mutated input.
//! `cargo xtask fuzz fuzz_h264 --seconds N` runs the properties longer.

use proptest::prelude::*;
use stagecast_server::channel::h264::{
    access_unit_from_annex_b, nal_type, parse_sps, split_annex_b, to_avcc, H264Error, MAX_DIMENSION,
};
use stagecast_testkit::{check, ensure, proptest};

mod common;
use common::h264::{escape, Bits, PPS, SPS_320, SPS_360};


/// The SPS fields `parse_sps` reads, with any values (valid or not).
#[derive(Debug, Clone)]
struct Sps {
    profile: u8,
    level: u8,
    chroma: u64,
    /// High profiles: each list present with its deltas.
    scaling: Option<Vec<Option<Vec<i64>>>>,
    poc_type: u64,
    poc_cycle: Vec<i64>,
    refs: u64,
    width_mbs_minus1: u64,
    height_units_minus1: u64,
    frame_mbs_only: bool,
    crop: Option<[u64; 4]>,
}

const HIGH: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

impl Sps {
    fn baseline(width_mbs_minus1: u64, height_units_minus1: u64) -> Self {
        Sps {
            profile: 66,
            level: 31,
            chroma: 1,
            scaling: None,
            poc_type: 2,
            poc_cycle: Vec::new(),
            refs: 1,
            width_mbs_minus1,
            height_units_minus1,
            frame_mbs_only: true,
            crop: None,
        }
    }

    fn write(&self) -> Vec<u8> {
        let mut b = Bits::default();
        b.u(8, u64::from(self.profile));
        b.u(8, 0);
        b.u(8, u64::from(self.level));
        b.ue(0);
        if HIGH.contains(&self.profile) {
            b.ue(self.chroma);
            if self.chroma == 3 {
                b.flag(false);
            }
            b.ue(0);
            b.ue(0);
            b.flag(false);
            b.flag(self.scaling.is_some());
            if let Some(lists) = &self.scaling {
                let count = if self.chroma == 3 { 12 } else { 8 };
                for i in 0..count {
                    match lists.get(i) {
                        Some(Some(deltas)) if !deltas.is_empty() => {
                            b.flag(true);
                            // As the spec reads it: deltas until the list
                            // is full or a delta makes the next value 0.
                            let (mut last, mut next) = (8i64, 8i64);
                            for j in 0..if i < 6 { 16 } else { 64 } {
                                if next != 0 {
                                    let d = deltas[j % deltas.len()];
                                    b.se(d);
                                    next = (last + d).rem_euclid(256);
                                }
                                if next != 0 {
                                    last = next;
                                }
                            }
                        }
                        _ => b.flag(false),
                    }
                }
            }
        }
        b.ue(0); // log2_max_frame_num_minus4
        b.ue(self.poc_type);
        match self.poc_type {
            0 => b.ue(0),
            1 => {
                b.flag(false);
                b.se(0);
                b.se(0);
                b.ue(self.poc_cycle.len() as u64);
                for v in &self.poc_cycle {
                    b.se(*v);
                }
            }
            _ => {}
        }
        b.ue(self.refs);
        b.flag(false);
        b.ue(self.width_mbs_minus1);
        b.ue(self.height_units_minus1);
        b.flag(self.frame_mbs_only);
        if !self.frame_mbs_only {
            b.flag(false);
        }
        b.flag(true);
        b.flag(self.crop.is_some());
        if let Some(crop) = self.crop {
            for c in crop {
                b.ue(c);
            }
        }
        b.flag(false); // vui_parameters_present_flag
        b.nal(0x67)
    }

    /// The picture size by the spec's formulas (7-18 … 7-22), computed
    /// independently of the parser, or `None` when it is not a valid picture.
    fn expected_size(&self) -> Option<(u32, u32)> {
        let chroma = if HIGH.contains(&self.profile) { self.chroma } else { 1 };
        let field = u64::from(!self.frame_mbs_only);
        let (sub_w, sub_h) = match chroma {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let (crop_x, crop_y) = if chroma == 0 { (1, 2 - (1 - field)) } else { (sub_w, sub_h * (1 + field)) };
        let [l, r, t, bottom] = self.crop.unwrap_or_default();
        let w = (self.width_mbs_minus1 + 1) * 16;
        let h = (self.height_units_minus1 + 1) * 16 * (1 + field);
        let w = w.checked_sub(crop_x * (l + r))?;
        let h = h.checked_sub(crop_y * (t + bottom))?;
        let ok = |v: u64| (1..=u64::from(MAX_DIMENSION)).contains(&v);
        (ok(w) && ok(h)).then_some((w as u32, h as u32))
    }
}

// --- The crafted SPS values from issue 8, item 3 -------------------------

#[test]
fn a_width_of_two_to_the_28_macroblocks_is_refused_not_an_overflow() {
    // Used to panic: (2^28 + 1) * 16 overflows u32.
    let sps = Sps::baseline(1 << 28, 10).write();
    assert_eq!(parse_sps(&sps), Err(H264Error::OutOfRange { field: "pic_width_in_mbs_minus1", value: 1 << 28 }));
    assert!(matches!(parse_sps(&common::h264::sps_with_huge_width()), Err(H264Error::OutOfRange { .. })));
    let sps = Sps::baseline(10, u64::from(u32::MAX) - 1).write();
    assert!(matches!(parse_sps(&sps), Err(H264Error::OutOfRange { field: "pic_height_in_map_units_minus1", .. })));
}

#[test]
fn a_huge_scaling_list_delta_is_refused_not_an_overflow() {
    // Used to panic: last + delta + 256 overflows i32.
    let mut sps = Sps::baseline(19, 11);
    sps.profile = 100;
    sps.scaling = Some(vec![Some(vec![i64::from(i32::MAX)])]);
    assert_eq!(parse_sps(&sps.write()), Err(H264Error::OutOfRange { field: "delta_scale", value: i64::from(i32::MAX) }));
    assert!(matches!(parse_sps(&common::h264::sps_with_huge_scaling_delta()), Err(H264Error::OutOfRange { .. })));
    sps.scaling = Some(vec![Some(vec![-(1 << 31)])]);
    assert!(matches!(parse_sps(&sps.write()), Err(H264Error::OutOfRange { field: "delta_scale", .. })));
}

#[test]
fn crops_counts_and_long_codes_are_bounded() {
    let mut sps = Sps::baseline(19, 11);
    sps.crop = Some([u64::from(u32::MAX) - 1, 0, 0, 0]);
    assert_eq!(parse_sps(&sps.write()), Err(H264Error::CropTooLarge));
    let mut sps = Sps::baseline(19, 11);
    sps.poc_type = 1;
    sps.poc_cycle = vec![0; 256];
    assert!(matches!(parse_sps(&sps.write()), Err(H264Error::OutOfRange { field: "num_ref_frames_in_pic_order_cnt_cycle", .. })));
    let mut sps = Sps::baseline(19, 11);
    sps.refs = 1 << 31;
    assert!(matches!(parse_sps(&sps.write()), Err(H264Error::OutOfRange { field: "max_num_ref_frames", .. })));
    // 40 leading zero bits: not an Exp-Golomb code of 32 bits.
    let mut long = vec![0x67, 0x42, 0xc0, 0x1f, 0, 0, 3, 0, 0, 3, 0, 0x80];
    long.extend_from_slice(&[0xff; 8]);
    assert_eq!(parse_sps(&long), Err(H264Error::ExpGolombTooLong));
    // 1024 macroblocks is 16384 pixels, the limit; one more is refused.
    assert_eq!(parse_sps(&Sps::baseline(1023, 0).write()).map(|i| i.width), Ok(16_384));
    assert!(matches!(parse_sps(&Sps::baseline(1024, 0).write()), Err(H264Error::Dimensions { .. })));
    assert_eq!(parse_sps(&[0x67]), Err(H264Error::Truncated));
    assert_eq!(parse_sps(&PPS), Err(H264Error::NotSps));
}

#[test]
fn the_writer_agrees_with_ffmpegs_sps() {
    assert_eq!(parse_sps(&SPS_320).map(|i| (i.width, i.height)), Ok((320, 180)));
    assert_eq!(parse_sps(&SPS_360).map(|i| (i.width, i.height)), Ok((640, 360)));
    let mut sps = Sps::baseline(19, 11);
    sps.crop = Some([0, 0, 0, 6]);
    assert_eq!(parse_sps(&sps.write()).map(|i| (i.width, i.height)), Ok((320, 180)));
}

// --- Properties ----------------------------------------------------------

fn sps_strategy() -> impl Strategy<Value = Sps> {
    let profile = prop_oneof![Just(66u8), Just(77), Just(100), Just(110), Just(122), Just(244)];
    let delta = -128i64..=127;
    let lists = prop::collection::vec(prop::option::of(prop::collection::vec(delta, 16..=16)), 0..12);
    (
        (profile, 10u8..=62, 0u64..=3, prop::option::of(lists)),
        (0u64..=2, prop::collection::vec(-1000i64..1000, 0..8), 0u64..=16),
        (0u64..1100, 0u64..700, any::<bool>(), prop::option::of([0u64..40, 0u64..40, 0u64..40, 0u64..40])),
    )
        .prop_map(|((profile, level, chroma, scaling), (poc_type, poc_cycle, refs), (w, h, frame_mbs_only, crop))| Sps {
            profile,
            level,
            chroma,
            scaling,
            poc_type,
            poc_cycle,
            refs,
            width_mbs_minus1: w,
            height_units_minus1: h,
            frame_mbs_only,
            crop,
        })
}

/// A real SPS, flipped, cut, spliced or with a large ue value written in.
fn mutated_sps() -> impl Strategy<Value = Vec<u8>> {
    let base = prop_oneof![Just(SPS_320.to_vec()), Just(SPS_360.to_vec())];
    (base, prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..6)).prop_map(|(mut s, edits)| {
        for (at, kind, byte) in edits {
            let i = at.index(s.len().max(1));
            match kind {
                0 => {
                    let last = s.len() - 1;
                    s[i.min(last)] ^= byte | 1;
                }
                1 => s.truncate(i.max(1)),
                2 => s.insert(i.max(1), byte),
                // Zeros in the middle: a long Exp-Golomb prefix.
                _ => s.splice(i.max(1)..i.max(1), std::iter::repeat_n(0u8, usize::from(byte % 12))).for_each(drop),
            }
        }
        s
    })
}

fn in_range(nal: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(info) = parse_sps(nal) {
        ensure((1..=MAX_DIMENSION).contains(&info.width) && (1..=MAX_DIMENSION).contains(&info.height), || {
            format!("{info:?} from {nal:02x?}")
        })?;
    }
    Ok(())
}

#[test]
fn written_spses_parse_to_the_size_the_spec_gives() {
    check("sps round trip", 512, sps_strategy(), |sps| {
        let nal = sps.write();
        let parsed = parse_sps(&nal);
        let expected = sps.expected_size();
        match (expected, parsed) {
            (Some(size), Ok(info)) => {
                ensure((info.width, info.height) == size, || format!("{info:?}, expected {size:?}"))?;
                ensure(info.profile_idc == sps.profile && info.level_idc == sps.level, || format!("{info:?}"))
            }
            (None, Err(_)) => Ok(()),
            (expected, parsed) => Err(TestCaseError::fail(format!("expected {expected:?}, parsed {parsed:?}"))),
        }
    });
}

#[test]
fn any_bytes_as_an_sps_never_panic() {
    let bytes = prop::collection::vec(any::<u8>(), 0..64).prop_map(|mut v| {
        v.insert(0, 0x67);
        v
    });
    check("sps arbitrary", 2048, bytes, |nal| in_range(&nal));
    check("sps mutated", 2048, mutated_sps(), |nal| in_range(&nal));
}

/// NAL units as an encoder writes them: a header byte, no start-code
/// pattern inside (emulation prevention), and a non-zero last byte.
fn nal_strategy() -> impl Strategy<Value = Vec<u8>> {
    (1u8..=31, prop::collection::vec(any::<u8>(), 0..40), 1u8..=255)
        .prop_map(|(kind, body, last)| escape(0x60 | kind, body.into_iter().chain([last])))
}

#[test]
fn annex_b_splitting_round_trips_and_never_panics() {
    let units = (prop::collection::vec(nal_strategy(), 0..8), prop::collection::vec(any::<bool>(), 8));
    check("annex-b round trip", 512, units, |(nals, long_codes)| {
        let mut stream = Vec::new();
        for (nal, long) in nals.iter().zip(long_codes.iter().cycle()) {
            stream.extend_from_slice(if *long { &[0, 0, 0, 1][..] } else { &[0, 0, 1][..] });
            stream.extend_from_slice(nal);
        }
        let split: Vec<Vec<u8>> = split_annex_b(&stream).into_iter().map(<[u8]>::to_vec).collect();
        ensure(split == nals, || format!("split {split:02x?}"))?;
        // AVCC: the same units back, length-prefixed, without delimiters.
        let kept: Vec<&Vec<u8>> = nals.iter().filter(|n| nal_type(n) != 9).collect();
        match access_unit_from_annex_b(&stream) {
            None => ensure(kept.is_empty(), || "units were lost".to_owned()),
            Some(au) => {
                let mut rest = au.avcc.as_slice();
                let mut back = Vec::new();
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let len = u32::from_be_bytes(*len) as usize;
                    back.push(tail.get(..len).map(<[u8]>::to_vec).ok_or_else(|| TestCaseError::fail("short unit"))?);
                    rest = tail.get(len..).unwrap_or_default();
                }
                ensure(back.iter().collect::<Vec<_>>() == kept, || format!("avcc units {back:02x?}"))?;
                ensure(au.keyframe == kept.iter().any(|n| nal_type(n) == 5), || "keyframe flag".to_owned())
            }
        }
    });
    check("annex-b arbitrary", 2048, prop::collection::vec(any::<u8>(), 0..256), |bytes| {
        let total: usize = split_annex_b(&bytes).iter().map(|n| n.len()).sum();
        ensure(total <= bytes.len(), || "units longer than the input".to_owned())?;
        let _ = access_unit_from_annex_b(&bytes);
        Ok(())
    });
    // A real access unit: parameter sets and an IDR slice.
    let mut real = Vec::new();
    for nal in [&SPS_320[..], &PPS[..], &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff][..]] {
        real.extend_from_slice(&[0, 0, 0, 1]);
        real.extend_from_slice(nal);
    }
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8);
    check("annex-b mutated", 2048, edits, |edits| {
        let mut au = real.clone();
        for (at, byte) in edits {
            let i = at.index(au.len());
            au[i] = byte;
        }
        if let Some(unit) = access_unit_from_annex_b(&au) {
            if let Some(sps) = &unit.sps {
                in_range(sps)?;
            }
        }
        Ok(())
    });
    let _ = to_avcc(&[]);
}
