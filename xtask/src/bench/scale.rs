//! `cargo xtask bench scale`: what issue 13 asks to measure.
//! - Chat fan-out: one room, 10,000 clients, 10 and 50 messages a second, on
//!   one node and on two nodes sharing a Redis (Debian's `redis-server`,
//!   started here on a free loopback port, no persistence). The servers (and
//!   Redis) are pinned to the first half of the cores and the load generator
//!   (server/examples/chat_load.rs) to the rest, so the server's CPU is its own.
//! - Stage join → first frame when the guest's node is not the stage's media
//!   node (tests/bench/stage-latency.mjs with `STAGECAST_GUEST_URL`), beside
//!   the same on one node.
//!
//! Release builds. Replaces the "Scale" section of BENCHMARKS.md. Not part of
//! `cargo xtask bench` (minutes of release builds and setup). `--only chat`
//! or `--only join` runs one half (the other half's table is kept).

use super::{collect_bench_lines, loadavg, machine, number, read_pairs, server_pid};
use crate::soak::splice_between;
use crate::util::{self, note, step};
use crate::{build, setup, test};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BEGIN: &str = "<!-- scale -->";
const END: &str = "<!-- /scale -->";
/// Each half's table sits between its own markers, so `--only` keeps the other's.
const CHAT: (&str, &str) = ("<!-- scale: chat -->", "<!-- /scale: chat -->");
const JOIN: (&str, &str) = ("<!-- scale: join -->", "<!-- /scale: join -->");

const CLIENTS: u32 = 10_000;
/// Messages per second into the room, in total.
const RATES: [u32; 2] = [10, 50];
const SECONDS: u32 = 10;
/// Clients that send (round-robin on one schedule); spread over the nodes.
const SENDERS: u32 = 20;
/// The goals.
const GOAL_P99_MS: f64 = 100.0;
const GOAL_DELIVERIES_PER_CORE: f64 = 500_000.0;
/// Stage joins measured per arrangement (the median is reported).
const JOIN_RUNS: usize = 5;

/// `cargo xtask bench scale [--seconds N] [--clients N] [--only chat|join]`.
pub fn run(args: &[String]) -> Result<()> {
    let (mut seconds, mut clients, mut only) = (SECONDS, CLIENTS, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => seconds = value.parse().context("--seconds")?,
            "--clients" => clients = value.parse().context("--clients")?,
            "--only" if value == "chat" || value == "join" => only = Some(value.clone()),
            _ => bail!("usage: cargo xtask bench scale [--seconds N] [--clients N] [--only chat|join]"),
        }
    }
    let (chat, join) = (only.as_deref() != Some("join"), only.as_deref() != Some("chat"));
    if join {
        setup::run(setup::Needs::Browser)?;
        build::sdk()?;
    }
    step("bench scale: release build of the server and the chat load generator");
    util::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "stagecast-server", "--bin", "stagecast", "--example", "chat_load"])
            .current_dir(util::root()),
    )?;
    let server = util::target_dir().join("release/stagecast");
    let load_before = loadavg();
    // Each half is written as soon as it is measured (a failing join run keeps the chat figures).
    if chat {
        let lines = chat_fanout(&server, clients, seconds)?;
        write_section(&lines, &[], &load_before)?;
    }
    if join {
        let joins = join_across_nodes(&server)?;
        write_section(&[], &joins, &load_before)?;
    }
    Ok(())
}

/// Replaces the section in BENCHMARKS.md; an empty half keeps its old table.
fn write_section(lines: &[BTreeMap<String, String>], joins: &[Joins], load_before: &str) -> Result<()> {
    let path = util::root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = render(lines, joins, load_before, &loadavg(), &old)?;
    let doc = if old.contains(BEGIN) {
        splice_between(&old, BEGIN, END, &section)
    } else {
        format!("{}\n\n{section}\n", old.trim_end())
    };
    std::fs::write(&path, doc).context("write BENCHMARKS.md")?;
    step("bench scale: updated BENCHMARKS.md");
    println!("{section}");
    Ok(())
}

