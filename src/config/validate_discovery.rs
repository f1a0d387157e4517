//! Validation of a pool's `discovery:` (membership from DNS): the name,
//! the record type and port, the resolver address and the interval.

use super::raw::RawDiscovery;
use super::*;
use std::net::{IpAddr, SocketAddr};

/// Default longest time between lookups.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

pub(super) fn discovery(
    d: &RawDiscovery,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<DiscoveryConfig> {
    let before = errs.len();
    let dns = d.dns.as_deref().map(str::trim).unwrap_or("");
    if dns.is_empty() {
        errs.push(ConfigError::new(
            format!("{path}.dns"),
            "discovery needs `dns:`, the name to resolve",
        ));
    } else if dns.parse::<IpAddr>().is_ok() || dns.contains(['/', ' ', ':']) {
        errs.push(ConfigError::new(
            format!("{path}.dns"),
            format!("{dns:?} is not a DNS name"),
        ));
    }
    let kind = match (d.kind.as_deref().unwrap_or("srv"), d.port) {
        ("srv", None) => Some(DiscoveryKind::Srv),
        ("srv", Some(_)) => {
            errs.push(ConfigError::new(
                format!("{path}.port"),
                "SRV records carry the port; `port:` is for `type: a`",
            ));
            None
        }
        ("a", Some(port)) if port > 0 => Some(DiscoveryKind::A { port }),
        ("a", _) => {
            errs.push(ConfigError::new(
                format!("{path}.port"),
                "`type: a` needs `port:` (1 to 65535), the backends' port",
            ));
            None
        }
        (other, _) => {
            errs.push(ConfigError::new(
                format!("{path}.type"),
                format!("unknown discovery type {other:?} (srv, a)"),
            ));
            None
        }
    };
    let resolver = match d.resolver.as_deref().map(str::trim) {
        None => None,
        Some(r) => match r
            .parse::<SocketAddr>()
            .or_else(|_| r.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(ConfigError::new(
                    format!("{path}.resolver"),
                    format!("{r:?} is not IP or IP:port (e.g. 127.0.0.1:8600)"),
                ));
                None
            }
        },
    };
    let interval = d.interval.map_or(DEFAULT_INTERVAL, |i| i.0);
    if interval < Duration::from_secs(1) {
        errs.push(ConfigError::new(
            format!("{path}.interval"),
            "must be at least 1s (lookups run at most once per second)",
        ));
    }
    let kind = kind?;
    (errs.len() == before).then(|| DiscoveryConfig {
        dns: dns.to_string(),
        kind,
        resolver,
        interval,
    })
}
