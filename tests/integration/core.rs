//! Integration tests of the core proxy: routing by header,
//! the balancing strategies, active health checks, the statuses the proxy
//! produces itself (404/502/503/504), fallback pools, forwarded headers,
//! upstream keep-alive and malformed requests. Real sockets, real process.

use std::collections::{HashMap, HashSet};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Together: only the active check decides, no retries, no passive ejection.
const NO_RETRIES: &str = "retries: {attempts: 1}";
const NO_EJECTION: &str = "passive: {max_fails: 0}";

/// `n` GETs on one connection, each a 200; the answers per backend.
fn tally(sy: &Switchyard, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut c = Client::connect(sy.addr()).expect("connect to switchyard");
    let mut counts = HashMap::new();
    for i in 0..n {
        let r = c.get(&format!("/req/{i}"), headers).unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        *counts.entry(served_by(&r)).or_insert(0) += 1;
    }
    counts
}

// === Routing ===

fn web_and_api(routing: &str) -> (TestBackend, TestBackend, Switchyard) {
    let [web, api] = backends(["web", "api"]);
    let sy = start_pools(routing, &[pool("web", &[web.url()], &[]), pool("api", &[api.url()], &[])]);
    (web, api, sy)
}

#[test]
fn routing_header_is_case_insensitive_and_trimmed_else_the_default_pool() {
    let (web, api, sy) = web_and_api("{default_pool: web}");
    let api_values = [Some("api"), Some("  API "), Some("Api"), Some("\tapi")].map(|v| (v, "api"));
    // missing, empty or unknown: the default pool
    for (app, want) in api_values.into_iter().chain([(None, "web"), (Some(""), "web"), (Some("billing"), "web")]) {
        assert_eq!(who(&sy, app).as_deref(), Some(want), "App-Name {app:?}");
    }
    // The exact bytes on the wire, with the spaces of the issue.
    let raw = send_raw(sy.addr(), b"GET /raw HTTP/1.1\r\nHost: t\r\nApp-Name:  API \r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(raw_status(&raw), Some(200), "{text}");
    assert!(text.to_ascii_lowercase().contains("x-backend: api"), "{text}");
    assert_eq!((api.app_count(), web.app_count()), (5, 3));
}

#[test]
fn routing_without_default_pool_answers_404_json() {
    let api = TestBackend::start("api");
    let sy = start_pools("{}", &[pool("api", &[api.url()], &[])]);
    let r = get(sy.addr(), "/x", &[("App-Name", "billing")]);
    assert_eq!(proxy_error(&r, 404)["pool"], "billing");
    let r = get(sy.addr(), "/x", &[]).expect_status(404);
    assert!(r.json()["pool"].is_string(), "{}", r.text());
    // The known pool still works.
    get(sy.addr(), "/x", &[("App-Name", "API")]).expect_status(200);
    assert_eq!(api.app_count(), 1);
}

#[test]
fn routing_custom_header() {
    let (web, api, sy) = web_and_api("{header: X-Pool, default_pool: web}");
    let r = get(sy.addr(), "/x", &[("x-pool", " API")]);
    assert_eq!((r.status, served_by(&r)), (200, "api".into()));
    // App-Name is no longer the routing header.
    let r = get(sy.addr(), "/x", &[("App-Name", "api")]);
    assert_eq!(served_by(&r), "web");
    assert_eq!((web.app_count(), api.app_count()), (1, 1));
}

// === Strategies ===

/// Per case: `n` requests, each backend's pool entry keys and the range of its share.
#[test]
fn round_robin_spreads_evenly_by_weight_and_never_to_a_disabled_backend() {
    let cases = [
        ("even", 300, vec![("", 95..=105), ("", 95..=105), ("", 95..=105)]),
        ("weights", 400, vec![(", weight: 3", 270..=330), ("", 70..=130)]),
        ("disabled", 60, vec![("", 20..=40), (", enabled: false", 0..=0), ("", 20..=40)]),
    ];
    for (what, n, shares) in cases {
        let bs: Vec<TestBackend> = (0..shares.len()).map(|i| TestBackend::start(&format!("b{i}"))).collect();
        let entries: Vec<String> = bs.iter().zip(&shares).map(|(b, (extra, _))| be(&b.url(), extra)).collect();
        let sy = start_pools("{default_pool: web}", &[pool("web", &entries, &["strategy: round_robin"])]);
        let counts = tally(&sy, n, &[]);
        for (b, (_, share)) in bs.iter().zip(shares) {
            let got = b.request_count();
            assert!(share.contains(&got), "{what}: {} got {got} of {n} ({counts:?})", b.name());
            assert_eq!(counts.get(b.name()).copied().unwrap_or(0), got, "{what}");
        }
        assert_eq!(bs.iter().map(|b| b.request_count()).sum::<usize>(), n, "{what}: {counts:?}");
    }
}

#[test]
fn least_conn_keeps_requests_off_a_slow_backend() {
    let [slow, fast] = backends(["slow", "fast"]);
    slow.set_delay(Duration::from_millis(1500));
    let sy = start_web(&[&slow, &fast], &["strategy: least_conn"]);
    let addr = sy.addr();
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(thread::spawn(move || try_get(addr, &format!("/lc/{i}"), &[]).map(|r| (r.status, served_by(&r)))));
        thread::sleep(Duration::from_millis(40)); // staggered arrivals: pacing, not a wait
    }
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().expect("client thread")).collect();
    assert!(answers.iter().all(|a| matches!(a, Ok((200, _)))), "a request failed: {answers:?}");
    let (s, f) = (slow.app_count(), fast.app_count());
    assert_eq!(s + f, 20);
    assert!(s <= 4, "slow backend got {s} of 20 (fast {f})");
    assert!(f >= 16, "fast backend got {f} of 20 (slow {s})");
}

