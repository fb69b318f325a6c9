//! Network recovery for `cargo xtask bench` and `cargo xtask bench net`:
//! runs tests/bench/net-recovery.mjs (the network journeys' numbers as
//! medians over several runs, in namespaces, as root) and renders its
//! BENCHMARKS.md section, which a run that cannot measure keeps.

use super::{collect_bench_lines, loadavg, machine, number, verdict};
use crate::util::{self, note, step};
use crate::{build, setup};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

const NET_BEGIN: &str = "<!-- net recovery -->";
const NET_END: &str = "<!-- /net recovery -->";
/// How a section that was not re-measured starts its note (dropped when the
/// section is carried over again, so notes do not pile up).
const NET_STALE: &str = "> **Not re-measured**";

/// The cases of tests/bench/net-recovery.mjs: case, what the row measures,
/// target (ms) from issue 9's acceptance (the layer switch: ours; issue 10
/// names none).
const NET_CASES: [(&str, &str, f64); 5] = [
    (
        "tcp",
        "UDP-blocked guest via ICE-TCP: join() → remote video of every publisher",
        5000.0,
    ),
    (
        "turn",
        "UDP-blocked guest via TURN/TCP relay: join() → remote video of every publisher",
        5000.0,
    ),
    (
        "link8",
        "link down 8 s: link back → media back both ways",
        5000.0,
    ),
    (
        "restart",
        "server kill -9 + restart: server answering → media back",
        10000.0,
    ),
    (
        "layerswitch",
        "simulcast subscriber's downlink cut to 800 kbit/s: cut → lower layer flowing without stalls",
        5000.0,
    ),
];

/// Runs tests/bench/net-recovery.mjs (as root: namespaces, veth pairs,
/// iptables) and returns the BENCHMARKS.md section; not root: a section that
/// says so and keeps `doc`'s last measurement, and a note, not a failure.
pub(super) fn net_recovery(doc: &str) -> Result<String> {
    step("bench: network recovery in namespaces, medians (tests/bench/net-recovery.mjs)");
    let date = util::probe("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let is_root = util::probe("id", &["-u"]).is_some_and(|uid| uid.trim() == "0");
    if !is_root {
        note(
            "skipped: the network-recovery harness needs root (network namespaces, veth pairs, \
             iptables); run `cargo xtask bench net` as root. BENCHMARKS.md keeps its last measurement.",
        );
        return Ok(net_skipped(net_section_of(doc).as_deref(), date.trim()));
    }
    let root = util::root();
    let out = util::target_dir().join("bench/net-recovery.json");
    std::fs::create_dir_all(out.parent().expect("invariant: the path has a parent"))?;
    let _ = std::fs::remove_file(&out);
    let runs = std::env::var("BENCH_RUNS").unwrap_or_else(|_| "5".into());
    println!(
        "$ (cd {} && BENCH_RUNS={runs} STAGECAST_BIN={} CHROMIUM_PATH={} STAGECAST_NET_DIR={} BENCH_OUT={} node tests/bench/net-recovery.mjs)",
        root.display(),
        build::server_binary().display(),
        setup::CHROMIUM,
        util::target_dir().join("net").display(),
        out.display(),
    );
    let load_before = loadavg();
    let mut cmd = Command::new("node");
    cmd.arg("tests/bench/net-recovery.mjs")
        .current_dir(&root)
        .env("BENCH_RUNS", &runs)
        .env("STAGECAST_BIN", build::server_binary())
        .env("CHROMIUM_PATH", setup::CHROMIUM)
        .env("STAGECAST_NET_DIR", util::target_dir().join("net"))
        .env("BENCH_OUT", &out);
    let lines = collect_bench_lines(cmd, "node tests/bench/net-recovery.mjs")
        .with_context(|| format!("network recovery (every run's detail: {})", out.display()))?;
    let cases: BTreeMap<String, BTreeMap<String, String>> = lines
        .into_iter()
        .filter(|m| m.get("bench").map(String::as_str) == Some("netRecovery"))
        .filter_map(|m| Some((m.get("case")?.clone(), m)))
        .collect();
    render_net(&cases, net_section_of(doc).as_deref(), date.trim(), &load_before, &loadavg())
}

/// How a row carried over from an earlier run ends (`BENCH_CASES` picked
/// other cases this time).
const EARLIER: &str = "(earlier run)";

/// The sample labels of each case, in the order the section lists them.
const SAMPLE_LABELS: [(&str, &str); 5] = [
    ("tcp", "ICE-TCP"),
    ("turn", "TURN"),
    ("link8", "link down 8 s"),
    ("restart", "server restart, media back"),
    ("layerswitch", "layer switch"),
];

/// From `old` (the last section), the table rows that start with `prefix`,
/// marked as from an earlier run (once).
fn earlier_rows<'a>(old: Option<&'a str>, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    old.into_iter().flat_map(str::lines).filter(move |l| l.starts_with(prefix)).map(|l| {
        let row = l.trim_end();
        if row.ends_with(&format!("{EARLIER} |")) {
            row.to_owned()
        } else {
            let body = row.strip_suffix('|').unwrap_or(row).trim_end();
            format!("{body} {EARLIER} |")
        }
    })
}

