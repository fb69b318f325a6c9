//! The one error type HTTP handlers return. It renders as
//! `{"code": "...", "message": "..."}` with a fitting status; internal
//! details are logged, never returned.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use stagecast_protocol::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// Something broke inside; `detail` is logged, the client sees a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal server error")
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for AppError {}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ApiError { code: self.code.to_owned(), message: self.message };
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body extractor whose rejections use the [`AppError`] shape, all
/// 4xx with a code a client can switch on:
/// - `INVALID_JSON` (400): the body is not JSON at all;
/// - `UNKNOWN_FIELD` (400): a field the request type does not have (request
///   types are `deny_unknown_fields`), named with the allowed ones;
/// - `INVALID_FIELD` (400): a field of the wrong type, a value outside an
///   enum (the allowed values are listed), or a required field missing —
///   the message names the field by its path (`capabilities[0]: …`);
/// - `UNSUPPORTED_MEDIA_TYPE` (415) without `Content-Type: application/json`;
/// - `BODY_TOO_LARGE` (413).
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                tracing::debug!(error = %rejection.body_text(), "JSON body refused");
                Err(json_rejection(&rejection))
            }
        }
    }
}

/// What axum puts before the serde error in a data-error rejection.
const DATA_ERROR_PREFIX: &str = "Failed to deserialize the JSON body into the target type: ";

fn json_rejection(rejection: &JsonRejection) -> AppError {
    match rejection {
        JsonRejection::JsonDataError(_) => {
            let text = rejection.body_text();
            let detail = text.strip_prefix(DATA_ERROR_PREFIX).unwrap_or(&text);
            shape_error(detail)
        }
        JsonRejection::JsonSyntaxError(_) => AppError::bad_request(
            "INVALID_JSON",
            format!("the request body is not valid JSON: {}", syntax_detail(rejection)),
        ),
        JsonRejection::MissingJsonContentType(_) => AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the request body as JSON, with Content-Type: application/json",
        ),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE", "the request body is too large")
        }
        _ => AppError::new(rejection.status(), "INVALID_JSON", "the request body could not be read"),
    }
}

fn syntax_detail(rejection: &JsonRejection) -> String {
    let text = rejection.body_text();
    text.strip_prefix("Failed to parse the request body as JSON: ").unwrap_or(&text).to_owned()
}

/// A body (or query) that parsed but does not fit the request type. serde's
/// own wording already names the field (by path) and the allowed fields or
/// values; it is sorted into a code here.
fn shape_error(detail: &str) -> AppError {
    let code = if detail.contains("unknown field `") { "UNKNOWN_FIELD" } else { "INVALID_FIELD" };
    AppError::bad_request(code, format!("request not valid: {}", without_type_names(detail)))
}

/// Query parameters as `T` (which should be `deny_unknown_fields`), with
/// the same `UNKNOWN_FIELD` / `INVALID_FIELD` errors as [`JsonBody`].
pub struct QueryParams<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(rejection) => {
                let text = rejection.body_text();
                Err(shape_error(text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text)))
            }
        }
    }
}

/// Middleware: a 404 or 405 that carries no body of its own (the router's
/// fallbacks, method-not-allowed, static files) gets the JSON error shape,
/// keeping its headers; so does the router's own text `400` for a path
/// parameter it cannot read (`/v1/stages/%FF`) under `/v1` and `/api`, as
/// `INVALID_PATH`. Other responses that already have a body and a content
/// type (an `AppError`, HLS errors in text, as players expect) pass unchanged.
pub async fn json_for_bare_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(200).collect();
    let response = next.run(req).await;
    let status = response.status();
    let api_path = path.starts_with("/v1/") || path.starts_with("/api/");
    if status == StatusCode::BAD_REQUEST && api_path && is_text(&response) {
        return path_rejection(response).await;
    }
    let bare = !response.headers().contains_key(header::CONTENT_TYPE);
    if !bare || (status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED) {
        return response;
    }
    let (parts, _) = response.into_parts();
    let error = if status == StatusCode::NOT_FOUND {
        AppError::not_found("NOT_FOUND", format!("there is nothing at {path}"))
    } else {
        // The router adds `Allow` around this layer, so it is named, not copied.
        AppError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!("{method} is not allowed on {path}; the Allow header lists the methods that are"),
        )
    };
    let mut json = error.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
            json.headers_mut().append(name.clone(), value.clone());
        }
    }
    json
}

fn is_text(response: &Response) -> bool {
    response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/plain"))
}

/// axum's text for a path parameter it could not read ("Invalid URL:
/// Invalid UTF-8 in `id`") as the JSON error shape. The text names the
/// parameter, never the server's internals; a long one is not read.
async fn path_rejection(response: Response) -> Response {
    const MAX_TEXT: usize = 512;
    let text = axum::body::to_bytes(response.into_body(), MAX_TEXT).await.ok();
    let text = text.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
    let message = match text.trim() {
        "" => "a path parameter could not be read".to_owned(),
        text => text.to_owned(),
    };
    AppError::bad_request("INVALID_PATH", message).into_response()
}

/// An SDP request body that could not be read (too large, or the
/// connection failed): a fixed message for the status, no transport detail.
pub fn sdp_unreadable(status: StatusCode) -> AppError {
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the SDP offer is too large"
    } else {
        "the SDP offer could not be read"
    };
    AppError::new(status, "INVALID_SDP", message)
}

/// A serde_json error as a client may see it: serde's sentence with the
/// names of our Rust types taken out ("expected struct CreateRequest" →
/// "expected an object"), and position info kept.
pub fn json_error_text(e: &serde_json::Error) -> String {
    if e.is_syntax() || e.is_eof() {
        return format!("not valid JSON at line {} column {}", e.line(), e.column());
    }
    without_type_names(&e.to_string())
}

/// Replace `struct Foo` / `enum Foo` (serde's "expected …" wording) with
/// what the client should send.
fn without_type_names(text: &str) -> String {
    const KINDS: [(&str, &str); 5] = [
        ("internally tagged enum ", "a known message type"),
        ("tuple struct ", "an array"),
        ("unit struct ", "null"),
        ("struct ", "an object"),
        ("enum ", "one of the known values"),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for (kind, replacement) in KINDS {
            if let Some(after) = rest.strip_prefix(kind) {
                let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                if name_len > 0 && after.starts_with(|c: char| c.is_ascii_uppercase()) {
                    out.push_str(replacement);
                    rest = after.get(name_len..).unwrap_or_default();
                    continue 'scan;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_lose_rust_type_names() {
        assert_eq!(
            without_type_names("invalid type: integer `5`, expected struct CreateChannelRequest at line 1 column 1"),
            "invalid type: integer `5`, expected an object at line 1 column 1"
        );
        assert_eq!(without_type_names("expected internally tagged enum Request"), "expected a known message type");
        assert_eq!(without_type_names("missing field `userId`"), "missing field `userId`");
        let e = serde_json::from_str::<serde_json::Value>("{").err().map(|e| json_error_text(&e));
        assert_eq!(e.as_deref(), Some("not valid JSON at line 1 column 1"));
    }
}
