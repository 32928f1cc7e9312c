//! HTTP/2 served by Gatehouse itself: frames, HPACK, streams and flow control, all in the
//! connection's own task.
//!
//! Why not h2 under hyper: an HTTP/2 request walked some 170 KiB of machine code there (h2's
//! connection, stream store, codec and HPACK, hyper's glue, then ours), and at a thousand
//! connections with one stream each that code is fetched anew for every request: callgrind
//! counted 2,781 instruction-cache misses per h2c request against 1,587 for an HTTP/1.1 one
//! (benches/README.md). What a server of an ingress needs of HTTP/2 is smaller: no push, no
//! priorities, no client side.
//!
//! The shape: a [`Connection`] future per client connection, polled by its task under
//! `server::Watch`. It owns the socket, both HPACK tables and its streams. A stream's handler
//! (the phases) and then its response body are polled by the connection with a waker of the
//! stream's own, so a wake-up polls that stream only. A request body reaches its handler through
//! a small shared queue ([`RequestBody`]), the one part another task may touch. A client that
//! resets a stream drops its handler there and then; the upstream work the handler leaves behind
//! counts against the stream limit until it ends ([`Lingering`]), and a stream opened meanwhile
//! past the limit is held, not started. A client told to go for abandoning too many requests
//! has its new streams refused, and its GOAWAY once its work upstream is over: its next
//! connection does not add to what this one still has going.

pub mod frame;
pub mod hpack;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame as BodyFrame, SizeHint};
use tokio::io::AsyncWrite;

use self::frame::{Frame, FrameError, Reason};
use self::hpack::{DecodeError, Field};
use super::ConnInfo;
use super::client_io::{ClientIo, ClientStream};
use super::h2_streams::Slot;
use super::lingering::Lingering;
use crate::body::{BoxBody, BoxError};

/// A stream's flow-control window for request bodies, and the connection's: as hyper's server
/// had them (an upload is not held back by the client waiting for window).
const STREAM_WINDOW: u32 = 1 << 20;
const CONN_WINDOW: u32 = 1 << 20;
/// The HPACK table every HTTP/2 connection starts with (RFC 9113 6.5.2).
const HPACK_TABLE_SIZE: usize = 4_096;
/// Taken request-body bytes are given back (WINDOW_UPDATE) once this share of a window is owed:
/// one frame per quarter window, not one per DATA frame.
const WINDOW_UPDATE_AT: u32 = 4;
/// Output queued beyond this is not added to by response bodies until the client takes some.
const WRITE_HIGH: usize = 64 * 1024;
/// Output queued beyond this stops reading: a client sending PINGs or SETTINGS without reading
/// the answers fills nothing but its own connection's queue, up to here.
const READ_STOP: usize = 256 * 1024;
/// Rounds of reading, polling streams and writing in one poll of a connection, after which
/// it yields to the worker's other tasks.
const TURNS_PER_POLL: usize = 16;
/// How much a read asks for once the client is sending more than a first read holds.
const READ_CHUNK: usize = 16 * 1024;
/// How much the first read after an idle spell asks for: a request's frames fit, and it is a
/// small allocation, taken from the thread's cache. 16 KiB is a large one in jemalloc, which at
/// a thousand connections of one request each went to the arena's extents at every request.
const FIRST_READ: usize = 4 * 1024;
/// The compressed header block a request may send across CONTINUATION frames, as a multiple of
/// the header list limit: beyond, the connection ends (its HPACK state cannot be kept in step
/// without decoding the block, and a block that large is an attack).
const BLOCK_LIMIT_FACTOR: usize = 2;
/// CONTINUATION frames one header block may take, at least: nghttp2's limit, so what curl, node
/// and Apache accept. Empty ones never grow a block, so without a count a client could hold a
/// connection busy with them for ever (CVE-2024-28182, the CONTINUATION flood).
const MIN_CONTINUATIONS: usize = 8;

/// The compressed header block allowed, over HEADERS and its CONTINUATIONs.
fn max_block(limits: &Limits) -> usize {
    limits.max_header_list as usize * BLOCK_LIMIT_FACTOR
}

/// CONTINUATION frames allowed in one header block: enough to carry the largest block allowed
/// in frames of the size read here, and never fewer than [`MIN_CONTINUATIONS`].
fn max_continuations(limits: &Limits) -> usize {
    max_block(limits)
        .div_ceil(frame::DEFAULT_MAX_FRAME_SIZE as usize)
        .max(MIN_CONTINUATIONS)
}

/// What a connection allows a client.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused. Streams start
    /// while those started and the work reset ones left upstream are fewer.
    pub max_streams: u32,
    /// Header list size (SETTINGS_MAX_HEADER_LIST_SIZE); a larger request gets 431.
    pub max_header_list: u32,
}

/// Why a connection ended other than by a close.
#[derive(Debug)]
pub enum ConnError {
    /// The client broke the protocol; it was told so with a GOAWAY.
    Protocol(Reason, &'static str),
    Io(io::Error),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Protocol(reason, why) => write!(f, "HTTP/2 {reason}: {why}"),
            ConnError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl From<FrameError> for ConnError {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Connection(reason, why) | FrameError::Stream(_, reason, why) => {
                ConnError::Protocol(reason, why)
            }
        }
    }
}

