//! The IVS `StageError` model: a numeric code plus a category.

use thiserror::Error;

/// `StageErrorCode`, numbered as in the IVS Web Broadcast SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    TokenMalformed = 1,
    TokenExpired = 2,
    Timeout = 3,
    Failed = 4,
    Canceled = 5,
    StageAtCapacity = 6,
    CodecMismatch = 7,
    TokenNotAllowed = 8,
    StageDeleted = 9,
    ParticipantDisconnected = 10,
}

impl ErrorCode {
    /// The number JS sees in `error.code`.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Maps a server `AppError.code` onto the SDK code.
    pub fn from_server_code(code: &str) -> ErrorCode {
        match code {
            "TOKEN_MALFORMED" | "TOKEN_INVALID" => ErrorCode::TokenMalformed,
            "TOKEN_EXPIRED" => ErrorCode::TokenExpired,
            "STAGE_NOT_FOUND" => ErrorCode::StageDeleted,
            "PARTICIPANT_DISCONNECTED" => ErrorCode::ParticipantDisconnected,
            "TOKEN_NOT_ALLOWED" => ErrorCode::TokenNotAllowed,
            "STAGE_FULL" | "STAGE_AT_CAPACITY" => ErrorCode::StageAtCapacity,
            _ => ErrorCode::Failed,
        }
    }
}

/// `StageErrorCategory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    Join,
    Publish,
    Subscribe,
}

impl ErrorCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Join => "JOIN_ERROR",
            ErrorCategory::Publish => "PUBLISH_ERROR",
            ErrorCategory::Subscribe => "SUBSCRIBE_ERROR",
        }
    }
}

/// An error as the SDK reports it to JS (`StageError`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct StageError {
    pub code: ErrorCode,
    pub category: ErrorCategory,
    pub message: String,
    /// The remote participant a subscribe error concerns.
    pub participant_id: Option<String>,
}

impl StageError {
    pub fn new(category: ErrorCategory, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            category,
            message: message.into(),
            participant_id: None,
        }
    }

    /// Builds the error for a refused HTTP request from the server's
    /// `{code, message}` body (absent when the body was not JSON).
    pub fn from_http(
        category: ErrorCategory,
        status: u16,
        body_code: Option<&str>,
        body_message: Option<&str>,
    ) -> Self {
        let code = match body_code {
            Some(c) => ErrorCode::from_server_code(c),
            None if status == 408 || status == 504 => ErrorCode::Timeout,
            None => ErrorCode::Failed,
        };
        let message = match (body_code, body_message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            (None, _) => format!("request failed with HTTP status {status}"),
        };
        Self::new(category, code, message)
    }

    /// The error for a failed media-plane request.
    pub fn from_failure(category: ErrorCategory, f: &HttpFailure) -> Self {
        match f.status {
            Some(status) => Self::from_http(category, status, f.code.as_deref(), Some(&f.message)),
            None => Self::new(category, ErrorCode::Failed, f.message.clone()),
        }
    }
}

/// A failed media-plane request (WHIP/WHEP POST, channel ingest) or peer
/// connection setup, as the adapter saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFailure {
    /// The HTTP status; `None` when no answer came (network) or the
    /// browser refused (`network` tells which).
    pub status: Option<u16>,
    /// The server's `{code}` when the body had one.
    pub code: Option<String>,
    pub message: String,
    /// No answer at all: offline, connection refused, timed out.
    pub network: bool,
}

impl HttpFailure {
    pub fn network(message: impl Into<String>) -> Self {
        Self { status: None, code: None, message: message.into(), network: true }
    }

    pub fn browser(message: impl Into<String>) -> Self {
        Self { status: None, code: None, message: message.into(), network: false }
    }

    pub fn http(status: u16, code: Option<String>, message: Option<String>) -> Self {
        let message = message.unwrap_or_else(|| format!("HTTP status {status}"));
        Self { status: Some(status), code, message, network: false }
    }

