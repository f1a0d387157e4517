//! Validation of backend URLs and health checks.

use super::raw::{RawBackend, RawHealthCheck};
use super::*;
use std::net::ToSocketAddrs;

/// A validated backend from a URL and weight (the admin API's `POST /backends`).
pub fn backend_from_url(url: &str, weight: Option<usize>) -> Result<BackendConfig, String> {
    let raw = RawBackend {
        url: url.to_string(),
        weight,
        enabled: None,
        name: None,
    };
    let mut errs = Vec::new();
    backend(&raw, "", &mut errs).ok_or_else(|| {
        errs.into_iter()
            .map(|e| e.message)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

pub(super) fn backend(
    b: &RawBackend,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<BackendConfig> {
    let (url, host, port, tls) = match parse_url(b.url.trim()) {
        Ok(v) => v,
        Err(m) => {
            errs.push(ConfigError::new(format!("{path}.url"), m));
            return None;
        }
    };
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = match (bare.as_str(), port)
        .to_socket_addrs()
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        _ => {
            errs.push(ConfigError::new(
                format!("{path}.url"),
                format!("cannot resolve host {host:?} of {:?}", b.url),
            ));
            return None;
        }
    };
    let weight = b.weight.unwrap_or(1);
    if weight == 0 || weight > 1000 {
        errs.push(ConfigError::new(
            format!("{path}.weight"),
            format!(
                "weight {weight} is out of range 1..=1000 (use enabled: false to send nothing)"
            ),
        ));
        return None;
    }
    Some(BackendConfig {
        url,
        addr,
        tls,
        name: b.name.clone().unwrap_or_else(|| format!("{host}:{port}")),
        host: bare,
        weight,
        enabled: b.enabled.unwrap_or(true),
        source: BackendSource::Config,
    })
}

pub(super) fn health(
    h: Option<&RawHealthCheck>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> HealthConfig {
    let default = RawHealthCheck::default();
    let h = h.unwrap_or(&default);
    let kind = match h.kind.as_deref().unwrap_or("tcp") {
        "tcp" => HealthKind::Tcp,
        "none" => HealthKind::None,
        "http" => {
            let path_ = h.path.clone().unwrap_or_else(|| "/".into());
            if !path_.starts_with('/') || path_.contains(char::is_whitespace) {
                errs.push(ConfigError::new(
                    format!("{path}.path"),
                    format!("{path_:?} must be an absolute path like /health"),
                ));
            }
            if let Some(s) = h.expect_status {
                if !(100..=599).contains(&s) {
                    errs.push(ConfigError::new(
                        format!("{path}.expect_status"),
                        format!("{s} is not an HTTP status"),
                    ));
                }
            }
            HealthKind::Http {
                path: path_,
                expect_status: h.expect_status,
            }
        }
        other => {
            errs.push(ConfigError::new(
                format!("{path}.type"),
                format!("unknown health check type {other:?} (http, tcp, none)"),
            ));
            HealthKind::Tcp
        }
    };
    if !matches!(kind, HealthKind::Http { .. }) {
        if h.path.is_some() {
            errs.push(ConfigError::new(
                format!("{path}.path"),
                "path needs type: http",
            ));
        }
        if h.expect_status.is_some() {
            errs.push(ConfigError::new(
                format!("{path}.expect_status"),
                "expect_status needs type: http",
            ));
        }
    }
    let cfg = HealthConfig {
        kind,
        interval: h.interval.map_or(Duration::from_secs(2), |d| d.0),
        timeout: h.timeout.map_or(Duration::from_secs(1), |d| d.0),
        rise: h.rise.unwrap_or(2),
        fall: h.fall.unwrap_or(3),
    };
    if cfg.interval < Duration::from_millis(10) {
        errs.push(ConfigError::new(
            format!("{path}.interval"),
            "must be at least 10ms",
        ));
    }
    if cfg.timeout.is_zero() {
        errs.push(ConfigError::new(
            format!("{path}.timeout"),
            "must be greater than 0",
        ));
    }
    for (key, v) in [("rise", cfg.rise), ("fall", cfg.fall)] {
        if v == 0 {
            errs.push(ConfigError::new(
                format!("{path}.{key}"),
                "must be at least 1",
            ));
        }
    }
    cfg
}

/// Parses a backend URL into (normalised url, host, port, tls).
pub(crate) fn parse_url(url: &str) -> Result<(String, String, u16, bool), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL like http://host:port"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => {
            return Err(format!(
                "{url:?}: unsupported scheme {other:?} (http, https)"
            ))
        }
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{url:?} must be scheme://host:port with no path, query or credentials"
        ));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            if h.contains(':') && !h.starts_with('[') {
                (authority.to_string(), default_port) // bare IPv6
            } else {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?;
                (h.to_string(), port)
            }
        }
        _ => (authority.to_string(), default_port),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let scheme = if tls { "https" } else { "http" };
    Ok((format!("{scheme}://{host}:{port}"), host, port, tls))
}
