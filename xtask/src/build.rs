//! `cargo xtask build`: the npm package in `sdk/pkg/` and the server binary.

use crate::util::{self, note, step};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Features every browser we support has; wasm-opt must be told, or it
/// refuses the instructions rustc already emits (bulk memory, sign-ext, ...).
const WASM_FEATURES: [&str; 5] = [
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// Where `cargo xtask build` leaves the publishable npm package.
pub const PKG_DIR: &str = "sdk/pkg";

/// Builds the SDK package, then the debug server binary.
pub fn run() -> Result<()> {
    sdk()?;
    server()?;
    Ok(())
}

/// The debug server binary that `serve` and the journeys run.
pub fn server_binary() -> PathBuf {
    util::target_dir().join("debug").join("stagecast")
}

/// Builds `sdk/pkg/`: wasm (size profile) → wasm-bindgen (web target) →
/// wasm-opt (whichever of [`OPT_PIPELINES`] gzips smallest) → esbuild-minified
/// JS → the hand-written package files from `sdk/npm/` (index.js minified too).
pub fn sdk() -> Result<()> {
    let root = util::root();
    let npm_dir = root.join("sdk/npm");
    if !npm_dir.join("package.json").is_file() {
        bail!("sdk/npm/package.json is missing: the npm package metadata lives there");
    }

    step("build: SDK wasm (profile `wasm`)");
    util::run(util::cargo().args([
        "build",
        "-p",
        "stagecast-sdk",
        "--lib",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
    ]))?;
    let wasm = util::target_dir().join("wasm32-unknown-unknown/wasm/stagecast_sdk.wasm");

    let pkg = root.join(PKG_DIR);
    let bg = pkg.join("stagecast_bg.wasm");
    // wasm-bindgen + wasm-opt take a few seconds; skip them when the wasm
    // cargo produced has not changed since the last run and nobody rewrote
    // sdk/pkg since (the stamp records the optimised file's size).
    let stamp = util::target_dir().join("wasm32-unknown-unknown/wasm/stagecast-pkg.stamp");
    let recorded = std::fs::read_to_string(&stamp).ok();
    let fresh = match (util::mtime(&stamp), util::mtime(&wasm), util::mtime(&bg)) {
        (Some(done), Some(built), Some(written)) => {
            done >= built
                && done >= written
                && pkg.join("stagecast.js").is_file()
                && recorded.as_deref().map(str::trim) == Some(file_len(&bg).to_string().as_str())
        }
        _ => false,
    };
    if fresh {
        step("build: wasm-bindgen + wasm-opt");
        note("sdk/pkg is up to date with the wasm cargo built");
    } else {
        bindgen_and_opt(&wasm, &pkg)?;
        std::fs::write(&stamp, format!("{}\n", file_len(&bg)))
            .with_context(|| format!("write {}", stamp.display()))?;
    }

    step("build: package files from sdk/npm");
    util::copy_tree(&npm_dir, &pkg)?;
    minify_js(&pkg.join("index.js"))?;
    for name in ["package.json", "index.js", "index.d.ts"] {
        if !pkg.join(name).is_file() {
            note(&format!("warning: sdk/pkg/{name} is missing (expected from sdk/npm/)"));
        }
    }

    print_sdk_size(&pkg)?;
    // The sample app's watch page needs its players wherever the SDK is
    // built (build, serve, test, bench); bundling takes well under a second.
    players()?;
    viewer()?;
    Ok(())
}

fn bindgen_and_opt(wasm: &Path, pkg: &Path) -> Result<()> {
    step("build: wasm-bindgen → sdk/pkg");
    // Start clean so files a previous build produced (old snippets, a stray
    // tarball) never end up in the published package.
    util::remove_dir(pkg)?;
    util::run(
        Command::new("wasm-bindgen")
            .args(["--target", "web", "--remove-name-section", "--out-dir", PKG_DIR, "--out-name", "stagecast"])
            .arg(wasm),
    )?;

    step("build: wasm-opt");
    let bg = pkg.join("stagecast_bg.wasm");
    note(&format!("stagecast_bg.wasm gzipped: {}", optimise_for_gzip(&bg)?));

    step("build: minify the wasm-bindgen glue");
    minify_js(&pkg.join("stagecast.js"))?;
    Ok(())
}

/// The wasm-opt pipelines `optimise_for_gzip` tries. What ships is gzipped,
/// and binaryen's size levels shrink the raw wasm but not the gzipped one:
/// -Oz output gzips ~4.5 KB *worse* than the light -O1 pipeline, mostly
/// because it inlines every function that has one caller (distinct copies
/// of similar code compress worse than calls to one function). -O2 without
/// that inlining, run to convergence, gzips ~1.8 KB smaller than -O1.
const OPT_PIPELINES: [&[&str]; 3] = [
    &["-O1"],
    &["-O2", "--one-caller-inline-max-function-size", "0", "--converge"],
    &["-Oz"],
];

/// Runs wasm-opt over `bg` with each of [`OPT_PIPELINES`] and keeps whichever
/// output is smallest gzipped (or the input, if none is smaller). The
/// producers and target-features sections are dropped (browsers ignore
/// them). Returns what it measured, for the build log.
fn optimise_for_gzip(bg: &Path) -> Result<String> {
    let before = util::gzip_size(bg)?;
    let optimised = bg.with_extension("opt.wasm");
    let kept = bg.with_extension("best.wasm");
    let mut best: (u64, String) = (before, "unoptimised".to_owned());
    let mut sizes = vec![format!("{before} B unoptimised")];
    for pipeline in OPT_PIPELINES {
        util::run(
            wasm_opt()?
                .args(pipeline)
                .args(WASM_FEATURES)
                .args(["--strip-producers", "--strip-target-features"])
                .arg(bg)
                .arg("-o")
                .arg(&optimised),
        )?;
        let size = util::gzip_size(&optimised)?;
        let name = pipeline.join(" ");
        sizes.push(format!("{size} B after {name}"));
        if size < best.0 {
            best = (size, name);
            std::fs::rename(&optimised, &kept).with_context(|| format!("keep {}", optimised.display()))?;
        }
    }
    if optimised.is_file() {
        std::fs::remove_file(&optimised).with_context(|| format!("remove {}", optimised.display()))?;
    }
    if kept.is_file() {
        std::fs::rename(&kept, bg).with_context(|| format!("replace {}", bg.display()))?;
    }
    Ok(format!("{}; kept the {} one", sizes.join(", "), best.1))
}

/// Minifies a package ES module in place with esbuild (identifiers, white
/// space, syntax). It stays an ES module, so `import.meta.url` and
/// top-level await keep working; `--keep-names` keeps `Stage.name` etc. (and
/// the glue's "expected instance of X" messages) as they were, for ~1 KB;
/// the `.d.ts` files are left readable.
fn minify_js(file: &Path) -> Result<()> {
    let esbuild = util::root().join("node_modules/.bin/esbuild");
    if !esbuild.is_file() {
        bail!("{} is missing; run `cargo xtask setup` (npm install)", esbuild.display());
    }
    let tmp = file.with_extension("min.js");
    util::run(
        Command::new(&esbuild)
            .arg(file)
            .args(["--minify", "--keep-names", "--format=esm", "--target=es2022"])
            .arg("--log-level=warning")
            .arg(format!("--outfile={}", tmp.display())),
    )?;
    std::fs::rename(&tmp, file).with_context(|| format!("replace {}", file.display()))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// wasm-opt from the `binaryen` npm package (a JS/wasm build, so no native
/// download is needed); a native `wasm-opt` on PATH is not used on purpose,
/// so every machine optimises with the same version.
fn wasm_opt() -> Result<Command> {
    let script = util::root().join("node_modules/binaryen/bin/wasm-opt");
    if !script.is_file() {
        bail!("{} is missing; run `cargo xtask setup`", script.display());
    }
    let mut cmd = Command::new("node");
    cmd.arg(script);
    Ok(cmd)
}

/// Gzipped size of what a browser downloads: the wasm and every JS file of
/// the package (glue + entry point).
pub fn sdk_size(pkg: &Path) -> Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(pkg).with_context(|| format!("read {}", pkg.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".wasm") || name.ends_with(".js") {
            files.push((name, util::gzip_size(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

fn print_sdk_size(pkg: &Path) -> Result<()> {
    step("SDK size (gzip -9)");
    let files = sdk_size(pkg)?;
    let mut total = 0;
    for (name, size) in &files {
        note(&format!("{name:<24} {:>7.1} KB", *size as f64 / 1024.0));
        total += size;
    }
    note(&format!("{:<24} {:>7.1} KB (target ≤ 120 KB)", "total", total as f64 / 1024.0));
    Ok(())
}

/// Builds the server in the dev profile. Release would cost several extra
/// minutes of a 2-core CI budget (LTO-free, but str0m + aws-lc + SQLite at
/// opt-level 3), and the journeys exercise behaviour, not speed; the
/// workspace already compiles dependencies at opt-level 1 in dev.
pub fn server() -> Result<()> {
    step("build: stagecast server (debug)");
    util::run(util::cargo().args(["build", "-p", "stagecast-server", "--bin", "stagecast"]))
}

/// The IVS Player's worker files, copied next to the bundle: the player
/// loads them by URL (`create({wasmWorker, wasmBinary})`), so they cannot be bundled.
const IVS_PLAYER_ASSETS: [&str; 2] = ["amazon-ivs-wasmworker.min.js", "amazon-ivs-wasmworker.min.wasm"];

/// Bundles the sample app's video players (hls.js and the IVS Player, from
/// npm) into `www/dist/players.js` with esbuild, and copies the IVS Player's
/// wasm worker next to it.
pub fn players() -> Result<()> {
    step("build: www/dist (hls.js + IVS Player bundle)");
    let root = util::root();
    let esbuild = root.join("node_modules/.bin/esbuild");
    if !esbuild.is_file() {
        bail!("{} is missing; run `cargo xtask setup` (npm install)", esbuild.display());
    }
    let dist = root.join("www/dist");
    std::fs::create_dir_all(&dist).with_context(|| format!("create {}", dist.display()))?;
    util::run(
        Command::new(&esbuild)
            .current_dir(&root)
            .arg("www/players/entry.js")
            .args(["--bundle", "--format=esm", "--minify", "--log-level=warning"])
            .arg("--outfile=www/dist/players.js"),
    )?;
    let assets = root.join("node_modules/amazon-ivs-player/dist/assets");
    for name in IVS_PLAYER_ASSETS {
        let from = assets.join(name);
        std::fs::copy(&from, dist.join(name)).with_context(|| format!("copy {}", from.display()))?;
    }
    note(&format!("players.js: {:.1} KB gzipped", util::gzip_size(&dist.join("players.js"))? as f64 / 1024.0));
    Ok(())
}

/// Where `cargo xtask build` leaves the watch page (served at `/watch/{groupId}`).
pub const VIEWER_DIST: &str = "viewer/dist";

/// Builds the Leptos watch page into `viewer/dist/`: wasm (size profile) →
/// wasm-bindgen (web target) → wasm-opt (whichever of [`OPT_PIPELINES`] gzips
/// smallest) → minified glue, plus `index.html` and `viewer.css` from `viewer/static/`.
/// The server serves `index.html` for every `/watch/{groupId}` and the rest
/// at `/viewer/`. The players come from `www/dist/players.js` at run time.
/// The viewer depends on the SDK without its `stage`/`broadcast` features,
/// so none of the SDK's stage or broadcast exports are linked in.
pub fn viewer() -> Result<()> {
    step("build: watch page wasm (profile `wasm`)");
    let root = util::root();
    util::run(util::cargo().args([
        "build",
        "-p",
        "stagecast-viewer",
        "--bin",
        "stagecast-viewer",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
    ]))?;
    let wasm = util::target_dir().join("wasm32-unknown-unknown/wasm/stagecast-viewer.wasm");
    let dist = root.join(VIEWER_DIST);
    let bg = dist.join("stagecast_viewer_bg.wasm");
    // wasm-bindgen + wasm-opt take a while; skip them when dist already
    // holds the output of this very wasm.
    let fresh = matches!((util::mtime(&wasm), util::mtime(&bg)), (Some(built), Some(written)) if written >= built)
        && dist.join("stagecast_viewer.js").is_file();
    if fresh {
        note("viewer/dist is up to date with the wasm cargo built");
    } else {
        step("build: wasm-bindgen + wasm-opt → viewer/dist");
        util::remove_dir(&dist)?;
        util::run(
            Command::new("wasm-bindgen")
                .args(["--target", "web", "--no-typescript", "--remove-name-section"])
                .args(["--out-dir", VIEWER_DIST, "--out-name", "stagecast_viewer"])
                .arg(&wasm),
        )?;
        note(&format!("stagecast_viewer_bg.wasm gzipped: {}", optimise_for_gzip(&bg)?));
        minify_js(&dist.join("stagecast_viewer.js"))?;
    }
    util::copy_tree(&root.join("viewer/static"), &dist)?;
    note(&format!("watch page: {:.1} KB gzipped (without the player library)", viewer_size(&dist)? as f64 / 1024.0));
    Ok(())
}

/// Gzipped bytes of everything in `viewer/dist/` (wasm, glue, snippets,
/// html, css): the watch page without `/dist/players.js`.
pub fn viewer_size(dist: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dist).with_context(|| format!("read {}", dist.display()))? {
        let entry = entry?;
        let path = entry.path();
        total += if entry.file_type()?.is_dir() { viewer_size(&path)? } else { util::gzip_size(&path)? };
    }
    Ok(total)
}
