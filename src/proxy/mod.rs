//! The one `ProxyHttp` implementation: pingora's request phases, each a thin
//! call into routing, pool selection, forwarding and error mapping.
//!
//! Flow of a request:
//! 1. `request_filter`: refuse ambiguous framing and normalise what the
//!    backend will see ([`hygiene`]); load the live [`RouteTable`], resolve the pool from
//!    the routing header (404 when none), start the request deadline.
//! 2. `upstream_peer`: pick a backend in the pool or, when it has none
//!    usable, in its fallback chain (503 when none); hold an in-flight slot.
//! 3. `upstream_request_filter`: add the forwarding headers.
//! 4. `response_filter`: clean the answer for the client (`downstream`).
//!    A caching pool's requests also pass pingora's cache phases
//!    (`cache_phases` into [`crate::cache::http`]); `Cache-Status` is set here.
//! 5. failures: `fail_to_connect` / `error_while_proxy` count the backend's
//!    failure; `fail_to_proxy` answers 502/503/504 with a JSON body.

mod attempt;
mod cache_phases;
mod downstream;
mod errors;
pub mod hygiene;
pub mod raw_target;
pub mod write_buffer;

pub use crate::request::RequestCtx;
pub use downstream::clean_response;

use crate::failure;
use crate::request::forward;

use crate::counters::Metrics;
use crate::pool::{socket_addr, state_of};
use crate::race;
use crate::ratelimit::Limiters;
use crate::retry;
use crate::routing::RouteTable;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idle time allowed between requests on a client keep-alive connection,
/// seconds (nginx's `keepalive_timeout` default).
const CLIENT_KEEPALIVE_SECS: u64 = 75;

/// The proxy application: routes each request to a pool and a backend.
pub struct Proxy {
    routes: Arc<ArcSwap<RouteTable>>,
    /// Upstream connections of raced requests (pingora's proxy pool is private).
    race_connector: Arc<Connector>,
    metrics: Arc<Metrics>,
    /// Rate-limit buckets of every pool (outlive reloads).
    limiters: Arc<Limiters>,
}

impl Proxy {
    /// A proxy serving whatever table `routes` holds at each request.
    pub fn new(routes: Arc<ArcSwap<RouteTable>>, conf: &ServerConf, metrics: Arc<Metrics>) -> Self {
        Proxy {
            routes,
            race_connector: Arc::new(race::connector(conf)),
            limiters: metrics.rate_limiters.clone(),
            metrics,
        }
    }
}

pub(crate) use attempt::observe_latency;
use attempt::{hash_key, write_access_log};

