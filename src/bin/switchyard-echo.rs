//! `switchyard-echo`: the sample HTTP/1.1 backend used by `make run`, the
//! benchmarks and the integration tests.
//!
//! ```text
//! switchyard-echo [--listen ADDR] [--name NAME] [--error-rate F] [--max-delay DUR]
//! ```
//!
//! * `GET /health` answers `200 ok`.
//! * Any other request answers 200 with a JSON echo
//!   `{"backend", "listen", "method", "path", "headers": {lowercase-name: value}}`.
//! * `--error-rate F` answers a fraction `F` (0..=1) of the non-health requests
//!   with 500 `{"backend": NAME, "error": "injected"}`.
//! * `--max-delay DUR` delays every answer by a uniformly random duration in
//!   `[0, DUR]` (`ms`, `s`, `m`, `h`).
//! * The env variable `BACKEND_LISTEN_ADDR` works as `--listen`
//!   (default `127.0.0.1:8080`); the name defaults to the bound address.
//!
//! It is a small hand-written HTTP/1.1 server on plain tokio: keep-alive,
//! pipelining, `Content-Length` and chunked request bodies (read and
//! discarded), `Expect: 100-continue`. A malformed request gets a 400 and the
//! connection is closed; nothing read from the network can make it panic.
//! Once bound it prints exactly one line `listening on ADDR` on stdout.
//!
//! Exit codes: 0 clean exit, 1 bad arguments, 2 cannot bind.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use clap::Parser;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest accepted request head (request line + headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most headers accepted in one request.
const MAX_HEADERS: usize = 128;
/// Longest accepted chunk-size line (with extensions) or trailer line.
const MAX_CHUNK_LINE: usize = 4096;
/// A keep-alive connection idle for this long is closed (nginx's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// While a request is being received, each read must make progress within this.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Command line of `switchyard-echo`.
#[derive(Parser, Debug)]
#[command(
    name = "switchyard-echo",
    version,
    about = "Sample HTTP backend for switchyard: /health answers ok, anything else echoes the request as JSON"
)]
struct Cli {
    /// Address to listen on.
    #[arg(
        short,
        long,
        env = "BACKEND_LISTEN_ADDR",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    listen: String,

    /// Backend name reported in every answer (default: the bound address).
    #[arg(short, long, value_name = "NAME")]
    name: Option<String>,

    /// Fraction (0..=1) of non-health requests answered with 500.
    #[arg(long, default_value = "0", value_name = "F", value_parser = parse_rate)]
    error_rate: f64,

    /// Delay each answer by a random duration up to this (e.g. 250ms, 1s).
    #[arg(long, default_value = "0", value_name = "DUR", value_parser = parse_duration)]
    max_delay: Duration,
}

/// Parses an error rate: a finite number in `0..=1`.
fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(format!("`{s}` must be between 0 and 1"));
    }
    Ok(v)
}

/// Parses a duration such as `500ms`, `1s`, `1.5s`, `2m`, `1h` or a bare `0`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit_secs) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return Err(format!("`{s}` needs a unit: ms, s, m or h"));
    };
    let n = num.trim();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("`{s}` is not a duration"));
    }
    let v: f64 = n.parse().map_err(|_| format!("`{s}` is not a duration"))?;
    Duration::try_from_secs_f64(v * unit_secs).map_err(|_| format!("`{s}` is out of range"))
}

/// Immutable settings shared by every connection.
struct Config {
    name: String,
    listen: String,
    error_rate: f64,
    max_delay: Duration,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
                _ => {
                    let _ = e.print();
                    std::process::exit(1);
                }
            }
        }
    };

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard-echo: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(run(cli));
    std::process::exit(code);
}

