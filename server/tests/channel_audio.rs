//! Opus → AAC-LC: a generated 440 Hz tone encoded with libopus, transcoded,
//! then decoded again with libfdk-aac: the right duration, contiguous
//! timestamps, and still a 440 Hz tone.

use anyhow::{ensure, Result};
use fdk_aac::dec::{Decoder, Transport};
use stagecast_server::channel::audio::{audio_specific_config, OpusToAac};

const RATE: u64 = 48_000;
const OPUS_FRAME: u64 = 960; // 20 ms, what browsers send

fn tone(start: u64, channels: usize) -> Vec<i16> {
    (0..OPUS_FRAME as usize * channels)
        .map(|i| {
            let t = (start + (i / channels) as u64) as f64 / RATE as f64;
            ((t * 440.0 * std::f64::consts::TAU).sin() * 10_000.0) as i16
        })
        .collect()
}

/// Transcode `seconds` of tone; `drop` lists Opus packet indexes lost on the way.
fn transcode(seconds: u64, channels: opus::Channels, drop: &[u64]) -> Result<Vec<(u64, Vec<u8>)>> {
    let n_channels = if channels == opus::Channels::Stereo { 2 } else { 1 };
    let mut enc = opus::Encoder::new(RATE as u32, channels, opus::Application::Audio)?;
    let mut t = OpusToAac::new()?;
    let mut out = Vec::new();
    // RTP timestamps start anywhere.
    let base = 123_456u64;
    for i in 0..seconds * RATE / OPUS_FRAME {
        let packet = enc.encode_vec(&tone(i * OPUS_FRAME, n_channels), 4000)?;
        if drop.contains(&i) {
            continue;
        }
        out.extend(t.push(base + i * OPUS_FRAME, &packet)?);
    }
    Ok(out)
}

fn decode(frames: &[(u64, Vec<u8>)]) -> Result<Vec<i16>> {
    let mut dec = Decoder::new(Transport::Raw);
    dec.config_raw(&audio_specific_config(48_000, 2)).map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
    let mut pcm = Vec::new();
    let mut buf = vec![0i16; 2048 * 2];
    for (_, frame) in frames {
        dec.fill(frame).map_err(|e| anyhow::anyhow!("fill: {e:?}"))?;
        dec.decode_frame(&mut buf).map_err(|e| anyhow::anyhow!("decode: {e:?}"))?;
        let n = dec.decoded_frame_size();
        pcm.extend_from_slice(&buf[..n]);
    }
    Ok(pcm)
}

#[test]
fn two_seconds_of_opus_become_two_seconds_of_decodable_aac() -> Result<()> {
    let frames = transcode(2, opus::Channels::Stereo, &[])?;
    // 96000 samples = 93.75 AAC frames; the encoder holds back at most ~2.
    ensure!((90..=94).contains(&frames.len()), "{} AAC frames", frames.len());
    for pair in frames.windows(2) {
        ensure!(pair[1].0 == pair[0].0 + 1024, "contiguous timestamps: {} then {}", pair[0].0, pair[1].0);
    }
    ensure!(frames[0].0 == 123_456, "timeline starts at the first Opus timestamp");
    let pcm = decode(&frames)?;
    ensure!(pcm.len() == frames.len() * 1024 * 2, "stereo, 1024 samples per frame");
    // Skip the encoder's start-up delay, then count zero crossings of the left channel.
    let left: Vec<i16> = pcm.iter().step_by(2).skip(4096).copied().collect();
    let seconds = left.len() as f64 / RATE as f64;
    let crossings = left.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64;
    let hz = crossings / 2.0 / seconds;
    ensure!((420.0..=460.0).contains(&hz), "decoded tone is {hz:.1} Hz");
    let peak = left.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    ensure!(peak > 5_000, "audible (peak {peak})");
    Ok(())
}

#[test]
fn mono_opus_is_upmixed_to_stereo_aac() -> Result<()> {
    let frames = transcode(1, opus::Channels::Mono, &[])?;
    ensure!((44..=47).contains(&frames.len()), "{} AAC frames", frames.len());
    let pcm = decode(&frames)?;
    ensure!(pcm.len() == frames.len() * 2048, "two channels out");
    Ok(())
}

#[test]
fn lost_packets_are_concealed_and_the_timeline_stays_contiguous() -> Result<()> {
    let frames = transcode(2, opus::Channels::Stereo, &[10, 11, 40])?;
    ensure!((90..=94).contains(&frames.len()), "loss does not shorten the audio: {} frames", frames.len());
    for pair in frames.windows(2) {
        ensure!(pair[1].0 == pair[0].0 + 1024, "contiguous timestamps");
    }
    decode(&frames)?;
    Ok(())
}
