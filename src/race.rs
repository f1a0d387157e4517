//! Fan-out racing and hedged requests: send one request to
//! several backends of a pool and stream the first terminal answer.
//!
//! Pingora's proxy loop talks to one peer per attempt, so a race runs inside
//! `request_filter` with its own pingora `Connector`, and the request ends
//! there (`Ok(true)`). Steps:
//! 1. buffer the request body (up to `race.max_body`);
//! 2. start one upstream request per ready backend: all at once
//!    (`hedge_delay: 0`), or one more each `hedge_delay` (or, with `pNN`,
//!    each time the pool's recent percentile of response-head latency
//!    passes, see [`crate::hedge`]), and at once when an earlier one
//!    failed; hedged attempts draw on the pool's retry budget (connect
//!    failures excepted) and stop when it is spent;
//! 3. the first answer whose status class is terminal wins: its header and
//!    body are streamed to the client and its connection goes back to the
//!    pool; every other upstream request is settled in the background (the
//!    `losers` module): pooled when its answer completes within a small
//!    bound, else cut (its task aborted and its connection closed);
//! 4. no terminal answer: the last non-terminal answer; nobody answered:
//!    502; `timeouts.request` passed before a head: 504.
//!
//! Every raced attempt holds an in-flight slot of its backend (seen by
//! `least_conn` and `active_connections`); a client that leaves cancels
//! every attempt at once, and so does the request deadline. A raced pool
//! with no ready backend is not raced: the request follows the pool's
//! `fallback` chain (see [`crate::proxy`]).

use crate::config::RacePolicy;
use crate::counters::AttemptResult;
use crate::failure;
use crate::pool::{socket_addr, state_of, InflightGuard, Pool};
use crate::request::RequestCtx;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession as ClientSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::Backend;
use pingora_proxy::Session;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

mod losers;
mod relay;
mod upstream;
pub use losers::{connector, LOSER_GRACE, LOSER_MAX_BODY, RACE_POOL_FACTOR};
pub use relay::next_chunk;
use relay::relay;
use upstream::{read_body, upstream_request};

/// Whether this request may be raced: not an upgrade, and no declared body
/// larger than `race.max_body` (those take the normal single-backend path).
pub fn eligible(session: &Session, policy: &RacePolicy) -> bool {
    let h = &session.req_header().headers;
    if h.contains_key(http::header::UPGRADE) {
        return false;
    }
    let declared = h
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    declared.is_none_or(|n| n <= policy.max_body)
}

/// One finished upstream request: the backend, its in-flight slot (held
/// until the request ends or is cancelled) and its outcome.
type Outcome = (
    Backend,
    HttpPeer,
    Option<InflightGuard>,
    Result<(ClientSession, Box<ResponseHeader>)>,
    Duration,
);

/// The answer chosen so far: backend, peer, its slot, connection, header.
type Chosen = (
    Backend,
    HttpPeer,
    Option<InflightGuard>,
    ClientSession,
    Box<ResponseHeader>,
);

/// Runs the race for the request in `session` over `pool`; the response
/// has been written when this returns `Ok`. The caller checked that `pool`
/// has a ready backend (else its fallback chain serves the request).
pub async fn run(
    session: &mut Session,
    ctx: &mut RequestCtx,
    pool: &Arc<Pool>,
    policy: &RacePolicy,
    connector: &Arc<Connector>,
) -> Result<()> {
    let won = fetch(session, ctx, pool, policy, connector).await?;
    relay(
        session,
        connector,
        &won.peer,
        won.up,
        won.resp,
        pool.config.timeouts.read,
    )
    .await
}

/// The chosen answer of a race: its head has been read, its body not yet.
/// The caller streams the body and gives `up` back to the connector.
pub struct Won {
    /// The backend that answered.
    pub peer: HttpPeer,
    /// Its connection, positioned at the start of the body.
    pub up: ClientSession,
    /// Its final response head.
    pub resp: Box<ResponseHeader>,
}

