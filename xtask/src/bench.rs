//! `cargo xtask bench`: stage latency through the sample app, channel
//! glass-to-glass latency (hls.js and the IVS Player), the broadcast
//! compositor, chat fan-out (server/examples/chat_load.rs), SDK size, the
//! stage soak ([`crate::soak`]) and network recovery (tests/bench/
//! net-recovery.mjs: the network journeys' numbers as medians over several
//! runs, in namespaces, as root); writes BENCHMARKS.md. `cargo xtask bench
//! net` runs only network recovery and replaces its section; `cargo xtask
//! bench sfu` runs only SFU capacity ([`sfu`], minutes of release builds
//! and ramps, so not part of the full run) and replaces its section.
//!
//! Benchmarks are measurements, not tests: a missed target is reported in the
//! table, not turned into a failure. A harness that cannot measure (no frames,
//! a page error) does fail the command.

mod scale;
mod janus;
mod net;
mod sfu;

use crate::util::{self, note, step};
use crate::{build, setup, test};
use net::{net_recovery, net_section_of, splice_net};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Chat fan-out load: one room, this many WebSocket clients…
const CHAT_CLIENTS: u32 = 1000;
/// …and this many messages per second in total (the most a room allows).
const CHAT_RATE: u32 = 100;
/// How long the senders send.
const CHAT_SECONDS: u32 = 10;
/// …spread over this many senders: 2 msg/s each, under the server's
/// per-connection limit (3/s), as a busy room of people chatting is.
const CHAT_SENDERS: u32 = 50;

/// Builds, runs the stage, compositor, channel and chat harnesses against one
/// fresh server (in that order), writes BENCHMARKS.md.
pub fn run() -> Result<()> {
    setup::run(setup::Needs::Browser)?;
    build::run()?;
    // Same (dev) profile as the server binary: a release build of the whole
    // server dependency tree takes too long on a small machine.
    util::run(Command::new("cargo").args(["build", "-p", "stagecast-server", "--example", "chat_load"]).current_dir(util::root()))?;
    let root = util::root();
    // Measured now: sdk/pkg is what this build produced.
    let sizes = build::sdk_size(&root.join(build::PKG_DIR))?;
    let out = util::target_dir().join("bench/stage-latency.txt");
    std::fs::create_dir_all(out.parent().expect("invariant: the path has a parent"))?;
    let _ = std::fs::remove_file(&out);

    let (guard, url, api_key) = test::start_server("bench")?;
    let load_before = loadavg();
    let measured = (|| -> Result<Measured> {
        step("bench: stage glass-to-glass and join → first frame (tests/bench/stage-latency.mjs)");
        util::run(
            Command::new("node")
                .arg("tests/bench/stage-latency.mjs")
                .current_dir(&root)
                .env("STAGECAST_URL", &url)
                .env("STAGECAST_API_KEY", &api_key)
                .env("CHROMIUM_PATH", setup::CHROMIUM)
                .env("BENCH_OUT", &out),
        )?;
        let latency = read_pairs(&out)?;
        step("bench: compositor, 1280×720 @ 30 fps, 1 / 4 / 12 tiles (tests/bench/compositor.mjs)");
        let compositor = run_json_bench(&root, "tests/bench/compositor.mjs", &url, &api_key)?;
        step("bench: channel glass-to-glass, hls.js and IVS Player (tests/bench/channel-latency.mjs)");
        let channel = run_json_bench(&root, "tests/bench/channel-latency.mjs", &url, &api_key)?;
        step(&format!(
            "bench: chat fan-out, {CHAT_CLIENTS} clients × {CHAT_RATE} msg/s for {CHAT_SECONDS} s (server/examples/chat_load.rs)"
        ));
        let chat = run_chat_load(&url, &api_key)?;
        Ok(Measured { latency, compositor, channel, chat, load: (load_before, loadavg()) })
    })();
    if measured.is_err() {
        guard.print_log_tail(60);
    }
    drop(guard);
    let measured = measured?;

    // Its own server, so the churn does not share one with the others.
    let soak = crate::soak::measure(crate::soak::seconds_from_env()?)?;
    let path = root.join("BENCHMARKS.md");
    let mut markdown = crate::soak::splice(&render(&measured, &sizes)?, &soak);
    // Written before the network harness runs (with its last section kept),
    // so a failure there does not lose what the others measured.
    let previous = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some(old) = net_section_of(&previous) {
        markdown = splice_net(&markdown, &old);
    }
    std::fs::write(&path, &markdown).context("write BENCHMARKS.md")?;
    step("bench: wrote BENCHMARKS.md (network recovery next)");

    let net = net_recovery(&markdown)?;
    let markdown = splice_net(&markdown, &net);
    std::fs::write(&path, &markdown).context("write BENCHMARKS.md")?;
    step("bench: wrote BENCHMARKS.md");
    println!("{markdown}");
    Ok(())
}

