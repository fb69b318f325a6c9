//! `cargo xtask` — the project's two commands and their helpers.
//!
//! - `setup`  installs what is missing (Debian packages, the wasm target, the
//!   pinned wasm-bindgen CLI, npm packages); fast when everything is there.
//! - `build`  builds the npm package into `sdk/pkg/` and the `stagecast` binary.
//! - `serve`  setup + build, then runs the server (extra args are passed on).
//! - `test`   setup + build, then native tests, wasm tests in Chromium, the
//!   npm-pack check, the browser journeys against a real server and the
//!   network journeys in namespaces (as root).
//! - `bench`  latency, size and soak benchmarks (writes BENCHMARKS.md);
//!   `bench soak [--seconds N]` runs only the stage soak; `bench sfu
//!   [--seconds N]` only SFU capacity and `bench scale` only chat fan-out at
//!   10,000 clients and joining across nodes (release builds, not in the
//!   full run).
//! - `fuzz`   one property-test target for N seconds (`--list` names them).
//!
//! Every step prints what it runs, so a failing CI log says where it stopped.

mod bench;
mod build;
mod fuzz;
mod serve;
mod setup;
mod soak;
mod test;
mod util;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <setup|build|serve|test|bench|fuzz> [args]

  setup   install what is missing (apt packages, wasm target, wasm-bindgen CLI, npm packages)
  build   build the npm package into sdk/pkg/ and the stagecast server (debug)
  serve   setup + build, then run target/debug/stagecast [args...]
  test    setup + build, then native tests, wasm tests, npm-pack check, browser journeys,
          network journeys in namespaces (root)
          (`cargo xtask test pack journeys net` or `cargo xtask test tests/x.test.mjs
          tests/net/y.test.mjs` runs only those)
  bench   glass-to-glass latency, join time, SDK size and the 10-minute stage soak (writes BENCHMARKS.md);
          `bench soak [--seconds N]` runs only the soak (STAGECAST_SOAK_SECONDS shortens it);
          `bench sfu [--seconds N]` SFU capacity with a native load generator (release builds)
          `bench scale [--seconds N] [--clients N]` chat fan-out at 10,000 clients on one node and two with Redis,
          and stage join → first frame through a node that is not the media node (release builds)
  fuzz    run one parser property-test target longer, in release mode:
          `cargo xtask fuzz fuzz_h264 --seconds 300`; `cargo xtask fuzz --list` lists targets";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let rest: Vec<String> = args.collect();
    let result = util::prepare_env().and_then(|()| match command.as_str() {
        "setup" => setup::run(setup::Needs::All),
        "build" => setup::run(setup::Needs::Build).and_then(|()| build::run()),
        "serve" => serve::run(&rest),
        "test" => test::run(&rest),
        "bench" if rest.first().map(String::as_str) == Some("soak") => soak::run(&rest[1..]),
        "bench" if rest.first().map(String::as_str) == Some("net") => bench::run_net(&rest[1..]),
        "bench" if rest.first().map(String::as_str) == Some("sfu") => bench::run_sfu(&rest[1..]),
        "bench" if rest.first().map(String::as_str) == Some("scale") => bench::run_scale(&rest[1..]),
        "bench" => bench::run(),
        "fuzz" => fuzz::run(&rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask {command}: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
