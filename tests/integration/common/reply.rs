//! What a [`TestBackend`](super::TestBackend) answers ([`Reply`], [`Mode`])
//! and what it records ([`RecordedRequest`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::find_header;

/// What a [`TestBackend`] does with a request it has fully read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer normally (after the delay).
    Respond,
    /// `SO_LINGER 0` then close: the peer gets a RST.
    Reset,
    /// Close (FIN) without answering.
    Close,
    /// Never answer; the connection stays open until the backend stops.
    Hang,
}

/// A whole answer: returned by handlers, and the backend's default answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// For anything but [`Mode::Respond`] only `delay` matters.
    pub mode: Mode,
    pub status: u16,
    /// Extra headers (`x-backend` and the framing are added).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before acting.
    pub delay: Duration,
    /// `Transfer-Encoding: chunked`, in two chunks.
    pub chunked: bool,
    /// `connection: close` after this answer.
    pub close: bool,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        let (headers, delay) = (Vec::new(), Duration::ZERO);
        let body = body.into();
        Reply { mode: Mode::Respond, status, headers, body, delay, chunked: false, close: false }
    }

    pub fn reset() -> Reply {
        Reply { mode: Mode::Reset, ..Reply::new(0, "") }
    }

    pub fn close_silently() -> Reply {
        Reply { mode: Mode::Close, ..Reply::new(0, "") }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request as received by a [`TestBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Names lowercased, repeated fields kept.
    pub headers: Vec<(String, String)>,
    /// De-chunked.
    pub body: Vec<u8>,
    pub chunked: bool,
    /// Id of the TCP connection it came on (1, 2, ... per backend).
    pub conn_id: u64,
    /// The proxy's upstream socket.
    pub peer: SocketAddr,
    /// When it was fully read.
    pub at: Instant,
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

/// Decides the reply per request; `None` falls back to the built-in behaviour.
pub type Handler = Arc<dyn Fn(&RecordedRequest) -> Option<Reply> + Send + Sync>;
