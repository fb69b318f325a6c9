//! Chat fan-out load generator (`cargo xtask bench` runs it).
//!
//! Creates one room through `/v1`, connects `--clients` WebSocket clients to
//! `/v1/chat`, and has a few of them send `--rate` messages per second in total
//! for `--seconds`. Every message's `Content` carries its send time on this
//! process's monotonic clock, so every client measures delivery latency
//! (receive − send) without any clock agreement with the server. Prints one
//! `BENCH {"chatFanout":{...}}` line (milliseconds), and the server's CPU and
//! RSS over the run when `--server-pid` is given.
//!
//! ```text
//! cargo run -p stagecast-server --example chat_load -- \
//!     --url http://127.0.0.1:8080 --api-key KEY --clients 1000 --rate 100 --seconds 10
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Marks a benchmark message's content: `bench:<seq>:<send time µs, monotonic>:<send time ms, wall clock>`.
const MARKER: &str = "\"Content\":\"bench:";
/// How many tokens are minted / sockets opened at once.
const SETUP_CONCURRENCY: usize = 32;
/// The room's limit is a sliding one-second window; keeping each send this
/// much over a second after the one `rate` sends earlier absorbs most of the
/// jitter between our clock and the server's reads (so few sends are refused
/// with 429), at the price of ~1% of the rate.
const WINDOW_MARGIN: Duration = Duration::from_millis(10);
/// Every this many clients one also splits its latencies at the server's
/// `SendTime` (wall clock, ms): generator → server and server → client.
const SPLIT_EVERY: usize = 10;
/// Read buffer per client socket, bytes.
const READ_BUFFER: usize = 4096;
/// How long to wait after the last send for the last deliveries.
const DRAIN: Duration = Duration::from_secs(5);

struct Args {
    url: String,
    api_key: String,
    clients: usize,
    rate: u32,
    seconds: u32,
    senders: usize,
    server_pid: Option<u32>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        url: String::new(),
        api_key: String::new(),
        clients: 1000,
        rate: 100,
        seconds: 10,
        senders: 4,
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?.trim_end_matches('/').to_owned(),
            "--api-key" => args.api_key = value()?,
            "--clients" => args.clients = value()?.parse().context("--clients")?,
            "--rate" => args.rate = value()?.parse().context("--rate")?,
            "--seconds" => args.seconds = value()?.parse().context("--seconds")?,
            "--senders" => args.senders = value()?.parse().context("--senders")?,
            "--server-pid" => args.server_pid = Some(value()?.parse().context("--server-pid")?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.url.is_empty() || args.api_key.is_empty() {
        bail!("usage: chat_load --url http://HOST:PORT --api-key KEY [--clients N] [--rate MSG_PER_S] [--seconds S] [--senders K] [--server-pid PID]");
    }
    if args.clients == 0 || args.rate == 0 || args.seconds == 0 {
        bail!("--clients, --rate and --seconds must be positive");
    }
    args.senders = args.senders.clamp(1, args.clients);
    Ok(args)
}

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    /// Delivery latency of every benchmark message, µs.
    latencies_us: Vec<u32>,
    /// Send → the server's `SendTime`, ms (wall clock; split clients only).
    ingest_ms: Vec<i64>,
    /// The server's `SendTime` → receive, ms (wall clock; split clients only).
    fanout_ms: Vec<i64>,
    /// The socket ended before the run did (the server cut it, or it failed).
    disconnected: bool,
}

/// Counters shared by every client.
#[derive(Default)]
struct Shared {
    delivered: AtomicU64,
    errors: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let epoch = Instant::now();
    let http = reqwest::Client::new();
    warn_on_fd_limit(args.clients);

    let room: Value = http
        .post(format!("{}/v1/rooms", args.url))
        .bearer_auth(&args.api_key)
        .json(&json!({"name": "chat-fanout-bench", "maximumMessageRatePerSecond": args.rate}))
        .send()
        .await?
        .error_for_status()
        .context("POST /v1/rooms")?
        .json()
        .await?;
    let room_id = room["id"].as_str().context("the room has no id")?.to_owned();
    let endpoint = match room["endpoint"].as_str() {
        Some(e) => e.to_owned(),
        None => format!("{}/v1/chat", args.url.replacen("http", "ws", 1)),
    };