#[test]
fn consistent_hash_by_client_ip_is_sticky() {
    let bs = backends(["h1", "h2", "h3"]);
    let sy = start_web(&bs.each_ref(), &["strategy: consistent", "hash_key: client_ip"]);
    // Every request comes from 127.0.0.1, on separate connections.
    let seen: HashSet<String> = (0..15).map(|_| served_by(&get(sy.addr(), "/x", &[]).expect_status(200))).collect();
    assert_eq!(seen.len(), 1, "one client went to {seen:?}");
}

#[test]
fn consistent_hash_by_header_is_sticky_and_spreads() {
    let bs = backends(["h1", "h2", "h3"]);
    let sy = start_web(&bs.each_ref(), &["strategy: consistent", "hash_key: \"header:X-User\""]);
    let mut c = Client::connect(sy.addr()).unwrap();
    let mut owner: HashMap<String, String> = HashMap::new();
    for round in 0..4 {
        for u in 0..24 {
            let user = format!("user-{u}");
            let r = c.get("/x", &[("X-User", &user)]).unwrap().expect_status(200);
            let b = served_by(&r);
            let first = owner.entry(user.clone()).or_insert_with(|| b.clone());
            assert_eq!(*first, b, "{user} moved in round {round}");
        }
    }
    let used: HashSet<&String> = owner.values().collect();
    assert!(used.len() > 1, "24 keys all on {used:?}");
}

// === Health checks ===

/// One request; whether `b` has had more than `before` app requests by then.
fn served_again(sy: &Switchyard, b: &TestBackend, before: usize) -> bool {
    let _ = try_get(sy.addr(), "/again", &[]);
    b.app_count() > before
}

/// Sends `n` requests; true when every one is a 200 from `name`.
fn all_served_by(sy: &Switchyard, n: usize, name: &str) -> bool {
    (0..n).all(|_| {
        try_get(sy.addr(), "/probe-traffic", &[]).map(|r| r.status == 200 && served_by(&r) == name).unwrap_or(false)
    })
}

#[test]
fn tcp_health_check_takes_stopped_backend_out_and_back() {
    let [b1, b2] = backends(["b1", "b2"]);
    let hc = "health_check: {type: tcp, interval: 100ms, timeout: 200ms, rise: 1, fall: 1}";
    let sy = start_web(&[&b1, &b2], &[NO_RETRIES, NO_EJECTION, hc]);
    let counts = tally(&sy, 10, &[]);
    assert_eq!(counts.len(), 2, "both in service at start: {counts:?}");

    b1.stop();
    eventually!(5, all_served_by(&sy, 6, "b2"), "stopped backend never taken out");
    // Out for good: every request succeeds on b2 (no retries to hide it).
    let counts = tally(&sy, 20, &[]);
    assert_eq!(counts.get("b2"), Some(&20), "{counts:?}");

    let before = b1.app_count();
    b1.restart();
    eventually!(5, served_again(&sy, &b1, before), "restarted backend never got traffic again");
}

