//! Active health checks: pingora-load-balancing's `TcpHealthCheck` and
//! `HttpHealthCheck`, configured from a pool's `health_check:` and wrapped
//! in a [`GatedCheck`].
//!
//! Pingora treats a backend it has never probed as healthy. The wrapper
//! closes that gap: a new backend starts un-admitted (see
//! [`BackendState::admitted`](crate::pool::BackendState::admitted)) and the
//! first passing probe admits it, so a dead new backend never gets a request.
//! Probes run on pingora's own schedule (one `HealthCheckService` per
//! distinct health setting, see [`crate::state::ProbeGroup`]) and flip
//! health after `rise`/`fall` consecutive results.

use crate::config::{BackendConfig, HealthConfig, HealthKind};
use crate::state::state_of;
use async_trait::async_trait;
use pingora_core::upstreams::peer::PeerOptions;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;

/// A pingora health check that also admits a backend on its first pass.
pub struct GatedCheck {
    pool: String,
    inner: Box<dyn HealthCheck + Send + Sync>,
}

#[async_trait]
impl HealthCheck for GatedCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        let result = self.inner.check(target).await;
        if let (Err(e), Some(state)) = (&result, state_of(target)) {
            state
                .recent
                .record_failure(format!("health check: {}", e.to_string().trim()), false);
        }
        if result.is_ok() {
            if let Some(state) = state_of(target) {
                if !state.admitted() {
                    log::info!(
                        "pool {} backend {} passed its first probe",
                        self.pool,
                        state.name()
                    );
                    state.set_admitted(true);
                }
            }
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(state) = state_of(target) {
            state.set_healthy(healthy);
        }
        self.inner.health_status_change(target, healthy).await
    }

    fn backend_summary(&self, target: &Backend) -> String {
        match state_of(target) {
            Some(s) => format!("pool {} backend {} ({})", self.pool, s.name(), s.url()),
            None => format!("pool {} backend {:?}", self.pool, target.addr),
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// Builds the probe for a pool, or `None` for `type: none`.
///
/// `backends` decides TLS and the `Host` header of HTTP probes (validation
/// guarantees one scheme per pool).
pub fn probe(
    pool: &str,
    cfg: &HealthConfig,
    backends: &[BackendConfig],
) -> Option<Box<dyn HealthCheck + Send + Sync>> {
    probe_with(pool, cfg, backends, &|_| {})
}

/// [`probe`] with `patch` applied to the probe's peer options (TLS
/// verification settings of `https://` pools, see [`crate::upstream_tls`]).
pub fn probe_with(
    pool: &str,
    cfg: &HealthConfig,
    backends: &[BackendConfig],
    patch: &dyn Fn(&mut PeerOptions),
) -> Option<Box<dyn HealthCheck + Send + Sync>> {
    let tls = backends.first().is_some_and(|b| b.tls);
    let host = backends.first().map_or("localhost", |b| b.host.as_str());
    let inner: Box<dyn HealthCheck + Send + Sync> = match &cfg.kind {
        HealthKind::None => return None,
        HealthKind::Tcp => {
            let mut hc = if tls {
                TcpHealthCheck::new_tls(host)
            } else {
                TcpHealthCheck::new()
            };
            hc.consecutive_success = cfg.rise;
            hc.consecutive_failure = cfg.fall;
            hc.peer_template.options.connection_timeout = Some(cfg.timeout);
            hc.peer_template.options.total_connection_timeout = Some(cfg.timeout);
            patch(&mut hc.peer_template.options);
            hc
        }
        HealthKind::Http {
            path,
            expect_status,
        } => {
            let mut hc = HttpHealthCheck::new(host, tls);
            hc.consecutive_success = cfg.rise;
            hc.consecutive_failure = cfg.fall;
            hc.peer_template.options.connection_timeout = Some(cfg.timeout);
            hc.peer_template.options.total_connection_timeout = Some(cfg.timeout);
            hc.peer_template.options.read_timeout = Some(cfg.timeout);
            hc.peer_template.options.write_timeout = Some(cfg.timeout);
            patch(&mut hc.peer_template.options);
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                // path was validated; the fallback keeps pingora's `GET /`
                let _ = req.insert_header("Host", host);
                let _ = req.insert_header("User-Agent", "switchyard-health");
                hc.req = req;
            }
            let expect = *expect_status;
            hc.validator = Some(Box::new(move |r: &ResponseHeader| {
                let code = r.status.as_u16();
                let ok = match expect {
                    Some(want) => code == want,
                    None => r.status.is_success(),
                };
                if ok {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("unexpected health status", code),
                        format!("health check answered {code}"),
                    )
                }
            }));
            Box::new(hc)
        }
    };
    Some(Box::new(GatedCheck {
        pool: pool.to_string(),
        inner,
    }))
}
