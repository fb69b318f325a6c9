//! Who someone is in a demo group's chat, decided by the server only.
//!
//! - Stage members chat as their participant id (12 random alphanumerics,
//!   new for every join); viewers chat as `viewer-<20 hex>` (a dash never
//!   occurs in a participant id), so a viewer's id can never equal a
//!   member's, and DISCONNECT_USER of one never reaches the other.
//! - A viewer's id is an HMAC, under a key derived from the server's signing
//!   key, of the room id and a random secret the watch page keeps in
//!   `localStorage`: stable across reloads, different per room, and nobody
//!   who lacks the secret can obtain it.
//! - [`ChatRole`] goes into the token's attributes as `role`. Token
//!   attributes are signed, and every MESSAGE carries them as
//!   `Sender.Attributes`, so pages can badge the host and the guests and
//!   nobody can forge it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Sender attribute naming the member's role in a demo group.
pub const ROLE_ATTRIBUTE: &str = "role";
/// Every viewer id starts with this.
pub const VIEWER_PREFIX: &str = "viewer-";
/// Shortest and longest viewer secret accepted, in characters.
pub const VIEWER_SECRET_CHARS: std::ops::RangeInclusive<usize> = 16..=256;

/// A chat member's role in a demo group, set by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    /// Created the group; moderates its chat.
    Host,
    /// Joined the stage.
    Guest,
    /// Watches (the watch page).
    Viewer,
}

impl ChatRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::Host => "host",
            ChatRole::Guest => "guest",
            ChatRole::Viewer => "viewer",
        }
    }
}

/// Why a viewer secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("viewerSecret must be {} to {} characters", VIEWER_SECRET_CHARS.start(), VIEWER_SECRET_CHARS.end())]
pub struct BadViewerSecret;

/// Derives viewer ids; holds a key only the server knows.
#[derive(Clone)]
pub struct ViewerIds {
    key: [u8; 32],
}

impl ViewerIds {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The viewer id for `secret` in `room`.
    pub fn user_id(&self, room: &str, secret: &str) -> Result<String, BadViewerSecret> {
        if !VIEWER_SECRET_CHARS.contains(&secret.chars().count()) {
            return Err(BadViewerSecret);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("invariant: HMAC takes any key length");
        // Length-prefixed, so no (room, secret) pair can be shifted into another.
        mac.update(&(room.len() as u64).to_be_bytes());
        mac.update(room.as_bytes());
        mac.update(secret.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        Ok(format!("{VIEWER_PREFIX}{hex}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_ids_are_stable_distinct_and_per_room() {
        let ids = ViewerIds::new([7; 32]);
        let secret = "0123456789abcdef0123";
        let a = ids.user_id("room1", secret).expect("valid");
        assert!(a.starts_with(VIEWER_PREFIX) && a.len() == VIEWER_PREFIX.len() + 20, "{a}");
        assert_eq!(ids.user_id("room1", secret), Ok(a.clone()));
        assert_ne!(ids.user_id("room2", secret), Ok(a.clone()));
        assert_ne!(ids.user_id("room1", "0123456789abcdef0124"), Ok(a.clone()));
        assert_ne!(ViewerIds::new([8; 32]).user_id("room1", secret), Ok(a));
        assert_eq!(ids.user_id("room1", "short"), Err(BadViewerSecret));
        assert_eq!(ids.user_id("room1", &"x".repeat(257)), Err(BadViewerSecret));
    }
}
