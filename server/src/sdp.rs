//! Accepting an untrusted SDP offer with str0m, shared by the stage SFU and
//! channel ingest, and what a client is told when that fails.
//!
//! str0m's parser is a library we do not own, so it runs inside
//! `catch_unwind`: a panic costs the one request (the caller discards the
//! `Rtc`). Its parse errors read `Parse error at PointerOffset(0x7f…)` — a
//! heap address — so they are never shown: the client gets the line number
//! and line type instead, and the original text is logged at debug.

use std::panic::AssertUnwindSafe;

use str0m::change::SdpOffer;
use str0m::error::SdpError;
use str0m::{Rtc, RtcError};

/// Longest str0m sentence passed on to a client as it is.
const MAX_DETAIL_CHARS: usize = 160;

/// Why an offer was not accepted. The `Display` text is what a client sees
/// (after "the SDP offer …: "); it never carries an address or a Rust type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// str0m's grammar refused the text; where, when it could be told.
    #[error("{}", unparsable(*.0))]
    Unparsable(Option<Line>),
    /// It parsed but str0m refused it, e.g. "missing a=fingerprint".
    #[error("{0}")]
    Refused(String),
    /// The parser panicked.
    #[error("it could not be processed")]
    Crashed,
}

/// Where an offer stopped parsing: 1-based line number and the line's type
/// letter (`a` for `a=…`), when the line has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub kind: Option<char>,
}

fn unparsable(line: Option<Line>) -> String {
    match line {
        Some(Line { number, kind: Some(kind) }) => format!("line {number} (`{kind}=`) could not be parsed"),
        Some(Line { number, kind: None }) => format!("line {number} could not be parsed"),
        None => "it could not be parsed".to_owned(),
    }
}

/// Parse `offer` and let `rtc` answer it; the answer's SDP text.
pub fn accept_offer(rtc: &mut Rtc, offer: &str) -> Result<String, OfferError> {
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| from_sdp_error(e, offer))?;
        let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| from_rtc_error(e, offer))?;
        Ok(answer.to_sdp_string())
    }));
    result.unwrap_or_else(|_| {
        tracing::debug!("the SDP parser panicked on an offer");
        Err(OfferError::Crashed)
    })
}

fn from_sdp_error(e: SdpError, offer: &str) -> OfferError {
    tracing::debug!(error = %e, "SDP offer refused");
    match e {
        SdpError::ParseError(text) => OfferError::Unparsable(error_line(&text, offer)),
        SdpError::Inconsistent(text) => OfferError::Refused(screened(&text)),
    }
}

fn from_rtc_error(e: RtcError, offer: &str) -> OfferError {
    match e {
        RtcError::Sdp(e) => from_sdp_error(e, offer),
        RtcError::RemoteSdp(text) => {
            tracing::debug!(error = %text, "SDP offer refused");
            OfferError::Refused(screened(&text))
        }
        other => {
            tracing::debug!(error = %other, "SDP offer refused");
            OfferError::Refused("it could not be accepted".to_owned())
        }
    }
}

/// str0m's own sentence when it is short plain text without anything that
/// looks like an address; a generic one otherwise.
fn screened(text: &str) -> String {
    let plain = text.chars().all(|c| c == ' ' || c.is_ascii_graphic()) && !text.contains("0x");
    if plain && !text.is_empty() && text.chars().count() <= MAX_DETAIL_CHARS {
        text.to_owned()
    } else {
        "it could not be accepted".to_owned()
    }
}

/// The line a combine parse error points at. The error names the position
/// as an address inside `offer` (`PointerOffset(0x…)`); turned back into an
/// offset, it gives a line number. Anything unexpected gives `None`.
fn error_line(error: &str, offer: &str) -> Option<Line> {
    let hex = error.split("PointerOffset(0x").nth(1)?.split(')').next()?;
    let address = usize::from_str_radix(hex, 16).ok()?;
    let offset = address.checked_sub(offer.as_ptr() as usize).filter(|o| *o <= offer.len())?;
    let before = offer.get(..offset)?;
    let number = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = offer.get(start..)?.lines().next().unwrap_or_default();
    let mut chars = line.chars();
    let kind = match (chars.next(), chars.next()) {
        (Some(c), Some('=')) if c.is_ascii_lowercase() => Some(c),
        _ => None,
    };
    Some(Line { number, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_error_names_the_line_not_the_address() {
        let offer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ngarbage\r\n";
        let position = offer.find("garbage").map(|i| offer.as_ptr() as usize + i + 2).unwrap_or_default();
        let error = format!("Parse error at PointerOffset(0x{position:x})\nUnexpected `r`");
        assert_eq!(error_line(&error, offer), Some(Line { number: 3, kind: None }));
        let offer = offer.replace("garbage", "x=garbage");
        let position = offer.find("x=").map(|i| offer.as_ptr() as usize + i).unwrap_or_default();
        let error = format!("Parse error at PointerOffset(0x{position:x})");
        assert_eq!(error_line(&error, &offer), Some(Line { number: 3, kind: Some('x') }));
        let a = offer.replace("x=garbage", "a=garbage");
        let position = a.find("a=").map(|i| a.as_ptr() as usize + i).unwrap_or_default();
        let error = format!("Parse error at PointerOffset(0x{position:x})");
        let text = OfferError::Unparsable(error_line(&error, &a)).to_string();
        assert_eq!(text, "line 3 (`a=`) could not be parsed");
        // An address outside the offer is not trusted.
        assert_eq!(error_line("Parse error at PointerOffset(0x10)", &offer), None);
        assert_eq!(screened("at PointerOffset(0x7f00)"), "it could not be accepted");
        assert_eq!(screened("missing a=fingerprint"), "missing a=fingerprint");
    }
}
