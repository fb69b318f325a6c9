//! [`ChannelStore`] on Redis (distributed mode): channels (with their
//! stream keys) and playback keys are the deployment's, so any node takes
//! a broadcast with a stream key made on another and checks playback
//! tokens against keys imported on another. Saved broadcasts are the
//! node's own (`broadcasts:<node id>`): a broadcast lives on the node
//! that ingests it, and only that node resumes it after a restart.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ChannelRecord, ChannelStore, PlaybackKeyRecord, SavedBroadcast};
use crate::channel::packager::Continuity;
use crate::channel::recording::RecordingSettings;
use crate::store::redis::{from_json, global, key, to_json, RedisPool, Table};
use crate::store::{Page, PageQuery, StoreError};

const CHANNELS: Table = Table { kind: "channel", listing: "channels", index: None, what: "channel" };
const PLAYBACK_KEYS: Table = Table {
    kind: "playback-key",
    listing: "playback-keys",
    index: Some(("playback-key-fingerprints", "fingerprint")),
    what: "playback key",
};
/// Hash: channel id → JSON of its [`RecordingSettings`] (absent: no recording).
const RECORDINGS: &str = "channel-recordings";

/// Set (ARGV[2] non-empty) or clear the recording of channel ARGV[1] in the
/// hash KEYS[2] if the channel KEYS[1] exists.
const SET_RECORDING: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == '' then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 1
";

#[derive(Serialize, Deserialize)]
struct ChannelJson {
    id: String,
    name: String,
    stream_key: String,
    create_time: i64,
    authorized: bool,
}