/// From `old`, the samples listed under `label` (`"<label> 1, 2, 3"`),
/// marked as from an earlier run (once).
fn earlier_samples(old: Option<&str>, label: &str) -> Option<String> {
    let para = old?.lines().find(|l| l.starts_with("Every sample"))?;
    let list = para.split_once("): ")?.1;
    let list = list.split_once(". Each run's detail").map_or(list, |(l, _)| l);
    list.split("; ").find(|s| s.strip_prefix(label).is_some_and(|r| r.starts_with(' '))).map(|s| {
        if s.ends_with(EARLIER) { s.to_owned() } else { format!("{s} {EARLIER}") }
    })
}

/// The section for a run that could not measure (not root), keeping the
/// last measurement from `old` (a section of BENCHMARKS.md) if there is one.
fn net_skipped(old: Option<&str>, date: &str) -> String {
    let kept = old
        .map(|section| {
            section
                .lines()
                .filter(|l| {
                    *l != NET_BEGIN
                        && *l != NET_END
                        && !l.starts_with("## ")
                        && !l.starts_with(NET_STALE)
                })
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_owned()
        })
        .filter(|body| !body.is_empty());
    let mut md = format!("{NET_BEGIN}\n## Network recovery\n\n");
    md.push_str(&format!(
        "{NET_STALE} by the run of {date}: it was not root, and the network harness needs root \
         (network namespaces, veth pairs, iptables). Run `cargo xtask bench net` as root. {}\n",
        if kept.is_some() {
            "The measurement below is from an earlier run."
        } else {
            "No measurement yet."
        }
    ));
    if let Some(body) = kept {
        md.push('\n');
        md.push_str(&body);
        md.push('\n');
    }
    md.push_str(NET_END);
    md.push('\n');
    md
}

