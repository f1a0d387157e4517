//! Response caching (`pools.NAME.cache`, top-level `cache`): RFC 9111
//! storage and reuse rules, coalescing, purge and the memory bound, each
//! against real backends through the real binary.

use crate::common::web_pool_config as config;
use crate::common::*;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// A proxy with one caching pool `web` over `b`; `pool_cache` is the flow
/// mapping body of the pool's `cache:`, `store` the top-level one's.
fn proxy(b: &TestBackend, pool_cache: &str, store: &str) -> Switchyard {
    let mut y = config(&[b.url()], &format!("cache: {{{pool_cache}}}"));
    y.push_str(&format!("cache: {{{store}}}\n"));
    y.push_str("admin: {listen: \"{admin}\"}\n");
    let sy = Switchyard::start(&y);
    assert!(
        poll_until(Duration::from_secs(10), || {
            try_get(sy.admin_addr(), "/healthz", &[]).is_ok_and(|r| r.status == 200)
        }),
        "admin API never came up\n{}",
        sy.logs()
    );
    sy
}

const STORE: &str = "memory: 1MiB, max_object: 64KiB";

/// Answers every request for `path` with 200, body `v{n}` (n counts the
/// requests for that path from 1) and the given headers.
fn serve(b: &TestBackend, path: &'static str, headers: &'static [(&'static str, &'static str)]) {
    let n = Arc::new(AtomicUsize::new(0));
    b.set_handler(move |req| {
        if req.path() != path {
            return None;
        }
        let v = n.fetch_add(1, SeqCst) + 1;
        let mut r = Reply::new(200, format!("v{v}"));
        for (k, val) in headers {
            r = r.with_header(k, val);
        }
        Some(r)
    });
}

fn status_of(r: &Response) -> String {
    r.header("cache-status").unwrap_or("").to_string()
}

#[test]
fn fresh_response_is_served_from_cache_with_age_then_expires() {
    let b = TestBackend::start("a");
    serve(&b, "/a", &[("cache-control", "max-age=1")]);
    let sy = proxy(&b, "", STORE);
    let first = get(sy.addr(), "/a", &[]);
    assert_eq!(first.text(), "v1");
    assert_eq!(status_of(&first), "switchyard; fwd=miss; stored");
    let second = get(sy.addr(), "/a", &[]);
    assert_eq!(second.text(), "v1");
    assert!(status_of(&second).starts_with("switchyard; hit"), "{}", status_of(&second));
    assert!(second.header("age").is_some(), "a hit carries Age");
    assert_eq!(b.path_count("/a"), 1);
    // past max-age the next request goes upstream again
    assert!(poll_until(Duration::from_secs(5), || { get(sy.addr(), "/a", &[]).text() == "v2" }));
    assert_eq!(b.path_count("/a"), 2);
}

#[test]
fn a_pool_without_cache_never_caches() {
    let b = TestBackend::start("a");
    serve(&b, "/a", &[("cache-control", "max-age=60")]);
    let mut y = config(&[b.url()], "");
    y.push_str(&format!("cache: {{{STORE}}}\n"));
    let sy = Switchyard::start(&y);
    for _ in 0..2 {
        let r = get(sy.addr(), "/a", &[]);
        assert!(r.header("cache-status").is_none());
    }
    assert_eq!(b.path_count("/a"), 2);
}

#[test]
fn no_cache_response_is_revalidated_with_a_304_merged() {
    let b = TestBackend::start("a");
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    b.set_handler(move |req| {
        if req.path() != "/r" {
            return None;
        }
        seen.fetch_add(1, SeqCst);
        if req.header("if-none-match") == Some("\"e1\"") {
            return Some(Reply::new(304, "").with_header("etag", "\"e1\"").with_header("cache-control", "max-age=60"));
        }
        Some(Reply::new(200, "body").with_header("etag", "\"e1\"").with_header("cache-control", "no-cache"))
    });
    let sy = proxy(&b, "", STORE);
    assert_eq!(get(sy.addr(), "/r", &[]).text(), "body");
    let again = get(sy.addr(), "/r", &[]);
    assert_eq!(again.status, 200);
    assert_eq!(again.text(), "body");
    assert_eq!(status_of(&again), "switchyard; fwd=stale; fwd-status=304", "no-cache: every reuse is revalidated");
    assert_eq!(again.header("cache-control"), Some("max-age=60"), "304 merged");
    // the merged freshness now holds: a hit, no third request
    let third = get(sy.addr(), "/r", &[]);
    assert_eq!(third.text(), "body");
    assert!(status_of(&third).contains("hit"), "{}", status_of(&third));
    assert_eq!(n.load(SeqCst), 2);
}

