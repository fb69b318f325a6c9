//! IVS-style pagination for every list endpoint: `maxResults` (1–100,
//! default 50) and an opaque `nextToken` from the previous page. A token
//! names its list and the store position to continue after
//! ([`PageQuery`]); it is not secret and not signed — a tampered token can
//! only move the start of a page of things the caller may list anyway.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::store::PageQuery;
use crate::AppError;

/// Page size when the request names none (IVS ListStages' default).
pub const DEFAULT_MAX_RESULTS: u32 = 50;
/// Largest page a request may ask for.
pub const MAX_MAX_RESULTS: u32 = 100;

/// Which list a token belongs to, so that one list's token is refused by
/// another rather than silently starting it somewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Stages,
    Participants,
    DemoGroups,
    Rooms,
    Channels,
    PlaybackKeys,
}

impl Listing {
    fn tag(self) -> &'static str {
        match self {
            Listing::Stages => "stages",
            Listing::Participants => "participants",
            Listing::DemoGroups => "groups",
            Listing::Rooms => "rooms",
            Listing::Channels => "channels",
            Listing::PlaybackKeys => "playback-keys",
        }
    }
}

/// The page a request asks for: `maxResults` checked, `nextToken` decoded.
pub fn page_query(listing: Listing, max_results: Option<u32>, next_token: Option<&str>) -> Result<PageQuery, AppError> {
    let limit = max_results.unwrap_or(DEFAULT_MAX_RESULTS);
    if !(1..=MAX_MAX_RESULTS).contains(&limit) {
        return Err(AppError::bad_request(
            "INVALID_MAX_RESULTS",
            format!("maxResults is from 1 to {MAX_MAX_RESULTS} (default {DEFAULT_MAX_RESULTS}); it was {limit}"),
        ));
    }
    let after = match next_token.map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => Some(decode(listing, token).ok_or_else(|| {
            AppError::bad_request(
                "INVALID_NEXT_TOKEN",
                "nextToken is not one this list gave out; pass the nextToken of the previous page unchanged",
            )
        })?),
    };
    Ok(PageQuery { after, limit })
}

/// The `nextToken` for a page whose store position to continue after is
/// `next` (none on the last page).
pub fn next_token(listing: Listing, next: Option<i64>) -> Option<String> {
    next.map(|position| URL_SAFE_NO_PAD.encode(format!("{}:{position}", listing.tag())))
}

fn decode(listing: Listing, token: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let (tag, position) = text.split_once(':')?;
    if tag != listing.tag() {
        return None;
    }
    position.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_stay_in_their_list() {
        let token = next_token(Listing::Stages, Some(42)).unwrap_or_default();
        assert_eq!(page_query(Listing::Stages, Some(7), Some(&token)), Ok(PageQuery { after: Some(42), limit: 7 }));
        let other = page_query(Listing::Rooms, None, Some(&token)).err().map(|e| e.code);
        assert_eq!(other, Some("INVALID_NEXT_TOKEN"));
        for junk in ["%%%", "c3RhZ2Vz", "c3RhZ2VzOng"] {
            let e = page_query(Listing::Stages, None, Some(junk)).err().map(|e| e.code);
            assert_eq!(e, Some("INVALID_NEXT_TOKEN"), "{junk}");
        }
        assert_eq!(next_token(Listing::Stages, None), None);
    }

    #[test]
    fn max_results_is_bounded() {
        assert_eq!(page_query(Listing::Channels, None, None), Ok(PageQuery::first(DEFAULT_MAX_RESULTS)));
        assert_eq!(page_query(Listing::Channels, Some(100), Some("")), Ok(PageQuery::first(100)));
        for bad in [0, 101, u32::MAX] {
            let e = page_query(Listing::Channels, Some(bad), None).err().map(|e| e.code);
            assert_eq!(e, Some("INVALID_MAX_RESULTS"), "{bad}");
        }
    }
}
