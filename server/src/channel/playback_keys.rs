//! Playback key pairs (IVS ImportPlaybackKeyPair / GetPlaybackKeyPair /
//! ListPlaybackKeyPairs / DeletePlaybackKeyPair) under `/v1/playback-keys`
//! (API key): the public halves of the P-384 keys whose owners sign the
//! playback tokens of private channels. Deleting one revokes every token
//! it signed, and the playback sessions those tokens opened.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use stagecast_protocol::control::ListRequest;

use super::store::{ChannelStore, PlaybackKeyRecord};
use super::{ChannelError, ChannelHub, ChannelState};
use crate::http::page::{next_token, page_query, Listing};
use crate::http::{iso8601, ApiKey, MAX_NAME_CHARS};
use crate::auth::{self, KeySet};
use crate::error::{JsonBody, QueryParams};
use crate::store::{Page, PageQuery, StoreError};
use crate::AppError;

/// Most playback keys a server holds (a token without a `kid` is tried
/// against each, so their number bounds that work; IVS allows 3 a region).
pub const MAX_PLAYBACK_KEYS: i64 = 20;

/// The ARN-like name of a playback key (IVS names key pairs by ARN).
pub fn playback_key_arn(id: &str) -> String {
    format!("arn:stagecast:ivs:local:playback-key/{id}")
}

/// The key id in a path segment that holds the id or the ARN.
fn key_id(id_or_arn: &str) -> &str {
    id_or_arn.rsplit_once("playback-key/").map_or(id_or_arn, |(_, id)| id)
}

/// The stored keys, ready to verify tokens. A row that no longer parses is
/// skipped (and logged): one bad row must not stop the server.
pub(super) fn load(store: &dyn ChannelStore) -> Result<KeySet, StoreError> {
    let keys = KeySet::default();
    for record in store.all_playback_keys()? {
        match auth::parse_public_key(&record.pem) {
            Ok(parsed) => keys.insert(&record.id, parsed.key),
            Err(e) => tracing::warn!(key_id = %record.id, error = %e, "skipping stored playback key"),
        }
    }
    Ok(keys)
}

impl ChannelHub {
    /// Import the public half of a P-384 key pair (SPKI PEM) under `name`.
    pub fn import_playback_key(&self, name: String, pem: &str) -> Result<PlaybackKeyRecord, ChannelError> {
        let parsed = auth::parse_public_key(pem).map_err(|_| ChannelError::InvalidPublicKey)?;
        let store = &self.inner.store;
        if store.find_playback_key_by_fingerprint(&parsed.fingerprint)?.is_some() {
            return Err(ChannelError::PlaybackKeyExists);
        }
        if store.count_playback_keys()? >= MAX_PLAYBACK_KEYS {
            return Err(ChannelError::TooManyPlaybackKeys);
        }
        let record = PlaybackKeyRecord {
            id: format!("pbk-{}", auth::random_alphanumeric(12)),
            name,
            pem: pem.trim().to_owned(),
            fingerprint: parsed.fingerprint,
            create_time: auth::now_unix(),
        };
        store.insert_playback_key(&record)?;
        self.inner.playback_keys.insert(&record.id, parsed.key);
        tracing::info!(key_id = %record.id, "playback key imported");
        Ok(record)
    }

    pub fn playback_key(&self, id: &str) -> Result<PlaybackKeyRecord, ChannelError> {
        self.inner.store.get_playback_key(id)?.ok_or_else(|| ChannelError::PlaybackKeyNotFound(id.to_owned()))
    }

    /// ListPlaybackKeyPairs, one page, oldest first.
    pub fn list_playback_keys(&self, page: PageQuery) -> Result<Page<PlaybackKeyRecord>, ChannelError> {
        Ok(self.inner.store.list_playback_keys(page)?)
    }

    /// Delete a key: tokens it signed, and the sessions they opened, stop
    /// working at their next request.
    pub fn delete_playback_key(&self, id: &str) -> Result<(), ChannelError> {
        if !self.inner.store.delete_playback_key(id)? {
            return Err(ChannelError::PlaybackKeyNotFound(id.to_owned()));
        }
        self.inner.playback_keys.remove(id);
        tracing::info!(key_id = %id, "playback key deleted");
        Ok(())
    }

    /// The keys that may sign playback tokens.
    pub fn playback_keys(&self) -> &KeySet {
        &self.inner.playback_keys
    }
}

/// A playback key pair as the control plane shows it (IVS `PlaybackKeyPair`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackKeyView {
    /// What a token's header names as `kid`.
    pub id: String,
    pub arn: String,
    pub name: String,
    pub fingerprint: String,
    pub create_time: String,
}

/// `POST /v1/playback-keys` and `GET /v1/playback-keys/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackKeyResponse {
    pub key_pair: PlaybackKeyView,
}

/// `GET /v1/playback-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPlaybackKeysResponse {
    pub key_pairs: Vec<PlaybackKeyView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImportPlaybackKeyRequest {
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`) of a P-384 key.
    public_key_material: String,
    name: Option<String>,
}

pub fn router() -> Router<ChannelState> {
    Router::new()
        .route("/v1/playback-keys", post(import_key).get(list_keys))
        .route("/v1/playback-keys/{id}", get(get_key).delete(delete_key))
}

fn view(record: &PlaybackKeyRecord) -> PlaybackKeyView {
    PlaybackKeyView {
        id: record.id.clone(),
        arn: playback_key_arn(&record.id),
        name: record.name.clone(),
        fingerprint: record.fingerprint.clone(),
        create_time: iso8601(record.create_time),
    }
}

async fn import_key(
    _: ApiKey,
    State(state): State<ChannelState>,
    JsonBody(req): JsonBody<ImportPlaybackKeyRequest>,
) -> Result<Json<PlaybackKeyResponse>, AppError> {
    let name = req.name.unwrap_or_default();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::bad_request("INVALID_NAME", format!("name is at most {MAX_NAME_CHARS} characters")));
    }
    let record = state.channels.import_playback_key(name, &req.public_key_material)?;
    Ok(Json(PlaybackKeyResponse { key_pair: view(&record) }))
}

async fn list_keys(
    _: ApiKey,
    State(state): State<ChannelState>,
    QueryParams(req): QueryParams<ListRequest>,
) -> Result<Json<ListPlaybackKeysResponse>, AppError> {
    let page = page_query(Listing::PlaybackKeys, req.max_results, req.next_token.as_deref())?;
    let listed = state.channels.list_playback_keys(page)?;
    Ok(Json(ListPlaybackKeysResponse {
        key_pairs: listed.items.iter().map(view).collect(),
        next_token: next_token(Listing::PlaybackKeys, listed.next),
    }))
}

async fn get_key(
    _: ApiKey,
    State(state): State<ChannelState>,
    Path(id): Path<String>,
) -> Result<Json<PlaybackKeyResponse>, AppError> {
    let record = state.channels.playback_key(key_id(&id))?;
    Ok(Json(PlaybackKeyResponse { key_pair: view(&record) }))
}

async fn delete_key(_: ApiKey, State(state): State<ChannelState>, Path(id): Path<String>) -> Result<StatusCode, AppError> {
    state.channels.delete_playback_key(key_id(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_named_by_id_or_arn() {
        assert_eq!(key_id("pbk-abc"), "pbk-abc");
        assert_eq!(key_id(&playback_key_arn("pbk-abc")), "pbk-abc");
    }
}
