//! H.264 bitstream helpers: Annex-B splitting, AVCC (length-prefixed)
//! conversion, and the few SPS fields the packager needs (size, codec string).

/// NAL unit types the packager cares about.
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

/// The NAL unit type (low 5 bits of the first byte); 0 for an empty unit.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Split an Annex-B byte stream (`00 00 01` / `00 00 00 01` start codes)
/// into NAL units without start codes. Bytes before the first start code
/// are ignored; empty units are skipped.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &(_, payload_start)) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&(code_start, _)| code_start);
        // A four-byte start code leaves a zero that belongs to the code.
        while end > payload_start && data.get(end - 1) == Some(&0) && n + 1 < starts.len() {
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
pub fn to_avcc(nals: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum());
    for nal in nals {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
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
    pub width: u32,
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
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)) as u32)
    }
    fn se(&mut self) -> Option<i32> {
        let v = self.ue()?;
        Some(if v % 2 == 1 { v.div_ceil(2) as i32 } else { -((v / 2) as i32) })
    }
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
    let mut last = 8i32;
    let mut next = 8i32;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Parse the fields of a sequence parameter set (NAL unit including its
/// one-byte header). `None` when it is truncated or not an SPS.
pub fn parse_sps(nal: &[u8]) -> Option<SpsInfo> {
    if nal_type(nal) != NAL_SPS || nal.len() < 4 {
        return None;
    }
    let rbsp = unescape(nal.get(1..)?);
    let mut r = BitReader { data: &rbsp, pos: 0 };
    let profile_idc = r.bits(8)? as u8;
    let constraint_flags = r.bits(8)? as u8;
    let level_idc = r.bits(8)? as u8;
    let _sps_id = r.ue()?;
    let mut chroma_format_idc = 1;
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    let poc_type = r.ue()?;
    if poc_type == 0 {
        r.ue()?;
    } else if poc_type == 1 {
        r.bit()?;
        r.se()?;
        r.se()?;
        let n = r.ue()?;
        if n > 255 {
            return None;
        }
        for _ in 0..n {
            r.se()?;
        }
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_map_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0, 0, 0, 0);
    if r.bit()? == 1 {
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
    let width = (width_mbs * 16).checked_sub(crop_x * (crop_l + crop_r))?;
    let height = ((2 - frame_mbs_only) * height_map_units * 16).checked_sub(crop_y * (crop_t + crop_b))?;
    Some(SpsInfo { profile_idc, constraint_flags, level_idc, width, height })
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
