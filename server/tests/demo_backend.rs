//! The demo backend (`/api`) as an anonymous client and a host meet it:
//! a kicked host loses host powers, creating groups has its own lower
//! per-IP limit, idle groups are cleaned up with their stage, channel and
//! room, and `/api/list` pages. Against a real server on port 0.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use stagecast_protocol::token::Capability;

mod common;
use common::{Server, EVENTS_PATH};

/// An anonymous `/api` call (no API key), with an optional participant token.
async fn demo(s: &Server, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Result<(u16, Value)> {
    let mut req = s.http.request(method, format!("{}{path}", s.base));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    Ok((status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? }))
}

/// A group made through `/api/create`: its ids and the host's stage token.
struct Group {
    id: String,
    stage: String,
    channel: String,
    room: String,
    host_token: String,
    host_participant: String,
}

async fn create_group(s: &Server, host: &str) -> Result<Group> {
    let body = json!({"userId": host, "attributes": {"username": host, "avatarUrl": ""}});
    let (status, created) = demo(s, Method::POST, "/api/create", None, Some(body)).await?;
    ensure!(status == 200, "create: {status} {created}");
    let text = |path: &[&str]| -> Result<String> {
        let mut v = &created;
        for p in path {
            v = &v[*p];
        }
        v.as_str().map(str::to_owned).ok_or_else(|| anyhow!("no {path:?} in {created}"))
    };
    Ok(Group {
        id: text(&["groupId"])?,
        stage: text(&["stage", "id"])?,
        channel: text(&["channel", "id"])?,
        room: text(&["chat", "id"])?,
        host_token: text(&["stage", "token"])?,
        host_participant: text(&["stage", "participantId"])?,
    })
}

async fn join_group(s: &Server, group: &str, user: &str) -> Result<(String, String)> {
    let body = json!({"groupId": group, "userId": user, "attributes": {"username": user, "avatarUrl": ""}});
    let (status, joined) = demo(s, Method::POST, "/api/join", None, Some(body)).await?;
    ensure!(status == 200, "join: {status} {joined}");
    let token = joined["stage"]["token"].as_str().context("token")?.to_owned();
    let participant = joined["stage"]["participantId"].as_str().context("participantId")?.to_owned();
    Ok((token, participant))
}

fn group_ids(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|i| i["groupId"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn a_kicked_host_loses_host_powers() -> Result<()> {
    let s = Server::start("kicked-host").await?;
    let group = create_group(&s, "host").await?;
    let (guest_token, guest) = join_group(&s, &group.id, "guest").await?;

    // The operator removes the host through the control plane.
    let kick = format!("/v1/stages/{}/participants/{}/disconnect", group.stage, group.host_participant);
    let (status, body) = s.api(Method::POST, &kick, Some(json!({"reason": "abuse"}))).await?;
    ensure!(status == 204, "DisconnectParticipant: {status} {body}");

    // The same token no longer removes guests nor ends the stage.
    let remove = json!({"groupId": group.id, "userId": "host", "participantId": guest});
    let (status, body) = demo(&s, Method::POST, "/api/disconnect", Some(&group.host_token), Some(remove)).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("PARTICIPANT_DISCONNECTED")), "{body}");
    let end = json!({"groupId": group.id});
    let (status, body) = demo(&s, Method::DELETE, "/api/delete", Some(&group.host_token), Some(end)).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("PARTICIPANT_DISCONNECTED")), "{body}");

    // Nothing happened: the guest is still in, the group still listed.
    assert!(s.running.state.auth.authorize(&guest_token, Capability::Join).is_ok());
    let (_, list) = demo(&s, Method::POST, "/api/list", None, None).await?;
    assert_eq!(group_ids(&list), vec![group.id.clone()]);
    let (status, _) = s.api(Method::GET, &format!("/v1/stages/{}", group.stage), None).await?;
    assert_eq!(status, 200);
    s.stop()
}

