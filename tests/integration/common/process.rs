//! Other child processes: runs to completion ([`check_config`],
//! [`run_switchyard`], [`run_echo`]), [`EchoProcess`], and the kill helpers.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{expand_config, free_port, poll_until, send_signal, TempDir};

pub const SWITCHYARD_BIN: &str = env!("CARGO_BIN_EXE_switchyard");
pub const ECHO_BIN: &str = env!("CARGO_BIN_EXE_switchyard-echo");

/// The code, or 128 + signal number (as a shell reports it).
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

/// SIGTERM, wait up to `grace`, then SIGKILL; reaps the child.
pub(crate) fn terminate_child(child: &mut Child, grace: Duration) {
    send_signal(child.id(), libc::SIGTERM);
    if wait_child(child, grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    poll_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

pub(crate) fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Spawns `cmd` in `dir`, stdin from /dev/null, output into `dir/NAME.stdout` and `.stderr`.
pub(crate) fn spawn_logged(cmd: &mut Command, dir: &Path, name: &str) -> Child {
    let file = |ext: &str| fs::File::create(dir.join(format!("{name}.{ext}"))).expect("create log file");
    cmd.current_dir(dir).stdin(Stdio::null()).stdout(file("stdout")).stderr(file("stderr"));
    cmd.spawn().unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()))
}

/// Output of a finished process (`code`: 128 + signal when killed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts a refusal: exit `code`, a message and no panic on stderr,
    /// nothing claiming success, every one of `needles` in stderr.
    #[track_caller]
    pub fn assert_fails(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(!self.stderr.trim().is_empty() && !self.stderr.contains("panicked"), "{self:?}");
        assert!(!self.stdout.contains("configuration ok"), "{self:?}");
        for n in needles {
            assert!(self.stderr.contains(n), "{:?}: stderr lacks {n:?}:\n{}", self.args, self.stderr);
        }
    }
}

/// `bin ARGS` run to completion (30 s bound) in a fresh temp dir.
fn run(bin: &str, args: &[&str]) -> Output {
    let dir = TempDir::new();
    let mut child = spawn_logged(Command::new(bin).args(args), dir.path(), "run");
    let status = wait_child(&mut child, Duration::from_secs(30));
    let (stdout, stderr) = (read_lossy(&dir.join("run.stdout")), read_lossy(&dir.join("run.stderr")));
    let Some(status) = status else {
        terminate_child(&mut child, Duration::ZERO);
        panic!("{bin} {args:?} still running after 30 s\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    Output { args: args.iter().map(|a| a.to_string()).collect(), code: exit_code(status), stdout, stderr }
}

pub fn run_switchyard(args: &[&str]) -> Output {
    run(SWITCHYARD_BIN, args)
}

/// `switchyard-echo ARGS` run to completion, e.g. bad flags.
pub fn run_echo(args: &[&str]) -> Output {
    run(ECHO_BIN, args)
}

/// `switchyard -t -c FILE` on `yaml` (placeholders expanded as in [`Switchyard::start`]).
pub fn check_config(yaml: &str) -> Output {
    let dir = TempDir::new();
    let file = dir.join("switchyard.yaml");
    fs::write(&file, expand_config(yaml, dir.path(), free_port(), free_port())).expect("write config");
    check_config_file(&file)
}

pub fn check_config_file(path: &Path) -> Output {
    run_switchyard(&["-t", "-c", &path.display().to_string()])
}

pub struct EchoProcess {
    child: Option<Child>,
    addr: SocketAddr,
    _dir: TempDir, // its stdout and stderr
}

impl EchoProcess {
    /// `switchyard-echo --listen 127.0.0.1:PORT ARGS` (unless `args` has a
    /// `--listen`), once it printed `listening on ADDR` (10 s).
    pub fn start(args: &[&str]) -> EchoProcess {
        let mut all: Vec<String> = Vec::new();
        if !args.iter().any(|a| *a == "--listen" || a.starts_with("--listen=") || *a == "-l") {
            all.push("--listen".into());
            all.push(format!("127.0.0.1:{}", free_port()));
        }
        all.extend(args.iter().map(|s| s.to_string()));
        EchoProcess::start_cmd(Command::new(ECHO_BIN).args(&all))
    }

    /// [`start`](Self::start) from a prepared command (e.g. with env vars).
    pub fn start_cmd(cmd: &mut Command) -> EchoProcess {
        let dir = TempDir::new();
        let (out, err) = (dir.join("echo.stdout"), dir.join("echo.stderr"));
        let mut child = spawn_logged(cmd, dir.path(), "echo");
        let mut addr = None;
        poll_until(Duration::from_secs(10), || {
            let text = read_lossy(&out); // only a whole first line
            let line = text.split_once('\n').and_then(|(l, _)| l.strip_prefix("listening on "));
            addr = line.and_then(|a| a.trim().parse::<SocketAddr>().ok());
            addr.is_some()
        });
        let Some(addr) = addr else {
            terminate_child(&mut child, Duration::from_millis(500));
            panic!(
                "switchyard-echo did not announce itself\nstdout:\n{}\nstderr:\n{}",
                read_lossy(&out),
                read_lossy(&err)
            );
        };
        EchoProcess { child: Some(child), addr, _dir: dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SIGTERM; the exit code within `timeout`, or None.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        send_signal(child.id(), libc::SIGTERM);
        wait_child(child, timeout).map(exit_code)
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate_child(&mut c, Duration::from_secs(2));
        }
    }
}
