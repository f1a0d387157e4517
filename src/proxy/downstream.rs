//! The one place that decides what of an upstream message reaches the
//! client, and how the client connection is kept.
//!
//! Every relayed response head, final or 1xx (103 Early Hints included),
//! from the normal proxy path and from racing, goes through
//! [`clean_response`]:
//! - the fields the message's `Connection` header names, and `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Upgrade` (except on a 101) are removed
//!   (RFC 9110 §7.6.1: hop-by-hop fields are never forwarded);
//! - an HTTP/1.0 client never gets `Transfer-Encoding` (RFC 9112 §6.1): the
//!   decoded body is delimited by the connection's close, as nginx does,
//!   and the answer says `Connection: close`;
//! - a 1xx head (`100 Continue` to a client's `Expect: 100-continue`) does
//!   not count as an answer written before the request body arrived, which
//!   pingora would close the connection after: an upload that asks for a
//!   `100 Continue` keeps its connection alive (RFC 9110 §10.1.1), as with
//!   nginx and HAProxy;
//! - once a shutdown or an upgrade hand-off has begun, the response says
//!   `Connection: close` and the connection is closed after it (RFC 9112
//!   §9.6), so no client sends another request on a connection that is
//!   about to close.
//!
//! [`linger`] is nginx's lingering close: when the answer went out before
//! the client finished sending its request body (an early 413 or 401 to an
//! upload, an error), the rest of the body is read and discarded for up to
//! [`LINGERING_TIME`] before the connection is closed, so the client's TCP
//! stack does not answer unread data with a reset that destroys the answer.
//!
//! [`prepare_session`] sets up the client session before anything is
//! forwarded: HTTP/1.1 pipelining on (RFC 9112 §9.3.2: pipelined requests
//! are answered in order, as nginx and HAProxy do), and for an HTTP/1.0
//! client `Expect` ignored (RFC 9110 §10.1.1) and 1xx answers never relayed
//! (RFC 9110 §15.2).

use http::header::{HeaderName, CONNECTION, EXPECT, TRANSFER_ENCODING, UPGRADE};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::Duration;

/// How long an unread request body is drained after the answer, at most
/// (nginx's `lingering_timeout` is 5 s per read, `lingering_time` 30 s in all).
pub const LINGERING_TIME: Duration = Duration::from_secs(5);

/// Hop-by-hop fields that are never relayed, besides those `Connection`
/// names (RFC 9110 §7.6.1). `Connection` itself is written by pingora for
/// the client connection; `Transfer-Encoding` is re-framed by pingora.
const HOP_BY_HOP: [&str; 3] = ["keep-alive", "proxy-connection", "te"];

/// Sets up the client session of a new request (see the module doc).
pub fn prepare_session(session: &mut Session) {
    session.set_pipelining_enabled(true);
    if is_http10(session) {
        session.set_ignore_info_resp(true);
        session.req_header_mut().remove_header(&EXPECT);
    }
}

/// Sets up the client session for the normal (not raced) proxy path: a
/// client that closes its sending side after a complete request (a TCP
/// half-close) is not gone and still gets its answer (RFC 9112 §9.6;
/// HAProxy's default). A client that closed for good is noticed when the
/// answer cannot be written. A raced request is cancelled on the FIN
/// instead: racing multiplies what a departed client costs the backends.
pub fn prepare_proxied(session: &mut Session) {
    session.set_abort_on_close(false);
}

/// Cleans an upstream response head for the client of `session`.
pub fn clean_response(session: &mut Session, resp: &mut ResponseHeader) {
    let switching = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
    // pingora takes any head written before the request body is in as an
    // early answer and closes the connection after the exchange; a 1xx
    // (`100 Continue`, the very head that asks for the body) is not the
    // answer, so only a final head is held to that rule
    session.set_close_on_response_before_downstream_finish(!resp.status.is_informational());
    if resp.status.as_u16() >= 400 && !session.is_body_done() {
        // a refusal before the request body is in: what the client still
        // sends is read (pingora goes on reading it) with the lingering
        // bound, not the 60 s of a body being uploaded (nginx's
        // `lingering_timeout`; the connection is closed after it)
        session.set_read_timeout(Some(LINGERING_TIME));
    }
    for name in &hop_by_hop_fields(resp, switching) {
        resp.remove_header(name);
    }
    if resp.status.is_informational() {
        return;
    }
    if is_http10(session) && resp.headers.contains_key(TRANSFER_ENCODING) {
        // the body is then delimited by the close (pingora closes a
        // connection whose answer has neither length nor chunking), which
        // the client is told: it may have asked for keep-alive
        resp.remove_header(&TRANSFER_ENCODING);
        session.set_keepalive(None);
    }
    if session.is_process_shutting_down() || crate::linger::retiring() {
        session.set_keepalive(None);
    }
}

