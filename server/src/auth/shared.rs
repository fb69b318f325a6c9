//! Distributed mode's shared secrets: every node must verify the tokens any
//! other node minted, take the same API key and sign webhooks alike, so the
//! signing key, the generated API key and the webhook secret are the
//! deployment's, in Redis (`stagecast:secret:<name>`). The first node to
//! start puts its own (from its data dir, or generated) there with `SET NX`;
//! every node then writes what Redis holds into its data dir, where the
//! loaders of single-node mode (the key ring, the chat signer, the API key
//! and webhook secret readers) find it unchanged. An explicit `--api-key` or
//! `--webhook-secret` still wins on the node that sets it. Stream keys need
//! nothing here: they are channel records, in the shared channel store.

use std::path::Path;

use super::{write_secret_file, AuthError};
use crate::store::redis::{key, RedisPool};

/// Make `path` hold the deployment's secret `name`: the one in Redis, or,
/// when there is none yet, this node's (the file's, else `generate()`),
/// published first. Returns whether the secret was generated here now.
pub fn sync_secret(
    pool: &RedisPool,
    name: &str,
    path: &Path,
    generate: impl FnOnce() -> Result<String, AuthError>,
) -> Result<bool, AuthError> {
    let redis_key = key("secret", name);
    let local = match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(AuthError::Io { path: path.to_owned(), source }),
    };
    let get = |pool: &RedisPool| -> Result<Option<String>, AuthError> {
        Ok(pool.with(|c| redis::cmd("GET").arg(&redis_key).query(c))?)
    };
    let mut generated = false;
    let shared = match get(pool)? {
        Some(shared) => shared,
        None => {
            let mine = match &local {
                Some(local) => local.clone(),
                None => {
                    generated = true;
                    generate()?.trim().to_owned()
                }
            };
            let set: Option<String> = pool.with(|c| redis::cmd("SET").arg(&redis_key).arg(&mine).arg("NX").query(c))?;
            if set.is_none() {
                // Another node published first: its secret is the deployment's.
                generated = false;
            }
            get(pool)?.ok_or_else(|| AuthError::Key(format!("the shared {name} vanished from Redis")))?
        }
    };
    if local.as_deref() != Some(shared.as_str()) {
        if local.is_some() {
            tracing::warn!(secret = name, path = %path.display(), "replacing this node's own secret with the deployment's (from Redis)");
        }
        write_secret_file(path, format!("{shared}\n").as_bytes())?;
    }
    Ok(generated)
}
