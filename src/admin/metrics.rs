//! Prometheus text rendering of every counter for `GET /metrics`; the
//! counters themselves are plain structs in [`crate::counters`].

use crate::counters::{AttemptResult, Metrics, BUCKETS};
use crate::pool::{state_of, Pool};
use crate::routing::RouteTable;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

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
        let counts = h.buckets();
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += counts[i];
            let _ = writeln!(
                out,
                "switchyard_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = h.count();
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_sum{{pool=\"{pool}\"}} {}",
            h.sum_seconds()
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
        "switchyard_retry_budget_exhausted_total",
        "counter",
        "Retries and hedged attempts refused because the pool's retry budget was spent.",
    );
    for p in pools {
        let _ = writeln!(
            out,
            "switchyard_retry_budget_exhausted_total{{pool=\"{}\"}} {}",
            esc(p.name()),
            p.stats.budget.exhausted()
        );
    }

    help(
        &mut out,
        "switchyard_backend_latency_ewma_seconds",
        "gauge",
        "Peak-EWMA of the backend's response-head latency (decay 10 s); absent before its first answer.",
    );
    for p in pools {
        let pool = esc(p.name());
        for_backends(p, |name, s| {
            if let Some(v) = s.latency.estimate() {
                let _ = writeln!(
                    out,
                    "switchyard_backend_latency_ewma_seconds{{pool=\"{pool}\",backend=\"{name}\"}} {v}"
                );
            }
        });
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
    help(
        &mut out,
        "switchyard_race_losers_total",
        "counter",
        "Losing upstream requests of races: reused (answer completed within the bound, connection pooled) or cut (connection closed; also every attempt still running when a race ends without a winner).",
    );
    for p in pools.iter().filter(|p| p.config.race.is_some()) {
        let pool = esc(p.name());
        let s = &p.stats;
        for (result, c) in [
            ("reused", &s.race_losers_reused),
            ("cut", &s.race_cancelled),
        ] {
            let _ = writeln!(
                out,
                "switchyard_race_losers_total{{pool=\"{pool}\",result=\"{result}\"}} {}",
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
        "Passive ejections of the backend (max_fails failures within fail_timeout).",
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
            "switchyard_rate_limited_total{{pool=\"{}\"}} {}",
            esc(p.name()),
            m.rate_limiters.refused(p.name())
        );
    }

    help(
        &mut out,
        "switchyard_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP, POST /reload) by result.",
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
        "switchyard_discovery_lookups_total",
        "counter",
        "DNS discovery lookups by pool and result (ok, empty, error).",
    );
    for (pool, counts) in m.discovery_lookups.snapshot() {
        for (result, n) in crate::counters::LookupCounts::RESULTS.iter().zip(counts) {
            let _ = writeln!(
                out,
                "switchyard_discovery_lookups_total{{pool=\"{}\",result=\"{result}\"}} {n}",
                esc(&pool)
            );
        }
    }
    help(
        &mut out,
        "switchyard_admin_changes_total",
        "counter",
        "Admin API changes (POST, PATCH, DELETE /backends) by result.",
    );
    for (result, c) in [
        ("ok", &m.admin_changes_ok),
        ("error", &m.admin_changes_error),
    ] {
        let _ = writeln!(
            out,
            "switchyard_admin_changes_total{{result=\"{result}\"}} {}",
            c.load(Relaxed)
        );
    }
    help(
        &mut out,
        "switchyard_local_errors_total",
        "counter",
        "Upstream attempts that failed for lack of a local resource (file descriptors, buffers, memory, ports); never counted against a backend.",
    );
    let _ = writeln!(
        out,
        "switchyard_local_errors_total {}",
        m.local_errors.load(Relaxed)
    );
    super::cache::render(&mut out, table);
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
                    esc(&s.name()),
                    value(p, b, s)
                );
            }
        }
    }
}

fn for_backends(p: &Pool, mut f: impl FnMut(&str, &crate::pool::BackendState)) {
    for b in p.members() {
        if let Some(s) = state_of(b) {
            f(&esc(&s.name()), s);
        }
    }
}
