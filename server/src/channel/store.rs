//! Channels persist in their own table (`channels`) of the server's SQLite
//! file, through a connection of their own (like chat rooms), so the shared
//! store trait does not need to know about channels.

use std::path::Path;

use rusqlite::{params, OptionalExtension};

use crate::store::{StoreError, TableConnection};

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
    conn: TableConnection,
}

impl ChannelStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self { conn: TableConnection::open(path, SCHEMA)? })
    }

    pub fn insert(&self, c: &ChannelRecord) -> Result<(), StoreError> {
        self.conn.lock()?.execute(
            "INSERT INTO channels (id, name, stream_key, create_time) VALUES (?1, ?2, ?3, ?4)",
            params![c.id, c.name, c.stream_key, c.create_time],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        Ok(self
            .conn
            .lock()?
            .query_row("SELECT id, name, stream_key, create_time FROM channels WHERE id = ?1", params![id], |r| {
                Ok(ChannelRecord { id: r.get(0)?, name: r.get(1)?, stream_key: r.get(2)?, create_time: r.get(3)? })
            })
            .optional()?)
    }

    /// True when a row was deleted.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn.lock()?.execute("DELETE FROM channels WHERE id = ?1", params![id])? > 0)
    }
}
