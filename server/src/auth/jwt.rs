//! ES384 JWTs by hand: `base64url(header).base64url(claims).base64url(r||s)`.
//!
//! Only what our tokens need: one algorithm (ES384), a `kid` that names the
//! key (the server's own, or an imported public key's id), and
//! signature-before-parsing so no unauthenticated claim is ever looked at.
//! Participant tokens are checked by [`KeyRing::verify`], playback tokens
//! (private channels) by [`verify_playback`] against the playback keys, a
//! [`KeySet`] of their own: a key imported for one kind never signs the other.
//! Chat tokens (`chat::token`) are signed and checked with [`sign`] and
//! [`verify_signed_by`]: one encoder and one parser for every kind of token,
//! each kind with its own typed claims.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::de::DeserializeOwned;
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

/// Public keys by id (the `kid` self-signed tokens carry) that may sign one
/// kind of token.
#[derive(Default)]
pub struct KeySet {
    keys: RwLock<HashMap<String, VerifyingKey>>,
}

impl KeySet {
    /// Accept tokens signed by `key` under `kid` from now on.
    pub fn insert(&self, kid: &str, key: VerifyingKey) {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still usable.
        let mut map = self.keys.write().unwrap_or_else(|p| p.into_inner());
        map.insert(kid.to_owned(), key);
    }

    /// Accept exactly the keys of `other` from now on.
    pub fn replace_with(&self, other: KeySet) {
        let fresh = other.keys.into_inner().unwrap_or_else(|p| p.into_inner());
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    /// Stop accepting tokens signed by `kid`. True when it was there.
    pub fn remove(&self, kid: &str) -> bool {
        self.keys.write().unwrap_or_else(|p| p.into_inner()).remove(kid).is_some()
    }

    /// Whether `kid` is (still) accepted.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).contains_key(kid)
    }

    /// The id of the key that signed: with a `kid`, only that key may have;
    /// without one (some self-signing tools omit it) any key of the set.
    fn signer(&self, kid: Option<&str>, msg: &[u8], sig: &Signature) -> Result<String, AuthError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let found = match kid {
            Some(kid) => {
                let key = keys.get(kid).ok_or(AuthError::Invalid("the token's key id is unknown"))?;
                key.verify(msg, sig).is_ok().then(|| kid.to_owned())
            }
            None => keys.iter().find(|(_, key)| key.verify(msg, sig).is_ok()).map(|(id, _)| id.clone()),
        };
        found.ok_or(AuthError::Invalid("the signature does not match"))
    }
}

/// A token split into its parts, its header read and its signature decoded;
/// nothing it says is trusted until [`KeySet::signer`] (or the server key)
/// has checked `signing_input` against `signature`.
struct Signed<'t> {
    kid: Option<String>,
    signing_input: &'t str,
    payload64: &'t str,
    signature: Signature,
}

impl<'t> Signed<'t> {
    /// Split `token` and check its form: three base64url parts, a JWT
    /// header whose `alg` is ES384, an ES384-shaped signature.
    fn split(token: &'t str) -> Result<Self, AuthError> {
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
        let signature =
            Signature::from_slice(&sig).map_err(|_| AuthError::Invalid("the signature is not an ES384 signature"))?;
        let signing_input = token
            .get(..h64.len() + 1 + p64.len())
            .ok_or(AuthError::Malformed("a token has three dot-separated parts"))?;
        Ok(Self { kid: header.kid, signing_input, payload64: p64, signature })
    }

    /// The payload's bytes: call only once the signature is checked.
    fn payload(&self) -> Result<Vec<u8>, AuthError> {
        URL_SAFE_NO_PAD.decode(self.payload64).map_err(|_| AuthError::Malformed("the payload is not base64url"))
    }
}

