//! The validated settings of one pool: strategy, backends, health check,
//! timeouts, retries, passive ejection and racing, with their defaults.

use http::HeaderName;
use std::net::SocketAddr;
use std::time::Duration;

/// How a pool picks a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Weighted round robin.
    RoundRobin,
    /// Fewest in-flight requests, relative to weight.
    LeastConn,
    /// Weighted random.
    Random,
    /// Consistent (Ketama) hashing on a request key.
    Consistent(HashKey),
    /// Power of two choices over peak-EWMA latency x (in-flight + 1).
    PeakEwma,
}

impl Strategy {
    /// The name used in the YAML file and the admin API.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastConn => "least_conn",
            Strategy::Random => "random",
            Strategy::Consistent(_) => "consistent",
            Strategy::PeakEwma => "peak_ewma",
        }
    }
}

/// What a consistent-hash pool hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The value of a request header (missing header hashes as empty).
    Header(HeaderName),
    /// The request path.
    Path,
}

/// A validated pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The pool's name (its key under `pools:`).
    pub name: String,
    /// Backend selection.
    pub strategy: Strategy,
    /// Members, in file order.
    pub backends: Vec<BackendConfig>,
    /// Active health check.
    pub health: HealthConfig,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Pool to use when this one has no usable backend.
    pub fallback: Option<String>,
    /// Retries on another backend.
    pub retries: RetryPolicy,
    /// Passive failure marking.
    pub passive: PassivePolicy,
    /// Fan-out racing; `None` is off.
    pub race: Option<RacePolicy>,
    /// Response caching; `None` is off.
    pub cache: Option<super::CachePolicy>,
    /// Token bucket per client; `None` is off.
    pub rate_limit: Option<super::RateLimit>,
    /// Certificate checks of `https://` backends.
    pub tls: super::UpstreamTls,
    /// Membership from DNS; `None` is the static `backends` only.
    pub discovery: Option<DiscoveryConfig>,
}

/// A pool's `discovery:` after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The name to resolve, as written.
    pub dns: String,
    /// SRV records (port and weight from each record), or A/AAAA on `port`.
    pub kind: DiscoveryKind,
    /// The DNS server to ask; `None` is the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
    /// Longest time between lookups (default 5 s); a shorter record TTL
    /// re-resolves sooner, but never more than once per second.
    pub interval: Duration,
}

/// Which records a pool's discovery reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryKind {
    /// SRV records: target, port and weight per record.
    Srv,
    /// A and AAAA records, every address on this port.
    A {
        /// The backends' port.
        port: u16,
    },
}

/// Where a backend of a live pool comes from (`/status` `"source"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendSource {
    /// The configuration file (`backends:`, or `--backends` in quick mode).
    #[default]
    Config,
    /// The admin API (`POST /backends`).
    Admin,
    /// The pool's `discovery:` lookups.
    Dns,
}

impl BackendSource {
    /// The name `/status` shows.
    pub fn name(self) -> &'static str {
        match self {
            BackendSource::Config => "config",
            BackendSource::Admin => "admin",
            BackendSource::Dns => "dns",
        }
    }
}

/// A pool's `race:` after defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RacePolicy {
    /// `terminal[c]` is true when status class `c`xx ends the race (index 1..=5).
    pub terminal: [bool; 6],
    /// Zero: ask every backend at once; otherwise one more backend per delay.
    pub hedge_delay: Duration,
    /// `hedge_delay: pNN`: one more backend after the pool's recent
    /// response-head latency at this percentile (`hedge_delay` is then 0).
    pub hedge_percentile: Option<u8>,
    /// Largest request body raced, bytes (default 1 MiB).
    pub max_body: u64,
}

impl RacePolicy {
    /// Whether attempts are added one at a time (fixed or adaptive delay)
    /// rather than all at once.
    pub fn hedged(&self) -> bool {
        !self.hedge_delay.is_zero() || self.hedge_percentile.is_some()
    }

    /// Whether an answer with `status` ends the race.
    pub fn is_terminal(&self, status: u16) -> bool {
        self.terminal
            .get(usize::from(status / 100))
            .copied()
            .unwrap_or(false)
    }
}

/// A failure kind that `retries.on` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The TCP/TLS connection could not be made (nothing was sent).
    ConnectFailure,
    /// The connection broke after the request was sent.
    Reset,
    /// Connect or read timeout.
    Timeout,
    /// The backend answered 502.
    Http502,
    /// The backend answered 503.
    Http503,
    /// The backend answered 504.
    Http504,
}

