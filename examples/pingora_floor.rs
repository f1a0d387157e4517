//! The floor of the benchmark: the smallest pingora load balancer, for
//! comparison with `switchyard` in `make bench` (target `pingora`).
//!
//! One `ProxyHttp` that only picks a backend with pingora's round robin; no
//! routing, no added headers, no counters, no health checks. Built with the
//! same allocator, release profile, worker count, runtime (no work stealing)
//! and client read buffer as `switchyard`, so the difference between the two
//! is what switchyard's own per-request work costs.
//!
//! ```text
//! cargo run --release --example pingora_floor -- LISTEN BACKEND [BACKEND ...]
//! ```

use async_trait::async_trait;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::LoadBalancer;
use pingora_proxy::{ProxyHttp, Session};
use std::sync::Arc;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = self
            .0
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no backend"))?;
        Ok(Box::new(HttpPeer::new(backend, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), backends) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: pingora_floor LISTEN BACKEND [BACKEND ...]");
        std::process::exit(1);
    };
    let lb = match LoadBalancer::<RoundRobin>::try_from_iter(backends) {
        Ok(lb) => Arc::new(lb),
        Err(e) => {
            eprintln!("pingora_floor: bad backend address: {e}");
            std::process::exit(1);
        }
    };
    let conf = ServerConf {
        threads: 1,
        // as switchyard's default for one thread: a current-thread runtime
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Floor(lb));
    proxy.add_listener(ListenerConfig::tcp(&listen).l4_buffer(L4BufferSettings {
        read: Some(4096),
        write: None,
    }));
    server.add_service(proxy);
    server.run_forever();
}
