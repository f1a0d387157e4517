//! Fan-out racing and hedged requests (`race:`).

use crate::common::test_body as body;
use crate::common::web_pool_config as config;
use crate::common::*;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A backend answering `status` with body `NAME STATUS` after `delay`.
fn backend(name: &str, status: u16, delay_ms: u64) -> TestBackend {
    let b = TestBackend::start(name);
    b.set_reply(Reply::new(status, format!("{name} {status}")).with_delay(Duration::from_millis(delay_ms)));
    b
}

/// TCP state (`/proc/net/tcp` `st` field, 1 = ESTABLISHED, 8 = CLOSE_WAIT)
/// of the IPv4 socket `local` → `remote` in this network namespace; None
/// when there is no such socket (closed, or reset away).
fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    // The kernel prints a network-order address as a host-order (little-endian) u32.
    let hex = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port()),
        IpAddr::V6(_) => String::new(),
    };
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let row = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[1] == hex(local) && f[2] == hex(remote))?;
    u8::from_str_radix(row[3], 16).ok()
}

const ESTABLISHED: u8 = 1;

// === Who wins ===

#[test]
fn first_terminal_answer_wins_and_every_backend_is_asked() {
    let [a, b, c] = [backend("a", 500, 0), backend("b", 200, 300), backend("c", 200, 1200)];
    let sy = Switchyard::start(&config(&urls(&[&a, &b, &c]), "race: {}"));
    let start = Instant::now();
    let r = get(sy.addr(), "/race", &[("X-Probe", "1")]);
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!(r.header("x-backend"), Some("b"));
    assert_eq!(r.text(), "b 200");
    assert!(took >= Duration::from_millis(280), "{took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Every backend saw the same request.
    let counts = || [&a, &b, &c].map(|x| x.app_count());
    eventually!(2, counts() == [1, 1, 1], "requests per backend {:?}", counts());
    for x in [&a, &b, &c] {
        let req = x.last_app_request().unwrap();
        assert_eq!((req.method.as_str(), req.target.as_str()), ("GET", "/race"));
        assert_eq!(req.header("x-probe"), Some("1"));
    }
    // One request id for all three copies.
    let ids = [&a, &b, &c].map(|x| x.last_app_request().unwrap().header("x-request-id").map(String::from));
    assert!(ids[0].is_some() && ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

#[test]
fn no_terminal_answer_gives_the_last_5xx_from_a_backend() {
    let [a, b, c] = [backend("a", 500, 0), backend("b", 502, 150), backend("c", 503, 400)];
    let sy = Switchyard::start(&config(&urls(&[&a, &b, &c]), "race: {}"));
    for _ in 0..2 {
        let r = get(sy.addr(), "/bad", &[]).expect_status(503);
        assert_eq!(r.header("x-backend"), Some("c"), "not the backend's own answer");
        assert_eq!(r.text(), "c 503");
    }
    // 4xx is terminal by default: it wins over a later 200.
    let [d, e] = [backend("d", 404, 0), backend("e", 200, 300)];
    let sy = Switchyard::start(&config(&urls(&[&d, &e]), "race: {}"));
    let r = get(sy.addr(), "/missing", &[]);
    assert_eq!((r.status, r.text().as_str()), (404, "d 404"));
    // ...unless `terminal` says otherwise.
    let sy = Switchyard::start(&config(&urls(&[&d, &e]), "race: {terminal: [2xx]}"));
    let r = get(sy.addr(), "/missing", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "e 200"));
}

#[test]
fn dead_backend_in_race_pool_does_not_hurt() {
    let [a, b] = [backend("a", 200, 0), backend("b", 200, 0)];
    // Passive ejection off, so the dead backend is asked every time.
    let sy = Switchyard::start(&config(&[dead_url(), a.url(), b.url()], "race: {}\npassive: {max_fails: 0}"));
    let mut client = Client::connect(sy.addr()).unwrap();
    for i in 0..20 {
        let r = client.get(&format!("/x/{i}"), &[]).unwrap();
        assert_eq!(r.status, 200, "#{i}: {:?}", r.text());
    }
    client.request("POST", "/p", &[], b"payload").unwrap().expect_status(200);
}

#[test]
fn race_post_body_arrives_byte_identical_at_every_backend() {
    // Small delays so that every copy is read completely before a winner
    // is chosen and the others are cancelled.
    let [a, b, c] = [backend("a", 200, 100), backend("b", 200, 200), backend("c", 200, 300)];
    let sy = Switchyard::start(&config(&urls(&[&a, &b, &c]), "race: {}"));
    let payload = body(42, 20_000);
    let r = request(sy.addr(), "POST", "/upload", &[], &payload);
    assert_eq!((r.status, r.text().as_str()), (200, "a 200"));
    // Chunked from the client: replayed with an exact Content-Length.
    let chunked = body(43, 20_000);
    request(sy.addr(), "POST", "/chunked", &[("Transfer-Encoding", "chunked")], &chunked).expect_status(200);
    eventually!(3, [&a, &b, &c].iter().all(|x| x.app_count() == 2));
    for x in [&a, &b, &c] {
        let reqs = x.app_requests();
        for (req, sent) in reqs.iter().zip([&payload, &chunked]) {
            assert_eq!(req.method, "POST");
            assert_eq!(req.body.len(), sent.len(), "{} {}", x.name(), req.target);
            assert!(&req.body == sent, "{} {}: body differs", x.name(), req.target);
            assert_eq!(req.header("content-length"), Some("20000"));
        }
    }
}

#[test]
fn bodies_above_race_max_body_go_to_one_backend() {
    // Answers take 200 ms so that every raced request reaches its backend
    // before the winner's answer cancels the others.
    let bs = ["a", "b", "c"].map(|n| backend(n, 200, 200));
    let sy = Switchyard::start(&config(&urls(&bs.each_ref()), "race: {max_body: 1KiB}"));
    let big = body(1, 4096);
    request(sy.addr(), "POST", "/big", &[], &big).expect_status(200);
    // A small one is raced, for contrast.
    request(sy.addr(), "POST", "/small", &[], b"tiny").expect_status(200);
    eventually!(2, bs.iter().map(|b| b.path_count("/small")).sum::<usize>() == 3);
    let big_seen: usize = bs.iter().map(|b| b.path_count("/big")).sum();
    assert_eq!(big_seen, 1);
    let got = bs.iter().flat_map(|b| b.app_requests()).find(|r| r.target == "/big").unwrap();
    assert!(got.body == big);
}

// === Hedging ===

#[test]
fn hedged_requests_to_fast_backends_ask_only_one() {
    let bs = ["a", "b", "c"].map(|n| backend(n, 200, 0));
    let sy = Switchyard::start(&config(&urls(&bs.each_ref()), "race: {hedge_delay: 300ms}"));
    let mut client = Client::connect(sy.addr()).unwrap();
    for i in 0..9 {
        client.get(&format!("/h/{i}"), &[]).unwrap().expect_status(200);
    }
    // Absence check: give a stray hedge a chance to show up before counting.
    std::thread::sleep(Duration::from_millis(400));
    let seen: Vec<usize> = bs.iter().map(|b| b.app_count()).collect();
    assert_eq!(seen.iter().sum::<usize>(), 9, "per backend {seen:?}");
    // The first pick rotates (round robin).
    assert!(seen.iter().all(|n| *n >= 1), "per backend {seen:?}");
}

#[test]
fn hedge_asks_the_next_backend_after_hedge_delay() {
    let [s, f] = [backend("s", 200, 1500), backend("f", 200, 0)];
    let sy = Switchyard::start(&config(&urls(&[&s, &f]), "race: {hedge_delay: 300ms}"));
    let mut s_first = 0;
    for i in 0..4 {
        let (s0, f0) = (s.app_count(), f.app_count());
        let start = Instant::now();
        let r = get(sy.addr(), &format!("/h/{i}"), &[]);
        let took = start.elapsed();
        assert_eq!(r.status, 200, "{:?}", r.text());
        assert_eq!(r.header("x-backend"), Some("f"), "#{i} took {took:?}");
        assert!(took < Duration::from_secs(1), "#{i} took {took:?}");
        assert_eq!(f.app_count(), f0 + 1);
        if s.app_count() > s0 {
            // s was asked first; f only after the hedge delay.
            s_first += 1;
            assert!(took >= Duration::from_millis(250), "#{i} took {took:?}");
        }
    }
    assert!(s_first >= 1, "the first pick never rotated to s");
    assert!(s.app_count() <= 2, "s saw {} of 4", s.app_count());
}

// === Losers and failures ===

#[test]
fn cancelled_losers_connections_are_closed_not_drained() {
    let [a, b, c] = [backend("a", 500, 0), backend("b", 200, 300), backend("c", 200, 1200)];
    let sy = Switchyard::start(&config(&urls(&[&a, &b, &c]), "race: {}"));
    let addr = sy.addr();
    let t = std::thread::spawn(move || {
        let start = Instant::now();
        (get(addr, "/race", &[]), Instant::now(), start.elapsed())
    });
    // While the race runs, c holds the request on an open connection.
    eventually!(2, c.app_count() == 1);
    let peer = c.last_app_request().unwrap().peer;
    assert_eq!(tcp_state(c.addr(), peer), Some(ESTABLISHED));
    let (r, answered_at, took) = t.join().unwrap();
    assert_eq!(r.header("x-backend"), Some("b"));
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Well before c would answer (1.2 s after it got the request), the proxy
    // has closed its end of c's connection.
    assert!(
        poll_until(Duration::from_millis(500), || tcp_state(c.addr(), peer) != Some(ESTABLISHED)),
        "c's connection is still open {:?} after the answer (state {:?})",
        answered_at.elapsed(),
        tcp_state(c.addr(), peer)
    );
    // Once c gives up its (discarded) answer, nothing of it stays open.
    eventually!(3, c.open_connections() == 0);
    // The winner's connection is kept alive for reuse.
    assert_eq!(b.open_connections(), 1);
    // The next race reuses b's connection but must open a new one to c.
    c.set_delay(Duration::ZERO);
    get(addr, "/again", &[]).expect_status(200);
    eventually!(2, c.app_count() == 2);
    assert_eq!(c.connections_accepted(), 2, "c's cut connection was reused");
    assert_eq!(b.connections_accepted(), 1);
}

/// `switchyard_race_losers_total{pool="web",result=RESULT}`.
fn losers(sy: &Switchyard, result: &str) -> f64 {
    let text = get(sy.admin_addr(), "/metrics", &[]).text();
    metric(&text, "switchyard_race_losers_total", &[("pool", "web"), ("result", result)]).unwrap_or(-1.0)
}

#[test]
fn losers_connections_go_back_to_the_pool() {
    // Three equal backends: every race has two losers that answer at once.
    let bs = ["a", "b", "c"].map(|n| backend(n, 200, 0));
    let sy = Switchyard::start(&(config(&urls(&bs.each_ref()), "race: {}") + "admin: {listen: \"{admin}\"}\n"));
    let n = 40;
    let mut client = Client::connect(sy.addr()).unwrap();
    for i in 0..n {
        let r = client.get(&format!("/r/{i}"), &[]).unwrap();
        assert_eq!(r.status, 200, "#{i}: {:?}", r.text());
        // the losers settle in the background; wait for them so that the
        // next race finds their connections idle in the pool (asserted below)
        poll_until(Duration::from_millis(500), || losers(&sy, "reused") + losers(&sy, "cut") >= 2.0 * (i + 1) as f64);
    }
    // One connection per backend, not one per loser (2 × n when losers
    // are closed).
    let opened: Vec<usize> = bs.iter().map(|b| b.connections_accepted()).collect();
    assert!(opened.iter().all(|o| *o <= 2), "connections accepted per backend {opened:?} over {n} races");
    let counts = || bs.each_ref().map(|b| b.app_count());
    eventually!(2, counts() == [n; 3], "{:?}", counts());
    assert_eq!(losers(&sy, "reused"), 2.0 * n as f64, "{}", sy.logs());
    assert_eq!(losers(&sy, "cut"), 0.0);
}

#[test]
fn loser_within_the_bound_is_reused_beyond_it_is_cut() {
    let fast = backend("fast", 200, 0);
    let late = backend("late", 200, 30); // answers inside LOSER_GRACE (100 ms)
    let big = backend("big", 200, 0); // a body beyond LOSER_MAX_BODY (64 KiB)
    big.set_reply(Reply::new(200, body(7, 200_000)).with_delay(Duration::from_millis(20)));
    let sy = Switchyard::start(&(config(&urls(&[&fast, &late, &big]), "race: {}") + "admin: {listen: \"{admin}\"}\n"));
    for i in 0..3 {
        let r = get(sy.addr(), &format!("/b/{i}"), &[]);
        assert_eq!(r.header("x-backend"), Some("fast"), "#{i}");
        eventually!(2, losers(&sy, "reused") + losers(&sy, "cut") >= 2.0 * (i + 1) as f64);
    }
    assert_eq!(losers(&sy, "reused"), 3.0, "{}", sy.logs());
    assert_eq!(losers(&sy, "cut"), 3.0, "{}", sy.logs());
    assert_eq!(late.connections_accepted(), 1, "late's connection was not reused");
    assert_eq!(big.connections_accepted(), 3, "big's connection was reused");
    // every backend answered every race: the losers' answers, which came
    // after the race was decided, are upstream attempts too
    let text = get(sy.admin_addr(), "/metrics", &[]).text();
    for b in [&fast, &late, &big] {
        let ok = [("pool", "web"), ("backend", &b.addr().to_string()), ("result", "ok")];
        let n = metric(&text, "switchyard_upstream_attempts_total", &ok);
        assert_eq!(n, Some(3.0), "{} ok attempts\n{text}", b.name());
    }
}

#[test]
fn race_with_every_backend_dead_gives_502() {
    let dead: Vec<String> = (0..3).map(|_| dead_url()).collect();
    let sy = Switchyard::start(&config(&dead, "race: {}"));
    let v = proxy_error(&get(sy.addr(), "/x", &[]), 502);
    assert_eq!(v["error"], "every upstream attempt failed", "{v}");
    assert_eq!(v["pool"], "web", "{v}");
    assert_eq!(v["attempts"], 3, "{v}");
}

#[test]
fn race_deadline_gives_504() {
    let bs = ["a", "b"].map(|n| backend(n, 200, 3000));
    let sy = Switchyard::start(&config(&urls(&bs.each_ref()), "race: {}\ntimeouts: {request: 500ms}"));
    let start = Instant::now();
    let r = get(sy.addr(), "/slow", &[]);
    let took = start.elapsed();
    assert_eq!(proxy_error(&r, 504)["error"], "upstream timed out");
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(bs.iter().map(|b| b.app_count()).sum::<usize>(), 2);
}
