//! [`Store`] on Redis: stages, participants, public keys and demo groups.
//!
//! A stage's participants are one hash (participant id → JSON of what the
//! token said) with its listing; when each first joined and why each was
//! revoked are hashes of their own, so a join or a revocation is one
//! `HSETNX` / `HSET` rather than a read-modify-write of the JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use stagecast_protocol::token::TokenCapabilities;
use stagecast_protocol::{ParticipantId, StageId};

use super::{from_json, global, key, position_key, to_json, RedisPool, Table, PREFIX};
use crate::store::{DemoGroupRecord, Page, PageQuery, ParticipantRecord, PublicKeyRecord, StageRecord, Store, StoreError};

const STAGES: Table = Table { kind: "stage", listing: "stages", index: None, what: "stage" };
const GROUPS: Table = Table { kind: "group", listing: "groups", index: None, what: "demo group" };
const PUBLIC_KEYS: Table = Table {
    kind: "public-key",
    listing: "public-keys",
    index: Some(("public-key-fingerprints", "fingerprint")),
    what: "public key",
};

/// The keys of one stage's participants: records, listing, first join
/// times, revocations.
struct ParticipantKeys {
    records: String,
    listing: String,
    joined: String,
    revoked: String,
}

impl ParticipantKeys {
    fn of(stage: &StageId) -> Self {
        Self {
            records: key("participants", stage.as_str()),
            listing: key("participant-order", stage.as_str()),
            joined: key("joined", stage.as_str()),
            revoked: key("revoked", stage.as_str()),
        }
    }
}

/// The key of the set of a stage's demo groups.
fn stage_groups(stage: &str) -> String {
    key("stage-groups", stage)
}

/// The key naming a stage's home node ([`crate::cluster::stages`]), deleted with the stage.
pub fn stage_node_key(stage: &str) -> String {
    crate::cluster::stages::key(&StageId::from(stage))
}

#[derive(Serialize, Deserialize)]
struct StageJson {
    id: String,
    name: String,
    create_time: i64,
}

/// What a participant token said (the part that never changes).
#[derive(Serialize, Deserialize)]
struct ParticipantJson {
    user_id: String,
    attributes: BTreeMap<String, String>,
    allow_publish: bool,
    allow_subscribe: bool,
    expiration: i64,
}

#[derive(Serialize, Deserialize)]
struct KeyJson {
    id: String,
    name: String,
    pem: String,
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct GroupJson {
    group_id: String,
    stage_id: String,
    host_user_id: String,
    host_participant_id: String,
    host_attributes: BTreeMap<String, String>,
    create_time: i64,
    channel_id: Option<String>,
    room_id: Option<String>,
}

impl From<&DemoGroupRecord> for GroupJson {
    fn from(g: &DemoGroupRecord) -> Self {
        Self {
            group_id: g.group_id.clone(),
            stage_id: g.stage_id.0.clone(),
            host_user_id: g.host_user_id.clone(),
            host_participant_id: g.host_participant_id.0.clone(),
            host_attributes: g.host_attributes.clone(),
            create_time: g.create_time,
            channel_id: g.channel_id.clone(),
            room_id: g.room_id.clone(),
        }
    }
}

impl From<GroupJson> for DemoGroupRecord {
    fn from(g: GroupJson) -> Self {
        Self {
            group_id: g.group_id,
            stage_id: StageId(g.stage_id),
            host_user_id: g.host_user_id,
            host_participant_id: ParticipantId(g.host_participant_id),
            host_attributes: g.host_attributes,
            create_time: g.create_time,
            channel_id: g.channel_id,
            room_id: g.room_id,
        }
    }
}

/// Insert or replace participant ARGV[1] (JSON ARGV[2]) at a new position,
/// its first join time ARGV[3] ('' = none) and revocation ARGV[4] ('' = not
/// revoked, else the JSON of its reason).
const PUT_PARTICIPANT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), ARGV[1])
if ARGV[3] == '' then redis.call('HDEL', KEYS[3], ARGV[1]) else redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
if ARGV[4] == '' then redis.call('HDEL', KEYS[4], ARGV[1]) else redis.call('HSET', KEYS[4], ARGV[1], ARGV[4]) end
";

/// A connection: add participant ARGV[1] (JSON ARGV[2]) if unknown, and
/// its first join time ARGV[3] if it has none.
const RECORD_JOIN: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
end
redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[3])
";

/// Revoke a known participant ARGV[1] with the JSON reason ARGV[2].
const REVOKE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
";

/// Delete stage ARGV[1] (KEYS[1], listed in KEYS[2]) with its participants
/// (KEYS[3..6]), its node assignment (KEYS[7]) and its demo groups (the
/// set KEYS[8] of ids, each at ARGV[2] .. id, listed in KEYS[9]).
const DELETE_STAGE: &str = r"
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
for _, g in ipairs(redis.call('SMEMBERS', KEYS[8])) do
  redis.call('DEL', ARGV[2] .. g)
  redis.call('ZREM', KEYS[9], g)
end
redis.call('DEL', KEYS[8])
return existed
";

