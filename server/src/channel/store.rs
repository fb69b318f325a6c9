//! Channels persist in their own table (`channels`) of the server's SQLite
//! file, through a connection of their own (like chat rooms), so the shared
//! store trait does not need to know about channels.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    stream_key TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
";

/// A channel as stored. `stream_key` is a secret: never log this struct.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: String,
    pub name: String,
    pub stream_key: String,
    /// Unix seconds.
    pub create_time: i64,
}

impl std::fmt::Debug for ChannelRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("stream_key", &"<redacted>")
            .field("create_time", &self.create_time)
            .finish()
    }
}

pub struct ChannelStore {
    conn: Mutex<Connection>,
}

impl ChannelStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    pub fn insert(&self, c: &ChannelRecord) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO channels (id, name, stream_key, create_time) VALUES (?1, ?2, ?3, ?4)",
            params![c.id, c.name, c.stream_key, c.create_time],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        Ok(self
            .conn()?
            .query_row("SELECT id, name, stream_key, create_time FROM channels WHERE id = ?1", params![id], |r| {
                Ok(ChannelRecord { id: r.get(0)?, name: r.get(1)?, stream_key: r.get(2)?, create_time: r.get(3)? })
            })
            .optional()?)
    }

    /// True when a row was deleted.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn()?.execute("DELETE FROM channels WHERE id = ?1", params![id])? > 0)
    }
}
