//! HTTP/2 frames (RFC 9113 section 4 and 6).
//!
//! [`parse`] takes one frame off the front of the read buffer and refuses what the frame alone
//! shows to be wrong (lengths, stream 0 or not, padding, SETTINGS values). What depends on the
//! connection's state (stream states, a CONTINUATION following its HEADERS, flow-control
//! windows, SETTINGS acknowledgements) is the connection's business. The writers append the
//! frames a server sends.

use std::error::Error;
use std::fmt;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

/// Length of a frame head: 24-bit length, type, flags, 31-bit stream id.
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE before any SETTINGS, and the least a peer may advertise.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The most a peer may advertise as SETTINGS_MAX_FRAME_SIZE: what the 24-bit length holds.
pub const MAX_FRAME_SIZE_LIMIT: u32 = (1 << 24) - 1;
/// The flow-control window of the connection and of each stream before any WINDOW_UPDATE or
/// SETTINGS_INITIAL_WINDOW_SIZE (RFC 9113 6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The largest flow-control window (and initial window size) RFC 9113 allows.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The client connection preface (RFC 9113 3.4), sent before its first SETTINGS frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Stream ids and window increments are 31 bits; the top bit is reserved and ignored.
const U31_MASK: u32 = (1 << 31) - 1;
/// Length of a SETTINGS entry: 16-bit identifier, 32-bit value.
const SETTING_LEN: usize = 6;
/// Length of HEADERS' and PRIORITY's priority fields: E bit + dependency, weight.
const PRIORITY_LEN: usize = 5;

/// Frame types (RFC 9113 section 6), the `kind` of [`write_head`].
pub mod kind {
    /// DATA (6.1).
    pub const DATA: u8 = 0x0;
    /// HEADERS (6.2).
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY (6.3).
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM (6.4).
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS (6.5).
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE (6.6).
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING (6.7).
    pub const PING: u8 = 0x6;
    /// GOAWAY (6.8).
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE (6.9).
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION (6.10).
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags, the `flags` of [`write_head`] (a module of its own: the PRIORITY flag and the
/// PRIORITY frame type share a name).
pub mod flag {
    /// DATA, HEADERS: the last frame the sender sends on the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, CONTINUATION: the last fragment of a field block.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS: a pad length byte first, padding last.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: priority fields after the pad length.
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers (RFC 9113 6.5.2; ENABLE_CONNECT_PROTOCOL is RFC 8441's).
mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// An error code (RFC 9113 section 7); unknown codes are kept as they came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    /// Not an error: a graceful shutdown.
    pub const NO_ERROR: Reason = Reason(0x0);
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    /// An unexpected internal error.
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    /// The peer broke flow control.
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    /// A SETTINGS frame was not acknowledged in time.
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    /// A frame came on a half-closed stream.
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    /// A frame had the wrong size.
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    /// The stream is no longer needed.
    pub const CANCEL: Reason = Reason(0x8);
    /// The field compression context cannot be kept.
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    /// The connection of a CONNECT request was reset or closed.
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    /// The peer is generating excessive load.
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    /// The transport's security is not enough.
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    /// HTTP/1.1 is to be used instead.
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    /// The RFC's name for a known code.
    fn name(self) -> Option<&'static str> {
        let name = match self {
            Reason::NO_ERROR => "NO_ERROR",
            Reason::PROTOCOL_ERROR => "PROTOCOL_ERROR",
            Reason::INTERNAL_ERROR => "INTERNAL_ERROR",
            Reason::FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
            Reason::SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
            Reason::STREAM_CLOSED => "STREAM_CLOSED",
            Reason::FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
            Reason::REFUSED_STREAM => "REFUSED_STREAM",
            Reason::CANCEL => "CANCEL",
            Reason::COMPRESSION_ERROR => "COMPRESSION_ERROR",
            Reason::CONNECT_ERROR => "CONNECT_ERROR",
            Reason::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
            Reason::INADEQUATE_SECURITY => "INADEQUATE_SECURITY",
            Reason::HTTP_1_1_REQUIRED => "HTTP_1_1_REQUIRED",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown error code {:#x}", self.0),
        }
    }
}

/// SETTINGS values a peer sent (only those present).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// SETTINGS_HEADER_TABLE_SIZE: the most the HPACK encoder's dynamic table may hold.
    pub header_table_size: Option<u32>,
    /// SETTINGS_ENABLE_PUSH.
    pub enable_push: Option<bool>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE (at most [`MAX_WINDOW`]).
    pub initial_window_size: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE (within [`DEFAULT_MAX_FRAME_SIZE`]..=[`MAX_FRAME_SIZE_LIMIT`]).
    pub max_frame_size: Option<u32>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (advisory).
    pub max_header_list_size: Option<u32>,
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441: extended CONNECT, e.g. WebSockets).
    pub enable_connect_protocol: Option<bool>,
}

/// The priority fields of HEADERS and PRIORITY (RFC 9113 5.3.2; deprecated, read to be checked
/// and skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    /// The dependency is exclusive.
    pub exclusive: bool,
    /// The stream depended on (31 bits).
    pub depends_on: u32,
    /// The weight as sent: the RFC's weight (1 to 256) minus one.
    pub weight: u8,
}