    let setup = Instant::now();
    let tokens = mint_tokens(&http, &args, &room_id).await?;
    eprintln!("chat_load: minted {} tokens in {:.1}s", tokens.len(), setup.elapsed().as_secs_f64());
    let connect_started = Instant::now();
    let sockets = connect_all(&endpoint, tokens).await?;
    eprintln!("chat_load: connected {} clients in {:.1}s", sockets.len(), connect_started.elapsed().as_secs_f64());

    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sinks = Vec::new();
    let mut tasks = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        if i < args.senders {
            let (sink, stream) = ws.split();
            sinks.push(sink);
            tasks.push(tokio::spawn(receive(stream, i % SPLIT_EVERY == 0, epoch, shared.clone(), stop_rx.clone())));
        } else {
            // Receive-only clients are not split: no lock between the halves on every read.
            tasks.push(tokio::spawn(receive(ws, i % SPLIT_EVERY == 0, epoch, shared.clone(), stop_rx.clone())));
        }
    }
    // Let every socket settle before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu_start = args.server_pid.and_then(cpu_ticks);
    let own_cpu_start = cpu_ticks(std::process::id());
    let rss_peak = Arc::new(AtomicU64::new(0));
    let sampler = args.server_pid.map(|pid| {
        let peak = rss_peak.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kb) = rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
    });
    let run_started = Instant::now();
    let sent = send_messages(&mut sinks, &args, epoch).await?;
    let send_took = run_started.elapsed();

    let clients = args.clients as u64;
    let drain_deadline = Instant::now() + DRAIN;
    loop {
        let accepted = sent.saturating_sub(shared.errors.load(Ordering::Relaxed));
        if shared.delivered.load(Ordering::Relaxed) >= accepted * clients || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run_took = run_started.elapsed();
    let cpu_end = args.server_pid.and_then(cpu_ticks);
    let own_cpu_end = cpu_ticks(std::process::id());
    let rss_end = args.server_pid.and_then(rss_kb);
    let _ = stop_tx.send(true);
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }

    let mut latencies = Vec::with_capacity((sent * clients) as usize);
    let mut disconnected = 0u64;
    let (mut ingest, mut fanout) = (Vec::new(), Vec::new());
    for task in tasks {
        let result = task.await.context("a client task panicked")?;
        latencies.extend_from_slice(&result.latencies_us);
        ingest.extend_from_slice(&result.ingest_ms);
        fanout.extend_from_slice(&result.fanout_ms);
        disconnected += u64::from(result.disconnected);
    }
    for mut sink in sinks {
        let _ = sink.close().await;
    }
    latencies.sort_unstable();
    ingest.sort_unstable();
    fanout.sort_unstable();
    let pct_ms = |sorted: &[i64], p: f64| -> Value {
        if sorted.is_empty() {
            return Value::Null;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        json!(sorted[rank.clamp(1, sorted.len()) - 1])
    };
    let rejected = shared.errors.load(Ordering::Relaxed);
    let expected = sent.saturating_sub(rejected) * clients;
    let pct = |p: f64| -> Option<f64> {
        if latencies.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        Some(f64::from(latencies[rank.clamp(1, latencies.len()) - 1]) / 1000.0)
    };
    let ms = |v: Option<f64>| v.map_or(Value::Null, |v| json!((v * 10.0).round() / 10.0));
    let mut out = json!({
        "clients": args.clients,
        "messagesPerSecond": args.rate,
        "senders": args.senders,
        "seconds": args.seconds,
        "sent": sent,
        "rejected": rejected,
        "achievedRate": (sent as f64 / send_took.as_secs_f64() * 10.0).round() / 10.0,
        "delivered": latencies.len(),
        "expected": expected,
        "disconnected": disconnected,
        "p50": ms(pct(50.0)),
        "p99": ms(pct(99.0)),
        "max": ms(latencies.last().map(|v| f64::from(*v) / 1000.0)),
        "ingestP50": pct_ms(&ingest, 50.0),
        "ingestP99": pct_ms(&ingest, 99.0),
        "fanoutP50": pct_ms(&fanout, 50.0),
        "fanoutP99": pct_ms(&fanout, 99.0),
    });
    let cpu_percent = |start: u64, end: u64| {
        let seconds = end.saturating_sub(start) as f64 / clock_ticks_per_second();
        json!((seconds / run_took.as_secs_f64() * 1000.0).round() / 10.0)
    };
    if let (Some(start), Some(end), Some(map)) = (own_cpu_start, own_cpu_end, out.as_object_mut()) {
        // The generator shares the cores with the server; its load is part of the picture.
        map.insert("generatorCpuPercent".into(), cpu_percent(start, end));
    }
    if let (Some(start), Some(end), Some(map)) = (cpu_start, cpu_end, out.as_object_mut()) {
        map.insert("serverCpuPercent".into(), cpu_percent(start, end));
        let peak = rss_peak.load(Ordering::Relaxed).max(rss_end.unwrap_or(0));
        map.insert("serverRssPeakMb".into(), json!((peak as f64 / 1024.0 * 10.0).round() / 10.0));
        map.insert("serverRssEndMb".into(), ms(rss_end.map(|kb| kb as f64 / 1024.0)));
    }
    println!("BENCH {}", json!({ "chatFanout": out }));
    Ok(())
}

