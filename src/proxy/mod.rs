//! The one `ProxyHttp` implementation: pingora's request phases, each a thin
//! call into routing, pool selection, forwarding and error mapping.
//!
//! Flow of a request:
//! 1. `request_filter`: load the live [`RouteTable`], resolve the pool from
//!    the routing header (404 when none), start the request deadline.
//! 2. `upstream_peer`: pick a backend in the pool or, when it has none
//!    usable, in its fallback chain (503 when none); hold an in-flight slot.
//! 3. `upstream_request_filter`: add the forwarding headers.
//! 4. failures: `fail_to_connect` / `error_while_proxy` count the backend's
//!    failure; `fail_to_proxy` answers 502/503/504 with a JSON body.

mod ctx;
mod errors;
mod forward;

pub use ctx::RequestCtx;
pub use forward::request_id;

use crate::config::HashKey;
use crate::config::Strategy;
use crate::pool::{socket_addr, state_of, Pool};
use crate::routing::RouteTable;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idle time allowed between requests on a client keep-alive connection,
/// seconds (nginx's `keepalive_timeout` default).
const CLIENT_KEEPALIVE_SECS: u64 = 75;

/// The proxy application: routes each request to a pool and a backend.
pub struct Proxy {
    routes: Arc<ArcSwap<RouteTable>>,
}

impl Proxy {
    /// A proxy serving whatever table `routes` holds at each request.
    pub fn new(routes: Arc<ArcSwap<RouteTable>>) -> Self {
        Proxy { routes }
    }
}

/// The bytes a consistent-hash pool hashes for this request.
fn hash_key(pool: &Pool, session: &Session) -> Vec<u8> {
    match &pool.config.strategy {
        Strategy::Consistent(HashKey::ClientIp) => session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string().into_bytes())
            .unwrap_or_default(),
        Strategy::Consistent(HashKey::Header(h)) => session
            .req_header()
            .headers
            .get(h)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        Strategy::Consistent(HashKey::Path) => session.req_header().uri.path().as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(CLIENT_KEEPALIVE_SECS));
        }
        let table = self.routes.load_full();
        let value = session.req_header().headers.get(table.header());
        let Some(pool) = table.resolve(value.map(|v| v.as_bytes())).cloned() else {
            let asked = value.and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_string();
            errors::respond(session, 404, errors::message_for(404), &asked).await;
            return Ok(true);
        };
        let now = Instant::now();
        ctx.started = Some(now);
        ctx.deadline = Some(now + pool.config.timeouts.request);
        ctx.pool = Some(pool);
        ctx.table = Some(table);
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let (Some(table), Some(pool)) = (ctx.table.clone(), ctx.pool.clone()) else {
            return Err(Error::explain(ErrorType::InternalError, "request was not routed"));
        };
        let remaining = ctx
            .deadline
            .map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
        if remaining.is_zero() {
            ctx.last_timeout = true;
            return Err(Error::explain(ErrorType::HTTPStatus(504), "request deadline passed"));
        }
        let tried = &ctx.tried;
        let chosen = table.chain(&pool).find_map(|p| {
            let key = hash_key(p, session);
            p.select(&key, |b| !tried.contains(&socket_addr(b)))
                .map(|b| (p.clone(), b))
        });
        let Some((attempt_pool, backend)) = chosen else {
            let code = match (ctx.tries, ctx.last_timeout) {
                (0, _) => 503,
                (_, true) => 504,
                _ => 502,
            };
            return Err(Error::explain(ErrorType::HTTPStatus(code), "no usable backend"));
        };
        ctx.tries += 1;
        ctx.inflight = None; // release the previous attempt's slot first
        ctx.inflight = state_of(&backend).map(|s| s.start_request());
        let peer = attempt_pool.peer(&backend, remaining);
        ctx.attempt_pool = Some(attempt_pool);
        ctx.backend = Some(backend);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        forward::add_forwarding_headers(session, upstream_request)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            ctx.last_timeout = true;
            return Err(Error::explain(ErrorType::ReadTimedout, "request deadline passed").into_up());
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.last_timeout = errors::is_timeout(&e);
        self.attempt_failed(ctx);
        e.set_retry(false);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if e.esource() == &ErrorSource::Upstream {
            ctx.last_timeout = errors::is_timeout(&e);
        }
        // A stale pooled connection is retried once by pingora on the same
        // backend (nothing reached it); anything else is the backend's fault.
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        let stale_reuse = e.retry() && session.response_written().is_none();
        if !stale_reuse {
            e.set_retry(false);
            if e.esource() == &ErrorSource::Upstream {
                self.attempt_failed(ctx);
            }
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let code = errors::status_for(e, ctx.last_timeout);
        if code > 0 {
            let pool = ctx.attempt_pool.as_ref().or(ctx.pool.as_ref()).map_or("", |p| p.name());
            errors::respond(session, code, errors::message_for(code), pool).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        // "no usable backend" and friends are answered with their status;
        // logging each at error level would flood the log during an outage.
        matches!(error.etype(), ErrorType::HTTPStatus(_))
    }
}

impl Proxy {
    /// Counts a failed attempt on the current backend and remembers it so a
    /// retry picks another.
    fn attempt_failed(&self, ctx: &mut RequestCtx) {
        ctx.inflight = None;
        if let Some(b) = ctx.backend.take() {
            if let Some(s) = state_of(&b) {
                s.record_failure();
            }
            ctx.tried.push(socket_addr(&b));
        }
    }
}
