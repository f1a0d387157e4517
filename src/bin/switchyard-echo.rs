//! `switchyard-echo`: the sample HTTP/1.1 backend used by `make run`, the
//! benchmarks and the integration tests (SPEC §1).
//!
//! ```text
//! switchyard-echo [--listen ADDR] [--name NAME] [--error-rate F] [--max-delay DUR]
//! ```
//!
//! * `GET /health` answers `200 ok`.
//! * Any other request answers 200 with a JSON echo
//!   `{"backend", "listen", "method", "path", "headers": {lowercase-name: value}}`
//!   (repeated fields joined with `, `).
//! * `--error-rate F` answers a fraction `F` (0..=1) of the non-health requests
//!   with 500 `{"backend": NAME, "error": "injected"}`.
//! * `--max-delay DUR` delays every answer by a uniformly random duration in
//!   `[0, DUR]` (`250ms`, `1s`, `2m`, `1h`: the units of the YAML file).
//! * The env variable `BACKEND_LISTEN_ADDR` works as `--listen`
//!   (default `127.0.0.1:8080`); the name defaults to the bound address.
//!
//! HTTP/1.1 is hyper's: keep-alive, pipelining, chunked request bodies (read
//! and discarded), `Expect: 100-continue`. A malformed request head gets
//! hyper's 400 (431 past 64 KiB of head) and the connection is closed; a
//! malformed body gets a 400. A connection that does not complete a request
//! head within 30 s (idle keep-alive included) is closed. Once bound it
//! prints exactly one line `listening on ADDR` on stdout.
//!
//! Exit codes: 0 clean exit (SIGTERM, SIGINT), 1 bad arguments, 2 cannot bind.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use switchyard::config::units::parse_duration;

/// Default of `--listen`.
const LISTEN: &str = "127.0.0.1:8080";
/// Largest accepted request head (request line + headers); more gets a 431.
const MAX_HEAD: usize = 64 * 1024;
/// A request head must be complete within this long, counted from the end of
/// the previous answer on a keep-alive connection (hyper's `header_read_timeout`).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
/// Sample HTTP backend for switchyard: /health answers ok, anything else echoes the request as JSON.
#[command(name = "switchyard-echo", version)]
struct Cli {
    /// Address to listen on.
    #[arg(short, long, env = "BACKEND_LISTEN_ADDR", default_value = LISTEN)]
    listen: String,

    /// Backend name reported in every answer (default: the bound address).
    #[arg(short, long)]
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
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(_) => Err(format!("`{s}` must be between 0 and 1")),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

/// Settings shared by every connection.
struct Echo {
    cli: Cli,
    /// `--name`, or the bound address; also as the `x-backend` value.
    name: String,
    x_backend: HeaderValue,
    /// The bound address.
    listen: String,
}

#[tokio::main]
async fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => e.exit(),
        _ => {
            let _ = e.print();
            std::process::exit(1)
        }
    });
    std::process::exit(run(cli).await)
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
    let bound = listener
        .local_addr()
        .map_or(cli.listen.clone(), |a| a.to_string());
    let name = cli.name.clone().unwrap_or_else(|| bound.clone());
    let Ok(x_backend) = HeaderValue::from_str(&name) else {
        eprintln!("switchyard-echo: --name {name:?} cannot be sent in a header");
        return 1;
    };
    let listen = bound.clone();
    let echo = Arc::new(Echo {
        cli,
        name,
        x_backend,
        listen,
    });
    // Installed before announcing, so a signal sent right after `listening on` is never lost.
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("switchyard-echo: cannot install signal handlers");
        return 2;
    };
    println!("listening on {bound}");
    let _ = std::io::stdout().flush();

    let mut http = http1::Builder::new();
    http.max_header_size(MAX_HEAD).timer(TokioTimer::new());
    http.header_read_timeout(HEAD_TIMEOUT);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let echo = Arc::clone(&echo);
                let service = service_fn(move |req| answer(req, Arc::clone(&echo)));
                tokio::spawn(http.serve_connection(TokioIo::new(stream), service));
            }
            _ = term.recv() => return 0,
            _ = int.recv() => return 0,
        }
    }
}

/// Answers one request (see the module doc).
async fn answer(
    req: Request<Incoming>,
    echo: Arc<Echo>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (head, mut body) = req.into_parts();
    // Drain the body (this is when hyper sends `100 Continue`).
    let drained = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(_)) => {}
        }
    };
    let chance = || rand::thread_rng().gen::<f64>(); // the rng is not `Send`: no await while held
    tokio::time::sleep(echo.cli.max_delay.mul_f64(chance())).await;
    let inject = chance() < echo.cli.error_rate;
    const JSON: &str = "application/json";
    let (status, ctype, text) = if !drained {
        let v = json!({"error": "malformed request body"});
        (StatusCode::BAD_REQUEST, JSON, v.to_string())
    } else if head.uri.path() == "/health" {
        (StatusCode::OK, "text/plain", "ok".to_string())
    } else if inject {
        let v = json!({"backend": echo.name, "error": "injected"});
        (StatusCode::INTERNAL_SERVER_ERROR, JSON, v.to_string())
    } else {
        (StatusCode::OK, JSON, echo.echo(&head).to_string())
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut().insert("x-backend", echo.x_backend.clone());
    Ok(r)
}

impl Echo {
    /// The JSON echo of a request head; repeated header fields joined with `, `.
    fn echo(&self, head: &http::request::Parts) -> Value {
        let mut headers = serde_json::Map::new();
        for (k, v) in &head.headers {
            let v = String::from_utf8_lossy(v.as_bytes());
            match headers.get_mut(k.as_str()) {
                Some(Value::String(prev)) => *prev = format!("{prev}, {v}"),
                _ => drop(headers.insert(k.as_str().into(), v.into())),
            }
        }
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let (backend, listen, method) = (&self.name, &self.listen, head.method.as_str());
        json!({"backend": backend, "listen": listen, "method": method, "path": path, "headers": headers})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0.3"), Ok(0.3));
        assert_eq!(parse_rate("1"), Ok(1.0));
        for bad in ["-0.1", "1.1", "NaN", "inf", "x"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
