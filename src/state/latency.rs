//! A backend's peak-sensitive moving average of response-head latency, the
//! measure of `strategy: peak_ewma` (SPEC §4a).
//!
//! The estimator is tower's `PeakEwma` (after Finagle's and Linkerd's
//! balancers): a sample above the estimate replaces it at once (the peak),
//! a sample below it is averaged in with weight `1 - e^(-Δt/τ)`, where Δt is
//! the time since the previous sample and τ = [`DECAY`] (10 s, Linkerd's
//! default). Between samples the estimate decays towards zero with the
//! same τ, and once the last sample is older than [`RECENT`] the balancer
//! treats the backend as unmeasured (a neutral cost, see
//! [`crate::pool::PeakEwmaP2c`]): a backend that stopped receiving traffic
//! because it was slow is tried again by real requests within about 10 s,
//! and keeps its share if it answers fast.
//!
//! A failed attempt (connect error, reset, timeout, a retryable 5xx) is
//! recorded as a sample of at least [`FAILURE_PENALTY`], so a backend that
//! fails fast does not look fast.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// τ of the moving average and of the decay between samples (Linkerd: 10 s).
pub const DECAY: Duration = Duration::from_secs(10);

/// How old the last sample may be for the balancer to use the estimate.
pub const RECENT: Duration = Duration::from_secs(10);

/// The latency a failed attempt counts as, at least (Finagle penalises
/// failures the same way): one second, far above any healthy answer.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// The estimate and the time of its last update.
#[derive(Debug, Default)]
pub struct PeakEwma {
    inner: Mutex<Option<Estimate>>,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Seconds.
    value: f64,
    at: Instant,
}

/// Weight of the old estimate after `elapsed`.
fn keep(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

impl PeakEwma {
    /// Records a response-head latency observed at `now`.
    pub fn observe_at(&self, sample: Duration, now: Instant) {
        let s = sample.as_secs_f64();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let value = match *g {
            Some(e) if s <= e.value && now.saturating_duration_since(e.at) <= RECENT => {
                let w = keep(now.saturating_duration_since(e.at));
                e.value * w + s * (1.0 - w)
            }
            // no recent estimate, or a new peak: take it as it is
            _ => s,
        };
        *g = Some(Estimate { value, at: now });
    }

    /// Records a response-head latency observed now.
    pub fn observe(&self, sample: Duration) {
        self.observe_at(sample, Instant::now());
    }

    /// Records a failed attempt that took `elapsed`.
    pub fn observe_failure(&self, elapsed: Duration) {
        self.observe(elapsed.max(FAILURE_PENALTY));
    }

    /// The estimate at `now` in seconds, decayed since the last sample;
    /// `None` before the first sample.
    pub fn estimate_at(&self, now: Instant) -> Option<f64> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.map(|e| e.value * keep(now.saturating_duration_since(e.at)))
    }

    /// The estimate at `now` in seconds when the last sample is at most
    /// [`RECENT`] old; `None` otherwise (what the balancer uses).
    pub fn recent_at(&self, now: Instant) -> Option<f64> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.and_then(|e| {
            let age = now.saturating_duration_since(e.at);
            (age <= RECENT).then(|| e.value * keep(age))
        })
    }

    /// The estimate now, seconds (`None` before the first sample).
    pub fn estimate(&self) -> Option<f64> {
        self.estimate_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_peak_is_taken_at_once_and_a_drop_averaged_in() {
        let e = PeakEwma::default();
        let t = Instant::now();
        assert_eq!(e.estimate_at(t), None);
        e.observe_at(5 * MS, t);
        e.observe_at(50 * MS, t);
        assert!((e.estimate_at(t).unwrap() - 0.050).abs() < 1e-9);
        // a fast answer 1 s later moves the estimate ~10 % of the way
        let t1 = t + Duration::from_secs(1);
        e.observe_at(5 * MS, t1);
        let v = e.estimate_at(t1).unwrap();
        assert!(v > 0.045 && v < 0.047, "{v}");
    }

    #[test]
    fn the_estimate_decays_without_samples() {
        let e = PeakEwma::default();
        let t = Instant::now();
        e.observe_at(50 * MS, t);
        let later = e.estimate_at(t + DECAY).unwrap();
        assert!(
            (later - 0.050 / std::f64::consts::E).abs() < 1e-6,
            "{later}"
        );
        // 10x the others' latency falls under theirs within ~23 s
        assert!(e.estimate_at(t + Duration::from_secs(24)).unwrap() < 0.005);
    }

    #[test]
    fn an_old_estimate_is_not_recent() {
        let e = PeakEwma::default();
        let t = Instant::now();
        e.observe_at(50 * MS, t);
        assert!(e.recent_at(t + RECENT).is_some());
        assert_eq!(e.recent_at(t + RECENT + MS), None);
        assert!(e.estimate_at(t + RECENT + MS).is_some());
        // the next sample starts afresh
        e.observe_at(5 * MS, t + RECENT + MS);
        assert!((e.recent_at(t + RECENT + MS).unwrap() - 0.005).abs() < 1e-9);
    }

    #[test]
    fn failures_count_as_slow() {
        let e = PeakEwma::default();
        e.observe(5 * MS);
        e.observe_failure(MS);
        assert!(e.estimate().unwrap() > 0.9);
    }
}
