//! The client connection's byte stream as hyper sees it.
//!
//! Two things hyper's own connection types cannot do for us:
//! - replay bytes read ahead of hyper (the HTTP/2 preface sniff, the first read of a parked
//!   connection) before the socket's;
//! - tell whether the connection is *quiet*: everything hyper wrote has been flushed and its
//!   last read found nothing to read. Only then may an idle HTTP/1.1 connection be parked (its
//!   hyper state dropped, buffers and all) without losing a byte in either direction;
//! - tell since when its writes have been blocked by a client that does not read (the send
//!   timeout closes the connection);
//! - send a static file's bytes from the page cache to the socket with `sendfile`, never
//!   copying them through user space (see [`FileRegions`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The HTTP/2 connection preface (RFC 9113 §3.4): a client speaking HTTP/2 without TLS
/// negotiation (h2c prior knowledge, or ALPN `h2`) starts with it.
pub(super) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a connection is quiet, and since when its writes are blocked, shared between its
/// [`ClientIo`] (inside hyper) and the task serving it.
#[derive(Debug, Default)]
pub struct Quiet {
    /// Written since the last completed flush.
    unflushed: AtomicBool,
    /// The last read found nothing to read.
    read_blocked: AtomicBool,
    /// When the last write or flush found the client not reading (a [`waiting_mark`]); 0 while
    /// writes go through.
    write_blocked_since: AtomicU64,
}

/// The clock of waiting marks: a process-wide start, so an instant fits in an atomic.
static WAIT_CLOCK: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

