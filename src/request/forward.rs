//! Headers the proxy adds to the upstream request: `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Request-Id` (when the
//! client sent none).
//!
//! Hop-by-hop headers, including those named in `Connection`, are already
//! stripped by pingora's default upstream request policy, which also passes
//! WebSocket upgrades through; the client's `Host` is kept as is.

use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Adds the forwarding headers to `req` for the client of `session`.
pub fn add_forwarding_headers(session: &Session, req: &mut RequestHeader) -> Result<()> {
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string());
    if let Some(ip) = client_ip {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{}, {ip}", prev.trim()),
            _ => ip,
        };
        req.insert_header("x-forwarded-for", xff)?;
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    req.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
    let host = req.headers.get(http::header::HOST).cloned().or_else(|| {
        req.uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(host) = host {
        req.insert_header("x-forwarded-host", host)?;
    }
    if !req.headers.contains_key("x-request-id") {
        req.insert_header("x-request-id", request_id())?;
    }
    Ok(())
}

/// A random 128-bit request id as 32 lowercase hex digits.
pub fn request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u128>();
    let digits = (0..32)
        .rev()
        .map(|i| HEX[((n >> (i * 4)) & 0xf) as usize] as char);
    digits.collect()
}

#[cfg(test)]
mod tests {
    use super::request_id;

    #[test]
    fn request_ids_are_32_lowercase_hex_digits_and_differ() {
        let a = request_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, request_id());
    }
}
