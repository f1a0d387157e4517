//! The one `ProxyHttp` implementation: pingora's request phases, each a thin
//! call into routing, pool selection, forwarding and error mapping.
//!
//! Flow of a request:
//! 1. `request_filter`: load the live [`RouteTable`], resolve the pool from
//!    the routing header (404 when none), start the request deadline.
//! 2. `upstream_peer`: pick a backend in the pool or, when it has none
//!    usable, in its fallback chain (503 when none); hold an in-flight slot.
//! 3. `upstream_request_filter`: add the forwarding headers.
//! 4. `response_filter`: clean the answer for the client ([`downstream`]).
//! 5. failures: `fail_to_connect` / `error_while_proxy` count the backend's
//!    failure; `fail_to_proxy` answers 502/503/504 with a JSON body.

mod ctx;
mod downstream;
mod errors;
mod forward;

pub use ctx::RequestCtx;
pub use downstream::clean_response;
pub use errors::is_timeout;
pub use forward::{add_forwarding_headers, request_id};

use crate::access_log::{AccessLogger, Entry};
use crate::config::HashKey;
use crate::config::Strategy;
use crate::metrics::{AttemptResult, Metrics};
use crate::pool::{socket_addr, state_of, Pool};
use crate::race;
use crate::retry;
use crate::routing::RouteTable;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
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
}

