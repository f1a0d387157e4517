//! Responses the proxy itself produces: a status and one line of
//! JSON, `{"error": "...", "pool": "..."}`.

use super::RequestCtx;
use bytes::Bytes;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};

/// Writes a JSON error response and closes the connection afterwards;
/// `attempts` is added when upstream attempts were made.
pub async fn respond(
    session: &mut Session,
    status: u16,
    error: &str,
    pool: &str,
    attempts: Option<usize>,
) {
    respond_with(session, status, error, pool, attempts, &[]).await
}

/// [`respond`] with `headers` added (such as `Retry-After`).
pub async fn respond_with(
    session: &mut Session,
    status: u16,
    error: &str,
    pool: &str,
    attempts: Option<usize>,
    headers: &[(&'static str, String)],
) {
    let mut json = serde_json::json!({ "error": error, "pool": pool });
    if let Some(n) = attempts {
        json["attempts"] = n.into();
    }
    let body = Bytes::from(format!("{json}\n"));
    let Ok(mut resp) = ResponseHeader::build(status, Some(4)) else {
        return;
    };
    let _ = resp.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    let _ = resp.insert_header(http::header::CACHE_CONTROL, "no-store");
    for (name, value) in headers {
        let _ = resp.insert_header(*name, value.as_str());
    }
    if let Err(e) = session.write_error_response(resp, body).await {
        log::debug!("could not send {status} to client: {e}");
    }
}

/// The status a failed request gets: 0 means the client is gone and gets
/// nothing.
pub fn status_for(e: &Error, last_was_timeout: bool) -> u16 {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(code)) => *code,
        (ErrorSource::Downstream, WriteError | ReadError | ConnectionClosed) => 0,
        (ErrorSource::Downstream, ReadTimedout | WriteTimedout) => 408,
        (ErrorSource::Downstream, _) => 400,
        (
            ErrorSource::Upstream,
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout,
        ) => 504,
        (ErrorSource::Upstream, _) if last_was_timeout => 504,
        (ErrorSource::Upstream, _) => 502,
        _ => 500,
    }
}

/// The error text for a status the proxy produced.
pub fn message_for(status: u16) -> &'static str {
    match status {
        400 => "malformed request",
        404 => "no pool for this request",
        408 => "client timed out",
        429 => "rate limited",
        502 => "every upstream attempt failed",
        503 => "no healthy backend",
        504 => "upstream timed out",
        _ => "internal error",
    }
}

/// pingora's `fail_to_proxy`: answers the request's error with its status
/// and the JSON body (502/503/504, 503 for the proxy's own exhaustion).
pub async fn fail_to_proxy(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let code = match status_for(e, ctx.last_timeout) {
        // the proxy's own exhaustion is temporary: 503, as HAProxy does
        502 | 500 if ctx.local_error => 503,
        code => code,
    };
    if code > 0 {
        let headers = super::cache_phases::error_headers(ctx);
        let pool = ctx
            .attempt_pool
            .as_ref()
            .or(ctx.pool.as_ref())
            .map_or("", |p| p.name());
        let attempts = (ctx.tries > 0 && matches!(code, 502 | 504)).then_some(ctx.tries);
        let message = if ctx.local_error && code == 503 {
            "proxy out of resources"
        } else {
            message_for(code)
        };
        respond_with(session, code, message, pool, attempts, &headers).await;
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}
