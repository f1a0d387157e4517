//! The bounded in-memory response store behind pingora-cache's [`Storage`]
//! trait.
//!
//! - A response streams to its client while its chunks are collected; the
//!   entry is published, without copying, once the body is complete.
//!   Readers of a finished entry share its chunks (`Arc`). Concurrent misses
//!   wait on pingora-cache's lock for the publication rather than follow a
//!   partial body, so a write that is abandoned midway (a body over
//!   `max_object`) never leaves a reader with a truncated response: the
//!   lock is released as failed and the waiters fetch it themselves.
//! - The weight of an entry is its serialized header plus its body, so
//!   `cache.memory` bounds both. The bound itself is kept by the eviction
//!   manager (`cache.eviction`: TinyUFO, or pingora-cache's LRU): every
//!   finished write is admitted with that weight
//!   and whatever the manager evicts is purged here.
//! - A write dropped before its end (a body over `max_object`, an upstream
//!   error, a client gone) removes its partial entry; nothing half-written is
//!   ever served as complete.

use super::io::{meta_of, Reader, Writer};
use bytes::Bytes;
use parking_lot::RwLock;
use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora_cache::storage::{PurgeOutcome, PurgeTarget, Storage};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, HitHandler, MissHandler, PurgeType};
use pingora_core::{Error, ErrorType, Result};
use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a cache key was made of, attached to the [`CacheKey`] as an
/// extension so that the store can index entries for purges and `/status`.
#[derive(Debug, Clone)]
pub struct KeyParts {
    /// The pool the entry belongs to.
    pub pool: Arc<str>,
    /// The request's `Host` (as sent, lowercased).
    pub host: String,
    /// Path and query, byte-exact.
    pub path: String,
}

/// Entries and bytes of one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Stored responses (each `Vary` variant counts).
    pub entries: u64,
    /// Bytes of their headers and bodies.
    pub bytes: u64,
}

pub(super) struct Entry {
    pub(super) meta: (Vec<u8>, Vec<u8>),
    pub(super) body: Arc<[Bytes]>,
    pub(super) weight: u64,
    pub(super) parts: KeyParts,
    pub(super) primary: HashBinary,
    pub(super) compact: CompactCacheKey,
}

#[derive(Default)]
pub(super) struct Table {
    pub(super) entries: HashMap<String, Entry>,
    pub(super) usage: HashMap<Arc<str>, Usage>,
    /// Stored variants (combined keys) of each primary key.
    pub(super) variants: HashMap<HashBinary, HashSet<String>>,
}

impl Table {
    fn remove(&mut self, combined: &str) -> Option<Entry> {
        let e = self.entries.remove(combined)?;
        if let Some(u) = self.usage.get_mut(&e.parts.pool) {
            u.entries -= 1;
            u.bytes -= e.weight;
        }
        if let Some(set) = self.variants.get_mut(&e.primary) {
            set.remove(combined);
            if set.is_empty() {
                self.variants.remove(&e.primary);
            }
        }
        Some(e)
    }

    pub(super) fn insert(&mut self, combined: String, e: Entry) {
        self.remove(&combined);
        let u = self.usage.entry(e.parts.pool.clone()).or_default();
        u.entries += 1;
        u.bytes += e.weight;
        self.variants
            .entry(e.primary)
            .or_default()
            .insert(combined.clone());
        self.entries.insert(combined, e);
    }
}

/// The shared response store (see the module docs).
pub struct MemStore {
    pub(super) table: RwLock<Table>,
    pub(super) bytes: AtomicU64,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        MemStore {
            table: RwLock::new(Table::default()),
            bytes: AtomicU64::new(0),
        }
    }

    /// Bytes of all finished entries (headers and bodies).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Entries and bytes of `pool`.
    pub fn usage(&self, pool: &str) -> Usage {
        self.table
            .read()
            .usage
            .get(pool)
            .copied()
            .unwrap_or_default()
    }

    /// Stored variants of the primary key `primary`.
    pub fn variants(&self, primary: &HashBinary) -> usize {
        self.table
            .read()
            .variants
            .get(primary)
            .map_or(0, HashSet::len)
    }

    /// Removes every stored variant of the primary keys `primaries`
    /// (without scanning the table). Returns the removed keys.
    pub fn purge_primaries(&self, primaries: &[HashBinary]) -> Vec<CompactCacheKey> {
        let mut table = self.table.write();
        let mut removed = Vec::new();
        for p in primaries {
            let keys: Vec<String> = table
                .variants
                .get(p)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default();
            for k in keys {
                if let Some(e) = table.remove(&k) {
                    self.bytes.fetch_sub(e.weight, Ordering::Relaxed);
                    removed.push(e.compact);
                }
            }
        }
        removed
    }

    /// Removes every entry of `pool` whose target matches (`path` `*` is
    /// every target; `host` `None` is any host). Returns the removed keys.
    pub fn purge_matching(
        &self,
        pool: &str,
        host: Option<&str>,
        path: &str,
    ) -> Vec<CompactCacheKey> {
        let mut table = self.table.write();
        let hit: Vec<String> = table
            .entries
            .iter()
            .filter(|(_, e)| {
                &*e.parts.pool == pool
                    && (path == "*" || e.parts.path == path)
                    && host.is_none_or(|h| e.parts.host.eq_ignore_ascii_case(h))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut removed = Vec::with_capacity(hit.len());
        for k in &hit {
            if let Some(e) = table.remove(k) {
                self.bytes.fetch_sub(e.weight, Ordering::Relaxed);
                removed.push(e.compact);
            }
        }
        removed
    }

    fn remove(&self, combined: &str) -> bool {
        let removed = self.table.write().remove(combined);
        if let Some(e) = &removed {
            self.bytes.fetch_sub(e.weight, Ordering::Relaxed);
        }
        removed.is_some()
    }
}

#[async_trait::async_trait]
impl Storage for MemStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let table = self.table.read();
        let Some(e) = table.entries.get(&key.combined()) else {
            return Ok(None);
        };
        let meta = meta_of(&e.meta)?;
        let reader = Reader {
            body: e.body.clone(),
            next: 0,
            weight: usize::try_from(e.weight).unwrap_or(usize::MAX),
        };
        Ok(Some((meta, Box::new(reader))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let Some(parts) = key.extensions.get::<KeyParts>().cloned() else {
            return Error::e_explain(ErrorType::InternalError, "cache key without its parts");
        };
        Ok(Box::new(Writer {
            store: self,
            meta: meta.serialize()?,
            chunks: Vec::new(),
            combined: key.combined(),
            parts,
            primary: key.primary_bin(),
            compact: key.to_compact(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(if self.remove(&target.key().combined()) {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let meta = meta.serialize()?;
        let mut table = self.table.write();
        let Some(e) = table.entries.get_mut(&key.combined()) else {
            return Ok(false);
        };
        // a revalidation may change the header's size: keep the bytes exact
        let body: usize = e.body.iter().map(Bytes::len).sum();
        let (old, new) = (e.weight, (meta.0.len() + meta.1.len() + body) as u64);
        e.meta = meta;
        e.weight = new;
        let pool = e.parts.pool.clone();
        if let Some(u) = table.usage.get_mut(&pool) {
            u.bytes = u.bytes + new - old;
        }
        self.bytes.fetch_add(new, Ordering::Relaxed);
        self.bytes.fetch_sub(old, Ordering::Relaxed);
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
