//! What reaches the client: every relayed message cleaned of hop-by-hop
//! fields and framed for the client's HTTP version; pipelined requests all
//! answered; `Connection: close` once a shutdown has begun; smooth weighted
//! round robin. Regression tests of inputs that users of other proxies
//! reported.
//!
//! The backends here send exact bytes no server library would let a test
//! choose (hop-by-hop fields, 1xx to an HTTP/1.0 request), so they are raw
//! sockets: [`RawBackend`].

use crate::common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Builds the exact bytes of an answer from the request head it answers.
type Answer = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;
/// Request heads and bodies a [`RawBackend`] read, in order.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A backend on 127.0.0.1 that answers every request head (and its
/// `Content-Length` body) on a keep-alive connection with bytes from
/// `answer`, and records the heads and bodies it read.
struct RawBackend {
    addr: SocketAddr,
    seen: Seen,
    /// Request heads read, counted before their bodies arrive.
    heads_arrived: Arc<AtomicUsize>,
}

impl RawBackend {
    fn start(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> RawBackend {
        let listener = bind_fresh();
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer: Answer = Arc::new(answer);
        let heads_arrived = Arc::new(AtomicUsize::new(0));
        let (log, arrived) = (seen.clone(), heads_arrived.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (answer, log, arrived) = (answer.clone(), log.clone(), arrived.clone());
                thread::spawn(move || serve(conn, &answer, &log, &arrived));
            }
        });
        RawBackend { addr, seen, heads_arrived }
    }

    /// A backend answering 200 with the request's path as the body.
    fn echoing_path() -> RawBackend {
        RawBackend::start(|head| {
            let p = path_of(head);
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{p}", p.len()).into_bytes()
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().map(|s| s.0.clone()).collect()
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().iter().map(|s| s.1.clone()).collect()
    }
}

fn serve(mut conn: TcpStream, answer: &Answer, log: &Seen, arrived: &AtomicUsize) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        arrived.fetch_add(1, Ordering::SeqCst);
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if head.to_ascii_lowercase().contains("expect: 100-continue") {
            let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        while buf.len() < end + 4 + len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[end + 4..end + 4 + len].to_vec();
        buf.drain(..end + 4 + len);
        log.lock().unwrap().push((head.clone(), body));
        if conn.write_all(&answer(&head)).is_err() {
            return;
        }
    }
}

/// The path of a request head.
fn path_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

/// Sends `bytes` on a fresh connection and reads until the proxy closes it
/// (or 5 s pass).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    String::from_utf8_lossy(&send_raw_timeout(addr, bytes, Duration::from_secs(5))).to_string()
}

/// The header section of the first response in `raw`, lowercased.
fn first_head(raw: &str) -> String {
    raw.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase()
}

// Kind 1: what the backend sends is cleaned and framed for the client.

#[test]
fn hop_by_hop_fields_of_a_response_never_reach_the_client() {
    let backend = RawBackend::start(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: X-Backend-Hop\r\n\
          X-Backend-Hop: internal-routing-hint\r\nKeep-Alive: timeout=5, max=100\r\n\
          Proxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\nok\n"
            .to_vec()
    });
    let sy = Switchyard::start(&web_pool_config(&[backend.url()], ""));
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let raw =
            exchange(sy.addr(), format!("GET /r {version}\r\nHost: app.test\r\nConnection: close\r\n\r\n").as_bytes());
        let head = first_head(&raw);
        assert!(head.starts_with("http/1.1 200"), "{version}: {raw}");
        assert!(!head.contains("x-backend-hop"), "{version}: {raw}");
        assert!(!head.contains("keep-alive: timeout"), "{version}: {raw}");
        assert!(!head.contains("proxy-connection"), "{version}: {raw}");
        assert!(head.contains("x-kept: yes"), "{version}: {raw}");
        assert!(raw.ends_with("\r\n\r\nok\n"), "{version}: {raw}");
    }
}

