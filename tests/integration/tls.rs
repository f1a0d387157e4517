//! TLS termination: ALPN (h2 and HTTP/1.1), SNI certificate choice, live
//! certificate reload, bad certificate files, and what a TLS port does
//! with plain HTTP. Certificates are generated per test with rcgen; the
//! client is rustls (blocking) or curl for HTTP/2.

use crate::common::*;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Accepts any server certificate: the tests check which one was served.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection with its negotiated ALPN and the server's certificate.
struct Tls {
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl Tls {
    fn connect(addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> std::io::Result<Tls> {
        let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(sni.to_string()).expect("server name");
        let conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
        let tcp = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
        tcp.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Tls { stream })
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.conn.alpn_protocol().map(|p| p.to_vec())
    }

    fn cert(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().expect("peer certificate")[0].to_vec()
    }

    /// One HTTP/1.1 GET on this connection (kept alive); status and body.
    fn get(&mut self, path: &str) -> std::io::Result<(u16, String)> {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: sy.test\r\n\r\n")?;
        self.stream.flush()?;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&tmp[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                    return Ok((status, body[..len].to_string()));
                }
            }
        }
        Err(std::io::Error::other(format!("incomplete response: {}", String::from_utf8_lossy(&buf))))
    }
}

/// A self-signed certificate for `names`, written to `dir/stem.{crt,key}`;
/// returns the certificate's DER.
fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> Vec<u8> {
    let c = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("rcgen");
    std::fs::write(dir.join(format!("{stem}.crt")), c.cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), c.key_pair.serialize_pem()).unwrap();
    c.cert.der().to_vec()
}

/// A config with a plain listener `{listen}`, a TLS listener on `tls_port`
/// with `tls` as its `tls:` mapping, an admin listener and pool `web`.
fn tls_config(tls_port: u16, tls: &str, backend: &str) -> String {
    format!(
        "listen:\n  - addr: \"{{listen}}\"\n  - addr: \"127.0.0.1:{tls_port}\"\n    tls: {tls}\n\
         admin: {{listen: \"{{admin}}\"}}\n\
         routing: {{default_pool: web}}\n\
         pools:\n  web:\n    backends: [{{url: \"{backend}\"}}]\n    health_check: {{type: none}}\n"
    )
}

