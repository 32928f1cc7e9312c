//! HTTP/1.1 messages to and from an upstream, as bytes (RFC 9112): the request head written
//! in one buffer, the response head parsed with httparse, and the response body's framing.
//! No I/O here: the connector reads and writes, this decides what the bytes mean. The client
//! side's responses (`client_h1`) are written with the same field and chunk helpers.

use std::mem::MaybeUninit;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};

use crate::proxy::headers::{self, Overrides};

/// Most headers an upstream response may carry (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Most bytes of an upstream response head, and of a chunked body's trailers.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// How the request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length`: the body's bytes as they are, exactly this many.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The request line and headers, ready to write: the request's own headers but those
/// `overrides` replaces, then the overrides. `has_body` says whether a body follows. The target
/// is origin-form (an origin server gets no absolute-form, RFC 9112 §3.2.1).
pub fn encode_head<B>(
    req: &Request<B>,
    has_body: bool,
    overrides: &Overrides,
) -> (Vec<u8>, RequestFraming) {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let method = req.method().as_str();
    let size = req
        .headers()
        .iter()
        .chain(overrides.values())
        .fold(method.len() + path.len() + 16, |n, (k, v)| {
            n + k.as_str().len() + v.len() + 4
        });
    let mut out = Vec::with_capacity(size + 32);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut declared = None;
    for (name, value) in req.headers() {
        if name == header::CONTENT_LENGTH {
            declared = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        // Framing is this hop's: set below from what the body is.
        if name == header::TRANSFER_ENCODING || overrides.replaces(name) {
            continue;
        }
        field(&mut out, name, value);
    }
    for (name, value) in overrides.values() {
        field(&mut out, name, value);
    }
    let framing = match (has_body, declared) {
        (false, _) => RequestFraming::Empty,
        (true, Some(n)) => RequestFraming::Length(n),
        (true, None) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            RequestFraming::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    (out, framing)
}

/// One header line.
pub fn field(out: &mut impl BufMut, name: &HeaderName, value: &HeaderValue) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// The chunk-size line of a chunk of `len` bytes.
pub fn chunk_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:X}\r\n"))
}

/// The end of a chunked body, with its trailers.
pub fn last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    let Some(trailers) = trailers.filter(|t| !t.is_empty()) else {
        return Bytes::from_static(b"0\r\n\r\n");
    };
    let mut out = b"0\r\n".to_vec();
    for (name, value) in trailers {
        field(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Why an upstream's bytes are not a response Gatehouse can pass on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid header in response: {0}")]
    Header(String),
    #[error("invalid Content-Length in response")]
    ContentLength,
    #[error("invalid chunk size in response body")]
    ChunkSize,
    #[error("chunk not followed by CRLF in response body")]
    ChunkEnd,
    #[error("invalid trailers in response body")]
    Trailers,
    #[error("switching protocols without an upgrade request")]
    UnexpectedSwitch,
}

impl From<Malformed> for std::io::Error {
    fn from(err: Malformed) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, err)
    }
}

