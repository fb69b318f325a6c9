//! SFU capacity load generator (issue 10, "Benchmarks: SFU capacity";
//! `cargo xtask bench sfu`).
//!
//! On each of `--stages` stages: `--publishers` WHIP-only str0m publishers
//! sending synthetic 720p simulcast at IVS's default layer bitrates (rids
//! `high` 2500 kbit/s at 30 fps, `mid` 700 at 20, `low` 200 at 15: frames of
//! bitrate / fps bytes that look like VP8, a keyframe only first and when
//! the SFU asks for one, packetized by str0m's writer) plus Opus-sized audio
//! (80 B, 50 packets/s); then subscribers in steps (`--steps 25,50,100` or
//! `--subscribers N`, per stage). A subscriber is an event-plane member plus
//! one str0m subscription per publisher (`?layer=highest`: it wants the top
//! layer; the SFU's bandwidth estimate may still move it down, and the line
//! says which layer each subscription received).
//!
//! After each step has connected and settled (`--settle-seconds`), the
//! generator measures for `--seconds`:
//! - packet loss per subscription from RTP sequence numbers (extended across
//!   the 16-bit wrap; a retransmission fills its hole, repeats count once),
//!   which covers SFU → subscriber;
//! - frame loss end to end: every generated frame carries its layer and a
//!   per-layer frame number, every audio packet a number, so a frame the SFU
//!   never forwarded shows as a gap within a run of one layer;
//! - received bitrate (UDP bytes into each subscriber's socket) and the
//!   longest gap between video packets;
//! - the server's CPU (utime + stime of `--server-pid`), its own counters
//!   from `/metrics`, and drops at full socket buffers (`/proc/net/udp`), so
//!   loss the generator causes by reading too slowly is told apart.
//!
//! It prints one `BENCH {"sfuCapacity":{…}}` line per step and a
//! `BENCH {"sfuCapacitySummary":{…}}` line: the largest step with < 1 %
//! loss (packet and frame) and every subscription connected, and
//! subscribers per core (subscribers ÷ server CPU cores used) there. It
//! stops after the first step that misses (`--keep-going` runs them all).
//!
//! The generator runs on one thread (a current-thread runtime), all peers
//! on one task, one UDP socket per peer, polled every millisecond without a
//! system call for a socket with nothing to read. Subscribers run str0m in
//! RTP mode (no depacketizing; str0m still decrypts, answers with TWCC and
//! NACKs). Its own CPU is reported beside the server's: on a small machine
//! it competes with the server, and once it uses its whole core (or its
//! sockets drop datagrams) the step measures the generator, not the SFU.
//!
//! `--target janus --janus-url http://127.0.0.1:PORT/janus` runs the same
//! publishers, subscribers and accounting against Janus's videoroom plugin
//! ([`janus`]): a room per stage, each publisher joins with the same
//! simulcast offer (`rid_order` `lmh`), each subscription is a subscriber
//! handle on one feed that answers Janus's offer and asks for substream 2
//! (the top layer, as `?layer=highest`). Janus gathers no loopback
//! candidates, so the peers then bind `--bind-ip` (a local non-loopback
//! address; the kernel still carries the traffic over `lo`). `--server-pid`
//! is Janus's pid there; its socket drops are read on the ports of its
//! candidates.
//!
//! ```text
//! cargo run --release -p stagecast-server --example sfu_load -- \
//!     --url http://127.0.0.1:8080 --api-key KEY --server-pid PID --publishers 1 --steps 25,50,100
//! cargo run --release -p stagecast-server --example sfu_load -- --target janus \
//!     --janus-url http://127.0.0.1:8088/janus --bind-ip 192.0.2.2 --server-pid PID --steps 25,50
//! ```

// The per-step `json!` line has many fields.
#![recursion_limit = "256"]

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use stagecast_protocol::events::ServerMessage;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind, Simulcast, SimulcastLayer};
use str0m::Candidate;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[path = "sfu_load/account.rs"]
#[allow(dead_code)]
mod account;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "sfu_load/engine.rs"]
mod engine;
#[path = "sfu_load/janus.rs"]
mod janus;

use account::percentile;
use common::{Api, Token, EVENTS_PATH};
use engine::{Collected, Command, Engine, EngineHandle, Peer, Publisher, Subscription, SubscriptionResult, LAYERS};
use janus::{Janus, Trickle};

