//! The per-request state carried through pingora's phases ([`RequestCtx`])
//! and the forwarding headers of the upstream request ([`forward`]), shared
//! by the proxy phases and racing.

pub mod forward;

pub use forward::add_forwarding_headers;

use crate::pool::{BackendState, InflightGuard, Pool};
use crate::routing::RouteTable;
use pingora_load_balancing::Backend;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Everything one request remembers between phases.
#[derive(Default)]
pub struct RequestCtx {
    /// The route table the request started with (kept for its whole life,
    /// so a reload never changes a request mid-flight).
    pub table: Option<Arc<RouteTable>>,
    /// The pool the routing header chose.
    pub pool: Option<Arc<Pool>>,
    /// The pool of the current attempt: `pool` or one of its fallbacks.
    pub attempt_pool: Option<Arc<Pool>>,
    /// The backend of the current attempt.
    pub backend: Option<Backend>,
    /// A backend whose pooled connection turned out stale: the next attempt
    /// goes to it again (still usable), on another connection.
    pub stale_retry: Option<(Arc<Pool>, Backend)>,
    /// Holds the current backend's in-flight slot; released on drop.
    pub inflight: Option<InflightGuard>,
    /// Attempts made so far.
    pub tries: usize,
    /// Backends that failed this request; retries avoid them.
    pub tried: Vec<SocketAddr>,
    /// When the request started.
    pub started: Option<Instant>,
    /// The `timeouts.request` deadline.
    pub deadline: Option<Instant>,
    /// Whether the last failure was a timeout (for 504 vs 502).
    pub last_timeout: bool,
    /// Request body bytes read from the client so far.
    pub body_bytes: u64,
    /// The body is larger than `retries.max_body`: never replay it.
    pub body_unreplayable: bool,
    /// Retries made (attempts after the first).
    pub retries: usize,
    /// The current attempt's response head arrived (failures after it
    /// never count against the backend).
    pub head_received: bool,
    /// The last attempt failed for lack of a local resource (answered 503).
    pub local_error: bool,
    /// The backend whose answer went to the client.
    pub served: Option<Arc<BackendState>>,
    /// The cache's state for a request of a caching pool.
    pub cache: Option<Box<crate::cache::http::CacheCtx>>,
    /// When the current attempt started (its response-head latency feeds
    /// `peak_ewma` and adaptive hedging).
    pub attempt_started: Option<Instant>,
    /// The request was counted as a first attempt in its pool's retry budget.
    pub budget_deposited: bool,
}

impl RequestCtx {
    /// The name of the routed pool, or `""` before routing.
    pub fn pool_name(&self) -> &str {
        self.pool.as_ref().map_or("", |p| p.name())
    }
}
