//! The integration-test harness (`use crate::common::*;` in every module):
//! blocking `#[test]`s; the HTTP side (hyper) runs on one shared runtime;
//! everything listens on 127.0.0.1 with OS-chosen ports; processes are
//! killed by PID; every wait is bounded (poll with `eventually!`, never a
//! bare sleep). [`TestBackend`] is a programmable upstream, `client.rs` and
//! `raw.rs` the clients, [`Switchyard`] / [`EchoProcess`] the processes,
//! `metrics.rs` the Prometheus parsing; here the config builders and the
//! one-call starts ([`start_web`], [`start_pools`]).

/// `assert!` for a condition that must become true within `$secs` seconds
/// (polled every 20 ms): `eventually!(5, b1.app_count() > 0, "msg {}", x)`.
macro_rules! eventually {
    ($secs:expr, $cond:expr $(,)?) => {
        assert!(
            $crate::common::poll_until(std::time::Duration::from_secs($secs), || $cond),
            "not within {} s: {}",
            $secs,
            stringify!($cond)
        )
    };
    ($secs:expr, $cond:expr, $($msg:tt)+) => {
        assert!($crate::common::poll_until(std::time::Duration::from_secs($secs), || $cond), $($msg)+)
    };
}

mod backend;
mod client;
mod load;
mod metrics;
mod process;
mod raw;
mod reply;
mod switchyard;

pub use backend::*;
pub use client::*;
pub use load::*;
pub use metrics::*;
pub use process::*;
pub use raw::*;
pub use reply::*;
pub use switchyard::*;

use std::collections::HashSet;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The runtime serving every [`TestBackend`] and [`Client`] connection.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).enable_all().build().expect("harness runtime")
    })
}

/// Locks `m`; a panicking test thread must not poison the harness for the others.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls `cond` (at least once) every 20 ms until it holds (`true`) or `timeout` passes.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Claims `port` for this binary: false when it was handed out before.
/// Every listener of the tests takes its port through here (or
/// [`bind_fresh`]), so a port [`free_port`] released for switchyard to
/// bind is never taken by another test's listener meanwhile.
pub fn claim_port(port: u16) -> bool {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    lock(HANDED_OUT.get_or_init(Default::default)).insert(port)
}

/// Binds `127.0.0.1:0` to a port never handed out before in this binary.
pub fn bind_fresh() -> TcpListener {
    let mut parked = Vec::new(); // keep stale ports bound so the OS picks others
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        if claim_port(l.local_addr().expect("local addr").port()) {
            return l;
        }
        parked.push(l);
    }
    panic!("bind_fresh: no fresh port after 100 tries");
}

/// A TCP port on 127.0.0.1 that was free a moment ago, never handed out twice.
pub fn free_port() -> u16 {
    bind_fresh().local_addr().expect("local addr").port()
}

/// An address on 127.0.0.1 that refuses connections (a dead backend).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

pub fn dead_url() -> String {
    format!("http://{}", dead_addr())
}

/// `n` pseudo-random bytes, different per `seed` (truncation or mix-ups show).
pub fn test_body(seed: u64, n: usize) -> Vec<u8> {
    let step = |x: u64| x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut x = step(seed);
    (0..n)
        .map(|_| {
            x = step(x);
            (x >> 33) as u8
        })
        .collect()
}

pub const LISTEN: &str = "listen: [{addr: \"{listen}\"}]\n";
/// Health checking off: no probe traffic, backends healthy at once.
pub const NO_HC: &str = "health_check: {type: none}";

pub fn start_pools(routing: &str, pools: &[String]) -> Switchyard {
    Switchyard::start(&proxy_config(routing, pools))
}

/// One pool `web` (the default pool) of `bs`, `extra` pool keys as in [`pool`].
pub fn start_web(bs: &[&TestBackend], extra: &[&str]) -> Switchyard {
    start_pools("{default_pool: web}", &[pool("web", &urls(bs), extra)])
}

/// A config with one pool `web` (the default) of `urls`; `extra`: pool keys, one per line.
pub fn web_pool_config(urls: &[String], extra: &str) -> String {
    let extra: Vec<&str> = extra.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    proxy_config("{default_pool: web}", &[pool("web", urls, &extra)])
}

/// `listen`, `routing: ROUTING` (a flow mapping) and `pools:` of [`pool`] blocks.
pub fn proxy_config(routing: &str, pools: &[String]) -> String {
    format!("{LISTEN}routing: {routing}\npools:\n{}", pools.concat())
}

/// A pool `name` of `backends` (URLs or flow entries, see [`be`]) and `extra`
/// keys; `health_check: {type: none}` unless `extra` sets one.
pub fn pool(name: &str, backends: &[String], extra: &[&str]) -> String {
    let mut s = format!("  {name}:\n    backends:\n");
    for b in backends {
        let entry = if b.starts_with('{') { b.clone() } else { be(b, "") };
        s.push_str(&format!("      - {entry}\n"));
    }
    if !extra.iter().any(|e| e.starts_with("health_check:")) {
        s.push_str(&format!("    {NO_HC}\n"));
    }
    for e in extra {
        s.push_str(&format!("    {e}\n"));
    }
    s
}

/// A flow-style backend entry for `url` with `extra` keys (`, weight: 3`).
pub fn be(url: &str, extra: &str) -> String {
    format!("{{url: \"{url}\"{extra}}}")
}

/// `let [b1, b2] = backends(["b1", "b2"]);`
pub fn backends<const N: usize>(names: [&str; N]) -> [TestBackend; N] {
    names.map(TestBackend::start)
}

pub fn urls(bs: &[&TestBackend]) -> Vec<String> {
    bs.iter().map(|b| b.url()).collect()
}

/// The backend that answered (its `x-backend` header), or "".
pub fn served_by(r: &Response) -> String {
    r.header("x-backend").unwrap_or("").to_string()
}

/// Asserts an answer made by the proxy itself (SPEC §3): `status`, no
/// `x-backend`, one line of JSON with a non-empty `error`; returns the JSON.
pub fn proxy_error(r: &Response, status: u16) -> serde_json::Value {
    let text = r.text();
    assert_eq!(r.status, status, "body {text:?}");
    assert_eq!(r.header("x-backend"), None, "expected the proxy's own {status}, got a backend's answer");
    let ctype = r.header("content-type");
    assert!(ctype.is_some_and(|c| c.starts_with("application/json")), "content-type {ctype:?}");
    assert_eq!(text.trim_end().lines().count(), 1, "body is not one line: {text:?}");
    let v = r.json();
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "no error message in {text}");
    v
}

/// The `x-backend` that served `GET /who` for pool `app` (None: the
/// default pool), or None when there was no 200.
pub fn who(sy: &Switchyard, app: Option<&str>) -> Option<String> {
    let headers: Vec<(&str, &str)> = app.map(|a| ("App-Name", a)).into_iter().collect();
    let r = try_get(sy.addr(), "/who", &headers).ok()?;
    (r.status == 200).then(|| served_by(&r))
}

/// A fresh directory under the system temp dir (short enough for a unix
/// socket path), removed on drop unless the test panics or
/// `SWITCHYARD_KEEP_TMP` is set.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sy-{}-{n}-{}", std::process::id(), nanos % 1_000_000));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("SWITCHYARD_KEEP_TMP").is_some() {
            eprintln!("[harness] kept temp dir {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Sends `sig` to `pid`; false if the process is gone.
pub fn send_signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// Whether a process with this PID exists and is not a zombie (state field of /proc/PID/stat).
pub fn pid_alive(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}
