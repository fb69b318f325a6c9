//! Distributed mode's node registry: each node says in Redis who it is
//! (its id, public HTTP base URL, media address) and how loaded it is,
//! every [`HEARTBEAT_EVERY`], under a key that expires after [`NODE_TTL`]:
//! a node that stops (crash, network, `kill -9`) leaves the list within
//! the TTL without anyone removing it. [`NodeRegistry::least_loaded`] is
//! the node a new stage goes to (see [`super::stages`]).
//!
//! Keys: `stagecast:node:<id>` (JSON of [`NodeInfo`], with a TTL),
//! `stagecast:nodes` (the set of ids that registered, pruned of expired
//! ones when read).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::redis::{from_json, global, key, to_json, RedisPool};
use crate::store::StoreError;

/// How often a node says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a node counts as alive after its last heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(6);

/// One node as the registry lists it (`GET /v1/nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub node_id: String,
    /// Where browsers and the API reach it: `--public-url`, else its bound address.
    pub http_url: String,
    /// Where the other nodes reach it (`--node-url`, else its bound address).
    #[serde(default)]
    pub node_url: String,
    /// Its media port (UDP and ICE-TCP) as advertised in ICE candidates.
    pub media_addr: String,
    /// Stages with members here.
    pub stages: u64,
    /// Stage members here.
    pub participants: u64,
    /// SFU media sessions open here.
    pub sessions: u64,
    /// Draining after SIGTERM: takes no new stages.
    pub draining: bool,
}

impl NodeInfo {
    /// What [`NodeRegistry::assign_stage`] compares: media sessions, then members.
    pub fn load(&self) -> (u64, u64) {
        (self.sessions, self.participants)
    }
}

/// This node's entry in the registry, and the registry as it reads it.
pub struct NodeRegistry {
    pool: Arc<RedisPool>,
    node_id: String,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl NodeRegistry {
    pub fn new(pool: Arc<RedisPool>, node_id: String) -> Self {
        Self { pool, node_id, heartbeat: Mutex::new(None) }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Say this node is alive, as `info`, for [`NODE_TTL`].
    pub fn beat(&self, info: &NodeInfo) -> Result<(), StoreError> {
        let json = to_json("node", info)?;
        let ttl_ms = u64::try_from(NODE_TTL.as_millis()).unwrap_or(u64::MAX);
        self.pool.with(|c| {
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(key("node", &self.node_id))
                .arg(json)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .cmd("SADD")
                .arg(global("nodes"))
                .arg(&self.node_id)
                .ignore()
                .query::<()>(c)
        })
    }

    /// Leave the registry now (a clean shutdown) rather than at the TTL.
    pub fn leave(&self) -> Result<(), StoreError> {
        self.stop_heartbeat();
        self.pool.with(|c| {
            redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(key("node", &self.node_id))
                .ignore()
                .cmd("SREM")
                .arg(global("nodes"))
                .arg(&self.node_id)
                .ignore()
                .query::<()>(c)
        })
    }

    /// Every node whose heartbeat has not expired, by id.
    pub fn live_nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let ids: Vec<String> = self.pool.with(|c| redis::cmd("SMEMBERS").arg(global("nodes")).query(c))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| key("node", id)).collect();
        let infos: Vec<Option<String>> = self.pool.with(|c| redis::cmd("MGET").arg(&keys).query(c))?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, info) in ids.into_iter().zip(infos) {
            match info {
                Some(json) => match from_json::<NodeInfo>("node", &json) {
                    Ok(info) => live.push(info),
                    Err(e) => tracing::warn!(node = %id, error = %e, "skipping an unreadable node entry"),
                },
                None => dead.push(id),
            }
        }
        if !dead.is_empty() {
            // Only ids whose entry expired; a node that comes back adds itself again.
            self.pool.with(|c| redis::cmd("SREM").arg(global("nodes")).arg(&dead).query::<()>(c))?;
        }
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(live)
    }

    /// The live node that should take a new stage: not draining, least
    /// loaded (ties: the smallest id, so every node picks the same).
    pub fn least_loaded(&self) -> Result<Option<NodeInfo>, StoreError> {
        let live = self.live_nodes()?;
        Ok(live.into_iter().filter(|n| !n.draining).min_by(|a, b| a.load().cmp(&b.load()).then(a.node_id.cmp(&b.node_id))))
    }

    /// Beat every [`HEARTBEAT_EVERY`] with what `info` says, until `info`
    /// answers `None` (the server is gone) or [`NodeRegistry::stop_heartbeat`].
    pub fn start_heartbeat<F, Fut>(self: &Arc<Self>, info: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<NodeInfo>> + Send,
    {
        let registry = self.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(info) = info().await else { return };
                let beating = registry.clone();
                match tokio::task::spawn_blocking(move || beating.beat(&info)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "node heartbeat failed"),
                    Err(e) => tracing::warn!(error = %e, "node heartbeat task failed"),
                }
            }
        });
        if let Some(old) = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()).replace(task) {
            old.abort();
        }
    }

    /// Stop beating: the node drops out of the list within [`NODE_TTL`].
    pub fn stop_heartbeat(&self) {
        if let Some(task) = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Drop for NodeRegistry {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}
