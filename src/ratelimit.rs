//! Rate limiting per pool: a token bucket per key (client IP or a header
//! value), answered 429 with `Retry-After` when empty.
//!
//! Each bucket is stored as one number, its GCRA "theoretical arrival
//! time" (the generic cell rate algorithm of ATM networks, as in
//! `redis-cell` and `governor`): exactly a token bucket of `burst` tokens
//! refilled at `rps`, in 16 bytes per key. Buckets live in sharded LRU
//! tables of at most `max_keys` entries, so memory is bounded however many
//! clients there are (README "Rate limiting" gives the measured figure);
//! a key that was evicted starts again with a full bucket.
//!
//! Limiters are kept by pool name in a [`Limiters`] registry owned by the
//! proxy, outside the route table: a reload that leaves a pool's
//! `rate_limit` unchanged keeps its buckets; a changed one starts afresh.
//! Limits are per process (per instance), not shared between instances. A
//! pool removed by a reload leaves its table behind (at most `max_keys`
//! entries) until a pool of that name comes back or the process exits.

use crate::config::{PoolConfig, RateKey, RateLimit};
use arc_swap::ArcSwap;
use lru::LruCache;
use pingora_proxy::Session;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shards of a limiter's table (fewer lock collisions between workers).
const SHARDS: usize = 16;

/// One pool's buckets.
pub struct Limiter {
    config: RateLimit,
    shards: Vec<Mutex<LruCache<u64, u64>>>,
    /// Keys are hashed with a per-process random key, so clients cannot
    /// aim collisions at each other.
    hasher: RandomState,
    epoch: Instant,
    /// Requests refused, for `switchyard_rate_limited_total`.
    refused: Arc<AtomicU64>,
}

impl Limiter {
    /// Empty buckets for `config`; refusals are counted in `refused`.
    pub fn new(config: RateLimit, refused: Arc<AtomicU64>) -> Self {
        let shards = SHARDS.min(config.max_keys).max(1);
        let per_shard =
            NonZeroUsize::new(config.max_keys.div_ceil(shards)).unwrap_or(NonZeroUsize::MIN);
        Limiter {
            shards: (0..shards)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            config,
            hasher: RandomState::new(),
            epoch: Instant::now(),
            refused,
        }
    }

    /// The configuration the buckets were made for.
    pub fn config(&self) -> &RateLimit {
        &self.config
    }

    /// Takes a token for `key` now: `Ok(())`, or `Err(wait)` with the time
    /// until one is available.
    pub fn check(&self, key: &[u8]) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &[u8], now: Instant) -> Result<(), Duration> {
        let hash = self.hasher.hash_one(key);
        let now = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let t = self.config.interval.as_nanos() as u64;
        let tolerance = t.saturating_mul(u64::from(self.config.burst.saturating_sub(1)));
        let shard = &self.shards[(hash as usize) % self.shards.len()];
        let mut table = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = table.get(&hash).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            drop(table);
            self.refused.fetch_add(1, Relaxed);
            return Err(Duration::from_nanos(ahead - tolerance));
        }
        table.put(hash, tat.saturating_add(t));
        Ok(())
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |t| t.len()))
            .sum()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bytes a request is counted by: its header's value (`header:NAME`),
/// or its client IP (`client_ip`, and requests without that header).
pub fn key_of(config: &RateLimit, session: &Session) -> Vec<u8> {
    if let RateKey::Header(h) = &config.key {
        if let Some(v) = session.req_header().headers.get(h) {
            let mut k = Vec::with_capacity(v.len() + 1);
            k.push(b'h');
            k.extend_from_slice(v.as_bytes());
            return k;
        }
    }
    let ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut k = Vec::with_capacity(ip.len() + 1);
    k.push(b'i');
    k.extend_from_slice(ip.as_bytes());
    k
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1
/// (RFC 9110 §10.2.3).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64
}

/// The limiters of every pool by name, and their refusal counters (which
/// outlive configuration changes).
#[derive(Default)]
pub struct Limiters {
    live: ArcSwap<HashMap<String, Arc<Limiter>>>,
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Serialises replacements of `live`.
    write: Mutex<()>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limiters")
    }
}

impl Limiters {
    /// The limiter of pool `pool` for `config`: the existing one when its
    /// configuration is the same, else a new one (empty buckets).
    pub fn for_pool(&self, pool: &str, config: &RateLimit) -> Arc<Limiter> {
        if let Some(l) = self.live.load().get(pool).filter(|l| &l.config == config) {
            return l.clone();
        }
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = self.live.load().get(pool).filter(|l| &l.config == config) {
            return l.clone();
        }
        let limiter = Arc::new(Limiter::new(config.clone(), self.counter(pool)));
        let mut next = HashMap::clone(&self.live.load());
        next.insert(pool.to_string(), limiter.clone());
        self.live.store(Arc::new(next));
        limiter
    }

    /// `Some(Retry-After seconds)` when the rate limit of `pool` (if any)
    /// refuses this request, else `None` (the token is taken).
    pub fn refuse(&self, pool: &PoolConfig, session: &Session) -> Option<u64> {
        let config = pool.rate_limit.as_ref()?;
        let limiter = self.for_pool(&pool.name, config);
        let wait = limiter.check(&key_of(config, session)).err()?;
        Some(retry_after_secs(wait))
    }

    fn counter(&self, pool: &str) -> Arc<AtomicU64> {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.entry(pool.to_string()).or_default().clone()
    }

    /// Requests of `pool` refused so far.
    pub fn refused(&self, pool: &str) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.get(pool).map_or(0, |n| n.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateKey;

    fn limiter(rps: f64, burst: u32, max_keys: usize) -> Limiter {
        Limiter::new(
            RateLimit {
                interval: Duration::from_secs_f64(1.0 / rps),
                burst,
                key: RateKey::ClientIp,
                max_keys,
            },
            Arc::default(),
        )
    }

    #[test]
    fn burst_then_refill_at_rate() {
        let l = limiter(5.0, 5, 100);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.check_at(b"a", t0).is_ok());
        }
        let wait = l.check_at(b"a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(200));
        assert_eq!(retry_after_secs(wait), 1);
        // another key has its own bucket
        assert!(l.check_at(b"b", t0).is_ok());
        // one token back after 200 ms, not two
        let t1 = t0 + Duration::from_millis(200);
        assert!(l.check_at(b"a", t1).is_ok());
        assert!(l.check_at(b"a", t1).is_err());
        assert_eq!(l.refused.load(Relaxed), 2);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let l = limiter(0.5, 1, 100);
        let t0 = Instant::now();
        assert!(l.check_at(b"a", t0).is_ok());
        let wait = l
            .check_at(b"a", t0 + Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(1900));
        assert_eq!(retry_after_secs(wait), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn table_is_bounded_by_max_keys() {
        let l = limiter(1.0, 1, 1000);
        let t0 = Instant::now();
        for i in 0..50_000u32 {
            let _ = l.check_at(&i.to_be_bytes(), t0);
        }
        assert!(l.len() <= 1000 + SHARDS, "{}", l.len());
    }

    #[test]
    fn registry_keeps_buckets_while_the_config_is_unchanged() {
        let r = Limiters::default();
        let c = limiter(1.0, 1, 100).config.clone();
        let a = r.for_pool("web", &c);
        assert!(Arc::ptr_eq(&a, &r.for_pool("web", &c)));
        let mut changed = c.clone();
        changed.burst = 2;
        assert!(!Arc::ptr_eq(&a, &r.for_pool("web", &changed)));
    }
}
