//! Participant and playback tokens (ES384 JWTs), the signing key, imported
//! public keys and the control-plane API key.
//!
//! [`KeyRing::verify`] checks what a token says about itself (signature,
//! expiry); [`Auth::authorize`] adds what only the server knows (the
//! stage still exists, the participant was not disconnected, the capability).
//! [`Auth`] is the state the shared HTTP extractors (`http::ApiKey`,
//! `http::Participant`) take from any area's state.

mod jwt;
pub mod shared;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use rand::Rng;
use stagecast_protocol::token::{Capability, ParticipantClaims};
use stagecast_protocol::{ParticipantId, StageId};

use crate::store::{ParticipantRecord, Store, StoreError};
use crate::{AppError, Config};

pub use jwt::{
    check_attributes, derive_key, generate_signing_key_pem, parse_public_key, sign as sign_jwt, signing_key_path, verify_playback,
    verify_signed_by as verify_jwt_signed_by, KeyRing, KeySet, ParsedPublicKey, PlaybackClaims, VerifiedPlayback,
    SIGNING_KEY_FILE,
};

/// The file (in the data dir) holding the generated API key.
pub const API_KEY_FILE: &str = "api-key";
/// Generated control-plane API keys start with this; stream keys start
/// with [`STREAM_KEY_PREFIX`], so a key pasted into the wrong place can be
/// told apart (keys generated before the split start with `sk_` and keep
/// working: a key is compared whole).
pub const API_KEY_PREFIX: &str = "sck_";
/// Channel stream keys start with this (as IVS stream keys do).
pub const STREAM_KEY_PREFIX: &str = "sk_";

/// Token and key failures. [`From<AuthError> for AppError`] maps them to the
/// wire error codes.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a JWT at all (parts, base64, JSON).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// A JWT, but not one we signed or accept.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("the token has expired")]
    Expired,
    /// `nbf` (not before) is still in the future.
    #[error("the token is not valid before {nbf} (nbf, Unix seconds)")]
    NotYetValid { nbf: i64 },
    #[error("attributes are {size} bytes; at most {max} are allowed", max = stagecast_protocol::MAX_ATTRIBUTES_BYTES)]
    AttributesTooLarge { size: usize },
    #[error("the public key is not a PEM P-384 public key (SPKI)")]
    InvalidPublicKey,
    #[error("key handling failed: {0}")]
    Key(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Malformed(_) => AppError::unauthorized("TOKEN_MALFORMED", e.to_string()),
            AuthError::Invalid(_) => AppError::unauthorized("TOKEN_INVALID", e.to_string()),
            AuthError::Expired => AppError::unauthorized("TOKEN_EXPIRED", e.to_string()),
            AuthError::NotYetValid { .. } => AppError::unauthorized("TOKEN_NOT_YET_VALID", e.to_string()),
            AuthError::AttributesTooLarge { .. } => AppError::bad_request("ATTRIBUTES_TOO_LARGE", e.to_string()),
            AuthError::InvalidPublicKey => AppError::bad_request("INVALID_PUBLIC_KEY", e.to_string()),
            AuthError::Key(_) | AuthError::Io { .. } | AuthError::Store(_) => AppError::internal(e),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Write a secret (key material) readable by the owner only.
pub(crate) fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), AuthError> {
    let io = |source| AuthError::Io { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// A random string of ASCII letters and digits (ids, API keys).
pub fn random_alphanumeric(len: usize) -> String {
    rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(len).map(char::from).collect()
}

/// The control-plane API key: `config.api_key` if set, else the one in
/// `<data_dir>/api-key`, generated (mode 0600) when absent. The flag says
/// whether it was generated now, so `main` can show it once.
pub fn load_or_create_api_key(config: &Config) -> Result<(String, bool), AuthError> {
    if let Some(key) = config.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
        return Ok((key.to_owned(), false));
    }
    let path = api_key_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AuthError::Io { path, source }),
    }
    let key = format!("{API_KEY_PREFIX}{}", random_alphanumeric(40));
    write_secret_file(&path, format!("{key}\n").as_bytes())?;
    Ok((key, true))
}

/// The webhook signing secret: `--webhook-secret` if set, else the one in
/// `<data_dir>/webhook-secret`, generated (mode 0600) when absent.
pub fn load_or_create_webhook_secret(config: &Config) -> Result<String, AuthError> {
    if let Some(secret) = &config.webhook_secret {
        return Ok(secret.0.clone());
    }
    let path = config.data_dir.join("webhook-secret");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AuthError::Io { path, source }),
    }
    let secret = format!("whsec_{}", random_alphanumeric(40));
    write_secret_file(&path, format!("{secret}\n").as_bytes())?;
    Ok(secret)
}

/// Where the generated API key is kept.
pub fn api_key_path(config: &Config) -> PathBuf {
    config.data_dir.join(API_KEY_FILE)
}

/// Compare two secrets without leaking where they differ: every byte is
/// looked at whatever the first mismatch. Only the length can leak, and
/// key lengths are not secret.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token in an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&axum::http::HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
}

