//! Control plane (`/v1`, API key) and demo backend (`/api`) bodies.
//! Names follow the IVS operations they mirror.
//!
//! Request bodies are `deny_unknown_fields`: a misspelt field (`user_id`
//! for `userId`) is refused with a 400 naming it, never silently dropped.
//! List responses carry `nextToken` when there is another page (IVS
//! pagination: pass it back with `maxResults` to get the next one).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageEndpoints {
    pub events: String,
    pub whip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub id: String,
    pub name: String,
    /// ISO 8601.
    pub create_time: String,
    pub endpoints: StageEndpoints,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateStageRequest {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageResponse {
    pub stage: Stage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListStagesResponse {
    pub stages: Vec<Stage>,
    /// Present when there are more stages: pass it as `nextToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `maxResults` / `nextToken` of a list request (query parameters on the
/// `GET` lists), as IVS: `maxResults` 1–100 (default 50), `nextToken` from
/// the previous page's response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default)]
    pub max_results: Option<u32>,
    #[serde(default)]
    pub next_token: Option<String>,
}

/// `PUBLISH` / `SUBSCRIBE` as in IVS CreateParticipantToken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParticipantCapability {
    Publish,
    Subscribe,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateParticipantTokenRequest {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, String>>,
    /// Default: both.
    #[serde(default)]
    pub capabilities: Option<Vec<ParticipantCapability>>,
    /// Minutes, 1–20160, default 720.
    #[serde(default)]
    pub duration: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantToken {
    pub participant_id: String,
    pub token: String,
    pub user_id: String,
    pub attributes: BTreeMap<String, String>,
    pub capabilities: Vec<ParticipantCapability>,
    /// ISO 8601.
    pub expiration_time: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantTokenResponse {
    pub participant_token: ParticipantToken,
}

/// A participant as ListParticipants reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub participant_id: String,
    pub user_id: String,
    /// `CONNECTED` or `DISCONNECTED`.
    pub state: String,
    pub attributes: BTreeMap<String, String>,
    pub published: bool,
    /// ISO 8601; absent if the participant never joined.
    #[serde(default)]
    pub first_join_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantsResponse {
    pub participants: Vec<Participant>,
    /// Present when there are more participants: pass it as `nextToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisconnectParticipantRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportPublicKeyRequest {
    pub public_key_material: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKey {
    pub id: String,
    pub name: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyResponse {
    pub public_key: PublicKey,
}

// ---- demo backend (/api), the IVS multi-host sample backend's shapes ----

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemoAttributes {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub avatar_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemoCreateRequest {
    pub user_id: String,
    #[serde(default)]
    pub attributes: DemoAttributes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemoJoinRequest {
    pub group_id: String,
    pub user_id: String,
    #[serde(default)]
    pub attributes: DemoAttributes,
    /// The `hostKey` that creating the group returned: joins as its host
    /// again (a reload, another tab, after leaving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoStageToken {
    pub id: String,
    pub token: String,
    pub participant_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoChannel {
    pub id: String,
    pub playback_url: String,
    pub ingest_endpoint: String,
    pub stream_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoChat {
    pub id: String,
    pub token: String,
}

/// `/api/create` and `/api/join`. `channel` and `chat` are null until those
/// parts of the server exist for the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoSessionResponse {
    pub group_id: String,
    pub channel: Option<DemoChannel>,
    pub stage: DemoStageToken,
    pub chat: Option<DemoChat>,
    /// To the host only: rejoins as the host (`/api/join` with `hostKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

/// `/api/list`: a query string (`GET`) or a JSON body (`POST`, optional).
/// The answer stays a plain array (the sample backend's shape); when more
/// groups follow, the `Next-Token` response header carries the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemoListRequest {
    #[serde(default)]
    pub max_results: Option<u32>,
    #[serde(default)]
    pub next_token: Option<String>,
    /// Only this group (an array of zero or one item): how a page that
    /// knows its group asks about it without paging through every group.
    #[serde(default)]
    pub group_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoListItem {
    pub group_id: String,
    pub stage_id: String,
    pub channel_id: Option<String>,
    pub room_id: Option<String>,
    /// The host's attributes (username, avatarUrl).
    pub stage_attributes: BTreeMap<String, String>,
    pub participant_count: usize,
    pub live: bool,
    /// The channel's multivariant playlist, for viewers (absent without a channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemoDisconnectRequest {
    pub group_id: String,
    /// The host's user id (the caller), as in the sample backend.
    pub user_id: String,
    /// The guest to remove.
    pub participant_id: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemoDeleteRequest {
    pub group_id: String,
}
