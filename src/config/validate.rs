//! Raw → validated configuration: defaults that depend on other keys,
//! cross-references (`default_pool`, `fallback`) and every per-value check.
//! All errors are collected; none stops the others from being found.

use super::raw::{RawBackend, RawConfig, RawHealthCheck, RawPool};
use super::*;
use std::collections::{BTreeSet, HashSet};
use std::net::ToSocketAddrs;

/// Checks `raw` and returns the validated [`Config`], or every problem found.
pub fn validate(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Vec::new();

    let server = server(&raw, &mut errs);
    let mut listen = Vec::new();
    let mut seen_listen = HashSet::new();
    for (i, l) in raw.listen.iter().enumerate() {
        let path = format!("listen[{i}].addr");
        if l.addr
            .to_socket_addrs()
            .map(|mut a| a.next().is_none())
            .unwrap_or(true)
        {
            errs.push(ConfigError::new(
                path,
                format!("{:?} is not host:port", l.addr),
            ));
        } else if !seen_listen.insert(l.addr.clone()) {
            errs.push(ConfigError::new(
                path,
                format!("{:?} is listed twice", l.addr),
            ));
        } else {
            listen.push(Listener {
                addr: l.addr.clone(),
            });
        }
    }
    if raw.listen.is_empty() {
        listen.push(Listener {
            addr: "0.0.0.0:8080".into(),
        });
    }

    let header_text = raw.routing.header.as_deref().unwrap_or("App-Name");
    let header = HeaderName::from_bytes(header_text.trim().as_bytes()).unwrap_or_else(|_| {
        errs.push(ConfigError::new(
            "routing.header",
            format!("{header_text:?} is not a valid header name"),
        ));
        HeaderName::from_static("app-name")
    });

    let mut pools = BTreeMap::new();
    let mut seen_names: HashSet<String> = HashSet::new();
    for (name, p) in &raw.pools {
        let path = format!("pools.{name}");
        if name.trim().is_empty() || name.trim() != name {
            errs.push(ConfigError::new(
                &path,
                "a pool name must be non-empty with no surrounding spaces",
            ));
        }
        if !seen_names.insert(name.to_ascii_lowercase()) {
            errs.push(ConfigError::new(
                &path,
                "pool names are matched case-insensitively and this one clashes with another",
            ));
        }
        if let Some(pool) = pool(name, p, &path, &mut errs) {
            pools.insert(name.clone(), pool);
        }
    }

    let default_pool = raw.routing.default_pool.clone();
    if let Some(d) = &default_pool {
        if !raw.pools.contains_key(d) {
            errs.push(ConfigError::new(
                "routing.default_pool",
                format!("unknown pool {d:?}{}", known(&raw)),
            ));
        }
    }
    for (name, p) in &raw.pools {
        if let Some(f) = &p.fallback {
            if !raw.pools.contains_key(f) {
                errs.push(ConfigError::new(
                    format!("pools.{name}.fallback"),
                    format!("unknown pool {f:?}{}", known(&raw)),
                ));
            }
        }
    }
    fallback_cycles(&raw, &mut errs);

    if !server.underscores_in_headers {
        // such headers are dropped before routing (README "Request hygiene")
        let dropped = |key: String, name: &HeaderName| {
            ConfigError::new(
                key,
                format!(
                    "{:?} contains `_`: request headers with `_` in their name are dropped \
                     unless server.underscores_in_headers is true",
                    name.as_str()
                ),
            )
        };
        if header.as_str().contains('_') {
            errs.push(dropped("routing.header".into(), &header));
        }
        for (name, p) in &pools {
            if let Strategy::Consistent(HashKey::Header(h)) = &p.strategy {
                if h.as_str().contains('_') {
                    errs.push(dropped(format!("pools.{name}.hash_key"), h));
                }
            }
        }
    }

    let log = log(&raw, &mut errs);
    let admin = raw.admin.as_ref().map(|a| admin(a, &mut errs));

    if errs.is_empty() {
        Ok(Config {
            server,
            listen,
            routing: Routing {
                header,
                default_pool,
            },
            pools,
            log,
            admin,
        })
    } else {
        Err(errs)
    }
}