/// Binds, announces `listening on ADDR`, then serves until SIGINT/SIGTERM.
async fn run(cli: Cli) -> i32 {
    let listener = match TcpListener::bind(cli.listen.as_str()).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("switchyard-echo: cannot listen on {}: {e}", cli.listen);
            return 2;
        }
    };
    let bound = match listener.local_addr() {
        Ok(a) => a.to_string(),
        Err(_) => cli.listen.clone(),
    };
    let cfg = Arc::new(Config {
        name: cli.name.unwrap_or_else(|| bound.clone()),
        listen: bound.clone(),
        error_rate: cli.error_rate,
        max_delay: cli.max_delay,
    });

    // Install the handlers before announcing, so a signal sent right after
    // `listening on` is never lost (it would kill the process with 143).
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();

    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {bound}");
        let _ = out.flush();
    }

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let cfg = Arc::clone(&cfg);
                    tokio::spawn(async move {
                        serve_connection(stream, peer, cfg).await;
                    });
                }
                Err(_) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = recv_or_pending(&mut term) => return 0,
            _ = recv_or_pending(&mut int) => return 0,
        }
    }
}

/// Waits for the signal, or forever when its handler could not be installed.
async fn recv_or_pending(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Why a connection stops being served.
#[derive(Debug)]
enum Stop {
    /// Peer closed or I/O failed: just drop the connection.
    Gone,
    /// The request was invalid: answer with this status and close.
    Bad(u16, &'static str),
}

impl From<std::io::Error> for Stop {
    fn from(_: std::io::Error) -> Self {
        Stop::Gone
    }
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    http10: bool,
    headers: Vec<(String, String)>,
    keep_alive: bool,
    body: BodyKind,
    expect_continue: bool,
}

/// How the request body is delimited.
enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// Serves one connection: requests in sequence until close, error or idle timeout.
async fn serve_connection(mut stream: TcpStream, _peer: SocketAddr, cfg: Arc<Config>) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        match serve_one(&mut stream, &mut buf, &cfg).await {
            Ok(true) => continue,
            Ok(false) | Err(Stop::Gone) => break,
            Err(Stop::Bad(status, msg)) => {
                let body = format!("{{\"error\":\"{msg}\"}}");
                let resp = build_response(
                    status,
                    "application/json",
                    &cfg.name,
                    body.as_bytes(),
                    false,
                    false,
                );
                let _ = stream.write_all(&resp).await;
                let _ = stream.shutdown().await;
                break;
            }
        }
    }
}

/// Reads more bytes into `buf`; `Ok(0)` means EOF. Times out with [`Stop::Gone`].
async fn fill(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<usize, Stop> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(8 * 1024);
    }
    match tokio::time::timeout(timeout, stream.read_buf(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(_)) | Err(_) => Err(Stop::Gone),
    }
}