/// One frame, as [`parse`] read it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// `flow_len` is the whole payload length, padding included: what flow control counts.
    Data {
        stream: u32,
        end_stream: bool,
        data: Bytes,
        flow_len: u32,
    },
    /// `block`: the header block fragment, padding and priority fields removed.
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        priority: Option<Priority>,
        block: Bytes,
    },
    /// A PRIORITY frame (deprecated: to be ignored once read).
    Priority { stream: u32, priority: Priority },
    /// The peer reset a stream.
    RstStream { stream: u32, reason: Reason },
    /// The peer's settings (empty when `ack`).
    Settings { ack: bool, settings: Settings },
    /// A server never accepts one; parsed only far enough to say so.
    PushPromise { stream: u32 },
    /// A PING, or (`ack`) the answer to ours.
    Ping { ack: bool, payload: [u8; 8] },
    /// The peer is closing the connection; streams above `last_stream` were not processed.
    GoAway {
        last_stream: u32,
        reason: Reason,
        debug: Bytes,
    },
    /// More flow-control credit, for a stream or (stream 0) the connection.
    WindowUpdate { stream: u32, increment: u32 },
    /// A further fragment of a field block.
    Continuation {
        stream: u32,
        end_headers: bool,
        block: Bytes,
    },
    /// An unknown frame type: ignored, as RFC 9113 5.5 requires.
    Unknown { kind: u8, stream: u32 },
}

/// Why a frame was refused: a connection error (GOAWAY with the reason) or a stream error
/// (RST_STREAM on that stream; the connection goes on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The connection is to be closed with a GOAWAY carrying the reason.
    Connection(Reason, &'static str),
    /// The stream is to be reset with the reason; the frame was consumed.
    Stream(u32, Reason, &'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Connection(reason, why) => write!(f, "connection error {reason}: {why}"),
            FrameError::Stream(stream, reason, why) => {
                write!(f, "stream {stream} error {reason}: {why}")
            }
        }
    }
}

impl Error for FrameError {}

/// A connection error (shorter at the many call sites).
fn conn(reason: Reason, why: &'static str) -> FrameError {
    FrameError::Connection(reason, why)
}

/// The fields of a frame head.
#[derive(Clone, Copy)]
struct Head {
    len: u32,
    flags: u8,
    stream: u32,
    /// Where the frame ends in the buffer (head included).
    end: usize,
}

