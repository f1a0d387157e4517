//! Pool membership from DNS (`pools.NAME.discovery`): one watcher task per
//! discovering pool resolves its name (hickory-resolver, `resolve.rs`), keeps the last good
//! set of backends, and signals a change; the reloader then rebuilds the
//! route table with the file's backends plus the discovered ones, through
//! the same path as a reload. That path gives discovered backends the
//! guarantees of any membership change: a new backend is probed before it
//! takes traffic, a gone one gets no new request while requests in flight
//! on it finish (they hold the table they started with), and a backend that
//! stays keeps its state ([`crate::state`]).
//!
//! Pacing: the next lookup runs when the answer's TTL expires, at least
//! every `interval`, at most once per second, up to 10 % early (jitter, so
//! that instances do not ask in lockstep). A failed or empty lookup keeps
//! the last good set and retries after `interval` (at most 5 s).
//!
//! A watcher outlives reloads that keep its pool's `discovery:` unchanged,
//! with its last good set; a changed or removed `discovery:` stops it.

mod resolve;

pub use resolve::Found;

use crate::config::{BackendConfig, BackendSource, Config, DiscoveryConfig};
use crate::counters::Metrics;
use resolve::Outcome;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// Fastest re-resolution, whatever the TTL says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait before retrying a failed or empty lookup.
const MAX_RETRY: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The watchers of every discovering pool.
pub struct Discovery {
    metrics: Arc<Metrics>,
    watchers: Mutex<HashMap<String, Watcher>>,
    changed: Arc<Notify>,
}

/// What a watcher task shares with the table builder.
#[derive(Default)]
struct Shared {
    /// The last good set; `None` until a lookup gave one.
    set: Mutex<Option<Vec<Found>>>,
    /// Whether the first lookup finished (whatever its result).
    looked_up: AtomicBool,
}

struct Watcher {
    config: DiscoveryConfig,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Discovery {
    /// No watchers yet; lookups are counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Discovery {
            metrics,
            watchers: Mutex::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Starts a watcher for every pool of `file` whose `discovery:` is new
    /// or changed, and stops those of pools that no longer discover.
    /// Must run on the tokio runtime the watchers are to live on.
    pub fn sync(&self, file: &Config) {
        let mut watchers = lock(&self.watchers);
        watchers.retain(|name, w| {
            file.pools
                .get(name)
                .and_then(|p| p.discovery.as_ref())
                .is_some_and(|d| *d == w.config)
        });
        for p in file.pools.values() {
            let Some(d) = &p.discovery else { continue };
            if watchers.contains_key(&p.name) {
                continue;
            }
            let shared = Arc::new(Shared::default());
            let task = tokio::spawn(watch(
                p.name.clone(),
                d.clone(),
                shared.clone(),
                self.metrics.clone(),
                self.changed.clone(),
            ));
            watchers.insert(
                p.name.clone(),
                Watcher {
                    config: d.clone(),
                    shared,
                    task,
                },
            );
        }
    }

    /// `file` with each discovering pool's last good set added to its
    /// backends (an address the pool lists already is not added again).
    pub fn merge(&self, file: &Config) -> Config {
        let mut c = file.clone();
        let watchers = lock(&self.watchers);
        for (name, w) in watchers.iter() {
            let Some(p) = c.pools.get_mut(name) else {
                continue;
            };
            for f in lock(&w.shared.set).iter().flatten() {
                if p.backends.iter().all(|b| b.addr != f.addr) {
                    p.backends.push(discovered(f, &w.config.dns));
                }
            }
        }
        c
    }

    /// Waits for the next change of a discovered set (a change made while
    /// nobody waited is reported to the next waiter).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Waits until every watcher has finished its first lookup, at most `limit`.
    pub async fn first_lookups(&self, limit: Duration) {
        let all_done = || {
            lock(&self.watchers)
                .values()
                .all(|w| w.shared.looked_up.load(Relaxed))
        };
        let _ = tokio::time::timeout(limit, async {
            while !all_done() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

/// The backend configuration of an address discovered from `dns`. Its host
/// (the `Host` of HTTP probes, and part of what makes probe settings the
/// same) is the discovered name, so that the pool's probe setting stays one
/// while its members change.
fn discovered(f: &Found, dns: &str) -> BackendConfig {
    BackendConfig {
        url: format!("http://{}", f.addr),
        addr: f.addr,
        tls: false,
        host: dns.trim_end_matches('.').to_string(),
        weight: f.weight,
        enabled: true,
        name: f.addr.to_string(),
        source: BackendSource::Dns,
    }
}

/// The next wait, up to 10 % early, never under [`MIN_INTERVAL`].
fn jittered(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.9..=1.0))
        .max(MIN_INTERVAL)
}

/// When to look up again after an answer valid for `ttl`.
fn next_lookup(ttl: Duration, interval: Duration) -> Duration {
    ttl.min(interval).max(MIN_INTERVAL)
}

/// The watcher task of pool `pool`.
async fn watch(
    pool: String,
    cfg: DiscoveryConfig,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
) {
    let resolver = match resolve::resolver(&cfg) {
        Ok(r) => r,
        Err(e) => {
            log::error!("pool {pool}: discovery of {} is off: {e}", cfg.dns);
            shared.looked_up.store(true, Relaxed);
            return;
        }
    };
    let retry = cfg.interval.min(MAX_RETRY);
    let mut failing = false;
    loop {
        let (next, result) = match resolve::lookup(&resolver, &cfg).await {
            Outcome::Ok(found, ttl) => {
                if failing {
                    log::info!("pool {pool}: DNS lookup of {} answers again", cfg.dns);
                    failing = false;
                }
                let mut set = lock(&shared.set);
                if set.as_ref() != Some(&found) {
                    log::info!(
                        "pool {pool}: {} resolves to {} backend(s)",
                        cfg.dns,
                        found.len()
                    );
                    *set = Some(found);
                    changed.notify_one();
                }
                (next_lookup(ttl, cfg.interval), 0)
            }
            outcome => {
                let kept = lock(&shared.set).as_ref().map_or(0, Vec::len);
                let (why, result) = match outcome {
                    Outcome::Error(e) => (format!("failed: {e}"), 2),
                    _ => ("gave no record".to_string(), 1),
                };
                let msg = format!(
                    "pool {pool}: DNS lookup of {} {why}; keeping the last good set ({kept} backend(s))",
                    cfg.dns
                );
                if failing {
                    log::debug!("{msg}");
                } else {
                    log::warn!("{msg}");
                    failing = true;
                }
                (retry, result)
            }
        };
        metrics.discovery_lookups.add(&pool, result);
        shared.looked_up.store(true, Relaxed);
        tokio::time::sleep(jittered(next)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_follows_the_ttl_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(next_lookup(s(60), s(5)), s(5));
        assert_eq!(next_lookup(s(2), s(5)), s(2));
        assert_eq!(next_lookup(s(0), s(5)), s(1));
        for _ in 0..100 {
            let j = jittered(s(10));
            assert!(j >= s(9) && j <= s(10), "{j:?}");
            assert!(jittered(s(1)) == s(1));
        }
    }
}