/// `b`'s `/health` probes since `since`, and every probe's time after `origin` (for messages).
fn probes(b: &TestBackend, since: Instant, origin: Instant) -> (usize, String) {
    let times: Vec<Instant> = b.requests().iter().filter(|r| r.path() == "/health").map(|r| r.at).collect();
    let log: Vec<Duration> = times.iter().map(|t| t.saturating_duration_since(origin)).collect();
    (times.iter().filter(|t| **t >= since).count(), format!("{log:?}"))
}

#[test]
fn http_health_check_follows_fall_and_rise() {
    let origin = Instant::now();
    let [b1, b2] = backends(["b1", "b2"]);
    let hc = "health_check: {type: http, path: /health, interval: 100ms, timeout: 1s, rise: 2, fall: 2}";
    let sy = start_web(&[&b1, &b2], &[NO_RETRIES, NO_EJECTION, hc]);
    let counts = tally(&sy, 10, &[]);
    assert_eq!(counts.len(), 2, "both in service at start: {counts:?}");

    b1.set_healthy(false); // every probe from now on fails
    let t_down = Instant::now();
    eventually!(5, all_served_by(&sy, 6, "b2"), "unhealthy backend never taken out");
    let (failed, log) = probes(&b1, t_down, origin);
    assert!(
        failed >= 2,
        "out after {failed} failed probe(s), fall is 2; probes at {log} (unhealthy at {:?})",
        t_down - origin
    );
    let app_before = b1.app_count();
    let counts = tally(&sy, 20, &[]);
    assert_eq!(counts.get("b2"), Some(&20), "{counts:?}");
    assert_eq!(b1.app_count(), app_before);

    b1.set_healthy(true);
    let t_up = Instant::now();
    eventually!(5, served_again(&sy, &b1, app_before), "healthy again backend never got traffic");
    let (good, log) = probes(&b1, t_up, origin);
    assert!(good >= 2, "back after {good} good probe(s), rise is 2; probes at {log} (healthy at {:?})", t_up - origin);
}

#[test]
fn dead_backend_in_config_never_gets_a_request() {
    let [live_tcp, live_http] = backends(["live-tcp", "live-http"]);
    let tcp_hc = "health_check: {type: tcp, interval: 1s, timeout: 200ms}";
    let http_hc = "health_check: {type: http, path: /health, interval: 1s, timeout: 200ms}";
    let sy = start_pools(
        "{default_pool: tcp}",
        &[
            pool("tcp", &[dead_url(), live_tcp.url()], &[NO_RETRIES, NO_EJECTION, tcp_hc]),
            pool("http", &[dead_url(), live_http.url()], &[NO_RETRIES, NO_EJECTION, http_hc]),
        ],
    );
    // From the very first request on: no retries, no passive ejection to hide a miss.
    let mut errors = Vec::new();
    for pool in ["tcp", "http"] {
        for i in 0..50 {
            match try_get(sy.addr(), "/x", &[("App-Name", pool)]) {
                Ok(r) if r.status == 200 => assert_eq!(served_by(&r), format!("live-{pool}")),
                Ok(r) => errors.push(format!("{pool} #{i}: {} {}", r.status, r.text())),
                Err(e) => errors.push(format!("{pool} #{i}: {e}")),
            }
        }
    }
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((live_tcp.app_count(), live_http.app_count()), (50, 50));
}

// === Statuses produced by the proxy ===

/// The proxy's own 503 (every backend down), 502 (reset) and 504 (read
/// timeout, request deadline): JSON naming the pool, within time bounds.
#[test]
fn proxy_answers_503_502_504_as_json_in_time() {
    let [reset, slow] = backends(["reset", "slow"]);
    reset.set_mode(Mode::Reset);
    slow.set_delay(Duration::from_secs(3));
    let (hc, once) = ("health_check: {type: tcp, interval: 1s, timeout: 200ms}", "retries: {attempts: 1}");
    let (dead, reset_url, slow_url) = (vec![dead_url(), dead_url()], vec![reset.url()], vec![slow.url()]);
    let cases = [
        ("every backend down", &dead, vec![hc], 503, 0, 1000),
        ("reset", &reset_url, vec![once], 502, 0, 2000),
        ("read: 300ms", &slow_url, vec![once, "timeouts: {read: 300ms}"], 504, 250, 1500),
        ("request: 500ms", &slow_url, vec!["timeouts: {read: 10s, request: 500ms}"], 504, 450, 2000),
    ];
    for (what, urls, extra, status, min_ms, max_ms) in cases {
        let sy = start_pools("{default_pool: web}", &[pool("web", urls, &extra)]);
        let start = Instant::now();
        let r = get(sy.addr(), "/x", &[]);
        let took = start.elapsed();
        assert_eq!(proxy_error(&r, status)["pool"], "web", "{what}");
        let bounds = Duration::from_millis(min_ms)..Duration::from_millis(max_ms);
        assert!(bounds.contains(&took), "{what}: {status} after {took:?}");
    }
    assert_eq!(reset.path_count("/x"), 1, "the reset backend was not tried exactly once");
}

