//! The retry budget of a pool (`retries.budget`, SPEC §2 and §4a): retries
//! of requests a backend already received and hedged attempts may add at
//! most `ratio` × the first attempts of the last 10 s, plus
//! `min_per_second` × 10 s, so that retries cannot multiply the load on a
//! pool that is already failing (Finagle's `RetryBudget`, Linkerd's retry
//! budget; Envoy's `retry_budget` caps retries the same way by share).
//!
//! The window slides in one-second steps (ten buckets). The budget belongs
//! to the pool's counters, which a reload carries over to the new pool of
//! the same name. Connect failures and retries on a stale pooled
//! connection never draw on it (the backend saw nothing); the decision of
//! which retries draw is [`crate::failure::decide`]'s.

use crate::config::BudgetPolicy;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// Length of the window, seconds.
pub const WINDOW_SECS: u64 = 10;

/// One second of the window.
#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    /// Which second (since the budget's creation) it counts.
    second: u64,
    firsts: u64,
    retries: u64,
}

/// A pool's retry budget; see the module doc.
#[derive(Debug)]
pub struct RetryBudget {
    start: Instant,
    buckets: Mutex<[Bucket; WINDOW_SECS as usize]>,
    exhausted: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            start: Instant::now(),
            buckets: Mutex::new([Bucket::default(); WINDOW_SECS as usize]),
            exhausted: AtomicU64::new(0),
        }
    }
}

/// What `/status` shows of a budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// First attempts in the window.
    pub first_attempts: u64,
    /// Retries and hedges drawn in the window.
    pub retries: u64,
    /// Retries the window allows.
    pub allowed: u64,
    /// Retries refused since the pool started.
    pub exhausted: u64,
}

impl RetryBudget {
    fn update<T>(&self, now: Instant, f: impl FnOnce(&mut Bucket, (u64, u64)) -> T) -> T {
        let second = now.saturating_duration_since(self.start).as_secs();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let idx = (second % WINDOW_SECS) as usize;
        if b[idx].second != second {
            b[idx] = Bucket {
                second,
                ..Bucket::default()
            };
        }
        let live = |k: &Bucket| k.second + WINDOW_SECS > second;
        let totals = b
            .iter()
            .filter(|k| live(k))
            .fold((0, 0), |(f, r), k| (f + k.firsts, r + k.retries));
        f(&mut b[idx], totals)
    }

    /// Counts a first attempt (a request sent to the pool).
    pub fn deposit_at(&self, now: Instant) {
        self.update(now, |b, _| b.firsts += 1);
    }

    /// Counts a first attempt now.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Draws one retry if the budget allows it at `now`; counts a refusal
    /// in [`exhausted`](Self::exhausted) otherwise.
    pub fn try_withdraw_at(&self, policy: &BudgetPolicy, now: Instant) -> bool {
        let ok = self.update(now, |b, (firsts, retries)| {
            let ok = retries < policy.allowed(firsts);
            if ok {
                b.retries += 1;
            }
            ok
        });
        if !ok {
            self.exhausted.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Draws one retry now if the budget allows it.
    pub fn try_withdraw(&self, policy: &BudgetPolicy) -> bool {
        self.try_withdraw_at(policy, Instant::now())
    }

    /// Retries refused for want of budget, since the pool started.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Relaxed)
    }

    /// The window's counts now.
    pub fn usage(&self, policy: &BudgetPolicy) -> Usage {
        let (first_attempts, retries) = self.update(Instant::now(), |_, t| t);
        Usage {
            first_attempts,
            retries,
            allowed: policy.allowed(first_attempts),
            exhausted: self.exhausted(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(ratio: f64, min_per_second: u32) -> BudgetPolicy {
        BudgetPolicy::new(ratio, min_per_second)
    }

    #[test]
    fn retries_are_capped_by_ratio_plus_minimum() {
        let b = RetryBudget::default();
        let p = policy(0.2, 1);
        let t = b.start;
        for _ in 0..100 {
            b.deposit_at(t);
        }
        // 0.2 x 100 + 1/s x 10 s = 30
        let granted = (0..100).filter(|_| b.try_withdraw_at(&p, t)).count();
        assert_eq!(granted, 30);
        assert_eq!(b.exhausted(), 70);
    }

    #[test]
    fn the_window_slides() {
        let b = RetryBudget::default();
        let p = policy(0.5, 0);
        let t = b.start;
        for _ in 0..10 {
            b.deposit_at(t);
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw_at(&p, t)).count(), 5);
        // nine seconds on, still the same window
        let t9 = t + Duration::from_secs(9);
        assert!(!b.try_withdraw_at(&p, t9));
        // ten seconds on, the first second has left it
        let t10 = t + Duration::from_secs(10);
        b.deposit_at(t10);
        b.deposit_at(t10);
        assert!(b.try_withdraw_at(&p, t10));
        assert!(!b.try_withdraw_at(&p, t10));
    }

    #[test]
    fn an_idle_pool_still_gets_the_minimum() {
        let b = RetryBudget::default();
        let p = policy(0.2, 10);
        assert_eq!((0..200).filter(|_| b.try_withdraw(&p)).count(), 100);
    }
}