#[test]
fn every_field_of_a_304_replaces_the_stored_one() {
    // RFC 9111 §4.3.4: the 304's fields update the stored header (pingora-cache alone refreshes
    // only Cache-Control, Expires and ETag)
    let b = TestBackend::start("a");
    b.set_handler(move |req| {
        if req.path() != "/m" {
            return None;
        }
        if req.header("if-none-match") == Some("\"e1\"") {
            let r = Reply::new(304, "").with_header("etag", "\"e1\"").with_header("x-version", "2");
            return Some(r.with_header("cache-control", "max-age=60").with_header("content-length", "0"));
        }
        let r = Reply::new(200, "body").with_header("etag", "\"e1\"").with_header("x-version", "1");
        Some(r.with_header("cache-control", "no-cache"))
    });
    let sy = proxy(&b, "", STORE);
    let first = get(sy.addr(), "/m", &[]);
    assert_eq!((first.text(), first.header("x-version")), ("body".into(), Some("1")));
    let revalidated = get(sy.addr(), "/m", &[]);
    assert_eq!(status_of(&revalidated), "switchyard; fwd=stale; fwd-status=304");
    assert_eq!(revalidated.text(), "body");
    assert_eq!(revalidated.header("x-version"), Some("2"), "the 304's X-Version replaced the stored one");
    let hit = get(sy.addr(), "/m", &[]);
    assert!(status_of(&hit).contains("hit"), "{}", status_of(&hit));
    assert_eq!(hit.text(), "body");
    assert_eq!(hit.header("x-version"), Some("2"), "the merge is stored");
    assert_eq!(hit.header("cache-control"), Some("max-age=60"));
    assert_eq!(b.path_count("/m"), 2);
}

#[test]
fn vary_keeps_one_variant_per_field_value() {
    let b = TestBackend::start("a");
    b.set_handler(|req| {
        (req.path() == "/v").then(|| {
            let lang = req.header("accept-language").unwrap_or("none").to_string();
            Reply::new(200, lang).with_header("cache-control", "max-age=60").with_header("vary", "Accept-Language")
        })
    });
    let sy = proxy(&b, "", STORE);
    let en = [("Accept-Language", "en")];
    let fr = [("Accept-Language", "fr")];
    assert_eq!(get(sy.addr(), "/v", &en).text(), "en");
    assert_eq!(get(sy.addr(), "/v", &fr).text(), "fr");
    assert_eq!(b.path_count("/v"), 2, "a new Accept-Language is a new variant");
    let r = get(sy.addr(), "/v", &en);
    assert_eq!(r.text(), "en");
    assert!(status_of(&r).contains("hit"));
    assert_eq!(get(sy.addr(), "/v", &fr).text(), "fr");
    assert_eq!(b.path_count("/v"), 2);
}

/// Two GETs of `path` with `req` headers: how many reached the backend.
fn upstream_for(sy: &Switchyard, b: &TestBackend, path: &str, req: &[(&str, &str)]) -> usize {
    get(sy.addr(), path, req);
    get(sy.addr(), path, req);
    b.path_count(path)
}

#[test]
fn no_store_private_authorization_and_set_cookie_are_not_shared() {
    let b = TestBackend::start("a");
    b.set_handler(|req| {
        let cc = match req.path() {
            "/no-store" => "max-age=60, no-store",
            "/private" => "max-age=60, private",
            "/auth" | "/cookie" => "max-age=60",
            "/auth-public" => "s-maxage=60",
            "/cookie-public" => "public, max-age=60",
            _ => return None,
        };
        let mut r = Reply::new(200, "x").with_header("cache-control", cc);
        if req.path().starts_with("/cookie") {
            r = r.with_header("set-cookie", "session=alice");
        }
        Some(r)
    });
    let sy = proxy(&b, "", STORE);
    let auth = [("Authorization", "Bearer alice")];
    assert_eq!(upstream_for(&sy, &b, "/no-store", &[]), 2, "no-store");
    assert_eq!(upstream_for(&sy, &b, "/private", &[]), 2, "private");
    assert_eq!(upstream_for(&sy, &b, "/auth", &auth), 2, "Authorization");
    assert_eq!(upstream_for(&sy, &b, "/cookie", &[]), 2, "Set-Cookie");
    // what the response explicitly allows is stored
    assert_eq!(upstream_for(&sy, &b, "/auth-public", &auth), 1, "s-maxage");
    assert_eq!(upstream_for(&sy, &b, "/cookie-public", &[]), 1, "public");
}