/// [`Store`] on Redis (distributed mode).
pub struct RedisStore {
    pool: Arc<RedisPool>,
}

impl RedisStore {
    pub fn new(pool: Arc<RedisPool>) -> Self {
        Self { pool }
    }

    /// The records of `ids` (in order) of one stage, with their join times and revocations.
    fn participants(
        &self,
        stage: &StageId,
        rows: Vec<(i64, String, String)>,
    ) -> Result<Vec<(i64, ParticipantRecord)>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let keys = ParticipantKeys::of(stage);
        let ids: Vec<&str> = rows.iter().map(|(_, id, _)| id.as_str()).collect();
        let (joined, revoked): (Vec<Option<i64>>, Vec<Option<String>>) = self.pool.with(|c| {
            redis::pipe().cmd("HMGET").arg(&keys.joined).arg(&ids).cmd("HMGET").arg(&keys.revoked).arg(&ids).query(c)
        })?;
        rows.into_iter()
            .zip(joined.into_iter().zip(revoked))
            .map(|((position, id, json), (joined, revoked))| {
                Ok((position, participant_record(stage, id, &json, joined, revoked)?))
            })
            .collect()
    }
}

fn participant_record(
    stage: &StageId,
    id: String,
    json: &str,
    first_join_time: Option<i64>,
    revoked: Option<String>,
) -> Result<ParticipantRecord, StoreError> {
    let p: ParticipantJson = from_json("participant", json)?;
    let revoke_reason: Option<String> = match &revoked {
        Some(reason) => from_json("participant revocation", reason)?,
        None => None,
    };
    Ok(ParticipantRecord {
        stage_id: stage.clone(),
        participant_id: ParticipantId(id),
        user_id: p.user_id,
        attributes: p.attributes,
        capabilities: TokenCapabilities { allow_publish: p.allow_publish, allow_subscribe: p.allow_subscribe },
        expiration: p.expiration,
        first_join_time,
        revoked: revoked.is_some(),
        revoke_reason,
    })
}

fn participant_json(p: &ParticipantRecord) -> Result<String, StoreError> {
    to_json(
        "participant",
        &ParticipantJson {
            user_id: p.user_id.clone(),
            attributes: p.attributes.clone(),
            allow_publish: p.capabilities.allow_publish,
            allow_subscribe: p.capabilities.allow_subscribe,
            expiration: p.expiration,
        },
    )
}

fn stage_record(s: StageJson) -> StageRecord {
    StageRecord { id: StageId(s.id), name: s.name, create_time: s.create_time }
}

fn key_record(k: KeyJson) -> PublicKeyRecord {
    PublicKeyRecord { id: k.id, name: k.name, pem: k.pem, fingerprint: k.fingerprint }
}

impl Store for RedisStore {
    fn create_stage(&self, stage: &StageRecord) -> Result<(), StoreError> {
        let json = StageJson { id: stage.id.0.clone(), name: stage.name.clone(), create_time: stage.create_time };
        STAGES.insert(&self.pool, stage.id.as_str(), None, &json)
    }

    fn get_stage(&self, id: &StageId) -> Result<Option<StageRecord>, StoreError> {
        Ok(STAGES.get(&self.pool, id.as_str())?.map(stage_record))
    }

    fn list_stages(&self, page: PageQuery) -> Result<Page<StageRecord>, StoreError> {
        Ok(STAGES.page(&self.pool, page, false)?.map(stage_record))
    }

    fn delete_stage(&self, id: &StageId) -> Result<bool, StoreError> {
        let p = ParticipantKeys::of(id);
        let keys = [
            key(STAGES.kind, id.as_str()),
            global(STAGES.listing),
            p.records,
            p.listing,
            p.joined,
            p.revoked,
            stage_node_key(id.as_str()),
            stage_groups(id.as_str()),
            global(GROUPS.listing),
        ];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let group_prefix = format!("{PREFIX}{}:", GROUPS.kind);
        let existed: i64 = self.pool.eval(DELETE_STAGE, &keys, &[&id.as_str(), &group_prefix])?;
        Ok(existed == 1)
    }

    fn insert_participant(&self, p: &ParticipantRecord) -> Result<(), StoreError> {
        let k = ParticipantKeys::of(&p.stage_id);
        let json = participant_json(p)?;
        let joined = p.first_join_time.map(|t| t.to_string()).unwrap_or_default();
        let revoked = match p.revoked {
            true => to_json("participant revocation", &p.revoke_reason)?,
            false => String::new(),
        };
        let position = position_key();
        let keys = [k.records.as_str(), k.listing.as_str(), k.joined.as_str(), k.revoked.as_str(), position.as_str()];
        self.pool.eval::<()>(PUT_PARTICIPANT, &keys, &[&p.participant_id.as_str(), &json, &joined, &revoked])
    }

