//! `cargo xtask bench sfu`: SFU capacity (issue 10). Builds the server and
//! the load generator (server/examples/sfu_load.rs) in release mode, and for
//! each load shape and SFU worker count starts a fresh server and ramps
//! subscribers until loss reaches 1 %; replaces the "SFU capacity" section
//! of BENCHMARKS.md. Not part of `cargo xtask bench` (it takes minutes).
//! Then the same generator, media, steps and seconds against Janus's
//! videoroom plugin ([`super::janus`], Debian's `janus`, installed here and
//! only for this bench), and the ratio of subscribers per core, ours / Janus.

use super::janus;
use super::{collect_bench_lines, loadavg, machine, number, server_pid};
use crate::soak::splice_between;
use crate::{setup, test};
use crate::util::{self, note, step};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

const BEGIN: &str = "<!-- sfu capacity -->";
const END: &str = "<!-- /sfu capacity -->";

/// Each shape runs on this many stages (the same publishers and subscribers
/// on each), so two workers have two stages to share.
const STAGES: u32 = 2;
/// Load shapes: label, publishers per stage, subscriber steps per stage.
const SHAPES: [(&str, u32, &str); 2] = [
    ("1 publisher → N", 1, "10,25,50,75,100,125,150,200,250,300"),
    ("12 publishers → N", 12, "1,2,4,6,8,12,16"),
];
/// Measured seconds per step (after connecting and a settle).
const SECONDS: u64 = 10;
const SETTLE_SECONDS: u64 = 4;
/// The goal: subscribers per core at < 1 % loss (twice LiveKit's
/// published ≈ 204 per vCPU for one 720p publisher), judged here per 720p
/// subscription so the twelve-publisher load is judged too.
const GOAL_PER_CORE: f64 = 400.0;