fn tls_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn https_is_served_over_h2_and_http11_by_alpn() {
    let b = TestBackend::start("b1");
    let dir = TempDir::new();
    write_cert(dir.path(), "site", &["localhost"]);
    let (port, plain_h1) = (free_port(), free_port());
    let d = dir.path().display();
    let mut yaml = tls_config(port, &format!("{{cert: \"{d}/site.crt\", key: \"{d}/site.key\"}}"), &b.url());
    yaml = yaml.replace(
        "admin:",
        &format!("  - addr: \"127.0.0.1:{plain_h1}\"\n    tls: {{cert: \"{d}/site.crt\", key: \"{d}/site.key\", http2: false}}\nadmin:"),
    );
    yaml.push_str("log: {access: \"{dir}/access.log\"}\n");
    let sy = Switchyard::start(&yaml);

    // ALPN: h2 preferred, HTTP/1.1 when the client offers only that
    let tls = Tls::connect(tls_addr(port), "localhost", &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(tls.alpn().as_deref(), Some(&b"h2"[..]), "{}", sy.logs());
    let mut tls = Tls::connect(tls_addr(port), "localhost", &[b"http/1.1"]).unwrap();
    assert_eq!(tls.alpn().as_deref(), Some(&b"http/1.1"[..]));
    let (status, _) = tls.get("/h1").unwrap();
    assert_eq!(status, 200, "{}", sy.logs());
    let seen = b.last_app_request().expect("backend saw the request");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    // http2: false offers no h2
    let tls = Tls::connect(tls_addr(plain_h1), "localhost", &[b"h2", b"http/1.1"]).unwrap();
    assert_ne!(tls.alpn().as_deref(), Some(&b"h2"[..]));

    // a real HTTP/2 request, proxied to the HTTP/1.1 backend
    let out = Command::new("curl")
        .args(["-sk", "--http2", "-o", "-", "-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://localhost:{port}/over-h2"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n2 200"), "curl: {text}\n{}", sy.logs());
    let seen = b.last_app_request().unwrap();
    assert_eq!(seen.target, "/over-h2");
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    // logged like an HTTP/1.1 request
    let logged = || std::fs::read_to_string(sy.dir().join("access.log")).unwrap_or_default();
    assert!(poll_until(Duration::from_secs(5), || logged().contains("\"/over-h2\"")), "{}", logged());
    let line = logged().lines().find(|l| l.contains("/over-h2")).unwrap().to_string();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["uri"], "/over-h2");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["pool"], "web");
    // the plain listener still says http
    assert_eq!(get(sy.addr(), "/plain", &[]).status, 200);
    assert_eq!(b.last_app_request().unwrap().header("x-forwarded-proto"), Some("http"));
}

#[test]
fn sni_picks_the_certificate_whose_names_match() {
    let b = TestBackend::start("b1");
    let dir = TempDir::new();
    let default = write_cert(dir.path(), "default", &["default.test"]);
    let a = write_cert(dir.path(), "a", &["a.test"]);
    let wild = write_cert(dir.path(), "wild", &["*.b.test"]);
    let port = free_port();
    let d = dir.path().display();
    let sy = Switchyard::start(&tls_config(
        port,
        &format!(
            "{{cert: \"{d}/default.crt\", key: \"{d}/default.key\", sni: [{{cert: \"{d}/a.crt\", key: \"{d}/a.key\"}}, {{cert: \"{d}/wild.crt\", key: \"{d}/wild.key\"}}]}}"
        ),
        &b.url(),
    ));
    let served = |sni: &str| Tls::connect(tls_addr(port), sni, &[b"http/1.1"]).unwrap().cert();
    assert!(served("a.test") == a, "a.test got another certificate\n{}", sy.logs());
    assert!(served("A.TEST") == a);
    assert!(served("www.b.test") == wild);
    assert!(served("x.y.b.test") == default);
    assert!(served("other.test") == default);
    let mut c = Tls::connect(tls_addr(port), "a.test", &[b"http/1.1"]).unwrap();
    assert_eq!(c.get("/").unwrap().0, 200);
}

#[test]
fn certificate_replaced_on_disk_is_served_after_sighup_and_a_bad_one_is_refused() {
    let b = TestBackend::start("b1");
    let dir = TempDir::new();
    let first = write_cert(dir.path(), "site", &["localhost"]);
    let port = free_port();
    let d = dir.path().display();
    let sy =
        Switchyard::start(&tls_config(port, &format!("{{cert: \"{d}/site.crt\", key: \"{d}/site.key\"}}"), &b.url()));
    let served = || Tls::connect(tls_addr(port), "localhost", &[b"http/1.1"]).unwrap().cert();
    assert!(served() == first);
    let mut open = Tls::connect(tls_addr(port), "localhost", &[b"http/1.1"]).unwrap();
    assert_eq!(open.get("/before").unwrap().0, 200);

    let second = write_cert(dir.path(), "site", &["localhost"]);
    sy.signal(libc::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(5), || served() == second),
        "new certificate not served after SIGHUP\n{}",
        sy.logs()
    );
    // the connection opened before the reload goes on with its session
    assert_eq!(open.get("/after").unwrap().0, 200);
    assert!(open.cert() == first);

    // a broken key: the reload is refused and counted, the certificate stays
    std::fs::write(dir.path().join("site.key"), "not a key\n").unwrap();
    sy.signal(libc::SIGHUP);
    let errors = || {
        get(sy.admin_addr(), "/metrics", &[])
            .text()
            .lines()
            .any(|l| l == "switchyard_config_reloads_total{result=\"error\"} 1")
    };
    assert!(poll_until(Duration::from_secs(5), errors), "{}", sy.logs());
    assert!(served() == second);
    assert!(sy.logs().contains("site.key"), "{}", sy.logs());
}

