//! Validation of one pool: strategy and hash key, timeouts, retries,
//! passive ejection and racing (backends and health checks:
//! [`super::validate_backend`]). Every error is collected.

use super::raw::RawPool;
use super::units::HedgeDelay;
use super::validate_backend::{backend, health};
use super::*;
use std::collections::BTreeSet;

pub(super) fn pool(
    name: &str,
    p: &RawPool,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<PoolConfig> {
    let before = errs.len();
    let strategy = match p.strategy.as_deref().unwrap_or("round_robin") {
        "round_robin" => Strategy::RoundRobin,
        "least_conn" => Strategy::LeastConn,
        "random" => Strategy::Random,
        "peak_ewma" => Strategy::PeakEwma,
        "consistent" => Strategy::Consistent(hash_key(p.hash_key.as_deref(), path, errs)),
        other => {
            errs.push(ConfigError::new(
                format!("{path}.strategy"),
                format!("unknown strategy {other:?} (round_robin, least_conn, random, consistent, peak_ewma)"),
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
    let discovery = p
        .discovery
        .as_ref()
        .and_then(|d| super::validate_discovery::discovery(d, &format!("{path}.discovery"), errs));
    if p.backends.is_empty() && p.discovery.is_none() {
        errs.push(ConfigError::new(
            format!("{path}.backends"),
            "a pool needs at least one backend (or `discovery:`)",
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
    if p.discovery.is_some() && backends.iter().any(|b| b.tls) {
        errs.push(ConfigError::new(
            format!("{path}.backends"),
            "discovered backends speak http://; a pool with `discovery:` takes http:// backends only",
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
        idle: t.idle.map_or(Duration::from_secs(3600), |d| d.0),
    };
    for (key, d) in [
        ("connect", timeouts.connect),
        ("read", timeouts.read),
        ("request", timeouts.request),
        ("idle", timeouts.idle),
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
        max_ejected_percent: p
            .passive
            .as_ref()
            .and_then(|x| x.max_ejected_percent)
            .unwrap_or(50),
    };
    if passive.max_ejected_percent > 100 {
        errs.push(ConfigError::new(
            format!("{path}.passive.max_ejected_percent"),
            format!(
                "{} is not a percentage (0 to 100)",
                passive.max_ejected_percent
            ),
        ));
    }
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
    let cache = p
        .cache
        .as_ref()
        .map(|c| super::cache::pool_cache(c, &format!("{path}.cache"), errs));
    let rate_limit = p
        .rate_limit
        .as_ref()
        .and_then(|r| super::edge::rate_limit(r, &format!("{path}.rate_limit"), errs));
    let tls = p.tls.as_ref().map_or_else(UpstreamTls::default, |t| {
        super::edge::upstream_tls(t, &format!("{path}.tls"), errs)
    });
    if p.tls.is_some() && !backends.iter().any(|b| b.tls) {
        errs.push(ConfigError::new(
            format!("{path}.tls"),
            "applies to https:// backends only and this pool has none",
        ));
    }
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
        cache,
        rate_limit,
        tls,
        discovery,
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
        hedge_delay: match r.hedge_delay {
            Some(HedgeDelay::Fixed(d)) => d,
            _ => Duration::ZERO,
        },
        hedge_percentile: match r.hedge_delay {
            Some(HedgeDelay::Percentile(p)) => Some(p),
            _ => None,
        },
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
        budget: budget(r.budget.as_ref(), path, errs),
    }
}

fn budget(
    b: Option<&super::raw::RawBudget>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> BudgetPolicy {
    let Some(b) = b else {
        return BudgetPolicy::default();
    };
    let ratio = b.ratio.unwrap_or(0.2);
    if !(0.0..=1000.0).contains(&ratio) {
        errs.push(ConfigError::new(
            format!("{path}.budget.ratio"),
            format!("must be a number from 0 to 1000 (retries per first attempt), got {ratio}"),
        ));
    }
    BudgetPolicy::new(
        if ratio.is_finite() { ratio } else { 0.2 },
        b.min_per_second.unwrap_or(10),
    )
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
