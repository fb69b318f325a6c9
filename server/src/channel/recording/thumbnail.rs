//! A JPEG from one H.264 keyframe, in process: OpenH264 (built from source
//! by the `openh264` crate) decodes, `jpeg-encoder` encodes. CPU-bound and
//! blocking: the recorder runs it on a blocking thread, one at a time.

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

/// JPEG quality (1–100).
const QUALITY: u8 = 80;

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("the decoder failed: {0}")]
    Decode(String),
    #[error("the keyframe decoded to no picture")]
    NoPicture,
    #[error("the picture is too large for a JPEG ({0}x{1})")]
    TooLarge(usize, usize),
    #[error("the JPEG encoder failed: {0}")]
    Encode(String),
}

/// AVCC (4-byte lengths) to Annex-B (start codes); a truncated length ends it.
fn annex_b(avcc: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(avcc.len() + 16);
    let mut rest = avcc;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some(nal) = tail.get(..len) else { break };
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        rest = &tail[len..];
    }
    out
}

/// The keyframe `avcc` (its SPS and PPS in band, as the packager keeps it)
/// as a JPEG of the same size.
pub fn jpeg_from_keyframe(avcc: &[u8]) -> Result<Vec<u8>, ThumbnailError> {
    let mut decoder = Decoder::new().map_err(|e| ThumbnailError::Decode(e.to_string()))?;
    let stream = annex_b(avcc);
    let (rgb, (w, h)) = {
        let decoded = decoder.decode(&stream).map_err(|e| ThumbnailError::Decode(e.to_string()))?;
        let picture = match decoded {
            Some(p) => p,
            None => return from_flush(&mut decoder),
        };
        let dim = picture.dimensions();
        let mut rgb = vec![0u8; dim.0 * dim.1 * 3];
        picture.write_rgb8(&mut rgb);
        (rgb, dim)
    };
    encode(&rgb, w, h)
}

fn from_flush(decoder: &mut Decoder) -> Result<Vec<u8>, ThumbnailError> {
    let flushed = decoder.flush_remaining().map_err(|e| ThumbnailError::Decode(e.to_string()))?;
    let picture = flushed.into_iter().next().ok_or(ThumbnailError::NoPicture)?;
    let (w, h) = picture.dimensions();
    let mut rgb = vec![0u8; w * h * 3];
    picture.write_rgb8(&mut rgb);
    encode(&rgb, w, h)
}

fn encode(rgb: &[u8], w: usize, h: usize) -> Result<Vec<u8>, ThumbnailError> {
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(ThumbnailError::TooLarge(w, h));
    };
    if w == 0 || h == 0 {
        return Err(ThumbnailError::NoPicture);
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, QUALITY)
        .encode(rgb, w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
    Ok(out)
}