#[test]
fn http10_client_gets_a_chunked_answer_decoded_and_close_delimited() {
    let backend = RawBackend::start(|_| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          6\r\nhello \r\n7\r\nfrom a \r\n10\r\nchunked backend\n\r\n0\r\n\r\n"
            .to_vec()
    });
    let sy = Switchyard::start(&web_pool_config(&[backend.url()], ""));
    let raw = exchange(sy.addr(), b"GET /c HTTP/1.0\r\nHost: app.test\r\n\r\n");
    let head = first_head(&raw);
    assert!(head.starts_with("http/1.1 200"), "{raw}");
    assert!(!head.contains("transfer-encoding"), "{raw}");
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(body, "hello from a chunked backend\n", "{raw}");
    // a keep-alive HTTP/1.0 client is told that the close ends the body
    let raw = exchange(sy.addr(), b"GET /c HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n");
    let head = first_head(&raw);
    assert!(head.contains("connection: close") && !head.contains("keep-alive"), "{raw}");
    assert!(raw.ends_with("\r\n\r\nhello from a chunked backend\n"), "{raw}");
    // an HTTP/1.1 client on the same pool still gets it chunked
    let raw = exchange(sy.addr(), b"GET /c HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    assert!(first_head(&raw).contains("transfer-encoding: chunked"), "{raw}");
}

