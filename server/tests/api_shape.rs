//! The HTTP API as a developer meets it without reading the source: unknown
//! fields are refused by name, bad values name the field and the allowed
//! values, every 404 and 405 is the JSON error shape, API keys and stream
//! keys can be told apart, and every `/v1` list pages with `maxResults` and
//! `nextToken`. Against a real server on port 0.

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};

mod common;
use common::Server;

/// Assert an error reply: status, code, and a message containing each of `mentions`.
fn expect(reply: (u16, Value), status: u16, code: &str, mentions: &[&str], what: &str) {
    let (got, body) = reply;
    assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{what}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    for m in mentions {
        assert!(message.contains(m), "{what}: the message should mention {m:?}: {message}");
    }
}

#[tokio::test]
async fn unknown_fields_are_refused_by_name() -> Result<()> {
    let s = Server::start("unknown-fields").await?;
    let stage = s.create_stage_with(json!({"name": "shape"})).await?;

    // The case: a snake_case userId must not mint a token with an empty userId.
    let reply = s.api(Method::POST, &format!("/v1/stages/{stage}/tokens"), Some(json!({"user_id": "u1"}))).await?;
    expect(reply, 400, "UNKNOWN_FIELD", &["user_id", "userId", "attributes", "capabilities", "duration"], "token");
    let listed = s.ok(Method::GET, &format!("/v1/stages/{stage}/participants"), None).await?;
    assert_eq!(listed["participants"], json!([]), "no token was minted");

    let token = s.participant_token(&stage, json!({"userId": "p"})).await?;
    let room = s.ok(Method::POST, "/v1/rooms", Some(json!({}))).await?["id"].as_str().context("room")?.to_owned();
    let channel = s.ok(Method::POST, "/v1/channels", Some(json!({}))).await?;
    let channel = channel["channel"]["id"].as_str().context("channel")?.to_owned();
    let cases = [
        ("/v1/stages".to_owned(), json!({"name": "x", "tags": {}}), "tags"),
        (format!("/v1/stages/{stage}/participants/{}/disconnect", token.participant_id), json!({"why": "x"}), "why"),
        ("/v1/public-keys".to_owned(), json!({"publicKeyMaterial": "x", "tags": {}}), "tags"),
        ("/v1/channels".to_owned(), json!({"name": "x", "latencyMode": "LOW"}), "latencyMode"),
        (format!("/v1/channels/{channel}/metadata"), json!({"metadata": "m", "extra": 1}), "extra"),
        ("/v1/rooms".to_owned(), json!({"maximumMessageRate": 5}), "maximumMessageRate"),
        (format!("/v1/rooms/{room}/tokens"), json!({"userId": "u", "sessionDuration": 5}), "sessionDuration"),
        (format!("/v1/rooms/{room}/events"), json!({"eventName": "e", "attrs": {}}), "attrs"),
    ];
    for (path, body, field) in cases {
        let reply = s.api(Method::POST, &path, Some(body)).await?;
        expect(reply, 400, "UNKNOWN_FIELD", &[field], &path);
    }
    // The demo backend too, nested objects included.
    let demo_cases = [
        (Method::POST, "/api/create", json!({"userId": "u", "user_name": "x"}), "user_name"),
        (Method::POST, "/api/create", json!({"userId": "u", "attributes": {"username": "u", "avatar": "x"}}), "avatar"),
        (Method::POST, "/api/join", json!({"groupId": "g", "userId": "u", "role": "host"}), "role"),
        (
            Method::POST,
            "/api/disconnect",
            json!({"groupId": "g", "userId": "u", "participantId": "p", "ban": true}),
            "ban",
        ),
        (Method::DELETE, "/api/delete", json!({"groupId": "g", "force": true}), "force"),
        (Method::POST, "/api/list", json!({"limit": 5}), "limit"),
        (Method::POST, "/api/chat-token", json!({"groupId": "g", "name": "x"}), "name"),
        (
            Method::POST,
            "/api/chat-token",
            json!({"groupId": "g", "attributes": {"username": "u", "avatarUrl": "x"}}),
            "avatarUrl",
        ),
    ];
    for (method, path, body, field) in demo_cases {
        let reply = s.call(method, path, Some(body), Some("")).await?;
        expect(reply, 400, "UNKNOWN_FIELD", &[field], path);
    }
    let stages = s.ok(Method::GET, "/v1/stages", None).await?;
    assert_eq!(stages["stages"].as_array().map(Vec::len), Some(1), "none of the refused calls made a stage");
    s.stop()
}

