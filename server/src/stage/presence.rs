//! Presence: who is on each stage, copied to the store as it changes, so a
//! server killed and started again on the same data dir puts every member
//! back in its reconnect grace and nobody is shown a leave/join pair.
//!
//! - [`PresencePlan`] (sans-IO) turns the stages changed since the last
//!   write — their newest [`RoomState`], immutable and shared — into store
//!   writes: per stage, the members changed since the sequence last written
//!   and the ids removed since, or a full rewrite (first write, a change in
//!   who is WHIP-only, or behind the room's tombstones).
//! - [`SqlitePresence`]: the `stage_presence` table of the server's SQLite
//!   file, on a connection of its own.
//! - [`RedisPresence`] (distributed mode): the same in Redis, with a TTL the
//!   stage's home pushes back while the stage has members. A node that
//!   becomes a stage's home (the old one died) puts the stored members back
//!   in their grace ([`restore_stage`]) before serving the first request,
//!   so the members reconnecting through it are not shown each other
//!   leaving and joining; presence nobody renews is gone after the TTL.
//! - [`spawn_writer`]: the task. A change wakes it; it waits [`COALESCE`]
//!   so a burst (a SET_STATE flood, a join storm) becomes one write, takes
//!   the changed stages under the hub lock (cloning `Arc`s, no I/O), and
//!   writes on the blocking pool, one write at a time. At most the last
//!   [`COALESCE`] of changes is lost to a kill -9.
//! - [`restore`]: at start, before serving (single-node mode).
//!
//! `published` is stored but never restored: the media sessions died with
//! the old process, so a restored member is shown not publishing (the
//! others' apps see its streams removed, never the member leave) until it
//! publishes again — which its SDK does at once when its own snapshot says
//! it is not published. Showing it published would have subscribers
//! retrying against a publisher the SFU does not have.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;
use stagecast_protocol::events::ParticipantState;
use stagecast_protocol::{ParticipantId, StageId};

mod redis;
pub use self::redis::RedisPresence;

use super::hub::{PresenceBatch, RestoredMember, StageHub, WeakHub};
use super::room::Changes;
use crate::store::{Store, StoreError, TableConnection};

/// How long the writer gathers changes before writing them.
pub const COALESCE: Duration = Duration::from_millis(250);
/// The writer also wakes this often without a change, to notice the hub is gone.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// After a failed write, wait this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the writer pushes back the TTL of the stages with members
/// here ([`PresenceStore::keep_alive`]); well inside [`RedisPresence`]'s TTL.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stage_presence (
    stage_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    state TEXT NOT NULL,
    whip_only INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stage_id, participant_id)
);
";

/// One member as stored: its [`ParticipantState`] as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    pub id: String,
    pub state: String,
    pub whip_only: bool,
}

/// What the store must do for one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageWrite {
    /// Exactly these members, in join order.
    Replace { stage: StageId, members: Vec<PresenceRow> },
    /// Insert or update `upsert` (an update keeps the member's place), drop `remove`.
    Update { stage: StageId, upsert: Vec<PresenceRow>, remove: Vec<String> },
    /// The stage is gone.
    Delete { stage: StageId },
}

impl StageWrite {
    fn stage(&self) -> &StageId {
        match self {
            Self::Replace { stage, .. } | Self::Update { stage, .. } | Self::Delete { stage } => stage,
        }
    }
}

