//! HPACK (RFC 7541): header compression for HTTP/2.
//!
//! One [`Decoder`] and one [`Encoder`] per connection. Each keeps a dynamic table that must
//! stay in step with the peer's, so every header block of the connection goes through them,
//! in order. The decoder also validates fields (RFC 9113 8.2.1, 8.3), so the caller gets
//! typed pseudo-headers and ready `http` names and values.

use std::collections::VecDeque;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

mod huffman;
#[cfg(test)]
mod tests;

/// RFC 7541 4.1: each entry costs 32 octets on top of its name and value.
const ENTRY_OVERHEAD: usize = 32;
/// The number of entries of the static table (RFC 7541 Appendix A).
const STATIC_LEN: usize = 61;
/// SETTINGS_HEADER_TABLE_SIZE until the peer says otherwise (RFC 9113 6.5.2).
const DEFAULT_TABLE_SIZE: usize = 4096;
/// The most our encoder uses of the table the peer allows. RFC 7541 4.2 lets an encoder use
/// less; without a cap a peer advertising a huge table would make us keep every distinct
/// header we ever sent on the connection.
const ENCODER_TABLE_CAP: usize = 4096;
/// Longer values are sent without indexing: they rarely repeat and would evict many entries.
const MAX_INDEXED_VALUE: usize = 128;
/// Integers are capped just above 2^28 (RFC 7541 5.1 leaves the limit to implementations):
/// no index, length or table size comes near, and the arithmetic cannot overflow.
const MAX_INT_SHIFT: u32 = 28;

/// One decoded field of a header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// `:method`.
    Method(Method),
    /// `:scheme`.
    Scheme(Bytes),
    /// `:authority`.
    Authority(Bytes),
    /// `:path`.
    Path(Bytes),
    /// `:protocol` (RFC 8441).
    Protocol(Bytes),
    /// `:status` (a server never expects it; the caller rejects it).
    Status(Bytes),
    /// A regular field.
    Header(HeaderName, HeaderValue),
}

impl Field {
    /// The name's length as RFC 7541 4.1 counts it (a pseudo-header's includes the colon).
    fn name_len(&self) -> usize {
        match self {
            Field::Method(_) | Field::Scheme(_) | Field::Status(_) => 7,
            Field::Authority(_) => 10,
            Field::Path(_) => 5,
            Field::Protocol(_) => 9,
            Field::Header(name, _) => name.as_str().len(),
        }
    }

    fn value_len(&self) -> usize {
        match self {
            Field::Method(method) => method.as_str().len(),
            Field::Scheme(v)
            | Field::Authority(v)
            | Field::Path(v)
            | Field::Protocol(v)
            | Field::Status(v) => v.len(),
            Field::Header(_, v) => v.len(),
        }
    }

    /// The size of the field in a dynamic table (RFC 7541 4.1) and in a header list
    /// (RFC 9113 6.5.2): the same formula.
    fn size(&self) -> usize {
        self.name_len() + self.value_len() + ENTRY_OVERHEAD
    }

    fn name(&self) -> Name {
        match self {
            Field::Method(_) => Name::Method,
            Field::Scheme(_) => Name::Scheme,
            Field::Authority(_) => Name::Authority,
            Field::Path(_) => Name::Path,
            Field::Protocol(_) => Name::Protocol,
            Field::Status(_) => Name::Status,
            Field::Header(name, _) => Name::Header(name.clone()),
        }
    }

    /// A distinct bit per pseudo-header, to find duplicates; 0 for a regular field.
    fn pseudo_bit(&self) -> u8 {
        match self {
            Field::Method(_) => 1,
            Field::Scheme(_) => 2,
            Field::Authority(_) => 4,
            Field::Path(_) => 8,
            Field::Protocol(_) => 16,
            Field::Status(_) => 32,
            Field::Header(..) => 0,
        }
    }
}

