//! What becomes of a race's losers once an answer was chosen: a loser
//! whose answer is complete, or completes within [`LOSER_GRACE`] and
//! [`LOSER_MAX_BODY`], goes back to the upstream connection pool (so the
//! next race reuses it instead of opening a new connection); only a loser
//! still busy beyond that bound is cut (its connection closed).
//!
//! This runs in a task of its own, after the winner was chosen, so it never
//! delays the client's answer. Each loser keeps its backend's in-flight
//! slot until it is settled: the backend is still working on it. Reading
//! the short rest of an answer costs less than the TCP (and TLS) handshake
//! that a closed connection forces on a later request. The race's own
//! connector (see [`connector`]) has a pool large enough to keep them.

use super::{Chosen, Outcome};
use crate::counters::AttemptResult;
use crate::pool::{state_of, Pool, PoolStats};
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession as ClientSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long after the race was decided a loser may take to deliver its
/// whole answer (head and body) and still be pooled: 100 ms. Beyond it the
/// loser is cut. Bounds the extra work a backend does for a lost race.
pub const LOSER_GRACE: Duration = Duration::from_millis(100);

/// The most body bytes read (and discarded) from one loser to pool its
/// connection: 64 KiB. A loser whose `Content-Length` says more, or that
/// sends more, is cut at once.
pub const LOSER_MAX_BODY: u64 = 64 * 1024;

/// The race connector's idle-connection pool, in multiples of the proxy's
/// (`server.upstream_keepalive_pool_size`, pingora's default 128 per
/// thread): 4. A race holds one connection per raced backend and pools
/// the losers' too, so it needs about fan-out × concurrent races idle
/// connections; with pingora's pool size every connection beyond it is
/// closed when released (one LRU over all backends). 4 covers races over
/// up to 4 backends at the concurrency the proxy's own pool covers; raise
/// `upstream_keepalive_pool_size` for wider races.
pub const RACE_POOL_FACTOR: usize = 4;

/// The connector of raced requests (pingora's proxy connector is private):
/// pingora's options from `conf`, with a pool [`RACE_POOL_FACTOR`] times
/// as large.
pub fn connector(conf: &pingora_core::server::configuration::ServerConf) -> Connector {
    let mut options = pingora_core::connectors::ConnectorOptions::from_server_conf(conf);
    options.keepalive_pool_size = options.keepalive_pool_size.saturating_mul(RACE_POOL_FACTOR);
    Connector::new(Some(options))
}

/// Settles the losers of a decided race in the background: `running` are
/// the attempts still in flight, `answered` the ones whose head arrived but
/// lost. Counts `race_losers_reused` and `race_cancelled` in the stats of
/// `pool`, and the attempts that end meanwhile in their backends' state
/// (`upstream_attempts_total`, latency), as the race itself counts those
/// that ended before its answer was chosen.
pub(super) fn settle(
    running: JoinSet<Outcome>,
    answered: Option<Chosen>,
    connector: Arc<Connector>,
    pool: Arc<Pool>,
) {
    if running.is_empty() && answered.is_none() {
        return;
    }
    let deadline = Instant::now() + LOSER_GRACE;
    tokio::spawn(settle_all(running, answered, connector, pool, deadline));
}

async fn settle_all(
    mut running: JoinSet<Outcome>,
    answered: Option<Chosen>,
    connector: Arc<Connector>,
    pool: Arc<Pool>,
    deadline: Instant,
) {
    let stats = &pool.stats;
    if let Some((_, peer, slot, up, resp)) = answered {
        settle_one(&connector, stats, &peer, up, &resp, deadline).await;
        drop(slot);
    }
    loop {
        match tokio::time::timeout_at(deadline, running.join_next()).await {
            Ok(None) => return,
            Ok(Some(Ok((b, peer, slot, Ok((up, resp)), took)))) => {
                if let Some(st) = state_of(&b) {
                    st.record_attempt(AttemptResult::Ok);
                }
                crate::proxy::observe_latency(&pool, &b, took, std::time::Instant::now());
                settle_one(&connector, stats, &peer, up, &resp, deadline).await;
                drop(slot);
            }
            // a loser that failed on its own left nothing to reuse; the
            // failure is the backend's
            Ok(Some(Ok((b, _, _, Err(e), took)))) => {
                super::backend_failed(&pool, &b, &e, took);
            }
            Ok(Some(Err(join))) => log::warn!("race task failed: {join}"),
            Err(_) => {
                // still busy beyond the bound: cut (tasks aborted, their
                // connections closed, their slots released)
                stats
                    .race_cancelled
                    .fetch_add(running.len() as u64, Relaxed);
                running.abort_all();
                return;
            }
        }
    }
}

/// Reads the rest of one loser's answer within the bound and pools its
/// connection, or cuts it.
async fn settle_one(
    connector: &Connector,
    stats: &PoolStats,
    peer: &HttpPeer,
    mut up: ClientSession,
    resp: &ResponseHeader,
    deadline: Instant,
) {
    let complete = tokio::time::timeout_at(deadline, read_rest(&mut up, resp))
        .await
        .unwrap_or(false);
    if complete {
        stats.race_losers_reused.fetch_add(1, Relaxed);
        // pingora still closes it when the answer said `Connection: close`
        connector
            .release_http_session(up, peer, peer.options.idle_timeout)
            .await;
    } else {
        stats.race_cancelled.fetch_add(1, Relaxed);
        drop(up); // closes the connection
    }
}

/// Reads and discards the rest of an answer's body: true when it ended
/// within [`LOSER_MAX_BODY`] bytes.
async fn read_rest(up: &mut ClientSession, resp: &ResponseHeader) -> bool {
    if up.response_done() {
        return true;
    }
    let declared = resp
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > LOSER_MAX_BODY) {
        return false;
    }
    let mut read = 0u64;
    while !up.response_done() {
        match up.read_response_body().await {
            Ok(Some(chunk)) => {
                read += chunk.len() as u64;
                if read > LOSER_MAX_BODY {
                    return false;
                }
            }
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    true
}