#[async_trait]
impl ProxyHttp for Proxy {
    /// Boxed: pingora moves the context through its per-request future
    /// (about three copies of it in the future that every request boxes),
    /// so a pointer there costs less than the 432-byte context.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::default()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        downstream::prepare_session(session);
        Ok(())
    }

    /// The answers made here (errors, a race) are boxed futures: inline,
    /// they would make the future every request allocates several KiB.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(CLIENT_KEEPALIVE_SECS));
        }
        let table = self.routes.load_full();
        let now = Instant::now();
        ctx.started = Some(now);
        let refused = if raw_target::was_escaped(session, session.req_header().raw_path()) {
            Err(hygiene::BAD_TARGET)
        } else {
            hygiene::check_framing(session.req_header())
        };
        if let Err((code, why)) = refused {
            ctx.table = Some(table);
            Box::pin(errors::respond(session, code, why, "", None)).await;
            return Ok(true);
        }
        hygiene::normalise(
            session.req_header_mut(),
            table.config.server.underscores_in_headers,
        );
        let value = session.req_header().headers.get(table.header());
        let resolved = table.resolve(value.map(|v| v.as_bytes())).cloned();
        let Some(pool) = resolved else {
            let asked = value
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim()
                .to_string();
            ctx.table = Some(table);
            Box::pin(errors::respond(
                session,
                404,
                errors::message_for(404),
                &asked,
                None,
            ))
            .await;
            return Ok(true);
        };
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        ctx.body_unreplayable = declared.is_some_and(|n| n > pool.config.retries.max_body);
        ctx.deadline = Some(now + pool.config.timeouts.request);
        // the first pool of the chain with a ready backend serves: raced
        // when it races, else through the normal phases below
        let serving = match pool.config.race {
            Some(_) => table.chain(&pool).find(|p| p.ready_count() > 0).cloned(),
            None => None,
        };
        let cached = cache_phases::caching(&pool);
        ctx.table = Some(table);
        if let Some(secs) = self.limiters.refuse(&pool.config, session) {
            let retry_after = [("retry-after", secs.to_string())];
            let msg = errors::message_for(429);
            Box::pin(errors::respond_with(
                session,
                429,
                msg,
                pool.name(),
                None,
                &retry_after,
            ))
            .await;
            ctx.pool = Some(pool);
            return Ok(true);
        }
        ctx.pool = Some(pool);
        if let Some(serving) = serving {
            if let Some(race) = &serving.config.race {
                if !cached && race::eligible(session, race) {
                    Box::pin(race::run(
                        session,
                        ctx,
                        &serving,
                        race,
                        &self.race_connector,
                    ))
                    .await?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    cache_phases::cache_phases!();

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<bool> {
        // a racing caching pool races its misses ([`crate::cache::fill`]);
        // boxed, as that future is large and most requests do not cache
        if ctx.cache.is_none() {
            return Ok(true);
        }
        Box::pin(crate::cache::fill::race_miss(
            session,
            ctx,
            &self.race_connector,
        ))
        .await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let (Some(table), Some(pool)) = (ctx.table.clone(), ctx.pool.clone()) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "request was not routed",
            ));
        };
        let now = Instant::now();
        let remaining = ctx
            .deadline
            .map_or(Duration::MAX, |d| d.saturating_duration_since(now));
        if remaining.is_zero() {
            ctx.last_timeout = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(504),
                "request deadline passed",
            ));
        }
        let tried = &ctx.tried;
        let pick = |avoid_tried: bool| {
            table.chain(&pool).find_map(|p| {
                let key = hash_key(p, session);
                p.select(&key, |b| !avoid_tried || !tried.contains(&socket_addr(b)))
                    .map(|b| (p.clone(), b))
            })
        };
        // after a stale pooled connection the same backend; else a backend
        // not tried yet when one exists, else any usable one
        let stale = ctx.stale_retry.take().filter(|(p, b)| p.is_ready(b));
        let chosen =
            stale
                .or_else(|| pick(true))
                .or_else(|| if tried.is_empty() { None } else { pick(false) });
        let Some((attempt_pool, backend)) = chosen else {
            let code = match (ctx.tries, ctx.last_timeout) {
                (0, _) => 503,
                (_, true) => 504,
                _ => 502,
            };
            return Err(Error::explain(
                ErrorType::HTTPStatus(code),
                "no usable backend",
            ));
        };
        ctx.tries += 1;
        if !ctx.budget_deposited {
            ctx.budget_deposited = true;
            attempt_pool.stats.budget.deposit_at(now);
        }
        ctx.attempt_started = Some(now);
        if ctx.tries > 1 {
            ctx.retries += 1;
            pool.stats
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ctx.inflight = None; // release the previous attempt's slot first
        ctx.inflight = state_of(&backend).map(|s| s.start_request());
        let upgrade = session
            .req_header()
            .headers
            .contains_key(http::header::UPGRADE);
        let peer = attempt_pool.peer(&backend, remaining, upgrade);
        ctx.head_received = false;
        ctx.attempt_pool = Some(attempt_pool);
        ctx.backend = Some(backend);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        downstream::prepare_proxied(session);
        forward::add_forwarding_headers(session, upstream_request)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(b), Some(pool)) = (body.as_ref(), ctx.pool.as_ref()) {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > pool.config.retries.max_body {
                ctx.body_unreplayable = true;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        crate::cache::http::note_not_modified(session, upstream_response, ctx);
        let code = upstream_response.status.as_u16();
        if upstream_response.status.is_informational() && code != 101 {
            return Ok(());
        }
        // only a retryable status (502/503/504) of a pool that retries it
        // goes further; every other answer ends here
        let pool = retry::status_kind(code).and_then(|kind| {
            ctx.attempt_pool
                .as_ref()
                .filter(|p| p.config.retries.retries(kind))
                .cloned()
        });
        let Some(pool) = pool else {
            self.answered(ctx);
            return Ok(());
        };
        self.retry_status(session, ctx, &pool, code)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        crate::cache::http::annotate(session, upstream_response, ctx);
        downstream::clean_response(session, upstream_response);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let cause = failure::connect_cause(&e);
        let at = failure::Attempt {
            reused: false,
            reused_only: false,
            head_received: false,
            state: self.attempt_state(session, ctx),
        };
        let retry = self.account(ctx, cause, at, &e, peer);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        self.proxy_error(peer, session, e, ctx, client_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        errors::fail_to_proxy(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let code = session.response_written().map_or(0, |r| r.status.as_u16());
        crate::cache::http::count(ctx);
        if let Some(log) = ctx.table.as_ref().and_then(|t| t.access_log.as_ref()) {
            write_access_log(log, session, ctx, code);
        }
        let Some(pool) = &ctx.pool else {
            self.metrics.unrouted.add(code);
            downstream::linger(session, e).await;
            return;
        };
        if let Some(started) = ctx.started {
            let took = started.elapsed();
            pool.stats.duration.observe(took);
            if let Some(s) = &ctx.served {
                s.recent.record_response(took, code);
            }
        }
        match &ctx.served {
            Some(s) => s.codes.add(code),
            None => pool.stats.unserved.add(code),
        }
        downstream::linger(session, e).await;
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Self::CTX,
        _error: &Error,
        _context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        // retries are counted per pool and backend; a warning each would
        // flood the log when a backend dies under load
        true
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, error: &Error) -> bool {
        // Answered with their status: "no usable backend" and friends, and
        // clients that went away or went silent mid-request (their 408 is in
        // the access log). Logging each at error level
        // would flood the log during an outage or at every load-test end.
        // Local resource errors are logged once per second where counted.
        ctx.local_error
            || matches!(error.etype(), ErrorType::HTTPStatus(_))
            || (error.esource() == &ErrorSource::Downstream
                && matches!(
                    error.etype(),
                    ErrorType::ConnectionClosed
                        | ErrorType::WriteError
                        | ErrorType::ReadError
                        | ErrorType::ReadTimedout
                ))
    }
}
