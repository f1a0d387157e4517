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

#[cfg(test)]
mod tests {
    use super::super::{parse, ConfigError};
    use super::*;

    fn pool(discovery: &str, backends: &str) -> String {
        format!(
            "listen: [{{addr: 127.0.0.1:8080}}]\n\
             pools:\n  web:\n{backends}    discovery: {discovery}\n"
        )
    }

    fn errors(yaml: &str) -> Vec<ConfigError> {
        parse(yaml, "t.yaml").expect_err("should fail").errors
    }

    #[test]
    fn discovery_alone_or_beside_backends_with_defaults() {
        let c = parse(&pool("{dns: web.service.consul}", ""), "t.yaml").expect("valid");
        let d = c.pools["web"].discovery.clone().expect("discovery");
        assert_eq!(d.kind, DiscoveryKind::Srv);
        assert_eq!(d.resolver, None);
        assert_eq!(d.interval, Duration::from_secs(5));
        assert!(c.pools["web"].backends.is_empty());
        let c = parse(
            &pool(
                "{dns: web.ns.svc, type: a, port: 8080, resolver: 10.0.0.10, interval: 30s}",
                "    backends: [{url: http://127.0.0.1:9000}]\n",
            ),
            "t.yaml",
        )
        .expect("valid");
        let d = c.pools["web"].discovery.clone().expect("discovery");
        assert_eq!(d.kind, DiscoveryKind::A { port: 8080 });
        assert_eq!(d.resolver, Some("10.0.0.10:53".parse().expect("addr")));
        assert_eq!(d.interval, Duration::from_secs(30));
        assert_eq!(c.pools["web"].backends[0].source, BackendSource::Config);
    }

    #[test]
    fn bad_discovery_is_reported_by_key() {
        for (d, key, needle) in [
            ("{type: srv}", "dns", "needs `dns:`"),
            ("{dns: 10.0.0.1}", "dns", "not a DNS name"),
            ("{dns: a.b, type: a}", "port", "needs `port:`"),
            ("{dns: a.b, port: 80}", "port", "SRV records carry the port"),
            ("{dns: a.b, type: mx}", "type", "unknown discovery type"),
            (
                "{dns: a.b, resolver: nameserver}",
                "resolver",
                "not IP or IP:port",
            ),
            ("{dns: a.b, interval: 500ms}", "interval", "at least 1s"),
        ] {
            let errs = errors(&pool(d, ""));
            assert!(
                errs.iter()
                    .any(|e| e.path == format!("pools.web.discovery.{key}")
                        && e.message.contains(needle)),
                "{d}: {errs:?}"
            );
        }
        let errs = errors(&pool(
            "{dns: a.b}",
            "    backends: [{url: https://127.0.0.1:9000}]\n",
        ));
        assert!(
            errs.iter()
                .any(|e| e.message.contains("http:// backends only")),
            "{errs:?}"
        );
    }
}
