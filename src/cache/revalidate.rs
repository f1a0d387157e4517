//! The 304 merge of a revalidation (RFC 9111 §4.3.4): the fields of the
//! backend's 304 replace the stored header's, where pingora-cache's own
//! merge refreshes only a few. Called from [`super::http::decide`].

use http::header;
use pingora_http::ResponseHeader;

/// Fields of a 304 that never replace the stored ones (RFC 9111 §3.2):
/// those not stored at all (§3.1: hop-by-hop and proxy fields),
/// `Content-Length` and the fields the stored body depends on
/// (`Content-Encoding`, `Content-Range`), `Age` (the cache computes its
/// own) and `Vary` (the stored variant stays where it is, as in
/// pingora-cache).
const KEEP_ON_304: [&str; 14] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authentication-info",
    "content-length",
    "content-encoding",
    "content-range",
    "age",
    "vary",
];

/// The stored header updated from a 304 (RFC 9111 §4.3.4, §3.2): every
/// field of the 304 replaces the stored values of that name, except
/// [`KEEP_ON_304`] and the fields its `Connection` nominates.
/// pingora-cache's own merge refreshes only `Cache-Control`, `Expires`,
/// `ETag` and two CDN fields.
pub(super) fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &ResponseHeader,
) -> ResponseHeader {
    let nominated: Vec<String> = not_modified
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut merged = stored.clone();
    for name in not_modified.headers.keys() {
        let n = name.as_str();
        if KEEP_ON_304.contains(&n) || nominated.iter().any(|t| t == n) {
            continue;
        }
        merged.remove_header(name);
        for value in not_modified.headers.get_all(name) {
            // a name and value pingora parsed once cannot fail again
            let _ = merged.append_header(name.clone(), value.clone());
        }
    }
    merged
}
