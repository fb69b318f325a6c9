//! Chat fan-out load generator (`cargo xtask bench` runs it).
//!
//! Creates one room through `/v1`, connects `--clients` WebSocket clients to
//! `/v1/chat`, and has a few of them send `--rate` messages per second in total
//! for `--seconds`. `--url` may be given once per node of a distributed
//! deployment: clients (senders included) are spread over the nodes in turn. Every message's `Content` carries its send time on this
//! process's monotonic clock, so every client measures delivery latency
//! (receive − send) without any clock agreement with the server. Prints one
//! `BENCH {"chatFanout":{...}}` line (milliseconds), and the server's CPU and
//! RSS over the run when `--server-pid` is given (once per node; `--redis-pid`
//! adds Redis's CPU).
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
    /// One per node; the room is created through the first.
    urls: Vec<String>,
    api_key: String,
    clients: usize,
    rate: u32,
    seconds: u32,
    senders: usize,
    /// One per node, in `urls` order.
    server_pids: Vec<u32>,
    redis_pid: Option<u32>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        urls: Vec::new(),
        api_key: String::new(),
        clients: 1000,
        rate: 100,
        seconds: 10,
        senders: 4,
        server_pids: Vec::new(),
        redis_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.urls.push(value()?.trim_end_matches('/').to_owned()),
            "--api-key" => args.api_key = value()?,
            "--clients" => args.clients = value()?.parse().context("--clients")?,
            "--rate" => args.rate = value()?.parse().context("--rate")?,
            "--seconds" => args.seconds = value()?.parse().context("--seconds")?,
            "--senders" => args.senders = value()?.parse().context("--senders")?,
            "--server-pid" => args.server_pids.push(value()?.parse().context("--server-pid")?),
            "--redis-pid" => args.redis_pid = Some(value()?.parse().context("--redis-pid")?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.urls.is_empty() || args.api_key.is_empty() {
        bail!(
            "usage: chat_load --url http://HOST:PORT [--url …] --api-key KEY [--clients N] [--rate MSG_PER_S] \
             [--seconds S] [--senders K] [--server-pid PID …] [--redis-pid PID]"
        );
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
        .post(format!("{}/v1/rooms", args.urls[0]))
        .bearer_auth(&args.api_key)
        .json(&json!({"name": "chat-fanout-bench", "maximumMessageRatePerSecond": args.rate}))
        .send()
        .await?
        .error_for_status()
        .context("POST /v1/rooms")?
        .json()
        .await?;
    let room_id = room["id"].as_str().context("the room has no id")?.to_owned();
    let derived = |url: &String| format!("{}/v1/chat", url.replacen("http", "ws", 1));
    let endpoints: Vec<String> = match room["endpoint"].as_str() {
        Some(e) if args.urls.len() == 1 => vec![e.to_owned()],
        _ => args.urls.iter().map(derived).collect(),
    };

    let setup = Instant::now();
    let tokens = mint_tokens(&http, &args, &room_id).await?;
    eprintln!("chat_load: minted {} tokens in {:.1}s", tokens.len(), setup.elapsed().as_secs_f64());
    let connect_started = Instant::now();
    let sockets = connect_all(&endpoints, tokens).await?;
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

    let cpu_start: Vec<Option<u64>> = args.server_pids.iter().map(|&pid| cpu_ticks(pid)).collect();
    let redis_cpu_start = args.redis_pid.and_then(cpu_ticks);
    let own_cpu_start = cpu_ticks(std::process::id());
    let rss_peaks: Arc<Vec<AtomicU64>> = Arc::new(args.server_pids.iter().map(|_| AtomicU64::new(0)).collect());
    let sampler = (!args.server_pids.is_empty()).then(|| {
        let (peaks, pids) = (rss_peaks.clone(), args.server_pids.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                for (pid, peak) in pids.iter().zip(peaks.iter()) {
                    if let Some(kb) = rss_kb(*pid) {
                        peak.fetch_max(kb, Ordering::Relaxed);
                    }
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
    let cpu_end: Vec<Option<u64>> = args.server_pids.iter().map(|&pid| cpu_ticks(pid)).collect();
    let redis_cpu_end = args.redis_pid.and_then(cpu_ticks);
    let own_cpu_end = cpu_ticks(std::process::id());
    let rss_end: Vec<Option<u64>> = args.server_pids.iter().map(|&pid| rss_kb(pid)).collect();
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
    let ticks = clock_ticks_per_second();
    let cpu_seconds = |start: Option<u64>, end: Option<u64>| Some(end?.saturating_sub(start?) as f64 / ticks);
    let percent = |seconds: f64| json!((seconds / run_took.as_secs_f64() * 1000.0).round() / 10.0);
    let mb = |kb: u64| json!((kb as f64 / 1024.0 * 10.0).round() / 10.0);
    let map = out.as_object_mut().context("the result is an object")?;
    if let Some(seconds) = cpu_seconds(own_cpu_start, own_cpu_end) {
        // The generator may share the cores with the server; its load is part of the picture.
        map.insert("generatorCpuPercent".into(), percent(seconds));
    }
    if let Some(seconds) = cpu_seconds(redis_cpu_start, redis_cpu_end) {
        map.insert("redisCpuPercent".into(), percent(seconds));
    }
    // Per node (`node1…` in `--url` order) and summed over the nodes.
    let mut server_seconds = Some(0.0);
    let (mut rss_peak_sum, mut rss_end_sum) = (0, 0);
    for (i, pid) in args.server_pids.iter().enumerate() {
        let seconds = cpu_seconds(cpu_start[i], cpu_end[i]);
        let peak = rss_peaks[i].load(Ordering::Relaxed).max(rss_end[i].unwrap_or(0));
        if args.server_pids.len() > 1 {
            map.insert(format!("node{}Pid", i + 1), json!(pid));
            map.insert(format!("node{}CpuPercent", i + 1), seconds.map_or(Value::Null, percent));
            map.insert(format!("node{}RssPeakMb", i + 1), mb(peak));
        }
        server_seconds = server_seconds.zip(seconds).map(|(a, b)| a + b);
        rss_peak_sum += peak;
        rss_end_sum += rss_end[i].unwrap_or(0);
    }
    if let Some(seconds) = server_seconds.filter(|_| !args.server_pids.is_empty()) {
        map.insert("serverCpuPercent".into(), percent(seconds));
        map.insert("serverRssPeakMb".into(), mb(rss_peak_sum));
        map.insert("serverRssEndMb".into(), mb(rss_end_sum));
        // The cost of fan-out: deliveries per second of server CPU (one core busy for one second).
        if seconds > 0.0 {
            map.insert("deliveriesPerCoreSecond".into(), json!((latencies.len() as f64 / seconds).round()));
        }
    }
    println!("BENCH {}", json!({ "chatFanout": out }));
    Ok(())
}

/// One token per client; the first `senders` may send.
async fn mint_tokens(http: &reqwest::Client, args: &Args, room_id: &str) -> Result<Vec<String>> {
    let url = format!("{}/v1/rooms/{room_id}/tokens", args.urls[0]);
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

/// Client `i` connects to `endpoints[i % endpoints.len()]`.
async fn connect_all(endpoints: &[String], tokens: Vec<String>) -> Result<Vec<Ws>> {
    let connects = tokens.into_iter().enumerate().map(|(i, token)| async move {
        let endpoint = endpoints[i % endpoints.len()].as_str();
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