#[tokio::test]
async fn the_host_key_rejoins_as_host_and_nothing_else_does() -> Result<()> {
    let s = Server::start("host-key").await?;
    let body = json!({"userId": "host", "attributes": {"username": "Alice", "avatarUrl": ""}});
    let (status, created) = demo(&s, Method::POST, "/api/create", None, Some(body)).await?;
    ensure!(status == 200, "create: {status} {created}");
    let group = created["groupId"].as_str().context("groupId")?.to_owned();
    let key = created["hostKey"].as_str().context("the host gets a hostKey")?.to_owned();
    let (guest_token, guest) = join_group(&s, &group, "guest").await?;

    // A guest's join carries no host key, channel or stream key.
    let plain = json!({"groupId": group, "userId": "guest2", "attributes": {"username": "Bob"}});
    let (_, joined) = demo(&s, Method::POST, "/api/join", None, Some(plain)).await?;
    assert!(joined.get("hostKey").is_none() && joined["channel"].is_null(), "{joined}");
    // A wrong key, or the host's user id, does not make a host.
    let forged = json!({"groupId": group, "userId": "host", "attributes": {"username": "Alice"}, "hostKey": "0".repeat(32)});
    let (status, body) = demo(&s, Method::POST, "/api/join", None, Some(forged)).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("NOT_HOST")), "{body}");
    let same_user = json!({"groupId": group, "userId": "host", "attributes": {"username": "Alice"}});
    let (_, joined) = demo(&s, Method::POST, "/api/join", None, Some(same_user)).await?;
    assert!(joined["channel"].is_null(), "a user id is no proof of being the host: {joined}");
    let (status, body) =
        demo(&s, Method::POST, "/api/disconnect", joined["stage"]["token"].as_str(), Some(json!({"groupId": group, "userId": "host", "participantId": guest}))).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("NOT_HOST")), "{body}");

    // The key (a reload, another tab) joins as the host: stream key, moderator chat, host powers.
    let again = json!({"groupId": group, "userId": "host", "attributes": {"username": "Alice"}, "hostKey": key});
    let (status, host) = demo(&s, Method::POST, "/api/join", None, Some(again)).await?;
    ensure!(status == 200, "host rejoin: {status} {host}");
    assert_eq!(host["channel"]["streamKey"], created["channel"]["streamKey"], "{host}");
    assert_eq!(host["hostKey"].as_str(), Some(key.as_str()));
    let host_token = host["stage"]["token"].as_str().context("token")?;
    let claims = s.running.state.auth.authorize(host_token, Capability::Join).map_err(|e| anyhow!("{e:?}"))?;
    assert_eq!(claims.attributes.get("isHost").map(String::as_str), Some("true"));
    let remove = json!({"groupId": group, "userId": "host", "participantId": guest});
    let (status, body) = demo(&s, Method::POST, "/api/disconnect", Some(host_token), Some(remove)).await?;
    assert_eq!(status, 200, "the rejoined host removes a guest: {body}");
    assert!(s.running.state.auth.authorize(&guest_token, Capability::Join).is_err());
    // The removal sticks: the same user does not walk back in through the invite.
    let back = json!({"groupId": group, "userId": "guest", "attributes": {"username": "guest"}});
    let (status, body) = demo(&s, Method::POST, "/api/join", None, Some(back)).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("REMOVED")), "{body}");
    join_group(&s, &group, "someone-else").await?;

    // Removed by the operator, the host's key stops working.
    let original = created["stage"]["participantId"].as_str().context("participantId")?;
    let stage = created["stage"]["id"].as_str().context("stage id")?;
    let kick = format!("/v1/stages/{stage}/participants/{original}/disconnect");
    let (status, body) = s.api(Method::POST, &kick, Some(json!({"reason": "abuse"}))).await?;
    ensure!(status == 204, "DisconnectParticipant: {status} {body}");
    let after = json!({"groupId": group, "userId": "host", "attributes": {"username": "Alice"}, "hostKey": key});
    let (status, body) = demo(&s, Method::POST, "/api/join", None, Some(after)).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("PARTICIPANT_DISCONNECTED")), "{body}");
    s.stop()
}

#[tokio::test]
async fn creating_groups_has_its_own_lower_limit() -> Result<()> {
    let s = Server::start_with("create-limit", |c| {
        c.demo_rate_per_minute = 1000;
        c.demo_create_per_minute = 2;
    })
    .await?;
    let first = create_group(&s, "a").await?;
    create_group(&s, "b").await?;
    let body = json!({"userId": "c", "attributes": {"username": "c"}});
    let (status, refused) = demo(&s, Method::POST, "/api/create", None, Some(body)).await?;
    assert_eq!((status, refused["code"].as_str()), (429, Some("THROTTLED")), "{refused}");
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("at most 2")), "{refused}");
    // Nothing was made for the refused call, and the other calls still work.
    let (_, list) = demo(&s, Method::POST, "/api/list", None, None).await?;
    assert_eq!(group_ids(&list).len(), 2);
    let stages = s.ok(Method::GET, "/v1/stages", None).await?;
    assert_eq!(stages["stages"].as_array().map(Vec::len), Some(2));
    join_group(&s, &first.id, "guest").await?;
    s.stop()
}

