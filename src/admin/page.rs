//! `GET /` on the admin listener: the live status page, one self-contained
//! HTML file (`page.html`: inline CSS and JavaScript, no external fonts,
//! scripts or images) compiled into the binary.
//!
//! The page itself carries no data, so it loads without the token; it
//! fetches `/status` and `/status/series` with `Authorization: Bearer`,
//! asking for the token once and keeping it in the tab's `sessionStorage`
//! (never in a URL). A Content-Security-Policy forbids every origin but the
//! admin listener itself.

use http::{Response, StatusCode};

/// The page.
const PAGE: &str = include_str!("page.html");

/// Only this origin for fetches; inline script and style only from the page.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The page as a response.
pub fn response() -> Response<Vec<u8>> {
    let mut r = super::respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        PAGE.as_bytes().to_vec(),
    );
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(CSP),
    );
    h.insert(
        http::header::X_FRAME_OPTIONS,
        http::HeaderValue::from_static("DENY"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    r
}
