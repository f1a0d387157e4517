//! Live configuration: building a [`RouteTable`] from a validated config,
//! activating its pools, and swapping it in atomically on SIGHUP.
//!
//! A reload validates the whole file first; an invalid file changes nothing.
//! File I/O and DNS (reading the file, resolving backend names, opening the
//! access log, saving the admin state) run on tokio's blocking pool, never
//! on the runtime that also runs the health checks and the admin API.
//! New pools are built aside (backends that stay keep their state: see
//! [`crate::state`]), new backends are probed once so that they are admitted
//! before they can be chosen, and only then is the table published. Requests
//! in flight keep the table they started with.

use crate::access_log::{self, AccessLogger};
use crate::config::{self, AdminState, Config, ConfigErrors};
use crate::counters::Metrics;
use crate::discovery::Discovery;
use crate::pool::Pool;
use crate::routing::RouteTable;
use crate::tls::TlsListeners;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Builds the table for `config`, reusing backend state from `previous`.
/// Pools are not probed or started yet: see [`activate`].
pub fn build_table(config: Arc<Config>, previous: Option<&RouteTable>) -> RouteTable {
    let registry = previous.map(|t| t.registry.clone()).unwrap_or_default();
    crate::cache::install(config.cache);
    let pools = config
        .pools
        .values()
        .map(|p| {
            let old = previous.and_then(|t| t.pool(&p.name)).map(|p| p.as_ref());
            Arc::new(Pool::build(p, old, &registry))
        })
        .collect();
    let access_log = AccessLogger::new(&config.log);
    RouteTable::new(config, pools, registry, access_log)
}

/// Probes once every backend of `table` that has not passed a probe yet
/// (new ones: admitting those that pass), then starts the periodic probes
/// on the current runtime. Backends the previous table had keep their state
/// and are not probed again.
pub async fn activate(table: &RouteTable) {
    futures::future::join_all(table.pools().iter().map(|p| p.probe_new())).await;
    for p in table.pools() {
        p.start();
    }
}

/// Why a reload or an admin change was not applied.
#[derive(Debug)]
pub enum ReloadError {
    /// The file is invalid (every error).
    Config(ConfigErrors),
    /// The admin change was refused (status, message).
    Refused(u16, String),
    /// The admin state could not be saved.
    State(String),
    /// A file the configuration names could not be opened (the access
    /// log), or blocking work failed.
    Io(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::Refused(_, m) | ReloadError::State(m) | ReloadError::Io(m) => {
                f.write_str(m)
            }
        }
    }
}

/// What the live table is built from: the file as last loaded, plus the
/// admin changes on top.
struct Sources {
    file: Arc<Config>,
    state: AdminState,
}

/// Applies configuration changes to the live route table: file reloads
/// (SIGHUP, `POST /reload`) and admin API changes, one at a time.
pub struct Reloader {
    path: Option<PathBuf>,
    routes: Arc<ArcSwap<RouteTable>>,
    metrics: Arc<Metrics>,
    sources: tokio::sync::Mutex<Sources>,
    /// Certificates of the TLS listeners, re-read on reload.
    tls: Option<Arc<TlsListeners>>,
    /// Membership from DNS, merged into every table built.
    discovery: Discovery,
}

impl Reloader {
    /// A reloader of `path` (`None` in quick mode: nothing to reload) whose
    /// live table was built from `file` with `state` applied.
    pub fn new(
        path: Option<PathBuf>,
        routes: Arc<ArcSwap<RouteTable>>,
        metrics: Arc<Metrics>,
        file: Arc<Config>,
        state: AdminState,
    ) -> Self {
        Reloader {
            path,
            routes,
            discovery: Discovery::new(metrics.clone()),
            metrics,
            sources: tokio::sync::Mutex::new(Sources { file, state }),
            tls: None,
        }
    }

