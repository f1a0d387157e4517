//! Response caching (RFC 9111 shared cache) on pingora-cache.
//!
//! ```text
//! Cache (one per process, 'static, built from the top-level `cache:`)
//! |-- store::MemStore ------ entries, streaming writes, per-pool usage
//! |-- ufo::Ufo or lru ------ keeps the store under `cache.memory` bytes
//! |-- CacheLock ------------ request coalescing (one fetch per key)
//! `-- CacheStats by pool --- hit / miss / stale / ... counters
//! ```
//!
//! pingora-cache needs `&'static` store, eviction manager and lock, so the
//! [`Cache`] is built once, at the first configuration that has a `cache:`
//! block, and outlives every reload by construction. A reload that changes
//! `cache.memory`, `cache.max_object` or `cache.eviction` keeps the running store (logged): a
//! binary upgrade starts a new, empty one. A pool whose `cache` block is
//! removed simply stops using the store; its entries age out by eviction.
//!
//! The request phases live in [`http`] (a racing pool's misses in
//! [`fill`]); the store in [`store`], its streaming reads and writes in `io`.

pub mod fill;
pub mod http;
mod io;
mod revalidate;
pub mod store;
#[cfg(test)]
mod tests;
mod ufo;

use crate::config::cache::Eviction;
use crate::config::CacheStoreSettings;
use parking_lot::Mutex;
use pingora_cache::eviction::lru::Manager;
use pingora_cache::eviction::{CacheEntryKeyRef, EvictionManager};
use pingora_cache::key::CacheHashKey;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Longest a fetch may hold a key's lock before waiters stop trusting it.
const LOCK_AGE: Duration = Duration::from_secs(60);

/// Shards of the LRU eviction manager.
const LRU_SHARDS: usize = 16;

/// How one request was answered with respect to the cache, as counted in
/// `switchyard_cache_requests_total{status}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Served from a fresh stored response.
    Hit,
    /// Not stored: fetched from a backend (stored or not).
    Miss,
    /// Served from a stale stored response (stale-while-revalidate,
    /// stale-if-error).
    Stale,
    /// A stored response was revalidated with a 304.
    Revalidated,
    /// A stored response had expired and was replaced by a new one.
    Expired,
    /// The request could not use the cache (method, `Vary: *`, ...).
    Bypass,
}

impl Status {
    /// Every status, in metric order.
    pub const ALL: [Status; 6] = [
        Status::Hit,
        Status::Miss,
        Status::Stale,
        Status::Revalidated,
        Status::Expired,
        Status::Bypass,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Stale => "stale",
            Status::Revalidated => "revalidated",
            Status::Expired => "expired",
            Status::Bypass => "bypass",
        }
    }
}

/// Cache answers of one pool, by [`Status`] (kept across reloads).
#[derive(Debug, Default)]
pub struct CacheStats {
    counts: [AtomicU64; 6],
}

impl CacheStats {
    /// Counts one answer.
    pub fn add(&self, s: Status) {
        self.counts[s as usize].fetch_add(1, Relaxed);
    }

    /// Answers with status `s` so far.
    pub fn get(&self, s: Status) -> u64 {
        self.counts[s as usize].load(Relaxed)
    }

    /// Share of answers served from the store (hit and stale) among all
    /// answers; 0 when there were none.
    pub fn hit_ratio(&self) -> f64 {
        let total: u64 = Status::ALL.iter().map(|s| self.get(*s)).sum();
        let served = self.get(Status::Hit) + self.get(Status::Stale);
        if total == 0 {
            0.0
        } else {
            served as f64 / total as f64
        }
    }
}

/// The process-wide cache (see the module docs).
pub struct Cache {
    /// The response store.
    pub store: store::MemStore,
    /// Keeps `store` under `settings.memory` bytes (`cache.eviction`).
    pub eviction: Box<dyn EvictionManager + Send + Sync>,
    /// Coalesces concurrent misses on one key.
    pub lock: Box<CacheKeyLockImpl>,
    /// The settings it was built with.
    pub settings: CacheStoreSettings,
    stats: Mutex<HashMap<String, Arc<CacheStats>>>,
}

static CACHE: OnceLock<Cache> = OnceLock::new();

/// The process's cache, built from `settings` at the first call that has
/// some; later calls with other settings keep it (and log why).
pub fn install(settings: Option<CacheStoreSettings>) -> Option<&'static Cache> {
    let settings = settings?;
    let cache = CACHE.get_or_init(|| Cache {
        store: store::MemStore::new(),
        eviction: eviction(&settings),
        lock: CacheLock::new_boxed(LOCK_AGE),
        settings,
        stats: Mutex::new(HashMap::new()),
    });
    if cache.settings != settings {
        log::warn!(
            "cache.memory / cache.max_object / cache.eviction changed: the running store keeps {} / {} bytes / {:?} until a binary upgrade",
            cache.settings.memory,
            cache.settings.max_object,
            cache.settings.eviction
        );
    }
    Some(cache)
}

/// The eviction manager `settings.eviction` names, sized to
/// `settings.memory` bytes.
fn eviction(settings: &CacheStoreSettings) -> Box<dyn EvictionManager + Send + Sync> {
    match settings.eviction {
        Eviction::Tinyufo => Box::new(ufo::Ufo::new(settings.memory, settings.max_object)),
        Eviction::Lru => Box::new(Manager::<LRU_SHARDS>::with_capacity(
            usize::try_from(settings.memory).unwrap_or(usize::MAX),
            1024,
        )),
    }
}

/// The process's cache, if one was installed.
pub fn get() -> Option<&'static Cache> {
    CACHE.get()
}

impl Cache {
    /// The counters of `pool`, created on first use.
    pub fn stats(&self, pool: &str) -> Arc<CacheStats> {
        self.stats
            .lock()
            .entry(pool.to_string())
            .or_default()
            .clone()
    }

    /// Removes every stored variant of `pool`'s `path` (`*`: all of the
    /// pool's entries) on `host` (`None`: any host); returns how many.
    pub fn purge(&self, pool: &str, host: Option<&str>, path: &str) -> usize {
        let removed = match host {
            // a known target: straight to its entries, both schemes
            Some(host) if path != "*" => {
                let primaries = [false, true]
                    .map(|tls| http::primary_key(pool, tls, host, path.as_bytes()).primary_bin());
                self.store.purge_primaries(&primaries)
            }
            // any host, or the whole pool: an admin scan of the table
            _ => self.store.purge_matching(pool, host, path),
        };
        for key in &removed {
            self.eviction
                .remove(CacheEntryKeyRef::from_entry_id(key, None));
        }
        removed.len()
    }
}
