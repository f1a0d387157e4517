//! Request hygiene (issue 16, SPEC §3): ambiguous framing and header names
//! never reach a backend ambiguous. Each case is sent with raw bytes, with a
//! hidden second request in its body, on a fresh connection and on a
//! keep-alive connection after a valid request.

use crate::common::*;

use std::net::SocketAddr;
use std::time::Duration;

/// A hidden request a lenient backend would see if the framing leaked.
const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

fn start(extra_server: &str) -> (TestBackend, Switchyard) {
    let web = TestBackend::start("web");
    let yaml = format!(
        "server: {{ pid_file: \"{{pid_file}}\", upgrade_sock: \"{{upgrade_sock}}\", grace_period_seconds: 0, \
         graceful_shutdown_timeout_seconds: 1{extra_server} }}\n{}",
        web_pool_config(&[web.url()], "")
    );
    (web, Switchyard::start(&yaml))
}

/// The response to `raw` on a fresh connection (status, body).
fn answer(addr: SocketAddr, raw: &str) -> (Option<u16>, String) {
    let out = send_raw_timeout(addr, raw.as_bytes(), Duration::from_secs(3));
    let text = String::from_utf8_lossy(&out).into_owned();
    (raw_status(&out), text)
}

/// `raw` sent after a valid request on one keep-alive connection: the
/// status of the valid one, then of `raw` (None: no answer), and whether
/// the connection was closed after it.
fn after_valid_request(addr: SocketAddr, raw: &str) -> (u16, Option<u16>, bool) {
    let mut c = RawConn::connect(addr).expect("connect");
    c.set_timeout(Duration::from_secs(3)).expect("timeout");
    let first = c.get("/first").expect("valid request").status;
    c.send(raw.as_bytes()).expect("send");
    let second = c.read_response().ok().map(|r| r.status);
    let closed = c.get("/third").is_err();
    (first, second, closed)
}

/// A refused request: `status` with the JSON body on a fresh connection,
/// and nothing at the backend, also after a valid request on a keep-alive
/// connection (which is then closed).
fn assert_refused(web: &TestBackend, sy: &Switchyard, raw: &str, status: u16) {
    assert_refused_by(web, sy, raw, status, true);
}

/// [`assert_refused`]; `json: false` for requests pingora's own parser
/// refuses with its bare 400 before any phase of switchyard runs.
fn assert_refused_by(web: &TestBackend, sy: &Switchyard, raw: &str, status: u16, json: bool) {
    let (got, text) = answer(sy.addr(), raw);
    assert_eq!(got, Some(status), "{raw:?} ->\n{text}\n{}", sy.logs());
    assert!(!json || text.contains("\"error\""), "no JSON error body for {raw:?}:\n{text}");
    assert_eq!(web.app_count(), 0, "{raw:?} reached the backend");

    let (first, second, closed) = after_valid_request(sy.addr(), raw);
    assert_eq!(first, 200);
    assert_eq!(second, Some(status), "{raw:?} after a valid request");
    assert!(closed, "connection kept open after refusing {raw:?}");
    let seen: Vec<String> = web.app_requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(seen, vec!["/first".to_string()], "{raw:?}");
    web.reset_counters();
}

#[test]
fn chunked_applied_twice_is_refused_with_400() {
    let (web, sy) = start("");
    let body = format!("0\r\n\r\n{HIDDEN}");
    for te in [
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked,chunked\r\nContent-Length: 5\r\n",
    ] {
        let raw = format!("POST /p HTTP/1.1\r\nHost: x\r\n{te}\r\n{body}");
        assert_refused(&web, &sy, &raw, 400);
    }
}

#[test]
fn transfer_codings_other_than_chunked_are_refused_with_501() {
    let (web, sy) = start("");
    let raw = format!("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{HIDDEN}");
    assert_refused(&web, &sy, &raw, 501);
}

#[test]
fn conflicting_content_lengths_are_refused_with_400() {
    let (web, sy) = start("");
    for cl in ["Content-Length: 5, 6\r\n", "Content-Length: 5\r\nContent-Length: 6\r\n"] {
        let raw = format!("POST /p HTTP/1.1\r\nHost: x\r\n{cl}\r\nhello{HIDDEN}");
        // pingora's parser refuses these before any phase of ours: its
        // bare 400, no JSON body; nothing reaches the backend
        assert_refused_by(&web, &sy, &raw, 400, false);
    }
}

