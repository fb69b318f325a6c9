//! `cargo xtask test`: everything CI checks, in order, with a summary.
//!
//! 1. native tests (`cargo test --workspace`)
//! 2. wasm tests of the SDK in headless Chromium (wasm-bindgen-test-runner)
//! 3. the npm-pack check: the packed tarball installs into a scratch app
//!    (`tests/pack/`), bundles with esbuild, type-checks with `tsc --strict`,
//!    and initialises in Chromium without an init call
//! 4. the browser journeys (`tests/*.test.mjs`) against a real server
//! 5. the network journeys (`tests/net/*.test.mjs`): the server and each
//!    browser on their own network namespace, with impaired networks (UDP
//!    blocked, TURN only, link drops, server restarts); needs root
//!
//! A failing step does not stop the later ones that can still run, so one CI
//! log shows every problem; any failure makes the command exit non-zero.

use crate::util::{self, note, step};
use crate::{build, setup};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

struct Summary {
    steps: Vec<(String, Outcome, Duration)>,
}

impl Summary {
    fn record(&mut self, name: &str, started: Instant, result: Result<Outcome>) -> bool {
        let outcome = result.unwrap_or_else(|err| Outcome::Failed(format!("{err:#}")));
        let ok = !matches!(outcome, Outcome::Failed(_));
        if let Outcome::Failed(why) = &outcome {
            eprintln!("\n!!! {name} failed: {why}");
        }
        self.steps.push((name.to_owned(), outcome, started.elapsed()));
        ok
    }

    fn skip(&mut self, name: &str, why: &str) {
        self.steps.push((name.to_owned(), Outcome::Skipped(why.to_owned()), Duration::ZERO));
    }

