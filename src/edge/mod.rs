//! The client side of every listener: the pingora `ServerApp` that owns a
//! client connection before the proxy sees its requests.
//!
//! HTTP/2 connections (ALPN `h2` on TLS listeners) go to pingora's own h2
//! handling, with the listener's keep-alive timeout as the h2 idle
//! timeout. HTTP/1.x connections run pingora's keep-alive loop with the
//! listener's [`ClientLimits`] in front of each request: the head is read
//! by `head::read_head` (deadline, size, idle and garbage checks), then
//! handed to the proxy as already-read bytes. A request that breaks a
//! limit is answered here (408, 414, 431, 400 with the JSON error body) and
//! never reaches the routing, the metrics or the access log. Each HTTP/1
//! connection is wrapped in a [`TargetTap`]: the edge reports each head it
//! reads to it, and pingora reads the rest (bodies) through it.

mod carried;
mod head;

use crate::config::{ClientLimits, Listener};
use crate::linger;
use crate::proxy::raw_target::TargetTap;
use crate::proxy::Proxy;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

pub use head::Head;

/// The app of the proxy service: client limits, then the proxy.
pub struct EdgeApp {
    proxy: Arc<HttpProxy<Proxy>>,
    listeners: Vec<(SocketAddr, ClientLimits)>,
    /// Set, and the connections waiting idle for a next request woken, when
    /// a retiring instance closes its idle connections (after the linger).
    idle_closed: AtomicBool,
    closing: Notify,
    /// How long a retiring instance still reads requests on the
    /// connections it holds (see [`crate::linger`]).
    linger: Duration,
}

impl EdgeApp {
    /// Wraps `proxy` with the limits of each of `listen`; a retiring
    /// instance lingers `min(ACCEPT_LINGER, grace)` (`grace`:
    /// `server.grace_period_seconds`).
    pub fn new(proxy: HttpProxy<Proxy>, listen: &[Listener], grace: Duration) -> Self {
        let listeners = listen
            .iter()
            .filter_map(|l| {
                let addr = l.addr.to_socket_addrs().ok()?.next()?;
                Some((addr, l.limits))
            })
            .collect();
        EdgeApp {
            proxy: Arc::new(proxy),
            listeners,
            idle_closed: AtomicBool::new(false),
            closing: Notify::new(),
            linger: linger::ACCEPT_LINGER.min(grace),
        }
    }

    /// The limits of the listener that accepted `stream` (matched on the
    /// local address; a wildcard listen address matches any IP).
    fn limits_for(&self, stream: &Stream) -> &ClientLimits {
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        local
            .and_then(|local| {
                self.listeners.iter().find(|(addr, _)| {
                    addr.port() == local.port()
                        && (addr.ip() == local.ip() || addr.ip().is_unspecified())
                })
            })
            .map_or(&DEFAULT_LIMITS, |(_, l)| l)
    }
}

