//! The cache's part of each request: turning caching on for a caching pool
//! (`request_cache_filter`), the cache key, the RFC 9111 storage decision,
//! `Vary`, stale serving, invalidation by unsafe methods and the
//! `Cache-Status` header (RFC 9211).

use super::store::KeyParts;
use super::{Cache, CacheStats, Status};
use crate::config::CachePolicy;
use crate::request::RequestCtx;
use http::{header, Method};
use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_cache::filters::resp_cacheable;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::{
    CacheKey, CacheMeta, CacheMetaDefaults, CacheOptionOverrides, CachePhase, NoCacheReason,
    RespCacheable, VarianceBuilder,
};
use pingora_core::{Error, ErrorSource};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What the cache remembers about one request of a caching pool.
pub struct CacheCtx {
    cache: &'static Cache,
    policy: CachePolicy,
    stats: Arc<CacheStats>,
    /// The response was admitted to the store.
    stored: bool,
    /// An unsafe method: a success invalidates the target.
    invalidate: bool,
    /// How the request was answered, once known.
    status: Option<Status>,
    /// Why the cache was not used (`Cache-Status` `fwd=`): `method` or
    /// `bypass` (a protocol upgrade).
    bypass: &'static str,
    /// The backend's 304 to a revalidation, merged into the stored
    /// header by [`decide`].
    not_modified: Option<Box<ResponseHeader>>,
}

impl CacheCtx {
    /// Records a request that got no response from any backend (answered
    /// with an error by the proxy) and returns its `Cache-Status`.
    pub fn failed(&mut self) -> &'static str {
        if self.status == Some(Status::Bypass) {
            self.bypass_header()
        } else {
            self.status = Some(Status::Miss);
            "switchyard; fwd=miss"
        }
    }

    fn bypass_header(&self) -> &'static str {
        if self.bypass == "method" {
            "switchyard; fwd=method"
        } else {
            "switchyard; fwd=bypass"
        }
    }

    /// The `Cache-Status` value recorded for the access log ("" before the
    /// response).
    pub fn status_name(&self) -> &'static str {
        self.status.map_or("", Status::as_str)
    }
}

/// `request_cache_filter`: turns caching on for a GET or HEAD to a pool
/// with `cache:` (not for a protocol upgrade); notes an unsafe method for
/// invalidation.
pub fn enable(session: &mut Session, ctx: &mut RequestCtx) {
    let Some(pool) = &ctx.pool else { return };
    let Some(policy) = pool.config.cache else {
        return;
    };
    let Some(cache) = super::get() else { return };
    let method = &session.req_header().method;
    let mut c = CacheCtx {
        cache,
        policy,
        stats: cache.stats(pool.name()),
        stored: false,
        invalidate: false,
        status: None,
        bypass: "method",
        not_modified: None,
    };
    let upgrade = session.req_header().headers.contains_key(header::UPGRADE);
    if upgrade {
        // a protocol switch (WebSocket) is a tunnel, not a response to store
        c.status = Some(Status::Bypass);
        c.bypass = "bypass";
    } else if matches!(*method, Method::GET | Method::HEAD) {
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(policy.lock_timeout);
        session.cache.enable(
            &cache.store,
            Some(cache.eviction.as_ref()),
            None,
            Some(cache.lock.as_ref()),
            Some(overrides),
        );
        session.cache.set_max_file_size_bytes(
            usize::try_from(cache.settings.max_object).unwrap_or(usize::MAX),
        );
    } else {
        // RFC 9111 §4.4: unsafe methods invalidate; OPTIONS, TRACE, ... pass by
        c.invalidate = !method.is_safe();
        c.status = Some(Status::Bypass);
    }
    ctx.cache = Some(Box::new(c));
}