/// Why a header block was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The block cannot be decoded: the connection must end with COMPRESSION_ERROR
    /// (bad index, bad integer, bad Huffman padding/EOS, truncated block, table size update
    /// over the limit or not at the start of the block, string longer than the block, ...).
    Compression(&'static str),
    /// The block decoded (the dynamic table is in step) but a field is malformed
    /// (RFC 9113 8.2.1 / 8.3): an uppercase or otherwise invalid name, a value with NUL, CR
    /// or LF or leading/trailing SP/HTAB, an unknown pseudo-header, a pseudo-header after a
    /// regular field, a duplicated pseudo-header, a bad :method. The stream gets
    /// PROTOCOL_ERROR; the connection goes on.
    Malformed(&'static str),
    /// The decoded list is over `max_list_size` (each field counts name + value + 32 octets,
    /// RFC 9113 6.5.2); the block was still decoded to the end so the table is in step.
    ListTooLarge,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Compression(why) => write!(f, "HPACK compression error: {why}"),
            DecodeError::Malformed(why) => write!(f, "malformed header field: {why}"),
            DecodeError::ListTooLarge => f.write_str("header list too large"),
        }
    }
}

impl std::error::Error for DecodeError {}

const TRUNCATED: DecodeError = DecodeError::Compression("truncated header block");

/// A field name, resolved from a table or parsed from a literal.
#[derive(Clone, Debug)]
enum Name {
    Method,
    Scheme,
    Authority,
    Path,
    Protocol,
    Status,
    Header(HeaderName),
    /// A name that failed validation; any field with it is malformed. `len` is its length,
    /// still needed for table sizes when a later literal reuses it by index.
    Invalid {
        len: usize,
        reason: &'static str,
    },
}

impl Name {
    /// Classifies and validates a literal name (RFC 9113 8.2.1, 8.3).
    fn parse(src: &[u8]) -> Name {
        let invalid = |reason| Name::Invalid {
            len: src.len(),
            reason,
        };
        match src {
            b":method" => Name::Method,
            b":scheme" => Name::Scheme,
            b":authority" => Name::Authority,
            b":path" => Name::Path,
            b":protocol" => Name::Protocol,
            b":status" => Name::Status,
            [] => invalid("empty field name"),
            [b':', ..] => invalid("unknown pseudo-header"),
            // from_lowercase refuses uppercase, unlike from_bytes, which would lowercase it.
            _ => match HeaderName::from_lowercase(src) {
                Ok(name) => Name::Header(name),
                Err(_) if src.iter().any(u8::is_ascii_uppercase) => invalid("uppercase field name"),
                Err(_) => invalid("invalid character in a field name"),
            },
        }
    }

    /// The name's length in octets, as RFC 7541 4.1 counts it.
    fn octets(&self) -> usize {
        match self {
            Name::Method | Name::Scheme | Name::Status => 7,
            Name::Authority => 10,
            Name::Path => 5,
            Name::Protocol => 9,
            Name::Header(name) => name.as_str().len(),
            Name::Invalid { len, .. } => *len,
        }
    }

    /// Validates `value` for this name and builds the field.
    fn field(&self, value: Bytes, sensitive: bool) -> Result<Field, &'static str> {
        let pseudo = |value: Bytes| check_pseudo_value(&value).map(|()| value);
        Ok(match self {
            // Method::from_bytes accepts only token characters, so no other check is needed.
            Name::Method => Field::Method(Method::from_bytes(&value).map_err(|_| "bad :method")?),
            Name::Scheme => Field::Scheme(pseudo(value)?),
            Name::Authority => Field::Authority(pseudo(value)?),
            Name::Path => Field::Path(pseudo(value)?),
            Name::Protocol => Field::Protocol(pseudo(value)?),
            Name::Status => Field::Status(pseudo(value)?),
            Name::Header(name) => Field::Header(name.clone(), header_value(value, sensitive)?),
            Name::Invalid { reason, .. } => return Err(reason),
        })
    }
}

/// RFC 9113 8.2.1: a value must not start or end with SP or HTAB.
fn check_edges(value: &[u8]) -> Result<(), &'static str> {
    match (value.first(), value.last()) {
        (Some(b' ' | b'\t'), _) | (_, Some(b' ' | b'\t')) => {
            Err("leading or trailing whitespace in a field value")
        }
        _ => Ok(()),
    }
}

/// RFC 9113 8.2.1 for pseudo-header values, which do not become `HeaderValue`s.
fn check_pseudo_value(value: &[u8]) -> Result<(), &'static str> {
    check_edges(value)?;
    if value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err("NUL, CR or LF in a field value");
    }
    Ok(())
}

fn header_value(value: Bytes, sensitive: bool) -> Result<HeaderValue, &'static str> {
    check_edges(&value)?;
    // HeaderValue refuses all control characters but HTAB (so NUL, CR and LF too) and DEL;
    // with a `Bytes` it keeps the buffer without copying.
    let mut value =
        HeaderValue::from_maybe_shared(value).map_err(|_| "control character in a field value")?;
    value.set_sensitive(sensitive);
    Ok(value)
}