/// Serves a single request. `Ok(true)`: keep the connection for another one.
async fn serve_one(stream: &mut TcpStream, buf: &mut BytesMut, cfg: &Config) -> Result<bool, Stop> {
    // 1. Read the head.
    let head_len = loop {
        if let Some(pos) = find_head_end(buf) {
            if pos > MAX_HEAD {
                return Err(Stop::Bad(431, "request header too large"));
            }
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(Stop::Bad(431, "request header too large"));
        }
        let timeout = if buf.is_empty() {
            IDLE_TIMEOUT
        } else {
            READ_TIMEOUT
        };
        if fill(stream, buf, timeout).await? == 0 {
            if buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
                return Ok(false); // clean close between requests
            }
            return Err(Stop::Bad(400, "truncated request"));
        }
    };
    let head = parse_head(&buf[..head_len])?;
    buf.advance(head_len);

    // 2. Consume the body.
    if head.expect_continue && !matches!(head.body, BodyKind::None) && !head.http10 {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    match head.body {
        BodyKind::None => {}
        BodyKind::Length(n) => discard_exact(stream, buf, n).await?,
        BodyKind::Chunked => discard_chunked(stream, buf).await?,
    }

    // 3. Answer.
    let (delay, inject) = {
        let mut rng = rand::thread_rng();
        let delay = if cfg.max_delay.is_zero() {
            Duration::ZERO
        } else {
            cfg.max_delay.mul_f64(rng.gen::<f64>())
        };
        let inject = cfg.error_rate > 0.0 && rng.gen::<f64>() < cfg.error_rate;
        (delay, inject)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let is_head = head.method == "HEAD";
    let path_only = head.path.split('?').next().unwrap_or("");
    let (status, ctype, body) = if path_only == "/health" {
        (200, "text/plain", b"ok".to_vec())
    } else if inject {
        let v = serde_json::json!({"backend": cfg.name, "error": "injected"});
        (500, "application/json", v.to_string().into_bytes())
    } else {
        let mut headers = serde_json::Map::new();
        for (k, v) in &head.headers {
            match headers.get_mut(k) {
                Some(serde_json::Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(v);
                }
                _ => {
                    headers.insert(k.clone(), serde_json::Value::String(v.clone()));
                }
            }
        }
        let v = serde_json::json!({
            "backend": cfg.name,
            "listen": cfg.listen,
            "method": head.method,
            "path": head.path,
            "headers": headers,
        });
        (200, "application/json", v.to_string().into_bytes())
    };
    let resp = build_response(status, ctype, &cfg.name, &body, head.keep_alive, is_head);
    stream.write_all(&resp).await?;
    Ok(head.keep_alive)
}

/// Serializes a complete response.
fn build_response(
    status: u16,
    ctype: &str,
    name: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "",
    };
    let mut out = Vec::with_capacity(160 + body.len());
    let conn = if keep_alive { "keep-alive" } else { "close" };
    // Header values here come from the command line (name); strip CR/LF defensively.
    let safe_name: String = name.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nx-backend: {safe_name}\r\nconnection: {conn}\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Position just past the `\r\n\r\n` (or bare `\n\n`) ending the head, if present.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    // Skip leading empty lines (RFC 9112 §2.2 allows them before a request line).
    let mut i = 0;
    while i < buf.len() && (buf[i] == b'\r' || buf[i] == b'\n') {
        i += 1;
    }
    let rest = &buf[i..];
    let mut j = 0;
    while j < rest.len() {
        if rest[j] == b'\n' {
            if rest.get(j + 1) == Some(&b'\n') {
                return Some(i + j + 2);
            }
            if rest.get(j + 1) == Some(&b'\r') && rest.get(j + 2) == Some(&b'\n') {
                return Some(i + j + 3);
            }
        }
        j += 1;
    }
    None
}

/// `tchar` from RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a request head (request line and header fields).
fn parse_head(raw: &[u8]) -> Result<Head, Stop> {
    const BAD: Stop = Stop::Bad(400, "malformed request");
    let text =
        std::str::from_utf8(raw).map_err(|_| Stop::Bad(400, "request head is not valid UTF-8"))?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());

    let request_line = lines.next().ok_or(BAD)?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(BAD),
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(BAD);
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(BAD);
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(Stop::Bad(400, "unsupported HTTP version")),
    };

    let mut headers = Vec::new();
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<String> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(Stop::Bad(431, "too many headers"));
        }
        let (name, value) = line.split_once(':').ok_or(BAD)?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(BAD); // also rejects obsolete line folding and "name :"
        }
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(BAD);
        }
        let lname = name.to_ascii_lowercase();
        match lname.as_str() {
            "content-length" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Stop::Bad(400, "invalid content-length"));
                }
                let n: u64 = value
                    .parse()
                    .map_err(|_| Stop::Bad(400, "invalid content-length"))?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(Stop::Bad(400, "conflicting content-length"));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => {
                let te = transfer_encoding.get_or_insert_with(String::new);
                if !te.is_empty() {
                    te.push(',');
                }
                te.push_str(value);
            }
            "connection" => {
                for tok in value.split(',') {
                    let tok = tok.trim();
                    if tok.eq_ignore_ascii_case("close") {
                        conn_close = true;
                    } else if tok.eq_ignore_ascii_case("keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            "expect" if value.eq_ignore_ascii_case("100-continue") => {
                expect_continue = true;
            }
            _ => {}
        }
        headers.push((lname, value.to_string()));
    }

    let body = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(Stop::Bad(400, "both content-length and transfer-encoding"))
        }
        (Some(te), None) => {
            if http10 {
                return Err(Stop::Bad(400, "transfer-encoding in HTTP/1.0"));
            }
            let codings: Vec<&str> = te
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            match codings.as_slice() {
                [only] if only.eq_ignore_ascii_case("chunked") => BodyKind::Chunked,
                _ => return Err(Stop::Bad(400, "unsupported transfer-encoding")),
            }
        }
        (None, Some(0)) | (None, None) => BodyKind::None,
        (None, Some(n)) => BodyKind::Length(n),
    };
    let keep_alive = if http10 {
        conn_keep_alive && !conn_close
    } else {
        !conn_close
    };

    Ok(Head {
        method: method.to_string(),
        path: target.to_string(),
        http10,
        headers,
        keep_alive,
        body,
        expect_continue,
    })
}