#[test]
fn http10_expectation_is_ignored_and_no_1xx_reaches_the_client() {
    let backend = RawBackend::start(|head| {
        let mut out = Vec::new();
        if path_of(head) == "/hints" {
            out.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n");
        }
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        out
    });
    let sy = Switchyard::start(&web_pool_config(&[backend.url()], ""));
    let raw = exchange(
        sy.addr(),
        b"POST /upload HTTP/1.0\r\nHost: app.test\r\nContent-Length: 4\r\n\
          Expect: 100-continue\r\n\r\ndata",
    );
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(!raw.contains(" 100 "), "{raw}");
    let heads = backend.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(!heads[0].to_ascii_lowercase().contains("expect:"), "{heads:?}");
    assert_eq!(backend.bodies()[0], b"data");

    let raw = exchange(sy.addr(), b"GET /hints HTTP/1.0\r\nHost: app.test\r\n\r\n");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // an HTTP/1.1 client still gets the early hints
    let raw = exchange(sy.addr(), b"GET /hints HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    assert!(raw.starts_with("HTTP/1.1 103"), "{raw}");
    assert!(raw.contains("HTTP/1.1 200"), "{raw}");
}

// Kind 2: every request read is answered; a connection is closed only
// after saying so.

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let backend = RawBackend::echoing_path();
    let sy = Switchyard::start(&web_pool_config(&[backend.url()], ""));
    let raw = exchange(
        sy.addr(),
        b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\n\
          GET /b HTTP/1.1\r\nHost: app.test\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(raw.matches("HTTP/1.1 200").count(), 3, "{raw}");
    let (a, b, c) = (raw.find("\r\n\r\n/a"), raw.find("\r\n\r\n/b"), raw.find("\r\n\r\n/c"));
    assert!(a < b && b < c && a.is_some(), "{raw}");
    let paths: Vec<String> = backend.heads().iter().map(|h| path_of(h).to_string()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
}

#[test]
fn a_request_pipelined_behind_a_body_is_answered() {
    // the next request arrives with the end of the previous one's body, so
    // pingora, not the edge, reads it: it must still be answered
    let backend = RawBackend::echoing_path();
    let sy = Switchyard::start(&web_pool_config(&[backend.url()], ""));
    let mut conn = TcpStream::connect(sy.addr()).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"POST /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\n").unwrap();
    // the head reached the backend before the body was sent: the edge read
    // it on its own, pingora reads the rest
    assert!(poll_until(Duration::from_secs(5), || backend.heads_arrived.load(Ordering::SeqCst) == 1));
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    conn.write_all(b"helloGET /b HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").unwrap();
    while let Ok(n) = conn.read(&mut chunk) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    let raw = String::from_utf8_lossy(&raw).to_string();
    assert_eq!(raw.matches("HTTP/1.1 200").count(), 2, "{raw}\n{}", sy.logs());
    let paths: Vec<String> = backend.heads().iter().map(|h| path_of(h).to_string()).collect();
    assert_eq!(paths, ["/a", "/b"]);
    assert_eq!(backend.bodies()[0], b"hello");
}

#[test]
fn a_response_written_after_sigterm_says_connection_close() {
    let backend = TestBackend::start("slow");
    backend.set_delay(Duration::from_secs(1));
    let yaml = server_line(3, 2) + &web_pool_config(&[backend.url()], "");
    let sy = Switchyard::start(&yaml);
    let mut conn = TcpStream::connect(sy.addr()).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n").unwrap();
    assert!(poll_until(Duration::from_secs(5), || backend.app_count() == 1));
    sy.signal(libc::SIGTERM);
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("\r\n\r\nslow") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let raw = String::from_utf8_lossy(&raw).to_string();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}\n{}", sy.logs());
    assert!(first_head(&raw).contains("connection: close"), "{raw}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

// Kind 3: weights interleave.

#[test]
fn weighted_round_robin_interleaves_instead_of_bursting() {
    let [heavy, b, c] = backends(["a", "b", "c"]);
    let yaml = format!(
        "listen: [{{addr: \"{{listen}}\"}}]\n\
         routing: {{default_pool: web}}\n\
         pools:\n  web:\n    health_check: {{type: none}}\n    backends:\n\
         \x20     - {{url: \"{}\", weight: 5}}\n\
         \x20     - {{url: \"{}\"}}\n\
         \x20     - {{url: \"{}\"}}\n",
        heavy.url(),
        b.url(),
        c.url()
    );
    let sy = Switchyard::start(&yaml);
    let order: String = (0..21)
        .map(|_| {
            let r = get(sy.addr(), "/", &[]);
            assert_eq!(r.status, 200, "{}", sy.logs());
            r.header("x-backend").unwrap_or("?").to_string()
        })
        .collect();
    assert_eq!(order.matches('a').count(), 15, "{order}");
    assert_eq!(order.matches('b').count(), 3, "{order}");
    assert_eq!(order.matches('c').count(), 3, "{order}");
    // nginx's smooth sequence (a a b a c a a per cycle of 7), whatever the
    // order of b and c; pingora's weighted round robin gives a a a a a b c
    let shape: String = order.chars().map(|ch| if ch == 'a' { 'a' } else { 'x' }).collect();
    assert_eq!(shape, "aaxaxaa".repeat(3), "{order}");
}

/// A backend (its URL) that refuses every upload as soon as it has read
/// the head (413, `Connection: close`), then reads and discards the body
/// as a careful server does.
fn refusing_backend() -> String {
    let listener = bind_fresh();
    let backend = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo big!\n",
                );
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    backend
}

#[test]
fn an_early_answer_to_an_upload_is_not_reset_away() {
    let backend = refusing_backend();
    // pool `web` is not the default: a request without App-Name gets the
    // proxy's own early 404
    let sy = Switchyard::start(&web_pool_config(&[backend], "").replace("routing: {default_pool: web}", "routing: {}"));
    for (app, status, body) in [("web", "413", "too big!\n"), ("", "404", "\n")].repeat(2) {
        let mut conn = TcpStream::connect(sy.addr()).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let size = 16 << 20;
        conn.write_all(
            format!(
                "POST /upload HTTP/1.1\r\nHost: app.test\r\nApp-Name: {app}\r\n\
                 Content-Length: {size}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        // a client that sends its whole body before it reads the answer
        // (curl gives up with "Send failure: Broken pipe" when the proxy
        // closes on it before that)
        let chunk = vec![b'x'; 1 << 16];
        let sent = (0..(size / chunk.len())).try_for_each(|_| conn.write_all(&chunk));
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let result = loop {
            match conn.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        let raw = String::from_utf8_lossy(&raw).to_string();
        assert!(
            raw.starts_with(&format!("HTTP/1.1 {status}")) && raw.ends_with(body),
            "answer lost ({result:?}): {raw:?}\n{}",
            sy.logs()
        );
        assert!(sent.is_ok(), "App-Name {app:?}: upload cut: {sent:?}");
    }
}

#[test]
fn uploads_that_ask_for_100_continue_keep_their_connection() {
    // curl waits for `100 Continue` before it sends a body (here forced
    // with the header). On the normal path the backend (hyper) sends it
    // when it reads the body; a race reads the body first and answers the
    // 100 itself. That 1xx must not count as an answer written before the
    // body: three uploads, one connection.
    for extra in ["", "race: {}"] {
        let b = TestBackend::start("b");
        let sy = start_web(&[&b], &[extra]);
        let dir = tempfile::tempdir().expect("tempdir");
        let body = dir.path().join("body");
        std::fs::write(&body, vec![b'u'; 3000]).expect("write body");
        let mut cmd = std::process::Command::new("curl");
        cmd.arg("-s");
        for i in 0..3 {
            if i > 0 {
                cmd.arg("--next");
            }
            // curl sends the body anyway after this long without a 100
            cmd.args(["--expect100-timeout", "10", "-H", "Expect: 100-continue", "--data-binary"])
                .arg(format!("@{}", body.display()))
                .args(["-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n"])
                .arg(format!("http://{}/up{i}", sy.addr()));
        }
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let msg = format!("{extra:?}: status and new connections per upload\n{}", sy.logs());
        assert_eq!(text, "200 1\n200 0\n200 0\n", "{msg}");
        let seen = b.app_requests();
        assert_eq!(seen.len(), 3, "{msg}");
        assert!(seen.iter().all(|r| r.body.len() == 3000), "bodies arrived whole");
    }
}

#[test]
fn the_start_of_an_answer_is_not_held_back_while_the_backend_sends_the_rest() {
    // pingora's own write buffer would hold the head and the first bytes
    // until 1,460 bytes or the end of the body: the client would see
    // nothing. Through the normal proxy path and through a race.
    let none = "health_check: {type: none}";
    for (extra, top) in [
        (none.to_string(), ""),
        (format!("{none}\nrace: {{}}"), ""),
        // a raced miss of a caching pool, stored while it is relayed
        (format!("{none}\nrace: {{}}\ncache: {{}}"), "cache: {memory: 1MiB, max_object: 64KiB}\n"),
    ] {
        answer_start_arrives_alone(&extra, top);
    }
}

/// A backend (pool `web` with `extra`, `top` added to the file) sends its
/// head and the first 5 of 20 bytes (cacheable), then waits until the
/// client has them before the rest.
fn answer_start_arrives_alone(extra: &str, top: &str) {
    let listener = bind_fresh();
    let backend = format!("http://{}", listener.local_addr().unwrap());
    let (go, wait) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else { return };
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 20\r\n\r\nhello");
        if wait.recv_timeout(Duration::from_secs(30)).is_ok() {
            let _ = conn.write_all(b"world, fifteen!");
        }
        while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
    });
    let sy = Switchyard::start(&(web_pool_config(&[backend], extra) + top));
    let mut conn = TcpStream::connect(sy.addr()).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"hello") {
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "{extra}: the head and the first bytes were held back ({other:?}); got {:?}\n{}",
                String::from_utf8_lossy(&got),
                sy.logs()
            ),
        }
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    go.send(()).unwrap();
    while !got.ends_with(b"fifteen!") {
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("{extra}: the rest of the body is missing ({other:?})\n{}", sy.logs()),
        }
    }
}