/// The fields of `resp` that are hop-by-hop: the standard ones and those
/// its `Connection` header names (see the module doc).
fn hop_by_hop_fields(resp: &ResponseHeader, switching: bool) -> Vec<HeaderName> {
    // one pass over the fields present, with no allocation when none goes;
    // a plain `Connection: keep-alive` or `close` names no field to look for
    let nominates = connection_tokens(resp)
        .any(|t| !(t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive")));
    resp.headers
        .keys()
        .filter(|name| {
            HOP_BY_HOP.contains(&name.as_str())
                || (!switching && *name == UPGRADE)
                || (nominates && named_by_connection(resp, name, switching))
        })
        .cloned()
        .collect()
}

/// Whether `name` may be removed for being named in `Connection`: a framing
/// field named there must not unframe the answer, and a 101 keeps the
/// `Upgrade` it switches to (RFC 9110 §7.8).
fn may_be_nominated(name: &HeaderName, switching: bool) -> bool {
    !(name == TRANSFER_ENCODING
        || name == http::header::CONTENT_LENGTH
        || name == CONNECTION
        || (switching && name == UPGRADE))
}

/// Whether the response's `Connection` header names `name`.
fn named_by_connection(resp: &ResponseHeader, name: &HeaderName, switching: bool) -> bool {
    may_be_nominated(name, switching)
        && connection_tokens(resp).any(|t| t.eq_ignore_ascii_case(name.as_str().as_bytes()))
}

/// The non-empty tokens of the response's `Connection` fields.
fn connection_tokens(resp: &ResponseHeader) -> impl Iterator<Item = &[u8]> {
    resp.headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Drains what is left of the request body after the answer was written,
/// for up to [`LINGERING_TIME`] (see the module doc).
/// Not when the request ended on the client's read timeout (`error`): the
/// client was silent for that long already.
pub async fn linger(session: &mut Session, error: Option<&pingora_core::Error>) {
    if session.response_written().is_none() || session.is_upgrade_req() || session.is_body_done() {
        return;
    }
    let timed_out = |e: &pingora_core::Error| {
        e.esource() == &pingora_core::ErrorSource::Downstream
            && e.etype() == &pingora_core::ErrorType::ReadTimedout
    };
    if error.is_some_and(timed_out) {
        return;
    }
    let _ = tokio::time::timeout(LINGERING_TIME, session.drain_request_body()).await;
}

/// Whether the client spoke HTTP/1.0 (or older).
fn is_http10(session: &Session) -> bool {
    session.req_header().version < http::Version::HTTP_11
}

#[cfg(test)]
mod tests {
    use super::hop_by_hop_fields;
    use pingora_http::ResponseHeader;

    fn fields(connection: &str, switching: bool) -> Vec<String> {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for name in [
            "content-length",
            "transfer-encoding",
            "upgrade",
            "te",
            "keep-alive",
        ] {
            resp.insert_header(name, "x").unwrap();
        }
        for i in 0..10 {
            resp.insert_header(format!("x-f{i}"), "x").unwrap();
        }
        resp.insert_header("connection", connection).unwrap();
        let mut names: Vec<String> = hop_by_hop_fields(&resp, switching)
            .iter()
            .map(|n| n.as_str().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn standard_and_nominated_fields_are_hop_by_hop_framing_never() {
        assert_eq!(fields("keep-alive", false), ["keep-alive", "te", "upgrade"]);
        assert_eq!(
            fields("close, X-F1 ,content-length, Transfer-Encoding", false),
            ["keep-alive", "te", "upgrade", "x-f1"]
        );
        // a 101 keeps the Upgrade it switches to, named or not
        assert_eq!(fields("Upgrade", true), ["keep-alive", "te"]);
        // many nominations at once
        let many = (0..10)
            .map(|i| format!("x-f{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let got = fields(&many, false);
        assert_eq!(got.len(), 13, "{got:?}");
    }
}
