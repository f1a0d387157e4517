//! The admin API: JSON over HTTP on `admin.listen`, a pingora
//! `ServeHttp` service beside the proxy.
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | 200 `ok` (never needs the token) |
//! | `GET /` | the status page (loads without the token; its data needs it) |
//! | `GET /status` | pools, their backends and counters |
//! | `GET /status/series` | per-pool req/s and p99 over the last 5 minutes |
//! | `POST /backends` `{"pool", "url", "weight"?}` | 201; 400 bad URL; 404 unknown pool; 409 already there |
//! | `DELETE /backends` `{"pool", "url"}` | 200; 404 unknown |
//! | `PATCH /backends` `{"pool", "url", "enabled"}` | 200: drain or re-enable |
//! | `POST /reload` | as SIGHUP; 200, or 400 with the errors |
//! | `GET /metrics` | Prometheus text format |
//!
//! With a token configured every endpoint but `/healthz` needs
//! `Authorization: Bearer TOKEN` (401 otherwise); the scheme name is
//! case-insensitive (RFC 9110 §11.1, formerly RFC 7235 §2.1) and the token
//! is compared in constant time. The token is the one of the live
//! configuration, so a reload that changes it (a new `token_file`, a new
//! file content) replaces the old one at once. Backend changes go through
//! [`Reloader::change`], which saves them to `admin.state_file` and rebuilds
//! the live table; requests in flight finish on the table they started with.

mod backends;
pub mod cache;
pub mod live;
pub mod metrics;
mod page;

use crate::config::AdminSettings;
use crate::counters::Metrics;
use crate::pool::state_of;
use crate::reload::{ReloadError, Reloader};
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest admin request body read.
const MAX_BODY: usize = 64 * 1024;

/// The admin API application.
pub struct AdminApi {
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    /// The settings the listener was started with.
    started: AdminSettings,
    /// When the process started (status page uptime).
    since: live::Started,
}

impl AdminApi {
    /// An admin API over `reloader`'s live table, listening as `settings`
    /// say (the token then comes from the live configuration).
    pub fn new(reloader: Arc<Reloader>, metrics: Arc<Metrics>, settings: &AdminSettings) -> Self {
        AdminApi {
            reloader,
            metrics,
            since: live::Started::now(),
            started: settings.clone(),
        }
    }

    /// The token of the live configuration. When the live file no longer
    /// describes this listener (its `admin` section was removed or its
    /// `listen` changed, which needs a binary upgrade), the token the
    /// listener started with stays: a reload never opens a listener that
    /// was guarded.
    fn token(&self) -> Option<String> {
        let table = self.reloader.routes().load();
        match table.config.admin.as_ref() {
            Some(live) if live.listen == self.started.listen => live.token.clone(),
            _ => self.started.token.clone(),
        }
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = self.token() else {
            return true;
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .unwrap_or(b"");
        constant_time_eq(given, token.as_bytes())
    }

    fn status(&self) -> Value {
        let table = self.reloader.routes().load_full();
        let mut pools = serde_json::Map::new();
        for p in table.pools() {
            let backends: Vec<Value> = p
                .members()
                .iter()
                .filter_map(|b| {
                    let s = state_of(b)?;
                    Some(json!({
                        "url": &*s.url(),
                        "name": &*s.name(),
                        "source": p.source(b).name(),
                        "healthy": p.is_healthy(b),
                        "enabled": p.is_enabled(b),
                        "weight": b.weight,
                        "active_connections": s.inflight(),
                        "requests": s.requests(),
                        "failures": s.failures(),
                        "latency_ewma_seconds": s.latency.estimate(),
                    }))
                })
                .collect();
            let mut entry = json!({
                "strategy": p.config.strategy.name(),
                "healthy": p.ready_count(),
                "backends": backends,
                "retry_budget": budget_status(p),
            });
            if let Some(c) = cache::status(p) {
                entry["cache"] = c;
            }
            // adaptive hedging: the delay now (null before enough samples)
            if let Some(q) = p.config.race.and_then(|r| r.hedge_percentile) {
                let d = p.stats.latency.percentile(q).map(|d| d.as_secs_f64());
                entry["hedge_delay_seconds"] = json!(d);
            }
            pools.insert(p.name().to_string(), entry);
        }
        let mut doc = json!({ "pools": pools });
        live::enrich(&mut doc, &table, &self.metrics, self.since);
        doc
    }
}

/// A pool's retry budget use for `/status`.
fn budget_status(p: &crate::pool::Pool) -> Value {
    let policy = &p.config.retries.budget;
    let u = p.stats.budget.usage(policy);
    json!({
        "ratio": policy.ratio(),
        "min_per_second": policy.min_per_second,
        "window_seconds": crate::budget::WINDOW_SECS,
        "first_attempts": u.first_attempts,
        "retries": u.retries,
        "allowed": u.allowed,
        "exhausted": u.exhausted,
    })
}

/// The token of an `Authorization: Bearer TOKEN` value: the scheme name is
/// case-insensitive (RFC 9110 §11.1), followed by one or more spaces; `None`
/// for another scheme.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&c| c == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

fn bad_request(msg: String) -> (StatusCode, Value) {
    (StatusCode::BAD_REQUEST, json!({ "error": msg }))
}

/// Compares without an early exit on the first differing byte (only the
/// length can be told apart by timing).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn respond(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = code;
    let len = r.body().len();
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    h.insert(http::header::CONTENT_LENGTH, len.into());
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn json_response(code: StatusCode, v: &Value) -> Response<Vec<u8>> {
    respond(code, "application/json", format!("{v}\n").into_bytes())
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, (StatusCode, Value)> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        json!({ "error": "body too large" }),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(bad_request(format!("cannot read body: {e}"))),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if path == "/healthz" {
            return respond(StatusCode::OK, "text/plain", b"ok\n".to_vec());
        }
        if path == "/" && method == Method::GET {
            // the page holds no data; it asks for the token itself
            return page::response();
        }
        if !self.authorized(session) {
            let mut r = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "unauthorized" }),
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/status") => json_response(StatusCode::OK, &self.status()),
            ("GET", "/status/series") => json_response(
                StatusCode::OK,
                &live::series(&self.reloader.routes().load_full()),
            ),
            ("GET", "/metrics") => {
                let table = self.reloader.routes().load_full();
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    metrics::render(&table, &self.metrics).into_bytes(),
                )
            }
            ("POST", "/reload") => match self.reloader.reload().await {
                Ok(()) => json_response(StatusCode::OK, &json!({ "result": "ok" })),
                Err(ReloadError::Config(e)) => {
                    let errors: Vec<String> = e.to_string().lines().map(String::from).collect();
                    json_response(StatusCode::BAD_REQUEST, &json!({ "errors": errors }))
                }
                Err(e) => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({ "errors": [e.to_string()] }),
                ),
            },
            ("POST", "/cache/purge") => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err((code, v)) => return json_response(code, &v),
                };
                let table = self.reloader.routes().load_full();
                let (code, v) = cache::purge(&table, &body);
                json_response(code, &v)
            }
            ("POST" | "DELETE" | "PATCH", "/backends") => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err((code, v)) => return json_response(code, &v),
                };
                let (code, v) = self.backends(&method, &body).await;
                json_response(code, &v)
            }
            (
                _,
                "/" | "/status" | "/status/series" | "/metrics" | "/reload" | "/backends"
                | "/cache/purge",
            ) => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({ "error": format!("{method} is not allowed on {path}") }),
            ),
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({ "error": format!("no endpoint {path}") }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, constant_time_eq};

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
