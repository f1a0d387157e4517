//! The edge settings of the configuration: TLS termination and client
//! limits of each `listen[]` entry, and a pool's `rate_limit`. Raw (serde)
//! and validated types side by side, with their checks.
//!
//! Certificate files are read and checked here (readable PEM, a key that
//! matches the certificate), so `-t`, the start and a reload all report a
//! bad file by name instead of failing inside pingora (whose TLS builder
//! panics on one).

use super::units::{Dur, Size};
use super::ConfigError;
use crate::certs;
use http::HeaderName;
use serde::Deserialize;
use std::time::Duration;

/// `listen[].tls` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain of the default certificate.
    pub cert: String,
    /// PEM private key of the default certificate.
    pub key: String,
    /// More certificates, chosen by the client's SNI.
    #[serde(default)]
    pub sni: Vec<RawCertPair>,
    /// Offer HTTP/2 by ALPN (default true).
    pub http2: Option<bool>,
}

/// One certificate and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
}

/// A pool's `rate_limit` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained requests per second per key (may be fractional).
    pub rps: f64,
    /// Requests a key may send at once above the rate (default: `rps`
    /// rounded up, at least 1).
    pub burst: Option<u32>,
    /// `client_ip` (default) or `header:NAME`.
    pub key: Option<String>,
    /// Keys tracked at most (default 100000); the least recently seen are
    /// forgotten first.
    pub max_keys: Option<usize>,
}

/// A pool's `tls` (its `https://` backends) as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// Verify the backends' certificates (default true).
    pub verify: Option<bool>,
    /// PEM file of the CAs to trust instead of the system's roots.
    pub ca: Option<String>,
    /// SNI (and name to verify) for every backend instead of its own host.
    pub sni: Option<String>,
}

/// How a pool's `https://` backends are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Verify certificate chains and host names (default true).
    pub verify: bool,
    /// CA bundle replacing the system's roots; `None` uses the system's.
    pub ca: Option<String>,
    /// SNI and verified name for every backend; `None` uses each backend's
    /// own host name.
    pub sni: Option<String>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            verify: true,
            ca: None,
            sni: None,
        }
    }
}

/// Checks a pool's `tls` (`path` is `pools.NAME.tls`).
pub fn upstream_tls(r: &RawUpstreamTls, path: &str, errs: &mut Vec<ConfigError>) -> UpstreamTls {
    if let Some(ca) = &r.ca {
        if let Err(e) = certs::load_ca(ca) {
            errs.push(ConfigError::new(format!("{path}.ca"), e.to_string()));
        }
    }
    if let Some(sni) = &r.sni {
        if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
            errs.push(ConfigError::new(
                format!("{path}.sni"),
                format!("{sni:?} is not a valid host name"),
            ));
        }
    }
    UpstreamTls {
        verify: r.verify.unwrap_or(true),
        ca: r.ca.clone(),
        sni: r.sni.clone(),
    }
}

/// TLS termination of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The default certificate (served when no SNI certificate matches).
    pub default: CertPair,
    /// Certificates chosen by SNI against their names, in file order.
    pub sni: Vec<CertPair>,
    /// Whether HTTP/2 is offered by ALPN (default true).
    pub http2: bool,
}

/// Paths of one certificate chain and its private key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// Certificate chain file.
    pub cert: String,
    /// Private key file.
    pub key: String,
}

/// Limits on the clients of one listener (nginx's `client_header_timeout`,
/// `keepalive_timeout`, `keepalive_requests`, `large_client_header_buffers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time allowed to receive a whole request head, from the connection's
    /// start (first request) or from the request's first byte (later ones);
    /// default 10s (HAProxy's recommended `timeout http-request`).
    pub header_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection
    /// (default 75s, nginx's `keepalive_timeout`).
    pub keepalive_timeout: Duration,
    /// Requests served on one connection before it is closed (default 1000,
    /// nginx's `keepalive_requests`).
    pub keepalive_requests: u32,
    /// Largest request head (request line and headers), bytes; a larger one
    /// is answered 431 (default 32 KiB).
    pub max_header_size: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            keepalive_requests: 1000,
            max_header_size: 32 * 1024,
        }
    }
}

/// The most `max_header_size` may be: pingora's own limit of a request head.
pub const MAX_HEADER_SIZE_LIMIT: u64 = 1024 * 1024 - 1;

/// What a pool's rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The client's IP address.
    ClientIp,
    /// A request header's value; requests without it count by client IP.
    Header(HeaderName),
}

/// A pool's token bucket per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Time to earn one token (1 / rps).
    pub interval: Duration,
    /// Bucket size: requests a key may send at once.
    pub burst: u32,
    /// What requests are counted by.
    pub key: RateKey,
    /// Keys tracked at most.
    pub max_keys: usize,
}

