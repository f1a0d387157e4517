//! [`TestBackend`]: an in-process, programmable HTTP/1.1 upstream on hyper,
//! served by the harness runtime on `127.0.0.1:<os port>`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::client::{body_of, header_list, is_chunked, Body};
use super::reply::{Handler, Mode, RecordedRequest, Reply};
use super::{bind_fresh, lock, poll_until, rt};

struct Settings {
    default: Reply,
    healthy: bool,
    handler: Option<Handler>,
}

struct Shared {
    name: String,
    addr: SocketAddr,
    settings: Mutex<Settings>,
    next_conn: AtomicU64,
    open: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    conns: Mutex<HashMap<u64, JoinHandle<()>>>,
}

/// An in-process HTTP/1.1 upstream. It answers, in this order: a
/// [`set_handler`](Self::set_handler) handler's `Some(reply)`; `/health`
/// (200 `ok`, or 503 after `set_healthy(false)`); the default reply (200,
/// the name as body; `set_reply`, `set_delay`, `set_mode`).
/// Every answer carries `x-backend: NAME`; every fully read request is
/// recorded before its reply is carried out. Stopped on drop.
pub struct TestBackend {
    shared: Arc<Shared>,
}

impl TestBackend {
    pub fn start(name: &str) -> TestBackend {
        let listener = bind_fresh();
        let addr = listener.local_addr().expect("local_addr");
        let default = Reply::new(200, name.as_bytes().to_vec());
        let shared = Arc::new(Shared {
            name: name.to_string(),
            addr,
            settings: Mutex::new(Settings { default, healthy: true, handler: None }),
            next_conn: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            acceptor: Mutex::new(None),
            conns: Mutex::new(HashMap::new()),
        });
        listener.set_nonblocking(true).expect("nonblocking listener");
        let _enter = rt().enter();
        spawn_acceptor(&shared, TcpListener::from_std(listener).expect("tokio listener"));
        TestBackend { shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    fn with_settings(&self, f: impl FnOnce(&mut Settings)) {
        f(&mut lock(&self.shared.settings));
    }

    pub fn set_delay(&self, delay: Duration) {
        self.with_settings(|s| s.default.delay = delay);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.with_settings(|s| s.default.mode = mode);
    }

    pub fn set_reply(&self, reply: Reply) {
        self.with_settings(|s| s.default = reply);
    }

    /// `/health` answers 200 (`true`, the default) or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.with_settings(|s| s.healthy = healthy);
    }

    /// A handler consulted first for every request (`/health` too); `None`
    /// falls back to the built-in behaviour. It runs on the harness runtime:
    /// it must not block or send requests.
    pub fn set_handler(&self, f: impl Fn(&RecordedRequest) -> Option<Reply> + Send + Sync + 'static) {
        let h: Handler = Arc::new(f);
        self.with_settings(|s| s.handler = Some(h));
    }

    /// Requests received, `/health` included.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Requests received for `path` (query string ignored).
    pub fn path_count(&self, path: &str) -> usize {
        lock(&self.shared.requests).iter().filter(|r| r.path() == path).count()
    }

    /// Requests for any path but `/health` (proxied traffic).
    pub fn app_count(&self) -> usize {
        self.request_count() - self.path_count("/health")
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn app_requests(&self) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.path() != "/health").collect()
    }

    pub fn last_app_request(&self) -> Option<RecordedRequest> {
        self.app_requests().pop()
    }

    /// Forgets the recorded requests (not the connection counts).
    pub fn reset_counters(&self) {
        lock(&self.shared.requests).clear();
    }

    pub fn open_connections(&self) -> usize {
        self.shared.open.load(SeqCst)
    }

    pub fn connections_accepted(&self) -> usize {
        self.shared.next_conn.load(SeqCst) as usize - 1
    }