/// One client's HTTP/2 connection: a future that serves it until it ends. `handler` turns each
/// request (with its body, unless its HEADERS ended the stream) into its response (the
/// phases).
pub struct Connection<IO, H, F> {
    io: ClientIo<IO>,
    info: Arc<ConnInfo>,
    handler: H,
    limits: Limits,
    read_buf: BytesMut,
    read_closed: bool,
    preface_seen: bool,
    settings_seen: bool,
    tx: Tx,
    decoder: hpack::Decoder,
    streams: Vec<Stream<F>>,
    /// Streams opened while the started ones and the lingering work were at the stream limit,
    /// in the order they came; started as the work ends.
    held: VecDeque<u32>,
    /// The upstream work of this connection's reset streams, still going on.
    lingering: Arc<Lingering>,
    /// Told to go for abandoning too many requests: new streams are refused, and the GOAWAY
    /// goes once the streams and the lingering work are over.
    refusing: bool,
    /// The highest stream id the client has opened.
    last_stream: u32,
    /// A header block still arriving in CONTINUATION frames.
    continuing: Option<Continuing>,
    /// What the client may still send on the connection, and what it took that is owed back.
    recv_window: i64,
    recv_owed: u32,
    ready: Arc<ReadyQueue>,
    /// The ids taken from `ready`, being polled (kept for its allocation).
    polling: Vec<u32>,
    /// Streams whose bodies wait for the output queue to drain.
    waiting_on_socket: Vec<u32>,
    /// Shutdown was asked for (a GOAWAY is to be sent), or was sent.
    shutdown_asked: bool,
    goaway_sent: bool,
    /// The client sent GOAWAY: it opens no more streams.
    peer_gone: bool,
    failed: Option<ConnError>,
}

/// What goes out: the output queue, the HPACK encoder, and the connection's send window.
struct Tx {
    out: Output,
    encoder: hpack::Encoder,
    /// Scratch for a header block being encoded.
    block: BytesMut,
    window: i64,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE.
    stream_window: u32,
    max_frame: u32,
}

struct Continuing {
    stream: u32,
    new: bool,
    end_stream: bool,
    block: BytesMut,
    /// CONTINUATION frames received for it so far.
    continuations: usize,
}

/// One stream: its handler, then its response body; its request body's queue; its windows.
struct Stream<F> {
    id: u32,
    wake: Arc<StreamWake>,
    waker: Waker,
    phase: Phase<F>,
    /// Its handler has been polled.
    started: bool,
    /// Waiting in [`Connection::held`] for room to start.
    held: bool,
    /// The request body, while the client may still send on it.
    inbound: Option<Arc<Inbound>>,
    recv_open: bool,
    recv_window: i64,
    recv_owed: u32,
    declared_len: Option<u64>,
    received: u64,
    send_window: i64,
    /// Data taken from the response body and not yet sent (waiting for window), and whether
    /// it ends the body.
    pending: Option<(Bytes, bool)>,
    /// The send timeout's watch on this stream, once it has waited for window.
    slot: Option<Arc<Slot>>,
}

enum Phase<F> {
    Handling(F),
    Body(BoxBody),
    Done,
}

/// Streams woken since the connection last looked, and the connection's task.
#[derive(Default)]
struct ReadyQueue {
    ids: Mutex<Vec<u32>>,
    task: AtomicWaker,
}

/// A stream's waker: queues the stream and wakes the connection.
struct StreamWake {
    id: u32,
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.ready.ids).push(self.id);
            self.ready.task.wake();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

// === impl Connection ===

