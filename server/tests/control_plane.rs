//! The `/v1` control plane and the `/api` demo backend, against a real
//! server on port 0.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stagecast_protocol::token::{Capability, ParticipantClaims};
use stagecast_server::{Config, Running};

fn temp_dir(name: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let dir = std::env::temp_dir().join(format!("stagecast-cp-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

struct Server {
    running: Running,
    base: String,
    api_key: String,
    http: reqwest::Client,
    dir: PathBuf,
}

/// A response: status plus JSON body (Null when empty).
struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn ok(self) -> anyhow::Result<Value> {
        anyhow::ensure!(self.status.is_success(), "status {}: {}", self.status, self.body);
        Ok(self.body)
    }

    /// Assert an error reply with this status and code, and a message.
    fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", self.body);
    }
}

impl Server {
    async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_with(name, |_| {}).await
    }

    async fn start_with(name: &str, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let dir = temp_dir(name)?;
        let mut config = Config::for_tests(dir.clone());
        tweak(&mut config);
        let running = stagecast_server::start(config).await?;
        let base = format!("http://{}", running.http_addr);
        let api_key = running.state.auth.api_key().to_owned();
        Ok(Self { running, base, api_key, http: reqwest::Client::new(), dir })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status();
        let text = res.text().await?;
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? };
        Ok(Reply { status, body })
    }

    /// A control-plane call with the API key.
    async fn v1(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Reply> {
        self.send(method, path, Some(&self.api_key.clone()), body).await
    }

    async fn create_stage(&self, name: &str) -> anyhow::Result<String> {
        let body = self.v1(Method::POST, "/v1/stages", Some(json!({ "name": name }))).await?.ok()?;
        str_at(&body, &["stage", "id"])
    }

    async fn token(&self, stage: &str, body: Value) -> anyhow::Result<Value> {
        let reply = self.v1(Method::POST, &format!("/v1/stages/{stage}/tokens"), Some(body)).await?.ok()?;
        Ok(reply["participantToken"].clone())
    }

    fn claims(&self, token: &str) -> anyhow::Result<ParticipantClaims> {
        Ok(self.running.state.auth.keys.verify(token, now())?)
    }

    fn authorize_code(&self, token: &str) -> &'static str {
        match self.running.state.auth.authorize(token, Capability::Join) {
            Ok(_) => "OK",
            Err(e) => e.code,
        }
    }

    fn stop(self) -> anyhow::Result<()> {
        self.running.task.abort();
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

fn str_at(v: &Value, path: &[&str]) -> anyhow::Result<String> {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no string at {path:?} in {v}"))
}

#[tokio::test]
async fn stages_create_get_list_delete() -> anyhow::Result<()> {
    let s = Server::start("stages").await?;
    let created = s.v1(Method::POST, "/v1/stages", Some(json!({"name": "first"}))).await?.ok()?;
    let id = str_at(&created, &["stage", "id"])?;
    assert_eq!(created["stage"]["name"], "first");
    let addr = s.running.http_addr;
    assert_eq!(created["stage"]["endpoints"]["events"], format!("ws://{addr}/v1/stage/events"));
    assert_eq!(created["stage"]["endpoints"]["whip"], format!("http://{addr}/v1/stage/whip"));
    assert!(chrono::DateTime::parse_from_rfc3339(&str_at(&created, &["stage", "createTime"])?).is_ok());

    // No body at all is fine: a stage with an empty name.
    let bare = s.v1(Method::POST, "/v1/stages", None).await?.ok()?;
    let bare_id = str_at(&bare, &["stage", "id"])?;
    assert_ne!(bare_id, id);

    let got = s.v1(Method::GET, &format!("/v1/stages/{id}"), None).await?.ok()?;
    assert_eq!(got["stage"], created["stage"]);
    let list = s.v1(Method::GET, "/v1/stages", None).await?.ok()?;
    let ids: Vec<_> = list["stages"].as_array().into_iter().flatten().filter_map(|st| st["id"].as_str()).collect();
    assert_eq!(ids, vec![id.as_str(), bare_id.as_str()]);

    let del = s.v1(Method::DELETE, &format!("/v1/stages/{id}"), None).await?;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    s.v1(Method::GET, &format!("/v1/stages/{id}"), None).await?.expect_error(404, "STAGE_NOT_FOUND");
    s.v1(Method::DELETE, &format!("/v1/stages/{id}"), None).await?.expect_error(404, "STAGE_NOT_FOUND");
    s.v1(Method::POST, &format!("/v1/stages/{id}/tokens"), Some(json!({}))).await?.expect_error(404, "STAGE_NOT_FOUND");
    s.v1(Method::GET, &format!("/v1/stages/{id}/participants"), None).await?.expect_error(404, "STAGE_NOT_FOUND");
    let list = s.v1(Method::GET, "/v1/stages", None).await?.ok()?;
    assert_eq!(list["stages"].as_array().map(Vec::len), Some(1));

    s.v1(Method::POST, "/v1/stages", Some(json!({"name": "x".repeat(129)}))).await?.expect_error(400, "INVALID_NAME");
    s.stop()
}

#[tokio::test]
async fn participant_tokens_carry_what_was_asked() -> anyhow::Result<()> {
    let s = Server::start("tokens").await?;
    let stage = s.create_stage("tokens").await?;
    let t = s
        .token(
            &stage,
            json!({"userId": "ada", "attributes": {"username": "Ada", "avatarUrl": "a.png"}, "capabilities": ["SUBSCRIBE"], "duration": 60}),
        )
        .await?;
    assert_eq!(t["userId"], "ada");
    assert_eq!(t["attributes"], json!({"username": "Ada", "avatarUrl": "a.png"}));
    assert_eq!(t["capabilities"], json!(["SUBSCRIBE"]));
    let exp = chrono::DateTime::parse_from_rfc3339(&str_at(&t, &["expirationTime"])?)?.timestamp();
    assert!((exp - (now() + 3600)).abs() <= 5, "expiration {exp}");

    let claims = s.claims(&str_at(&t, &["token"])?)?;
    assert_eq!(claims.topic, stage);
    assert_eq!(claims.jti, str_at(&t, &["participantId"])?);
    assert_eq!(claims.user_id, "ada");
    assert_eq!(claims.attributes.get("username").map(String::as_str), Some("Ada"));
    assert!(!claims.capabilities.allow_publish && claims.capabilities.allow_subscribe);
    assert_eq!(claims.exp, exp);
    let addr = s.running.http_addr;
    assert_eq!(claims.events_url, format!("ws://{addr}/v1/stage/events"));
    assert_eq!(claims.whip_url, format!("http://{addr}/v1/stage/whip"));

    // Defaults: both capabilities, 720 minutes, empty user id.
    let d = s.token(&stage, json!({})).await?;
    assert_eq!(d["capabilities"], json!(["PUBLISH", "SUBSCRIBE"]));
    let dc = s.claims(&str_at(&d, &["token"])?)?;
    assert!((dc.exp - (now() + 720 * 60)).abs() <= 5);
    assert_eq!(dc.user_id, "");
    assert_ne!(dc.jti, claims.jti);
    let bare = s.v1(Method::POST, &format!("/v1/stages/{stage}/tokens"), None).await?.ok()?;
    assert_eq!(bare["participantToken"]["capabilities"], json!(["PUBLISH", "SUBSCRIBE"]));

    let path = format!("/v1/stages/{stage}/tokens");
    for duration in [0, 20_161] {
        s.v1(Method::POST, &path, Some(json!({ "duration": duration }))).await?.expect_error(400, "INVALID_DURATION");
    }
    assert!(s.v1(Method::POST, &path, Some(json!({"duration": 20_160}))).await?.status.is_success());
    s.v1(Method::POST, &path, Some(json!({"attributes": {"big": "x".repeat(1100)}})))
        .await?
        .expect_error(400, "ATTRIBUTES_TOO_LARGE");
    s.v1(Method::POST, &path, Some(json!({"capabilities": []}))).await?.expect_error(400, "INVALID_CAPABILITIES");
    s.v1(Method::POST, &path, Some(json!({"userId": "u".repeat(129)}))).await?.expect_error(400, "INVALID_USER_ID");
    // A wrong type or value is a 400 naming the field, not a crash.
    let r = s.v1(Method::POST, &path, Some(json!({"capabilities": ["FLY"]}))).await?;
    r.expect_error(400, "INVALID_FIELD");
    let r = s.v1(Method::POST, &path, Some(json!({"duration": -5}))).await?;
    r.expect_error(400, "INVALID_FIELD");
    assert!(r.body["message"].as_str().is_some_and(|m| m.contains("duration")), "{}", r.body);
    s.stop()
}

#[tokio::test]
async fn public_url_goes_into_tokens() -> anyhow::Result<()> {
    let s = Server::start_with("publicurl", |c| c.public_url = Some("https://live.example.test/".to_owned())).await?;
    let stage = s.create_stage("p").await?;
    let t = s.token(&stage, json!({})).await?;
    let c = s.claims(&str_at(&t, &["token"])?)?;
    assert_eq!(c.events_url, "wss://live.example.test/v1/stage/events");
    assert_eq!(c.whip_url, "https://live.example.test/v1/stage/whip");
    s.stop()
}

#[tokio::test]
async fn participants_list_and_disconnect() -> anyhow::Result<()> {
    let s = Server::start("participants").await?;
    let stage = s.create_stage("people").await?;
    let a = s.token(&stage, json!({"userId": "a", "attributes": {"n": "1"}})).await?;
    let b = s.token(&stage, json!({"userId": "b"})).await?;
    let (a_token, a_id) = (str_at(&a, &["token"])?, str_at(&a, &["participantId"])?);
    let b_token = str_at(&b, &["token"])?;

    // Joining records the first join time.
    let a_claims = s.running.state.auth.authorize(&a_token, Capability::Join)?;
    s.running.state.auth.participant_joined(&a_claims);
    let list = s.v1(Method::GET, &format!("/v1/stages/{stage}/participants"), None).await?.ok()?;
    let ps = list["participants"].as_array().cloned().unwrap_or_default();
    assert_eq!(ps.len(), 2);
    assert_eq!(ps[0]["participantId"], a_id.as_str());
    assert_eq!(ps[0]["userId"], "a");
    assert_eq!(ps[0]["attributes"], json!({"n": "1"}));
    assert_eq!(ps[0]["state"], "DISCONNECTED"); // no live socket in this test
    assert_eq!(ps[0]["published"], false);
    assert!(ps[0]["firstJoinTime"].as_str().is_some());
    assert_eq!(ps[1]["userId"], "b");
    assert!(ps[1]["firstJoinTime"].is_null());

    // Disconnect: the token is dead, the other one is not.
    let r = s
        .v1(Method::POST, &format!("/v1/stages/{stage}/participants/{a_id}/disconnect"), Some(json!({"reason": "bye"})))
        .await?;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(s.authorize_code(&a_token), "PARTICIPANT_DISCONNECTED");
    let e = s.running.state.auth.authorize(&a_token, Capability::Join).err().ok_or_else(|| anyhow::anyhow!("allowed"))?;
    assert_eq!(e.status.as_u16(), 403);
    assert_eq!(s.authorize_code(&b_token), "OK");
    // Without a body too; unknown participants are 404.
    s.v1(Method::POST, &format!("/v1/stages/{stage}/participants/nobody/disconnect"), None)
        .await?
        .expect_error(404, "PARTICIPANT_NOT_FOUND");
    s.v1(Method::POST, &format!("/v1/stages/st-none/participants/{a_id}/disconnect"), None)
        .await?
        .expect_error(404, "STAGE_NOT_FOUND");

    // Deleting the stage kills every token for it.
    assert!(s.v1(Method::DELETE, &format!("/v1/stages/{stage}"), None).await?.status.is_success());
    assert_eq!(s.authorize_code(&b_token), "STAGE_NOT_FOUND");
    assert_eq!(s.authorize_code(&a_token), "STAGE_NOT_FOUND");
    s.stop()
}

#[tokio::test]
async fn api_key_is_required() -> anyhow::Result<()> {
    let s = Server::start("apikey").await?;
    let stage = s.create_stage("k").await?;
    let cases: [(Method, String, Option<Value>); 7] = [
        (Method::POST, "/v1/stages".to_owned(), Some(json!({}))),
        (Method::GET, "/v1/stages".to_owned(), None),
        (Method::GET, format!("/v1/stages/{stage}"), None),
        (Method::DELETE, format!("/v1/stages/{stage}"), None),
        (Method::POST, format!("/v1/stages/{stage}/tokens"), Some(json!({}))),
        (Method::GET, format!("/v1/stages/{stage}/participants"), None),
        (Method::POST, "/v1/public-keys".to_owned(), Some(json!({"publicKeyMaterial": "x"}))),
    ];
    for (method, path, body) in cases {
        s.send(method.clone(), &path, None, body.clone()).await?.expect_error(401, "UNAUTHORIZED");
        s.send(method.clone(), &path, Some("wrong-key"), body.clone()).await?.expect_error(401, "UNAUTHORIZED");
        // A participant token is not an API key.
        s.send(method, &path, Some(&format!("{}x", s.api_key)), body).await?.expect_error(401, "UNAUTHORIZED");
    }
    let r = s
        .http
        .get(format!("{}/v1/stages", s.base))
        .header("Authorization", format!("Basic {}", s.api_key))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    // Still there: none of the refused calls did anything.
    assert!(s.v1(Method::GET, &format!("/v1/stages/{stage}"), None).await?.status.is_success());

    // The generated key is kept in the data dir, private, and reused.
    let key_file = s.dir.join("api-key");
    assert_eq!(std::fs::read_to_string(&key_file)?.trim(), s.api_key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file)?.permissions().mode() & 0o777, 0o600);
    }
    assert!(s.running.api_key_was_generated);
    let (again, generated) = stagecast_server::auth::load_or_create_api_key(&Config::for_tests(s.dir.clone()))?;
    assert_eq!((again.as_str(), generated), (s.api_key.as_str(), false));
    let mut configured = Config::for_tests(s.dir.clone());
    configured.api_key = Some("from-env".to_owned());
    assert_eq!(stagecast_server::auth::load_or_create_api_key(&configured)?, ("from-env".to_owned(), false));
    s.stop()
}

