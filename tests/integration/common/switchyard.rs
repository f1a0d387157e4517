//! [`Switchyard`]: a guard around a running `switchyard` process, its
//! config written to a temp dir (placeholders expanded, see
//! [`Switchyard::start`]), its stdout/stderr captured to files there and
//! printed when a test panics; killed by PID on drop.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::process::{exit_code, read_lossy, terminate_child, wait_child, SWITCHYARD_BIN};
use super::{free_port, pid_alive, poll_until, send_signal, TempDir};

/// How long [`Switchyard::start`] waits for the proxy to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How [`SwitchyardBuilder::start`] decides that the proxy is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The listen port accepts a connection and answers (anything, or a
    /// close) to a deliberately malformed request, so no backend is touched.
    Http,
    /// The listen port accepts a TCP connection (e.g. for TLS listeners).
    Tcp,
    /// Do not wait (e.g. for a process expected to fail; see
    /// [`Switchyard::wait_exit`]).
    NoWait,
}

/// Builder for [`Switchyard`]; get one with [`Switchyard::builder`].
#[derive(Debug, Clone)]
pub struct SwitchyardBuilder {
    yaml: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready: Ready,
    ready_timeout: Duration,
}

impl SwitchyardBuilder {
    /// Uses this YAML config (placeholders: see [`Switchyard::start`]).
    pub fn config(mut self, yaml: &str) -> Self {
        self.yaml = Some(yaml.to_string());
        self
    }

    /// Quick mode: `--backends LIST --port PORT` instead of a config file.
    /// The proxy then listens on `0.0.0.0:PORT`; [`Switchyard::addr`] is
    /// `127.0.0.1:PORT`.
    pub fn backends(mut self, list: &str) -> Self {
        self.args.push("--backends".into());
        self.args.push(list.into());
        self
    }

    /// Adds a command-line argument.
    #[allow(dead_code)] // harness API beyond the current tests
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    /// Sets an environment variable for the process (`RUST_LOG` etc.).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// How to wait for readiness (default [`Ready::Http`]).
    pub fn ready(mut self, r: Ready) -> Self {
        self.ready = r;
        self
    }

    /// Writes the config, spawns the process and waits for readiness;
    /// panics with the logs if it does not come up.
    pub fn start(self) -> Switchyard {
        let dir = Arc::new(TempDir::new());
        let port = free_port();
        let admin_port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let config = dir.join("switchyard.yaml");
        let mut args = Vec::new();
        if let Some(yaml) = &self.yaml {
            let text = expand_config(yaml, dir.path(), port, admin_port);
            fs::write(&config, text).expect("write config");
            args.push("-c".to_string());
            args.push(config.display().to_string());
        } else {
            args.push("--port".to_string());
            args.push(port.to_string());
        }
        args.extend(self.args.iter().cloned());
        let mut sy = Switchyard {
            child: None,
            dir,
            addr,
            admin_addr,
            config,
            port,
            admin_port,
            log_prefix: "switchyard".into(),
        };
        sy.spawn(&args, &self.env);
        match self.ready {
            Ready::NoWait => {}
            r => sy.wait_ready(r, self.ready_timeout),
        }
        sy
    }
}

/// Replaces the placeholders of [`Switchyard::start`] and adds a `server:`
/// section with private pid/socket paths when the YAML has none.
pub fn expand_config(yaml: &str, dir: &Path, port: u16, admin_port: u16) -> String {
    let d = dir.display().to_string();
    // no grace period: tests stop switchyard with SIGTERM and should not wait 5 s
    let server = format!(
        "server: {{ pid_file: \"{d}/sy.pid\", upgrade_sock: \"{d}/sy.sock\", grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}"
    );
    let mut text = yaml
        .replace("{listen}", &format!("127.0.0.1:{port}"))
        .replace("{port}", &port.to_string())
        .replace("{admin}", &format!("127.0.0.1:{admin_port}"))
        .replace("{admin_port}", &admin_port.to_string())
        .replace("{pid_file}", &format!("{d}/sy.pid"))
        .replace("{upgrade_sock}", &format!("{d}/sy.sock"))
        .replace("{server}", &server)
        .replace("{dir}", &d);
    if !text.lines().any(|l| l.starts_with("server:")) {
        text = format!("{server}\n{text}");
    }
    text
}

/// A running `switchyard` process, killed (SIGTERM, then SIGKILL after 2 s)
/// on drop, together with a daemonized/upgraded instance found in its pid
/// file. Its stdout/stderr go to files in its temp dir; when the test panics
/// the logs are printed on drop.
pub struct Switchyard {
    child: Option<Child>,
    dir: Arc<TempDir>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    config: PathBuf,
    port: u16,
    admin_port: u16,
    log_prefix: String,
}