impl<IO, H, F> Connection<IO, H, F>
where
    IO: ClientStream,
    H: FnMut(Request<Option<RequestBody>>) -> F,
    F: Future<Output = Response<BoxBody>> + Unpin,
{
    /// A connection whose client has sent (or is about to send) the preface on `io`.
    pub fn new(io: ClientIo<IO>, info: Arc<ConnInfo>, limits: Limits, handler: H) -> Self {
        let mut tx = Tx {
            out: Output::default(),
            encoder: hpack::Encoder::new(),
            block: BytesMut::new(),
            window: i64::from(frame::DEFAULT_WINDOW),
            stream_window: frame::DEFAULT_WINDOW,
            max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
        };
        let ours = frame::Settings {
            max_concurrent_streams: Some(limits.max_streams),
            initial_window_size: Some(STREAM_WINDOW),
            max_header_list_size: Some(limits.max_header_list),
            ..Default::default()
        };
        frame::write_settings(&mut tx.out.buf, &ours);
        frame::write_window_update(&mut tx.out.buf, 0, CONN_WINDOW - frame::DEFAULT_WINDOW);
        let lingering = info.count_lingering();
        Self {
            io,
            info,
            handler,
            limits,
            read_buf: BytesMut::new(),
            read_closed: false,
            preface_seen: false,
            settings_seen: false,
            tx,
            decoder: hpack::Decoder::new(HPACK_TABLE_SIZE),
            streams: Vec::new(),
            held: VecDeque::new(),
            lingering,
            refusing: false,
            last_stream: 0,
            continuing: None,
            recv_window: i64::from(CONN_WINDOW),
            recv_owed: 0,
            ready: Arc::default(),
            polling: Vec::new(),
            waiting_on_socket: Vec::new(),
            shutdown_asked: false,
            goaway_sent: false,
            peer_gone: false,
            failed: None,
        }
    }

    /// Asks the connection to finish: a GOAWAY goes out at its next poll, the streams the
    /// client has opened are served, and the connection then ends.
    pub fn graceful_shutdown(&mut self) {
        self.shutdown_asked = true;
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    /// Reads once and handles what the client sent. Once a turn: a client that keeps the
    /// socket full must still let the streams and the writes have their turns, and the
    /// connection's watch its own between polls.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        let mut progressed = false;
        loop {
            self.handle_buffered()?;
            if self.read_closed
                || self.tx.out.queued() >= READ_STOP
                || self.failed.is_some()
                || progressed
            {
                return Ok(progressed);
            }
            if self.read_buf.capacity() == 0 {
                self.read_buf.reserve(FIRST_READ);
            } else if self.read_buf.capacity() - self.read_buf.len() < 1024 {
                self.read_buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf) {
                Poll::Ready(Ok(0)) => {
                    self.read_closed = true;
                    self.client_closed();
                    return Ok(true);
                }
                Poll::Ready(Ok(_)) => progressed = true,
                Poll::Ready(Err(err)) => return Err(ConnError::Io(err)),
                Poll::Pending => {
                    // Nothing held while the client is silent: an idle connection keeps no
                    // read buffer.
                    if self.read_buf.is_empty() && self.streams.is_empty() {
                        self.read_buf = BytesMut::new();
                    }
                    return Ok(progressed);
                }
            }
        }
    }

    /// The client closed its side: no request body still coming can end now. Their readers
    /// see the stream fail (their handlers answer, and those answers are still written); a
    /// header block cut off is dropped.
    fn client_closed(&mut self) {
        self.continuing = None;
        for stream in &mut self.streams {
            if stream.recv_open {
                stream.recv_open = false;
                if let Some(inbound) = stream.inbound.take() {
                    self.recv_owed += inbound.fail();
                }
            }
        }
    }

    /// Handles the whole frames in the read buffer.
    fn handle_buffered(&mut self) -> Result<(), ConnError> {
        if !self.preface_seen {
            let n = self.read_buf.len().min(frame::PREFACE.len());
            if self.read_buf[..n] != frame::PREFACE[..n] {
                return Err(ConnError::Protocol(
                    Reason::PROTOCOL_ERROR,
                    "not the HTTP/2 connection preface",
                ));
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            self.read_buf.advance(frame::PREFACE.len());
            self.preface_seen = true;
        }
        while self.failed.is_none() {
            let parsed = frame::parse(&mut self.read_buf, frame::DEFAULT_MAX_FRAME_SIZE);
            let frame = match parsed {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                // A stream never opened cannot be reset (RST_STREAM on an idle stream is itself
                // an error): the error is the connection's (RFC 9113 5.4.1 allows that).
                Err(FrameError::Stream(id, reason, why)) if id <= self.last_stream => {
                    tracing::debug!(stream = id, %reason, why, "HTTP/2 stream error");
                    self.reset(id, reason);
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            self.handle_frame(frame)?;
        }
        Ok(())
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), ConnError> {
        if !self.settings_seen && !matches!(frame, Frame::Settings { ack: false, .. }) {
            return Err(proto(
                Reason::PROTOCOL_ERROR,
                "the first frame after the preface is not SETTINGS",
            ));
        }
        if let Some(continuing) = &self.continuing
            && !matches!(&frame, Frame::Continuation { stream, .. } if *stream == continuing.stream)
        {
            return Err(proto(
                Reason::PROTOCOL_ERROR,
                "a header block interrupted by another frame",
            ));
        }
        match frame {
            Frame::Data {
                stream,
                end_stream,
                data,
                flow_len,
            } => self.on_data(stream, end_stream, data, flow_len)?,
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                block,
                ..
            } => self.on_headers(stream, end_stream, end_headers, block)?,
            Frame::Continuation {
                end_headers, block, ..
            } => {
                let Some(continuing) = self.continuing.as_mut() else {
                    return Err(proto(
                        Reason::PROTOCOL_ERROR,
                        "CONTINUATION without a header block to continue",
                    ));
                };
                continuing.continuations += 1;
                if continuing.continuations > max_continuations(&self.limits) {
                    return Err(proto(
                        Reason::ENHANCE_YOUR_CALM,
                        "too many CONTINUATION frames in one header block",
                    ));
                }
                continuing.block.extend_from_slice(&block);
                if continuing.block.len() > max_block(&self.limits) {
                    return Err(proto(
                        Reason::COMPRESSION_ERROR,
                        "a header block far over the header list limit",
                    ));
                }
                if end_headers {
                    let Continuing {
                        stream,
                        new,
                        end_stream,
                        block,
                        ..
                    } = self.continuing.take().expect("checked above");
                    self.on_header_block(stream, new, end_stream, block.freeze())?;
                }
            }
            Frame::Priority { .. } | Frame::Unknown { .. } => {}
            Frame::RstStream { stream, reason } => {
                if stream > self.last_stream {
                    return Err(proto(
                        Reason::PROTOCOL_ERROR,
                        "RST_STREAM on an idle stream",
                    ));
                }
                if let Some(idx) = self.find(stream) {
                    tracing::debug!(stream, %reason, "client reset its stream");
                    self.remove(idx);
                }
            }
            Frame::Settings { ack: true, .. } => {}
            Frame::Settings {
                ack: false,
                settings,
            } => self.on_settings(&settings)?,
            Frame::PushPromise { .. } => {
                return Err(proto(Reason::PROTOCOL_ERROR, "a client sent PUSH_PROMISE"));
            }
            Frame::Ping {
                ack: false,
                payload,
            } => frame::write_ping_ack(&mut self.tx.out.buf, payload),
            Frame::Ping { ack: true, .. } => {}
            Frame::GoAway { reason, .. } => {
                tracing::debug!(%reason, "client sent GOAWAY");
                self.peer_gone = true;
            }
            Frame::WindowUpdate {
                stream: 0,
                increment,
            } => {
                self.tx.window += i64::from(increment);
                if self.tx.window > i64::from(frame::MAX_WINDOW) {
                    return Err(proto(
                        Reason::FLOW_CONTROL_ERROR,
                        "connection window over 2^31-1",
                    ));
                }
                // Every stream held for window may go on.
                for stream in &self.streams {
                    if stream.pending.is_some() {
                        stream.wake.wake_by_ref();
                    }
                }
            }
            Frame::WindowUpdate { stream, increment } => {
                if stream > self.last_stream {
                    return Err(proto(
                        Reason::PROTOCOL_ERROR,
                        "WINDOW_UPDATE on an idle stream",
                    ));
                }
                if let Some(idx) = self.find(stream) {
                    let s = &mut self.streams[idx];
                    s.send_window += i64::from(increment);
                    if s.send_window > i64::from(frame::MAX_WINDOW) {
                        self.reset(stream, Reason::FLOW_CONTROL_ERROR);
                    } else if s.pending.is_some() {
                        s.wake.wake_by_ref();
                    }
                }
            }
        }
        Ok(())
    }

    fn on_settings(&mut self, settings: &frame::Settings) -> Result<(), ConnError> {
        self.settings_seen = true;
        if let Some(size) = settings.header_table_size {
            self.tx.encoder.set_max_table_size(size as usize);
        }
        if let Some(size) = settings.max_frame_size {
            self.tx.max_frame = size;
        }
        if let Some(window) = settings.initial_window_size {
            let delta = i64::from(window) - i64::from(self.tx.stream_window);
            self.tx.stream_window = window;
            for stream in &mut self.streams {
                stream.send_window += delta;
                if stream.send_window > i64::from(frame::MAX_WINDOW) {
                    return Err(proto(
                        Reason::FLOW_CONTROL_ERROR,
                        "SETTINGS_INITIAL_WINDOW_SIZE takes a stream's window over 2^31-1",
                    ));
                }
                if delta > 0 && stream.pending.is_some() {
                    stream.wake.wake_by_ref();
                }
            }
        }
        frame::write_settings_ack(&mut self.tx.out.buf);
        Ok(())
    }

    fn on_data(
        &mut self,
        id: u32,
        end_stream: bool,
        data: Bytes,
        flow_len: u32,
    ) -> Result<(), ConnError> {
        if i64::from(flow_len) > self.recv_window {
            return Err(proto(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection's window",
            ));
        }
        self.recv_window -= i64::from(flow_len);
        let Some(idx) = self.find(id) else {
            if id > self.last_stream {
                return Err(proto(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A stream already closed (reset, or answered before its body came): its data is
            // dropped, and its window given back to the connection.
            self.recv_owed += flow_len;
            return Ok(());
        };
        let stream = &mut self.streams[idx];
        if !stream.recv_open {
            self.recv_owed += flow_len;
            self.reset(id, Reason::STREAM_CLOSED);
            return Ok(());
        }
        if i64::from(flow_len) > stream.recv_window {
            self.recv_owed += flow_len;
            self.reset(id, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        stream.recv_window -= i64::from(flow_len);
        stream.received += data.len() as u64;
        if stream
            .declared_len
            .is_some_and(|len| stream.received > len || end_stream && stream.received != len)
        {
            self.recv_owed += flow_len;
            tracing::debug!(
                stream = id,
                "request body not of its declared content-length"
            );
            self.reset(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        // Padding is given back at once; the data once the handler takes it.
        let padding = flow_len - data.len() as u32;
        let taken_now = match &stream.inbound {
            Some(inbound) => inbound.push(data, end_stream),
            None => true,
        };
        let owed = if taken_now { flow_len } else { padding };
        stream.recv_owed += owed;
        self.recv_owed += owed;
        stream_window_update(&mut self.tx.out.buf, stream);
        if end_stream {
            stream.recv_open = false;
            stream.inbound = None;
            if matches!(stream.phase, Phase::Done) {
                self.remove(idx);
            }
        }
        Ok(())
    }

    fn on_headers(
        &mut self,
        id: u32,
        end_stream: bool,
        end_headers: bool,
        block: Bytes,
    ) -> Result<(), ConnError> {
        if id.is_multiple_of(2) {
            return Err(proto(
                Reason::PROTOCOL_ERROR,
                "a client stream with an even id",
            ));
        }
        // A stream at or below the last one is open (trailers) or closed; a closed one's block
        // is still decoded, to keep HPACK in step, and then ignored (RFC 9113 5.1).
        let new = id > self.last_stream;
        self.last_stream = self.last_stream.max(id);
        if end_headers {
            return self.on_header_block(id, new, end_stream, block);
        }
        let mut joined = BytesMut::with_capacity(block.len() * 2);
        joined.extend_from_slice(&block);
        self.continuing = Some(Continuing {
            stream: id,
            new,
            end_stream,
            block: joined,
            continuations: 0,
        });
        Ok(())
    }

    /// A whole header block: a new request, or the trailers of one.
    fn on_header_block(
        &mut self,
        id: u32,
        new: bool,
        end_stream: bool,
        block: Bytes,
    ) -> Result<(), ConnError> {
        let mut head = Head::default();
        let decoded = self
            .decoder
            .decode(block, self.limits.max_header_list as usize, |field| {
                head.add(field)
            });
        let existing = self.find(id);
        match decoded {
            Err(DecodeError::Compression(why)) => {
                return Err(proto(Reason::COMPRESSION_ERROR, why));
            }
            Err(_) if !new && existing.is_none() => return Ok(()),
            Err(DecodeError::Malformed(why)) => {
                tracing::debug!(stream = id, why, "malformed HTTP/2 request");
                self.reset(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            Err(DecodeError::ListTooLarge) if existing.is_none() && !self.goaway_sent => {
                // As hyper's server did: 431, and the stream is closed.
                let resp = Response::builder()
                    .status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                    .body(())
                    .expect("a valid status");
                let (parts, ()) = resp.into_parts();
                self.tx.head(id, parts, None, true);
                if !end_stream {
                    frame::write_rst_stream(&mut self.tx.out.buf, id, Reason::NO_ERROR);
                }
                return Ok(());
            }
            Err(DecodeError::ListTooLarge) => {
                self.reset(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            Ok(()) => {}
        }
        if let Some(idx) = existing {
            // Trailers: they end the request body.
            let stream = &mut self.streams[idx];
            if !stream.recv_open {
                self.reset(id, Reason::STREAM_CLOSED);
            } else if !end_stream || head.has_pseudo() {
                tracing::debug!(stream = id, "malformed HTTP/2 trailers");
                self.reset(id, Reason::PROTOCOL_ERROR);
            } else if stream
                .declared_len
                .is_some_and(|len| len != stream.received)
            {
                self.reset(id, Reason::PROTOCOL_ERROR);
            } else {
                stream.recv_open = false;
                if let Some(inbound) = stream.inbound.take() {
                    inbound.trailers(head.headers);
                }
                if matches!(stream.phase, Phase::Done) {
                    self.remove(idx);
                }
            }
            return Ok(());
        }
        if !new {
            return Ok(());
        }
        if self.goaway_sent || self.peer_gone {
            // Opened after our GOAWAY: never processed, as the GOAWAY told the client.
            return Ok(());
        }
        if self.refusing {
            frame::write_rst_stream(&mut self.tx.out.buf, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        if self.streams.len() >= self.limits.max_streams as usize {
            frame::write_rst_stream(&mut self.tx.out.buf, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let (req, declared_len) = match head.into_request() {
            Ok(built) => built,
            Err(why) => {
                tracing::debug!(stream = id, why, "malformed HTTP/2 request");
                frame::write_rst_stream(&mut self.tx.out.buf, id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
        };
        if end_stream && declared_len.is_some_and(|len| len != 0) {
            frame::write_rst_stream(&mut self.tx.out.buf, id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let wake = Arc::new(StreamWake {
            id,
            queued: AtomicBool::new(false),
            ready: self.ready.clone(),
        });
        let waker = Waker::from(wake.clone());
        let (req, inbound) = if end_stream {
            (req.map(|()| None), None)
        } else {
            let inbound = Arc::new(Inbound {
                state: Mutex::new(InState::default()),
                stream: waker.clone(),
            });
            let body = RequestBody {
                inbound: inbound.clone(),
                declared_len,
            };
            (req.map(|()| Some(body)), Some(inbound))
        };
        let handling = (self.handler)(req);
        let held = !self.held.is_empty() || !self.has_room();
        self.streams.push(Stream {
            id,
            wake,
            waker,
            phase: Phase::Handling(handling),
            started: false,
            held,
            inbound,
            recv_open: !end_stream,
            recv_window: i64::from(STREAM_WINDOW),
            recv_owed: 0,
            declared_len,
            received: 0,
            send_window: i64::from(self.tx.stream_window),
            pending: None,
            slot: None,
        });
        if held {
            tracing::debug!(
                stream = id,
                lingering = self.lingering.count(),
                "stream held: the client's reset streams still have work upstream"
            );
            self.held.push_back(id);
        } else {
            // Started once the frames read with it are handled: a stream the same read resets
            // (a rapid-reset client) is dropped before its phases take an upstream connection.
            self.queue(id);
        }
        Ok(())
    }

    /// Whether another stream may start: those started (or about to be) and the lingering work
    /// of reset ones are fewer than the stream limit.
    fn has_room(&self) -> bool {
        let started = self.streams.len() - self.held.len();
        started + self.lingering.count() < self.limits.max_streams as usize
    }

    /// Starts held streams, in order, while there is room; until there is, the connection's
    /// task is woken when lingering work ends.
    fn start_held(&mut self, cx: &Context<'_>) -> bool {
        if self.held.is_empty() {
            return false;
        }
        self.lingering.watch(cx.waker());
        let mut any = false;
        while self.has_room()
            && let Some(id) = self.held.pop_front()
        {
            if let Some(idx) = self.find(id) {
                self.streams[idx].held = false;
                self.queue(id);
                any = true;
            }
        }
        any
    }

    /// Has a stream polled at the next look at the ready streams.
    fn queue(&self, id: u32) {
        if let Some(stream) = self.streams.iter().find(|s| s.id == id)
            && !stream.wake.queued.swap(true, Ordering::AcqRel)
        {
            lock(&self.ready.ids).push(id);
        }
    }

    /// Ends a stream with RST_STREAM (if it is open, or was never opened).
    fn reset(&mut self, id: u32, reason: Reason) {
        frame::write_rst_stream(&mut self.tx.out.buf, id, reason);
        if let Some(idx) = self.find(id) {
            self.remove(idx);
        }
    }

    /// Drops a stream: its handler, its response body, and its request body's queue (a reader
    /// of which sees the stream reset).
    fn remove(&mut self, idx: usize) {
        let stream = self.streams.swap_remove(idx);
        if stream.held {
            self.held.retain(|&id| id != stream.id);
        }
        if !stream.started {
            // Its phases never ran, so they never counted it: the client abandoned it.
            self.info.abandoned();
        }
        if let Some(inbound) = &stream.inbound {
            let untaken = inbound.fail();
            self.recv_owed += untaken;
        }
    }

    /// A client told to go for abandoning too many requests (seen at once, not when the
    /// connection's watch next looks: a flood of streams keeps this poll busy) has its waiting
    /// streams and new ones refused, and its GOAWAY once this connection has nothing left
    /// upstream. Sent at once, the GOAWAY would have the client back on a new connection while
    /// this one's work still runs, with a stream limit's worth more.
    fn go_when_done(&mut self, cx: &Context<'_>) {
        if !self.refusing {
            if !self.info.told_to_go() {
                return;
            }
            self.refusing = true;
            for id in std::mem::take(&mut self.held) {
                frame::write_rst_stream(&mut self.tx.out.buf, id, Reason::REFUSED_STREAM);
                if let Some(idx) = self.find(id) {
                    self.streams[idx].held = false;
                    self.remove(idx);
                }
            }
        }
        if !self.shutdown_asked {
            self.lingering.watch(cx.waker());
            self.shutdown_asked = self.streams.is_empty() && self.lingering.count() == 0;
        }
    }

    /// Polls the streams woken since the last look.
    fn poll_ready(&mut self) -> bool {
        let mut ids = std::mem::take(&mut self.polling);
        std::mem::swap(&mut *lock(&self.ready.ids), &mut ids);
        let any = !ids.is_empty();
        for id in ids.drain(..) {
            let Some(idx) = self.find(id) else { continue };
            if self.streams[idx].held {
                // Woken by its request body before it may start: it is queued when it may.
                self.streams[idx]
                    .wake
                    .queued
                    .store(false, Ordering::Release);
            } else {
                self.poll_stream(idx);
            }
        }
        self.polling = ids;
        any
    }

    /// Polls one stream's handler or body, sending what it gives; removes it when it is over.
    fn poll_stream(&mut self, idx: usize) {
        let stream = &mut self.streams[idx];
        stream.wake.queued.store(false, Ordering::Release);
        if let Some(slot) = &stream.slot
            && slot.is_reset()
        {
            // The send timeout: the client took none of this stream's response for too long.
            let id = stream.id;
            self.reset(id, Reason::CANCEL);
            return;
        }
        // Request-body bytes the handler took: their window goes back.
        if let Some(inbound) = &stream.inbound {
            let taken = inbound.taken();
            stream.recv_owed += taken;
            self.recv_owed += taken;
            stream_window_update(&mut self.tx.out.buf, stream);
        }
        stream.started = true;
        let waker = stream.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let over = match self.tx.poll_stream(stream, &mut cx) {
            StreamPoll::Pending => false,
            StreamPoll::WaitingOnWindow => {
                // Held by the client: the send timeout watches it from now.
                let slot = stream
                    .slot
                    .get_or_insert_with(|| self.info.h2_streams.register());
                slot.wait(&stream.waker);
                false
            }
            StreamPoll::WaitingOnSocket => {
                self.waiting_on_socket.push(stream.id);
                false
            }
            StreamPoll::Answered => !stream.recv_open,
            StreamPoll::AnsweredEarly => {
                // The response is whole while the client still sends its body: it may stop.
                frame::write_rst_stream(&mut self.tx.out.buf, stream.id, Reason::NO_ERROR);
                true
            }
            StreamPoll::Failed => true,
        };
        if over {
            let stream = &mut self.streams[idx];
            if let Some(slot) = &stream.slot {
                slot.stop_waiting();
            }
            self.remove(idx);
        }
    }

    /// Window owed to the client for the connection, given back in one frame once it is worth
    /// one.
    fn give_back_window(&mut self) {
        if self.recv_owed >= CONN_WINDOW / WINDOW_UPDATE_AT {
            frame::write_window_update(&mut self.tx.out.buf, 0, self.recv_owed);
            self.recv_window += i64::from(self.recv_owed);
            self.recv_owed = 0;
        }
    }

    fn fail(&mut self, err: ConnError) {
        if let ConnError::Protocol(reason, why) = &err {
            tracing::debug!(client = %self.info.remote, %reason, why, "HTTP/2 connection error");
            frame::write_goaway(&mut self.tx.out.buf, self.last_stream, *reason);
            self.goaway_sent = true;
        }
        self.failed = Some(err);
        // Its streams end with it.
        while !self.streams.is_empty() {
            self.remove(0);
        }
        self.continuing = None;
    }
}

impl<IO, H, F> Future for Connection<IO, H, F>
where
    IO: ClientStream,
    H: FnMut(Request<Option<RequestBody>>) -> F + Unpin,
    F: Future<Output = Response<BoxBody>> + Unpin,
{
    type Output = Result<(), ConnError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.ready.task.register(cx.waker());
        for _ in 0..TURNS_PER_POLL {
            this.go_when_done(cx);
            if this.shutdown_asked && !this.goaway_sent {
                frame::write_goaway(&mut this.tx.out.buf, this.last_stream, Reason::NO_ERROR);
                this.goaway_sent = true;
            }
            let mut progressed = false;
            if this.failed.is_none() {
                match this.poll_read(cx) {
                    Ok(read) => progressed |= read,
                    Err(ConnError::Io(err)) => return Poll::Ready(Err(ConnError::Io(err))),
                    Err(err) => this.fail(err),
                }
                progressed |= this.start_held(cx);
                progressed |= this.poll_ready();
                this.give_back_window();
            }
            let queued_before = this.tx.out.queued();
            match this.tx.out.poll_flush(&mut this.io, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(ConnError::Io(err))),
                Poll::Pending => {}
            }
            if this.tx.out.queued() < WRITE_HIGH && !this.waiting_on_socket.is_empty() {
                for id in this.waiting_on_socket.drain(..) {
                    lock(&this.ready.ids).push(id);
                }
                progressed = true;
            }
            if this.tx.out.queued() < queued_before && queued_before >= READ_STOP {
                // Reading had stopped for the queue; it may go on.
                progressed = true;
            }
            if let Some(err) = &this.failed {
                if this.tx.out.queued() > 0 && !matches!(err, ConnError::Io(_)) {
                    // The GOAWAY is still being written.
                    return Poll::Pending;
                }
                let err = this.failed.take().expect("checked");
                return Poll::Ready(Err(err));
            }
            let closing = this.goaway_sent || this.peer_gone || this.read_closed;
            if closing && this.streams.is_empty() && this.tx.out.queued() == 0 {
                return Pin::new(&mut this.io).poll_shutdown(cx).map(|_| Ok(()));
            }
            if !progressed {
                return Poll::Pending;
            }
        }
        // Still busy: the worker's other tasks get their turn first. A stream whose future keeps
        // waking itself (tokio's budget, spent, wakes at once) must not hold the worker here.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// What polling a stream came to.
enum StreamPoll {
    Pending,
    /// Its body has data the client's window does not let out.
    WaitingOnWindow,
    /// Its body has more and the output queue is full.
    WaitingOnSocket,
    /// Its response is whole.
    Answered,
    /// Its response is whole and the client has not finished its request.
    AnsweredEarly,
    /// It was reset (its body failed).
    Failed,
}

// === impl Tx ===

impl Tx {
    fn poll_stream<F>(&mut self, stream: &mut Stream<F>, cx: &mut Context<'_>) -> StreamPoll
    where
        F: Future<Output = Response<BoxBody>> + Unpin,
    {
        loop {
            match &mut stream.phase {
                Phase::Handling(handling) => {
                    let Poll::Ready(resp) = Pin::new(handling).poll(cx) else {
                        return StreamPoll::Pending;
                    };
                    let (parts, body) = resp.into_parts();
                    let end = body.is_end_stream();
                    self.head(stream.id, parts, Some(&body), end);
                    if end {
                        stream.phase = Phase::Done;
                    } else {
                        stream.phase = Phase::Body(body);
                    }
                }
                Phase::Body(body) => {
                    if stream.pending.is_some() {
                        if !self.send_pending(stream) {
                            return StreamPoll::WaitingOnWindow;
                        }
                        if let Some(slot) = &stream.slot {
                            slot.stop_waiting();
                        }
                        continue;
                    }
                    if self.out.queued() >= WRITE_HIGH {
                        return StreamPoll::WaitingOnSocket;
                    }
                    match Pin::new(&mut *body).poll_frame(cx) {
                        Poll::Pending => return StreamPoll::Pending,
                        Poll::Ready(None) => {
                            frame::write_data_head(&mut self.out.buf, stream.id, 0, true);
                            stream.phase = Phase::Done;
                        }
                        Poll::Ready(Some(Err(err))) => {
                            tracing::debug!(stream = stream.id, error = %err, "response body failed; stream reset");
                            frame::write_rst_stream(
                                &mut self.out.buf,
                                stream.id,
                                Reason::INTERNAL_ERROR,
                            );
                            stream.phase = Phase::Done;
                            return StreamPoll::Failed;
                        }
                        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => {
                                let last = body.is_end_stream();
                                stream.pending = Some((data, last));
                            }
                            Err(frame) => {
                                if let Ok(trailers) = frame.into_trailers() {
                                    self.trailers(stream.id, &trailers);
                                    stream.phase = Phase::Done;
                                }
                            }
                        },
                    }
                }
                Phase::Done => {
                    return if stream.recv_open {
                        StreamPoll::AnsweredEarly
                    } else {
                        StreamPoll::Answered
                    };
                }
            }
        }
    }

    /// Sends what the windows allow of the stream's pending data; whether all of it went.
    fn send_pending<F>(&mut self, stream: &mut Stream<F>) -> bool {
        let Some((mut data, last)) = stream.pending.take() else {
            return true;
        };
        loop {
            if data.is_empty() {
                if last {
                    frame::write_data_head(&mut self.out.buf, stream.id, 0, true);
                    stream.phase = Phase::Done;
                }
                return true;
            }
            let allowed = stream
                .send_window
                .min(self.window)
                .min(i64::from(self.max_frame));
            if allowed <= 0 {
                stream.pending = Some((data, last));
                return false;
            }
            let n = (allowed as usize).min(data.len());
            let chunk = data.split_to(n);
            let end = last && data.is_empty();
            frame::write_data_head(&mut self.out.buf, stream.id, n as u32, end);
            self.out.push_data(chunk);
            stream.send_window -= n as i64;
            self.window -= n as i64;
            if end {
                stream.phase = Phase::Done;
                return true;
            }
        }
    }

    /// Writes a response head. `body`: the body to come, for its length.
    fn head(
        &mut self,
        id: u32,
        mut parts: http::response::Parts,
        body: Option<&BoxBody>,
        end: bool,
    ) {
        strip_connection_headers(&mut parts.headers);
        if let Some(body) = body
            && !end
            && let Some(len) = body.size_hint().exact()
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
        {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        self.block.clear();
        self.encoder
            .encode_response(parts.status, &parts.headers, &mut self.block);
        frame::write_headers(&mut self.out.buf, id, &self.block, end, self.max_frame);
    }

    fn trailers(&mut self, id: u32, trailers: &HeaderMap) {
        self.block.clear();
        self.encoder.encode_trailers(trailers, &mut self.block);
        frame::write_headers(&mut self.out.buf, id, &self.block, true, self.max_frame);
    }
}

/// Removes what HTTP/2 forbids in a response (RFC 9113 8.2.2), as hyper did. One pass over
/// the names first: responses almost never have any.
fn strip_connection_headers(headers: &mut HeaderMap) {
    let forbidden = |name: &HeaderName| {
        name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::TE
            || name.as_str() == "keep-alive"
            || name.as_str() == "proxy-connection"
    };
    if !headers.keys().any(forbidden) {
        return;
    }
    if let Some(connection) = headers.remove(header::CONNECTION)
        && let Ok(named) = connection.to_str()
    {
        for name in named.split(',') {
            headers.remove(name.trim());
        }
    }
    for name in [
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// Gives a stream's window back once enough of it is owed, while the client may still send.
fn stream_window_update<F>(out: &mut BytesMut, stream: &mut Stream<F>) {
    if stream.recv_open && stream.recv_owed >= STREAM_WINDOW / WINDOW_UPDATE_AT {
        frame::write_window_update(out, stream.id, stream.recv_owed);
        stream.recv_window += i64::from(stream.recv_owed);
        stream.recv_owed = 0;
    }
}

fn proto(reason: Reason, why: &'static str) -> ConnError {
    ConnError::Protocol(reason, why)
}

/// A request's pseudo-header fields and headers, as decoded.
#[derive(Default)]
struct Head {
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    protocol: bool,
    status: bool,
    headers: HeaderMap,
    /// What makes a request malformed among its fields, seen as they are added (looking them
    /// up afterwards would hash their names again).
    forbidden: Option<&'static str>,
    content_length: Option<HeaderValue>,
}

impl Head {
    fn add(&mut self, field: Field) {
        match field {
            Field::Method(method) => self.method = Some(method),
            Field::Scheme(scheme) => self.scheme = Some(scheme),
            Field::Authority(authority) => self.authority = Some(authority),
            Field::Path(path) => self.path = Some(path),
            Field::Protocol(_) => self.protocol = true,
            Field::Status(_) => self.status = true,
            Field::Header(name, value) => {
                if name == header::CONTENT_LENGTH {
                    if self
                        .content_length
                        .as_ref()
                        .is_some_and(|len| *len != value)
                    {
                        self.forbidden = Some("content-length values that differ");
                    }
                    self.content_length = Some(value.clone());
                } else if name == header::TE {
                    if value != "trailers" {
                        self.forbidden = Some("TE other than trailers");
                    }
                } else if name == header::CONNECTION
                    || name == header::TRANSFER_ENCODING
                    || name == header::UPGRADE
                    || name.as_str() == "keep-alive"
                    || name.as_str() == "proxy-connection"
                {
                    self.forbidden = Some("a connection-specific header field");
                }
                self.headers.append(name, value);
            }
        }
    }

    fn has_pseudo(&self) -> bool {
        self.method.is_some()
            || self.scheme.is_some()
            || self.authority.is_some()
            || self.path.is_some()
            || self.protocol
            || self.status
    }

    /// The request (RFC 9113 8.3.1), and its declared body length; or why it is malformed.
    fn into_request(self) -> Result<(Request<()>, Option<u64>), &'static str> {
        if self.status {
            return Err(":status in a request");
        }
        if self.protocol {
            // Extended CONNECT (RFC 8441) is not offered: SETTINGS_ENABLE_CONNECT_PROTOCOL is unset.
            return Err(":protocol without extended CONNECT");
        }
        let method = self.method.ok_or("no :method")?;
        let mut parts = http::uri::Parts::default();
        if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err("CONNECT with :scheme or :path");
            }
            let authority = self.authority.ok_or("CONNECT without :authority")?;
            parts.authority =
                Some(Authority::from_maybe_shared(authority).map_err(|_| "a bad :authority")?);
        } else {
            let scheme = self.scheme.ok_or("no :scheme")?;
            let path = self.path.ok_or("no :path")?;
            if path.is_empty() {
                return Err("an empty :path");
            }
            let http_scheme = &scheme[..] == b"http" || &scheme[..] == b"https";
            if http_scheme && path[0] != b'/' && !(&path[..] == b"*" && method == Method::OPTIONS) {
                return Err("a :path that is neither absolute nor OPTIONS *");
            }
            parts.path_and_query =
                Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "a bad :path")?);
            if let Some(authority) = self.authority {
                parts.scheme = Some(Scheme::try_from(&scheme[..]).map_err(|_| "a bad :scheme")?);
                parts.authority =
                    Some(Authority::from_maybe_shared(authority).map_err(|_| "a bad :authority")?);
            }
        }
        if let Some(why) = self.forbidden {
            return Err(why);
        }
        let declared_len = match &self.content_length {
            None => None,
            Some(len) => Some(
                len.to_str()
                    .ok()
                    .and_then(|len| len.parse::<u64>().ok())
                    .ok_or("a bad content-length")?,
            ),
        };
        let uri = Uri::from_parts(parts).map_err(|_| "a bad request target")?;
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = self.headers;
        Ok((req, declared_len))
    }
}

/// A request body's data on its way from the connection to the handler.
struct Inbound {
    state: Mutex<InState>,
    /// The stream's waker: the connection gives window back for what the body takes.
    stream: Waker,
}

#[derive(Default)]
struct InState {
    chunks: VecDeque<Bytes>,
    end: InEnd,
    /// Bytes taken since the connection last looked.
    taken: u32,
    reader: Option<Waker>,
    /// The body was dropped: what arrives is given back at once.
    dropped: bool,
}

#[derive(Default)]
enum InEnd {
    #[default]
    Open,
    Ended,
    Trailers(HeaderMap),
    Reset,
}

impl Inbound {
    /// Queues data from the client; whether it was dropped at once (no reader).
    fn push(&self, data: Bytes, end: bool) -> bool {
        let mut state = lock(&self.state);
        if end {
            state.end = InEnd::Ended;
        }
        let dropped = state.dropped;
        if !dropped && !data.is_empty() {
            state.chunks.push_back(data);
        }
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
        dropped
    }

    fn trailers(&self, trailers: HeaderMap) {
        let mut state = lock(&self.state);
        state.end = InEnd::Trailers(trailers);
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }

    /// The stream is gone: the reader sees an error. Returns the bytes never taken.
    fn fail(&self) -> u32 {
        let mut state = lock(&self.state);
        if matches!(state.end, InEnd::Open) {
            state.end = InEnd::Reset;
        }
        let untaken: usize = state.chunks.drain(..).map(|c| c.len()).sum();
        let taken = std::mem::take(&mut state.taken);
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
        untaken as u32 + taken
    }

    fn taken(&self) -> u32 {
        std::mem::take(&mut lock(&self.state).taken)
    }
}

/// An HTTP/2 request body.
pub struct RequestBody {
    inbound: Arc<Inbound>,
    declared_len: Option<u64>,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("declared_len", &self.declared_len)
            .finish_non_exhaustive()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, BoxError>>> {
        let mut state = lock(&self.inbound.state);
        if let Some(chunk) = state.chunks.pop_front() {
            state.taken += chunk.len() as u32;
            drop(state);
            self.inbound.stream.wake_by_ref();
            return Poll::Ready(Some(Ok(BodyFrame::data(chunk))));
        }
        match std::mem::replace(&mut state.end, InEnd::Ended) {
            InEnd::Ended => Poll::Ready(None),
            InEnd::Trailers(trailers) => Poll::Ready(Some(Ok(BodyFrame::trailers(trailers)))),
            InEnd::Reset => {
                state.end = InEnd::Reset;
                Poll::Ready(Some(Err(
                    "the client reset its HTTP/2 stream or closed its connection".into(),
                )))
            }
            InEnd::Open => {
                state.end = InEnd::Open;
                state.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.inbound.state);
        state.chunks.is_empty() && matches!(state.end, InEnd::Ended)
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared_len {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut state = lock(&self.inbound.state);
        state.dropped = true;
        let untaken: usize = state.chunks.drain(..).map(|c| c.len()).sum();
        state.taken += untaken as u32;
        drop(state);
        self.inbound.stream.wake_by_ref();
    }
}

/// The connection's output: frames in order, written with one vectored write where it can be.
#[derive(Default)]
struct Output {
    /// Frame heads and small payloads not yet sealed into `queue`.
    buf: BytesMut,
    queue: VecDeque<Bytes>,
    queued: usize,
}

/// Data up to this size is copied in with the frames around it (one slice to write); larger
/// data is queued as it is.
const COPY_DATA_UP_TO: usize = 1024;

impl Output {
    fn queued(&self) -> usize {
        self.queued + self.buf.len()
    }

    fn push_data(&mut self, data: Bytes) {
        if data.len() <= COPY_DATA_UP_TO {
            self.buf.extend_from_slice(&data);
            return;
        }
        self.seal();
        self.queued += data.len();
        self.queue.push_back(data);
    }

    fn seal(&mut self) {
        if !self.buf.is_empty() {
            let sealed = self.buf.split().freeze();
            self.queued += sealed.len();
            self.queue.push_back(sealed);
        }
    }

    fn poll_flush<IO: ClientStream>(
        &mut self,
        io: &mut ClientIo<IO>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.seal();
        while !self.queue.is_empty() {
            let written = ready!(io.poll_write_parts(cx, &mut self.queue))?;
            self.queued -= written;
        }
        if self.buf.capacity() > READ_CHUNK {
            // A burst's buffer is not kept for the connection's life.
            self.buf = BytesMut::new();
        }
        Pin::new(io).poll_flush(cx)
    }
}

#[cfg(test)]
mod tests;