#[tokio::test]
async fn malformed_json_is_a_400_with_code_and_message() -> anyhow::Result<()> {
    let s = Server::start("badjson").await?;
    let stage = s.create_stage("j").await?;
    let raw = |method: Method, path: String, auth: Option<String>, body: &'static str| {
        let mut req =
            s.http.request(method, format!("{}{path}", s.base)).header("Content-Type", "application/json").body(body);
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        async move {
            let res = req.send().await?;
            let status = res.status();
            let body: Value = res.json().await?;
            anyhow::Ok(Reply { status, body })
        }
    };
    let key = Some(s.api_key.clone());
    for body in ["{not json", "{\"name\": \"cut off"] {
        raw(Method::POST, "/v1/stages".to_owned(), key.clone(), body).await?.expect_error(400, "INVALID_JSON");
    }
    // JSON of the wrong shape: the field is named.
    for body in ["\"just a string\"", "{\"name\": 5}", "[1,2"] {
        raw(Method::POST, "/v1/stages".to_owned(), key.clone(), body).await?.expect_error(400, "INVALID_FIELD");
    }
    raw(Method::POST, format!("/v1/stages/{stage}/tokens"), key.clone(), "{oops")
        .await?
        .expect_error(400, "INVALID_JSON");
    raw(Method::POST, "/v1/public-keys".to_owned(), key.clone(), "{").await?.expect_error(400, "INVALID_JSON");
    raw(Method::POST, format!("/v1/stages/{stage}/participants/p/disconnect"), key, "nope")
        .await?
        .expect_error(400, "INVALID_JSON");
    raw(Method::POST, "/api/create".to_owned(), None, "{\"userId\":").await?.expect_error(400, "INVALID_JSON");
    raw(Method::POST, "/api/join".to_owned(), None, "]").await?.expect_error(400, "INVALID_JSON");
    raw(Method::POST, "/api/disconnect".to_owned(), None, "{x}").await?.expect_error(400, "INVALID_JSON");
    raw(Method::DELETE, "/api/delete".to_owned(), None, "{x}").await?.expect_error(400, "INVALID_JSON");
    // The server is fine afterwards.
    assert!(s.v1(Method::GET, "/v1/stages", None).await?.status.is_success());
    s.stop()
}