/// Discards exactly `n` body bytes (buffered ones first).
async fn discard_exact(stream: &mut TcpStream, buf: &mut BytesMut, mut n: u64) -> Result<(), Stop> {
    loop {
        let take = n.min(buf.len() as u64) as usize;
        buf.advance(take);
        n -= take as u64;
        if n == 0 {
            return Ok(());
        }
        if fill(stream, buf, READ_TIMEOUT).await? == 0 {
            return Err(Stop::Gone);
        }
    }
}

/// Reads one CRLF-terminated line (without the terminator) of at most `MAX_CHUNK_LINE` bytes.
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Vec<u8>, Stop> {
    loop {
        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let mut line = buf.split_to(pos + 1).to_vec();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(line);
        }
        if buf.len() > MAX_CHUNK_LINE {
            return Err(Stop::Bad(400, "chunk line too long"));
        }
        if fill(stream, buf, READ_TIMEOUT).await? == 0 {
            return Err(Stop::Gone);
        }
    }
}

/// Discards a chunked body including its trailer section.
async fn discard_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), Stop> {
    const BAD: Stop = Stop::Bad(400, "malformed chunked body");
    loop {
        let line = read_line(stream, buf).await?;
        let size_part = line.split(|b| *b == b';').next().unwrap_or(&[]);
        let size_str = std::str::from_utf8(size_part)
            .map_err(|_| BAD)?
            .trim_end_matches([' ', '\t']);
        if size_str.is_empty()
            || size_str.len() > 16
            || !size_str.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(BAD);
        }
        let size = u64::from_str_radix(size_str, 16).map_err(|_| BAD)?;
        if size == 0 {
            // Trailer fields until an empty line.
            for _ in 0..MAX_HEADERS {
                if read_line(stream, buf).await?.is_empty() {
                    return Ok(());
                }
            }
            return Err(Stop::Bad(431, "too many trailers"));
        }
        discard_exact(stream, buf, size).await?;
        if !read_line(stream, buf).await?.is_empty() {
            return Err(BAD);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1", "-1s", "1x", "abc", "1e3s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0.3"), Ok(0.3));
        assert_eq!(parse_rate("1"), Ok(1.0));
        for bad in ["-0.1", "1.1", "NaN", "inf", "x"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn head_parsing() {
        let h = parse_head(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Foo:  bar \r\n\r\n")
            .expect("valid head");
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/a?b=1");
        assert!(h.keep_alive);
        assert_eq!(h.headers[1], ("x-foo".to_string(), "bar".to_string()));

        let h = parse_head(b"POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\n").expect("valid head");
        assert!(!h.keep_alive);
        assert!(matches!(h.body, BodyKind::Length(5)));

        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
            b"G\xffT / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                parse_head(bad).is_err(),
                "{:?} should be rejected",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"\r\nGET / HTTP/1.1\n\n"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
