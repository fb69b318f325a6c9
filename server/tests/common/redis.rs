//! Debian's `redis-server` for the distributed-mode tests: one on a free
//! loopback port, nothing saved (`--save "" --appendonly no`), its
//! directory a temp dir; killed (and the dir removed) when dropped.
//! `cargo xtask setup` installs the `redis-server` package.
//!
//! [`Backend`] opens every store trait (stages, rooms, channels) on SQLite
//! or on Redis, so one test body checks both implementations.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use stagecast_server::channel::store::{ChannelStore, RedisChannelStore, SqliteChannelStore};
use stagecast_server::chat::store::{RedisRoomStore, RoomStore, SqliteRoomStore};
use stagecast_server::stage::presence::{PresenceStore, RedisPresence, SqlitePresence};
use stagecast_server::store::{RedisPool, RedisStore, SqliteStore, Store};

/// A running `redis-server`; killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Start one on a free loopback port and wait until it answers PING.
    pub fn start() -> Result<Self> {
        let dir = super::temp_dir("redis")?;
        // Free now; redis-server binds it right after.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--logfile", "redis.log"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server (Debian package `redis-server`: run `cargo xtask setup`)")?;
        let server = Self { child, port, dir };
        let client = redis::Client::open(server.url())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(server.dir.join("redis.log")).unwrap_or_default();
                bail!("redis-server did not answer on port {port} within 10 s; log: {log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A pool of the server's own (what a node opens at start).
    pub fn pool(&self) -> Result<Arc<RedisPool>> {
        Ok(Arc::new(RedisPool::open(&self.url())?))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where a store test's data lives. Each `open` is a new handle on the same
/// data, as after a restart: a new SQLite connection, or a new pool.
pub enum Backend {
    Sqlite(PathBuf),
    Redis(RedisServer),
}

impl Backend {
    pub fn sqlite(name: &str) -> Result<Self> {
        Ok(Self::Sqlite(super::temp_dir(name)?))
    }

    pub fn redis() -> Result<Self> {
        Ok(Self::Redis(RedisServer::start()?))
    }

    pub fn store(&self) -> Result<Box<dyn Store>> {
        Ok(match self {
            Self::Sqlite(dir) => Box::new(SqliteStore::open(&dir.join("db.sqlite"))?),
            Self::Redis(redis) => Box::new(RedisStore::new(redis.pool()?)),
        })
    }

    pub fn rooms(&self) -> Result<Box<dyn RoomStore>> {
        Ok(match self {
            Self::Sqlite(dir) => Box::new(SqliteRoomStore::open(&dir.join("db.sqlite"))?),
            Self::Redis(redis) => Box::new(RedisRoomStore::new(redis.pool()?)),
        })
    }

    pub fn channels(&self) -> Result<Box<dyn ChannelStore>> {
        Ok(match self {
            Self::Sqlite(dir) => Box::new(SqliteChannelStore::open(&dir.join("db.sqlite"))?),
            Self::Redis(redis) => Box::new(RedisChannelStore::new(redis.pool()?, "node-test")),
        })
    }

    pub fn presence(&self) -> Result<Box<dyn PresenceStore>> {
        Ok(match self {
            Self::Sqlite(dir) => Box::new(SqlitePresence::open(&dir.join("db.sqlite"))?),
            Self::Redis(redis) => Box::new(RedisPresence::new(redis.pool()?)),
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Self::Sqlite(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One `#[test]` per body and backend: `both!(a, b)` makes `sqlite::a`,
/// `redis::a`, … calling `a(&Backend)`.
#[macro_export]
macro_rules! both {
    ($($body:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $body() -> anyhow::Result<()> {
                super::$body(&super::common::redis::Backend::sqlite(stringify!($body))?)
            })*
        }
        mod redis {
            $(#[test]
            fn $body() -> anyhow::Result<()> {
                super::$body(&super::common::redis::Backend::redis()?)
            })*
        }
    };
}
