//! Several worker threads: upstream connections are reused by the thread
//! that opened them, with or without work stealing (README "Performance",
//! `server.work_stealing`).

use crate::common::*;

use std::thread;

/// Clients on keep-alive connections at once, and requests each sends.
const CLIENTS: usize = 8;
const REQUESTS: usize = 150;

/// Sends [`REQUESTS`] requests on each of [`CLIENTS`] keep-alive
/// connections at once; returns how many were not answered 200.
fn load(sy: &Switchyard) -> usize {
    let addr = sy.addr();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            thread::spawn(move || {
                let Ok(mut c) = Client::connect(addr) else { return REQUESTS };
                (0..REQUESTS).filter(|_| c.get("/", &[]).map_or(true, |r| r.status != 200)).count()
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().unwrap_or(REQUESTS)).sum()
}

/// Without work stealing each thread runs its own runtime; pingora's shared
/// upstream pool then handed connections across threads and lost them in a
/// race ("failed to acquire reusable stream"), opening new ones instead.
#[test]
fn threads_without_work_stealing_reuse_their_upstream_connections() {
    let b = TestBackend::start("b");
    let yaml = format!("server: {{threads: 2, work_stealing: false}}\n{}", web_pool_config(&[b.url()], ""));
    let sy = Switchyard::start(&yaml);
    assert_eq!(load(&sy), 0, "{}", sy.logs());
    let logs = sy.logs();
    assert!(!logs.contains("failed to acquire reusable stream"), "{logs}");
    // at most one connection per client and thread, whatever the order
    let opened = b.connections_accepted();
    assert!(opened <= 2 * CLIENTS, "{opened} upstream connections for {CLIENTS} clients\n{logs}");
    assert_eq!(b.app_count(), CLIENTS * REQUESTS);
}
