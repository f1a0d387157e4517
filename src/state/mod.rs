//! The one home of backend state, outliving configuration generations.
//!
//! A [`Registry`] hands out one [`BackendState`] per backend identity
//! (scheme, address, TLS name) and one [`ProbeGroup`] per distinct health
//! setting. Pools of every live route table hold `Arc`s to both; the
//! registry keeps only weak references, so a backend's state (health,
//! rise/fall progress, admission, ejection, in-flight count, counters) lives
//! exactly as long as some live table (or an in-flight request) references
//! it, and a reload or admin change that keeps a backend keeps its state.
//!
//! Active health is pingora-load-balancing's shared `HealthRegistry`: every
//! pool view of a [`ProbeGroup`] contributes its backends, a backend listed
//! by several views (two pools, or the old and new generation during a
//! reload) is probed once per interval, and its rise/fall progress is kept
//! while any view lists it. The group's probe loop (pingora's
//! `HealthCheckService`) stops when the published route table no longer
//! uses the group ([`Registry::retire_unused`]), or when the last pool
//! using it is dropped.

mod backend;
pub mod latency;
mod passive;
mod recent;

pub use backend::{state_of, BackendState, InflightGuard};
pub use passive::Ejection;
pub use recent::{current_slot, LastFailure, Recent, Window, SLOTS, SLOT_SECS};

use crate::config::{BackendConfig, HealthConfig};
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::{Backend, HealthCheckService, HealthRegistry};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::watch;

/// A backend's identity: what makes two configured backends the same server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// `https://` (TLS) or `http://`.
    pub tls: bool,
    /// The resolved address.
    pub addr: SocketAddr,
    /// The TLS server name (empty for `http://`).
    pub sni: String,
}

impl BackendKey {
    /// The identity of a configured backend.
    pub fn of(c: &BackendConfig) -> Self {
        BackendKey {
            tls: c.tls,
            addr: c.addr,
            sni: if c.tls { c.host.clone() } else { String::new() },
        }
    }
}

/// What makes two pools' probes the same probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProbeKey {
    health: HealthConfigKey,
    tls: bool,
    host: String,
}

/// `HealthConfig` in a hashable form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HealthConfigKey(String);

/// Live backend states and probe groups, keyed by identity.
#[derive(Default)]
pub struct Registry {
    states: Mutex<HashMap<BackendKey, Weak<BackendState>>>,
    probes: Mutex<HashMap<ProbeKey, Weak<ProbeGroup>>>,
    next_group: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// The live state of backend `c`, or a new one. A new backend of a
    /// probed pool starts un-admitted (it takes traffic after its first
    /// passing probe). `group` is the probe group of the pool (`None` for
    /// `health_check.type: none`): when it differs from the one the backend
    /// was last probed by, the health setting changed, and a backend that is
    /// not healthy now must pass a probe of the new setting first.
    pub fn state(&self, c: &BackendConfig, group: Option<&ProbeGroup>) -> Arc<BackendState> {
        let key = BackendKey::of(c);
        let mut states = lock(&self.states);
        states.retain(|_, w| w.strong_count() > 0);
        // 0 stands for "no probe": a backend moving to a probed pool must
        // pass a probe of it
        let group_id = group.map_or(0, |g| g.id);
        if let Some(s) = states.get(&key).and_then(Weak::upgrade) {
            s.set_labels(&c.name, &c.url);
            let new_setting = s.joined_probe_group(group_id);
            if group_id != 0 && new_setting && !(s.healthy() && s.admitted()) {
                s.set_healthy(true);
                s.set_admitted(false);
            }
            return s;
        }
        let s = Arc::new(BackendState::new(
            c.name.clone(),
            c.url.clone(),
            group.is_none(),
        ));
        s.joined_probe_group(group_id);
        states.insert(key, Arc::downgrade(&s));
        s
    }

