//! Plain HTTP/1.1 requests served without hyper's dispatch.
//!
//! Most requests an ingress sees are HTTP/1.1 requests without a body (GET, HEAD, DELETE,
//! OPTIONS with an origin-form target). For those, hyper's server costs more than the
//! exchange needs: a dispatcher, a body channel, a header timer armed per request, a buffer
//! list. Here such a request is parsed with `httparse` (as hyper does), handed to the phases,
//! and its response written with one vectored write where it can be.
//!
//! Anything else goes to hyper, which stays the one place for HTTP/1.x's harder parts and for
//! every malformed request's answer: the bytes read so far are given back to the stream, and
//! hyper serves the connection from there (until it is parked; then it comes back here). That
//! is: a body (`Content-Length`, `Transfer-Encoding`), `Expect`, `Upgrade`, `TE`, a
//! `Connection` header naming anything but `close` / `keep-alive`, HTTP/1.0, CONNECT, a
//! target other than a path, more than [`MAX_HEADERS`] fields, a head over the size limit, and
//! anything `httparse` or the `http` types refuse.

use std::fmt::Write as _;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use tokio::io::AsyncWriteExt;
use tokio::time::Sleep;

use super::ConnInfo;
use super::client_io::{ClientIo, ClientStream};
use super::connector::h1;
use super::request_body::ClientBody;
use super::spare;
use crate::body::BoxBody;
use crate::shared::DataPlane;

/// Header fields a request may have here (hyper's default limit too; it answers 431 beyond).
pub const MAX_HEADERS: usize = 100;

/// Request fields that make a request hyper's (any `Connection` token but `close` and
/// `keep-alive` does too).
const HANDED_TO_HYPER: [&[u8]; 5] = [
    b"content-length",
    b"transfer-encoding",
    b"expect",
    b"upgrade",
    b"te",
];

/// What a connection served here does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The connection is over.
    Close,
    /// hyper takes it from here: the bytes read are back in the stream.
    Hyper,
}

/// What [`serve`] needs besides the connection.
pub struct Exchange<'a> {
    pub plane: &'a Arc<DataPlane>,
    pub info: &'a Arc<ConnInfo>,
    /// Set at the first complete request (the listener's no-first-request timeout).
    pub requested: &'a AtomicBool,
    /// Set by the listener: finish the request in flight, then close.
    pub closing: &'a AtomicBool,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
}

/// Serves requests on `io` while they can be served here. `buf` holds bytes read and not yet
/// used, across calls (the listener keeps it while the connection is parked).
pub async fn serve<IO: ClientStream>(
    io: &mut ClientIo<IO>,
    buf: &mut BytesMut,
    ex: &Exchange<'_>,
) -> io::Result<Next> {
    // Response heads are written into this and sent from it, reused once a head is out.
    let mut heads = BytesMut::new();
    let mut out = Out::default();
    let mut spans = Spans::new();
    loop {
        let Parsed { req, keep_alive } = match read_request(io, buf, &mut spans, ex).await? {
            Read::Request(parsed) => parsed,
            Read::Closed => return Ok(Next::Close),
            Read::Hyper => {
                io.unread(buf);
                buf.clear();
                return Ok(Next::Hyper);
            }
        };
        ex.requested.store(true, Ordering::Relaxed);
        let head_request = req.method() == Method::HEAD;
        let resp = spare::spared(|| super::handle(ex.plane.clone(), ex.info.clone(), req)).await;
        let keep_alive = keep_alive && !ex.closing.load(Ordering::Relaxed);
        let closes =
            write_response(io, &mut out, &mut heads, resp, head_request, keep_alive).await?;
        if closes {
            let _ = io.shutdown().await;
            return Ok(Next::Close);
        }
    }
}

/// A request read here, and whether its client keeps the connection open after it.
pub struct Parsed {
    pub req: Request<ClientBody>,
    pub keep_alive: bool,
}

// Returned once per request and matched at once: boxing would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
enum Read {
    Request(Parsed),
    Closed,
    Hyper,
}

/// How much room a read is given (heads longer than this take more reads).
const READ_CHUNK: usize = 4096;

