//! ES384 JWTs by hand: `base64url(header).base64url(claims).base64url(r||s)`.
//!
//! Only what participant tokens need: one algorithm (ES384), a `kid` that
//! names the key (the server's own, or an imported public key's id), and
//! signature-before-parsing so no unauthenticated claim is ever looked at.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};
use stagecast_protocol::token::ParticipantClaims;
use stagecast_protocol::MAX_ATTRIBUTES_BYTES;

use super::AuthError;
use crate::store::Store;

/// The file (in the data dir) holding the server's signing key, PKCS#8 PEM.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";

/// The only algorithm accepted.
const ALG: &str = "ES384";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// A short, stable fingerprint of a public key: the first 20 bytes of its
/// x coordinate, colon-separated hex. The x coordinate of a public key is
/// already uniformly distributed, so no hash is needed to make it unique.
fn fingerprint(key: &VerifyingKey) -> Result<String, AuthError> {
    let point = key.to_encoded_point(true);
    let x = point.x().ok_or_else(|| AuthError::Key("public key is the identity point".to_owned()))?;
    Ok(x.iter().take(20).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// A public key parsed from PEM, ready to be imported.
#[derive(Debug, Clone)]
pub struct ParsedPublicKey {
    pub key: VerifyingKey,
    pub fingerprint: String,
}

/// Parse an SPKI PEM (`-----BEGIN PUBLIC KEY-----`) holding a P-384 key.
pub fn parse_public_key(pem: &str) -> Result<ParsedPublicKey, AuthError> {
    let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| AuthError::InvalidPublicKey)?;
    let fingerprint = fingerprint(&key)?;
    Ok(ParsedPublicKey { key, fingerprint })
}

/// The server's signing key plus every imported public key.
pub struct KeyRing {
    signing: SigningKey,
    server_verifying: VerifyingKey,
    server_kid: String,
    /// Imported keys by id (the `kid` self-signed tokens carry).
    imported: RwLock<HashMap<String, VerifyingKey>>,
}

impl KeyRing {
    /// Load the signing key from `<data_dir>/signing-key.pem`, generating it
    /// (mode 0600) on first start, and every public key imported earlier.
    pub fn load_or_create(data_dir: &Path, store: &dyn Store) -> Result<Self, AuthError> {
        let path = data_dir.join(SIGNING_KEY_FILE);
        let signing = match std::fs::read_to_string(&path) {
            Ok(pem) => {
                SigningKey::from_pkcs8_pem(&pem).map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::random(&mut rand::rngs::OsRng);
                let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| AuthError::Key(e.to_string()))?;
                super::write_secret_file(&path, pem.as_bytes())?;
                key
            }
            Err(source) => return Err(AuthError::Io { path: path.clone(), source }),
        };
        let server_verifying = VerifyingKey::from(&signing);
        let server_kid =
            format!("server-{}", fingerprint(&server_verifying)?.replace(':', "").get(..16).unwrap_or("key"));

        let mut imported = HashMap::new();
        for record in store.list_public_keys()? {
            match parse_public_key(&record.pem) {
                Ok(parsed) => {
                    imported.insert(record.id, parsed.key);
                }
                // One bad row must not stop the server; the key just stops working.
                Err(e) => tracing::warn!(key_id = %record.id, error = %e, "skipping stored public key"),
            }
        }
        Ok(Self { signing, server_verifying, server_kid, imported: RwLock::new(imported) })
    }

    /// A 32-byte key for `purpose`, derived from the signing key: secret as
    /// long as the signing key is, and stable across restarts.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        derive_key(&self.signing, purpose)
    }

    /// The `kid` of tokens the server signs.
    pub fn server_kid(&self) -> &str {
        &self.server_kid
    }

    /// The server's public key as SPKI PEM (for operators who want to check
    /// tokens elsewhere).
    pub fn server_public_key_pem(&self) -> Result<String, AuthError> {
        self.server_verifying.to_public_key_pem(LineEnding::LF).map_err(|e| AuthError::Key(e.to_string()))
    }

    /// Accept tokens signed by `key` under `kid` from now on.
    pub fn add_public_key(&self, kid: &str, key: VerifyingKey) {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still usable.
        let mut map = self.imported.write().unwrap_or_else(|p| p.into_inner());
        map.insert(kid.to_owned(), key);
    }

    /// Sign claims into an ES384 JWT with the server's key. Refuses
    /// attributes over [`MAX_ATTRIBUTES_BYTES`].
    pub fn mint(&self, claims: &ParticipantClaims) -> Result<String, AuthError> {
        check_attributes(claims)?;
        let header = Header { alg: ALG.to_owned(), typ: Some("JWT".to_owned()), kid: Some(self.server_kid.clone()) };
        let header = serde_json::to_vec(&header).map_err(|e| AuthError::Key(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| AuthError::Key(e.to_string()))?;
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
    }

    /// Check signature (server key or an imported key), then the claims
    /// against `now_unix` (seconds): expiry, `nbf` when present, a
    /// non-empty `topic` and `jti`, attributes within the cap. Returns the
    /// claims. Whether the stage exists and the participant was not
    /// disconnected is [`AppState::authorize`](crate::AppState::authorize)'s
    /// part.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<ParticipantClaims, AuthError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Malformed("a token has three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD.decode(h64).map_err(|_| AuthError::Malformed("the header is not base64url"))?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| AuthError::Malformed("the header is not a JWT header"))?;
        if header.alg != ALG {
            return Err(AuthError::Invalid("only ES384 tokens are accepted"));
        }
        let sig = URL_SAFE_NO_PAD.decode(s64).map_err(|_| AuthError::Malformed("the signature is not base64url"))?;
        let sig =
            Signature::from_slice(&sig).map_err(|_| AuthError::Invalid("the signature is not an ES384 signature"))?;

        let signing_input = token
            .get(..h64.len() + 1 + p64.len())
            .ok_or(AuthError::Malformed("a token has three dot-separated parts"))?;
        if !self.signature_ok(header.kid.as_deref(), signing_input.as_bytes(), &sig)? {
            return Err(AuthError::Invalid("the signature does not match"));
        }

        let payload = URL_SAFE_NO_PAD.decode(p64).map_err(|_| AuthError::Malformed("the payload is not base64url"))?;
        let claims: ParticipantClaims = serde_json::from_slice(&payload)
            .map_err(|_| AuthError::Malformed("the payload does not hold participant claims"))?;
        let registered: RegisteredClaims = serde_json::from_slice(&payload)
            .map_err(|_| AuthError::Malformed("the payload's nbf is not a number"))?;
        check_claims(&claims, &registered, now_unix)?;
        Ok(claims)
    }

    /// With a `kid`, only that key may have signed; without one (some
    /// self-signing tools omit it) any known key will do.
    fn signature_ok(&self, kid: Option<&str>, msg: &[u8], sig: &Signature) -> Result<bool, AuthError> {
        let imported = self.imported.read().unwrap_or_else(|p| p.into_inner());
        match kid {
            Some(kid) if kid == self.server_kid => Ok(self.server_verifying.verify(msg, sig).is_ok()),
            Some(kid) => match imported.get(kid) {
                Some(key) => Ok(key.verify(msg, sig).is_ok()),
                None => Err(AuthError::Invalid("the token's key id is unknown")),
            },
            None => Ok(std::iter::once(&self.server_verifying)
                .chain(imported.values())
                .any(|key| key.verify(msg, sig).is_ok())),
        }
    }
}

