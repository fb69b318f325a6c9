//! The stage soak (issue 8): one stage, 12 WHIP publishers sending generated
//! media, 200 subscribe-only members leaving and joining continuously, for
//! 10 minutes (server/examples/stage_soak.rs) after a 1-minute warm-up under
//! the same load. Reports the server's RSS at the start (after the warm-up)
//! and the end (flat: within ±10 %) and the p99 time for a probe's state
//! change to reach every member. `cargo xtask bench` runs it with the
//! other harnesses; `cargo xtask bench soak [--seconds N]` runs it alone and
//! replaces its section of BENCHMARKS.md (`STAGECAST_SOAK_SECONDS` shortens
//! both).

use crate::bench::{collect_bench_lines, machine, server_pid};
use crate::util::{self, note, step};
use crate::test;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

/// The full soak's length.
const SECONDS: u64 = 600;
const PUBLISHERS: u32 = 12;
const MEMBERS: u32 = 200;
/// Members leaving and joining again per second.
const CHURN: u32 = 5;
/// The same load, unmeasured, before the clock starts (at most a fifth of a
/// shortened run): the first minute's step is caches warming up, not a leak.
const WARMUP: u64 = 60;
/// RSS at the end within this share of RSS at the start.
const FLAT: f64 = 0.10;

const BEGIN: &str = "<!-- stage soak -->";
const END: &str = "<!-- /stage soak -->";

/// `cargo xtask bench soak [--seconds N]`.
pub fn run(args: &[String]) -> Result<()> {
    let seconds = match args {
        [] => seconds_from_env()?,
        [flag, n] if flag == "--seconds" => n.parse().context("--seconds")?,
        _ => bail!("usage: cargo xtask bench soak [--seconds N]"),
    };
    util::run(Command::new("cargo").args(["build", "-p", "stagecast-server", "--bin", "stagecast"]).current_dir(util::root()))?;
    let section = measure(seconds)?;
    let path = util::root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n## Machine\n".into());
    std::fs::write(&path, splice(&old, &section)).context("write BENCHMARKS.md")?;
    step("bench soak: updated BENCHMARKS.md");
    println!("{section}");
    Ok(())
}

/// The soak's length: [`SECONDS`], or `STAGECAST_SOAK_SECONDS`.
pub fn seconds_from_env() -> Result<u64> {
    match std::env::var("STAGECAST_SOAK_SECONDS") {
        Ok(v) => v.parse().context("STAGECAST_SOAK_SECONDS"),
        Err(_) => Ok(SECONDS),
    }
}

/// Build the generator, run it against a fresh server for `seconds`, and
/// return the BENCHMARKS.md section.
pub fn measure(seconds: u64) -> Result<String> {
    util::run(Command::new("cargo").args(["build", "-p", "stagecast-server", "--example", "stage_soak"]).current_dir(util::root()))?;
    let (guard, url, api_key) = test::start_server("soak")?;
    let listen = url.strip_prefix("http://").unwrap_or(&url).to_owned();
    let pid = server_pid(&listen).context("the soak needs the server's pid (its RSS is the point)")?;
    step(&format!("bench: stage soak, {PUBLISHERS} publishers + {MEMBERS} members churning {CHURN}/s for {seconds} s"));
    let generator = util::target_dir().join("debug/examples/stage_soak");
    let (publishers, members, churn, secs, pid_text) =
        (PUBLISHERS.to_string(), MEMBERS.to_string(), CHURN.to_string(), seconds.to_string(), pid.to_string());
    let warmup = WARMUP.min(seconds / 5).to_string();
    let args = [
        "--url", url.as_str(), "--publishers", &publishers, "--members", &members, "--churn", &churn, "--seconds", &secs,
        "--warmup-seconds", &warmup, "--server-pid", &pid_text,
    ];
    println!("$ {} --api-key *** {}", generator.display(), args.join(" "));
    let mut cmd = Command::new(&generator);
    cmd.args(args).arg("--api-key").arg(&api_key).current_dir(util::root());
    let loadavg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ");
    let load_before = loadavg();
    let results = collect_bench_lines(cmd, "stage_soak");
    if results.is_err() {
        guard.print_log_tail(60);
    }
    drop(guard);
    let soak = results?
        .into_iter()
        .find(|m| m.get("bench").map(String::as_str) == Some("stageSoak"))
        .context("stage_soak printed no stageSoak BENCH line")?;
    render(&soak, &load_before, &loadavg())
}

