//! The configuration file exactly as written: serde types mirroring the YAML,
//! with no cross-field checks.
//!
//! Every struct denies unknown fields, so a misspelt key is an error with its
//! key path and line instead of a silently ignored setting. Defaults that do
//! not depend on other keys live here; everything else is checked in
//! [`super::validate`].

use super::units::{Dur, HedgeDelay, Size};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Pingora's process settings.
    #[serde(default)]
    pub server: RawServer,
    /// Listening sockets.
    #[serde(default)]
    pub listen: Vec<RawListen>,
    /// How a request picks its pool.
    #[serde(default)]
    pub routing: RawRouting,
    /// Upstream pools by name.
    #[serde(default)]
    pub pools: BTreeMap<String, RawPool>,
    /// Access log settings.
    #[serde(default)]
    pub log: RawLog,
    /// Admin API; absent means no admin listener.
    pub admin: Option<RawAdmin>,
    /// The shared response store; absent means no caching.
    pub cache: Option<super::cache::RawCacheStore>,
}

/// `admin:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `host:port` of the admin listener.
    pub listen: String,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<String>,
    /// Where admin changes are kept across reloads, restarts and upgrades.
    pub state_file: Option<String>,
}

/// `server:`: mapped onto pingora's `ServerConf`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Worker threads of the proxy (default: one per CPU).
    pub threads: Option<usize>,
    /// PID file written at start (default `/tmp/switchyard.pid`).
    pub pid_file: Option<String>,
    /// Unix socket over which listeners are handed to a new binary.
    pub upgrade_sock: Option<String>,
    /// Error log file; null is stderr.
    pub error_log: Option<String>,
    /// Seconds a retiring instance keeps serving after SIGQUIT/SIGTERM (default 5).
    pub grace_period_seconds: Option<u64>,
    /// Seconds allowed for the final runtime shutdown (default 5).
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    /// Drop privileges to this user after binding (daemon mode).
    pub user: Option<String>,
    /// Drop privileges to this group after binding (daemon mode).
    pub group: Option<String>,
    /// Upstream keep-alive pool size (default 128 per thread).
    pub upstream_keepalive_pool_size: Option<usize>,
    /// Whether tokio work stealing is on (default: on unless `threads: 1`).
    pub work_stealing: Option<bool>,
    /// Forward request headers whose names contain `_` (default false: they
    /// are dropped, as nginx's `underscores_in_headers off`).
    pub underscores_in_headers: Option<bool>,
}

/// One entry of `listen:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// `host:port` to bind.
    pub addr: String,
    /// TLS termination; absent means plain HTTP.
    pub tls: Option<super::edge::RawTls>,
    /// Time to receive a whole request head (default 10s).
    pub header_timeout: Option<Dur>,
    /// Idle time between requests of a keep-alive connection (default 75s).
    pub keepalive_timeout: Option<Dur>,
    /// Requests per connection (default 1000).
    pub keepalive_requests: Option<u32>,
    /// Largest request head (default 32KiB).
    pub max_header_size: Option<Size>,
}

/// `routing:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Request header naming the pool (default `App-Name`).
    pub header: Option<String>,
    /// Pool for a missing header or a value naming no pool; none means 404.
    pub default_pool: Option<String>,
}

/// One pool under `pools:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// `round_robin` (default), `least_conn`, `random`, `consistent` or `peak_ewma`.
    pub strategy: Option<String>,
    /// `consistent` only: `client_ip` (default), `header:NAME` or `path`.
    pub hash_key: Option<String>,
    /// The pool's members.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// Active health check; absent means a TCP check with defaults.
    pub health_check: Option<RawHealthCheck>,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Pool used when this one has no usable backend.
    pub fallback: Option<String>,
    /// Retries on another backend.
    pub retries: Option<RawRetries>,
    /// Passive failure marking.
    pub passive: Option<RawPassive>,
    /// Fan-out racing; absent means off.
    pub race: Option<RawRace>,
    /// RFC 9111 response caching; absent means off.
    pub cache: Option<super::cache::RawPoolCache>,
    /// Token bucket per client; absent means off.
    pub rate_limit: Option<super::edge::RawRateLimit>,
    /// Certificate checks of `https://` backends.
    pub tls: Option<super::edge::RawUpstreamTls>,
    /// Membership from DNS; absent means the static `backends` only.
    pub discovery: Option<RawDiscovery>,
}

