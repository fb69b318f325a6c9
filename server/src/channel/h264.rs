//! H.264 bitstream helpers: Annex-B splitting, AVCC (length-prefixed)
//! conversion, and the few SPS fields the packager needs (size, codec string).

/// NAL unit types the packager cares about.
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

/// Largest access unit the packager accepts (AVCC bytes). str0m's
/// depacketizer holds at most 4096 packets per frame; a 4K keyframe is a
/// few hundred KB.
pub const MAX_ACCESS_UNIT_BYTES: usize = 4 << 20;
/// Largest picture side, in pixels (H.264 level 6.2 tops out at 8192 wide).
pub const MAX_DIMENSION: u32 = 16_384;

/// Why H.264 input was refused. Every value read from the stream is
/// bounded before it is used in arithmetic, so a hostile bitstream ends
/// here instead of in an overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    #[error("not a sequence parameter set")]
    NotSps,
    #[error("the SPS ends early")]
    Truncated,
    #[error("an Exp-Golomb code in the SPS is longer than 32 bits")]
    ExpGolombTooLong,
    #[error("SPS field {field} is {value}, out of range")]
    OutOfRange { field: &'static str, value: i64 },
    #[error("the SPS crops more than the coded picture")]
    CropTooLarge,
    #[error("the SPS describes a {width}x{height} picture (at most {MAX_DIMENSION} a side)")]
    Dimensions { width: u64, height: u64 },
}

/// The NAL unit type (low 5 bits of the first byte); 0 for an empty unit.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Split an Annex-B byte stream (`00 00 01` / `00 00 00 01` start codes)
/// into NAL units without start codes. Bytes before the first start code
/// are ignored; empty units are skipped.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    // (start of the code, start of the payload)
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(window) = data.get(i..i + 3) {
        if window == [0, 0, 1] {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &(_, payload_start)) in starts.iter().enumerate() {
        let next = starts.get(n + 1).map(|&(code_start, _)| code_start);
        let mut end = next.unwrap_or(data.len());
        // A four-byte start code leaves a zero that belongs to the code.
        while next.is_some() && end > payload_start && data.get(end - 1) == Some(&0) {
            end -= 1;
        }
        if let Some(nal) = data.get(payload_start..end) {
            if !nal.is_empty() {
                out.push(nal);
            }
        }
    }
    out
}

/// Length-prefix (4 bytes, big-endian) each NAL unit: the AVCC sample format.
/// A unit too long for the prefix (over 4 GiB, never from a real stream) is
/// left out rather than written with a wrong length.
pub fn to_avcc(nals: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nals.iter().map(|n| n.len().saturating_add(4)).fold(0, usize::saturating_add));
    for nal in nals {
        let Ok(len) = u32::try_from(nal.len()) else { continue };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// What an SPS tells the packager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// 1..=[`MAX_DIMENSION`].
    pub width: u32,
    /// 1..=[`MAX_DIMENSION`].
    pub height: u32,
}

impl SpsInfo {
    /// The RFC 6381 codec string, e.g. `avc1.42e01f`.
    pub fn codec_string(&self) -> String {
        format!("avc1.{:02x}{:02x}{:02x}", self.profile_idc, self.constraint_flags, self.level_idc)
    }
}

