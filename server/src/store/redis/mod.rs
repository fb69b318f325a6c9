//! Distributed mode's stores on Redis: the connections ([`RedisPool`]), the
//! key scheme and the few scripts every listing shares, and [`RedisStore`]
//! (stages, participants, public keys, demo groups). Rooms and channels have
//! their own Redis stores next to their SQLite ones (`chat::store`,
//! `channel::store`), on the same pool and helpers.
//!
//! The store traits are synchronous and handlers call them directly, so
//! these are blocking connections: a small pool of `redis::Connection`s,
//! each with a connect, read and write timeout, so a Redis that stops
//! answering fails a request after [`IO_TIMEOUT`] instead of hanging it.
//!
//! Keys: every key starts with [`PREFIX`]; a free-form id (a stage's, a
//! room's) is always the last part, after a kind that no other kind
//! starts with, so two kinds never share a key. A listing is a sorted set
//! of ids scored by a position from one counter (`INCR`), the records are
//! JSON strings (or hash fields), and paging reads the set by score: like
//! SQLite's rowid, positions only grow, so rows added or removed between
//! two pages never shift the others.

mod store;

use std::sync::Mutex;
use std::time::Duration;

use redis::{Connection, FromRedisValue, RedisResult, ToRedisArgs};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Page, PageQuery, StoreError};

pub use store::{stage_node_key, RedisStore};

/// What every key of a deployment starts with.
pub const PREFIX: &str = "stagecast:";
/// Connecting to Redis may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One command (its write and its answer) may take this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle connections kept for the next request; more are opened when busy.
const MAX_IDLE: usize = 8;

/// Blocking connections to one Redis, shared by every store of a node.
pub struct RedisPool {
    client: redis::Client,
    idle: Mutex<Vec<Connection>>,
}

impl RedisPool {
    /// Connect to `url` (`redis://host:port/db`) once, to fail at start
    /// rather than at the first request.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let pool = Self { client: redis::Client::open(url)?, idle: Mutex::new(Vec::new()) };
        let _: String = pool.with(|c| redis::cmd("PING").query(c))?;
        Ok(pool)
    }

    fn connect(&self) -> RedisResult<Connection> {
        let conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(conn)
    }

    /// Run `f` on a connection of the pool (a new one when all are busy).
    /// A connection that failed (I/O, timeout) is dropped, not reused: it
    /// may hold half an answer.
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T, StoreError> {
        let idle = self.idle.lock().map_err(|_| StoreError::Poisoned)?.pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&mut conn);
        let broken = result.as_ref().err().is_some_and(|e| {
            e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
        });
        if !broken {
            let mut idle = self.idle.lock().map_err(|_| StoreError::Poisoned)?;
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        Ok(result?)
    }

    /// Run a Lua script (`EVAL`; Redis caches it by its text) with `keys` and `args`.
    pub fn eval<T: FromRedisValue>(&self, script: &str, keys: &[&str], args: &[&dyn ToArg]) -> Result<T, StoreError> {
        self.with(|c| {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(script).arg(keys.len()).arg(keys);
            for a in args {
                a.add_to(&mut cmd);
            }
            cmd.query(c)
        })
    }
}

/// A script argument of any type (`&dyn` so one call mixes strings and numbers).
pub trait ToArg {
    fn add_to(&self, cmd: &mut redis::Cmd);
}

impl<T: ToRedisArgs> ToArg for T {
    fn add_to(&self, cmd: &mut redis::Cmd) {
        cmd.arg(self);
    }
}

/// `stagecast:<kind>:<id>`.
pub fn key(kind: &str, id: &str) -> String {
    format!("{PREFIX}{kind}:{id}")
}

/// `stagecast:<name>`, for keys without an id (listings, counters).
pub fn global(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The counter every listing's positions come from.
pub fn position_key() -> String {
    global("position")
}

pub fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Corrupt { what, source })
}

pub fn from_json<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { what, source })
}

