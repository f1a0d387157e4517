//! Routing: from the `App-Name` header (or the configured header) to a pool.
//!
//! A [`RouteTable`] is the live, immutable snapshot of the configuration and
//! its pools; building one does no I/O. Requests hold the table they started with; a reload publishes
//! a new one (see [`crate::reload`]).

use crate::access_log::AccessLogger;
use crate::config::Config;
use crate::pool::Pool;
use crate::state::Registry;
use http::HeaderName;
use std::sync::Arc;

/// The live configuration: routing rules and built pools.
pub struct RouteTable {
    /// The configuration the table was built from.
    pub config: Arc<Config>,
    header: HeaderName,
    pools: Vec<Arc<Pool>>,
    default_pool: Option<Arc<Pool>>,
    /// The access log's line format (`None` when off).
    pub access_log: Option<AccessLogger>,
    /// Where the pools' backend state lives (shared with later tables).
    pub registry: Arc<Registry>,
}

impl RouteTable {
    /// Assembles a table from `config`, its built `pools`, the registry
    /// their backend state lives in and the opened access log.
    pub fn new(
        config: Arc<Config>,
        pools: Vec<Arc<Pool>>,
        registry: Arc<Registry>,
        access_log: Option<AccessLogger>,
    ) -> Self {
        let default_pool = config
            .routing
            .default_pool
            .as_deref()
            .and_then(|d| pools.iter().find(|p| p.name() == d).cloned());
        RouteTable {
            header: config.routing.header.clone(),
            config,
            pools,
            default_pool,
            access_log,
            registry,
        }
    }

    /// The request header that names the pool.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The pool for a header value: matched ASCII-case-insensitively after
    /// trimming; a missing or unknown value gives the default pool, if any.
    pub fn resolve(&self, value: Option<&[u8]>) -> Option<&Arc<Pool>> {
        value
            .map(|v| v.trim_ascii())
            .filter(|v| !v.is_empty())
            .and_then(|v| {
                self.pools
                    .iter()
                    .find(|p| p.name().as_bytes().eq_ignore_ascii_case(v))
            })
            .or(self.default_pool.as_ref())
    }

    /// The pool named exactly `name`.
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name() == name)
    }

    /// The default pool, if configured.
    pub fn default_pool(&self) -> Option<&Arc<Pool>> {
        self.default_pool.as_ref()
    }

    /// All pools, by name.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// `pool` followed by its `fallback` chain (acyclic by validation; the
    /// walk is bounded anyway).
    pub fn chain<'a>(&'a self, pool: &'a Arc<Pool>) -> impl Iterator<Item = &'a Arc<Pool>> + 'a {
        let mut next = Some(pool);
        std::iter::from_fn(move || {
            let cur = next?;
            next = cur.config.fallback.as_deref().and_then(|f| self.pool(f));
            Some(cur)
        })
        .take(self.pools.len().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let config = crate::config::parse(
            "routing: { default_pool: web }
pools:
  web: { backends: [ { url: 'http://127.0.0.1:1' } ], fallback: Api, health_check: { type: none } }
  Api: { backends: [ { url: 'http://127.0.0.1:2' } ], health_check: { type: none } }
",
            "t",
        )
        .unwrap();
        let registry = Arc::new(Registry::default());
        let pools = config
            .pools
            .values()
            .map(|p| Arc::new(Pool::build(p, None, &registry)))
            .collect();
        RouteTable::new(Arc::new(config), pools, registry, None)
    }

    #[test]
    fn header_matching_is_trimmed_and_case_insensitive() {
        let t = table();
        assert_eq!(t.resolve(Some(b"  aPI ")).unwrap().name(), "Api");
        assert_eq!(t.resolve(Some(b"WEB")).unwrap().name(), "web");
        assert_eq!(t.resolve(Some(b"nope")).unwrap().name(), "web");
        assert_eq!(t.resolve(None).unwrap().name(), "web");
        assert_eq!(t.resolve(Some(b"")).unwrap().name(), "web");
    }

    #[test]
    fn fallback_chain() {
        let t = table();
        let web = t.pool("web").unwrap().clone();
        let names: Vec<&str> = t.chain(&web).map(|p| p.name()).collect();
        assert_eq!(names, ["web", "Api"]);
    }
}
