//! Where channels persist: the [`ChannelStore`] trait, implemented on the
//! server's SQLite file ([`SqliteChannelStore`]: tables of their own,
//! `channels`, `playback_keys`, …, through a connection of their own, like
//! chat rooms, so the shared store trait does not need to know about
//! channels) and on Redis ([`RedisChannelStore`], distributed mode).

mod redis;

use std::path::Path;

use rusqlite::{params, OptionalExtension};

use super::packager::Continuity;
use super::recording::RecordingSettings;
use crate::store::{Page, PageQuery, StoreError, TableConnection};

pub use self::redis::RedisChannelStore;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    stream_key TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS playback_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    pem TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    create_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channel_broadcasts (
    channel_id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    continuity TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
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
    /// Private: playback needs a playback token (IVS `authorized`).
    pub authorized: bool,
    /// Auto-record every broadcast so; `None`: no recording.
    pub recording: Option<RecordingSettings>,
}

impl std::fmt::Debug for ChannelRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("stream_key", &"<redacted>")
            .field("create_time", &self.create_time)
            .field("authorized", &self.authorized)
            .field("recording", &self.recording)
            .finish()
    }
}

/// What a broadcast needs to continue after a server restart: where its
/// playlist left off ([`Continuity`]), its last ingest session (so that
/// session's WHIP `DELETE` still ends it) and when it was last heard from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedBroadcast {
    pub channel_id: String,
    pub session: String,
    pub continuity: Continuity,
    /// Wall clock (Unix ms) of the last save: the broadcaster was still
    /// there then.
    pub updated_ms: i64,
}

/// An imported playback key pair's public half (IVS `PlaybackKeyPair`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybackKeyRecord {
    pub id: String,
    pub name: String,
    /// SPKI PEM, P-384.
    pub pem: String,
    pub fingerprint: String,
    /// Unix seconds.
    pub create_time: i64,
}

/// Stored channels, playback keys and saved broadcasts. Implementations
/// must be usable from many threads at once.
pub trait ChannelStore: Send + Sync {
    /// Refuses an id that exists.
    fn insert(&self, c: &ChannelRecord) -> Result<(), StoreError>;
    /// The ids of every private channel.
    fn authorized_ids(&self) -> Result<Vec<String>, StoreError>;
    fn get(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError>;
    /// Oldest first, one page.
    fn list(&self, page: PageQuery) -> Result<Page<ChannelRecord>, StoreError>;
    /// Set how channel `id` records (`None`: not at all); true when it exists.
    fn set_recording(&self, id: &str, recording: Option<RecordingSettings>) -> Result<bool, StoreError>;
    /// True when the channel existed.
    fn delete(&self, id: &str) -> Result<bool, StoreError>;

    /// Refuses an id or a fingerprint that exists.
    fn insert_playback_key(&self, k: &PlaybackKeyRecord) -> Result<(), StoreError>;
    fn get_playback_key(&self, id: &str) -> Result<Option<PlaybackKeyRecord>, StoreError>;
    fn find_playback_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<PlaybackKeyRecord>, StoreError>;
    /// Oldest first, one page.
    fn list_playback_keys(&self, page: PageQuery) -> Result<Page<PlaybackKeyRecord>, StoreError>;
    /// Every playback key (to load them at start), oldest first.
    fn all_playback_keys(&self) -> Result<Vec<PlaybackKeyRecord>, StoreError>;
    fn count_playback_keys(&self) -> Result<i64, StoreError>;
    /// True when the key existed.
    fn delete_playback_key(&self, id: &str) -> Result<bool, StoreError>;

    /// Remember where a broadcast is (replacing what was saved before).
    fn save_broadcast(&self, b: &SavedBroadcast) -> Result<(), StoreError>;
    /// Forget a broadcast (it ended, or its channel is gone).
    fn delete_broadcast(&self, channel_id: &str) -> Result<(), StoreError>;
    /// Every saved broadcast; entries that do not parse are skipped (and logged).
    fn saved_broadcasts(&self) -> Result<Vec<SavedBroadcast>, StoreError>;
}

/// [`ChannelStore`] on the server's SQLite file.
pub struct SqliteChannelStore {
    conn: TableConnection,
}

impl SqliteChannelStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = Self { conn: TableConnection::open(path, SCHEMA)? };
        store.migrate()?;
        Ok(store)
    }

    /// Tables made before channels could be private lack `authorized`
    /// (`CREATE TABLE IF NOT EXISTS` does not add it): their channels stay
    /// public. Those made before recordings lack `recording` (JSON of
    /// [`RecordingSettings`]): their channels do not record.
    fn migrate(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock()?;
        let mut stmt = conn.prepare("PRAGMA table_info(channels)")?;
        let columns = stmt.query_map([], |r| r.get::<_, String>(1))?.collect::<Result<Vec<_>, _>>()?;
        if !columns.iter().any(|c| c == "authorized") {
            conn.execute_batch("ALTER TABLE channels ADD COLUMN authorized INTEGER NOT NULL DEFAULT 0;")?;
        }
        // Channels from before recordings do not record (NULL).
        if !columns.iter().any(|c| c == "recording") {
            conn.execute_batch("ALTER TABLE channels ADD COLUMN recording TEXT;")?;
        }
        Ok(())
    }
}

impl ChannelStore for SqliteChannelStore {
    fn insert(&self, c: &ChannelRecord) -> Result<(), StoreError> {
        self.conn.lock()?.execute(
            "INSERT INTO channels (id, name, stream_key, create_time, authorized, recording) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![c.id, c.name, c.stream_key, c.create_time, c.authorized, recording_json(c.recording)],
        )?;
        Ok(())
    }

