//! [`PresenceStore`] on Redis (distributed mode). Per stage, two keys that
//! expire together after [`TTL`]:
//! - `stagecast:presence:<stage>`: a hash, participant id → `{state, whipOnly}`;
//! - `stagecast:presence-order:<stage>`: the ids scored by when they were
//!   first written (join order; an update keeps the score, `ZADD NX`).
//!
//! Only a stage's home writes them (one writer per stage), every write in
//! one `MULTI`; the home pushes the expiry back every few seconds while the
//! stage has members ([`PresenceStore::keep_alive`]), so the presence of a
//! home that died lasts until its members are back on another node, or
//! [`TTL`] if nobody comes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stagecast_protocol::StageId;

use super::{PresenceRow, PresenceStore, StageWrite};
use crate::store::redis::{from_json, key, to_json, RedisPool, PREFIX};
use crate::store::StoreError;

/// How long a stage's presence outlives its last renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// Keys SCANned per round trip by [`PresenceStore::load`].
const SCAN_COUNT: usize = 200;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Member {
    state: String,
    whip_only: bool,
}

fn members_key(stage: &StageId) -> String {
    key("presence", &stage.0)
}

fn order_key(stage: &StageId) -> String {
    key("presence-order", &stage.0)
}

/// Stage presence in Redis, on the node's shared pool.
pub struct RedisPresence {
    pool: Arc<RedisPool>,
}

impl RedisPresence {
    pub fn new(pool: Arc<RedisPool>) -> Self {
        Self { pool }
    }
}

/// Microseconds since the epoch: the order score of members added now
/// (`+ i` for the i-th of one write).
fn now_micros() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_micros() as f64)
}

impl PresenceStore for RedisPresence {
    fn write(&self, writes: &[StageWrite]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let base = now_micros();
        let ttl = TTL.as_secs();
        let add = |pipe: &mut redis::Pipeline, stage: &StageId, rows: &[PresenceRow]| -> Result<(), StoreError> {
            let (members, order) = (members_key(stage), order_key(stage));
            for (i, row) in rows.iter().enumerate() {
                let json = to_json("stage presence", &Member { state: row.state.clone(), whip_only: row.whip_only })?;
                pipe.hset(&members, &row.id, json).ignore();
                pipe.cmd("ZADD").arg(&order).arg("NX").arg(base + i as f64).arg(&row.id).ignore();
            }
            pipe.expire(&members, ttl as i64).ignore();
            pipe.expire(&order, ttl as i64).ignore();
            Ok(())
        };
        for write in writes {
            match write {
                StageWrite::Delete { stage } => {
                    pipe.del(members_key(stage)).ignore();
                    pipe.del(order_key(stage)).ignore();
                }
                StageWrite::Replace { stage, members } => {
                    pipe.del(members_key(stage)).ignore();
                    pipe.del(order_key(stage)).ignore();
                    add(&mut pipe, stage, members)?;
                }
                StageWrite::Update { stage, upsert, remove } => {
                    for id in remove {
                        pipe.hdel(members_key(stage), id).ignore();
                        pipe.zrem(order_key(stage), id).ignore();
                    }
                    add(&mut pipe, stage, upsert)?;
                }
            }
        }
        self.pool.with(|c| pipe.query::<()>(c))
    }

    fn load(&self) -> Result<Vec<(StageId, Vec<PresenceRow>)>, StoreError> {
        let prefix = format!("{PREFIX}presence:");
        let mut stages = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self.pool.with(|c| {
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{prefix}*")).arg("COUNT").arg(SCAN_COUNT).query(c)
            })?;
            stages.extend(keys.iter().filter_map(|k| k.strip_prefix(&prefix)).map(|id| StageId(id.to_owned())));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        stages.sort_by(|a, b| a.0.cmp(&b.0));
        stages.dedup();
        let mut out = Vec::with_capacity(stages.len());
        for stage in stages {
            let rows = self.load_stage(&stage)?;
            if !rows.is_empty() {
                out.push((stage, rows));
            }
        }
        Ok(out)
    }

    fn load_stage(&self, stage: &StageId) -> Result<Vec<PresenceRow>, StoreError> {
        let (order, members): (Vec<String>, HashMap<String, String>) = self.pool.with(|c| {
            redis::pipe().cmd("ZRANGE").arg(order_key(stage)).arg(0).arg(-1).hgetall(members_key(stage)).query(c)
        })?;
        let mut members = members;
        let mut rows = Vec::with_capacity(members.len());
        // Join order first; a member missing from the order (never, with
        // MULTI writes) after them, by id.
        let mut rest: Vec<String> = members.keys().filter(|id| !order.contains(id)).cloned().collect();
        rest.sort();
        for id in order.into_iter().chain(rest) {
            let Some(json) = members.remove(&id) else { continue };
            let member: Member = from_json("stage presence", &json)?;
            rows.push(PresenceRow { id, state: member.state, whip_only: member.whip_only });
        }
        Ok(rows)
    }

    fn keep_alive(&self, stages: &[StageId]) -> Result<(), StoreError> {
        if stages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let ttl = TTL.as_secs() as i64;
        for stage in stages {
            pipe.expire(members_key(stage), ttl).ignore();
            pipe.expire(order_key(stage), ttl).ignore();
        }
        self.pool.with(|c| pipe.query::<()>(c))
    }
}
