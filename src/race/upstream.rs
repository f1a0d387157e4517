//! The request a race sends: the client's body read whole (up to
//! `race.max_body`) and the header every backend receives.

use bytes::{Bytes, BytesMut};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Request headers never copied to a raced upstream request: hop-by-hop
/// ones, and `Expect` (the race answers `100 Continue` itself).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
];

/// Reads the whole request body, up to `max` bytes (413 beyond: an
/// unframed body cannot be sent on the normal path once read).
pub(super) async fn read_body(session: &mut Session, max: u64) -> Result<Bytes> {
    if session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        // a 100 is not the answer: it must not turn keep-alive off as an
        // answer written before the body would (see `proxy::downstream`)
        session.set_close_on_response_before_downstream_finish(false);
        session.write_continue_response().await?;
        session.set_close_on_response_before_downstream_finish(true);
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body too large to race",
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The request sent to every backend: the client's, minus hop-by-hop
/// headers, plus the forwarding headers, with an exact Content-Length.
pub(super) fn upstream_request(session: &Session, body: &Bytes) -> Result<RequestHeader> {
    let mut req = session.req_header().clone();
    let nominated: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "host")
        .collect();
    for h in HOP_BY_HOP
        .iter()
        .copied()
        .map(String::from)
        .chain(nominated)
    {
        req.remove_header(&h);
    }
    if !req.headers.contains_key(http::header::HOST) {
        if let Some(a) = req.uri.authority().map(|a| a.to_string()) {
            req.insert_header(http::header::HOST, a)?;
        }
    }
    req.set_version(http::Version::HTTP_11);
    let method_has_body = !matches!(req.method, http::Method::GET | http::Method::HEAD);
    if !body.is_empty() || method_has_body {
        req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    }
    crate::request::add_forwarding_headers(session, &mut req)?;
    Ok(req)
}
