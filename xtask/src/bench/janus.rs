//! Janus for the SFU capacity bench's side-by-side run: Debian's `janus`
//! started with a generated configuration in a temporary folder (only the
//! HTTP transport on a free loopback port and the videoroom plugin, ICE on
//! one local address, no STUN, a self-signed DTLS certificate Janus makes
//! itself, the log in that folder) and killed when the guard drops.

use crate::util::{self, note};
use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Janus's static event loops: media threads shared by all handles (its
/// default is a thread per handle, hundreds here); as many as our SFU's
/// largest worker count, on the same cores.
pub const EVENT_LOOPS: u32 = 2;

/// A running Janus; killed (and its folder removed, the log kept) on drop.
pub struct JanusGuard {
    child: Child,
    dir: PathBuf,
    pub pid: u32,
    /// `http://127.0.0.1:PORT/janus`.
    pub url: String,
    /// Where the log is kept after the run.
    pub log: PathBuf,
}

impl Drop for JanusGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::copy(self.dir.join("janus.log"), &self.log);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl JanusGuard {
    pub fn print_log_tail(&self, lines: usize) {
        let Ok(text) = std::fs::read_to_string(self.dir.join("janus.log")) else { return };
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        eprintln!("--- last {} lines of the Janus log ---", all.len() - from);
        for line in &all[from..] {
            eprintln!("{line}");
        }
        eprintln!("--- end of the Janus log ---");
    }
}

/// The first global IPv4 address of this machine: Janus gathers no
/// candidates on loopback interfaces (it skips `IFF_LOOPBACK` ones), so ICE
/// runs on this one; traffic to a local address still goes over `lo`.
pub fn local_ipv4() -> Option<Ipv4Addr> {
    let out = util::probe("ip", &["-4", "-o", "addr", "show", "scope", "global"])?;
    first_inet(&out)
}

/// The address of the first `inet a.b.c.d/n` in `ip -o addr` output.
fn first_inet(text: &str) -> Option<Ipv4Addr> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == "inet")?;
        words.next()?.split('/').next()?.parse().ok()
    })
}

/// The Debian package's plugin and transport folders (`/usr/lib/<triplet>/janus`).
fn janus_lib() -> Result<PathBuf> {
    let candidates = std::fs::read_dir("/usr/lib").context("read /usr/lib")?.flatten().map(|e| e.path().join("janus"));
    let mut found = candidates.filter(|d| d.join("plugins/libjanus_videoroom.so").is_file());
    found.next().context("no janus/plugins/libjanus_videoroom.so under /usr/lib/*/ (is the janus package installed?)")
}

/// janus.jcfg: folders, log, event loops, ICE on `ip` only.
pub fn core_config(dir: &Path, ip: Ipv4Addr, event_loops: u32) -> String {
    let d = dir.display();
    format!(
        "general: {{\n\
         \tconfigs_folder = \"{d}\"\n\
         \tplugins_folder = \"{d}/plugins\"\n\
         \ttransports_folder = \"{d}/transports\"\n\
         \tevents_folder = \"{d}/none\"\n\
         \tloggers_folder = \"{d}/none\"\n\
         \tlog_to_stdout = false\n\
         \tlog_to_file = \"{d}/janus.log\"\n\
         \tdebug_level = 4\n\
         \tdebug_colors = false\n\
         \tevent_loops = {event_loops}\n\
         \tsession_timeout = 60\n\
         }}\n\
         certificates: {{\n}}\n\
         media: {{\n}}\n\
         nat: {{\n\
         \tnice_debug = false\n\
         \tignore_mdns = true\n\
         \tice_enforce_list = \"{ip}\"\n\
         }}\n\
         plugins: {{\n}}\n\
         transports: {{\n}}\n\
         events: {{\n}}\n"
    )
}

/// janus.transport.http.jcfg: plain HTTP on 127.0.0.1:`port`, no admin API.
pub fn http_config(port: u16) -> String {
    format!(
        "general: {{\n\
         \tjson = \"plain\"\n\
         \tbase_path = \"/janus\"\n\
         \thttp = true\n\
         \tport = {port}\n\
         \tip = \"127.0.0.1\"\n\
         \thttps = false\n\
         }}\n\
         admin: {{\n\
         \tadmin_http = false\n\
         \tadmin_https = false\n\
         }}\n"
    )
}

/// Start Janus with ICE on `ip`; returns once its HTTP API accepts connections.
pub fn start(ip: Ipv4Addr, event_loops: u32) -> Result<JanusGuard> {
    let lib = janus_lib()?;
    let dir = std::env::temp_dir().join(format!("stagecast-janus-{}", std::process::id()));
    if dir.exists() {
        util::remove_dir(&dir)?;
    }
    for (sub, file) in [("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_http.so")] {
        std::fs::create_dir_all(dir.join(sub))?;
        std::os::unix::fs::symlink(lib.join(sub).join(file), dir.join(sub).join(file))
            .with_context(|| format!("link {file}"))?;
    }
    std::fs::create_dir_all(dir.join("none"))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::write(dir.join("janus.jcfg"), core_config(&dir, ip, event_loops))?;
    std::fs::write(dir.join("janus.transport.http.jcfg"), http_config(port))?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;
    let out = std::fs::File::create(dir.join("stdout.log"))?;
    let child = Command::new("janus")
        .arg("--configs-folder")
        .arg(&dir)
        .arg("--config")
        .arg(dir.join("janus.jcfg"))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("start janus")?;
    let pid = child.id();
    let guard = JanusGuard {
        child,
        dir,
        pid,
        url: format!("http://127.0.0.1:{port}/janus"),
        log: util::target_dir().join("bench-sfu-janus.log"),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            guard.print_log_tail(40);
            bail!("Janus did not open its HTTP port {port} within 15 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    note(&format!("janus {} (pid {pid}), {event_loops} event loops, ICE on {ip}", guard.url));
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_global_ipv4_address_is_found_in_ip_output() {
        let out = "4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever\n\
                   5: eth1    inet 10.0.0.7/8 scope global eth1\\       valid_lft forever\n";
        assert_eq!(first_inet(out), Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(first_inet(""), None);
        assert_eq!(first_inet("4: eth0    inet6 fe80::1/64 scope link"), None);
    }

    #[test]
    fn the_configuration_keeps_ice_on_the_address_and_http_on_loopback() {
        let core = core_config(Path::new("/tmp/j"), Ipv4Addr::new(192, 0, 2, 2), 2);
        assert!(core.contains("ice_enforce_list = \"192.0.2.2\""));
        assert!(core.contains("event_loops = 2"));
        assert!(core.contains("plugins_folder = \"/tmp/j/plugins\""));
        assert!(core.contains("log_to_file = \"/tmp/j/janus.log\""));
        assert!(!core.contains("stun_server"));
        let http = http_config(18088);
        assert!(http.contains("port = 18088"));
        assert!(http.contains("ip = \"127.0.0.1\""));
        assert!(http.contains("admin_http = false"));
    }
}