impl Switchyard {
    /// Starts `switchyard -c FILE` with `yaml` written to a temp dir, and
    /// waits until its listener answers HTTP (15 s, else panics with logs).
    ///
    /// Placeholders replaced in `yaml`:
    /// `{listen}` → `127.0.0.1:PORT` (a free port, see [`addr`](Self::addr)),
    /// `{port}` → `PORT`, `{admin}` → `127.0.0.1:ADMIN_PORT` (see
    /// [`admin_addr`](Self::admin_addr)), `{admin_port}`, `{dir}` → the temp
    /// dir, `{pid_file}`, `{upgrade_sock}` → paths in it, `{server}` →
    /// `server: { pid_file: ..., upgrade_sock: ... }`. When no line starts
    /// with `server:`, that `server:` line is prepended automatically, so
    /// parallel tests never share a pid file or upgrade socket (if you write
    /// your own `server:` section, use `{pid_file}` and `{upgrade_sock}`).
    pub fn start(yaml: &str) -> Switchyard {
        Switchyard::builder().config(yaml).start()
    }

    /// [`start`](Self::start), then [`wait_admin`](Self::wait_admin).
    pub fn start_admin(yaml: &str) -> Switchyard {
        let sy = Switchyard::start(yaml);
        sy.wait_admin();
        sy
    }

    /// Waits (10 s) until the admin listener answers `GET /healthz` with 200
    /// (start only waits for the proxy listener); panics with the logs.
    pub fn wait_admin(&self) {
        let up = || super::try_get(self.admin_addr, "/healthz", &[]).is_ok_and(|r| r.status == 200);
        let msg = "admin API never answered /healthz";
        assert!(poll_until(Duration::from_secs(10), up), "{msg} on {}\n{}", self.admin_addr, self.logs());
    }

    /// A builder for more control (args, env, quick mode, readiness).
    pub fn builder() -> SwitchyardBuilder {
        SwitchyardBuilder {
            yaml: None,
            args: Vec::new(),
            env: Vec::new(),
            ready: Ready::Http,
            ready_timeout: READY_TIMEOUT,
        }
    }

    fn spawn(&mut self, args: &[String], env: &[(String, String)]) {
        let out = self.dir.join(&format!("{}.stdout", self.log_prefix));
        let err = self.dir.join(&format!("{}.stderr", self.log_prefix));
        let mut cmd = Command::new(SWITCHYARD_BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("create stdout log"))
            .stderr(fs::File::create(&err).expect("create stderr log"));
        if !env.iter().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {SWITCHYARD_BIN}: {e}"));
        self.child = Some(child);
    }

    fn wait_ready(&mut self, how: Ready, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("switchyard exited with {} before it was ready\n{}", exit_code(st), self.logs());
            }
            if probe(self.addr, how) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("switchyard not ready on {} after {:?}\n{}", self.addr, timeout, self.logs());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The proxy's listen address (`{listen}`), on 127.0.0.1.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address `{admin}` expanded to (only listening if the config uses it).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The config file it was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The temp dir holding config, logs, pid file and upgrade socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the pid file (`{pid_file}`).
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("sy.pid")
    }

    /// PID of the spawned process (None once it was reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Rewrites the config file (same placeholder expansion, same ports and
    /// dir) — e.g. before a SIGHUP reload.
    pub fn write_config(&self, yaml: &str) {
        let text = expand_config(yaml, self.dir.path(), self.port, self.admin_port);
        let tmp = self.dir.join("switchyard.yaml.tmp");
        fs::write(&tmp, text).expect("write config");
        fs::rename(&tmp, &self.config).expect("replace config");
    }

    /// Sends a signal (e.g. `libc::SIGHUP`) to the spawned process.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            send_signal(pid, sig);
        }
    }

    /// Whether the spawned process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the process to exit; its exit code
    /// (128 + signal when killed), or None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        wait_child(child, timeout).map(exit_code)
    }

    /// Spawns another `switchyard` on the same config file and temp dir with
    /// `extra_args` (e.g. `&["-u"]` for a graceful upgrade) without waiting
    /// for readiness. Its logs are `switchyard-N.stdout/stderr`.
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

    /// Captured stdout of this process so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.join(&format!("{}.stdout", self.log_prefix)))
    }

    /// Captured stderr of this process so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.join(&format!("{}.stderr", self.log_prefix)))
    }

    /// Config, stdout and stderr, formatted for a failure message.
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

    /// PID from the pid file if that process runs on our config (so a
    /// recycled PID is never killed).
    fn pid_from_file(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = String::from_utf8_lossy(&cmdline).contains(&self.config.display().to_string());
        (ours && pid_alive(pid)).then_some(pid)
    }

    /// Stops the process: SIGTERM, up to `grace`, then SIGKILL. Also stops a
    /// running instance named in the pid file (daemonized or upgraded).
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

/// One readiness probe of `addr`.
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