#[tokio::test]
async fn bad_values_name_the_field_and_what_is_allowed() -> Result<()> {
    let s = Server::start("bad-values").await?;
    let stage = s.create_stage_with(json!({})).await?;
    let tokens = format!("/v1/stages/{stage}/tokens");
    let reply = s.api(Method::POST, &tokens, Some(json!({"capabilities": ["PUBLISH", "FLY"]}))).await?;
    expect(reply, 400, "INVALID_FIELD", &["capabilities[1]", "FLY", "PUBLISH", "SUBSCRIBE"], "participant capability");
    let reply = s.api(Method::POST, &tokens, Some(json!({"duration": "long"}))).await?;
    expect(reply, 400, "INVALID_FIELD", &["duration"], "duration type");
    let room = s.ok(Method::POST, "/v1/rooms", Some(json!({}))).await?["id"].as_str().context("room")?.to_owned();
    let body = json!({"userId": "u", "capabilities": ["SHOUT"]});
    let reply = s.api(Method::POST, &format!("/v1/rooms/{room}/tokens"), Some(body)).await?;
    let mentions = ["capabilities[0]", "SHOUT", "SEND_MESSAGE", "DELETE_MESSAGE", "DISCONNECT_USER"];
    expect(reply, 400, "INVALID_FIELD", &mentions, "chat capability");
    let reply = s.call(Method::POST, "/api/join", Some(json!({"userId": "u"})), Some("")).await?;
    expect(reply, 400, "INVALID_FIELD", &["groupId"], "missing field");
    // Not JSON at all keeps its own code.
    let stages = format!("{}/v1/stages", s.base);
    let res = s.http.post(&stages).bearer_auth(&s.api_key).header("Content-Type", "application/json").body("{nope");
    let res = res.send().await?;
    ensure!(res.status() == 400, "status {}", res.status());
    assert_eq!(res.json::<Value>().await?["code"], "INVALID_JSON");
    let res = s.http.post(&stages).bearer_auth(&s.api_key).body("{}").send().await?;
    assert_eq!(res.status(), 415);
    assert_eq!(res.json::<Value>().await?["code"], "UNSUPPORTED_MEDIA_TYPE");
    s.stop()
}

#[tokio::test]
async fn not_found_and_method_not_allowed_are_json() -> Result<()> {
    let s = Server::start("json-404-405").await?;
    for path in ["/v1/nope", "/v1/stages/st-1/nope", "/api/nope", "/no-such-file.js", "/sdk/missing.wasm"] {
        let reply = s.api(Method::GET, path, None).await?;
        expect(reply, 404, "NOT_FOUND", &[path], path);
    }
    for (method, path, allowed) in [
        (Method::PUT, "/v1/stages", "GET"),
        (Method::PATCH, "/v1/stages/st-1", "DELETE"),
        (Method::POST, "/api/delete", "DELETE"),
        (Method::DELETE, "/api/create", "POST"),
        (Method::PUT, "/v1/channels", "POST"),
    ] {
        let res = s.http.request(method.clone(), format!("{}{path}", s.base)).bearer_auth(&s.api_key).send().await?;
        let allow = res.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(allow.contains(allowed), "{method} {path}: Allow: {allow}");
        let body: Value = res.json().await?;
        let reply = (405, body);
        expect(reply, 405, "METHOD_NOT_ALLOWED", &[method.as_str(), path, "Allow"], path);
    }
    // A path parameter the router cannot read (not UTF-8) is a 400 in the same shape.
    for path in ["/v1/stages/%FF", "/v1/rooms/%C3%28/tokens", "/api/channels/%FF"] {
        let method = if path.ends_with("/tokens") { Method::POST } else { Method::GET };
        let reply = s.api(method, path, None).await?;
        expect(reply, 400, "INVALID_PATH", &["UTF-8"], path);
    }
    // A 404 that has its own body keeps it (an offline channel's playlist, in text as HLS players expect).
    let res = s.http.get(format!("{}/hls/ch-none/index.m3u8", s.base)).send().await?;
    assert_eq!(res.status(), 404);
    assert_eq!(res.text().await?, "channel is offline");
    s.stop()
}