    /// Stops listening (connections are then refused) and closes every open
    /// connection; pending delays and hangs end. Idempotent.
    pub fn stop(&self) {
        let acceptor = lock(&self.shared.acceptor).take();
        if let Some(a) = acceptor {
            a.abort();
            let _ = rt().block_on(a); // the listener is closed once this returns
        }
        let conns: Vec<_> = lock(&self.shared.conns).drain().map(|(_, h)| h).collect();
        for c in &conns {
            c.abort();
        }
        for c in conns {
            let _ = rt().block_on(c);
        }
    }

    /// Listens again on the same port after [`stop`](Self::stop) (binding
    /// retried for 5 s). No-op when listening.
    pub fn restart(&self) {
        if lock(&self.shared.acceptor).is_some() {
            return;
        }
        let (addr, mut bound) = (self.shared.addr, None);
        poll_until(Duration::from_secs(5), || {
            bound = std::net::TcpListener::bind(addr).ok();
            bound.is_some()
        });
        let listener = bound.unwrap_or_else(|| panic!("restart {}: cannot bind {addr}", self.shared.name));
        listener.set_nonblocking(true).expect("nonblocking listener");
        let _enter = rt().enter();
        spawn_acceptor(&self.shared, TcpListener::from_std(listener).expect("tokio listener"));
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_acceptor(shared: &Arc<Shared>, listener: TcpListener) {
    let s = Arc::clone(shared);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let id = s.next_conn.fetch_add(1, SeqCst);
            s.open.fetch_add(1, SeqCst);
            let mut conns = lock(&s.conns); // held until inserted: the task removes itself
            conns.insert(id, tokio::spawn(serve_conn(Arc::clone(&s), tcp, id, peer)));
        }
    });
    *lock(&shared.acceptor) = Some(task);
}

/// Decrements the open count and unregisters the connection when its task
/// ends or is aborted.
struct ConnGuard(Arc<Shared>, u64);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        lock(&self.0.conns).remove(&self.1);
        self.0.open.fetch_sub(1, SeqCst);
    }
}

async fn serve_conn(s: Arc<Shared>, tcp: TcpStream, id: u64, peer: SocketAddr) {
    let _guard = ConnGuard(Arc::clone(&s), id);
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    let service = service_fn(move |req| answer(Arc::clone(&s), req, id, peer, fd));
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
}

/// Records one request and carries out its reply; an `Err` makes hyper drop
/// the connection without answering (see [`Mode`]).
async fn answer(
    s: Arc<Shared>,
    req: Request<Incoming>,
    conn_id: u64,
    peer: SocketAddr,
    fd: RawFd,
) -> io::Result<http::Response<Body>> {
    let (head, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes().to_vec();
    let req = RecordedRequest {
        method: head.method.to_string(),
        target: head.uri.to_string(),
        version: format!("{:?}", head.version),
        headers: header_list(&head.headers),
        body,
        chunked: is_chunked(&head.headers),
        conn_id,
        peer,
        at: Instant::now(),
    };
    lock(&s.requests).push(req.clone());
    let (handler, healthy, default) = {
        let st = lock(&s.settings);
        (st.handler.clone(), st.healthy, st.default.clone())
    };
    let reply = handler.and_then(|h| h(&req)).unwrap_or_else(|| match req.path() {
        "/health" if healthy => Reply::new(200, "ok"),
        "/health" => Reply::new(503, "unhealthy"),
        _ => default,
    });
    tokio::time::sleep(reply.delay).await;
    match reply.mode {
        Mode::Respond => {}
        Mode::Hang => std::future::pending::<()>().await,
        mode => {
            if mode == Mode::Reset {
                // Linger 0: hyper's close of the connection sends a RST, not a FIN.
                // SAFETY: hyper holds the connection (and so `fd`) open until this answer ends.
                let sock = unsafe { BorrowedFd::borrow_raw(fd) };
                let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
            }
            return Err(io::Error::other(format!("{mode:?} mode")));
        }
    }
    let mut resp = http::Response::builder().status(reply.status).header("x-backend", &s.name);
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    if reply.close {
        resp = resp.header("connection", "close");
    }
    resp.body(body_of(&reply.body, reply.chunked)).map_err(io::Error::other)
}