/// Reads until a whole request head is in `buf`. The header timeout counts from the head's
/// first byte; a connection waiting for one is the listener's (idle timeout, parking).
async fn read_request<IO: ClientStream>(
    io: &mut ClientIo<IO>,
    buf: &mut BytesMut,
    spans: &mut Spans,
    ex: &Exchange<'_>,
) -> io::Result<Read> {
    // Armed only when a head does not arrive whole: under load it does.
    let mut deadline: Option<Pin<Box<Sleep>>> = None;
    loop {
        if !buf.is_empty() {
            match parse(buf, ex.max_header_bytes, spans) {
                Parse::Complete(parsed) => return Ok(Read::Request(parsed)),
                Parse::Hyper => return Ok(Read::Hyper),
                Parse::Partial => {}
            }
            if deadline.is_none() {
                deadline = Some(Box::pin(tokio::time::sleep(ex.header_timeout)));
            }
        }
        buf.reserve(READ_CHUNK);
        let read = poll_fn(|cx| {
            if buf.is_empty() && ex.closing.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(0));
            }
            if let Some(deadline) = deadline.as_mut()
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received within the header timeout",
                )));
            }
            tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)
        })
        .await?;
        if read == 0 {
            // Closed by the client (mid-head too: there is nobody to answer), or by shutdown.
            return Ok(Read::Closed);
        }
    }
}

/// What [`parse`] found.
#[allow(clippy::large_enum_variant)]
pub enum Parse {
    /// A request to serve here; its head is no longer in the buffer.
    Complete(Parsed),
    /// More bytes are needed.
    Partial,
    /// A request for hyper; the buffer is as it was.
    Hyper,
}

/// Where a field's name and value lie in the head.
pub type Spans = Vec<(Range<usize>, Range<usize>)>;

/// Parses a request head at the start of `buf`; a complete one no longer than `max_head` is
/// split off it. `spans` is room to work in, kept across requests.
pub fn parse(buf: &mut BytesMut, max_head: usize, spans: &mut Spans) -> Parse {
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut raw = httparse::Request::new(&mut []);
    let len = match raw.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parse::Partial,
        // Too large (hyper answers 431), or malformed (400).
        Ok(httparse::Status::Partial) | Err(_) => return Parse::Hyper,
    };
    if len > max_head {
        return Parse::Hyper;
    }
    if raw.version != Some(1) {
        return Parse::Hyper;
    }
    let (Some(method), Some(path)) = (raw.method, raw.path) else {
        return Parse::Hyper;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parse::Hyper;
    };
    if method == Method::CONNECT || !path.starts_with('/') {
        return Parse::Hyper;
    }
    // Where each piece lies in the head, to take it from the frozen head without copying.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let path = span(path.as_bytes());
    spans.clear();
    let mut keep_alive = true;
    for field in raw.headers.iter() {
        let name = field.name.as_bytes();
        if HANDED_TO_HYPER.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return Parse::Hyper;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    return Parse::Hyper;
                }
            }
        }
        spans.push((span(name), span(field.value)));
    }
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path)) else {
        // Not split back: hyper gets the head again and answers it.
        return unsplit(buf, head);
    };
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, value) in spans.drain(..) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[name]),
            HeaderValue::from_maybe_shared(head.slice(value)),
        ) else {
            return unsplit(buf, head);
        };
        headers.append(name, value);
    }
    let mut req = Request::new(ClientBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Parse::Complete(Parsed { req, keep_alive })
}

/// Puts a head split off `buf` back in front of it, for hyper.
fn unsplit(buf: &mut BytesMut, head: Bytes) -> Parse {
    let mut joined = BytesMut::with_capacity(head.len() + buf.len());
    joined.extend_from_slice(&head);
    joined.extend_from_slice(buf);
    *buf = joined;
    Parse::Hyper
}

/// How a response body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly so many bytes (none for HEAD, 204, 304).
    Length(u64),
    Chunked,
}

