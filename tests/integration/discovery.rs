//! Pool membership from DNS (`discovery:`), against a real DNS server
//! (hickory-server, in process) on 127.0.0.1 with an OS-chosen port whose
//! records each test changes: records added and removed, SRV ports and
//! weights, A records, a stopped server, TTL pacing, `/status` sources and
//! the admin API's refusal.

use crate::common::*;

use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::{Catalog, ZoneType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const ZONE: &str = "sy.test.";

// ---------------------------------------------------------------------------
// the DNS server
// ---------------------------------------------------------------------------

/// Queries seen: (name, type, when, over TCP).
type QueryLog = Arc<Mutex<Vec<(String, RecordType, Instant, bool)>>>;

/// A catalog that logs every query it answers.
struct Logging {
    catalog: Catalog,
    log: QueryLog,
}

#[async_trait::async_trait]
impl RequestHandler for Logging {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, response: R) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            let q = info.query;
            self.log.lock().unwrap().push((
                q.name().to_string(),
                q.query_type(),
                Instant::now(),
                info.protocol == Protocol::Tcp,
            ));
        }
        self.catalog.handle_request(request, response).await
    }
}

/// An authoritative server for `sy.test.` on UDP and TCP 127.0.0.1:PORT.
struct DnsServer {
    addr: SocketAddr,
    zone: Arc<InMemoryAuthority>,
    log: QueryLog,
    rt: Option<tokio::runtime::Runtime>,
}

fn name(n: &str) -> Name {
    Name::from_str(n).expect("name")
}

impl DnsServer {
    fn start() -> DnsServer {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let origin = name(ZONE);
        let zone = Arc::new(InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false));
        let soa = SOA::new(name("ns.sy.test."), name("admin.sy.test."), 1, 60, 60, 60, 1);
        rt.block_on(zone.upsert(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1));
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let log = QueryLog::default();
        let handler = Logging { catalog, log: log.clone() };
        let addr = rt.block_on(async {
            // one port for UDP and TCP: retry while the TCP port is taken
            let (udp, tcp, addr) = loop {
                let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("udp");
                let addr = udp.local_addr().expect("addr");
                if !claim_port(addr.port()) {
                    continue;
                }
                if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
                    break (udp, tcp, addr);
                }
            };
            let mut server = ServerFuture::new(handler);
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5));
            tokio::spawn(async move {
                let _ = server.block_until_done().await;
            });
            addr
        });
        DnsServer { addr, zone, log, rt: Some(rt) }
    }

    /// Replaces the records of `owner`/`rtype` with `records` (data, TTL).
    fn set(&self, owner: &str, rtype: RecordType, ttl: u32, records: Vec<RData>) {
        let rt = self.rt.as_ref().expect("running");
        let owner = name(owner);
        rt.block_on(async {
            self.zone.records_mut().await.remove(&RrKey::new(LowerName::new(&owner), rtype));
            for data in records {
                self.zone.upsert(Record::from_rdata(owner.clone(), ttl, data), 1).await;
            }
        });
    }

    /// SRV records of `owner` on `target`, one per (port, weight).
    fn set_srv(&self, owner: &str, ttl: u32, target: &str, ports: &[(u16, u16)]) {
        let data = ports.iter().map(|&(port, weight)| RData::SRV(SRV::new(0, weight, port, name(target)))).collect();
        self.set(owner, RecordType::SRV, ttl, data);
    }

    fn set_a(&self, owner: &str, ttl: u32, ips: &[Ipv4Addr]) {
        let data = ips.iter().map(|ip| RData::A(A(*ip))).collect();
        self.set(owner, RecordType::A, ttl, data);
    }

    /// When `owner` was asked for `rtype`, oldest first.
    fn queries(&self, owner: &str, rtype: RecordType) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, t, _, _)| n.eq_ignore_ascii_case(owner) && *t == rtype)
            .map(|(_, _, at, _)| *at)
            .collect()
    }

    /// How many queries came over TCP.
    fn tcp_queries(&self) -> usize {
        self.log.lock().unwrap().iter().filter(|q| q.3).count()
    }

    /// Stops answering (UDP and TCP sockets closed).
    fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

const SRV_NAME: &str = "_http._tcp.web.sy.test.";
const HOST: &str = "hosts.sy.test.";

