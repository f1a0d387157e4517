//! Headers the proxy adds to the upstream request: `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Request-Id` (when the
//! client sent none).
//!
//! Hop-by-hop headers, including those named in `Connection`, are already
//! stripped by pingora's default upstream request policy, which also passes
//! WebSocket upgrades through; the client's `Host` is kept as is.

use bytes::{BufMut, BytesMut};
use http::HeaderValue;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::net::IpAddr;

/// Adds the forwarding headers to `req` for the client of `session`.
///
/// This runs for every proxied request, so values are built as bytes and
/// handed to `HeaderValue` without `format!` (one allocation each).
pub fn add_forwarding_headers(session: &Session, req: &mut RequestHeader) -> Result<()> {
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    if let Some(ip) = client_ip {
        let prev = req
            .headers
            .get("x-forwarded-for")
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|v| !v.is_empty());
        let mut xff = BytesMut::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
        if let Some(prev) = prev {
            xff.put_slice(prev);
            xff.put_slice(b", ");
        }
        put_ip(&mut xff, ip);
        // the previous value was a valid field value, the IP is ASCII
        if let Ok(v) = HeaderValue::from_maybe_shared(xff.freeze()) {
            req.insert_header("x-forwarded-for", v)?;
        }
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    req.insert_header("x-forwarded-proto", proto)?;
    let host = req.headers.get(http::header::HOST).cloned().or_else(|| {
        req.uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(host) = host {
        req.insert_header("x-forwarded-host", host)?;
    }
    if !req.headers.contains_key("x-request-id") {
        req.insert_header("x-request-id", request_id())?;
    }
    Ok(())
}

/// Appends the text form of `ip` (dotted quad; RFC 5952 for IPv6).
fn put_ip(out: &mut BytesMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.put_u8(b'.');
                }
                if octet >= 100 {
                    out.put_u8(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.put_u8(b'0' + octet / 10 % 10);
                }
                out.put_u8(b'0' + octet % 10);
            }
        }
        IpAddr::V6(_) => {
            use std::fmt::Write;
            let mut text = String::with_capacity(39);
            let _ = write!(text, "{ip}");
            out.put_slice(text.as_bytes());
        }
    }
}

/// A new request id: 128 random bits as 32 lowercase hex digits.
fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u128>();
    let digits: [u8; 32] = std::array::from_fn(|i| HEX[((n >> ((31 - i) * 4)) & 0xf) as usize]);
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&digits))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::{put_ip, request_id};
    use bytes::BytesMut;

    #[test]
    fn request_ids_are_32_lowercase_hex_digits_and_differ() {
        let a = request_id().to_str().unwrap().to_string();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, request_id().to_str().unwrap());
    }

    #[test]
    fn client_ips_are_written_as_std_does() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "9.99.199.200",
            "::1",
            "2001:db8::8:1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = BytesMut::new();
            put_ip(&mut out, ip);
            assert_eq!(&out[..], ip.to_string().as_bytes());
        }
    }
}