#[tokio::test]
async fn demo_backend_create_join_list_disconnect_delete() -> anyhow::Result<()> {
    let s = Server::start("demo").await?;
    let host_attrs = json!({"username": "Hosty", "avatarUrl": "/avatars/1.png"});
    let created = s
        .send(Method::POST, "/api/create", None, Some(json!({"userId": "host-1", "attributes": host_attrs})))
        .await?
        .ok()?;
    let group = str_at(&created, &["groupId"])?;
    let stage = str_at(&created, &["stage", "id"])?;
    let host_token = str_at(&created, &["stage", "token"])?;
    let host_pid = str_at(&created, &["stage", "participantId"])?;
    // The host gets the group's channel (with its stream key) and a moderator chat token.
    let channel = str_at(&created, &["channel", "id"])?;
    let room = str_at(&created, &["chat", "id"])?;
    assert_eq!(created["channel"]["playbackUrl"], format!("{}/hls/{channel}/index.m3u8", s.base));
    assert_eq!(created["channel"]["ingestEndpoint"], format!("{}/v1/channels/{channel}/whip", s.base));
    let stream_key = str_at(&created, &["channel", "streamKey"])?;
    assert!(stream_key.starts_with("sk_"));
    let host_chat = s.running.state.chat.verify_token(&str_at(&created, &["chat", "token"])?, now())?;
    // Members chat as their participant id with a server-set role (chat_identity.rs has the rest).
    assert_eq!((host_chat.room.as_str(), host_chat.user_id.as_str()), (room.as_str(), host_pid.as_str()));
    assert_eq!(host_chat.attributes.get("role").map(String::as_str), Some("host"));
    let caps = host_chat.chat_capabilities();
    assert!(caps.send_message && caps.delete_message && caps.disconnect_user);
    let ch = s.v1(Method::GET, &format!("/v1/channels/{channel}"), None).await?.ok()?;
    assert_eq!(ch["channel"]["state"], "OFFLINE");
    assert!(s.v1(Method::GET, &format!("/v1/rooms/{room}"), None).await?.status.is_success());
    let hc = s.claims(&host_token)?;
    assert_eq!(
        (hc.topic.as_str(), hc.jti.as_str(), hc.user_id.as_str()),
        (stage.as_str(), host_pid.as_str(), "host-1")
    );
    assert_eq!(hc.attributes.get("isHost").map(String::as_str), Some("true"));
    assert_eq!(hc.attributes.get("username").map(String::as_str), Some("Hosty"));
    assert_eq!(hc.attributes.get("avatarUrl").map(String::as_str), Some("/avatars/1.png"));
    assert!(hc.capabilities.allow_publish && hc.capabilities.allow_subscribe);
    // The stage is a real stage on the control plane too.
    assert!(s.v1(Method::GET, &format!("/v1/stages/{stage}"), None).await?.status.is_success());

    let joined = s
        .send(Method::POST, "/api/join", None, Some(json!({"groupId": group, "userId": "guest-1", "attributes": {"username": "Guesty", "avatarUrl": "g.png"}})))
        .await?
        .ok()?;
    assert_eq!(joined["groupId"], group.as_str());
    assert_eq!(joined["stage"]["id"], stage.as_str());
    let guest_token = str_at(&joined, &["stage", "token"])?;
    let guest_pid = str_at(&joined, &["stage", "participantId"])?;
    let gc = s.claims(&guest_token)?;
    assert_eq!(gc.attributes.get("isHost").map(String::as_str), Some("false"));
    assert_eq!(gc.user_id, "guest-1");
    // Guests do not go live (no stream key) and may only send chat messages.
    assert!(joined["channel"].is_null());
    assert_eq!(joined["chat"]["id"], room.as_str());
    let guest_chat = s.running.state.chat.verify_token(&str_at(&joined, &["chat", "token"])?, now())?;
    let caps = guest_chat.chat_capabilities();
    assert_eq!(guest_chat.user_id, guest_pid);
    assert_eq!(guest_chat.attributes.get("role").map(String::as_str), Some("guest"));
    assert!(caps.send_message && !caps.delete_message && !caps.disconnect_user);
    s.send(Method::POST, "/api/join", None, Some(json!({"groupId": "nope", "userId": "x"})))
        .await?
        .expect_error(404, "GROUP_NOT_FOUND");

    // A second group, to check host rights do not cross groups.
    let other = s
        .send(Method::POST, "/api/create", None, Some(json!({"userId": "host-2", "attributes": {"username": "Other"}})))
        .await?
        .ok()?;
    let other_host_token = str_at(&other, &["stage", "token"])?;

    let list = s.send(Method::POST, "/api/list", None, None).await?.ok()?;
    let items = list.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2);
    let item =
        items.iter().find(|i| i["groupId"] == group.as_str()).ok_or_else(|| anyhow::anyhow!("group not listed"))?;
    assert_eq!(item["stageId"], stage.as_str());
    assert_eq!(item["stageAttributes"], host_attrs);
    assert_eq!(item["participantCount"], 0);
    assert_eq!(item["live"], false);
    assert_eq!(item["channelId"], channel.as_str());
    assert_eq!(item["roomId"], room.as_str());
    assert_eq!(item["playbackUrl"], format!("{}/hls/{channel}/index.m3u8", s.base));
    assert!(item.get("streamKey").is_none() && !list.to_string().contains(&stream_key));

    // Only the host may remove a guest.
    let kick = json!({"groupId": group, "userId": "host-1", "participantId": guest_pid, "reason": "out"});
    s.send(Method::POST, "/api/disconnect", None, Some(kick.clone())).await?.expect_error(401, "UNAUTHORIZED");
    s.send(Method::POST, "/api/disconnect", Some(&guest_token), Some(kick.clone()))
        .await?
        .expect_error(403, "NOT_HOST");
    s.send(Method::POST, "/api/disconnect", Some(&other_host_token), Some(kick.clone()))
        .await?
        .expect_error(403, "NOT_HOST");
    s.send(Method::POST, "/api/disconnect", Some("garbage"), Some(kick.clone()))
        .await?
        .expect_error(401, "TOKEN_MALFORMED");
    assert_eq!(s.authorize_code(&guest_token), "OK");
    let r = s.send(Method::POST, "/api/disconnect", Some(&host_token), Some(kick)).await?.ok()?;
    assert_eq!(r["status"], "success");
    assert_eq!(s.authorize_code(&guest_token), "PARTICIPANT_DISCONNECTED");
    assert_eq!(s.authorize_code(&host_token), "OK");
    s.send(
        Method::POST,
        "/api/disconnect",
        Some(&host_token),
        Some(json!({"groupId": group, "userId": "host-1", "participantId": "ghost"})),
    )
    .await?
    .expect_error(404, "PARTICIPANT_NOT_FOUND");

    // Only the host may delete the group.
    let del = json!({"groupId": group});
    s.send(Method::DELETE, "/api/delete", None, Some(del.clone())).await?.expect_error(401, "UNAUTHORIZED");
    s.send(Method::DELETE, "/api/delete", Some(&other_host_token), Some(del.clone()))
        .await?
        .expect_error(403, "NOT_HOST");
    let r = s.send(Method::DELETE, "/api/delete", Some(&host_token), Some(del.clone())).await?.ok()?;
    assert_eq!(r["status"], "success");
    // The host's token went with its stage.
    s.send(Method::DELETE, "/api/delete", Some(&host_token), Some(del)).await?.expect_error(404, "STAGE_NOT_FOUND");
    let list = s.send(Method::POST, "/api/list", None, None).await?.ok()?;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(s.authorize_code(&host_token), "STAGE_NOT_FOUND");
    s.send(Method::POST, "/api/join", None, Some(json!({"groupId": group, "userId": "late"})))
        .await?
        .expect_error(404, "GROUP_NOT_FOUND");
    s.v1(Method::GET, &format!("/v1/stages/{stage}"), None).await?.expect_error(404, "STAGE_NOT_FOUND");
    // The group's channel and chat room went with it.
    s.v1(Method::GET, &format!("/v1/channels/{channel}"), None).await?.expect_error(404, "CHANNEL_NOT_FOUND");
    s.v1(Method::GET, &format!("/v1/rooms/{room}"), None).await?.expect_error(404, "ROOM_NOT_FOUND");
    s.stop()
}