/// Add a record under a new id: its JSON at KEYS[1], the id in the listing
/// KEYS[2] at the next position of the counter KEYS[3]; with ARGV[3] set,
/// also the unique index hash KEYS[4] (ARGV[3] → id); with ARGV[4] = 1,
/// also the set KEYS[5] (the records of a parent). Returns 0, changing
/// nothing, when the id or the indexed value exists.
const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[3] ~= '' and redis.call('HEXISTS', KEYS[4], ARGV[3]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[4], ARGV[3], ARGV[1]) end
if ARGV[4] == '1' then redis.call('SADD', KEYS[5], ARGV[1]) end
return 1
";

/// Remove the record KEYS[1] with id ARGV[1] from the listing KEYS[2]; with
/// ARGV[2] set, also its entry in the index hash KEYS[3] (the record's JSON
/// field ARGV[2] is the indexed value); with ARGV[3] set, also from the set
/// ARGV[4] .. (its JSON field ARGV[3]). Returns whether it existed.
const REMOVE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then redis.call('HDEL', KEYS[3], cjson.decode(v)[ARGV[2]]) end
if ARGV[3] ~= '' then redis.call('SREM', ARGV[4] .. cjson.decode(v)[ARGV[3]], ARGV[1]) end
return 1
";

/// One page of the listing KEYS[1]: up to ARGV[2] ids (all with -1) after
/// the score bound ARGV[1] (`(n` or `-inf`; descending with ARGV[4] = 1,
/// from `(n` or `+inf` down), each with its score and the value of ARGV[3]
/// .. id (ids whose record is gone are skipped). Flat: id, score, value, ….
const PAGE: &str = r"
local rows
if ARGV[4] == '1' then
  rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'WITHSCORES', 'LIMIT', 0, ARGV[2])
else
  rows = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[2])