#[test]
fn stale_while_revalidate_answers_stale_and_refreshes_in_background() {
    let b = TestBackend::start("a");
    serve(&b, "/s", &[("cache-control", "max-age=1, stale-while-revalidate=60")]);
    let sy = proxy(&b, "", STORE);
    assert_eq!(get(sy.addr(), "/s", &[]).text(), "v1");
    std::thread::sleep(Duration::from_millis(2100)); // expiry: max-age=1 must run out
    let stale = get(sy.addr(), "/s", &[]);
    assert_eq!(stale.text(), "v1", "the stale copy answers at once");
    assert!(status_of(&stale).contains("ttl=-"), "{}", status_of(&stale));
    assert!(poll_until(Duration::from_secs(5), || b.path_count("/s") == 2), "background refresh");
    assert!(poll_until(Duration::from_secs(5), || { get(sy.addr(), "/s", &[]).text() == "v2" }));
}

#[test]
fn stale_if_error_serves_the_stored_copy_when_the_backend_is_down() {
    let b = TestBackend::start("a");
    serve(&b, "/e", &[("cache-control", "max-age=1")]);
    let sy = proxy(&b, "stale_if_error: 60s", STORE);
    assert_eq!(get(sy.addr(), "/e", &[]).text(), "v1");
    std::thread::sleep(Duration::from_millis(2100)); // expiry: max-age=1 must run out
    b.stop();
    let r = get(sy.addr(), "/e", &[]);
    assert_eq!(r.status, 200, "{}", sy.logs());
    assert_eq!(r.text(), "v1");
    assert!(status_of(&r).contains("hit; ttl=-"), "{}", status_of(&r));
}

#[test]
fn post_invalidates_the_stored_response() {
    let b = TestBackend::start("a");
    serve(&b, "/p", &[("cache-control", "max-age=60")]);
    let sy = proxy(&b, "", STORE);
    assert_eq!(get(sy.addr(), "/p", &[]).text(), "v1");
    assert_eq!(get(sy.addr(), "/p", &[]).text(), "v1");
    let post = request(sy.addr(), "POST", "/p", &[], b"x");
    assert_eq!(post.status, 200);
    assert_eq!(status_of(&post), "switchyard; fwd=method");
    assert_eq!(get(sy.addr(), "/p", &[]).text(), "v3", "POST invalidated /p");
}

