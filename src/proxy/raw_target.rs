//! The request target as the client sent it.
//!
//! pingora's HTTP/1 parser percent-escapes the bytes RFC 9112 §3.2 does not
//! allow in a request target (control bytes, space, `"`, `<`, `>`) and then
//! parses the escaped line, so `RequestHeader::raw_path()` shows `%0D`,
//! `%20`, ... and a target that held a raw CR or a bare space looks the
//! same as one a client percent-encoded correctly. nginx and HAProxy answer
//! 400 to the former; so does switchyard.
//!
//! The edge ([`crate::edge`]) wraps every HTTP/1 client connection's
//! transport in a [`TargetTap`], which remembers, per connection, the
//! escaped form of each request line pingora's parser will have escaped
//! (the same pattern and escape set as pingora-core 0.9.1's
//! `escape_illegal_request_line`). [`was_escaped`] tells the proxy's first
//! phase whether the target it got is one of them. A head the edge reads
//! itself is looked at once, at its request line ([`TargetTap::note_head`]);
//! bytes pingora reads through the tap (bodies, and requests pipelined
//! after them) get one `memchr` pass and a look at each line. A line is
//! copied only when a read ends in its middle, and only escaped targets are
//! kept, so for well-formed traffic the tap holds nothing.

use super::write_buffer::WriteBuffer;
use async_trait::async_trait;
use percent_encoding::{percent_encode, AsciiSet, CONTROLS};
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_proxy::Session;
use regex::bytes::Regex;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bytes pingora-core escapes in a request line (its `URI_ESC_CHARSET`).
const ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'<').add(b'>').add(b'"');

/// Whether RFC 9112 forbids `b` in a request target and pingora-core
/// escapes it: control bytes, DEL, space, `"`, `<`, `>`. (Bytes above
/// 0x7F are let through, as nginx does: they carry no framing.)
fn is_escaped(b: u8) -> bool {
    b < 0x20 || b == 0x7f || matches!(b, b' ' | b'"' | b'<' | b'>')
}

/// pingora-core's request-line pattern (`REQUEST_LINE_REGEX`).
static REQUEST_LINE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\w+ (?P<uri>.+) HTTP/\d(?:\.\d)?").ok());

/// Longest line examined (pingora's request header limit is larger; a
/// longer request line is refused by it anyway).
const MAX_LINE: usize = 8192;

/// Escaped targets remembered per connection (the most recent ones).
const REMEMBERED: usize = 4;

/// Whether `target` (from `raw_path()`) holds a byte RFC 9112 does not
/// allow in a request target, or is the escaped form of a request line the
/// client sent with such bytes on this connection (then it is forgotten).
pub fn was_escaped(session: &Session, target: &[u8]) -> bool {
    if target.iter().any(|b| is_escaped(*b)) {
        return true;
    }
    if !target.contains(&b'%') {
        return false;
    }
    let tap = session
        .as_downstream()
        .stream()
        .and_then(|s| s.as_any().downcast_ref::<TargetTap>());
    let Some(tap) = tap else { return false };
    let Ok(mut seen) = tap.escaped.lock() else {
        return false;
    };
    match seen.iter().position(|t| **t == *target) {
        Some(i) => {
            seen.remove(i);
            true
        }
        None => false,
    }
}

/// A client connection's transport, watched for request lines that
/// pingora's parser escapes.
#[derive(Debug)]
pub struct TargetTap {
    inner: Stream,
    lines: LineScanner,
    escaped: Mutex<VecDeque<Box<[u8]>>>,
    /// Whether bytes were read through the tap since the last
    /// [`TargetTap::note_head`].
    passed: bool,
    /// What pingora writes, coalesced (the transport has no write buffer).
    out: WriteBuffer,
}

impl TargetTap {
    /// Watches `inner`.
    pub fn new(inner: Stream) -> Box<TargetTap> {
        Box::new(TargetTap {
            inner,
            lines: LineScanner::default(),
            escaped: Mutex::new(VecDeque::new()),
            passed: false,
            out: WriteBuffer::default(),
        })
    }

    /// The transport itself, for reading a request head past the tap (the
    /// reader then reports the head with [`TargetTap::note_head`]).
    pub fn raw(&mut self) -> &mut Stream {
        &mut self.inner
    }

    /// Takes note of a request head read past the tap: its request line
    /// (without the LF), then `rest`, what arrived after the head (a body's
    /// start, pipelined requests), which is scanned as if read through the
    /// tap. Resets [`TargetTap::passed`].
    pub fn note_head(&mut self, request_line: &[u8], rest: &[u8]) {
        self.lines = LineScanner::default();
        if let Some(target) = escaped_target(request_line) {
            remember(&self.escaped, target);
        }
        self.scan(rest);
        self.passed = false;
    }

    /// Takes note of `more` bytes of a head the tap has seen the start of
    /// (read ahead by pingora, through the tap), read past the tap since:
    /// they are scanned as if read through it. Resets
    /// [`TargetTap::passed`].
    pub fn note_more(&mut self, more: &[u8]) {
        self.scan(more);
        self.passed = false;
    }

    /// Before the connection waits idle for a next request that the edge
    /// reads itself (and notes with [`TargetTap::note_head`]): forgets the
    /// partial line a body may have left (up to 8 KiB) and releases the
    /// write buffer.
    pub fn going_idle(&mut self) {
        self.lines = LineScanner::default();
        self.out.release();
    }