/// `cargo xtask bench scale`: chat fan-out at 10,000 clients on one node and
/// on two with Redis, and joining a stage through a node that is not its
/// media node ([`scale`]).
pub fn run_scale(args: &[String]) -> Result<()> {
    scale::run(args)
}

/// `cargo xtask bench sfu [--seconds N]`: SFU capacity alone ([`sfu`]).
pub fn run_sfu(args: &[String]) -> Result<()> {
    sfu::run(args)
}

/// `cargo xtask bench net`: builds, runs only the network-recovery harness
/// and replaces its section of BENCHMARKS.md.
pub fn run_net(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask bench net   (BENCH_RUNS=N sets the runs per case, default 5)");
    }
    setup::run(setup::Needs::Browser)?;
    build::run()?;
    let path = util::root().join("BENCHMARKS.md");
    let old =
        std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n## Machine\n".into());
    let section = net_recovery(&old)?;
    std::fs::write(&path, splice_net(&old, &section)).context("write BENCHMARKS.md")?;
    step("bench net: updated BENCHMARKS.md");
    println!("{section}");
    Ok(())
}

fn read_pairs(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

/// What the three harnesses measured.
struct Measured {
    /// `key value` pairs of tests/bench/stage-latency.mjs.
    latency: BTreeMap<String, String>,
    /// One map per `BENCH {json}` line of tests/bench/compositor.mjs.
    compositor: Vec<BTreeMap<String, String>>,
    /// One map per `BENCH {json}` line of tests/bench/channel-latency.mjs.
    channel: Vec<BTreeMap<String, String>>,
    /// The `chatFanout` object of server/examples/chat_load.rs.
    chat: BTreeMap<String, String>,
    /// `/proc/loadavg` before and after the harnesses: the machine is shared,
    /// and other work on it skews every number here.
    load: (String, String),
}

/// The 1/5/15-minute load averages, as `/proc/loadavg` shows them.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Runs a node harness that prints `BENCH {json}` lines (flat objects),
/// echoing its output as it comes, and returns the parsed lines.
fn run_json_bench(root: &Path, script: &str, url: &str, api_key: &str) -> Result<Vec<BTreeMap<String, String>>> {
    println!("$ (cd {} && STAGECAST_URL={url} STAGECAST_API_KEY=*** node {script})", root.display());
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .current_dir(root)
        .env("STAGECAST_URL", url)
        .env("STAGECAST_API_KEY", api_key)
        .env("CHROMIUM_PATH", setup::CHROMIUM);
    collect_bench_lines(cmd, &format!("node {script}"))
}

/// Runs the chat load generator against the bench server (found by its
/// `--listen` address, to read its CPU time and RSS) and returns its
/// `chatFanout` object.
fn run_chat_load(url: &str, api_key: &str) -> Result<BTreeMap<String, String>> {
    let generator = util::target_dir().join("debug/examples/chat_load");
    let listen = url.strip_prefix("http://").unwrap_or(url);
    let pid = server_pid(listen);
    if pid.is_none() {
        note("could not find the server's pid in /proc; server CPU / RSS will not be measured");
    }
    let (clients, rate, seconds) = (CHAT_CLIENTS.to_string(), CHAT_RATE.to_string(), CHAT_SECONDS.to_string());
    let senders = CHAT_SENDERS.to_string();
    let mut args = vec!["--url", url, "--clients", &clients, "--rate", &rate, "--seconds", &seconds, "--senders", &senders];
    let pid_text = pid.map(|p| p.to_string());
    if let Some(pid) = &pid_text {
        args.extend(["--server-pid", pid.as_str()]);
    }
    println!("$ {} --api-key *** {}", generator.display(), args.join(" "));
    let mut cmd = Command::new(&generator);
    cmd.args(&args).arg("--api-key").arg(api_key).current_dir(util::root());
    let results = collect_bench_lines(cmd, "chat_load")?;
    results
        .into_iter()
        .find(|m| m.get("bench").map(String::as_str) == Some("chatFanout"))
        .context("chat_load printed no chatFanout BENCH line")
}

/// The pid of the process whose command line has `--listen <listen>`: the
/// bench server (test::ServerGuard does not expose its child).
pub(crate) fn server_pid(listen: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2).any(|w| w[0] == b"--listen" && w[1] == listen.as_bytes()).then_some(pid)
    })
}