/// The network-recovery section from the harness's `BENCH` lines (by case).
fn render_net(
    cases: &BTreeMap<String, BTreeMap<String, String>>,
    old: Option<&str>,
    date: &str,
    load_before: &str,
    load_after: &str,
) -> Result<String> {
    let ms = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.0} ms"));
    let range = |m: &BTreeMap<String, String>, prefix: &str| match (
        number(m, &format!("{prefix}min_ms")),
        number(m, &format!("{prefix}max_ms")),
    ) {
        (Some(a), Some(b)) => format!("{a:.0}–{b:.0} ms"),
        _ => "—".to_owned(),
    };
    let samples = |m: &BTreeMap<String, String>, key: &str| {
        m.get(key).map_or("—".to_owned(), |s| {
            s.split(' ').collect::<Vec<_>>().join(", ")
        })
    };
    let runs = cases
        .values()
        .filter_map(|m| m.get("runs").cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join("/");
    let (cores, cpu) = machine();
    let chromium = util::probe(setup::CHROMIUM, &["--version"]).unwrap_or_default();

    let mut md = String::new();
    writeln!(md, "{NET_BEGIN}")?;
    writeln!(md, "## Network recovery")?;
    writeln!(md)?;
    writeln!(
        md,
        "Written by `cargo xtask bench net` / `cargo xtask bench` ({date}). The numbers of the network \
         journeys (tests/net/), each case run {} times on a fresh private network by \
         `tests/bench/net-recovery.mjs`; verdicts are on the median.",
        if runs.is_empty() { "?" } else { runs.as_str() }
    )?;
    writeln!(md)?;
    writeln!(md, "| what | target | median | min–max | runs | |")?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for (case, what, target) in NET_CASES {
        let Some(m) = cases.get(case) else {
            // Not run this time: the last measurement stays, marked.
            let kept: Vec<String> = earlier_rows(old, &format!("| {what} |")).collect();
            if kept.is_empty() {
                writeln!(md, "| {what} | ≤ {target:.0} ms | — | — | 0 | not measured |")?;
            }
            for row in kept {
                writeln!(md, "{row}")?;
            }
            continue;
        };
        let median = number(m, "median_ms");
        let over = m
            .get("samples_ms")
            .map(|s| {
                s.split(' ')
                    .filter_map(|v| v.parse::<f64>().ok())
                    .filter(|v| *v > target)
                    .count()
            })
            .unwrap_or(0);
        let mut met = verdict(median, target).to_owned();
        if met == "met" && over > 0 {
            met = format!("met ({over} run{} over)", if over == 1 { "" } else { "s" });
        }
        writeln!(
            md,
            "| {what} | ≤ {target:.0} ms | {} | {} | {} | {met} |",
            ms(median),
            range(m, ""),
            m.get("runs").map_or("?", String::as_str),
        )?;
    }
    let restart_refs = ["| server kill -9 → answering again |", "| server answering → the channel's viewer's"];
    if !cases.contains_key("restart") {
        for prefix in restart_refs {
            for row in earlier_rows(old, prefix) {
                writeln!(md, "{row}")?;
            }
        }
    }
    if let Some(m) = cases.get("restart") {
        writeln!(
            md,
            "| server kill -9 → answering again | — (reference) | {} | {} | {} | |",
            ms(number(m, "restart_median_ms")),
            range(m, "restart_"),
            m.get("runs").map_or("?", String::as_str),
        )?;
        writeln!(
            md,
            "| server answering → the channel's viewer's video moving again (≥ 3 s without a stall) | — (reference) | {} | {} | back in {} of {} | |",
            ms(number(m, "broadcast_median_ms")),
            range(m, "broadcast_"),
            m.get("broadcast_back_runs").map_or("?", String::as_str),
            m.get("runs").map_or("?", String::as_str),
        )?;
    }
    writeln!(md)?;
    let mut lines = Vec::new();
    for (case, label) in SAMPLE_LABELS {
        match cases.get(case) {
            Some(m) => lines.push(format!("{label} {}", samples(m, "samples_ms"))),
            None => lines.extend(earlier_samples(old, label)),
        }
    }
    if !cases.contains_key("restart") {
        for label in ["server answering again", "broadcast back"] {
            lines.extend(earlier_samples(old, label));
        }
    }
    if let Some(m) = cases.get("restart") {
        lines.push(format!(
            "server answering again {}",
            samples(m, "restart_samples_ms")
        ));
        lines.push(format!(
            "broadcast back {}",
            samples(m, "broadcast_samples_ms")
        ));
    }
    writeln!(
        md,
        "Every sample, ms, in run order (broadcast `-`: the viewer's video was not moving again 20 s \
         after the scenario's checks): {}. Each run's detail (per publisher and direction, the \
         guest's selected candidate pairs, connection states, the viewer's player): \
         `target/bench/net-recovery.json`.",
        lines.join("; ")
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Method: each run builds a private network of Linux network namespaces \
         (`tests/net/netns.mjs`): the server, coturn and every browser each in their own \
         namespace, plugged into one bridge by veth pairs; the runner reaches the server over one \
         more veth. Red (host) and Green are on open networks. ICE-TCP: the guest's namespace \
         drops all UDP (iptables `DROP`), so its media must use the SFU's ICE-TCP candidate. \
         TURN: the guest's namespace lets through only TCP to the server's HTTP port and to \
         coturn (Debian `turnserver`, TURN REST API secret handed out by the server), so its media \
         goes through a TURN/TCP relay; both check the guest's selected candidate pairs every run \
         (a run on another path fails the harness). The time is from the sample app's \
         `stage.join()` to the first new frame of the right colour from each publisher on the \
         guest's page (the slower of the two). Link down: the guest's bridge port is set down for \
         8 s (its `eth0` loses carrier) and up again; the time is from the link's return until the \
         pages' own media monitors see new frames of the right colour and hear the tone in all four \
         directions between the guest and the others. Restart: Red broadcasts the stage (small \
         stream) to the channel, a viewer plays it with hls.js; the server gets SIGKILL and the \
         same binary starts at once on the same data dir, address and ports; the time is from the \
         server answering HTTP again until media flows both ways between Red and Green; the \
         broadcast is back when the viewer's video starts moving for good: the start of the first run \
         after the kill in which its `currentTime` (polled every 100 ms in the page) advances ≥ 2 s \
         over ≥ 3 s without standing still for 500 ms (a stall means the buffer of the kill ran \
         out; the page replacing a stuck player ends a run too), or, had it never stalled, when it \
         passed what it had buffered at the kill. Layer switch: a publisher sends a noisy 640×360 \
         canvas with simulcast (320×180 and 640×360 layers), one subscriber in its own namespace \
         receives it, starting on the top layer (`initialLayerPreference: 'highest_quality'`; a run \
         where it does not stay there is set up again, twice at most, counted as `setupRetries` in \
         the detail); once every frame it decoded for 3 s was 640 wide, its downlink is cut to \
         800 kbit/s (`tbf`); the time is from the cut to the start of the first second in which \
         new frames (`framesDecoded`, polled every 100 ms in the page), all of the lower layer, \
         came at least every 300 ms. All namespaces share one clock."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Machine: {cpu}, `nproc` {cores}, shared by everything in a run (server, coturn, three or four \
         headless {} with software codecs); server `target/debug/stagecast` (debug build). Load \
         average (1/5/15 min) before {load_before}, after {load_after}: other work on the machine \
         inflates these times.",
        chromium.trim()
    )?;
    writeln!(md, "{NET_END}")?;
    Ok(md)
}