/// `claims` as an ES384 JWT signed by `key`, its header naming `kid`.
pub fn sign<C: Serialize>(key: &SigningKey, kid: &str, claims: &C) -> Result<String, AuthError> {
    let header = Header { alg: ALG.to_owned(), typ: Some("JWT".to_owned()), kid: Some(kid.to_owned()) };
    let header = serde_json::to_vec(&header).map_err(|e| AuthError::Key(e.to_string()))?;
    let payload = serde_json::to_vec(claims).map_err(|e| AuthError::Key(e.to_string()))?;
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let signature: Signature = key.sign(signing_input.as_bytes());
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
}

/// The claims of `token` when its header names `kid` and `key` made its
/// signature; `what` names the claims in the error when they do not parse.
/// Signature first: nothing in the payload is read before it checks out.
/// Time and kind checks are the caller's (each kind has its own).
pub fn verify_signed_by<C: DeserializeOwned>(
    key: &VerifyingKey,
    kid: &str,
    token: &str,
    what: &'static str,
) -> Result<C, AuthError> {
    let signed = Signed::split(token)?;
    if signed.kid.as_deref() != Some(kid) {
        return Err(AuthError::Invalid("the token is not of this kind (its key id differs)"));
    }
    key.verify(signed.signing_input.as_bytes(), &signed.signature)
        .map_err(|_| AuthError::Invalid("the signature does not match"))?;
    serde_json::from_slice(&signed.payload()?).map_err(|_| AuthError::Malformed(what))
}

/// A new random signing key, PKCS#8 PEM (what `signing-key.pem` holds).
pub fn generate_signing_key_pem() -> Result<String, AuthError> {
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    Ok(key.to_pkcs8_pem(LineEnding::LF).map_err(|e| AuthError::Key(e.to_string()))?.to_string())
}

/// The server's signing key plus every imported public key.
pub struct KeyRing {
    signing: SigningKey,
    server_verifying: VerifyingKey,
    server_kid: String,
    /// Imported keys by id (the `kid` self-signed tokens carry).
    imported: KeySet,
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
                let pem = generate_signing_key_pem()?;
                super::write_secret_file(&path, pem.as_bytes())?;
                SigningKey::from_pkcs8_pem(&pem).map_err(|e| AuthError::Key(e.to_string()))?
            }
            Err(source) => return Err(AuthError::Io { path: path.clone(), source }),
        };
        let server_verifying = VerifyingKey::from(&signing);
        let server_kid =
            format!("server-{}", fingerprint(&server_verifying)?.replace(':', "").get(..16).unwrap_or("key"));

        let imported = KeySet::default();
        for record in store.list_public_keys()? {
            match parse_public_key(&record.pem) {
                Ok(parsed) => imported.insert(&record.id, parsed.key),
                // One bad row must not stop the server; the key just stops working.
                Err(e) => tracing::warn!(key_id = %record.id, error = %e, "skipping stored public key"),
            }
        }
        Ok(Self { signing, server_verifying, server_kid, imported })
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
        self.imported.insert(kid, key);
    }

    /// Sign claims into an ES384 JWT with the server's key. Refuses
    /// attributes over [`MAX_ATTRIBUTES_BYTES`].
    pub fn mint(&self, claims: &ParticipantClaims) -> Result<String, AuthError> {
        check_attributes(claims)?;
        sign(&self.signing, &self.server_kid, claims)
    }

    /// Check signature (server key or an imported key), then the claims
    /// against `now_unix` (seconds): expiry, `nbf` when present, a
    /// non-empty `topic` and `jti`, attributes within the cap. Returns the
    /// claims. Whether the stage exists and the participant was not
    /// disconnected is [`Auth::authorize`](crate::auth::Auth::authorize)'s
    /// part.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<ParticipantClaims, AuthError> {
        let signed = Signed::split(token)?;
        self.check_signature(&signed)?;
        let payload = signed.payload()?;
        let claims: ParticipantClaims = serde_json::from_slice(&payload)
            .map_err(|_| AuthError::Malformed("the payload does not hold participant claims"))?;
        let registered: RegisteredClaims = serde_json::from_slice(&payload)
            .map_err(|_| AuthError::Malformed("the payload's nbf is not a number"))?;
        check_claims(&claims, &registered, now_unix)?;
        Ok(claims)
    }

    /// The server's key under its own `kid`; else an imported key (without
    /// a `kid`, the server's key or any imported one).
    /// When `token` names a key id this ring does not know, look for that
    /// key in `store` (another node of a distributed deployment imported
    /// it) and accept it from now on. True when a key was added.
    pub fn learn_key(&self, store: &dyn Store, token: &str) -> Result<bool, AuthError> {
        let Ok(signed) = Signed::split(token) else { return Ok(false) };
        let Some(kid) = signed.kid.as_deref().filter(|k| *k != self.server_kid && !self.imported.contains(k)) else {
            return Ok(false);
        };
        let Some(record) = store.list_public_keys()?.into_iter().find(|r| r.id == kid) else { return Ok(false) };
        self.imported.insert(kid, parse_public_key(&record.pem)?.key);
        Ok(true)
    }

    fn check_signature(&self, signed: &Signed<'_>) -> Result<(), AuthError> {
        let (msg, sig) = (signed.signing_input.as_bytes(), &signed.signature);
        match signed.kid.as_deref() {
            Some(kid) if kid == self.server_kid => self
                .server_verifying
                .verify(msg, sig)
                .map_err(|_| AuthError::Invalid("the signature does not match")),
            None if self.server_verifying.verify(msg, sig).is_ok() => Ok(()),
            kid => self.imported.signer(kid, msg, sig).map(|_| ()),
        }
    }
}