/// The chat load generator against one node, then two, at each rate.
fn chat_fanout(server: &Path, clients: u32, seconds: u32) -> Result<Vec<BTreeMap<String, String>>> {
    let generator = util::target_dir().join("release/examples/chat_load");
    let (server_cpus, generator_cpus) = split_cpus();
    note(&format!("servers and Redis on CPUs {server_cpus}, the load generator on CPUs {generator_cpus}"));
    let mut lines = Vec::new();
    for nodes in [1usize, 2] {
        for rate in RATES {
            step(&format!("bench scale: chat, {clients} clients × {rate} msg/s for {seconds} s, {nodes} node(s)"));
            let redis = if nodes > 1 { Some(RedisGuard::start()?) } else { None };
            // The clients, and room for the generator's HTTP requests (the default is 10,000).
            let mut extra = vec!["--http-max-connections".to_owned(), (clients + 1000).to_string()];
            extra.extend(redis.iter().flat_map(|r| ["--redis".to_owned(), r.url.clone()]));
            let mut guards = Vec::new();
            let (mut urls, mut pids) = (Vec::new(), Vec::new());
            let mut api_key = String::new();
            for n in 0..nodes {
                let name = format!("bench-chat-{}", n + 1);
                let (guard, url, key) = test::start_server_with(&name, server, &extra)?;
                let listen = url.strip_prefix("http://").unwrap_or(&url).to_owned();
                let pid = server_pid(&listen).context("the chat bench needs the server's pid (its CPU is the point)")?;
                pin(pid, &server_cpus)?;
                guards.push(guard);
                urls.push(url);
                pids.push(pid);
                // Distributed mode: the first node's API key is the deployment's.
                if n == 0 {
                    api_key = key;
                }
            }
            if let Some(r) = &redis {
                pin(r.pid, &server_cpus)?;
            }
            let (clients_text, rate_text, secs) = (clients.to_string(), rate.to_string(), seconds.to_string());
            let senders = SENDERS.to_string();
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &generator_cpus]).arg(&generator);
            let mut shown = Vec::new();
            for url in &urls {
                shown.extend(["--url".to_owned(), url.clone()]);
            }
            for pid in &pids {
                shown.extend(["--server-pid".to_owned(), pid.to_string()]);
            }
            if let Some(r) = &redis {
                shown.extend(["--redis-pid".to_owned(), r.pid.to_string()]);
            }
            for (flag, value) in [("--clients", &clients_text), ("--rate", &rate_text), ("--seconds", &secs), ("--senders", &senders)] {
                shown.extend([flag.to_owned(), value.clone()]);
            }
            println!("$ taskset -c {generator_cpus} {} --api-key *** {}", generator.display(), shown.join(" "));
            cmd.args(&shown).arg("--api-key").arg(&api_key).current_dir(util::root());
            let results = collect_bench_lines(cmd, "chat_load");
            if results.is_err() {
                for guard in &guards {
                    guard.print_log_tail(40);
                }
            }
            for mut line in results? {
                line.insert("nodes".into(), nodes.to_string());
                line.insert("serverCpus".into(), server_cpus.clone());
                line.insert("generatorCpus".into(), generator_cpus.clone());
                lines.push(line);
            }
        }
    }
    Ok(lines)
}

/// One arrangement's stage joins: join → first remote frame, ms.
struct Joins {
    label: &'static str,
    join_ms: Vec<f64>,
}