/// `cargo xtask bench sfu [--seconds N]`.
pub fn run(args: &[String]) -> Result<()> {
    let seconds = match args {
        [] => SECONDS,
        [flag, n] if flag == "--seconds" => n.parse().context("--seconds")?,
        _ => bail!("usage: cargo xtask bench sfu [--seconds N]"),
    };
    step("bench sfu: Janus (the side-by-side run)");
    setup::apt_packages(&["janus"])?;
    step("bench sfu: release build of the server and the load generator");
    util::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "stagecast-server", "--bin", "stagecast", "--example", "sfu_load"])
            .current_dir(util::root()),
    )?;
    let release = util::target_dir().join("release");
    let server = release.join("stagecast");
    let generator = release.join("examples/sfu_load");
    // Until the server has `--sfu-workers`, one run with its default.
    let help = util::output(Command::new(&server).arg("--help")).unwrap_or_default();
    let workers: Vec<Option<u32>> = if help.contains("--sfu-workers") { vec![Some(1), Some(2)] } else { vec![None] };
    if workers == [None] {
        note("this server has no --sfu-workers flag: one run per shape with its default");
    }
    let load_before = loadavg();
    let mut lines = Vec::new();
    let mut queue_drops = Vec::new();
    for (label, publishers, steps) in SHAPES {
        for w in &workers {
            let extra: Vec<String> = w.iter().flat_map(|w| ["--sfu-workers".to_owned(), w.to_string()]).collect();
            let (guard, url, api_key) = test::start_server_with("bench-sfu", &server, &extra)?;
            let listen = url.strip_prefix("http://").unwrap_or(&url).to_owned();
            let pid = server_pid(&listen).context("the SFU bench needs the server's pid (its CPU is the point)")?;
            step(&format!(
                "bench sfu: {label} on {STAGES} stages, workers {}, steps {steps} per stage",
                w.map_or("default".to_owned(), |w| w.to_string())
            ));
            let (publishers, stages, pid) = (publishers.to_string(), STAGES.to_string(), pid.to_string());
            let (secs, settle) = (seconds.to_string(), SETTLE_SECONDS.to_string());
            let mut args = vec![
                "--url", url.as_str(), "--server-pid", &pid, "--publishers", &publishers, "--stages", &stages,
                "--steps", steps, "--seconds", &secs, "--settle-seconds", &settle, "--label", label,
            ];
            let workers_text = w.map(|w| w.to_string());
            if let Some(w) = &workers_text {
                args.extend(["--workers", w.as_str()]);
            }
            println!("$ {} --api-key *** {}", generator.display(), args.join(" "));
            let mut cmd = Command::new(&generator);
            cmd.args(&args).arg("--api-key").arg(&api_key).current_dir(util::root());
            let results = collect_bench_lines(cmd, "sfu_load");
            if results.is_err() {
                guard.print_log_tail(60);
            }
            drop(guard);
            let log = std::fs::read_to_string(util::target_dir().join("bench-sfu-server.log")).unwrap_or_default();
            queue_drops.push((label, w.map_or("default".to_owned(), |w| w.to_string()), worker_queue_drops(&log)));
            lines.extend(results?);
        }
    }
    // Janus: the same shapes, after ours.
    let janus_note = match janus::local_ipv4() {
        None => {
            note("no global IPv4 address (Janus gathers no loopback candidates): Janus not measured");
            Some("Janus was not measured: this machine has no global IPv4 address, and Janus gathers no ICE candidates on loopback.")
        }
        Some(ip) => {
            for (label, publishers, steps) in SHAPES {
                let guard = janus::start(ip, janus::EVENT_LOOPS)?;
                step(&format!("bench sfu: {label} on {STAGES} rooms, Janus ({} event loops), steps {steps} per room", janus::EVENT_LOOPS));
                let (publishers, stages, pid) = (publishers.to_string(), STAGES.to_string(), guard.pid.to_string());
                let (secs, settle, ip) = (seconds.to_string(), SETTLE_SECONDS.to_string(), ip.to_string());
                let workers = format!("{} event loops", janus::EVENT_LOOPS);
                let args = [
                    "--target", "janus", "--janus-url", guard.url.as_str(), "--bind-ip", &ip, "--server-pid", &pid,
                    "--publishers", &publishers, "--stages", &stages, "--steps", steps, "--seconds", &secs,
                    "--settle-seconds", &settle, "--label", label, "--workers", &workers,
                ];
                println!("$ {} {}", generator.display(), args.join(" "));
                let mut cmd = Command::new(&generator);
                cmd.args(args).current_dir(util::root());
                let results = collect_bench_lines(cmd, "sfu_load (janus)");
                if results.is_err() {
                    guard.print_log_tail(60);
                }
                drop(guard);
                lines.extend(results?);
            }
            None
        }
    };
    let section = render(&lines, &queue_drops, &load_before, &loadavg(), seconds, janus_note)?;
    let path = util::root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n## Machine\n".into());
    std::fs::write(&path, splice_between(&old, BEGIN, END, &section)).context("write BENCHMARKS.md")?;
    step("bench sfu: updated BENCHMARKS.md");
    println!("{section}");
    Ok(())
}

fn sfu_name(m: &BTreeMap<String, String>) -> &'static str {
    if m.get("target").map(String::as_str) == Some("janus") {
        "Janus"
    } else {
        "ours"
    }
}

/// "2 SFU worker(s)" (ours) or "2 event loops" (Janus).
fn threads(m: &BTreeMap<String, String>) -> String {
    let workers = m.get("workers").cloned().unwrap_or_else(|| "—".into());
    match sfu_name(m) {
        "Janus" => workers,
        _ => format!("{workers} SFU worker(s)"),
    }
}