/// A step's loss must stay below this share (of packets and of frames).
const LOSS_LIMIT_PERCENT: f64 = 1.0;
/// Subscriptions set up at once.
const SETUP_PARALLEL: usize = 8;
/// How long a step's subscriptions (or the publishers) may take to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// The SFU under load.
enum Target {
    Stagecast,
    /// Janus's videoroom plugin behind its HTTP API at this URL.
    Janus(String),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Stagecast => "stagecast",
            Target::Janus(_) => "janus",
        }
    }
}

struct Args {
    target: Target,
    /// The address the generator's peers bind.
    bind_ip: IpAddr,
    url: String,
    api_key: String,
    server_pid: Option<u32>,
    publishers: usize,
    stages: usize,
    steps: Vec<usize>,
    seconds: u64,
    settle: u64,
    workers: Option<String>,
    label: String,
    keep_going: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        target: Target::Stagecast,
        bind_ip: IpAddr::from([127, 0, 0, 1]),
        url: String::new(),
        api_key: String::new(),
        server_pid: None,
        publishers: 1,
        stages: 1,
        steps: vec![25],
        seconds: 10,
        settle: 4,
        workers: None,
        label: String::new(),
        keep_going: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--keep-going" {
            args.keep_going = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let number = |what: &str| value.parse::<u64>().with_context(|| format!("{what}: {value:?}"));
        match flag.as_str() {
            "--target" => {
                args.target = match value.as_str() {
                    "stagecast" => Target::Stagecast,
                    "janus" => Target::Janus(String::new()),
                    other => bail!("--target is stagecast or janus, not {other:?}"),
                }
            }
            "--janus-url" => {
                if let Target::Janus(url) = &mut args.target {
                    *url = value;
                } else {
                    bail!("--janus-url needs --target janus before it");
                }
            }
            "--bind-ip" => args.bind_ip = value.parse().with_context(|| format!("--bind-ip {value:?}"))?,
            "--url" => args.url = value.trim_start_matches("http://").trim_end_matches('/').to_owned(),
            "--api-key" => args.api_key = value,
            "--server-pid" => args.server_pid = Some(number("--server-pid")? as u32),
            "--publishers" => args.publishers = number("--publishers")? as usize,
            "--stages" => args.stages = number("--stages")? as usize,
            "--subscribers" => args.steps = vec![number("--subscribers")? as usize],
            "--steps" => {
                args.steps = value.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>().context("--steps")?;
            }
            "--seconds" => args.seconds = number("--seconds")?,
            "--settle-seconds" => args.settle = number("--settle-seconds")?,
            "--workers" => args.workers = Some(value),
            "--label" => args.label = value,
            other => bail!("unknown flag {other}"),
        }
    }
    match &args.target {
        Target::Stagecast if args.url.is_empty() || args.api_key.is_empty() => bail!("--url and --api-key are required"),
        Target::Janus(url) if url.is_empty() => bail!("--target janus needs --janus-url"),
        _ => {}
    }
    if args.publishers == 0 || args.publishers > stagecast_protocol::MAX_PUBLISHERS_PER_STAGE || args.stages == 0 {
        bail!("--publishers must be 1..={} and --stages at least 1", stagecast_protocol::MAX_PUBLISHERS_PER_STAGE);
    }
    if args.steps.is_empty() || args.steps.windows(2).any(|w| w[0] >= w[1]) || args.steps[0] == 0 {
        bail!("--steps must be increasing subscriber counts per stage");
    }
    if args.label.is_empty() {
        args.label = format!("{}pub", args.publishers);
    }
    Ok(args)
}

/// The UDP port of the server's host candidate in an SDP answer.
fn candidate_port(sdp: &str) -> Option<u16> {
    sdp.lines().filter(|l| l.starts_with("a=candidate:")).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2).is_some_and(|p| p.eq_ignore_ascii_case("udp"))).then(|| f.get(5)?.parse().ok()).flatten()
    })
}

/// Publish simulcast video and audio as `token`; returns the publisher, the
/// server's media port and the session's `Location`.
async fn publisher(api: &Api, token: &Token) -> Result<(Publisher, Option<u16>, String)> {
    let (mut peer, pending, offer, audio, video) = publisher_offer(Peer::new(false).await?)?;
    let created = api
        .post_sdp(common::whip::PUBLISH_PATH, Some(&token.token), &offer)
        .await?
        .map_err(|e| anyhow!("publish refused: {e:?}"))?;
    common::accept(&mut peer.rtc, pending, &created.answer)?;
    Ok((Publisher::new(peer, audio, video)?, candidate_port(&created.answer), created.location))
}

