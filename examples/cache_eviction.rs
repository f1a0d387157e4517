//! Eviction policy comparison for the response store: pingora-cache's
//! sharded LRU (`eviction::lru::Manager<16>`, what the store uses) against
//! TinyUFO (`TinyUFO` crate) at the same byte budget, on a Zipf-distributed
//! key set larger than the budget. Prints a Markdown table: hit ratio of
//! each policy, an oracle that always holds the most popular keys that fit,
//! and the live heap of each policy's bookkeeping.
//!
//! Both policies see the same request sequence (seeded) and the same object
//! weights (KiB units: TinyUFO weighs in `u16`). A miss admits the object;
//! a hit refreshes it. Bodies are not stored: only the policies are
//! compared, which is what decides the hit ratio of a store of that size.
//!
//! ```text
//! cargo run --release --example cache_eviction            # defaults below
//! KEYS=2000 REQUESTS=200000 SEED=1 cargo run --release --example cache_eviction
//! ```

use pingora_cache::eviction::{lru::Manager, CacheEntryKey, EvictionManager};
use pingora_cache::CacheKey;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime};
use tinyufo::TinyUfo;

/// Counts live heap bytes, to weigh each policy's bookkeeping.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a small seeded generator (same sequence for both policies).
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` key indexes drawn from Zipf(`s`) over `keys` keys (rank 0 most popular).
fn zipf(keys: usize, s: f64, n: usize, seed: u64) -> Vec<usize> {
    let mut cdf: Vec<f64> = (1..=keys).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = cdf.iter().sum();
    let mut acc = 0.0;
    for c in cdf.iter_mut() {
        acc += *c / total;
        *c = acc;
    }
    let mut rng = Rng(seed.max(1));
    (0..n)
        .map(|_| {
            let u = rng.next_f64();
            cdf.partition_point(|c| *c < u).min(keys - 1)
        })
        .collect()
}

/// Weight of key `i` in KiB: `fixed` KiB each, or 1..=32 KiB (`fixed` 0).
fn weight_kib(i: usize, fixed: u64) -> u64 {
    if fixed > 0 {
        return fixed;
    }
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    1 + x % 32
}

fn entry(i: usize) -> CacheEntryKey {
    CacheEntryKey::key_only(CacheKey::new(format!("k{i}"), "").to_compact())
}

/// Hit ratio and live heap bytes of the LRU at `budget` KiB.
fn lru(seq: &[usize], budget: u64, fixed: u64) -> (f64, usize) {
    let before = LIVE.load(Relaxed);
    let m: Manager<16> = Manager::with_capacity((budget * 1024) as usize, 1024);
    let until = SystemTime::now() + Duration::from_secs(3600);
    let mut hits = 0;
    for &i in seq {
        let size = (weight_kib(i, fixed) * 1024) as usize;
        let k = entry(i);
        if m.peek(&k) {
            hits += 1;
            m.access(&k, size, until);
        } else {
            drop(m.admit(k, size, until));
        }
    }
    let heap = LIVE.load(Relaxed).saturating_sub(before);
    (hits as f64 / seq.len() as f64, heap)
}

/// Hit ratio and live heap bytes of TinyUFO at `budget` KiB.
fn tinyufo(seq: &[usize], budget: u64, fixed: u64, estimated: usize) -> (f64, usize) {
    let before = LIVE.load(Relaxed);
    let t: TinyUfo<usize, ()> = TinyUfo::new(budget as usize, estimated);
    let mut hits = 0;
    for &i in seq {
        if t.get(&i).is_some() {
            hits += 1;
        } else {
            let w = u16::try_from(weight_kib(i, fixed)).unwrap_or(u16::MAX);
            drop(t.put(i, (), w));
        }
    }
    let heap = LIVE.load(Relaxed).saturating_sub(before);
    (hits as f64 / seq.len() as f64, heap)
}

/// Hit ratio of an oracle holding the most popular keys that fit (rank
/// order; for mixed sizes an approximation).
fn oracle(seq: &[usize], keys: usize, budget: u64, fixed: u64) -> f64 {
    let mut used = 0;
    let mut held = vec![false; keys];
    for (i, h) in held.iter_mut().enumerate() {
        let w = weight_kib(i, fixed);
        if used + w <= budget {
            used += w;
            *h = true;
        }
    }
    seq.iter().filter(|&&i| held[i]).count() as f64 / seq.len() as f64
}

fn main() {
    let keys = env("KEYS", 2000) as usize;
    let requests = env("REQUESTS", 200_000) as usize;
    let seed = env("SEED", 1);
    println!("keys {keys}, requests {requests}, seed {seed}; weights in KiB; cold misses included");
    println!();
    println!("| objects | Zipf s | budget | LRU hit ratio | TinyUFO hit ratio | oracle | LRU heap KiB | TinyUFO heap KiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (fixed, label) in [(8, "8 KiB each"), (0, "1–32 KiB")] {
        for s in [0.8, 1.0, 1.2] {
            let seq = zipf(keys, s, requests, seed);
            for budget_mib in [1u64, 4, 8] {
                let budget = budget_mib * 1024;
                // what a store would pass: its budget over a 4 KiB typical object
                let estimated = (budget / 4).max(64) as usize;
                let (l, lh) = lru(&seq, budget, fixed);
                let (t, th) = tinyufo(&seq, budget, fixed, estimated);
                let o = oracle(&seq, keys, budget, fixed);
                println!(
                    "| {label} | {s} | {budget_mib} MiB | {l:.3} | {t:.3} | {o:.3} | {} | {} |",
                    lh / 1024,
                    th / 1024
                );
            }
        }
    }
}
