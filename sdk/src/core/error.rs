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
            "STAGE_AT_CAPACITY" => ErrorCode::StageAtCapacity,
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
        let e = StageError::from_http(ErrorCategory::Publish, 403, Some("TOKEN_NOT_ALLOWED"), None);
        assert_eq!(e.code.as_u32(), 8);
        let e = StageError::from_http(ErrorCategory::Join, 404, Some("STAGE_NOT_FOUND"), None);
        assert_eq!(e.code, ErrorCode::StageDeleted);
        let e = StageError::from_http(ErrorCategory::Join, 500, None, None);
        assert_eq!(e.code, ErrorCode::Failed);
    }
}
