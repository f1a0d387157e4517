//! Retries on another backend and passive ejection (`retries`, `passive`).
//! No health checks unless a test needs probes: only retries and passive
//! ejection keep a broken backend out of the rotation.

use crate::common::test_body as body;
use crate::common::web_pool_config as config;
use crate::common::*;

use std::time::{Duration, Instant};

const THREE_TRIES: &str = "retries: {attempts: 3}\npassive: {max_fails: 0}";

fn counts(backends: &[&TestBackend]) -> Vec<usize> {
    backends.iter().map(|b| b.app_count()).collect()
}

fn delta(before: &[usize], after: &[usize]) -> Vec<usize> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

// === Dead backends nobody has noticed yet ===

/// 100 GETs (keep-alive) and 20 POSTs with distinct bodies (fresh
/// connections): each a 200 from a live backend, each body intact, once.
fn hammer_and_check(sy: &Switchyard, live: &[&TestBackend]) {
    let names: Vec<&str> = live.iter().map(|b| b.name()).collect();
    let mut client = Client::connect(sy.addr()).unwrap();
    for i in 0..100 {
        let r = client.get(&format!("/get/{i}"), &[]).unwrap_or_else(|e| panic!("GET #{i} failed: {e}"));
        assert_eq!(r.status, 200, "GET #{i}: {:?}", r.text());
        let from = r.header("x-backend").unwrap_or("");
        assert!(names.contains(&from), "GET #{i} answered by {from:?}");
    }
    let mut sent = Vec::new();
    for i in 0..20u64 {
        let b = body(i, 1000 + 97 * i as usize);
        let r = try_request(sy.addr(), "POST", &format!("/post/{i}"), &[], &b)
            .unwrap_or_else(|e| panic!("POST #{i} failed: {e}"));
        assert_eq!(r.status, 200, "POST #{i}: {:?}", r.text());
        sent.push((format!("/post/{i}"), b));
    }
    // Connect failures are retried; nothing is sent twice.
    let served: usize = live.iter().map(|b| b.app_count()).sum();
    assert_eq!(served, 120, "requests served by live backends");
    let mut got: Vec<(String, Vec<u8>)> =
        live.iter().flat_map(|b| b.app_requests()).filter(|r| r.method == "POST").map(|r| (r.target, r.body)).collect();
    got.sort();
    sent.sort();
    assert_eq!(got.len(), sent.len());
    for ((gp, gb), (sp, sb)) in got.iter().zip(&sent) {
        assert_eq!(gp, sp);
        assert!(gb == sb, "{gp}: body of {} bytes arrived as {} bytes (or altered)", sb.len(), gb.len());
    }
}

#[test]
fn dead_backend_without_health_check_causes_no_client_errors() {
    // Passive ejection off: the dead backend stays in the rotation, so every
    // third request or so must be retried after a refused connection.
    let [a, b] = backends(["a", "b"]);
    let sy = Switchyard::start(&config(&[a.url(), dead_url(), b.url()], "passive: {max_fails: 0}"));
    hammer_and_check(&sy, &[&a, &b]);
    // The retries spread over both live backends; neither took everything.
    assert!(a.app_count() > 20 && b.app_count() > 20, "a {} b {}", a.app_count(), b.app_count());
}

#[test]
fn backend_dying_between_health_probes_causes_no_client_errors() {
    // Admitted by a TCP probe, then it dies; the next probe is an hour away.
    let [a, b, doomed] = backends(["a", "b", "doomed"]);
    let sy = Switchyard::start(&config(&[a.url(), doomed.url(), b.url()], "health_check: {type: tcp, interval: 1h}"));
    // It takes traffic while alive (keeps pooled connections to it too).
    eventually!(5, {
        get(sy.addr(), "/warm", &[]);
        doomed.app_count() > 0
    });
    for x in [&a, &b] {
        x.reset_counters();
    }
    doomed.stop();
    hammer_and_check(&sy, &[&a, &b]);
}

// === Every attempt fails ===

