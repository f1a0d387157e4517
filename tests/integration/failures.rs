//! Retries on another backend and passive ejection (`retries`, `passive`).
//! No health checks unless a test needs probes: only retries and passive
//! ejection keep a broken backend out of the rotation.

use crate::common::test_body as body;
use crate::common::web_pool_config as config;
use crate::common::*;

use std::time::{Duration, Instant};

const THREE_TRIES: &str = "retries: {attempts: 3}\npassive: {max_fails: 0}";

/// What `f` returns, and the requests each of `bs` got while it ran.
fn during<T>(bs: &[&TestBackend], f: impl FnOnce() -> T) -> (T, Vec<usize>) {
    let before: Vec<usize> = bs.iter().map(|b| b.app_count()).collect();
    let t = f();
    (t, bs.iter().zip(before).map(|(b, n)| b.app_count() - n).collect())
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
        let (r, d) = during(&refs, || get(sy.addr(), &format!("/try/{i}"), &[]));
        let v = proxy_error(&r, 502);
        assert_eq!(v["attempts"], 3, "{v}");
        assert_eq!(d.iter().sum::<usize>(), 3, "tries per backend {d:?}");
        assert!(d.iter().all(|n| *n <= 1), "a backend was tried twice: {d:?}");
    }

    // attempts: 1 means no retry at all.
    let sy = Switchyard::start(&config(&urls, "retries: {attempts: 1}\npassive: {max_fails: 0}"));
    let (r, d) = during(&refs, || get(sy.addr(), "/once", &[]));
    assert_eq!(proxy_error(&r, 502)["attempts"], 1);
    assert_eq!(d.iter().sum::<usize>(), 1);
}

// === What may be retried once the request was sent ===

/// Sends `what`'s method (its first word) until `all[0]` is picked first (round robin alternates),
/// each earlier one a 200 from `all[1]` alone; asserts the requests that one
/// brought to `all[0]` and `all[1]` (`[1, 0]`: not retried), returns its answer.
fn until_first_hits(
    sy: &Switchyard,
    all: &[&TestBackend; 2],
    what: &str,
    payload: &[u8],
    want: [usize; 2],
) -> Response {
    let method = what.split(' ').next().unwrap_or(what);
    for i in 0..8 {
        let (r, d) = during(all, || request(sy.addr(), method, &format!("/{method}/{i}"), &[], payload));
        if d[0] > 0 {
            assert_eq!(d, want, "{what}: requests to ({}, {})", all[0].name(), all[1].name());
            return r;
        }
        assert_eq!((r.status, &d[..]), (200, &[0, 1][..]), "{what} #{i}: {:?}", r.text());
    }
    panic!("{what}: backend {} never picked in 8 requests", all[0].name());
}

type Try<'a> = (&'a str, &'a str, &'a [u8], [usize; 2], u16, Option<&'a str>);

#[test]
fn what_is_retried_after_a_reset_a_read_timeout_or_a_503() {
    let (payload, big, small) = (body(7, 3000), body(1, 100 * 1024), body(2, 10 * 1024));
    let (slow, busy) = (Reply::new(200, "a").with_delay(Duration::from_secs(3)), Reply::new(503, "a is busy"));
    // How `a` fails, with the pool's keys. Status-based retries are opt-in.
    let cases = [
        ("reset", Reply::reset(), "passive: {max_fails: 0}"),
        ("read timeout", slow, "timeouts: {read: 300ms}\npassive: {max_fails: 0}"),
        ("503, opted in", busy.clone(), "retries: {on: [connect_failure, reset, timeout, http_503]}"),
        ("503, not opted in", busy, ""),
    ];
    // Per case: method, body, the requests it brings to (a, b), the status and
    // who answered (None: the proxy). 100 KiB is above retries.max_body (64 KiB).
    let tries: [Try; 9] = [
        ("reset", "POST", &payload, [1, 0], 502, None),
        ("reset", "GET", b"", [1, 1], 200, Some("b")),
        ("reset", "PUT", &big, [1, 0], 502, None),
        ("reset", "PUT", &small, [1, 1], 200, Some("b")),
        ("read timeout", "GET", b"", [1, 1], 200, Some("b")),
        ("read timeout", "POST", b"x", [1, 0], 504, None),
        ("503, opted in", "GET", b"", [1, 1], 200, Some("b")),
        ("503, opted in", "POST", b"data", [1, 0], 503, Some("a")), // not idempotent
        ("503, not opted in", "GET", b"", [1, 0], 503, Some("a")),
    ];
    for (case, reply, extra) in cases {
        let [a, b] = backends(["a", "b"]);
        a.set_reply(reply);
        let sy = Switchyard::start(&config(&[a.url(), b.url()], extra));
        for &(_, method, sent, want, status, from) in tries.iter().filter(|t| t.0 == case) {
            let what = format!("{method} of {} bytes after a {case}", sent.len());
            let r = until_first_hits(&sy, &[&a, &b], &what, sent, want);
            match from {
                None if status == 502 => assert_eq!(proxy_error(&r, status)["attempts"], 1, "{what}"),
                None => _ = proxy_error(&r, status),
                Some(from) => {
                    assert_eq!((r.status, r.header("x-backend")), (status, Some(from)), "{what}: {:?}", r.text());
                    assert_eq!(r.text(), if from == "a" { "a is busy" } else { "b" }, "{what}");
                }
            }
            assert!(a.last_app_request().unwrap().body == sent, "{what}: a did not get the whole body");
            if want[1] == 1 {
                let replayed = b.last_app_request().unwrap();
                let got = format!("{} of {} bytes", replayed.method, replayed.body.len());
                assert!(replayed.method == method && replayed.body == sent, "{what}: replayed as {got} (or altered)");
            }
        }
    }
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
            let (r, d) = during(&refs, || get(sy.addr(), &format!("/all-busy/{i}"), &[]).expect_status(503));
            let from = r.header("x-backend").expect("a backend's 503, not the proxy's");
            assert_eq!(r.text(), format!("{from} says 503"), "attempts {attempts}");
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
    // connection (see reset_on_reused_connection_is_retried_fresh_and_then_counts
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
