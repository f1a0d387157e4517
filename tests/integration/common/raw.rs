//! [`RawConn`]: one keep-alive connection sending bytes as given (requests
//! no client library sends), answers parsed by `httparse`; answer bodies
//! must carry a `Content-Length`.

use super::client::{find_header, Response};
use super::CLIENT_TIMEOUT;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> io::Result<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(RawConn { stream, buf: Vec::new() })
    }

    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())?;
        self.read_response()
    }

    /// Reads one final answer (1xx skipped): its head, then `Content-Length`
    /// body bytes. An error when the connection ends first.
    pub fn read_response(&mut self) -> io::Result<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            let status = parsed.parse(&self.buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let httparse::Status::Complete(head_len) = status else {
                self.fill()?;
                continue;
            };
            let code = parsed.code.unwrap_or(0);
            let fields: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_string()))
                .collect();
            if (100..200).contains(&code) {
                self.buf.drain(..head_len);
                continue;
            }
            let len = find_header(&fields, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while self.buf.len() < head_len + len {
                self.fill()?;
            }
            let body = self.buf[head_len..head_len + len].to_vec();
            self.buf.drain(..head_len + len);
            return Ok(Response { status: code, headers: fields, body, chunked: false });
        }
    }

    /// Reads more bytes; an `UnexpectedEof` error when the peer closed.
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk)? {
            0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")),
            n => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }
}