fn host_of(req: &RequestHeader) -> String {
    req.headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The key of `path` (with its query, byte-exact) on `host` (lowercase)
/// in `pool`, before any `Vary` variance.
pub fn primary_key(pool: &str, tls: bool, host: &str, path: &[u8]) -> CacheKey {
    let scheme: &[u8] = if tls { b"https" } else { b"http" };
    // each part length-prefixed: no two targets can frame alike
    let mut primary = Vec::with_capacity(pool.len() + host.len() + path.len() + 32);
    for part in [pool.as_bytes(), scheme, host.as_bytes(), path] {
        primary.extend_from_slice(format!("{}:", part.len()).as_bytes());
        primary.extend_from_slice(part);
    }
    CacheKey::new(primary, pool)
}

/// `cache_key_callback`: scheme, Host and the path with its query as sent,
/// byte-exact, in the pool's namespace; `Vary` fields are added later.
pub fn key(session: &Session, ctx: &RequestCtx) -> CacheKey {
    let req = session.req_header();
    let host = host_of(req);
    let path = req.raw_path();
    let tls = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some();
    let pool = ctx.pool_name();
    let mut key = primary_key(pool, tls, &host, path);
    key.extensions.insert(KeyParts {
        pool: Arc::from(pool),
        host,
        path: String::from_utf8_lossy(path).into_owned(),
    });
    key
}

/// Statuses cacheable without explicit freshness (RFC 9110 §15.1; 206 left
/// out: a partial body is never stored as the whole): they get `default_ttl`
/// when the response states no freshness.
fn heuristic_zero(status: http::StatusCode) -> Option<Duration> {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
    .then_some(Duration::ZERO)
}

fn uncacheable(why: &'static str) -> RespCacheable {
    RespCacheable::Uncacheable(NoCacheReason::Custom(why))
}

/// `response_cache_filter`: RFC 9111 §3 with pingora-cache's parsing, plus
/// the `Set-Cookie` rule, `Vary: *`, `vary_limit` and `default_ttl`.
pub fn decide(session: &Session, resp: &ResponseHeader, ctx: &mut RequestCtx) -> RespCacheable {
    let Some(c) = ctx.cache.as_mut() else {
        return uncacheable("not a caching pool");
    };
    let merged;
    let resp = match c.not_modified.take() {
        Some(not_modified) => {
            merged = super::revalidate::merge_not_modified(resp, &not_modified);
            &merged
        }
        None => resp,
    };
    let cc = CacheControl::from_resp_headers(resp);
    let explicit_store = cc
        .as_ref()
        .is_some_and(|cc| cc.public() || cc.s_maxage().ok().flatten().is_some());
    if resp.headers.contains_key(header::SET_COOKIE) && !explicit_store {
        return uncacheable("set-cookie");
    }
    let vary = vary_fields(resp);
    if vary.iter().any(|f| f == "*") {
        return uncacheable("vary: *");
    }
    if !vary.is_empty() {
        let key = session.cache.cache_key();
        if c.cache.store.variants(&key.primary_bin()) >= c.policy.vary_limit {
            return uncacheable("vary_limit");
        }
    }
    let authorized = session
        .req_header()
        .headers
        .contains_key(header::AUTHORIZATION);
    let sie = u32::try_from(c.policy.stale_if_error.as_secs()).unwrap_or(u32::MAX);
    let defaults = CacheMetaDefaults::new(heuristic_zero, 0, sie);
    let decided = resp_cacheable(cc.as_ref(), resp.clone(), authorized, &defaults);
    let RespCacheable::Cacheable(meta) = decided else {
        return decided;
    };
    let stated = cc.as_ref().is_some_and(|cc| cc.fresh_duration().is_some())
        || resp.headers.contains_key(header::EXPIRES);
    let meta = if stated {
        meta
    } else if c.policy.default_ttl.is_zero() {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    } else {
        let now = SystemTime::now();
        CacheMeta::new(
            now + c.policy.default_ttl,
            now,
            meta.stale_while_revalidate_sec(),
            meta.stale_if_error_sec(),
            meta.response_header().clone(),
        )
    };
    c.stored = true;
    RespCacheable::Cacheable(meta)
}

/// `upstream_response_filter`: remembers the backend's 304 to a
/// revalidation, for [`decide`] to merge.
pub fn note_not_modified(session: &Session, resp: &ResponseHeader, ctx: &mut RequestCtx) {
    let Some(c) = ctx.cache.as_mut() else { return };
    if resp.status == http::StatusCode::NOT_MODIFIED && session.cache.phase() == CachePhase::Stale {
        c.not_modified = Some(Box::new(resp.clone()));
    }
}

fn vary_fields(resp: &ResponseHeader) -> Vec<String> {
    resp.headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
        .collect()
}

/// `cache_vary_filter`: the variant of `req` for the stored response's
/// `Vary` fields (RFC 9111 §4.1); `None` when it has none.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let fields = vary_fields(meta.response_header());
    if fields.is_empty() {
        return None;
    }
    let mut b = VarianceBuilder::new();
    for name in fields {
        let value: Vec<u8> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .flat_map(|v| v.as_bytes().iter().copied().chain(*b","))
            .collect();
        b.add_owned_name_value(name, value);
    }
    b.finalize()
}

