//! One DNS lookup of a pool's `discovery:` with hickory-resolver: A and
//! AAAA records on a fixed port, or SRV records with their targets'
//! addresses (from the answer's additional section when the server sends
//! them, else looked up) and weights. Truncated UDP answers are retried over
//! TCP by hickory's name server pool.

use crate::config::{DiscoveryConfig, DiscoveryKind};
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Name, ResolveError, Resolver, TokioResolver};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Highest backend weight (the `weight:` limit of the configuration).
const MAX_WEIGHT: usize = 1000;

/// One discovered backend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// Address and port.
    pub addr: SocketAddr,
    /// Relative weight (SRV weight, 1 to 1000; 1 for A/AAAA).
    pub weight: usize,
}

/// What one lookup gave.
#[derive(Debug)]
pub enum Outcome {
    /// Backends, sorted, and how long the answer may be cached (its TTL).
    Ok(Vec<Found>, Duration),
    /// The name exists with no usable record, or does not exist.
    Empty,
    /// The lookup failed (timeout, refused, server failure...).
    Error(String),
}

/// A resolver for `cfg`: its `resolver:` address (UDP, TCP on truncation),
/// or the system's configuration. hickory's cache is off: every lookup asks
/// the server, and the answer's TTL paces the next one.
pub fn resolver(cfg: &DiscoveryConfig) -> Result<TokioResolver, String> {
    let mut builder = match cfg.resolver {
        Some(addr) => {
            let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioConnectionProvider::default(),
            )
        }
        None => Resolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    // EDNS(0) (RFC 6891) for answers beyond 512 bytes over UDP; larger ones
    // come truncated and are asked again over TCP
    opts.edns0 = true;
    if cfg.resolver.is_some() {
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    }
    Ok(builder.build())
}

/// Looks `cfg.dns` up once.
pub async fn lookup(resolver: &TokioResolver, cfg: &DiscoveryConfig) -> Outcome {
    let result = match cfg.kind {
        DiscoveryKind::A { port } => lookup_a(resolver, &cfg.dns, port).await,
        DiscoveryKind::Srv => lookup_srv(resolver, &cfg.dns).await,
    };
    match result {
        Ok((found, _)) if found.is_empty() => Outcome::Empty,
        Ok((mut found, valid_until)) => {
            found.sort();
            found.dedup_by(|a, b| a.addr == b.addr);
            Outcome::Ok(found, valid_until.saturating_duration_since(Instant::now()))
        }
        Err(e) if e.is_no_records_found() => Outcome::Empty,
        Err(e) => Outcome::Error(e.to_string()),
    }
}

async fn lookup_a(
    resolver: &TokioResolver,
    name: &str,
    port: u16,
) -> Result<(Vec<Found>, Instant), ResolveError> {
    // both families: A then AAAA, either may be missing
    let ips = resolver.lookup_ip(name).await?;
    let found = ips
        .iter()
        .map(|ip| Found {
            addr: SocketAddr::new(ip, port),
            weight: 1,
        })
        .collect();
    Ok((found, ips.valid_until()))
}

async fn lookup_srv(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<Found>, Instant), ResolveError> {
    let srv = resolver.lookup(name, RecordType::SRV).await?;
    let mut valid_until = srv.valid_until();
    // target addresses the server sent along (additional section)
    let mut known: HashMap<Name, Vec<IpAddr>> = HashMap::new();
    for r in srv.records() {
        let ip = match r.data() {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        known.entry(r.name().to_lowercase()).or_default().push(ip);
    }
    // RFC 2782: the lowest priority value is tried first; its records are
    // the members (higher values are not used while it has any)
    let records: Vec<_> = srv
        .records()
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(s) if !s.target().is_root() => Some(s.clone()),
            _ => None,
        })
        .collect();
    let Some(top) = records.iter().map(|s| s.priority()).min() else {
        return Ok((Vec::new(), valid_until));
    };
    let mut targets: BTreeMap<Name, Vec<IpAddr>> = BTreeMap::new();
    let mut found = Vec::new();
    for s in records.iter().filter(|s| s.priority() == top) {
        let target = s.target().to_lowercase();
        if !targets.contains_key(&target) {
            let ips = match known.get(&target) {
                Some(ips) => ips.clone(),
                None => match resolver.lookup_ip(target.clone()).await {
                    Ok(l) => {
                        valid_until = valid_until.min(l.valid_until());
                        l.iter().collect()
                    }
                    Err(e) if e.is_no_records_found() => {
                        log::warn!("discovery {name}: SRV target {target} has no address");
                        Vec::new()
                    }
                    Err(e) => return Err(e),
                },
            };
            targets.insert(target.clone(), ips);
        }
        let weight = usize::from(s.weight()).clamp(1, MAX_WEIGHT);
        for ip in targets.get(&target).into_iter().flatten() {
            found.push(Found {
                addr: SocketAddr::new(*ip, s.port()),
                weight,
            });
        }
    }
    Ok((found, valid_until))
}
