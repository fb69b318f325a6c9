//! `cargo xtask serve`: setup, build, then run the server in the foreground.

use crate::util::step;
use crate::{build, setup};
use anyhow::{Context, Result};
use std::process::Command;

/// Builds everything and runs `target/debug/stagecast` with `args`.
pub fn run(args: &[String]) -> Result<()> {
    setup::run(setup::Needs::Build)?;
    build::run()?;

    let listen = flag_value(args, "--listen")
        .or_else(|| std::env::var("STAGECAST_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let data_dir = flag_value(args, "--data-dir")
        .or_else(|| std::env::var("STAGECAST_DATA_DIR").ok())
        .unwrap_or_else(|| "./data".to_owned());
    // A wildcard listen address is not something a browser can open.
    let browse = listen.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]");

    step("serve");
    println!("    sample app     http://{browse}/");
    println!("    npm package    http://{browse}/sdk/   (built from sdk/pkg/)");
    println!("    control plane  http://{browse}/v1/    (Authorization: Bearer <API key>)");
    println!("    demo backend   http://{browse}/api/");
    if std::env::var_os("STAGECAST_API_KEY").is_some() || flag_value(args, "--api-key").is_some() {
        println!("    API key        from STAGECAST_API_KEY / --api-key");
    } else {
        println!("    API key        {data_dir}/api-key (generated and printed on first start)");
    }
    println!("    Ctrl-C stops the server.\n");

    let mut cmd = Command::new(build::server_binary());
    cmd.args(args);
    exec(cmd)
}

/// The value of `--name value` or `--name=value` in `args`.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == name {
            return iter.next().cloned();
        }
        if let Some(value) = arg.strip_prefix(&prefix) {
            return Some(value.to_owned());
        }
    }
    None
}

#[cfg(unix)]
fn exec(mut cmd: Command) -> Result<()> {
    use std::os::unix::process::CommandExt;
    // Replace this process so Ctrl-C and the exit code belong to the server.
    let err = cmd.exec();
    Err(err).with_context(|| format!("exec {}", cmd.get_program().to_string_lossy()))
}

#[cfg(not(unix))]
fn exec(mut cmd: Command) -> Result<()> {
    let status = cmd.status().context("start the server")?;
    anyhow::ensure!(status.success(), "server exited with {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::flag_value;

    #[test]
    fn reads_both_flag_forms() {
        let args: Vec<String> = ["--listen", "0.0.0.0:9000", "--data-dir=/tmp/x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(flag_value(&args, "--listen").as_deref(), Some("0.0.0.0:9000"));
        assert_eq!(flag_value(&args, "--data-dir").as_deref(), Some("/tmp/x"));
        assert_eq!(flag_value(&args, "--media-port"), None);
    }
}