/// An entry of the static or the decoder's dynamic table.
#[derive(Clone, Debug)]
enum Entry {
    Field(Field),
    /// A field that failed validation but was inserted all the same, to keep the table in
    /// step with the peer's; referencing it again is again malformed.
    Invalid {
        name: Name,
        reason: &'static str,
    },
}

impl Entry {
    fn name(&self) -> Name {
        match self {
            Entry::Field(field) => field.name(),
            Entry::Invalid { name, .. } => name.clone(),
        }
    }
}

const fn header(name: HeaderName, value: &'static str) -> Entry {
    Entry::Field(Field::Header(name, HeaderValue::from_static(value)))
}

const fn status(code: &'static [u8]) -> Entry {
    Entry::Field(Field::Status(Bytes::from_static(code)))
}

/// RFC 7541 Appendix A, index 1 first. Every entry is a constant: a static hit allocates
/// nothing and clones only static `Bytes`.
static STATIC_TABLE: [Entry; STATIC_LEN] = [
    Entry::Field(Field::Authority(Bytes::new())),
    Entry::Field(Field::Method(Method::GET)),
    Entry::Field(Field::Method(Method::POST)),
    Entry::Field(Field::Path(Bytes::from_static(b"/"))),
    Entry::Field(Field::Path(Bytes::from_static(b"/index.html"))),
    Entry::Field(Field::Scheme(Bytes::from_static(b"http"))),
    Entry::Field(Field::Scheme(Bytes::from_static(b"https"))),
    status(b"200"),
    status(b"204"),
    status(b"206"),
    status(b"304"),
    status(b"400"),
    status(b"404"),
    status(b"500"),
    header(header::ACCEPT_CHARSET, ""),
    header(header::ACCEPT_ENCODING, "gzip, deflate"),
    header(header::ACCEPT_LANGUAGE, ""),
    header(header::ACCEPT_RANGES, ""),
    header(header::ACCEPT, ""),
    header(header::ACCESS_CONTROL_ALLOW_ORIGIN, ""),
    header(header::AGE, ""),
    header(header::ALLOW, ""),
    header(header::AUTHORIZATION, ""),
    header(header::CACHE_CONTROL, ""),
    header(header::CONTENT_DISPOSITION, ""),
    header(header::CONTENT_ENCODING, ""),
    header(header::CONTENT_LANGUAGE, ""),
    header(header::CONTENT_LENGTH, ""),
    header(header::CONTENT_LOCATION, ""),
    header(header::CONTENT_RANGE, ""),
    header(header::CONTENT_TYPE, ""),
    header(header::COOKIE, ""),
    header(header::DATE, ""),
    header(header::ETAG, ""),
    header(header::EXPECT, ""),
    header(header::EXPIRES, ""),
    header(header::FROM, ""),
    header(header::HOST, ""),
    header(header::IF_MATCH, ""),
    header(header::IF_MODIFIED_SINCE, ""),
    header(header::IF_NONE_MATCH, ""),
    header(header::IF_RANGE, ""),
    header(header::IF_UNMODIFIED_SINCE, ""),
    header(header::LAST_MODIFIED, ""),
    header(header::LINK, ""),
    header(header::LOCATION, ""),
    header(header::MAX_FORWARDS, ""),
    header(header::PROXY_AUTHENTICATE, ""),
    header(header::PROXY_AUTHORIZATION, ""),
    header(header::RANGE, ""),
    header(header::REFERER, ""),
    header(header::REFRESH, ""),
    header(header::RETRY_AFTER, ""),
    header(header::SERVER, ""),
    header(header::SET_COOKIE, ""),
    header(header::STRICT_TRANSPORT_SECURITY, ""),
    header(header::TRANSFER_ENCODING, ""),
    header(header::USER_AGENT, ""),
    header(header::VARY, ""),
    header(header::VIA, ""),
    header(header::WWW_AUTHENTICATE, ""),
];

/// A dynamic table (RFC 7541 2.3.2, 4): newest entry first, each with its size.
struct Table<E> {
    entries: VecDeque<(usize, E)>,
    size: usize,
    max_size: usize,
}

impl<E> Table<E> {
    fn new(max_size: usize) -> Self {
        Table {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// RFC 7541 4.3: a smaller maximum evicts the oldest entries at once.
    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let Some((size, _)) = self.entries.pop_back() else {
                break;
            };
            self.size -= size;
        }
    }

