//! The SFU load generator's accounting, kept apart from its I/O so it is
//! tested natively (`server/tests/sfu_load_account.rs`): what arrived of a
//! numbered stream (RTP sequence numbers, 16 bits that wrap; frame counters
//! per simulcast layer), where the generator's synthetic payloads carry
//! their layer and frame number, and percentiles.

/// How far back a late or repeated number is still recognised.
const WINDOW: u64 = 4096;

/// Which numbers of a stream arrived, from the first one after
/// [`Received::restart`] (or ever) up to the highest: every number in
/// between was expected. Repeats count once; numbers more than [`WINDOW`]
/// below the highest, or below the start, are ignored (late).
#[derive(Debug, Clone)]
pub struct Received {
    /// The first number counted (`None` until one arrives).
    base: Option<u64>,
    highest: Option<u64>,
    received: u64,
    duplicates: u64,
    late: u64,
    /// Bit `n % WINDOW` is set when `n` (within `WINDOW` of `highest`) arrived.
    seen: Box<[u64; (WINDOW / 64) as usize]>,
}

impl Default for Received {
    fn default() -> Self {
        let seen = Box::new([0; (WINDOW / 64) as usize]);
        Self { base: None, highest: None, received: 0, duplicates: 0, late: 0, seen }
    }
}

