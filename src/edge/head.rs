//! Receiving an HTTP/1.x request head under the listener's limits: a
//! deadline for the whole head (against slowloris clients, whose one byte
//! a second would reset pingora's per-read timeout forever), a size limit,
//! an idle limit between keep-alive requests, and an early stop for bytes
//! that cannot start a request (a TLS ClientHello on a plain port).
//!
//! The bytes read are handed to pingora unchanged as the session's
//! pipelined prefix, so pingora parses exactly what the client sent.

use crate::config::ClientLimits;
use bytes::BytesMut;
use pingora_core::protocols::Stream;
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Sleep;

/// How waiting for a request head ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// A complete head of this many bytes is in the buffer (maybe with
    /// body bytes or pipelined requests after it).
    Ready(usize),
    /// Close without answering: the client left, stayed idle past the
    /// keep-alive timeout, sent nothing in time, or spoke TLS to a plain
    /// port; or the server is shutting down.
    Close,
    /// Answer this status and close: 400 (not HTTP), 408 (head not
    /// complete in time), 414 (request line too long), 431 (head too
    /// large).
    Reject(u16),
}

/// The longest request line (method, target, version) accepted, bytes:
/// nginx's default (`large_client_header_buffers 4 8k`); a longer one is
/// answered 414 (RFC 9112 §3, RFC 9110 §15.5.15).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The most header fields a request head may carry: pingora's parser holds
/// 256 (pingora-core `v1::common::MAX_HEADERS`) and answers more with a bare
/// 400; the edge answers 431 with the JSON body first (RFC 6585 §5).
/// HAProxy's default is 101 (`tune.http.maxhdr`); nginx counts bytes only.
pub const MAX_HEADER_FIELDS: usize = 255;

/// The most bytes one read of a request head takes: they are read into a
/// buffer on the stack of that poll and copied out, so a connection waiting
/// for a head holds no read buffer (and one holding part of a head holds
/// only those bytes); see [`read_arrived`].
const HEAD_READ: usize = 4096;

/// The first byte of a TLS record carrying a handshake (RFC 8446 §5.1).
const TLS_HANDSHAKE: u8 = 0x16;

/// Where the end of the head is searched from, so that a head trickling
/// in byte by byte is scanned once, not once per byte.
#[derive(Debug, Default)]
struct Scan {
    pos: usize,
}

impl Scan {
    /// The length of the head when `buf` holds a complete one: up to the
    /// empty line after the request line (CRLF or bare LF, as pingora's
    /// parser accepts; empty lines before the request line are skipped,
    /// RFC 9112 §2.2).
    fn complete(&mut self, buf: &[u8]) -> Option<usize> {
        let start = buf.len() - after_empty_lines(buf).len();
        let from = self.pos.max(start);
        for i in from..buf.len() {
            if buf[i] == b'\n' && i > start {
                let next = &buf[i + 1..];
                if next.first() == Some(&b'\n') {
                    return Some(i + 2);
                }
                if next.starts_with(b"\r\n") {
                    return Some(i + 3);
                }
                if next.is_empty() || next == b"\r" {
                    // the empty line may still be arriving
                    self.pos = i;
                    return None;
                }
            }
        }
        self.pos = buf.len().saturating_sub(1).max(from);
        None
    }
}

/// Whether `buf` cannot be the start of a request: its first byte (after
/// empty lines) must start a method name (an RFC 9110 token character).
fn not_http(buf: &[u8]) -> Option<Head> {
    let first = *buf.iter().find(|&&b| b != b'\r' && b != b'\n')?;
    if first == TLS_HANDSHAKE {
        return Some(Head::Close);
    }
    let token = first.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&first);
    (!token).then_some(Head::Reject(400))
}

/// Whether the complete head `head` has more than [`MAX_HEADER_FIELDS`]
/// field lines (its lines less the request line and the empty last one).
fn too_many_fields(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', after_empty_lines(head)).count() > MAX_HEADER_FIELDS + 2
}

/// `buf` from its first byte that is not CR or LF (empty lines before the
/// request line are skipped, RFC 9112 §2.2).
fn after_empty_lines(buf: &[u8]) -> &[u8] {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    &buf[start..]
}

/// The request line of the head in `buf`, without its LF (complete or not).
pub fn request_line(buf: &[u8]) -> &[u8] {
    let line = after_empty_lines(buf);
    &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())]
}

/// Whether the request line in `buf` (complete or not) is over
/// [`MAX_REQUEST_LINE`].
fn request_line_too_long(buf: &[u8]) -> bool {
    request_line(buf).len() > MAX_REQUEST_LINE
}

