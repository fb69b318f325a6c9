//! Participant token claims (a JWT, ES384). Snake_case like IVS stage tokens.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a participant token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenCapabilities {
    #[serde(default)]
    pub allow_publish: bool,
    #[serde(default)]
    pub allow_subscribe: bool,
}

/// The claims of a participant token. The SDK needs nothing but these to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantClaims {
    /// Stage id.
    pub topic: String,
    /// Participant id.
    pub jti: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub capabilities: TokenCapabilities,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: i64,
    /// WebSocket URL of the stage event plane.
    pub events_url: String,
    /// Base URL of the media plane: `{whip_url}/publish`, `{whip_url}/subscribe/{participantId}`.
    pub whip_url: String,
    #[serde(default = "default_version")]
    pub version: String,
}

fn default_version() -> String {
    "1.0".to_owned()
}

/// A capability a request needs from its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Publish,
    Subscribe,
    /// Joining the event plane: either capability will do.
    Join,
}

impl ParticipantClaims {
    pub fn allows(&self, capability: Capability) -> bool {
        match capability {
            Capability::Publish => self.capabilities.allow_publish,
            Capability::Subscribe => self.capabilities.allow_subscribe,
            Capability::Join => self.capabilities.allow_publish || self.capabilities.allow_subscribe,
        }
    }
}