/// JWT claims the participant claims do not name (RFC 7519 §4.1).
#[derive(Debug, Default, Deserialize)]
struct RegisteredClaims {
    /// Not before, seconds since the Unix epoch.
    #[serde(default)]
    nbf: Option<i64>,
}

/// What a signed token must also say about itself, whoever signed it (the
/// server's key or an imported one): a stage and a participant id, a time
/// window that includes now, and attributes within the cap that minting
/// enforces (a self-signed token never went through minting).
fn check_claims(claims: &ParticipantClaims, registered: &RegisteredClaims, now_unix: i64) -> Result<(), AuthError> {
    if claims.exp <= now_unix {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = registered.nbf.filter(|nbf| *nbf > now_unix) {
        return Err(AuthError::NotYetValid { nbf });
    }
    if claims.topic.trim().is_empty() {
        return Err(AuthError::Invalid("the token names no stage (topic is empty)"));
    }
    if claims.jti.trim().is_empty() {
        return Err(AuthError::Invalid("the token names no participant id (jti is empty)"));
    }
    if check_attributes(claims).is_err() {
        return Err(AuthError::Invalid("the token's attributes are over 1024 bytes"));
    }
    Ok(())
}

/// Attributes are visible to everyone in the stage and travel in every
/// snapshot, so their total size is capped.
pub fn check_attributes(claims: &ParticipantClaims) -> Result<(), AuthError> {
    let size: usize = claims.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ATTRIBUTES_BYTES {
        return Err(AuthError::AttributesTooLarge { size });
    }
    Ok(())
}

/// Where the signing key of a data dir lives.
/// HMAC-SHA256 of `purpose`, keyed by the signing key's private scalar.
pub fn derive_key(signing: &SigningKey, purpose: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&signing.to_bytes()).expect("invariant: HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

pub fn signing_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SIGNING_KEY_FILE)
}
