//! [`Switchyard`]: a running `switchyard` process with its config, logs,
//! pid file and upgrade socket in a temp dir; killed by PID on drop, its
//! logs printed when the test panics.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::process::{exit_code, read_lossy, spawn_logged, terminate_child, wait_child, SWITCHYARD_BIN};
use super::{free_port, pid_alive, poll_until, send_signal, TempDir};

pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// When [`SwitchyardBuilder::start`] deems the proxy up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ready {
    /// The listen port answers a malformed request (so no backend is touched).
    #[default]
    Http,
    /// The listen port accepts a TCP connection (TLS listeners).
    Tcp,
    /// Do not wait (a process expected to fail).
    NoWait,
}

#[derive(Debug, Clone, Default)]
pub struct SwitchyardBuilder {
    yaml: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready: Ready,
}

impl SwitchyardBuilder {
    pub fn config(mut self, yaml: &str) -> Self {
        self.yaml = Some(yaml.to_string());
        self
    }

    /// Quick mode: `--backends LIST --port PORT` instead of a config file.
    pub fn backends(mut self, list: &str) -> Self {
        self.args.extend(["--backends".into(), list.into()]);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn ready(mut self, r: Ready) -> Self {
        self.ready = r;
        self
    }

    /// Writes the config, spawns, waits for readiness (else panics with the logs).
    pub fn start(self) -> Switchyard {
        let (dir, port, admin_port) = (Arc::new(TempDir::new()), free_port(), free_port());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let config = dir.join("switchyard.yaml");
        let mut args = match &self.yaml {
            Some(yaml) => {
                fs::write(&config, expand_config(yaml, dir.path(), port, admin_port)).expect("write config");
                vec!["-c".to_string(), config.display().to_string()]
            }
            None => vec!["--port".to_string(), port.to_string()],
        };
        args.extend(self.args.iter().cloned());
        let mut sy = Switchyard { child: None, dir, addr, admin_addr, config, log_prefix: "switchyard".into() };
        sy.spawn(&args, &self.env);
        if self.ready != Ready::NoWait {
            sy.wait_ready(self.ready);
        }
        sy
    }
}

/// A `server:` line with the `{pid_file}` and `{upgrade_sock}` placeholders
/// and these grace period and graceful shutdown timeout seconds.
pub fn server_line(grace: u32, shutdown: u32) -> String {
    let paths = "pid_file: \"{pid_file}\", upgrade_sock: \"{upgrade_sock}\"";
    format!("server: {{ {paths}, grace_period_seconds: {grace}, graceful_shutdown_timeout_seconds: {shutdown} }}\n")
}

/// Expands the placeholders of [`Switchyard::start`], after prepending a
/// [`server_line`] without a grace period (tests stop switchyard with
/// SIGTERM and should not wait 5 s) when no line starts with `server:`.
pub fn expand_config(yaml: &str, dir: &Path, port: u16, admin_port: u16) -> String {
    let d = dir.display().to_string();
    let own_server = yaml.lines().any(|l| l.starts_with("server:"));
    let yaml = if own_server { yaml.to_string() } else { server_line(0, 1) + yaml };
    yaml.replace("{listen}", &format!("127.0.0.1:{port}"))
        .replace("{port}", &port.to_string())
        .replace("{admin}", &format!("127.0.0.1:{admin_port}"))
        .replace("{admin_port}", &admin_port.to_string())
        .replace("{pid_file}", &format!("{d}/sy.pid"))
        .replace("{upgrade_sock}", &format!("{d}/sy.sock"))
        .replace("{dir}", &d)
}

/// A running `switchyard` (and the upgraded instance named in its pid file),
/// SIGTERMed then SIGKILLed after 2 s on drop.
pub struct Switchyard {
    child: Option<Child>,
    dir: Arc<TempDir>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    config: PathBuf,
    log_prefix: String,
}

impl Switchyard {
    /// `switchyard -c FILE` on `yaml`, waiting until it answers HTTP (15 s).
    /// Placeholders: `{listen}` (127.0.0.1:PORT), `{port}`, `{admin}`,
    /// `{admin_port}`, `{dir}` (the temp dir), `{pid_file}`, `{upgrade_sock}`
    /// (in the temp dir, so parallel tests never share a pid file or socket).
    pub fn start(yaml: &str) -> Switchyard {
        Switchyard::builder().config(yaml).start()
    }

    /// [`start`](Self::start), then [`wait_admin`](Self::wait_admin).
    pub fn start_admin(yaml: &str) -> Switchyard {
        let sy = Switchyard::start(yaml);
        sy.wait_admin();
        sy
    }