/// A response head read off the wire, and what it means for the body and the connection.
pub struct Head {
    pub response: Response<()>,
    pub body: Decoder,
    /// Whether the connection may carry another exchange after this one.
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf` and takes it out. `Ok(None)`: more bytes are
/// needed. Interim (1xx) responses are skipped. `head_request`: the response to HEAD has no
/// body whatever its headers say.
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, Malformed> {
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(Malformed::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(err) => return Err(Malformed::Head(err)),
        };
        let code = parsed.code.unwrap_or_default();
        let http10 = parsed.version == Some(0);
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(Malformed::UnexpectedSwitch);
            }
            buf.advance(len);
            continue;
        }
        let status =
            StatusCode::from_u16(code).map_err(|_| Malformed::Head(httparse::Error::Status))?;
        // Offsets, so the values can be shared out of the frozen head without copies; kept in
        // a list the thread reuses, not one allocated per response.
        let base = buf.as_ptr() as usize;
        let mut fields = FIELDS.take();
        fields.clear();
        for h in parsed.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| Malformed::Header(h.name.to_string()))?;
            let start = h.value.as_ptr() as usize - base;
            fields.push((name, start..start + h.value.len()));
        }
        let head = buf.split_to(len).freeze();
        // Hop-by-hop headers are read for what they say about this connection and not kept:
        // the response goes on without them.
        let mut hop = HopByHop::default();
        let mut map = HeaderMap::with_capacity(fields.len());
        for (name, range) in fields.drain(..) {
            let value = HeaderValue::from_maybe_shared(head.slice(range))
                .map_err(|_| Malformed::Header(name.to_string()))?;
            if headers::is_hop_by_hop(&name) {
                hop.note(&name, &value);
            } else {
                map.append(name, value);
            }
        }
        FIELDS.set(fields);
        for name in &hop.named {
            map.remove(name);
        }
        return framing(status, http10, map, head_request, &hop).map(Some);
    }
}

type Fields = Vec<(HeaderName, std::ops::Range<usize>)>;

thread_local! {
    /// [`parse_head`]'s list of fields, its room kept from one response to the next.
    static FIELDS: std::cell::Cell<Fields> = const { std::cell::Cell::new(Vec::new()) };
}

/// What a response's hop-by-hop headers say.
#[derive(Default)]
struct HopByHop {
    close: bool,
    keep_alive: bool,
    /// Other headers `Connection` names: hop-by-hop too (RFC 9110 §7.6.1).
    named: Vec<HeaderName>,
    transfer_encoding: bool,
    /// The last transfer coding is `chunked`.
    chunked: bool,
}

impl HopByHop {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        let tokens = || headers::value_tokens(value).filter(|t| !t.is_empty());
        if name == header::CONNECTION {
            for token in tokens() {
                if token.eq_ignore_ascii_case("close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    self.keep_alive = true;
                } else if let Ok(named) = HeaderName::from_bytes(token.as_bytes()) {
                    self.named.push(named);
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            // Of several lines, the last one's last coding is the message's last.
            if let Some(last) = tokens().next_back() {
                self.chunked = last.eq_ignore_ascii_case("chunked");
            }
        }
    }
}

/// The body's framing and the connection's fate from a parsed head (RFC 9112 §6.3, §9.3).
fn framing(
    status: StatusCode,
    http10: bool,
    headers: HeaderMap,
    head_request: bool,
    hop: &HopByHop,
) -> Result<Head, Malformed> {
    let mut keep_alive = !hop.close && (!http10 || hop.keep_alive);
    let bodiless =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let body = if bodiless {
        Decoder::Length(0)
    } else if hop.transfer_encoding {
        // Transfer-Encoding wins over Content-Length; a message carrying both may be an
        // attempt at smuggling, so its connection is not reused.
        if headers.contains_key(header::CONTENT_LENGTH) {
            keep_alive = false;
        }
        if hop.chunked {
            Decoder::Chunked(Chunked::Size)
        } else {
            keep_alive = false;
            Decoder::UntilClose
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        Decoder::Length(content_length(&headers)?)
    } else {
        keep_alive = false;
        Decoder::UntilClose
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    // The version is this hop's: the client gets Gatehouse's own (RFC 9110 §6.2), and an
    // HTTP/1.0 backend does not turn the client's connection into a closing HTTP/1.0 one.
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = headers;
    Ok(Head {
        response,
        body,
        keep_alive,
    })
}

/// Takes complete interim (1xx) responses off the front of `buf`, as they come while a
/// request body is still being sent. `true` when the rest may be a final answer: complete, cut
/// short, or not a response at all.
pub fn skip_interim(buf: &mut BytesMut) -> bool {
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len))
                if parsed
                    .code
                    .is_some_and(|c| (100..200).contains(&c) && c != 101) =>
            {
                buf.advance(len);
            }
            // A head still coming, and nothing yet says it is final.
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                return parsed.code.is_some_and(|c| !(100..200).contains(&c));
            }
            _ => return !buf.is_empty(),
        }
    }
}

/// The one length all Content-Length lines agree on (a list of equal values counts as one).
fn content_length(headers: &HeaderMap) -> Result<u64, Malformed> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| Malformed::ContentLength)?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Malformed::ContentLength);
            }
            let n = part.parse::<u64>().map_err(|_| Malformed::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed::ContentLength);
            }
            length = Some(n);
        }
    }
    length.ok_or(Malformed::ContentLength)
}

/// Where a response body is in its framing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the upstream closes.
    UntilClose,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What [`Decoder::decode`] took out of the buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The buffer ends before the next piece is whole: read more.
    NeedMore,
    End,
}

impl Decoder {
    /// Whether the body is all read.
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Length(0) | Decoder::Chunked(Chunked::Done))
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Chunked(Chunked::Done) => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of the body out of `buf`. `eof`: the upstream closed and `buf` is
    /// all there will be.
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Decoded, DecodeError> {
        loop {
            match self {
                Decoder::Length(0) | Decoder::Chunked(Chunked::Done) => return Ok(Decoded::End),
                Decoder::Length(rest) => {
                    if buf.is_empty() {
                        return if eof {
                            Err(DecodeError::Cut)
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    }
                    let take = (*rest).min(buf.len() as u64) as usize;
                    *rest -= take as u64;
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Decoder::UntilClose => {
                    if !buf.is_empty() {
                        return Ok(Decoded::Data(buf.split().freeze()));
                    }
                    return Ok(if eof { Decoded::End } else { Decoded::NeedMore });
                }
                Decoder::Chunked(state) => match state.step(buf)? {
                    Step::Out(decoded) => return Ok(decoded),
                    Step::Moved => {}
                    Step::NeedMore if eof => return Err(DecodeError::Cut),
                    Step::NeedMore => return Ok(Decoded::NeedMore),
                },
            }
        }
    }
}

/// What one step of the chunked decoder did.
enum Step {
    Out(Decoded),
    /// The state moved on without a piece: step again.
    Moved,
    NeedMore,
}

/// A body that cannot be read to its end.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("upstream closed the connection before the end of the response body")]
    Cut,
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

impl From<DecodeError> for std::io::Error {
    fn from(err: DecodeError) -> Self {
        match err {
            DecodeError::Cut => std::io::Error::new(std::io::ErrorKind::UnexpectedEof, err),
            DecodeError::Malformed(m) => m.into(),
        }
    }
}

impl Chunked {
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        match self {
            Chunked::Size => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                    Ok(Step::Moved)
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                    Err(Malformed::ChunkSize)
                }
                Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
                Err(_) => Err(Malformed::ChunkSize),
            },
            Chunked::Data(rest) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = (*rest).min(buf.len() as u64) as usize;
                *rest -= take as u64;
                let data = buf.split_to(take).freeze();
                if *rest == 0 {
                    *self = Chunked::DataEnd;
                }
                Ok(Step::Out(Decoded::Data(data)))
            }
            Chunked::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Malformed::ChunkEnd);
                }
                buf.advance(2);
                *self = Chunked::Size;
                Ok(Step::Moved)
            }
            // The trailer section: header lines up to an empty line (most often only that).
            Chunked::Trailers => {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(buf, &mut slots) {
                    Ok(httparse::Status::Complete((used, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for f in fields {
                            let name = HeaderName::from_bytes(f.name.as_bytes())
                                .map_err(|_| Malformed::Trailers)?;
                            let value = HeaderValue::from_bytes(f.value)
                                .map_err(|_| Malformed::Trailers)?;
                            trailers.append(name, value);
                        }
                        buf.advance(used);
                        *self = Chunked::Done;
                        Ok(if trailers.is_empty() {
                            Step::Moved
                        } else {
                            Step::Out(Decoded::Trailers(trailers))
                        })
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                        Err(Malformed::Trailers)
                    }
                    Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
                    Err(_) => Err(Malformed::Trailers),
                }
            }
            Chunked::Done => Ok(Step::Out(Decoded::End)),
        }
    }
}

#[cfg(test)]
mod tests;
