//! The cache settings: a pool's `cache:` block (its RFC 9111 policy) and the
//! top-level `cache:` block (the shared response store), raw and validated.

use super::units::{Dur, Size};
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// A pool's `cache:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoolCache {
    /// Freshness when the response states none (default 0s = none).
    pub default_ttl: Option<Dur>,
    /// Serve a stale copy this long when every backend fails (default 0s).
    pub stale_if_error: Option<Dur>,
    /// How long concurrent misses wait for the first fetch (default 2s).
    pub lock_timeout: Option<Dur>,
    /// Stored variants per key at most (default 16).
    pub vary_limit: Option<usize>,
}

/// The top-level `cache:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheStore {
    /// Bytes of cached responses, headers and bodies (default 256MiB).
    pub memory: Option<Size>,
    /// Largest response stored, bytes (default 8MiB).
    pub max_object: Option<Size>,
    /// Admission and eviction policy (default `tinyufo`).
    pub eviction: Option<Eviction>,
}

/// How the store chooses what to keep within `cache.memory`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Eviction {
    /// TinyUFO (S3-FIFO with TinyLFU admission, Cloudflare's `TinyUFO`
    /// crate): a new entry is kept only when it is likely to be asked again.
    #[default]
    Tinyufo,
    /// Least recently used (pingora-cache's sharded LRU): every new entry is
    /// kept, the least recently used ones go.
    Lru,
}

/// A pool's cache policy after defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Freshness given to a cacheable response that states none; zero
    /// stores only what `Cache-Control` / `Expires` allow.
    pub default_ttl: Duration,
    /// How long past freshness a stored response may answer when every
    /// backend fails, unless the response's own `stale-if-error` says more.
    pub stale_if_error: Duration,
    /// How long a request waits for a concurrent fetch of the same key
    /// before going upstream itself.
    pub lock_timeout: Duration,
    /// Stored variants (`Vary`) per key at most; further ones are not stored.
    pub vary_limit: usize,
}

/// The shared response store after defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStoreSettings {
    /// Bytes of stored responses (headers and bodies), all pools together.
    pub memory: u64,
    /// A response with a larger body is passed through, not stored.
    pub max_object: u64,
    /// Admission and eviction policy.
    pub eviction: Eviction,
}

/// Validates a pool's `cache:`.
pub fn pool_cache(r: &RawPoolCache, path: &str, errs: &mut Vec<ConfigError>) -> CachePolicy {
    let policy = CachePolicy {
        default_ttl: r.default_ttl.map_or(Duration::ZERO, |d| d.0),
        stale_if_error: r.stale_if_error.map_or(Duration::ZERO, |d| d.0),
        lock_timeout: r.lock_timeout.map_or(Duration::from_secs(2), |d| d.0),
        vary_limit: r.vary_limit.unwrap_or(16),
    };
    if policy.vary_limit == 0 {
        errs.push(ConfigError::new(
            format!("{path}.vary_limit"),
            "must be at least 1",
        ));
    }
    if policy.lock_timeout.is_zero() {
        errs.push(ConfigError::new(
            format!("{path}.lock_timeout"),
            "must be greater than 0",
        ));
    }
    policy
}

/// Validates the top-level `cache:`.
pub fn store(r: &RawCacheStore, errs: &mut Vec<ConfigError>) -> CacheStoreSettings {
    let s = CacheStoreSettings {
        memory: r.memory.map_or(256 << 20, |s| s.0),
        max_object: r.max_object.map_or(8 << 20, |s| s.0),
        eviction: r.eviction.unwrap_or_default(),
    };
    if s.memory == 0 {
        errs.push(ConfigError::new("cache.memory", "must be greater than 0"));
    }
    if s.max_object == 0 || s.max_object > s.memory {
        errs.push(ConfigError::new(
            "cache.max_object",
            format!(
                "{} is not between 1 and cache.memory ({})",
                s.max_object, s.memory
            ),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::time::Duration;

    const POOL: &str = "
pools:
  web:
    backends: [{url: http://127.0.0.1:8001}]
    cache: {}
";

    #[test]
    fn defaults_of_both_blocks() {
        let c = parse(&format!("{POOL}cache: {{}}\n"), "t.yaml").expect("valid");
        let store = c.cache.expect("store");
        assert_eq!(store.memory, 256 << 20);
        assert_eq!(store.max_object, 8 << 20);
        assert_eq!(store.eviction, super::Eviction::Tinyufo);
        let p = c.pools["web"].cache.expect("pool cache");
        assert_eq!(p.default_ttl, Duration::ZERO);
        assert_eq!(p.stale_if_error, Duration::ZERO);
        assert_eq!(p.lock_timeout, Duration::from_secs(2));
        assert_eq!(p.vary_limit, 16);
    }

    #[test]
    fn eviction_is_tinyufo_or_lru() {
        let lru = parse(&format!("{POOL}cache: {{eviction: lru}}\n"), "t.yaml").expect("valid");
        assert_eq!(lru.cache.expect("store").eviction, super::Eviction::Lru);
        let e =
            parse(&format!("{POOL}cache: {{eviction: fifo}}\n"), "t.yaml").expect_err("unknown");
        let text = format!("{:?}", e.errors);
        assert!(text.contains("fifo") && text.contains("tinyufo"), "{text}");
    }

    #[test]
    fn a_caching_pool_needs_the_store() {
        let e = parse(POOL, "t.yaml").expect_err("no store").errors;
        assert_eq!(e[0].path, "pools.web.cache");
    }

    #[test]
    fn bad_values_are_named() {
        let y = format!(
            "{}cache: {{memory: 1MiB, max_object: 2MiB}}\n",
            POOL.replace(
                "cache: {}",
                "cache: {vary_limit: 0, lock_timeout: 0s, ttl: 1s}"
            )
        );
        let e = parse(&y, "t.yaml").expect_err("bad").errors;
        assert!(e.iter().any(|e| e.message.contains("ttl")), "{e:?}");
        let y = format!(
            "{}cache: {{memory: 1MiB, max_object: 2MiB}}\n",
            POOL.replace("cache: {}", "cache: {vary_limit: 0, lock_timeout: 0s}")
        );
        let paths: Vec<String> = parse(&y, "t.yaml")
            .expect_err("bad")
            .errors
            .into_iter()
            .map(|e| e.path)
            .collect();
        for p in [
            "pools.web.cache.vary_limit",
            "pools.web.cache.lock_timeout",
            "cache.max_object",
        ] {
            assert!(paths.iter().any(|x| x == p), "{p} in {paths:?}");
        }
    }
}
