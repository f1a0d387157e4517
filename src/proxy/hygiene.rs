//! Request hygiene (SPEC §3, README "Request hygiene"): what a request may
//! carry into a backend when its framing or its header names could be read
//! two ways. Never more lenient than nginx or HAProxy.
//!
//! pingora's HTTP/1 parser decides first (it answers its own bare 400 and
//! closes the connection before any phase of ours runs): `Content-Length`s
//! with different values, an invalid one, a final transfer coding other than
//! `chunked`, `Transfer-Encoding` on HTTP/1.0, obs-fold. It also drops a
//! `Content-Length` that comes beside `Transfer-Encoding` (RFC 9112 §6.3)
//! and closes the connection after that request. What it lets through and
//! this module settles, in the first phase of ours (`request_filter`, before
//! any backend is chosen):
//!
//! | request | answer |
//! |---|---|
//! | a request target with control bytes, a bare space, `"`, `<` or `>` | 400 (RFC 9112 §3.2; pingora would forward it percent-escaped) |
//! | `chunked` more than once (`chunked, chunked`, two header lines) | 400 (RFC 9112 §7: chunked is never applied twice) |
//! | another transfer coding (`gzip, chunked`) | 501 (RFC 9112 §6.1: a coding the proxy does not implement) |
//! | identical `Content-Length`s (`1000,1000`, repeated lines) | forwarded as one value (RFC 9110 §8.6 allows it; HAProxy does the same) |
//! | a header name with `_` | dropped before forwarding unless `server.underscores_in_headers` (nginx's default) |

use pingora_http::RequestHeader;

/// Why a request is refused: status and the `error` text of the JSON body.
pub type Refusal = (u16, &'static str);

/// A request target with bytes outside RFC 9112 §3.2's grammar (control
/// bytes, space, `"`, `<`, `>`), raw or as pingora escaped them (see
/// [`super::raw_target`]).
pub const BAD_TARGET: Refusal = (
    400,
    "malformed request: request target holds bytes RFC 9112 does not allow",
);

/// Checks the framing headers of `req`; `Err` when it must be refused.
pub fn check_framing(req: &RequestHeader) -> Result<(), Refusal> {
    let mut codings = req
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&c| c == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => {}
        (Some(only), None) if only.eq_ignore_ascii_case(b"chunked") => {}
        _ => {
            let chunked = req
                .headers
                .get_all(http::header::TRANSFER_ENCODING)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&c| c == b','))
                .filter(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                .count();
            return Err(if chunked > 1 {
                (
                    400,
                    "malformed request: chunked transfer coding applied twice",
                )
            } else {
                (501, "transfer coding not implemented (only chunked)")
            });
        }
    }
    let mut lengths = content_lengths(req);
    if let Some(first) = lengths.next() {
        if lengths.any(|v| v != first) {
            // pingora refuses these first; kept so that this rule holds alone
            return Err((400, "malformed request: conflicting Content-Length"));
        }
    }
    Ok(())
}

/// Every `Content-Length` value of `req`, lists split.
fn content_lengths(req: &RequestHeader) -> impl Iterator<Item = &[u8]> {
    req.headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&c| c == b','))
        .map(<[u8]>::trim_ascii)
}

/// Rewrites `req` (already through [`check_framing`]) into what a backend
/// may see: one `Content-Length` value instead of a list or repeats, and no
/// header whose name contains `_` unless `allow_underscores`.
pub fn normalise(req: &mut RequestHeader, allow_underscores: bool) {
    if content_lengths(req).nth(1).is_some() {
        let first = content_lengths(req).next().map(<[u8]>::to_vec);
        if let Some(one) = first {
            req.remove_header(&http::header::CONTENT_LENGTH);
            if let Ok(v) = http::HeaderValue::from_bytes(&one) {
                let _ = req.insert_header(http::header::CONTENT_LENGTH, v);
            }
        }
    }
    if !allow_underscores && req.headers.keys().any(|n| n.as_str().contains('_')) {
        let names: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|n| n.as_str().contains('_'))
            .cloned()
            .collect();
        for n in names {
            req.remove_header(&n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/", None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn transfer_codings() {
        let te = |v: &[&str]| {
            let h: Vec<_> = v.iter().map(|v| ("Transfer-Encoding", *v)).collect();
            check_framing(&req(&h)).map_err(|(c, _)| c)
        };
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked "]), Ok(()));
        assert_eq!(te(&["chunked, chunked"]), Err(400));
        assert_eq!(te(&["chunked", "chunked"]), Err(400));
        assert_eq!(te(&["gzip, chunked"]), Err(501));
        assert_eq!(te(&["gzip", "chunked"]), Err(501));
    }

    #[test]
    fn identical_content_lengths_become_one() {
        let mut r = req(&[("Content-Length", "1000,1000")]);
        assert_eq!(check_framing(&r), Ok(()));
        normalise(&mut r, false);
        let all: Vec<_> = r.headers.get_all("content-length").iter().collect();
        assert_eq!(all, vec!["1000"]);

        let mut r = req(&[("Content-Length", "5"), ("Content-Length", "5")]);
        normalise(&mut r, false);
        assert_eq!(r.headers.get_all("content-length").iter().count(), 1);

        let r = req(&[("Content-Length", "5"), ("Content-Length", "6")]);
        assert_eq!(check_framing(&r).map_err(|(c, _)| c), Err(400));
    }

    #[test]
    fn underscore_names_are_dropped_unless_allowed() {
        let mut r = req(&[("X_Forwarded_For", "1.2.3.4"), ("X-Ok", "1")]);
        normalise(&mut r, false);
        assert!(r.headers.get("x_forwarded_for").is_none());
        assert!(r.headers.get("x-ok").is_some());
        let mut r = req(&[("X_Forwarded_For", "1.2.3.4")]);
        normalise(&mut r, true);
        assert!(r.headers.get("x_forwarded_for").is_some());
    }
}