/// Drop emulation-prevention bytes (`00 00 03` → `00 00`).
fn unescape(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len());
    let mut zeros = 0u8;
    for &b in rbsp {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros.saturating_add(1) } else { 0 };
        out.push(b);
    }
    out
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Result<u32, H264Error> {
        let byte = *self.data.get(self.pos / 8).ok_or(H264Error::Truncated)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }
    fn flag(&mut self) -> Result<bool, H264Error> {
        Ok(self.bit()? == 1)
    }
    /// `n` ≤ 32 bits, most significant first.
    fn bits(&mut self, n: u32) -> Result<u32, H264Error> {
        let mut v = 0u64;
        for _ in 0..n.min(32) {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).map_err(|_| H264Error::ExpGolombTooLong)
    }
    fn byte(&mut self) -> Result<u8, H264Error> {
        u8::try_from(self.bits(8)?).map_err(|_| H264Error::Truncated)
    }
    /// ue(v): up to 32 bits of value, as the spec allows.
    fn ue(&mut self) -> Result<u64, H264Error> {
        let mut zeros = 0u32;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 32 {
                return Err(H264Error::ExpGolombTooLong);
            }
        }
        Ok((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?))
    }
    /// ue(v) that must lie in `0..=max`.
    fn ue_max(&mut self, field: &'static str, max: u32) -> Result<u32, H264Error> {
        let v = self.ue()?;
        u32::try_from(v).ok().filter(|v| *v <= max).ok_or(H264Error::OutOfRange { field, value: clamp_i64(v) })
    }
    /// se(v), as i64 so no value of the code overflows.
    fn se(&mut self) -> Result<i64, H264Error> {
        let v = i64::try_from(self.ue()?).map_err(|_| H264Error::ExpGolombTooLong)?;
        Ok(if v % 2 == 1 { (v + 1) / 2 } else { -(v / 2) })
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), H264Error> {
    let mut last = 8i64;
    let mut next = 8i64;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(H264Error::OutOfRange { field: "delta_scale", value: delta });
            }
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Parse the fields of a sequence parameter set (NAL unit including its
/// one-byte header). Every count and size is checked against the spec's
/// range, and the picture must be 1..=[`MAX_DIMENSION`] pixels a side.
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, H264Error> {
    if nal_type(nal) != NAL_SPS {
        return Err(H264Error::NotSps);
    }
    let rbsp = unescape(nal.get(1..).unwrap_or_default());
    let mut r = BitReader { data: &rbsp, pos: 0 };
    let profile_idc = r.byte()?;
    let constraint_flags = r.byte()?;
    let level_idc = r.byte()?;
    r.ue_max("seq_parameter_set_id", 31)?;
    let mut chroma_format_idc = 1;
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue_max("chroma_format_idc", 3)?;
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue_max("bit_depth_luma_minus8", 6)?;
        r.ue_max("bit_depth_chroma_minus8", 6)?;
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue_max("log2_max_frame_num_minus4", 12)?;
    match r.ue_max("pic_order_cnt_type", 2)? {
        0 => {
            r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?;
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            for _ in 0..r.ue_max("num_ref_frames_in_pic_order_cnt_cycle", 255)? {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue_max("max_num_ref_frames", 16)?;
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    // Bounded so the arithmetic below stays far from overflow; the final
    // size check is the real limit.
    let width_mbs = u64::from(r.ue_max("pic_width_in_mbs_minus1", MAX_DIMENSION)?) + 1;
    let height_map_units = u64::from(r.ue_max("pic_height_in_map_units_minus1", MAX_DIMENSION)?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if r.flag()? {
        crop_l = r.ue()?;
        crop_r = r.ue()?;
        crop_t = r.ue()?;
        crop_b = r.ue()?;
    }
    let (crop_x, crop_y) = match chroma_format_idc {
        0 => (1, 2 - frame_mbs_only),
        1 => (2, 2 * (2 - frame_mbs_only)),
        2 => (2, 2 - frame_mbs_only),
        _ => (1, 2 - frame_mbs_only),
    };
    // ue values are below 2^33, so these products fit easily in u64.
    let width = (width_mbs * 16).checked_sub(crop_x * (crop_l + crop_r)).ok_or(H264Error::CropTooLarge)?;
    let height = ((2 - frame_mbs_only) * height_map_units * 16)
        .checked_sub(crop_y * (crop_t + crop_b))
        .ok_or(H264Error::CropTooLarge)?;
    let side = |v: u64| u32::try_from(v).ok().filter(|v| (1..=MAX_DIMENSION).contains(v));
    let (Some(w), Some(h)) = (side(width), side(height)) else {
        return Err(H264Error::Dimensions { width, height });
    };
    Ok(SpsInfo { profile_idc, constraint_flags, level_idc, width: w, height: h })
}

/// One access unit after conversion for fMP4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// AVCC sample data (without AUD; parameter sets kept in-band on keyframes).
    pub avcc: Vec<u8>,
    pub keyframe: bool,
    pub sps: Option<Vec<u8>>,
    pub pps: Option<Vec<u8>>,
}

/// Convert an Annex-B access unit: drop access unit delimiters, keep
/// everything else length-prefixed, and note SPS/PPS and IDR slices.
/// `None` when it holds no NAL unit worth storing.
pub fn access_unit_from_annex_b(data: &[u8]) -> Option<AccessUnit> {
    let nals = split_annex_b(data);
    let mut keep = Vec::with_capacity(nals.len());
    let mut sps = None;
    let mut pps = None;
    let mut keyframe = false;
    for nal in nals {
        match nal_type(nal) {
            NAL_AUD => continue,
            NAL_SPS => sps = Some(nal.to_vec()),
            NAL_PPS => pps = Some(nal.to_vec()),
            NAL_IDR => keyframe = true,
            _ => {}
        }
        keep.push(nal);
    }
    if keep.is_empty() {
        return None;
    }
    Some(AccessUnit { avcc: to_avcc(&keep), keyframe, sps, pps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_mixed_start_codes() {
        let data = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9];
        let nals = split_annex_b(&data);
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 9][..]]);
    }

    #[test]
    fn parses_a_baseline_sps() {
        // 320x180 constrained baseline, level 1.3 (from ffmpeg's libx264).
        let sps = [
            0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
            0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
        ];
        let info = parse_sps(&sps).expect("sps parses");
        assert_eq!((info.width, info.height), (320, 180));
        assert_eq!(info.codec_string(), "avc1.42c00d");
    }
}