fn render(soak: &BTreeMap<String, String>, load_before: &str, load_after: &str) -> Result<String> {
    let field = |key: &str| soak.get(key).map_or("?", String::as_str);
    let num = |key: &str| soak.get(key).and_then(|v| v.parse::<f64>().ok());
    let (start, end) = (num("rssStartMb"), num("rssEndMb"));
    let flat = match (start, end) {
        (Some(s), Some(e)) if s > 0.0 => {
            let change = (e - s) / s;
            format!("{:+.1} % ({})", change * 100.0, if change.abs() <= FLAT { "flat: met" } else { "not flat: missed" })
        }
        _ => {
            note("the soak measured no RSS");
            "not measured".into()
        }
    };
    // The warm-up's own step, shown too: judged from the joined RSS, the
    // memory must still be within the same bound by the end.
    let flat = match (num("rssJoinedMb"), end) {
        (Some(j), Some(e)) if j > 0.0 => {
            format!("{flat}; from the RSS once all had joined {:+.1} %", (e - j) / j * 100.0)
        }
        _ => flat,
    };
    let (cores, cpu) = machine();
    let mut md = String::new();
    writeln!(md, "{BEGIN}")?;
    writeln!(md, "## Stage soak")?;
    writeln!(md)?;
    writeln!(
        md,
        "Written by `cargo xtask bench soak` / `cargo xtask bench` ({}). {} s on loopback, one stage: {} WHIP \
         publishers (str0m peers, generated VP8 {} B × 30 fps + Opus-sized audio), {} subscribe-only \
         event-plane members of which {} per second leave (close 1000) and join again ({} joins in all), \
         and a probe member changing its state every second. The first {} s run the same load unmeasured \
         (warm-up); start, end and the delivery times are from the {} s after it.",
        util::probe("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default().trim(),
        field("seconds"),
        field("publishers"),
        1000,
        field("members"),
        field("churnPerSecond"),
        field("joins"),
        field("warmupSeconds"),
        field("seconds"),
    )?;
    writeln!(md)?;
    writeln!(md, "| what | target | start | end | |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    writeln!(
        md,
        "| server RSS (VmRSS) | flat, ±10 % | {} MB | {} MB | {flat} |",
        field("rssStartMb"),
        field("rssEndMb")
    )?;
    writeln!(
        md,
        "| probe state change → every member connected before it has the delta | — | p50 {} ms | p99 {} ms | max {} ms |",
        field("p50"),
        field("p99"),
        field("max")
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "RSS once every member had joined (before the warm-up) {} MB. RSS sampled every 5 s after the warm-up: min {} MB, max {} MB; \
         each minute from the start of the warm-up: {} MB. {} of {} probe rounds measured ({} deliveries). The \
         members hold event-plane sockets only: no media subscriptions (200 str0m subscribers would \
         measure the generator, not the server). Server `target/debug/stagecast` and generator \
         `target/debug/examples/stage_soak` (dev profile) share the machine's cores: {cpu}, `nproc` {cores}; \
         load average before {load_before}, after {load_after} (other work on the machine inflates the \
         delivery times).",
        field("rssJoinedMb"),
        field("rssMinMb"),
        field("rssMaxMb"),
        field("rssPerMinuteMb"),
        field("roundsMeasured"),
        field("rounds"),
        field("deliveries"),
    )?;
    writeln!(md, "{END}")?;
    Ok(md)
}

/// `doc` with its soak section replaced by `section` ([`splice_between`]).
pub fn splice(doc: &str, section: &str) -> String {
    splice_between(doc, BEGIN, END, section)
}

/// `doc` with the section between the markers `begin` and `end` replaced by
/// `section` (or, if it has none, `section` inserted before `## Machine`,
/// else appended). Every generated section of BENCHMARKS.md goes in this way.
pub fn splice_between(doc: &str, begin: &str, end: &str, section: &str) -> String {
    if let Some(b) = doc.find(begin) {
        if let Some(e) = doc[b..].find(end).map(|e| e + b) {
            let after = doc[e + end.len()..].trim_start_matches('\n');
            return format!("{}{section}\n{after}", &doc[..b]);
        }
    }
    match doc.find("## Machine") {
        Some(at) => format!("{}{section}\n{}", &doc[..at], &doc[at..]),
        None => format!("{doc}\n{section}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_replaces_the_last_one_or_goes_before_the_machine() {
        let section = format!("{BEGIN}\n## Stage soak\nnew\n{END}\n");
        let fresh = splice("# B\n\n| a |\n\n## Machine\n- cpu\n", &section);
        assert_eq!(fresh, format!("# B\n\n| a |\n\n{section}\n## Machine\n- cpu\n"));
        let again = splice(&fresh, &section.replace("new", "newer"));
        assert_eq!(again, fresh.replace("new\n", "newer\n"));
    }
}
