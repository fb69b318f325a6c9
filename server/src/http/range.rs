//! Single byte ranges (RFC 9110 §14) for bodies held whole in memory: what
//! an HLS origin answers to players that fetch part of a segment. The IVS
//! Player's bandwidth probe asks for a small range of a complete segment to
//! measure latency, then the whole one: answered with the whole segment
//! both times, it takes latency for most of the download time and believes
//! the link several times faster than it is.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

/// What a `Range` header asks of a body of a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// No range (or one this server does not take, such as several ranges
    /// or another unit): the whole body, `200`.
    Whole,
    /// Bytes `start..end` (end exclusive), `206`.
    Part { start: usize, end: usize },
    /// Starts past the end: `416`.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` against a body of `len`
/// bytes. Anything malformed is ignored (the whole body), as RFC 9110 allows.
pub fn parse(range: Option<&str>, len: usize) -> Ranged {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let number = |s: &str| s.trim().parse::<usize>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // A suffix: the last n bytes.
        (true, _, Some(n)) if n > 0 => Ranged::Part { start: len.saturating_sub(n), end: len },
        (true, _, _) => Ranged::Unsatisfiable,
        (false, Some(start), _) if start >= len => Ranged::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => Ranged::Part { start, end: len },
        (false, Some(start), Some(last)) if last >= start => Ranged::Part { start, end: last.saturating_add(1).min(len) },
        _ => Ranged::Whole,
    }
}

/// `data` (a body held whole) as the request's `Range` asks: `200` with
/// `Accept-Ranges`, `206` with `Content-Range`, or `416`. `content_type`
/// and `cache` go on every answer.
pub fn respond(request: &HeaderMap, content_type: &'static str, cache: &'static str, data: Vec<u8>) -> Response {
    let asked = request.get(header::RANGE).and_then(|v| v.to_str().ok());
    let len = data.len();
    let (status, body, content_range) = match parse(asked, len) {
        Ranged::Whole => (StatusCode::OK, Body::from(data), None),
        Ranged::Part { start, end } => {
            let slice = data.get(start..end).map(<[u8]>::to_vec).unwrap_or_default();
            (StatusCode::PARTIAL_CONTENT, Body::from(slice), Some(format!("bytes {start}-{}/{len}", end.saturating_sub(1))))
        }
        Ranged::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, Body::empty(), Some(format!("bytes */{len}"))),
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(v) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::CONTENT_RANGE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_are_taken_and_the_rest_is_the_whole_body() {
        assert_eq!(parse(None, 100), Ranged::Whole);
        assert_eq!(parse(Some("bytes=0-9"), 100), Ranged::Part { start: 0, end: 10 });
        assert_eq!(parse(Some("bytes=90-"), 100), Ranged::Part { start: 90, end: 100 });
        assert_eq!(parse(Some("bytes=-10"), 100), Ranged::Part { start: 90, end: 100 });
        assert_eq!(parse(Some("bytes=-500"), 100), Ranged::Part { start: 0, end: 100 });
        // An end past the body is cut to it.
        assert_eq!(parse(Some("bytes=50-1000"), 100), Ranged::Part { start: 50, end: 100 });
        assert_eq!(parse(Some("bytes=100-"), 100), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), Ranged::Unsatisfiable);
        for ignored in ["bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=x-", "bytes=", "bytes=0-99999999999999999999999"] {
            assert_eq!(parse(Some(ignored), 100), Ranged::Whole, "{ignored}");
        }
    }

    #[test]
    fn answers_carry_the_status_and_headers_of_what_was_asked() {
        let data: Vec<u8> = (0..100).collect();
        let ask = |range: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, HeaderValue::from_str(range).unwrap_or(HeaderValue::from_static("")));
            respond(&h, "video/iso.segment", "public", data.clone())
        };
        let whole = respond(&HeaderMap::new(), "video/iso.segment", "public", data.clone());
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(whole.headers()[header::ACCEPT_RANGES], "bytes");
        let part = ask("bytes=10-19");
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.headers()[header::CONTENT_RANGE], "bytes 10-19/100");
        assert_eq!(part.headers()[header::CACHE_CONTROL], "public");
        let past = ask("bytes=200-");
        assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(past.headers()[header::CONTENT_RANGE], "bytes */100");
    }
}
