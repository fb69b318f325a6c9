//! Sans-IO pieces of ICE over TCP: RFC 4571 framing (every STUN, DTLS and
//! RTP packet preceded by its length as a 16-bit big-endian number) and
//! the timers of one TCP connection. `tcp.rs` is the socket adapter.

use std::time::{Duration, Instant};

/// Why a TCP media connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("a frame of {0} bytes is larger than allowed")]
    TooLarge(usize),
    #[error("an empty frame")]
    Empty,
}

/// Splits a byte stream into RFC 4571 frames. Holds at most one frame plus
/// its length prefix beyond what the caller pushed last.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame, buf: Vec::new() }
    }

    /// Append bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if any. An oversized or empty frame is an
    /// error: the stream cannot be resynchronised, so the connection ends.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let Some(&[hi, lo]) = self.buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return Err(FramingError::Empty);
        }
        if len > self.max_frame {
            return Err(FramingError::TooLarge(len));
        }
        let Some(frame) = self.buf.get(2..2 + len) else {
            return Ok(None);
        };
        let frame = frame.to_vec();
        self.buf.drain(..2 + len);
        Ok(Some(frame))
    }
}

/// `packet` with its RFC 4571 length prefix; `None` if it cannot be framed
/// (over 65,535 bytes, which no WebRTC packet is).
pub fn encode(packet: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = Vec::with_capacity(packet.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(out)
}

/// Why the server closes a TCP media connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkExpiry {
    /// No packet a session accepted (a STUN check with a known ufrag) in time.
    NoIce,
    /// Established, then nothing arrived for too long (browsers send a
    /// consent check every few seconds).
    Silent,
}

impl LinkExpiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoIce => "no valid ICE in time",
            Self::Silent => "silent for too long",
        }
    }
}

/// The timers of one TCP media connection: it must carry valid ICE within
/// `ice_timeout` of the accept, and then never go quiet for `silence_timeout`.
#[derive(Debug, Clone)]
pub struct LinkTimer {
    ice_timeout: Duration,
    silence_timeout: Duration,
    opened: Instant,
    last_rx: Instant,
    validated: bool,
}

impl LinkTimer {
    pub fn new(ice_timeout: Duration, silence_timeout: Duration, now: Instant) -> Self {
        Self { ice_timeout, silence_timeout, opened: now, last_rx: now, validated: false }
    }

    /// Bytes arrived.
    pub fn on_data(&mut self, now: Instant) {
        self.last_rx = self.last_rx.max(now);
    }

    /// A session accepted a packet from this connection.
    pub fn on_validated(&mut self) {
        self.validated = true;
    }

    pub fn deadline(&self) -> Instant {
        if self.validated {
            self.last_rx + self.silence_timeout
        } else {
            (self.opened + self.ice_timeout).min(self.last_rx + self.silence_timeout)
        }
    }

    pub fn expired(&self, now: Instant) -> Option<LinkExpiry> {
        if now < self.deadline() {
            None
        } else if self.validated {
            Some(LinkExpiry::Silent)
        } else {
            Some(LinkExpiry::NoIce)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_however_the_stream_is_split() {
        let mut stream = Vec::new();
        for packet in [&b"stun"[..], &[7u8; 300][..], b"x"] {
            stream.extend(encode(packet).unwrap_or_default());
        }
        for chunk in [1, 2, 3, 7, 1000] {
            let mut decoder = FrameDecoder::new(1500);
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                decoder.push(piece);
                while let Ok(Some(frame)) = decoder.next_frame() {
                    frames.push(frame);
                }
            }
            assert_eq!(frames, [b"stun".to_vec(), vec![7u8; 300], b"x".to_vec()], "chunk {chunk}");
        }
    }

    #[test]
    fn oversized_and_empty_frames_are_errors() {
        let mut decoder = FrameDecoder::new(1500);
        decoder.push(&[0xff, 0xff, 1, 2, 3]);
        assert_eq!(decoder.next_frame(), Err(FramingError::TooLarge(65_535)));
        let mut decoder = FrameDecoder::new(1500);
        decoder.push(&[0, 0]);
        assert_eq!(decoder.next_frame(), Err(FramingError::Empty));
        assert_eq!(encode(&vec![0; 70_000]), None);
    }

    #[test]
    fn a_connection_needs_ice_soon_and_then_must_not_go_quiet() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut link = LinkTimer::new(Duration::from_secs(5), Duration::from_secs(20), t0);
        link.on_data(s(1));
        assert_eq!(link.expired(s(4)), None);
        assert_eq!(link.expired(s(5)), Some(LinkExpiry::NoIce), "bytes alone are not ICE");

        let mut link = LinkTimer::new(Duration::from_secs(5), Duration::from_secs(20), t0);
        link.on_data(s(1));
        link.on_validated();
        link.on_data(s(10));
        assert_eq!(link.expired(s(29)), None);
        assert_eq!(link.expired(s(30)), Some(LinkExpiry::Silent));
    }
}
