//! Shared integration-test harness for switchyard (`mod common;` in every `tests/*.rs`).
//!
//! # Style
//!
//! Tests are plain **`#[test]` functions with blocking std I/O and threads**:
//! no async runtime in test code. Everything listens on `127.0.0.1` with ports
//! chosen by the OS; processes are killed by PID; every wait is bounded.
//! Wait for conditions with [`poll_until`], never with a bare sleep.
//!
//! # Contents
//!
//! * [`TestBackend`]: an in-process, programmable HTTP/1.1 upstream (status,
//!   body, delay, reset / close / hang modes, `/health` switch, stop and
//!   restart on the same port, counters, recorded requests and bodies).
//! * [`dead_addr`], [`free_port`]: addresses that refuse connections / are free.
//! * [`Switchyard`]: a guard around a running `switchyard` process with its
//!   config in a temp dir, logs captured (and printed when a test panics).
//! * [`EchoProcess`]: a guard around a running `switchyard-echo`.
//! * [`get`], [`request`], [`try_request`], [`send_raw`], [`Client`]: a small
//!   HTTP/1.1 client returning [`Response`].
//! * [`check_config`], [`run_switchyard`]: run the binary to completion.
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! #[test]
//! fn routes_to_a_backend() {
//!     let b1 = TestBackend::start("b1");
//!     let sy = Switchyard::start(&format!(
//!         "listen: [{{addr: \"{{listen}}\"}}]\n\
//!          routing: {{default_pool: web}}\n\
//!          pools:\n  web:\n    backends: [{{url: \"{}\"}}]\n",
//!         b1.url()
//!     ));
//!     let r = get(sy.addr(), "/hello", &[]);
//!     assert_eq!(r.status, 200, "{}", sy.logs());
//!     assert_eq!(r.header("x-backend"), Some("b1"));
//!     assert_eq!(b1.path_count("/hello"), 1);
//! }
//! ```
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Path of the `switchyard` binary built by cargo for this test run.
pub const SWITCHYARD_BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Path of the `switchyard-echo` binary built by cargo for this test run.
pub const ECHO_BIN: &str = env!("CARGO_BIN_EXE_switchyard-echo");

/// Default I/O timeout of the client helpers.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Switchyard::start`] waits for the proxy to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// Calls `cond` every 20 ms until it returns true (→ `true`) or `timeout`
/// elapses (→ `false`). `cond` is always called at least once.
///
/// ```ignore
/// assert!(poll_until(Duration::from_secs(5), || b1.app_count() > 0), "{}", sy.logs());
/// ```
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not poison the harness for the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ports handed out in this test binary, by [`free_port`] or bound by a
/// [`TestBackend`]; none is handed out twice.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Binds `127.0.0.1:0` to a port never handed out before in this test
/// binary (so a port released by [`free_port`] for another test's proxy or
/// dead backend is never reused here), and records it.
fn bind_fresh() -> TcpListener {
    let mut parked = Vec::new(); // keep stale ports bound so the OS picks others
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if lock(handed_out()).insert(port) {
            return l;
        }
        parked.push(l);
    }
    panic!("bind_fresh: no fresh port after 100 tries");
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind `:0`, read the
/// port, drop the listener). Never returns the same port twice in one test
/// binary, and never one a [`TestBackend`] holds, so parallel tests do not
/// collide.
pub fn free_port() -> u16 {
    bind_fresh().local_addr().expect("local addr").port()
}

/// `n` pseudo-random bytes that differ from one `seed` to the next, so a
/// body that arrives truncated, shifted or mixed up with another is noticed.
pub fn test_body(seed: u64, n: usize) -> Vec<u8> {
    let step = |x: u64| {
        x.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut x = step(seed);
    (0..n)
        .map(|_| {
            x = step(x);
            (x >> 33) as u8
        })
        .collect()
}

/// A config with one pool `web` (the default pool) of `urls`; `extra` holds
/// more pool keys, one per line, without indentation (`health_check:
/// {type: none}` unless `extra` sets one). No shutdown grace period, so that
/// each test's proxy exits at once on drop.
pub fn web_pool_config(urls: &[String], extra: &str) -> String {
    let mut y = String::from(
        "server: {pid_file: \"{pid_file}\", upgrade_sock: \"{upgrade_sock}\", \
         grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1}\n\
         listen: [{addr: \"{listen}\"}]\n\
         routing: {default_pool: web}\n\
         pools:\n  web:\n    backends:\n",
    );
    for u in urls {
        y.push_str(&format!("      - url: \"{u}\"\n"));
    }
    let mut has_health = false;
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        has_health |= line.trim_start().starts_with("health_check:");
        y.push_str(&format!("    {}\n", line.trim()));
    }
    if !has_health {
        y.push_str("    health_check: {type: none}\n");
    }
    y
}