/// `discovery:` of a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    /// The name to resolve (`web.service.consul`, `_http._tcp.web.ns.svc.cluster.local`).
    pub dns: Option<String>,
    /// `srv` (default: host and port from SRV records) or `a` (A/AAAA, with `port`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `type: a` only: the backends' port.
    pub port: Option<u16>,
    /// `IP` or `IP:port` of the DNS server (default: the system's resolvers).
    pub resolver: Option<String>,
    /// Longest time between lookups (default 5s, at least 1s).
    pub interval: Option<Dur>,
}

/// `race:` of a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRace {
    /// Status classes that end the race (default 1xx, 2xx, 3xx, 4xx).
    pub terminal: Option<Vec<String>>,
    /// 0 sends to every backend at once; more adds one backend per delay;
    /// `pNN` waits for the pool's recent latency at that percentile.
    pub hedge_delay: Option<HedgeDelay>,
    /// Largest request body raced (default 1MiB); larger ones go to one backend.
    pub max_body: Option<Size>,
}

/// `retries:` of a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Total tries per request (default 3).
    pub attempts: Option<usize>,
    /// Failure kinds that are retried (default connect_failure, reset, timeout).
    pub on: Option<Vec<String>>,
    /// Largest request body buffered for replay (default and maximum 64KiB).
    pub max_body: Option<Size>,
    /// Cap on retries and hedges (default ratio 0.2, min_per_second 10).
    pub budget: Option<RawBudget>,
}

/// `retries.budget` of a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Retries allowed per first attempt over the last 10 s (default 0.2).
    pub ratio: Option<f64>,
    /// Retries allowed per second on top of the ratio (default 10).
    pub min_per_second: Option<u32>,
}

/// `passive:` of a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    /// Failures within `fail_timeout` that eject a backend (default 1; 0 = off).
    pub max_fails: Option<u32>,
    /// The counting window and the ejection time (default 10s).
    pub fail_timeout: Option<Dur>,
    /// Most of the pool's backends ejected at once, percent (default 50).
    pub max_ejected_percent: Option<u32>,
}

/// One backend of a pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// Relative share of traffic (default 1).
    pub weight: Option<usize>,
    /// `false` keeps the backend configured but out of traffic (default true).
    pub enabled: Option<bool>,
    /// Display name (default `host:port`).
    pub name: Option<String>,
}

/// `health_check:` of a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// `tcp` (default), `http` or `none`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `http` only: path to GET (default `/`).
    pub path: Option<String>,
    /// `http` only: the one status that passes (default: any 2xx).
    pub expect_status: Option<u16>,
    /// Time between probes (default 2s).
    pub interval: Option<Dur>,
    /// Connect and read timeout of one probe (default 1s).
    pub timeout: Option<Dur>,
    /// Consecutive successes that mark a backend healthy (default 2).
    pub rise: Option<usize>,
    /// Consecutive failures that mark a backend unhealthy (default 3).
    pub fall: Option<usize>,
}

/// `timeouts:` of a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP (and TLS) connect timeout (default 2s).
    pub connect: Option<Dur>,
    /// Timeout of each read of the upstream response (default 30s).
    pub read: Option<Dur>,
    /// Deadline for the response head, all attempts included (default 30s).
    pub request: Option<Dur>,
    /// Idle limit of an upgraded (WebSocket) connection (default 1h).
    pub idle: Option<Dur>,
}

/// `log:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `stdout`, `off` or a file path (default `off`).
    pub access: Option<String>,
    /// `json` (default) or `text`.
    pub format: Option<String>,
}
