//! Backend state and failure accounting: what counts against a backend,
//! what the request deadline bounds, and what a reload or an admin change
//! keeps (health, rise progress, ejection, in-flight count, probes).

use crate::common::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// A loopback server running `serve` on each accepted connection (one
/// thread each); counts the connections still open.
struct RawBackend {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
}

impl RawBackend {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> RawBackend {
        let listener = bind_fresh();
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(AtomicUsize::new(0));
        let serve = Arc::new(serve);
        let open2 = open.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (serve, open) = (serve.clone(), open2.clone());
                open.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    serve(conn);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        RawBackend { addr, open }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Reads one request head; returns its lines (None at EOF or error).
fn read_head(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

/// An admin API request with a JSON body.
fn admin(sy: &Switchyard, method: &str, path: &str, body: &str) -> Response {
    let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[("Content-Type", "application/json")] };
    request(sy.admin_addr(), method, path, headers, body.as_bytes())
}

/// The `/status` object of backend `url` in pool `pool`.
fn backend_status(sy: &Switchyard, pool: &str, url: &str) -> serde_json::Value {
    let st = admin(sy, "GET", "/status", "").json();
    st["pools"][pool]["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["url"].as_str() == Some(url)).cloned())
        .unwrap_or_else(|| panic!("no backend {url} in pool {pool}: {st}"))
}

/// The value of the metric line starting with `prefix` (0 when absent).
fn metric(sy: &Switchyard, prefix: &str) -> f64 {
    let text = admin(sy, "GET", "/metrics", "").text();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The backend that answered `GET /who` for pool `app`, or None for a non-200.
fn served_by(sy: &Switchyard, app: &str) -> Option<String> {
    let r = try_get(sy.addr(), "/who", &[("App-Name", app)]).ok()?;
    (r.status == 200).then(|| r.header("x-backend").unwrap_or("").to_string())
}

/// Sends SIGHUP and waits for the `n`-th "configuration reloaded" line.
fn reload(sy: &Switchyard, n: usize) {
    sy.signal(libc::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || sy.logs().matches("configuration reloaded").count() >= n),
        "reload {n} not done\n{}",
        sy.logs()
    );
}

fn pool_yaml(name: &str, urls: &[String], extra: &str) -> String {
    let backends: Vec<String> = urls.iter().map(|u| format!("{{ url: \"{u}\" }}")).collect();
    format!("  {name}:\n    backends: [{}]\n{extra}", backends.join(", "))
}

fn config(default: &str, pools: &[String], admin: bool) -> String {
    let admin = if admin { "admin: { listen: \"{admin}\" }\n" } else { "" };
    format!(
        "listen: [ {{ addr: \"{{listen}}\" }} ]\n{admin}routing: {{ default_pool: {default} }}\npools:\n{}",
        pools.concat()
    )
}

// ---------------------------------------------------------------------------
// timeouts
// ---------------------------------------------------------------------------

#[test]
fn body_streaming_past_the_request_timeout_completes_and_keeps_the_backend() {
    // head at once, then a chunk every 300 ms for 3 s
    let streamer = RawBackend::start(|conn| {
        let mut r = BufReader::new(conn.try_clone().expect("clone"));
        let mut w = conn;
        while let Some(head) = read_head(&mut r) {
            let path = head[0].split(' ').nth(1).unwrap_or("/").to_string();
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-backend: streamer\r\n\r\n");
            let chunks = if path == "/stream" { 10 } else { 1 };
            for _ in 0..chunks {
                if path == "/stream" {
                    thread::sleep(Duration::from_millis(300)); // the stream's pace, not a wait
                }
                if w.write_all(b"5\r\nchunk\r\n").is_err() {
                    return;
                }
            }
            let _ = w.write_all(b"0\r\n\r\n");
        }
    });
    let pool = pool_yaml(
        "web",
        &[streamer.url()],
        "    health_check: { type: none }\n    timeouts: { request: 1s }\n    passive: { max_fails: 1, fail_timeout: 10s, max_ejected_percent: 100 }\n",
    );
    let sy = Switchyard::start(&config("web", &[pool], true));
    let mut c = Client::connect(sy.addr()).expect("connect");
    c.set_timeout(Duration::from_secs(10)).expect("timeout");
    let started = Instant::now();
    let r = c.get("/stream", &[]).expect("streamed response");
    assert_eq!(r.status, 200, "{}", sy.logs());
    assert_eq!(r.text(), "chunk".repeat(10), "body cut\n{}", sy.logs());
    assert!(started.elapsed() >= Duration::from_secs(2));
    // the backend stays in
    assert_eq!(served_by(&sy, "web").as_deref(), Some("streamer"), "{}", sy.logs());
    assert_eq!(metric(&sy, "switchyard_backend_ejections_total{pool=\"web\""), 0.0);
}

#[test]
fn websocket_idle_longer_than_the_request_timeout_stays_open() {
    let ws = RawBackend::start(|conn| {
        let mut r = BufReader::new(conn.try_clone().expect("clone"));
        let mut w = conn;
        if read_head(&mut r).is_none() {
            return;
        }
        let _ = w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n");
        // echo whatever comes
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if w.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let pool =
        pool_yaml("web", &[ws.url()], "    health_check: { type: none }\n    timeouts: { request: 1s, read: 1s }\n");
    let sy = Switchyard::start(&config("web", &[pool], false));
    let mut s = TcpStream::connect(sy.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .expect("send");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let head = read_head(&mut r).expect("101 head");
    assert!(head[0].contains("101"), "{head:?}\n{}", sy.logs());
    // idle for longer than both timeouts.request and timeouts.read
    thread::sleep(Duration::from_millis(2500));
    s.write_all(b"ping").expect("send after idle");
    let mut got = [0u8; 4];
    r.read_exact(&mut got).unwrap_or_else(|e| panic!("upgraded connection closed: {e}\n{}", sy.logs()));
    assert_eq!(&got, b"ping");
}

// ---------------------------------------------------------------------------
// failure accounting
// ---------------------------------------------------------------------------

#[test]
fn stale_keepalive_connections_never_eject_the_only_backend() {
    // answers the first request of each connection, and closes the
    // connection without answering when a second one comes on it (a
    // keep-alive timeout racing the reuse)
    let b = TestBackend::start("b");
    let seen: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    b.set_handler(move |req: &RecordedRequest| {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let n = seen.entry(req.conn_id).or_default();
        *n += 1;
        (*n > 1).then(Reply::close_silently)
    });
    let pool = pool_yaml(
        "web",
        &[b.url()],
        "    health_check: { type: none }\n    passive: { max_fails: 1, fail_timeout: 10s, max_ejected_percent: 100 }\n",
    );
    let sy = Switchyard::start(&config("web", &[pool], true));
    let codes: Vec<u16> = (0..20).map(|_| try_get(sy.addr(), "/x", &[]).map_or(0, |r| r.status)).collect();
    assert_eq!(codes, vec![200; 20], "{}", sy.logs());
    assert!(b.connections_accepted() < 20 + 20, "no reuse was attempted");
    assert_eq!(backend_status(&sy, "web", &b.url())["failures"], 0);
}

#[test]
fn out_of_file_descriptors_never_ejects_a_backend() {
    let [b1, b2] = backends(["b1", "b2"]);
    for b in [&b1, &b2] {
        // no pooled upstream connection may be reused instead of a new one
        b.set_reply(Reply { close: true, ..Reply::new(200, b.name()) });
    }
    let pool = pool_yaml(
        "web",
        &[b1.url(), b2.url()],
        "    health_check: { type: none }\n    passive: { max_fails: 1, fail_timeout: 30s, max_ejected_percent: 100 }\n",
    );
    let sy = Switchyard::start(&config("web", &[pool], true));
    let pid = sy.pid().expect("pid");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let original: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("soft fd limit");
    let soft = |n: usize| {
        let ok = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
            .status()
            .expect("run prlimit")
            .success();
        assert!(ok, "prlimit failed");
    };
    // room for the client's connection, none for an upstream socket; counted
    // again before each try, as descriptors come and go
    let mut codes = Vec::new();
    while codes.len() < 12 && !codes.contains(&503) {
        let list = || -> std::collections::BTreeSet<usize> {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .expect("list fds")
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        };
        // the last client connection closes on the proxy side shortly after
        let mut fds = list();
        poll_until(Duration::from_secs(1), || {
            thread::sleep(Duration::from_millis(50)); // stable = unchanged over 50 ms
            let now = list();
            std::mem::replace(&mut fds, now) == fds
        });
        // the lowest limit that leaves exactly one descriptor number free
        // (a new descriptor takes the lowest free number below the limit)
        let mut free = 0;
        let limit = (0..)
            .find(|n| {
                if !fds.contains(n) {
                    free += 1;
                }
                free == 2
            })
            .expect("a limit");
        soft(limit);
        let code = Client::connect(sy.addr())
            .and_then(|mut c| {
                c.set_timeout(Duration::from_secs(3))?;
                c.get("/x", &[])
            })
            .map_or(0, |r| r.status);
        codes.push(code);
    }
    soft(original);
    assert!(codes.iter().any(|c| *c != 200), "the limit never bit: {codes:?}");
    // nothing was counted against the backends: both serve at once
    for b in [&b1, &b2] {
        let st = backend_status(&sy, "web", &b.url());
        assert_eq!(st["failures"], 0, "{st}\n{}", sy.logs());
    }
    let mut served: Vec<String> = (0..6).filter_map(|_| served_by(&sy, "web")).collect();
    served.sort();
    served.dedup();
    assert_eq!(served, ["b1", "b2"], "{}", sy.logs());
    // answered 503 (temporary), counted in its own metric, logged sparingly
    assert!(codes.contains(&503), "{codes:?}\n{}", sy.logs());
    assert!(metric(&sy, "switchyard_local_errors_total") >= 1.0, "{}", sy.logs());
    assert!(sy.logs().matches("lack of a local resource").count() <= codes.len(), "{}", sy.logs());
}

// ---------------------------------------------------------------------------
// state across reloads and admin changes
// ---------------------------------------------------------------------------

#[test]
fn passive_ejection_survives_an_unrelated_sighup() {
    let [good, bad] = backends(["good", "bad"]);
    bad.set_mode(Mode::Reset);
    let web = pool_yaml(
        "web",
        &[good.url(), bad.url()],
        "    health_check: { type: tcp, interval: 1s }\n    passive: { max_fails: 1, fail_timeout: 20s }\n",
    );
    let other = pool_yaml("other", &[good.url()], "    health_check: { type: none }\n");
    let sy = Switchyard::start(&config("web", std::slice::from_ref(&web), false));
    assert!(
        poll_until(Duration::from_secs(5), || {
            let _ = served_by(&sy, "web");
            bad.app_count() > 0
        }),
        "{}",
        sy.logs()
    );
    let ejected_at = Instant::now();
    bad.set_mode(Mode::Respond);
    sy.write_config(&config("web", &[web, other], false));
    reload(&sy, 1);
    let before = bad.app_count();
    for _ in 0..20 {
        assert_eq!(served_by(&sy, "web").as_deref(), Some("good"), "{}", sy.logs());
    }
    assert!(ejected_at.elapsed() < Duration::from_secs(15));
    assert_eq!(bad.app_count(), before, "ejection forgotten\n{}", sy.logs());
}

#[test]
fn rise_progress_survives_a_reload() {
    let [steady, rec] = backends(["steady", "rec"]);
    let hc = "    health_check: { type: http, path: /health, interval: 2s, timeout: 500ms, rise: 3, fall: 1 }\n";
    let web = pool_yaml("web", &[steady.url(), rec.url()], hc);
    let other = pool_yaml("other", &[steady.url()], "    health_check: { type: none }\n");
    let sy = Switchyard::start(&config("web", std::slice::from_ref(&web), false));
    rec.set_healthy(false);
    let failed = rec.path_count("/health");
    assert!(poll_until(Duration::from_secs(5), || rec.path_count("/health") > failed));
    assert!(
        poll_until(Duration::from_secs(5), || (0..4).all(|_| served_by(&sy, "web").as_deref() == Some("steady"))),
        "{}",
        sy.logs()
    );
    // recovering: reload right after its first passing probe
    rec.set_healthy(true);
    let probes = rec.path_count("/health");
    assert!(poll_until(Duration::from_secs(5), || rec.path_count("/health") > probes));
    let first_pass = Instant::now();
    sy.write_config(&config("web", &[web, other], false));
    reload(&sy, 1);
    let before = rec.app_count();
    for _ in 0..10 {
        let _ = served_by(&sy, "web");
    }
    // two intervals after the first pass: the third cannot have come yet
    assert!(first_pass.elapsed() < Duration::from_millis(3800), "test too slow");
    assert_eq!(rec.app_count(), before, "admitted before its third passing probe\n{}", sy.logs());
    // and it does come back after its third pass
    assert!(poll_until(Duration::from_secs(10), || served_by(&sy, "web").as_deref() == Some("rec")), "{}", sy.logs());
}

#[test]
fn in_flight_count_of_a_draining_backend_survives_a_reload() {
    let slow = TestBackend::start("slow");
    slow.set_delay(Duration::from_secs(6));
    let hc = "    health_check: { type: tcp, interval: 1s }\n";
    let web = pool_yaml("web", &[slow.url()], hc);
    let other = pool_yaml("other", &[slow.url()], hc);
    let sy = Switchyard::start(&config("web", std::slice::from_ref(&web), true));
    let addr = sy.addr();
    let clients: Vec<_> =
        (0..3).map(|_| thread::spawn(move || try_get(addr, "/slow", &[]).map(|r| r.status))).collect();
    assert!(poll_until(Duration::from_secs(5), || slow.app_count() == 3));
    let body = format!("{{\"pool\": \"web\", \"url\": \"{}\", \"enabled\": false}}", slow.url());
    assert_eq!(admin(&sy, "PATCH", "/backends", &body).status, 200);
    sy.write_config(&config("web", &[web, other], true));
    reload(&sy, 1);
    let st = backend_status(&sy, "web", &slow.url());
    assert_eq!(st["active_connections"], 3, "{st}\n{}", sy.logs());
    assert_eq!(st["enabled"], false, "{st}");
    for c in clients {
        assert_eq!(c.join().expect("client").ok(), Some(200));
    }
    // the slot is released when the proxy has finished the request, just
    // after the client has its answer
    assert!(
        poll_until(Duration::from_secs(2), || backend_status(&sy, "web", &slow.url())["active_connections"] == 0),
        "{}",
        backend_status(&sy, "web", &slow.url())
    );
}

#[test]
fn post_backends_probes_the_new_backend_only() {
    let [a, b, c] = backends(["a", "b", "c"]);
    let hc = "    health_check: { type: http, path: /health, interval: 20s, timeout: 1s, rise: 1, fall: 1 }\n";
    let web = pool_yaml("web", &[a.url(), b.url()], hc);
    let api = pool_yaml("api", &[a.url()], hc);
    let sy = Switchyard::start(&config("web", &[web, api], true));
    // start-up: the admission probe, then the periodic loop's first pass
    let probed_twice = || a.path_count("/health") >= 2 && b.path_count("/health") >= 2;
    assert!(poll_until(Duration::from_secs(5), probed_twice));
    let (pa, pb) = (a.path_count("/health"), b.path_count("/health"));
    let body = format!("{{\"pool\": \"web\", \"url\": \"{}\"}}", c.url());
    let r = admin(&sy, "POST", "/backends", &body);
    assert_eq!(r.status, 201, "{}\n{}", r.text(), sy.logs());
    assert_eq!(c.path_count("/health"), 1, "new backend probed once");
    assert_eq!(a.path_count("/health"), pa, "a probed again\n{}", sy.logs());
    assert_eq!(b.path_count("/health"), pb, "b probed again\n{}", sy.logs());
    assert!(poll_until(Duration::from_secs(5), || served_by(&sy, "web").as_deref() == Some("c")));
}

#[test]
fn a_backend_in_two_pools_is_probed_once_per_interval() {
    let shared = TestBackend::start("shared");
    let hc = "    health_check: { type: http, path: /health, interval: 500ms, timeout: 300ms, rise: 1, fall: 1 }\n";
    let web = pool_yaml("web", &[shared.url()], hc);
    let api = pool_yaml("api", &[shared.url()], hc);
    let sy = Switchyard::start(&config("web", &[web, api], false));
    let start = shared.path_count("/health");
    let t0 = Instant::now();
    // a measuring window of 2.5 s: 5 intervals
    assert!(!poll_until(Duration::from_millis(2500), || false));
    let probes = shared.path_count("/health") - start;
    let intervals = (t0.elapsed().as_millis() / 500) as usize;
    assert!(probes <= intervals + 1, "{probes} probes in {intervals} intervals\n{}", sy.logs());
    assert!(probes >= 2, "{probes} probes");
}

// ---------------------------------------------------------------------------
// racing
// ---------------------------------------------------------------------------

#[test]
fn raced_pool_with_every_backend_down_is_served_by_its_fallback() {
    let legacy = TestBackend::start("legacy");
    let web = pool_yaml(
        "web",
        &[dead_url()],
        "    health_check: { type: tcp, interval: 200ms, timeout: 200ms }\n    race: { terminal: [2xx] }\n    fallback: legacy\n",
    );
    let leg = pool_yaml("legacy", &[legacy.url()], "    health_check: { type: none }\n");
    let sy = Switchyard::start(&config("web", &[web, leg], false));
    for _ in 0..5 {
        assert_eq!(served_by(&sy, "web").as_deref(), Some("legacy"), "{}", sy.logs());
    }
}

#[test]
fn raced_request_whose_client_leaves_leaves_no_upstream_connection() {
    // never answers; holds the connection until the proxy closes it
    let hang = || {
        RawBackend::start(|conn| {
            let mut r = BufReader::new(conn);
            if read_head(&mut r).is_none() {
                return;
            }
            let mut buf = [0u8; 64];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        })
    };
    let (h1, h2) = (hang(), hang());
    let web = pool_yaml(
        "web",
        &[h1.url(), h2.url()],
        "    health_check: { type: none }\n    race: { terminal: [2xx] }\n    timeouts: { request: 20s, read: 20s }\n",
    );
    let sy = Switchyard::start(&config("web", &[web], true));
    let mut client = TcpStream::connect(sy.addr()).expect("connect");
    client.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    assert!(
        poll_until(Duration::from_secs(5), || h1.open_connections() == 1 && h2.open_connections() == 1),
        "race did not reach both backends\n{}",
        sy.logs()
    );
    assert!(poll_until(Duration::from_secs(2), || {
        let url = |h: &RawBackend| h.url();
        backend_status(&sy, "web", &url(&h1))["active_connections"] == 1
            && backend_status(&sy, "web", &url(&h2))["active_connections"] == 1
    }));
    drop(client);
    let left = Instant::now();
    assert!(
        poll_until(Duration::from_secs(1), || h1.open_connections() == 0 && h2.open_connections() == 0),
        "upstream connections still open {:?} after the client left\n{}",
        left.elapsed(),
        sy.logs()
    );
}

#[test]
fn changed_health_settings_stop_the_old_probe_while_a_request_holds_the_old_table() {
    let [b, slow] = backends(["b", "slow"]);
    slow.set_delay(Duration::from_secs(4));
    let hc =
        |path: &str| format!("    health_check: {{ type: http, path: {path}, interval: 200ms, timeout: 200ms }}\n");
    let slow_pool = pool_yaml("slow", &[slow.url()], "    health_check: { type: none }\n");
    let sy = Switchyard::start(&config("web", &[pool_yaml("web", &[b.url()], &hc("/old")), slow_pool.clone()], false));
    // an in-flight request keeps the first table alive across the reload
    let addr = sy.addr();
    let held = thread::spawn(move || try_get(addr, "/slow", &[("App-Name", "slow")]));
    assert!(poll_until(Duration::from_secs(5), || slow.app_count() == 1));
    sy.write_config(&config("web", &[pool_yaml("web", &[b.url()], &hc("/new")), slow_pool], false));
    reload(&sy, 1);
    assert!(poll_until(Duration::from_secs(2), || b.path_count("/new") >= 2));
    let old = b.path_count("/old");
    let new = b.path_count("/new");
    // four intervals later, still in flight: only the new probe ran
    assert!(!poll_until(Duration::from_millis(800), || false));
    assert!(slow.app_count() == 1 && !held.is_finished());
    assert!(b.path_count("/old") <= old + 1, "old probe still runs\n{}", sy.logs());
    assert!(b.path_count("/new") >= new + 2, "{}", sy.logs());
    assert_eq!(held.join().expect("client").map(|r| r.status).ok(), Some(200));
}

#[test]
fn a_one_backend_pool_is_never_ejected_passively() {
    let only = TestBackend::start("only");
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    // the first request is reset (a failure of the backend's own)
    only.set_handler(move |_| (n2.fetch_add(1, Ordering::SeqCst) == 0).then(Reply::reset));
    // default passive settings: max_fails 1, max_ejected_percent 50
    let pool = pool_yaml("web", &[only.url()], "    health_check: { type: none }\n");
    let sy = Switchyard::start(&config("web", &[pool], true));
    // retried on the same backend, which is still in
    let first = get(sy.addr(), "/x", &[]);
    assert_eq!(first.status, 200, "{}", sy.logs());
    for _ in 0..5 {
        assert_eq!(served_by(&sy, "web").as_deref(), Some("only"), "{}", sy.logs());
    }
    let st = backend_status(&sy, "web", &only.url());
    assert_eq!(st["failures"], 1, "{st}");
    assert_eq!(metric(&sy, "switchyard_backend_ejections_total{pool=\"web\""), 0.0);
}

#[test]
fn admin_changes_are_counted_apart_from_reloads() {
    let [a, b] = backends(["a", "b"]);
    let web = pool_yaml("web", &[a.url()], "    health_check: { type: none }\n");
    let sy = Switchyard::start(&config("web", std::slice::from_ref(&web), true));
    let body = format!("{{\"pool\": \"web\", \"url\": \"{}\"}}", b.url());
    assert_eq!(admin(&sy, "POST", "/backends", &body).status, 201);
    assert_eq!(admin(&sy, "POST", "/backends", &body).status, 409);
    let ok = "switchyard_config_reloads_total{result=\"ok\"}";
    assert_eq!(metric(&sy, ok), 0.0, "an admin change counted as a reload");
    assert_eq!(metric(&sy, "switchyard_admin_changes_total{result=\"ok\"}"), 1.0);
    assert_eq!(metric(&sy, "switchyard_admin_changes_total{result=\"error\"}"), 1.0);
    reload(&sy, 1);
    assert_eq!(metric(&sy, ok), 1.0);
}
