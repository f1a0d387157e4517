//! Least-connections selection, which pingora-load-balancing lacks.
//!
//! A [`BackendSelection`] that orders a pool's backends by in-flight requests
//! divided by weight (the counters live in each backend's
//! [`BackendState`](super::backend::BackendState), so they survive selector
//! rebuilds), breaking ties round-robin so idle pools still spread load.

use crate::state::state_of;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Least-connections selector over a fixed backend set.
pub struct LeastConn {
    backends: Box<[Backend]>,
    next: AtomicUsize,
}

impl BackendSelection for LeastConn {
    type Iter = LeastConnIter;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        LeastConn {
            backends: backends.iter().cloned().collect(),
            next: AtomicUsize::new(0),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> LeastConnIter {
        let n = self.backends.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Relaxed) % n
        };
        LeastConnIter {
            selection: self.clone(),
            start,
            taken: if n <= 64 {
                Taken::Small(0)
            } else {
                Taken::Large(vec![false; n])
            },
        }
    }
}

/// Backends of a [`LeastConn`] from least to most loaded: each step scans
/// the pool for the least loaded backend not returned yet, ties going to
/// the first from the rotating start. A pick allocates nothing for pools
/// of up to 64 backends (usually only the first step is taken: later
/// ones serve retries).
pub struct LeastConnIter {
    selection: Arc<LeastConn>,
    start: usize,
    taken: Taken,
}

/// The backends a [`LeastConnIter`] already returned, by index.
enum Taken {
    Small(u64),
    Large(Vec<bool>),
}

impl Taken {
    fn has(&self, i: usize) -> bool {
        match self {
            Taken::Small(bits) => bits & (1 << i) != 0,
            Taken::Large(v) => v[i],
        }
    }

    fn set(&mut self, i: usize) {
        match self {
            Taken::Small(bits) => *bits |= 1 << i,
            Taken::Large(v) => v[i] = true,
        }
    }
}

impl BackendIter for LeastConnIter {
    fn next(&mut self) -> Option<&Backend> {
        let backends = &self.selection.backends;
        let n = backends.len();
        let mut best: Option<(u64, usize)> = None;
        for k in 0..n {
            let i = (self.start + k) % n;
            if self.taken.has(i) {
                continue;
            }
            let b = &backends[i];
            let inflight = state_of(b).map_or(0, |s| s.inflight()) as u64;
            let load = inflight * 1024 / b.weight.max(1) as u64;
            if best.is_none_or(|(l, _)| load < l) {
                best = Some((load, i));
            }
        }
        let (_, i) = best?;
        self.taken.set(i);
        backends.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::BackendState;

    fn backend(addr: &str, weight: usize) -> (Backend, Arc<BackendState>) {
        let mut b = Backend::new_with_weight(addr, weight).unwrap();
        let s = Arc::new(BackendState::new(addr.into(), addr.into(), true));
        b.ext.insert(s.clone());
        (b, s)
    }

    #[test]
    fn prefers_idle_backend_relative_to_weight() {
        let (a, sa) = backend("127.0.0.1:1", 1);
        let (b, _sb) = backend("127.0.0.1:2", 1);
        let (c, sc) = backend("127.0.0.1:3", 4);
        let sel = Arc::new(LeastConn::build(
            &[a, b.clone(), c.clone()].into_iter().collect(),
        ));
        let _g1 = sa.start_request();
        let _g2 = sc.start_request();
        let _g3 = sc.start_request();
        // a: 1024, b: 0, c: 2*1024/4 = 512
        let mut it = sel.iter(b"");
        assert_eq!(it.next().unwrap().addr, b.addr);
        assert_eq!(it.next().unwrap().addr, c.addr);
    }

    #[test]
    fn every_backend_comes_once_also_in_large_pools() {
        for n in [3usize, 70] {
            let backends: Vec<_> = (0..n)
                .map(|i| backend(&format!("127.0.0.1:{}", i + 1), 1))
                .collect();
            let _busy = backends[1].1.start_request();
            let set = backends.iter().map(|(b, _)| b.clone()).collect();
            let sel = Arc::new(LeastConn::build(&set));
            let mut it = sel.iter(b"");
            let mut seen = BTreeSet::new();
            // bounded: a broken iterator must fail, not loop
            for _ in 0..2 * n {
                let Some(b) = it.next() else { break };
                assert!(seen.insert(b.addr.clone()), "{} twice", b.addr);
            }
            assert_eq!(seen.len(), n);
        }
    }

    #[test]
    fn ties_rotate() {
        let (a, _) = backend("127.0.0.1:1", 1);
        let (b, _) = backend("127.0.0.1:2", 1);
        let sel = Arc::new(LeastConn::build(&[a, b].into_iter().collect()));
        let first = sel.iter(b"").next().unwrap().addr.clone();
        let second = sel.iter(b"").next().unwrap().addr.clone();
        assert_ne!(first, second);
    }
}
