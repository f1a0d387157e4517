//! The write buffer of a client connection, held only while a response is
//! being written.
//!
//! pingora writes a response head and its body in separate writes and
//! flushes at the end; its L4 stream coalesces them with a write buffer of
//! 1,460 bytes (pingora-core `DEFAULT_L4_WRITE_BUFFER_SIZE`) allocated for
//! the connection's whole life, which an idle keep-alive connection keeps.
//! Client connections here have no L4 write buffer (`server::l4_buffers`):
//! [`WriteBuffer`] coalesces the same way (one system call for a head and a
//! small body), and its memory is released when the connection goes idle.
//!
//! Unlike pingora's, it does not hold bytes while the response waits for
//! the backend: pingora reads the client connection whenever it waits (for
//! a request body, or to notice the client leaving), and the client
//! transport ([`super::raw_target::TargetTap`]) writes out what is buffered
//! first. A head and the start of a body that the backend sends before the
//! rest therefore reach the client at once, as with HAProxy and nginx;
//! pingora's own buffer holds them until 1,460 bytes or the end of the
//! body.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::AsyncWrite;

/// Bytes coalesced before they are written: pingora's own default.
pub const CAPACITY: usize = 1460;

/// Writes smaller than [`CAPACITY`] collected until a flush (or until the
/// next one would not fit); larger ones go straight through.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    buf: Vec<u8>,
}

impl WriteBuffer {
    /// Writes `data` to `out` through the buffer.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut W,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.buf.len() + data.len() > CAPACITY {
            ready!(self.poll_drain(out, cx))?;
        }
        if data.len() >= CAPACITY {
            return Pin::new(out).poll_write(cx, data);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(CAPACITY);
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// Writes out what is buffered, then flushes `out`.
    pub fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(out, cx))?;
        Pin::new(out).poll_flush(cx)
    }

    /// Writes out what is buffered, then shuts `out` down.
    pub fn poll_shutdown<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(out, cx))?;
        Pin::new(out).poll_shutdown(cx)
    }

    /// Writes out what is buffered.
    pub fn poll_drain<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut *out).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Whether no bytes wait to be written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Writes out what is buffered if that can be done without waiting,
    /// for a connection being dropped: a response cut by a failure after
    /// its head was sent still gets the bytes that came before the cut, as
    /// pingora's own `l4::Stream` tries on drop.
    pub fn drain_now<W: AsyncWrite + Unpin>(&mut self, out: &mut W) {
        if !self.buf.is_empty() {
            let _ = self.poll_drain(out, &mut Context::from_waker(Waker::noop()));
        }
    }

    /// Releases the memory of an empty buffer (a connection going idle);
    /// bytes not yet written are kept.
    pub fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A writer that records each write call.
    #[derive(Default)]
    struct Calls(Vec<Vec<u8>>);

    impl AsyncWrite for Calls {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write(b: &mut WriteBuffer, out: &mut Calls, data: &[u8]) {
        let n = poll_fn(|cx| b.poll_write(out, cx, data)).await.unwrap();
        assert_eq!(n, data.len());
    }

    #[tokio::test]
    async fn a_head_and_a_small_body_go_out_in_one_write_at_the_flush() {
        let (mut b, mut out) = (WriteBuffer::default(), Calls::default());
        write(&mut b, &mut out, b"HTTP/1.1 200 OK\r\n\r\n").await;
        write(&mut b, &mut out, b"ok\n").await;
        assert!(out.0.is_empty());
        poll_fn(|cx| b.poll_flush(&mut out, cx)).await.unwrap();
        assert_eq!(out.0, vec![b"HTTP/1.1 200 OK\r\n\r\nok\n".to_vec()]);
        b.release();
        assert_eq!(b.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn large_writes_pass_through_in_order() {
        let (mut b, mut out) = (WriteBuffer::default(), Calls::default());
        write(&mut b, &mut out, b"head").await;
        let big = vec![b'x'; CAPACITY];
        write(&mut b, &mut out, &big).await;
        assert_eq!(out.0, vec![b"head".to_vec(), big]);
        // a write that does not fit drains what is there first
        write(&mut b, &mut out, &[b'y'; CAPACITY - 1]).await;
        write(&mut b, &mut out, b"zz").await;
        assert_eq!(out.0.len(), 3);
        assert_eq!(out.0[2].len(), CAPACITY - 1);
        poll_fn(|cx| b.poll_shutdown(&mut out, cx)).await.unwrap();
        assert_eq!(out.0[3], b"zz");
    }

    #[test]
    fn drain_now_writes_what_is_buffered() {
        let (mut b, mut out) = (WriteBuffer::default(), Calls::default());
        b.buf.extend_from_slice(b"head and part of a body");
        b.drain_now(&mut out);
        assert_eq!(out.0, vec![b"head and part of a body".to_vec()]);
        assert!(b.buf.is_empty());
    }

    #[test]
    fn release_keeps_unwritten_bytes() {
        let mut b = WriteBuffer::default();
        b.buf.extend_from_slice(b"pending");
        b.release();
        assert_eq!(b.buf, b"pending");
    }
}