/// Runs the race up to the chosen answer's head (steps 1 to 4 of the
/// module docs) and records it in `ctx`; the body is the caller's (a
/// caching pool's miss stores it while relaying, see [`crate::cache::fill`]).
pub async fn fetch(
    session: &mut Session,
    ctx: &mut RequestCtx,
    pool: &Arc<Pool>,
    policy: &RacePolicy,
    connector: &Arc<Connector>,
) -> Result<Won> {
    let body = read_body(session, policy.max_body).await?;
    let req = upstream_request(session, &body)?;
    let mut pending = candidates(pool).into_iter();
    if pending.len() == 0 {
        return Err(Error::explain(
            ErrorType::HTTPStatus(503),
            "no ready backend to race",
        ));
    }
    pool.stats.races.fetch_add(1, Relaxed);
    pool.stats.budget.deposit();
    ctx.budget_deposited = true;
    ctx.attempt_pool = Some(pool.clone());
    let deadline = ctx
        .deadline
        .unwrap_or_else(|| Instant::now() + pool.config.timeouts.request);

    let mut set: JoinSet<Outcome> = JoinSet::new();
    let start_one = |set: &mut JoinSet<Outcome>, b: Backend, ctx: &mut RequestCtx| {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let peer = pool.peer(&b, remaining, false);
        let (c, req, body) = (connector.clone(), Box::new(req.clone()), body.clone());
        ctx.tries += 1;
        // every raced attempt holds an in-flight slot of its backend
        let slot = state_of(&b).map(|s| s.start_request());
        set.spawn(async move {
            let started = Instant::now();
            let r = ask(&c, &peer, req, body).await;
            (b, peer, slot, r, started.elapsed())
        });
    };
    let hedged = policy.hedged();
    let plan = crate::hedge::Plan::new(pool, policy, deadline);
    // timed hedges draw on the retry budget; the first refusal ends them
    let mut hedging = plan.timed();
    for b in pending.by_ref() {
        start_one(&mut set, b, ctx);
        if hedged {
            break;
        }
    }

    let sleep = tokio::time::sleep_until(deadline.into());
    tokio::pin!(sleep);
    let hedge = tokio::time::sleep_until(plan.next().into());
    tokio::pin!(hedge);
    let mut fallback: Option<Chosen> = None;
    let mut timed_out = false;
    let mut client_gone = false;
    let mut watch_client = true;
    let winner = loop {
        tokio::select! {
            _ = &mut sleep => { timed_out = true; break None; }
            // a client that leaves cancels every attempt at once
            r = session.downstream_session.read_body_or_idle(true), if watch_client => {
                if r.is_err() { client_gone = true; break None; }
                watch_client = false;
            }
            _ = &mut hedge, if hedging && pending.len() > 0 => {
                if plan.draw() {
                    if let Some(b) = pending.next() { start_one(&mut set, b, ctx); }
                    hedge.as_mut().reset(plan.next().into());
                } else {
                    hedging = false;
                }
            }
            next = set.join_next() => match next {
                None => match pending.next() {
                    Some(b) => start_one(&mut set, b, ctx),
                    None => break None,
                },
                Some(Ok((b, peer, slot, Ok((up, resp)), took))) => {
                    if let Some(st) = state_of(&b) {
                        st.record_attempt(AttemptResult::Ok);
                    }
                    crate::proxy::observe_latency(pool, &b, took, Instant::now());
                    if policy.is_terminal(resp.status.as_u16()) {
                        break Some((b, peer, slot, up, resp));
                    }
                    fallback = Some((b, peer, slot, up, resp));
                    // another backend after a non-terminal answer draws on
                    // the budget; refused, the request asks no one else
                    if hedged && pending.len() > 0 && !plan.draw() {
                        pending = Vec::new().into_iter();
                    } else if let Some(b) = pending.next().filter(|_| hedged) {
                        start_one(&mut set, b, ctx);
                    }
                }
                Some(Ok((b, _, slot, Err(e), took))) => {
                    drop(slot);
                    attempt_failed(pool, ctx, &b, &e, took);
                    // a replacement draws on the budget unless the failed
                    // attempt never connected
                    let connect = matches!(e.etype(), ErrorType::ConnectTimedout)
                        || attempt_result(&e) == AttemptResult::ConnectFailure;
                    if hedged && pending.len() > 0 && !connect && !plan.draw() {
                        pending = Vec::new().into_iter();
                    } else if let Some(b) = pending.next().filter(|_| hedged) {
                        start_one(&mut set, b, ctx);
                    }
                }
                Some(Err(join)) => log::warn!("race task failed: {join}"),
            }
        }
    };
    if client_gone || winner.is_none() {
        // nobody is waiting for an answer, or none came in time: every
        // attempt still running is cut (task aborted, connection closed)
        pool.stats
            .race_cancelled
            .fetch_add(set.len() as u64, Relaxed);
        set.abort_all();
    }
    if client_gone {
        return Err(
            Error::explain(ErrorType::ConnectionClosed, "client left during the race").into_down(),
        );
    }

    let (outcome, chosen) = match (winner, fallback) {
        (Some(w), lost) => {
            // losers finish in the background: pooled or cut
            losers::settle(set, lost, connector.clone(), pool.clone());
            ("won", w)
        }
        (None, Some(f)) if !timed_out => ("no_terminal", f),
        (None, _) => {
            pool.stats.race_failed.fetch_add(1, Relaxed);
            return Err(if timed_out {
                ctx.last_timeout = true;
                Error::explain(ErrorType::HTTPStatus(504), "race deadline passed")
            } else {
                Error::explain(ErrorType::HTTPStatus(502), "no backend answered the race")
            });
        }
    };
    match outcome {
        "won" => pool.stats.race_won.fetch_add(1, Relaxed),
        _ => pool.stats.race_no_terminal.fetch_add(1, Relaxed),
    };
    let (backend, peer, slot, up, resp) = chosen;
    ctx.inflight = slot;
    ctx.served = state_of(&backend).cloned();
    ctx.head_received = true;
    ctx.backend = Some(backend);
    Ok(Won { peer, up, resp })
}

