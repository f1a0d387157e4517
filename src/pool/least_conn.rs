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
        let mut order: Vec<(u64, usize, usize)> = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let inflight = state_of(b).map_or(0, |s| s.inflight()) as u64;
                let load = inflight * 1024 / b.weight.max(1) as u64;
                (load, (i + n - start) % n, i)
            })
            .collect();
        order.sort_unstable();
        LeastConnIter {
            selection: self.clone(),
            order: order.into_iter().map(|(_, _, i)| i).collect(),
            pos: 0,
        }
    }
}

/// Backends of a [`LeastConn`] from least to most loaded.
pub struct LeastConnIter {
    selection: Arc<LeastConn>,
    order: Vec<usize>,
    pos: usize,
}

impl BackendIter for LeastConnIter {
    fn next(&mut self) -> Option<&Backend> {
        let i = *self.order.get(self.pos)?;
        self.pos += 1;
        self.selection.backends.get(i)
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
    fn ties_rotate() {
        let (a, _) = backend("127.0.0.1:1", 1);
        let (b, _) = backend("127.0.0.1:2", 1);
        let sel = Arc::new(LeastConn::build(&[a, b].into_iter().collect()));
        let first = sel.iter(b"").next().unwrap().addr.clone();
        let second = sel.iter(b"").next().unwrap().addr.clone();
        assert_ne!(first, second);
    }
}
