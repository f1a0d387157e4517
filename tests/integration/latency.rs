//! Latency-aware balancing (`strategy: peak_ewma`), the retry budget
//! (`retries.budget`) and adaptive hedging (`race.hedge_delay: p95`),
//! SPEC §4a, against real backends with short latencies (5 ms against
//! 50–100 ms).

use crate::common::web_pool_config as config;
use crate::common::*;

use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

/// A backend answering 200 after `delay_ms`.
fn backend(name: &str, delay_ms: u64) -> TestBackend {
    let b = TestBackend::start(name);
    b.set_delay(Duration::from_millis(delay_ms));
    b
}

fn urls(bs: &[&TestBackend]) -> Vec<String> {
    bs.iter().map(|b| b.url()).collect()
}

/// `config` plus an admin listener.
fn with_admin(yaml: String) -> String {
    yaml + "admin: {listen: \"{admin}\"}\n"
}

/// `GET /status` of the admin API.
fn status(sy: &Switchyard) -> serde_json::Value {
    let r = get(sy.admin_addr(), "/status", &[]);
    assert_eq!(r.status, 200, "{}", sy.logs());
    r.json()
}

/// The value of the sample `name{labels}` (labels exactly as rendered).
fn metric(sy: &Switchyard, name: &str, labels: &str) -> Option<f64> {
    let text = get(sy.admin_addr(), "/metrics", &[]).text();
    let key = format!("{name}{{{labels}}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok())
}

/// Sends `n` requests one after another, asserting 200; returns each
/// request's latency.
fn send(sy: &Switchyard, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            let r = get(sy.addr(), &format!("/r{i}"), &[]);
            assert_eq!(r.status, 200, "request {i}: {}\n{}", r.text(), sy.logs());
            t.elapsed()
        })
        .collect()
}

/// Sends `n` requests from `threads` clients at once, asserting 200.
fn send_concurrently(sy: &Switchyard, n: usize, threads: usize) {
    let addr = sy.addr();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                (0..n / threads).map(|i| get(addr, &format!("/c{t}-{i}"), &[]).status).filter(|s| *s != 200).count()
            })
        })
        .collect();
    let failed: usize = workers.into_iter().map(|w| w.join().unwrap_or(n)).sum();
    assert_eq!(failed, 0, "{}", sy.logs());
}

fn total(bs: &[&TestBackend]) -> usize {
    bs.iter().map(|b| b.app_count()).sum()
}

fn reset(bs: &[&TestBackend]) {
    for b in bs {
        b.reset_counters();
    }
}

/// The `q` quantile of `xs` (nearest rank).
fn quantile(mut xs: Vec<Duration>, q: f64) -> Duration {
    xs.sort();
    let i = ((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len()) - 1;
    xs[i]
}

// ---------------------------------------------------------------------------
// peak_ewma
// ---------------------------------------------------------------------------

#[test]
fn peak_ewma_avoids_a_slow_backend_and_gives_it_back_its_share() {
    let (a, b, c) = (backend("a", 5), backend("b", 5), backend("c", 50));
    let all = [&a, &b, &c];
    let sy = Switchyard::start(&with_admin(config(&urls(&all), "strategy: peak_ewma")));
    send(&sy, 20);
    reset(&all);
    send(&sy, 300);
    let slow = c.app_count();
    assert_eq!(total(&all), 300);
    assert!(slow < 30, "slow backend got {slow} of 300\n{}", sy.logs());

    // the EWMA is exported and shown per backend, once per backend
    let c_name = c.addr().to_string();
    let ewma = metric(&sy, "switchyard_backend_latency_ewma_seconds", &format!("pool=\"web\",backend=\"{c_name}\""))
        .expect("latency metric");
    assert!(ewma > 0.02, "{ewma}");
    let st = status(&sy);
    let shown = st["pools"]["web"]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|x| x["name"] == c_name.as_str()))
        .and_then(|x| x["latency_ewma_seconds"].as_f64())
        .expect("latency_ewma_seconds in /status");
    assert!(shown > 0.01, "{st}");

    // fast again: once its last sample is no longer recent (10 s), real
    // traffic tries it again (one client: load plays no part)
    c.set_delay(5 * MS);
    reset(&all);
    let t = Instant::now();
    let tried = poll_until(Duration::from_secs(15), || {
        send(&sy, 20);
        c.app_count() > 0
    });
    assert!(tried, "not tried again after {:?}\n{}", t.elapsed(), sy.logs());
    // and it gets its share back within 30 s (four clients at once, so
    // that load spreads between equal latencies)
    let recovered = poll_until(Duration::from_secs(30) - t.elapsed(), || {
        reset(&all);
        send_concurrently(&sy, 60, 4);
        c.app_count() >= 12
    });
    assert!(recovered, "c got {} of the last 60 after {:?}\n{}", c.app_count(), t.elapsed(), sy.logs());
}

