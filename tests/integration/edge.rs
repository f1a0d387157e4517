//! The edge against hostile or careless clients: rate limiting, the
//! request-head deadline (slowloris), the head size limit, keep-alive
//! limits, TLS bytes on a plain port, and WebSocket pass-through.

use crate::common::*;

use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection to `to` from source address `from` (any 127/8 address).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    s.connect_timeout(&to.into(), CLIENT_TIMEOUT).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s
}

/// One GET with `Connection: close` on `s`; the raw answer.
fn raw_get(mut s: TcpStream, path: &str) -> String {
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn metric(sy: &Switchyard, line_prefix: &str) -> Option<u64> {
    get(sy.admin_addr(), "/metrics", &[])
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix).map(|v| v.trim().parse().unwrap_or(0)))
}

#[test]
fn rate_limit_answers_429_with_retry_after_and_spares_other_clients() {
    let b = TestBackend::start("b1");
    let yaml = web_pool_config(&[b.url()], "rate_limit: {rps: 5, burst: 5}") + "admin: {listen: \"{admin}\"}\n";
    let sy = Switchyard::start(&yaml);
    let mut limited = 0;
    for i in 0..30 {
        let r = get(sy.addr(), &format!("/r{i}"), &[]);
        match r.status {
            200 => {}
            429 => {
                limited += 1;
                let secs: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
                assert!((1..=2).contains(&secs), "Retry-After {secs}");
                assert_eq!(r.json()["pool"], "web");
                assert_eq!(r.json()["error"], "rate limited");
            }
            s => panic!("unexpected {s}\n{}", sy.logs()),
        }
    }
    assert!(limited >= 15, "only {limited} of 30 limited\n{}", sy.logs());
    assert_eq!(b.app_count(), 30 - limited);
    // another client address has its own bucket
    let other = raw_get(connect_from([127, 0, 0, 2], sy.addr()), "/other");
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    assert_eq!(metric(&sy, "switchyard_rate_limited_total{pool=\"web\"}"), Some(limited as u64));
    // buckets survive a reload that leaves the rate limit unchanged
    sy.signal(libc::SIGHUP);
    assert!(poll_until(Duration::from_secs(5), || {
        metric(&sy, "switchyard_config_reloads_total{result=\"ok\"}") == Some(1)
    }));
    assert_eq!(get(sy.addr(), "/after-reload", &[]).status, 429, "{}", sy.logs());
}

#[test]
fn rate_limit_by_header_counts_each_value_apart() {
    let b = TestBackend::start("b1");
    let sy =
        Switchyard::start(&web_pool_config(&[b.url()], "rate_limit: {rps: 1, burst: 2, key: \"header:X-Api-Key\"}"));
    let statuses = |key: &str| (0..4).map(|_| get(sy.addr(), "/", &[("X-Api-Key", key)]).status).collect::<Vec<_>>();
    assert_eq!(statuses("alice"), [200, 200, 429, 429], "{}", sy.logs());
    assert_eq!(statuses("bob"), [200, 200, 429, 429]);
    // without the header a request counts by its client address
    let bare: Vec<u16> = (0..3).map(|_| get(sy.addr(), "/", &[]).status).collect();
    assert_eq!(bare, [200, 200, 429]);
    let other = raw_get(connect_from([127, 0, 0, 3], sy.addr()), "/");
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
}

/// A config whose listener has `limits` (a YAML flow-mapping tail).
fn limited_listener(backend: &str, limits: &str) -> String {
    web_pool_config(&[backend.to_string()], "")
        .replace("listen: [{addr: \"{listen}\"}]", &format!("listen: [{{addr: \"{{listen}}\", {limits}}}]"))
}

