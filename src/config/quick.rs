//! Quick mode (`--backends LIST`): a configuration built from a
//! comma-separated list of URLs instead of a YAML file.
//!
//! `fms-http://h:8001` puts the URL in pool `fms`; a URL without a `KEY-`
//! prefix goes to pool `default`, which is then the default pool. Pools get
//! round robin and TCP health checks.

use super::raw::{RawBackend, RawConfig, RawListen, RawPool};
use super::{validate, Config, ConfigError, ConfigErrors};

/// Builds a validated configuration from `list`, listening on `0.0.0.0:port`.
pub fn from_backends(list: &str, port: u16) -> Result<Config, ConfigErrors> {
    let mut raw = RawConfig::default();
    let mut errors = Vec::new();
    for (i, item) in list.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            continue;
        }
        let Some((left, rest)) = item.split_once("://") else {
            errors.push(ConfigError::new(
                format!("backends[{i}]"),
                format!("{item:?} is not a URL like http://host:port or KEY-http://host:port"),
            ));
            continue;
        };
        let (pool, scheme) = match left.rsplit_once('-') {
            Some((key, scheme)) if !key.is_empty() => (key.to_string(), scheme),
            _ => ("default".to_string(), left),
        };
        raw.pools
            .entry(pool)
            .or_insert_with(|| RawPool {
                strategy: None,
                hash_key: None,
                backends: Vec::new(),
                health_check: None,
                timeouts: Default::default(),
                fallback: None,
                retries: None,
                passive: None,
                race: None,
                cache: None,
                rate_limit: None,
                tls: None,
                discovery: None,
            })
            .backends
            .push(RawBackend {
                url: format!("{scheme}://{rest}"),
                weight: None,
                enabled: None,
                name: None,
            });
    }
    if raw.pools.is_empty() && errors.is_empty() {
        errors.push(ConfigError::new("backends", "the list names no backend"));
    }
    if raw.pools.contains_key("default") {
        raw.routing.default_pool = Some("default".into());
    }
    raw.listen.push(RawListen {
        addr: format!("0.0.0.0:{port}"),
        tls: None,
        header_timeout: None,
        keepalive_timeout: None,
        keepalive_requests: None,
        max_header_size: None,
    });
    let fail = |errors| ConfigErrors {
        source: "--backends".into(),
        errors,
    };
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    validate(raw).map_err(fail)
}
