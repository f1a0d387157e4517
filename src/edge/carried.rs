//! What pingora carries from one request to the next on a keep-alive
//! connection, read back for the edge.
//!
//! When a client pipelines (RFC 9112 §9.3.2), pingora may read bytes of the
//! next request with the previous one and keeps them in the
//! `HttpPersistentSettings` it hands back, to parse them itself next. The
//! edge takes them out instead, so that a pipelined head gets the same
//! checks as any other (its `header_timeout` deadline above all: a client
//! that sends one byte of its next request with the previous one must not
//! escape the deadline). pingora 0.9.1 keeps them, and the remaining
//! keep-alive reuses, in private fields with no getter; the `Debug` form is
//! the one public view of them. It is read as it is written, with no
//! allocation until the field is reached and formatting stopped right after
//! it. The pipelining tests of `tests/integration/relay.rs` and `edge.rs`
//! fail if the form ever changes.

use bytes::{BufMut, BytesMut};
use pingora_core::apps::HttpPersistentSettings;
use std::fmt;

/// What pingora read of the next request with the previous one.
#[derive(Debug)]
pub enum Ahead {
    /// Nothing.
    Nothing,
    /// These bytes, with the keep-alive reuses pingora has left.
    Bytes(BytesMut, Option<u32>),
    /// Some, but its `Debug` form could not be read: pingora then parses
    /// them itself.
    Unreadable,
}

/// What `settings` carry of the next request (see the module doc).
pub fn read_ahead(settings: &HttpPersistentSettings) -> Ahead {
    let mut reader = Reader {
        // the fields before the prefix, in one allocation
        head: String::with_capacity(160),
        ..Reader::default()
    };
    // the reader ends the formatting with an error once it has the field
    let _ = fmt::write(&mut reader, format_args!("{settings:?}"));
    if reader.nothing {
        return Ahead::Nothing;
    }
    let reuses = field(&reader.head, "keepalive_reuses_remaining: ").and_then(|r| match r {
        "None" => Some(None),
        some => Some(Some(
            some.strip_prefix("Some(")?
                .strip_suffix(')')?
                .parse()
                .ok()?,
        )),
    });
    match (reader.prefix, reader.mode, reuses) {
        (Some(prefix), Mode::Done, Some(reuses)) => Ahead::Bytes(prefix, reuses),
        _ => Ahead::Unreadable,
    }
}

/// The text of `field` in a `Debug` form, up to the next `, `.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(name)? + name.len();
    let rest = &text[start..];
    Some(&rest[..rest.find(", ").unwrap_or(rest.len())])
}

const FIELD: &str = "pipelined_prefix: ";
const OPEN: &[u8] = b"Some(b\"";

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum Mode {
    /// Before the field (its text kept in `head`).
    #[default]
    Head,
    /// In the field, this much of [`OPEN`] matched.
    Open(usize),
    /// In the bytes literal.
    Bytes,
    /// After a backslash.
    Escape,
    /// In a `\xHH` escape, with its first digit once read.
    Hex(Option<u8>),
    /// The literal ended: formatting can stop.
    Done,
    /// No bytes (`None`) or an unexpected form.
    Nothing,
}

/// A `fmt::Write` sink that undoes the `Debug` form of the prefix (the
/// `bytes` crate's byte-string escapes) as it is written.
#[derive(Default)]
struct Reader {
    mode: Mode,
    head: String,
    prefix: Option<BytesMut>,
    /// The field was read as `None`.
    nothing: bool,
}

impl Reader {
    fn feed(&mut self, c: u8) -> fmt::Result {
        let push = |r: &mut Reader, b: u8| {
            if let Some(p) = r.prefix.as_mut() {
                p.put_u8(b);
            }
        };
        self.mode = match self.mode {
            Mode::Head => {
                self.head.push(char::from(c));
                if self.head.ends_with(FIELD) {
                    Mode::Open(0)
                } else {
                    Mode::Head
                }
            }
            Mode::Open(n) if c == OPEN[n] && n + 1 == OPEN.len() => {
                self.prefix = Some(BytesMut::new());
                Mode::Bytes
            }
            Mode::Open(n) if c == OPEN[n] => Mode::Open(n + 1),
            Mode::Bytes if c == b'\\' => Mode::Escape,
            Mode::Bytes if c == b'"' => Mode::Done,
            Mode::Bytes => {
                push(self, c);
                Mode::Bytes
            }
            Mode::Escape => {
                let b = match c {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'0' => 0,
                    b'\\' | b'"' => c,
                    b'x' => {
                        self.mode = Mode::Hex(None);
                        return Ok(());
                    }
                    _ => return self.give_up(),
                };
                push(self, b);
                Mode::Bytes
            }
            Mode::Hex(first) => {
                let Some(digit) = char::from(c).to_digit(16) else {
                    return self.give_up();
                };
                let digit = digit as u8;
                match first {
                    None => Mode::Hex(Some(digit)),
                    Some(high) => {
                        push(self, high * 16 + digit);
                        Mode::Bytes
                    }
                }
            }
            Mode::Open(0) if c == b'N' => {
                self.nothing = true;
                return self.give_up();
            }
            // `Some(` of something else
            Mode::Open(_) => return self.give_up(),
            Mode::Done | Mode::Nothing => return Err(fmt::Error),
        };
        if self.mode == Mode::Done {
            return Err(fmt::Error);
        }
        Ok(())
    }

    fn give_up(&mut self) -> fmt::Result {
        self.mode = Mode::Nothing;
        self.prefix = None;
        Err(fmt::Error)
    }
}

impl fmt::Write for Reader {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().try_for_each(|c| self.feed(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fmt::Write;

    fn read(pieces: &[&str]) -> Reader {
        let mut r = Reader::default();
        for piece in pieces {
            if r.write_str(piece).is_err() {
                break;
            }
        }
        r
    }

    #[test]
    fn the_prefix_bytes_are_read_back_across_pieces() {
        let r = read(&[
            "X { keepalive_reuses_remaining: Some(7), pipe",
            "lined_prefix: Some(b\"GET /\\x01 HTTP/1.1\\r\\n\\\\\\\"\\t\\0\") }",
        ]);
        assert_eq!(r.mode, Mode::Done);
        assert_eq!(
            r.prefix.as_deref(),
            Some(&b"GET /\x01 HTTP/1.1\r\n\\\"\t\0"[..])
        );
        assert_eq!(
            field(&r.head, "keepalive_reuses_remaining: "),
            Some("Some(7)")
        );
        let r = read(&["X { pipelined_prefix: None, y: 1 }"]);
        assert_eq!((r.mode, r.prefix, r.nothing), (Mode::Nothing, None, true));
        let r = read(&["X { pipelined_prefix: Some(b\"a\\q\") }"]);
        assert_eq!((r.mode, r.prefix), (Mode::Nothing, None));
    }

    #[tokio::test]
    async fn pingora_settings_are_read() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let stream: pingora_core::protocols::l4::stream::Stream =
            tokio::net::UnixStream::from_std(a).expect("tokio").into();
        let session = pingora_core::protocols::http::ServerSession::new_http1(Box::new(stream));
        let mut settings = HttpPersistentSettings::for_session(&session);
        assert!(matches!(read_ahead(&settings), Ahead::Nothing));
        settings.set_pipelined_prefix(BytesMut::from(&b"GET / HTTP/1.1\r\nX: \xff\r\n"[..]));
        let Ahead::Bytes(prefix, _) = read_ahead(&settings) else {
            panic!("not read: {settings:?}")
        };
        assert_eq!(&prefix[..], b"GET / HTTP/1.1\r\nX: \xff\r\n");
    }
}