impl RateLimit {
    /// Sustained requests per second.
    pub fn rps(&self) -> f64 {
        1.0 / self.interval.as_secs_f64()
    }
}

/// Checks `listen[i].tls`: every file readable, a certificate and a
/// matching key in each pair.
pub fn tls(raw: &RawTls, path: &str, errs: &mut Vec<ConfigError>) -> Option<ListenerTls> {
    let before = errs.len();
    let mut check = |pair: CertPair, at: String| {
        if let Err(e) = certs::load(&pair.cert, &pair.key) {
            // `at` names the pair's `cert`; a key at fault is named instead
            let at = match at.strip_suffix(".cert") {
                Some(pair_path) if e.key => format!("{pair_path}.key"),
                _ => at,
            };
            errs.push(ConfigError::new(at, e.to_string()));
        }
        pair
    };
    let default = check(
        CertPair {
            cert: raw.cert.clone(),
            key: raw.key.clone(),
        },
        format!("{path}.cert"),
    );
    let sni = raw
        .sni
        .iter()
        .enumerate()
        .map(|(i, p)| {
            check(
                CertPair {
                    cert: p.cert.clone(),
                    key: p.key.clone(),
                },
                format!("{path}.sni[{i}].cert"),
            )
        })
        .collect();
    (errs.len() == before).then_some(ListenerTls {
        default,
        sni,
        http2: raw.http2.unwrap_or(true),
    })
}

/// Checks the client limits of `listen[i]` (`path` is `listen[i]`).
pub fn limits(
    header_timeout: Option<Dur>,
    keepalive_timeout: Option<Dur>,
    keepalive_requests: Option<u32>,
    max_header_size: Option<Size>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> ClientLimits {
    let d = ClientLimits::default();
    let limits = ClientLimits {
        header_timeout: header_timeout.map_or(d.header_timeout, |x| x.0),
        keepalive_timeout: keepalive_timeout.map_or(d.keepalive_timeout, |x| x.0),
        keepalive_requests: keepalive_requests.unwrap_or(d.keepalive_requests),
        max_header_size: max_header_size.map_or(d.max_header_size, |x| x.0 as usize),
    };
    if limits.header_timeout.is_zero() {
        errs.push(ConfigError::new(
            format!("{path}.header_timeout"),
            "must be greater than 0",
        ));
    }
    if limits.keepalive_requests == 0 {
        errs.push(ConfigError::new(
            format!("{path}.keepalive_requests"),
            "must be at least 1",
        ));
    }
    if let Some(s) = max_header_size {
        if !(1024..=MAX_HEADER_SIZE_LIMIT).contains(&s.0) {
            errs.push(ConfigError::new(
                format!("{path}.max_header_size"),
                format!("must be between 1KiB and {MAX_HEADER_SIZE_LIMIT}B (pingora's limit)"),
            ));
        }
    }
    limits
}

/// Checks a pool's `rate_limit` (`path` is `pools.NAME.rate_limit`).
pub fn rate_limit(r: &RawRateLimit, path: &str, errs: &mut Vec<ConfigError>) -> Option<RateLimit> {
    let before = errs.len();
    // at most one token a day, at most a million a second
    if !(r.rps.is_finite() && (1.0 / 86_400.0..=1_000_000.0).contains(&r.rps)) {
        errs.push(ConfigError::new(
            format!("{path}.rps"),
            "must be a number between 0.0000116 (one a day) and 1000000",
        ));
    }
    let burst = r.burst.unwrap_or_else(|| (r.rps.ceil() as u32).max(1));
    if burst == 0 {
        errs.push(ConfigError::new(
            format!("{path}.burst"),
            "must be at least 1",
        ));
    }
    let key = match r.key.as_deref().unwrap_or("client_ip") {
        "client_ip" => RateKey::ClientIp,
        k => match k.strip_prefix("header:") {
            Some(h) => match HeaderName::from_bytes(h.trim().as_bytes()) {
                Ok(h) => RateKey::Header(h),
                Err(_) => {
                    errs.push(ConfigError::new(
                        format!("{path}.key"),
                        format!("{h:?} is not a valid header name"),
                    ));
                    RateKey::ClientIp
                }
            },
            None => {
                errs.push(ConfigError::new(
                    format!("{path}.key"),
                    format!("unknown key {k:?} (client_ip, header:NAME)"),
                ));
                RateKey::ClientIp
            }
        },
    };
    let max_keys = r.max_keys.unwrap_or(100_000);
    if !(16..=100_000_000).contains(&max_keys) {
        errs.push(ConfigError::new(
            format!("{path}.max_keys"),
            "must be between 16 and 100000000",
        ));
    }
    (errs.len() == before).then(|| RateLimit {
        interval: Duration::from_secs_f64(1.0 / r.rps),
        burst,
        key,
        max_keys,
    })
}
