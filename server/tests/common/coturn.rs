//! Debian's coturn for tests: a `turnserver` with the TURN REST API shared
//! secret (`use-auth-secret`), the setup `--turn-secret` expects, and
//! coturn's own client `turnutils_uclient` to prove a credential works.
//! `cargo xtask setup` installs the `coturn` package.
//!
//! Reuse: [`turnserver_args`] is the whole configuration (no config file,
//! no TLS, state in one directory). Another harness (e.g. the network
//! namespace journeys, from Node) can start the same server with
//! `turnserver <those args>` inside a namespace, with `--listening-ip` /
//! `--relay-ip` set to that namespace's address, and stop it with SIGTERM.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The realm coturn puts in its challenges; any value works with REST credentials.
pub const REALM: &str = "stagecast.test";

/// The arguments of a `turnserver` on `ip:port` (UDP and TCP) that accepts
/// credentials made from `secret`, keeping its state and log in `dir`.
pub fn turnserver_args(ip: &str, port: u16, secret: &str, dir: &Path) -> Vec<String> {
    let path = |name: &str| dir.join(name).display().to_string();
    [
        "-n", // no configuration file
        "--listening-ip", ip,
        "--relay-ip", ip,
        "--listening-port", &port.to_string(),
        "--use-auth-secret",
        "--static-auth-secret", secret,
        "--realm", REALM,
        "--no-tls", "--no-dtls", "--no-cli",
        // Tests relay between peers on loopback; a public server keeps the default (denied).
        "--allow-loopback-peers",
        "--userdb", &path("turndb"),
        "--pidfile", &path("turnserver.pid"),
        "--log-file", &path("turnserver.log"),
        "--simple-log",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// A running `turnserver` on loopback; killed when dropped.
pub struct Coturn {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Coturn {
    /// Start one on a free loopback port and wait until it accepts TCP.
    pub fn start(secret: &str) -> Result<Self> {
        if Command::new("turnserver").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            bail!("coturn's turnserver is not installed: run `cargo xtask setup` (Debian package `coturn`)");
        }
        let dir = super::temp_dir("coturn")?;
        // A port free now for TCP and UDP; coturn binds it right after.
        let port = loop {
            let tcp = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            let port = tcp.local_addr()?.port();
            if std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                break port;
            }
        };
        let child = Command::new("turnserver")
            .args(turnserver_args("127.0.0.1", port, secret, &dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start turnserver")?;
        let coturn = Self { child, port, dir };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("turnserver did not listen on {addr}; log: {}", coturn.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(coturn)
    }

    /// Whether coturn grants a TURN/TCP allocation to `username`/`credential`
    /// and relays packets through it (`turnutils_uclient` between two
    /// allocations of its own).
    pub fn allocates(&self, username: &str, credential: &str) -> Result<bool> {
        let output = Command::new("turnutils_uclient")
            .args(["-t", "-y", "-c", "-n", "2", "-z", "5", "-p", &self.port.to_string()])
            .args(["-u", username, "-w", credential, "127.0.0.1"])
            .output()
            .context("run turnutils_uclient")?;
        let text = String::from_utf8_lossy(&output.stdout);
        // The last progress line counts the packets that came back through the relay.
        let received = text
            .lines()
            .filter_map(|l| l.split("tot_recv_msgs=").nth(1))
            .next_back()
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        Ok(output.status.success() && !text.contains("Cannot complete Allocation") && received > 0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turnserver.log")).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
