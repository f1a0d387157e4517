//! Integration tests of the `switchyard-echo` sample backend (run as a real
//! process) and of the shared test harness in `tests/common` itself.

mod common;

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// switchyard-echo
// ---------------------------------------------------------------------------

#[test]
fn echo_health_answers_ok() {
    let e = EchoProcess::start(&["--name", "e1"]);
    let r = get(e.addr(), "/health", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
}

#[test]
fn echo_reflects_request_as_json() {
    let e = EchoProcess::start(&["--name", "e1"]);
    let r = get(
        e.addr(),
        "/some/path?q=1",
        &[("X-Test", "hello"), ("App-Name", "web")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-backend"), Some("e1"));
    let v = r.json();
    assert_eq!(v["backend"], "e1");
    assert_eq!(v["listen"], e.addr().to_string());
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/some/path?q=1");
    assert_eq!(v["headers"]["x-test"], "hello");
    assert_eq!(v["headers"]["app-name"], "web");
    assert_eq!(v["headers"]["host"], e.addr().to_string());
}

#[test]
fn echo_name_defaults_to_listen_address() {
    let e = EchoProcess::start(&[]);
    let v = get(e.addr(), "/", &[]).json();
    assert_eq!(v["backend"], e.addr().to_string());
}

#[test]
fn echo_listen_address_from_env() {
    let addr = format!("127.0.0.1:{}", free_port());
    let e = EchoProcess::start_cmd(
        Command::new(ECHO_BIN)
            .env("BACKEND_LISTEN_ADDR", &addr)
            .args(["--name", "envy"]),
    );
    assert_eq!(e.addr().to_string(), addr);
    assert_eq!(get(e.addr(), "/x", &[]).json()["backend"], "envy");
}

#[test]
fn echo_error_rate_one_fails_every_request_but_health() {
    let e = EchoProcess::start(&["--name", "bad", "--error-rate", "1"]);
    for _ in 0..5 {
        let r = get(e.addr(), "/api", &[]);
        assert_eq!(r.status, 500);
        let v = r.json();
        assert_eq!(v["backend"], "bad");
        assert_eq!(v["error"], "injected");
    }
    assert_eq!(get(e.addr(), "/health", &[]).status, 200);
}

#[test]
fn echo_error_rate_half_mixes_answers() {
    let e = EchoProcess::start(&["--error-rate", "0.5"]);
    let mut c = Client::connect(e.addr()).unwrap();
    let mut fails = 0;
    for _ in 0..200 {
        let r = c.get("/", &[]).unwrap();
        assert!(r.status == 200 || r.status == 500, "{}", r.status);
        fails += usize::from(r.status == 500);
    }
    // Binomial(200, 0.5): outside 40..=160 has probability ~1e-18.
    assert!((40..=160).contains(&fails), "{fails} failures out of 200");
}

#[test]
fn echo_keep_alive_and_bodies() {
    let e = EchoProcess::start(&[]);
    let mut c = Client::connect(e.addr()).unwrap();
    let r = c.request("POST", "/a", &[], b"hello world").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "POST");
    let big = vec![b'x'; 300_000];
    let r = c
        .request("PUT", "/b", &[("Transfer-Encoding", "chunked")], &big)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["transfer-encoding"], "chunked");
    // The bodies were consumed exactly: the connection still works.
    let r = c.get("/c", &[]).unwrap();
    assert_eq!(r.json()["path"], "/c");
}

#[test]
fn echo_pipelined_requests() {
    let e = EchoProcess::start(&[]);
    let raw = send_raw(
        e.addr(),
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    let one = text.find("\"/one\"").unwrap();
    let two = text.find("\"/two\"").unwrap();
    let three = text.find("\"/three\"").unwrap();
    assert!(one < two && two < three, "{text}");
}

#[test]
fn echo_expect_continue() {
    let e = EchoProcess::start(&[]);
    let r = request(
        e.addr(),
        "POST",
        "/upload",
        &[("Expect", "100-continue")],
        b"0123456789",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn echo_head_has_no_body() {
    let e = EchoProcess::start(&[]);
    let mut c = Client::connect(e.addr()).unwrap();
    let r = c.request("HEAD", "/x", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );
    assert_eq!(c.get("/y", &[]).unwrap().json()["path"], "/y");
}

#[test]
fn echo_http10_closes_after_answer() {
    let e = EchoProcess::start(&[]);
    let start = Instant::now();
    let raw = send_raw(e.addr(), b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(raw_status(&raw), Some(200));
    // Closed by the server, not by send_raw's 1 s idle limit.
    assert!(start.elapsed() < Duration::from_millis(900));
}

#[test]
fn echo_rejects_malformed_requests_with_400() {
    let e = EchoProcess::start(&[]);
    let cases: [&[u8]; 9] = [
        b"GARBAGE\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nno-colon-here\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"G\xc3\x28T / HTTP/1.1\r\n\r\n",
    ];
    for case in cases {
        let raw = send_raw(e.addr(), case);
        assert_eq!(
            raw_status(&raw),
            Some(400),
            "{:?} -> {:?}",
            String::from_utf8_lossy(case),
            String::from_utf8_lossy(&raw)
        );
    }
    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 100_000));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw_status(&send_raw(e.addr(), &huge)), Some(431));
    // Still serving.
    assert_eq!(get(e.addr(), "/health", &[]).status, 200);
}

#[test]
fn echo_survives_abrupt_disconnects() {
    let e = EchoProcess::start(&[]);
    for partial in [
        &b"GET / HT"[..],
        b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ] {
        let mut s = TcpStream::connect(e.addr()).unwrap();
        s.write_all(partial).unwrap();
        drop(s);
    }
    assert_eq!(get(e.addr(), "/health", &[]).status, 200);
}

#[test]
fn echo_max_delay_delays_within_bound() {
    let e = EchoProcess::start(&["--max-delay", "200ms"]);
    let mut c = Client::connect(e.addr()).unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        assert_eq!(c.get("/", &[]).unwrap().status, 200);
    }
    let took = start.elapsed();
    // Uniform in [0, 200ms]: 10 answers take ~1 s; all under 5 ms has p ~ 1e-16.
    assert!(took > Duration::from_millis(50), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn echo_bad_flags_exit_1() {
    for args in [
        &["--bogus"][..],
        &["--error-rate", "2"],
        &["--error-rate", "abc"],
        &["--max-delay", "5"],
        &["--max-delay", "fast"],
        &["--listen"],
    ] {
        let o = run_echo(args);
        assert_eq!(o.code, 1, "{args:?}: {o:?}");
        assert!(!o.stderr.is_empty(), "{args:?}: no message");
        assert!(!o.stderr.contains("panicked"), "{args:?}: {o:?}");
    }
}

#[test]
fn echo_help_exits_0() {
    let o = run_echo(&["--help"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("--error-rate"));
}

#[test]
fn echo_port_in_use_exits_2() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let o = run_echo(&["--listen", &addr]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains(&addr), "{o:?}");
}

#[test]
fn echo_sigterm_exits_0() {
    let mut e = EchoProcess::start(&[]);
    assert_eq!(e.terminate(Duration::from_secs(5)), Some(0));
}

// ---------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------

#[test]
fn backend_default_reply_and_counters() {
    let b = TestBackend::start("b1");
    let r = get(b.addr(), "/hello?x=1", &[("X-Custom", "yes")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "b1");
    assert_eq!(r.header("x-backend"), Some("b1"));
    get(b.addr(), "/health", &[]);
    get(b.addr(), "/hello", &[]);
    assert_eq!(b.request_count(), 3);
    assert_eq!(b.path_count("/hello"), 2);
    assert_eq!(b.path_count("/health"), 1);
    assert_eq!(b.app_count(), 2);
    let first = &b.requests()[0];
    assert_eq!(first.target, "/hello?x=1");
    assert_eq!(first.path(), "/hello");
    assert_eq!(first.header("x-custom"), Some("yes"));
    assert_eq!(b.last_app_request().unwrap().target, "/hello");
    b.reset_counters();
    assert_eq!(b.request_count(), 0);
}

#[test]
fn backend_records_bodies_byte_identical() {
    let b = TestBackend::start("b");
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut c = Client::connect(b.addr()).unwrap();
    assert_eq!(c.request("POST", "/cl", &[], &body).unwrap().status, 200);
    let r = c
        .request(
            "POST",
            "/chunked",
            &[("Transfer-Encoding", "chunked")],
            &body,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let reqs = b.requests();
    assert_eq!(reqs[0].body, body);
    assert!(!reqs[0].chunked);
    assert_eq!(reqs[1].body, body);
    assert!(reqs[1].chunked);
    // Same keep-alive connection.
    assert_eq!(reqs[0].conn_id, reqs[1].conn_id);
    assert_eq!(b.connections_accepted(), 1);
}

#[test]
fn backend_programmable_reply() {
    let b = TestBackend::start("b");
    b.set_status(503);
    b.set_body("down");
    b.add_header("x-extra", "1");
    let r = get(b.addr(), "/", &[]);
    assert_eq!((r.status, r.text().as_str()), (503, "down"));
    assert_eq!(r.header("x-extra"), Some("1"));
    b.set_reply(Reply::new(201, "made").with_header("location", "/x"));
    b.set_chunked(true);
    let r = get(b.addr(), "/", &[]);
    assert_eq!((r.status, r.text().as_str()), (201, "made"));
    assert!(r.chunked);
    assert_eq!(r.header("location"), Some("/x"));
}

#[test]
fn backend_health_switch() {
    let b = TestBackend::start("b");
    assert_eq!(get(b.addr(), "/health", &[]).status, 200);
    b.set_healthy(false);
    assert_eq!(get(b.addr(), "/health", &[]).status, 503);
    // Only /health is affected.
    assert_eq!(get(b.addr(), "/app", &[]).status, 200);
    b.set_healthy(true);
    assert_eq!(get(b.addr(), "/health?probe=1", &[]).status, 200);
}

#[test]
fn backend_handler_per_request() {
    let b = TestBackend::start("b");
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = Arc::clone(&n);
    b.set_handler(move |req| {
        if req.path() == "/special" {
            return Some(Reply::new(418, "teapot"));
        }
        (n2.fetch_add(1, Ordering::SeqCst) == 0).then(|| Reply::new(500, "first fails"))
    });
    assert_eq!(get(b.addr(), "/", &[]).status, 500);
    assert_eq!(get(b.addr(), "/", &[]).status, 200);
    assert_eq!(get(b.addr(), "/special", &[]).status, 418);
    b.clear_handler();
    assert_eq!(get(b.addr(), "/special", &[]).status, 200);
}

#[test]
fn backend_delay() {
    let b = TestBackend::start("b");
    b.set_delay(Duration::from_millis(800));
    let start = Instant::now();
    assert_eq!(get(b.addr(), "/", &[]).status, 200);
    assert!(start.elapsed() >= Duration::from_millis(800));
    // /health is never delayed by the default reply.
    let start = Instant::now();
    get(b.addr(), "/health", &[]);
    assert!(start.elapsed() < Duration::from_millis(700));
}

#[test]
fn backend_reset_mode_sends_rst() {
    let b = TestBackend::start("b");
    b.set_mode(Mode::Reset);
    let err = try_request(b.addr(), "POST", "/x", &[], b"payload").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    // The request was read and recorded before the reset.
    assert_eq!(b.last_request().unwrap().body, b"payload");
    assert!(poll_until(Duration::from_secs(2), || b.open_connections() == 0));
}

#[test]
fn backend_close_mode_closes_without_answer() {
    let b = TestBackend::start("b");
    b.set_mode(Mode::Close);
    let err = try_get(b.addr(), "/x", &[]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(b.path_count("/x"), 1);
}

#[test]
fn backend_hang_ends_on_stop() {
    let b = TestBackend::start("b");
    b.set_mode(Mode::Hang);
    let addr = b.addr();
    let t = std::thread::spawn(move || try_get(addr, "/x", &[]));
    assert!(poll_until(Duration::from_secs(5), || b.path_count("/x") == 1));
    let start = Instant::now();
    b.stop();
    assert!(t.join().unwrap().is_err());
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn backend_stop_and_restart_on_same_port() {
    let b = TestBackend::start("b");
    let addr = b.addr();
    let mut c = Client::connect(addr).unwrap();
    assert_eq!(c.get("/", &[]).unwrap().status, 200);
    assert_eq!(b.open_connections(), 1);
    b.stop();
    assert!(!b.is_listening());
    let err = TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // The open keep-alive connection was closed too.
    assert!(c.get("/", &[]).is_err());
    assert!(poll_until(Duration::from_secs(2), || b.open_connections() == 0));
    b.restart();
    assert!(b.is_listening());
    assert_eq!(b.addr(), addr);
    assert_eq!(get(addr, "/", &[]).text(), "b");
}

#[test]
fn backend_counts_open_connections() {
    let b = TestBackend::start("b");
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(b.addr()).unwrap()).collect();
    for c in &mut clients {
        c.get("/", &[]).unwrap();
    }
    assert_eq!(b.open_connections(), 3);
    clients.truncate(1);
    assert!(poll_until(Duration::from_secs(2), || b.open_connections() == 1));
    drop(clients);
    assert!(poll_until(Duration::from_secs(2), || b.open_connections() == 0));
    assert_eq!(b.connections_accepted(), 3);
}

#[test]
fn dead_addr_refuses() {
    let err = TcpStream::connect(dead_addr()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(dead_url().starts_with("http://127.0.0.1:"));
}

#[test]
fn poll_until_is_bounded() {
    let start = Instant::now();
    assert!(!poll_until(Duration::from_millis(100), || false));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(poll_until(Duration::from_secs(1), || true));
}

#[test]
fn expand_config_placeholders() {
    let dir = TempDir::new();
    let text = expand_config("listen: [{addr: \"{listen}\"}]\n", dir.path(), 1234, 5678);
    assert!(text.contains("addr: \"127.0.0.1:1234\""), "{text}");
    assert!(text.starts_with("server: { pid_file: "), "{text}");
    assert!(text.contains("sy.sock"), "{text}");
    let own = expand_config(
        "server:\n  pid_file: {pid_file}\n  upgrade_sock: {upgrade_sock}\nadmin: {listen: \"{admin}\"}\n",
        dir.path(),
        1,
        5678,
    );
    assert_eq!(own.matches("server:").count(), 1, "{own}");
    assert!(own.contains("127.0.0.1:5678"), "{own}");
}
