//! The floor of the benchmark: the smallest pingora load balancer, for
//! comparison with `switchyard` in `make bench` (target `pingora`).
//!
//! One `ProxyHttp` that only picks a backend with pingora's round robin; no
//! routing, no added headers, no counters, no health checks. Built with the
//! same allocator, release profile, worker count, runtime (no work stealing)
//! and client read buffer as `switchyard`, so the difference between the two
//! is what switchyard's own per-request work costs.
//!
//! With `--spec-work` it also does the two pieces of switchyard's
//! per-request work that run inside pingora's own code: the SPEC's
//! forwarding fields (`X-Forwarded-For`, `-Proto`, `-Host`, `X-Request-Id`,
//! added by switchyard's own `add_forwarding_headers` through pingora-http's
//! `insert_header`) and the per-peer timeouts of switchyard's default
//! `timeouts:` (connect 2 s, read and write 30 s, pooled idle 60 s, each a
//! pingora timer per read and write). `make bench`'s `instructions` scenario
//! measures both floors, so what is left between this one and switchyard is
//! switchyard's own code.
//!
//! ```text
//! cargo run --release --example pingora_floor -- [--spec-work] LISTEN BACKEND [BACKEND ...]
//! ```

use async_trait::async_trait;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::LoadBalancer;
use pingora_proxy::{ProxyHttp, Session};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    lb: Arc<LoadBalancer<RoundRobin>>,
    /// `--spec-work`: forwarding fields and peer timeouts as switchyard's
    spec_work: bool,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = self
            .lb
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no backend"))?;
        let mut peer = HttpPeer::new(backend, false, String::new());
        if self.spec_work {
            let o = &mut peer.options;
            o.connection_timeout = Some(Duration::from_secs(2));
            o.total_connection_timeout = Some(Duration::from_secs(2));
            o.read_timeout = Some(Duration::from_secs(30));
            o.write_timeout = Some(Duration::from_secs(30));
            o.idle_timeout = Some(Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if self.spec_work {
            switchyard::request::forward::add_forwarding_headers(session, upstream_request)?;
        }
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let spec_work = args.next_if(|a| a == "--spec-work").is_some();
    let (Some(listen), backends) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: pingora_floor [--spec-work] LISTEN BACKEND [BACKEND ...]");
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
    let mut proxy =
        pingora_proxy::http_proxy_service(&server.configuration, Floor { lb, spec_work });
    proxy.add_listener(ListenerConfig::tcp(&listen).l4_buffer(L4BufferSettings {
        read: Some(4096),
        write: None,
    }));
    server.add_service(proxy);
    server.run_forever();
}
