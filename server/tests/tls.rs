//! HTTPS and WSS on the server itself (`--tls-cert/--tls-key`) with a
//! certificate made by the test, the URLs the server hands out over TLS or
//! behind a trusted proxy, and certificate reloads (SIGHUP and polling).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use stagecast_server::{Config, StartError};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::tls::{self, TestCert};
use common::{temp_dir, Server};

async fn tls_server(name: &str, cert: &TestCert, reload: Duration) -> Result<Server> {
    let dir = temp_dir(name)?;
    let (cert_path, key_path) = cert.write(&dir.join("tls"))?;
    let mut config = Config::for_tests(dir);
    config.tls_cert = Some(cert_path);
    config.tls_key = Some(key_path);
    config.tls_reload_interval = reload;
    Server::start_config(config).await
}

/// Wait until a handshake trusting `cert` presents it.
async fn until_presented(server: &Server, cert: &TestCert, within: Duration) -> Result<()> {
    let config = tls::client_config(&cert.der)?;
    let deadline = Instant::now() + within;
    loop {
        if let Ok(presented) = tls::presented_cert(server.running.http_addr, config.clone()).await {
            if presented == cert.der {
                return Ok(());
            }
        }
        ensure!(Instant::now() < deadline, "the new certificate was not served within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sighup() -> Result<()> {
    let status = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status()?;
    ensure!(status.success(), "kill -HUP failed");
    Ok(())
}

#[tokio::test]
async fn https_and_wss_serve_the_api_and_every_url_handed_out_is_secure() -> Result<()> {
    let cert = TestCert::new()?;
    let server = tls_server("tls-urls", &cert, Duration::from_secs(3600)).await?;
    assert!(server.base.starts_with("https://"));
    let addr = server.running.http_addr;
    let trust = tls::client_config(&cert.der)?;
    let https = |method: &'static str, path: String, body: Option<Value>| {
        let (trust, key) = (trust.clone(), server.api_key.clone());
        async move { tls::json(addr, trust, method, &path, &key, body).await }
    };

    let (status, stage) = https("POST", "/v1/stages".into(), Some(json!({"name": "secure"}))).await?;
    ensure!(status == 200 || status == 201, "{status} {stage}");
    let stage_id = stage["stage"]["id"].as_str().context("stage id")?;
    let (status, body) = https("POST", format!("/v1/stages/{stage_id}/tokens"), Some(json!({"userId": "alice"}))).await?;
    ensure!(status == 200 || status == 201, "{status} {body}");
    let token = body["participantToken"]["token"].as_str().context("token")?;
    let claims = server.running.state.auth.keys.verify(token, chrono::Utc::now().timestamp())?;
    let host = format!("{}:{}", tls::HOST, addr.port());
    assert_eq!(claims.events_url, format!("wss://{host}/v1/stage/events"));
    assert_eq!(claims.whip_url, format!("https://{host}/v1/stage/whip"));

    let (_, channel) = https("POST", "/v1/channels".into(), Some(json!({}))).await?;
    let channel = &channel["channel"];
    assert_eq!(channel["playbackUrl"].as_str().map(|u| u.starts_with(&format!("https://{host}/hls/"))), Some(true), "{channel}");
    assert_eq!(channel["ingestEndpoint"].as_str().map(|u| u.starts_with(&format!("https://{host}/v1/channels/"))), Some(true));
    let (_, room) = https("POST", "/v1/rooms".into(), Some(json!({}))).await?;
    assert_eq!(room["endpoint"].as_str(), Some(format!("wss://{host}/v1/chat").as_str()), "{room}");

    // The event plane over WSS, at the URL the token names.
    let mut ws = tls::wss_connect(&claims.events_url, token, trust.clone()).await?;
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await?.context("socket ended")??;
    ensure!(matches!(first, Message::Text(_)), "expected a text frame, got {first:?}");

    // Plain HTTP is not spoken on the TLS port, and an untrusting client refuses the certificate.
    let plain = server.http.get(format!("http://{addr}/")).send().await;
    assert!(plain.is_err(), "plain HTTP was answered on the TLS port: {plain:?}");
    let stranger = tls::client_config(&TestCert::new()?.der)?;
    assert!(tls::presented_cert(addr, stranger).await.is_err());
    Ok(())
}

#[tokio::test]
async fn sighup_serves_a_renewed_certificate_and_a_broken_one_is_ignored() -> Result<()> {
    let first = TestCert::new()?;
    let server = tls_server("tls-sighup", &first, Duration::from_secs(3600)).await?;
    until_presented(&server, &first, Duration::from_secs(1)).await?;
    let tls_dir = server.dir.join("tls");

    let renewed = TestCert::new()?;
    renewed.write(&tls_dir)?;
    sighup()?;
    until_presented(&server, &renewed, Duration::from_secs(5)).await?;

    // A half-written renewal: the key file is not a key. Logged, old pair kept.
    std::fs::write(tls_dir.join("key.pem"), "-----BEGIN PRIVATE KEY-----\nnot base64\n")?;
    sighup()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let presented = tls::presented_cert(server.running.http_addr, tls::client_config(&renewed.der)?).await?;
    assert_eq!(presented, renewed.der, "a broken pair replaced the working one");
    let (status, _) = tls::json(server.running.http_addr, tls::client_config(&renewed.der)?, "GET", "/v1/stages", &server.api_key, None).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn changed_certificate_files_are_picked_up_without_a_signal() -> Result<()> {
    let first = TestCert::new()?;
    let server = tls_server("tls-poll", &first, Duration::from_millis(200)).await?;
    let renewed = TestCert::new()?;
    renewed.write(&server.dir.join("tls"))?;
    until_presented(&server, &renewed, Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_stops_the_start() -> Result<()> {
    let dir = temp_dir("tls-mismatch")?;
    let (cert, _) = TestCert::new()?.write(&dir.join("a"))?;
    let (_, key) = TestCert::new()?.write(&dir.join("b"))?;
    let mut config = Config::for_tests(dir.clone());
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    let result = stagecast_server::start(config).await;
    std::fs::remove_dir_all(&dir)?;
    ensure!(matches!(result, Err(StartError::Tls(_))), "started with a mismatched pair");
    Ok(())
}

/// `POST path` with extra headers on a plain server; the JSON body.
async fn post_with(server: &Server, path: &str, headers: &[(&str, &str)], body: Value) -> Result<(u16, Value)> {
    let mut req = server.http.post(format!("{}{path}", server.base)).bearer_auth(&server.api_key).json(&body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await?;
    Ok((res.status().as_u16(), res.json().await.unwrap_or(Value::Null)))
}

async fn token_urls(server: &Server, headers: &[(&str, &str)]) -> Result<(String, String)> {
    let stage = server.create_stage_with(json!({})).await?;
    let (status, body) = post_with(server, &format!("/v1/stages/{stage}/tokens"), headers, json!({})).await?;
    ensure!(status == 200 || status == 201, "{status} {body}");
    let token = body["participantToken"]["token"].as_str().context("token")?;
    let claims = server.running.state.auth.keys.verify(token, chrono::Utc::now().timestamp())?;
    Ok((claims.events_url, claims.whip_url))
}

#[tokio::test]
async fn forwarded_headers_count_only_when_trusted() -> Result<()> {
    let proxy = [("x-forwarded-proto", "https"), ("x-forwarded-host", "stage.example.com"), ("x-forwarded-for", "203.0.113.1")];
    let trusting = Server::start_with("fwd-trust", |c| {
        c.trust_forwarded_headers = true;
        c.demo_rate_per_minute = 2;
    })
    .await?;
    let (events, whip) = token_urls(&trusting, &proxy).await?;
    assert_eq!(events, "wss://stage.example.com/v1/stage/events");
    assert_eq!(whip, "https://stage.example.com/v1/stage/whip");
    // The demo rate limit counts the client the proxy names, not the proxy.
    let list = |server: &'_ Server, ip: &'static str| {
        let req = server.http.post(format!("{}/api/list", server.base)).header("x-forwarded-for", ip);
        async move { Ok::<_, anyhow::Error>(req.send().await?.status().as_u16()) }
    };
    assert_eq!(list(&trusting, "203.0.113.1").await?, 200);
    assert_eq!(list(&trusting, "203.0.113.1").await?, 200);
    assert_eq!(list(&trusting, "203.0.113.1").await?, 429);
    assert_eq!(list(&trusting, "198.51.100.7, 203.0.113.2").await?, 200, "another client behind the proxy");

    let direct = Server::start_with("fwd-ignore", |c| c.demo_rate_per_minute = 2).await?;
    let (events, whip) = token_urls(&direct, &proxy).await?;
    let host = direct.running.http_addr;
    assert_eq!(events, format!("ws://{host}/v1/stage/events"), "a client forged the URLs");
    assert_eq!(whip, format!("http://{host}/v1/stage/whip"));
    assert_eq!(list(&direct, "203.0.113.1").await?, 200);
    assert_eq!(list(&direct, "203.0.113.2").await?, 200);
    assert_eq!(list(&direct, "203.0.113.3").await?, 429, "a forged X-Forwarded-For dodged the rate limit");
    Ok(())
}
