//! `https://` backends: certificate verification per pool (`pools.NAME.tls`)
//! and health probes that use each backend's own name.
//!
//! Requests already go to each backend with its own host name as SNI and
//! verified name (pingora verifies against the system's roots by default).
//! This module adds the pool's `ca` bundle (replacing the system roots),
//! `verify: false` (no chain or name check, logged as a warning whenever
//! the pool is built) and the `sni` override, to requests and probes alike;
//! and it gives every backend of an HTTPS pool a probe of its own, so a
//! probe's SNI and `Host` name the backend it checks (pingora's checks
//! carry one name for a whole pool, which fails verification for every
//! backend with another name).

use crate::certs;
use crate::config::{BackendConfig, HealthConfig, UpstreamTls};
use crate::health;
use crate::pool::socket_addr;
use async_trait::async_trait;
use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::{HttpPeer, PeerOptions};
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use pingora_core::{Error, ErrorType, Result};
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::Backend;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A pool's verification settings, with its CA bundle loaded.
#[derive(Clone)]
pub struct UpstreamTlsCtx {
    verify: bool,
    sni: Option<String>,
    ca: Option<Arc<CaType>>,
}

impl UpstreamTlsCtx {
    /// Loads `tls.ca` (checked at validation; a file that went bad since
    /// is logged and the system's roots are used).
    pub fn new(pool: &str, tls: &UpstreamTls) -> Self {
        if !tls.verify {
            log::warn!(
                "pool {pool}: tls.verify is false: certificates of its https:// backends are NOT checked (anyone on the path can impersonate them)"
            );
        }
        let ca = tls.ca.as_ref().and_then(|path| match certs::load_ca(path) {
            Ok(ders) => {
                let list: Vec<WrappedX509> = ders
                    .into_iter()
                    .map(|der| WrappedX509::new(der, parse_x509))
                    .collect();
                Some(Arc::<CaType>::from(list.into_boxed_slice()))
            }
            Err(e) => {
                log::error!("pool {pool}: tls.ca: {e}; using the system's roots");
                None
            }
        });
        UpstreamTlsCtx {
            verify: tls.verify,
            sni: tls.sni.clone(),
            ca,
        }
    }

    /// Applies the settings to a peer's options.
    pub fn apply_options(&self, o: &mut PeerOptions) {
        o.verify_cert = self.verify;
        o.verify_hostname = self.verify;
        o.ca = self.ca.clone();
    }

    /// Applies the settings to a request's peer (TLS peers only).
    pub fn apply(&self, peer: &mut HttpPeer) {
        if peer.sni.is_empty() {
            return;
        }
        if let Some(sni) = &self.sni {
            peer.sni = sni.clone();
        }
        self.apply_options(&mut peer.options);
    }
}

/// One probe per backend of an HTTPS pool, each with the backend's own
/// name (or the pool's `sni`) as SNI and `Host`; `None` for `type: none`.
pub fn probe(
    pool: &str,
    cfg: &HealthConfig,
    backends: &[BackendConfig],
    ctx: &UpstreamTlsCtx,
) -> Option<Box<dyn HealthCheck + Send + Sync>> {
    let patch = |o: &mut PeerOptions| ctx.apply_options(o);
    let mut checks = HashMap::new();
    for b in backends {
        let mut named = b.clone();
        if let Some(sni) = &ctx.sni {
            named.host = sni.clone();
        }
        checks.insert(
            b.addr,
            health::probe_with(pool, cfg, std::slice::from_ref(&named), &patch)?,
        );
    }
    let threshold = (cfg.rise, cfg.fall);
    Some(Box::new(PerBackend { checks, threshold }))
}

/// Dispatches each probe to the check made for that backend.
struct PerBackend {
    checks: HashMap<SocketAddr, Box<dyn HealthCheck + Send + Sync>>,
    threshold: (usize, usize),
}

#[async_trait]
impl HealthCheck for PerBackend {
    async fn check(&self, target: &Backend) -> Result<()> {
        match self.checks.get(&socket_addr(target)) {
            Some(c) => c.check(target).await,
            None => Error::e_explain(ErrorType::InternalError, "backend without a probe"),
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(c) = self.checks.get(&socket_addr(target)) {
            c.health_status_change(target, healthy).await
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        self.checks.get(&socket_addr(target)).map_or_else(
            || format!("{:?}", target.addr),
            |c| c.backend_summary(target),
        )
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.threshold.0
        } else {
            self.threshold.1
        }
    }
}