#[tokio::test]
async fn demo_backend_is_rate_limited() -> anyhow::Result<()> {
    let s = Server::start_with("ratelimit", |c| c.demo_rate_per_minute = 3).await?;
    for _ in 0..3 {
        assert!(s.send(Method::POST, "/api/list", None, None).await?.status.is_success());
    }
    s.send(Method::POST, "/api/list", None, None).await?.expect_error(429, "THROTTLED");
    s.send(Method::POST, "/api/create", None, Some(json!({"userId": "u"}))).await?.expect_error(429, "THROTTLED");
    // The control plane is not throttled.
    assert!(s.v1(Method::GET, "/v1/stages", None).await?.status.is_success());
    s.stop()
}

#[tokio::test]
async fn odd_input_gets_4xx_and_the_server_keeps_serving() -> anyhow::Result<()> {
    let s = Server::start("odd").await?;
    let stage = s.create_stage("odd").await?;
    let long = "x".repeat(5000);
    for id in ["%00", "..%2F..%2Fetc", "%F0%9F%8E%A5", long.as_str(), "'%20OR%201=1--"] {
        s.v1(Method::GET, &format!("/v1/stages/{id}"), None).await?.expect_error(404, "STAGE_NOT_FOUND");
        let r = s.v1(Method::POST, &format!("/v1/stages/{stage}/participants/{id}/disconnect"), None).await?;
        r.expect_error(404, "PARTICIPANT_NOT_FOUND");
    }
    // Junk tokens everywhere a participant token is read.
    let junk = ["", " ", "a.b.c", "....", &long, "eyJhbGciOiJFUzM4NCJ9.e30.AAAA", "é.é.é"];
    for t in junk {
        let code = s.authorize_code(t);
        assert!(matches!(code, "TOKEN_MALFORMED" | "TOKEN_INVALID"), "{t:?}: {code}");
        if t.trim().is_empty() || !t.is_ascii() {
            continue; // not a valid header value
        }
        let r = s.send(Method::DELETE, "/api/delete", Some(t), Some(json!({"groupId": "g"}))).await?;
        assert_eq!(r.status.as_u16(), 401, "{t:?}: {}", r.body);
    }
    // A Host header that is not a host does not end up in signed URLs.
    let res = s
        .http
        .post(format!("{}/v1/stages/{stage}/tokens", s.base))
        .bearer_auth(&s.api_key)
        .header("Host", "evil.test/x?y=<script>")
        .json(&json!({}))
        .send()
        .await?;
    if res.status().is_success() {
        let body: Value = res.json().await?;
        let c = s.claims(&str_at(&body, &["participantToken", "token"])?)?;
        assert_eq!(c.events_url, format!("ws://{}/v1/stage/events", s.running.http_addr));
    } else {
        assert!(res.status().is_client_error());
    }
    // A self-signed-style join that the store never minted shows up once it joins.
    let t = s.token(&stage, json!({"userId": "joiner"})).await?;
    let mut claims = s.claims(&str_at(&t, &["token"])?)?;
    claims.jti = "outsider".to_owned();
    s.running.state.auth.participant_joined(&claims);
    let list = s.v1(Method::GET, &format!("/v1/stages/{stage}/participants"), None).await?.ok()?;
    assert!(list["participants"].as_array().into_iter().flatten().any(|p| p["participantId"] == "outsider"));
    assert!(s.v1(Method::GET, "/v1/stages", None).await?.status.is_success());
    s.stop()
}

