//! The client connection's byte stream as hyper sees it.
//!
//! Two things hyper's own connection types cannot do for us:
//! - replay bytes read ahead of hyper (the HTTP/2 preface sniff, the first read of a parked
//!   connection) before the socket's;
//! - tell whether the connection is *quiet*: everything hyper wrote has been flushed and its
//!   last read found nothing to read. Only then may an idle HTTP/1.1 connection be parked (its
//!   hyper state dropped, buffers and all) without losing a byte in either direction.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4): a client speaking HTTP/2 without TLS
/// negotiation (h2c prior knowledge, or ALPN `h2`) starts with it.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a connection is quiet, shared between its [`ClientIo`] (inside hyper) and the task
/// serving it.
#[derive(Debug, Default)]
pub struct Quiet {
    /// Written since the last completed flush.
    unflushed: AtomicBool,
    /// The last read found nothing to read.
    read_blocked: AtomicBool,
}

impl Quiet {
    /// Everything written is flushed and the last read was waiting for the client.
    pub fn is_quiet(&self) -> bool {
        self.read_blocked.load(Ordering::Relaxed) && !self.unflushed.load(Ordering::Relaxed)
    }
}

/// A client stream with bytes to replay first, reporting whether it is quiet.
pub struct ClientIo<IO> {
    io: IO,
    prefix: Bytes,
    quiet: Arc<Quiet>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ClientIo<IO> {
    pub fn new(io: IO) -> Self {
        Self {
            io,
            prefix: Bytes::new(),
            quiet: Arc::default(),
        }
    }

    pub fn quiet(&self) -> Arc<Quiet> {
        self.quiet.clone()
    }

    /// Puts bytes read but not yet used (hyper's read buffer when its state is dropped) in
    /// front of the stream. Copied: hyper's buffer shares an 8 KiB allocation.
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut joined = Vec::with_capacity(bytes.len() + self.prefix.len());
        joined.extend_from_slice(bytes);
        joined.extend_from_slice(&self.prefix);
        self.prefix = joined.into();
    }

    /// Reads the start of the connection until it is known whether it is HTTP/2 (the preface)
    /// or not; what was read is replayed to the server that takes it. `Ok(None)`: the client
    /// closed first.
    pub async fn sniff_http2(&mut self) -> io::Result<Option<bool>> {
        let mut start = [0u8; H2_PREFACE.len()];
        let mut len = 0;
        let is_h2 = loop {
            let n = self.io.read(&mut start[len..]).await?;
            if n == 0 {
                return Ok(None);
            }
            len += n;
            if start[..len] != H2_PREFACE[..len] {
                break false;
            }
            if len == H2_PREFACE.len() {
                break true;
            }
        };
        self.unread(&start[..len]);
        Ok(Some(is_h2))
    }

    /// Waits, holding no buffer but a small one on the stack, until the client sends
    /// something; that is replayed to the next server. `Ok(false)`: the client closed.
    pub async fn wait_for_data(&mut self) -> io::Result<bool> {
        // Small: this buffer is part of every parked connection's task. hyper reads the rest.
        let mut first = [0u8; 64];
        let n = self.io.read(&mut first).await?;
        self.unread(&first[..n]);
        Ok(n > 0)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ClientIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            // And what the socket has after it, in the same read: hyper grows its buffer to
            // 16 KiB when a request head takes two reads. An error shows at the next read.
            if self.prefix.is_empty() && buf.remaining() > 0 {
                let _ = Pin::new(&mut self.io).poll_read(cx, buf);
            }
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        self.quiet
            .read_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ClientIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.quiet.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.quiet.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            self.quiet.unflushed.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, duplex};

    #[tokio::test]
    async fn the_http2_preface_is_recognised_and_replayed() {
        let (mut client, server) = duplex(1024);
        client.write_all(H2_PREFACE).await.unwrap();
        client.write_all(b"\0\0\0\x04").await.unwrap();
        let mut io = ClientIo::new(server);
        assert_eq!(io.sniff_http2().await.unwrap(), Some(true));
        let mut read = vec![0u8; 28];
        io.read_exact(&mut read).await.unwrap();
        assert_eq!(&read[..24], H2_PREFACE);
        assert_eq!(&read[24..], b"\0\0\0\x04");
    }

    #[tokio::test]
    async fn http1_is_known_at_the_first_byte_that_differs_and_replayed() {
        let (mut client, server) = duplex(1024);
        // "P" matches the preface, "U" does not: no wait for 24 bytes that may never come.
        client.write_all(b"PU").await.unwrap();
        let mut io = ClientIo::new(server);
        assert_eq!(io.sniff_http2().await.unwrap(), Some(false));
        client.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
        let mut read = vec![0u8; 16];
        io.read_exact(&mut read).await.unwrap();
        assert_eq!(read, b"PUT / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_client_closing_before_a_byte_is_not_a_protocol() {
        let (client, server) = duplex(1024);
        drop(client);
        assert_eq!(ClientIo::new(server).sniff_http2().await.unwrap(), None);
    }

    #[tokio::test]
    async fn quiet_means_flushed_and_waiting_for_the_client() {
        let (mut client, server) = duplex(1024);
        let mut io = ClientIo::new(server);
        let quiet = io.quiet();
        assert!(!quiet.is_quiet(), "nothing read yet");
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 8];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(n, 3);
        // A read that finds nothing: waiting for the client.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut rb = ReadBuf::new(&mut buf);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut rb).is_pending());
        assert!(quiet.is_quiet());
        // Written and not flushed: not quiet, whatever the reads say.
        assert!(
            Pin::new(&mut io)
                .poll_write(&mut cx, b"HTTP/1.1 200 OK\r\n")
                .is_ready()
        );
        assert!(!quiet.is_quiet());
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert!(quiet.is_quiet());
    }

    #[tokio::test]
    async fn unread_bytes_come_before_the_stream_and_before_older_unread_bytes() {
        let (mut client, server) = duplex(1024);
        let mut io = ClientIo::new(server);
        client.write_all(b"third").await.unwrap();
        io.unread(b"second ");
        io.unread(b"first ");
        let mut read = vec![0u8; 18];
        io.read_exact(&mut read).await.unwrap();
        assert_eq!(read, b"first second third");
    }
}
