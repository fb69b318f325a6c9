//! Client-side reading of the participant token. The SDK never verifies the
//! signature (the server does); it only needs the claims to find the
//! endpoints and to fail fast on a malformed or expired token.

use super::base64url;
use super::json::{self, Fields};
use stagecast_protocol::token::{ParticipantClaims, TokenCapabilities};
use thiserror::Error;

/// Why a token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
}

/// Decodes the JWT payload into claims.
pub fn decode_claims(token: &str) -> Result<ParticipantClaims, TokenError> {
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three dot-separated segments",
        ));
    };
    let bytes = base64url::decode(payload)
        .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
    claims_from_json(&bytes).ok_or(TokenError::Malformed(
        "payload is not a participant claims object",
    ))
}

/// `ParticipantClaims` with serde's rules (required fields, defaults), read
/// without serde_json to keep it out of the wasm.
fn claims_from_json(bytes: &[u8]) -> Option<ParticipantClaims> {
    let doc = json::parse(bytes)?;
    let f = Fields::of(&doc)?;
    let caps = Fields::of(doc.get("capabilities")?)?;
    Some(ParticipantClaims {
        topic: f.req_str("topic")?,
        jti: f.req_str("jti")?,
        user_id: f.opt_str("user_id")?,
        attributes: f.opt_str_map("attributes")?,
        capabilities: TokenCapabilities {
            allow_publish: caps.opt_bool("allow_publish")?,
            allow_subscribe: caps.opt_bool("allow_subscribe")?,
        },
        exp: i64::try_from(f.req_int("exp")?).ok()?,
        iat: i64::try_from(f.opt_int("iat")?).ok()?,
        events_url: f.req_str("events_url")?,
        whip_url: f.req_str("whip_url")?,
        version: match doc.get("version") {
            None => "1.0".to_owned(),
            Some(_) => f.req_str("version")?,
        },
    })
}

/// Fails when the token's `exp` is at or before `now_secs` (Unix seconds).
pub fn check_not_expired(claims: &ParticipantClaims, now_secs: f64) -> Result<(), TokenError> {
    let now = now_secs.floor() as i64;
    if claims.exp <= now {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// base64url without padding, for building test tokens.
    pub fn encode(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut s = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..=chunk.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        s
    }

    pub fn make_token(exp: i64, allow_publish: bool) -> String {
        let payload = format!(
            r#"{{"topic":"st-1","jti":"p-1","user_id":"alice","attributes":{{"username":"Alice"}},
            "capabilities":{{"allow_publish":{allow_publish},"allow_subscribe":true}},"exp":{exp},"iat":1,
            "events_url":"ws://h/v1/stage/events","whip_url":"http://h/v1/stage/whip","version":"1.0"}}"#
        );
        format!(
            "{}.{}.sig",
            encode(br#"{"alg":"ES384"}"#),
            encode(payload.as_bytes())
        )
    }

    #[test]
    fn decodes_claims() -> Result<(), TokenError> {
        let c = decode_claims(&make_token(2000, false))?;
        assert_eq!(c.topic, "st-1");
        assert_eq!(c.jti, "p-1");
        assert_eq!(c.user_id, "alice");
        assert!(!c.capabilities.allow_publish);
        assert!(c.capabilities.allow_subscribe);
        assert_eq!(c.events_url, "ws://h/v1/stage/events");
        assert_eq!(
            c.attributes.get("username").map(String::as_str),
            Some("Alice")
        );
        Ok(())
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            decode_claims("garbage"),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            decode_claims("a.b.c"),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            decode_claims("a.@@.c"),
            Err(TokenError::Malformed(_))
        ));
        let not_claims = format!("x.{}.y", encode(b"{\"a\":1}"));
        assert!(matches!(
            decode_claims(&not_claims),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn expiry() -> Result<(), TokenError> {
        let c = decode_claims(&make_token(2000, true))?;
        assert!(check_not_expired(&c, 1999.5).is_ok());
        assert_eq!(
            check_not_expired(&c, 2000.0),
            Err(TokenError::Expired {
                exp: 2000,
                now: 2000
            })
        );
        Ok(())
    }

    #[test]
    fn claims_match_serde() {
        let full = make_token(2000, true);
        let payload = full.split('.').nth(1).map(base64url::decode);
        let Some(Ok(bytes)) = payload else {
            panic!("test token payload");
        };
        let ours = claims_from_json(&bytes);
        let theirs: Option<ParticipantClaims> = serde_json::from_slice(&bytes).ok();
        assert!(ours.is_some());
        assert_eq!(ours, theirs);
        for doc in [
            r#"{"topic":"t","jti":"j","capabilities":{},"exp":5,"events_url":"e","whip_url":"w"}"#,
            r#"{"topic":"t","jti":"j","capabilities":{},"exp":5.5,"events_url":"e","whip_url":"w"}"#,
            r#"{"topic":"t","jti":"j","exp":5,"events_url":"e","whip_url":"w"}"#,
            r#"{"topic":"t","jti":"j","capabilities":{"allow_publish":1},"exp":5,"events_url":"e","whip_url":"w"}"#,
            r#"{"topic":"t","jti":"j","capabilities":{},"exp":5,"events_url":"e","whip_url":"w","attributes":{"a":2}}"#,
        ] {
            let theirs: Option<ParticipantClaims> = serde_json::from_str(doc).ok();
            assert_eq!(claims_from_json(doc.as_bytes()), theirs, "{doc}");
        }
    }
}
