//! [`RoomStore`] on Redis (distributed mode): every node lists and finds
//! the rooms any node made.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{RoomRecord, RoomStore};
use crate::chat::room::RoomLimits;
use crate::store::redis::{RedisPool, Table};
use crate::store::{Page, PageQuery, StoreError};

const ROOMS: Table = Table { kind: "room", listing: "rooms", index: None, what: "chat room" };

#[derive(Serialize, Deserialize)]
struct RoomJson {
    id: String,
    name: String,
    create_time: i64,
    max_messages_per_second: u32,
    max_message_length: u32,
}

impl From<RoomJson> for RoomRecord {
    fn from(r: RoomJson) -> Self {
        Self {
            id: r.id,
            name: r.name,
            create_time: r.create_time,
            limits: RoomLimits {
                max_messages_per_second: r.max_messages_per_second,
                max_message_length: r.max_message_length,
            },
        }
    }
}

/// Rooms in Redis, on the node's shared pool.
pub struct RedisRoomStore {
    pool: Arc<RedisPool>,
}

impl RedisRoomStore {
    pub fn new(pool: Arc<RedisPool>) -> Self {
        Self { pool }
    }
}

impl RoomStore for RedisRoomStore {
    fn insert(&self, room: &RoomRecord) -> Result<(), StoreError> {
        let json = RoomJson {
            id: room.id.clone(),
            name: room.name.clone(),
            create_time: room.create_time,
            max_messages_per_second: room.limits.max_messages_per_second,
            max_message_length: room.limits.max_message_length,
        };
        ROOMS.insert(&self.pool, &room.id, None, &json)
    }

    fn get(&self, id: &str) -> Result<Option<RoomRecord>, StoreError> {
        Ok(ROOMS.get::<RoomJson>(&self.pool, id)?.map(RoomRecord::from))
    }

    fn list(&self, page: PageQuery) -> Result<Page<RoomRecord>, StoreError> {
        Ok(ROOMS.page::<RoomJson>(&self.pool, page, false)?.map(RoomRecord::from))
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        ROOMS.remove(&self.pool, id)
    }
}