/// The limits of a connection no listener claims (none in practice).
static DEFAULT_LIMITS: LazyLock<ClientLimits> = LazyLock::new(ClientLimits::default);

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let limits = self.limits_for(&stream);
        // the first head is due `header_timeout` after the accept
        let mut first_deadline = Some(Instant::now() + limits.header_timeout);
        // the keep-alive wait's timer, reset for each wait (see head::next_bytes)
        let mut idle_timer = std::pin::pin!(tokio::time::sleep(limits.keepalive_timeout));
        let mut tap = TargetTap::new(stream);
        let mut persisted: Option<HttpPersistentSettings> = None;
        // whether pingora may hold bytes of a next request (see below)
        let mut may_hold_next = false;
        loop {
            // Bytes of a next request that pingora read with the previous
            // one (pipelining, RFC 9112 §9.3.2) are taken out of what it
            // carries over and read as the start of the next head: the same
            // checks and the same deadline as any other head.
            let ahead = match persisted.as_ref() {
                Some(p) if may_hold_next => carried::read_ahead(p),
                _ => carried::Ahead::Nothing,
            };
            let mut buf = BytesMut::new();
            // the reuses left, when pingora's carried settings are replaced
            let mut reuses = None;
            let deadline = match ahead {
                // pingora parses what it holds itself
                carried::Ahead::Unreadable => None,
                carried::Ahead::Bytes(bytes, left) => {
                    (buf, reuses, persisted) = (bytes, Some(left), None);
                    Some(Instant::now() + limits.header_timeout)
                }
                carried::Ahead::Nothing => {
                    // what a body left in the tap's line scanner and the
                    // write buffer are not kept while the connection waits
                    tap.going_idle();
                    // The first bytes are awaited like a keep-alive
                    // connection's next request (so a retiring instance
                    // closes a connection that has sent nothing at the end
                    // of its linger too): a first head up to its deadline,
                    // counted from the accept; a later one up to the idle
                    // timeout, and it is due `header_timeout` after its
                    // first byte.
                    let first = first_deadline.take();
                    let wait = first.map_or(limits.keepalive_timeout, |d| {
                        d.saturating_duration_since(Instant::now())
                    });
                    let arrived = head::next_bytes(
                        tap.raw(),
                        &mut buf,
                        wait,
                        idle_timer.as_mut(),
                        &self.closing,
                        &self.idle_closed,
                    )
                    .await;
                    if !arrived {
                        return None;
                    }
                    Some(first.unwrap_or_else(|| Instant::now() + limits.header_timeout))
                }
            };
            let pipelined = deadline.is_none();
            let mut extra = false;
            if let Some(deadline) = deadline {
                let taken = if reuses.is_some() { buf.len() } else { 0 };
                match head::read_head(tap.raw(), &mut buf, limits, deadline).await {
                    Head::Ready(len) if reuses.is_some() => {
                        // the tap saw the carried bytes when pingora read
                        // them: it goes on with what was read since
                        tap.note_more(&buf[taken..]);
                        extra = buf.len() > len;
                    }
                    Head::Ready(len) => {
                        tap.note_head(head::request_line(&buf), &buf[len..]);
                        extra = buf.len() > len;
                    }
                    Head::Close => return None,
                    Head::Reject(status) => {
                        // boxed: inline, its 4 KiB drain buffer would sit
                        // in every idle connection's future
                        Box::pin(reject(tap, status)).await;
                        return None;
                    }
                }
            }
            let head = (!pipelined).then_some(buf);
            let retiring = *shutdown.borrow();
            let session = next_session(tap, (persisted.take(), reuses), head, limits, retiring);
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            let stream;
            (stream, persisted) = reused.consume();
            // pingora hands back the transport it was given
            tap = stream.into_any().downcast::<TargetTap>().ok()?;
            // Bytes of a next request can only be what followed the head
            // in `buf`, or what pingora read itself (through the tap), or
            // left from an earlier pipelined request it parsed; otherwise
            // the persisted settings need no look.
            may_hold_next = pipelined || extra || tap.passed();
        }
    }

    /// Retiring (see [`crate::linger`]): every answer from now on says
    /// `Connection: close`; for the linger, a request on a connection the
    /// instance holds (idle keep-alive ones included: their last answer may
    /// have said keep-alive an instant before) is still served; then the
    /// idle connections are closed, and pingora's own cleanup runs.
    async fn cleanup(&self) {
        linger::retire();
        tokio::time::sleep(self.linger).await;
        self.idle_closed.store(true, Ordering::Release);
        self.closing.notify_waiters();
        self.proxy.http_cleanup().await
    }
}

/// The session of the next request on `tap`, as pingora's own keep-alive
/// loop (pingora-core `apps/mod.rs`) builds it, with the request `head`
/// already read (none when pingora holds a pipelined one): pingora's state
/// of the connection from the previous request (`persisted`), or on a
/// first request the listener's keep-alive `limits`.
///
/// A function of its own so that the session (680 bytes) is never part of
/// the connection's future, which an idle connection holds. `persisted`
/// comes with the reuses left when pingora's settings were replaced.
fn next_session(
    tap: Box<TargetTap>,
    (persisted, reuses): (Option<HttpPersistentSettings>, Option<Option<u32>>),
    head: Option<BytesMut>,
    limits: &ClientLimits,
    retiring: bool,
) -> ServerSession {
    let mut session = ServerSession::new_http1(tap);
    match persisted {
        Some(p) => p.apply_to_session(&mut session),
        None => {
            // idle time is enforced by `head::next_bytes`; pingora only
            // needs to know that keep-alive is on
            session.set_keepalive(Some(limits.keepalive_timeout.as_secs().max(1)));
            // pingora counts reuses: n requests = n - 1 reuses. When its
            // carried settings were replaced (see `carried`), this request
            // is one more reuse of those left, as pingora's
            // `apply_to_session` would count it.
            let left = match reuses {
                Some(left) => left.map(|n| n.saturating_sub(1)),
                None => Some(limits.keepalive_requests - 1),
            };
            session.set_keepalive_reuses_remaining(left);
        }
    }
    if retiring {
        session.set_keepalive(None);
    }
    if let Some(head) = head {
        session.set_pipelined_prefix(head);
    }
    session
}

/// Answers `status` with the JSON error body on a connection whose request
/// never reached the proxy, then closes it after a short linger so that
/// the client can read the answer before the socket is reset.
async fn reject(mut stream: Stream, status: u16) {
    let (reason, error) = match status {
        408 => ("Request Timeout", "request head not received in time"),
        431 => (
            "Request Header Fields Too Large",
            "request header fields too large",
        ),
        414 => ("URI Too Long", "request target too long"),
        _ => ("Bad Request", "malformed request"),
    };
    let body = format!("{}\n", serde_json::json!({ "error": error, "pool": "" }));
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    log::debug!("client connection answered {status}: {error}");
    let write = async {
        stream.write_all(resp.as_bytes()).await?;
        stream.flush().await
    };
    if tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .is_err()
    {
        return;
    }
    // lingering close (as nginx's lingering_close): read and discard what
    // the client is still sending, briefly, before closing
    let mut sink = [0u8; 4096];
    let mut budget = 256 * 1024usize;
    let linger = async {
        while budget > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
    pingora_core::protocols::Shutdown::shutdown(&mut *stream).await;
}