end
local out = {}
for i = 1, #rows, 2 do
  local v = redis.call('GET', ARGV[3] .. rows[i])
  if v then
    out[#out + 1] = rows[i]
    out[#out + 1] = rows[i + 1]
    out[#out + 1] = v
  end
end
return out
";

/// A kind of record kept as JSON strings under `<kind>:<id>` and listed in
/// `<listing>` by position, maybe with a unique index on one field.
pub struct Table {
    /// Key kind of the records.
    pub kind: &'static str,
    /// The listing's sorted set (under [`global`]).
    pub listing: &'static str,
    /// A unique index: (hash under [`global`], the JSON field it indexes).
    pub index: Option<(&'static str, &'static str)>,
    /// What to call a corrupt or duplicate record in errors.
    pub what: &'static str,
}

impl Table {
    /// Add `value` under `id` (and its `indexed` value, when the table has
    /// an index); [`StoreError::Duplicate`] when the id or value exists.
    pub fn insert<T: Serialize>(&self, pool: &RedisPool, id: &str, indexed: Option<&str>, value: &T) -> Result<(), StoreError> {
        self.insert_in(pool, id, indexed, value, None)
    }

    /// [`Table::insert`], also adding `id` to the set `member_of`.
    pub fn insert_in<T: Serialize>(
        &self,
        pool: &RedisPool,
        id: &str,
        indexed: Option<&str>,
        value: &T,
        member_of: Option<&str>,
    ) -> Result<(), StoreError> {
        let index = self.index.map(|(hash, _)| global(hash)).unwrap_or_default();
        let (record, listing, position) = (key(self.kind, id), global(self.listing), position_key());
        let keys = [record.as_str(), listing.as_str(), position.as_str(), index.as_str(), member_of.unwrap_or("")];
        let json = to_json(self.what, value)?;
        let added: i64 = pool.eval(
            INSERT,
            &keys,
            &[&id, &json, &indexed.unwrap_or(""), &if member_of.is_some() { "1" } else { "0" }],
        )?;
        match added {
            1 => Ok(()),
            _ => Err(StoreError::Duplicate { what: self.what }),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, pool: &RedisPool, id: &str) -> Result<Option<T>, StoreError> {
        let json: Option<String> = pool.with(|c| redis::cmd("GET").arg(key(self.kind, id)).query(c))?;
        json.map(|j| from_json(self.what, &j)).transpose()
    }

    /// Replace the record `id` if it exists (its position stays); true when it did.
    pub fn replace<T: Serialize>(&self, pool: &RedisPool, id: &str, value: &T) -> Result<bool, StoreError> {
        let json = to_json(self.what, value)?;
        let set: Option<String> = pool.with(|c| redis::cmd("SET").arg(key(self.kind, id)).arg(json).arg("XX").query(c))?;
        Ok(set.is_some())
    }

    /// The record whose indexed field is `value`.
    pub fn find<T: DeserializeOwned>(&self, pool: &RedisPool, value: &str) -> Result<Option<T>, StoreError> {
        let Some((hash, _)) = self.index else { return Ok(None) };
        let id: Option<String> = pool.with(|c| redis::cmd("HGET").arg(global(hash)).arg(value).query(c))?;
        match id {
            Some(id) => self.get(pool, &id),
            None => Ok(None),
        }
    }

    /// Remove `id`; true when it existed.
    pub fn remove(&self, pool: &RedisPool, id: &str) -> Result<bool, StoreError> {
        self.remove_from(pool, id, None)
    }

    /// [`Table::remove`], also from the set `<prefix><the record's field>`
    /// given as `(field, prefix)`.
    pub fn remove_from(&self, pool: &RedisPool, id: &str, member_of: Option<(&str, &str)>) -> Result<bool, StoreError> {
        let index = self.index.map(|(hash, _)| global(hash)).unwrap_or_default();
        let keys = [key(self.kind, id), global(self.listing), index];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let field = self.index.map_or("", |(_, field)| field);
        let (set_field, set_prefix) = member_of.unwrap_or(("", ""));
        let removed: i64 = pool.eval(REMOVE, &keys, &[&id, &field, &set_field, &set_prefix])?;
        Ok(removed == 1)
    }

    /// One page, oldest first (or newest first with `descending`).
    pub fn page<T: DeserializeOwned>(&self, pool: &RedisPool, page: PageQuery, descending: bool) -> Result<Page<T>, StoreError> {
        let rows = page_rows(pool, &global(self.listing), &format!("{PREFIX}{}:", self.kind), Some(page), descending)?;
        let rows = rows
            .into_iter()
            .map(|(position, _, json)| Ok((position, from_json(self.what, &json)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::from_rows(rows, page.limit))
    }

    /// Every record, oldest first.
    pub fn all<T: DeserializeOwned>(&self, pool: &RedisPool) -> Result<Vec<T>, StoreError> {
        let rows = page_rows(pool, &global(self.listing), &format!("{PREFIX}{}:", self.kind), None, false)?;
        rows.into_iter().map(|(_, _, json)| from_json(self.what, &json)).collect()
    }

    /// How many records there are.
    pub fn count(&self, pool: &RedisPool) -> Result<i64, StoreError> {
        pool.with(|c| redis::cmd("ZCARD").arg(global(self.listing)).query(c))
    }
}

/// The rows `(position, id, value)` of one page of `listing` (every row
/// with `None`), whose values live at `<record_prefix><id>`, in listing
/// order, one more than the page holds (see [`Page::from_rows`]).
pub fn page_rows(
    pool: &RedisPool,
    listing: &str,
    record_prefix: &str,
    page: Option<PageQuery>,
    descending: bool,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    let bound = match (page.and_then(|p| p.after), descending) {
        (Some(after), _) => format!("({after}"),
        (None, false) => "-inf".to_owned(),
        (None, true) => "+inf".to_owned(),
    };
    let limit = page.map_or(-1, |p| p.fetch_limit());
    let flat: Vec<String> =
        pool.eval(PAGE, &[listing], &[&bound, &limit, &record_prefix, &if descending { "1" } else { "0" }])?;
    let mut rows = Vec::with_capacity(flat.len() / 3);
    for row in flat.chunks_exact(3) {
        let [id, score, value] = row else { continue };
        // Scores are integers from INCR, far below 2^53: exact as floats.
        let position = score.parse::<f64>().map(|f| f as i64).unwrap_or_default();
        rows.push((position, id.clone(), value.clone()));
    }
    Ok(rows)
}