    /// Whether pingora read bytes through the tap since the last head was
    /// noted: if not, it holds no bytes of a next request it read itself.
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// Feeds bytes the client sent.
    fn scan(&mut self, data: &[u8]) {
        let escaped = &self.escaped;
        self.lines.scan(data, |target| remember(escaped, target));
    }
}

/// Keeps `target` among the [`REMEMBERED`] most recent escaped targets.
fn remember(escaped: &Mutex<VecDeque<Box<[u8]>>>, target: Vec<u8>) {
    if let Ok(mut seen) = escaped.lock() {
        if seen.len() == REMEMBERED {
            seen.pop_front();
        }
        seen.push_back(target.into_boxed_slice());
    }
}

/// Splits the client's bytes into lines and finds the request lines
/// pingora's parser escapes.
#[derive(Debug, Default)]
struct LineScanner {
    /// The current line so far.
    line: Vec<u8>,
    /// The current line is longer than [`MAX_LINE`]: ignored to its end.
    skipping: bool,
}

impl LineScanner {
    /// Feeds `data`; calls `found` with the escaped target of each request
    /// line that pingora escapes. A line that ends within `data` is looked
    /// at in place; only a line cut by the end of a read is copied.
    fn scan(&mut self, mut data: &[u8], mut found: impl FnMut(Vec<u8>)) {
        while let Some(i) = memchr::memchr(b'\n', data) {
            let part = &data[..i];
            let target = if self.skipping {
                None
            } else if self.line.is_empty() {
                escaped_target(part)
            } else if self.line.len() + part.len() <= MAX_LINE {
                self.line.extend_from_slice(part);
                escaped_target(&self.line)
            } else {
                None
            };
            if let Some(t) = target {
                found(t);
            }
            self.line.clear();
            self.skipping = false;
            data = &data[i + 1..];
        }
        if !data.is_empty() && !self.skipping {
            if self.line.len() + data.len() > MAX_LINE {
                self.skipping = true;
                self.line = Vec::new();
            } else {
                self.line.extend_from_slice(data);
            }
        }
        if self.line.is_empty() && self.line.capacity() > 1024 {
            self.line = Vec::new();
        }
    }
}

/// The target pingora makes of request line `line` (without its LF) when
/// it escapes it; `None` when it does not.
fn escaped_target(line: &[u8]) -> Option<Vec<u8>> {
    let body = line.strip_suffix(b"\r").unwrap_or(line);
    // a request line has two spaces and no other escaped byte
    let suspicious = body.iter().any(|b| *b != b' ' && is_escaped(*b))
        || body.iter().filter(|b| **b == b' ').count() > 2;
    if !suspicious {
        return None;
    }
    let captures = REQUEST_LINE.as_ref()?.captures(line)?;
    let uri = captures.name("uri")?.as_bytes();
    let escaped: Vec<u8> = percent_encode(uri, ESCAPED).flat_map(str::bytes).collect();
    (escaped != uri).then_some(escaped)
}

impl AsyncRead for TargetTap {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // pingora reads here whenever it waits (see `write_buffer`): what it
        // wrote goes out first, without waiting for the socket
        if !this.out.is_empty() {
            if let Poll::Ready(Ok(())) = this.out.poll_drain(&mut this.inner, cx) {
                let _ = Pin::new(&mut this.inner).poll_flush(cx);
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.passed |= buf.filled().len() > before;
            this.scan(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for TargetTap {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.out.poll_write(&mut this.inner, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.out.poll_flush(&mut this.inner, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.out.poll_shutdown(&mut this.inner, cx)
    }
}

impl Drop for TargetTap {
    fn drop(&mut self) {
        self.out.drain_now(&mut self.inner);
    }
}

#[async_trait]
impl Shutdown for TargetTap {
    async fn shutdown(&mut self) {
        let inner = &mut self.inner;
        let _ = std::future::poll_fn(|cx| self.out.poll_drain(inner, cx)).await;
        inner.shutdown().await
    }
}

impl UniqueID for TargetTap {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for TargetTap {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for TargetTap {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for TargetTap {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for TargetTap {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for TargetTap {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noted_head_is_checked_at_its_request_line_and_what_follows_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let (a, _b) = rt
            .block_on(async { tokio::net::UnixStream::pair() })
            .unwrap();
        let stream = pingora_core::protocols::l4::stream::Stream::from(a);
        let mut tap = TargetTap::new(Box::new(stream));
        let head = b"\r\nGET /a b HTTP/1.1\r\nUser-Agent: x y z w\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"GET /c\x01d HTTP/1.1\r\n\r\n");
        tap.note_head(b"GET /a b HTTP/1.1\r", &buf[head.len()..]);
        let seen: Vec<_> = tap.escaped.lock().unwrap().iter().cloned().collect();
        assert_eq!(
            seen,
            vec![b"/a%20b".to_vec().into(), b"/c%01d".to_vec().into()]
        );
        assert!(!tap.passed());
    }

    #[test]
    fn finds_the_escaped_form_of_bad_request_lines_only() {
        let mut scanner = LineScanner::default();
        let mut seen = Vec::new();
        let mut feed = |data: &[u8]| scanner.scan(data, |t| seen.push(t));
        feed(b"GET /ok?a=%20b HTTP/1.1\r\nHost: x\r\nUser-Agent: a b c d\r\n\r\n");
        feed(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n");
        feed(b"GET /c\x01d HT");
        feed(b"TP/1.1\r\n\r\nGET /e\rf HTTP/1.1\r\n");
        assert_eq!(
            seen,
            vec![b"/a%20b".to_vec(), b"/c%01d".to_vec(), b"/e%0Df".to_vec()]
        );
    }
}