/// Pool `web` discovering `SRV_NAME` from `dns` (no static backends unless
/// `statics` lists some), probed over HTTP every 200 ms; `extra` is more
/// YAML appended (other pools, `admin:`).
fn config(dns: &DnsServer, statics: &[String], interval: &str, extra: &str) -> String {
    let backends = if statics.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = statics.iter().map(|u| format!("{{url: \"{u}\"}}")).collect();
        format!("    backends: [{}]\n", list.join(", "))
    };
    format!(
        "listen: [{{addr: \"{{listen}}\"}}]\n\
         admin: {{listen: \"{{admin}}\"}}\n\
         routing: {{default_pool: web}}\n\
         pools:\n  web:\n{backends}\
         \x20   discovery: {{dns: \"{SRV_NAME}\", type: srv, resolver: \"{}\", interval: {interval}}}\n\
         \x20   health_check: {{type: http, path: /health, interval: 200ms, timeout: 1s, rise: 1, fall: 1}}\n\
         {extra}",
        dns.addr
    )
}

fn admin(sy: &Switchyard, method: &str, path: &str, body: &str) -> Response {
    request(sy.admin_addr(), method, path, &[("Content-Type", "application/json")], body.as_bytes())
}

/// `url` → `source` of pool `pool`'s backends in `/status`.
fn members(sy: &Switchyard, pool: &str) -> Vec<(String, String)> {
    let st = admin(sy, "GET", "/status", "").json();
    let mut v: Vec<(String, String)> = st["pools"][pool]["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| (b["url"].as_str().unwrap_or("").to_string(), b["source"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Sends `n` requests to the proxy; returns how many got 200.
fn send(sy: &Switchyard, n: usize) -> usize {
    (0..n).filter(|_| try_get(sy.addr(), "/", &[]).is_ok_and(|r| r.status == 200)).count()
}

fn counter(sy: &Switchyard, series: &str) -> u64 {
    let text = admin(sy, "GET", "/metrics", "").text();
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

/// A record replaced: the new backend is probed before it takes traffic;
/// the removed one gets no new request, while a slow request already on it
/// completes.
#[test]
fn records_added_and_removed_change_membership() {
    let dns = DnsServer::start();
    let [a, b] = backends(["a", "b"]);
    dns.set_a(HOST, 1, &[Ipv4Addr::LOCALHOST]);
    dns.set_srv(SRV_NAME, 1, HOST, &[(a.addr().port(), 1)]);
    let sy = Switchyard::start(&config(&dns, &[], "5s", ""));
    assert!(
        poll_until(Duration::from_secs(10), || send(&sy, 1) == 1),
        "a never took traffic: {:?}",
        members(&sy, "web")
    );
    assert_eq!(members(&sy, "web"), vec![(a.url(), "dns".to_string())]);
    assert_eq!(b.request_count(), 0);

    // a slow request on a (the only member) ...
    a.set_delay(Duration::from_secs(5));
    let proxy = sy.addr();
    let slow = thread::spawn(move || {
        let mut c = Client::connect(proxy).expect("connect");
        c.set_timeout(Duration::from_secs(20)).expect("timeout");
        c.get("/slow", &[])
    });
    assert!(poll_until(Duration::from_secs(5), || a.path_count("/slow") == 1), "the slow request did not reach a");
    // ... then the records move from a to b
    dns.set_srv(SRV_NAME, 1, HOST, &[(b.addr().port(), 1)]);
    assert!(
        poll_until(Duration::from_secs(4), || members(&sy, "web") == vec![(b.url(), "dns".to_string())]),
        "a was not replaced by b: {:?}",
        members(&sy, "web")
    );
    assert!(!slow.is_finished(), "the slow request ended early");
    let a_now = a.app_count();
    assert_eq!(send(&sy, 10), 10);
    assert_eq!(a.app_count(), a_now, "a removed but still chosen");
    assert_eq!(b.app_count(), 10);
    let first = b.requests().first().map(|r| r.target.clone());
    assert_eq!(first.as_deref(), Some("/health"), "b served before its probe");
    let r = slow.join().expect("thread").expect("slow response");
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
}

/// With the DNS server gone, lookups fail (counted as errors) and the pool
/// keeps serving from the last good set.
#[test]
fn dns_server_stopped_keeps_the_last_good_set() {
    let mut dns = DnsServer::start();
    let [a, b] = backends(["a", "b"]);
    dns.set_a(HOST, 1, &[Ipv4Addr::LOCALHOST]);
    dns.set_srv(SRV_NAME, 1, HOST, &[(a.addr().port(), 1), (b.addr().port(), 1)]);
    let sy = Switchyard::start(&config(&dns, &[], "1s", ""));
    assert!(poll_until(Duration::from_secs(10), || members(&sy, "web").len() == 2 && send(&sy, 1) == 1));
    dns.stop();
    let errors = "switchyard_discovery_lookups_total{pool=\"web\",result=\"error\"}";
    assert!(poll_until(Duration::from_secs(15), || counter(&sy, errors) >= 2), "no failed lookup counted");
    assert!(counter(&sy, "switchyard_discovery_lookups_total{pool=\"web\",result=\"ok\"}") >= 1);
    assert_eq!(members(&sy, "web").len(), 2);
    let (a0, b0) = (a.app_count(), b.app_count());
    assert_eq!(send(&sy, 20), 20);
    assert!(a.app_count() > a0 && b.app_count() > b0, "traffic left the last good set");
}

/// Two SRV records on one host, different ports: two backends weighted by
/// SRV weight, shown with `source: dns` beside the file's backend and an
/// A-discovered pool; adding to or removing from a DNS pool is refused.
#[test]
fn srv_ports_weights_sources_and_admin_refusal() {
    let dns = DnsServer::start();
    let [a, b, c] = backends(["a", "b", "c"]);
    dns.set_a(HOST, 5, &[Ipv4Addr::LOCALHOST]);
    dns.set_a("api.sy.test.", 5, &[Ipv4Addr::LOCALHOST]);
    dns.set_srv(SRV_NAME, 5, HOST, &[(a.addr().port(), 3), (b.addr().port(), 1)]);
    let api = format!(
        "  api:\n    discovery: {{dns: api.sy.test, type: a, port: {}, resolver: \"{}\"}}\n\
         \x20   health_check: {{type: none}}\n",
        c.addr().port(),
        dns.addr
    );
    let sy = Switchyard::start(&config(&dns, &[c.url()], "5s", &api));
    let want = {
        let mut v = vec![(a.url(), "dns".to_string()), (b.url(), "dns".to_string()), (c.url(), "config".to_string())];
        v.sort();
        v
    };
    assert!(poll_until(Duration::from_secs(10), || members(&sy, "web") == want), "{:?}", members(&sy, "web"));
    let st = admin(&sy, "GET", "/status", "").json();
    let weight = |url: &str| {
        st["pools"]["web"]["backends"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["url"] == url))
            .map(|x| x["weight"].clone())
    };
    assert_eq!(weight(&a.url()), Some(3.into()));
    assert_eq!(weight(&b.url()), Some(1.into()));
    assert_eq!(members(&sy, "api"), vec![(c.url(), "dns".to_string())]);
    assert!(poll_until(Duration::from_secs(5), || { get(sy.addr(), "/", &[("App-Name", "api")]).text() == "c" }));

    let del = admin(&sy, "DELETE", "/backends", &format!("{{\"pool\": \"web\", \"url\": \"{}\"}}", a.url()));
    assert_eq!(del.status, 409, "{}", del.text());
    assert!(del.text().contains("DNS"), "{}", del.text());
    let add = admin(&sy, "POST", "/backends", "{\"pool\": \"web\", \"url\": \"http://127.0.0.1:1\"}");
    assert_eq!(add.status, 409, "{}", add.text());
    assert_eq!(members(&sy, "web"), want);
}

/// A 1 s TTL is re-resolved within 2 s; a 60 s TTL is not re-resolved
/// before `interval` (3 s), and is at about `interval`.
#[test]
fn lookups_follow_the_ttl_within_interval() {
    let dns = DnsServer::start();
    let a = TestBackend::start("a");
    let slow_name = "_http._tcp.slow.sy.test.";
    dns.set_a(HOST, 60, &[Ipv4Addr::LOCALHOST]);
    dns.set_srv(SRV_NAME, 1, HOST, &[(a.addr().port(), 1)]);
    dns.set_srv(slow_name, 60, HOST, &[(a.addr().port(), 1)]);
    let slow = format!(
        "  slow:\n    discovery: {{dns: \"{slow_name}\", resolver: \"{}\", interval: 3s}}\n\
         \x20   health_check: {{type: none}}\n",
        dns.addr
    );
    let _sy = Switchyard::start(&config(&dns, &[], "10s", &slow));

    let fast = || dns.queries(SRV_NAME, RecordType::SRV);
    assert!(poll_until(Duration::from_secs(10), || fast().len() >= 2));
    let q = fast();
    let gap = q[1] - q[0];
    assert!(gap <= Duration::from_secs(2), "1 s TTL re-resolved after {gap:?}");
    assert!(gap >= Duration::from_millis(900), "re-resolved after {gap:?}, under 1 s");

    let slow_q = || dns.queries(slow_name, RecordType::SRV);
    assert!(poll_until(Duration::from_secs(10), || slow_q().len() >= 2));
    let q = slow_q();
    let gap = q[1] - q[0];
    // interval 3 s, up to 10 % earlier for jitter
    assert!(
        gap >= Duration::from_millis(2650) && gap <= Duration::from_millis(3800),
        "60 s TTL with interval 3s re-resolved after {gap:?}"
    );
}

/// A reload that keeps the pool's `discovery:` keeps its discovered set,
/// even while the DNS server is down.
#[test]
fn reload_keeps_the_discovered_set() {
    let mut dns = DnsServer::start();
    let a = TestBackend::start("a");
    dns.set_a(HOST, 1, &[Ipv4Addr::LOCALHOST]);
    dns.set_srv(SRV_NAME, 1, HOST, &[(a.addr().port(), 1)]);
    let yaml = config(&dns, &[], "5s", "");
    let sy = Switchyard::start(&yaml);
    assert!(poll_until(Duration::from_secs(10), || send(&sy, 1) == 1));
    dns.stop();
    sy.write_config(&format!("{yaml}    timeouts: {{read: 20s}}\n"));
    let r = admin(&sy, "POST", "/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(members(&sy, "web"), vec![(a.url(), "dns".to_string())]);
    assert_eq!(send(&sy, 5), 5);
}

/// An SRV answer too large for a UDP datagram comes truncated; the lookup
/// is retried over TCP and every record is used.
#[test]
fn truncated_udp_answer_is_retried_over_tcp() {
    let dns = DnsServer::start();
    dns.set_a(HOST, 5, &[Ipv4Addr::LOCALHOST]);
    let ports: Vec<(u16, u16)> = (0..40).map(|i| (20001 + i, 1)).collect();
    dns.set_srv(SRV_NAME, 5, HOST, &ports);
    let yaml = config(&dns, &[], "5s", "").replace(
        "health_check: {type: http, path: /health, interval: 200ms, timeout: 1s, rise: 1, fall: 1}",
        "health_check: {type: none}",
    );
    let sy = Switchyard::start(&yaml);
    assert!(
        poll_until(Duration::from_secs(10), || members(&sy, "web").len() == 40),
        "{} members",
        members(&sy, "web").len()
    );
    assert!(dns.tcp_queries() >= 1, "no query over TCP");
}

/// A backend whose record stays keeps its state (counters) when another
/// one joins; the newcomer's probe asks for the discovered name as `Host`.
#[test]
fn a_backend_that_stays_keeps_its_state() {
    let dns = DnsServer::start();
    let [a, b] = backends(["a", "b"]);
    dns.set_a(HOST, 1, &[Ipv4Addr::LOCALHOST]);
    dns.set_srv(SRV_NAME, 1, HOST, &[(a.addr().port(), 1)]);
    let sy = Switchyard::start(&config(&dns, &[], "5s", ""));
    assert!(poll_until(Duration::from_secs(10), || send(&sy, 1) == 1));
    assert_eq!(send(&sy, 4), 4);
    let requests = |url: &str| {
        let st = admin(&sy, "GET", "/status", "").json();
        st["pools"]["web"]["backends"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["url"] == url))
            .and_then(|x| x["requests"].as_u64())
    };
    assert_eq!(requests(&a.url()), Some(5));
    dns.set_srv(SRV_NAME, 1, HOST, &[(a.addr().port(), 1), (b.addr().port(), 1)]);
    assert!(poll_until(Duration::from_secs(5), || members(&sy, "web").len() == 2));
    assert_eq!(requests(&a.url()), Some(5), "a's state was reset");
    let probe = b.requests().into_iter().find(|r| r.target == "/health");
    let host = probe.and_then(|r| r.headers.iter().find(|(n, _)| n == "host").map(|(_, v)| v.clone()));
    assert_eq!(host.as_deref(), Some("_http._tcp.web.sy.test"));
}