impl Received {
    fn bit(&self, n: u64) -> bool {
        let i = n % WINDOW;
        self.seen[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, n: u64, on: bool) {
        let i = n % WINDOW;
        let word = &mut self.seen[(i / 64) as usize];
        if on {
            *word |= 1 << (i % 64);
        } else {
            *word &= !(1 << (i % 64));
        }
    }

    /// Count `n` as arrived.
    pub fn record(&mut self, n: u64) {
        let Some(highest) = self.highest else {
            self.highest = Some(n);
            self.base = Some(n);
            self.set(n, true);
            self.received = 1;
            return;
        };
        let base = *self.base.get_or_insert(n);
        if n > highest {
            // Forget what the window no longer covers.
            if n - highest >= WINDOW {
                self.seen.fill(0);
            } else {
                for m in highest + 1..n {
                    self.set(m, false);
                }
            }
            self.set(n, true);
            self.highest = Some(n);
            self.received += 1;
        } else if highest - n >= WINDOW || n < base {
            self.late += 1;
        } else if self.bit(n) {
            self.duplicates += 1;
        } else {
            self.set(n, true);
            self.received += 1;
        }
    }

    /// Start counting anew after the highest number seen so far (what is
    /// still missing before it is no longer expected).
    pub fn restart(&mut self) {
        self.base = self.highest.map(|h| h + 1);
        self.received = 0;
        self.duplicates = 0;
        self.late = 0;
    }

    /// Numbers from the first counted to the highest.
    pub fn expected(&self) -> u64 {
        match (self.base, self.highest) {
            (Some(b), Some(h)) if h >= b => h - b + 1,
            _ => 0,
        }
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn late(&self) -> u64 {
        self.late
    }

    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// RTP sequence numbers (16 bits, wrapping) extended to 64 bits and counted.
#[derive(Debug, Clone, Default)]
pub struct SeqCounter {
    pub numbers: Received,
}

impl SeqCounter {
    /// Count a packet's sequence number.
    pub fn record(&mut self, seq: u16) {
        let n = extend_seq(self.numbers.highest(), seq);
        self.numbers.record(n);
    }
}

/// `seq` as a 64-bit number: the one nearest `highest` with these low 16
/// bits (the first is put at 65536 + seq, so a reordered packet before it
/// does not go below zero).
pub fn extend_seq(highest: Option<u64>, seq: u16) -> u64 {
    let Some(h) = highest else { return (1 << 16) + u64::from(seq) };
    let candidate = (h & !0xffff) | u64::from(seq);
    [candidate.wrapping_sub(1 << 16), candidate, candidate + (1 << 16)]
        .into_iter()
        .filter(|c| *c < (1 << 63))
        .min_by_key(|c| c.abs_diff(h))
        .unwrap_or(candidate)
}

/// Frames of one track, numbered per layer by the publisher: runs of the
/// same layer are counted apart (a layer switch is no loss; a number
/// missing within a run is).
#[derive(Debug, Clone, Default)]
pub struct FrameCounter {
    layer: Option<u8>,
    run: Received,
    /// Expected and received frames of the runs closed since the restart.
    closed: (u64, u64),
    switches: u64,
}

impl FrameCounter {
    pub fn record(&mut self, layer: u8, frame: u32) {
        if self.layer != Some(layer) {
            if self.layer.is_some() {
                self.switches += 1;
            }
            self.closed.0 += self.run.expected();
            self.closed.1 += self.run.received();
            self.run = Received::default();
            self.layer = Some(layer);
        }
        self.run.record(u64::from(frame));
    }

    pub fn restart(&mut self) {
        self.closed = (0, 0);
        self.switches = 0;
        self.run.restart();
    }

    pub fn expected(&self) -> u64 {
        self.closed.0 + self.run.expected()
    }

    pub fn received(&self) -> u64 {
        self.closed.1 + self.run.received()
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received())
    }

    /// Layer changes since the restart.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    pub fn layer(&self) -> Option<u8> {
        self.layer
    }
}

/// Bytes of a generated frame before its payload: a VP8 frame tag and, in
/// a keyframe, start code and size (what the SFU reads of it), then the
/// layer index and the frame number (u32, little-endian).
pub const VIDEO_HEADER: usize = 15;
/// The audio payload: Opus TOC byte, then the packet number (u32, little-endian).
pub const AUDIO_HEADER: usize = 5;

/// Fill `out` with a generated VP8-looking frame of `size` bytes.
pub fn video_frame(out: &mut Vec<u8>, size: usize, layer: u8, frame: u32, keyframe: bool, width: u16, height: u16) {
    out.clear();
    out.extend_from_slice(&[if keyframe { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.push(layer);
    out.extend_from_slice(&frame.to_le_bytes());
    out.resize(size.max(VIDEO_HEADER), 0xa0 | layer);
}

/// Fill `out` with a generated Opus-sized packet of `size` bytes.
pub fn audio_packet(out: &mut Vec<u8>, size: usize, number: u32) {
    out.clear();
    out.push(0xfc);
    out.extend_from_slice(&number.to_le_bytes());
    out.resize(size.max(AUDIO_HEADER), 0xfc);
}

/// The VP8 payload descriptor's length (RFC 7741 §4.2) and whether the
/// packet starts a frame (S set, partition 0); `None` if it is truncated.
pub fn vp8_descriptor(payload: &[u8]) -> Option<(usize, bool)> {
    let first = *payload.first()?;
    let start = first & 0x10 != 0 && first & 0x07 == 0;
    let mut len = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        len += 1;
        if ext & 0x80 != 0 {
            // Picture ID: 15 bits when M is set, else 7.
            len += if payload.get(len)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            len += 1;
        }
        if ext & 0x30 != 0 {
            len += 1;
        }
    }
    (payload.len() >= len).then_some((len, start))
}

/// `(layer, frame number)` of the first RTP payload of a generated video
/// frame; `None` for a packet that does not start one.
pub fn video_frame_of(payload: &[u8]) -> Option<(u8, u32)> {
    let (len, start) = vp8_descriptor(payload)?;
    if !start {
        return None;
    }
    let frame = payload.get(len..len + VIDEO_HEADER)?;
    let number = u32::from_le_bytes([frame[11], frame[12], frame[13], frame[14]]);
    Some((frame[10], number))
}

/// The packet number of a generated audio payload.
pub fn audio_number_of(payload: &[u8]) -> Option<u32> {
    let b = payload.get(1..AUDIO_HEADER)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The slots of a schedule from `*next` up to `current` (inclusive) to send
/// now, at most three: after a stall the rest are skipped, as an encoder
/// drops frames, instead of sent in a burst.
pub fn due_slots(next: &mut u64, current: u64) -> std::ops::Range<u64> {
    if current < *next {
        return 0..0;
    }
    let from = (*next).max(current.saturating_sub(2));
    *next = current + 1;
    from..current + 1
}

/// The `p`-th percentile (0–100) of `sorted` (ascending), nearest rank;
/// `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}
