//! Streaming reads and writes of one stored response: a [`Writer`] fills a
//! partial entry chunk by chunk; [`Reader`]s follow it as it grows or read a
//! finished entry's shared chunks.

use super::store::{Entry, KeyParts, MemStore};
use bytes::Bytes;
use parking_lot::RwLock;
use pingora_cache::key::{CompactCacheKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, MissFinishType, Storage};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, HitHandler};
use pingora_core::{Error, ErrorType, Result};
use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;

/// A body being written: its chunks so far and how many there are.
pub(super) struct Partial {
    pub(super) meta: (Vec<u8>, Vec<u8>),
    pub(super) chunks: RwLock<Vec<Bytes>>,
    /// (chunks written, finished)
    pub(super) progress: watch::Sender<(usize, bool)>,
}

pub(super) fn meta_of(meta: &(Vec<u8>, Vec<u8>)) -> Result<CacheMeta> {
    CacheMeta::deserialize(&meta.0, &meta.1)
}

/// Reads a finished entry (`Complete`) or follows a write (`Following`).
pub(super) enum Reader {
    Complete {
        body: Arc<[Bytes]>,
        next: usize,
        weight: usize,
    },
    Following {
        partial: Arc<Partial>,
        progress: watch::Receiver<(usize, bool)>,
        next: usize,
    },
}

#[async_trait::async_trait]
impl HandleHit for Reader {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Reader::Complete { body, next, .. } => {
                let chunk = body.get(*next).cloned();
                *next += 1;
                Ok(chunk)
            }
            Reader::Following {
                partial,
                progress,
                next,
            } => loop {
                let (written, done) = *progress.borrow_and_update();
                if *next < written {
                    let chunk = partial.chunks.read().get(*next).cloned();
                    *next += 1;
                    return Ok(chunk);
                }
                if done {
                    return Ok(None);
                }
                if progress.changed().await.is_err() {
                    // the writer went away before the end: the body is cut
                    return Error::e_explain(
                        ErrorType::ReadError,
                        "cached response being written was abandoned",
                    );
                }
            },
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        matches!(self, Reader::Complete { .. })
    }

    fn get_eviction_weight(&self) -> usize {
        match self {
            Reader::Complete { weight, .. } => *weight,
            Reader::Following { .. } => 0,
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Writes one response; dropping it before `finish` drops the partial entry.
pub(super) struct Writer {
    pub(super) store: &'static MemStore,
    pub(super) partial: Arc<Partial>,
    pub(super) combined: String,
    pub(super) id: u64,
    pub(super) tag: [u8; 8],
    pub(super) parts: KeyParts,
    pub(super) primary: HashBinary,
    pub(super) compact: CompactCacheKey,
}

#[async_trait::async_trait]
impl HandleMiss for Writer {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        let written = {
            let mut chunks = self.partial.chunks.write();
            if !data.is_empty() {
                chunks.push(data);
            }
            chunks.len()
        };
        self.partial.progress.send_replace((written, eof));
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let body: Arc<[Bytes]> = self.partial.chunks.read().clone().into();
        let body_len: usize = body.iter().map(Bytes::len).sum();
        let weight = (self.partial.meta.0.len() + self.partial.meta.1.len() + body_len) as u64;
        let entry = Entry {
            meta: self.partial.meta.clone(),
            body: body.clone(),
            weight,
            parts: self.parts.clone(),
            primary: self.primary,
            compact: self.compact.clone(),
        };
        {
            let mut table = self.store.table.write();
            if let Some(old) = table.entries.get(&self.combined) {
                self.store.bytes.fetch_sub(old.weight, Ordering::Relaxed);
            }
            table.insert(self.combined.clone(), entry);
            self.store.bytes.fetch_add(weight, Ordering::Relaxed);
        }
        self.partial.progress.send_replace((body.len(), true));
        Ok(MissFinishType::Created(weight as usize))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let mut writing = self.store.writing.write();
        if let Some(m) = writing.get_mut(&self.combined) {
            m.remove(&self.id);
            if m.is_empty() {
                writing.remove(&self.combined);
            }
        }
    }
}

pub(super) fn follow(partial: &Arc<Partial>) -> Result<Option<(CacheMeta, HitHandler)>> {
    let meta = meta_of(&partial.meta)?;
    let reader = Reader::Following {
        partial: partial.clone(),
        progress: partial.progress.subscribe(),
        next: 0,
    };
    Ok(Some((meta, Box::new(reader))))
}