/// `should_serve_stale`: during stale-while-revalidate (`error` `None`)
/// always (the stored response's own window was checked by pingora-cache);
/// after an error, unless the client caused it.
pub fn serve_stale(error: Option<&Error>) -> bool {
    error.is_none_or(|e| e.esource() != &ErrorSource::Downstream)
}

fn ttl(session: &Session) -> i64 {
    let fresh_until = session.cache.cache_meta().fresh_until();
    let now = SystemTime::now();
    match fresh_until.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `response_filter`: writes `Cache-Status` (RFC 9211), records the status
/// and, after a successful unsafe request, invalidates its target and its
/// `Location` / `Content-Location` (RFC 9111 §4.4).
pub fn annotate(session: &Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) {
    let interim =
        resp.status.is_informational() && resp.status != http::StatusCode::SWITCHING_PROTOCOLS;
    if ctx.cache.is_none() || interim {
        // not a caching pool: nothing to annotate, nothing allocated; an
        // interim 1xx (`100 Continue`) is not the answer the field describes
        return;
    }
    let pool = ctx.pool_name().to_string();
    let Some(c) = ctx.cache.as_mut() else { return };
    // admitted by `decide` but then declined (a `Content-Length` over
    // `max_object`): not stored after all
    c.stored &= session.cache.enabled();
    let code = resp.status.as_u16();
    let (status, value) = match session.cache.phase() {
        CachePhase::Hit => (
            Status::Hit,
            format!("switchyard; hit; ttl={}", ttl(session)),
        ),
        CachePhase::Stale | CachePhase::StaleUpdating => (
            Status::Stale,
            format!("switchyard; hit; ttl={}", ttl(session)),
        ),
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => (
            Status::Revalidated,
            "switchyard; fwd=stale; fwd-status=304".to_string(),
        ),
        CachePhase::Expired => (
            Status::Expired,
            format!(
                "switchyard; fwd=stale; fwd-status={code}{}",
                if c.stored { "; stored" } else { "" }
            ),
        ),
        _ if c.status == Some(Status::Bypass) => (Status::Bypass, c.bypass_header().to_string()),
        _ => (
            Status::Miss,
            format!(
                "switchyard; fwd=miss{}",
                if c.stored { "; stored" } else { "" }
            ),
        ),
    };
    c.status = Some(status);
    let _ = resp.insert_header("cache-status", value);
    if c.invalidate && (200..400).contains(&code) {
        let req = session.req_header();
        let host = host_of(req);
        let mut targets = vec![String::from_utf8_lossy(req.raw_path()).into_owned()];
        for h in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = resp
                .headers
                .get(&h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            // only the same origin (RFC 9111 §4.4)
            let same = uri
                .host()
                .is_none_or(|h| host.split(':').next() == Some(h.to_ascii_lowercase().as_str()));
            if let (true, Some(pq)) = (same, uri.path_and_query()) {
                targets.push(pq.as_str().to_string());
            }
        }
        for t in targets {
            c.cache.purge(&pool, Some(&host), &t);
        }
    }
}

/// `logging`: counts the request's cache status.
pub fn count(ctx: &RequestCtx) {
    if let Some(c) = &ctx.cache {
        if let Some(s) = c.status {
            c.stats.add(s);
        }
    }
}