#[test]
fn a_backend_that_fails_fast_is_not_preferred() {
    let (a, b, c) = (backend("a", 5), backend("b", 5), backend("c", 0));
    c.set_mode(Mode::Reset);
    let all = [&a, &b, &c];
    // no passive ejection: only the balancer keeps traffic away from c
    let sy = Switchyard::start(&config(&urls(&all), "strategy: peak_ewma\npassive: {max_fails: 0}"));
    send(&sy, 200);
    let tried = c.request_count();
    // every request succeeded (a reset GET is retried on another backend);
    // c was tried only a few times, not on every draw that included it
    assert!(tried < 20, "failing backend tried {tried} times\n{}", sy.logs());
    assert_eq!(a.app_count() + b.app_count(), 200);
}

// ---------------------------------------------------------------------------
// retry budget
// ---------------------------------------------------------------------------

#[test]
fn the_retry_budget_caps_retries_of_a_pool_that_times_out() {
    let (a, b) = (backend("a", 0), backend("b", 0));
    a.set_mode(Mode::Hang);
    b.set_mode(Mode::Hang);
    let all = [&a, &b];
    // 40 requests: 0.1 x 40 + 1/s x 10 s = 14 retries allowed (each request
    // would otherwise make two)
    let sy = Switchyard::start(&with_admin(config(
        &urls(&all),
        "timeouts: {read: 40ms, request: 5s}\n\
         passive: {max_fails: 0}\n\
         retries: {attempts: 3, budget: {ratio: 0.1, min_per_second: 1}}",
    )));
    let start = Instant::now();
    for i in 0..40 {
        let r = get(sy.addr(), &format!("/t{i}"), &[]);
        assert_eq!(r.status, 504, "{}\n{}", r.text(), sy.logs());
    }
    assert!(start.elapsed() < Duration::from_secs(9), "outside one window");
    // every upstream request is seen by a backend (Hang reads the request)
    assert!(
        poll_until(Duration::from_secs(2), || total(&all) >= 54),
        "{} upstream requests\n{}",
        total(&all),
        sy.logs()
    );
    std::thread::sleep(Duration::from_millis(100)); // absence check: no late extra attempt
    assert_eq!(total(&all), 40 + 14, "{}", sy.logs());
    let retries = metric(&sy, "switchyard_retries_total", "pool=\"web\"");
    assert_eq!(retries, Some(14.0));
    // a request retries twice, or is refused once: at most 7 got both
    let exhausted = metric(&sy, "switchyard_retry_budget_exhausted_total", "pool=\"web\"").expect("exhausted metric");
    assert!((33.0..=40.0).contains(&exhausted), "{exhausted}");
    let budget = &status(&sy)["pools"]["web"]["retry_budget"];
    assert_eq!(budget["first_attempts"], 40, "{budget}");
    assert_eq!(budget["retries"], 14, "{budget}");
    assert_eq!(budget["allowed"], 14, "{budget}");
}

#[test]
fn connect_failures_never_draw_on_the_budget() {
    let a = backend("a", 0);
    // ratio 0, no minimum: no retry of a received request is allowed
    let sy = Switchyard::start(&with_admin(config(
        &[dead_url(), a.url()],
        "strategy: round_robin\n\
         passive: {max_fails: 0}\n\
         retries: {budget: {ratio: 0, min_per_second: 0}}",
    )));
    send(&sy, 20);
    assert_eq!(a.app_count(), 20);
    assert_eq!(metric(&sy, "switchyard_retry_budget_exhausted_total", "pool=\"web\""), Some(0.0));
}

// ---------------------------------------------------------------------------
// adaptive hedging
// ---------------------------------------------------------------------------

