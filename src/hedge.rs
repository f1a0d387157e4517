//! Adaptive hedging (`race.hedge_delay: p50|p90|p95|p99`, SPEC §4a): the
//! delay before the next hedged attempt is the pool's recent percentile of
//! response-head latency (Dean and Barroso, "The Tail at Scale"), so that
//! with `p95` about 5 % of requests are hedged.
//!
//! Latencies go into an HDR histogram (the `hdrhistogram` crate, 1 µs to
//! 60 s, two significant digits); two histograms alternate every 5 s, so the
//! percentile covers the last 5 to 10 s. It is recomputed at most once a
//! second. Below [`MIN_SAMPLES`] samples in the window there is no
//! estimate and the request is not hedged (it waits for its first attempt,
//! as without `race`); the retry budget bounds the extra attempts.

use crate::config::RacePolicy;
use crate::pool::Pool;
use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Each histogram's share of the window.
const HALF_WINDOW: Duration = Duration::from_secs(5);

/// How long a computed percentile is reused.
const RECOMPUTE: Duration = Duration::from_secs(1);

/// Samples in the window below which there is no estimate.
pub const MIN_SAMPLES: u64 = 20;

/// Highest latency recorded, microseconds (longer ones are clamped).
const MAX_MICROS: u64 = 60_000_000;

/// A pool's recent response-head latencies.
#[derive(Debug)]
pub struct LatencyWindow {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: Option<Histogram<u64>>,
    previous: Option<Histogram<u64>>,
    rotated: Instant,
    /// The last computed percentile: when, which, and its value.
    cached: Option<(Instant, u8, Option<Duration>)>,
}

fn histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).ok()
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            inner: Mutex::new(Inner {
                current: histogram(),
                previous: histogram(),
                rotated: Instant::now(),
                cached: None,
            }),
        }
    }
}

impl Inner {
    fn rotate(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.rotated);
        if since < HALF_WINDOW {
            return;
        }
        if since >= 2 * HALF_WINDOW {
            // idle for a whole window: nothing recent is left
            if let Some(h) = self.previous.as_mut() {
                h.reset();
            }
        } else {
            std::mem::swap(&mut self.current, &mut self.previous);
        }
        if let Some(h) = self.current.as_mut() {
            h.reset();
        }
        self.rotated = now;
    }
}

impl LatencyWindow {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one response-head latency observed at `now`.
    pub fn record_at(&self, latency: Duration, now: Instant) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        let mut g = self.lock();
        g.rotate(now);
        if let Some(h) = g.current.as_mut() {
            h.saturating_record(micros);
        }
    }

    /// Records one response-head latency now.
    pub fn record(&self, latency: Duration) {
        self.record_at(latency, Instant::now());
    }

    /// The `percentile` (1 to 99) of the window at `now`, recomputed at
    /// most once a second; `None` with fewer than [`MIN_SAMPLES`] samples.
    pub fn percentile_at(&self, percentile: u8, now: Instant) -> Option<Duration> {
        let mut g = self.lock();
        if let Some((at, p, v)) = g.cached {
            if p == percentile && now.saturating_duration_since(at) < RECOMPUTE {
                return v;
            }
        }
        g.rotate(now);
        let mut merged = g.current.clone()?;
        if let Some(prev) = &g.previous {
            let _ = merged.add(prev);
        }
        let v = (merged.len() >= MIN_SAMPLES).then(|| {
            let q = f64::from(percentile.min(100)) / 100.0;
            Duration::from_micros(merged.value_at_quantile(q))
        });
        // no estimate yet: not cached, so the first one is used at once
        if v.is_some() {
            g.cached = Some((now, percentile, v));
        }
        v
    }

    /// The `percentile` now.
    pub fn percentile(&self, percentile: u8) -> Option<Duration> {
        self.percentile_at(percentile, Instant::now())
    }
}

/// The hedging of one raced request: when the next timed attempt starts,
/// and whether the pool's retry budget allows an extra attempt.
pub struct Plan<'a> {
    pool: &'a Pool,
    /// Fixed, or the pool's percentile when the race started; `None`
    /// before enough samples (no timed hedge).
    delay: Option<Duration>,
    deadline: Instant,
}

impl<'a> Plan<'a> {
    /// The plan of a race of `pool` under `policy` that must have a head by
    /// `deadline`.
    pub fn new(pool: &'a Pool, policy: &RacePolicy, deadline: Instant) -> Self {
        let delay = match policy.hedge_percentile {
            Some(p) => pool.stats.latency.percentile(p),
            None => Some(policy.hedge_delay).filter(|d| !d.is_zero()),
        };
        Plan {
            pool,
            delay,
            deadline,
        }
    }

    /// Whether attempts are added on a timer.
    pub fn timed(&self) -> bool {
        self.delay.is_some()
    }

    /// When the next timed attempt starts, counted from now (the deadline
    /// when there is none).
    pub fn next(&self) -> Instant {
        self.delay
            .and_then(|d| Instant::now().checked_add(d))
            .map_or(self.deadline, |t| t.min(self.deadline))
    }

    /// Draws one extra attempt from the pool's retry budget.
    pub fn draw(&self) -> bool {
        let p = self.pool;
        p.stats.budget.try_withdraw(&p.config.retries.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_recent_samples() {
        let w = LatencyWindow::default();
        let t = Instant::now();
        assert_eq!(w.percentile_at(95, t), None);
        for i in 1..=100u64 {
            w.record_at(Duration::from_millis(i), t);
        }
        let p95 = w.percentile_at(95, t).unwrap();
        assert!(
            p95 >= Duration::from_millis(94) && p95 <= Duration::from_millis(96),
            "{p95:?}"
        );
        let p50 = w.percentile_at(50, t).unwrap();
        assert!(
            p50 >= Duration::from_millis(49) && p50 <= Duration::from_millis(51),
            "{p50:?}"
        );
    }

    #[test]
    fn recomputed_at_most_once_a_second() {
        let w = LatencyWindow::default();
        let t = Instant::now();
        for _ in 0..50 {
            w.record_at(Duration::from_millis(5), t);
        }
        let first = w.percentile_at(95, t).unwrap();
        for _ in 0..500 {
            w.record_at(Duration::from_millis(50), t);
        }
        assert_eq!(
            w.percentile_at(95, t + Duration::from_millis(500)),
            Some(first)
        );
        let later = w
            .percentile_at(95, t + Duration::from_millis(1001))
            .unwrap();
        assert!(later > Duration::from_millis(40), "{later:?}");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let w = LatencyWindow::default();
        let t = Instant::now();
        for _ in 0..50 {
            w.record_at(Duration::from_millis(50), t);
        }
        // 6 s on: the samples are in the previous half, still counted
        let t6 = t + Duration::from_secs(6);
        w.record_at(Duration::from_millis(5), t6);
        assert!(w.percentile_at(50, t6).unwrap() > Duration::from_millis(40));
        // 21 s on: gone
        assert_eq!(w.percentile_at(50, t + Duration::from_secs(21)), None);
    }
}
