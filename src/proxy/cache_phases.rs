//! The cache's side of the proxy phases ([`crate::cache::http`] does the
//! work): the synchronous cache hooks of `ProxyHttp`, expanded into the
//! `impl ProxyHttp for Proxy` block by [`cache_phases!`], and the small
//! decisions the other phases ask of the cache.

use crate::cache;
use crate::pool::Pool;
use crate::request::RequestCtx;

/// The cache hooks of `ProxyHttp` (`request_cache_filter`,
/// `cache_key_callback`, `response_cache_filter`, `cache_vary_filter`,
/// `should_serve_stale`), each a call into [`crate::cache::http`]. (The
/// async `proxy_upstream_filter`, where a racing pool races its misses,
/// must sit in the `#[async_trait]` block itself.)
macro_rules! cache_phases {
    () => {
        fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
            crate::cache::http::enable(session, ctx);
            Ok(())
        }

        fn cache_key_callback(
            &self,
            session: &Session,
            ctx: &mut Self::CTX,
        ) -> Result<pingora_cache::CacheKey> {
            Ok(crate::cache::http::key(session, ctx))
        }

        fn response_cache_filter(
            &self,
            session: &Session,
            resp: &ResponseHeader,
            ctx: &mut Self::CTX,
        ) -> Result<pingora_cache::RespCacheable> {
            Ok(crate::cache::http::decide(session, resp, ctx))
        }

        fn cache_vary_filter(
            &self,
            meta: &pingora_cache::CacheMeta,
            _ctx: &mut Self::CTX,
            req: &RequestHeader,
        ) -> Option<pingora_cache::key::HashBinary> {
            crate::cache::http::variance(meta, req)
        }

        fn should_serve_stale(
            &self,
            _session: &mut Session,
            _ctx: &mut Self::CTX,
            error: Option<&Error>,
        ) -> bool {
            crate::cache::http::serve_stale(error)
        }
    };
}
pub(super) use cache_phases;

/// A caching pool's requests go through the cache (its misses and
/// invalidations need the normal phases): they are not raced in
/// `request_filter`; a miss is raced after the cache lookup instead.
pub(super) fn caching(pool: &Pool) -> bool {
    pool.config.cache.is_some() && cache::get().is_some()
}

/// The headers a proxy-made error answer adds: the `Cache-Status` of a
/// request of a caching pool.
pub(super) fn error_headers(ctx: &mut RequestCtx) -> Vec<(&'static str, String)> {
    ctx.cache
        .as_mut()
        .map(|c| ("cache-status", c.failed().to_string()))
        .into_iter()
        .collect()
}