    /// The probe group for `cfg` with TLS and `Host` from `backends` (one
    /// scheme per pool), or a new one built with `make_check`.
    pub fn probe_group(
        &self,
        cfg: &HealthConfig,
        backends: &[BackendConfig],
        make_check: impl FnOnce() -> Box<dyn HealthCheck + Send + Sync>,
    ) -> Arc<ProbeGroup> {
        let key = ProbeKey {
            health: HealthConfigKey(format!("{cfg:?}")),
            tls: backends.first().is_some_and(|b| b.tls),
            host: backends.first().map_or(String::new(), |b| b.host.clone()),
        };
        let mut probes = lock(&self.probes);
        probes.retain(|_, w| w.strong_count() > 0);
        if let Some(g) = probes.get(&key).and_then(Weak::upgrade) {
            return g;
        }
        // by address only: a weight change keeps health, and a backend in
        // two pools with different weights is probed once
        let registry = Arc::new(HealthRegistry::with_equivalence(|b: &Backend| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            b.addr.hash(&mut h);
            h.finish()
        }));
        let check: Arc<dyn HealthCheck + Send + Sync> = Arc::from(make_check());
        registry.set_health_check(Box::new(SharedCheck(check.clone())));
        let g = Arc::new(ProbeGroup {
            id: self.next_group.fetch_add(1, Relaxed) + 1,
            registry,
            check,
            interval: cfg.interval,
            stop: Mutex::new(None),
        });
        probes.insert(key, Arc::downgrade(&g));
        g
    }

    /// Stops the probe loops of every group that no pool in `live` uses
    /// (groups kept alive only by tables that in-flight requests still
    /// hold): the published table alone decides what is probed, and how.
    pub fn retire_unused<'a>(&self, live: impl IntoIterator<Item = &'a ProbeGroup>) {
        let live: std::collections::HashSet<u64> = live.into_iter().map(|g| g.id).collect();
        let groups: Vec<Arc<ProbeGroup>> = lock(&self.probes)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for g in groups.iter().filter(|g| !live.contains(&g.id)) {
            g.stop();
        }
    }
}

/// One probe loop over every backend with one health setting.
pub struct ProbeGroup {
    /// Non-zero id, to notice that a backend moved to another group.
    id: u64,
    /// Pingora's shared health state of the group's backends.
    pub registry: Arc<HealthRegistry>,
    check: Arc<dyn HealthCheck + Send + Sync>,
    interval: std::time::Duration,
    /// Stops the running probe loop, if any.
    stop: Mutex<Option<watch::Sender<bool>>>,
}

impl ProbeGroup {
    /// Starts the periodic probe loop on the current runtime (idempotent).
    pub fn start(&self) {
        let mut stop = lock(&self.stop);
        if stop.is_some() {
            return;
        }
        let mut svc = HealthCheckService::new(self.registry.clone());
        svc.health_check_frequency = Some(self.interval);
        svc.parallel_health_check = true;
        let (tx, rx) = watch::channel(false);
        *stop = Some(tx);
        tokio::spawn(async move { svc.run(rx, None).await });
    }

    /// Stops the probe loop (a later [`start`](Self::start) restarts it).
    pub fn stop(&self) {
        if let Some(tx) = lock(&self.stop).take() {
            let _ = tx.send(true);
        }
    }

    /// Whether the probe loop runs.
    pub fn running(&self) -> bool {
        lock(&self.stop).is_some()
    }

    /// Probes `b` once now; a pass admits it (see the check's wrapper).
    pub async fn probe_once(&self, b: &Backend) {
        let _ = self.check.check(b).await;
    }
}

impl Drop for ProbeGroup {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A health check shared between the registry and [`ProbeGroup::probe_once`].
struct SharedCheck(Arc<dyn HealthCheck + Send + Sync>);

#[async_trait::async_trait]
impl HealthCheck for SharedCheck {
    async fn check(&self, target: &Backend) -> pingora_core::Result<()> {
        self.0.check(target).await
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        self.0.health_status_change(target, healthy).await
    }