/// tests/bench/stage-latency.mjs [`JOIN_RUNS`] times on one node, then on
/// two nodes with the host's page (and the stage) on node 1 and the
/// guest's page on node 2. Node ids make node 1 the registry's choice for a
/// new stage (least loaded, ties to the lowest id); the script checks that
/// the stage lives on node 1 only.
fn join_across_nodes(server: &Path) -> Result<Vec<Joins>> {
    let root = util::root();
    let out = util::target_dir().join("bench/scale-join.txt");
    std::fs::create_dir_all(out.parent().expect("invariant: the path has a parent"))?;
    let mut all = Vec::new();
    for (label, nodes) in [("guest on the media node (one node)", 1usize), ("guest on another node (two nodes, Redis)", 2)] {
        let mut join_ms = Vec::new();
        for run in 1..=JOIN_RUNS {
            step(&format!("bench scale: stage join → first frame, {label}, run {run}/{JOIN_RUNS}"));
            // Fresh nodes each run: the last run's stage (its members in
            // their reconnect grace) would make node 1 the more loaded.
            let redis = if nodes > 1 { Some(RedisGuard::start()?) } else { None };
            let mut guards = Vec::new();
            let mut bases = Vec::new();
            for n in 0..nodes {
                let mut extra = vec!["--node-id".to_owned(), format!("node-{}", n + 1)];
                if let Some(r) = &redis {
                    extra.extend(["--redis".to_owned(), r.url.clone()]);
                }
                let (guard, url, key) = test::start_server_with(&format!("bench-join-{}", n + 1), server, &extra)?;
                guards.push(guard);
                bases.push((url, key));
            }
            let _ = std::fs::remove_file(&out);
            let mut cmd = Command::new("node");
            cmd.arg("tests/bench/stage-latency.mjs")
                .current_dir(&root)
                .env("STAGECAST_URL", &bases[0].0)
                .env("STAGECAST_API_KEY", &bases[0].1)
                .env("CHROMIUM_PATH", setup::CHROMIUM)
                // Joining is the point; a few frames prove the media flows.
                .env("BENCH_FRAMES", "30")
                .env("BENCH_OUT", &out);
            if let Some((url, key)) = bases.get(1) {
                cmd.env("STAGECAST_GUEST_URL", url).env("STAGECAST_GUEST_API_KEY", key);
            }
            if let Err(e) = util::run(&mut cmd) {
                for guard in &guards {
                    guard.print_log_tail(40);
                }
                return Err(e);
            }
            let pairs = read_pairs(&out)?;
            let ms = pairs.get("join_to_first_frame_ms").and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite());
            join_ms.push(ms.context("stage-latency.mjs measured no join → first frame")?);
        }
        all.push(Joins { label, join_ms });
    }
    Ok(all)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// CPU lists for `taskset -c`: the servers get the first half of the
/// cores (at least one), the generator the rest; one core shares it.
fn split_cpus() -> (String, String) {
    let cores: usize = util::probe("nproc", &[]).and_then(|s| s.trim().parse().ok()).unwrap_or(1);
    if cores < 2 {
        return ("0".into(), "0".into());
    }
    let half = cores / 2;
    let list = |from: usize, to: usize| if to - from == 1 { from.to_string() } else { format!("{from}-{}", to - 1) };
    (list(0, half), list(half, cores))
}

