//! What the status page reads beyond the base `/status` fields: each
//! backend's state in words, last-minute rate, error rate and latency
//! percentiles, last failure; each pool's fallback and size; the process
//! (version, uptime, last reload, listeners); and `GET /status/series`, the
//! per-pool request rate and p99 latency over the last 5 minutes.
//!
//! Fields are only ever added to `/status` (SPEC §6), never renamed.

use crate::counters::Metrics;
use crate::pool::{state_of, Pool};
use crate::routing::RouteTable;
use crate::state::{current_slot, BackendState, Window, SLOTS, SLOT_SECS};
use pingora_load_balancing::Backend;
use serde_json::{json, Map, Value};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// When the process started, for `uptime_s`.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    at: Instant,
    unix_ms: u64,
}

impl Started {
    /// Now.
    pub fn now() -> Self {
        Started {
            at: Instant::now(),
            unix_ms: unix_ms(),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A backend's state in one word, most important first: `disabled` or
/// `draining` (drained by the admin API, with or without requests still in
/// flight), `ejected` (passive `max_fails`), `down` (failing its active
/// probes), `pending` (not yet admitted by a first passing probe), `healthy`.
pub fn state_word(pool: &Pool, b: &Backend, s: &BackendState) -> &'static str {
    if !pool.is_enabled(b) {
        if s.inflight() > 0 {
            "draining"
        } else {
            "disabled"
        }
    } else if s.ejection.is_ejected() {
        "ejected"
    } else if !s.healthy() {
        "down"
    } else if !s.admitted() {
        "pending"
    } else {
        "healthy"
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn window_fields(w: &Window) -> Value {
    let attempts = w.responses + w.failures;
    json!({
        "rps": round(w.responses as f64 / w.seconds),
        "error_rate": if attempts == 0 { 0.0 } else { round(w.errors as f64 / attempts as f64) },
        "p50_ms": w.latency_ms(0.5).map(round),
        "p99_ms": w.latency_ms(0.99).map(round),
    })
}

fn backend_fields(pool: &Pool, b: &Backend, s: &BackendState) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("state".into(), state_word(pool, b, s).into());
    let ejected_until = s
        .ejection
        .is_ejected()
        .then(|| unix_ms() + s.ejection.remaining().as_millis() as u64);
    m.insert("ejected_until_ms".into(), json!(ejected_until));
    m.insert("admitted".into(), s.admitted().into());
    let failure = s.recent.last_failure();
    m.insert(
        "last_failure".into(),
        json!(failure.map(|f| json!({"at_ms": f.at_ms, "reason": f.reason}))),
    );
    m.insert("last_minute".into(), window_fields(&s.recent.last_minute()));
    m
}

/// Adds the status page's fields to a `/status` document built from `table`.
pub fn enrich(doc: &mut Value, table: &RouteTable, metrics: &Metrics, started: Started) {
    if let Some(pools) = doc.get_mut("pools").and_then(Value::as_object_mut) {
        for p in table.pools() {
            let Some(pv) = pools.get_mut(p.name()).and_then(Value::as_object_mut) else {
                continue;
            };
            pv.insert("fallback".into(), json!(p.config.fallback));
            pv.insert("total".into(), p.members().len().into());
            let Some(bs) = pv.get_mut("backends").and_then(Value::as_array_mut) else {
                continue;
            };
            let states = p.members().iter().filter_map(|b| Some((b, state_of(b)?)));
            for (bv, (b, s)) in bs.iter_mut().zip(states) {
                if let Some(obj) = bv.as_object_mut() {
                    obj.extend(backend_fields(p, b, s));
                }
            }
        }
    }
    let last_reload = metrics
        .last_reload
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .map(|r| json!({"at_ms": r.at_ms, "ok": r.ok, "errors": r.errors}));
    let mut listeners: Vec<Value> = table
        .config
        .listen
        .iter()
        .map(|l| json!({"kind": "proxy", "addr": l.addr}))
        .collect();
    if let Some(a) = &table.config.admin {
        listeners.push(json!({"kind": "admin", "addr": a.listen}));
    }
    if let Some(obj) = doc.as_object_mut() {
        obj.insert(
            "process".into(),
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "started_ms": started.unix_ms,
                "uptime_s": started.at.elapsed().as_secs(),
                "now_ms": unix_ms(),
                "last_reload": last_reload,
                "listeners": listeners,
            }),
        );
    }
}

/// `GET /status/series`: per pool, requests/s and p99 latency (ms, `null`
/// without responses) of each 10-second slot of the last 5 minutes, oldest
/// first, summed over the pool's backends; the last slot is the current one
/// (its rate over the seconds elapsed so far).
pub fn series(table: &RouteTable) -> Value {
    let last = current_slot();
    let first = last.saturating_sub(SLOTS as u64 - 1);
    let mut pools = Map::new();
    for p in table.pools() {
        let mut rps = Vec::new();
        let mut p99 = Vec::new();
        for slot in first..=last {
            let mut w = Window::default();
            for s in p.members().iter().filter_map(state_of) {
                w.merge(&s.recent.window(slot, slot));
            }
            rps.push(json!(round(w.responses as f64 / w.seconds.max(1.0))));
            p99.push(json!(w.latency_ms(0.99).map(round)));
        }
        pools.insert(p.name().to_string(), json!({"rps": rps, "p99_ms": p99}));
    }
    json!({
        "step_s": SLOT_SECS,
        "end_ms": unix_ms(),
        "pools": pools,
    })
}
