//! The embedded SQLite store: one connection behind a mutex, WAL journal.
//!
//! One connection is plenty: every query here is a point lookup or a small
//! scan that finishes in microseconds, far below HTTP latency.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};
use stagecast_protocol::token::TokenCapabilities;
use stagecast_protocol::{ParticipantId, StageId};

use super::{DemoGroupRecord, Page, PageQuery, ParticipantRecord, PublicKeyRecord, StageRecord, Store, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stages (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    create_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    stage_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    attributes TEXT NOT NULL,
    allow_publish INTEGER NOT NULL,
    allow_subscribe INTEGER NOT NULL,
    expiration INTEGER NOT NULL,
    first_join_time INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0,
    revoke_reason TEXT,
    PRIMARY KEY (stage_id, participant_id)
);
CREATE TABLE IF NOT EXISTS public_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    pem TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS demo_groups (
    group_id TEXT PRIMARY KEY,
    stage_id TEXT NOT NULL,
    host_user_id TEXT NOT NULL,
    host_participant_id TEXT NOT NULL,
    host_attributes TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    channel_id TEXT,
    room_id TEXT
);
CREATE INDEX IF NOT EXISTS demo_groups_stage ON demo_groups (stage_id);
";

/// [`Store`] on an SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            super::private_dir(dir).map_err(|source| StoreError::Dir { path: path.display().to_string(), source })?;
        }
        super::private_db_file(path)
            .map_err(|source| StoreError::Private { path: path.display().to_string(), source })?;
        let conn = Connection::open(path)?;
        // journal_mode answers with a row, so it cannot go through execute().
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
        conn.execute_batch(SCHEMA)?;
        migrate_demo_groups(&conn)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

/// Databases created before groups had a channel and a chat room lack
/// those columns; `CREATE TABLE IF NOT EXISTS` does not add them.
fn migrate_demo_groups(conn: &Connection) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("PRAGMA table_info(demo_groups)")?;
    let columns = stmt.query_map([], |r| r.get::<_, String>(1))?.collect::<Result<Vec<_>, _>>()?;
    for column in ["channel_id", "room_id"] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE demo_groups ADD COLUMN {column} TEXT;"))?;
        }
    }
    Ok(())
}

fn to_json(map: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes; an empty object is a safe fallback.
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}

fn from_json(what: &'static str, text: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { what, source })
}

fn stage_row(r: &Row<'_>) -> rusqlite::Result<StageRecord> {
    Ok(StageRecord { id: StageId(r.get(0)?), name: r.get(1)?, create_time: r.get(2)? })
}

/// Raw participant row; the attributes are decoded afterwards so a corrupt
/// value surfaces as [`StoreError::Corrupt`] rather than an SQLite error.
struct RawParticipant {
    record: ParticipantRecord,
    attributes: String,
}

const PARTICIPANT_COLUMNS: &str = "stage_id, participant_id, user_id, attributes, allow_publish, allow_subscribe, \
     expiration, first_join_time, revoked, revoke_reason";

fn participant_row(r: &Row<'_>) -> rusqlite::Result<RawParticipant> {
    Ok(RawParticipant {
        record: ParticipantRecord {
            stage_id: StageId(r.get(0)?),
            participant_id: ParticipantId(r.get(1)?),
            user_id: r.get(2)?,
            attributes: BTreeMap::new(),
            capabilities: TokenCapabilities { allow_publish: r.get(4)?, allow_subscribe: r.get(5)? },
            expiration: r.get(6)?,
            first_join_time: r.get(7)?,
            revoked: r.get(8)?,
            revoke_reason: r.get(9)?,
        },
        attributes: r.get(3)?,
    })
}

