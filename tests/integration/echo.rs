//! `switchyard-echo`, the sample backend (SPEC §1), run as a real process:
//! its answers, its HTTP/1.1 handling and its command line.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn echo_health_answers_ok() {
    let e = EchoProcess::start(&["--name", "e1"]);
    let r = get(e.addr(), "/health", &[]).expect_status(200);
    assert_eq!(r.text(), "ok");
}

#[test]
fn echo_reflects_request_as_json() {
    let e = EchoProcess::start(&["--name", "e1"]);
    let r = get(e.addr(), "/some/path?q=1", &[("X-Test", "hello"), ("App-Name", "web")]).expect_status(200);
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
    let e = EchoProcess::start_cmd(Command::new(ECHO_BIN).env("BACKEND_LISTEN_ADDR", &addr).args(["--name", "envy"]));
    assert_eq!(e.addr().to_string(), addr);
    assert_eq!(get(e.addr(), "/x", &[]).json()["backend"], "envy");
}

#[test]
fn echo_error_rate_one_fails_every_request_but_health() {
    let e = EchoProcess::start(&["--name", "bad", "--error-rate", "1"]);
    for _ in 0..5 {
        let v = get(e.addr(), "/api", &[]).expect_status(500).json();
        assert_eq!((v["backend"].as_str(), v["error"].as_str()), (Some("bad"), Some("injected")), "{v}");
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
    let r = c.request("POST", "/a", &[], b"hello world").unwrap().expect_status(200);
    assert_eq!(r.json()["method"], "POST");
    let big = vec![b'x'; 300_000];
    let r = c.request("PUT", "/b", &[("Transfer-Encoding", "chunked")], &big).unwrap().expect_status(200);
    assert_eq!(r.json()["headers"]["transfer-encoding"], "chunked");
    // The bodies were consumed exactly: the connection still works.
    assert_eq!(c.get("/c", &[]).unwrap().json()["path"], "/c");
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
    let at = |path: &str| text.find(&format!("\"{path}\"")).unwrap_or_else(|| panic!("no {path} in {text}"));
    assert!(at("/one") < at("/two") && at("/two") < at("/three"), "{text}");
}

#[test]
fn echo_expect_continue() {
    let e = EchoProcess::start(&[]);
    request(e.addr(), "POST", "/upload", &[("Expect", "100-continue")], b"0123456789").expect_status(200);
}

#[test]
fn echo_head_has_no_body() {
    let e = EchoProcess::start(&[]);
    let mut c = Client::connect(e.addr()).unwrap();
    let r = c.request("HEAD", "/x", &[], b"").unwrap().expect_status(200);
    assert!(r.body.is_empty());
    assert!(r.header("content-length").unwrap().parse::<usize>().unwrap() > 0);
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
    // An empty line before the request line and bare LF line ends (RFC 9112 §2.2).
    let raw = send_raw(e.addr(), b"\r\nGET /lf HTTP/1.1\nHost: x\nConnection: close\n\n");
    assert_eq!(raw_status(&raw), Some(200), "{}", String::from_utf8_lossy(&raw));
}

#[test]
fn echo_rejects_malformed_requests_with_400() {
    let e = EchoProcess::start(&[]);
    let cases: [&[u8]; 14] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
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
        let (status, what) = raw_exchange(e.addr(), case);
        assert_eq!(status, Some(400), "{what}");
    }
    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 100_000));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw_status(&send_raw(e.addr(), &huge)), Some(431));
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
fn echo_bad_flags_exit_1_help_exits_0_port_in_use_exits_2() {
    for args in ["--bogus", "--error-rate 2", "--error-rate abc", "--max-delay 5", "--max-delay fast", "--listen"] {
        run_echo(&args.split(' ').collect::<Vec<_>>()).assert_fails(1, &[]);
    }
    let o = run_echo(&["--help"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("--error-rate"));
    let holder = bind_fresh();
    let addr = holder.local_addr().unwrap().to_string();
    run_echo(&["--listen", &addr]).assert_fails(2, &[&addr]);
}

#[test]
fn echo_sigterm_exits_0() {
    let mut e = EchoProcess::start(&[]);
    assert_eq!(e.terminate(Duration::from_secs(5)), Some(0));
}