/// The network-recovery section of `doc` (markers included), if it has one.
pub(super) fn net_section_of(doc: &str) -> Option<String> {
    let b = doc.find(NET_BEGIN)?;
    let e = doc[b..].find(NET_END)? + b;
    Some(format!("{}\n", &doc[b..e + NET_END.len()]))
}

/// `doc` with its network-recovery section replaced by `section` (or, if it
/// has none, `section` inserted before `## Machine`, else appended).
pub(super) fn splice_net(doc: &str, section: &str) -> String {
    crate::soak::splice_between(doc, NET_BEGIN, NET_END, section)
}

#[cfg(test)]
mod tests {
    use super::super::parse_bench_line;
    use super::*;

    #[test]
    fn the_net_section_replaces_the_last_one_or_goes_before_the_machine() {
        let section = format!("{NET_BEGIN}\n## Network recovery\nnew\n{NET_END}\n");
        let fresh = splice_net("# B\n\n| a |\n\n## Machine\n- cpu\n", &section);
        assert_eq!(
            fresh,
            format!("# B\n\n| a |\n\n{section}\n## Machine\n- cpu\n")
        );
        let again = splice_net(&fresh, &section.replace("new", "newer"));
        assert_eq!(again, fresh.replace("new\n", "newer\n"));
        assert_eq!(
            net_section_of(&again).as_deref(),
            Some(section.replace("new", "newer").as_str())
        );
        assert_eq!(net_section_of("# B\n"), None);
    }