/// Pins every thread of a running process (threads made later inherit it).
fn pin(pid: u32, cpus: &str) -> Result<()> {
    let out = Command::new("taskset").args(["-a", "-c", "-p", cpus, &pid.to_string()]).output().context("taskset")?;
    if !out.status.success() {
        bail!("taskset -a -c -p {cpus} {pid}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A `redis-server` on a free loopback port with no persistence, in a
/// temporary folder; killed on drop.
struct RedisGuard {
    child: Child,
    dir: PathBuf,
    pid: u32,
    url: String,
}

impl RedisGuard {
    fn start() -> Result<Self> {
        let port = test::free_tcp_port()?;
        let dir = util::target_dir().join(format!("bench-chat-redis-{port}"));
        util::remove_dir(&dir)?;
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server (installed by `cargo xtask setup`)")?;
        let guard = RedisGuard { pid: child.id(), child, dir, url: format!("redis://127.0.0.1:{port}") };
        wait_for_port(port, &guard.dir)?;
        Ok(guard)
    }
}

fn wait_for_port(port: u16, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not listen on {port} within 10 s (log in {})", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The text between `markers` in `doc`, markers included (a half kept from the last run).
fn kept<'a>(doc: &'a str, markers: (&str, &str)) -> Option<&'a str> {
    let b = doc.find(markers.0)?;
    let e = doc[b..].find(markers.1)? + b + markers.1.len();
    Some(&doc[b..e])
}

fn render(
    lines: &[BTreeMap<String, String>],
    joins: &[Joins],
    load_before: &str,
    load_after: &str,
    old: &str,
) -> Result<String> {
    let (cores, cpu) = machine();
    let date = util::probe("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let mut md = String::new();
    writeln!(md, "{BEGIN}")?;
    writeln!(md, "## Scale: chat fan-out at 10,000 clients, and joining through another node")?;
    writeln!(md)?;
    writeln!(
        md,
        "Written by `cargo xtask bench scale` ({}). Release build of the server (`target/release/stagecast`) on {cpu}, \
         `nproc` {cores}; load average before {load_before}, after {load_after} (of the part run last; each table names \
         its run's date). Loopback.",
        date.trim()
    )?;
    writeln!(md)?;
    let dated = format!("Measured {}.", date.trim());
    let (mut chat, mut join) = (String::new(), String::new());
    if !lines.is_empty() {
        chat_table(&mut chat, lines, &dated)?;
    }
    if !joins.is_empty() {
        join_table(&mut join, joins, &dated)?;
    }
    // A half not run this time keeps its last table.
    for (markers, fresh) in [(CHAT, chat), (JOIN, join)] {
        if !fresh.is_empty() {
            writeln!(md, "{}\n{fresh}{}", markers.0, markers.1)?;
        } else if let Some(text) = kept(old, markers) {
            writeln!(md, "{text}")?;
        }
    }
    writeln!(md, "{END}")?;
    Ok(md)
}

fn join_table(md: &mut String, joins: &[Joins], dated: &str) -> Result<()> {
    writeln!(md, "### Stage join → first frame across nodes")?;
    writeln!(md)?;
    writeln!(md, "{dated}")?;
    writeln!(md)?;
    writeln!(md, "| arrangement | join → first remote frame, median | each run |")?;
    writeln!(md, "|---|---|---|")?;
    for j in joins {
        let each: Vec<String> = j.join_ms.iter().map(|v| format!("{v:.0}")).collect();
        let med = median(&j.join_ms).map_or("—".to_owned(), |v| format!("{v:.0} ms"));
        writeln!(md, "| {} | {med} | {} ms |", j.label, each.join(", "))?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "tests/bench/stage-latency.mjs {JOIN_RUNS} times per arrangement, each with a fresh browser: host and guest on one \
         stage through the sample app, timed from the guest's `join()` to the first decoded frame of the host's camera. \
         With two nodes (one Redis, node ids `node-1` and `node-2`) the host's page comes from node 1, which becomes the \
         stage's media node, and the guest opens the invite on node 2: its event-plane WebSocket is spliced to node 1 \
         and its WHIP/WHEP requests are forwarded there, while its media goes straight to node 1 (the script checks \
         that the stage lives on node 1 only)."
    )?;
    writeln!(md)?;
    Ok(())
}

fn chat_table(md: &mut String, lines: &[BTreeMap<String, String>], dated: &str) -> Result<()> {
    let field = |m: &BTreeMap<String, String>, key: &str| m.get(key).cloned().filter(|v| v != "null").unwrap_or_else(|| "—".into());
    let cpus = |key: &str| lines.first().and_then(|m| m.get(key)).cloned().unwrap_or_else(|| "?".into());
    writeln!(md, "### Chat fan-out at 10,000 clients")?;
    writeln!(md)?;
    writeln!(
        md,
        "{dated} Load generator `target/release/examples/chat_load` (release). The server(s) and Redis are pinned to \
         CPU {}, the generator to CPU {}.",
        cpus("serverCpus"),
        cpus("generatorCpus")
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| nodes | clients × msg/s | delivered / expected | p50 | p99 | max | server CPU (each node) | Redis CPU | \
         server RSS peak (each node) | deliveries per server core-second | generator CPU | goal p99 ≤ {GOAL_P99_MS:.0} ms | \
         goal ≥ {:.0}k deliveries per core-second |",
        GOAL_DELIVERIES_PER_CORE / 1000.0
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for m in lines.iter().filter(|m| m.get("bench").map(String::as_str) == Some("chatFanout")) {
        let nodes: usize = m.get("nodes").and_then(|n| n.parse().ok()).unwrap_or(1);
        let per_node = |key: &str| -> String {
            if nodes == 1 {
                return String::new();
            }
            let each: Vec<String> = (1..=nodes).map(|n| field(m, &format!("node{n}{key}"))).collect();
            format!(" ({})", each.join(" + "))
        };
        let p99 = number(m, "p99");
        let p99_verdict = match p99 {
            Some(v) if v <= GOAL_P99_MS => "met",
            Some(_) => "**missed**",
            None => "not measured",
        };
        let per_core = number(m, "deliveriesPerCoreSecond");
        let per_core_verdict = match per_core {
            Some(v) if v >= GOAL_DELIVERIES_PER_CORE => "met",
            Some(_) => "**missed**",
            None => "not measured",
        };
        writeln!(
            md,
            "| {nodes} | {} × {} | {} / {} | {} ms | {} ms | {} ms | {} %{} | {} | {} MB{} | {} | {} % | {p99_verdict} | {per_core_verdict} |",
            field(m, "clients"),
            field(m, "messagesPerSecond"),
            field(m, "delivered"),
            field(m, "expected"),
            field(m, "p50"),
            field(m, "p99"),
            field(m, "max"),
            field(m, "serverCpuPercent"),
            per_node("CpuPercent"),
            m.get("redisCpuPercent").map_or("—".to_owned(), |v| format!("{v} %")),
            field(m, "serverRssPeakMb"),
            per_node("RssPeakMb"),
            per_core.map_or("—".to_owned(), |v| format!("{:.0}k", v / 1000.0)),
            field(m, "generatorCpuPercent"),
        )?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "One room (`maximumMessageRatePerSecond` = the rate), {SENDERS} senders round-robin on one schedule for the \
         measured seconds, every client (senders included) timing every message from its send to its arrival on the \
         generator's monotonic clock, until all expected deliveries arrived or 5 s after the last send. With two nodes \
         every client `i` connects to node `i mod 2` (senders too), the room is created on node 1 and the nodes share \
         the room, its tokens and its messages through Redis (pub/sub). CPU is utime + stime from `/proc` over the \
         sending and draining, as a share of one core (100 % = one core busy); \"deliveries per server core-second\" \
         is deliveries ÷ the servers' CPU seconds (Redis not included), the cost of fan-out itself. On this machine \
         the generator has as many cores as the servers and reads every delivery, so at high rates the generator, \
         not the server, can set the latency: compare its CPU with its cores."
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_not_run_keeps_its_last_table() -> Result<()> {
        let old = format!("# Benchmarks\n\n{BEGIN}\n{}\nold chat table\n{}\n{END}\n", CHAT.0, CHAT.1);
        let joins = [Joins { label: "one node", join_ms: vec![200.0, 300.0, 250.0] }];
        let md = render(&[], &joins, "0", "0", &old)?;
        assert!(md.contains(&format!("{}\nold chat table\n{}", CHAT.0, CHAT.1)), "{md}");
        assert!(md.contains("| one node | 250 ms | 200, 300, 250 ms |"), "{md}");
        assert!(md.starts_with(BEGIN) && md.trim_end().ends_with(END), "{md}");
        let doc = splice_between(&old, BEGIN, END, &md);
        assert_eq!(doc.matches(BEGIN).count(), 1);
        Ok(())
    }
}
