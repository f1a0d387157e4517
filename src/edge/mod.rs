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
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

pub use head::Head;

/// The app of the proxy service: client limits, then the proxy.
pub struct EdgeApp {
    proxy: Arc<HttpProxy<Proxy>>,
    listeners: Vec<(SocketAddr, ClientLimits)>,
    /// Wakes the connections waiting idle for a next request when the
    /// instance retires.
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
        let mut tap = TargetTap::new(stream);
        let mut persisted: Option<HttpPersistentSettings> = None;
        // whether pingora may hold bytes of a next request (see below)
        let mut may_hold_next = false;
        loop {
            // A pipelined request (RFC 9112 §9.3.2) already read with the
            // previous one is in the persisted settings: pingora parses it
            // from there; its bytes arrived, so no deadline applies.
            let pipelined =
                may_hold_next && persisted.as_ref().is_some_and(carries_pipelined_request);
            let mut buf = BytesMut::new();
            let mut extra = false;
            if !pipelined {
                // what a body left in the tap's line scanner and the
                // write buffer are not kept while the connection waits idle
                tap.going_idle();
                let deadline = match first_deadline.take() {
                    Some(deadline) => deadline,
                    // a later one `header_timeout` after its first byte
                    None if head::next_bytes(
                        tap.raw(),
                        &mut buf,
                        limits.keepalive_timeout,
                        &self.closing,
                        shutdown,
                    )
                    .await =>
                    {
                        Instant::now() + limits.header_timeout
                    }
                    None => return None,
                };
                match head::read_head(tap.raw(), &mut buf, limits, deadline).await {
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
            let session = next_session(tap, persisted.take(), head, limits, retiring);
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            let stream;
            (stream, persisted) = reused.consume();
            // pingora hands back the transport it was given
            tap = stream.into_any().downcast::<TargetTap>().ok()?;
            // Bytes of a next request can only be what followed the head
            // in `buf`, or what pingora read itself (through the tap), or
            // left from an earlier pipelined request; otherwise the
            // persisted settings need no look.
            may_hold_next = pipelined || extra || tap.passed();
        }
    }

    /// Retiring: idle connections are closed now, then (after the linger,
    /// see [`crate::linger`]) pingora's own cleanup closes the connections
    /// still waiting inside the proxy.
    async fn cleanup(&self) {
        linger::retire();
        self.closing.notify_waiters();
        tokio::time::sleep(self.linger).await;
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
/// the connection's future, which an idle connection holds.
fn next_session(
    tap: Box<TargetTap>,
    persisted: Option<HttpPersistentSettings>,
    head: Option<BytesMut>,
    limits: &ClientLimits,
    retiring: bool,
) -> ServerSession {
    let mut session = ServerSession::new_http1(tap);
    match persisted {
        Some(p) => p.apply_to_session(&mut session),
        None => {
            // idle time is enforced by `read_head`; pingora only
            // needs to know that keep-alive is on
            session.set_keepalive(Some(limits.keepalive_timeout.as_secs().max(1)));
            // pingora counts reuses: n requests = n - 1 reuses
            session.set_keepalive_reuses_remaining(Some(limits.keepalive_requests - 1));
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

/// Whether `settings` carry bytes of a next request that arrived with the
/// previous one. pingora 0.9.1 keeps them in a private field of
/// `HttpPersistentSettings` (applied by `apply_to_session`) with no getter;
/// its `Debug` form is the one public view of it. The form is scanned as it
/// is written, with no allocation, and the scan stops at that field, before
/// any buffered bytes would be formatted. The pipelining test of
/// `tests/integration/relay.rs` fails if the form ever changes.
fn carries_pipelined_request(settings: &HttpPersistentSettings) -> bool {
    let mut probe = PrefixProbe::default();
    // the probe ends the formatting with an error once it has its answer
    let _ = std::fmt::write(&mut probe, format_args!("{settings:?}"));
    probe.found == Some(true)
}

/// A `fmt::Write` sink that looks for `pipelined_prefix: Some(` in what is
/// written to it and aborts the formatting as soon as it knows.
#[derive(Default)]
struct PrefixProbe {
    /// Matched so far of [`PrefixProbe::FIELD`] (pieces may split it).
    matched: usize,
    /// Whether the field holds `Some`, once the field was seen.
    found: Option<bool>,
}

impl PrefixProbe {
    const FIELD: &'static [u8] = b"pipelined_prefix: ";
}

impl std::fmt::Write for PrefixProbe {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for &b in s.as_bytes() {
            if self.matched == Self::FIELD.len() {
                self.found = Some(b == b'S');
                return Err(std::fmt::Error);
            }
            self.matched = if b == Self::FIELD[self.matched] {
                self.matched + 1
            } else {
                usize::from(b == Self::FIELD[0])
            };
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

    fn probe(pieces: &[&str]) -> Option<bool> {
        let mut p = PrefixProbe::default();
        for piece in pieces {
            if p.write_str(piece).is_err() {
                break;
            }
        }
        p.found
    }

    #[test]
    fn the_prefix_field_is_found_across_pieces() {
        assert_eq!(
            probe(&["X { pipelined_prefix: Some(b\"GET\") }"]),
            Some(true)
        );
        assert_eq!(probe(&["X { pipelined_prefix: None, y: 1 }"]), Some(false));
        assert_eq!(
            probe(&["X { pipe", "lined_prefix", ": ", "Some", "(..)"]),
            Some(true)
        );
        assert_eq!(probe(&["X { ppipelined_prefix: Some(1) }"]), Some(true));
        assert_eq!(probe(&["X { keepalive_timeout: Some(60) }"]), None);
    }
}
