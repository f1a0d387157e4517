//! Per-backend live state that pingora's `Backend` does not carry: the probe
//! gate, passive ejection, in-flight and request counters, latency.
//!
//! A [`BackendState`] rides in `Backend::ext` (which pingora ignores for
//! identity), so every clone of a backend that the selectors and health
//! checks hand around points at the same counters. One state exists per
//! backend identity ([`super::Registry`]), shared by every pool and every
//! configuration generation that lists the backend.

use super::latency::PeakEwma;
use super::passive::Ejection;
use super::recent::Recent;
use crate::config::PassivePolicy;
use crate::counters::{AttemptResult, StatusCounts};
use pingora_load_balancing::Backend;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Live state of one backend of one pool.
#[derive(Debug)]
pub struct BackendState {
    /// Display name (`name:` or `host:port`) and normalised URL
    /// (`scheme://host:port`), as the latest configuration says.
    labels: Mutex<(Arc<str>, Arc<str>)>,
    /// Ids of the probe groups that have listed it, latest last (a backend
    /// in pools with different health settings has several).
    probe_groups: Mutex<Vec<u64>>,
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
    /// Peak-EWMA of response-head latency (`peak_ewma`'s measure), one per
    /// backend whichever pools list it.
    pub latency: PeakEwma,
    /// The last 5 minutes of responses, errors and latency (status page).
    pub recent: Recent,
}

impl BackendState {
    /// New state; `admitted` is false when the backend must pass a probe first.
    pub fn new(name: String, url: String, admitted: bool) -> Self {
        BackendState {
            labels: Mutex::new((name.into(), url.into())),
            probe_groups: Mutex::new(Vec::new()),
            admitted: AtomicBool::new(admitted),
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejection: Ejection::default(),
            healthy: AtomicBool::new(true),
            codes: StatusCounts::default(),
            attempts: Default::default(),
            latency: PeakEwma::default(),
            recent: Recent::default(),
        }
    }

    /// The display name.
    pub fn name(&self) -> Arc<str> {
        self.lock_labels().0.clone()
    }

    /// The normalised URL.
    pub fn url(&self) -> Arc<str> {
        self.lock_labels().1.clone()
    }

    fn lock_labels(&self) -> std::sync::MutexGuard<'_, (Arc<str>, Arc<str>)> {
        self.labels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Updates name and URL to what the latest configuration says.
    pub(super) fn set_labels(&self, name: &str, url: &str) {
        let mut l = self.lock_labels();
        if &*l.0 != name {
            l.0 = name.into();
        }
        if &*l.1 != url {
            l.1 = url.into();
        }
    }

    /// Records that probe group `id` lists the backend; returns whether it
    /// is new to it (and the backend was listed by another one before).
    pub(super) fn joined_probe_group(&self, id: u64) -> bool {
        /// Groups remembered; older ones belong to replaced settings.
        const KEEP: usize = 8;
        let mut groups = self.probe_groups.lock().unwrap_or_else(|p| p.into_inner());
        if groups.contains(&id) {
            return false;
        }
        let moved = !groups.is_empty();
        if groups.len() == KEEP {
            groups.remove(0);
        }
        groups.push(id);
        moved
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
            if result != AttemptResult::Ok {
                self.recent
                    .record_failure(AttemptResult::ALL[i].1.to_string(), true);
            }
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
    pub fn record_failure(&self, policy: &PassivePolicy, probed: bool, may_eject: bool) -> bool {
        self.failures.fetch_add(1, Relaxed);
        let ejected = self.ejection.record_failure(policy, may_eject);
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