/// An address on 127.0.0.1 that refuses connections (a port that was just
/// bound and released). Use it as a dead backend.
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// `http://` URL of [`dead_addr`].
pub fn dead_url() -> String {
    format!("http://{}", dead_addr())
}

/// A directory under `std::env::temp_dir()`, removed on drop unless the
/// thread is panicking or `SWITCHYARD_KEEP_TMP` is set (then it is kept and
/// its path printed, for debugging).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory (short enough for a unix
    /// socket path inside it).
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "sy-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            nanos % 1_000_000
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
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

/// Sends `sig` (e.g. `libc::SIGHUP`) to `pid`. Returns false if the process is gone.
pub fn send_signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// Whether a process with this PID exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; it follows the last ')' (the command may contain spaces).
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Exit code as a shell reports it: the code, or 128 + signal number.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// SIGTERM, wait up to `grace`, then SIGKILL; reaps the child.
fn terminate_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    send_signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for a child with a bound; `None` if it is still running after `timeout`.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 wire helpers shared by the client and TestBackend
// ---------------------------------------------------------------------------

/// A TCP stream with a read buffer and HTTP/1.1 framing helpers.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

const MAX_HEAD: usize = 256 * 1024;

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::with_capacity(8192),
        }
    }

    /// Reads more bytes into the buffer; 0 = EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Reads a message head up to and including the empty line.
    /// `Ok(None)` on EOF before any byte.
    fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            // Tolerate empty lines before a start line.
            while self.buf.starts_with(b"\r\n") || self.buf.starts_with(b"\n") {
                let n = if self.buf[0] == b'\r' { 2 } else { 1 };
                self.buf.drain(..n);
            }
            if let Some(end) = find_subslice(&self.buf, b"\r\n\r\n") {
                return Ok(Some(self.buf.drain(..end + 4).collect()));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() || self.buf == b"\r" {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a message head",
                ));
            }
        }
    }

    fn read_exact_body(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {} of {n} body bytes", self.buf.len()),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a chunked body",
                ));
            }
        }
    }

    /// Decodes a chunked body (trailers are read and dropped).
    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let text = String::from_utf8_lossy(&line);
            let size_str = text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_str, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size line {text:?}"),
                )
            })?;
            if size == 0 {
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.read_exact_body(size)?);
            if !self.read_line()?.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk not followed by CRLF",
                ));
            }
        }
    }

    fn read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits a head into its start line and `(lowercase name, value)` headers.
fn parse_head(head: &[u8]) -> io::Result<(String, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("header line without colon: {line:?}"),
            )
        })?;
        headers.push((
            name.trim().to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok((start, headers))
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k == "transfer-encoding"
            && v.rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    })
}

fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .any(|(k, v)| k == name && v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn encode_chunked(body: &[u8], out: &mut Vec<u8>) {
    // Two chunks when possible, so that multi-chunk decoding is exercised.
    let mid = body.len() / 2;
    for part in [&body[..mid], &body[mid..]] {
        if !part.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"0\r\n\r\n");
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// An HTTP response as received by the client helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: String,
    /// Header fields in received order, names lowercased; duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// A client connection that can carry several requests (keep-alive).
///
/// ```ignore
/// let mut c = Client::connect(sy.addr()).unwrap();
/// let a = c.get("/a", &[]).unwrap();
/// let b = c.get("/b", &[]).unwrap(); // same TCP connection
/// ```
pub struct Client {
    wire: Wire,
    addr: SocketAddr,
}

impl Client {
    /// Connects with [`CLIENT_TIMEOUT`] for connect, reads and writes.
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            wire: Wire::new(stream),
            addr,
        })
    }

    /// Changes the read/write timeout of this connection.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.wire.stream.set_read_timeout(Some(timeout))?;
        self.wire.stream.set_write_timeout(Some(timeout))
    }

    /// The underlying stream (e.g. for upgraded connections after a 101).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.wire.stream
    }

    /// Sends one request and reads its response.
    ///
    /// Adds `Host: ADDR` unless given. Adds `Content-Length` when the body is
    /// non-empty or the method is POST/PUT/PATCH, unless `Content-Length` or
    /// `Transfer-Encoding` is given; with `Transfer-Encoding: chunked` in
    /// `headers` the body is sent chunk-encoded. Use [`Client::send_raw`] for
    /// byte-exact control.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        });
        let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
        if !has("host") {
            out.extend_from_slice(format!("host: {}\r\n", self.addr).as_bytes());
        }
        for (k, v) in headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        let wants_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
        if wants_length && !has("content-length") && !has("transfer-encoding") {
            out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if chunked {
            encode_chunked(body, &mut out);
        } else {
            out.extend_from_slice(body);
        }
        self.wire.stream.write_all(&out)?;
        self.read_response(method)
    }

    /// `GET path` with `headers`.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        self.request("GET", path, headers, b"")
    }

    /// Writes raw bytes on the connection.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wire.stream.write_all(bytes)
    }

    /// Reads one response (skipping `100 Continue`). `method` decides whether
    /// a body follows (`HEAD` → none). A `101` returns at once with no body.
    pub fn read_response(&mut self, method: &str) -> io::Result<Response> {
        loop {
            let head = self.wire.read_head()?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before any response byte",
                )
            })?;
            let (start, headers) = parse_head(&head)?;
            let mut parts = start.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {start:?}"),
                )
            })?;
            if !version.starts_with("HTTP/1.") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {start:?}"),
                ));
            }
            let reason = parts.next().unwrap_or("").to_string();
            if status == 100 || (102..200).contains(&status) {
                continue;
            }
            let chunked = is_chunked(&headers);
            let no_body = method.eq_ignore_ascii_case("HEAD")
                || status == 101
                || status == 204
                || status == 304;
            let body = if no_body {
                Vec::new()
            } else if chunked {
                self.wire.read_chunked()?
            } else if let Some(cl) = find_header(&headers, "content-length") {
                let n: usize = cl.trim().parse().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad content-length {cl:?}"),
                    )
                })?;
                self.wire.read_exact_body(n)?
            } else {
                self.wire.read_to_eof()?
            };
            return Ok(Response {
                status,
                reason,
                headers,
                body,
                chunked,
            });
        }
    }
}

/// One request on a fresh connection; errors (refused, reset, timeout,
/// malformed answer) are returned.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    Client::connect(addr)?.request(method, path, headers, body)
}

/// One request on a fresh connection; panics with context on any I/O error.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path} failed: {e}"))
}

/// `GET path` on a fresh connection; panics with context on any I/O error.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, b"")
}

/// `GET path` on a fresh connection, errors returned.
pub fn try_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    try_request(addr, "GET", path, headers, b"")
}

/// Writes `bytes` on a fresh connection and returns everything the server
/// sends back until it closes, 1 s passes without new data after something
/// arrived, or 5 s in total. Panics if it cannot connect.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    send_raw_timeout(addr, bytes, Duration::from_secs(5))
}

/// [`send_raw`] with a total time bound.
pub fn send_raw_timeout(addr: SocketAddr, bytes: &[u8], total: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("send_raw: connect {addr}: {e}"));
    // A server may reset after answering; whatever was read is still returned.
    let _ = s.write_all(bytes);
    let deadline = Instant::now() + total;
    let mut out = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = if out.is_empty() {
            deadline - now
        } else {
            (deadline - now).min(Duration::from_secs(1))
        };
        let _ = s.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if !out.is_empty() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// Status code of the first response line in raw bytes (`HTTP/1.1 400 ...` → 400).