/// Now, as a mark of since when something waits on the client: milliseconds on [`WAIT_CLOCK`],
/// plus one, so that 0 can mean "not waiting".
pub(super) fn waiting_mark() -> u64 {
    let ms = WAIT_CLOCK.elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

/// How long something has waited at `now`, from its [`waiting_mark`]; `None` for 0.
pub(super) fn waited_for(mark: u64, now: std::time::Instant) -> Option<std::time::Duration> {
    (mark != 0).then(|| {
        let since = *WAIT_CLOCK + std::time::Duration::from_millis(mark - 1);
        now.saturating_duration_since(since)
    })
}

impl Quiet {
    /// Everything written is flushed and the last read was waiting for the client.
    pub fn is_quiet(&self) -> bool {
        self.read_blocked.load(Ordering::Relaxed) && !self.unflushed.load(Ordering::Relaxed)
    }

    /// How long the client has taken none of what is being written to it, at `now`; `None`
    /// while writes go through.
    pub fn write_blocked_for(&self, now: std::time::Instant) -> Option<std::time::Duration> {
        waited_for(self.write_blocked_since.load(Ordering::Relaxed), now)
    }

    /// Notes what a write (or a waiting flush) found: blocked (from when), or going through.
    /// One load per write while writes go through.
    fn note_write<T>(&self, polled: &Poll<io::Result<T>>) {
        let blocked = self.write_blocked_since.load(Ordering::Relaxed) != 0;
        match polled {
            Poll::Pending if !blocked => {
                self.write_blocked_since
                    .store(waiting_mark(), Ordering::Relaxed);
            }
            Poll::Ready(_) if blocked => self.write_blocked_since.store(0, Ordering::Relaxed),
            _ => {}
        }
    }
}

/// A stream a client connection is served on.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The socket itself, when what is written goes to it as it is (not through TLS): a file
    /// can then be sent with `sendfile`.
    fn plain_socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl ClientStream for TcpStream {
    fn plain_socket(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {}

impl ClientStream for tokio::io::DuplexStream {}

/// Parts of files a response body hands to the connection's socket by reference.
///
/// hyper writes what a body yields; it cannot send a file. So the static-file phase yields a
/// *placeholder* for each part of a file (bytes of one shared zeroed region, of the part's
/// length: hyper's framing and counting stay right) and queues the part here. When hyper writes
/// a placeholder, [`ClientIo`] sends the queued part with `sendfile` in its place. hyper writes
/// in order, so the front of the queue is always the placeholder being written; anything else
/// is a broken invariant and fails the connection rather than send zeroes.
///
/// Only for HTTP/1.x on a plain socket: HTTP/2 and TLS copy what they send into frames or
/// records, and would send the placeholder's zeroes.
#[derive(Debug, Default)]
pub struct FileRegions {
    queue: Mutex<VecDeque<FileRegion>>,
}

#[derive(Debug)]
struct FileRegion {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// How much of it has been sent.
    sent: usize,
}

/// The largest part of a file one placeholder stands for.
pub const MAX_FILE_REGION: usize = 1 << 20;

/// The placeholders' bytes: zeroes, allocated once and never touched (the pages are mapped
/// lazily, so this costs address space, not memory).
static PLACEHOLDER: LazyLock<&'static [u8]> =
    LazyLock::new(|| Box::leak(vec![0u8; MAX_FILE_REGION].into_boxed_slice()));

fn placeholder_offset(buf: &[u8]) -> Option<usize> {
    let at = (buf.as_ptr() as usize).checked_sub(PLACEHOLDER.as_ptr() as usize)?;
    (at < MAX_FILE_REGION).then_some(at)
}

// === impl FileRegions ===

impl FileRegions {
    /// Queues `len` bytes of `file` from `offset` (`len` ≤ [`MAX_FILE_REGION`]) and returns the
    /// placeholder that stands for them in the body.
    pub fn push(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        assert!(
            len <= MAX_FILE_REGION,
            "file region larger than its placeholder"
        );
        self.lock().push_back(FileRegion {
            file,
            offset,
            len,
            sent: 0,
        });
        Bytes::from_static(&PLACEHOLDER[..len])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<FileRegion>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends (part of) the front region, which `buf`, a placeholder, stands for.
    fn send_front(&self, socket: &TcpStream, buf: &[u8], at: usize) -> io::Result<usize> {
        let mut queue = self.lock();
        let Some(front) = queue.front_mut() else {
            return Err(out_of_step());
        };
        if at != front.sent || buf.len() != front.len - front.sent {
            return Err(out_of_step());
        }
        let mut offset = front.offset + at as u64;
        let n = rustix::fs::sendfile(socket, &*front.file, Some(&mut offset), buf.len())?;
        if n == 0 {
            return Err(file_shrank());
        }
        front.sent += n;
        if front.sent == front.len {
            queue.pop_front();
        }
        Ok(n)
    }
}

/// A file that ends before the part of it a response declared: it shrank since it was opened,
/// and the response cannot be what it said.
pub fn file_shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "file shorter than when its response began",
    )
}

fn out_of_step() -> io::Error {
    io::Error::other("file placeholder written out of step with its queue")
}

/// A client stream with bytes to replay first, reporting whether it is quiet.
pub struct ClientIo<IO> {
    io: IO,
    prefix: Bytes,
    quiet: Arc<Quiet>,
    /// Set on plain sockets: see [`FileRegions`].
    files: Option<Arc<FileRegions>>,
}

/// Parts written in one vectored write at most.
pub const MAX_WRITE_PARTS: usize = 16;

impl<IO: ClientStream> ClientIo<IO> {
    /// Writes the front of `parts` (up to [`MAX_WRITE_PARTS`] of them) with one vectored write
    /// and drops what went; how many bytes went. A write of nothing is an error: the client
    /// takes no more.
    pub fn poll_write_parts(
        &mut self,
        cx: &mut Context<'_>,
        parts: &mut VecDeque<Bytes>,
    ) -> Poll<io::Result<usize>> {
        let mut slices = [io::IoSlice::new(&[]); MAX_WRITE_PARTS];
        let n = parts.len().min(MAX_WRITE_PARTS);
        for (slice, part) in slices.iter_mut().zip(&*parts) {
            *slice = io::IoSlice::new(part);
        }
        let written = ready!(Pin::new(&mut *self).poll_write_vectored(cx, &slices[..n]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        let mut left = written;
        while left > 0 {
            let front = parts.front_mut().expect("written from these parts");
            if front.len() <= left {
                left -= front.len();
                parts.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
        Poll::Ready(Ok(written))
    }

    pub fn new(io: IO) -> Self {
        let files = io.plain_socket().map(|_| Arc::default());
        Self {
            io,
            prefix: Bytes::new(),
            quiet: Arc::default(),
            files,
        }
    }

    /// Where an HTTP/1.x response may queue parts of files for this connection's socket; none
    /// on TLS.
    pub fn file_regions(&self) -> Option<Arc<FileRegions>> {
        self.files.clone()
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

impl<IO: ClientStream> ClientIo<IO> {
    /// Writes `bufs`, some of which are file placeholders, in one system call: the plain
    /// buffers before the first placeholder with `sendmsg` (`MSG_MORE`: the file follows in
    /// the same segments, as nginx's `tcp_nopush` does), or, when a placeholder comes first,
    /// its file region with `sendfile`.
    fn poll_write_with_files(
        &self,
        cx: &mut Context<'_>,
        files: &FileRegions,
        bufs: &[io::IoSlice<'_>],
        first_file: usize,
    ) -> Poll<io::Result<usize>> {
        let Some(socket) = self.io.plain_socket() else {
            return Poll::Ready(Err(out_of_step()));
        };
        loop {
            ready!(socket.poll_write_ready(cx))?;
            let sent = socket.try_io(Interest::WRITABLE, || match first_file {
                0 => {
                    let at = placeholder_offset(&bufs[0]).expect("a placeholder");
                    files.send_front(socket, &bufs[0], at)
                }
                n => Ok(rustix::net::sendmsg(
                    socket,
                    &bufs[..n],
                    &mut SendAncillaryBuffer::default(),
                    SendFlags::MORE | SendFlags::NOSIGNAL,
                )?),
            });
            match sent {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
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

impl<IO: ClientStream> AsyncWrite for ClientIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.quiet.unflushed.store(true, Ordering::Relaxed);
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.quiet.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.quiet.unflushed.store(true, Ordering::Relaxed);
        let polled = if let Some(files) = &self.files
            && let Some(first) = bufs.iter().position(|b| placeholder_offset(b).is_some())
        {
            self.poll_write_with_files(cx, files, bufs, first)
        } else {
            Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
        };
        self.quiet.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            self.quiet.unflushed.store(false, Ordering::Relaxed);
        }
        // A flush that goes through says nothing of the client on a plain socket (a no-op
        // there); one that waits does (TLS records it could not write).
        if polled.is_pending() {
            self.quiet.note_write(&polled);
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
    use std::io::IoSlice;
    use std::time::Duration;
    use tokio::io::{AsyncWriteExt, duplex};

    /// A connected pair of loopback sockets: the client's end, and the server's in a ClientIo.
    async fn socket_pair() -> (TcpStream, ClientIo<TcpStream>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, ClientIo::new(server))
    }

    /// Writes `parts` through `poll_write_vectored` as hyper does: whatever is left of them,
    /// advanced by what each call wrote.
    async fn write_all_vectored(io: &mut ClientIo<TcpStream>, parts: &[&[u8]]) -> io::Result<()> {
        let mut parts = parts.to_vec();
        while !parts.is_empty() {
            let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            let mut n = io.write_vectored(&slices).await?;
            while n > 0 {
                let first = parts[0].len().min(n);
                parts[0] = &parts[0][first..];
                n -= first;
                if parts[0].is_empty() {
                    parts.remove(0);
                }
            }
        }
        Ok(())
    }

    fn file_with(bytes: &[u8]) -> Arc<File> {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        Arc::new(file)
    }

    #[tokio::test]
    async fn a_file_placeholder_goes_out_as_the_files_bytes() {
        let (mut client, mut io) = socket_pair().await;
        let files = io.file_regions().expect("a plain socket takes files");
        let file = file_with(b"0123456789abcdef");
        let first = files.push(file.clone(), 4, 8);
        let second = files.push(file, 0, 2);
        assert!(
            first.iter().all(|&b| b == 0),
            "a placeholder is not the file"
        );
        write_all_vectored(&mut io, &[b"head:", &first, b":", &second, b":tail"])
            .await
            .unwrap();
        io.flush().await.unwrap();
        let mut read = vec![0u8; 21];
        client.read_exact(&mut read).await.unwrap();
        assert_eq!(read, b"head:456789ab:01:tail");
        assert!(files.lock().is_empty(), "every region sent is dropped");
    }

    #[tokio::test]
    async fn a_placeholder_out_of_step_with_its_queue_fails_instead_of_sending_zeroes() {
        let (mut client, mut io) = socket_pair().await;
        let files = io.file_regions().unwrap();
        // A placeholder nothing was queued for.
        let stray = Bytes::from_static(&PLACEHOLDER[..6]);
        let err = write_all_vectored(&mut io, &[&stray]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        // One written from another place than the queue's front has reached.
        let queued = files.push(file_with(b"abcdef"), 0, 6);
        let err = write_all_vectored(&mut io, &[&queued[2..]])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        drop(io);
        let mut read = Vec::new();
        client.read_to_end(&mut read).await.unwrap();
        assert!(read.is_empty(), "sent {read:?}");
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_region_fails_the_write_after_what_it_has() {
        let (mut client, mut io) = socket_pair().await;
        let files = io.file_regions().unwrap();
        let placeholder = files.push(file_with(b"abc"), 0, 6);
        let err = write_all_vectored(&mut io, &[&placeholder])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        drop(io);
        let mut read = Vec::new();
        client.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"abc");
    }

    #[tokio::test]
    async fn streams_other_than_plain_sockets_take_no_files() {
        let (_, server) = duplex(64);
        assert!(ClientIo::new(server).file_regions().is_none());
    }

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
    async fn writes_blocked_by_a_client_not_reading_are_timed_until_it_reads() {
        let (mut client, server) = duplex(64);
        let mut io = ClientIo::new(server);
        let quiet = io.quiet();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let now = std::time::Instant::now;
        assert_eq!(quiet.write_blocked_for(now()), None, "nothing written yet");
        // The client's side holds 64 bytes: the first write fills it, the second waits.
        let chunk = [b'x'; 64];
        assert!(Pin::new(&mut io).poll_write(&mut cx, &chunk).is_ready());
        assert_eq!(quiet.write_blocked_for(now()), None);
        assert!(Pin::new(&mut io).poll_write(&mut cx, &chunk).is_pending());
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Retried and still waiting: blocked since the first time, not since the retry.
        assert!(Pin::new(&mut io).poll_write(&mut cx, &chunk).is_pending());
        let blocked = quiet.write_blocked_for(now()).expect("blocked");
        assert!(blocked >= Duration::from_millis(25), "{blocked:?}");
        // The client reads: the next write goes through, and the clock stops.
        let mut buf = [0u8; 64];
        client.read_exact(&mut buf).await.unwrap();
        assert!(Pin::new(&mut io).poll_write(&mut cx, &chunk).is_ready());
        assert_eq!(quiet.write_blocked_for(now()), None);
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
