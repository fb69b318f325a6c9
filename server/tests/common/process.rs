//! The real `stagecast` binary in a process of its own, for tests that
//! measure the server as an operator would see it (resident memory).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};

use super::{temp_dir, Api};

/// A `stagecast` process on free loopback ports with a temp data dir.
/// Dropping it kills the process and removes the dir.
pub struct Process {
    child: Child,
    pid: u32,
    pub api: Api,
    dir: PathBuf,
}

impl std::ops::Deref for Process {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Process {
    /// Start `target/debug/stagecast` with `args` after the test defaults
    /// and wait until it says where it listens.
    pub fn spawn(name: &str, args: &[&str]) -> Result<Self> {
        let api_key = format!("test-{name}-{}", std::process::id());
        Self::spawn_in(temp_dir(name)?, api_key, args)
    }

    /// Start the binary on `dir` (which may hold a previous run's data).
    pub fn spawn_in(dir: PathBuf, api_key: String, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stagecast"))
            .args(["--listen", "127.0.0.1:0", "--media-port", "0", "--data-dir"])
            .arg(&dir)
            .args(args)
            .env("STAGECAST_API_KEY", &api_key)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the stagecast binary")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the address, then keeps draining so logging never blocks the server.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "Stagecast is running: sample app http://127.0.0.1:PORT/  control plane ..."
                if let Some(rest) = line.split("sample app http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
            }
        });
        let process = |host| Self { child, pid, api: Api::new(host, api_key), dir };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(host) => Ok(process(&host)),
            Err(_) => {
                drop(process(""));
                Err(anyhow!("the server did not say where it listens within 60 s"))
            }
        }
    }

    fn status_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} in /proc/{}/status", self.pid))?;
        let kib = line.trim_start_matches(field).trim().trim_end_matches("kB").trim();
        Ok(kib.parse()?)
    }

    /// The server's resident memory now, in MiB.
    pub fn rss_mib(&self) -> Result<f64> {
        Ok(self.status_kib("VmRSS:")? as f64 / 1024.0)
    }

    /// The most resident memory the server ever had, in MiB.
    pub fn peak_rss_mib(&self) -> Result<f64> {
        Ok(self.status_kib("VmHWM:")? as f64 / 1024.0)
    }

    /// SIGKILL (no shutdown of any kind), keeping the data dir; returns it
    /// and the API key, for [`Process::spawn_in`].
    pub fn kill_keeping_dir(mut self) -> Result<(PathBuf, String)> {
        self.child.kill()?;
        self.child.wait()?;
        Ok((std::mem::take(&mut self.dir), self.api.api_key.clone()))
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Send SIGTERM (what an orchestrator sends before it stops a node).
    pub fn terminate(&self) -> Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().context("run kill")?;
        ensure!(status.success(), "kill -TERM {} failed: {status}", self.pid);
        Ok(())
    }

    /// The exit status once the process ends, if within `within`.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}