/// The "side by side with Janus" table: each load's summaries, ours and
/// Janus's, and ours ÷ Janus's subscribers per core.
fn side_by_side(md: &mut String, lines: &[BTreeMap<String, String>], janus_note: Option<&str>) -> Result<()> {
    writeln!(md, "### Side by side with Janus")?;
    writeln!(md)?;
    if let Some(note) = janus_note {
        writeln!(md, "{note}")?;
        writeln!(md)?;
        return Ok(());
    }
    let summaries: Vec<&BTreeMap<String, String>> =
        lines.iter().filter(|m| m.get("bench").map(String::as_str) == Some("sfuCapacitySummary")).collect();
    writeln!(
        md,
        "| load | SFU | threads | largest N under 1 % loss | on the top layer there | server CPU there | subscribers per core | \
         subscriptions per core | server CPU per forwarded Mbit/s | forwarded per core | \
         ours ÷ Janus, subscribers per core |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    let field = |m: &BTreeMap<String, String>, key: &str| {
        m.get(key).cloned().filter(|v| v != "null").unwrap_or_else(|| "—".into())
    };
    let mut labels: Vec<&str> = Vec::new();
    for m in &summaries {
        if let Some(l) = m.get("label").map(String::as_str).filter(|l| !labels.contains(l)) {
            labels.push(l);
        }
    }
    for label in labels {
        let of_label = summaries.iter().filter(|m| m.get("label").map(String::as_str) == Some(label));
        let janus_per_core = of_label
            .clone()
            .find(|m| sfu_name(m) == "Janus")
            .and_then(|m| number(m, "subscribersPerCore"))
            .filter(|v| *v > 0.0);
        let mut rows: Vec<&&BTreeMap<String, String>> = of_label.collect();
        // Ours first, Janus last.
        rows.sort_by_key(|m| sfu_name(m) == "Janus");
        for m in rows {
            let threads = threads(m);
            let largest = match (field(m, "maxSubscribersUnderLimit"), m.get("limitReached").map(String::as_str)) {
                (n, Some("false")) => format!("≥ {n} (no step missed)"),
                (n, _) => n,
            };
            let cores_there = number(m, "serverCoresThere").map_or("—".to_owned(), |c| format!("{:.0} %", c * 100.0));
            let ratio = match (sfu_name(m), number(m, "subscribersPerCore"), janus_per_core) {
                ("Janus", _, Some(_)) => "1".to_owned(),
                (_, Some(ours), Some(janus)) => format!("**{:.2}**", ours / janus),
                _ => "—".to_owned(),
            };
            let per_core_mbps = number(m, "serverCpuPercentPerMbps")
                .filter(|v| *v > 0.0)
                .map_or("—".to_owned(), |v| format!("{:.0} Mbit/s", 100.0 / v));
            writeln!(
                md,
                "| {label} ({} stages) | {} | {threads} | {largest} | {} of {} | {cores_there} | {} | {} | {} % | {per_core_mbps} | \
                 {ratio} |",
                field(m, "stages"),
                sfu_name(m),
                field(m, "topLayerThere"),
                field(m, "subscriptionsThere"),
                field(m, "subscribersPerCore"),
                field(m, "subscriptionsPerCore"),
                field(m, "serverCpuPercentPerMbps"),
            )?;
        }
    }
    writeln!(md)?;
    writeln!(
        md,
        "Janus {}: Debian's `janus` started by the bench with a generated configuration (only the HTTP transport and the \
         videoroom plugin; {} static event loops, Janus's media threads shared by all handles, instead of its default \
         thread per handle, as many as our largest worker count; no STUN; a self-signed DTLS certificate). A room per \
         stage (VP8, Opus, no bitrate cap); each publisher joins with the same str0m simulcast offer as against our SFU \
         (rids `low`, `mid`, `high`, `rid_order` `lmh`); each subscription is a subscriber handle on one feed (one peer \
         connection per publisher, as against ours) that answers Janus's offer and asks for `substream` 2, the top \
         layer. Janus gathers no ICE candidates on loopback interfaces, so against Janus every peer binds the machine's \
         first global IPv4 address (the kernel still carries the traffic over `lo`). Same steps, settle and measured \
         seconds, the same loss and bitrate accounting; Janus's CPU is utime + stime of its process, its socket drops \
         those of the ports in its candidates. Subscribers per core compare subscribers, not bits: where our SFU's \
         bandwidth estimate moved subscribers down to `mid` (\"on the top layer there\") it forwarded less per \
         subscriber than Janus, which keeps every subscriber on the substream asked for; \"forwarded per core\" \
         (Mbit/s into the subscribers per core of server CPU) compares the forwarding work itself.",
        janus_version().unwrap_or_else(|| "(version unknown)".into()),
        janus::EVENT_LOOPS,
    )?;
    writeln!(md)?;
    Ok(())
}