#[test]
fn every_backend_refusing_gives_502_with_attempts() {
    let sy = Switchyard::start(&config(&[dead_url(), dead_url(), dead_url()], THREE_TRIES));
    for method in ["GET", "POST"] {
        let r = request(sy.addr(), method, "/x", &[], b"payload");
        let v = proxy_error(&r, 502);
        assert_eq!(v["error"], "every upstream attempt failed", "{v}");
        assert_eq!(v["pool"], "web", "{v}");
        assert_eq!(v["attempts"], 3, "{method}: {v}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }

    // More backends than attempts: still only `attempts` tries.
    let dead: Vec<String> = (0..5).map(|_| dead_url()).collect();
    let sy = Switchyard::start(&config(&dead, THREE_TRIES));
    let r = get(sy.addr(), "/x", &[]);
    assert_eq!(proxy_error(&r, 502)["attempts"], 3);
}

#[test]
fn failed_request_makes_exactly_attempts_tries_on_distinct_backends() {
    // Five backends that read the request and close without answering.
    let bs = backends(["c0", "c1", "c2", "c3", "c4"]);
    bs.iter().for_each(|b| b.set_mode(Mode::Close));
    let (refs, urls) = (bs.each_ref(), urls(&bs.each_ref()));
    let sy = Switchyard::start(&config(&urls, THREE_TRIES));
    for i in 0..3 {
        let before = counts(&refs);
        let r = get(sy.addr(), &format!("/try/{i}"), &[]);
        let v = proxy_error(&r, 502);
        assert_eq!(v["attempts"], 3, "{v}");
        let d = delta(&before, &counts(&refs));
        assert_eq!(d.iter().sum::<usize>(), 3, "tries per backend {d:?}");
        assert!(d.iter().all(|n| *n <= 1), "a backend was tried twice: {d:?}");
    }

    // attempts: 1 means no retry at all.
    let sy = Switchyard::start(&config(&urls, "retries: {attempts: 1}\npassive: {max_fails: 0}"));
    let before = counts(&refs);
    let r = get(sy.addr(), "/once", &[]);
    assert_eq!(proxy_error(&r, 502)["attempts"], 1);
    assert_eq!(delta(&before, &counts(&refs)).iter().sum::<usize>(), 1);
}

// === What may be retried once the request was sent ===

/// Sends `method` until `all[0]` is picked first (round robin alternates),
/// each earlier one a 200 from `all[1]` alone; asserts the requests that one
/// brought to `all[0]` and `all[1]` (`[1, 0]`: not retried), returns its answer.
fn until_first_hits(
    sy: &Switchyard,
    all: &[&TestBackend; 2],
    method: &str,
    payload: &[u8],
    want: [usize; 2],
) -> Response {
    for i in 0..8 {
        let before = counts(all);
        let r = request(sy.addr(), method, &format!("/{method}/{i}"), &[], payload);
        let d = delta(&before, &counts(all));
        if d[0] > 0 {
            let what = format!("{method} of {} bytes", payload.len());
            assert_eq!(d, want, "{what}: requests to ({}, {})", all[0].name(), all[1].name());
            return r;
        }
        assert_eq!((r.status, &d[..]), (200, &[0, 1][..]), "{method} #{i}: {:?}", r.text());
    }
    panic!("{method}: backend {} never picked in 8 requests", all[0].name());
}

#[test]
fn post_reset_after_send_is_not_retried_but_get_is() {
    let [a, b] = backends(["a", "b"]);
    a.set_mode(Mode::Reset);
    let sy = Switchyard::start(&config(&[a.url(), b.url()], "passive: {max_fails: 0}"));
    let all = [&a, &b];
    let payload = body(7, 3000);

    let r = until_first_hits(&sy, &all, "POST", &payload, [1, 0]);
    let v = proxy_error(&r, 502);
    assert_eq!(v["attempts"], 1, "{v}");
    assert_eq!(a.last_app_request().unwrap().body, payload);

    let r = until_first_hits(&sy, &all, "GET", b"", [1, 1]);
    assert_eq!((r.status, r.header("x-backend")), (200, Some("b")), "{:?}", r.text());
}

#[test]
fn large_put_reset_is_not_retried_small_put_is_replayed_intact() {
    let [a, b] = backends(["a", "b"]);
    a.set_mode(Mode::Reset);
    let sy = Switchyard::start(&config(&[a.url(), b.url()], "passive: {max_fails: 0}"));
    let all = [&a, &b];

    // 100 KiB is above retries.max_body (64 KiB): it cannot be replayed.
    let big = body(1, 100 * 1024);
    let r = until_first_hits(&sy, &all, "PUT", &big, [1, 0]);
    proxy_error(&r, 502);
    assert!(a.last_app_request().unwrap().body == big, "a got the whole body");

    // 10 KiB is buffered: the retry on b carries the same bytes.
    let small = body(2, 10 * 1024);
    let r = until_first_hits(&sy, &all, "PUT", &small, [1, 1]);
    assert_eq!((r.status, r.header("x-backend")), (200, Some("b")), "{:?}", r.text());
    let replayed = b.last_app_request().unwrap();
    assert_eq!(replayed.method, "PUT");
    assert_eq!(replayed.body.len(), small.len());
    assert!(replayed.body == small, "the replayed body differs");
}

#[test]
fn get_is_retried_after_read_timeout_post_is_not() {
    let [slow, b] = backends(["slow", "b"]);
    slow.set_delay(Duration::from_secs(3));
    let sy = Switchyard::start(&config(&[slow.url(), b.url()], "timeouts: {read: 300ms}\npassive: {max_fails: 0}"));
    let all = [&slow, &b];
    let r = until_first_hits(&sy, &all, "GET", b"", [1, 1]);
    assert_eq!((r.status, r.header("x-backend")), (200, Some("b")));

    let r = until_first_hits(&sy, &all, "POST", b"x", [1, 0]);
    proxy_error(&r, 504);
}

// === Status-based retries (opt-in) ===

#[test]
fn http_503_retry_is_opt_in_and_idempotent_only() {
    let [a, b] = backends(["a", "b"]);
    a.set_reply(Reply::new(503, "a is busy"));
    let all = [&a, &b];
    let sy =
        Switchyard::start(&config(&[a.url(), b.url()], "retries: {on: [connect_failure, reset, timeout, http_503]}"));

    // GET: a's 503 is retried on b; every GET ends with b's 200.
    let r = until_first_hits(&sy, &all, "GET", b"", [1, 1]);
    assert_eq!((r.status, r.header("x-backend")), (200, Some("b")));

    // POST: a's 503 goes to the client as it is.
    let r = until_first_hits(&sy, &all, "POST", b"data", [1, 0]);
    assert_eq!((r.status, r.header("x-backend")), (503, Some("a")));
    assert_eq!(r.text(), "a is busy");
    drop(sy);

    // Without http_503 in `on`, a GET gets a's 503 too.
    let sy = Switchyard::start(&config(&[a.url(), b.url()], ""));
    let r = until_first_hits(&sy, &all, "GET", b"", [1, 0]);
    assert_eq!((r.status, r.header("x-backend")), (503, Some("a")));
    assert_eq!(r.text(), "a is busy");
}

#[test]
fn last_try_answering_503_is_passed_through() {
    let bs = backends(["a", "b", "c"]);
    for b in &bs {
        b.set_reply(Reply::new(503, format!("{} says 503", b.name())));
    }
    let (refs, urls) = (bs.each_ref(), urls(&bs.each_ref()));
    // Each backend is tried at most once; the answer of the last try is final.
    for attempts in [3, 2] {
        let sy = Switchyard::start(&config(
            &urls,
            &format!("retries: {{attempts: {attempts}, on: [connect_failure, http_503]}}"),
        ));
        for i in 0..2 {
            let before = counts(&refs);
            let r = get(sy.addr(), &format!("/all-busy/{i}"), &[]).expect_status(503);
            let from = r.header("x-backend").expect("a backend's 503, not the proxy's");
            assert_eq!(r.text(), format!("{from} says 503"), "attempts {attempts}");
            let d = delta(&before, &counts(&refs));
            assert!(d.iter().sum::<usize>() == attempts && d.iter().all(|n| *n <= 1), "attempts {attempts}: {d:?}");
        }
    }
}

// === Passive ejection ===

/// GETs, each a 200 (retried elsewhere), until the failing `a` took one; when it did.
fn fail_once(sy: &Switchyard, a: &TestBackend) -> Instant {
    for i in 0..8 {
        let t = Instant::now();
        get(sy.addr(), &format!("/fail/{i}"), &[]).expect_status(200);
        if a.app_count() > 0 {
            return t;
        }
    }
    panic!("{} never picked", a.name());
}

#[test]
fn passive_ejection_keeps_failed_backend_out_for_fail_timeout() {
    let [a, b, c] = backends(["a", "b", "c"]);
    a.set_mode(Mode::Reset);
    let sy = Switchyard::start(&config(&[a.url(), b.url(), c.url()], "passive: {max_fails: 1, fail_timeout: 2s}"));
    let failed_at = fail_once(&sy, &a);
    assert_eq!(a.app_count(), 1);
    // Healthy again at once, but ejected: no request while fail_timeout runs.
    a.set_mode(Mode::Respond);
    let mut client = Client::connect(sy.addr()).unwrap();
    for i in 0..12 {
        client.get(&format!("/ejected/{i}"), &[]).unwrap().expect_status(200);
    }
    let window = failed_at.elapsed();
    assert!(window < Duration::from_millis(1800), "too slow to test the window: {window:?}");
    assert_eq!(a.app_count(), 1, "ejected backend got traffic within fail_timeout");
    assert!(b.app_count() >= 5 && c.app_count() >= 5, "b {} c {}", b.app_count(), c.app_count());

    // After fail_timeout it takes traffic again (type: none: no probe needed).
    eventually!(5, { client.get("/back", &[]).unwrap().status == 200 && a.app_count() > 1 });
    assert!(failed_at.elapsed() >= Duration::from_millis(1900), "back too early: {:?}", failed_at.elapsed());
}

#[test]
fn passive_ejection_needs_max_fails_failures_within_fail_timeout() {
    // `a` closes after every answer, so every attempt on it is a fresh
    // connection (see reset_on_reused_connection_counts_as_passive_failure
    // for pooled ones).
    let [a, b] = backends(["a", "b"]);
    a.set_reply(Reply { close: true, ..Reply::new(200, "a") });
    a.set_mode(Mode::Reset);
    let sy = Switchyard::start(&config(&[a.url(), b.url()], "passive: {max_fails: 2, fail_timeout: 10s}"));
    fail_once(&sy, &a);
    // One failure of two: still in the rotation.
    a.set_mode(Mode::Respond);
    eventually!(
        3,
        { get(sy.addr(), "/still-in", &[]).status == 200 && a.app_count() > 1 },
        "backend ejected after 1 of max_fails 2"
    );
    // A second failure within fail_timeout: out for 10 s.
    a.set_mode(Mode::Reset);
    let n = a.app_count();
    eventually!(3, { get(sy.addr(), "/fail2", &[]).status == 200 && a.app_count() > n });
    a.set_mode(Mode::Respond);
    for i in 0..10 {
        assert_eq!(get(sy.addr(), &format!("/out/{i}"), &[]).status, 200);
    }
    assert_eq!(a.app_count(), n + 1, "not ejected after 2 failures");
}

#[test]
fn reset_on_reused_connection_is_retried_fresh_and_then_counts() {
    // A failure on a pooled keep-alive connection before any answer byte
    // looks the same whether the backend closed it idle or reset after
    // reading: it is retried on a fresh connection to the same backend
    // without counting (SPEC §3), and a reset there is the backend's own
    // failure (nginx semantics), ejecting it with max_fails 1.
    let [a, b] = backends(["a", "b"]);
    let sy = Switchyard::start(&config(&[a.url(), b.url()], "passive: {max_fails: 1, fail_timeout: 10s}"));
    let mut client = Client::connect(sy.addr()).unwrap();
    // A pooled upstream connection to `a`.
    eventually!(3, { client.get("/warm", &[]).unwrap().status == 200 && a.app_count() > 0 });
    assert_eq!(a.open_connections(), 1);
    a.set_mode(Mode::Reset);
    let n = a.app_count();
    eventually!(3, {
        client.get("/fail", &[]).unwrap().expect_status(200);
        a.app_count() > n
    });
    let fails: Vec<u64> = a.app_requests().iter().filter(|r| r.target == "/fail").map(|r| r.conn_id).collect();
    assert_eq!(fails.len(), 2, "stale retry not on a: {fails:?}");
    assert_eq!(fails[0], 1, "the first failure was on the reused connection");
    assert_ne!(fails[1], 1, "the retry reused the broken connection");
    a.set_mode(Mode::Respond);
    for i in 0..10 {
        assert_eq!(client.get(&format!("/out/{i}"), &[]).unwrap().status, 200);
    }
    let after: Vec<(String, u64)> = a.app_requests().iter().map(|r| (r.target.clone(), r.conn_id)).collect();
    assert_eq!(
        a.app_count(),
        n + 2,
        "a reset on a fresh connection did not eject the backend (max_fails 1); \
         a's requests (target, conn): {after:?}"
    );
}
