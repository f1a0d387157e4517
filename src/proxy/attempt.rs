//! One upstream attempt's bookkeeping: failure accounting (through
//! [`crate::failure`]), in-flight slots, the answered backend, the retry
//! state, the consistent-hash key and the access log line.

use super::{Proxy, RequestCtx};
use crate::access_log::{AccessLogger, Entry};
use crate::config::{HashKey, Strategy};
use crate::counters::AttemptResult;
use crate::failure;
use crate::pool::{socket_addr, state_of, Pool};
use crate::retry;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_proxy::Session;
use std::time::{Duration, Instant};

/// The bytes a consistent-hash pool hashes for this request.
pub(super) fn hash_key(pool: &Pool, session: &Session) -> Vec<u8> {
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

impl Proxy {
    /// Applies the failure accounting of one failed attempt (see
    /// [`failure::decide`]) and returns whether to retry.
    pub(super) fn account(
        &self,
        ctx: &mut RequestCtx,
        cause: failure::Cause,
        at: failure::Attempt,
        e: &Error,
        peer: &HttpPeer,
    ) -> bool {
        let Some(policy) = ctx.attempt_pool.as_ref().map(|p| p.config.retries.clone()) else {
            return false;
        };
        let mut d = failure::decide(cause, at, &policy);
        if d.retry && d.draws_budget && e.esource() != &ErrorSource::Downstream {
            // spent budget: answered as if no retry were configured
            d.retry = ctx
                .attempt_pool
                .as_ref()
                .is_some_and(|p| p.stats.budget.try_withdraw(&policy.budget));
        }
        if let Some(result) = d.result {
            record(ctx, result);
        }
        ctx.local_error = cause == failure::Cause::Local;
        if ctx.local_error && self.metrics.local_error() {
            log::error!(
                "upstream attempt to {peer} failed for lack of a local resource (not counted against the backend; at most one such line per second): {e}"
            );
        }
        if !at.head_received && d.result.is_some() {
            ctx.last_timeout = d.result == Some(AttemptResult::Timeout);
        }
        if d.free {
            // the same backend again, on a fresh connection (or another
            // pooled one): a stale connection says nothing about the backend
            ctx.tries = ctx.tries.saturating_sub(1);
            ctx.inflight = None;
            ctx.stale_retry = ctx.attempt_pool.clone().zip(ctx.backend.take());
        } else if cause != failure::Cause::Client {
            self.attempt_failed(ctx, d.count_against_backend);
        }
        d.retry && e.esource() != &ErrorSource::Downstream
    }

    /// pingora's `error_while_proxy`: an attempt failed after it was
    /// sent. A retryable status answer (decided in
    /// `upstream_response_filter`) retries per the pool's policy; any other
    /// failure goes through [`Proxy::account`].
    pub(super) fn proxy_error(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let reused_only = failure::is_reused_only(&e);
        // resolves ReusedOnly, so that e.retry() can never panic
        e.retry.decide_reuse(client_reused);
        if let (ErrorType::HTTPStatus(code), ErrorSource::Upstream) = (e.etype(), e.esource()) {
            // a retryable status answer, decided in upstream_response_filter
            let failure = retry::Failure::Status(*code);
            if let Some(b) = ctx.backend.clone() {
                penalise(ctx, &b);
            }
            self.attempt_failed(ctx, false);
            let retry = ctx.attempt_pool.as_ref().is_some_and(|p| {
                let state = self.attempt_state(session, ctx);
                retry::should_retry(&p.config.retries, failure, state)
            });
            e.set_retry(retry);
            return e;
        }
        let cause = failure::proxy_cause(&e);
        let at = failure::Attempt {
            reused: client_reused,
            reused_only,
            head_received: ctx.head_received,
            state: self.attempt_state(session, ctx),
        };
        let retry = self.account(ctx, cause, at, &e, peer);
        e.set_retry(retry);
        e
    }

    /// Ends the current attempt as failed: releases its in-flight slot,
    /// remembers the backend so a retry picks another, and (for connect
    /// errors, resets and timeouts) feeds passive ejection.
    pub(super) fn attempt_failed(&self, ctx: &mut RequestCtx, backend_fault: bool) {
        ctx.inflight = None;
        if let Some(b) = ctx.backend.take() {
            if backend_fault {
                penalise(ctx, &b);
                if let Some(p) = &ctx.attempt_pool {
                    p.record_failure(&b);
                }
            }
            ctx.tried.push(socket_addr(&b));
        }
    }

    /// The current backend's answer is the one going to the client.
    pub(super) fn answered(&self, ctx: &mut RequestCtx) {
        ctx.head_received = true;
        record(ctx, AttemptResult::Ok);
        if let (Some(started), Some(b)) = (ctx.attempt_started, ctx.backend.as_ref()) {
            if let Some(p) = &ctx.attempt_pool {
                let now = Instant::now();
                observe_latency(p, b, now.saturating_duration_since(started), now);
            }
        }
        ctx.served = ctx.backend.as_ref().and_then(|b| state_of(b).cloned());
    }

    /// What a retry decision needs to know about the request now.
    /// A retryable status (502/503/504) of a pool that retries it: an
    /// error that makes pingora retry when another backend can take the
    /// request and the retry budget allows; otherwise the client gets it.
    pub(super) fn retry_status(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        pool: &Pool,
        code: u16,
    ) -> pingora_core::Result<()> {
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
        // a status retry re-sends a request the backend received: it draws
        // on the retry budget, and a spent budget answers as it is
        if alternative
            && retry::should_retry(&pool.config.retries, failure, state)
            && pool.stats.budget.try_withdraw(&pool.config.retries.budget)
        {
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

    pub(super) fn attempt_state(&self, session: &Session, ctx: &RequestCtx) -> retry::AttemptState {
        retry::AttemptState {
            tries: ctx.tries,
            idempotent: session.req_header().method.is_idempotent(),
            replayable: !ctx.body_unreplayable && !session.as_ref().retry_buffer_truncated(),
            response_started: session.response_written().is_some(),
        }
    }
}

/// Feeds a response-head latency to the backend's peak-EWMA and, for an
/// adaptively hedged pool, to the pool's latency window.
pub(crate) fn observe_latency(
    pool: &Pool,
    b: &pingora_load_balancing::Backend,
    took: Duration,
    now: Instant,
) {
    if let Some(s) = state_of(b) {
        s.latency.observe_at(took, now);
    }
    if pool
        .config
        .race
        .is_some_and(|r| r.hedge_percentile.is_some())
    {
        pool.stats.latency.record(took);
    }
}

/// Counts a failed attempt on `b` as slow in its peak-EWMA.
pub(super) fn penalise(ctx: &RequestCtx, b: &pingora_load_balancing::Backend) {
    if let Some(s) = state_of(b) {
        s.latency
            .observe_failure(ctx.attempt_started.map_or(Duration::ZERO, |t| t.elapsed()));
    }
}

/// Counts the current attempt's result on its backend.
pub(super) fn record(ctx: &RequestCtx, result: AttemptResult) {
    if let Some(s) = ctx.backend.as_ref().and_then(state_of) {
        s.record_attempt(result);
    }
}

/// Writes the request's access log line.
pub(super) fn write_access_log(
    log: &AccessLogger,
    session: &Session,
    ctx: &RequestCtx,
    status: u16,
) {
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let req = session.req_header();
    // the request target as an HTTP/1.1 client sends it: HTTP/2 requests
    // carry scheme and authority in their URI, which the log leaves out
    let uri = req
        .uri
        .path_and_query()
        .map_or_else(|| req.uri.to_string(), |p| p.to_string());
    let backend = ctx.served.as_ref().map(|s| s.name());
    log.write(&Entry {
        client: &client,
        method: req.method.as_str(),
        uri: &uri,
        status,
        pool: ctx.pool_name(),
        backend: backend.as_deref().unwrap_or(""),
        attempts: ctx.tries,
        duration: ctx.started.map_or(Duration::ZERO, |s| s.elapsed()),
        cache: ctx.cache.as_ref().map_or("", |c| c.status_name()),
    });
}