/// Reads from `stream` into `buf` until a complete request head is there,
/// or `deadline` passes (408, or a quiet close when nothing came).
///
/// A connection's first head must be complete `header_timeout` after the
/// connection was accepted (nginx's `client_header_timeout`); a later one
/// `header_timeout` after its first byte (see [`next_bytes`]).
pub async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    limits: &ClientLimits,
    deadline: Instant,
) -> Head {
    let mut scan = Scan::default();
    loop {
        if let Some(h) = not_http(buf) {
            return h;
        }
        if request_line_too_long(buf) {
            return Head::Reject(414);
        }
        if let Some(len) = scan.complete(buf) {
            // a head that arrived whole in one read is measured too
            return if len > limits.max_header_size || too_many_fields(&buf[..len]) {
                Head::Reject(431)
            } else {
                Head::Ready(len)
            };
        }
        if buf.len() > limits.max_header_size {
            return Head::Reject(431);
        }
        let read = tokio::time::timeout_at(deadline.into(), read_arrived(stream, buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Head::Close,
            Err(_) if buf.is_empty() => return Head::Close,
            Err(_) => return Head::Reject(408),
        }
    }
}

/// Waits up to `idle` for the first bytes of a connection's next request
/// (its first one, or the next on a keep-alive connection) and appends them
/// to `buf`: false when the client closed, the
/// wait timed out or the retiring instance closes its idle connections
/// (`closed` set; the waiters are woken through `closing`). The connection holds no read buffer meanwhile,
/// and the wait is a plain future of about 100 bytes: an idle connection holds it.
///
/// `timer` is the connection's own, kept from one wait to the next: moving
/// a registered tokio timer to a later deadline only stores the new
/// deadline (the timer wheel re-files it when the old one comes), where a
/// new timer per wait was inserted into the wheel and removed again for
/// every request.
pub fn next_bytes<'a>(
    stream: &'a mut Stream,
    buf: &'a mut BytesMut,
    idle: Duration,
    mut timer: Pin<&'a mut Sleep>,
    closing: &'a Notify,
    closed: &'a AtomicBool,
) -> NextBytes<'a> {
    timer.as_mut().reset(tokio::time::Instant::now() + idle);
    NextBytes {
        stream,
        buf,
        closed,
        closing: closing.notified(),
        timer,
    }
}

pin_project_lite::pin_project! {
    /// The wait of [`next_bytes`].
    pub struct NextBytes<'a> {
        stream: &'a mut Stream,
        buf: &'a mut BytesMut,
        closed: &'a AtomicBool,
        #[pin]
        closing: Notified<'a>,
        timer: Pin<&'a mut Sleep>,
    }
}

impl Future for NextBytes<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.project();
        if let Poll::Ready(read) = poll_arrived(this.stream, this.buf, cx) {
            return Poll::Ready(matches!(read, Ok(n) if n > 0));
        }
        // `closing` is registered by its poll before the flag is read, so a
        // wake-up after the flag was set is not lost
        let retiring = this.closing.poll(cx).is_ready() || this.closed.load(Ordering::Acquire);
        if retiring || this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    }
}

/// Reads what has arrived on `stream` (at most [`HEAD_READ`] bytes) and
/// appends it to `buf`; `Ok(0)` at the end of the stream.
async fn read_arrived(stream: &mut Stream, buf: &mut BytesMut) -> io::Result<usize> {
    poll_fn(|cx| poll_arrived(stream, buf, cx)).await
}

/// One poll of [`read_arrived`]: the bytes land in a buffer on this call's
/// stack, which is gone when the read is pending, and are copied to `buf`.
fn poll_arrived(
    stream: &mut Stream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut chunk = [MaybeUninit::<u8>::uninit(); HEAD_READ];
    let mut read = ReadBuf::uninit(&mut chunk);
    ready!(Pin::new(stream).poll_read(cx, &mut read))?;
    buf.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(parts: &[&[u8]]) -> bool {
        let mut s = Scan::default();
        let mut buf = Vec::new();
        let mut last = false;
        for p in parts {
            buf.extend_from_slice(p);
            last = s.complete(&buf).is_some();
        }
        last
    }

    #[test]
    fn end_of_head_is_found_across_reads() {
        assert!(done(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]));
        assert!(done(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n", b"\r", b"\n"]));
        assert!(done(&[b"GET / HTTP/1.1\nHost: a\n\n"]));
        assert!(done(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]));
        assert!(!done(&[b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n"]));
        assert!(!done(&[b"GET / HTTP/1.1\r\nX: a\r\n\r"]));
        let bytes = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n";
        let parts: Vec<&[u8]> = bytes.chunks(1).collect();
        assert!(done(&parts));
        assert!(!done(&parts[..parts.len() - 1]));
    }

    #[test]
    fn head_length_excludes_the_body() {
        let mut s = Scan::default();
        assert_eq!(s.complete(b"GET / HTTP/1.1\r\nA: b\r\n\r\nBODY"), Some(24));
        let mut s = Scan::default();
        assert_eq!(s.complete(b"GET / HTTP/1.1\nA: b\n\nBODY"), Some(21));
    }

    #[test]
    fn request_lines_over_the_limit_are_too_long() {
        let target = "a".repeat(MAX_REQUEST_LINE);
        assert!(request_line_too_long(
            format!("GET /{target} HTTP/1.1\r\n").as_bytes()
        ));
        // still arriving: already too long
        assert!(request_line_too_long(format!("GET /{target}").as_bytes()));
        assert!(!request_line_too_long(
            b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        let long_header = format!("GET / HTTP/1.1\r\nX: {target}\r\n\r\n");
        assert!(!request_line_too_long(long_header.as_bytes()));
    }

    #[test]
    fn header_fields_are_counted_up_to_the_limit() {
        let head = |n: usize| {
            let mut h = String::from("\r\nGET / HTTP/1.1\r\n");
            for i in 0..n {
                h.push_str(&format!("X-{i}: v\r\n"));
            }
            h + "\r\n"
        };
        assert!(!too_many_fields(head(MAX_HEADER_FIELDS).as_bytes()));
        assert!(too_many_fields(head(MAX_HEADER_FIELDS + 1).as_bytes()));
    }

    #[test]
    fn tls_and_binary_bytes_are_not_http() {
        assert_eq!(not_http(&[0x16, 0x03, 0x01]), Some(Head::Close));
        assert_eq!(not_http(b"\x00\x01"), Some(Head::Reject(400)));
        assert_eq!(not_http(b"GET /"), None);
        assert_eq!(not_http(b"\r\n"), None);
    }
}
