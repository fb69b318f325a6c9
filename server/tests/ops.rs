//! The operator's view: `/healthz`, `/metrics` (behind the API key, numbers
//! that move with participants, chat and HLS) and signed webhooks delivered
//! to a real HTTP receiver on loopback, with retries, without ever holding
//! up the event plane.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use str0m::Rtc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

mod common;
use common::channel::{go_live, Broadcaster, ChannelApi};
use common::chat::{recv_live, say};
use common::events::EventClient;
use common::process::Process;
use common::whip::{pump_until, sendonly, UdpPeer, PUBLISH_PATH};
use common::{Server, EVENTS_PATH};

const SECRET: &str = "whsec_test_secret";

/// `/metrics` with `key` (or none): status and body.
async fn scrape(server: &Server, key: Option<&str>) -> Result<(u16, String)> {
    let mut req = server.http.get(format!("{}/metrics", server.base));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    if status == 200 {
        let kind = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        ensure!(kind.starts_with("text/plain; version=0.0.4"), "Prometheus text format, got {kind}");
    }
    Ok((status, res.text().await?))
}

/// The samples of a scrape by `name{labels}`, checking every sample's
/// family was declared with `# TYPE` before it.
fn samples(text: &str) -> Result<HashMap<String, f64>> {
    let mut typed = Vec::new();
    let mut out = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap_or_default().to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').context("a sample is `name value`")?;
        let name = key.split('{').next().unwrap_or_default();
        ensure!(typed.iter().any(|t| t == name), "{name} has no # TYPE line");
        out.insert(key.to_owned(), value.parse().with_context(|| format!("value of {line}"))?);
    }
    Ok(out)
}

async fn metric(server: &Server, key: &str) -> Result<f64> {
    let (status, text) = scrape(server, Some(&server.api_key)).await?;
    ensure!(status == 200, "/metrics: {status} {text}");
    samples(&text)?.get(key).copied().with_context(|| format!("no {key} in\n{text}"))
}