impl Head {
    fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Takes one whole frame off the front of `buf`, or says more bytes are needed (Ok(None),
/// nothing consumed). `max_frame_size` is the SETTINGS_MAX_FRAME_SIZE we advertised. Payloads
/// are zero-copy `Bytes` split off `buf` (`split_to(..).freeze()`). A frame refused with a
/// stream error is consumed (the connection can go on reading after it); a connection error
/// leaves `buf` as it was (nothing more is to be read from it).
pub fn parse(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Frame>, FrameError> {
    let Some(&head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    let frame_type = head[3];
    // Refused from the head alone: an announced 16 MiB never makes us buffer it.
    if len > max_frame_size {
        return Err(conn(
            Reason::FRAME_SIZE_ERROR,
            "frame longer than our SETTINGS_MAX_FRAME_SIZE",
        ));
    }
    let end = HEADER_LEN + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let head = Head {
        len,
        flags: head[4],
        // The reserved bit has no meaning and is ignored on receipt (RFC 9113 4.1).
        stream: read_u31(&head[5..]),
        end,
    };
    let frame = match frame_type {
        kind::DATA => data(buf, head)?,
        kind::HEADERS => headers(buf, head)?,
        kind::PRIORITY => priority(buf, head)?,
        kind::RST_STREAM => rst_stream(buf, head)?,
        kind::SETTINGS => settings(buf, head)?,
        kind::PUSH_PROMISE => {
            // Its payload (a field block among it) is not worth reading: the caller ends the
            // connection.
            buf.advance(end);
            Frame::PushPromise {
                stream: head.stream,
            }
        }
        kind::PING => ping(buf, head)?,
        kind::GOAWAY => goaway(buf, head)?,
        kind::WINDOW_UPDATE => window_update(buf, head)?,
        kind::CONTINUATION => {
            if head.stream == 0 {
                return Err(conn(Reason::PROTOCOL_ERROR, "CONTINUATION on stream 0"));
            }
            Frame::Continuation {
                stream: head.stream,
                end_headers: head.has(flag::END_HEADERS),
                block: take(buf, head.end, 0..head.len as usize),
            }
        }
        kind => {
            buf.advance(end);
            Frame::Unknown {
                kind,
                stream: head.stream,
            }
        }
    };
    Ok(Some(frame))
}

/// Reads a big-endian u32 from the first four bytes of `bytes` (the caller checked there are).
fn read_u32(bytes: &[u8]) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

/// Reads a 31-bit value (stream id, window increment), the reserved bit masked.
fn read_u31(bytes: &[u8]) -> u32 {
    read_u32(bytes) & U31_MASK
}

/// Reads priority fields (the caller checked the five bytes are there).
fn read_priority(bytes: &[u8]) -> Priority {
    let word = read_u32(bytes);
    Priority {
        exclusive: word & !U31_MASK != 0,
        depends_on: word & U31_MASK,
        weight: bytes[4],
    }
}

/// The frame's payload, as the slice of `buf` it is in.
fn payload(buf: &BytesMut, head: Head) -> &[u8] {
    &buf[HEADER_LEN..head.end]
}

/// Consumes the frame ending at `end` and returns `keep` of its payload without a copy.
fn take(buf: &mut BytesMut, end: usize, keep: Range<usize>) -> Bytes {
    if keep.is_empty() {
        // Not splitting keeps `buf` unshared (an END_STREAM DATA is often empty).
        buf.advance(end);
        return Bytes::new();
    }
    let mut frame = buf.split_to(end);
    frame.advance(HEADER_LEN + keep.start);
    frame.truncate(keep.len());
    frame.freeze()
}

/// The pad length of a DATA or HEADERS payload and where the fields after it start.
fn pad_len(payload: &[u8], head: Head) -> Result<(usize, usize), FrameError> {
    if !head.has(flag::PADDED) {
        return Ok((0, 0));
    }
    match payload.first() {
        Some(&pad) => Ok((usize::from(pad), 1)),
        None => Err(conn(
            Reason::PROTOCOL_ERROR,
            "PADDED frame without a pad length",
        )),
    }
}

/// What is left of a payload of `len` bytes once the fields before `start` and `pad` bytes of
/// padding are set aside; padding may take all of it but no more (RFC 9113 6.1, 6.2).
fn unpadded(len: usize, start: usize, pad: usize) -> Result<Range<usize>, FrameError> {
    match (len - start).checked_sub(pad) {
        Some(content) => Ok(start..start + content),
        None => Err(conn(
            Reason::PROTOCOL_ERROR,
            "padding longer than the rest of the payload",
        )),
    }
}

fn data(buf: &mut BytesMut, head: Head) -> Result<Frame, FrameError> {
    if head.stream == 0 {
        return Err(conn(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
    }
    let payload = payload(buf, head);
    let (pad, start) = pad_len(payload, head)?;
    let keep = unpadded(payload.len(), start, pad)?;
    Ok(Frame::Data {
        stream: head.stream,
        end_stream: head.has(flag::END_STREAM),
        data: take(buf, head.end, keep),
        flow_len: head.len,
    })
}

fn headers(buf: &mut BytesMut, head: Head) -> Result<Frame, FrameError> {
    if head.stream == 0 {
        return Err(conn(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
    }
    let payload = payload(buf, head);
    let (pad, mut start) = pad_len(payload, head)?;
    let mut priority = None;
    if head.has(flag::PRIORITY) {
        let Some(fields) = payload.get(start..start + PRIORITY_LEN) else {
            return Err(conn(
                Reason::FRAME_SIZE_ERROR,
                "HEADERS too short for its priority fields",
            ));
        };
        let fields = read_priority(fields);
        if fields.depends_on == head.stream {
            // A stream error by RFC 9113 5.3.1, made a connection error (5.4 allows it): the
            // field block is not returned, and a field block left undecoded breaks the HPACK
            // context (4.3 requires a connection error then).
            return Err(conn(
                Reason::PROTOCOL_ERROR,
                "HEADERS depending on its own stream",
            ));
        }
        priority = Some(fields);
        start += PRIORITY_LEN;
    }
    let keep = unpadded(payload.len(), start, pad)?;
    Ok(Frame::Headers {
        stream: head.stream,
        end_stream: head.has(flag::END_STREAM),
        end_headers: head.has(flag::END_HEADERS),
        priority,
        block: take(buf, head.end, keep),
    })
}

fn priority(buf: &mut BytesMut, head: Head) -> Result<Frame, FrameError> {
    if head.stream == 0 {
        return Err(conn(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
    }
    let payload = payload(buf, head);
    if payload.len() != PRIORITY_LEN {
        buf.advance(head.end);
        return Err(FrameError::Stream(
            head.stream,
            Reason::FRAME_SIZE_ERROR,
            "PRIORITY length not 5",
        ));
    }
    let priority = read_priority(payload);
    buf.advance(head.end);
    if priority.depends_on == head.stream {
        return Err(FrameError::Stream(
            head.stream,
            Reason::PROTOCOL_ERROR,
            "PRIORITY depending on its own stream",
        ));
    }
    Ok(Frame::Priority {
        stream: head.stream,
        priority,
    })
}

fn rst_stream(buf: &mut BytesMut, head: Head) -> Result<Frame, FrameError> {
    if head.stream == 0 {
        return Err(conn(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
    }
    let payload = payload(buf, head);
    if payload.len() != 4 {
        return Err(conn(Reason::FRAME_SIZE_ERROR, "RST_STREAM length not 4"));
    }
    let reason = Reason(read_u32(payload));
    buf.advance(head.end);
    Ok(Frame::RstStream {
        stream: head.stream,
        reason,
    })
}

/// A SETTINGS value that can only be 0 or 1.
fn setting_flag(value: u32, why: &'static str) -> Result<bool, FrameError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(conn(Reason::PROTOCOL_ERROR, why)),
    }
}

fn settings(buf: &mut BytesMut, head: Head) -> Result<Frame, FrameError> {
    if head.stream != 0 {
        return Err(conn(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
    }
    let ack = head.has(flag::ACK);
    let payload = payload(buf, head);
    if ack && !payload.is_empty() {
        return Err(conn(
            Reason::FRAME_SIZE_ERROR,
            "SETTINGS ack with a payload",
        ));
    }
    if !payload.len().is_multiple_of(SETTING_LEN) {
        return Err(conn(
            Reason::FRAME_SIZE_ERROR,
            "SETTINGS length not a multiple of 6",
        ));
    }
    let mut settings = Settings::default();
    for entry in payload.chunks_exact(SETTING_LEN) {
        let value = read_u32(&entry[2..]);
        // A later value of the same identifier replaces an earlier one.
        match u16::from_be_bytes([entry[0], entry[1]]) {
            setting::HEADER_TABLE_SIZE => settings.header_table_size = Some(value),
            setting::ENABLE_PUSH => {
                settings.enable_push =
                    Some(setting_flag(value, "SETTINGS_ENABLE_PUSH not 0 or 1")?);
            }
            setting::MAX_CONCURRENT_STREAMS => settings.max_concurrent_streams = Some(value),
            setting::INITIAL_WINDOW_SIZE => {
                if value > MAX_WINDOW {
                    return Err(conn(
                        Reason::FLOW_CONTROL_ERROR,
                        "SETTINGS_INITIAL_WINDOW_SIZE over 2^31 - 1",
                    ));
                }
                settings.initial_window_size = Some(value);
            }
            setting::MAX_FRAME_SIZE => {
                if !(DEFAULT_MAX_FRAME_SIZE..=MAX_FRAME_SIZE_LIMIT).contains(&value) {
                    return Err(conn(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_MAX_FRAME_SIZE out of range",
                    ));
                }
                settings.max_frame_size = Some(value);
            }
            setting::MAX_HEADER_LIST_SIZE => settings.max_header_list_size = Some(value),
            setting::ENABLE_CONNECT_PROTOCOL => {
                settings.enable_connect_protocol = Some(setting_flag(
                    value,
                    "SETTINGS_ENABLE_CONNECT_PROTOCOL not 0 or 1",
                )?);
            }
            // Unknown identifiers are ignored (RFC 9113 6.5.2).
            _ => {}
        }
    }
    buf.advance(head.end);
    Ok(Frame::Settings { ack, settings })
}

fn ping(buf: &mut BytesMut, head: Head) -> Result<Frame, FrameError> {
    if head.stream != 0 {
        return Err(conn(Reason::PROTOCOL_ERROR, "PING on a stream"));
    }
    let Ok(payload) = <[u8; 8]>::try_from(payload(buf, head)) else {
        return Err(conn(Reason::FRAME_SIZE_ERROR, "PING length not 8"));
    };
    buf.advance(head.end);
    Ok(Frame::Ping {
        ack: head.has(flag::ACK),
        payload,
    })
}

fn goaway(buf: &mut BytesMut, head: Head) -> Result<Frame, FrameError> {
    if head.stream != 0 {
        return Err(conn(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
    }
    let payload = payload(buf, head);
    if payload.len() < 8 {
        return Err(conn(Reason::FRAME_SIZE_ERROR, "GOAWAY shorter than 8"));
    }
    let last_stream = read_u31(payload);
    let reason = Reason(read_u32(&payload[4..]));
    Ok(Frame::GoAway {
        last_stream,
        reason,
        debug: take(buf, head.end, 8..head.len as usize),
    })
}

fn window_update(buf: &mut BytesMut, head: Head) -> Result<Frame, FrameError> {
    let payload = payload(buf, head);
    if payload.len() != 4 {
        return Err(conn(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE length not 4"));
    }
    let increment = read_u31(payload);
    if increment == 0 {
        if head.stream == 0 {
            return Err(conn(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE of 0 on the connection",
            ));
        }
        buf.advance(head.end);
        return Err(FrameError::Stream(
            head.stream,
            Reason::PROTOCOL_ERROR,
            "WINDOW_UPDATE of 0 on a stream",
        ));
    }
    buf.advance(head.end);
    Ok(Frame::WindowUpdate {
        stream: head.stream,
        increment,
    })
}

/// Appends a frame head. A `len` over 2^24 - 1 panics: it cannot be sent, and a wrong length
/// would corrupt the connection for good (a bug in the caller, never input).
pub fn write_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    assert!(
        len <= MAX_FRAME_SIZE_LIMIT as usize,
        "HTTP/2 frame length {len} over 2^24 - 1"
    );
    let [_, l0, l1, l2] = (len as u32).to_be_bytes();
    let [s0, s1, s2, s3] = (stream & U31_MASK).to_be_bytes();
    dst.extend_from_slice(&[l0, l1, l2, kind, flags, s0, s1, s2, s3]);
}

/// Appends a SETTINGS frame with the `Some` fields of `settings`, in identifier order.
pub fn write_settings(dst: &mut BytesMut, settings: &Settings) {
    let entries = [
        (setting::HEADER_TABLE_SIZE, settings.header_table_size),
        (setting::ENABLE_PUSH, settings.enable_push.map(u32::from)),
        (
            setting::MAX_CONCURRENT_STREAMS,
            settings.max_concurrent_streams,
        ),
        (setting::INITIAL_WINDOW_SIZE, settings.initial_window_size),
        (setting::MAX_FRAME_SIZE, settings.max_frame_size),
        (setting::MAX_HEADER_LIST_SIZE, settings.max_header_list_size),
        (
            setting::ENABLE_CONNECT_PROTOCOL,
            settings.enable_connect_protocol.map(u32::from),
        ),
    ];
    let len = SETTING_LEN * entries.iter().filter(|(_, value)| value.is_some()).count();
    dst.reserve(HEADER_LEN + len);
    write_head(dst, len, kind::SETTINGS, 0, 0);
    for (id, value) in entries {
        if let Some(value) = value {
            dst.extend_from_slice(&id.to_be_bytes());
            dst.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// Appends the acknowledgement of the peer's SETTINGS.
pub fn write_settings_ack(dst: &mut BytesMut) {
    write_head(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends the answer to a PING, with its payload.
pub fn write_ping_ack(dst: &mut BytesMut, payload: [u8; 8]) {
    write_head(dst, payload.len(), kind::PING, flag::ACK, 0);
    dst.extend_from_slice(&payload);
}

/// Appends a GOAWAY (without debug data): streams above `last_stream` were not processed.
pub fn write_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason) {
    write_head(dst, 8, kind::GOAWAY, 0, 0);
    dst.extend_from_slice(&(last_stream & U31_MASK).to_be_bytes());
    dst.extend_from_slice(&reason.0.to_be_bytes());
}

/// Appends an RST_STREAM resetting `stream`.
pub fn write_rst_stream(dst: &mut BytesMut, stream: u32, reason: Reason) {
    write_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.extend_from_slice(&reason.0.to_be_bytes());
}

/// Appends a WINDOW_UPDATE giving `increment` (1..=[`MAX_WINDOW`]) more bytes of credit to
/// `stream` (0: the connection).
pub fn write_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    debug_assert!(
        (1..=MAX_WINDOW).contains(&increment),
        "WINDOW_UPDATE increment {increment}"
    );
    write_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.extend_from_slice(&(increment & U31_MASK).to_be_bytes());
}

/// A HEADERS frame carrying `block`, followed by CONTINUATION frames when the block is longer
/// than `max_frame_size` (the peer's); END_STREAM on the HEADERS frame when asked, END_HEADERS
/// on the last frame. A `max_frame_size` outside what a peer may advertise is brought within it.
pub fn write_headers(
    dst: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    // The peer's value was checked on receipt; clamping still keeps a 0 from looping forever.
    let max = max_frame_size.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_LIMIT) as usize;
    let frames = block.len().div_ceil(max).max(1);
    dst.reserve(frames * HEADER_LEN + block.len());
    let (first, mut rest) = block.split_at(block.len().min(max));
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if rest.is_empty() {
        flags |= flag::END_HEADERS;
    }
    write_head(dst, first.len(), kind::HEADERS, flags, stream);
    dst.extend_from_slice(first);
    while !rest.is_empty() {
        let (fragment, tail) = rest.split_at(rest.len().min(max));
        rest = tail;
        let flags = if rest.is_empty() {
            flag::END_HEADERS
        } else {
            0
        };
        write_head(dst, fragment.len(), kind::CONTINUATION, flags, stream);
        dst.extend_from_slice(fragment);
    }
}

/// Only the 9-byte head of a DATA frame of `len` bytes: its payload is written after it by the
/// caller (so a `Bytes` can be sent without a copy).
pub fn write_data_head(dst: &mut BytesMut, stream: u32, len: u32, end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    write_head(dst, len as usize, kind::DATA, flags, stream);
}

#[cfg(test)]
mod tests;