/// The token in `Sec-WebSocket-Protocol`, where browsers can put it (they
/// cannot set `Authorization` on a WebSocket). The header is a
/// comma-separated list: the token is the entry that looks like a JWT, else
/// the first.
pub fn subprotocol_token(headers: &axum::http::HeaderMap) -> Option<String> {
    let all: Vec<&str> = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    all.iter().find(|s| s.matches('.').count() == 2).or(all.first()).map(|s| (*s).to_owned())
}

/// [`subprotocol_token`], or the 401 TOKEN_MALFORMED that asks for `what`
/// (e.g. "chat token") there.
pub fn require_subprotocol_token(headers: &axum::http::HeaderMap, what: &str) -> Result<String, AppError> {
    subprotocol_token(headers).ok_or_else(|| {
        AppError::unauthorized(
            "TOKEN_MALFORMED",
            format!("send the {what} as the WebSocket subprotocol (Sec-WebSocket-Protocol)"),
        )
    })
}

/// Take a WebSocket upgrade whose token (from [`subprotocol_token`]) is
/// already verified, echoing the token back as the selected subprotocol:
/// browsers drop a connection whose offered subprotocol is not echoed.
pub fn accept_token_upgrade(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    token: &str,
) -> Result<WebSocketUpgrade, AppError> {
    // Our sockets read small frames; tungstenite zero-fills its whole read
    // buffer on every poll, which at the default 128 KiB was ~30 % of the
    // server's CPU during chat fan-out.
    let mut upgrade = upgrade
        .map_err(|rejection| AppError::new(rejection.status(), "NOT_A_WEBSOCKET", rejection.body_text()))?
        .read_buffer_size(4 * 1024);
    let protocol = axum::http::HeaderValue::from_str(token)
        .map_err(|_| AppError::unauthorized("TOKEN_MALFORMED", "the token is not a valid header value"))?;
    upgrade.set_selected_protocol(protocol);
    Ok(upgrade)
}

/// Who may call what: the control-plane API key, the token keys, and the
/// participant records a participant token is checked against (its stage
/// exists, it was not disconnected). Cheap to clone: every area's state
/// holds one, for the `http` extractors.
#[derive(Clone)]
pub struct Auth {
    /// Token signing key and imported public keys.
    pub keys: Arc<KeyRing>,
    api_key: Arc<str>,
    store: Arc<dyn Store>,
}

impl Auth {
    pub fn new(keys: KeyRing, api_key: String, store: Arc<dyn Store>) -> Self {
        Self { keys: Arc::new(keys), api_key: api_key.into(), store }
    }

    /// The control-plane API key (`Authorization: Bearer <api key>` on `/v1`).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Verify a participant token on any path: signature, expiry, that its
    /// stage exists, that the participant was not disconnected, and that it
    /// carries `need`.
    pub fn authorize(&self, token: &str, need: Capability) -> Result<ParticipantClaims, AppError> {
        let now = now_unix();
        let claims = match self.keys.verify(token, now) {
            // A self-signed token whose key another node imported (distributed mode).
            Err(AuthError::Invalid(_)) if self.keys.learn_key(self.store.as_ref(), token)? => self.keys.verify(token, now)?,
            verified => verified?,
        };
        let stage = StageId(claims.topic.clone());
        if self.store.get_stage(&stage).map_err(AppError::internal)?.is_none() {
            return Err(AppError::not_found("STAGE_NOT_FOUND", format!("stage {stage} does not exist")));
        }
        let participant = ParticipantId(claims.jti.clone());
        if let Some(record) = self.store.get_participant(&stage, &participant).map_err(AppError::internal)? {
            if record.revoked {
                return Err(AppError::forbidden(
                    "PARTICIPANT_DISCONNECTED",
                    "this participant was disconnected from the stage; its token can no longer be used",
                ));
            }
        }
        if !claims.allows(need) {
            let what = match need {
                Capability::Publish => "publish",
                Capability::Subscribe => "subscribe",
                Capability::Join => "join",
            };
            return Err(AppError::forbidden("TOKEN_NOT_ALLOWED", format!("this token does not allow to {what}")));
        }
        Ok(claims)
    }

    /// Record that a participant connected to the event plane (first join
    /// time), in the records [`Auth::authorize`] checks: a token that
    /// joined and was then disconnected stays refused.
    pub fn participant_joined(&self, claims: &ParticipantClaims) {
        let record = ParticipantRecord {
            stage_id: StageId(claims.topic.clone()),
            participant_id: ParticipantId(claims.jti.clone()),
            user_id: claims.user_id.clone(),
            attributes: claims.attributes.clone(),
            capabilities: claims.capabilities,
            expiration: claims.exp,
            first_join_time: None,
            revoked: false,
            revoke_reason: None,
        };
        if let Err(e) = self.store.record_join(&record, now_unix()) {
            tracing::warn!(stage = %record.stage_id, participant = %record.participant_id, error = %e, "cannot record join");
        }
    }
}
