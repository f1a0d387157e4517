//! TinyUFO admission and eviction (`cache.eviction: tinyufo`, the default)
//! behind pingora-cache's `EvictionManager` trait.
//!
//! TinyUFO (Cloudflare's `TinyUFO` crate: S3-FIFO queues with TinyLFU
//! admission) keeps an entry only when it is likely to be asked again; a
//! new entry that loses to the ones it would displace is itself returned
//! as evicted, and pingora-cache then drops it from the store. On a Zipf
//! key set it holds 6–13 points more hits than an LRU of the same size
//! (README "Response caching", `examples/cache_eviction.rs`).
//!
//! TinyUFO weighs entries in `u16`: sizes are counted in units of
//! [`Ufo::unit`] bytes (1 KiB, more when `max_object` needs it), rounded
//! up, so the byte budget is never exceeded by rounding.

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_cache::eviction::{CacheEntryKey, CacheEntryKeyRef, EvictionManager};
use pingora_cache::key::CompactCacheKey;
use pingora_core::Result;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::SystemTime;
use tinyufo::TinyUfo;

/// A typical object size, bytes: the budget over it sizes TinyUFO's
/// frequency estimator.
const TYPICAL_OBJECT: u64 = 4096;

/// What TinyUFO holds per entry: its identity and weight in units.
type Tracked = (CacheEntryKey, u16);

/// The TinyUFO eviction manager of the store.
pub struct Ufo {
    ufo: TinyUfo<CompactCacheKey, Tracked>,
    unit: usize,
    /// Serialises admissions, so that the size counters match the queues.
    admit: Mutex<()>,
    size: AtomicUsize,
    items: AtomicUsize,
    evicted_size: AtomicUsize,
    evicted_items: AtomicUsize,
}

impl Ufo {
    /// A manager holding at most `memory` bytes; `max_object` bounds one
    /// entry's body (its weight must fit TinyUFO's `u16`).
    pub fn new(memory: u64, max_object: u64) -> Ufo {
        // room for the largest body plus 64 KiB of header in u16 units
        let largest = max_object.saturating_add(64 << 10);
        let unit = largest.div_ceil(u64::from(u16::MAX)).max(1024);
        let limit = usize::try_from(memory / unit).unwrap_or(usize::MAX).max(1);
        let estimated = usize::try_from(memory / TYPICAL_OBJECT)
            .unwrap_or(usize::MAX)
            .clamp(64, 1 << 22);
        Ufo {
            ufo: TinyUfo::new(limit, estimated),
            unit: usize::try_from(unit).unwrap_or(usize::MAX),
            admit: Mutex::new(()),
            size: AtomicUsize::new(0),
            items: AtomicUsize::new(0),
            evicted_size: AtomicUsize::new(0),
            evicted_items: AtomicUsize::new(0),
        }
    }

    fn units(&self, size: usize) -> u16 {
        u16::try_from(size.div_ceil(self.unit).max(1)).unwrap_or(u16::MAX)
    }

    fn bytes(&self, units: u16) -> usize {
        usize::from(units) * self.unit
    }

    /// Puts `item` with `units`, replacing what was tracked for its key;
    /// returns the entries to drop from the store (possibly `item`).
    fn put(&self, item: CacheEntryKey, units: u16) -> Vec<CacheEntryKey> {
        let _one = self.admit.lock();
        let key = item.key().clone();
        // a tracked key is replaced in place (TinyUFO keeps its place)
        match self.ufo.get(&key) {
            Some((_, old)) => self.size.fetch_sub(self.bytes(old), Relaxed),
            None => self.items.fetch_add(1, Relaxed),
        };
        self.size.fetch_add(self.bytes(units), Relaxed);
        let evicted = self.ufo.put(key, (item, units), units);
        evicted
            .into_iter()
            .map(|kv| {
                let (entry, w) = kv.data;
                self.size.fetch_sub(self.bytes(w), Relaxed);
                self.items.fetch_sub(1, Relaxed);
                self.evicted_size.fetch_add(self.bytes(w), Relaxed);
                self.evicted_items.fetch_add(1, Relaxed);
                entry
            })
            .collect()
    }
}

#[async_trait]
impl EvictionManager for Ufo {
    fn total_size(&self) -> usize {
        self.size.load(Relaxed)
    }

    fn total_items(&self) -> usize {
        self.items.load(Relaxed)
    }

    fn evicted_size(&self) -> usize {
        self.evicted_size.load(Relaxed)
    }

    fn evicted_items(&self) -> usize {
        self.evicted_items.load(Relaxed)
    }