/// Writes a response as hyper's server would (see [`encode_head`]). `Ok(true)`: the
/// connection closes now (the client or the listener asked, or the response says so).
async fn write_response<IO: ClientStream>(
    io: &mut ClientIo<IO>,
    out: &mut Out,
    heads: &mut BytesMut,
    resp: Response<BoxBody>,
    head_request: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let known = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let (framing, closes) = encode_head(
        heads,
        parts.status,
        &parts.headers,
        known,
        head_request,
        keep_alive,
    );
    out.push(heads.split().freeze());
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    // No body at all (HEAD, 204, 304, an empty one): it is not polled.
    while left != Some(0) {
        // What the body has now goes out with what is queued; otherwise the queue goes first.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                out.write_all(io).await?;
                io.flush().await?;
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(err)) => return Err(io::Error::other(err)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        match left.as_mut() {
            Some(left) => {
                let Some(rest) = left.checked_sub(data.len() as u64) else {
                    return Err(io::Error::other("response body longer than its length"));
                };
                *left = rest;
                out.push(data);
            }
            None => {
                out.push(h1::chunk_line(data.len()));
                out.push(data);
                out.push(Bytes::from_static(b"\r\n"));
            }
        }
        if out.bufs.len() >= Out::MAX_BUFS - 3 {
            out.write_all(io).await?;
        }
    }
    match left {
        Some(0) => {}
        Some(_) => return Err(io::Error::other("response body shorter than its length")),
        None => out.push(h1::last_chunk(None)),
    }
    drop(body);
    out.write_all(io).await?;
    io.flush().await?;
    Ok(closes)
}

/// Buffers waiting to be written, in order.
#[derive(Default)]
struct Out {
    bufs: std::collections::VecDeque<Bytes>,
}

impl Out {
    /// Buffers written in one call at most.
    const MAX_BUFS: usize = super::client_io::MAX_WRITE_PARTS;

    fn push(&mut self, bytes: Bytes) {
        self.bufs.push_back(bytes);
    }

    /// Writes everything queued, vectored (file placeholders among the buffers are sent from
    /// their files, see [`super::client_io::FileRegions`]).
    async fn write_all<IO: ClientStream>(&mut self, io: &mut ClientIo<IO>) -> io::Result<()> {
        while !self.bufs.is_empty() {
            poll_fn(|cx| io.poll_write_parts(cx, &mut self.bufs)).await?;
        }
        Ok(())
    }
}

/// Writes the status line and header block of a response into `dst`, as hyper's server writes
/// them: names in lower case, `content-length` as the response or its body says (kept on HEAD,
/// 304), `transfer-encoding: chunked` for a body of unknown length, a `date`. A connection
/// about to close says so. Returns the body's framing and whether the connection closes after.
pub fn encode_head(
    dst: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    known: Option<u64>,
    head_request: bool,
    keep_alive: bool,
) -> (Framing, bool) {
    dst.reserve(64 + headers.len() * 32);
    if status == StatusCode::OK {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.extend_from_slice(b" ");
        dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let no_length = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut declared = None;
    let mut closes = !keep_alive;
    let mut said_close = false;
    let mut dated = false;
    for (name, value) in headers {
        match *name {
            // The framing is decided here, from the body.
            header::TRANSFER_ENCODING => continue,
            header::CONTENT_LENGTH => {
                if no_length || declared.is_some() {
                    continue;
                }
                let Some(len) = value.to_str().ok().and_then(|v| v.parse::<u64>().ok()) else {
                    continue;
                };
                declared = Some(len);
            }
            header::CONNECTION
                if super::headers::value_tokens(value).any(|t| t.eq_ignore_ascii_case("close")) =>
            {
                closes = true;
                said_close = true;
            }
            header::DATE => dated = true,
            _ => {}
        }
        h1::field(dst, name, value);
    }
    let may_have_body = !head_request && !no_length;
    // As hyper: a body of known length is sent as long as it is, whatever the header says.
    let framing = match known.or(declared) {
        _ if !may_have_body => Framing::Length(0),
        Some(len) => Framing::Length(len),
        None => Framing::Chunked,
    };
    if declared.is_none() && !no_length {
        match known {
            Some(len) if len > 0 || !head_request => {
                let _ = write!(dst, "content-length: {len}\r\n");
            }
            None if may_have_body => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            _ => {}
        }
    }
    if closes && !said_close {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        dst.extend_from_slice(b"date: ");
        dst.extend_from_slice(&super::headers::http_date());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    (framing, closes)
}

#[cfg(test)]
mod tests;