/// A subscriber: an event-plane member (held until the process ends) that
/// subscribes to each of `publishers` at the highest layer.
async fn subscriber(
    api: Arc<Api>,
    stage: String,
    member: usize,
    publishers: Arc<Vec<String>>,
    engine: EngineHandle,
    dropped: Arc<AtomicU64>,
) -> Result<()> {
    let token =
        api.participant_token(&stage, json!({"userId": format!("sub{member}"), "capabilities": ["SUBSCRIBE"]})).await?;
    let mut ws = api.ws_connect(EVENTS_PATH, &token.token).await?;
    // Admitted once the first stage state arrives.
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if matches!(serde_json::from_str::<ServerMessage>(text.as_str()), Ok(ServerMessage::StageState { .. })) {
                    break;
                }
            }
            Some(Ok(_)) => {}
            other => bail!("the event plane closed before the stage state: {other:?}"),
        }
    }
    tokio::spawn(async move {
        // Read (and so answer the server's pings) until the process ends.
        while let Some(Ok(_)) = ws.next().await {}
        dropped.fetch_add(1, Ordering::Relaxed);
    });
    for publisher in publishers.iter() {
        let mut peer = Peer::new(true).await?;
        let (offer, pending, _) = common::offer(&mut peer.rtc, &common::recvonly())?;
        let path = format!("/v1/stage/whip/subscribe/{publisher}?layer=highest");
        let created =
            api.post_sdp(&path, Some(&token.token), &offer).await?.map_err(|e| anyhow!("subscribe refused: {e:?}"))?;
        common::accept(&mut peer.rtc, pending, &created.answer)?;
        engine.send(Command::AddSubscription(Box::new(Subscription::new(peer, member))))?;
    }
    Ok(())
}

/// The simulcast offer every publisher sends (rids as in [`LAYERS`], lowest
/// first) with audio: the peer, its pending offer, the offer, the mids.
fn publisher_offer(
    mut peer: Peer,
) -> Result<(Peer, str0m::change::SdpPendingOffer, String, str0m::media::Mid, str0m::media::Mid)> {
    let mut simulcast = Simulcast::new();
    for (rid, ..) in LAYERS {
        simulcast.add_send_layer(SimulcastLayer::new(rid));
    }
    let mut sdp = peer.rtc.sdp_api();
    let audio = sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let video = sdp.add_media(MediaKind::Video, Direction::SendOnly, None, None, Some(simulcast));
    let (offer, pending) = sdp.apply().context("an offer")?;
    Ok((peer, pending, offer.to_sdp_string(), audio, video))
}

/// Add the candidates Janus trickled for a handle (it puts them in its SDP
/// unless it runs full-trickle, so usually there are none).
fn add_trickled(peer: &mut Peer, trickled: Vec<Trickle>) {
    for t in trickled {
        if let Trickle::Candidate { candidate, .. } = t {
            match Candidate::from_sdp_string(&candidate) {
                Ok(c) => peer.rtc.add_remote_candidate(c),
                Err(e) => eprintln!("sfu_load: Janus trickled a candidate str0m cannot read ({e}): {candidate}"),
            }
        }
    }
}

/// Publish simulcast video and audio into Janus room `room`; returns the
/// publisher, its feed id and Janus's candidate ports.
async fn janus_publisher(janus: &Janus, room: u64, name: &str, ip: IpAddr) -> Result<(Publisher, u64, Vec<u16>)> {
    let handle = janus.attach().await?;
    let (mut peer, pending, offer, audio, video) = publisher_offer(Peer::on(ip, false).await?)?;
    let body = json!({"request": "joinandconfigure", "ptype": "publisher", "room": room, "display": name});
    // str0m lists the rids lowest first.
    let jsep = json!({"type": "offer", "sdp": offer, "rid_order": "lmh"});
    let joined = janus.message(handle, body, Some(jsep)).await?;
    if joined.videoroom() != Some("joined") {
        bail!("the videoroom did not answer the publisher's join with `joined`: {joined:?}");
    }
    let feed = joined.feed_id().with_context(|| format!("the videoroom's join named no feed id: {joined:?}"))?;
    let answer = joined.jsep.clone().with_context(|| format!("the videoroom answered the publisher's offer without SDP: {joined:?}"))?;
    common::accept(&mut peer.rtc, pending, &answer.sdp)?;
    add_trickled(&mut peer, janus.take_candidates(handle));
    Ok((Publisher::new(peer, audio, video)?, feed, janus::candidate_ports(&answer.sdp)))
}

