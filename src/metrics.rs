//! Prometheus metrics, rendered on the admin API's `GET /metrics`.
//!
//! The counters live where the events happen, as plain atomics: per backend
//! in [`BackendState`](crate::pool::BackendState), per pool in
//! [`PoolStats`](crate::pool::PoolStats), process-wide in [`Metrics`]. The
//! hot path only increments them; this module reads them at scrape time.

use crate::pool::{state_of, Pool};
use crate::routing::RouteTable;
use std::fmt::Write;
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
    /// Successful configuration reloads (SIGHUP, `POST /reload`, admin changes).
    pub reloads_ok: AtomicU64,
    /// Rejected reloads.
    pub reloads_error: AtomicU64,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

/// Renders every metric in Prometheus text format.
pub fn render(table: &RouteTable, m: &Metrics) -> String {
    let mut out = String::with_capacity(4096);
    let pools = table.pools();

    help(
        &mut out,
        "switchyard_requests_total",
        "counter",
        "Requests answered, by pool, backend and status code.",
    );
    for (code, n) in m.unrouted.nonzero() {
        let _ = writeln!(
            out,
            "switchyard_requests_total{{pool=\"\",backend=\"\",code=\"{code}\"}} {n}"
        );
    }
    for p in pools {
        let pool = esc(p.name());
        for (code, n) in p.stats.unserved.nonzero() {
            let _ = writeln!(
                out,
                "switchyard_requests_total{{pool=\"{pool}\",backend=\"\",code=\"{code}\"}} {n}"
            );
        }
        for_backends(p, |name, s| {
            for (code, n) in s.codes.nonzero() {
                let _ = writeln!(
                    out,
                    "switchyard_requests_total{{pool=\"{pool}\",backend=\"{name}\",code=\"{code}\"}} {n}"
                );
            }
        });
    }

    help(
        &mut out,
        "switchyard_request_duration_seconds",
        "histogram",
        "Time from request to the end of the response, by pool.",
    );
    for p in pools {
        let pool = esc(p.name());
        let h = &p.stats.duration;
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "switchyard_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Relaxed);
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_sum{{pool=\"{pool}\"}} {}",
            h.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_count{{pool=\"{pool}\"}} {count}"
        );
    }

    help(
        &mut out,
        "switchyard_upstream_attempts_total",
        "counter",
        "Upstream attempts, by pool, backend and result.",
    );
    for p in pools {
        let pool = esc(p.name());
        for_backends(p, |name, s| {
            for (i, (_, label)) in AttemptResult::ALL.iter().enumerate() {
                let n = s.attempt_count(i);
                let _ = writeln!(
                    out,
                    "switchyard_upstream_attempts_total{{pool=\"{pool}\",backend=\"{name}\",result=\"{label}\"}} {n}"
                );
            }
        });
    }

    help(
        &mut out,
        "switchyard_retries_total",
        "counter",
        "Attempts after the first, by pool.",
    );
    for p in pools {
        let _ = writeln!(
            out,
            "switchyard_retries_total{{pool=\"{}\"}} {}",
            esc(p.name()),
            p.stats.retries.load(Relaxed)
        );
    }

    help(
        &mut out,
        "switchyard_race_requests_total",
        "counter",
        "Raced requests by outcome (won, no_terminal, failed) and upstream requests cancelled.",
    );
    for p in pools.iter().filter(|p| p.config.race.is_some()) {
        let pool = esc(p.name());
        let s = &p.stats;
        for (outcome, c) in [
            ("won", &s.race_won),
            ("no_terminal", &s.race_no_terminal),
            ("failed", &s.race_failed),
            ("cancelled", &s.race_cancelled),
        ] {
            let _ = writeln!(
                out,
                "switchyard_race_requests_total{{pool=\"{pool}\",outcome=\"{outcome}\"}} {}",
                c.load(Relaxed)
            );
        }
    }

    per_backend(
        &mut out,
        pools,
        ("switchyard_backend_healthy", "gauge"),
        "1 when the backend takes traffic (healthy, admitted, not ejected).",
        |p, b, _| u64::from(p.is_healthy(b)),
    );
    per_backend(
        &mut out,
        pools,
        ("switchyard_backend_active_connections", "gauge"),
        "Requests in flight to the backend.",
        |_, _, s| s.inflight() as u64,
    );
    per_backend(
        &mut out,
        pools,
        ("switchyard_backend_ejections_total", "counter"),
        "Passive ejections of the backend.",
        |_, _, s| s.ejection.ejections(),
    );

    help(
        &mut out,
        "switchyard_rate_limited_total",
        "counter",
        "Requests refused by rate limiting, by pool.",
    );
    for p in pools {
        let _ = writeln!(
            out,
            "switchyard_rate_limited_total{{pool=\"{}\"}} 0",
            esc(p.name())
        );
    }

    help(
        &mut out,
        "switchyard_config_reloads_total",
        "counter",
        "Configuration reloads by result.",
    );
    let _ = writeln!(
        out,
        "switchyard_config_reloads_total{{result=\"ok\"}} {}",
        m.reloads_ok.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "switchyard_config_reloads_total{{result=\"error\"}} {}",
        m.reloads_error.load(Relaxed)
    );

    help(
        &mut out,
        "switchyard_log_lines_dropped_total",
        "counter",
        "Log lines dropped because the output could not keep up, by log (access, error).",
    );
    for log in [&crate::log_output::ACCESS, &crate::log_output::ERROR] {
        let _ = writeln!(
            out,
            "switchyard_log_lines_dropped_total{{log=\"{}\"}} {}",
            log.name(),
            log.dropped()
        );
    }
    out
}

/// One metric with a `{pool, backend}` sample per backend of every pool.
fn per_backend(
    out: &mut String,
    pools: &[std::sync::Arc<Pool>],
    (name, kind): (&str, &str),
    text: &str,
    value: impl Fn(&Pool, &pingora_load_balancing::Backend, &crate::pool::BackendState) -> u64,
) {
    help(out, name, kind, text);
    for p in pools {
        let pool = esc(p.name());
        for b in p.members() {
            if let Some(s) = state_of(b) {
                let _ = writeln!(
                    out,
                    "{name}{{pool=\"{pool}\",backend=\"{}\"}} {}",
                    esc(&s.name),
                    value(p, b, s)
                );
            }
        }
    }
}

fn for_backends(p: &Pool, mut f: impl FnMut(&str, &crate::pool::BackendState)) {
    for b in p.members() {
        if let Some(s) = state_of(b) {
            f(&esc(&s.name), s);
        }
    }
}