    /// Whether trying again later can succeed: network failures, server
    /// errors and "not there (yet)" answers — a publisher the restarted
    /// server does not know yet, an event plane not yet reconnected, a
    /// channel still holding the old broadcast. Refused tokens, refused
    /// offers and a full or deleted stage get the same answer again.
    pub fn retryable(&self) -> bool {
        let Some(status) = self.status else {
            return self.network;
        };
        let fatal_code = self.code.as_deref().is_some_and(|c| {
            c.starts_with("TOKEN_")
                || c.starts_with("STREAM_KEY")
                || matches!(
                    c,
                    "STAGE_NOT_FOUND" | "STAGE_AT_CAPACITY" | "PARTICIPANT_DISCONNECTED" | "CHANNEL_NOT_FOUND"
                )
        });
        !fatal_code && !matches!(status, 400 | 401 | 403 | 405 | 413 | 415)
    }

    /// The [`Outcome`](super::link::Outcome) of an attempt that ended with `result`.
    pub fn outcome(result: &Result<(), HttpFailure>) -> super::link::Outcome {
        use super::link::Outcome;
        match result {
            Ok(()) => Outcome::Answered,
            Err(f) if f.retryable() => Outcome::Retry,
            Err(_) => Outcome::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_map_to_ivs_codes() {
        let e = StageError::from_http(
            ErrorCategory::Publish,
            409,
            Some("STAGE_AT_CAPACITY"),
            Some("full"),
        );
        assert_eq!(e.code, ErrorCode::StageAtCapacity);
        assert_eq!(e.code.as_u32(), 6);
        assert_eq!(e.category.as_str(), "PUBLISH_ERROR");
        assert_eq!(e.message, "STAGE_AT_CAPACITY: full");
        // The event plane refuses a join past the member cap with STAGE_FULL.
        let e = StageError::from_http(ErrorCategory::Join, 409, Some("STAGE_FULL"), Some("full"));
        assert_eq!((e.code, e.category), (ErrorCode::StageAtCapacity, ErrorCategory::Join));
        let e = StageError::from_http(ErrorCategory::Publish, 403, Some("TOKEN_NOT_ALLOWED"), None);
        assert_eq!(e.code.as_u32(), 8);
        let e = StageError::from_http(ErrorCategory::Join, 404, Some("STAGE_NOT_FOUND"), None);
        assert_eq!(e.code, ErrorCode::StageDeleted);
        let e = StageError::from_http(ErrorCategory::Join, 500, None, None);
        assert_eq!(e.code, ErrorCode::Failed);
    }

    #[test]
    fn what_is_worth_retrying() {
        let http = |status, code: &str| HttpFailure::http(status, Some(code.to_owned()), None);
        for retry in [
            HttpFailure::network("offline"),
            http(404, "PUBLISHER_NOT_FOUND"),
            http(409, "NOT_JOINED"),
            http(409, "STREAM_IN_PROGRESS"),
            http(503, "UNAVAILABLE"),
            HttpFailure::http(502, None, None),
        ] {
            assert!(retry.retryable(), "{retry:?}");
        }
        for fatal in [
            HttpFailure::browser("bad ICE server URL"),
            http(401, "TOKEN_EXPIRED"),
            http(403, "TOKEN_NOT_ALLOWED"),
            http(409, "STAGE_AT_CAPACITY"),
            http(404, "STAGE_NOT_FOUND"),
            http(400, "INVALID_SDP"),
            http(401, "STREAM_KEY_INVALID"),
        ] {
            assert!(!fatal.retryable(), "{fatal:?}");
        }
        let e = StageError::from_failure(ErrorCategory::Subscribe, &http(403, "TOKEN_NOT_ALLOWED"));
        assert_eq!((e.code, e.category), (ErrorCode::TokenNotAllowed, ErrorCategory::Subscribe));
        let e = StageError::from_failure(ErrorCategory::Publish, &HttpFailure::network("offline"));
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::Failed, "offline"));
    }
}
