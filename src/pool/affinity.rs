//! Upstream connections kept per worker thread when the runtime does not
//! steal work (`server.work_stealing: false` with several `threads`).
//!
//! pingora 0.9.1 keeps one upstream connection pool per service, shared by
//! all worker threads. Without work stealing every thread runs its own
//! tokio runtime, and a pooled connection is watched for close by a task on
//! the runtime of the thread that released it. When another thread takes
//! that connection, pingora-core (`connectors/mod.rs`,
//! `TransportConnector::reused_stream`) waits for the watcher's lock and
//! then unwraps the connection's `Arc`; the watcher (pingora-pool
//! `ConnectionPool::idle_poll`) releases the lock before it drops its
//! `Arc`, and the taking thread, running in parallel, often gets there in
//! between: "failed to acquire reusable stream", the connection is closed
//! and a new one opened. With work stealing the woken task runs on the
//! releasing thread after the watcher finished, so the race does not show.
//!
//! The fix stays outside pingora: every upstream peer carries its worker
//! thread's number in `HttpPeer::group_key`, which is part of the pool key,
//! so each thread takes back only the connections it released itself (as
//! nginx's per-worker `keepalive` upstream caches). The pool size
//! (`upstream_keepalive_pool_size`) stays one limit for the whole process.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether upstream connections are kept per thread (set once at start).
static PER_THREAD: AtomicBool = AtomicBool::new(false);

/// The next worker thread number handed out.
static NEXT: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's number, 0 until first asked.
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

/// Keeps upstream connections per worker thread when `work_stealing` is
/// off (see the module docs); called once before the server runs.
pub fn set_per_thread(work_stealing: bool) {
    PER_THREAD.store(!work_stealing, Ordering::Relaxed);
}

/// The `HttpPeer::group_key` of peers built on this thread: this thread's
/// number when connections are kept per thread, else 0 (one shared pool).
pub fn group_key() -> u64 {
    if !PER_THREAD.load(Ordering::Relaxed) {
        return 0;
    }
    THREAD.with(|t| {
        let mut n = t.get();
        if n == 0 {
            n = NEXT.fetch_add(1, Ordering::Relaxed);
            t.set(n);
        }
        n
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_get_distinct_stable_keys_only_without_stealing() {
        set_per_thread(false);
        let here = group_key();
        assert_ne!(here, 0);
        assert_eq!(group_key(), here);
        let there = std::thread::spawn(group_key).join().expect("thread");
        assert_ne!(there, here);
        set_per_thread(true);
        assert_eq!(group_key(), 0);
    }
}