/// `1.1.2` from `janus --version` (which exits with 1 after printing it).
fn janus_version() -> Option<String> {
    let out = Command::new("janus").arg("--version").output().ok()?;
    version_of(&String::from_utf8_lossy(&out.stdout))
}

fn version_of(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("Janus version:"))?;
    let (_, version) = line.rsplit_once('(')?;
    Some(version.trim_end_matches(')').to_owned())
}

/// Packets the server's log says it dropped at full SFU worker queues (the
/// dispatcher's `dropped=N`; a lower bound, the warning is throttled).
fn worker_queue_drops(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("SFU worker queue full"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("dropped="))?.parse::<u64>().ok())
        .sum()
}

fn render(
    lines: &[BTreeMap<String, String>],
    queue_drops: &[(&str, String, u64)],
    load_before: &str,
    load_after: &str,
    seconds: u64,
    janus_note: Option<&str>,
) -> Result<String> {
    let (cores, cpu) = machine();
    let date = util::probe("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let of = |kind: &'static str| lines.iter().filter(move |m| m.get("bench").map(String::as_str) == Some(kind));
    // Lines of our server (older generators printed no target).
    let is_janus = |m: &&BTreeMap<String, String>| m.get("target").map(String::as_str) == Some("janus");
    let ours = |kind: &'static str| of(kind).filter(move |m| !is_janus(m));
    let field = |m: &BTreeMap<String, String>, key: &str| {
        m.get(key).cloned().filter(|v| v != "null").unwrap_or_else(|| "—".into())
    };
    let mut md = String::new();
    writeln!(md, "{BEGIN}")?;
    writeln!(md, "## SFU capacity")?;
    writeln!(md)?;
    writeln!(
        md,
        "Written by `cargo xtask bench sfu` ({}). Release builds: server `target/release/stagecast`, load generator \
         `target/release/examples/sfu_load`, on the same machine: {cpu}, `nproc` {cores}; load average before {load_before}, \
         after {load_after}. Loopback UDP.",
        date.trim()
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| load | workers | largest N under 1 % loss | on the top layer there | server CPU there | subscribers per core | \
         subscriptions per core | server CPU per forwarded Mbit/s | forwarded per core | \
         goal ≥ {GOAL_PER_CORE:.0} per core (720p subscriptions) |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    for m in ours("sfuCapacitySummary") {
        // One publisher: subscribers; twelve: each subscriber takes twelve 720p streams.
        let per_core = number(m, "subscriptionsPerCore");
        let verdict = match per_core {
            Some(v) if v >= GOAL_PER_CORE => "met",
            Some(_) => "**missed**",
            None => "not measured",
        };
        let cores_there = number(m, "serverCoresThere").map_or("—".to_owned(), |c| format!("{:.0} %", c * 100.0));
        let largest = match (field(m, "maxSubscribersUnderLimit"), m.get("limitReached").map(String::as_str)) {
            (n, Some("false")) => format!("≥ {n} (no step missed)"),
            (n, _) => n,
        };
        let per_core_mbps = number(m, "serverCpuPercentPerMbps")
            .filter(|v| *v > 0.0)
            .map_or("—".to_owned(), |v| format!("{:.0} Mbit/s", 100.0 / v));
        writeln!(
            md,
            "| {} ({} stages) | {} | {largest} | {} of {} | {cores_there} | {} | {} | {} % | {per_core_mbps} | {verdict} |",
            field(m, "label"),
            field(m, "stages"),
            field(m, "workers"),
            field(m, "topLayerThere"),
            field(m, "subscriptionsThere"),
            field(m, "subscribersPerCore"),
            field(m, "subscriptionsPerCore"),
            field(m, "serverCpuPercentPerMbps"),
        )?;
    }
    writeln!(md)?;
    side_by_side(&mut md, lines, janus_note)?;
    writeln!(md, "Every step (N subscribers in all; each subscribes to every publisher of its stage):")?;
    writeln!(md)?;
    writeln!(
        md,
        "| load | SFU | workers | N | subscriptions connected | loss: packets / video frames / audio | worst subscriber | \
         layers high / mid / low | forwarded Mbit/s | server CPU | CPU % per Mbit/s | server socket drops | \
         generator CPU | generator socket drops | under 1 % |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    let mut saturated = false;
    for m in of("sfuCapacity") {
        saturated |= m.get("generatorSaturated").map(String::as_str) == Some("true");
        writeln!(
            md,
            "| {} | {} | {} | {} | {} / {} | {} % / {} % / {} % | {} % | {} / {} / {} | {} | {} % | {} | {} | {} % | {} | {} |",
            field(m, "label"),
            sfu_name(m),
            field(m, "workers"),
            field(m, "subscribers"),
            field(m, "subscriptionsConnected"),
            field(m, "subscriptions"),
            field(m, "packetLossPercent"),
            field(m, "videoFrameLossPercent"),
            field(m, "audioLossPercent"),
            field(m, "subscriberLossMax"),
            field(m, "layerHigh"),
            field(m, "layerMid"),
            field(m, "layerLow"),
            field(m, "forwardedMbps"),
            field(m, "serverCpuPercent"),
            field(m, "serverCpuPercentPerMbps"),
            field(m, "serverSocketDrops"),
            field(m, "generatorCpuPercent"),
            field(m, "generatorSocketDrops"),
            if m.get("pass").map(String::as_str) == Some("true") { "yes" } else { "**no**" },
        )?;
    }
    writeln!(md)?;
    // Where each run stopped, and what was busy then.
    let misses: Vec<String> = of("sfuCapacity")
        .filter(|m| m.get("pass").map(String::as_str) != Some("true"))
        .map(|m| {
            format!(
                "{}, {}, {}, N {}: server {} % and generator {} % CPU of the machine's {} %, {} datagrams dropped at the \
                 server's socket(s), {} at the generator's",
                field(m, "label"),
                sfu_name(m),
                threads(m),
                field(m, "subscribers"),
                field(m, "serverCpuPercent"),
                field(m, "generatorCpuPercent"),
                cores.parse::<u32>().map_or("?".to_owned(), |c| (c * 100).to_string()),
                field(m, "serverSocketDrops"),
                field(m, "generatorSocketDrops"),
            )
        })
        .collect();
    if !misses.is_empty() {
        writeln!(md, "Where each load first missed: {}.", misses.join("; "))?;
        writeln!(md)?;
    }
    let queues: Vec<String> =
        queue_drops.iter().map(|(label, workers, n)| format!("{label}, {workers} worker(s): {n}")).collect();
    writeln!(
        md,
        "Packets the server logged as dropped at a full SFU worker queue (dispatcher → worker; not in `/metrics`, so \
         counted from the log over each whole run, all steps, a lower bound): {}.",
        queues.join("; ")
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Method: each stage has WHIP-only str0m publishers sending synthetic 720p simulcast at IVS's default layers \
         (`high` 2500 kbit/s 30 fps, `mid` 700 kbit/s 20 fps, `low` 200 kbit/s 15 fps; VP8-looking frames of bitrate / fps \
         bytes, a keyframe only when the SFU asks) and 80-byte audio at 50 packets/s. Subscribers are event-plane members \
         with one str0m subscription per publisher at `?layer=highest`, added in steps; after they connect and {SETTLE_SECONDS} s \
         settle, {seconds} s are measured. Loss: RTP sequence numbers per subscription (SFU → subscriber; a retransmission \
         fills its hole), and frame numbers the generator writes into every frame and audio packet (end to end: a frame \
         the SFU never forwarded counts); a step passes when all three are under 1 %, every subscription connected and \
         each received video. Layers: the layer most of a subscription's video packets belonged to; the SFU's bandwidth \
         estimate moves subscribers that asked for the highest layer down to `mid` on loopback even at low load, so the \
         forwarded bitrate per subscriber is often below the top layer's (≈ 2.6 Mbit/s with audio on the wire): \
         \"forwarded per core\" (100 ÷ CPU % per Mbit/s) depends on it least. Forwarded Mbit/s: UDP \
         bytes into the subscribers' sockets (media, padding the estimate probes with, RTCP). Server CPU: utime + stime \
         of the server process over the window (100 % = one core); subscribers per core = N ÷ (server CPU ÷ 100), \
         subscriptions per core the same for N × publishers. Socket drops: datagrams dropped at a full receive buffer \
         (`/proc/net/udp`) during the window, at the server's media socket (ingest the SFU did not read in time: \
         publishers' frames, subscribers' RTCP) and at the generator's \
         sockets (loss the generator caused itself). The generator runs on one thread; its own CPU is shown."
    )?;
    writeln!(md)?;
    if saturated {
        writeln!(
            md,
            "> **The generator was saturated** in at least one step (≥ 90 % of its core, or its sockets dropped datagrams): \
             there, part of the loss is the generator's, and the server had the rest of the machine only. On a machine this \
             small the numbers bound the server's capacity from below."
        )?;
        writeln!(md)?;
    }
    writeln!(md, "The layer-switch time after a bandwidth drop is in the network-recovery section.")?;
    writeln!(md, "{END}")?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_janus_version_is_read_from_its_banner() {
        let banner = "Janus version: 1102 (1.1.2)\nJanus commit: not-a-git-repo\nCompiled on:  Thu Jan 19 08:09:02 UTC 2023\n";
        assert_eq!(version_of(banner).as_deref(), Some("1.1.2"));
        assert_eq!(version_of("Usage: janus [OPTION?]"), None);
    }

    fn summary(target: &str, label: &str, workers: &str, per_core: &str) -> BTreeMap<String, String> {
        [
            ("bench", "sfuCapacitySummary"),
            ("target", target),
            ("label", label),
            ("workers", workers),
            ("stages", "2"),
            ("subscribersPerCore", per_core),
            ("maxSubscribersUnderLimit", "100"),
            ("limitReached", "true"),
            ("serverCpuPercentPerMbps", "0.2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn the_side_by_side_table_divides_ours_by_janus_per_load() -> Result<()> {
        let lines = vec![
            summary("stagecast", "1 publisher → N", "1", "240.0"),
            summary("stagecast", "1 publisher → N", "2", "230.0"),
            summary("janus", "1 publisher → N", "2 event loops", "160.0"),
            // A load Janus never passed a step of: no ratio.
            summary("stagecast", "12 publishers → N", "2", "20.0"),
            summary("janus", "12 publishers → N", "2 event loops", "null"),
        ];
        let mut md = String::new();
        side_by_side(&mut md, &lines, None)?;
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| 1") && l.contains("(2 stages)")).collect();
        assert_eq!(rows.len(), 5, "{md}");
        assert!(rows[0].contains("| ours | 1 SFU worker(s) |") && rows[0].ends_with("| **1.50** |"), "{}", rows[0]);
        assert!(rows[1].ends_with("| **1.44** |"), "{}", rows[1]);
        assert!(rows[2].contains("| Janus | 2 event loops |") && rows[2].ends_with("| 1 |"), "{}", rows[2]);
        assert!(rows[3].ends_with("| — |") && rows[4].ends_with("| — |"), "{md}");
        assert!(rows[0].contains("| 500 Mbit/s |"), "forwarded per core: {}", rows[0]);

        let mut skipped = String::new();
        side_by_side(&mut skipped, &lines, Some("Janus was not measured: no address."))?;
        assert!(skipped.contains("Janus was not measured") && !skipped.contains("| Janus |"));
        Ok(())
    }

    #[test]
    fn worker_queue_drops_are_summed_from_the_throttled_warnings() {
        let log = "2026-12-01T21:38:16Z  WARN stagecast_server::sfu::driver: SFU worker queue full, packets dropped worker=1 dropped=3\n\
                   2026-12-01T21:38:17Z  INFO stagecast_server::sfu::core: subscribe session created\n\
                   2026-12-01T21:38:21Z  WARN stagecast_server::sfu::driver: SFU worker queue full, packets dropped worker=0 dropped=40\n";
        assert_eq!(worker_queue_drops(log), 43);
        assert_eq!(worker_queue_drops(""), 0);
    }
}
