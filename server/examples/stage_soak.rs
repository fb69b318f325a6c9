//! Stage soak load generator (issue 8 "Prove it"; `cargo xtask bench soak`).
//!
//! One stage, `--publishers` WHIP-only str0m publishers sending generated VP8
//! and Opus RTP over loopback UDP, `--members` subscribe-only event-plane
//! members of which `--churn` per second leave (close 1000) and join again,
//! and a probe member that changes its state (SET_STATE) every second. Every
//! member reports when its stage view shows the probe's new state; a round's
//! delivery time is the slowest of the members connected before the change.
//! The server's resident memory is sampled from /proc. The first
//! `--warmup-seconds` run the same load unmeasured (the allocator's and
//! SQLite's caches settle); RSS "start" and the delivery times are taken
//! after it, and the RSS once everyone had joined is reported apart. Prints
//! one `BENCH {"stageSoak":{...}}` line.
//!
//! The members hold event-plane sockets only (no media subscriptions: 200
//! str0m subscribers would measure this generator, not the server).
//!
//! ```text
//! cargo run -p stagecast-server --example stage_soak -- \
//!     --url http://127.0.0.1:8080 --api-key KEY --server-pid PID --seconds 600
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use stagecast_protocol::events::ServerMessage;
use str0m::format::Codec;
use str0m::media::{MediaTime, Mid};
use str0m::Rtc;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

#[path = "../tests/common/mod.rs"]
mod common;
use common::events::StageView;
use common::whip::{pump_until, sendonly, UdpPeer, PUBLISH_PATH};
use common::{Api, Token, EVENTS_PATH};

/// How long after the last probe round deliveries are still awaited.
const DRAIN: Duration = Duration::from_secs(3);
/// Frames per second each publisher sends.
const FPS: u64 = 30;
/// Bytes of each generated video frame.
const FRAME_BYTES: usize = 1000;

struct Args {
    url: String,
    api_key: String,
    publishers: usize,
    members: usize,
    churn: u32,
    seconds: u64,
    warmup: u64,
    server_pid: Option<u32>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        url: String::new(),
        api_key: String::new(),
        publishers: 12,
        members: 200,
        churn: 5,
        seconds: 600,
        warmup: 60,
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?.trim_start_matches("http://").trim_end_matches('/').to_owned(),
            "--api-key" => args.api_key = value()?,
            "--publishers" => args.publishers = value()?.parse().context("--publishers")?,
            "--members" => args.members = value()?.parse().context("--members")?,
            "--churn" => args.churn = value()?.parse().context("--churn")?,
            "--seconds" => args.seconds = value()?.parse().context("--seconds")?,
            "--warmup-seconds" => args.warmup = value()?.parse().context("--warmup-seconds")?,
            "--server-pid" => args.server_pid = Some(value()?.parse().context("--server-pid")?),
            other => bail!("unknown flag {other}"),
        }
    }
    if args.url.is_empty() || args.api_key.is_empty() {
        bail!("--url and --api-key are required");
    }
    Ok(args)
}

/// The probe's state in round `r`: two flags, so a delivery names its round mod 4.
fn flags(round: u64) -> (bool, bool) {
    (round & 1 == 1, round & 2 == 2)
}

/// A member saw the probe's flags change: `(flags, when its socket connected, when it saw them)`.
type Seen = ((bool, bool), Instant, Instant);

