//! `cargo xtask fuzz <target> --seconds N`: run one property-test target
//! (a `fuzz_*` test file) in release mode for N seconds per property, with
//! fresh random seeds, instead of the bounded, fixed-seed run that
//! `cargo test` does. `cargo xtask fuzz --list` lists the targets.
//!
//! The targets use `stagecast-testkit`, which reads `STAGECAST_FUZZ_SECONDS`:
//! every property runs N seconds. The harness runs a target's tests side by
//! side and the properties within one test in turn, so a run takes a small
//! multiple of N once built. A failure prints proptest's minimal input.

use crate::util::{self, step};
use anyhow::{bail, Context, Result};

/// (test target, package, what it feeds).
pub const TARGETS: [(&str, &str, &str); 6] = [
    ("fuzz_h264", "stagecast-server", "H.264 SPS (crafted and round-tripped), Annex-B splitting, AVCC"),
    ("fuzz_media", "stagecast-server", "packager timestamps/sizes/broken SPS, fMP4 fragments, Opus → AAC"),
    ("fuzz_sdp", "stagecast-server", "SDP offers into the SFU and channel ingest; client error text"),
    ("fuzz_tokens", "stagecast-server", "participant and chat JWTs: round trip, forgeries, noise"),
    ("fuzz_chat", "stagecast-server", "chat requests: round trip, noise and mutations into the room core"),
    ("fuzz_json", "stagecast-sdk", "the SDK's JSON reader, token claims, event-plane and chat frames"),
];

const DEFAULT_SECONDS: u64 = 60;

pub fn run(args: &[String]) -> Result<()> {
    let mut target: Option<&str> = None;
    let mut seconds = DEFAULT_SECONDS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--list" => {
                list();
                return Ok(());
            }
            "--seconds" => {
                let value = it.next().context("--seconds needs a number")?;
                seconds = value.parse().with_context(|| format!("--seconds {value}: not a whole number"))?;
            }
            name if !name.starts_with('-') && target.is_none() => target = Some(name),
            other => bail!("unexpected argument `{other}`\n\nusage: cargo xtask fuzz <target> [--seconds N] | --list"),
        }
    }
    let Some(target) = target else {
        list();
        bail!("name a target");
    };
    let Some((name, package, _)) = TARGETS.iter().find(|(n, _, _)| *n == target || n.trim_start_matches("fuzz_") == target) else {
        list();
        bail!("unknown fuzz target `{target}`");
    };
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    step(&format!("fuzz: {name} for {seconds} s per property (release build)"));
    util::run(
        util::cargo()
            .env(SECONDS_ENV, seconds.to_string())
            .args(["test", "--release", "-p", package, "--test", name, "--", "--nocapture", "--test-threads", "64"]),
    )
}

/// What `stagecast-testkit` reads (kept in one place there; repeated here
/// because xtask does not depend on the test crates).
const SECONDS_ENV: &str = "STAGECAST_FUZZ_SECONDS";

fn list() {
    println!("fuzz targets (cargo xtask fuzz <target> --seconds N):");
    for (name, package, what) in TARGETS {
        println!("  {name:<12} {package:<17} {what}");
    }
}
