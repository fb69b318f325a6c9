//! Chat tokens: ES384 JWTs signed with the server's key (the same key and
//! algorithm as participant tokens, `<data>/signing-key.pem`).
//!
//! The claims differ from participant claims on purpose (`room`, `kind:
//! "chat"`, no `topic`), and the header names the key `stagecast-chat`, so
//! neither kind of token is accepted where the other is expected. Encoding
//! and the signature check are `auth`'s, shared by every kind of token.

use std::collections::BTreeMap;
use std::path::Path;

use p384::ecdsa::{SigningKey, VerifyingKey};
use p384::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};

use super::room::ChatCapabilities;
use crate::auth::{sign_jwt, verify_jwt_signed_by, AuthError};

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
        sign_jwt(&self.signing, KID, claims).map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// Signature first (no unauthenticated claim is looked at), then kind
    /// and expiry against `now_unix` (seconds).
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<ChatClaims, TokenError> {
        let claims: ChatClaims = verify_jwt_signed_by(&self.verifying, KID, token, "the payload is not chat claims")
            .map_err(|e| match e {
                AuthError::Malformed(why) => TokenError::Malformed(why),
                AuthError::Invalid(why) => TokenError::Invalid(why),
                _ => TokenError::Invalid("not a chat token"),
            })?;
        if claims.kind != KIND {
            return Err(TokenError::Invalid("not a chat token"));
        }
        if claims.exp <= now_unix {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}
