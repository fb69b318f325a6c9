//! Minimal base64url decoding for JWT segments (a crate would cost more wasm
//! than these few lines).

use thiserror::Error;

/// The input is not base64url.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("invalid base64url input")]
pub struct Base64Error;

fn sextet(c: u8) -> Result<u32, Base64Error> {
    Ok(match c {
        b'A'..=b'Z' => (c - b'A') as u32,
        b'a'..=b'z' => (c - b'a' + 26) as u32,
        b'0'..=b'9' => (c - b'0' + 52) as u32,
        // Standard alphabet accepted too: some encoders get it wrong.
        b'-' | b'+' => 62,
        b'_' | b'/' => 63,
        _ => return Err(Base64Error),
    })
}

/// Decodes unpadded (or padded) base64url.
pub fn decode(input: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes = input.trim_end_matches('=').as_bytes();
    if bytes.len() % 4 == 1 {
        return Err(Base64Error);
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= sextet(c)? << (18 - 6 * i);
        }
        let n = chunk.len() - 1;
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_all_lengths() -> Result<(), Base64Error> {
        assert_eq!(decode("")?, b"");
        assert_eq!(decode("Zg")?, b"f");
        assert_eq!(decode("Zm8")?, b"fo");
        assert_eq!(decode("Zm9v")?, b"foo");
        assert_eq!(decode("Zm9vYg==")?, b"foob");
        assert_eq!(decode("-_8")?, vec![0xfb, 0xff]);
        Ok(())
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode("a").is_err());
        assert!(decode("ab$d").is_err());
    }
}
