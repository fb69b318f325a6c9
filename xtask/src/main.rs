//! `cargo xtask` — the project's two commands and their helpers.
//!
//! - `setup`  installs what is missing (Debian packages, the wasm target, the
//!   pinned wasm-bindgen CLI, npm packages); fast when everything is there.
//! - `build`  builds the npm package into `sdk/pkg/` and the `stagecast` binary.
//! - `serve`  setup + build, then runs the server (extra args are passed on).
//! - `test`   setup + build, then native tests, wasm tests in Chromium, the
//!   npm-pack check and the browser journeys against a real server.
//! - `bench`  latency and size benchmarks (writes BENCHMARKS.md).
//!
//! Every step prints what it runs, so a failing CI log says where it stopped.

mod bench;
mod build;
mod serve;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <setup|build|serve|test|bench> [args]

  setup   install what is missing (apt packages, wasm target, wasm-bindgen CLI, npm packages)
  build   build the npm package into sdk/pkg/ and the stagecast server (debug)
  serve   setup + build, then run target/debug/stagecast [args...]
  test    setup + build, then native tests, wasm tests, npm-pack check, browser journeys
          (`cargo xtask test pack journeys` or `cargo xtask test tests/x.test.mjs` runs only those)
  bench   glass-to-glass latency, join time and SDK size (writes BENCHMARKS.md)";

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
        "bench" => bench::run(),
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