#[test]
fn bad_certificate_files_are_config_errors_naming_the_file() {
    let dir = TempDir::new();
    write_cert(dir.path(), "a", &["a.test"]);
    write_cert(dir.path(), "b", &["b.test"]);
    std::fs::write(dir.path().join("garbage.crt"), "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    let d = dir.path().display();
    let cases = [
        (format!("{{cert: \"{d}/missing.crt\", key: \"{d}/a.key\"}}"), "missing.crt"),
        (format!("{{cert: \"{d}/a.crt\", key: \"{d}/b.key\"}}"), "b.key"),
        // a key that is not the certificate's is the key's fault
        (format!("{{cert: \"{d}/a.crt\", key: \"{d}/b.key\"}}"), "listen[1].tls.key:"),
        (format!("{{cert: \"{d}/garbage.crt\", key: \"{d}/a.key\"}}"), "garbage.crt"),
        (
            format!("{{cert: \"{d}/a.crt\", key: \"{d}/a.key\", sni: [{{cert: \"{d}/b.crt\", key: \"{d}/a.key\"}}]}}"),
            "listen[1].tls.sni[0].key",
        ),
    ];
    for (tls, named) in cases {
        let yaml = tls_config(free_port(), &tls, "http://127.0.0.1:9");
        let Output { code, stderr: err, .. } = check_config(&yaml);
        assert_eq!(code, 1, "{tls}: {err}");
        assert!(err.contains(named), "{tls}: error does not name {named}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // at start (not -t) the same file is a failure to start: exit 2
    let yaml = tls_config(free_port(), &format!("{{cert: \"{d}/a.crt\", key: \"{d}/b.key\"}}"), "http://127.0.0.1:9");
    let mut sy = Switchyard::builder().config(&yaml).ready(Ready::NoWait).start();
    assert_eq!(sy.wait_exit(Duration::from_secs(10)), Some(2), "{}", sy.logs());
    assert!(sy.logs().contains("b.key"), "{}", sy.logs());
}

#[test]
fn plain_http_on_the_tls_port_never_reaches_the_backend() {
    let b = TestBackend::start("b1");
    let dir = TempDir::new();
    write_cert(dir.path(), "site", &["localhost"]);
    let port = free_port();
    let d = dir.path().display();
    let sy =
        Switchyard::start(&tls_config(port, &format!("{{cert: \"{d}/site.crt\", key: \"{d}/site.key\"}}"), &b.url()));
    let raw = send_raw_timeout(tls_addr(port), b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(3));
    assert_eq!(raw_status(&raw), None, "a TLS port answered HTTP: {raw:?}");
    assert_eq!(b.app_count(), 0, "{}", sy.logs());
    // and it serves TLS normally afterwards
    let mut c = Tls::connect(tls_addr(port), "localhost", &[b"http/1.1"]).unwrap();
    assert_eq!(c.get("/ok").unwrap().0, 200, "{}", sy.logs());
    assert_eq!(b.app_count(), 1);
}

// ---------------------------------------------------------------------------
// WebSocket pass-through, on the plain and the TLS listener
// ---------------------------------------------------------------------------

/// A WebSocket backend: greets each client, then echoes every text
/// message back as `echo: ...`. Returns its `http://` URL.
fn websocket_backend() -> String {
    let listener = bind_fresh();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                // Answer the handshake after a short pause, as any backend
                // that is not on loopback does: pingora 0.9.1 tears an
                // upgrade down when it reads the 101 before it has passed
                // on the end of the (empty) request body (README, Known
                // limits); an instant 101 on loopback hits that race in a
                // few percent of handshakes under load.
                std::thread::sleep(Duration::from_millis(20));
                let Ok(mut ws) = tungstenite::accept(conn) else {
                    return;
                };
                let _ = ws.send(tungstenite::Message::Text("hello from backend".into()));
                while let Ok(m) = ws.read() {
                    let reply = match m {
                        tungstenite::Message::Text(t) => format!("echo: {t}"),
                        tungstenite::Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(tungstenite::Message::Text(reply)).is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Handshake through the proxy on `stream`, then frames both ways.
fn websocket_round_trip<S: Read + Write>(stream: S) {
    let (mut ws, resp) = tungstenite::client("ws://sy.test/chat", stream).expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    let text = |m: tungstenite::Message| m.into_text().expect("text frame").to_string();
    let m = ws.read().unwrap_or_else(|e| panic!("reading greeting: {e}"));
    assert_eq!(text(m), "hello from backend");
    for i in 0..3 {
        ws.send(tungstenite::Message::Text(format!("ping {i}"))).unwrap();
        let m = ws.read().unwrap_or_else(|e| panic!("reading echo {i}: {e}"));
        assert_eq!(text(m), format!("echo: ping {i}"));
    }
    ws.close(None).unwrap();
}

#[test]
fn websocket_passes_through_plain_and_tls_listeners() {
    let backend = websocket_backend();
    let dir = TempDir::new();
    write_cert(dir.path(), "site", &["localhost"]);
    let port = free_port();
    let d = dir.path().display();
    let sy =
        Switchyard::start(&tls_config(port, &format!("{{cert: \"{d}/site.crt\", key: \"{d}/site.key\"}}"), &backend));
    let plain = TcpStream::connect(sy.addr()).unwrap();
    plain.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    websocket_round_trip(plain);
    let tls = Tls::connect(tls_addr(port), "localhost", &[b"http/1.1"]).unwrap();
    websocket_round_trip(tls.stream);
    let _ = sy.logs();
}

// ---------------------------------------------------------------------------
// HTTPS backends
// ---------------------------------------------------------------------------

/// A CA and, for each of `names`, a leaf certificate it signed, written to
/// `dir` as `ca.crt` and `leafN.{crt,key}`.
fn write_ca_and_leaves(dir: &Path, names: &[&str]) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "switchyard test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    for (i, name) in names.iter().enumerate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("leaf{i}.crt")), leaf.pem()).unwrap();
        std::fs::write(dir.join(format!("leaf{i}.key")), key.serialize_pem()).unwrap();
    }
}

/// An HTTPS backend: a switchyard TLS listener on a free port with
/// `cert`/`key`, in front of `backend`. Returns the guard and the port.
fn https_front(cert: &Path, key: &Path, backend: &TestBackend) -> (Switchyard, u16) {
    let port = free_port();
    let sy = Switchyard::start(&tls_config(
        port,
        &format!("{{cert: \"{}\", key: \"{}\"}}", cert.display(), key.display()),
        &backend.url(),
    ));
    (sy, port)
}

fn https_pool(backends: &[String], tls: &str) -> String {
    let mut y =
        String::from("listen: [{addr: \"{listen}\"}]\nrouting: {default_pool: web}\npools:\n  web:\n    backends:\n");
    for b in backends {
        y.push_str(&format!("      - url: \"{b}\"\n"));
    }
    y.push_str("    health_check: {type: http, path: /health, interval: 300ms, rise: 1, fall: 1}\n");
    if !tls.is_empty() {
        y.push_str(&format!("    tls: {tls}\n"));
    }
    y
}

#[test]
fn https_backends_with_different_names_are_each_verified_by_their_own_name() {
    let dir = TempDir::new();
    write_ca_and_leaves(dir.path(), &["localhost", "127.0.0.1"]);
    let (b1, b2) = (TestBackend::start("b1"), TestBackend::start("b2"));
    let (_f1, p1) = https_front(&dir.join("leaf0.crt"), &dir.join("leaf0.key"), &b1);
    let (_f2, p2) = https_front(&dir.join("leaf1.crt"), &dir.join("leaf1.key"), &b2);
    let sy = Switchyard::start(&https_pool(
        &[format!("https://localhost:{p1}"), format!("https://127.0.0.1:{p2}")],
        &format!("{{ca: \"{}\"}}", dir.join("ca.crt").display()),
    ));
    let both = poll_until(Duration::from_secs(10), || {
        let _ = get(sy.addr(), "/spread", &[]);
        b1.path_count("/spread") > 0 && b2.path_count("/spread") > 0
    });
    assert!(both, "not both HTTPS backends served\n{}", sy.logs());
    let seen = b2.last_app_request().unwrap();
    assert_eq!(seen.target, "/spread");
}

#[test]
fn verify_false_accepts_a_self_signed_backend_and_says_so() {
    let dir = TempDir::new();
    write_cert(dir.path(), "self", &["localhost"]);
    let b = TestBackend::start("b1");
    let (_front, port) = https_front(&dir.join("self.crt"), &dir.join("self.key"), &b);
    let url = format!("https://localhost:{port}");

    // verified against the system's roots: never admitted
    let strict = Switchyard::start(&https_pool(std::slice::from_ref(&url), ""));
    assert_eq!(get(strict.addr(), "/strict", &[]).status, 503, "{}", strict.logs());

    let lax = Switchyard::start(&https_pool(&[url], "{verify: false}"));
    assert!(poll_until(Duration::from_secs(10), || get(lax.addr(), "/lax", &[]).status == 200), "{}", lax.logs());
    assert!(lax.logs().contains("NOT checked"), "{}", lax.logs());
    assert_eq!(b.path_count("/strict"), 0);
}

#[test]
fn unreadable_backend_ca_is_a_config_error_naming_the_file() {
    let dir = TempDir::new();
    let missing = dir.join("missing-ca.pem");
    let yaml = https_pool(&["https://localhost:9".to_string()], &format!("{{ca: \"{}\"}}", missing.display()));
    let Output { code, stderr: err, .. } = check_config(&yaml);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pools.web.tls.ca") && err.contains("missing-ca.pem"), "{err}");
    let plain = "listen: [{addr: \"{listen}\"}]\npools:\n  web:\n    backends: [{url: \"http://127.0.0.1:9\"}]\n    tls: {verify: false}\n";
    let Output { code, stderr: err, .. } = check_config(plain);
    assert_eq!(code, 1, "tls on a plain pool: {err}");
}

#[test]
fn http2_requests_are_routed_and_retried_like_http11() {
    let (web, api) = (TestBackend::start("web"), TestBackend::start("api"));
    let dir = TempDir::new();
    write_cert(dir.path(), "site", &["localhost"]);
    let port = free_port();
    let d = dir.path().display();
    let yaml = format!(
        "listen:\n  - addr: \"{{listen}}\"\n  - addr: \"127.0.0.1:{port}\"\n    tls: {{cert: \"{d}/site.crt\", key: \"{d}/site.key\"}}\n\
         admin: {{listen: \"{{admin}}\"}}\n\
         routing: {{default_pool: web}}\n\
         pools:\n  web:\n    backends: [{{url: \"{}\"}}]\n    health_check: {{type: none}}\n  \
         api:\n    strategy: round_robin\n    backends: [{{url: \"{}\"}}, {{url: \"{}\"}}]\n    \
         health_check: {{type: none}}\n    passive: {{max_fails: 0}}\n",
        web.url(),
        dead_url(),
        api.url()
    );
    let sy = Switchyard::start(&yaml);
    for i in 0..6 {
        let out = Command::new("curl")
            .args(["-sk", "--http2", "-H", "App-Name: API", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
            .arg(format!("https://localhost:{port}/r{i}"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, "2 200", "request {i}\n{}", sy.logs());
    }
    // every request reached the live api backend, half of them after a
    // connect failure on the dead one; none went to web
    assert_eq!(api.app_count(), 6, "{}", sy.logs());
    assert_eq!(web.app_count(), 0);
    let metrics = get(sy.admin_addr(), "/metrics", &[]).text();
    let retries: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_retries_total{pool=\"api\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(retries >= 1, "no retry over HTTP/2\n{metrics}");
}
