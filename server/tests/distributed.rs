//! Distributed mode: two servers in this process sharing one real
//! `redis-server` (each with its own data dir). What one node's API made,
//! the other lists; a token one node minted, the other accepts; each node
//! sees the other in the registry until its heartbeat stops.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{EncodePublicKey, LineEnding};
use reqwest::Method;
use serde_json::{json, Value};
use stagecast_protocol::token::{ParticipantClaims, TokenCapabilities};
use stagecast_server::cluster::{NodeRegistry, NODE_TTL};
use stagecast_server::config::Secret;

mod common;
use common::chat::{recv, say};
use common::redis::RedisServer;
use common::{Server, EVENTS_PATH};

/// A node of the deployment on `redis`, named `name`, its API key generated (and so shared).
async fn node(redis: &RedisServer, name: &str) -> Result<Server> {
    Server::start_with(name, |config| {
        config.redis = Some(Secret(redis.url()));
        config.node_id = Some(name.to_owned());
        config.api_key = None;
    })
    .await
}

fn registry(server: &Server) -> Result<&NodeRegistry> {
    server.running.state.nodes.as_deref().context("distributed mode has a node registry")
}

/// The ids of the live nodes `server` lists on `/v1/nodes`.
async fn node_ids(server: &Server) -> Result<Vec<String>> {
    let body = server.ok(Method::GET, "/v1/nodes", None).await?;
    ensure!(body["distributed"] == true, "{body}");
    Ok(body["nodes"].as_array().into_iter().flatten().filter_map(|n| n["nodeId"].as_str().map(str::to_owned)).collect())
}

/// Poll `/v1/nodes` on `server` until its ids are `want`, within `within`; how long it took.
async fn nodes_become(server: &Server, want: &[&str], within: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let ids = node_ids(server).await?;
        if ids == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            return Err(anyhow!("nodes are {ids:?} after {within:?}, want {want:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_nodes_share_the_control_plane_tokens_and_registry() -> Result<()> {
    let redis = RedisServer::start()?;
    let a = node(&redis, "node-a").await?;
    let b = node(&redis, "node-b").await?;
    // B took the API key A generated (neither was given one).
    ensure!(a.api.api_key == b.api.api_key, "the nodes' API keys differ");
    ensure!(a.dir != b.dir);

    // A stage and a chat room made through A are listed and found by B.
    let stage = a.create_stage_with(json!({"name": "made on A"})).await?;
    let room = a.create_room(json!({"name": "lobby"})).await?;
    let stages = b.ok(Method::GET, "/v1/stages", None).await?;
    let listed: Vec<&str> = stages["stages"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(listed, [stage.as_str()]);
    assert_eq!(b.ok(Method::GET, &format!("/v1/stages/{stage}"), None).await?["stage"]["name"], "made on A");
    let rooms = b.ok(Method::GET, "/v1/rooms", None).await?;
    let listed: Vec<&str> = rooms["rooms"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(listed, [room.as_str()]);

    // A participant token minted on A joins B's event plane.
    let host = a.participant_token(&stage, json!({"userId": "host", "capabilities": ["PUBLISH", "SUBSCRIBE"]})).await?;
    let guest = a.participant_token(&stage, json!({"userId": "guest", "capabilities": ["SUBSCRIBE"]})).await?;
    let mut on_b = common::events::EventClient::connect(&b.api, &host).await?;
    let joined = on_b.state().await?;
    ensure!(joined.ids().contains(&host.participant_id.as_str()), "B's stage state lacks the host: {:?}", joined.ids());
    // The guest is disconnected through A before it ever joined: B refuses its token.
    a.post(&format!("/v1/stages/{stage}/participants/{}/disconnect", guest.participant_id), json!({"reason": "bye"}))
        .await?;
    let refused = b.ws_try_connect(EVENTS_PATH, Some(&guest.token)).await?;
    let Err((status, body)) = refused else { return Err(anyhow!("B let a participant revoked on A join")) };
    assert_eq!((status, body["code"].as_str()), (403, Some("PARTICIPANT_DISCONNECTED")), "{body}");

    // A self-signed token whose key was imported through A joins B.
    let own = SigningKey::random(&mut rand::rngs::OsRng);
    let pem = VerifyingKey::from(&own).to_public_key_pem(LineEnding::LF)?;
    let imported = a.post("/v1/public-keys", json!({"publicKeyMaterial": pem, "name": "backend"})).await?;
    let kid = imported["publicKey"]["id"].as_str().context("key id")?;
    let now = chrono::Utc::now().timestamp();
    let claims = ParticipantClaims {
        topic: stage.clone(),
        jti: "self-signed-1".to_owned(),
        user_id: "backend-user".to_owned(),
        attributes: BTreeMap::new(),
        capabilities: TokenCapabilities { allow_publish: false, allow_subscribe: true },
        exp: now + 600,
        iat: now,
        events_url: String::new(),
        whip_url: String::new(),
        version: "1.0".to_owned(),
    };
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!({"alg": "ES384", "typ": "JWT", "kid": kid}))?);
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?));
    let signature: Signature = own.sign(input.as_bytes());
    let self_signed = common::Token {
        participant_id: claims.jti.clone(),
        token: format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())),
    };
    let mut backend_user = common::events::EventClient::connect(&b.api, &self_signed).await?;
    let seen = backend_user.state().await?;
    ensure!(seen.ids().contains(&"self-signed-1"), "B's stage state lacks the self-signed participant: {:?}", seen.ids());

    // A chat token minted on A works on B: its message comes back.
    let chat_token = a.chat_token(&room, "viewer", &["SEND_MESSAGE"]).await?;
    let mut chat = b.chat_connect(&chat_token).await?;
    say(&mut chat, "r-1", "hello from A's token").await?;
    let message: Value = recv(&mut chat).await?;
    assert_eq!((message["Type"].as_str(), message["Content"].as_str()), (Some("MESSAGE"), Some("hello from A's token")));

    // Each node sees both in the registry; both agree where the stage goes.
    nodes_become(&b, &["node-a", "node-b"], Duration::from_secs(5)).await?;
    nodes_become(&a, &["node-a", "node-b"], Duration::from_secs(5)).await?;
    let metrics = reqwest::Client::new().get(format!("{}/metrics", b.api.base)).bearer_auth(&b.api.api_key).send().await?;
    let metrics = metrics.text().await?;
    ensure!(metrics.lines().any(|l| l == "stagecast_nodes 2"), "no `stagecast_nodes 2` in:\n{metrics}");
    // A stops beating: B drops it within the TTL, and a stage A had goes to B.
    registry(&a)?.stop_heartbeat();
    let gone_after = nodes_become(&b, &["node-b"], NODE_TTL + Duration::from_secs(3)).await?;
    println!("node-a left B's list {gone_after:?} after its heartbeat stopped (TTL {NODE_TTL:?})");
    drop((on_b, backend_user));
    Ok(())
}

