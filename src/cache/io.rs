//! Reads and writes of one stored response: a [`Writer`] collects the body
//! chunk by chunk while the response streams to its client and publishes the
//! entry when it is complete; a [`Reader`] serves a finished entry's shared
//! chunks.

use super::store::{Entry, KeyParts, MemStore};
use bytes::Bytes;
use pingora_cache::key::{CompactCacheKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, MissFinishType, Storage};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_core::Result;
use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(super) fn meta_of(meta: &(Vec<u8>, Vec<u8>)) -> Result<CacheMeta> {
    CacheMeta::deserialize(&meta.0, &meta.1)
}

/// Reads a finished entry; many readers share its chunks.
pub(super) struct Reader {
    pub(super) body: Arc<[Bytes]>,
    pub(super) next: usize,
    pub(super) weight: usize,
}

#[async_trait::async_trait]
impl HandleHit for Reader {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        let chunk = self.body.get(self.next).cloned();
        self.next += 1;
        Ok(chunk)
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Writes one response. Nothing is visible until `finish`; dropping it
/// before (a body over `max_object`, an upstream error, a client gone)
/// leaves nothing behind.
pub(super) struct Writer {
    pub(super) store: &'static MemStore,
    pub(super) meta: (Vec<u8>, Vec<u8>),
    pub(super) chunks: Vec<Bytes>,
    pub(super) combined: String,
    pub(super) parts: KeyParts,
    pub(super) primary: HashBinary,
    pub(super) compact: CompactCacheKey,
}

#[async_trait::async_trait]
impl HandleMiss for Writer {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let Writer {
            store,
            meta,
            chunks,
            combined,
            parts,
            primary,
            compact,
        } = *self;
        let body_len: usize = chunks.iter().map(Bytes::len).sum();
        let weight = (meta.0.len() + meta.1.len() + body_len) as u64;
        let entry = Entry {
            meta,
            body: chunks.into(),
            weight,
            parts,
            primary,
            compact,
        };
        let mut table = store.table.write();
        if let Some(old) = table.entries.get(&combined) {
            store.bytes.fetch_sub(old.weight, Ordering::Relaxed);
        }
        table.insert(combined, entry);
        store.bytes.fetch_add(weight, Ordering::Relaxed);
        Ok(MissFinishType::Created(weight as usize))
    }
}