    #[test]
    fn a_skipped_run_keeps_the_last_measurement_once() {
        let measured = format!("{NET_BEGIN}\n## Network recovery\n\n| t |\n{NET_END}\n");
        let skipped = net_skipped(Some(&measured), "today");
        assert!(skipped.contains("| t |") && skipped.contains(NET_STALE));
        let twice = net_skipped(Some(&skipped), "tomorrow");
        assert_eq!(twice.matches(NET_STALE).count(), 1);
        assert_eq!(twice.matches("| t |").count(), 1);
        assert!(twice.contains("tomorrow") && !twice.contains("today"));
        assert!(net_skipped(None, "today").contains("No measurement yet"));
    }

    #[test]
    fn renders_medians_and_verdicts() -> Result<()> {
        let mut cases = BTreeMap::new();
        cases.insert(
            "tcp".to_owned(),
            parse_bench_line(
                r#"{"bench":"netRecovery","case":"tcp","runs":3,"median_ms":1200,"min_ms":900,"max_ms":6000,"samples_ms":"900 1200 6000"}"#,
            )?,
        );
        cases.insert(
            "link8".to_owned(),
            parse_bench_line(
                r#"{"bench":"netRecovery","case":"link8","runs":3,"median_ms":7000,"min_ms":6000,"max_ms":8000,"samples_ms":"6000 7000 8000"}"#,
            )?,
        );
        let md = render_net(&cases, None, "today", "1 1 1", "2 2 2")?;
        assert!(
            md.contains("| 1200 ms | 900–6000 ms | 3 | met (1 run over) |"),
            "{md}"
        );
        assert!(
            md.contains("| 7000 ms | 6000–8000 ms | 3 | **missed** |"),
            "{md}"
        );
        assert!(md.contains("| — | — | 0 | not measured |"), "{md}");
        assert!(md.starts_with(NET_BEGIN) && md.trim_end().ends_with(NET_END));
        Ok(())
    }

    #[test]
    fn cases_not_run_keep_their_last_rows_and_samples_marked_once() -> Result<()> {
        let line = |case: &str, ms: u32| {
            parse_bench_line(&format!(
                r#"{{"bench":"netRecovery","case":"{case}","runs":1,"median_ms":{ms},"min_ms":{ms},"max_ms":{ms},"samples_ms":"{ms}","restart_median_ms":5,"restart_min_ms":5,"restart_max_ms":5,"restart_samples_ms":"5","broadcast_median_ms":9,"broadcast_min_ms":9,"broadcast_max_ms":9,"broadcast_samples_ms":"9","broadcast_back_runs":1}}"#
            ))
        };
        let mut all = BTreeMap::new();
        for case in ["tcp", "turn", "link8", "restart", "layerswitch"] {
            all.insert(case.to_owned(), line(case, 1000)?);
        }
        let first = render_net(&all, None, "day 1", "1", "1")?;
        let mut one = BTreeMap::new();
        one.insert("layerswitch".to_owned(), line("layerswitch", 3000)?);
        let second = render_net(&one, Some(&first), "day 2", "1", "1")?;
        let third = render_net(&one, Some(&second), "day 3", "1", "1")?;
        for md in [&second, &third] {
            assert!(md.contains("| UDP-blocked guest via ICE-TCP: join() → remote video of every publisher | ≤ 5000 ms | 1000 ms | 1000–1000 ms | 1 | met (earlier run) |"), "{md}");
            assert!(md.contains("| 3000 ms | 3000–3000 ms | 1 | met |"), "{md}");
            assert!(md.contains("| server kill -9 → answering again | — (reference) | 5 ms | 5–5 ms | 1 | (earlier run) |"), "{md}");
            assert!(md.contains("ICE-TCP 1000 (earlier run); TURN 1000 (earlier run)"), "{md}");
            assert!(md.contains("layer switch 3000;") || md.contains("layer switch 3000. "), "{md}");
            assert!(md.contains("server answering again 5 (earlier run); broadcast back 9 (earlier run)"), "{md}");
            assert!(!md.contains("not measured") && md.matches(EARLIER).count() == 12, "{md}");
        }
        Ok(())
    }
}
