//! The cache's part of the admin API: `POST /cache/purge`, the per-pool
//! `cache` object of `/status` and the cache metrics.

use crate::cache::{self, Status};
use crate::pool::Pool;
use crate::routing::RouteTable;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    pool: Option<String>,
    path: String,
    host: Option<String>,
}

/// `POST /cache/purge` `{"pool"?, "path", "host"?}`: removes every stored
/// variant of the target (`"path": "*"`: all of the pool's entries); 200
/// `{"purged": N}`, 400 on a bad body, 404 for an unknown pool or when no
/// cache is configured.
pub fn purge(table: &RouteTable, body: &[u8]) -> (StatusCode, Value) {
    let req: PurgeRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("bad request body: {e}") }),
            )
        }
    };
    if req.path != "*" && !req.path.starts_with('/') {
        return (
            StatusCode::BAD_REQUEST,
            json!({ "error": format!("path {:?} is neither \"*\" nor an absolute path", req.path) }),
        );
    }
    let pool = match &req.pool {
        Some(name) => table.pool(name),
        None => table.default_pool(),
    };
    let Some(pool) = pool else {
        let name = req.pool.as_deref().unwrap_or("(default_pool)");
        return (
            StatusCode::NOT_FOUND,
            json!({ "error": format!("unknown pool {name:?}") }),
        );
    };
    let Some(cache) = cache::get() else {
        return (
            StatusCode::NOT_FOUND,
            json!({ "error": "no cache is configured" }),
        );
    };
    let host = req.host.as_deref().map(|h| h.trim().to_ascii_lowercase());
    let purged = cache.purge(pool.name(), host.as_deref(), &req.path);
    (StatusCode::OK, json!({ "purged": purged }))
}

/// The `cache` object of a pool in `/status`; `None` for a pool without
/// `cache:`.
pub fn status(pool: &Pool) -> Option<Value> {
    pool.config.cache?;
    let cache = cache::get()?;
    let usage = cache.store.usage(pool.name());
    let stats = cache.stats(pool.name());
    Some(json!({
        "entries": usage.entries,
        "bytes": usage.bytes,
        "hit_ratio": (stats.hit_ratio() * 10000.0).round() / 10000.0,
    }))
}

/// `switchyard_cache_requests_total{pool,status}` and
/// `switchyard_cache_bytes`; nothing when no cache is configured.
pub fn render(out: &mut String, table: &RouteTable) {
    let Some(cache) = cache::get() else { return };
    let _ = writeln!(
        out,
        "# HELP switchyard_cache_requests_total Requests of caching pools, by cache status.\n# TYPE switchyard_cache_requests_total counter"
    );
    for p in table.pools().iter().filter(|p| p.config.cache.is_some()) {
        let stats = cache.stats(p.name());
        let pool = p.name().replace('\\', "\\\\").replace('"', "\\\"");
        for s in Status::ALL {
            let _ = writeln!(
                out,
                "switchyard_cache_requests_total{{pool=\"{pool}\",status=\"{}\"}} {}",
                s.as_str(),
                stats.get(s)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP switchyard_cache_bytes Bytes of stored responses (headers and bodies).\n# TYPE switchyard_cache_bytes gauge\nswitchyard_cache_bytes {}",
        cache.store.bytes()
    );
}