/// Polls until metric `key` satisfies `pred` (counters are read from other tasks).
async fn metric_until(server: &Server, key: &str, pred: impl Fn(f64) -> bool) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(server, key).await?;
        if pred(value) {
            return Ok(value);
        }
        ensure!(Instant::now() < deadline, "{key} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok_while_the_store_works() -> Result<()> {
    let server = Server::start("ops-healthz").await?;
    let res = server.http.get(format!("{}/healthz", server.base)).send().await?;
    ensure!(res.status() == 200, "{}", res.status());
    let body: Value = res.json().await?;
    ensure!(body == json!({"status": "ok"}), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_503_while_the_store_fails_and_ok_again_after() -> Result<()> {
    let server = Server::start("ops-healthz-broken").await?;
    // What an operator's mistake or a bad migration does to the real
    // database: the table the health probe reads is gone (for a while).
    let db = server.dir.join("stagecast.db");
    let rename = move |from: &'static str, to: &'static str| {
        let db = db.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let conn = rusqlite::Connection::open(&db)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.execute_batch(&format!("ALTER TABLE {from} RENAME TO {to};"))?;
            Ok(())
        })
    };
    rename("stages", "stages_away").await??;
    let res = server.http.get(format!("{}/healthz", server.base)).timeout(Duration::from_secs(15)).send().await?;
    ensure!(res.status() == 503, "a failing store must make /healthz 503, got {}", res.status());
    let body: Value = res.json().await?;
    ensure!(body["status"] == "unavailable", "{body}");
    ensure!(body["reason"].as_str().is_some_and(|r| r.contains("store")), "the reason names the store: {body}");
    rename("stages_away", "stages").await??;
    let res = server.http.get(format!("{}/healthz", server.base)).send().await?;
    ensure!(res.status() == 200, "healthy again once the table is back, got {}", res.status());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_api_key_and_move_with_participants_chat_and_hls() -> Result<()> {
    let server = Server::start("ops-metrics").await?;
    let (status, _) = scrape(&server, None).await?;
    ensure!(status == 401, "no key: {status}");
    let (status, _) = scrape(&server, Some("sck_wrong")).await?;
    ensure!(status == 401, "wrong key: {status}");
    ensure!(metric(&server, "stagecast_stages").await? == 0.0);
    ensure!(metric(&server, "stagecast_participants{state=\"subscribe_only\"}").await? == 0.0);

    // A participant joins, then a second one; one leaves.
    let (_stage, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"]), ("bob", &["SUBSCRIBE"])]).await?;
    let mut alice = server.join(&tokens[0]).await?;
    ensure!(metric(&server, "stagecast_stages").await? == 1.0);
    ensure!(metric(&server, "stagecast_participants{state=\"subscribe_only\"}").await? == 1.0);
    let bob = server.join(&tokens[1]).await?;
    ensure!(metric(&server, "stagecast_participants{state=\"subscribe_only\"}").await? == 2.0);
    bob.leave().await?;
    alice.state_where(|v| v.members.len() == 1).await?;
    metric_until(&server, "stagecast_participants{state=\"subscribe_only\"}", |v| v == 1.0).await?;
    ensure!(metric(&server, "stagecast_participants{state=\"publishing\"}").await? == 0.0);
    ensure!(metric(&server, "stagecast_sfu_sessions{role=\"publish\"}").await? == 0.0);
    ensure!(metric(&server, "stagecast_sfu_forwarded_bytes_total").await? == 0.0);

    // Chat: a connection, two messages.
    ensure!(metric(&server, "stagecast_chat_messages_sent_total").await? == 0.0);
    let room = server.create_room(json!({"name": "lobby"})).await?;
    let token = server.chat_token(&room, "carol", &["SEND_MESSAGE"]).await?;
    let mut ws = server.chat_connect(&token).await?;
    ensure!(metric(&server, "stagecast_chat_connections").await? == 1.0);
    for (i, text) in ["hello", "again"].iter().enumerate() {
        say(&mut ws, &format!("r{i}"), text).await?;
        let ack = recv_live(&mut ws).await?;
        ensure!(ack["Type"] == "MESSAGE", "{ack}");
    }
    ensure!(metric(&server, "stagecast_chat_messages_sent_total").await? == 2.0, "one per message, not per recipient");

    // HLS: a live channel, a playlist request.
    ensure!(metric(&server, "stagecast_channels_live").await? == 0.0);
    let ch = server.create_channel().await?;
    let (_host, _location) = go_live(&server, &ch).await?;
    ensure!(metric(&server, "stagecast_channels_live").await? == 1.0);
    let before = metric(&server, "stagecast_hls_requests_total{kind=\"playlist\"}").await?;
    let _ = server.get(&format!("/hls/{}/media.m3u8", ch.id)).await?.bytes().await?;
    ensure!(metric(&server, "stagecast_hls_requests_total{kind=\"playlist\"}").await? == before + 1.0);
    ensure!(metric(&server, "stagecast_hls_viewers").await? == 0.0, "no playlist request open now");
    ensure!(metric(&server, "process_resident_memory_bytes").await? > 1_000_000.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_metrics_need_no_key() -> Result<()> {
    let server = Server::start_with("ops-public", |c| c.public_metrics = true).await?;
    let (status, text) = scrape(&server, None).await?;
    ensure!(status == 200, "{status}");
    ensure!(samples(&text)?.contains_key("stagecast_stages"), "{text}");
    Ok(())
}

/// One request as the receiver saw it.
struct Delivery {
    signature: String,
    body: String,
}

/// How the receiver answers its n-th request (from 0); `None`: never.
type Answer = fn(usize) -> Option<u16>;

/// An HTTP receiver on loopback: every request it reads goes to the channel.
async fn receiver(answer: Answer) -> Result<(String, mpsc::UnboundedReceiver<Delivery>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(serve_connection(stream, tx, answer, n));
            n += 1;
        }
    });
    Ok((url, rx))
}

async fn serve_connection(mut stream: TcpStream, tx: mpsc::UnboundedSender<Delivery>, answer: Answer, n: usize) {
    let Ok(Some(delivery)) = read_request(&mut stream).await else { return };
    let _ = tx.send(delivery);
    match answer(n) {
        Some(status) => {
            let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
        }
        None => tokio::time::sleep(Duration::from_secs(600)).await,
    }
}

async fn read_request(stream: &mut TcpStream) -> Result<Option<Delivery>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        data.extend_from_slice(buf.get(..n).unwrap_or_default());
    };
    let head = String::from_utf8_lossy(data.get(..head_end).unwrap_or_default()).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned()))
    };
    let length: usize = header("content-length").context("content-length")?.parse()?;
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("body cut short");
        }
        data.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    ensure!(head.starts_with("POST /hook "), "{head}");
    ensure!(header("content-type").as_deref() == Some("application/json"), "{head}");
    let body = String::from_utf8(data.get(head_end..head_end + length).unwrap_or_default().to_vec())?;
    Ok(Some(Delivery { signature: header("stagecast-signature").unwrap_or_default(), body }))
}

