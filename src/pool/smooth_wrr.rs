//! Smooth weighted round robin, the `round_robin` strategy's selection.
//!
//! pingora-load-balancing's `RoundRobin` repeats each backend `weight` times
//! in a row (pingora#195): with weights 5:1:1 the heavy backend gets five
//! requests back to back, and with weight 50 bursts of 50. This is nginx's
//! smooth algorithm instead (`ngx_http_upstream_get_peer`): on every pick
//! each backend's current weight grows by its weight, the highest current
//! weight wins and is lowered by the sum of all weights. Weights 5:1:1 give
//! `a a b a c a a`: the same shares, interleaved.
//!
//! The iterator yields the pick first and then every other backend (in
//! descending current weight), so a caller that rejects the first choice
//! (unhealthy, ejected, already tried) still reaches the rest. As in
//! pingora's selections, health is not seen here: a rejected pick keeps its
//! turn's share, which goes to the next backend in that order.

use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

/// Smooth weighted round robin over a fixed backend set.
pub struct SmoothWrr {
    backends: Box<[Backend]>,
    /// Each backend's current weight (nginx's `current_weight`).
    current: Mutex<Vec<i64>>,
}

impl SmoothWrr {
    /// One smooth-WRR step: the index picked and the visiting order of the
    /// others (highest current weight first).
    fn step(&self) -> Vec<usize> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0i64;
        for (c, b) in current.iter_mut().zip(self.backends.iter()) {
            let w = b.weight.max(1) as i64;
            *c += w;
            total += w;
        }
        let mut order: Vec<usize> = (0..self.backends.len()).collect();
        // highest current weight first; ties to the earlier backend (nginx)
        order.sort_by(|&a, &b| current[b].cmp(&current[a]).then(a.cmp(&b)));
        if let Some(&best) = order.first() {
            current[best] -= total;
        }
        order
    }
}

impl BackendSelection for SmoothWrr {
    type Iter = SmoothWrrIter;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        SmoothWrr {
            backends: backends.iter().cloned().collect(),
            current: Mutex::new(vec![0; backends.len()]),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> SmoothWrrIter {
        SmoothWrrIter {
            order: self.step(),
            selection: self.clone(),
            pos: 0,
        }
    }
}

/// The backends of one [`SmoothWrr`] step: the pick, then the others.
pub struct SmoothWrrIter {
    selection: Arc<SmoothWrr>,
    order: Vec<usize>,
    pos: usize,
}

impl BackendIter for SmoothWrrIter {
    fn next(&mut self) -> Option<&Backend> {
        let i = *self.order.get(self.pos)?;
        self.pos += 1;
        self.selection.backends.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(weights: &[usize]) -> (Arc<SmoothWrr>, Vec<Backend>) {
        let backends: Vec<Backend> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Backend::new_with_weight(&format!("127.0.0.1:{}", 1001 + i), *w).unwrap())
            .collect();
        let set: BTreeSet<Backend> = backends.iter().cloned().collect();
        (Arc::new(SmoothWrr::build(&set)), backends)
    }

    fn picks(sel: &Arc<SmoothWrr>, backends: &[Backend], n: usize) -> String {
        (0..n)
            .map(|_| {
                let b = sel.iter(b"").next().unwrap().clone();
                let i = backends.iter().position(|x| x.addr == b.addr).unwrap();
                (b'a' + i as u8) as char
            })
            .collect()
    }

    #[test]
    fn interleaves_like_nginx() {
        let (sel, backends) = selection(&[5, 1, 1]);
        // nginx's documented sequence for weights 5, 1, 1
        assert_eq!(picks(&sel, &backends, 21), "aabacaa".repeat(3));
    }

    #[test]
    fn equal_weights_rotate() {
        let (sel, backends) = selection(&[1, 1, 1]);
        assert_eq!(picks(&sel, &backends, 6), "abcabc");
    }

    #[test]
    fn heavy_weight_never_bursts() {
        let (sel, backends) = selection(&[50, 1]);
        let seq = picks(&sel, &backends, 51);
        assert_eq!(seq.matches('b').count(), 1);
        let (sel, backends) = selection(&[3, 2]);
        let seq = picks(&sel, &backends, 50);
        assert!(!seq.contains("aaa"), "{seq}");
        assert_eq!(seq.matches('a').count(), 30);
    }

    #[test]
    fn iterator_visits_every_backend_once() {
        let (sel, backends) = selection(&[5, 1, 1]);
        let mut it = sel.iter(b"");
        let mut seen = Vec::new();
        while let Some(b) = it.next() {
            seen.push(b.addr.clone());
        }
        assert_eq!(seen.len(), backends.len());
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), backends.len());
    }
}