/// One subscribe-only member: connect, read and apply frames, report probe
/// changes; on `churn`, leave with close 1000 and join again.
async fn member(api: Arc<Api>, token: Token, probe: String, churn: Arc<Notify>, seen: mpsc::UnboundedSender<Seen>, joins: Arc<AtomicU64>) {
    loop {
        let Ok(ws) = api.ws_connect(EVENTS_PATH, &token.token).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        joins.fetch_add(1, Ordering::Relaxed);
        let connected = Instant::now();
        let (mut sink, mut stream) = ws.split();
        let mut view = StageView::default();
        let mut last: Option<(bool, bool)> = None;
        loop {
            tokio::select! {
                frame = stream.next() => {
                    let Some(Ok(Message::Text(text))) = frame else {
                        if matches!(frame, Some(Ok(_))) { continue } else { break }
                    };
                    let Ok(msg) = serde_json::from_str::<ServerMessage>(text.as_str()) else { break };
                    if view.apply(&msg).is_err() {
                        eprintln!("stage_soak: a delta that does not fit; reconnecting");
                        break;
                    }
                    let now = view.get(&probe).map(|p| (p.audio_muted, p.video_stopped));
                    if let Some(flags) = now.filter(|f| last != Some(*f)) {
                        let _ = seen.send((flags, connected, Instant::now()));
                    }
                    last = now;
                }
                () = churn.notified() => {
                    let close = CloseFrame { code: CloseCode::Normal, reason: "user-initiated".into() };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publish from each peer and keep them sending generated media until `stop`.
async fn publishers(api: &Api, tokens: &[Token]) -> Result<Vec<(UdpPeer, Vec<Mid>)>> {
    let mut peers = Vec::new();
    for token in tokens {
        let mut peer = UdpPeer::new(Rtc::builder()).await?;
        let (offer, pending, mids) = peer.offer(&sendonly())?;
        let created = api.post_sdp(PUBLISH_PATH, Some(&token.token), &offer).await?.map_err(|e| anyhow::anyhow!("publish: {e:?}"))?;
        peer.accept(pending, &created.answer)?;
        pump_until(&mut [&mut peer], "publisher connected", |p| p[0].rtc.is_connected()).await?;
        peers.push((peer, mids));
    }
    Ok(peers)
}

/// One generated frame on each of the peer's tracks (VP8-looking video, Opus-sized audio).
fn send_frame(peer: &mut UdpPeer, mids: &[Mid], frame: u64) -> Result<()> {
    for &mid in mids {
        let Some(writer) = peer.rtc.writer(mid) else { continue };
        let kind = [Codec::Vp8, Codec::Opus].into_iter().find_map(|codec| {
            writer.payload_params().find(|p| p.spec().codec == codec).map(|p| (codec, p.pt(), p.spec().clock_rate))
        });
        let Some((codec, pt, clock)) = kind else { continue };
        let data = if codec == Codec::Vp8 {
            let mut data = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
            data.resize(FRAME_BYTES, frame as u8);
            data
        } else {
            vec![0xfc; 80]
        };
        let ticks = frame * u64::from(clock.get()) / FPS;
        writer.write(pt, Instant::now(), MediaTime::new(ticks, clock), data)?;
    }
    Ok(())
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let api = Arc::new(Api::new(&args.url, args.api_key.clone()));
    let stage = api.create_stage_with(json!({"name": "soak"})).await?;
    let mut pub_tokens = Vec::new();
    for i in 0..args.publishers {
        pub_tokens.push(api.participant_token(&stage, json!({"userId": format!("pub{i}"), "capabilities": ["PUBLISH"]})).await?);
    }
    let probe = api.participant_token(&stage, json!({"userId": "probe", "capabilities": ["SUBSCRIBE"]})).await?;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    let joins = Arc::new(AtomicU64::new(0));
    let mut churners = Vec::new();
    for i in 0..args.members {
        let token = api.participant_token(&stage, json!({"userId": format!("m{i}"), "capabilities": ["SUBSCRIBE"]})).await?;
        let churn = Arc::new(Notify::new());
        churners.push(churn.clone());
        tokio::spawn(member(api.clone(), token, probe.participant_id.clone(), churn, seen_tx.clone(), joins.clone()));
    }
    drop(seen_tx);
    let mut peers = publishers(&api, &pub_tokens).await?;
    let mut probe_ws = api.ws_connect(EVENTS_PATH, &probe.token).await?;
    // Let every member join before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_joined = args.server_pid.and_then(rss_mib);
    let mut rss_start = None;
    let (mut rss_min, mut rss_max) = (f64::MAX, 0.0f64);

    let start = Instant::now();
    let measured_from = start + Duration::from_secs(args.warmup);
    let end = measured_from + Duration::from_secs(args.seconds);
    let mut rounds: Vec<(Instant, (bool, bool))> = Vec::new();
    let mut deliveries: Vec<Seen> = Vec::new();
    let (mut frame, mut churned) = (0u64, 0u64);
    let mut next_probe = start;
    let mut next_churn = start;
    let mut next_sample = start;
    // RSS every 5 s; every minute's kept to show the curve.
    let (mut samples, mut per_minute) = (0u64, Vec::new());
    let churn_every = Duration::from_secs(1) / args.churn.max(1);
    while Instant::now() < end {
        let now = Instant::now();
        if now >= start + Duration::from_millis(frame * 1000 / FPS) {
            for (peer, mids) in &mut peers {
                send_frame(peer, mids, frame)?;
            }
            frame += 1;
        }
        if now >= next_probe {
            let round = rounds.len() as u64 + 1;
            let (audio, video) = flags(round);
            // Stamped before sending: a delivery may be seen before `send` returns.
            rounds.push((Instant::now(), (audio, video)));
            probe_ws.send(Message::text(json!({"type": "SET_STATE", "audioMuted": audio, "videoStopped": video}).to_string())).await?;
            next_probe += Duration::from_secs(1);
        }
        if args.churn > 0 && now >= next_churn {
            if let Some(c) = churners.get((churned as usize * 7919) % churners.len().max(1)) {
                c.notify_one();
            }
            churned += 1;
            next_churn += churn_every;
        }
        if now >= next_sample {
            if let Some(rss) = args.server_pid.and_then(rss_mib) {
                if now >= measured_from {
                    rss_start.get_or_insert(rss);
                    (rss_min, rss_max) = (rss_min.min(rss), rss_max.max(rss));
                }
                if samples % 12 == 0 {
                    per_minute.push(format!("{rss:.1}"));
                }
            }
            samples += 1;
            next_sample += Duration::from_secs(5);
        }
        for (peer, _) in &mut peers {
            peer.pump()?;
            peer.events.clear();
        }
        // The probe's own socket: drain what it was sent.
        while let Some(Some(_)) = futures_util::FutureExt::now_or_never(probe_ws.next()) {}
        while let Ok(s) = seen_rx.try_recv() {
            deliveries.push(s);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain_until = Instant::now() + DRAIN;
    while Instant::now() < drain_until {
        for (peer, _) in &mut peers {
            peer.pump()?;
            peer.events.clear();
        }
        while let Ok(s) = seen_rx.try_recv() {
            deliveries.push(s);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rss_end = args.server_pid.and_then(rss_mib);

    // A delivery belongs to the latest round with its flags sent before it;
    // it counts if its socket connected before that round was sent.
    let mut per_round: Vec<Option<f64>> = vec![None; rounds.len()];
    let mut delivered = 0u64;
    for (flags, connected, at) in &deliveries {
        let Some(r) = rounds.iter().rposition(|(sent, f)| f == flags && sent <= at) else { continue };
        let (sent, _) = rounds[r];
        if *connected >= sent || sent < measured_from {
            continue;
        }
        delivered += 1;
        let ms = at.duration_since(sent).as_secs_f64() * 1000.0;
        per_round[r] = Some(per_round[r].map_or(ms, |m: f64| m.max(ms)));
    }
    let mut slowest: Vec<f64> = per_round.iter().flatten().copied().collect();
    slowest.sort_by(f64::total_cmp);
    let fmt = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.1}"));
    println!(
        "BENCH {}",
        json!({"stageSoak": {
            "seconds": args.seconds,
            "warmupSeconds": args.warmup,
            "publishers": args.publishers,
            "members": args.members,
            "churnPerSecond": args.churn,
            "joins": joins.load(Ordering::Relaxed),
            "rounds": rounds.iter().filter(|(sent, _)| *sent >= measured_from).count(),
            "roundsMeasured": slowest.len(),
            "deliveries": delivered,
            "p50": format!("{:.1}", percentile(&slowest, 50.0)),
            "p99": format!("{:.1}", percentile(&slowest, 99.0)),
            "max": format!("{:.1}", slowest.last().copied().unwrap_or(f64::NAN)),
            "rssJoinedMb": fmt(rss_joined),
            "rssStartMb": fmt(rss_start),
            "rssEndMb": fmt(rss_end),
            "rssMinMb": fmt((rss_min < f64::MAX).then_some(rss_min)),
            "rssMaxMb": fmt((rss_max > 0.0).then_some(rss_max)),
            "rssPerMinuteMb": per_minute.join(" "),
            "videoFramesPerPublisher": frame,
        }})
    );
    Ok(())
}