/// Polls `/api/list` until `done` holds for the listed group ids.
async fn wait_for_list(s: &Server, within: Duration, done: impl Fn(&[String]) -> bool) -> Result<Vec<String>> {
    let deadline = Instant::now() + within;
    loop {
        let (_, list) = demo(s, Method::POST, "/api/list", None, None).await?;
        let ids = group_ids(&list);
        if done(&ids) {
            return Ok(ids);
        }
        ensure!(Instant::now() < deadline, "the list did not change as expected within {within:?}: {ids:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn idle_groups_are_deleted_with_their_stage_channel_and_room() -> Result<()> {
    let s = Server::start_with("idle", |c| c.demo_idle_secs = 2).await?;
    let idle = create_group(&s, "idle-host").await?;
    let busy = create_group(&s, "busy-host").await?;
    let (guest_token, _) = join_group(&s, &busy.id, "guest").await?;
    let guest_socket = s.ws_connect(EVENTS_PATH, &guest_token).await?;

    let started = Instant::now();
    let ids = wait_for_list(&s, Duration::from_secs(15), |ids| !ids.contains(&idle.id)).await?;
    assert!(started.elapsed() >= Duration::from_secs(1), "deleted before it was idle for long");
    assert_eq!(ids, vec![busy.id.clone()], "the group with someone on stage stays");
    // Gone with everything it had.
    for path in [
        format!("/v1/stages/{}", idle.stage),
        format!("/v1/channels/{}", idle.channel),
        format!("/v1/rooms/{}", idle.room),
    ] {
        let (status, body) = s.api(Method::GET, &path, None).await?;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let late = json!({"groupId": idle.id, "userId": "late"});
    let (status, body) = demo(&s, Method::POST, "/api/join", None, Some(late)).await?;
    assert_eq!((status, body["code"].as_str()), (404, Some("GROUP_NOT_FOUND")));

    // Still there well past the idle time while the guest is connected...
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, list) = demo(&s, Method::POST, "/api/list", None, None).await?;
    assert_eq!(group_ids(&list), vec![busy.id.clone()]);
    assert!(s.running.state.auth.authorize(&busy.host_token, Capability::Join).is_ok());
    // ...and cleaned up once the stage has been empty for the idle time.
    drop(guest_socket);
    wait_for_list(&s, Duration::from_secs(60), |ids| ids.is_empty()).await?;
    let (status, _) = s.api(Method::GET, &format!("/v1/channels/{}", busy.channel), None).await?;
    assert_eq!(status, 404);
    s.stop()
}

/// `/api/list` with a query string, following `Next-Token` headers.
async fn list_pages(s: &Server, max_results: u32) -> Result<Vec<Vec<String>>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{}/api/list?maxResults={max_results}", s.base);
        if let Some(t) = &token {
            url.push_str(&format!("&nextToken={t}"));
        }
        let res = s.http.get(url).send().await?;
        ensure!(res.status() == 200, "list: {}", res.status());
        token = res.headers().get("next-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
        pages.push(group_ids(&res.json().await?));
        if token.is_none() {
            return Ok(pages);
        }
        ensure!(pages.len() < 20, "no end to the pages");
    }
}

#[tokio::test]
async fn the_demo_list_pages_newest_first() -> Result<()> {
    let s = Server::start("demo-list-pages").await?;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(create_group(&s, &format!("host-{i}")).await?.id);
    }
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();

    // Without parameters: the same plain array as before, everything fits.
    let (status, all) = demo(&s, Method::POST, "/api/list", None, None).await?;
    assert_eq!(status, 200);
    assert_eq!(group_ids(&all), newest_first);

    let pages = list_pages(&s, 2).await?;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
    assert_eq!(pages.concat(), newest_first);

    // A group deleted between pages shifts nothing: no repeats, nothing skipped.
    let res = s.http.post(format!("{}/api/list", s.base)).json(&json!({"maxResults": 2})).send().await?;
    let token = res.headers().get("next-token").and_then(|v| v.to_str().ok()).context("next token")?.to_owned();
    let first: Vec<String> = group_ids(&res.json().await?);
    assert_eq!(first, newest_first[..2]);
    let gone = create_group(&s, "extra").await?;
    let end = json!({"groupId": gone.id});
    let (status, _) = demo(&s, Method::DELETE, "/api/delete", Some(&gone.host_token), Some(end)).await?;
    assert_eq!(status, 200);
    let body = json!({"maxResults": 10, "nextToken": token});
    let res = s.http.post(format!("{}/api/list", s.base)).json(&body).send().await?;
    assert!(res.headers().get("next-token").is_none(), "the last page has no next token");
    assert_eq!(group_ids(&res.json().await?), newest_first[2..]);

    // One group by id, for pages that know theirs.
    let (_, one) = demo(&s, Method::POST, "/api/list", None, Some(json!({"groupId": made[0]}))).await?;
    assert_eq!(group_ids(&one), vec![made[0].clone()]);
    let (_, none) = demo(&s, Method::GET, "/api/list?groupId=nope", None, None).await?;
    assert_eq!(none, json!([]));

    // Bad paging input is a 400 that says what is allowed.
    for (query, code) in [
        ("maxResults=0", "INVALID_MAX_RESULTS"),
        ("maxResults=101", "INVALID_MAX_RESULTS"),
        ("maxResults=lots", "INVALID_FIELD"),
        ("nextToken=garbage", "INVALID_NEXT_TOKEN"),
        ("max_results=5", "UNKNOWN_FIELD"),
    ] {
        let (status, body) = demo(&s, Method::GET, &format!("/api/list?{query}"), None, None).await?;
        assert_eq!((status, body["code"].as_str()), (400, Some(code)), "{query}: {body}");
    }
    // A token of another list is refused too.
    let stages = s.ok(Method::GET, "/v1/stages?maxResults=1", None).await?;
    let stage_token = stages["nextToken"].as_str().context("stages nextToken")?;
    let (status, body) = demo(&s, Method::GET, &format!("/api/list?nextToken={stage_token}"), None, None).await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_NEXT_TOKEN")));
    s.stop()
}
