//! HPACK header blocks read by Gatehouse's own HTTP/2 server (`proxy::client_h2::hpack`), and
//! response heads written with its encoder.
//!
//! Whatever the blocks, one decoder (one connection's) takes them in turn without panicking,
//! until a compression error, after which nothing more is decoded (the connection would end).
//! Every field it hands out is valid as RFC 9113 8.2.1 / 8.3 want: a lowercase token name, a
//! value without NUL, CR or LF and without whitespace at either end, pseudo-headers first, none
//! twice, and the fields of a block within its max list size (name + value + 32 each). The
//! regular fields of a block that decoded whole, with a `:status` (or as trailers), go through
//! an encoder (its table size changed between blocks, once or twice) and a second decoder: the
//! same `:status` comes back first, then the same fields, in the order the `HeaderMap` gives
//! them to the encoder, values byte for byte, the sensitive mark kept; the fields of a name in
//! the order they were decoded. The encoder's and the second decoder's tables stay in step
//! over all the blocks.
//!
//! Input: byte 0 picks the max list size, byte 1 the first decoder's table size; then blocks,
//! each as a length byte, a byte picking the `:status` and the encoder's table size change, and
//! that many bytes of block (fewer at the end).
#![no_main]

use bytes::{Bytes, BytesMut};
use gatehouse::proxy::client_h2::hpack::{DecodeError, Decoder, Encoder, Field};
use http::{HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;

/// The table sizes the encoder may be told of (the peer's SETTINGS_HEADER_TABLE_SIZE); the
/// encoder itself uses at most 4096.
const TABLE_SIZES: [usize; 8] = [0, 1, 64, 100, 512, 4096, 8192, 1 << 20];

fuzz_target!(|data: &[u8]| {
    let &[list_pick, table_pick, ref blocks @ ..] = data else {
        return;
    };
    let max_list_size = match list_pick {
        255 => usize::MAX,
        pick => (usize::from(pick) + 1) * 64,
    };
    let mut decoder = Decoder::new(usize::from(table_pick) * 32);
    let mut encoder = Encoder::new();
    // What the encoder's peer advertised: the default, 4096, as on a new connection.
    let mut second = Decoder::new(4096);
    let mut rest: &[u8] = blocks;
    while let &[len, ctl, ref tail @ ..] = rest {
        let (block, after) = tail.split_at(usize::from(len).min(tail.len()));
        rest = after;
        let mut fields = Vec::new();
        let decoded = decoder.decode(Bytes::copy_from_slice(block), max_list_size, |field| {
            fields.push(field)
        });
        check_fields(&fields, max_list_size);
        match decoded {
            Ok(()) => round_trip(&fields, ctl, &mut encoder, &mut second),
            Err(err @ DecodeError::Compression(_)) => {
                let _ = err.to_string();
                break;
            }
            Err(err) => {
                let _ = err.to_string();
            }
        }
    }
});

/// RFC 9113 8.2.1 / 8.3 on the fields a block handed out.
fn check_fields(fields: &[Field], max_list_size: usize) {
    let mut list_size = 0usize;
    let mut regular_seen = false;
    let mut pseudo_seen = Vec::new();
    for field in fields {
        let (name_len, value): (usize, &[u8]) = match field {
            Field::Method(m) => (7, m.as_str().as_bytes()),
            Field::Scheme(v) => (7, v),
            Field::Authority(v) => (10, v),
            Field::Path(v) => (5, v),
            Field::Protocol(v) => (9, v),
            Field::Status(v) => (7, v),
            Field::Header(name, value) => {
                let name = name.as_str();
                assert!(!name.is_empty());
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
                    "{name:?}"
                );
                assert!(!name.starts_with(':'));
                (name.len(), value.as_bytes())
            }
        };
        assert!(
            !value.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')),
            "{field:?}"
        );
        assert!(
            !matches!(value.first(), Some(b' ' | b'\t'))
                && !matches!(value.last(), Some(b' ' | b'\t')),
            "{field:?}"
        );
        if let Field::Header(..) = field {
            regular_seen = true;
        } else {
            assert!(!regular_seen, "a pseudo-header after a regular field");
            let kind = std::mem::discriminant(field);
            assert!(!pseudo_seen.contains(&kind), "{field:?} twice");
            pseudo_seen.push(kind);
        }
        list_size += name_len + value.len() + 32;
    }
    assert!(list_size <= max_list_size, "{list_size} > {max_list_size}");
}

/// Encodes the regular fields of `fields` as a response head (or trailers) and decodes them
/// again.
fn round_trip(fields: &[Field], ctl: u8, encoder: &mut Encoder, second: &mut Decoder) {
    let mut headers = HeaderMap::new();
    for field in fields {
        if let Field::Header(name, value) = field {
            headers.append(name.clone(), value.clone());
        }
    }
    // Table size changes: bits 4-6 pick a size (0: none); bit 7 first goes through a smaller
    // one (RFC 7541 4.2: the smallest, then the last, are signalled).
    let size_pick = usize::from((ctl >> 4) & 7);
    if size_pick != 0 {
        let size = TABLE_SIZES[size_pick];
        if ctl & 0x80 != 0 {
            encoder.set_max_table_size(TABLE_SIZES[size_pick - 1]);
        }
        encoder.set_max_table_size(size);
    }
    let status = match ctl & 7 {
        0 => None,
        1 => Some(StatusCode::OK),
        2 => Some(StatusCode::NOT_FOUND),
        3 => Some(StatusCode::NOT_MODIFIED),
        4 => Some(StatusCode::CREATED),
        5 => Some(StatusCode::from_u16(100 + u16::from(ctl) * 3).expect("100..=865")),
        6 => Some(StatusCode::from_u16(999).expect("valid")),
        _ => Some(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let mut block = BytesMut::new();
    match status {
        Some(status) => encoder.encode_response(status, &headers, &mut block),
        None => encoder.encode_trailers(&headers, &mut block),
    }
    let block = block.freeze();
    let mut back = Vec::new();
    let decoded = second.decode(block.clone(), usize::MAX, |field| back.push(field));
    assert_eq!(decoded, Ok(()), "{block:02x?}");
    let mut back = back.into_iter();
    if let Some(status) = status {
        assert_eq!(
            back.next(),
            Some(Field::Status(Bytes::copy_from_slice(
                status.as_str().as_bytes()
            ))),
            "{block:02x?}"
        );
    }
    let back: Vec<_> = back
        .map(|field| match field {
            Field::Header(name, value) => (name, value),
            other => panic!("{other:?} decoded from {block:02x?}"),
        })
        .collect();
    let sent: Vec<_> = headers.iter().collect();
    assert_eq!(back.len(), sent.len(), "{block:02x?}");
    for ((name, value), (sent_name, sent_value)) in back.iter().zip(&sent) {
        assert_eq!(name, *sent_name);
        assert_eq!(value.as_bytes(), sent_value.as_bytes());
        assert_eq!(value.is_sensitive(), sent_value.is_sensitive(), "{name}");
    }
    // Per name, in the order first decoded (the map groups a name's values).
    for (name, _) in &back {
        let mine = back.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        let theirs = fields.iter().filter_map(|field| match field {
            Field::Header(n, v) if n == name => Some(v),
            _ => None,
        });
        assert!(
            mine.map(|v| (v.as_bytes(), v.is_sensitive()))
                .eq(theirs.map(|v| (v.as_bytes(), v.is_sensitive()))),
            "{name}"
        );
    }
}