pub fn raw_status(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// TestBackend
// ---------------------------------------------------------------------------

/// What a [`TestBackend`] does with a request it has fully read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer normally (after the configured delay).
    Respond,
    /// Reset the connection: `SO_LINGER 0` then close, so the peer gets a RST.
    Reset,
    /// Close the connection (FIN) without answering.
    Close,
    /// Never answer; keep the connection open until the backend stops.
    Hang,
}

/// A complete answer description, returned by handlers (see
/// [`TestBackend::set_handler`]) and used as the backend's default answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What to do; for anything but [`Mode::Respond`] the other fields are ignored
    /// except `delay`.
    pub mode: Mode,
    /// Status code.
    pub status: u16,
    /// Extra response headers (`content-length`/`transfer-encoding`,
    /// `x-backend` and `connection` are added by the backend).
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
    /// Wait this long before acting.
    pub delay: Duration,
    /// Send the body with `Transfer-Encoding: chunked` (in two chunks).
    pub chunked: bool,
    /// Close the connection after this answer (`connection: close`).
    pub close: bool,
}

impl Reply {
    /// A normal answer with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            mode: Mode::Respond,
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            chunked: false,
            close: false,
        }
    }

    /// A reply that resets the connection.
    pub fn reset() -> Reply {
        Reply {
            mode: Mode::Reset,
            ..Reply::new(0, "")
        }
    }

    /// A reply that closes the connection without answering.
    pub fn close_silently() -> Reply {
        Reply {
            mode: Mode::Close,
            ..Reply::new(0, "")
        }
    }

    /// A reply that never answers.
    pub fn hang() -> Reply {
        Reply {
            mode: Mode::Hang,
            ..Reply::new(0, "")
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the delay.
    pub fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request as received by a [`TestBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Header fields in received order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body bytes, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Id of the TCP connection it came on (1, 2, ... per backend), to
    /// assert connection reuse.
    pub conn_id: u64,
    /// Address of the peer (the proxy's upstream socket).
    pub peer: SocketAddr,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// A handler deciding the reply per request; `None` falls back to the
/// built-in behaviour. See [`TestBackend::set_handler`].
pub type Handler = Arc<dyn Fn(&RecordedRequest) -> Option<Reply> + Send + Sync>;

struct Settings {
    default: Reply,
    healthy: bool,
    handler: Option<Handler>,
}

struct Inner {
    name: String,
    addr: SocketAddr,
    settings: Mutex<Settings>,
    /// Bumped on every stop: connections and sleeps of an older generation end.
    generation: AtomicU64,
    next_conn: AtomicU64,
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    path_counts: Mutex<HashMap<String, usize>>,
    conns: Mutex<HashMap<u64, TcpStream>>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

/// An in-process HTTP/1.1 upstream on `127.0.0.1:<os port>` with
/// programmable behaviour, for testing the proxy.
///
/// Built-in behaviour, in this order:
/// 1. a handler set with [`set_handler`](Self::set_handler) that returns `Some(reply)`;
/// 2. `/health` (any query): `200 ok`, or `503 unhealthy` after
///    [`set_healthy(false)`](Self::set_healthy), never delayed;
/// 3. otherwise the default reply: `200` with the backend's name as body,
///    changed by [`set_status`](Self::set_status), [`set_body`](Self::set_body),
///    [`set_delay`](Self::set_delay), [`set_mode`](Self::set_mode), ...
///
/// Every answer carries `x-backend: NAME`. Keep-alive is supported;
/// `Expect: 100-continue` is honoured. Every fully read request is recorded
/// (also in Reset/Close/Hang modes) before the reply is carried out.
/// Dropping the backend stops it and closes its connections.
pub struct TestBackend {
    inner: Arc<Inner>,
}

impl TestBackend {
    /// Starts a backend named `name` on `127.0.0.1:0`.
    pub fn start(name: &str) -> TestBackend {
        let listener = bind_fresh();
        let addr = listener.local_addr().expect("local_addr");
        let inner = Arc::new(Inner {
            name: name.to_string(),
            addr,
            settings: Mutex::new(Settings {
                default: Reply::new(200, name.as_bytes().to_vec()),
                healthy: true,
                handler: None,
            }),
            generation: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            path_counts: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            acceptor: Mutex::new(None),
        });
        spawn_acceptor(&inner, listener);
        TestBackend { inner }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The name given at start (body of default replies and `x-backend`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn with_settings(&self, f: impl FnOnce(&mut Settings)) {
        f(&mut lock(&self.inner.settings));
    }

    /// Status of the default reply.
    pub fn set_status(&self, status: u16) {
        self.with_settings(|s| s.default.status = status);
    }

    /// Body of the default reply.
    pub fn set_body(&self, body: impl Into<Vec<u8>>) {
        let body = body.into();
        self.with_settings(|s| s.default.body = body);
    }

    /// Delay before the default reply is carried out.
    pub fn set_delay(&self, delay: Duration) {
        self.with_settings(|s| s.default.delay = delay);
    }

    /// Mode of the default reply (respond, reset, close, hang).
    pub fn set_mode(&self, mode: Mode) {
        self.with_settings(|s| s.default.mode = mode);
    }

    /// Adds a header to the default reply.
    pub fn add_header(&self, name: &str, value: &str) {
        self.with_settings(|s| s.default.headers.push((name.into(), value.into())));
    }

    /// Send default replies chunked.
    pub fn set_chunked(&self, chunked: bool) {
        self.with_settings(|s| s.default.chunked = chunked);
    }

    /// Replaces the whole default reply.
    pub fn set_reply(&self, reply: Reply) {
        self.with_settings(|s| s.default = reply);
    }

    /// `/health` answers 200 (`true`, the default) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.with_settings(|s| s.healthy = healthy);
    }

    /// Installs a handler consulted first for every request (including
    /// `/health`); returning `None` falls back to the built-in behaviour.
    ///
    /// ```ignore
    /// // fail the first request only
    /// let n = AtomicUsize::new(0);
    /// b.set_handler(move |_req| (n.fetch_add(1, SeqCst) == 0).then(Reply::reset));
    /// ```
    pub fn set_handler(
        &self,
        f: impl Fn(&RecordedRequest) -> Option<Reply> + Send + Sync + 'static,
    ) {
        let h: Handler = Arc::new(f);
        self.with_settings(|s| s.handler = Some(h));
    }

    /// Removes the handler.
    pub fn clear_handler(&self) {
        self.with_settings(|s| s.handler = None);
    }

    /// Requests received, all paths (including `/health`).
    pub fn request_count(&self) -> usize {
        lock(&self.inner.requests).len()
    }

    /// Requests received for `path` (compared without the query string).
    pub fn path_count(&self, path: &str) -> usize {
        lock(&self.inner.path_counts)
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received for any path but `/health` (i.e. proxied traffic).
    pub fn app_count(&self) -> usize {
        self.request_count() - self.path_count("/health")
    }

    /// All recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Recorded requests not for `/health`, oldest first.
    pub fn app_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests)
            .iter()
            .filter(|r| r.path() != "/health")
            .cloned()
            .collect()
    }

    /// The last request received (any path).
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.inner.requests).last().cloned()
    }

    /// The last request received for a path other than `/health`.
    pub fn last_app_request(&self) -> Option<RecordedRequest> {
        lock(&self.inner.requests)
            .iter()
            .rev()
            .find(|r| r.path() != "/health")
            .cloned()
    }

    /// Forgets recorded requests and counters (not connection counts).
    pub fn reset_counters(&self) {
        lock(&self.inner.requests).clear();
        lock(&self.inner.path_counts).clear();
    }

    /// TCP connections currently open to this backend.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// TCP connections accepted since start.
    pub fn connections_accepted(&self) -> usize {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Whether the backend is currently listening.
    pub fn is_listening(&self) -> bool {
        lock(&self.inner.acceptor).is_some()
    }

    /// Stops listening (connections are then refused) and closes every open
    /// connection; pending delays and hangs end. Idempotent.
    pub fn stop(&self) {
        stop_inner(&self.inner);
    }

    /// Listens again on the same port after [`stop`](Self::stop) (retries for
    /// up to 5 s if the port is briefly unavailable). No-op when listening.
    pub fn restart(&self) {
        let mut acc = lock(&self.inner.acceptor);
        if acc.is_some() {
            return;
        }
        drop(acc);
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.inner.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!(
                    "restart {}: cannot bind {}: {e}",
                    self.inner.name, self.inner.addr
                ),
            }
        };
        acc = lock(&self.inner.acceptor);
        if acc.is_none() {
            drop(acc);
            spawn_acceptor(&self.inner, listener);
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        stop_inner(&self.inner);
    }
}

