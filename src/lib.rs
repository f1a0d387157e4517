//! # switchyard
//!
//! An HTTP load balancer on Cloudflare's Pingora. Each request is routed by
//! its `App-Name` header to a pool of backends; inside the pool,
//! pingora-load-balancing picks the backend and runs the active health
//! checks.
//!
//! ```text
//! main (src/bin/switchyard.rs)
//! |-- startup::prepare ------------ state file, access log, admin token: checked
//! |                                  before the sockets are taken (also by `-t`)
//! `-- server::run ---------------- pingora Server (daemon, pid, upgrade, signals)
//!     |-- edge::EdgeApp (ServerApp) -- client limits per listener (head deadline
//!     |   |                            and size, keep-alive), h2 by ALPN; TLS
//!     |   |                            certificates from tls::Resolver (SNI);
//!     |   |                            retiring (linger): serve accepted
//!     |   |                            connections, then close idle ones
//!     |-- proxy::Proxy (ProxyHttp) -- wrapped by EdgeApp; ratelimit::Limiters
//!     |   |-- cache::Cache ('static) -- RFC 9111 store, TinyUFO/LRU eviction, cache lock
//!     |   `-- ArcSwap<RouteTable> ---- routing::RouteTable (immutable snapshot)
//!     |       |-- Arc<Pool> x N ------ pool::Pool
//!     |       |   |-- LoadBalancer<S> (RoundRobin | Random | Consistent | LeastConn | PeakEwmaP2c)
//!     |       |   |   `-- Backends: a view of the probe group's HealthRegistry
//!     |       |   `-- Arc<BackendState> per backend, Arc<ProbeGroup>
//!     |       `-- state::Registry ------ backend state by identity, one probe
//!     |                                   loop per health setting (outlives tables)
//!     |-- reload::Control (background service: first probes, SIGHUP, DNS changes)
//!     `-- admin::AdminApi (ServeHttp on admin.listen: status, backends, reload, metrics)
//!         `-- reload::Reloader (file + discovery::Discovery + config::AdminState
//!                               -> new RouteTable)
//! ```
//!
//! ## Request flow
//! 1. `request_filter` loads the current [`routing::RouteTable`] and resolves
//!    the pool (ASCII-case-insensitive, trimmed; default pool or 404).
//! 2. `upstream_peer` selects a ready, admitted backend in the pool or its
//!    fallback chain (503 when none), with the pool's timeouts.
//! 3. Failures map to 502 / 504 with a JSON body (`proxy::errors`).
//!
//! ## Reload flow
//! 1. SIGHUP: [`config::load`] validates the whole file.
//! 2. [`reload::build_table`] builds new pools aside; every backend they keep
//!    keeps its state (from [`state::Registry`]); new backends are probed once.
//! 3. The table is published with one `ArcSwap::store`; in-flight requests
//!    keep the table they started with.
//!
//! A pool's `discovery:` ([`discovery`]) takes the same path: when a DNS
//! lookup changes its set, the table is rebuilt from the same file with the
//! discovered backends added.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod budget;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod config;
pub mod counters;
pub mod discovery;
pub mod edge;
pub mod failure;
pub mod health;
pub mod hedge;
pub mod linger;
pub mod log_output;
pub mod pool;
pub mod proxy;
pub mod race;
pub mod ratelimit;
pub mod reload;
pub mod request;
pub mod retry;
pub mod routing;
pub mod server;
pub mod startup;
pub mod state;
pub mod tls;
pub mod upstream_tls;
