//! Persistent state behind the [`Store`] trait; SQLite is the embedded default.
//!
//! The store keeps what must survive a restart: stages, the participant
//! tokens minted for them (with their revocation), imported public keys and
//! the demo backend's groups. Live state (who is connected, who publishes)
//! lives in the stage hub, not here.
//!
//! Times are seconds since the Unix epoch.

mod conn;
mod private;
pub mod redis;
mod sqlite;

use std::collections::BTreeMap;

use stagecast_protocol::token::TokenCapabilities;
use stagecast_protocol::{ParticipantId, StageId};

pub use conn::{open_connection, TableConnection};
pub use private::{private_db_file, private_dir};
pub use redis::{RedisPool, RedisStore};
pub use sqlite::SqliteStore;

/// Why a store operation failed. Handlers log these and answer 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// An insert whose id (or unique value) is taken.
    #[error("this {what} exists already")]
    Duplicate { what: &'static str },
    #[error("the store lock is poisoned (a thread panicked while holding it)")]
    Poisoned,
    #[error("stored {what} is not valid JSON: {source}")]
    Corrupt { what: &'static str, source: serde_json::Error },
    #[error("cannot create the directory of {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("cannot make {path} owner-only: {source}")]
    Private { path: String, source: std::io::Error },
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

/// One page of a listing: at most `limit` rows that come after the position
/// `after` (the [`Page::next`] of the previous page; `None` starts at the
/// beginning). Positions are assigned by the store, follow the listing's
/// order and mean nothing else: a row added or removed between two pages
/// never makes another row appear twice or go missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    pub after: Option<i64>,
    pub limit: u32,
}

impl PageQuery {
    /// The first `limit` rows.
    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }

    /// The SQL `LIMIT`: one row more than the page holds, which tells
    /// whether a next page exists (see [`Page::from_rows`]).
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// A page of rows and, when more follow, where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

impl<T> Page<T> {
    /// From the rows `(position, row)` a query returned in listing order,
    /// asked for `limit + 1` so that one more row tells there is a next page.
    pub fn from_rows(mut rows: Vec<(i64, T)>, limit: u32) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more { rows.last().map(|(position, _)| *position) } else { None };
        Self { items: rows.into_iter().map(|(_, row)| row).collect(), next }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next: self.next }
    }
}

/// Everything the server persists. Implementations must be usable from many
/// threads at once.
pub trait Store: Send + Sync {
    fn create_stage(&self, stage: &StageRecord) -> Result<(), StoreError>;
    fn get_stage(&self, id: &StageId) -> Result<Option<StageRecord>, StoreError>;
    /// Oldest first.
    fn list_stages(&self, page: PageQuery) -> Result<Page<StageRecord>, StoreError>;
    /// Removes the stage with its participants and demo groups. Returns
    /// whether the stage existed.
    fn delete_stage(&self, id: &StageId) -> Result<bool, StoreError>;

    /// Record a minted token. Replaces an earlier record with the same ids.
    fn insert_participant(&self, participant: &ParticipantRecord) -> Result<(), StoreError>;
    fn get_participant(&self, stage: &StageId, id: &ParticipantId) -> Result<Option<ParticipantRecord>, StoreError>;
    /// In minting order.
    fn list_participants(&self, stage: &StageId, page: PageQuery) -> Result<Page<ParticipantRecord>, StoreError>;
    /// Note a connection: inserts `participant` if unknown (a self-signed
    /// token), and sets its first join time to `when` if it has none.
    fn record_join(&self, participant: &ParticipantRecord, when: i64) -> Result<(), StoreError>;
    /// Whether a participant of `user_id` on the stage was disconnected
    /// (revoked): the demo backend keeps such a user out.
    fn user_removed(&self, stage: &StageId, user_id: &str) -> Result<bool, StoreError>;
    /// Mark a participant's token as dead. Returns whether it was known.
    fn revoke_participant(&self, stage: &StageId, id: &ParticipantId, reason: &str) -> Result<bool, StoreError>;

    fn insert_public_key(&self, key: &PublicKeyRecord) -> Result<(), StoreError>;
    fn list_public_keys(&self) -> Result<Vec<PublicKeyRecord>, StoreError>;
    fn find_public_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<PublicKeyRecord>, StoreError>;

    fn create_demo_group(&self, group: &DemoGroupRecord) -> Result<(), StoreError>;
    fn get_demo_group(&self, group_id: &str) -> Result<Option<DemoGroupRecord>, StoreError>;
    /// Newest first.
    fn list_demo_groups(&self, page: PageQuery) -> Result<Page<DemoGroupRecord>, StoreError>;
    /// Returns whether the group existed. The stage is left alone.
    fn delete_demo_group(&self, group_id: &str) -> Result<bool, StoreError>;
}