fn stop_inner(inner: &Arc<Inner>) {
    let handle = lock(&inner.acceptor).take();
    inner.generation.fetch_add(1, Ordering::SeqCst);
    if let Some(h) = handle {
        // Wake the blocking accept(); the acceptor sees the new generation and exits.
        let _ = TcpStream::connect_timeout(&inner.addr, Duration::from_secs(1));
        let _ = h.join();
    }
    for (_, s) in lock(&inner.conns).drain() {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn spawn_acceptor(inner: &Arc<Inner>, listener: TcpListener) {
    let gen = inner.generation.load(Ordering::SeqCst);
    let inner2 = Arc::clone(inner);
    let handle = thread::Builder::new()
        .name(format!("backend-{}", inner.name))
        .spawn(move || {
            for stream in listener.incoming() {
                if inner2.generation.load(Ordering::SeqCst) != gen {
                    break; // the wake-up connection of stop()
                }
                let Ok(stream) = stream else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let id = inner2.next_conn.fetch_add(1, Ordering::SeqCst);
                inner2.accepted.fetch_add(1, Ordering::SeqCst);
                inner2.open.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    lock(&inner2.conns).insert(id, clone);
                }
                let inner3 = Arc::clone(&inner2);
                let spawned = thread::Builder::new()
                    .name(format!("backend-{}-conn{id}", inner2.name))
                    .spawn(move || serve_backend_conn(inner3, stream, id, gen));
                if spawned.is_err() {
                    lock(&inner2.conns).remove(&id);
                    inner2.open.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .expect("spawn acceptor thread");
    *lock(&inner.acceptor) = Some(handle);
}

/// Sleeps `d` in small steps; false if the backend stopped meanwhile.
fn sleep_while_current(inner: &Inner, gen: u64, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if inner.generation.load(Ordering::SeqCst) != gen {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
}

fn set_linger_zero(stream: &TcpStream) {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd owned by `stream`, pointer/length describe `lg`.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &lg as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn serve_backend_conn(inner: Arc<Inner>, stream: TcpStream, id: u64, gen: u64) {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let _ = stream.set_nodelay(true);
    let mut wire = Wire::new(stream);
    let mut reset = false;
    loop {
        match serve_backend_request(&inner, &mut wire, id, gen, peer) {
            Ok(After::KeepAlive) => continue,
            Ok(After::Close) | Err(_) => break,
            Ok(After::Reset) => {
                reset = true;
                break;
            }
        }
    }
    // Drop the registry's clone first so that our close is the last one
    // (needed for the RST of SO_LINGER 0 to go out now).
    lock(&inner.conns).remove(&id);
    if reset {
        set_linger_zero(&wire.stream);
    } else {
        let _ = wire.stream.shutdown(Shutdown::Write);
    }
    drop(wire);
    inner.open.fetch_sub(1, Ordering::SeqCst);
}

enum After {
    KeepAlive,
    Close,
    Reset,
}

fn serve_backend_request(
    inner: &Inner,
    wire: &mut Wire,
    id: u64,
    gen: u64,
    peer: SocketAddr,
) -> io::Result<After> {
    let Some(head) = wire.read_head()? else {
        return Ok(After::Close);
    };
    let bad = |wire: &mut Wire, msg: &str| -> io::Result<After> {
        let body = format!("bad request: {msg}");
        let resp = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\nx-backend: {}\r\nconnection: close\r\n\r\n{body}",
            body.len(),
            inner.name
        );
        wire.stream.write_all(resp.as_bytes())?;
        Ok(After::Close)
    };
    let Ok((start, headers)) = parse_head(&head) else {
        return bad(wire, "header syntax");
    };
    let parts: Vec<&str> = start.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return bad(wire, "request line");
    };
    let (method, target, version) = (method.to_string(), target.to_string(), version.to_string());
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return bad(wire, "version");
    }

    let chunked = is_chunked(&headers);
    let expects_continue =
        find_header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let has_body =
        chunked || find_header(&headers, "content-length").is_some_and(|v| v.trim() != "0");
    if expects_continue && has_body {
        wire.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = if chunked {
        wire.read_chunked()?
    } else if let Some(cl) = find_header(&headers, "content-length") {
        match cl.trim().parse::<usize>() {
            Ok(n) => wire.read_exact_body(n)?,
            Err(_) => return bad(wire, "content-length"),
        }
    } else {
        Vec::new()
    };

    let client_close = if version == "HTTP/1.0" {
        !has_token(&headers, "connection", "keep-alive")
    } else {
        has_token(&headers, "connection", "close")
    };

    let req = RecordedRequest {
        method,
        target,
        version,
        headers,
        body,
        chunked,
        conn_id: id,
        peer,
    };
    let path = req.path().to_string();
    {
        let mut pc = lock(&inner.path_counts);
        *pc.entry(path.clone()).or_insert(0) += 1;
    }
    lock(&inner.requests).push(req.clone());

    let (handler, healthy, default) = {
        let s = lock(&inner.settings);
        (s.handler.clone(), s.healthy, s.default.clone())
    };
    let reply = handler.and_then(|h| h(&req)).unwrap_or_else(|| {
        if path == "/health" {
            if healthy {
                Reply::new(200, "ok")
            } else {
                Reply::new(503, "unhealthy")
            }
        } else {
            default
        }
    });

    if !reply.delay.is_zero() && !sleep_while_current(inner, gen, reply.delay) {
        return Ok(After::Close);
    }
    match reply.mode {
        Mode::Reset => return Ok(After::Reset),
        Mode::Close => return Ok(After::Close),
        Mode::Hang => {
            while sleep_while_current(inner, gen, Duration::from_millis(50)) {}
            return Ok(After::Close);
        }
        Mode::Respond => {}
    }

    let close = reply.close || client_close;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        reply.status,
        reason_phrase(reply.status)
    )
    .into_bytes();
    let no_body_status = reply.status == 204 || reply.status == 304 || reply.status < 200;
    if reply.chunked && !no_body_status {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if !no_body_status {
        out.extend_from_slice(format!("content-length: {}\r\n", reply.body.len()).as_bytes());
    }
    out.extend_from_slice(format!("x-backend: {}\r\n", inner.name).as_bytes());
    for (k, v) in &reply.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(if close {
        &b"connection: close\r\n\r\n"[..]
    } else {
        &b"connection: keep-alive\r\n\r\n"[..]
    });
    if req.method != "HEAD" && !no_body_status {
        if reply.chunked {
            encode_chunked(&reply.body, &mut out);
        } else {
            out.extend_from_slice(&reply.body);
        }
    }
    wire.stream.write_all(&out)?;
    Ok(if close {
        After::Close
    } else {
        After::KeepAlive
    })
}

// ---------------------------------------------------------------------------
// Child processes: log capture
// ---------------------------------------------------------------------------

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Switchyard process guard
// ---------------------------------------------------------------------------

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

    /// Readiness timeout (default [`READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.ready_timeout = d;
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
            log_prefix: "switchyard".to_string(),
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
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {SWITCHYARD_BIN}: {e}"));
        self.child = Some(child);
    }

    fn wait_ready(&mut self, how: Ready, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "switchyard exited with {} before it was ready\n{}",
                    exit_code(st),
                    self.logs()
                );
            }
            if probe(self.addr, how) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "switchyard not ready on {} after {:?}\n{}",
                    self.addr,
                    timeout,
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The proxy's listen address (`{listen}`), on 127.0.0.1.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{listen}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address `{admin}` expanded to (only listening if the config uses it).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The temp dir holding config, logs, pid file and upgrade socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the written config file.
    pub fn config_path(&self) -> &Path {
        &self.config
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
        let mut sy = Switchyard {
            child: None,
            dir: Arc::clone(&self.dir),
            addr: self.addr,
            admin_addr: self.admin_addr,
            config: self.config.clone(),
            port: self.port,
            admin_port: self.admin_port,
            log_prefix: format!("switchyard-{}", N.fetch_add(1, Ordering::Relaxed)),
        };
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
        let pid: u32 = fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
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

/// Output of a finished process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code (128 + signal when killed).
    pub code: i32,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

fn run_to_end(bin: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let out = cwd.join("run.stdout");
    let err = cwd.join("run.stderr");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("create stdout file"))
        .stderr(fs::File::create(&err).expect("create stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let Some(status) = wait_child(&mut child, Duration::from_secs(30)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{bin} {args:?} still running after 30 s\nstdout:\n{}\nstderr:\n{}",
            read_lossy(&out),
            read_lossy(&err)
        );
    };
    Output {
        code: exit_code(status),
        stdout: read_lossy(&out),
        stderr: read_lossy(&err),
    }
}

/// Runs `switchyard ARGS` to completion (30 s bound) in a fresh temp dir
/// (its working directory) and returns exit code and output.
pub fn run_switchyard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new();
    run_to_end(SWITCHYARD_BIN, args, env, dir.path())
}

/// `switchyard -t -c FILE` on `yaml` (placeholders expanded as in
/// [`Switchyard::start`]): `(exit code, stdout, stderr)`.
pub fn check_config(yaml: &str) -> (i32, String, String) {
    let dir = TempDir::new();
    let file = dir.join("switchyard.yaml");
    fs::write(
        &file,
        expand_config(yaml, dir.path(), free_port(), free_port()),
    )
    .expect("write config");
    let o = check_config_file(&file);
    (o.code, o.stdout, o.stderr)
}

/// `switchyard -t -c PATH` on an existing file.
pub fn check_config_file(path: &Path) -> Output {
    let dir = TempDir::new();
    let p = path.display().to_string();
    run_to_end(SWITCHYARD_BIN, &["-t", "-c", &p], &[], dir.path())
}

// ---------------------------------------------------------------------------
// switchyard-echo process guard
// ---------------------------------------------------------------------------

/// A running `switchyard-echo`, killed on drop.
pub struct EchoProcess {
    child: Option<Child>,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl EchoProcess {
    /// Starts `switchyard-echo --listen 127.0.0.1:<free port> ARGS` (no
    /// `--listen` added if `args` has one) and waits (10 s) for its
    /// `listening on ADDR` line; panics with its stderr otherwise.
    pub fn start(args: &[&str]) -> EchoProcess {
        let mut all: Vec<String> = Vec::new();
        if !args
            .iter()
            .any(|a| *a == "--listen" || a.starts_with("--listen=") || *a == "-l")
        {
            all.push("--listen".into());
            all.push(format!("127.0.0.1:{}", free_port()));
        }
        all.extend(args.iter().map(|s| s.to_string()));
        EchoProcess::start_cmd(Command::new(ECHO_BIN).args(&all))
    }

    /// Starts from a prepared command (e.g. with env vars); stdout/stderr are
    /// piped by this function.
    pub fn start_cmd(cmd: &mut Command) -> EchoProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {ECHO_BIN}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut e) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                lock(&sink).push_str(&s);
            });
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            lines.for_each(drop); // keep draining so the child never blocks on stdout
        });
        let line = rx.recv_timeout(Duration::from_secs(10));
        let addr = line
            .as_ref()
            .ok()
            .and_then(|l| l.strip_prefix("listening on "))
            .and_then(|a| a.trim().parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            terminate_child(&mut child, Duration::from_millis(500));
            thread::sleep(Duration::from_millis(50));
            panic!(
                "switchyard-echo did not announce itself (first line {line:?})\nstderr:\n{}",
                lock(&stderr)
            );
        };
        EchoProcess {
            child: Some(child),
            addr,
            stderr,
        }
    }

    /// The announced listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// PID of the process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stderr captured so far (complete only after the process exited).
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Sends SIGTERM and waits up to `timeout`; the exit code, or None.
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

/// Runs `switchyard-echo ARGS` expecting it to exit by itself (30 s bound),
/// e.g. for bad flags.
pub fn run_echo(args: &[&str]) -> Output {
    let dir = TempDir::new();
    run_to_end(ECHO_BIN, args, &[], dir.path())
}