/// Makes `b` answer after 5 to 15 ms, one answer in ten after 20 to 50 ms
/// (a fixed pseudo-random sequence): the pool's p95 (about 35 ms) is then
/// set by the backends, not by the machine's scheduling jitter, and well
/// below the slowest answers.
fn spread(b: &TestBackend, seed: u64) {
    let state = std::sync::atomic::AtomicU64::new(seed | 1);
    b.set_handler(move |_| {
        // xorshift64
        let mut x = state.load(std::sync::atomic::Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.store(x, std::sync::atomic::Ordering::Relaxed);
        let micros = match x % 10 {
            0 => 20_000 + (x >> 8) % 30_000,
            _ => 5_000 + (x >> 8) % 10_000,
        };
        Some(Reply::new(200, "ok").with_delay(Duration::from_micros(micros)))
    });
}

#[test]
fn p95_hedging_costs_about_five_percent_and_cuts_the_tail_of_a_slow_backend() {
    let (a, b, c) = (backend("a", 0), backend("b", 0), backend("c", 0));
    let all = [&a, &b, &c];
    for (i, x) in all.iter().enumerate() {
        spread(x, 0x9E37_79B9_7F4A_7C15_u64.wrapping_mul(i as u64 + 1));
    }
    let sy = Switchyard::start(&with_admin(config(&urls(&all), "race: {hedge_delay: p95}")));
    // fill the latency window, then wait for the percentile's recomputation
    // (at most once a second)
    send(&sy, 60);
    let hedge_delay = || status(&sy)["pools"]["web"]["hedge_delay_seconds"].as_f64();
    assert!(poll_until(Duration::from_secs(3), || hedge_delay().is_some()), "{}", sy.logs());
    let hedge = hedge_delay();
    assert!(hedge.is_some_and(|h| h > 0.02 && h < 0.1), "{hedge:?}");

    // a hedged request has two attempts in flight when one answers: the
    // other loses (pooled when it completes soon after, else cut)
    let cancelled = || {
        let losers = |r: &str| {
            let labels = format!("pool=\"web\",result=\"{r}\"");
            metric(&sy, "switchyard_race_losers_total", &labels).unwrap_or(-1.0)
        };
        losers("reused") + losers("cut")
    };
    let before = cancelled();
    let n = 300;
    send(&sy, n);
    let hedged = cancelled() - before;
    let share = hedged / n as f64;
    assert!((0.02..=0.12).contains(&share), "{hedged} hedged requests of {n}\n{}", sy.logs());

    // one backend turns slow (200 ms, 15x the mean): hedging cuts the p99
    // to about p95 + an answer of another backend
    c.set_handler(|_| Some(Reply::new(200, "slow").with_delay(200 * MS)));
    let lat = send(&sy, 150);
    let p99 = quantile(lat, 0.99);
    assert!(p99 < 150 * MS, "p99 {p99:?}\n{}", sy.logs());
}

#[test]
fn the_retry_budget_survives_a_reload() {
    let (a, b) = (backend("a", 0), backend("b", 0));
    a.set_mode(Mode::Hang);
    b.set_mode(Mode::Hang);
    let all = [&a, &b];
    // no ratio, 1 per second: 10 retries per 10 s
    let yaml = with_admin(config(
        &urls(&all),
        "timeouts: {read: 40ms, request: 5s}\n\
         passive: {max_fails: 0}\n\
         retries: {attempts: 2, budget: {ratio: 0, min_per_second: 1}}",
    ));
    let sy = Switchyard::start(&yaml);
    for i in 0..10 {
        assert_eq!(get(sy.addr(), &format!("/t{i}"), &[]).status, 504);
    }
    assert!(poll_until(Duration::from_secs(2), || total(&all) >= 20));
    // the same pool after a reload (another pool added): the budget is
    // still spent, so the next request is not retried
    let reloaded = yaml.replace(
        "admin:",
        "  other:\n    backends: [{url: \"http://127.0.0.1:1\"}]\n    health_check: {type: none}\nadmin:",
    );
    sy.write_config(&reloaded);
    sy.signal(libc::SIGHUP);
    assert!(poll_until(Duration::from_secs(10), || sy.logs().contains("configuration reloaded")), "{}", sy.logs());
    assert_eq!(get(sy.addr(), "/after", &[]).status, 504);
    std::thread::sleep(Duration::from_millis(200)); // absence check: no late retry
    assert_eq!(total(&all), 21, "{}", sy.logs());
    let budget = &status(&sy)["pools"]["web"]["retry_budget"];
    assert_eq!(budget["retries"], 10, "{budget}");
    assert_eq!(budget["exhausted"], 1, "{budget}");
}