/// A subscriber in Janus: one subscriber handle per feed (as against our
/// SFU, one peer connection per publisher), each on the top substream.
async fn janus_subscriber(
    janus: Arc<Janus>,
    room: u64,
    member: usize,
    feeds: Arc<Vec<u64>>,
    engine: EngineHandle,
    ip: IpAddr,
    ports: Arc<Mutex<HashSet<u16>>>,
) -> Result<()> {
    for &feed in feeds.iter() {
        let handle = janus.attach().await?;
        let body = json!({"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]});
        let attached = janus.message(handle, body, None).await?;
        let offer = attached.jsep.clone().with_context(|| format!("the videoroom sent no offer: {attached:?}"))?;
        let mut peer = Peer::on(ip, true).await?;
        let answer = peer.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer.sdp)?).context("accept Janus's offer")?;
        add_trickled(&mut peer, janus.take_candidates(handle));
        ports.lock().expect("invariant: not poisoned").extend(janus::candidate_ports(&offer.sdp));
        engine.send(Command::AddSubscription(Box::new(Subscription::new(peer, member))))?;
        let jsep = json!({"type": "answer", "sdp": answer.to_sdp_string()});
        janus.message(handle, json!({"request": "start"}), Some(jsep)).await?;
        // The top layer, as `?layer=highest` asks of our SFU.
        if let Some(mid) = attached.stream_mid("video") {
            let body = json!({"request": "configure", "streams": [{"mid": mid, "substream": 2}]});
            janus.message(handle, body, None).await?;
        }
    }
    Ok(())
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
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

/// Datagrams dropped at a full receive buffer, by local port (`drops`, the
/// last column of `/proc/net/udp`).
fn udp_drops() -> HashMap<u16, u64> {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else { return HashMap::new() };
    let mut drops = HashMap::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = fields.get(1).and_then(|a| a.split_once(':')).and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if let (Some(port), Some(n)) = (port, fields.last().and_then(|d| d.parse::<u64>().ok())) {
            *drops.entry(port).or_default() += n;
        }
    }
    drops
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// The server's own SFU counters from `/metrics` (with the API key).
#[derive(Debug, Clone, Default)]
struct Metrics {
    sent_bytes: u64,
    sent_packets: u64,
    /// Open sessions by SFU worker (empty when the server does not report workers).
    worker_sessions: Vec<u64>,
}

async fn metrics(api: &Api) -> Option<Metrics> {
    let res = api.http.get(format!("{}/metrics", api.base)).bearer_auth(&api.api_key).send().await.ok()?;
    let text = res.error_for_status().ok()?.text().await.ok()?;
    let value = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok());
    // `stagecast_sfu_worker_sessions{worker="i"} n`, in worker order.
    let mut workers: Vec<(usize, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("stagecast_sfu_worker_sessions{worker=\""))
        .filter_map(|l| {
            let (i, rest) = l.split_once('"')?;
            Some((i.parse().ok()?, rest.trim_start_matches('}').trim().parse().ok()?))
        })
        .collect();
    workers.sort_unstable();
    Some(Metrics {
        sent_bytes: value("stagecast_sfu_sent_bytes_total")?,
        sent_packets: value("stagecast_sfu_sent_packets_total")?,
        worker_sessions: workers.into_iter().map(|(_, n)| n).collect(),
    })
}

/// Machine-wide readings at one end of the window.
struct Reading {
    at: Instant,
    server_ticks: Option<u64>,
    own_ticks: Option<u64>,
    drops: HashMap<u16, u64>,
    counters: Option<Metrics>,
}

async fn reading(api: Option<&Api>, server_pid: Option<u32>) -> Reading {
    let counters = match api {
        Some(api) => metrics(api).await,
        None => None,
    };
    Reading {
        at: Instant::now(),
        server_ticks: server_pid.and_then(cpu_ticks),
        own_ticks: cpu_ticks(std::process::id()),
        drops: udp_drops(),
        counters,
    }
}