/// Accounts a raced request that failed before its answer (SPEC §3: only
/// the backend's own failures count; local resource errors never do).
fn attempt_failed(pool: &Pool, ctx: &mut RequestCtx, b: &Backend, e: &Error, took: Duration) {
    ctx.tried.push(socket_addr(b));
    if backend_failed(pool, b, e, took) {
        ctx.last_timeout = failure::is_timeout(e);
    }
}

/// Counts the failure of a raced request against `b` (also a loser's that
/// failed after the race was decided); false for a local resource error,
/// which is never the backend's.
fn backend_failed(pool: &Pool, b: &Backend, e: &Error, took: Duration) -> bool {
    if failure::is_local_resource_error(e) {
        return false;
    }
    if let Some(st) = state_of(b) {
        st.record_attempt(attempt_result(e));
        st.latency.observe_failure(took);
    }
    pool.record_failure(b);
    true
}

/// The metrics label of a failed raced request.
fn attempt_result(e: &Error) -> AttemptResult {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            AttemptResult::Timeout
        }
        ErrorType::ConnectRefused | ErrorType::ConnectError | ErrorType::ConnectNoRoute => {
            AttemptResult::ConnectFailure
        }
        _ => AttemptResult::Reset,
    }
}

/// Ready backends, starting with the pool's own pick (so its strategy
/// spreads the first, and with hedging often only, request), then the
/// rest in configured order after it, wrapping around. A rotation, so
/// that every backend is started first, second, ... equally often: among
/// equally fast backends the one started first tends to answer first.
fn candidates(pool: &Pool) -> Vec<Backend> {
    let mut ready: Vec<Backend> = pool
        .members()
        .iter()
        .filter(|b| pool.is_ready(b))
        .cloned()
        .collect();
    if let Some(first) = pool.select(b"", |_| true) {
        if let Some(i) = ready.iter().position(|b| b.addr == first.addr) {
            ready.rotate_left(i);
        }
    }
    ready
}

/// Sends the request to one backend and reads its final response header.
async fn ask(
    c: &Connector,
    peer: &HttpPeer,
    req: Box<RequestHeader>,
    body: Bytes,
) -> Result<(ClientSession, Box<ResponseHeader>)> {
    let (mut up, _reused) = c.get_http_session(peer).await?;
    up.set_write_timeout(peer.options.write_timeout);
    up.set_read_timeout(peer.options.read_timeout);
    up.write_request_header(req).await?;
    if !body.is_empty() {
        up.write_request_body(body, true).await?;
    }
    up.finish_request_body().await?;
    loop {
        up.read_response_header().await?;
        let resp = match up.response_header() {
            Some(r) if r.status.is_informational() => continue,
            Some(r) => Box::new(r.clone()),
            None => {
                return Err(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "no response header",
                ))
            }
        };
        return Ok((up, resp));
    }
}