#[test]
fn a_client_silent_after_an_early_refusal_is_closed_after_the_lingering_time() {
    // The backend refuses an upload from its head (413, then it reads and
    // discards); the client has sent a part of its body, reads the answer
    // and then sends nothing more. The connection is closed after the
    // lingering time (5 s, once: not 5 more for draining what never
    // comes), not after pingora's 60 s body read timeout.
    let backend = refusing_backend();
    let sy = Switchyard::start(&web_pool_config(&[backend], ""));
    let mut conn = TcpStream::connect(sy.addr()).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000\r\n\r\n").unwrap();
    conn.write_all(&[b'x'; 1000]).unwrap();
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match conn.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let took = started.elapsed();
    let raw = String::from_utf8_lossy(&raw).to_string();
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw:?} ({end:?})\n{}", sy.logs());
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
    assert!(!end.as_ref().is_err_and(timed_out), "never closed: {end:?}\n{}", sy.logs());
    assert!(took < Duration::from_millis(8500), "connection held {took:?} after the refusal\n{}", sy.logs());
}

#[test]
fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let backend = TestBackend::start("slow");
    backend.set_delay(Duration::from_millis(300));
    let sy = Switchyard::start(&web_pool_config(&[backend.url()], ""));
    let mut conn = TcpStream::connect(sy.addr()).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET /half HTTP/1.1\r\nHost: app.test\r\n\r\n").unwrap();
    // a FIN after a complete request is not a disconnect (RFC 9112 §9.6)
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut raw = String::new();
    let _ = conn.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw:?}\n{}", sy.logs());
    assert!(raw.ends_with("slow"), "{raw:?}");
    assert!(first_head(&raw).contains("connection: close"), "{raw}");
}

#[test]
fn a_response_cut_by_the_backend_reaches_the_client_up_to_the_cut() {
    // The backend promises 10 000 bytes, sends the head and 1 000 (in
    // 100-byte writes, paced so that each is relayed on its own) and closes:
    // the client gets all it sent, then the connection closes (nothing is
    // kept back in the proxy's buffers).
    let listener = bind_fresh();
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n");
            for _ in 0..10 {
                let _ = conn.write_all(&[b'x'; 100]);
                thread::sleep(Duration::from_millis(2));
            }
            // pacing: the cut comes well after the last bytes were relayed
            thread::sleep(Duration::from_millis(200));
        }
    });
    let sy = Switchyard::start(&web_pool_config(&[format!("http://{addr}")], ""));
    let raw = exchange(sy.addr(), b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "head {head:?}\n{}", sy.logs());
    assert_eq!(body.len(), 1000, "body bytes relayed before the cut\n{}", sy.logs());
}