#[test]
fn identical_content_lengths_are_forwarded_as_one() {
    let (web, sy) = start("");
    for cl in ["Content-Length: 5,5\r\n", "Content-Length: 5, 5\r\n", "Content-Length: 5\r\nContent-Length: 5\r\n"] {
        let raw = format!("POST /p HTTP/1.1\r\nHost: x\r\n{cl}\r\nhello");
        let mut c = RawConn::connect(sy.addr()).expect("connect");
        c.set_timeout(Duration::from_secs(3)).expect("timeout");
        c.send(raw.as_bytes()).expect("send");
        let r = c.read_response().expect("answer");
        assert_eq!(r.status, 200, "{raw:?}");
        // the connection stays usable: a valid request follows
        assert_eq!(c.get("/next").expect("next").status, 200);
        let got = web.app_requests();
        assert_eq!(got.len(), 2, "{raw:?}");
        let lengths: Vec<&str> =
            got[0].headers.iter().filter(|(k, _)| k == "content-length").map(|(_, v)| v.as_str()).collect();
        assert_eq!(lengths, vec!["5"], "{raw:?}");
        assert_eq!(got[0].body, b"hello");
        web.reset_counters();
    }
}

#[test]
fn header_names_with_underscores_are_dropped_by_default() {
    let (web, sy) = start("");
    let raw = "GET /u HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\n\
               Transfer_Encoding: chunked\r\nContent_Length: 9\r\nX-Kept: 1\r\n\r\n";
    let (got, text) = answer(sy.addr(), raw);
    assert_eq!(got, Some(200), "{text}");
    let r = web.last_app_request().expect("request at the backend");
    assert_eq!(r.header("x-kept"), Some("1"));
    let underscored: Vec<_> = r.headers.iter().filter(|(k, _)| k.contains('_')).collect();
    assert!(underscored.is_empty(), "forwarded: {underscored:?}");
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn underscores_in_headers_lets_them_through() {
    let (web, sy) = start(", underscores_in_headers: true");
    let raw = "GET /u HTTP/1.1\r\nHost: x\r\nX_Custom: 1\r\n\r\n";
    let (got, text) = answer(sy.addr(), raw);
    assert_eq!(got, Some(200), "{text}");
    let r = web.last_app_request().expect("request at the backend");
    assert_eq!(r.header("x_custom"), Some("1"));
}

#[test]
fn request_targets_with_bytes_outside_rfc_9112_are_refused_with_400() {
    let (web, sy) = start("");
    for target in ["/a\x01b", "/a\0b", "/a\tb", "/a b", "/a\rb", "/a\"b", "/a\x7fb"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_refused(&web, &sy, &raw, 400);
    }
    // refused by pingora's parser first (bare 400): still nothing forwarded
    for target in ["/a<b", "/a>b"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_refused_by(&web, &sy, &raw, 400, false);
    }
}

#[test]
fn percent_encoded_targets_are_forwarded_as_sent() {
    let (web, sy) = start("");
    // what a raw control byte or space would be escaped to, sent encoded:
    // legitimate, forwarded unchanged
    let mut c = Client::connect(sy.addr()).expect("connect");
    c.set_timeout(Duration::from_secs(3)).expect("timeout");
    for target in ["/a%20b", "/a%01b?q=%0D%0A", "/caf%C3%A9"] {
        let r = c.get(target, &[]).expect("answer");
        assert_eq!(r.status, 200, "{target}");
        let got = web.last_app_request().expect("request");
        assert_eq!(got.target, target);
    }
    // a refused raw target does not make its encoded twin suspect on
    // another connection
    let (got, _) = answer(sy.addr(), "GET /x y HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(got, Some(400));
    assert_eq!(get(sy.addr(), "/x%20y", &[]).status, 200);
}

#[test]
fn content_length_beside_transfer_encoding_is_not_forwarded() {
    let (web, sy) = start("");
    let raw = "POST /te HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
               Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (got, text) = answer(sy.addr(), raw);
    assert_eq!(got, Some(200), "{text}");
    let r = web.last_app_request().expect("request at the backend");
    assert_eq!(r.header("content-length"), None, "{r:?}");
    assert_eq!(r.body, b"hello");
}