impl Proxy {
    /// A proxy serving whatever table `routes` holds at each request.
    pub fn new(routes: Arc<ArcSwap<RouteTable>>, conf: &ServerConf, metrics: Arc<Metrics>) -> Self {
        let options = ConnectorOptions::from_server_conf(conf);
        Proxy {
            routes,
            race_connector: Arc::new(Connector::new(Some(options))),
            metrics,
        }
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

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        downstream::prepare_session(session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(CLIENT_KEEPALIVE_SECS));
        }
        let table = self.routes.load_full();
        let value = session.req_header().headers.get(table.header());
        let resolved = table.resolve(value.map(|v| v.as_bytes())).cloned();
        let now = Instant::now();
        ctx.started = Some(now);
        let Some(pool) = resolved else {
            let asked = value
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim()
                .to_string();
            ctx.table = Some(table);
            errors::respond(session, 404, errors::message_for(404), &asked, None).await;
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
        ctx.table = Some(table);
        ctx.pool = Some(pool.clone());
        if let Some(race) = &pool.config.race {
            if race::eligible(session, race) {
                race::run(session, ctx, &pool, race, &self.race_connector).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(table), Some(pool)) = (ctx.table.clone(), ctx.pool.clone()) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "request was not routed",
            ));
        };
        let remaining = ctx.deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
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
        // a backend not tried yet when one exists, else any usable one
        let chosen = pick(true).or_else(|| if tried.is_empty() { None } else { pick(false) });
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
        if ctx.tries > 1 {
            ctx.retries += 1;
            pool.stats
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
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
        downstream::prepare_proxied(session);
        forward::add_forwarding_headers(session, upstream_request)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
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
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let code = upstream_response.status.as_u16();
        if upstream_response.status.is_informational() {
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
        let failure = retry::Failure::Status(code);
        let state = self.attempt_state(session, ctx);
        // Retry only when another backend can take it; otherwise the client
        // gets this answer as it is.
        let current = ctx.backend.as_ref().map(socket_addr);
        let alternative = ctx.table.as_ref().is_some_and(|t| {
            ctx.pool.as_ref().is_some_and(|routed| {
                t.chain(routed).any(|p| {
                    p.select(b"", |b| {
                        let a = socket_addr(b);
                        Some(a) != current && !ctx.tried.contains(&a)
                    })
                    .is_some()
                })
            })
        });
        if alternative && retry::should_retry(&pool.config.retries, failure, state) {
            record(ctx, AttemptResult::RetriedStatus);
            let mut e = Error::explain(
                ErrorType::HTTPStatus(code),
                "backend answered a retryable status",
            );
            e.set_retry(true);
            return Err(e.into_up());
        }
        self.answered(ctx);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        downstream::clean_response(session, upstream_response);
        Ok(())
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
            return Err(
                Error::explain(ErrorType::ReadTimedout, "request deadline passed").into_up(),
            );
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.last_timeout = errors::is_timeout(&e);
        let result = if ctx.last_timeout {
            AttemptResult::Timeout
        } else {
            AttemptResult::ConnectFailure
        };
        record(ctx, result);
        self.attempt_failed(ctx, true);
        let retry = ctx.attempt_pool.as_ref().is_some_and(|p| {
            let state = self.attempt_state(session, ctx);
            retry::should_retry(&p.config.retries, retry::classify_connect(&e), state)
        });
        e.set_retry(retry);
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
        // Pingora's own rule first: a failure on a reused (pooled)
        // connection gets a free retry (it may be a keep-alive close racing
        // our request), which does not count against `attempts`. As nginx
        // does, it still counts as a passive failure: pingora drops idle
        // connections the backend closed, so this is rarely benign.
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && !ctx.body_unreplayable;
        let reused_only = matches!(e.retry, pingora_core::RetryType::ReusedOnly);
        if replayable {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        if reused_only && e.retry() && session.response_written().is_none() {
            record(ctx, AttemptResult::Reset);
            ctx.tries = ctx.tries.saturating_sub(1);
            ctx.inflight = None;
            if let (Some(p), Some(b)) = (&ctx.attempt_pool, ctx.backend.take()) {
                p.record_failure(&b);
            }
            return e;
        }
        let failure = retry::classify(&e);
        if e.esource() == &ErrorSource::Upstream {
            ctx.last_timeout = failure == retry::Failure::Timeout;
        }
        let backend_fault = matches!(failure, retry::Failure::Reset | retry::Failure::Timeout)
            && e.esource() == &ErrorSource::Upstream;
        if backend_fault {
            let result = match failure {
                retry::Failure::Timeout => AttemptResult::Timeout,
                _ => AttemptResult::Reset,
            };
            record(ctx, result);
        }
        self.attempt_failed(ctx, backend_fault);
        let retry = e.esource() != &ErrorSource::Downstream
            && ctx.attempt_pool.as_ref().is_some_and(|p| {
                let state = self.attempt_state(session, ctx);
                retry::should_retry(&p.config.retries, failure, state)
            });
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = errors::status_for(e, ctx.last_timeout);
        if code > 0 {
            let pool = ctx
                .attempt_pool
                .as_ref()
                .or(ctx.pool.as_ref())
                .map_or("", |p| p.name());
            let attempts = (ctx.tries > 0 && matches!(code, 502 | 504)).then_some(ctx.tries);
            errors::respond(session, code, errors::message_for(code), pool, attempts).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let code = session.response_written().map_or(0, |r| r.status.as_u16());
        if let Some(log) = ctx.table.as_ref().and_then(|t| t.access_log.as_ref()) {
            write_access_log(log, session, ctx, code);
        }
        let Some(pool) = &ctx.pool else {
            self.metrics.unrouted.add(code);
            downstream::linger(session).await;
            return;
        };
        if let Some(started) = ctx.started {
            pool.stats.duration.observe(started.elapsed());
        }
        match &ctx.served {
            Some(s) => s.codes.add(code),
            None => pool.stats.unserved.add(code),
        }
        downstream::linger(session).await;
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        _context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        // retries are counted per pool and backend; a warning each would
        // flood the log when a backend dies under load
        true
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        // Answered with their status: "no usable backend" and friends, and
        // clients that went away mid-request. Logging each at error level
        // would flood the log during an outage or at every load-test end.
        matches!(error.etype(), ErrorType::HTTPStatus(_))
            || (error.esource() == &ErrorSource::Downstream
                && matches!(
                    error.etype(),
                    ErrorType::ConnectionClosed | ErrorType::WriteError | ErrorType::ReadError
                ))
    }
}

impl Proxy {
    /// Ends the current attempt as failed: releases its in-flight slot,
    /// remembers the backend so a retry picks another, and (for connect
    /// errors, resets and timeouts) feeds passive ejection.
    fn attempt_failed(&self, ctx: &mut RequestCtx, backend_fault: bool) {
        ctx.inflight = None;
        if let Some(b) = ctx.backend.take() {
            if backend_fault {
                if let Some(p) = &ctx.attempt_pool {
                    p.record_failure(&b);
                }
            }
            ctx.tried.push(socket_addr(&b));
        }
    }

    /// The current backend's answer is the one going to the client.
    fn answered(&self, ctx: &mut RequestCtx) {
        record(ctx, AttemptResult::Ok);
        ctx.served = ctx.backend.as_ref().and_then(|b| state_of(b).cloned());
    }

    /// What a retry decision needs to know about the request now.
    fn attempt_state(&self, session: &Session, ctx: &RequestCtx) -> retry::AttemptState {
        retry::AttemptState {
            tries: ctx.tries,
            idempotent: session.req_header().method.is_idempotent(),
            replayable: !ctx.body_unreplayable && !session.as_ref().retry_buffer_truncated(),
            response_started: session.response_written().is_some(),
        }
    }
}

/// Counts the current attempt's result on its backend.
fn record(ctx: &RequestCtx, result: AttemptResult) {
    if let Some(s) = ctx.backend.as_ref().and_then(state_of) {
        s.record_attempt(result);
    }
}

/// Writes the request's access log line.
fn write_access_log(log: &AccessLogger, session: &Session, ctx: &RequestCtx, status: u16) {
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let req = session.req_header();
    let uri = req.uri.to_string();
    log.write(&Entry {
        client: &client,
        method: req.method.as_str(),
        uri: &uri,
        status,
        pool: ctx.pool_name(),
        backend: ctx.served.as_ref().map_or("", |s| s.name.as_str()),
        attempts: ctx.tries,
        duration: ctx.started.map_or(Duration::ZERO, |s| s.elapsed()),
    });
}
