//! Chat tokens: ES384 JWTs signed with the server's key (the same key and
//! algorithm as participant tokens, `<data>/signing-key.pem`).
//!
//! The claims differ from participant claims on purpose (`room`, `kind:
//! "chat"`, no `topic`), and the header names the key `stagecast-chat`, so
//! neither kind of token is accepted where the other is expected.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};

use super::room::ChatCapabilities;

const ALG: &str = "ES384";
const KID: &str = "stagecast-chat";
const KIND: &str = "chat";

/// A capability a chat token can carry (IVS CreateChatToken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChatCapability {
    SendMessage,
    DeleteMessage,
    DisconnectUser,
}

/// What a chat token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatClaims {
    /// Always `"chat"`.
    pub kind: String,
    /// Room id.
    pub room: String,
    pub user_id: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub capabilities: Vec<ChatCapability>,
    /// Token and session expiry, seconds since the Unix epoch.
    pub exp: i64,
    pub iat: i64,
    /// Token id.
    pub jti: String,
}

impl ChatClaims {
    pub fn new(
        room: String,
        user_id: String,
        attributes: BTreeMap<String, String>,
        capabilities: Vec<ChatCapability>,
        iat: i64,
        exp: i64,
        jti: String,
    ) -> Self {
        Self { kind: KIND.to_owned(), room, user_id, attributes, capabilities, exp, iat, jti }
    }

    pub fn chat_capabilities(&self) -> ChatCapabilities {
        ChatCapabilities {
            send_message: self.capabilities.contains(&ChatCapability::SendMessage),
            delete_message: self.capabilities.contains(&ChatCapability::DeleteMessage),
            disconnect_user: self.capabilities.contains(&ChatCapability::DisconnectUser),
        }
    }
}

/// Why a chat token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed chat token: {0}")]
    Malformed(&'static str),
    #[error("invalid chat token: {0}")]
    Invalid(&'static str),
    #[error("the chat token has expired")]
    Expired,
    #[error("cannot sign the chat token: {0}")]
    Sign(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// Signs and verifies chat tokens.
pub struct ChatSigner {
    signing: SigningKey,
    verifying: VerifyingKey,
}

impl ChatSigner {
    pub fn new(signing: SigningKey) -> Self {
        let verifying = VerifyingKey::from(&signing);
        Self { signing, verifying }
    }

    /// Load the server's signing key (PKCS#8 PEM), which `auth::KeyRing` has
    /// already created.
    pub fn load(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self::new(signing))
    }

    /// A 32-byte key for `purpose`, derived from the signing key (HMAC-SHA256
    /// keyed by the private scalar): secret as long as the signing key is, and
    /// stable across restarts.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        crate::auth::derive_key(&self.signing, purpose)
    }

    pub fn mint(&self, claims: &ChatClaims) -> Result<String, TokenError> {
        let header = Header { alg: ALG.to_owned(), typ: Some("JWT".to_owned()), kid: Some(KID.to_owned()) };
        let header = serde_json::to_vec(&header).map_err(|e| TokenError::Sign(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| TokenError::Sign(e.to_string()))?;
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let signature: Signature = self.signing.sign(input.as_bytes());
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
    }

    /// Signature first (no unauthenticated claim is looked at), then kind
    /// and expiry against `now_unix` (seconds).
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<ChatClaims, TokenError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed("a token has three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD.decode(h64).map_err(|_| TokenError::Malformed("the header is not base64url"))?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed("the header is not a JWT header"))?;
        if header.alg != ALG || header.kid.as_deref() != Some(KID) {
            return Err(TokenError::Invalid("not a chat token"));
        }
        let sig = URL_SAFE_NO_PAD.decode(s64).map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
        let sig = Signature::from_slice(&sig).map_err(|_| TokenError::Invalid("the signature is not ES384"))?;
        let input = token
            .get(..h64.len() + 1 + p64.len())
            .ok_or(TokenError::Malformed("a token has three dot-separated parts"))?;
        self.verifying
            .verify(input.as_bytes(), &sig)
            .map_err(|_| TokenError::Invalid("the signature does not match"))?;
        let payload = URL_SAFE_NO_PAD.decode(p64).map_err(|_| TokenError::Malformed("the payload is not base64url"))?;
        let claims: ChatClaims =
            serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed("the payload is not chat claims"))?;
        if claims.kind != KIND {
            return Err(TokenError::Invalid("not a chat token"));
        }
        if claims.exp <= now_unix {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}
