//! The tests' HTTP/1.1 client on hyper: a [`Client`] is one TCP connection;
//! the free functions use a fresh connection per request. [`send_raw`] is
//! for bytes no client library sends (malformed heads, pipelining).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;

use super::rt;

/// Bound of a connect, and of each whole exchange.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A final response (1xx skipped): header names lowercased, body de-chunked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Asserts the status (the body in the message); returns the response.
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Response {
        assert_eq!(self.status, status, "body {:?}", self.text());
        self
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): status {} body {:?}", self.status, self.text()))
    }
}

/// `(lowercase name, value)` pairs of a header map.
pub(crate) fn header_list(h: &HeaderMap) -> Vec<(String, String)> {
    let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    h.iter().map(|(k, v)| (k.as_str().to_string(), text(v))).collect()
}

/// First value of `name` (case-insensitive) in a header list.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let hit = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name));
    hit.map(|(_, v)| v.as_str())
}

/// Whether a header map says `Transfer-Encoding: chunked`.
pub(crate) fn is_chunked(h: &HeaderMap) -> bool {
    let te = h.get_all(http::header::TRANSFER_ENCODING).iter();
    te.filter_map(|v| v.to_str().ok()).any(|v| v.to_ascii_lowercase().contains("chunked"))
}

pub type Body = BoxBody<Bytes, io::Error>;

/// `bytes` with a known length, or (`chunked`) as two chunks of unknown length.
pub(crate) fn body_of(bytes: &[u8], chunked: bool) -> Body {
    if !chunked {
        return Full::new(Bytes::copy_from_slice(bytes)).map_err(|n| match n {}).boxed();
    }
    let (a, b) = bytes.split_at(bytes.len() / 2);
    let frames: Vec<io::Result<Frame<Bytes>>> =
        [a, b].into_iter().filter(|p| !p.is_empty()).map(|p| Ok(Frame::data(Bytes::copy_from_slice(p)))).collect();
    StreamBody::new(futures::stream::iter(frames)).boxed()
}

/// A hyper error as an `io::Error` of the kind of its cause (reset, EOF, ...).
fn io_error(e: hyper::Error) -> io::Error {
    let cause = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>());
    let kind = match cause {
        Some(c) => c.kind(),
        None if e.is_incomplete_message() => io::ErrorKind::UnexpectedEof,
        None => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// Awaits `f` on the harness runtime for at most `limit`.
fn block_on<T>(limit: Duration, f: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {limit:?}"));
    rt().block_on(async { tokio::time::timeout(limit, f).await }).map_err(|_| timed_out())?
}

/// One keep-alive client connection; not for use inside a backend handler
/// (it blocks on the runtime).
pub struct Client {
    send: SendRequest<Body>,
    addr: SocketAddr,
    timeout: Duration,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let send = block_on(CLIENT_TIMEOUT, async move {
            let (send, conn) = open(addr).await?;
            tokio::spawn(conn);
            Ok(send)
        })?;
        Ok(Client { send, addr, timeout: CLIENT_TIMEOUT })
    }

    /// One request and its whole response. Adds `Host: ADDR` unless given;
    /// with `Transfer-Encoding: chunked` in `headers` the body goes chunked.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Response> {
        let req = build(self.addr, method, path, headers, body)?;
        let send = &mut self.send;
        block_on(self.timeout, async move {
            send.ready().await.map_err(io_error)?;
            exchange(send, req).await
        })
    }

    /// The bound of each later exchange.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.timeout = timeout;
        Ok(())
    }

    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        self.request("GET", path, headers, b"")
    }
}

/// The request as [`Client::request`] describes it.
fn build(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Request<Body>> {
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut req = Request::builder().method(method).uri(path);
    if !has("host") {
        req = req.header("host", addr.to_string());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let te = |(k, v): &(&str, &str)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    };
    let req = req.body(body_of(body, headers.iter().any(te)));
    req.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A new client connection: its sender, and the connection to drive.
async fn open(addr: SocketAddr) -> io::Result<(SendRequest<Body>, Connection<TokioIo<tokio::net::TcpStream>, Body>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(io_error)
}

async fn exchange(send: &mut SendRequest<Body>, req: Request<Body>) -> io::Result<Response> {
    let (head, body) = send.send_request(req).await.map_err(io_error)?.into_parts();
    let body = body.collect().await.map_err(io_error)?.to_bytes().to_vec();
    let (chunked, headers) = (is_chunked(&head.headers), header_list(&head.headers));
    Ok(Response { status: head.status.as_u16(), headers, body, chunked })
}

/// One request on a fresh connection, closed after the answer; errors returned.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let req = build(addr, method, path, headers, body)?;
    block_on(CLIENT_TIMEOUT, async move {
        let (mut send, conn) = open(addr).await?;
        let ask = async move { exchange(&mut send, req).await }; // `send` dropped at the end: `conn` ends
        let (answer, _) = tokio::join!(ask, conn);
        answer
    })
}

/// One request on a fresh connection; panics with context on any I/O error.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path} failed: {e}"))
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, b"")
}

pub fn try_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    try_request(addr, "GET", path, headers, b"")
}

/// Writes `bytes` on a fresh connection; everything read back until the
/// server closes, 1 s passes without new data after some, or 5 s in total.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    send_raw_timeout(addr, bytes, Duration::from_secs(5))
}

pub fn send_raw_timeout(addr: SocketAddr, bytes: &[u8], total: Duration) -> Vec<u8> {
    let mut s =
        TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("send_raw: connect {addr}: {e}"));
    // A server may reset after answering; whatever was read is still returned.
    let _ = s.write_all(bytes);
    let deadline = Instant::now() + total;
    let (mut out, mut tmp) = (Vec::new(), [0u8; 16 * 1024]);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let wait = if out.is_empty() { left } else { left.min(Duration::from_secs(1)) };
        let _ = s.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if out.is_empty() && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    out
}

/// [`send_raw`]: the answer's status, and `"SENT" -> "ANSWER"` for messages.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (Option<u16>, String) {
    let raw = send_raw(addr, bytes);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (raw_status(&raw), format!("{:?} -> {:?}", text(bytes), text(&raw)))
}

/// Status code of the first response line in raw bytes (`HTTP/1.1 400 ...` → 400).
pub fn raw_status(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    let mut parts = text.lines().next()?.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}