/// One token per client; the first `senders` may send.
async fn mint_tokens(http: &reqwest::Client, args: &Args, room_id: &str) -> Result<Vec<String>> {
    let url = format!("{}/v1/rooms/{room_id}/tokens", args.url);
    let requests = (0..args.clients).map(|i| {
        let capabilities: Vec<&str> = if i < args.senders { vec!["SEND_MESSAGE"] } else { Vec::new() };
        let body = json!({"userId": format!("bench-{i}"), "capabilities": capabilities});
        let request = http.post(&url).bearer_auth(&args.api_key).json(&body);
        async move {
            let answer: Value = request.send().await?.error_for_status()?.json().await?;
            answer["token"].as_str().map(str::to_owned).context("CreateChatToken answered without a token")
        }
    });
    futures_util::stream::iter(requests).buffered(SETUP_CONCURRENCY).collect::<Vec<_>>().await.into_iter().collect()
}

async fn connect_all(endpoint: &str, tokens: Vec<String>) -> Result<Vec<Ws>> {
    let connects = tokens.into_iter().map(|token| async move {
        let mut request = endpoint.into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&token)?);
        // tungstenite zero-fills its whole read buffer (128 KiB by default) on
        // every read; chat frames are small, and on a shared machine those
        // memsets would come out of the server's CPU.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .context("chat WebSocket connect")?;
        anyhow::Ok(ws)
    });
    futures_util::stream::iter(connects).buffered(SETUP_CONCURRENCY).collect::<Vec<_>>().await.into_iter().collect()
}

/// Sends `rate × seconds` messages, round-robin over the senders, on an
/// absolute schedule (so a late send does not slow the ones after it).
async fn send_messages(sinks: &mut [SplitSink<Ws, Message>], args: &Args, epoch: Instant) -> Result<u64> {
    let total = u64::from(args.rate) * u64::from(args.seconds);
    let period = Duration::from_secs(1) / args.rate;
    let window = args.rate as usize;
    let mut recent: VecDeque<Instant> = VecDeque::with_capacity(window + 1);
    let start = tokio::time::Instant::now();
    for seq in 0..total {
        let mut at = start + period * u32::try_from(seq).unwrap_or(u32::MAX);
        if recent.len() == window {
            if let Some(oldest) = recent.pop_front() {
                at = at.max(tokio::time::Instant::from_std(oldest + Duration::from_secs(1) + WINDOW_MARGIN));
            }
        }
        tokio::time::sleep_until(at).await;
        let now = Instant::now();
        let stamp = now.duration_since(epoch).as_micros();
        let wall = wall_ms();
        let text = format!(r#"{{"Action":"SEND_MESSAGE","RequestId":"r{seq}","Content":"bench:{seq}:{stamp}:{wall}"}}"#);
        let sink = &mut sinks[seq as usize % sinks.len()];
        sink.send(Message::Text(text.into())).await.context("send a chat message")?;
        recent.push_back(now);
    }
    Ok(total)
}

async fn receive<S>(
    mut stream: S,
    split: bool,
    epoch: Instant,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ClientResult
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut result = ClientResult::default();
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            message = stream.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let received = epoch.elapsed().as_micros();
                let text = text.as_str();
                if let Some((sent, sent_wall)) = send_times(text) {
                    let latency = received.saturating_sub(sent);
                    result.latencies_us.push(u32::try_from(latency).unwrap_or(u32::MAX));
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(server) = split.then(|| server_send_time_ms(text)).flatten() {
                        result.ingest_ms.push(server - sent_wall);
                        result.fanout_ms.push(wall_ms() - server);
                    }
                } else if text.starts_with(r#"{"Type":"ERROR""#) {
                    let first = shared.errors.fetch_add(1, Ordering::Relaxed) == 0;
                    if first {
                        eprintln!("chat_load: first ERROR frame: {text}");
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                result.disconnected = true;
                break;
            }
        }
    }
    result
}

/// The monotonic (µs) and wall-clock (ms) send times from a MESSAGE frame
/// whose content is `bench:<seq>:<µs>:<ms>`.
fn send_times(text: &str) -> Option<(u128, i64)> {
    let rest = &text[text.find(MARKER)? + MARKER.len()..];
    let (_seq, rest) = rest.split_once(':')?;
    let (mono, rest) = rest.split_once(':')?;
    Some((mono.parse().ok()?, rest[..rest.find('"')?].parse().ok()?))
}

/// A MESSAGE frame's `SendTime` (ISO 8601, ms), as Unix ms.
fn server_send_time_ms(text: &str) -> Option<i64> {
    const KEY: &str = "\"SendTime\":\"";
    let rest = &text[text.find(KEY)? + KEY.len()..];
    let time = chrono::DateTime::parse_from_rfc3339(&rest[..rest.find('"')?]).ok()?;
    Some(time.timestamp_millis())
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Each client is one socket here and one in the server.
fn warn_on_fd_limit(clients: usize) {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<usize>().ok()
    });
    if let Some(soft) = soft {
        if soft < clients + 64 {
            eprintln!("chat_load: warning: `ulimit -n` is {soft}, below {clients} clients + slack; raise it");
        }
    }
}