fn admin(a: &super::raw::RawAdmin, errs: &mut Vec<ConfigError>) -> AdminSettings {
    let addr = a.listen.to_socket_addrs().ok().and_then(|mut x| x.next());
    if addr.is_none() {
        errs.push(ConfigError::new(
            "admin.listen",
            format!("{:?} is not host:port", a.listen),
        ));
    }
    let token = match (&a.token_env, &a.token_file) {
        (Some(_), Some(_)) => {
            errs.push(ConfigError::new(
                "admin",
                "set token_env or token_file, not both",
            ));
            None
        }
        (Some(var), None) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => {
                errs.push(ConfigError::new(
                    "admin.token_env",
                    format!("environment variable {var} is unset or empty"),
                ));
                None
            }
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Ok(_) => {
                errs.push(ConfigError::new(
                    "admin.token_file",
                    format!("{path} is empty"),
                ));
                None
            }
            Err(e) => {
                errs.push(ConfigError::new(
                    "admin.token_file",
                    format!("cannot read {path}: {e}"),
                ));
                None
            }
        },
        (None, None) => {
            if addr.is_some_and(|a| !a.ip().is_loopback()) {
                errs.push(ConfigError::new(
                    "admin.listen",
                    "without token_env or token_file the admin API must listen on a loopback address",
                ));
            }
            None
        }
    };
    AdminSettings {
        listen: a.listen.clone(),
        token,
        state_file: a.state_file.clone(),
    }
}

fn known(raw: &RawConfig) -> String {
    let names: Vec<&str> = raw.pools.keys().map(String::as_str).collect();
    if names.is_empty() {
        " (no pools are defined)".into()
    } else {
        format!(" (pools: {})", names.join(", "))
    }
}

fn server(raw: &RawConfig, errs: &mut Vec<ConfigError>) -> ServerSettings {
    let s = &raw.server;
    // like nginx's `worker_processes auto` and HAProxy's nbthread default
    let threads = s
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        errs.push(ConfigError::new("server.threads", "must be at least 1"));
    }
    ServerSettings {
        threads: threads.max(1),
        pid_file: s
            .pid_file
            .clone()
            .unwrap_or_else(|| "/tmp/switchyard.pid".into()),
        upgrade_sock: s
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| "/tmp/switchyard_upgrade.sock".into()),
        error_log: s.error_log.clone(),
        grace_period_seconds: s.grace_period_seconds.unwrap_or(5),
        graceful_shutdown_timeout_seconds: s.graceful_shutdown_timeout_seconds.unwrap_or(5),
        user: s.user.clone(),
        group: s.group.clone(),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        // One thread: a single current-thread runtime is cheaper per request
        // (README "Performance"). Several: pingora's no-steal runtime lets a
        // pooled upstream connection idle on one thread while a request on
        // another wants it, and the hand-over often fails ("failed to acquire
        // reusable stream"), opening a new connection; stealing avoids that.
        work_stealing: s.work_stealing.unwrap_or(threads > 1),
        underscores_in_headers: s.underscores_in_headers.unwrap_or(false),
    }
}

