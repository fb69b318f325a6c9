//! `cargo xtask setup`: install whatever is missing, and nothing else.
//!
//! Each check is cheap (dpkg -s, rustup target list, wasm-bindgen --version,
//! file times), so running setup before every build costs well under a second
//! when the machine is ready.

use crate::util::{self, note, step};
use anyhow::{bail, Context, Result};
use std::process::Command;

/// What the calling command needs installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Toolchain and npm packages for building the SDK and server.
    Build,
    /// Build needs plus Chromium and ChromeDriver (test, bench).
    Browser,
    /// Everything (`cargo xtask setup` on its own).
    All,
}

/// The Chromium binary the tests drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The ChromeDriver the wasm tests use.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Runs every setup step that `needs` asks for.
pub fn run(needs: Needs) -> Result<()> {
    step("setup: system packages");
    // libopus-dev: the channel's Opus decoder links it through pkg-config.
    let mut packages = vec!["pkg-config", "libopus-dev"];
    if needs != Needs::Build {
        // ffmpeg/ffprobe only make fixtures for and check the output of the
        // channel tests; nothing in the product runs them. iproute2,
        // iptables, coturn and openssl build the network tests' namespaces,
        // impairments, TURN server and certificates (tests/net/); the native
        // TURN tests start coturn's turnserver and turnutils_uclient too.
        // firefox-esr runs the Firefox journey (tests/firefox.test.mjs), with
        // a pulseaudio null sink as its audio output (tests/firefox.mjs).
        // nginx is the HTTP cache in front of the server in
        // tests/nginx-cache.test.mjs (started there with its own config).
        // redis-server is distributed mode's shared store; the tests start
        // their own on a free port (server/tests/common/redis.rs).
        packages.extend([
            "chromium", "chromium-driver", "firefox-esr", "pulseaudio", "ffmpeg", "iproute2", "iptables", "coturn",
            "nginx", "openssl", "redis-server",
        ]);
    }
    apt_packages(&packages)?;

    step("setup: rust wasm target");
    wasm_target()?;

    step("setup: wasm-bindgen CLI");
    wasm_bindgen_cli()?;

    step("setup: npm packages");
    npm_packages()?;
    Ok(())
}

/// Install the Debian packages of `packages` that are missing (as root; else
/// name them and fail).
pub(crate) fn apt_packages(packages: &[&str]) -> Result<()> {
    if !cfg!(target_os = "linux") || util::probe("dpkg", &["--version"]).is_none() {
        note(&format!("not a Debian system; make sure these are installed: {}", packages.join(", ")));
        return Ok(());
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| {
            // `dpkg -s` succeeds for removed-but-configured packages too, so
            // read the status line.
            util::probe("dpkg", &["-s", pkg])
                .is_none_or(|status| !status.contains("Status: install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        note(&format!("installed: {}", packages.join(", ")));
        return Ok(());
    }
    let is_root = util::probe("id", &["-u"]).is_some_and(|uid| uid.trim() == "0");
    if !is_root {
        bail!(
            "missing Debian packages: {m}. Install them with `sudo apt-get install -y {m}` and re-run",
            m = missing.join(" ")
        );
    }
    util::run(Command::new("apt-get").arg("update"))?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

fn wasm_target() -> Result<()> {
    const TARGET: &str = "wasm32-unknown-unknown";
    let Some(installed) = util::probe("rustup", &["target", "list", "--installed"]) else {
        note(&format!("rustup not found; make sure the {TARGET} target is installed"));
        return Ok(());
    };
    if installed.lines().any(|line| line.trim() == TARGET) {
        note(&format!("installed: {TARGET}"));
        return Ok(());
    }
    util::run(Command::new("rustup").args(["target", "add", TARGET]))
}

/// The wasm-bindgen version Cargo.lock pins (the CLI must match it exactly,
/// or the generated glue and the wasm disagree at runtime).
pub fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(util::root().join("Cargo.lock")).context("read Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            if let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
            {
                return Ok(version.to_owned());
            }
        }
    }
    bail!("Cargo.lock has no wasm-bindgen package (is stagecast-sdk in the workspace?)")
}

fn wasm_bindgen_cli() -> Result<()> {
    let version = locked_wasm_bindgen_version()?;
    let have = util::probe("wasm-bindgen", &["--version"]).unwrap_or_default();
    let runner = util::probe("wasm-bindgen-test-runner", &["--version"]).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(version.as_str())
        && runner.split_whitespace().nth(1) == Some(version.as_str())
    {
        note(&format!("installed: wasm-bindgen {version}"));
        return Ok(());
    }
    if !have.is_empty() {
        note(&format!("found `{}`, need {version}", have.trim()));
    }
    // Not --locked: the CLI's own lockfile can pin crates this toolchain
    // rejects; the version pin is what matters for compatibility.
    util::run(util::cargo().args(["install", "wasm-bindgen-cli", "--version", &version]))
}

fn npm_packages() -> Result<()> {
    if util::probe("node", &["--version"]).is_none() || util::probe("npm", &["--version"]).is_none() {
        bail!("node and npm are required (Node.js 20 or newer)");
    }
    let root = util::root();
    let stamp = root.join("node_modules/.xtask-installed");
    let stamp_time = util::mtime(&stamp);
    let stale = match stamp_time {
        None => true,
        Some(installed) => ["package.json", "package-lock.json"]
            .iter()
            .any(|f| util::mtime(&root.join(f)).is_some_and(|changed| changed > installed)),
    };
    let complete = ["binaryen", "esbuild", "playwright-core", "puppeteer-core", "typescript"]
        .iter()
        .all(|pkg| root.join("node_modules").join(pkg).join("package.json").is_file());
    if !stale && complete {
        note("node_modules is up to date");
        return Ok(());
    }
    util::run(Command::new("npm").args(["install", "--no-audit", "--no-fund"]).current_dir(&root))?;
    std::fs::write(&stamp, b"written by cargo xtask setup after npm install\n")
        .with_context(|| format!("write {}", stamp.display()))?;
    Ok(())
}
