//! Counter types, as plain atomics with no dependency: status counts, the
//! latency histogram, attempt results and the process-wide [`Metrics`].
//!
//! The counters live where the events happen: per backend in
//! `state::BackendState`, per pool in `pool::PoolStats`, process-wide in
//! [`Metrics`]. The hot path only increments them; the admin API's
//! renderer (`admin::metrics`) reads them at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters by HTTP status code (100..=599; 0 counts "no response").
pub struct StatusCounts([AtomicU64; 600]);

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl std::fmt::Debug for StatusCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusCounts")
    }
}

impl StatusCounts {
    /// Counts one response with `code` (0 = the client got none).
    pub fn add(&self, code: u16) {
        let i = if (100..600).contains(&code) {
            code as usize
        } else {
            0
        };
        self.0[i].fetch_add(1, Relaxed);
    }

    /// Non-zero counts as (code, count).
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
    }
}

/// Upper bounds of the request duration histogram, seconds.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 14],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Observations per bucket of [`BUCKETS`] (not cumulative).
    pub fn buckets(&self) -> [u64; 14] {
        std::array::from_fn(|i| self.buckets[i].load(Relaxed))
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Sum of the observations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Relaxed) as f64 / 1e6
    }
}

/// The outcome of one upstream attempt (`result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response header arrived and was used.
    Ok,
    /// The connection could not be made.
    ConnectFailure,
    /// The connection broke after the request was sent.
    Reset,
    /// Connect or read timeout.
    Timeout,
    /// A 502/503/504 answer that was retried on another backend.
    RetriedStatus,
}

impl AttemptResult {
    /// Every result with its label, in index order.
    pub const ALL: [(AttemptResult, &'static str); 5] = [
        (AttemptResult::Ok, "ok"),
        (AttemptResult::ConnectFailure, "connect_failure"),
        (AttemptResult::Reset, "reset"),
        (AttemptResult::Timeout, "timeout"),
        (AttemptResult::RetriedStatus, "retried_status"),
    ];
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests no pool took (404), by status.
    pub unrouted: StatusCounts,
    /// Successful configuration reloads (SIGHUP, `POST /reload`).
    pub reloads_ok: AtomicU64,
    /// Rejected reloads.
    pub reloads_error: AtomicU64,
    /// Admin API changes applied.
    pub admin_changes_ok: AtomicU64,
    /// Admin API changes refused or not saved.
    pub admin_changes_error: AtomicU64,
    /// Upstream attempts that failed for a resource of the proxy itself
    /// (out of file descriptors, buffers, memory or local ports).
    pub local_errors: AtomicU64,
    /// Second (since process start) of the last local-error log line.
    local_error_logged: AtomicU64,
    /// Rate-limit buckets and refusal counts of every pool.
    pub rate_limiters: std::sync::Arc<crate::ratelimit::Limiters>,
    /// DNS discovery lookups by pool and result.
    pub discovery_lookups: LookupCounts,
    /// The latest reload (SIGHUP, `POST /reload`), for the status page.
    pub last_reload: std::sync::Mutex<Option<LastReload>>,
}

/// When the latest reload happened and how it ended.
#[derive(Debug, Clone)]
pub struct LastReload {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Whether the new configuration was applied.
    pub ok: bool,
    /// Why it was rejected (one line per error); empty when applied.
    pub errors: Vec<String>,
}

impl Metrics {
    /// Remembers a reload's outcome.
    pub fn note_reload(&self, ok: bool, errors: Vec<String>) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut last = self.last_reload.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(LastReload { at_ms, ok, errors });
    }
}

impl Metrics {
    /// Counts a local resource error; returns true when it should be logged
    /// (at most once per second, so exhaustion cannot flood the log).
    pub fn local_error(&self) -> bool {
        self.local_errors.fetch_add(1, Relaxed);
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs()
            + 1;
        let last = self.local_error_logged.load(Relaxed);
        now > last
            && self
                .local_error_logged
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

/// `switchyard_discovery_lookups_total{pool,result}`.
#[derive(Debug, Default)]
pub struct LookupCounts(std::sync::Mutex<std::collections::BTreeMap<String, [u64; 3]>>);

impl LookupCounts {
    /// The `result` label values, in counter order.
    pub const RESULTS: [&'static str; 3] = ["ok", "empty", "error"];

    /// Counts one lookup of `pool` with the result at `result` of [`Self::RESULTS`].
    pub fn add(&self, pool: &str, result: usize) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let counts = m.entry(pool.to_string()).or_default();
        if let Some(c) = counts.get_mut(result) {
            *c += 1;
        }
    }

    /// Every pool that has looked up, with its counts (as [`Self::RESULTS`]).
    pub fn snapshot(&self) -> Vec<(String, [u64; 3])> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_errors_are_all_counted_and_logged_once_per_second() {
        let m = Metrics::default();
        let logged = (0..100).filter(|_| m.local_error()).count();
        assert_eq!(logged, 1);
        assert_eq!(m.local_errors.load(Relaxed), 100);
    }
}
