//! Where rooms persist: the [`RoomStore`] trait, implemented on the server's
//! SQLite file ([`SqliteRoomStore`]: a table of its own, `chat_rooms`,
//! through a connection of its own, so the shared store does not need to
//! know about chat) and on Redis ([`RedisRoomStore`], distributed mode).

mod redis;

use std::path::Path;

use rusqlite::{params, OptionalExtension};

use super::room::RoomLimits;
use crate::store::{Page, PageQuery, StoreError, TableConnection};

pub use self::redis::RedisRoomStore;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chat_rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    max_messages_per_second INTEGER NOT NULL,
    max_message_length INTEGER NOT NULL
);
";

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub create_time: i64,
    pub limits: RoomLimits,
}

/// Stored rooms. Implementations must be usable from many threads at once.
pub trait RoomStore: Send + Sync {
    /// Refuses an id that exists.
    fn insert(&self, room: &RoomRecord) -> Result<(), StoreError>;
    fn get(&self, id: &str) -> Result<Option<RoomRecord>, StoreError>;
    /// Oldest first, one page.
    fn list(&self, page: PageQuery) -> Result<Page<RoomRecord>, StoreError>;
    /// True if the room existed.
    fn delete(&self, id: &str) -> Result<bool, StoreError>;
}

/// [`RoomStore`] on the server's SQLite file.
pub struct SqliteRoomStore {
    conn: TableConnection,
}

impl SqliteRoomStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self { conn: TableConnection::open(path, SCHEMA)? })
    }
}

impl RoomStore for SqliteRoomStore {
    fn insert(&self, room: &RoomRecord) -> Result<(), StoreError> {
        self.conn.lock()?.execute(
            "INSERT INTO chat_rooms (id, name, create_time, max_messages_per_second, max_message_length)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                room.id,
                room.name,
                room.create_time,
                room.limits.max_messages_per_second,
                room.limits.max_message_length
            ],
        )?;
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<RoomRecord>, StoreError> {
        Ok(self
            .conn
            .lock()?
            .query_row(
                "SELECT id, name, create_time, max_messages_per_second, max_message_length
                 FROM chat_rooms WHERE id = ?1",
                params![id],
                row_to_room,
            )
            .optional()?)
    }

    fn list(&self, page: PageQuery) -> Result<Page<RoomRecord>, StoreError> {
        let conn = self.conn.lock()?;
        let mut stmt = conn.prepare(
            "SELECT id, name, create_time, max_messages_per_second, max_message_length, rowid
             FROM chat_rooms WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![page.after.unwrap_or(0), page.fetch_limit()], |r| Ok((r.get(5)?, row_to_room(r)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn.lock()?.execute("DELETE FROM chat_rooms WHERE id = ?1", params![id])? > 0)
    }
}

fn row_to_room(row: &rusqlite::Row<'_>) -> rusqlite::Result<RoomRecord> {
    Ok(RoomRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        create_time: row.get(2)?,
        limits: RoomLimits { max_messages_per_second: row.get(3)?, max_message_length: row.get(4)? },
    })
}