/// Runs a harness command that prints `BENCH {json}` lines, echoing its
/// output as it comes, and returns the parsed lines.
pub(crate) fn collect_bench_lines(mut cmd: Command, label: &str) -> Result<Vec<BTreeMap<String, String>>> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("could not start `{label}`"))?;
    let stdout = child.stdout.take().context("the harness has no stdout pipe")?;
    let mut results = Vec::new();
    let mut parse_error = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("read the output of {label}"))?;
        println!("{line}");
        if let Some(json) = line.strip_prefix("BENCH ") {
            match parse_bench_line(json) {
                Ok(map) => results.push(map),
                Err(e) => parse_error = Some(e.context(format!("{label} printed a bad BENCH line: {json}"))),
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{label}` failed ({status})");
    }
    if let Some(e) = parse_error {
        return Err(e);
    }
    if results.is_empty() {
        bail!("`{label}` printed no BENCH line");
    }
    note(&format!("({:.0}s)", started.elapsed().as_secs_f64()));
    Ok(results)
}

/// A flat object, or `{"name": {flat object}}` (as chat_load prints), whose
/// inner object gets `"bench": "name"`.
fn parse_bench_line(text: &str) -> Result<BTreeMap<String, String>> {
    let wrapped = text.trim().strip_prefix("{\"").and_then(|rest| {
        let (name, inner) = rest.split_once("\":")?;
        let inner = inner.trim_start().strip_suffix('}')?.trim_end();
        (inner.starts_with('{') && name.chars().all(|c| c.is_ascii_alphanumeric())).then_some((name, inner))
    });
    match wrapped {
        Some((name, inner)) => {
            let mut map = parse_flat_json(inner)?;
            map.insert("bench".into(), name.into());
            Ok(map)
        }
        None => parse_flat_json(text),
    }
}

/// Parses one flat JSON object (string, number, boolean or null values; no
/// nesting) into key → value text, strings unquoted. The harnesses print
/// only such objects, and xtask carries no JSON dependency.
fn parse_flat_json(text: &str) -> Result<BTreeMap<String, String>> {
    fn string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String> {
        let mut out = String::new();
        loop {
            match chars.next() {
                Some('"') => return Ok(out),
                Some('\\') => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c) => out.push(c),
                    None => bail!("unterminated escape"),
                },
                Some(c) => out.push(c),
                None => bail!("unterminated string"),
            }
        }
    }
    fn skip_ws(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    }
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .context("not a JSON object")?;
    let mut chars = body.chars().peekable();
    let mut map = BTreeMap::new();
    loop {
        skip_ws(&mut chars);
        match chars.next() {
            None => break,
            Some('"') => {}
            Some(c) => bail!("expected a key, found {c:?}"),
        }
        let key = string(&mut chars)?;
        skip_ws(&mut chars);
        if chars.next() != Some(':') {
            bail!("expected ':' after {key:?}");
        }
        skip_ws(&mut chars);
        let value = if chars.next_if_eq(&'"').is_some() {
            string(&mut chars)?
        } else {
            let mut raw = String::new();
            while let Some(c) = chars.next_if(|c| *c != ',') {
                if c == '{' || c == '[' {
                    bail!("nested value under {key:?}");
                }
                raw.push(c);
            }
            raw.trim().to_owned()
        };
        map.insert(key, value);
        skip_ws(&mut chars);
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(c) => bail!("expected ',' or the end, found {c:?}"),
        }
    }
    Ok(map)
}

fn number(map: &BTreeMap<String, String>, key: &str) -> Option<f64> {
    map.get(key).and_then(|v| v.parse().ok()).filter(|v: &f64| v.is_finite())
}

/// "met" when `value` ≤ `target`.
fn verdict(value: Option<f64>, target: f64) -> &'static str {
    match value {
        Some(v) if v <= target => "met",
        Some(_) => "**missed**",
        None => "not measured",
    }
}

/// "met" when `value` ≥ `target`.
fn verdict_at_least(value: Option<f64>, target: f64) -> &'static str {
    match value {
        Some(v) if v >= target => "met",
        Some(_) => "**missed**",
        None => "not measured",
    }
}

/// Both verdicts must be "met" for the row to be.
fn both(a: &'static str, b: &'static str) -> &'static str {
    if a == "met" {
        b
    } else {
        a
    }
}

pub(crate) fn machine() -> (String, String) {
    let cores = util::probe("nproc", &[]).map(|s| s.trim().to_owned()).unwrap_or_else(|| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    (cores, cpu)
}

fn render(measured: &Measured, sizes: &[(String, u64)]) -> Result<String> {
    let latency = &measured.latency;
    let (cores, cpu) = machine();
    let chromium = util::probe(setup::CHROMIUM, &["--version"]).unwrap_or_default();
    let date = util::probe("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let p50 = number(latency, "glass_p50_ms");
    let p95 = number(latency, "glass_p95_ms");
    let join = number(latency, "join_to_first_frame_ms");
    let total_kb = sizes.iter().map(|(_, s)| *s).sum::<u64>() as f64 / 1024.0;
    let show = |v: Option<f64>, unit: &str| v.map_or("—".to_owned(), |v| format!("{v:.0} {unit}"));
    let show1 = |v: Option<f64>, unit: &str| v.map_or("—".to_owned(), |v| format!("{v:.1} {unit}"));
    let player = |name: &str| measured.channel.iter().find(|m| m.get("player").map(String::as_str) == Some(name));

    let mut md = String::new();
    writeln!(md, "# Benchmarks")?;
    writeln!(md)?;
    writeln!(md, "Written by `cargo xtask bench` ({}). Re-run it to refresh this file.", date.trim())?;
    writeln!(md)?;
    writeln!(md, "| what | target | median / p50 | p95 | |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    writeln!(
        md,
        "| stage glass-to-glass, loopback | p50 ≤ 150 ms | {} | {} | {} |",
        show(p50, "ms"),
        show(p95, "ms"),
        verdict(p50, 150.0)
    )?;
    writeln!(md, "| join() → first remote frame | ≤ 1000 ms | {} | — | {} |", show(join, "ms"), verdict(join, 1000.0))?;
    for (name, label, target) in [
        ("hlsjs", "channel glass-to-glass, hls.js low-latency mode", Some(1000.0)),
        ("ivs", "channel glass-to-glass, IVS Player (low-latency mode)", Some(2500.0)),
    ] {
        let m = player(name);
        let p50 = m.and_then(|m| number(m, "p50_ms"));
        let p95 = m.and_then(|m| number(m, "p95_ms"));
        let (target_text, met) = match target {
            Some(t) => (format!("p50 ≤ {t:.0} ms"), verdict(p50, t)),
            None => ("— (reference)".to_owned(), if p50.is_some() { "" } else { "not measured" }),
        };
        writeln!(md, "| {label} | {target_text} | {} | {} | {met} |", show(p50, "ms"), show(p95, "ms"))?;
        let per_min = |key: &str| m.and_then(|m| number(m, key));
        writeln!(
            md,
            "| origin cost per viewer, {name} | — | {} requests/min, {} KB/min | per minute: {} | |",
            per_min("origin_requests_per_min").map_or("—".to_owned(), |v| format!("{v:.0}")),
            per_min("origin_kb_per_min").map_or("—".to_owned(), |v| format!("{v:.0}")),
            m.and_then(|m| m.get("origin_by_kind")).map_or("—", String::as_str),
        )?;
    }
    for m in &measured.compositor {
        let tiles = m.get("tiles").map_or("?", String::as_str);
        let fps = number(m, "fps_median");
        let p95 = number(m, "compose_p95_ms");
        let mean = number(m, "compose_mean_ms");
        writeln!(
            md,
            "| compositor 1280×720 @ 30 fps, {tiles} tile{} | ≥ 29.5 fps out, p95 compose ≤ 8 ms | {} out, {} compose (mean) | {} compose | {} |",
            if tiles == "1" { "" } else { "s" },
            show1(fps, "fps"),
            show1(mean, "ms"),
            show1(p95, "ms"),
            both(verdict_at_least(fps, 29.5), verdict(p95, 8.0)),
        )?;
    }
    let chat = &measured.chat;
    let chat_p50 = number(chat, "p50");
    let chat_p99 = number(chat, "p99");
    let delivered = number(chat, "delivered");
    let expected = number(chat, "expected");
    let none_lost = match (delivered, expected) {
        (Some(d), Some(e)) if d >= e && e > 0.0 => "met",
        (Some(_), Some(_)) => "**missed** (messages lost)",
        _ => "not measured",
    };
    writeln!(
        md,
        "| chat fan-out, {} clients × {} msg/s (p50/p99) | p99 ≤ 50 ms, none lost | {} | p99 {} | {} |",
        chat.get("clients").map_or("?", String::as_str),
        chat.get("messagesPerSecond").map_or("?", String::as_str),
        show1(chat_p50, "ms"),
        show1(chat_p99, "ms"),
        both(verdict(chat_p99, 50.0), none_lost),
    )?;
    writeln!(
        md,
        "| server CPU / RSS during chat fan-out | — | {} CPU | {} RSS (peak) | |",
        number(chat, "serverCpuPercent").map_or("—".to_owned(), |v| format!("{v:.0} %")),
        show(number(chat, "serverRssPeakMb"), "MB"),
    )?;
    writeln!(
        md,
        "| SDK size (wasm + JS, gzip -9) | ≤ 120 KB | {total_kb:.1} KB | — | {} |",
        verdict(Some(total_kb), 120.0)
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Stage glass-to-glass: {} frames decoded ({} undecodable), min {} / max {}.",
        latency.get("glass_frames").map_or("?", String::as_str),
        latency.get("glass_undecodable").map_or("?", String::as_str),
        show(number(latency, "glass_min_ms"), "ms"),
        show(number(latency, "glass_max_ms"), "ms"),
    )?;
    writeln!(md)?;
    for (name, label) in [("hlsjs", "hls.js"), ("ivs", "IVS Player")] {
        if let Some(error) = player(name).and_then(|m| m.get("error")) {
            writeln!(md, "Channel, {label}: not measured: {error}")?;
            writeln!(md)?;
        } else if let Some(m) = player(name) {
            let own = match name {
                "hlsjs" => format!(
                    "hls.js's own `latency` {} (target {})",
                    show(number(m, "player_latency_ms"), "ms"),
                    show(number(m, "player_target_latency_ms"), "ms")
                ),
                _ => format!(
                    "the player's `getLiveLatency()` {}, `isLiveLowLatency()` {}",
                    show(number(m, "player_latency_ms"), "ms"),
                    if number(m, "player_low_latency") == Some(1.0) { "true" } else { "false" }
                ),
            };
            writeln!(
                md,
                "Channel, {label}: {} frames decoded ({} undecodable), min {} / max {}, first frame {} after `load`; {own}.",
                m.get("frames").map_or("?", String::as_str),
                m.get("undecodable").map_or("?", String::as_str),
                show(number(m, "min_ms"), "ms"),
                show(number(m, "max_ms"), "ms"),
                show(number(m, "first_frame_ms"), "ms"),
            )?;
            writeln!(md)?;
        }
    }
    if !measured.compositor.is_empty() {
        let cases = measured
            .compositor
            .iter()
            .map(|m| {
                format!(
                    "{} ({} grid): fps min {}, {} frames",
                    m.get("tiles").map_or("?", String::as_str),
                    m.get("grid").map_or("?", String::as_str),
                    show(number(m, "fps_min"), "fps"),
                    m.get("frames").map_or("?", String::as_str),
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        writeln!(md, "Compositor, tiles: {cases}.")?;
        writeln!(md)?;
    }
    let field = |key: &str| chat.get(key).map_or("?", String::as_str);
    writeln!(
        md,
        "Chat fan-out: {} messages sent by {} senders ({} refused with 429 by the room's \
         one-second sliding window, {} msg/s sent on average), {} of {} expected deliveries \
         arrived ({} clients disconnected), max {}; server CPU is the share of one core over the \
         run (100 % = one core); the generator itself used {} % of a core on the same machine. \
         Split at the server's `SendTime` (wall clock, ms; every 10th client): generator → server \
         p50 {} / p99 {} ms, server → client p50 {} / p99 {} ms.",
        field("sent"),
        field("senders"),
        field("rejected"),
        field("achievedRate"),
        field("delivered"),
        field("expected"),
        field("disconnected"),
        show1(number(chat, "max"), "ms"),
        field("generatorCpuPercent"),
        field("ingestP50"),
        field("ingestP99"),
        field("fanoutP50"),
        field("fanoutP99"),
    )?;
    writeln!(md)?;
    writeln!(md, "SDK files: {}.", sizes.iter().map(|(n, s)| format!("`{n}` {:.1} KB", *s as f64 / 1024.0)).collect::<Vec<_>>().join(", "))?;
    writeln!(md)?;
    writeln!(md, "## Machine")?;
    writeln!(md)?;
    writeln!(md, "- CPU: {cpu} (`nproc`: {cores})")?;
    writeln!(md, "- Browser: {} (headless, software video codecs)", chromium.trim())?;
    writeln!(md, "- Server: `target/debug/stagecast` (dev profile, dependencies at opt-level 1), loopback")?;
    writeln!(
        md,
        "- Chat load generator: `target/debug/examples/chat_load` (same dev profile), on the same cores as the server"
    )?;
    writeln!(
        md,
        "- Load average (1/5/15 min) before the harnesses: {}; after: {} (the harnesses' own \
         browsers add to it; a high value before they start means other work shared the CPU and \
         inflated the timings)",
        measured.load.0, measured.load.1
    )?;
    writeln!(md)?;
    writeln!(md, "## Method")?;
    writeln!(md)?;
    writeln!(
        md,
        "`tests/bench/stage-latency.mjs` runs the sample app as people do: a host creates a stage in one \
         browser context, a guest opens the invite link in another (one headless Chromium, so both \
         pages share one clock). The host's camera is a 320×180 canvas that draws the current time \
         (16 bits of milliseconds + an 8-bit check, as 24 black/white cells) every 16 ms and is captured \
         at 30 fps. The guest's page decodes the cells from every remote frame it presents \
         (`requestVideoFrameCallback`) and subtracts the code from the frame's expected display time. \
         The capture cadence adds up to one canvas redraw (≤ 16 ms) to each sample. \
         join() → first frame is measured on the guest: from the sample app's `stage.join()` call \
         (the host is already publishing) to the first presented frame of the host's tile."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "`tests/bench/channel-latency.mjs` creates a channel with `POST /v1/channels`. A publisher page's \
         broadcast client (1280×720, 30 fps, 2.5 Mbps) composites a canvas that is redrawn every 4 ms \
         with the wall-clock time (ms mod 2³², 32 black/white cells, plus the complement in 32 more \
         cells as a check) and broadcasts it with `startBroadcast(streamKey)` over WHIP. A viewer page \
         in the same Chromium plays the channel's `playbackUrl`, first with hls.js \
         (`lowLatencyMode: true`, `maxLiveSyncPlaybackRate: 1.5`), then with the Amazon IVS Player \
         (npm `amazon-ivs-player`, default settings), decodes the code from every presented frame and \
         subtracts it from the frame's expected display time. The first second of playback is not \
         counted (startup), then ≥ 300 frames per player. The IVS Player enters its low-latency \
         mode (`isLiveLowLatency()` true) only on LHLS `#EXT-X-PREFETCH` tags, so the media playlist \
         also names the segment being built that way and a GET of it streams each part as it is cut \
         (`setAutoQualityMode(false)`: no bandwidth probes on one rendition). The origin-cost rows \
         count every HLS request of that viewer (the player's worker included) from load to the last \
         sample: requests and response bytes per minute, in all and by kind of file (playlist, \
         init, part, segment; a streamed prefetch counts as a segment). Media sequence numbers stay \
         below 2³¹: the IVS Player keeps them in a signed 32-bit integer, and numbers above it made \
         it fetch the newest segment ~30 times a second."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "`tests/bench/compositor.mjs` creates a broadcast client at 1280×720, 30 fps (no broadcast: the \
         compositor alone) and adds 1, 4 and 12 animated 320×180 canvas sources \
         (`captureStream(30)` through `addVideoInputDevice`) as a 1×1, 2×2 and 4×3 grid. After a 2 s \
         warm-up it reads `getStats()` every second for 13 s: output fps (frames composed in the last \
         second) every second, and the p95/mean compose time (the SDK keeps the last 300 frames) once \
         that window holds no warm-up frame; the table shows the medians."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "`server/examples/chat_load.rs` creates a room (`maximumMessageRatePerSecond` {CHAT_RATE}, the \
         most a room allows) with `POST /v1/rooms`, mints a chat token per client, and opens \
         {CHAT_CLIENTS} WebSocket clients on `/v1/chat` (IVS Chat messaging protocol). A few of them \
         send `SEND_MESSAGE` requests round-robin on one schedule, {CHAT_RATE} per second in total, for \
         {CHAT_SECONDS} s; each message's `Content` carries its send time on the generator's monotonic \
         clock, and every client (senders included: their copy is the acknowledgement) records \
         receive time − send time for every MESSAGE frame, until all expected deliveries arrived \
         (or 5 s after the last send). The room's rate limit is a sliding one-second window stamped \
         when the server reads each request, so the generator keeps each send ≥ 1.01 s after the one \
         {CHAT_RATE} sends earlier; server read jitter beyond that still gets an occasional 429, \
         reported above and not counted as loss. Server CPU is utime + stime from \
         `/proc/<pid>/stat` over the sending and draining; RSS is `VmRSS` sampled every 200 ms."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Both browsers and the server share the machine's {cores} cores, so encode, decode and the SFU \
         compete for CPU; numbers on a larger machine or across real networks will differ."
    )?;
    note("BENCHMARKS.md rendered");
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_flat_bench_line() -> Result<()> {
        let map = parse_flat_json(r#"{"bench":"channel","player":"hls\"js","p50_ms":1240, "x":null,"ok":true}"#)?;
        assert_eq!(map.get("player").map(String::as_str), Some("hls\"js"));
        assert_eq!(number(&map, "p50_ms"), Some(1240.0));
        assert_eq!(map.get("x").map(String::as_str), Some("null"));
        assert_eq!(number(&map, "x"), None);
        assert_eq!(map.get("ok").map(String::as_str), Some("true"));
        assert!(parse_flat_json(r#"{"a":{"b":1}}"#).is_err());
        assert!(parse_flat_json("[1]").is_err());
        assert!(parse_flat_json("{}")?.is_empty());
        Ok(())
    }

    #[test]
    fn parses_a_wrapped_bench_line() -> Result<()> {
        let map = parse_bench_line(r#"{"chatFanout":{"clients":1000,"p99":12.5,"delivered":5}}"#)?;
        assert_eq!(map.get("bench").map(String::as_str), Some("chatFanout"));
        assert_eq!(number(&map, "p99"), Some(12.5));
        assert_eq!(number(&map, "clients"), Some(1000.0));
        let flat = parse_bench_line(r#"{"bench":"channel","p50_ms":3}"#)?;
        assert_eq!(flat.get("bench").map(String::as_str), Some("channel"));
        assert!(parse_bench_line(r#"{"a":{"b":{"c":1}}}"#).is_err());
        Ok(())
    }
}
