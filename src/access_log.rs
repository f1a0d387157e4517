//! The access log (`log:`): one line per request, JSON or text, written in
//! pingora's `logging` phase to stdout or a file.
//!
//! A request only formats its line and queues it on
//! [`log_output::ACCESS`](crate::log_output::ACCESS), whose own thread
//! writes it: a stalled stdout or a slow disk drops and counts lines, it
//! never holds up a request. The file is opened (in append mode) at start
//! and again on every reload (SIGHUP, `POST /reload`): rename the file, then
//! reload, to rotate.

use crate::config::{AccessLog, LogSettings};
use crate::log_output::{rfc3339, Sink, ACCESS};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The access log's line format; `None` from [`AccessLogger::new`] when it is off.
#[derive(Debug, Clone, Copy)]
pub struct AccessLogger {
    json: bool,
}

/// One request's line.
pub struct Entry<'a> {
    /// Client IP address.
    pub client: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request target.
    pub uri: &'a str,
    /// Status sent (0: none).
    pub status: u16,
    /// Routed pool ("" when none).
    pub pool: &'a str,
    /// Backend that answered ("" when none).
    pub backend: &'a str,
    /// Upstream attempts made.
    pub attempts: usize,
    /// Time from request to end of response.
    pub duration: Duration,
    /// Cache status (`hit`, `miss`, ...) in a caching pool; "" elsewhere,
    /// and then left out of the line.
    pub cache: &'a str,
}

/// Opens the destination `settings` names (blocking: call it before the
/// runtime starts or on a blocking thread). Errors name the file.
pub fn open_sink(settings: &LogSettings) -> Result<Sink, String> {
    match &settings.access {
        AccessLog::Off => Ok(Sink::Discard),
        AccessLog::Stdout => Ok(Sink::Stdout),
        AccessLog::File(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|f| Sink::File(Arc::new(f)))
            .map_err(|e| format!("cannot open the access log {path}: {e}")),
    }
}

/// Sends the access log's following lines to `sink` (from [`open_sink`]).
pub fn reopen(sink: Sink) {
    ACCESS.reopen(sink);
}

impl AccessLogger {
    /// The logger for `settings`; `None` when the access log is off.
    pub fn new(settings: &LogSettings) -> Option<AccessLogger> {
        match settings.access {
            AccessLog::Off => None,
            _ => Some(AccessLogger {
                json: settings.json,
            }),
        }
    }

    /// Queues one line; never blocks (a full queue drops and counts it).
    pub fn write(&self, e: &Entry<'_>) {
        let ts = rfc3339(SystemTime::now());
        let ms = e.duration.as_secs_f64() * 1000.0;
        let line = if self.json {
            let mut v = serde_json::json!({
                "time": ts, "client": e.client, "method": e.method, "uri": e.uri,
                "status": e.status, "pool": e.pool, "backend": e.backend,
                "attempts": e.attempts, "duration_ms": (ms * 1000.0).round() / 1000.0,
            });
            if !e.cache.is_empty() {
                v["cache"] = e.cache.into();
            }
            format!("{v}\n")
        } else {
            let cache = if e.cache.is_empty() {
                String::new()
            } else {
                format!(" cache={}", e.cache)
            };
            format!(
                "{ts} {} \"{} {}\" {} pool={} backend={} attempts={} {:.3}ms{cache}\n",
                e.client, e.method, e.uri, e.status, e.pool, e.backend, e.attempts, ms
            )
        };
        ACCESS.push(line.into_bytes());
    }
}
