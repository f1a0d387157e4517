//! A retiring instance (binary upgrade or stop) still answers a request that
//! arrives on a connection it accepted before its listeners stopped, instead
//! of closing it unanswered (`src/linger.rs`). Under a stream of new
//! connections that is the request a client sends right after its connection
//! was accepted by the old instance.

use crate::common::*;

use std::time::Duration;

/// One pool on `backend` with a grace period long enough to cover the linger.
fn config(backend: &TestBackend) -> String {
    server_line(3, 1) + &web_pool_config(&[backend.url()], "")
}

/// Waits until `sy` logged that its proxy listener stopped accepting.
fn listener_stopped(sy: &Switchyard) -> bool {
    let line = format!("Shutting down {}", sy.addr());
    poll_until(Duration::from_secs(15), || sy.stderr().contains(&line))
}

#[test]
fn upgrade_answers_a_request_on_a_connection_accepted_before_the_hand_over() {
    let backend = TestBackend::start("a");
    let old = Switchyard::start(&config(&backend));
    // accepted by the old instance; its request comes only after the hand-over
    let mut held = Client::connect(old.addr()).expect("connect");
    assert_eq!(get(old.addr(), "/before", &[]).status, 200);

    let mut new = old.spawn_sibling(&["-u"]);
    assert!(poll_until(Duration::from_secs(10), || old.dir().join("sy.sock").exists()), "{}", new.logs());
    old.signal(libc::SIGQUIT);
    assert!(listener_stopped(&old), "{}", old.logs());

    let r = held.get("/held", &[]).unwrap_or_else(|e| panic!("no answer on the held connection: {e}\n{}", old.logs()));
    assert_eq!(r.status, 200, "{}", old.logs());
    assert_eq!(
        r.header("connection").map(str::to_ascii_lowercase).as_deref(),
        Some("close"),
        "a retiring instance closes the connection after the answer"
    );
    assert_eq!(backend.path_count("/held"), 1);
    assert_eq!(get(old.addr(), "/after", &[]).status, 200, "{}", new.logs());
    assert!(new.is_running(), "{}", new.logs());
}

#[test]
fn sigterm_answers_a_request_on_a_connection_accepted_before_the_stop() {
    let backend = TestBackend::start("a");
    let mut sy = Switchyard::start(&config(&backend));
    let mut held = Client::connect(sy.addr()).expect("connect");
    assert_eq!(get(sy.addr(), "/before", &[]).status, 200);

    sy.signal(libc::SIGTERM);
    assert!(listener_stopped(&sy), "{}", sy.logs());

    let r = held.get("/held", &[]).unwrap_or_else(|e| panic!("no answer on the held connection: {e}\n{}", sy.logs()));
    assert_eq!(r.status, 200, "{}", sy.logs());
    assert_eq!(sy.wait_exit(Duration::from_secs(15)), Some(0), "{}", sy.logs());
}

#[test]
fn idle_keepalive_connections_are_served_during_the_linger_then_closed() {
    use std::io::{Read, Write};
    let backend = TestBackend::start("a");
    let mut sy = Switchyard::start(&config(&backend));
    // accepted before the two below (the accept queue is in order), and
    // silent: it is idle too
    let mut fresh = std::net::TcpStream::connect(sy.addr()).expect("connect");
    fresh.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // two keep-alive connections, each idle after one request
    let mut idle: Vec<std::net::TcpStream> = (0..2)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(sy.addr()).expect("connect");
            write!(c, "GET /one{i} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let n = c.read(&mut buf).unwrap();
            assert_eq!(raw_status(&buf[..n]), Some(200));
            c
        })
        .collect();

    sy.signal(libc::SIGTERM);
    assert!(listener_stopped(&sy), "{}", sy.logs());
    let stopped = std::time::Instant::now();
    // told keep-alive before the stop: its next request is still answered,
    // and told that the connection closes
    write!(idle[0], "GET /two HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = idle[0].read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200") && text.contains("connection: close"), "{text}\n{}", sy.logs());
    assert_eq!(backend.path_count("/two"), 1);
    // the other stays idle, and so does the connection that never sent a
    // byte: closed at the linger's end (1 s), not when the process exits
    // (after the 3 s grace period), the 75 s keep-alive or the 10 s
    // header_timeout ends
    for (what, c) in [("keep-alive", &mut idle[1]), ("fresh", &mut fresh)] {
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "data on an idle {what} connection");
        let waited = stopped.elapsed();
        assert!(
            waited < Duration::from_millis(2500),
            "idle {what} connection closed {waited:?} after the listener stopped\n{}",
            sy.logs()
        );
    }
    assert_eq!(sy.wait_exit(Duration::from_secs(15)), Some(0), "{}", sy.logs());
}