    /// Waits (10 s) until the admin listener answers `GET /healthz` with 200.
    pub fn wait_admin(&self) {
        let up = || super::try_get(self.admin_addr, "/healthz", &[]).is_ok_and(|r| r.status == 200);
        let msg = "admin API never answered /healthz";
        assert!(poll_until(Duration::from_secs(10), up), "{msg} on {}\n{}", self.admin_addr, self.logs());
    }

    pub fn builder() -> SwitchyardBuilder {
        SwitchyardBuilder::default()
    }

    fn spawn(&mut self, args: &[String], env: &[(String, String)]) {
        let mut cmd = Command::new(SWITCHYARD_BIN);
        cmd.args(args).env("RUST_LOG", "info").envs(env.iter().cloned());
        self.child = Some(spawn_logged(&mut cmd, self.dir.path(), &self.log_prefix));
    }

    fn wait_ready(&mut self, how: Ready) {
        let (addr, mut exited) = (self.addr, None);
        let child = self.child.as_mut().expect("spawned");
        let up = poll_until(READY_TIMEOUT, || {
            exited = child.try_wait().ok().flatten();
            exited.is_some() || probe(addr, how)
        });
        if let Some(st) = exited {
            panic!("switchyard exited with {} before it was ready\n{}", exit_code(st), self.logs());
        }
        assert!(up, "switchyard not ready on {addr} after {READY_TIMEOUT:?}\n{}", self.logs());
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("sy.pid")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Rewrites the config file (same expansion, ports and dir).
    pub fn write_config(&self, yaml: &str) {
        let text = expand_config(yaml, self.dir.path(), self.addr.port(), self.admin_addr.port());
        let tmp = self.dir.join("switchyard.yaml.tmp");
        fs::write(&tmp, text).expect("write config");
        fs::rename(&tmp, &self.config).expect("replace config");
    }

    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            send_signal(pid, sig);
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The exit code (128 + signal) within `timeout`, or None.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        wait_child(child, timeout).map(exit_code)
    }

    /// Another `switchyard` on the same config and dir with `extra_args`
    /// (`-u` for an upgrade), not waited for; logs `switchyard-N.*`.
    pub fn spawn_sibling(&self, extra_args: &[&str]) -> Switchyard {
        static N: AtomicU64 = AtomicU64::new(2);
        let log_prefix = format!("switchyard-{}", N.fetch_add(1, Ordering::Relaxed));
        let mut sy =
            Switchyard { child: None, dir: Arc::clone(&self.dir), config: self.config.clone(), log_prefix, ..*self };
        let mut args = vec!["-c".to_string(), self.config.display().to_string()];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        sy.spawn(&args, &[]);
        sy
    }

    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.join(&format!("{}.stdout", self.log_prefix)))
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.join(&format!("{}.stderr", self.log_prefix)))
    }

    pub fn logs(&self) -> String {
        format!(
            "----- {} config ({}) -----\n{}\n----- stdout -----\n{}\n----- stderr -----\n{}\n-----",
            self.log_prefix,
            self.config.display(),
            read_lossy(&self.config),
            self.stdout(),
            self.stderr()
        )
    }

    /// PID from the pid file if that process runs on our config (never a recycled PID).
    fn pid_from_file(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = String::from_utf8_lossy(&cmdline).contains(&self.config.display().to_string());
        (ours && pid_alive(pid)).then_some(pid)
    }

    /// SIGTERM, up to `grace`, then SIGKILL; the pid file's instance too.
    pub fn kill(&mut self, grace: Duration) {
        let from_file = self.pid_from_file();
        if let Some(mut c) = self.child.take() {
            terminate_child(&mut c, grace);
        }
        if let Some(pid) = from_file {
            send_signal(pid, libc::SIGTERM);
            if !poll_until(grace, || !pid_alive(pid)) {
                send_signal(pid, libc::SIGKILL);
                poll_until(Duration::from_secs(2), || !pid_alive(pid));
            }
        }
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        self.kill(Duration::from_secs(2));
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn probe(addr: SocketAddr, how: Ready) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if how == Ready::Tcp {
        return true;
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    // Malformed on purpose: answered by the proxy itself (400), never proxied.
    if s.write_all(b"SWITCHYARD READINESS PROBE\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => true,                           // closed: the proxy did process it
        Ok(n) => buf[..n].starts_with(b"HTTP/"), // answered
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    }
}