    /// RFC 7541 4.4: evicts to make room; an entry larger than the table empties it and is
    /// not added.
    fn insert(&mut self, size: usize, entry: E) {
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front((size, entry));
    }
}

/// The decoding side of one connection.
pub struct Decoder {
    table: Table<Entry>,
    /// The SETTINGS_HEADER_TABLE_SIZE we advertised: the most a size update may ask for.
    limit: usize,
    /// Holds Huffman-coded names, which `HeaderName` copies anyway.
    scratch: Vec<u8>,
}

/// What one block has seen so far, for the checks that span fields.
#[derive(Default)]
struct BlockState {
    /// A field representation was seen: size updates are no longer allowed.
    started: bool,
    regular_seen: bool,
    pseudo_seen: u8,
    list_size: usize,
    /// The first stream-level error; once set, nothing more is emitted.
    error: Option<DecodeError>,
}

impl BlockState {
    fn on_field(
        &mut self,
        field: Result<Field, &'static str>,
        max_list_size: usize,
        emit: &mut impl FnMut(Field),
    ) {
        if self.error.is_some() {
            return;
        }
        let field = match field {
            Ok(field) => field,
            Err(reason) => {
                self.error = Some(DecodeError::Malformed(reason));
                return;
            }
        };
        match field.pseudo_bit() {
            0 => self.regular_seen = true,
            _ if self.regular_seen => {
                self.error = Some(DecodeError::Malformed(
                    "pseudo-header after a regular field",
                ));
                return;
            }
            bit if self.pseudo_seen & bit != 0 => {
                self.error = Some(DecodeError::Malformed("repeated pseudo-header"));
                return;
            }
            bit => self.pseudo_seen |= bit,
        }
        self.list_size = self.list_size.saturating_add(field.size());
        if self.list_size > max_list_size {
            self.error = Some(DecodeError::ListTooLarge);
            return;
        }
        emit(field);
    }
}

/// The three literal representations (RFC 7541 6.2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Literal {
    Incremental,
    WithoutIndexing,
    NeverIndexed,
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE we advertised (4096 unless changed).
    pub fn new(max_table_size: usize) -> Self {
        Decoder {
            table: Table::new(max_table_size),
            limit: max_table_size,
            scratch: Vec::new(),
        }
    }

    /// Decodes one whole header block (HEADERS + CONTINUATIONs already joined), calling `emit`
    /// per field, in order. Always consumes the whole block and applies every insertion, even
    /// after a Malformed field or once over the list size (then stops calling `emit`), so the
    /// dynamic table stays in step with the peer's; the first such error is returned at the end.
    /// A Compression error returns at once.
    pub fn decode(
        &mut self,
        block: Bytes,
        max_list_size: usize,
        mut emit: impl FnMut(Field),
    ) -> Result<(), DecodeError> {
        let buf: &[u8] = &block;
        let mut pos = 0;
        let mut state = BlockState::default();
        while let Some(&first) = buf.get(pos) {
            if first & 0x80 != 0 {
                // 6.1 Indexed Header Field.
                state.started = true;
                let entry = self.get(decode_int(buf, &mut pos, 7)?)?;
                if state.error.is_none() {
                    let field = match entry {
                        Entry::Field(field) => Ok(field.clone()),
                        Entry::Invalid { reason, .. } => Err(*reason),
                    };
                    state.on_field(field, max_list_size, &mut emit);
                }
                continue;
            }
            if first & 0xe0 == 0x20 {
                // 6.3 Dynamic Table Size Update: only before the first field (4.2).
                if state.started {
                    return Err(DecodeError::Compression("table size update after a field"));
                }
                let size = decode_int(buf, &mut pos, 5)?;
                if size > self.limit {
                    return Err(DecodeError::Compression("table size update over the limit"));
                }
                self.table.set_max_size(size);
                continue;
            }
            state.started = true;
            // 6.2.1, 6.2.3, 6.2.2.
            let (kind, prefix) = if first & 0x40 != 0 {
                (Literal::Incremental, 6)
            } else if first & 0x10 != 0 {
                (Literal::NeverIndexed, 4)
            } else {
                (Literal::WithoutIndexing, 4)
            };
            let name = match decode_int(buf, &mut pos, prefix)? {
                0 => self.read_name(buf, &mut pos)?,
                index => self.get(index)?.name(),
            };
            let (value, fresh) = read_value(&block, &mut pos)?;
            if kind != Literal::Incremental {
                if state.error.is_none() {
                    let field = name.field(value, kind == Literal::NeverIndexed);
                    state.on_field(field, max_list_size, &mut emit);
                }
                continue;
            }
            let size = name.octets() + value.len() + ENTRY_OVERHEAD;
            // A table entry lives as long as the connection: it must not keep the whole
            // block (or the read buffer it was cut from) alive, so a raw value is copied.
            let value = if !fresh && size <= self.table.max_size {
                Bytes::copy_from_slice(&value)
            } else {
                value
            };
            let field = name.field(value, false);
            let entry = match &field {
                Ok(field) => Entry::Field(field.clone()),
                Err(reason) => Entry::Invalid { name, reason },
            };
            self.table.insert(size, entry);
            state.on_field(field, max_list_size, &mut emit);
        }
        state.error.map_or(Ok(()), Err)
    }

    /// The entry at `index` of the combined index space (RFC 7541 2.3.3).
    fn get(&self, index: usize) -> Result<&Entry, DecodeError> {
        match index {
            0 => Err(DecodeError::Compression("index 0")),
            1..=STATIC_LEN => Ok(&STATIC_TABLE[index - 1]),
            _ => self
                .table
                .entries
                .get(index - STATIC_LEN - 1)
                .map(|(_, entry)| entry)
                .ok_or(DecodeError::Compression("index past the end of the table")),
        }
    }

    /// Reads a literal name (string literal, 5.2) and validates it.
    fn read_name(&mut self, buf: &[u8], pos: &mut usize) -> Result<Name, DecodeError> {
        let (start, end, huffman) = read_string_header(buf, pos)?;
        if !huffman {
            return Ok(Name::parse(&buf[start..end]));
        }
        self.scratch.clear();
        huffman::decode(&buf[start..end], &mut self.scratch).map_err(DecodeError::Compression)?;
        let name = Name::parse(&self.scratch);
        if self.scratch.capacity() > 1024 {
            // Do not keep a hostile peer's huge name around for the connection's life.
            self.scratch = Vec::new();
        }
        Ok(name)
    }
}

