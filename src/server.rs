//! Process assembly: the validated config mapped onto pingora's
//! `ServerConf`, the proxy and control services added to a pingora
//! `Server`, which then owns the lifecycle (daemon, pid file, upgrade
//! socket, SIGQUIT/SIGTERM/SIGINT).
//!
//! Everything that can fail is loaded before (see [`crate::startup`]): once
//! `bootstrap()` has taken the sockets from a running instance (`-u`), this
//! instance must come up.

use crate::access_log;
use crate::admin::AdminApi;
use crate::cli::{Args, EXIT_START};
use crate::config::Config;
use crate::counters::Metrics;
use crate::edge::EdgeApp;
use crate::proxy::Proxy;
use crate::reload::{build_table, Control, Reloader};
use crate::startup::Prepared;
use crate::tls::TlsListeners;
use arc_swap::ArcSwap;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Pingora's `ServerConf` for our `server:` section (one file, not two).
pub fn server_conf(config: &Config, daemon: bool) -> ServerConf {
    let s = &config.server;
    let mut conf = ServerConf {
        version: 1,
        daemon,
        error_log: s.error_log.clone(),
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        user: s.user.clone(),
        group: s.group.clone(),
        threads: s.threads,
        work_stealing: s.work_stealing,
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
        ..ServerConf::default()
    };
    if let Some(n) = s.upstream_keepalive_pool_size {
        conf.upstream_keepalive_pool_size = n;
    }
    conf
}

/// Checks that every listen address can be bound, so a port in use is a
/// clear error (exit 2) rather than a failure inside pingora's service.
/// Skipped on upgrade, where the sockets come from the running instance.
fn preflight(config: &Config) -> Result<(), String> {
    let admin = config.admin.as_ref().map(|a| a.listen.as_str());
    for addr in config.listen.iter().map(|l| l.addr.as_str()).chain(admin) {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(format!("cannot listen on {addr}: {e}"));
        }
    }
    Ok(())
}

/// Read buffer of each client connection on TLS listeners (under rustls).
/// Pingora's default, 64 KiB, is allocated per connection: 10 000 idle
/// keep-alive clients then cost about 1 GiB. 4 KiB measured no slower
/// (README "Performance").
const TLS_READ_BUFFER: usize = 4096;

/// The L4 buffers of a client connection. Plain listeners have no read
/// buffer: the request head is read by the edge straight into its own
/// buffer (`edge::head`), and pingora reads bodies into its own buffers, so
/// a read buffer would only copy the bytes once more and hold 4 KiB in
/// every idle connection. Nor a write buffer: the writes of HTTP/1
/// responses are coalesced above TLS by a buffer held only while a response
/// is written (`proxy::write_buffer`); rustls and h2 write whole records and
/// frames.
fn l4_buffers(tls: bool) -> L4BufferSettings {
    L4BufferSettings {
        read: Some(if tls { TLS_READ_BUFFER } else { 0 }),
        write: Some(0),
    }
}

/// Options of the HTTP/2 side of TLS listeners: an h2 connection idle for
/// the longest `keepalive_timeout` of the TLS listeners is closed
/// (pingora's options are per service, not per listener).
fn h2_options(config: &Config) -> HttpServerOptions {
    let mut o = HttpServerOptions::default();
    o.h2_idle_timeout = config
        .listen
        .iter()
        .filter(|l| l.tls.is_some())
        .map(|l| l.limits.keepalive_timeout)
        .max();
    o
}

/// Builds the pingora server for what [`crate::startup::prepare`] loaded
/// and runs it until shutdown.
pub fn run(args: &Args, prepared: Prepared, path: Option<PathBuf>) -> ExitCode {
    let Prepared {
        file,
        state,
        effective: config,
        access_log,
    } = prepared;
    if !args.upgrade {
        if let Err(e) = preflight(&config) {
            eprintln!("switchyard: {e}");
            return ExitCode::from(EXIT_START);
        }
    }
    access_log::reopen(access_log);
    let opt = Opt {
        upgrade: args.upgrade,
        daemon: args.daemon,
        ..Opt::default()
    };
    let conf = server_conf(&config, args.daemon);
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // certificates are loaded before taking the sockets from a running
    // instance (upgrade), so a bad file never costs the old one its listeners
    let mut tls = TlsListeners::default();
    let mut tls_settings = Vec::new();
    for l in &config.listen {
        tls_settings.push(match &l.tls {
            Some(t) => match tls.add(l, t) {
                Ok(settings) => Some(settings),
                Err(e) => {
                    eprintln!("switchyard: listen {}: {e}", l.addr);
                    return ExitCode::from(EXIT_START);
                }
            },
            None => None,
        });
    }
    server.bootstrap();

    let metrics = Arc::new(Metrics::default());
    let routes = Arc::new(ArcSwap::from_pointee(build_table(config.clone(), None)));
    let reloader = Reloader::new(path, routes.clone(), metrics.clone(), file, state);

    let mut http = pingora_proxy::http_proxy(
        &server.configuration,
        Proxy::new(routes, &server.configuration, metrics.clone()),
    );
    http.server_options = Some(h2_options(&config));
    // client limits per listener and every HTTP/1 connection watched for
    // request targets pingora's parser percent-escapes (EdgeApp, README
    // "Request hygiene"); a retiring instance still answers the connections
    // it holds for a moment (src/linger.rs)
    let grace = Duration::from_secs(config.server.grace_period_seconds);
    let app = EdgeApp::new(http, &config.listen, grace);
    let mut proxy = Service::new("switchyard proxy".to_string(), app);
    for (l, settings) in config.listen.iter().zip(tls_settings) {
        let buffers = l4_buffers(settings.is_some());
        let mut listener = ListenerConfig::tcp(l.addr.as_str()).l4_buffer(buffers);
        if let Some(settings) = settings {
            listener = listener.tls(settings);
        }
        proxy.add_listener(listener);
    }
    let reloader = reloader.with_tls(Arc::new(tls));
    let reloader = Arc::new(reloader);
    let control = background_service(
        "switchyard control",
        Control {
            reloader: reloader.clone(),
        },
    );
    let control = server.add_service(control);
    let proxy = server.add_service(proxy);
    proxy.add_dependency(&control);
    if let Some(a) = &config.admin {
        let mut admin = Service::new(
            "switchyard admin".to_string(),
            AdminApi::new(reloader, metrics, a),
        );
        admin.add_tcp(&a.listen);
        server.add_service(admin).add_dependency(&control);
    }
    log::info!(
        "switchyard starting: {} pool(s), listening on {}",
        config.pools.len(),
        config
            .listen
            .iter()
            .map(|l| l.addr.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.run_forever()
}
