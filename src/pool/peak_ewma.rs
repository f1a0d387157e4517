//! `strategy: peak_ewma`: power of two choices over a latency cost
//! (SPEC §4a; tower's `p2c::Balance` with `PeakEwma`, Finagle's and
//! Linkerd's balancer).
//!
//! Each selection draws two distinct usable backends (healthy, admitted,
//! not ejected) at random and prefers the one with the lower cost = peak-EWMA of its response-head latency
//! ([`crate::state::latency`]) × (in-flight + 1) / weight. A backend with
//! no latency sample in the last 10 s (new, or avoided for being slow) is
//! compared on load alone (it gets the other one's latency), so it is
//! tried, and its estimate refreshed. The iterator then yields the other
//! draw and the remaining backends from cheapest to dearest, for retries
//! and for picks the pool rejects (unhealthy, ejected, already tried).

use crate::state::state_of;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use rand::Rng;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

/// Peak-EWMA P2C selector over a fixed backend set.
pub struct PeakEwmaP2c {
    backends: Box<[Backend]>,
}

/// Latency (seconds; `None` without a sample in the last 10 s) and load
/// of one backend.
fn measure(b: &Backend, now: Instant) -> (Option<f64>, f64) {
    let (latency, inflight) =
        state_of(b).map_or((None, 0), |s| (s.latency.recent_at(now), s.inflight()));
    let load = (inflight as f64 + 1.0) / b.weight.max(1) as f64;
    (latency, load)
}

/// The costs of two backends; one without a sample takes the other's
/// latency (both unknown: load alone).
fn costs(a: (Option<f64>, f64), b: (Option<f64>, f64)) -> (f64, f64) {
    let (la, lb) = match (a.0, b.0) {
        (Some(x), Some(y)) => (x, y),
        (Some(x), None) | (None, Some(x)) => (x, x),
        (None, None) => (1.0, 1.0),
    };
    (la * a.1, lb * b.1)
}