impl fmt::Debug for Decoder {
    /// Sizes only: table contents may be credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("entries", &self.table.entries.len())
            .field("size", &self.table.size)
            .field("max_size", &self.table.max_size)
            .field("limit", &self.limit)
            .finish()
    }
}

/// Decodes an integer with an N-bit prefix (RFC 7541 5.1) starting at `buf[*pos]`.
fn decode_int(buf: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<usize, DecodeError> {
    let max = (1usize << prefix_bits) - 1;
    let first = *buf.get(*pos).ok_or(TRUNCATED)?;
    *pos += 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let octet = *buf.get(*pos).ok_or(TRUNCATED)?;
        *pos += 1;
        value += usize::from(octet & 0x7f) << shift;
        if octet & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift >= MAX_INT_SHIFT {
            return Err(DecodeError::Compression("integer too large"));
        }
    }
}

/// Reads a string literal's length prefix (5.2): returns its octets' range and whether they
/// are Huffman-coded.
fn read_string_header(buf: &[u8], pos: &mut usize) -> Result<(usize, usize, bool), DecodeError> {
    let huffman = buf.get(*pos).ok_or(TRUNCATED)? & 0x80 != 0;
    let len = decode_int(buf, pos, 7)?;
    let start = *pos;
    if len > buf.len() - start {
        return Err(DecodeError::Compression("string longer than the block"));
    }
    *pos = start + len;
    Ok((start, start + len, huffman))
}

/// Reads a value string: a raw one is a zero-copy slice of the block, a Huffman-coded one is
/// decoded into a new buffer. The flag tells which (true: a new buffer).
fn read_value(block: &Bytes, pos: &mut usize) -> Result<(Bytes, bool), DecodeError> {
    let (start, end, huffman) = read_string_header(block, pos)?;
    if !huffman {
        return Ok((block.slice(start..end), false));
    }
    let mut out = Vec::new();
    huffman::decode(&block[start..end], &mut out).map_err(DecodeError::Compression)?;
    Ok((Bytes::from(out), true))
}

/// An entry of the encoder's dynamic table. It only ever holds regular fields.
struct EncoderEntry {
    name: HeaderName,
    /// A copy, so the table never keeps a caller's larger buffer alive.
    value: Box<[u8]>,
}

