//! Live configuration: building a [`RouteTable`] from a validated config,
//! activating its pools, and swapping it in atomically on SIGHUP.
//!
//! A reload validates the whole file first; an invalid file changes nothing.
//! New pools are built aside (backends that are unchanged keep their state),
//! every pool is probed once so new backends are admitted before they can be
//! chosen, and only then is the table published. Requests in flight keep the
//! table they started with.

use crate::config::{self, Config, ConfigErrors};
use crate::pool::Pool;
use crate::routing::RouteTable;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Builds the table for `config`, reusing backend state from `previous`.
/// Pools are not probed or started yet: see [`activate`].
pub fn build_table(config: Arc<Config>, previous: Option<&RouteTable>) -> RouteTable {
    let pools = config
        .pools
        .values()
        .map(|p| {
            let old = previous.and_then(|t| t.pool(&p.name)).map(|p| p.as_ref());
            Arc::new(Pool::build(p, old))
        })
        .collect();
    RouteTable::new(config, pools)
}

/// Probes every pool of `table` once (admitting backends that pass), then
/// starts each pool's periodic health checks on the current runtime.
pub async fn activate(table: &RouteTable) {
    futures::future::join_all(table.pools().iter().map(|p| p.probe_now())).await;
    for p in table.pools() {
        p.start();
    }
}

/// Reloads the configuration file into the live route table.
pub struct Reloader {
    path: Option<PathBuf>,
    routes: Arc<ArcSwap<RouteTable>>,
    lock: tokio::sync::Mutex<()>,
    /// Successful reloads.
    pub ok: AtomicU64,
    /// Rejected reloads (invalid file).
    pub errors: AtomicU64,
}

impl Reloader {
    /// A reloader of `path` (`None` in quick mode: nothing to reload).
    pub fn new(path: Option<PathBuf>, routes: Arc<ArcSwap<RouteTable>>) -> Self {
        Reloader {
            path,
            routes,
            lock: tokio::sync::Mutex::new(()),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// The live route table.
    pub fn routes(&self) -> &Arc<ArcSwap<RouteTable>> {
        &self.routes
    }

    /// Re-reads the file; if valid, builds, probes and publishes the new
    /// table. On error the old table stays and the errors are returned.
    pub async fn reload(&self) -> Result<(), ConfigErrors> {
        let _serial = self.lock.lock().await;
        let Some(path) = &self.path else {
            return Err(ConfigErrors {
                source: "--backends".into(),
                errors: vec![config::ConfigError::new(
                    "",
                    "quick mode has no configuration file to reload",
                )],
            });
        };
        let config = match config::load(path) {
            Ok(c) => c,
            Err(e) => {
                self.errors.fetch_add(1, Relaxed);
                return Err(e);
            }
        };
        let old = self.routes.load_full();
        if config.listen != old.config.listen || config.server != old.config.server {
            log::warn!(
                "reload: changes to `listen` or `server` take effect only after a binary upgrade (systemctl reload)"
            );
        }
        let table = build_table(Arc::new(config), Some(&old));
        activate(&table).await;
        self.routes.store(Arc::new(table));
        self.ok.fetch_add(1, Relaxed);
        log::info!("configuration reloaded from {}", path.display());
        Ok(())
    }
}

/// The background service that activates the first table, reports ready
/// (the proxy accepts only after), then reloads on every SIGHUP.
pub struct Control {
    /// The reloader shared with the admin API.
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for Control {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        use tokio::signal::unix::{signal, SignalKind};
        // Register first: SIGHUP's default action would kill the process.
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot handle SIGHUP, reload by signal is off: {e}");
                None
            }
        };
        activate(&self.reloader.routes.load()).await;
        ready.notify_ready();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    log::info!("SIGHUP: reloading configuration");
                    if let Err(e) = self.reloader.reload().await {
                        log::error!("reload rejected, keeping the running configuration:\n{e}");
                    }
                }
            }
        }
    }

    async fn start(&self, shutdown: ShutdownWatch) {
        let (tx, _rx) = tokio::sync::watch::channel(false);
        self.start_with_ready_notifier(shutdown, ServiceReadyNotifier::new(tx))
            .await
    }
}
