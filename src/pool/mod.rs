//! A pool: one named set of backends behind a pingora-load-balancing
//! `LoadBalancer`, with its strategy, probe, timeouts and live backend state.
//!
//! Selection, membership, enablement and active health are pingora's; this
//! module adds what pingora lacks: least-connections (`least_conn`), smooth
//! weighted round robin (`smooth_wrr`), latency-aware P2C (`peak_ewma`) and,
//! through [`crate::state`], the probe gate for new backends, passive
//! ejection and per-backend counters.
//!
//! A pool is immutable once built. A reload builds a new pool; its backends'
//! state and probes come from the [`Registry`], so whatever the new pool
//! shares with the old one keeps its state.

mod least_conn;
mod peak_ewma;
mod smooth_wrr;

pub use crate::state::{state_of, BackendState, InflightGuard};
pub use least_conn::LeastConn;
pub use peak_ewma::PeakEwmaP2c;
pub use smooth_wrr::SmoothWrr;

use crate::state::{ProbeGroup, Registry};

use crate::config::{BackendConfig, PoolConfig, Strategy};
use crate::health;
use crate::upstream_tls::{self, UpstreamTlsCtx};
use async_trait::async_trait;
use futures::FutureExt;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::selection::{Consistent, Random};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// How many raw selector steps one selection may take (pingora's
/// `max_iterations`); weighted selectors repeat backends, so this is well
/// above any pool size.
const MAX_SELECT_STEPS: usize = 256;

/// One `LoadBalancer` per strategy type.
enum Balancer {
    RoundRobin(Arc<LoadBalancer<SmoothWrr>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
    LeastConn(Arc<LoadBalancer<LeastConn>>),
    PeakEwma(Arc<LoadBalancer<PeakEwmaP2c>>),
}

/// Runs `$body` with `$lb` bound to the pool's `Arc<LoadBalancer<_>>`.
macro_rules! with_lb {
    ($balancer:expr, $lb:ident => $body:expr) => {
        match $balancer {
            Balancer::RoundRobin($lb) => $body,
            Balancer::Random($lb) => $body,
            Balancer::Consistent($lb) => $body,
            Balancer::LeastConn($lb) => $body,
            Balancer::PeakEwma($lb) => $body,
        }
    };
}

/// Counters of a pool that outlive reloads (carried to the new pool of the
/// same name).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Attempts after the first, over all requests.
    pub retries: AtomicU64,
    /// Races started.
    pub races: AtomicU64,
    /// Races that ended with a terminal answer.
    pub race_won: AtomicU64,
    /// Races answered with a non-terminal answer (none was terminal).
    pub race_no_terminal: AtomicU64,
    /// Races nobody answered (502) or that timed out (504).
    pub race_failed: AtomicU64,
    /// Upstream requests cancelled because another answer won.
    pub race_cancelled: AtomicU64,
    /// Responses to requests of this pool that no backend served (503, ...).
    pub unserved: crate::counters::StatusCounts,
    /// Request durations.
    pub duration: crate::counters::Histogram,
    /// The retry budget (`retries.budget`), shared by retries and hedges.
    pub budget: crate::budget::RetryBudget,
    /// Recent response-head latencies, for `race.hedge_delay: pNN`.
    pub latency: crate::hedge::LatencyWindow,
}

/// A configured pool, ready to select backends.
pub struct Pool {
    /// The pool's validated configuration.
    pub config: PoolConfig,
    /// Counters shared with earlier and later versions of the pool.
    pub stats: Arc<PoolStats>,
    balancer: Balancer,
    /// Every configured backend, in file order, with its state attached.
    members: Vec<Backend>,
    /// The pool's probe (`None` for `type: none`), shared with every pool
    /// that has the same health setting.
    probes: Option<Arc<ProbeGroup>>,
    /// Certificate checks of `https://` backends (`None`: plain pool).
    upstream_tls: Option<UpstreamTlsCtx>,
}