#[test]
fn admin_purge_removes_a_target_or_the_whole_pool() {
    let b = TestBackend::start("a");
    b.set_handler(|req| Some(Reply::new(200, req.target.clone()).with_header("cache-control", "max-age=60")));
    let sy = proxy(&b, "", STORE);
    for p in ["/x", "/y", "/z"] {
        get(sy.addr(), p, &[]);
    }
    let purge = |body: &str| request(sy.admin_addr(), "POST", "/cache/purge", &[], body.as_bytes());
    let r = purge(r#"{"path": "/x"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["purged"], 1);
    get(sy.addr(), "/x", &[]);
    get(sy.addr(), "/y", &[]);
    assert_eq!(b.path_count("/x"), 2, "purged target fetched again");
    assert_eq!(b.path_count("/y"), 1);
    // 5 answers: /x /y /z /x missed, /y hit (counted once logged)
    let status = || get(sy.admin_addr(), "/status", &[]).json();
    assert!(
        poll_until(Duration::from_secs(5), || { status()["pools"]["web"]["cache"]["hit_ratio"] == 0.2 }),
        "{}",
        status()
    );
    let status = status();
    assert_eq!(status["pools"]["web"]["cache"]["entries"], 3);
    assert!(status["pools"]["web"]["cache"]["bytes"].as_u64() > Some(3 * 2));
    // a host-qualified target (the client sent Host: ADDR)
    let host = sy.addr().to_string();
    let other = r#"{"path": "/z", "host": "elsewhere:80"}"#;
    assert_eq!(purge(other).json()["purged"], 0);
    let exact = format!(r#"{{"path": "/z", "host": "{host}"}}"#);
    assert_eq!(purge(&exact).json()["purged"], 1);
    assert_eq!(purge(r#"{"path": "*"}"#).json()["purged"], 2);
    assert_eq!(purge(r#"{"pool": "nope", "path": "*"}"#).status, 404);
    assert_eq!(purge(r#"{"path": "relative"}"#).status, 400);
    assert_eq!(purge("not json").status, 400);
    let metrics = get(sy.admin_addr(), "/metrics", &[]).text();
    assert!(metrics.contains("switchyard_cache_requests_total{pool=\"web\",status=\"hit\"} 1"), "{metrics}");
    assert!(metrics.contains("switchyard_cache_bytes 0"), "{metrics}");
}

#[test]
fn head_is_served_from_a_stored_get() {
    let b = TestBackend::start("a");
    serve(&b, "/h", &[("cache-control", "max-age=60")]);
    let sy = proxy(&b, "", STORE);
    assert_eq!(get(sy.addr(), "/h", &[]).text(), "v1");
    let head = request(sy.addr(), "HEAD", "/h", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(status_of(&head).contains("hit"), "{}", status_of(&head));
    assert_eq!(b.path_count("/h"), 1);
}

#[test]
fn a_body_larger_than_max_object_passes_through_unstored() {
    let b = TestBackend::start("a");
    let big = test_body(7, 100 * 1024);
    let body = big.clone();
    b.set_handler(move |req| {
        (req.path() == "/big").then(|| Reply::new(200, body.clone()).with_header("cache-control", "max-age=60"))
    });
    let sy = proxy(&b, "", STORE);
    for _ in 0..2 {
        let r = get(sy.addr(), "/big", &[]);
        assert_eq!(r.body, big, "passed through intact");
    }
    assert_eq!(b.path_count("/big"), 2, "over max_object: never stored");
}

#[test]
fn concurrent_misses_on_one_key_send_one_request_upstream() {
    let b = TestBackend::start("a");
    b.set_handler(|req| {
        (req.path() == "/c").then(|| {
            Reply::new(200, "shared").with_header("cache-control", "max-age=60").with_delay(Duration::from_millis(500))
        })
    });
    let sy = proxy(&b, "lock_timeout: 5s", STORE);
    let addr = sy.addr();
    let clients: Vec<_> =
        (0..100).map(|_| std::thread::spawn(move || try_get(addr, "/c", &[]).map(|r| r.text()))).collect();
    for c in clients {
        assert_eq!(c.join().unwrap().unwrap(), "shared");
    }
    assert_eq!(b.path_count("/c"), 1, "one fetch for 100 concurrent misses");
}

#[test]
fn memory_bound_holds_with_ten_times_its_size_requested() {
    memory_bound_holds("memory: 1MiB, max_object: 64KiB");
}

#[test]
fn memory_bound_holds_with_the_lru_too() {
    memory_bound_holds("memory: 1MiB, max_object: 64KiB, eviction: lru");
}

/// 10× the store's memory in distinct objects through a store set up by `store`.
fn memory_bound_holds(store: &str) {
    let b = TestBackend::start("a");
    let body = test_body(3, 20 * 1024);
    b.set_handler(move |_req| Some(Reply::new(200, body.clone()).with_header("cache-control", "max-age=600")));
    let sy = proxy(&b, "", store);
    // 520 distinct objects of 20 KiB: 10 MiB, ten times the store
    let mut c = Client::connect(sy.addr()).unwrap();
    for i in 0..520 {
        let r = c.get(&format!("/obj/{i}"), &[]).unwrap();
        assert_eq!(r.status, 200);
    }
    let bytes = || -> u64 {
        let m = get(sy.admin_addr(), "/metrics", &[]).text();
        m.lines()
            .find_map(|l| l.strip_prefix("switchyard_cache_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    assert!(poll_until(Duration::from_secs(5), || bytes() <= 1 << 20), "store holds {} bytes, over its 1 MiB", bytes());
    let entries = get(sy.admin_addr(), "/status", &[]).json()["pools"]["web"]["cache"]["entries"].as_u64().unwrap_or(0);
    assert!(entries >= 40, "the store still holds recent objects ({entries})");
}

#[test]
fn default_ttl_applies_only_when_the_response_states_no_freshness() {
    let b = TestBackend::start("a");
    b.set_handler(|req| match req.path() {
        "/silent" => Some(Reply::new(200, "s")),
        "/zero" => Some(Reply::new(200, "z").with_header("cache-control", "max-age=0")),
        _ => None,
    });
    let sy = proxy(&b, "default_ttl: 60s", STORE);
    assert_eq!(upstream_for(&sy, &b, "/silent", &[]), 1, "default_ttl stores it");
    assert_eq!(upstream_for(&sy, &b, "/zero", &[]), 2, "max-age=0 wins");
}

#[test]
fn error_answers_and_the_access_log_carry_the_cache_status() {
    let mut y = config(&[dead_url()], "cache: {}");
    y.push_str(&format!("cache: {{{STORE}}}\nlog: {{access: stdout, format: json}}\n"));
    let sy = Switchyard::start(&y);
    let r = get(sy.addr(), "/l", &[]);
    assert!(r.status >= 500, "only a dead backend: {}", r.status);
    assert_eq!(status_of(&r), "switchyard; fwd=miss");
    assert!(
        poll_until(Duration::from_secs(5), || sy.stdout().contains("\"cache\":\"miss\"")),
        "access log: {}",
        sy.stdout()
    );
}

fn reload(sy: &Switchyard, yaml: &str, n: usize) {
    sy.write_config(yaml);
    sy.signal(libc::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || sy.logs().matches("configuration reloaded").count() >= n),
        "reload {n} not done\n{}",
        sy.logs()
    );
}

#[test]
fn the_store_survives_a_reload_and_a_pool_without_cache_stops_using_it() {
    let b = TestBackend::start("a");
    serve(&b, "/k", &[("cache-control", "max-age=60")]);
    let store = format!("cache: {{{STORE}}}\n");
    let with = config(&[b.url()], "cache: {}") + &store;
    let without = config(&[b.url()], "") + &store;
    let sy = Switchyard::start(&with);
    assert_eq!(get(sy.addr(), "/k", &[]).text(), "v1");
    reload(&sy, &with, 1);
    let r = get(sy.addr(), "/k", &[]);
    assert!(status_of(&r).contains("hit"), "kept over SIGHUP: {}", status_of(&r));
    reload(&sy, &without, 2);
    let r = get(sy.addr(), "/k", &[]);
    assert_eq!(r.text(), "v2", "cache removed: straight to the backend");
    assert!(r.header("cache-status").is_none());
}

#[test]
fn variants_beyond_vary_limit_are_served_but_not_stored() {
    let b = TestBackend::start("a");
    b.set_handler(|req| {
        (req.path() == "/v").then(|| {
            let lang = req.header("accept-language").unwrap_or("none").to_string();
            Reply::new(200, lang).with_header("cache-control", "max-age=60").with_header("vary", "accept-language")
        })
    });
    let sy = proxy(&b, "vary_limit: 1", STORE);
    for _ in 0..2 {
        assert_eq!(get(sy.addr(), "/v", &[("Accept-Language", "en")]).text(), "en");
        assert_eq!(get(sy.addr(), "/v", &[("Accept-Language", "fr")]).text(), "fr");
    }
    // en stored once; fr over the limit: fetched each time
    assert_eq!(b.path_count("/v"), 3);
}

#[test]
fn concurrent_readers_of_a_body_over_max_object_all_get_it_whole() {
    let b = TestBackend::start("a");
    let big = test_body(9, 200 * 1024);
    let body = big.clone();
    b.set_handler(move |req| {
        (req.path() == "/big").then(|| {
            let mut r = Reply::new(200, body.clone())
                .with_header("cache-control", "max-age=60")
                .with_delay(Duration::from_millis(300));
            r.chunked = true;
            r
        })
    });
    let sy = proxy(&b, "", STORE);
    let addr = sy.addr();
    let clients: Vec<_> =
        (0..20).map(|_| std::thread::spawn(move || try_get(addr, "/big", &[]).map(|r| r.body))).collect();
    for c in clients {
        let got = c.join().unwrap().expect("response");
        assert!(got == big, "truncated or altered body: {} bytes", got.len());
    }
}

/// Reads a response head (status line and fields) from `r`.
fn read_head(r: &mut impl std::io::BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return lines;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return lines;
        }
        lines.push(line);
    }
}

#[test]
fn a_websocket_upgrade_through_a_caching_pool_is_tunnelled_not_cached() {
    use std::io::{BufReader, Read, Write};
    // a WebSocket echo backend: 101 (with a Cache-Control a cache must
    // ignore), then echoes bytes
    let listener = bind_fresh();
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut w = conn;
                if read_head(&mut r).is_empty() {
                    return;
                }
                let _ = w.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\ncache-control: max-age=60\r\n\r\n",
                );
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = r.read(&mut buf) {
                    if w.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut y = config(&[url], "cache: {}");
    y.push_str(&format!("cache: {{{STORE}}}\n"));
    let sy = Switchyard::start(&y);
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(sy.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .expect("send");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let head = read_head(&mut r);
        assert!(head.first().is_some_and(|l| l.contains("101")), "{head:?}\n{}", sy.logs());
        assert!(head.iter().any(|l| l.eq_ignore_ascii_case("cache-status: switchyard; fwd=bypass")), "{head:?}");
        s.write_all(b"ping").expect("send");
        let mut got = [0u8; 4];
        r.read_exact(&mut got).expect("echo");
        assert_eq!(&got, b"ping");
    }
}

#[test]
fn a_miss_is_retried_on_another_backend_and_the_good_answer_stored() {
    let bad = TestBackend::start("bad");
    bad.set_reply(Reply::new(502, "bad"));
    let good = TestBackend::start("good");
    serve(&good, "/r", &[("cache-control", "max-age=60")]);
    let mut y = config(
        &[bad.url(), good.url()],
        "cache: {}\nretries: {attempts: 2, on: [connect_failure, http_502]}\npassive: {max_fails: 0}",
    );
    y.push_str(&format!("cache: {{{STORE}}}\n"));
    let sy = Switchyard::start(&y);
    for _ in 0..4 {
        let r = get(sy.addr(), "/r", &[]);
        assert_eq!(r.status, 200, "{}", sy.logs());
        assert_eq!(r.text(), "v1");
    }
    assert_eq!(good.path_count("/r"), 1, "stored after the retry");
    assert!(!sy.logs().contains("panicked"), "{}", sy.logs());
}

// === A racing caching pool (`race:` and `cache:`): misses are raced ===

/// A backend answering every request, after `delay_ms`, with 200, body
/// `NAME` and `Cache-Control: max-age=60`.
fn racer(name: &'static str, delay_ms: u64) -> TestBackend {
    let b = TestBackend::start(name);
    b.set_handler(move |_req| {
        let r = Reply::new(200, name).with_header("cache-control", "max-age=60");
        Some(r.with_delay(Duration::from_millis(delay_ms)))
    });
    b
}

/// A proxy with one pool `web` over `urls` with `cache:` and `race:`
/// (`race` its flow mapping body).
fn raced(urls: &[String], race: &str) -> Switchyard {
    let mut y = config(urls, &format!("cache: {{lock_timeout: 5s}}\nrace: {{{race}}}\npassive: {{max_fails: 0}}"));
    y.push_str(&format!("cache: {{{STORE}}}\nadmin: {{listen: \"{{admin}}\"}}\n"));
    let sy = Switchyard::start(&y);
    eventually!(10, try_get(sy.admin_addr(), "/healthz", &[]).is_ok_and(|r| r.status == 200), "{}", sy.logs());
    sy
}

#[test]
fn a_miss_of_a_racing_pool_is_raced_and_the_winner_stored() {
    let slow = racer("slow", 1500);
    let fast = racer("fast", 100);
    let sy = raced(&[slow.url(), fast.url()], "");
    let started = std::time::Instant::now();
    let miss = get(sy.addr(), "/w", &[]);
    let took = started.elapsed();
    assert_eq!(miss.text(), "fast", "the fastest backend answers the miss");
    assert!(took < Duration::from_millis(1200), "not held by the slow backend: {took:?}");
    assert_eq!(status_of(&miss), "switchyard; fwd=miss; stored");
    eventually!(3, slow.path_count("/w") == 1 && fast.path_count("/w") == 1, "both asked");
    for _ in 0..3 {
        let hit = get(sy.addr(), "/w", &[]);
        assert_eq!(hit.text(), "fast");
        assert!(status_of(&hit).contains("hit"), "{}", status_of(&hit));
    }
    assert_eq!((slow.path_count("/w"), fast.path_count("/w")), (1, 1), "hits never reach a backend");
    let hits = || {
        let m = get(sy.admin_addr(), "/metrics", &[]).text();
        metric(&m, "switchyard_cache_requests_total", &[("pool", "web"), ("status", "hit")])
    };
    eventually!(3, hits() == Some(3.0), "{:?}", hits());
}

#[test]
fn concurrent_misses_of_a_racing_pool_run_one_race() {
    let a = racer("a", 300);
    let b = racer("b", 300);
    let sy = raced(&[a.url(), b.url()], "");
    let addr = sy.addr();
    let clients: Vec<_> =
        (0..50).map(|_| std::thread::spawn(move || try_get(addr, "/c", &[]).map(|r| r.text()))).collect();
    for c in clients {
        let text = c.join().unwrap().unwrap();
        assert!(text == "a" || text == "b", "{text}");
    }
    assert_eq!((a.path_count("/c"), b.path_count("/c")), (1, 1), "one race for 50 concurrent misses");
}

#[test]
fn a_raced_miss_skips_failing_backends_and_stores_the_good_answer() {
    let good = racer("good", 50);
    let failing = TestBackend::start("failing");
    failing.set_handler(|_req| Some(Reply::new(503, "down").with_header("cache-control", "max-age=60")));
    // a refused connection and a 503 (not terminal) lose to the good answer
    let sy = raced(&[dead_url(), failing.url(), good.url()], "");
    for path in ["/f1", "/f2", "/f3", "/f4"] {
        let miss = get(sy.addr(), path, &[]);
        assert_eq!((miss.status, miss.text()), (200, "good".to_string()), "{}", sy.logs());
        assert_eq!(status_of(&miss), "switchyard; fwd=miss; stored");
        let hit = get(sy.addr(), path, &[]);
        assert_eq!(hit.text(), "good");
        assert!(status_of(&hit).contains("hit"), "{}", status_of(&hit));
        assert_eq!(good.path_count(path), 1);
    }
}

#[test]
fn a_raced_miss_over_max_object_is_relayed_whole_and_not_stored() {
    let big = test_body(11, 100 * 1024);
    let backends: Vec<TestBackend> = ["a", "b"]
        .iter()
        .map(|name| {
            let b = TestBackend::start(name);
            let body = big.clone();
            b.set_handler(move |req| {
                let mut r = Reply::new(200, body.clone()).with_header("cache-control", "max-age=60");
                // /chunked: no Content-Length, the bound is found while storing
                r.chunked = req.path() == "/chunked";
                Some(r)
            });
            b
        })
        .collect();
    let sy = raced(&[backends[0].url(), backends[1].url()], "");
    for path in ["/sized", "/chunked"] {
        for _ in 0..2 {
            let r = get(sy.addr(), path, &[]);
            assert_eq!(r.status, 200, "{path}: {:?}\n{}", r.headers, sy.logs());
            assert!(r.body == big, "{path}: relayed intact ({} bytes)", r.body.len());
            // over max_object (64 KiB): never stored, every request a miss (a chunked body is
            // found too large only after its head went out marked `stored`)
            assert!(status_of(&r).starts_with("switchyard; fwd=miss"), "{path}: {}", status_of(&r));
            if path == "/sized" {
                assert_eq!(status_of(&r), "switchyard; fwd=miss", "a declared length over max_object");
            }
        }
    }
}

#[test]
fn a_100_continue_carries_no_cache_status() {
    // The backend (hyper) sends `100 Continue` when it reads the body of a
    // POST (a cache bypass); only the final answer says so.
    let b = TestBackend::start("a");
    let sy = proxy(&b, "", STORE);
    let out = std::process::Command::new("curl")
        .args([
            "-sv",
            "--expect100-timeout",
            "10",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "body",
            "-o",
            "/dev/null",
        ])
        .arg(format!("http://{}/post", sy.addr()))
        .output()
        .expect("curl");
    let trace = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    let heads: Vec<&str> = trace.split("< http/1.1 ").skip(1).collect();
    assert_eq!(heads.len(), 2, "a 100 and the answer expected:\n{trace}");
    assert!(heads[0].starts_with("100") && !heads[0].contains("< cache-status"), "{trace}");
    assert!(heads[1].starts_with("200") && heads[1].contains("< cache-status: switchyard; fwd=method"), "{trace}");
}