    fn get_participant(&self, stage: &StageId, id: &ParticipantId) -> Result<Option<ParticipantRecord>, StoreError> {
        let k = ParticipantKeys::of(stage);
        let (json, joined, revoked): (Option<String>, Option<i64>, Option<String>) = self.pool.with(|c| {
            redis::pipe()
                .cmd("HGET")
                .arg(&k.records)
                .arg(id.as_str())
                .cmd("HGET")
                .arg(&k.joined)
                .arg(id.as_str())
                .cmd("HGET")
                .arg(&k.revoked)
                .arg(id.as_str())
                .query(c)
        })?;
        json.map(|json| participant_record(stage, id.0.clone(), &json, joined, revoked)).transpose()
    }

    fn list_participants(&self, stage: &StageId, page: PageQuery) -> Result<Page<ParticipantRecord>, StoreError> {
        let k = ParticipantKeys::of(stage);
        let rows = participant_rows(&self.pool, &k, page)?;
        Ok(Page::from_rows(self.participants(stage, rows)?, page.limit))
    }

    fn record_join(&self, p: &ParticipantRecord, when: i64) -> Result<(), StoreError> {
        let k = ParticipantKeys::of(&p.stage_id);
        let json = participant_json(p)?;
        let position = position_key();
        let keys = [k.records.as_str(), k.listing.as_str(), k.joined.as_str(), position.as_str()];
        self.pool.eval::<()>(RECORD_JOIN, &keys, &[&p.participant_id.as_str(), &json, &when])
    }

    fn user_removed(&self, stage: &StageId, user_id: &str) -> Result<bool, StoreError> {
        let k = ParticipantKeys::of(stage);
        let revoked: Vec<String> = self.pool.with(|c| redis::cmd("HKEYS").arg(&k.revoked).query(c))?;
        if revoked.is_empty() {
            return Ok(false);
        }
        let records: Vec<Option<String>> = self.pool.with(|c| redis::cmd("HMGET").arg(&k.records).arg(&revoked).query(c))?;
        for json in records.into_iter().flatten() {
            let p: ParticipantJson = from_json("participant", &json)?;
            if p.user_id == user_id {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn revoke_participant(&self, stage: &StageId, id: &ParticipantId, reason: &str) -> Result<bool, StoreError> {
        let k = ParticipantKeys::of(stage);
        let reason = to_json("participant revocation", &Some(reason))?;
        let known: i64 = self.pool.eval(REVOKE, &[k.records.as_str(), k.revoked.as_str()], &[&id.as_str(), &reason])?;
        Ok(known == 1)
    }

    fn insert_public_key(&self, k: &PublicKeyRecord) -> Result<(), StoreError> {
        let json = KeyJson { id: k.id.clone(), name: k.name.clone(), pem: k.pem.clone(), fingerprint: k.fingerprint.clone() };
        PUBLIC_KEYS.insert(&self.pool, &k.id, Some(&k.fingerprint), &json)
    }

    fn list_public_keys(&self) -> Result<Vec<PublicKeyRecord>, StoreError> {
        Ok(PUBLIC_KEYS.all(&self.pool)?.into_iter().map(key_record).collect())
    }

    fn find_public_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<PublicKeyRecord>, StoreError> {
        Ok(PUBLIC_KEYS.find(&self.pool, fingerprint)?.map(key_record))
    }

    fn create_demo_group(&self, g: &DemoGroupRecord) -> Result<(), StoreError> {
        GROUPS.insert_in(&self.pool, &g.group_id, None, &GroupJson::from(g), Some(&stage_groups(g.stage_id.as_str())))
    }

    fn get_demo_group(&self, group_id: &str) -> Result<Option<DemoGroupRecord>, StoreError> {
        Ok(GROUPS.get::<GroupJson>(&self.pool, group_id)?.map(DemoGroupRecord::from))
    }

    fn list_demo_groups(&self, page: PageQuery) -> Result<Page<DemoGroupRecord>, StoreError> {
        Ok(GROUPS.page::<GroupJson>(&self.pool, page, true)?.map(DemoGroupRecord::from))
    }

    fn delete_demo_group(&self, group_id: &str) -> Result<bool, StoreError> {
        GROUPS.remove_from(&self.pool, group_id, Some(("stage_id", &format!("{PREFIX}stage-groups:"))))
    }
}

/// One page of a stage's participant ids with their JSON (a hash, not
/// string keys, so [`super::page_rows`] does not apply).
fn participant_rows(pool: &RedisPool, k: &ParticipantKeys, page: PageQuery) -> Result<Vec<(i64, String, String)>, StoreError> {
    const PAGE: &str = r"
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #rows, 2 do
  local v = redis.call('HGET', KEYS[2], rows[i])
  if v then
    out[#out + 1] = rows[i]
    out[#out + 1] = rows[i + 1]
    out[#out + 1] = v
  end
end
return out
";
    let bound = page.after.map_or_else(|| "-inf".to_owned(), |after| format!("({after}"));
    let flat: Vec<String> = pool.eval(PAGE, &[k.listing.as_str(), k.records.as_str()], &[&bound, &page.fetch_limit()])?;
    Ok(flat
        .chunks_exact(3)
        .filter_map(|row| match row {
            [id, score, json] => Some((score.parse::<f64>().map(|f| f as i64).unwrap_or_default(), id.clone(), json.clone())),
            _ => None,
        })
        .collect())
}
