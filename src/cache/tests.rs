//! Unit tests of the memory store: byte accounting, per-pool usage,
//! targeted purges and abandoned writes.

use super::store::{KeyParts, MemStore};
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::ResponseHeader;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

fn key(pool: &str, path: &str) -> CacheKey {
    let mut k = CacheKey::new(format!("{pool}|{path}"), pool);
    k.extensions.insert(KeyParts {
        pool: Arc::from(pool),
        host: "h".into(),
        path: path.into(),
    });
    k
}

fn meta() -> CacheMeta {
    let now = SystemTime::now();
    let header = ResponseHeader::build(200, None).expect("header");
    CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
}

#[tokio::test]
async fn writes_are_weighed_purged_and_dropped() {
    static STORE: LazyLock<MemStore> = LazyLock::new(MemStore::new);
    let store: &'static MemStore = &STORE;
    let span = Span::inactive().handle();
    for (pool, path) in [("a", "/1"), ("a", "/2"), ("b", "/1")] {
        let mut w = store
            .get_miss_handler(&key(pool, path), &meta(), &span)
            .await
            .expect("writer");
        w.write_body(bytes::Bytes::from_static(b"0123456789"), true)
            .await
            .expect("write");
        w.finish().await.expect("finish");
    }
    let a = store.usage("a");
    assert_eq!(a.entries, 2);
    assert!(a.bytes > 20, "headers count too: {}", a.bytes);
    assert_eq!(store.bytes(), a.bytes + store.usage("b").bytes);

    // a readable complete body
    let (_, mut hit) = store
        .lookup(&key("a", "/1"), &span)
        .await
        .expect("lookup")
        .expect("stored");
    assert_eq!(
        hit.read_body().await.expect("read").as_deref(),
        Some(&b"0123456789"[..])
    );
    assert!(hit.read_body().await.expect("read").is_none());

    // a write dropped before finish leaves nothing behind
    let mut w = store
        .get_miss_handler(&key("a", "/3"), &meta(), &span)
        .await
        .expect("writer");
    w.write_body(bytes::Bytes::from_static(b"part"), false)
        .await
        .expect("write");
    drop(w);
    assert!(store
        .lookup(&key("a", "/3"), &span)
        .await
        .expect("lookup")
        .is_none());

    assert_eq!(store.purge_matching("a", None, "/1").len(), 1);
    assert_eq!(store.purge_matching("a", Some("other"), "*").len(), 0);
    assert_eq!(store.purge_matching("a", Some("H"), "*").len(), 1);
    assert_eq!(store.usage("a").entries, 0);
    assert_eq!(store.bytes(), store.usage("b").bytes);
}
