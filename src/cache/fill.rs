//! The miss of a caching pool that races (`race:`): the upstream fetch is
//! a race ([`crate::race::fetch`], with hedging when configured) and the
//! winner's answer is stored while it is relayed, as pingora's own miss
//! path does for a single backend (RFC 9111 decision by
//! [`super::http::decide`], `Vary`, `max_object` by `Content-Length` or
//! while streaming).
//!
//! It runs in `proxy_upstream_filter`, after pingora-cache's lookup and
//! cache lock: the request holding the lock races, the requests coalesced
//! behind it wait for the stored entry (one race for N concurrent misses).
//! Hits never reach it. Requests pingora's miss path must rewrite (a
//! `Range` or a conditional request, `HEAD`) and revalidations of a stored
//! entry go to one backend through the normal phases, with retries.

use super::http;
use crate::race;
use crate::request::RequestCtx;
use bytes::Bytes;
use pingora_cache::{CachePhase, NoCacheReason, RespCacheable};
use pingora_core::connectors::http::Connector;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::sync::Arc;

/// Request fields that make pingora's miss path rewrite the upstream
/// request or filter the downstream answer: such a miss is not raced.
const REWRITTEN: [::http::HeaderName; 6] = [
    ::http::header::RANGE,
    ::http::header::IF_RANGE,
    ::http::header::IF_MATCH,
    ::http::header::IF_NONE_MATCH,
    ::http::header::IF_MODIFIED_SINCE,
    ::http::header::IF_UNMODIFIED_SINCE,
];

/// `proxy_upstream_filter`: races the miss of a racing caching pool and
/// answers it (`Ok(false)`); `Ok(true)` for every other request, which
/// continues to `upstream_peer`.
pub async fn race_miss(
    session: &mut Session,
    ctx: &mut RequestCtx,
    connector: &Arc<Connector>,
) -> Result<bool> {
    if ctx.cache.is_none() || session.cache.phase() != CachePhase::Miss {
        return Ok(true);
    }
    let req = session.req_header();
    if req.method != ::http::Method::GET || REWRITTEN.iter().any(|h| req.headers.contains_key(h)) {
        return Ok(true);
    }
    // the first pool of the chain with a ready backend serves, as for a
    // request raced in request_filter
    let serving = match (&ctx.table, &ctx.pool) {
        (Some(t), Some(p)) => t.chain(p).find(|p| p.ready_count() > 0).cloned(),
        _ => None,
    };
    let Some((serving, policy)) = serving.and_then(|p| p.config.race.map(|r| (p, r))) else {
        return Ok(true);
    };
    if !race::eligible(session, &policy) {
        return Ok(true);
    }
    let race::Won {
        peer,
        mut up,
        mut resp,
    } = race::fetch(session, ctx, &serving, &policy, connector).await?;
    let mut filling = admit(session, &resp, ctx).await;

    let no_body = matches!(resp.status.as_u16(), 204 | 304);
    if !no_body
        && !resp.headers.contains_key(::http::header::CONTENT_LENGTH)
        && !resp.headers.contains_key(::http::header::TRANSFER_ENCODING)
    {
        resp.insert_header(::http::header::TRANSFER_ENCODING, "chunked")?;
    }
    http::annotate(session, &mut resp, ctx);
    crate::proxy::clean_response(session, &mut resp);
    let eos = no_body || up.response_done();
    session.write_response_header(resp, eos).await?;
    if !eos {
        // the body is bounded by `timeouts.read` per read, as a race's
        up.set_read_timeout(Some(serving.config.timeouts.read));
        let mut watch_client = true;
        while let Some(chunk) = race::next_chunk(session, &mut up, &mut watch_client).await? {
            if filling {
                filling = store(session, chunk.clone()).await;
            }
            session.write_response_body(Some(chunk), false).await?;
        }
        session.write_response_body(None, true).await?;
    }
    if filling {
        if let Err(e) = session.cache.finish_miss_handler().await {
            log::warn!("cache: storing a raced answer failed: {e}");
            session.cache.disable(NoCacheReason::StorageError);
        }
    }
    connector
        .release_http_session(up, &peer, peer.options.idle_timeout)
        .await;
    Ok(false)
}

/// The storage decision for the winner's head; opens the entry when it is
/// stored (returns whether the body is to be written).
async fn admit(session: &mut Session, resp: &ResponseHeader, ctx: &mut RequestCtx) -> bool {
    let meta = match http::decide(session, resp, ctx) {
        RespCacheable::Cacheable(meta) => meta,
        RespCacheable::Uncacheable(reason) => {
            session.cache.response_became_uncacheable(reason);
            session.cache.disable(reason);
            return false;
        }
    };
    let declared = meta
        .headers()
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let max = session.cache.max_file_size_bytes();
    if declared.zip(max).is_some_and(|(n, max)| n > max) {
        session
            .cache
            .response_became_uncacheable(NoCacheReason::ResponseTooLarge);
        session.cache.disable(NoCacheReason::ResponseTooLarge);
        return false;
    }
    let variance = http::variance(&meta, session.req_header());
    session.cache.set_cache_meta(meta);
    session.cache.update_variance(variance);
    if let Err(e) = session.cache.set_miss_handler().await {
        log::warn!("cache: cannot store a raced answer: {e}");
        session.cache.disable(NoCacheReason::StorageError);
        return false;
    }
    true
}

/// Writes one body chunk to the open entry; past `max_object` (or on a
/// storage error) the entry is dropped and the relay goes on uncached.
async fn store(session: &mut Session, chunk: Bytes) -> bool {
    if !session
        .cache
        .track_body_bytes_for_max_file_size(chunk.len())
    {
        session
            .cache
            .response_became_uncacheable(NoCacheReason::ResponseTooLarge);
        session.cache.disable(NoCacheReason::ResponseTooLarge);
        return false;
    }
    let Some(handler) = session.cache.miss_handler() else {
        return false;
    };
    if let Err(e) = handler.write_body(chunk, false).await {
        log::warn!("cache: storing a raced answer failed: {e}");
        session.cache.disable(NoCacheReason::StorageError);
        return false;
    }
    true
}