/// What a playback token (IVS "Generate and Sign Playback Tokens") says:
/// which channel it opens, until when, for which web origins, for whom.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PlaybackClaims {
    /// The channel's ARN or id.
    #[serde(rename = "aws:channel-arn")]
    pub channel_arn: String,
    /// Seconds since the Unix epoch.
    pub exp: i64,
    /// Web origins that may play (comma-separated, `*` or a host starting
    /// with `*.`); absent: any.
    #[serde(rename = "aws:access-control-allow-origin", default)]
    pub allow_origin: Option<String>,
    /// Who the token was made for (not checked; IVS uses it to revoke a viewer).
    #[serde(rename = "aws:viewer-id", default)]
    pub viewer_id: Option<String>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: Option<i64>,
}

/// A playback token that checked out, and the id of the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPlayback {
    pub claims: PlaybackClaims,
    pub key_id: String,
}

/// Longest `aws:viewer-id` (IVS: 40 characters).
const MAX_VIEWER_ID_CHARS: usize = 40;

/// Check a playback token: ES384, signed by a key of `keys` (the `kid`'s,
/// or any without one), `exp` after `now_unix`, `nbf` (when present) not
/// after it. Whether it names the right channel and origin is the
/// channel's part.
pub fn verify_playback(keys: &KeySet, token: &str, now_unix: i64) -> Result<VerifiedPlayback, AuthError> {
    let signed = Signed::split(token)?;
    let key_id = keys.signer(signed.kid.as_deref(), signed.signing_input.as_bytes(), &signed.signature)?;
    let claims: PlaybackClaims = serde_json::from_slice(&signed.payload()?)
        .map_err(|_| AuthError::Malformed("the payload does not hold playback claims (aws:channel-arn, exp)"))?;
    if claims.exp <= now_unix {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = claims.nbf.filter(|nbf| *nbf > now_unix) {
        return Err(AuthError::NotYetValid { nbf });
    }
    if claims.viewer_id.as_ref().is_some_and(|v| v.chars().count() > MAX_VIEWER_ID_CHARS) {
        return Err(AuthError::Invalid("aws:viewer-id is over 40 characters"));
    }
    Ok(VerifiedPlayback { claims, key_id })
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
