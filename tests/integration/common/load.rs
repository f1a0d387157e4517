//! [`Load`]: client threads sending requests while a test does something
//! to the proxy (an upgrade, a reload), counting what succeeded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::try_get;

/// `threads` clients each sending `GET /load` on a fresh connection every
/// 5 ms (for at most 60 s) until [`finish`](Load::finish).
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    pub fn start(addr: SocketAddr, threads: usize) -> Load {
        let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let spawn = |_| {
            let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
            thread::spawn(move || {
                let (deadline, mut errors) = (Instant::now() + Duration::from_secs(60), Vec::new());
                while !stop.load(Relaxed) && Instant::now() < deadline {
                    match try_get(addr, "/load", &[("Connection", "close")]) {
                        Ok(r) if r.status == 200 => _ = ok.fetch_add(1, Relaxed),
                        other => errors.push(format!("{:?}", other.map(|r| r.status))),
                    }
                    thread::sleep(Duration::from_millis(5)); // pacing the load, not a wait
                }
                errors
            })
        };
        let threads = (0..threads).map(spawn).collect();
        Load { stop, ok, threads }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Relaxed)
    }

    /// Stops the clients and asserts that no request failed; `context` for the message.
    pub fn finish(self, context: &str) {
        self.stop.store(true, Relaxed);
        let errors: Vec<String> = self.threads.into_iter().flat_map(|t| t.join().expect("load thread")).collect();
        let total = self.ok.load(Relaxed) + errors.len();
        let first = &errors[..errors.len().min(10)];
        assert!(
            errors.is_empty(),
            "{} of {total} requests failed during the upgrade: {first:?}\n{context}",
            errors.len()
        );
    }
}