/// Where presence is kept. Implementations must be usable from many threads.
pub trait PresenceStore: Send + Sync {
    /// Apply `writes` in order, all or nothing.
    fn write(&self, writes: &[StageWrite]) -> Result<(), StoreError>;
    /// Every stored stage with its members in join order.
    fn load(&self) -> Result<Vec<(StageId, Vec<PresenceRow>)>, StoreError>;
    /// One stage's members in join order.
    fn load_stage(&self, stage: &StageId) -> Result<Vec<PresenceRow>, StoreError>;
    /// These stages still have members here: keep their presence (a store
    /// whose presence expires pushes the expiry back; others do nothing).
    fn keep_alive(&self, _stages: &[StageId]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What the store holds for one stage, as far as the plan knows.
#[derive(Debug)]
struct Written {
    sequence: u64,
    whip_only: Vec<String>,
}

/// Sans-IO: which writes bring the store up to date with a batch of changes.
#[derive(Debug, Default)]
pub(crate) struct PresencePlan {
    written: HashMap<StageId, Written>,
}

impl PresencePlan {
    /// The writes for `batch`; afterwards the plan assumes they succeeded.
    pub fn plan(&mut self, batch: &PresenceBatch) -> Vec<StageWrite> {
        let mut writes = Vec::with_capacity(batch.deleted.len() + batch.changed.len());
        for stage in &batch.deleted {
            self.written.remove(stage);
            writes.push(StageWrite::Delete { stage: stage.clone() });
        }
        for change in &batch.changed {
            let base = self
                .written
                .get(&change.stage)
                .filter(|w| w.whip_only == change.whip_only)
                .map(|w| w.sequence);
            let row = |(id, json): (&str, &str)| PresenceRow {
                id: id.to_owned(),
                state: json.to_owned(),
                whip_only: change.whip_only.binary_search_by(|w| w.as_str().cmp(id)).is_ok(),
            };
            let write = match change.state.changes_since(base) {
                Changes::Full(members) => {
                    StageWrite::Replace { stage: change.stage.clone(), members: members.into_iter().map(row).collect() }
                }
                Changes::Delta { changed, removed } if changed.is_empty() && removed.is_empty() => continue,
                Changes::Delta { changed, removed } => StageWrite::Update {
                    stage: change.stage.clone(),
                    upsert: changed.into_iter().map(row).collect(),
                    remove: removed,
                },
            };
            writes.push(write);
            let written = Written { sequence: change.state.sequence_number(), whip_only: change.whip_only.clone() };
            self.written.insert(change.stage.clone(), written);
        }
        writes
    }

    /// `writes` failed: their stages are rewritten in full next time.
    pub fn forget(&mut self, writes: &[StageWrite]) {
        for write in writes {
            self.written.remove(write.stage());
        }
    }
}

/// [`PresenceStore`] on the `stage_presence` table of an SQLite file.
pub struct SqlitePresence {
    conn: TableConnection,
}

impl SqlitePresence {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self { conn: TableConnection::open(path, SCHEMA)? })
    }
}