    fn backend_summary(&self, target: &Backend) -> String {
        self.0.backend_summary(target)
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.0.health_threshold(success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthKind;
    use pingora_load_balancing::health_check::TcpHealthCheck;
    use std::time::Duration;

    fn backend(url: &str, host: &str) -> BackendConfig {
        crate::config::backend_from_url(url, None)
            .map(|mut b| {
                b.host = host.to_string();
                b
            })
            .expect("url")
    }

    fn health(interval_ms: u64) -> HealthConfig {
        HealthConfig {
            kind: HealthKind::Tcp,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }

    fn group(r: &Registry, interval_ms: u64, b: &BackendConfig) -> Arc<ProbeGroup> {
        r.probe_group(&health(interval_ms), std::slice::from_ref(b), || {
            TcpHealthCheck::new() as Box<dyn HealthCheck + Send + Sync>
        })
    }

    #[test]
    fn one_state_per_identity_while_referenced() {
        let r = Registry::default();
        let a = backend("http://127.0.0.1:9001", "127.0.0.1");
        let s1 = r.state(&a, None);
        let s2 = r.state(&a, None);
        assert!(Arc::ptr_eq(&s1, &s2));
        let tls = backend("https://127.0.0.1:9001", "a.example");
        let tls_other_name = backend("https://127.0.0.1:9001", "b.example");
        assert!(!Arc::ptr_eq(&s1, &r.state(&tls, None)));
        assert!(!Arc::ptr_eq(
            &r.state(&tls, None),
            &r.state(&tls_other_name, None)
        ));
        s1.start_request();
        drop((s1, s2));
        // nothing references it any more: a later listing starts afresh
        assert_eq!(r.state(&a, None).requests(), 0);
    }

    #[test]
    fn a_backend_in_two_pools_has_one_latency_estimate() {
        let r = Registry::default();
        let a = backend("http://127.0.0.1:9001", "127.0.0.1");
        let (web, api) = (r.state(&a, None), r.state(&a, None));
        web.latency.observe(Duration::from_millis(40));
        assert!(api.latency.estimate().is_some_and(|v| v > 0.03));
    }

    #[test]
    fn probe_groups_are_shared_by_setting() {
        let r = Registry::default();
        let a = backend("http://127.0.0.1:9001", "127.0.0.1");
        let g1 = group(&r, 1000, &a);
        assert!(Arc::ptr_eq(&g1, &group(&r, 1000, &a)));
        assert!(!Arc::ptr_eq(&g1, &group(&r, 2000, &a)));
    }

    #[test]
    fn new_backends_of_probed_pools_wait_for_a_probe() {
        let r = Registry::default();
        let a = backend("http://127.0.0.1:9001", "127.0.0.1");
        let g = group(&r, 1000, &a);
        assert!(!r.state(&a, Some(&g)).admitted());
        let b = backend("http://127.0.0.1:9002", "127.0.0.1");
        assert!(r.state(&b, None).admitted());
    }

    #[test]
    fn an_unhealthy_backend_in_two_probe_groups_keeps_its_state() {
        let r = Registry::default();
        let a = backend("http://127.0.0.1:9001", "127.0.0.1");
        let (g1, g2) = (group(&r, 1000, &a), group(&r, 2000, &a));
        let s = r.state(&a, Some(&g1));
        s.set_admitted(true);
        s.set_healthy(false);
        // first listing by the second setting: must pass a probe of it
        r.state(&a, Some(&g2));
        assert!(!s.admitted() && s.healthy());
        // alternating builds of the two pools change nothing more
        s.set_admitted(true);
        s.set_healthy(false);
        for g in [&g1, &g2, &g1] {
            r.state(&a, Some(g));
        }
        assert!(s.admitted() && !s.healthy());
    }
}