impl Pool {
    /// Builds a pool from `config` with backend state and probes from
    /// `registry`; `previous` (the pool of the same name in the table being
    /// replaced) passes its counters on.
    pub fn build(config: &PoolConfig, previous: Option<&Pool>, registry: &Registry) -> Pool {
        let upstream_tls = config
            .backends
            .iter()
            .any(|b| b.tls)
            .then(|| UpstreamTlsCtx::new(&config.name, &config.tls));
        let probe = match &upstream_tls {
            Some(t) => upstream_tls::probe(&config.name, &config.health, &config.backends, t),
            None => health::probe(&config.name, &config.health, &config.backends),
        };
        let probes = probe
            .map(|check| registry.probe_group(&config.health, &config.backends, move || check));
        let members: Vec<Backend> = config
            .backends
            .iter()
            .map(|c| member(c, registry, probes.as_deref()))
            .collect();
        let discovery = PoolDiscovery {
            backends: members.iter().cloned().collect(),
            enablement: config
                .backends
                .iter()
                .zip(&members)
                .map(|(c, b)| (hash_key(b), c.enabled))
                .collect(),
        };
        let backends = match &probes {
            Some(g) => Backends::new_with_health_registry(Box::new(discovery), g.registry.clone()),
            None => Backends::new(Box::new(discovery)),
        };
        let balancer = match &config.strategy {
            Strategy::RoundRobin => Balancer::RoundRobin(lb(backends, config)),
            Strategy::Random => Balancer::Random(lb(backends, config)),
            Strategy::Consistent(_) => Balancer::Consistent(lb(backends, config)),
            Strategy::LeastConn => Balancer::LeastConn(lb(backends, config)),
            Strategy::PeakEwma => Balancer::PeakEwma(lb(backends, config)),
        };
        Pool {
            config: config.clone(),
            stats: previous.map(|p| p.stats.clone()).unwrap_or_default(),
            balancer,
            members,
            probes,
            upstream_tls,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Probes, once and at once, every backend of the pool that has not
    /// passed a probe yet (new backends), admitting those that pass. Others
    /// are left to the periodic probe.
    pub async fn probe_new(&self) {
        let Some(g) = &self.probes else { return };
        let new = self
            .members
            .iter()
            .filter(|b| state_of(b).is_some_and(|s| !s.admitted()));
        futures::future::join_all(new.map(|b| g.probe_once(b))).await;
    }

    /// Starts the periodic probe of the pool's health setting (idempotent;
    /// it runs while a published table uses that setting).
    pub fn start(&self) {
        if let Some(g) = &self.probes {
            g.start();
        }
    }

    /// The pool's probe group (`None` for `type: none`).
    pub fn probes(&self) -> Option<&ProbeGroup> {
        self.probes.as_deref()
    }

    /// Picks a backend for `key` that is enabled, healthy, admitted and
    /// accepted by `accept`.
    pub fn select(&self, key: &[u8], accept: impl Fn(&Backend) -> bool) -> Option<Backend> {
        let ok = |b: &Backend, ready: bool| ready && usable(b) && accept(b);
        with_lb!(&self.balancer, lb => lb.select_with(key, MAX_SELECT_STEPS, ok))
    }

    /// Counts a failed request on `b`, ejecting it per `passive:`.
    pub fn record_failure(&self, b: &Backend) {
        if let Some(s) = state_of(b) {
            let passive = &self.config.passive;
            let ejected = self
                .members
                .iter()
                .filter_map(state_of)
                .filter(|m| m.ejection.is_ejected())
                .count();
            let may_eject = ejected < passive.max_ejected(self.members.len());
            if s.record_failure(passive, self.probes.is_some(), may_eject) {
                log::warn!(
                    "pool {} backend {} ejected for {:?} after {} failure(s)",
                    self.name(),
                    s.name(),
                    self.config.passive.fail_timeout,
                    self.config.passive.max_fails
                );
            }
        }
    }

    /// Whether `b` is enabled, healthy and admitted right now.
    pub fn is_ready(&self, b: &Backend) -> bool {
        with_lb!(&self.balancer, lb => lb.backends().ready(b)) && usable(b)
    }

    /// Whether `b` passes its health checks and may take traffic as far as
    /// health goes (admitted, not ejected), whether or not it is enabled.
    pub fn is_healthy(&self, b: &Backend) -> bool {
        state_of(b).is_none_or(|s| s.healthy() && s.usable())
    }

    /// Whether `b` is enabled (configured `enabled` or admin-set).
    pub fn is_enabled(&self, b: &Backend) -> bool {
        // ready() is enabled && healthy; with health ignored we read the
        // configured flag, which is the only enablement source so far.
        self.config
            .backends
            .iter()
            .find(|c| c.addr == socket_addr(b))
            .is_some_and(|c| c.enabled)
    }

    /// Where `b` comes from: the file, the admin API or DNS discovery.
    pub fn source(&self, b: &Backend) -> crate::config::BackendSource {
        self.config
            .backends
            .iter()
            .find(|c| c.addr == socket_addr(b))
            .map_or_else(Default::default, |c| c.source)
    }

    /// Every configured backend, in file order.
    pub fn members(&self) -> &[Backend] {
        &self.members
    }

    /// How many backends can take traffic now.
    pub fn ready_count(&self) -> usize {
        self.members.iter().filter(|b| self.is_ready(b)).count()
    }

    /// The pingora peer for `b`, with this pool's timeouts. `remaining` is
    /// what is left of `timeouts.request` (the deadline for the response
    /// head): it caps the connect timeout and each read or write until then.
    /// An `upgrade` request (WebSocket) reads and writes with
    /// `timeouts.idle` instead, as its connection outlives the handshake.
    pub fn peer(&self, b: &Backend, remaining: std::time::Duration, upgrade: bool) -> HttpPeer {
        let cfg = self
            .config
            .backends
            .iter()
            .find(|c| c.addr == socket_addr(b));
        let (tls, sni) = cfg.map_or((false, String::new()), |c| {
            (c.tls, if c.tls { c.host.clone() } else { String::new() })
        });
        let mut peer = HttpPeer::new(b.addr.clone(), tls, sni);
        let t = &self.config.timeouts;
        let o = &mut peer.options;
        o.connection_timeout = Some(t.connect.min(remaining));
        o.total_connection_timeout = Some(t.connect.min(remaining));
        let io = if upgrade {
            t.idle
        } else {
            t.read.min(remaining)
        };
        o.read_timeout = Some(io);
        o.write_timeout = Some(io);
        o.idle_timeout = Some(std::time::Duration::from_secs(60));
        if let Some(t) = &self.upstream_tls {
            t.apply(&mut peer);
        }
        peer
    }
}

/// Admitted by a probe and not passively ejected.
fn usable(b: &Backend) -> bool {
    state_of(b).is_none_or(|s| s.usable())
}

/// The std socket address of a pingora backend.
pub fn socket_addr(b: &Backend) -> std::net::SocketAddr {
    match b.addr.as_inet() {
        Some(a) => *a,
        None => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
    }
}

fn lb<S>(backends: Backends, config: &PoolConfig) -> Arc<LoadBalancer<S>>
where
    S: pingora_load_balancing::selection::BackendSelection + Send + Sync + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    // no background loop: membership is static per pool and probes belong
    // to the shared ProbeGroup
    let lb = LoadBalancer::<S>::from_backends(backends);
    // Static discovery answers at once; no runtime is needed here.
    match lb.update().now_or_never() {
        Some(Ok(())) => {}
        Some(Err(e)) => log::error!("pool {}: membership update failed: {e}", config.name),
        None => log::error!("pool {}: membership update did not complete", config.name),
    }
    Arc::new(lb)
}

fn member(c: &BackendConfig, registry: &Registry, probes: Option<&ProbeGroup>) -> Backend {
    let mut b = Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(c.addr),
        weight: c.weight,
        ext: Default::default(),
    };
    b.ext.insert(registry.state(c, probes));
    b
}

/// Pingora's backend key: `DefaultHasher` over the backend's identity.
fn hash_key(b: &Backend) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// A fixed member set with per-backend enablement.
struct PoolDiscovery {
    backends: BTreeSet<Backend>,
    enablement: HashMap<u64, bool>,
}

#[async_trait]
impl ServiceDiscovery for PoolDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((self.backends.clone(), self.enablement.clone()))
    }
}
