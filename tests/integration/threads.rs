//! Several worker threads: upstream connections are reused across requests
//! (README "Performance", `server.work_stealing`).

use crate::common::*;

use std::thread;

/// Clients on keep-alive connections at once, and requests each sends.
const CLIENTS: usize = 8;
const REQUESTS: usize = 150;

/// Sends [`REQUESTS`] requests on each of [`CLIENTS`] keep-alive
/// connections at once; returns what was not answered 200.
fn load(sy: &Switchyard) -> Vec<String> {
    let addr = sy.addr();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            thread::spawn(move || {
                let mut c = match Client::connect(addr) {
                    Ok(c) => c,
                    Err(e) => return vec![format!("connect: {e}")],
                };
                let answers = (0..REQUESTS).map(|_| c.get("/", &[]));
                answers
                    .filter_map(|r| match r {
                        Ok(r) if r.status == 200 => None,
                        Ok(r) => Some(format!("status {}", r.status)),
                        Err(e) => Some(e.to_string()),
                    })
                    .collect()
            })
        })
        .collect();
    workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|_| vec!["client panicked".into()])).collect()
}

/// With several threads work stealing stays on by default: without it
/// pingora 0.9.1 hands pooled upstream connections between the threads'
/// runtimes and loses some in a race ("failed to acquire reusable stream",
/// README "Performance"), opening a new connection each time.
#[test]
fn two_threads_by_default_reuse_their_upstream_connections() {
    let b = TestBackend::start("b");
    let yaml = format!("server: {{threads: 2}}\n{}", web_pool_config(&[b.url()], ""));
    let sy = Switchyard::start(&yaml);
    let failed = load(&sy);
    assert!(failed.is_empty(), "{} failed: {:?}\n{}", failed.len(), &failed[..failed.len().min(5)], sy.logs());
    let logs = sy.logs();
    assert!(!logs.contains("failed to acquire reusable stream"), "{logs}");
    // at most one connection per client and thread, whatever the order
    let opened = b.connections_accepted();
    assert!(opened <= 2 * CLIENTS, "{opened} upstream connections for {CLIENTS} clients\n{logs}");
    assert_eq!(b.app_count(), CLIENTS * REQUESTS);
}
