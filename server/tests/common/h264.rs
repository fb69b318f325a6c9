//! H.264 test support: a bit writer for hand-made (and hostile) parameter
//! sets, real parameter sets from ffmpeg, and the SPS values of issue 8
//! that used to panic the ingest task.

/// 320x180 constrained baseline, level 1.3 (ffmpeg's libx264).
pub const SPS_320: [u8; 25] = [
    0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03,
    0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
];
/// 640x360 constrained baseline, level 3.0 (ffmpeg's libx264).
pub const SPS_360: [u8; 25] = [
    0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03,
    0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
];
/// The PPS that goes with them.
pub const PPS: [u8; 4] = [0x68, 0xcb, 0x83, 0xcb];

/// Writes an RBSP bit by bit, then escapes it into a NAL unit.
#[derive(Default)]
pub struct Bits {
    bits: Vec<bool>,
}

impl Bits {
    pub fn u(&mut self, n: u32, v: u64) {
        for i in (0..n).rev() {
            self.bits.push((v >> i) & 1 == 1);
        }
    }
    pub fn flag(&mut self, b: bool) {
        self.bits.push(b);
    }
    pub fn ue(&mut self, v: u64) {
        let code = u128::from(v) + 1;
        let len = 128 - code.leading_zeros();
        for _ in 1..len {
            self.bits.push(false);
        }
        for i in (0..len).rev() {
            self.bits.push((code >> i) & 1 == 1);
        }
    }
    pub fn se(&mut self, v: i64) {
        let code = if v > 0 { 2 * v.unsigned_abs() - 1 } else { 2 * v.unsigned_abs() };
        self.ue(code);
    }
    /// `nal_header` + RBSP with stop bit, emulation prevention applied.
    pub fn nal(mut self, header: u8) -> Vec<u8> {
        self.bits.push(true);
        while !self.bits.len().is_multiple_of(8) {
            self.bits.push(false);
        }
        let bytes = self.bits.chunks(8).map(|c| c.iter().fold(0u8, |acc, b| (acc << 1) | u8::from(*b)));
        escape(header, bytes)
    }
}

/// A NAL unit: `header`, then `payload` with emulation prevention (`00 00
/// 0x` → `00 00 03 0x` for x ≤ 3), as an encoder writes it.
pub fn escape(header: u8, payload: impl IntoIterator<Item = u8>) -> Vec<u8> {
    let mut out = vec![header];
    let mut zeros = 0;
    for b in payload {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// A baseline SPS whose width is 2^28 macroblocks: `(2^28 + 1) * 16`
/// overflowed the parser's u32 before it was bounded.
pub fn sps_with_huge_width() -> Vec<u8> {
    let mut b = Bits::default();
    b.u(8, 66);
    b.u(8, 0xc0);
    b.u(8, 31);
    b.ue(0); // seq_parameter_set_id
    b.ue(0); // log2_max_frame_num_minus4
    b.ue(2); // pic_order_cnt_type
    b.ue(1); // max_num_ref_frames
    b.flag(false);
    b.ue(1 << 28); // pic_width_in_mbs_minus1
    b.ue(10);
    b.flag(true); // frame_mbs_only
    b.flag(true);
    b.flag(false);
    b.flag(false);
    b.nal(0x67)
}

/// A high-profile SPS with a scaling-list delta of 2^31 - 1: `last + delta
/// + 256` overflowed the parser's i32 before deltas were range-checked.
pub fn sps_with_huge_scaling_delta() -> Vec<u8> {
    let mut b = Bits::default();
    b.u(8, 100);
    b.u(8, 0);
    b.u(8, 31);
    b.ue(0);
    b.ue(1); // chroma_format_idc
    b.ue(0);
    b.ue(0);
    b.flag(false);
    b.flag(true); // seq_scaling_matrix_present_flag
    b.flag(true); // list 0 present
    b.se(i64::from(i32::MAX));
    b.nal(0x67)
}
