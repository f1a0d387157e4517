//! Passive failure marking (nginx's `max_fails` / `fail_timeout`), which
//! pingora-load-balancing has no API for.
//!
//! Failures of real requests (connect error, reset, timeout) are counted in
//! a window of `fail_timeout`; the `max_fails`-th failure in the window
//! ejects the backend at once for `fail_timeout`. The table lives beside
//! pingora's health state and is consulted in the selection's `accept`.

use crate::config::PassivePolicy;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One backend's failure window and ejection deadline.
#[derive(Debug)]
pub struct Ejection {
    /// Process-relative time (ns since [`epoch`]) until which the backend is ejected.
    until: AtomicU64,
    /// (failures in the window, window start).
    window: Mutex<(u32, Instant)>,
    /// Times this backend was ejected.
    ejections: AtomicU64,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            until: AtomicU64::new(0),
            window: Mutex::new((0, Instant::now())),
            ejections: AtomicU64::new(0),
        }
    }
}

/// A fixed process start, so deadlines fit in an atomic.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

impl Ejection {
    /// Whether the backend is ejected now.
    pub fn is_ejected(&self) -> bool {
        let until = self.until.load(Relaxed);
        until != 0 && now_ns() < until
    }

    /// Counts a failure; returns true when it ejects the backend.
    /// `may_eject` is false when the pool already has
    /// `max_ejected_percent` of its backends ejected: the failure is counted
    /// in the window, and ejects on a later failure once there is room.
    pub fn record_failure(&self, policy: &PassivePolicy, may_eject: bool) -> bool {
        if policy.max_fails == 0 {
            return false;
        }
        let now = Instant::now();
        let mut w = match self.window.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if now.duration_since(w.1) > policy.fail_timeout {
            *w = (0, now);
        }
        w.0 = w.0.saturating_add(1);
        if w.0 < policy.max_fails || !may_eject {
            return false;
        }
        *w = (0, now);
        let until = now_ns() + policy.fail_timeout.as_nanos() as u64;
        self.until.store(until.max(1), Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        true
    }

    /// How long the current ejection still lasts.
    pub fn remaining(&self) -> Duration {
        Duration::from_nanos(self.until.load(Relaxed).saturating_sub(now_ns()))
    }

    /// Times ejected so far.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_on_the_max_fails_th_failure_within_the_window() {
        let p = PassivePolicy {
            max_fails: 2,
            fail_timeout: Duration::from_millis(200),
            max_ejected_percent: 100,
        };
        let e = Ejection::default();
        assert!(!e.record_failure(&p, true));
        assert!(!e.is_ejected());
        assert!(e.record_failure(&p, true));
        assert!(e.is_ejected());
        std::thread::sleep(Duration::from_millis(250));
        assert!(!e.is_ejected());
        assert_eq!(e.ejections(), 1);
    }

    #[test]
    fn no_ejection_without_room_in_the_pool() {
        let p = PassivePolicy {
            max_fails: 1,
            fail_timeout: Duration::from_secs(5),
            max_ejected_percent: 50,
        };
        let e = Ejection::default();
        assert!(!e.record_failure(&p, false));
        assert!(!e.is_ejected());
        assert!(e.record_failure(&p, true));
    }

    #[test]
    fn max_ejected_rounds_down() {
        let p = |pct| PassivePolicy {
            max_fails: 1,
            fail_timeout: Duration::from_secs(5),
            max_ejected_percent: pct,
        };
        assert_eq!(p(50).max_ejected(1), 0);
        assert_eq!(p(50).max_ejected(2), 1);
        assert_eq!(p(50).max_ejected(5), 2);
        assert_eq!(p(100).max_ejected(1), 1);
        assert_eq!(p(0).max_ejected(10), 0);
    }

    #[test]
    fn off_when_max_fails_is_zero() {
        let p = PassivePolicy {
            max_fails: 0,
            fail_timeout: Duration::from_secs(1),
            max_ejected_percent: 100,
        };
        let e = Ejection::default();
        assert!(!e.record_failure(&p, true));
        assert!(!e.is_ejected());
    }
}