/// Per-step results, as the BENCH line and the summary need them.
struct StepResult {
    subscribers: usize,
    pass: bool,
    cores: Option<f64>,
    cpu_per_mbps: Option<f64>,
    /// Video subscriptions mostly on the top layer, of all.
    top_layer: (usize, usize),
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    per_stage: usize,
    collected: &Collected,
    start: &Reading,
    end: &Reading,
    server_ports: &HashSet<u16>,
    ticks_per_second: f64,
    members_dropped: u64,
    workers: &str,
) -> StepResult {
    let seconds = end.at.duration_since(start.at).as_secs_f64().max(1e-3);
    let subs = &collected.subscriptions;
    let subscribers = per_stage * args.stages;
    let wanted = subscribers * args.publishers;
    let connected = subs.iter().filter(|s| s.connected && !s.dead).count();
    let sum = |f: &dyn Fn(&SubscriptionResult) -> (u64, u64)| {
        subs.iter().map(f).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let packets = sum(&|s| s.packets);
    let frames = sum(&|s| s.video_frames);
    let audio = sum(&|s| s.audio_frames);
    let packet_loss = percent(packets.0.saturating_sub(packets.1), packets.0);
    let frame_loss = percent(frames.0.saturating_sub(frames.1), frames.0);
    let audio_loss = percent(audio.0.saturating_sub(audio.1), audio.0);
    // A subscription that received no video in the window is lost whole,
    // whatever its (empty) sequence numbers say.
    let silent = subs.iter().filter(|s| s.video_frames.1 == 0).count() + wanted.saturating_sub(subs.len());

    // Per subscriber: its subscriptions together, the worse of packets and frames.
    let mut by_member: HashMap<usize, [u64; 5]> = HashMap::new();
    for s in subs {
        let m = by_member.entry(s.member).or_default();
        m[0] += s.packets.0;
        m[1] += s.packets.1;
        m[2] += s.video_frames.0 + s.audio_frames.0;
        m[3] += s.video_frames.1 + s.audio_frames.1;
        m[4] += s.rx_bytes;
    }
    let loss = |expected: u64, received: u64| percent(expected.saturating_sub(received), expected);
    let mut member_loss: Vec<f64> = by_member.values().map(|m| loss(m[0], m[1]).max(loss(m[2], m[3]))).collect();
    member_loss.sort_by(f64::total_cmp);
    let mut member_mbps: Vec<f64> = by_member.values().map(|m| m[4] as f64 * 8.0 / seconds / 1e6).collect();
    member_mbps.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = subs.iter().map(|s| s.max_gap.as_secs_f64() * 1000.0).collect();
    gaps.sort_by(f64::total_cmp);
    let mut layers = [0usize; 3];
    for s in subs {
        if let Some(l) = s.layer {
            layers[l] += 1;
        }
    }
    let switches: u64 = subs.iter().map(|s| s.switches).sum();

    let rx_bytes: u64 = subs.iter().map(|s| s.rx_bytes).sum();
    let forwarded_mbps = rx_bytes as f64 * 8.0 / seconds / 1e6;
    let media_mbps = subs.iter().map(|s| s.payload_bytes).sum::<u64>() as f64 * 8.0 / seconds / 1e6;
    let cpu = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / ticks_per_second / seconds * 100.0),
        _ => None,
    };
    let server_cpu = cpu(start.server_ticks, end.server_ticks);
    let own_cpu = cpu(start.own_ticks, end.own_ticks);
    let drops_on = |ports: &dyn Fn(u16) -> bool| -> u64 {
        let before = |p: &u16| start.drops.get(p).copied().unwrap_or(0);
        end.drops.iter().filter(|(p, _)| ports(**p)).map(|(p, d)| d.saturating_sub(before(p))).sum()
    };
    let generator_drops = drops_on(&|p| collected.ports.contains(&p));
    let server_drops = (!server_ports.is_empty()).then(|| drops_on(&|p| server_ports.contains(&p)));
    let server_sent = match (&start.counters, &end.counters) {
        (Some(a), Some(b)) => Some((
            b.sent_bytes.saturating_sub(a.sent_bytes) as f64 * 8.0 / seconds / 1e6,
            b.sent_packets.saturating_sub(a.sent_packets) as f64 / seconds,
        )),
        _ => None,
    };
    let worker_sessions = end.counters.as_ref().map(|m| {
        m.worker_sessions.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    });
    let cores = server_cpu.map(|c| c / 100.0);
    let cpu_per_mbps = server_cpu.filter(|_| forwarded_mbps > 0.0).map(|c| c / forwarded_mbps);
    let per_core = cores.filter(|c| *c > 0.0).map(|c| subscribers as f64 / c);
    let pass = packet_loss < LOSS_LIMIT_PERCENT
        && frame_loss < LOSS_LIMIT_PERCENT
        && audio_loss < LOSS_LIMIT_PERCENT
        && connected == wanted
        && silent == 0;
    let generator_saturated = own_cpu.is_some_and(|c| c >= 90.0) || generator_drops > 0;
    let round = |v: f64, places: i32| (v * 10f64.powi(places)).round() / 10f64.powi(places);
    let opt = |v: Option<f64>, places: i32| v.map_or(Value::Null, |v| json!(round(v, places)));
    let pct = |p: f64| percentile(&member_loss, p).map(|v| round(v, 3));
    let line = json!({"sfuCapacity": {
        "label": args.label,
        "target": args.target.name(),
        "workers": workers,
        "stages": args.stages,
        "publishersPerStage": args.publishers,
        "subscribersPerStage": per_stage,
        "subscribers": subscribers,
        "subscriptions": wanted,
        "subscriptionsConnected": connected,
        "silentSubscriptions": silent,
        "membersDropped": members_dropped,
        "seconds": round(seconds, 2),
        "packetLossPercent": round(packet_loss, 3),
        "videoFrameLossPercent": round(frame_loss, 3),
        "audioLossPercent": round(audio_loss, 3),
        "packetsExpected": packets.0,
        "packetsReceived": packets.1,
        "subscriberLossP50": pct(50.0),
        "subscriberLossP95": pct(95.0),
        "subscriberLossMax": member_loss.last().map(|v| round(*v, 3)),
        "subscribersOverLimit": member_loss.iter().filter(|l| **l >= LOSS_LIMIT_PERCENT).count(),
        "layerHigh": layers[2],
        "layerMid": layers[1],
        "layerLow": layers[0],
        "layerSwitches": switches,
        "keyframeRequests": collected.keyframe_requests,
        "videoGapMsP99": percentile(&gaps, 99.0).map(|v| round(v, 0)),
        "videoGapMsMax": gaps.last().map(|v| round(*v, 0)),
        "rxMbpsPerSubscriberMin": member_mbps.first().map(|v| round(*v, 2)),
        "rxMbpsPerSubscriberP50": percentile(&member_mbps, 50.0).map(|v| round(v, 2)),
        "forwardedMbps": round(forwarded_mbps, 1),
        "mediaMbps": round(media_mbps, 1),
        "publishedMbps": round(collected.publisher_media_bytes as f64 * 8.0 / seconds / 1e6, 2),
        "serverSentMbps": opt(server_sent.map(|s| s.0), 1),
        "serverSentPps": opt(server_sent.map(|s| s.1), 0),
        "serverCpuPercent": opt(server_cpu, 1),
        "serverCpuPercentPerMbps": opt(cpu_per_mbps, 3),
        "subscribersPerCore": opt(per_core, 0),
        "generatorCpuPercent": opt(own_cpu, 1),
        "generatorSocketDrops": generator_drops,
        "generatorSendFailures": subs.iter().map(|s| s.send_failures).sum::<u64>() + collected.publisher_send_failures,
        "serverSocketDrops": server_drops,
        "workerSessions": worker_sessions,
        "generatorSaturated": generator_saturated,
        "loadavg": loadavg(),
        "pass": pass,
    }});
    println!("BENCH {line}");
    StepResult { subscribers, pass, cores, cpu_per_mbps, top_layer: (layers[2], wanted) }
}