impl RetryOn {
    /// Every kind with its YAML name.
    pub const ALL: [(&'static str, RetryOn); 6] = [
        ("connect_failure", RetryOn::ConnectFailure),
        ("reset", RetryOn::Reset),
        ("timeout", RetryOn::Timeout),
        ("http_502", RetryOn::Http502),
        ("http_503", RetryOn::Http503),
        ("http_504", RetryOn::Http504),
    ];
}

/// A pool's `retries:` after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries per request, at least 1 (default 3).
    pub attempts: usize,
    /// Failure kinds retried (default connect_failure, reset, timeout).
    pub on: Vec<RetryOn>,
    /// Bodies up to this many bytes are replayable (default 64 KiB, the most
    /// pingora's replay buffer holds).
    pub max_body: u64,
    /// Cap on retries and hedged attempts.
    pub budget: BudgetPolicy,
}

/// A pool's `retries.budget:` after defaults (see [`crate::budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// `ratio` in millionths (default 200 000 = 0.2), kept integral so the
    /// configuration stays comparable.
    pub ratio_ppm: u32,
    /// Retries per second allowed on top of the ratio (default 10).
    pub min_per_second: u32,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy::new(0.2, 10)
    }
}

impl BudgetPolicy {
    /// A budget of `ratio` (clamped to 0..=1000) and `min_per_second`.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        BudgetPolicy {
            ratio_ppm: (ratio.clamp(0.0, 1000.0) * 1e6).round() as u32,
            min_per_second,
        }
    }

    /// The ratio as a number.
    pub fn ratio(&self) -> f64 {
        f64::from(self.ratio_ppm) / 1e6
    }

    /// Retries allowed in a window that saw `first_attempts`.
    pub fn allowed(&self, first_attempts: u64) -> u64 {
        let by_ratio = first_attempts.saturating_mul(u64::from(self.ratio_ppm)) / 1_000_000;
        by_ratio + u64::from(self.min_per_second) * crate::budget::WINDOW_SECS
    }
}

impl RetryPolicy {
    /// Whether `kind` is retried.
    pub fn retries(&self, kind: RetryOn) -> bool {
        self.on.contains(&kind)
    }
}

/// A pool's `passive:` after defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassivePolicy {
    /// Failures within `fail_timeout` that eject a backend; 0 turns it off.
    pub max_fails: u32,
    /// Counting window and ejection time (default 10s).
    pub fail_timeout: Duration,
    /// At most this share of the pool's backends, in percent, is ejected
    /// passively at once; the count is rounded down, so a one-backend pool
    /// is never ejected (default 50, Envoy's `max_ejection_percent`).
    pub max_ejected_percent: u32,
}

impl PassivePolicy {
    /// How many of `members` backends may be ejected at once.
    pub fn max_ejected(&self, members: usize) -> usize {
        members.saturating_mul(self.max_ejected_percent.min(100) as usize) / 100
    }
}

/// A validated backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The URL as written, normalised to `scheme://host:port`.
    pub url: String,
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// Whether to speak TLS to it (`https://`).
    pub tls: bool,
    /// Host name for SNI and certificate checks (`https://` only).
    pub host: String,
    /// Relative weight, at least 1.
    pub weight: usize,
    /// Whether it takes traffic.
    pub enabled: bool,
    /// Display name.
    pub name: String,
    /// Where it comes from.
    pub source: BackendSource,
}

/// Which probe a pool runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP GET of `path`; passes on `expect_status`, or any 2xx when `None`.
    Http {
        /// Path to request.
        path: String,
        /// The one passing status; `None` is any 2xx.
        expect_status: Option<u16>,
    },
    /// No probe: backends are taken as healthy.
    None,
}

/// A pool's active health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The probe.
    pub kind: HealthKind,
    /// Time between probes (default 2s).
    pub interval: Duration,
    /// Connect and read timeout of a probe (default 1s).
    pub timeout: Duration,
    /// Consecutive successes to mark healthy (default 2).
    pub rise: usize,
    /// Consecutive failures to mark unhealthy (default 3).
    pub fall: usize,
}

/// A pool's upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect timeout (default 2s).
    pub connect: Duration,
    /// Per-read timeout (default 30s).
    pub read: Duration,
    /// Deadline for the response head, all attempts included (default
    /// 30s); a body streaming after its head is bounded by `read` only.
    pub request: Duration,
    /// An upgraded (WebSocket) connection closes after this long without
    /// traffic in either direction (default 1h).
    pub idle: Duration,
}