#[test]
fn slowloris_is_dropped_within_header_timeout_while_others_are_served() {
    let b = TestBackend::start("b1");
    let sy = Switchyard::start(&limited_listener(&b.url(), "header_timeout: 2s"));
    let addr = sy.addr();
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let start = Instant::now();
        let head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().chain(&[b'a'; 64]);
        let mut answer = Vec::new();
        for byte in head {
            if s.write_all(&[*byte]).is_err() {
                break;
            }
            let mut tmp = [0u8; 512];
            match s.read(&mut tmp) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&tmp[..n]);
                    break;
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(250)); // one byte per 250 ms: the slowloris pace
        }
        (start.elapsed(), answer)
    });
    // others are served meanwhile
    for _ in 0..5 {
        assert_eq!(get(sy.addr(), "/fast", &[]).status, 200);
        std::thread::sleep(Duration::from_millis(200)); // spread over the slow client's life
    }
    let (took, answer) = slow.join().unwrap();
    assert!(took < Duration::from_millis(4500), "slow client kept for {took:?}\n{}", sy.logs());
    assert!(took >= Duration::from_millis(1800), "dropped too early: {took:?}");
    assert_eq!(raw_status(&answer), Some(408), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(b.path_count("/slow"), 0);
    assert_eq!(get(sy.addr(), "/after", &[]).status, 200);
}

#[test]
fn a_head_begun_with_the_previous_request_is_due_within_header_timeout() {
    // One byte of the next request in the same packet as the previous one
    // (pingora reads it ahead, as pipelining): the rest of that head is due
    // `header_timeout` later, not after pingora's 75 s keep-alive read.
    let b = TestBackend::start("b1");
    let sy = Switchyard::start(&limited_listener(&b.url(), "header_timeout: 1s"));
    let mut c = TcpStream::connect(sy.addr()).unwrap();
    c.write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nG").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = c.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    let waited = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("HTTP/1.1 408"), "the unfinished head is answered 408: {text}");
    assert!(waited < Duration::from_secs(4), "closed after {waited:?}");
    assert_eq!(b.path_count("/1"), 1);
}

#[test]
fn oversized_head_is_answered_431_and_the_next_connection_served() {
    let b = TestBackend::start("b1");
    let sy = Switchyard::start(&limited_listener(&b.url(), "max_header_size: 4KiB"));
    let big = format!("GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(8 * 1024));
    let raw = send_raw(sy.addr(), big.as_bytes());
    assert_eq!(raw_status(&raw), Some(431), "{}", String::from_utf8_lossy(&raw));
    assert!(String::from_utf8_lossy(&raw).contains("\"error\":\"request header fields too large\""));
    assert_eq!(b.path_count("/big"), 0);
    // just over the limit, complete by the time it is measured
    let over = format!("GET /over HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(4 * 1024 + 100));
    let raw = send_raw(sy.addr(), over.as_bytes());
    assert_eq!(raw_status(&raw), Some(431), "{}", String::from_utf8_lossy(&raw));
    assert_eq!(b.path_count("/over"), 0);
    // a head just under the limit passes
    let fits = get(sy.addr(), "/fits", &[("X-Fill", &"b".repeat(3 * 1024))]);
    assert_eq!(fits.status, 200, "{}", sy.logs());
}

#[test]
fn too_many_header_fields_are_answered_431_with_the_json_body() {
    // pingora's parser holds 256 fields and answers more with a bare 400
    let b = TestBackend::start("b1");
    let sy = Switchyard::start(&limited_listener(&b.url(), "max_header_size: 64KiB"));
    let fields = |n: usize| (0..n).map(|i| format!("X-F{i}: v\r\n")).collect::<String>();
    let many = format!("GET /many HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(300));
    let raw = send_raw(sy.addr(), many.as_bytes());
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(raw_status(&raw), Some(431), "{text}");
    assert!(text.contains("\"error\":\"request header fields too large\""), "{text}");
    assert_eq!(b.path_count("/many"), 0);
    // 255 fields in all pass the edge and pingora's parser (the test
    // backend, on hyper, then refuses more than 100 with its own empty 431)
    let most = format!("GET /most HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n", fields(253));
    let raw = send_raw(sy.addr(), most.as_bytes());
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.contains("request header fields too large"), "{text}");
    assert_ne!(raw_status(&raw), Some(400), "{text}");
}

#[test]
fn request_target_over_the_limit_is_answered_414_and_the_next_connection_served() {
    // RFC 9112 §3: a request line longer than the server accepts gets 414
    let b = TestBackend::start("b1");
    let sy = Switchyard::start(&limited_listener(&b.url(), "max_header_size: 64KiB"));
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9 * 1024));
    let raw = send_raw(sy.addr(), long.as_bytes());
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(raw_status(&raw), Some(414), "{text}");
    assert!(text.contains("\"error\":\"request target too long\""), "{text}");
    assert_eq!(b.app_count(), 0);
    // a long header section is still a 431 matter, not a 414 one
    let fits = get(sy.addr(), &format!("/{}", "a".repeat(4 * 1024)), &[("X-Fill", &"b".repeat(12 * 1024))]);
    assert_eq!(fits.status, 200, "{}", sy.logs());
}