/// A stage (ours) or a room (Janus's) and the publishers to subscribe to.
enum StageRef {
    Stagecast { stage: String, publishers: Arc<Vec<String>> },
    Janus { janus: Arc<Janus>, room: u64, feeds: Arc<Vec<u64>> },
}

/// Our stages, each with its publishers added to the engine, spread over
/// the SFU workers as evenly as the stage ids let them.
async fn stagecast_stages(
    args: &Args,
    api: &Api,
    engine: &EngineHandle,
    server_ports: &Mutex<HashSet<u16>>,
) -> Result<Vec<StageRef>> {
    let mut stages = Vec::new();
    let mut publishers_added = 0;
    // The SFU workers the stages landed on (a stage stays on one).
    let mut used_workers: Vec<usize> = Vec::new();
    for s in 0..args.stages {
        let mut attempts = 0;
        let (stage, first) = loop {
            let stage = api.create_stage_with(json!({"name": format!("sfu-load-{s}")})).await?;
            let body = json!({"userId": format!("pub{s}-0"), "capabilities": ["PUBLISH"]});
            let token = api.participant_token(&stage, body).await?;
            let before = metrics(api).await.map(|m| m.worker_sessions).unwrap_or_default();
            let (publisher, port, location) = publisher(api, &token).await?;
            server_ports.lock().expect("invariant: not poisoned").extend(port);
            engine.send(Command::AddPublisher(Box::new(publisher)))?;
            publishers_added += 1;
            let after = metrics(api).await.map(|m| m.worker_sessions).unwrap_or_default();
            // Workers share stages by a hash of the stage id: a stage that
            // lands on a busy worker while another is idle is dropped and
            // another made, so the stages spread as evenly as they can.
            let grew = || after.iter().zip(&before).position(|(a, b)| a > b);
            let worker = if after.len() == before.len() { grew() } else { None };
            if let Some(w) = worker {
                if used_workers.contains(&w) && used_workers.len() < after.len() && attempts < 16 {
                    attempts += 1;
                    engine.send(Command::Retire(publishers_added - 1))?;
                    api.delete(&location, &token.token).await?;
                    continue;
                }
                used_workers.push(w);
            }
            break (stage, token);
        };
        let mut publisher_ids = vec![first.participant_id];
        for p in 1..args.publishers {
            let body = json!({"userId": format!("pub{s}-{p}"), "capabilities": ["PUBLISH"]});
            let token = api.participant_token(&stage, body).await?;
            let (publisher, _, _) = publisher(api, &token).await?;
            engine.send(Command::AddPublisher(Box::new(publisher)))?;
            publishers_added += 1;
            publisher_ids.push(token.participant_id);
        }
        stages.push(StageRef::Stagecast { stage, publishers: Arc::new(publisher_ids) });
    }
    if !used_workers.is_empty() {
        eprintln!("sfu_load: the stages are on SFU workers {used_workers:?}");
    }
    Ok(stages)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = EngineHandle(tx);
    tokio::spawn(Engine::default().run(rx));
    let ticks_per_second = clock_ticks_per_second();
    // The server's media ports (ours: one; Janus: one per handle).
    let server_ports: Arc<Mutex<HashSet<u16>>> = Arc::default();
    let (api, stages) = match &args.target {
        Target::Stagecast => {
            let api = Arc::new(Api::new(&args.url, args.api_key.clone()));
            let stages = stagecast_stages(&args, &api, &engine, &server_ports).await?;
            (Some(api), stages)
        }
        Target::Janus(url) => {
            let janus = Janus::connect(url).await?;
            let admin = janus.attach().await?;
            let mut stages = Vec::new();
            for s in 0..args.stages {
                let room = 1000 + s as u64;
                janus.message(admin, janus::create_room(room, args.publishers.max(1)), None).await?;
                let mut feeds = Vec::new();
                for p in 0..args.publishers {
                    let (publisher, feed, ports) = janus_publisher(&janus, room, &format!("pub{s}-{p}"), args.bind_ip).await?;
                    server_ports.lock().expect("invariant: not poisoned").extend(ports);
                    engine.send(Command::AddPublisher(Box::new(publisher)))?;
                    feeds.push(feed);
                }
                stages.push(StageRef::Janus { janus: janus.clone(), room, feeds: Arc::new(feeds) });
            }
            (None, stages)
        }
    };
    let deadline = Instant::now() + CONNECT_WAIT;
    while engine.status().await?.publishers_connected < args.stages * args.publishers {
        if Instant::now() > deadline {
            if let Some(StageRef::Janus { janus, .. }) = stages.first() {
                eprintln!("sfu_load: Janus hung up: {:?}", janus.hangups());
            }
            bail!("the publishers did not connect within {CONNECT_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("sfu_load: {} publisher(s) on {} stage(s) connected", args.publishers * args.stages, args.stages);

    let dropped = Arc::new(AtomicU64::new(0));
    let mut per_stage = 0;
    let mut results: Vec<StepResult> = Vec::new();
    let mut workers_seen = None;
    for &step in &args.steps {
        let started = Instant::now();
        let jobs: Vec<_> = (per_stage..step)
            .flat_map(|i| stages.iter().enumerate().map(move |(s, st)| (s, st, i)))
            .map(|(s, stage, i)| {
                let member = s * 100_000 + i;
                let (engine, dropped, ports) = (engine.clone(), dropped.clone(), server_ports.clone());
                let (api, ip) = (api.clone(), args.bind_ip);
                async move {
                    match (stage, api) {
                        (StageRef::Stagecast { stage, publishers }, Some(api)) => {
                            subscriber(api, stage.clone(), member, publishers.clone(), engine, dropped).await
                        }
                        (StageRef::Janus { janus, room, feeds }, _) => {
                            janus_subscriber(janus.clone(), *room, member, feeds.clone(), engine, ip, ports).await
                        }
                        (StageRef::Stagecast { .. }, None) => bail!("invariant: a stage of ours has the API"),
                    }
                }
            })
            .collect();

        let outcomes: Vec<Result<()>> = futures_util::stream::iter(jobs).buffer_unordered(SETUP_PARALLEL).collect().await;
        for e in outcomes.into_iter().filter_map(Result::err) {
            eprintln!("sfu_load: a subscriber could not be set up: {e:#}");
        }
        per_stage = step;
        let wanted = step * args.stages * args.publishers;
        let deadline = Instant::now() + CONNECT_WAIT;
        loop {
            let status = engine.status().await?;
            if status.subscriptions_connected + status.dead >= status.subscriptions || Instant::now() > deadline {
                eprintln!(
                    "sfu_load: {step} subscriber(s) per stage: {}/{wanted} subscriptions connected ({} failed) in {:.1} s",
                    status.subscriptions_connected,
                    status.dead,
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        let start = reading(api.as_deref(), args.server_pid).await;
        engine.ask(Command::Restart).await?;
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let collected = engine.ask(Command::Collect).await?;
        let end = reading(api.as_deref(), args.server_pid).await;
        let reported = end.counters.as_ref().map(|m| m.worker_sessions.len()).filter(|n| *n > 0);
        workers_seen = workers_seen.or(reported);
        let workers = args.workers.clone().or(workers_seen.map(|w| w.to_string())).unwrap_or_else(|| "default".into());
        let members_dropped = dropped.load(Ordering::Relaxed);
        let ports = server_ports.lock().expect("invariant: not poisoned").clone();
        let result =
            report(&args, step, &collected, &start, &end, &ports, ticks_per_second, members_dropped, &workers);
        let pass = result.pass;
        results.push(result);
        if !pass && !args.keep_going {
            eprintln!(
                "sfu_load: {step} subscriber(s) per stage missed (loss ≥ {LOSS_LIMIT_PERCENT} % or not all connected); stopping"
            );
            break;
        }
    }

    let best = results.iter().filter(|r| r.pass).max_by_key(|r| r.subscribers);
    let per_core = |r: &StepResult, n: usize| r.cores.filter(|c| *c > 0.0).map(|c| (n as f64 / c).round());
    let workers = args.workers.clone().or(workers_seen.map(|w| w.to_string())).unwrap_or_else(|| "default".into());
    let summary = json!({"sfuCapacitySummary": {
        "label": args.label,
        "target": args.target.name(),
        "workers": workers,
        "stages": args.stages,
        "publishersPerStage": args.publishers,
        "steps": args.steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
        "stepsRun": results.len(),
        // Every step passed: the limit lies above the last one.
        "limitReached": results.iter().any(|r| !r.pass),
        "maxSubscribersUnderLimit": best.map(|b| b.subscribers),
        "serverCoresThere": best.and_then(|b| b.cores).map(|c| (c * 1000.0).round() / 1000.0),
        "subscribersPerCore": best.and_then(|b| per_core(b, b.subscribers)),
        "subscriptionsPerCore": best.and_then(|b| per_core(b, b.subscribers * args.publishers)),
        "serverCpuPercentPerMbps": best.and_then(|b| b.cpu_per_mbps).map(|v| (v * 1000.0).round() / 1000.0),
        "topLayerThere": best.map(|b| b.top_layer.0),
        "subscriptionsThere": best.map(|b| b.top_layer.1),
        "lossLimitPercent": LOSS_LIMIT_PERCENT,
    }});
    println!("BENCH {summary}");
    Ok(())
}