/// Verifies the signature as a receiver would (README): recompute
/// HMAC-SHA256 over "<t>.<body>" and compare; the timestamp must be recent.
fn verify(delivery: &Delivery) -> Result<Value> {
    let mut t = None;
    let mut v1 = None;
    for part in delivery.signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (t, v1) = (t.context("t=")?, v1.context("v1=")?);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    ensure!((now - t.parse::<i64>()?).abs() < 300, "stale timestamp {t}");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(format!("{t}.{}", delivery.body).as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    ensure!(expected == v1, "signature mismatch: {}", delivery.signature);
    Ok(serde_json::from_str(&delivery.body)?)
}

/// The next delivery's verified event.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Result<(Value, Delivery)> {
    let delivery = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.context("no webhook in time")?.context("receiver gone")?;
    Ok((verify(&delivery)?, delivery))
}

async fn webhook_server(name: &str, url: String) -> Result<Server> {
    Server::start_with(name, |c| {
        c.webhook_urls = vec![url];
        c.webhook_secret = Some(stagecast_server::config::Secret(SECRET.to_owned()));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_tell_participant_joined_left_and_stream_start_end_signed() -> Result<()> {
    let (url, mut rx) = receiver(|_| Some(200)).await?;
    let server = webhook_server("ops-hooks", url).await?;

    let (stage, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"])]).await?;
    let alice = server.join(&tokens[0]).await?;
    let (joined, _) = next_event(&mut rx).await?;
    ensure!(joined["detail-type"] == "IVS Stage Update", "{joined}");
    ensure!(joined["version"] == "0" && joined["id"].is_string() && joined["time"].is_string(), "{joined}");
    let detail = &joined["detail"];
    ensure!(detail["event_name"] == "Participant Joined", "{joined}");
    ensure!(detail["session_id"] == stage.as_str(), "{joined}");
    ensure!(detail["participant_id"] == tokens[0].participant_id.as_str() && detail["user_id"] == "alice", "{joined}");

    alice.leave().await?;
    let (left, _) = next_event(&mut rx).await?;
    ensure!(left["detail"]["event_name"] == "Participant Left", "{left}");
    ensure!(left["detail"]["participant_id"] == tokens[0].participant_id.as_str(), "{left}");

    let ch = server.create_channel().await?;
    let (_host, _) = go_live(&server, &ch).await?;
    let (start, _) = next_event(&mut rx).await?;
    ensure!(start["detail-type"] == "IVS Stream State Change" && start["detail"]["event_name"] == "Stream Start", "{start}");
    ensure!(start["detail"]["channel_name"] == ch.id.as_str(), "{start}");
    ensure!(start["resources"][0].as_str().is_some_and(|r| r.ends_with(&ch.id)), "{start}");
    let (status, body) = server.api(Method::POST, &format!("/v1/channels/{}/stop", ch.id), None).await?;
    ensure!(status == 204, "stop: {status} {body}");
    let (end, _) = next_event(&mut rx).await?;
    ensure!(end["detail"]["event_name"] == "Stream End", "{end}");
    ensure!(end["detail"]["stream_id"] == start["detail"]["stream_id"], "one stream id from start to end: {end}");

    // A forged signature does not verify.
    let forged = Delivery { signature: format!("t={},v1=00", chrono_now()), body: "{}".to_owned() };
    ensure!(verify(&forged).is_err(), "a wrong signature is refused");
    metric_until(&server, "stagecast_webhook_delivered_total", |v| v == 4.0).await?;
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_refused_twice_arrives_on_the_third_try() -> Result<()> {
    let (url, mut rx) = receiver(|n| Some(if n < 2 { 500 } else { 200 })).await?;
    let server = webhook_server("ops-retry", url).await?;
    let (_stage, tokens) = server.stage_and_tokens(&[("alice", &["SUBSCRIBE"])]).await?;
    let started = Instant::now();
    let _alice = server.join(&tokens[0]).await?;
    let (first, _) = next_event(&mut rx).await?;
    let (second, _) = next_event(&mut rx).await?;
    let (third, _) = next_event(&mut rx).await?;
    ensure!(first["id"] == second["id"] && second["id"] == third["id"], "the same event each time");
    ensure!(third["detail"]["event_name"] == "Participant Joined", "{third}");
    // Backoff: 1 s, then 2 s.
    let took = started.elapsed();
    ensure!(took >= Duration::from_millis(2900), "retried after backing off, took {took:?}");
    metric_until(&server, "stagecast_webhook_delivered_total", |v| v == 1.0).await?;
    ensure!(metric(&server, "stagecast_webhook_failed_tries_total").await? == 2.0);
    ensure!(metric(&server, "stagecast_webhook_failed_total").await? == 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_that_never_answers_does_not_hold_up_joins() -> Result<()> {
    let (url, mut rx) = receiver(|_| None).await?;
    let server = Server::start_with("ops-silent", |c| {
        c.webhook_urls = vec![url];
        c.webhook_secret = Some(stagecast_server::config::Secret(SECRET.to_owned()));
        c.webhook_timeout = Duration::from_secs(60);
    })
    .await?;
    let users: Vec<(String, &[&str])> = (0..10).map(|i| (format!("u{i}"), &["SUBSCRIBE"][..])).collect();
    let users: Vec<(&str, &[&str])> = users.iter().map(|(u, c)| (u.as_str(), *c)).collect();
    let (_stage, tokens) = server.stage_and_tokens(&users).await?;
    let mut clients = Vec::new();
    for token in &tokens {
        let started = Instant::now();
        let mut client = server.join(token).await?;
        client.state_where(|v| v.members.iter().any(|m| m.id == token.participant_id)).await?;
        ensure!(started.elapsed() < Duration::from_secs(2), "a join took {:?}", started.elapsed());
        clients.push(client);
    }
    // The first event reached the receiver, which is still sitting on it.
    let (first, _) = next_event(&mut rx).await?;
    ensure!(first["detail"]["event_name"] == "Participant Joined");
    ensure!(metric(&server, "stagecast_webhook_delivered_total").await? == 0.0);
    let (status, body) = server.api(Method::GET, "/v1/stages", None).await?;
    ensure!(status == 200, "the API still answers: {status} {body}");
    Ok(())
}

/// The next verified event, pumping `peer` meanwhile so its session stays alive.
async fn next_event_pumping(rx: &mut mpsc::UnboundedReceiver<Delivery>, peer: &mut UdpPeer) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ensure!(Instant::now() < deadline, "no webhook in time");
        peer.pump()?;
        if let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_millis(5), rx.recv()).await {
            return verify(&delivery);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_shows_in_metrics_and_webhooks() -> Result<()> {
    let (url, mut rx) = receiver(|_| Some(200)).await?;
    let server = webhook_server("ops-publish", url).await?;
    let (_stage, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"])]).await?;
    let _alice = server.join(&tokens[0]).await?;
    let (joined, _) = next_event(&mut rx).await?;
    ensure!(joined["detail"]["event_name"] == "Participant Joined", "{joined}");

    let mut peer = UdpPeer::new(Rtc::builder()).await?;
    let (offer, pending, _) = peer.offer(&sendonly())?;
    let created = server.post_sdp(PUBLISH_PATH, Some(&tokens[0].token), &offer).await?.map_err(|e| anyhow!("publish refused: {e:?}"))?;
    peer.accept(pending, &created.answer)?;
    pump_until(&mut [&mut peer], "publisher connected", |p| p[0].rtc.is_connected()).await?;
    let published = next_event_pumping(&mut rx, &mut peer).await?;
    ensure!(published["detail"]["event_name"] == "Participant Published", "{published}");
    ensure!(published["detail"]["participant_id"] == tokens[0].participant_id.as_str(), "{published}");
    ensure!(metric(&server, "stagecast_participants{state=\"publishing\"}").await? == 1.0);
    ensure!(metric(&server, "stagecast_sfu_sessions{role=\"publish\"}").await? == 1.0);
    ensure!(metric(&server, "stagecast_sfu_sent_packets_total").await? > 0.0, "ICE and DTLS went out");

    ensure!(server.delete(&created.location, &tokens[0].token).await? == 204);
    let unpublished = next_event_pumping(&mut rx, &mut peer).await?;
    ensure!(unpublished["detail"]["event_name"] == "Participant Unpublished", "{unpublished}");
    metric_until(&server, "stagecast_participants{state=\"subscribe_only\"}", |v| v == 1.0).await?;
    Ok(())
}

/// SIGTERM drains: `/healthz` says so, a stage in progress takes a late
/// joiner while a stage with no one on it (and a new broadcast) is refused
/// with 503 SERVER_DRAINING, and the process exits by itself (status 0)
/// once the last member has left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_until_the_last_stage_empties_then_exits() -> Result<()> {
    let mut server = Process::spawn("drain", &[])?;
    let api = server.api.clone();
    let busy = api.create_stage_with(json!({})).await?;
    let idle = api.create_stage_with(json!({})).await?;
    let token = |stage: String, user: &'static str| {
        let api = api.clone();
        async move { api.participant_token(&stage, json!({"userId": user, "capabilities": ["PUBLISH", "SUBSCRIBE"]})).await }
    };
    let (alice, bob, carol) = (token(busy.clone(), "alice").await?, token(busy.clone(), "bob").await?, token(idle, "carol").await?);
    let mut alice = EventClient::connect(&api, &alice).await?;
    alice.state().await?;

    server.terminate()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let res = api.http.get(format!("{}/healthz", api.base)).send().await?;
        if res.status() == 503 {
            break res.json::<Value>().await?;
        }
        ensure!(Instant::now() < deadline, "/healthz never said it drains");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(health["status"] == "draining", "{health}");

    // The stage in progress goes on, a late joiner included.
    let mut bob = EventClient::connect(&api, &bob).await?;
    bob.state().await?;
    // A stage with no one on it here goes elsewhere.
    match api.ws_try_connect(EVENTS_PATH, Some(&carol.token)).await? {
        Ok(_) => bail!("a new stage was joined while draining"),
        Err((status, body)) => ensure!(status == 503 && body["code"] == "SERVER_DRAINING", "{status} {body}"),
    }
    // So does a new broadcast; the control plane still answers.
    let ch = api.create_channel().await?;
    let (_host, offer) = Broadcaster::new().await?;
    let refused = api.whip(&ch.ingest, Some(&ch.key), &offer).await?;
    ensure!(refused.as_ref().err() == Some(&(503, "SERVER_DRAINING".to_owned())), "a new broadcast: {refused:?}");
    ensure!(server.is_running(), "still up while alice and bob are on the stage");
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(server.is_running(), "still up while alice and bob are on the stage");

    alice.leave().await?;
    bob.leave().await?;
    let exited = server.exited_within(Duration::from_secs(15)).await.context("the server exits once the stage is empty")?;
    ensure!(exited.success(), "a drained server exits cleanly: {exited}");
    Ok(())
}