    fn print_and_finish(&self) -> Result<()> {
        println!("\n==> summary");
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for (name, outcome, took) in &self.steps {
            let (mark, detail) = match outcome {
                Outcome::Passed => {
                    passed += 1;
                    ("ok  ", String::new())
                }
                Outcome::Failed(why) => {
                    failed += 1;
                    ("FAIL", format!(" — {}", first_line(why)))
                }
                Outcome::Skipped(why) => {
                    skipped += 1;
                    ("skip", format!(" — {why}"))
                }
            };
            println!("    {mark} {name:<36} {:>6.1}s{detail}", took.as_secs_f64());
        }
        println!("xtask: {passed} passed, {failed} failed, {skipped} skipped");
        if failed > 0 {
            bail!("{failed} step(s) failed");
        }
        Ok(())
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The steps `cargo xtask test <step>...` can pick (none named: all of them).
const STEPS: [&str; 5] = ["native", "wasm", "pack", "journeys", "net"];

/// Where the network journeys live (they run in the `net` step).
const NET_DIR: &str = "tests/net";

/// Runs the test steps; see the module docs. `args` may name steps (see
/// [`STEPS`]) and journey files (`tests/x.test.mjs`, `tests/net/x.test.mjs`)
/// to run only those (each in its own step).
pub fn run(args: &[String]) -> Result<()> {
    let (files, names): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| a.ends_with(".mjs"));
    for name in &names {
        if !STEPS.contains(&name.as_str()) {
            bail!("unknown test step `{name}` (steps: {})", STEPS.join(", "));
        }
    }
    let (net_filter, journey_filter): (Vec<PathBuf>, Vec<PathBuf>) =
        files.iter().map(PathBuf::from).partition(|f| is_net_journey(f));
    let wanted = |step: &str| {
        (names.is_empty() && files.is_empty())
            || names.iter().any(|n| *n == step)
            || (step == "journeys" && !journey_filter.is_empty())
            || (step == "net" && !net_filter.is_empty())
    };
    let mut summary = Summary { steps: Vec::new() };

    let started = Instant::now();
    if !summary.record("setup", started, setup::run(setup::Needs::Browser).map(|()| Outcome::Passed)) {
        return summary.print_and_finish();
    }

    let started = Instant::now();
    let sdk_ok = summary.record("build SDK (sdk/pkg)", started, build::sdk().map(|()| Outcome::Passed));

    // `cargo test --workspace` also links target/debug/stagecast (the server's
    // integration tests need the binary), with the same feature set the
    // tests use; building it separately with `cargo build -p` would resolve
    // features without dev-dependencies and recompile hyper & co. a second time.
    if wanted("native") {
        let started = Instant::now();
        summary.record("native tests", started, native_tests());
    }

    let mut server_ok = false;
    if wanted("journeys") || wanted("net") {
        let started = Instant::now();
        server_ok = summary.record("build server", started, server_binary().map(|_| Outcome::Passed));
    }

    if wanted("wasm") {
        let started = Instant::now();
        summary.record("wasm tests (Chromium)", started, wasm_tests());
    }

    if wanted("pack") {
        if sdk_ok {
            let started = Instant::now();
            summary.record("npm pack + esbuild bundle", started, pack_check());
        } else {
            summary.skip("npm pack + esbuild bundle", "SDK build failed");
        }
    }

    if wanted("journeys") {
        if sdk_ok && server_ok {
            let started = Instant::now();
            summary.record("browser journeys", started, journeys(&journey_filter));
        } else {
            summary.skip("browser journeys", "SDK or server build failed");
        }
    }

    if wanted("net") {
        if sdk_ok && server_ok {
            let started = Instant::now();
            summary.record("network journeys (namespaces)", started, net_journeys(&net_filter));
        } else {
            summary.skip("network journeys (namespaces)", "SDK or server build failed");
        }
    }

    summary.print_and_finish()
}

fn native_tests() -> Result<Outcome> {
    step("test: native (cargo test --workspace)");
    // --no-fail-fast: one failing test binary must not hide the others' results.
    util::run(util::cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    Ok(Outcome::Passed)
}

/// The server binary for the journeys: reuse the one `cargo test` linked
/// when it is up to date, else build it.
fn server_binary() -> Result<PathBuf> {
    step("build: server binary for the journeys");
    let binary = build::server_binary();
    // Only build when `cargo test` did not leave a current binary behind.
    if binary.is_file() && !server_sources_newer_than(&binary)? {
        note(&format!("up to date: {}", binary.display()));
        return Ok(binary);
    }
    build::server()?;
    Ok(binary)
}

/// True when any server/protocol source or manifest changed after `binary`
/// was linked (then the binary `cargo test` left behind is not current).
fn server_sources_newer_than(binary: &Path) -> Result<bool> {
    let Some(linked) = util::mtime(binary) else { return Ok(true) };
    let root = util::root();
    let mut stack = vec![root.join("server"), root.join("protocol")];
    let mut files = vec![root.join("Cargo.lock"), root.join("Cargo.toml")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    Ok(files.iter().any(|f| util::mtime(f).is_some_and(|t| t > linked)))
}

fn has_wasm_tests() -> Result<bool> {
    let root = util::root();
    let mut stack = vec![root.join("sdk/tests"), root.join("sdk/src")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)?;
                if text.contains("wasm_bindgen_test") {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

fn wasm_tests() -> Result<Outcome> {
    step("test: SDK in headless Chromium (wasm-bindgen-test)");
    if !has_wasm_tests()? {
        note("no #[wasm_bindgen_test] found under sdk/ — nothing to run in the browser");
        return Ok(Outcome::Skipped("sdk has no wasm tests".into()));
    }
    let root = util::root();
    // Root in a container: Chromium needs --no-sandbox; the runner reads
    // extra capabilities from this file. The SDK's own file wins if present.
    let webdriver_json = [root.join("sdk/webdriver.json"), root.join("xtask/webdriver.json")]
        .into_iter()
        .find(|p| p.is_file())
        .context("xtask/webdriver.json is missing")?;
    let tests = || {
        let mut cmd = util::cargo();
        cmd.args(["test", "-p", "stagecast-sdk", "--target", "wasm32-unknown-unknown", "--no-fail-fast"])
            .env("CHROMEDRIVER", setup::CHROMEDRIVER)
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", "wasm-bindgen-test-runner")
            .env("WASM_BINDGEN_TEST_WEBDRIVER_JSON", &webdriver_json)
            .env("WASM_BINDGEN_TEST_TIMEOUT", "120");
        cmd
    };
    if let Err(first) = util::run(&mut tests()) {
        // The runner gives chromedriver a few seconds to bind its port; on
        // a loaded 2-core machine it once did not ("driver failed to bind
        // port during startup"). A test that really fails fails again.
        note(&format!("wasm tests failed ({first:#}); running them once more"));
        util::run(&mut tests())?;
    }
    Ok(Outcome::Passed)
}

fn pack_check() -> Result<Outcome> {
    step("test: npm pack → scratch app → esbuild bundle, tsc → Chromium");
    let root = util::root();
    let target = util::target_dir();
    let pack_dir = target.join("pack");
    let app = target.join("pack-app");
    util::remove_dir(&pack_dir)?;
    util::remove_dir(&app)?;
    std::fs::create_dir_all(&pack_dir)?;

    let json = util::output(
        Command::new("npm")
            .args(["pack", "--json", "--pack-destination"])
            .arg(&pack_dir)
            .arg(root.join(build::PKG_DIR)),
    )?;
    let tarball = std::fs::read_dir(&pack_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .context("npm pack wrote no .tgz")?;
    note(&format!("tarball: {}", tarball.display()));
    for needed in ["package.json", ".wasm", ".d.ts", ".js"] {
        if !json.contains(needed) {
            bail!("the packed tarball has no {needed} file (see `npm pack --dry-run ./sdk/pkg`)");
        }
    }

    util::copy_tree(&root.join("tests/pack"), &app)?;
    util::run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--no-save"])
            .arg(&tarball)
            .current_dir(&app),
    )?;
    util::run(
        // The .bin link: esbuild's install script may swap its JS launcher
        // for the native binary, so it is not always a node script.
        Command::new(root.join("node_modules/.bin/esbuild"))
            .args([
                "main.js",
                "--bundle",
                "--format=esm",
                "--platform=browser",
                "--target=es2022",
                "--outfile=dist/main.js",
            ])
            .current_dir(&app),
    )?;
    // The declarations ship and describe what users write (strict mode).
    util::run(
        Command::new(root.join("node_modules/.bin/tsc"))
            .args([
                "--noEmit",
                "--strict",
                "--target",
                "es2022",
                "--module",
                "esnext",
                "--moduleResolution",
                "bundler",
                "--lib",
                "es2022,dom,dom.iterable",
                "types.ts",
            ])
            .current_dir(&app),
    )?;
    util::run(Command::new("node").arg(root.join("tests/pack/check.mjs")).arg(&app))?;
    Ok(Outcome::Passed)
}

/// A running `stagecast` that is killed when this guard drops, whatever
/// happened to the journeys.
pub struct ServerGuard {
    child: Child,
    log: PathBuf,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerGuard {
    /// Prints the end of the server's log (for diagnosing a failure).
    pub fn print_log_tail(&self, lines: usize) {
        let Ok(text) = std::fs::read_to_string(&self.log) else { return };
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        eprintln!("--- last {} lines of {} ---", all.len() - from, self.log.display());
        for line in &all[from..] {
            eprintln!("{line}");
        }
        eprintln!("--- end of server log ---");
    }
}

pub(crate) fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port free for UDP and for TCP: the server's media port binds both.
fn free_media_port() -> Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for both UDP and TCP in 50 tries")
}

/// True for a journey of the `net` step (a file under tests/net/).
fn is_net_journey(file: &Path) -> bool {
    let file = file.strip_prefix(util::root()).unwrap_or(file);
    file.starts_with(NET_DIR)
}

/// The `*.test.mjs` files directly in `dir` (relative to the repo root),
/// sorted (node runs them one after another).
fn journey_files(dir: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(util::root().join(dir))
        .with_context(|| format!("read {dir}/"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".test.mjs")))
        .collect();
    files.sort();
    Ok(files)
}

/// Starts the server on free loopback ports with a fresh data dir and a
/// random API key; returns once it answers HTTP.
pub fn start_server(name: &str) -> Result<(ServerGuard, String, String)> {
    start_server_with(name, &build::server_binary(), &[])
}

/// [`start_server`] with another build of the server (`binary`) and extra
/// arguments (`cargo xtask bench sfu`: the release build, `--sfu-workers N`).
pub fn start_server_with(name: &str, binary: &Path, extra: &[String]) -> Result<(ServerGuard, String, String)> {
    let target = util::target_dir();
    let data_dir = target.join(format!("{name}-data"));
    util::remove_dir(&data_dir)?;
    std::fs::create_dir_all(&data_dir)?;
    let log = target.join(format!("{name}-server.log"));
    let log_file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;

    let port = free_tcp_port()?;
    let media_port = free_media_port()?;
    let api_key = util::random_hex()?;
    let mut cmd = Command::new(binary);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--media-port")
        .arg(media_port.to_string())
        .arg("--data-dir")
        .arg(&data_dir)
        .args(extra)
        .env("STAGECAST_API_KEY", &api_key)
        // Every journey creates its groups from 127.0.0.1, faster than the
        // default 10 a minute per address; the limit itself is tested natively.
        .env("STAGECAST_DEMO_CREATE_RATE", "1000")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .current_dir(util::root())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    println!(
        "$ STAGECAST_API_KEY=*** {} --listen 127.0.0.1:{port} --media-port {media_port} --data-dir {}{}  (log: {})",
        binary.display(),
        data_dir.display(),
        extra.iter().map(|a| format!(" {a}")).collect::<String>(),
        log.display()
    );
    let child = cmd.spawn().with_context(|| format!("start {}", binary.display()))?;
    let mut guard = ServerGuard { child, log };

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = guard.child.try_wait()? {
            guard.print_log_tail(40);
            bail!("the server exited before it was ready ({status})");
        }
        if demo_list_answers(port) {
            break;
        }
        if Instant::now() > deadline {
            guard.print_log_tail(40);
            bail!("the server did not answer POST /api/list within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://127.0.0.1:{port}");
    note(&format!("server ready at {url}"));
    Ok((guard, url, api_key))
}

/// True once `POST /api/list` gets any HTTP response (no HTTP client crate:
/// one request over a raw socket is enough for a readiness probe).
fn demo_list_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "POST /api/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 ")
}

fn journeys(only: &[PathBuf]) -> Result<Outcome> {
    step("test: browser journeys (node --test tests/*.test.mjs)");
    let files = if only.is_empty() { journey_files("tests")? } else { only.to_vec() };
    if files.is_empty() {
        note("no tests/*.test.mjs files — nothing to run");
        return Ok(Outcome::Skipped("no journey files in tests/".into()));
    }
    let (guard, url, api_key) = start_server("journeys")?;
    let result = util::run(
        node_test(&files).env("STAGECAST_URL", &url).env("STAGECAST_API_KEY", &api_key),
    );
    if result.is_err() {
        guard.print_log_tail(60);
    }
    drop(guard);
    result.map(|()| Outcome::Passed)
}

/// `node --test` over `files`, one file at a time, from the repo root.
fn node_test(files: &[PathBuf]) -> Command {
    let root = util::root();
    let mut cmd = Command::new("node");
    // A backstop so a hung page cannot eat the CI budget; journeys set their
    // own, shorter timeouts.
    cmd.args(["--test", "--test-concurrency=1", "--test-timeout=300000"])
        .args(files.iter().map(|f| f.strip_prefix(&root).unwrap_or(f)))
        .current_dir(&root)
        // For journeys that run (and kill) a server of their own.
        .env("STAGECAST_BIN", build::server_binary())
        .env("CHROMIUM_PATH", setup::CHROMIUM);
    cmd
}

/// The network journeys: each file builds its own namespaces and starts its
/// own server (tests/net/netns.mjs), so no server is started here. Creating
/// namespaces and iptables rules needs root; without it the step fails and
/// says so (CI runs as root), rather than passing untested.
fn net_journeys(only: &[PathBuf]) -> Result<Outcome> {
    step("test: network journeys in namespaces (node --test tests/net/*.test.mjs)");
    let is_root = util::probe("id", &["-u"]).is_some_and(|uid| uid.trim() == "0");
    if !is_root {
        bail!(
            "the net step needs root: it creates network namespaces, veth pairs, iptables rules and tc qdiscs. \
             Run `cargo xtask test net` as root (CI does), or leave it out with `cargo xtask test native wasm pack journeys`"
        );
    }
    let files = if only.is_empty() { journey_files(NET_DIR)? } else { only.to_vec() };
    if files.is_empty() {
        bail!("no {NET_DIR}/*.test.mjs files");
    }
    util::run(
        node_test(&files).env("STAGECAST_NET_DIR", util::target_dir().join("net")),
    )?;
    Ok(Outcome::Passed)
}