fn pool(name: &str, p: &RawPool, path: &str, errs: &mut Vec<ConfigError>) -> Option<PoolConfig> {
    let before = errs.len();
    let strategy = match p.strategy.as_deref().unwrap_or("round_robin") {
        "round_robin" => Strategy::RoundRobin,
        "least_conn" => Strategy::LeastConn,
        "random" => Strategy::Random,
        "consistent" => Strategy::Consistent(hash_key(p.hash_key.as_deref(), path, errs)),
        other => {
            errs.push(ConfigError::new(
                format!("{path}.strategy"),
                format!("unknown strategy {other:?} (round_robin, least_conn, random, consistent)"),
            ));
            Strategy::RoundRobin
        }
    };
    if p.hash_key.is_some() && !matches!(strategy, Strategy::Consistent(_)) {
        errs.push(ConfigError::new(
            format!("{path}.hash_key"),
            "hash_key needs strategy: consistent",
        ));
    }
    if p.backends.is_empty() {
        errs.push(ConfigError::new(
            format!("{path}.backends"),
            "a pool needs at least one backend",
        ));
    }
    let mut backends = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, b) in p.backends.iter().enumerate() {
        let bpath = format!("{path}.backends[{i}]");
        if let Some(b) = backend(b, &bpath, errs) {
            if !seen.insert(b.addr) {
                errs.push(ConfigError::new(
                    format!("{bpath}.url"),
                    format!("duplicate backend {} in pool {name:?}", b.url),
                ));
            } else {
                backends.push(b);
            }
        }
    }
    if backends.iter().any(|b| b.tls) && backends.iter().any(|b| !b.tls) {
        errs.push(ConfigError::new(
            format!("{path}.backends"),
            "mixes http:// and https:// backends; use one scheme per pool",
        ));
    }
    let health = health(
        p.health_check.as_ref(),
        &format!("{path}.health_check"),
        errs,
    );
    let t = &p.timeouts;
    let timeouts = Timeouts {
        connect: t.connect.map_or(Duration::from_secs(2), |d| d.0),
        read: t.read.map_or(Duration::from_secs(30), |d| d.0),
        request: t.request.map_or(Duration::from_secs(30), |d| d.0),
    };
    for (key, d) in [
        ("connect", timeouts.connect),
        ("read", timeouts.read),
        ("request", timeouts.request),
    ] {
        if d.is_zero() {
            errs.push(ConfigError::new(
                format!("{path}.timeouts.{key}"),
                "must be greater than 0",
            ));
        }
    }
    let retries = retries(p.retries.as_ref(), &format!("{path}.retries"), errs);
    let passive = PassivePolicy {
        max_fails: p.passive.as_ref().and_then(|x| x.max_fails).unwrap_or(1),
        fail_timeout: p
            .passive
            .as_ref()
            .and_then(|x| x.fail_timeout)
            .map_or(Duration::from_secs(10), |d| d.0),
    };
    if passive.max_fails > 0 && passive.fail_timeout.is_zero() {
        errs.push(ConfigError::new(
            format!("{path}.passive.fail_timeout"),
            "must be greater than 0",
        ));
    }
    let race = p
        .race
        .as_ref()
        .map(|r| race(r, &format!("{path}.race"), errs));
    (errs.len() == before).then(|| PoolConfig {
        name: name.to_string(),
        strategy,
        backends,
        health,
        timeouts,
        fallback: p.fallback.clone(),
        retries,
        passive,
        race,
    })
}

fn race(r: &super::raw::RawRace, path: &str, errs: &mut Vec<ConfigError>) -> RacePolicy {
    let mut terminal = [false, true, true, true, true, false];
    if let Some(list) = &r.terminal {
        terminal = [false; 6];
        for (i, class) in list.iter().enumerate() {
            match class.as_bytes() {
                [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                    terminal[usize::from(d - b'0')] = true
                }
                _ => errs.push(ConfigError::new(
                    format!("{path}.terminal[{i}]"),
                    format!("{class:?} is not a status class (1xx, 2xx, 3xx, 4xx, 5xx)"),
                )),
            }
        }
    }
    RacePolicy {
        terminal,
        hedge_delay: r.hedge_delay.map_or(Duration::ZERO, |d| d.0),
        max_body: r.max_body.map_or(1 << 20, |s| s.0),
    }
}

/// Largest replayable body: pingora's request replay buffer.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