    /// Certificate files of `tls` are re-read on every reload.
    pub fn with_tls(mut self, tls: Arc<TlsListeners>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The live route table.
    pub fn routes(&self) -> &Arc<ArcSwap<RouteTable>> {
        &self.routes
    }

    /// The DNS discovery of the live pools.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Starts DNS discovery for the live configuration and, when a pool
    /// discovers, waits for the first lookups (at most `limit`) and
    /// publishes the table with their backends.
    pub async fn start_discovery(&self, limit: std::time::Duration) {
        let sources = self.sources.lock().await;
        if sources.file.pools.values().all(|p| p.discovery.is_none()) {
            return;
        }
        self.discovery.sync(&sources.file);
        self.discovery.first_lookups(limit).await;
        let old = self.routes.load_full();
        if let Err(e) = self
            .publish(sources.file.clone(), sources.state.clone(), &old)
            .await
        {
            log::error!("discovery: could not publish the discovered backends: {e}");
        }
    }

    /// Rebuilds and publishes the table from the same file and admin state
    /// (a discovered set changed).
    pub async fn refresh(&self) {
        let sources = self.sources.lock().await;
        let old = self.routes.load_full();
        if let Err(e) = self
            .publish(sources.file.clone(), sources.state.clone(), &old)
            .await
        {
            log::error!("discovery: could not publish the changed backends: {e}");
        }
    }

    /// Re-reads the file; if valid, builds, probes and publishes the new
    /// table (admin changes applied). On error the old table stays.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let mut sources = self.sources.lock().await;
        let Some(path) = &self.path else {
            return Err(ReloadError::Refused(
                400,
                "quick mode has no configuration file to reload".into(),
            ));
        };
        let path = path.clone();
        let tls = self.tls.clone();
        let loaded = blocking(move || {
            let file = config::load(&path).map_err(ReloadError::Config)?;
            let sink = access_log::open_sink(&file.log).map_err(ReloadError::Io)?;
            // certificates too: a file that fails now rejects the reload
            let certs = tls
                .as_ref()
                .map(|t| t.prepare(&file.listen))
                .transpose()
                .map_err(|e| {
                    ReloadError::Config(ConfigErrors {
                        source: path.display().to_string(),
                        errors: vec![config::ConfigError::new("listen", e.to_string())],
                    })
                })?;
            Ok((file, sink, certs))
        })
        .await;
        let (file, sink, certs) = match loaded {
            Ok((file, sink, certs)) => (Arc::new(file), sink, certs),
            Err(e) => {
                self.metrics.reloads_error.fetch_add(1, Relaxed);
                let errors = e.to_string().lines().map(String::from).collect();
                self.metrics.note_reload(false, errors);
                return Err(e);
            }
        };
        let old = self.routes.load_full();
        // certificate paths and contents apply live; the rest of `listen` does not
        let shape = |l: &[config::Listener]| {
            l.iter()
                .map(|x| (x.addr.clone(), x.tls.as_ref().map(|t| t.http2), x.limits))
                .collect::<Vec<_>>()
        };
        if shape(&file.listen) != shape(&old.config.listen)
            || old.config.server.needs_upgrade_to_become(&file.server)
            || file.admin.as_ref().map(|a| &a.listen)
                != old.config.admin.as_ref().map(|a| &a.listen)
        {
            log::warn!(
                "reload: changes to `listen`, `server` or `admin.listen` take effect only after a binary upgrade (systemctl reload)"
            );
        }
        self.publish(file.clone(), sources.state.clone(), &old)
            .await?;
        if let Some(c) = certs {
            c.commit();
        }
        access_log::reopen(sink);
        sources.file = file;
        self.metrics.reloads_ok.fetch_add(1, Relaxed);
        self.metrics.note_reload(true, Vec::new());
        if let Some(path) = &self.path {
            log::info!("configuration reloaded from {}", path.display());
        }
        Ok(())
    }

    /// Applies an admin change: `change` edits a copy of the admin state
    /// (seeing the live configuration) or refuses; the new state is saved to
    /// `admin.state_file`, then the table is rebuilt and published.
    pub async fn change(
        &self,
        change: impl FnOnce(&mut AdminState, &Config) -> Result<(), ReloadError>,
    ) -> Result<(), ReloadError> {
        let mut sources = self.sources.lock().await;
        let old = self.routes.load_full();
        let mut state = sources.state.clone();
        let applied = match change(&mut state, &old.config) {
            Ok(()) => match old.config.admin.as_ref().and_then(|a| a.state_file.clone()) {
                Some(path) => {
                    let to_save = state.clone();
                    blocking(move || {
                        to_save
                            .save(std::path::Path::new(&path))
                            .map_err(ReloadError::State)
                    })
                    .await
                }
                None => Ok(()),
            },
            Err(e) => Err(e),
        };
        let counter = match applied {
            Ok(()) => &self.metrics.admin_changes_ok,
            Err(_) => &self.metrics.admin_changes_error,
        };
        counter.fetch_add(1, Relaxed);
        applied?;
        self.publish(sources.file.clone(), state.clone(), &old)
            .await?;
        sources.state = state;
        Ok(())
    }

    /// Builds the table for `file` with `state` applied (on the blocking
    /// pool: admin-added backends are resolved), probes its new backends,
    /// then publishes it.
    async fn publish(
        &self,
        file: Arc<Config>,
        state: AdminState,
        old: &RouteTable,
    ) -> Result<(), ReloadError> {
        self.discovery.sync(&file);
        let merged = self.discovery.merge(&file);
        let (effective, warnings) = blocking(move || Ok(state.apply(&merged))).await?;
        for w in warnings {
            log::warn!("{w}");
        }
        let table = build_table(Arc::new(effective), Some(old));
        activate(&table).await;
        let table = Arc::new(table);
        self.routes.store(table.clone());
        // probe loops only the old table used stop now, even while its
        // in-flight requests keep it alive
        let live = table.pools().iter().filter_map(|p| p.probes());
        table.registry.retire_unused(live);
        Ok(())
    }
}

/// Runs blocking `work` (file I/O, DNS) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ReloadError> + Send + 'static,
) -> Result<T, ReloadError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(ReloadError::Io(format!("blocking task failed: {e}"))))
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
        self.reloader
            .start_discovery(std::time::Duration::from_secs(5))
            .await;
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
                () = self.reloader.discovery().changed() => self.reloader.refresh().await,
            }
        }
    }

    async fn start(&self, shutdown: ShutdownWatch) {
        let (tx, _rx) = tokio::sync::watch::channel(false);
        self.start_with_ready_notifier(shutdown, ServiceReadyNotifier::new(tx))
            .await
    }
}