impl PresenceStore for SqlitePresence {
    fn write(&self, writes: &[StageWrite]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock()?;
        let tx = conn.transaction()?;
        {
            let mut clear = tx.prepare_cached("DELETE FROM stage_presence WHERE stage_id = ?1")?;
            let mut remove = tx.prepare_cached("DELETE FROM stage_presence WHERE stage_id = ?1 AND participant_id = ?2")?;
            // An update keeps the row (and its rowid: the join order).
            let mut upsert = tx.prepare_cached(
                "INSERT INTO stage_presence (stage_id, participant_id, state, whip_only) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (stage_id, participant_id) DO UPDATE SET state = excluded.state, whip_only = excluded.whip_only",
            )?;
            for write in writes {
                match write {
                    StageWrite::Delete { stage } => {
                        clear.execute(params![stage.0])?;
                    }
                    StageWrite::Replace { stage, members } => {
                        clear.execute(params![stage.0])?;
                        for m in members {
                            upsert.execute(params![stage.0, m.id, m.state, m.whip_only])?;
                        }
                    }
                    StageWrite::Update { stage, upsert: rows, remove: ids } => {
                        for id in ids {
                            remove.execute(params![stage.0, id])?;
                        }
                        for m in rows {
                            upsert.execute(params![stage.0, m.id, m.state, m.whip_only])?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn load(&self) -> Result<Vec<(StageId, Vec<PresenceRow>)>, StoreError> {
        let conn = self.conn.lock()?;
        let mut stmt =
            conn.prepare("SELECT stage_id, participant_id, state, whip_only FROM stage_presence ORDER BY stage_id, rowid")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, PresenceRow { id: r.get(1)?, state: r.get(2)?, whip_only: r.get(3)? }))
        })?;
        let mut out: Vec<(StageId, Vec<PresenceRow>)> = Vec::new();
        for row in rows {
            // Rows come ordered by stage: a new stage starts a new group.
            let (stage, member) = row?;
            match out.last_mut() {
                Some((last, members)) if last.0 == stage => members.push(member),
                _ => out.push((StageId(stage), vec![member])),
            }
        }
        Ok(out)
    }

    fn load_stage(&self, stage: &StageId) -> Result<Vec<PresenceRow>, StoreError> {
        let conn = self.conn.lock()?;
        let mut stmt =
            conn.prepare("SELECT participant_id, state, whip_only FROM stage_presence WHERE stage_id = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map(params![stage.0], |r| Ok(PresenceRow { id: r.get(0)?, state: r.get(1)?, whip_only: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Start the task that copies the hub's changes to `store` (see the module
/// docs). It ends once the hub is dropped.
pub(crate) fn spawn_writer(hub: WeakHub, store: Arc<dyn PresenceStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut plan = PresencePlan::default();
        let mut kept_alive = tokio::time::Instant::now();
        loop {
            let _ = tokio::time::timeout(IDLE_CHECK, hub.changed()).await;
            tokio::time::sleep(COALESCE).await;
            let Some(live) = hub.upgrade() else { break };
            let batch = live.take_presence();
            let active = (kept_alive.elapsed() >= KEEP_ALIVE_EVERY).then(|| live.active_stages());
            drop(live);
            if let Some(active) = active {
                kept_alive = tokio::time::Instant::now();
                let store = store.clone();
                let kept = tokio::task::spawn_blocking(move || store.keep_alive(&active)).await;
                if let Ok(Err(e)) = kept {
                    tracing::warn!(error = %e, "cannot renew stage presence");
                }
            }
            let writes = plan.plan(&batch);
            if writes.is_empty() {
                continue;
            }
            let store = store.clone();
            let (writes, result) = match tokio::task::spawn_blocking(move || {
                let result = store.write(&writes);
                (writes, result)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "the presence write task failed");
                    break;
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, stages = writes.len(), "cannot store stage presence; retrying");
                plan.forget(&writes);
                let Some(live) = hub.upgrade() else { break };
                live.retry_presence(writes.iter().map(|w| w.stage().clone()).collect());
                drop(live);
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    })
}

/// How many stages and members [`restore`] put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub stages: usize,
    pub members: usize,
}

/// Put back every member the store says a previous run had, in its
/// reconnect `grace` (see [`StageHub::restore`]). Skipped: stages that no
/// longer exist (their rows are deleted), members whose token was revoked
/// or has expired, rows that do not parse. Call at start, before serving.
pub fn restore(
    hub: &StageHub,
    presence: &dyn PresenceStore,
    store: &dyn Store,
    grace: Duration,
    now_unix: i64,
) -> Result<Restored, StoreError> {
    let mut restored = Restored::default();
    for (stage, rows) in presence.load()? {
        if let Some(members) = restore_stage(hub, presence, store, &stage, rows, grace, now_unix)? {
            restored.stages += 1;
            restored.members += members;
        }
    }
    Ok(restored)
}

/// Put back `stage`'s stored members `rows` (see [`restore`]); how many, or
/// `None` when the stage no longer exists (its rows are deleted). Distributed
/// mode calls it with [`PresenceStore::load_stage`] when this node becomes
/// the stage's home.
pub fn restore_stage(
    hub: &StageHub,
    presence: &dyn PresenceStore,
    store: &dyn Store,
    stage: &StageId,
    rows: Vec<PresenceRow>,
    grace: Duration,
    now_unix: i64,
) -> Result<Option<usize>, StoreError> {
    if store.get_stage(stage)?.is_none() {
        presence.write(&[StageWrite::Delete { stage: stage.clone() }])?;
        return Ok(None);
    }
    let mut members = Vec::with_capacity(rows.len());
    for row in rows {
        let state: ParticipantState = match serde_json::from_str(&row.state) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(stage = %stage, participant = %row.id, error = %e, "stored presence does not parse; dropped");
                continue;
            }
        };
        if state.id != row.id {
            continue;
        }
        let record = store.get_participant(stage, &ParticipantId(row.id.clone()))?;
        if record.is_some_and(|r| r.revoked || r.expiration <= now_unix) {
            continue;
        }
        members.push(RestoredMember { state, whip_only: row.whip_only });
    }
    let count = members.len();
    hub.restore(stage, members, grace);
    Ok(Some(count))
}

#[cfg(test)]
mod tests;
