//! Persistent state behind the [`Store`] trait; SQLite is the embedded default.
//!
//! The store keeps what must survive a restart: stages, the participant
//! tokens minted for them (with their revocation), imported public keys and
//! the demo backend's groups. Live state (who is connected, who publishes)
//! lives in the stage hub, not here.
//!
//! Times are seconds since the Unix epoch.

mod conn;
mod sqlite;

use std::collections::BTreeMap;

use stagecast_protocol::token::TokenCapabilities;
use stagecast_protocol::{ParticipantId, StageId};

pub use conn::{open_connection, TableConnection};
pub use sqlite::SqliteStore;

/// Why a store operation failed. Handlers log these and answer 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store lock is poisoned (a thread panicked while holding it)")]
    Poisoned,
    #[error("stored {what} is not valid JSON: {source}")]
    Corrupt { what: &'static str, source: serde_json::Error },
    #[error("cannot create the directory of {path}: {source}")]
    Dir { path: String, source: std::io::Error },
}

/// A stage as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRecord {
    pub id: StageId,
    pub name: String,
    pub create_time: i64,
}

/// A participant: a minted token, or a self-signed token that connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRecord {
    pub stage_id: StageId,
    pub participant_id: ParticipantId,
    pub user_id: String,
    pub attributes: BTreeMap<String, String>,
    pub capabilities: TokenCapabilities,
    /// Token expiry.
    pub expiration: i64,
    /// When the participant first connected to the event plane.
    pub first_join_time: Option<i64>,
    /// Disconnected by the host or the control plane: the token is dead.
    pub revoked: bool,
    pub revoke_reason: Option<String>,
}

/// An imported public key (for self-signed participant tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyRecord {
    /// The `kid` self-signed tokens name it by.
    pub id: String,
    pub name: String,
    /// SPKI PEM as imported.
    pub pem: String,
    pub fingerprint: String,
}

/// A demo-backend group: one stage plus who created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoGroupRecord {
    pub group_id: String,
    pub stage_id: StageId,
    pub host_user_id: String,
    pub host_participant_id: ParticipantId,
    /// The host's attributes (username, avatarUrl) shown in the stage list.
    pub host_attributes: BTreeMap<String, String>,
    pub create_time: i64,
    /// The group's channel (the host goes live to it), if it has one.
    pub channel_id: Option<String>,
    /// The group's chat room, if it has one.
    pub room_id: Option<String>,
}

/// Everything the server persists. Implementations must be usable from many
/// threads at once.
pub trait Store: Send + Sync {
    fn create_stage(&self, stage: &StageRecord) -> Result<(), StoreError>;
    fn get_stage(&self, id: &StageId) -> Result<Option<StageRecord>, StoreError>;
    /// Oldest first.
    fn list_stages(&self) -> Result<Vec<StageRecord>, StoreError>;
    /// Removes the stage with its participants and demo groups. Returns
    /// whether the stage existed.
    fn delete_stage(&self, id: &StageId) -> Result<bool, StoreError>;

    /// Record a minted token. Replaces an earlier record with the same ids.
    fn insert_participant(&self, participant: &ParticipantRecord) -> Result<(), StoreError>;
    fn get_participant(&self, stage: &StageId, id: &ParticipantId) -> Result<Option<ParticipantRecord>, StoreError>;
    /// In minting order.
    fn list_participants(&self, stage: &StageId) -> Result<Vec<ParticipantRecord>, StoreError>;
    /// Note a connection: inserts `participant` if unknown (a self-signed
    /// token), and sets its first join time to `when` if it has none.
    fn record_join(&self, participant: &ParticipantRecord, when: i64) -> Result<(), StoreError>;
    /// Mark a participant's token as dead. Returns whether it was known.
    fn revoke_participant(&self, stage: &StageId, id: &ParticipantId, reason: &str) -> Result<bool, StoreError>;

    fn insert_public_key(&self, key: &PublicKeyRecord) -> Result<(), StoreError>;
    fn list_public_keys(&self) -> Result<Vec<PublicKeyRecord>, StoreError>;
    fn find_public_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<PublicKeyRecord>, StoreError>;

    fn create_demo_group(&self, group: &DemoGroupRecord) -> Result<(), StoreError>;
    fn get_demo_group(&self, group_id: &str) -> Result<Option<DemoGroupRecord>, StoreError>;
    /// Newest first.
    fn list_demo_groups(&self) -> Result<Vec<DemoGroupRecord>, StoreError>;
    /// Returns whether the group existed. The stage is left alone.
    fn delete_demo_group(&self, group_id: &str) -> Result<bool, StoreError>;
}
