//! The access log (`log:`): one line per request, JSON or text, to stdout
//! or a file, written in pingora's `logging` phase.
//!
//! The file is opened (in append mode) when a configuration is built, so a
//! reload (SIGHUP) reopens it: rename the file, then reload, to rotate.

use crate::config::{AccessLog, LogSettings};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where lines go.
enum Sink {
    Stdout,
    File(Mutex<std::io::LineWriter<std::fs::File>>),
}

/// An open access log.
pub struct AccessLogger {
    sink: Sink,
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

impl AccessLogger {
    /// Opens the log `settings` name; `Ok(None)` when it is off.
    pub fn open(settings: &LogSettings) -> std::io::Result<Option<AccessLogger>> {
        let sink = match &settings.access {
            AccessLog::Off => return Ok(None),
            AccessLog::Stdout => Sink::Stdout,
            AccessLog::File(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                Sink::File(Mutex::new(std::io::LineWriter::new(f)))
            }
        };
        Ok(Some(AccessLogger {
            sink,
            json: settings.json,
        }))
    }

    /// Writes one line; errors are dropped (a full disk must not stop traffic).
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
        match &self.sink {
            Sink::Stdout => {
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
            }
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
        }
    }
}

/// `2026-11-21T22:01:02.345Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // civil-from-days (Howard Hinnant), days since 1970-01-01
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_305_662_345);
        assert_eq!(rfc3339(t), "2026-11-22T00:01:02.345Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
