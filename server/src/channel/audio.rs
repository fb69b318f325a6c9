//! Opus → AAC-LC in process: libopus decodes the WebRTC audio to 48 kHz
//! stereo PCM and libfdk-aac encodes 1024-sample raw AAC frames (what the
//! IVS Player and Safari need; Opus-in-fMP4 plays only through MSE).

use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};

/// Output sample rate (Opus in WebRTC is always 48 kHz).
pub const SAMPLE_RATE: u32 = 48_000;
/// Output channels.
pub const CHANNELS: u16 = 2;
/// AAC bitrate.
pub const BITRATE: u32 = 128_000;
/// Samples per channel in one AAC frame.
const FRAME: usize = 1024;
/// Longest Opus frame: 120 ms at 48 kHz.
const MAX_OPUS_SAMPLES: usize = 5760;
/// Concealment works in steps of 2.5 ms (samples at 48 kHz).
const PLC_STEP: usize = 120;
/// Gaps up to this long (samples) are concealed; longer ones restart the timeline.
const MAX_CONCEALED_GAP: u64 = SAMPLE_RATE as u64;

/// Transcoder errors.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("aac encoder: {0:?}")]
    Aac(fdk_aac::enc::EncoderError),
}

/// The AudioSpecificConfig of AAC-LC at `rate` Hz with `channels`.
pub fn audio_specific_config(rate: u32, channels: u16) -> Vec<u8> {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let index = RATES.iter().position(|&r| r == rate).unwrap_or(3) as u16;
    let v: u16 = (2 << 11) | (index << 7) | ((channels & 0xf) << 3);
    v.to_be_bytes().to_vec()
}

/// One Opus stream in, AAC frames with timestamps (48 kHz clock) out.
pub struct OpusToAac {
    decoder: opus::Decoder,
    encoder: Encoder,
    /// Interleaved stereo PCM not yet encoded.
    pcm: Vec<i16>,
    /// The timestamp the next Opus packet should have.
    expected: Option<u64>,
    /// Timestamp of the next AAC frame out.
    out_pts: u64,
    scratch: Vec<i16>,
    out_buf: Vec<u8>,
}

impl OpusToAac {
    pub fn new() -> Result<Self, AudioError> {
        let decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo)?;
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(BITRATE),
            sample_rate: SAMPLE_RATE,
            transport: Transport::Raw,
            channels: ChannelMode::Stereo,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(AudioError::Aac)?;
        Ok(Self {
            decoder,
            encoder,
            pcm: Vec::with_capacity(FRAME * 4),
            expected: None,
            out_pts: 0,
            scratch: vec![0; MAX_OPUS_SAMPLES * 2],
            out_buf: vec![0; 8192],
        })
    }

    /// The AudioSpecificConfig for the `esds` box.
    pub fn asc(&self) -> Vec<u8> {
        audio_specific_config(SAMPLE_RATE, CHANNELS)
    }

    /// Transcode one Opus packet with RTP timestamp `pts` (48 kHz). Returns
    /// the AAC frames completed by it, each with its timestamp.
    pub fn push(&mut self, pts: u64, packet: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, AudioError> {
        match self.expected {
            None => self.out_pts = pts,
            // Timestamps come from the broadcaster: saturate, never overflow.
            Some(expected) if pts.saturating_add(480) < expected => return Ok(Vec::new()), // late duplicate
            Some(expected) if pts > expected.saturating_add(480) => {
                let gap = pts.saturating_sub(expected);
                if gap <= MAX_CONCEALED_GAP {
                    // Packet loss concealment keeps the AAC timeline continuous.
                    // libopus conceals whole 2.5 ms steps only; a remainder
                    // (a gap no real sender makes) is left out.
                    let mut left = usize::try_from(gap).unwrap_or(0);
                    while left >= PLC_STEP {
                        let n = left.min(960) / PLC_STEP * PLC_STEP;
                        let buf = self.scratch.get_mut(..n * 2).unwrap_or_default();
                        let got = match self.decoder.decode(&[], buf, false) {
                            Ok(got) if got > 0 => got,
                            _ => break,
                        };
                        self.pcm.extend_from_slice(self.scratch.get(..got * 2).unwrap_or_default());
                        left = left.saturating_sub(got);
                    }
                } else {
                    self.pcm.clear();
                    self.out_pts = pts;
                }
            }
            Some(_) => {}
        }
        let got = self.decoder.decode(packet, &mut self.scratch, false)?;
        self.expected = Some(pts.saturating_add(got as u64));
        self.pcm.extend_from_slice(self.scratch.get(..got * 2).unwrap_or_default());
        self.drain()
    }

    fn drain(&mut self) -> Result<Vec<(u64, Vec<u8>)>, AudioError> {
        let mut out = Vec::new();
        let chunk = FRAME * usize::from(CHANNELS);
        while self.pcm.len() >= chunk {
            let info = self
                .encoder
                .encode(self.pcm.get(..chunk).unwrap_or_default(), &mut self.out_buf)
                .map_err(AudioError::Aac)?;
            let consumed = info.input_consumed.clamp(1, chunk).min(self.pcm.len());
            self.pcm.drain(..consumed);
            if info.output_size > 0 {
                out.push((self.out_pts, self.out_buf.get(..info.output_size).unwrap_or_default().to_vec()));
                self.out_pts = self.out_pts.saturating_add(FRAME as u64);
            }
        }
        Ok(out)
    }
}