fn retries(
    r: Option<&super::raw::RawRetries>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> RetryPolicy {
    let default = super::raw::RawRetries::default();
    let r = r.unwrap_or(&default);
    let attempts = r.attempts.unwrap_or(3);
    if attempts == 0 {
        errs.push(ConfigError::new(
            format!("{path}.attempts"),
            "must be at least 1 (1 = no retries)",
        ));
    }
    let on = match &r.on {
        None => vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::Timeout],
        Some(list) => {
            let mut on = Vec::new();
            for (i, name) in list.iter().enumerate() {
                match RetryOn::ALL.iter().find(|(n, _)| n == name) {
                    Some((_, k)) if !on.contains(k) => on.push(*k),
                    Some(_) => {}
                    None => errs.push(ConfigError::new(
                        format!("{path}.on[{i}]"),
                        format!(
                            "unknown retry condition {name:?} (connect_failure, reset, timeout, http_502, http_503, http_504)"
                        ),
                    )),
                }
            }
            on
        }
    };
    let max_body = r.max_body.map_or(MAX_REPLAY_BODY, |s| s.0);
    if max_body > MAX_REPLAY_BODY {
        errs.push(ConfigError::new(
            format!("{path}.max_body"),
            format!("at most 64KiB (the size of the replay buffer), got {max_body} bytes"),
        ));
    }
    RetryPolicy {
        attempts: attempts.max(1),
        on,
        max_body,
    }
}

fn hash_key(key: Option<&str>, path: &str, errs: &mut Vec<ConfigError>) -> HashKey {
    match key.unwrap_or("client_ip") {
        "client_ip" => HashKey::ClientIp,
        "path" => HashKey::Path,
        other => match other.strip_prefix("header:").map(str::trim) {
            Some(h) => HeaderName::from_bytes(h.as_bytes())
                .map(HashKey::Header)
                .unwrap_or_else(|_| {
                    errs.push(ConfigError::new(
                        format!("{path}.hash_key"),
                        format!("{h:?} is not a valid header name"),
                    ));
                    HashKey::ClientIp
                }),
            None => {
                errs.push(ConfigError::new(
                    format!("{path}.hash_key"),
                    format!("unknown hash_key {other:?} (client_ip, header:NAME, path)"),
                ));
                HashKey::ClientIp
            }
        },
    }
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

fn backend(b: &RawBackend, path: &str, errs: &mut Vec<ConfigError>) -> Option<BackendConfig> {
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
    })
}

fn health(h: Option<&RawHealthCheck>, path: &str, errs: &mut Vec<ConfigError>) -> HealthConfig {
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

fn fallback_cycles(raw: &RawConfig, errs: &mut Vec<ConfigError>) {
    let mut reported = HashSet::new();
    for start in raw.pools.keys() {
        let mut chain = vec![start.as_str()];
        let mut cur = start.as_str();
        while let Some(next) = raw.pools.get(cur).and_then(|p| p.fallback.as_deref()) {
            if !raw.pools.contains_key(next) {
                break;
            }
            if let Some(pos) = chain.iter().position(|c| *c == next) {
                let mut cycle: Vec<&str> = chain[pos..].to_vec();
                let mut key = cycle.clone();
                key.sort_unstable();
                if reported.insert(key) {
                    cycle.push(next);
                    errs.push(ConfigError::new(
                        format!("pools.{}.fallback", chain[pos]),
                        format!("fallback cycle: {}", cycle.join(" -> ")),
                    ));
                }
                break;
            }
            chain.push(next);
            cur = next;
        }
    }
}

fn log(raw: &RawConfig, errs: &mut Vec<ConfigError>) -> LogSettings {
    let access = match raw.log.access.as_deref() {
        None | Some("off") => AccessLog::Off,
        Some("stdout") => AccessLog::Stdout,
        Some("") => {
            errs.push(ConfigError::new(
                "log.access",
                "must be stdout, off or a file path",
            ));
            AccessLog::Off
        }
        Some(p) => AccessLog::File(p.to_string()),
    };
    let json = match raw.log.format.as_deref() {
        None | Some("json") => true,
        Some("text") => false,
        Some(other) => {
            errs.push(ConfigError::new(
                "log.format",
                format!("unknown format {other:?} (json, text)"),
            ));
            true
        }
    };
    LogSettings { access, json }
}