impl ChannelJson {
    fn record(self, recording: Option<&str>) -> ChannelRecord {
        ChannelRecord {
            id: self.id,
            name: self.name,
            stream_key: self.stream_key,
            create_time: self.create_time,
            authorized: self.authorized,
            // A value this version cannot read records nothing rather than failing the channel (as in SQLite).
            recording: recording.and_then(|j| serde_json::from_str(j).ok()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct KeyJson {
    id: String,
    name: String,
    pem: String,
    fingerprint: String,
    create_time: i64,
}

impl From<KeyJson> for PlaybackKeyRecord {
    fn from(k: KeyJson) -> Self {
        Self { id: k.id, name: k.name, pem: k.pem, fingerprint: k.fingerprint, create_time: k.create_time }
    }
}

#[derive(Serialize, Deserialize)]
struct BroadcastJson {
    session: String,
    continuity: Continuity,
    updated_ms: i64,
}

/// Channels in Redis, on the node's shared pool; `node_id` names this
/// node's saved broadcasts.
pub struct RedisChannelStore {
    pool: Arc<RedisPool>,
    broadcasts: String,
}

impl RedisChannelStore {
    pub fn new(pool: Arc<RedisPool>, node_id: &str) -> Self {
        Self { pool, broadcasts: key("broadcasts", node_id) }
    }

    fn recordings_of(&self, ids: &[&str]) -> Result<Vec<Option<String>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.pool.with(|c| redis::cmd("HMGET").arg(global(RECORDINGS)).arg(ids).query(c))
    }

    fn with_recordings(&self, channels: Vec<ChannelJson>) -> Result<Vec<ChannelRecord>, StoreError> {
        let ids: Vec<&str> = channels.iter().map(|c| c.id.as_str()).collect();
        let recordings = self.recordings_of(&ids)?;
        Ok(channels.into_iter().zip(recordings).map(|(c, r)| c.record(r.as_deref())).collect())
    }
}

impl ChannelStore for RedisChannelStore {
    fn insert(&self, c: &ChannelRecord) -> Result<(), StoreError> {
        let json = ChannelJson {
            id: c.id.clone(),
            name: c.name.clone(),
            stream_key: c.stream_key.clone(),
            create_time: c.create_time,
            authorized: c.authorized,
        };
        CHANNELS.insert(&self.pool, &c.id, None, &json)?;
        if c.recording.is_some() {
            self.set_recording(&c.id, c.recording)?;
        }
        Ok(())
    }

    fn authorized_ids(&self) -> Result<Vec<String>, StoreError> {
        let all: Vec<ChannelJson> = CHANNELS.all(&self.pool)?;
        Ok(all.into_iter().filter(|c| c.authorized).map(|c| c.id).collect())
    }

    fn get(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let Some(channel) = CHANNELS.get::<ChannelJson>(&self.pool, id)? else { return Ok(None) };
        Ok(self.with_recordings(vec![channel])?.pop())
    }

    fn list(&self, page: PageQuery) -> Result<Page<ChannelRecord>, StoreError> {
        let found: Page<ChannelJson> = CHANNELS.page(&self.pool, page, false)?;
        Ok(Page { items: self.with_recordings(found.items)?, next: found.next })
    }

    fn set_recording(&self, id: &str, recording: Option<RecordingSettings>) -> Result<bool, StoreError> {
        let json = match recording {
            Some(settings) => to_json("recording settings", &settings)?,
            None => String::new(),
        };
        let record = key(CHANNELS.kind, id);
        let set: i64 = self.pool.eval(SET_RECORDING, &[record.as_str(), &global(RECORDINGS)], &[&id, &json])?;
        Ok(set == 1)
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let existed = CHANNELS.remove(&self.pool, id)?;
        self.pool.with(|c| redis::cmd("HDEL").arg(global(RECORDINGS)).arg(id).query::<()>(c))?;
        Ok(existed)
    }

    fn insert_playback_key(&self, k: &PlaybackKeyRecord) -> Result<(), StoreError> {
        let json = KeyJson {
            id: k.id.clone(),
            name: k.name.clone(),
            pem: k.pem.clone(),
            fingerprint: k.fingerprint.clone(),
            create_time: k.create_time,
        };
        PLAYBACK_KEYS.insert(&self.pool, &k.id, Some(&k.fingerprint), &json)
    }

    fn get_playback_key(&self, id: &str) -> Result<Option<PlaybackKeyRecord>, StoreError> {
        Ok(PLAYBACK_KEYS.get::<KeyJson>(&self.pool, id)?.map(PlaybackKeyRecord::from))
    }

    fn find_playback_key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<PlaybackKeyRecord>, StoreError> {
        Ok(PLAYBACK_KEYS.find::<KeyJson>(&self.pool, fingerprint)?.map(PlaybackKeyRecord::from))
    }

    fn list_playback_keys(&self, page: PageQuery) -> Result<Page<PlaybackKeyRecord>, StoreError> {
        Ok(PLAYBACK_KEYS.page::<KeyJson>(&self.pool, page, false)?.map(PlaybackKeyRecord::from))
    }

    fn all_playback_keys(&self) -> Result<Vec<PlaybackKeyRecord>, StoreError> {
        Ok(PLAYBACK_KEYS.all::<KeyJson>(&self.pool)?.into_iter().map(PlaybackKeyRecord::from).collect())
    }

    fn count_playback_keys(&self) -> Result<i64, StoreError> {
        PLAYBACK_KEYS.count(&self.pool)
    }

    fn delete_playback_key(&self, id: &str) -> Result<bool, StoreError> {
        PLAYBACK_KEYS.remove(&self.pool, id)
    }

    fn save_broadcast(&self, b: &SavedBroadcast) -> Result<(), StoreError> {
        let json = to_json(
            "broadcast continuity",
            &BroadcastJson { session: b.session.clone(), continuity: b.continuity.clone(), updated_ms: b.updated_ms },
        )?;
        self.pool.with(|c| redis::cmd("HSET").arg(&self.broadcasts).arg(&b.channel_id).arg(json).query(c))
    }

    fn delete_broadcast(&self, channel_id: &str) -> Result<(), StoreError> {
        self.pool.with(|c| redis::cmd("HDEL").arg(&self.broadcasts).arg(channel_id).query(c))
    }

    fn saved_broadcasts(&self) -> Result<Vec<SavedBroadcast>, StoreError> {
        let all: Vec<(String, String)> = self.pool.with(|c| redis::cmd("HGETALL").arg(&self.broadcasts).query(c))?;
        let mut out = Vec::new();
        for (channel_id, json) in all {
            match from_json::<BroadcastJson>("saved broadcast", &json) {
                Ok(b) => out.push(SavedBroadcast {
                    channel_id,
                    session: b.session,
                    continuity: b.continuity,
                    updated_ms: b.updated_ms,
                }),
                Err(e) => tracing::warn!(channel = %channel_id, error = %e, "skipping an unreadable saved broadcast"),
            }
        }
        Ok(out)
    }
}