    fn authorized_ids(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn.lock()?;
        let mut stmt = conn.prepare("SELECT id FROM channels WHERE authorized != 0")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    fn get(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        Ok(self
            .conn
            .lock()?
            .query_row(
                "SELECT id, name, stream_key, create_time, authorized, recording FROM channels WHERE id = ?1",
                params![id],
                channel_row,
            )
            .optional()?)
    }

    fn list(&self, page: PageQuery) -> Result<Page<ChannelRecord>, StoreError> {
        let conn = self.conn.lock()?;
        let mut stmt = conn.prepare(
            "SELECT id, name, stream_key, create_time, authorized, recording, rowid FROM channels WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![page.after.unwrap_or(0), page.fetch_limit()], |r| Ok((r.get(6)?, channel_row(r)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    fn set_recording(&self, id: &str, recording: Option<RecordingSettings>) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .lock()?
            .execute("UPDATE channels SET recording = ?2 WHERE id = ?1", params![id, recording_json(recording)])?;
        Ok(changed > 0)
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn.lock()?.execute("DELETE FROM channels WHERE id = ?1", params![id])? > 0)
    }

    fn insert_playback_key(&self, k: &PlaybackKeyRecord) -> Result<(), StoreError> {
        self.conn.lock()?.execute(
            "INSERT INTO playback_keys (id, name, pem, fingerprint, create_time) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![k.id, k.name, k.pem, k.fingerprint, k.create_time],
        )?;
        Ok(())
    }

    fn get_playback_key(&self, id: &str) -> Result<Option<PlaybackKeyRecord>, StoreError> {
        Ok(self
            .conn
            .lock()?
            .query_row(
                "SELECT id, name, pem, fingerprint, create_time FROM playback_keys WHERE id = ?1",
                params![id],
                key_row,
            )
            .optional()?)
    }

    fn find_playback_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<PlaybackKeyRecord>, StoreError> {
        Ok(self
            .conn
            .lock()?
            .query_row(
                "SELECT id, name, pem, fingerprint, create_time FROM playback_keys WHERE fingerprint = ?1",
                params![fingerprint],
                key_row,
            )
            .optional()?)
    }

    fn list_playback_keys(&self, page: PageQuery) -> Result<Page<PlaybackKeyRecord>, StoreError> {
        let conn = self.conn.lock()?;
        let mut stmt = conn.prepare(
            "SELECT id, name, pem, fingerprint, create_time, rowid FROM playback_keys WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![page.after.unwrap_or(0), page.fetch_limit()], |r| Ok((r.get(5)?, key_row(r)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    fn all_playback_keys(&self) -> Result<Vec<PlaybackKeyRecord>, StoreError> {
        let conn = self.conn.lock()?;
        let mut stmt = conn.prepare("SELECT id, name, pem, fingerprint, create_time FROM playback_keys ORDER BY rowid")?;
        let keys = stmt.query_map([], key_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    fn count_playback_keys(&self) -> Result<i64, StoreError> {
        Ok(self.conn.lock()?.query_row("SELECT COUNT(*) FROM playback_keys", [], |r| r.get(0))?)
    }

    fn delete_playback_key(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn.lock()?.execute("DELETE FROM playback_keys WHERE id = ?1", params![id])? > 0)
    }

    fn save_broadcast(&self, b: &SavedBroadcast) -> Result<(), StoreError> {
        let continuity = serde_json::to_string(&b.continuity)
            .map_err(|source| StoreError::Corrupt { what: "broadcast continuity", source })?;
        self.conn.lock()?.execute(
            "INSERT OR REPLACE INTO channel_broadcasts (channel_id, session, continuity, updated_ms) VALUES (?1, ?2, ?3, ?4)",
            params![b.channel_id, b.session, continuity, b.updated_ms],
        )?;
        Ok(())
    }

    fn delete_broadcast(&self, channel_id: &str) -> Result<(), StoreError> {
        self.conn.lock()?.execute("DELETE FROM channel_broadcasts WHERE channel_id = ?1", params![channel_id])?;
        Ok(())
    }

    fn saved_broadcasts(&self) -> Result<Vec<SavedBroadcast>, StoreError> {
        let conn = self.conn.lock()?;
        let mut stmt = conn.prepare("SELECT channel_id, session, continuity, updated_ms FROM channel_broadcasts")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (channel_id, session, continuity, updated_ms) = row?;
            match serde_json::from_str(&continuity) {
                Ok(continuity) => out.push(SavedBroadcast { channel_id, session, continuity, updated_ms }),
                Err(e) => tracing::warn!(channel = %channel_id, error = %e, "skipping an unreadable saved broadcast"),
            }
        }
        Ok(out)
    }
}

fn channel_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChannelRecord> {
    Ok(ChannelRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        stream_key: r.get(2)?,
        create_time: r.get(3)?,
        authorized: r.get(4)?,
        // A value this version cannot read records nothing rather than failing the channel.
        recording: r.get::<_, Option<String>>(5)?.and_then(|j| serde_json::from_str(&j).ok()),
    })
}

fn recording_json(settings: Option<RecordingSettings>) -> Option<String> {
    settings.and_then(|s| serde_json::to_string(&s).ok())
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PlaybackKeyRecord> {
    Ok(PlaybackKeyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        pem: r.get(2)?,
        fingerprint: r.get(3)?,
        create_time: r.get(4)?,
    })
}