    fn admit(
        &self,
        item: CacheEntryKey,
        size: usize,
        _fresh_until: SystemTime,
    ) -> Vec<CacheEntryKey> {
        let units = self.units(size);
        self.put(item, units)
    }

    fn increment_weight(
        &self,
        item: &CacheEntryKey,
        delta: usize,
        max_weight: Option<usize>,
    ) -> Vec<CacheEntryKey> {
        let current = self.ufo.get(item.key()).map_or(0, |(_, w)| self.bytes(w));
        let mut size = current.saturating_add(delta);
        if let Some(max) = max_weight {
            size = size.min(max.max(current));
        }
        self.put(item.clone(), self.units(size))
    }

    fn remove(&self, item: CacheEntryKeyRef<'_>) {
        let _one = self.admit.lock();
        let key = item.key();
        // only the entry that was admitted (same entry id), not a newer one
        let same = self
            .ufo
            .get(key)
            .is_some_and(|(e, _)| item.entry_id().is_none() || e.entry_id() == item.entry_id());
        if !same {
            return;
        }
        if let Some((_, w)) = self.ufo.remove(key) {
            self.size.fetch_sub(self.bytes(w), Relaxed);
            self.items.fetch_sub(1, Relaxed);
        }
    }

    fn access(&self, item: &CacheEntryKey, _size: usize, _fresh_until: SystemTime) -> bool {
        // a hit counts towards the entry's frequency; an entry TinyUFO let
        // go is on its way out of the store and is not tracked again
        self.ufo.get(item.key()).is_some()
    }

    fn peek(&self, item: &CacheEntryKey) -> bool {
        // TinyUFO has no side-effect-free lookup: a peek counts as a use
        self.ufo.get(item.key()).is_some()
    }

    async fn save(&self, _dir_path: &str) -> Result<()> {
        // the store starts empty after a binary upgrade: nothing to keep
        Ok(())
    }

    async fn load(&self, _dir_path: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::CacheKey;
    use std::time::Duration;

    fn entry(i: usize) -> CacheEntryKey {
        CacheEntryKey::key_only(CacheKey::new(format!("k{i}"), "").to_compact())
    }

    #[test]
    fn never_holds_more_than_its_budget() {
        let u = Ufo::new(64 << 10, 8 << 10);
        assert_eq!(u.unit, 1024);
        let until = SystemTime::now() + Duration::from_secs(60);
        for i in 0..1000 {
            let evicted = u.admit(entry(i), 3000 + i % 5000, until);
            assert!(u.total_size() <= 64 << 10, "{} after {i}", u.total_size());
            assert!(evicted.len() <= u.evicted_items());
        }
        assert!(u.total_items() > 0 && u.evicted_items() > 0);
    }

    #[test]
    fn a_popular_entry_survives_a_scan_of_one_off_ones() {
        // an LRU of this size loses key 0 to the scan; TinyUFO keeps it
        let u = Ufo::new(16 << 10, 1 << 10);
        let until = SystemTime::now() + Duration::from_secs(60);
        u.admit(entry(0), 1024, until);
        for _ in 0..20 {
            assert!(u.access(&entry(0), 1024, until));
        }
        for i in 1..200 {
            u.admit(entry(i), 1024, until);
        }
        assert!(
            u.peek(&entry(0)),
            "the popular entry was evicted by one-off ones"
        );
    }

    #[test]
    fn removes_only_the_entry_it_admitted() {
        let u = Ufo::new(1 << 20, 8 << 10);
        let until = SystemTime::now() + Duration::from_secs(60);
        let id = |n| Some(pingora_cache::eviction::CacheEntryId::new(n));
        let key = || CacheKey::new("k", "").to_compact();
        u.admit(CacheEntryKey::from_entry_id(key(), id(2)), 4096, until);
        u.remove(CacheEntryKeyRef::from_entry_id(&key(), id(1)));
        assert_eq!(
            (u.total_items(), u.total_size()),
            (1, 4096),
            "an older entry id leaves the newer one"
        );
        u.remove(CacheEntryKeyRef::from_entry_id(&key(), id(2)));
        assert_eq!((u.total_items(), u.total_size()), (0, 0));
    }

    #[test]
    fn large_objects_widen_the_unit_so_weights_fit() {
        let u = Ufo::new(1 << 30, 256 << 20);
        assert!(u.unit > 1024);
        assert!(u.units(256 << 20) < u16::MAX);
        assert_eq!(u.units(1), 1, "every entry weighs at least one unit");
    }
}
