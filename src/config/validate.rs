//! Raw → validated configuration: defaults that depend on other keys,
//! cross-references (`default_pool`, `fallback`) and every per-value check.
//! All errors are collected; none stops the others from being found.

use super::raw::RawConfig;
use super::validate_pool::pool;
use super::*;
use std::collections::HashSet;
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
            let at = format!("listen[{i}]");
            let limits = super::edge::limits(
                l.header_timeout,
                l.keepalive_timeout,
                l.keepalive_requests,
                l.max_header_size,
                &at,
                &mut errs,
            );
            let tls = l
                .tls
                .as_ref()
                .and_then(|t| super::edge::tls(t, &format!("{at}.tls"), &mut errs));
            listen.push(Listener {
                addr: l.addr.clone(),
                tls,
                limits,
            });
        }
    }
    if raw.listen.is_empty() {
        listen.push(Listener {
            addr: "0.0.0.0:8080".into(),
            tls: None,
            limits: ClientLimits::default(),
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

    if raw.pools.is_empty() {
        // an empty or truncated file would otherwise start a proxy that
        // answers every request 404
        errs.push(ConfigError::new(
            "pools",
            "no pool is configured: a pool with backends (or discovery) is needed",
        ));
    }
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
    let cache = raw
        .cache
        .as_ref()
        .map(|c| super::cache::store(c, &mut errs));
    if cache.is_none() {
        for (name, p) in &raw.pools {
            if p.cache.is_some() {
                errs.push(ConfigError::new(
                    format!("pools.{name}.cache"),
                    "needs the top-level cache block (the response store)",
                ));
            }
        }
    }

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
            cache,
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
