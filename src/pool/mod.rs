//! A pool: one named set of backends behind a pingora-load-balancing
//! `LoadBalancer`, with its strategy, probe, timeouts and live backend state.
//!
//! Selection, membership, enablement and active health are pingora's; this
//! module adds what pingora lacks: least-connections ([`least_conn`]), smooth
//! weighted round robin ([`smooth_wrr`]), the
//! probe gate for new backends and per-backend counters ([`backend`]).
//!
//! A pool is immutable once built. A reload builds a new pool and carries
//! the live state of unchanged backends over ([`Pool::build`]'s `previous`).

mod backend;
mod least_conn;
mod passive;
mod smooth_wrr;

pub use backend::{state_of, BackendState, InflightGuard};
pub use least_conn::LeastConn;
pub use smooth_wrr::SmoothWrr;

use crate::config::{BackendConfig, PoolConfig, Strategy};
use crate::health;
use async_trait::async_trait;
use futures::FutureExt;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::selection::{Consistent, Random};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::watch;

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
}

/// Runs `$body` with `$lb` bound to the pool's `Arc<LoadBalancer<_>>`.
macro_rules! with_lb {
    ($balancer:expr, $lb:ident => $body:expr) => {
        match $balancer {
            Balancer::RoundRobin($lb) => $body,
            Balancer::Random($lb) => $body,
            Balancer::Consistent($lb) => $body,
            Balancer::LeastConn($lb) => $body,
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
    pub unserved: crate::metrics::StatusCounts,
    /// Request durations.
    pub duration: crate::metrics::Histogram,
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
    /// Whether the pool has an active probe (`type` is not `none`).
    probed: bool,
    /// Stops the pool's background loop when the pool is dropped.
    stop: watch::Sender<bool>,
    started: AtomicBool,
}

impl Pool {
    /// Builds a pool from `config`. Backends also present in `previous` (same
    /// address, name and URL) keep their state; one that was not ready there
    /// must pass a probe again before it takes traffic.
    pub fn build(config: &PoolConfig, previous: Option<&Pool>) -> Pool {
        let probe = health::probe(&config.name, &config.health, &config.backends);
        let probed = probe.is_some();
        let members: Vec<Backend> = config
            .backends
            .iter()
            .map(|b| member(b, probed, previous))
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
        let mut backends = Backends::new(Box::new(discovery));
        if let Some(probe) = probe {
            backends.set_health_check(probe);
        }
        let balancer = match &config.strategy {
            Strategy::RoundRobin => Balancer::RoundRobin(lb(backends, config)),
            Strategy::Random => Balancer::Random(lb(backends, config)),
            Strategy::Consistent(_) => Balancer::Consistent(lb(backends, config)),
            Strategy::LeastConn => Balancer::LeastConn(lb(backends, config)),
        };
        Pool {
            config: config.clone(),
            stats: previous.map(|p| p.stats.clone()).unwrap_or_default(),
            balancer,
            members,
            probed,
            stop: watch::channel(false).0,
            started: AtomicBool::new(false),
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Runs one probe of every backend now (admitting those that pass).
    pub async fn probe_now(&self) {
        with_lb!(&self.balancer, lb => lb.backends().run_health_check(true).await)
    }

    /// Starts pingora's background loop for this pool (periodic probes) on
    /// the current tokio runtime. Idempotent; the loop ends when the pool is
    /// dropped or the process shuts down.
    pub fn start(&self) {
        if !self.probed || self.started.swap(true, Relaxed) {
            return;
        }
        let stop = self.stop.subscribe();
        with_lb!(&self.balancer, lb => {
            let lb = lb.clone();
            tokio::spawn(async move { lb.start(stop).await });
        })
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
            if s.record_failure(&self.config.passive, self.probed) {
                log::warn!(
                    "pool {} backend {} ejected for {:?} after {} failure(s)",
                    self.name(),
                    s.name,
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

    /// Every configured backend, in file order.
    pub fn members(&self) -> &[Backend] {
        &self.members
    }

    /// How many backends can take traffic now.
    pub fn ready_count(&self) -> usize {
        self.members.iter().filter(|b| self.is_ready(b)).count()
    }

    /// The pingora peer for `b`, with this pool's timeouts.
    pub fn peer(&self, b: &Backend, remaining: std::time::Duration) -> HttpPeer {
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
        o.read_timeout = Some(t.read.min(remaining));
        o.write_timeout = Some(t.read.min(remaining));
        o.idle_timeout = Some(std::time::Duration::from_secs(60));
        peer
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
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
    let mut lb = LoadBalancer::<S>::from_backends(backends);
    lb.health_check_frequency = Some(config.health.interval);
    lb.parallel_health_check = true;
    lb.update_frequency = None;
    // Static discovery answers at once; no runtime is needed here.
    match lb.update().now_or_never() {
        Some(Ok(())) => {}
        Some(Err(e)) => log::error!("pool {}: membership update failed: {e}", config.name),
        None => log::error!("pool {}: membership update did not complete", config.name),
    }
    Arc::new(lb)
}

fn member(c: &BackendConfig, probed: bool, previous: Option<&Pool>) -> Backend {
    let mut b = Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(c.addr),
        weight: c.weight,
        ext: Default::default(),
    };
    let old = previous.and_then(|p| {
        let m = p.members.iter().find(|m| socket_addr(m) == c.addr)?;
        Some((p, m, state_of(m)?))
    });
    let state = match old {
        Some((p, m, s)) => {
            // healthy and admitted in the old pool: no need to probe again
            let good = !probed || (p.probed && p.is_ready(m));
            if good && s.name == c.name && s.url == c.url {
                s.clone()
            } else {
                Arc::new(BackendState::new(c.name.clone(), c.url.clone(), good))
            }
        }
        None => Arc::new(BackendState::new(c.name.clone(), c.url.clone(), !probed)),
    };
    b.ext.insert(state);
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