fn finish_participant(raw: RawParticipant) -> Result<ParticipantRecord, StoreError> {
    let mut record = raw.record;
    record.attributes = from_json("participant attributes", &raw.attributes)?;
    Ok(record)
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<PublicKeyRecord> {
    Ok(PublicKeyRecord { id: r.get(0)?, name: r.get(1)?, pem: r.get(2)?, fingerprint: r.get(3)? })
}

struct RawGroup {
    record: DemoGroupRecord,
    attributes: String,
}

const GROUP_COLUMNS: &str =
    "group_id, stage_id, host_user_id, host_participant_id, host_attributes, create_time, channel_id, room_id";

fn group_row(r: &Row<'_>) -> rusqlite::Result<RawGroup> {
    Ok(RawGroup {
        record: DemoGroupRecord {
            group_id: r.get(0)?,
            stage_id: StageId(r.get(1)?),
            host_user_id: r.get(2)?,
            host_participant_id: ParticipantId(r.get(3)?),
            host_attributes: BTreeMap::new(),
            create_time: r.get(5)?,
            channel_id: r.get(6)?,
            room_id: r.get(7)?,
        },
        attributes: r.get(4)?,
    })
}

fn finish_group(raw: RawGroup) -> Result<DemoGroupRecord, StoreError> {
    let mut record = raw.record;
    record.host_attributes = from_json("demo group attributes", &raw.attributes)?;
    Ok(record)
}

impl Store for SqliteStore {
    fn create_stage(&self, stage: &StageRecord) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO stages (id, name, create_time) VALUES (?1, ?2, ?3)",
            params![stage.id.as_str(), stage.name, stage.create_time],
        )?;
        Ok(())
    }

    fn get_stage(&self, id: &StageId) -> Result<Option<StageRecord>, StoreError> {
        Ok(self
            .conn()?
            .query_row("SELECT id, name, create_time FROM stages WHERE id = ?1", [id.as_str()], stage_row)
            .optional()?)
    }

    fn list_stages(&self, page: PageQuery) -> Result<Page<StageRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT id, name, create_time, rowid FROM stages WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![page.after.unwrap_or(0), page.fetch_limit()], |r| Ok((r.get(3)?, stage_row(r)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    fn delete_stage(&self, id: &StageId) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM stages WHERE id = ?1", [id.as_str()])?;
        tx.execute("DELETE FROM participants WHERE stage_id = ?1", [id.as_str()])?;
        tx.execute("DELETE FROM demo_groups WHERE stage_id = ?1", [id.as_str()])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn insert_participant(&self, p: &ParticipantRecord) -> Result<(), StoreError> {
        self.conn()?.execute(
            &format!("INSERT OR REPLACE INTO participants ({PARTICIPANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
            params![
                p.stage_id.as_str(),
                p.participant_id.as_str(),
                p.user_id,
                to_json(&p.attributes),
                p.capabilities.allow_publish,
                p.capabilities.allow_subscribe,
                p.expiration,
                p.first_join_time,
                p.revoked,
                p.revoke_reason,
            ],
        )?;
        Ok(())
    }

    fn get_participant(&self, stage: &StageId, id: &ParticipantId) -> Result<Option<ParticipantRecord>, StoreError> {
        let raw = self
            .conn()?
            .query_row(
                &format!("SELECT {PARTICIPANT_COLUMNS} FROM participants WHERE stage_id = ?1 AND participant_id = ?2"),
                [stage.as_str(), id.as_str()],
                participant_row,
            )
            .optional()?;
        raw.map(finish_participant).transpose()
    }

    fn list_participants(&self, stage: &StageId, page: PageQuery) -> Result<Page<ParticipantRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {PARTICIPANT_COLUMNS}, rowid FROM participants WHERE stage_id = ?1 AND rowid > ?2
             ORDER BY rowid LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(params![stage.as_str(), page.after.unwrap_or(0), page.fetch_limit()], |r| {
                Ok((r.get(10)?, participant_row(r)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let rows = rows
            .into_iter()
            .map(|(at, raw)| Ok((at, finish_participant(raw)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    fn user_removed(&self, stage: &StageId, user_id: &str) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT 1 FROM participants WHERE stage_id = ?1 AND user_id = ?2 AND revoked = 1 LIMIT 1")?;
        Ok(stmt.exists(params![stage.as_str(), user_id])?)
    }

    fn record_join(&self, p: &ParticipantRecord, when: i64) -> Result<(), StoreError> {
        self.conn()?.execute(
            &format!(
                "INSERT INTO participants ({PARTICIPANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, NULL)
                 ON CONFLICT (stage_id, participant_id)
                 DO UPDATE SET first_join_time = COALESCE(first_join_time, excluded.first_join_time)"
            ),
            params![
                p.stage_id.as_str(),
                p.participant_id.as_str(),
                p.user_id,
                to_json(&p.attributes),
                p.capabilities.allow_publish,
                p.capabilities.allow_subscribe,
                p.expiration,
                when,
            ],
        )?;
        Ok(())
    }

    fn revoke_participant(&self, stage: &StageId, id: &ParticipantId, reason: &str) -> Result<bool, StoreError> {
        let n = self.conn()?.execute(
            "UPDATE participants SET revoked = 1, revoke_reason = ?3 WHERE stage_id = ?1 AND participant_id = ?2",
            params![stage.as_str(), id.as_str(), reason],
        )?;
        Ok(n > 0)
    }

    fn insert_public_key(&self, key: &PublicKeyRecord) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO public_keys (id, name, pem, fingerprint) VALUES (?1, ?2, ?3, ?4)",
            params![key.id, key.name, key.pem, key.fingerprint],
        )?;
        Ok(())
    }

    fn list_public_keys(&self) -> Result<Vec<PublicKeyRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT id, name, pem, fingerprint FROM public_keys ORDER BY rowid")?;
        let rows = stmt.query_map([], key_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn find_public_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<PublicKeyRecord>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT id, name, pem, fingerprint FROM public_keys WHERE fingerprint = ?1",
                [fingerprint],
                key_row,
            )
            .optional()?)
    }

    fn create_demo_group(&self, g: &DemoGroupRecord) -> Result<(), StoreError> {
        self.conn()?.execute(
            &format!("INSERT INTO demo_groups ({GROUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                g.group_id,
                g.stage_id.as_str(),
                g.host_user_id,
                g.host_participant_id.as_str(),
                to_json(&g.host_attributes),
                g.create_time,
                g.channel_id,
                g.room_id,
            ],
        )?;
        Ok(())
    }

    fn get_demo_group(&self, group_id: &str) -> Result<Option<DemoGroupRecord>, StoreError> {
        let raw = self
            .conn()?
            .query_row(&format!("SELECT {GROUP_COLUMNS} FROM demo_groups WHERE group_id = ?1"), [group_id], group_row)
            .optional()?;
        raw.map(finish_group).transpose()
    }

    fn list_demo_groups(&self, page: PageQuery) -> Result<Page<DemoGroupRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {GROUP_COLUMNS}, rowid FROM demo_groups WHERE rowid < ?1 ORDER BY rowid DESC LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![page.after.unwrap_or(i64::MAX), page.fetch_limit()], |r| Ok((r.get(8)?, group_row(r)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let rows = rows
            .into_iter()
            .map(|(at, raw)| Ok((at, finish_group(raw)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    fn delete_demo_group(&self, group_id: &str) -> Result<bool, StoreError> {
        let n = self.conn()?.execute("DELETE FROM demo_groups WHERE group_id = ?1", [group_id])?;
        Ok(n > 0)
    }
}
