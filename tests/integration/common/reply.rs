//! What a [`TestBackend`](super::TestBackend) answers ([`Reply`], [`Mode`])
//! and what it records ([`RecordedRequest`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::client::find_header;

/// What a [`TestBackend`] does with a request it has fully read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer normally (after the configured delay).
    Respond,
    /// Reset the connection: `SO_LINGER 0` then close, so the peer gets a RST.
    Reset,
    /// Close the connection (FIN) without answering.
    Close,
    /// Never answer; keep the connection open until the backend stops.
    #[allow(dead_code)] // harness API beyond the current tests
    Hang,
}

/// A complete answer description, returned by handlers (see
/// [`TestBackend::set_handler`]) and used as the backend's default answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What to do; for anything but [`Mode::Respond`] only `delay` matters.
    pub mode: Mode,
    /// Status code.
    pub status: u16,
    /// Extra response headers (`x-backend` and the framing are added).
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
    /// Wait this long before acting.
    pub delay: Duration,
    /// Send the body with `Transfer-Encoding: chunked` (in two chunks).
    pub chunked: bool,
    /// Close the connection after this answer (`connection: close`).
    pub close: bool,
}

impl Reply {
    /// A normal answer with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        let (headers, delay) = (Vec::new(), Duration::ZERO);
        let body = body.into();
        Reply { mode: Mode::Respond, status, headers, body, delay, chunked: false, close: false }
    }

    /// A reply that resets the connection.
    pub fn reset() -> Reply {
        Reply { mode: Mode::Reset, ..Reply::new(0, "") }
    }

    /// A reply that closes the connection without answering.
    pub fn close_silently() -> Reply {
        Reply { mode: Mode::Close, ..Reply::new(0, "") }
    }

    /// A reply that never answers.
    #[allow(dead_code)] // harness API beyond the current tests
    pub fn hang() -> Reply {
        Reply { mode: Mode::Hang, ..Reply::new(0, "") }
    }

    /// Adds a response header.
    #[allow(dead_code)] // harness API beyond the current tests
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the delay.
    pub fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request as received by a [`TestBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Header fields, names lowercased, repeated fields kept.
    pub headers: Vec<(String, String)>,
    /// The body bytes, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Id of the TCP connection it came on (1, 2, ... per backend).
    pub conn_id: u64,
    /// Address of the peer (the proxy's upstream socket).
    pub peer: SocketAddr,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// A handler deciding the reply per request; `None` falls back to the
/// built-in behaviour. See [`TestBackend::set_handler`].
pub type Handler = Arc<dyn Fn(&RecordedRequest) -> Option<Reply> + Send + Sync>;