impl BackendSelection for PeakEwmaP2c {
    type Iter = PeakEwmaIter;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        PeakEwmaP2c {
            backends: backends.iter().cloned().collect(),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> PeakEwmaIter {
        let n = self.backends.len();
        let mut order: Vec<usize> = (0..n).collect();
        if n >= 2 {
            // only the two draws are measured here; the rest is ordered if
            // the pool rejects both (see PeakEwmaIter::next)
            let now = Instant::now();
            // draw among the usable backends (healthy, admitted, not
            // ejected) when two are; the pool checks each pick anyway
            let live: Vec<usize> = (0..n)
                .filter(|&k| state_of(&self.backends[k]).is_none_or(|s| s.usable() && s.healthy()))
                .collect();
            let from = if live.len() >= 2 { &live } else { &order };
            let m = from.len();
            let mut rng = rand::thread_rng();
            let x = rng.gen_range(0..m);
            let (i, j) = (from[x], from[(x + rng.gen_range(1..m)) % m]);
            let (ci, cj) = costs(
                measure(&self.backends[i], now),
                measure(&self.backends[j], now),
            );
            let (first, second) = if cj < ci { (j, i) } else { (i, j) };
            order.retain(|&k| k != first && k != second);
            order.splice(0..0, [first, second]);
        }
        PeakEwmaIter {
            selection: self.clone(),
            order,
            pos: 0,
        }
    }
}

/// Backends of a [`PeakEwmaP2c`]: the P2C choice, the other draw, then the
/// rest from cheapest to dearest.
pub struct PeakEwmaIter {
    selection: Arc<PeakEwmaP2c>,
    order: Vec<usize>,
    pos: usize,
}

impl BackendIter for PeakEwmaIter {
    fn next(&mut self) -> Option<&Backend> {
        if self.pos == 2 && self.order.len() > 3 {
            let backends = &self.selection.backends;
            let now = Instant::now();
            let first = measure(&backends[self.order[0]], now);
            let mut rest: Vec<(f64, usize)> = self.order[2..]
                .iter()
                .map(|&k| (costs(measure(&backends[k], now), first).0, k))
                .collect();
            rest.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (slot, (_, k)) in self.order[2..].iter_mut().zip(rest) {
                *slot = k;
            }
        }
        let i = *self.order.get(self.pos)?;
        self.pos += 1;
        self.selection.backends.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::BackendState;
    use std::time::Duration;

    fn backend(addr: &str, weight: usize, latency_ms: Option<u64>) -> (Backend, Arc<BackendState>) {
        let mut b = Backend::new_with_weight(addr, weight).unwrap();
        let s = Arc::new(BackendState::new(addr.into(), addr.into(), true));
        if let Some(ms) = latency_ms {
            s.latency.observe(Duration::from_millis(ms));
        }
        b.ext.insert(s.clone());
        (b, s)
    }

    fn firsts(sel: &Arc<PeakEwmaP2c>, rounds: usize) -> std::collections::HashMap<String, usize> {
        let mut seen = std::collections::HashMap::new();
        for _ in 0..rounds {
            let b = sel.iter(b"").next().unwrap().addr.to_string();
            *seen.entry(b).or_default() += 1;
        }
        seen
    }

    #[test]
    fn a_slow_backend_is_never_the_first_choice() {
        let (a, _) = backend("127.0.0.1:1", 1, Some(5));
        let (b, _) = backend("127.0.0.1:2", 1, Some(5));
        let (c, _) = backend("127.0.0.1:3", 1, Some(50));
        let sel = Arc::new(PeakEwmaP2c::build(&[a, b, c].into_iter().collect()));
        let seen = firsts(&sel, 300);
        assert_eq!(seen.get("127.0.0.1:3"), None, "{seen:?}");
        assert!(seen.get("127.0.0.1:1").is_some_and(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn load_and_weight_scale_the_cost() {
        // equal latency; a has 3 in flight, b none: b wins every draw
        let (a, sa) = backend("127.0.0.1:1", 1, Some(5));
        let (b, _) = backend("127.0.0.1:2", 1, Some(5));
        let _g: Vec<_> = (0..3).map(|_| sa.start_request()).collect();
        let sel = Arc::new(PeakEwmaP2c::build(&[a.clone(), b].into_iter().collect()));
        assert_eq!(firsts(&sel, 50).get("127.0.0.1:1"), None);
        // weight 8 makes a's 4/8 cheaper than c's 1/1
        let (heavy, sh) = backend("127.0.0.1:4", 8, Some(5));
        let (c, _) = backend("127.0.0.1:3", 1, Some(5));
        let _g2: Vec<_> = (0..3).map(|_| sh.start_request()).collect();
        let sel = Arc::new(PeakEwmaP2c::build(&[heavy, c].into_iter().collect()));
        assert_eq!(firsts(&sel, 50).get("127.0.0.1:3"), None);
    }

    #[test]
    fn a_backend_without_recent_samples_is_tried() {
        let (a, _) = backend("127.0.0.1:1", 1, Some(5));
        let (b, _) = backend("127.0.0.1:2", 1, Some(5));
        let (c, sc) = backend("127.0.0.1:3", 1, None);
        let old = Instant::now() - crate::state::latency::RECENT - Duration::from_secs(1);
        sc.latency.observe_at(Duration::from_millis(50), old);
        let sel = Arc::new(PeakEwmaP2c::build(&[a, b, c].into_iter().collect()));
        let seen = firsts(&sel, 300);
        assert!(seen.get("127.0.0.1:3").is_some_and(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn draws_are_among_usable_backends() {
        let (a, _) = backend("127.0.0.1:1", 1, Some(5));
        let (b, _) = backend("127.0.0.1:2", 1, Some(5));
        let (c, sc) = backend("127.0.0.1:3", 1, Some(1));
        sc.set_healthy(false);
        let sel = Arc::new(PeakEwmaP2c::build(&[a, b, c].into_iter().collect()));
        for _ in 0..100 {
            let mut it = sel.iter(b"");
            let mut order = Vec::new();
            while let Some(b) = it.next() {
                order.push(b.addr.to_string());
            }
            // never among the two draws; still offered last
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], "127.0.0.1:3", "{order:?}");
        }
    }

    #[test]
    fn an_unmeasured_backend_is_tried() {
        let (a, _) = backend("127.0.0.1:1", 1, Some(5));
        let (b, _) = backend("127.0.0.1:2", 1, None);
        let sel = Arc::new(PeakEwmaP2c::build(&[a, b].into_iter().collect()));
        assert!(firsts(&sel, 100).contains_key("127.0.0.1:2"));
    }

    #[test]
    fn after_the_two_draws_the_rest_come_cheapest_first() {
        // port p answers in 60 - 10p ms: cheaper as the port grows, against
        // the set's address order
        let list: Vec<_> = (1..=5u64)
            .map(|p| backend(&format!("127.0.0.1:{p}"), 1, Some(60 - 10 * p)).0)
            .collect();
        let sel = Arc::new(PeakEwmaP2c::build(&list.into_iter().collect()));
        for _ in 0..20 {
            let mut it = sel.iter(b"");
            let mut ports = Vec::new();
            while let Some(b) = it.next() {
                ports.push(b.addr.as_inet().map_or(0, |a| a.port()));
            }
            assert!(ports[0] > ports[1], "{ports:?}");
            assert!(ports[2..].windows(2).all(|w| w[0] > w[1]), "{ports:?}");
        }
    }

    #[test]
    fn the_iterator_yields_every_backend_once() {
        let list: Vec<_> = (1..=5)
            .map(|i| backend(&format!("127.0.0.1:{i}"), 1, Some(i)).0)
            .collect();
        let sel = Arc::new(PeakEwmaP2c::build(&list.into_iter().collect()));
        let mut it = sel.iter(b"");
        let mut seen = BTreeSet::new();
        while let Some(b) = it.next() {
            assert!(seen.insert(b.addr.to_string()));
        }
        assert_eq!(seen.len(), 5);
    }
}