#[test]
fn keepalive_connections_end_after_the_request_limit_and_the_idle_timeout() {
    let b = TestBackend::start("b1");
    let sy = Switchyard::start(&limited_listener(&b.url(), "keepalive_requests: 3, keepalive_timeout: 1s"));
    let mut c = Client::connect(sy.addr()).unwrap();
    for path in ["/1", "/2"] {
        let r = c.get(path, &[]).unwrap();
        assert_eq!(r.status, 200);
        assert_ne!(r.header("connection"), Some("close"), "{:?}", r.headers);
    }
    let third = c.get("/3", &[]).unwrap();
    assert_eq!(third.status, 200);
    assert_eq!(third.header("connection"), Some("close"), "{:?}", third.headers);
    // pipelined requests count against the limit too: three answers of five
    let raw = send_raw(sy.addr(), "GET /p HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5).as_bytes());
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert_eq!(text.matches("http/1.1 200").count(), 3, "{text}");
    assert_eq!(text.matches("connection: close").count(), 1, "{text}");
    assert_eq!(b.app_count(), 6, "requests forwarded past the limit");

    // the idle timeout counts from the last answer, not from the first
    // wait of the connection: a second request 0.7 s into the first wait,
    // then the close about 1 s after its answer
    let mut idle = TcpStream::connect(sy.addr()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut answered = Instant::now();
    for (i, path) in ["/a", "/b"].into_iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(700)); // pacing: inside the first wait
        }
        write!(idle, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let n = idle.read(&mut buf).unwrap();
        assert_eq!(raw_status(&buf[..n]), Some(200), "{path}: {:?}", String::from_utf8_lossy(&buf[..n]));
        answered = Instant::now();
    }
    let eof = idle.read(&mut buf).unwrap();
    assert_eq!(eof, 0, "connection not closed");
    let waited = answered.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(3000),
        "idle connection closed {waited:?} after its last answer"
    );
}

#[test]
fn tls_hello_on_the_plain_port_is_dropped_without_reaching_the_backend() {
    let b = TestBackend::start("b1");
    let sy = Switchyard::start(&web_pool_config(&[b.url()], ""));
    // the start of a TLS 1.2/1.3 ClientHello record
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03];
    hello.extend_from_slice(&[0x42; 64]);
    let start = Instant::now();
    let raw = send_raw_timeout(sy.addr(), &hello, Duration::from_secs(5));
    assert!(raw.is_empty(), "answered TLS with {raw:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "held for {:?}", start.elapsed());
    let raw = send_raw(sy.addr(), b"\x00\x01\x02 garbage\r\n\r\n");
    assert_eq!(raw_status(&raw), Some(400));
    assert_eq!(b.app_count(), 0);
    assert_eq!(get(sy.addr(), "/ok", &[]).status, 200, "{}", sy.logs());
}
