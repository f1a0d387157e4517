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
//! Health is not seen here (pingora's selections never see it); the caller
//! rejects a backend that is down, ejected or already tried and asks the
//! iterator for the next one. That step is then undone and redone without
//! the rejected backend, which is exactly nginx's skipping of an unavailable
//! peer: the others share its turns in proportion to their weights.

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
            selection: self.clone(),
            excluded: Vec::new(),
            last: None,
        }
    }
}

/// One selection: each `next` is one smooth-WRR step over the backends not
/// returned yet. Asking for another backend means the previous one was
/// rejected (down, ejected, already tried): its step is undone first, so it
/// is skipped as nginx skips an unavailable peer, without taking or giving
/// away turns.
pub struct SmoothWrrIter {
    selection: Arc<SmoothWrr>,
    /// Backends returned earlier in this selection (rejected by the caller).
    excluded: Vec<usize>,
    /// The previous step: the index picked and the total it was lowered by.
    last: Option<(usize, i64)>,
}

impl SmoothWrrIter {
    fn weight(&self, i: usize) -> i64 {
        self.selection
            .backends
            .get(i)
            .map_or(1, |b| b.weight.max(1) as i64)
    }
}

impl BackendIter for SmoothWrrIter {
    fn next(&mut self) -> Option<&Backend> {
        let n = self.selection.backends.len();
        let mut current = self
            .selection
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((picked, total)) = self.last.take() {
            for i in (0..n).filter(|i| !self.excluded.contains(i)) {
                current[i] -= self.weight(i);
            }
            current[picked] += total;
            self.excluded.push(picked);
        }
        let mut total = 0;
        let mut best: Option<usize> = None;
        for i in (0..n).filter(|i| !self.excluded.contains(i)) {
            current[i] += self.weight(i);
            total += self.weight(i);
            // highest current weight wins; ties go to the earlier backend
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        self.last = Some((best, total));
        drop(current);
        self.selection.backends.get(best)
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
    fn a_rejected_backend_shares_its_turns_by_weight() {
        let (sel, backends) = selection(&[1, 1, 1]);
        let mut served = String::new();
        for _ in 0..12 {
            let mut it = sel.iter(b"");
            let mut b = it.next().unwrap().clone();
            while b.addr == backends[0].addr {
                b = it.next().unwrap().clone();
            }
            served.push(if b.addr == backends[1].addr { 'b' } else { 'c' });
        }
        assert_eq!(served, "bc".repeat(6));
        // every step undone when all are rejected: the next selection is as
        // if none had happened
        let (sel, backends) = selection(&[5, 1, 1]);
        let mut it = sel.iter(b"");
        while it.next().is_some() {}
        assert_eq!(picks(&sel, &backends, 7), "aabacaa");
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