#[tokio::test]
async fn api_keys_and_stream_keys_can_be_told_apart() -> Result<()> {
    let s = Server::start("key-prefixes").await?;
    assert!(s.api_key.starts_with("sck_"), "generated API key: {}", &s.api_key[..4]);
    let channel = s.ok(Method::POST, "/v1/channels", Some(json!({"name": "c"}))).await?;
    let stream_key = channel["streamKey"].as_str().context("streamKey")?.to_owned();
    assert!(stream_key.starts_with("sk_") && !stream_key.starts_with("sck_"));
    let reply = s.call(Method::GET, "/v1/stages", None, Some(&stream_key)).await?;
    expect(reply, 401, "UNAUTHORIZED", &["stream key", "API key"], "stream key as API key");
    let dir = s.stop_keeping_dir();

    // A key generated before the split (sk_…) keeps working.
    let legacy = "sk_legacyKeyFromAnOlderVersion0123456789";
    std::fs::write(dir.join("api-key"), format!("{legacy}\n"))?;
    let s = Server::start_in(dir).await?;
    assert_eq!(s.api_key, legacy);
    let (status, _) = s.call(Method::GET, "/v1/stages", None, Some(legacy)).await?;
    assert_eq!(status, 200);
    s.stop()
}

/// Follows `nextToken` through a `/v1` list; the pages' item ids.
async fn v1_pages(s: &Server, path: &str, key: &str, max_results: u32) -> Result<Vec<Vec<String>>> {
    let mut pages = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut url = format!("{path}?maxResults={max_results}");
        if let Some(t) = &next {
            url.push_str(&format!("&nextToken={t}"));
        }
        let body = s.ok(Method::GET, &url, None).await?;
        let items = body[key].as_array().with_context(|| format!("{key} in {body}"))?;
        let id_key = if key == "participants" { "participantId" } else { "id" };
        pages.push(items.iter().filter_map(|i| i[id_key].as_str().map(str::to_owned)).collect());
        next = body["nextToken"].as_str().map(str::to_owned);
        if next.is_none() {
            return Ok(pages);
        }
        ensure!(pages.len() < 20, "no end to the pages of {path}");
    }
}

#[tokio::test]
async fn every_v1_list_pages() -> Result<()> {
    let s = Server::start("v1-pages").await?;
    let mut stages = Vec::new();
    let mut rooms = Vec::new();
    let mut channels = Vec::new();
    for i in 0..5 {
        stages.push(s.create_stage_with(json!({"name": format!("s{i}")})).await?);
        rooms.push(s.ok(Method::POST, "/v1/rooms", Some(json!({}))).await?["id"].as_str().context("room")?.to_owned());
        let c = s.ok(Method::POST, "/v1/channels", Some(json!({}))).await?;
        channels.push(c["channel"]["id"].as_str().context("channel")?.to_owned());
    }
    let mut participants = Vec::new();
    for i in 0..5 {
        participants.push(s.participant_token(&stages[0], json!({"userId": format!("u{i}")})).await?.participant_id);
    }
    let lists = [
        ("/v1/stages".to_owned(), "stages", &stages),
        ("/v1/rooms".to_owned(), "rooms", &rooms),
        ("/v1/channels".to_owned(), "channels", &channels),
        (format!("/v1/stages/{}/participants", stages[0]), "participants", &participants),
    ];
    for (path, key, made) in lists {
        let pages = v1_pages(&s, &path, key, 2).await?;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1], "{path}");
        assert_eq!(&pages.concat(), made, "{path}: oldest first, each once");
        // Default: one page of up to 50, no nextToken.
        let all = s.ok(Method::GET, &path, None).await?;
        assert!(all.get("nextToken").is_none(), "{path}: {all}");
        assert_eq!(all[key].as_array().map(Vec::len), Some(5), "{path}");
        let reply = s.api(Method::GET, &format!("{path}?maxResults=101"), None).await?;
        expect(reply, 400, "INVALID_MAX_RESULTS", &["1", "100"], &path);
        let reply = s.api(Method::GET, &format!("{path}?nextToken=bm9wZQ"), None).await?;
        expect(reply, 400, "INVALID_NEXT_TOKEN", &[], &path);
        let reply = s.api(Method::GET, &format!("{path}?pageSize=2"), None).await?;
        expect(reply, 400, "UNKNOWN_FIELD", &["pageSize", "maxResults", "nextToken"], &path);
    }
    // ListChannels never shows stream keys.
    let listed = s.ok(Method::GET, "/v1/channels", None).await?;
    assert!(listed["channels"].as_array().into_iter().flatten().all(|c| c.get("streamKey").is_none()));
    assert!(!listed.to_string().contains("sk_"), "{listed}");
    let first = &listed["channels"][0];
    for field in ["id", "name", "ingestEndpoint", "playbackUrl", "state"] {
        assert!(first.get(field).is_some(), "ListChannels item has {field}: {first}");
    }
    let (status, _) = s.call(Method::GET, "/v1/channels", None, Some("wrong")).await?;
    assert_eq!(status, 401);
    s.stop()
}
