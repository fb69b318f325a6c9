//! The HTTP listener cannot be held: raw TCP clients that idle, send a
//! request head a byte at a time (slowloris), stall a request body (408) or open
//! too many connections are cut within the configured limits, while a
//! normal client keeps getting answers and an upgraded WebSocket lives on.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use stagecast_protocol::events::{ClientMessage, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{closed_at, Server};

const HEADER: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(2);
const BODY: Duration = Duration::from_secs(1);
/// Scheduling slack on a shared machine.
const SLACK: Duration = Duration::from_millis(1500);

async fn short_limits(name: &str, max_connections: usize, idle: Duration) -> Result<Server> {
    Server::start_with(name, |c| {
        c.http.header_timeout = HEADER;
        c.http.idle_timeout = idle;
        c.http.body_timeout = BODY;
        c.http.max_connections = max_connections;
    })
    .await
}

/// `closed_at - since`, which must lie within `[expected - 200 ms, expected + SLACK]`.
fn assert_closed_after(what: &str, closed: Option<Instant>, since: Instant, expected: Duration) -> Result<()> {
    let after = closed.with_context(|| format!("{what}: never closed"))?.duration_since(since);
    ensure!(
        after + Duration::from_millis(200) >= expected && after <= expected + SLACK,
        "{what}: closed after {after:?}, expected about {expected:?}"
    );
    Ok(())
}

fn list_request(server: &Server) -> String {
    format!("GET /v1/stages HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n", server.api_key)
}

#[tokio::test]
async fn idle_slow_and_kept_alive_connections_are_closed_while_others_are_served() -> Result<()> {
    let server = short_limits("slowloris", 100, IDLE).await?;
    let addr = server.running.http_addr;

    // A normal client, asking every 100 ms throughout.
    let normal = {
        let (http, url, key) = (server.http.clone(), format!("{}/v1/stages", server.base), server.api_key.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let stop = Instant::now() + IDLE + SLACK + Duration::from_secs(1);
            while Instant::now() < stop {
                let t = Instant::now();
                let status = http.get(&url).bearer_auth(&key).send().await.map(|r| r.status().as_u16());
                if status.as_ref().ok() != Some(&200) {
                    return Err(anyhow::anyhow!("the normal client got {status:?}"));
                }
                slowest = slowest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(slowest)
        })
    };

    let start = Instant::now();
    let mut idle = TcpStream::connect(addr).await?;
    let mut kept_alive = TcpStream::connect(addr).await?;
    kept_alive.write_all(list_request(&server).as_bytes()).await?;
    // One header byte every 200 ms: it never stops sending, and never finishes.
    let slowloris = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await?;
        let first_byte = Instant::now();
        let head = b"GET /v1/stages HTTP/1.1\r\nHost: test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in head {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut probe = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await {
                return Ok::<_, anyhow::Error>((first_byte, Some(Instant::now())));
            }
        }
        Ok((first_byte, closed_at(&mut stream, SLACK).await))
    });

    // The kept-alive connection gets its answer, then idles out.
    let mut response = vec![0u8; 64 * 1024];
    let n = kept_alive.read(&mut response).await?;
    let answered = Instant::now();
    ensure!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(response.get(..n).unwrap_or_default()));
    let (first_byte, slow_closed) = slowloris.await??;
    assert_closed_after("slowloris", slow_closed, first_byte, HEADER)?;
    assert_closed_after("idle connection", closed_at(&mut idle, IDLE + SLACK * 2).await, start, IDLE)?;
    assert_closed_after("kept-alive connection", closed_at(&mut kept_alive, IDLE + SLACK * 2).await, answered, IDLE)?;

    let slowest = normal.await??;
    ensure!(slowest < Duration::from_millis(500), "the normal client waited {slowest:?}");
    Ok(())
}

#[tokio::test]
async fn a_request_body_that_stalls_is_refused_after_the_body_timeout() -> Result<()> {
    let server = short_limits("slow-body", 100, Duration::from_secs(30)).await?;
    let mut stream = TcpStream::connect(server.running.http_addr).await?;
    let head = format!(
        "POST /v1/stages HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        server.api_key
    );
    stream.write_all(head.as_bytes()).await?;
    let sent = Instant::now();
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(BODY + SLACK, stream.read(&mut response)).await.context("no answer after the body timeout")??;
    let elapsed = sent.elapsed();
    let text = String::from_utf8_lossy(response.get(..n).unwrap_or_default()).into_owned();
    ensure!(text.starts_with("HTTP/1.1 408"), "expected 408 Request Timeout, got {text}");
    ensure!(text.contains("BODY_TIMEOUT") && text.contains("did not arrive within"), "the error should say why: {text}");
    ensure!(elapsed + Duration::from_millis(200) >= BODY, "refused after {elapsed:?}, before the body timeout");
    // Nothing was created from half a body.
    let stages = server.ok(reqwest::Method::GET, "/v1/stages", None).await?;
    ensure!(stages["stages"].as_array().is_some_and(|s| s.is_empty()), "{stages}");
    Ok(())
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_and_websockets_keep_their_slot() -> Result<()> {
    const MAX: usize = 4;
    let mut server = short_limits("cap", MAX, IDLE).await?;
    // No pooled keep-alive connections: every slot below is accounted for.
    server.api.http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let addr = server.running.http_addr;
    let (_, tokens) = server.stage_and_tokens(&[("alice", &["SUBSCRIBE"])]).await?;

    // One event-plane WebSocket and three idle sockets fill the cap.
    let mut ws = server.join(&tokens[0]).await?;
    let mut held = Vec::new();
    for _ in 1..MAX {
        held.push(TcpStream::connect(addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = TcpStream::connect(addr).await?;
    let tried = Instant::now();
    let _ = refused.write_all(list_request(&server).as_bytes()).await;
    assert_closed_after("a connection past the cap", closed_at(&mut refused, SLACK).await, tried, Duration::ZERO)?;

    // The idle sockets time out and free their slots; the WebSocket, past
    // the idle timeout, still answers.
    tokio::time::sleep(IDLE + SLACK).await;
    let res = server.http.get(format!("{}/v1/stages", server.base)).bearer_auth(&server.api_key).send().await?;
    ensure!(res.status().as_u16() == 200, "after the idle sockets closed: {}", res.status());
    ws.send_json(serde_json::to_value(&ClientMessage::Ping)?).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        ensure!(Instant::now() < deadline, "no PONG on the upgraded socket");
        if matches!(ws.recv_within(Duration::from_secs(5)).await?, ServerMessage::Pong) {
            break;
        }
    }
    // And it still holds its slot: MAX - 1 more connections fill the cap again.
    let mut again = Vec::new();
    for _ in 1..MAX {
        again.push(TcpStream::connect(addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = TcpStream::connect(addr).await?;
    let tried = Instant::now();
    assert_closed_after("past the cap again", closed_at(&mut refused, SLACK).await, tried, Duration::ZERO)?;
    Ok(())
}
