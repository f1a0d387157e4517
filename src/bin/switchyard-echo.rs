//! `switchyard-echo`: the sample HTTP/1.1 backend used by `make run`, the
//! benchmarks and the integration tests (SPEC §1).
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
//! HTTP/1.1 is hyper's: keep-alive, pipelining, chunked request bodies (read and
//! discarded), `Expect: 100-continue`. A malformed request head gets a 400 (431 past
//! 64 KiB of head) and the connection is closed; a malformed body gets a 400. A
//! connection is closed when it does not complete a request head within 30 s (idle
//! keep-alive included). Once bound it prints one line `listening on ADDR` on stdout.
//!
//! Exit codes: 0 clean exit (SIGTERM, SIGINT), 1 bad arguments, 2 cannot bind.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use clap::Parser;
use futures::{future, TryStreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use switchyard::config::units::parse_duration;

/// Largest accepted request head (request line + headers); more gets a 431.
const MAX_HEAD: usize = 64 * 1024;
/// Deadline for a complete request head, idle keep-alive time included.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
/// Sample HTTP backend for switchyard: /health answers ok, anything else echoes the request as JSON.
#[command(name = "switchyard-echo", version)]
struct Cli {
    /// Address to listen on.
    #[arg(
        short,
        long,
        env = "BACKEND_LISTEN_ADDR",
        default_value = "127.0.0.1:8080"
    )]
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
        _ => Err(format!("`{s}` is not a number between 0 and 1")),
    }
}

/// Settings shared by every connection.
struct Echo {
    cli: Cli,
    /// [`Echo::name`] as the `x-backend` header value.
    x_backend: HeaderValue,
}

#[tokio::main]
async fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print(); // --help and --version print to stdout and exit 0; usage errors exit 1
        std::process::exit(i32::from(e.use_stderr()))
    });
    if let Err((code, msg)) = run(cli).await {
        eprintln!("switchyard-echo: {msg}");
        std::process::exit(code)
    }
}

/// Binds, announces `listening on ADDR`, then serves until SIGINT/SIGTERM;
/// an error is `(exit code, message)`.
async fn run(mut cli: Cli) -> Result<(), (i32, String)> {
    let cannot = |e| (2, format!("cannot listen on {}: {e}", cli.listen));
    let listener = TcpListener::bind(&*cli.listen).await.map_err(cannot)?;
    cli.listen = listener.local_addr().map_err(cannot)?.to_string();
    let name = cli.name.as_deref().unwrap_or(&cli.listen);
    let x_backend = HeaderValue::from_str(name)
        .map_err(|_| (1, format!("--name {name:?} cannot be sent in a header")))?;
    // Installed before announcing, so a signal sent right after `listening on` is never lost.
    let on = |kind| signal(kind).map_err(|e| (2, format!("cannot install signal handlers: {e}")));
    let (mut term, mut int) = (on(SignalKind::terminate())?, on(SignalKind::interrupt())?);
    println!("listening on {}", cli.listen);
    let echo = Arc::new(Echo { cli, x_backend });
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
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

/// The answer to one request.
type Answer = Result<Response<Full<Bytes>>, Infallible>;

/// Answers one request (see the module doc).
async fn answer(req: Request<Incoming>, echo: Arc<Echo>) -> Answer {
    let (head, data) = req.map(BodyExt::into_data_stream).into_parts();
    // Drain and discard the body (this is when hyper sends `100 Continue`).
    let drained = data.try_for_each(|_| future::ok(())).await.is_ok();
    let chance = || rand::thread_rng().gen::<f64>(); // the rng is not `Send`: no await while held
    tokio::time::sleep(echo.cli.max_delay.mul_f64(chance())).await;
    if drained && head.uri.path() == "/health" {
        return echo.reply(StatusCode::OK, "text/plain", "ok".into());
    }
    let (status, v) = if !drained {
        let v = json!({"error": "malformed request body"});
        (StatusCode::BAD_REQUEST, v)
    } else if chance() < echo.cli.error_rate {
        let v = json!({"backend": echo.name(), "error": "injected"});
        (StatusCode::INTERNAL_SERVER_ERROR, v)
    } else {
        (StatusCode::OK, echo.echo(&head))
    };
    echo.reply(status, "application/json", v.to_string())
}

impl Echo {
    /// `--name`, or the bound address.
    fn name(&self) -> &str {
        self.cli.name.as_deref().unwrap_or(&self.cli.listen)
    }

    /// An answer from this backend (`x-backend: NAME`).
    fn reply(&self, status: StatusCode, ctype: &'static str, text: String) -> Answer {
        let mut r = Response::new(Full::from(text));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        h.insert("x-backend", self.x_backend.clone());
        Ok(r)
    }

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
        let (backend, listen, method) = (self.name(), &self.cli.listen, head.method.as_str());
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
