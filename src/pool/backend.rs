//! Per-backend live state that pingora's `Backend` does not carry: the probe
//! gate, in-flight and request counters.
//!
//! A [`BackendState`] rides in `Backend::ext` (which pingora ignores for
//! identity), so every clone of a backend that the selectors and health
//! checks hand around points at the same counters. Reloads carry the state of
//! an unchanged backend over to the new pool.

use super::passive::Ejection;
use crate::config::PassivePolicy;
use crate::metrics::{AttemptResult, StatusCounts};
use pingora_load_balancing::Backend;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Live state of one backend of one pool.
#[derive(Debug)]
pub struct BackendState {
    /// Display name (`name:` or `host:port`).
    pub name: String,
    /// Normalised URL, `scheme://host:port`.
    pub url: String,
    /// Whether a probe has passed since the backend joined the pool; until
    /// then it takes no traffic. Always true for `health_check.type: none`.
    admitted: AtomicBool,
    /// Requests currently being proxied to it (least_conn's measure).
    inflight: AtomicUsize,
    /// Requests sent to it since it joined.
    requests: AtomicU64,
    /// Failed attempts (connect error, reset, timeout) since it joined.
    failures: AtomicU64,
    /// Passive ejection state.
    pub ejection: Ejection,
    /// Whether pingora's active check calls it healthy (mirrored from the
    /// check's status-change callback).
    healthy: AtomicBool,
    /// Responses of requests it served, by status.
    pub codes: StatusCounts,
    /// Attempts by result (indexed as [`AttemptResult::ALL`]).
    attempts: [AtomicU64; 5],
}

impl BackendState {
    /// New state; `admitted` is false when the backend must pass a probe first.
    pub fn new(name: String, url: String, admitted: bool) -> Self {
        BackendState {
            name,
            url,
            admitted: AtomicBool::new(admitted),
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejection: Ejection::default(),
            healthy: AtomicBool::new(true),
            codes: StatusCounts::default(),
            attempts: Default::default(),
        }
    }

    /// Whether the backend passed its first probe.
    pub fn admitted(&self) -> bool {
        self.admitted.load(Relaxed)
    }

    /// Records a probe result: the first pass admits the backend.
    pub fn set_admitted(&self, admitted: bool) {
        self.admitted.store(admitted, Relaxed);
    }

    /// Whether the active health check calls it healthy.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Mirrors a health flip of the active check.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
    }

    /// Counts an attempt's result.
    pub fn record_attempt(&self, result: AttemptResult) {
        if let Some(i) = AttemptResult::ALL.iter().position(|(r, _)| *r == result) {
            self.attempts[i].fetch_add(1, Relaxed);
        }
    }

    /// Attempts with the result at `index` of [`AttemptResult::ALL`].
    pub fn attempt_count(&self, index: usize) -> u64 {
        self.attempts.get(index).map_or(0, |c| c.load(Relaxed))
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Relaxed)
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// Counts a failed attempt; returns true when it ejects the backend.
    /// With an active probe, an ejected backend must pass a probe again
    /// before it returns.
    pub fn record_failure(&self, policy: &PassivePolicy, probed: bool) -> bool {
        self.failures.fetch_add(1, Relaxed);
        let ejected = self.ejection.record_failure(policy);
        if ejected && probed {
            self.set_admitted(false);
        }
        ejected
    }

    /// Whether the backend may take traffic as far as switchyard's own
    /// checks go: admitted by a probe and not passively ejected.
    pub fn usable(&self) -> bool {
        self.admitted() && !self.ejection.is_ejected()
    }

    /// Starts an attempt: counts the request and holds an in-flight slot
    /// until the returned guard is dropped (on every path).
    pub fn start_request(self: &Arc<Self>) -> InflightGuard {
        self.requests.fetch_add(1, Relaxed);
        self.inflight.fetch_add(1, Relaxed);
        InflightGuard(self.clone())
    }
}

/// Holds one in-flight slot of a backend; dropping it releases the slot.
#[derive(Debug)]
pub struct InflightGuard(Arc<BackendState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

/// The state attached to `backend`, if it was built by this crate.
pub fn state_of(backend: &Backend) -> Option<&Arc<BackendState>> {
    backend.ext.get::<Arc<BackendState>>()
}