/// The encoding side of one connection.
///
/// Literals are never Huffman-coded: that saves about 20 % of the octets of literals sent
/// once, but costs a table lookup per octet on every response, and CPU is what we are short
/// of. Raw literals are valid HPACK (RFC 7541 5.2), and repeated fields go by index anyway.
pub struct Encoder {
    table: Table<EncoderEntry>,
    /// The peer's last SETTINGS_HEADER_TABLE_SIZE.
    peer_size: usize,
    /// The smallest table size set since the last block, if it changed: RFC 7541 4.2 wants
    /// the smallest and then the final size signalled at the start of the next block.
    pending_min: Option<usize>,
}

impl Encoder {
    /// An encoder with the default table size of 4096 (until the peer's SETTINGS say).
    pub fn new() -> Self {
        Encoder {
            table: Table::new(DEFAULT_TABLE_SIZE),
            peer_size: DEFAULT_TABLE_SIZE,
            pending_min: None,
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE: entries are evicted to fit, and the next block
    /// starts with a dynamic table size update (RFC 7541 4.2, 6.3; if it changed several times
    /// between two blocks, signal the smallest then the final, as 4.2 requires).
    ///
    /// Sizes above 4096 are used as 4096 (an encoder may use less than allowed, 4.2).
    pub fn set_max_table_size(&mut self, size: usize) {
        if size == self.peer_size {
            return;
        }
        self.peer_size = size;
        // Signalled even when the capped size does not change: a decoder whose limit went
        // down may insist on seeing an update (nghttp2 does), and one at or under the new
        // limit is always valid.
        let size = size.min(ENCODER_TABLE_CAP);
        self.pending_min = Some(self.pending_min.map_or(size, |min| min.min(size)));
        self.table.set_max_size(size);
    }

    /// Appends the block of a response head: `:status`, then `headers` in order.
    pub fn encode_response(&mut self, status: StatusCode, headers: &HeaderMap, dst: &mut BytesMut) {
        self.size_updates(dst);
        match status.as_u16() {
            200 => dst.put_u8(0x88),
            204 => dst.put_u8(0x89),
            206 => dst.put_u8(0x8a),
            304 => dst.put_u8(0x8b),
            400 => dst.put_u8(0x8c),
            404 => dst.put_u8(0x8d),
            500 => dst.put_u8(0x8e),
            _ => {
                // Literal without indexing, name :status (static index 8): other codes are
                // too varied to be worth a table entry.
                dst.put_u8(0x08);
                encode_str(dst, status.as_str().as_bytes());
            }
        }
        for (name, value) in headers {
            self.encode_field(name, value, dst);
        }
    }

    /// Appends the block of trailers.
    pub fn encode_trailers(&mut self, headers: &HeaderMap, dst: &mut BytesMut) {
        self.size_updates(dst);
        for (name, value) in headers {
            self.encode_field(name, value, dst);
        }
    }

    fn size_updates(&mut self, dst: &mut BytesMut) {
        if let Some(min) = self.pending_min.take() {
            if min < self.table.max_size {
                encode_int(dst, 0x20, 5, min);
            }
            encode_int(dst, 0x20, 5, self.table.max_size);
        }
    }

    fn encode_field(&mut self, name: &HeaderName, value: &HeaderValue, dst: &mut BytesMut) {
        let octets = value.as_bytes();
        let sensitive = value.is_sensitive();
        let static_index = static_name_index(name);
        // One scan of the dynamic table: an exact match, else the newest entry with the name.
        let mut dynamic_name = None;
        for (i, (_, entry)) in self.table.entries.iter().enumerate() {
            if entry.name != *name {
                continue;
            }
            // A sensitive value always goes as never-indexed, so that the marking reaches
            // the next hop (RFC 7541 7.1.3).
            if !sensitive && *entry.value == *octets {
                encode_int(dst, 0x80, 7, STATIC_LEN + 1 + i);
                return;
            }
            dynamic_name.get_or_insert(STATIC_LEN + 1 + i);
        }
        let name_index = static_index.map(usize::from).or(dynamic_name);
        let size = name.as_str().len() + octets.len() + ENTRY_OVERHEAD;
        let kind = if sensitive {
            Literal::NeverIndexed
        } else if changes_per_response(static_index, name)
            || octets.len() > MAX_INDEXED_VALUE
            || size > self.table.max_size
        {
            Literal::WithoutIndexing
        } else {
            Literal::Incremental
        };
        let (flags, prefix) = match kind {
            Literal::Incremental => (0x40, 6),
            Literal::WithoutIndexing => (0x00, 4),
            Literal::NeverIndexed => (0x10, 4),
        };
        match name_index {
            Some(index) => encode_int(dst, flags, prefix, index),
            None => {
                dst.put_u8(flags);
                encode_str(dst, name.as_str().as_bytes());
            }
        }
        encode_str(dst, octets);
        if kind == Literal::Incremental {
            let entry = EncoderEntry {
                name: name.clone(),
                value: octets.into(),
            };
            self.table.insert(size, entry);
        }
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl fmt::Debug for Encoder {
    /// Sizes only: table contents may be credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("entries", &self.table.entries.len())
            .field("size", &self.table.size)
            .field("max_size", &self.table.max_size)
            .finish()
    }
}

/// Encodes `value` with an N-bit prefix (RFC 7541 5.1); `flags` fills the bits above it.
fn encode_int(dst: &mut BytesMut, flags: u8, prefix_bits: u32, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// A raw (not Huffman-coded) string literal (RFC 7541 5.2).
fn encode_str(dst: &mut BytesMut, octets: &[u8]) {
    encode_int(dst, 0x00, 7, octets.len());
    dst.extend_from_slice(octets);
}

/// The static-table index of a regular field name. Matching on the length first keeps this
/// to one jump and at most a few short comparisons.
fn static_name_index(name: &HeaderName) -> Option<u8> {
    let name = name.as_str();
    let index = match name.len() {
        3 => match name {
            "age" => 21,
            "via" => 60,
            _ => return None,
        },
        4 => match name {
            "date" => 33,
            "etag" => 34,
            "from" => 37,
            "host" => 38,
            "link" => 45,
            "vary" => 59,
            _ => return None,
        },
        5 => match name {
            "allow" => 22,
            "range" => 50,
            _ => return None,
        },
        6 => match name {
            "accept" => 19,
            "cookie" => 32,
            "expect" => 35,
            "server" => 54,
            _ => return None,
        },
        7 => match name {
            "expires" => 36,
            "referer" => 51,
            "refresh" => 52,
            _ => return None,
        },
        8 => match name {
            "if-match" => 39,
            "if-range" => 42,
            "location" => 46,
            _ => return None,
        },
        10 => match name {
            "set-cookie" => 55,
            "user-agent" => 58,
            _ => return None,
        },
        11 => match name {
            "retry-after" => 53,
            _ => return None,
        },
        12 => match name {
            "content-type" => 31,
            "max-forwards" => 47,
            _ => return None,
        },
        13 => match name {
            "accept-ranges" => 18,
            "authorization" => 23,
            "cache-control" => 24,
            "content-range" => 30,
            "if-none-match" => 41,
            "last-modified" => 44,
            _ => return None,
        },
        14 => match name {
            "accept-charset" => 15,
            "content-length" => 28,
            _ => return None,
        },
        15 => match name {
            "accept-encoding" => 16,
            "accept-language" => 17,
            _ => return None,
        },
        16 => match name {
            "content-encoding" => 26,
            "content-language" => 27,
            "content-location" => 29,
            "www-authenticate" => 61,
            _ => return None,
        },
        17 => match name {
            "if-modified-since" => 40,
            "transfer-encoding" => 57,
            _ => return None,
        },
        18 => match name {
            "proxy-authenticate" => 48,
            _ => return None,
        },
        19 => match name {
            "content-disposition" => 25,
            "if-unmodified-since" => 43,
            "proxy-authorization" => 49,
            _ => return None,
        },
        25 => match name {
            "strict-transport-security" => 56,
            _ => return None,
        },
        27 => match name {
            "access-control-allow-origin" => 20,
            _ => return None,
        },
        _ => return None,
    };
    Some(index)
}

/// Fields whose values differ from one response to the next: a table entry for them would
/// only evict useful ones.
fn changes_per_response(static_index: Option<u8>, name: &HeaderName) -> bool {
    match static_index {
        // age, content-length, content-range, date, etag, expires, last-modified, location,
        // set-cookie.
        Some(index) => matches!(index, 21 | 28 | 30 | 33 | 34 | 36 | 44 | 46 | 55),
        None => name.as_str() == "x-request-id",
    }
}