#[test]
fn fallback_pool_serves_when_pool_is_down() {
    let b = TestBackend::start("legacy");
    let hc = "health_check: {type: tcp, interval: 1s, timeout: 200ms}";
    let sy = start_pools(
        "{default_pool: web}",
        &[pool("web", &[dead_url()], &["fallback: legacy", hc]), pool("legacy", &[b.url()], &[])],
    );
    for headers in [&[][..], &[("App-Name", "web")]] {
        let r = get(sy.addr(), "/x", headers);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(served_by(&r), "legacy");
    }
    assert_eq!(b.app_count(), 2);
}

// === What the backend sees ===

fn single_backend() -> (TestBackend, Switchyard) {
    let b = TestBackend::start("b");
    let sy = start_web(&[&b], &[]);
    (b, sy)
}

#[test]
fn forwarded_headers_reach_the_backend() {
    let (b, sy) = single_backend();
    get(sy.addr(), "/fw", &[("Host", "shop.example:8080")]).expect_status(200);
    let seen = b.last_app_request().unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example:8080"));
    assert_eq!(seen.header("host"), Some("shop.example:8080"));
    let id = seen.header("x-request-id").unwrap_or("");
    assert!(id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()), "generated x-request-id {id:?}");

    // Client-sent X-Forwarded-For is appended to; a client X-Request-Id is kept.
    get(sy.addr(), "/fw2", &[("X-Forwarded-For", "10.1.2.3"), ("X-Request-Id", "req-abc-1")]).expect_status(200);
    let seen = b.last_app_request().unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(seen.header("x-request-id"), Some("req-abc-1"));
    assert_eq!(seen.headers.iter().filter(|(k, _)| k == "x-request-id").count(), 1);
    // Two requests without an id get two different ids.
    get(sy.addr(), "/fw3", &[]);
    get(sy.addr(), "/fw4", &[]);
    let reqs = b.app_requests();
    let n = reqs.len();
    assert_ne!(reqs[n - 1].header("x-request-id"), reqs[n - 2].header("x-request-id"));
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let (b, sy) = single_backend();
    let hop = [("Connection", "close, X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"), ("TE", "trailers")];
    let headers = [&hop[..], &[("Proxy-Connection", "keep-alive"), ("X-Kept", "yes")]].concat();
    get(sy.addr(), "/hop", &headers).expect_status(200);
    let seen = b.last_app_request().unwrap();
    assert_eq!(seen.header("x-kept"), Some("yes"), "{:?}", seen.headers);
    for h in ["x-secret", "keep-alive", "te", "proxy-connection"] {
        assert_eq!(seen.header(h), None, "{h} forwarded: {:?}", seen.headers);
    }
    if let Some(c) = seen.header("connection") {
        assert!(!c.to_ascii_lowercase().contains("x-secret"), "connection: {c}");
    }
}

#[test]
fn upstream_keepalive_connections_are_reused() {
    let (b, sy) = single_backend();
    for i in 0..30 {
        // A fresh client connection each time: reuse is upstream-side.
        get(sy.addr(), &format!("/ka/{i}"), &[]).expect_status(200);
    }
    assert_eq!(b.app_count(), 30);
    let conns = b.connections_accepted();
    assert!(conns <= 3, "{conns} upstream connections for 30 requests");
}

#[test]
fn malformed_request_gets_4xx_and_proxy_keeps_serving() {
    let (b, mut sy) = single_backend();
    let cases: [&[u8]; 3] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ];
    for case in cases {
        let (status, what) = raw_exchange(sy.addr(), case);
        assert!(status.is_some_and(|s| (400..500).contains(&s)), "{what}");
    }
    assert_eq!(b.app_count(), 0, "a malformed request reached the backend");
    get(sy.addr(), "/after", &[]).expect_status(200);
    assert!(sy.is_running());
}
