use super::huffman::CODES;
use super::*;

/// Parses RFC-style hex dumps ("8286 8441 ..."), ignoring whitespace.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex: {text}");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn text(octets: &[u8]) -> String {
    String::from_utf8_lossy(octets).into_owned()
}

/// (name, value) of a field, as strings, pseudo-headers with their colon.
fn show(field: &Field) -> (String, String) {
    match field {
        Field::Method(m) => (":method".into(), m.as_str().into()),
        Field::Scheme(v) => (":scheme".into(), text(v)),
        Field::Authority(v) => (":authority".into(), text(v)),
        Field::Path(v) => (":path".into(), text(v)),
        Field::Protocol(v) => (":protocol".into(), text(v)),
        Field::Status(v) => (":status".into(), text(v)),
        Field::Header(n, v) => (n.as_str().into(), text(v.as_bytes())),
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// The decoder's dynamic table, newest first.
fn table(dec: &Decoder) -> Vec<(String, String)> {
    dec.table
        .entries
        .iter()
        .map(|(_, entry)| match entry {
            Entry::Field(f) => show(f),
            Entry::Invalid { .. } => ("<invalid>".into(), String::new()),
        })
        .collect()
}

fn decode(dec: &mut Decoder, block: &[u8]) -> Result<Vec<Field>, DecodeError> {
    decode_limited(dec, block, usize::MAX).1
}

/// Returns the fields emitted (even on error) and the result.
fn decode_limited(
    dec: &mut Decoder,
    block: &[u8],
    max_list_size: usize,
) -> (Vec<Field>, Result<Vec<Field>, DecodeError>) {
    let mut out = Vec::new();
    let res = dec.decode(Bytes::copy_from_slice(block), max_list_size, |f| {
        out.push(f)
    });
    (out.clone(), res.map(|()| out))
}

/// Decodes `block` and checks the fields, the table after it and its size.
fn check(
    dec: &mut Decoder,
    block: &str,
    fields: &[(&str, &str)],
    tbl: &[(&str, &str)],
    size: usize,
) {
    let got = decode(dec, &hex(block)).expect("block decodes");
    assert_eq!(got.iter().map(show).collect::<Vec<_>>(), pairs(fields));
    assert_eq!(table(dec), pairs(tbl));
    assert_eq!(dec.table.size, size);
    let sum: usize = dec.table.entries.iter().map(|(s, _)| s).sum();
    assert_eq!(sum, size, "entry sizes add up to the table size");
}

/// A raw literal with a literal name: `first` is 0x40, 0x00 or 0x10.
fn lit(first: u8, name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![first];
    for s in [name, value] {
        assert!(s.len() < 127);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// A raw literal whose name is by index (< 15, so it fits any prefix).
fn lit_idx(first: u8, index: u8, value: &str) -> Vec<u8> {
    assert!(index < 15);
    let mut out = vec![first | index, value.len() as u8];
    out.extend_from_slice(value.as_bytes());
    out
}

// ---- Huffman (test-only encoder) ----

struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    fn new() -> Self {
        BitWriter {
            out: Vec::new(),
            acc: 0,
            bits: 0,
        }
    }

    fn put(&mut self, code: u32, len: u8) {
        self.acc = (self.acc << len) | u64::from(code);
        self.bits += u32::from(len);
        while self.bits >= 8 {
            self.bits -= 8;
            self.out.push((self.acc >> self.bits) as u8);
        }
        self.acc &= (1 << self.bits) - 1;
    }

    /// Pads with ones (the EOS prefix), as RFC 7541 5.2 requires.
    fn finish(mut self) -> Vec<u8> {
        if self.bits > 0 {
            let pad = 8 - self.bits;
            self.put((1 << pad) - 1, pad as u8);
        }
        self.out
    }
}

fn huff_encode(src: &[u8]) -> Vec<u8> {
    let mut w = BitWriter::new();
    for &b in src {
        let (code, len) = CODES[usize::from(b)];
        w.put(code, len);
    }
    w.finish()
}

fn huff_decode(src: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    huffman::decode(src, &mut out).map(|()| out)
}

/// xorshift64*: deterministic pseudo-random input without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn huffman_matches_rfc_vectors() {
    // Strings from RFC 7541 C.4 and C.6: checks the typed-in code table against the RFC.
    let vectors: [(&str, &str); 8] = [
        ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
        ("no-cache", "a8eb 1064 9cbf"),
        ("custom-key", "25a8 49e9 5ba9 7d7f"),
        ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
        ("302", "6402"),
        ("private", "aec3 771a 4b"),
        (
            "https://www.example.com",
            "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
        ),
        (
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 \
             3160 65c0 03ed 4ee5 b106 3d50 07",
        ),
    ];
    for (plain, coded) in vectors {
        assert_eq!(huff_encode(plain.as_bytes()), hex(coded), "{plain}");
        assert_eq!(
            huff_decode(&hex(coded)).unwrap(),
            plain.as_bytes(),
            "{plain}"
        );
    }
}

#[test]
fn huffman_code_is_complete_and_prefix_free() {
    // Kraft sum of exactly 1 (in units of 2^-30): a complete code.
    let kraft: u64 = CODES.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
    assert_eq!(kraft, 1 << 30);
    assert_eq!(CODES[256], (0x3fff_ffff, 30), "EOS");
    for (sym, &(code, len)) in CODES.iter().enumerate() {
        assert!((5..=30).contains(&len), "length of {sym}");
        assert!(u64::from(code) < 1 << len, "code of {sym} fits its length");
    }
}

#[test]
fn huffman_round_trips_every_octet() {
    for b in 0..=255u8 {
        assert_eq!(huff_decode(&huff_encode(&[b])).unwrap(), [b], "octet {b}");
        let triple = [b, b.wrapping_mul(7), 255 - b];
        assert_eq!(huff_decode(&huff_encode(&triple)).unwrap(), triple);
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(huff_decode(&huff_encode(&all)).unwrap(), all);
    assert_eq!(huff_decode(&[]).unwrap(), b"");
}

#[test]
fn huffman_round_trips_random_strings() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..2000 {
        let len = rng.below(200);
        let s: Vec<u8> = if round % 2 == 0 {
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            // Mostly header-like text, where the short codes are.
            (0..len)
                .map(|_| b"abcdefxyz0129-_./:; =ABC"[rng.below(24)])
                .collect()
        };
        assert_eq!(huff_decode(&huff_encode(&s)).unwrap(), s);
    }
}

#[test]
fn huffman_rejects_eos() {
    let mut w = BitWriter::new();
    w.put(CODES[usize::from(b'a')].0, CODES[usize::from(b'a')].1);
    w.put(CODES[256].0, CODES[256].1);
    w.put(CODES[usize::from(b'b')].0, CODES[usize::from(b'b')].1);
    assert_eq!(huff_decode(&w.finish()), Err("EOS in a Huffman string"));
    // EOS alone, padded to 32 bits.
    assert_eq!(huff_decode(&[0xff; 4]), Err("EOS in a Huffman string"));
}

#[test]
fn huffman_rejects_long_padding() {
    // 'a' then a whole octet of ones: 11 bits of padding.
    let mut coded = huff_encode(b"a");
    coded.push(0xff);
    assert_eq!(huff_decode(&coded), Err("bad Huffman padding"));
    // Only padding, 8 bits.
    assert_eq!(huff_decode(&[0xff]), Err("bad Huffman padding"));
    // Exactly 7 bits of padding is fine: five 5-bit codes make 25 bits.
    let coded = huff_encode(b"aaaaa");
    assert_eq!(coded.len(), 4);
    assert_eq!(huff_decode(&coded).unwrap(), b"aaaaa");
}

#[test]
fn huffman_rejects_padding_with_a_zero() {
    // 'a' is 00011: the padding must be 111, here it is 110 (and 011, 101).
    assert_eq!(huff_decode(&[0x1f]).unwrap(), b"a");
    for bad in [0x1e, 0x1b, 0x1d] {
        assert_eq!(huff_decode(&[bad]), Err("bad Huffman padding"), "{bad:#x}");
    }
}

// ---- Integers ----

#[test]
fn integers_rfc_c1_and_limits() {
    let mut dst = BytesMut::new();
    encode_int(&mut dst, 0, 5, 10);
    assert_eq!(&dst[..], [0x0a]);
    dst.clear();
    encode_int(&mut dst, 0, 5, 1337);
    assert_eq!(&dst[..], [0x1f, 0x9a, 0x0a]);
    dst.clear();
    encode_int(&mut dst, 0, 8, 42);
    assert_eq!(&dst[..], [0x2a]);

    for prefix in 1..=8u32 {
        let max = (1usize << prefix) - 1;
        let limit = max + (1 << 28) - 1;
        for value in [0, 1, max - 1, max, max + 1, 127, 128, 1337, 1 << 21, limit] {
            let mut dst = BytesMut::new();
            encode_int(&mut dst, 0, prefix, value);
            let mut pos = 0;
            assert_eq!(
                decode_int(&dst, &mut pos, prefix),
                Ok(value),
                "{value}/{prefix}"
            );
            assert_eq!(pos, dst.len());
            // Missing the last octet is truncation, not a wrong value.
            if dst.len() > 1 {
                let mut pos = 0;
                assert_eq!(
                    decode_int(&dst[..dst.len() - 1], &mut pos, prefix),
                    Err(TRUNCATED)
                );
            }
        }
        let mut dst = BytesMut::new();
        encode_int(&mut dst, 0, prefix, limit + 1);
        let mut pos = 0;
        assert_eq!(
            decode_int(&dst, &mut pos, prefix),
            Err(DecodeError::Compression("integer too large"))
        );
    }
}

// ---- RFC 7541 Appendix C ----

#[test]
fn c2_1_literal_with_indexing() {
    let mut dec = Decoder::new(4096);
    check(
        &mut dec,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        &[("custom-key", "custom-header")],
        &[("custom-key", "custom-header")],
        55,
    );
}

#[test]
fn c2_2_literal_without_indexing() {
    let mut dec = Decoder::new(4096);
    check(
        &mut dec,
        "040c 2f73 616d 706c 652f 7061 7468",
        &[(":path", "/sample/path")],
        &[],
        0,
    );
}

#[test]
fn c2_3_literal_never_indexed() {
    let mut dec = Decoder::new(4096);
    let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    let fields = decode(&mut dec, &block).unwrap();
    assert_eq!(fields.len(), 1);
    let Field::Header(name, value) = &fields[0] else {
        panic!("{fields:?}")
    };
    assert_eq!(name.as_str(), "password");
    assert_eq!(value, "secret");
    assert!(
        value.is_sensitive(),
        "never-indexed values come out sensitive"
    );
    assert!(table(&dec).is_empty());
}

#[test]
fn c2_4_indexed() {
    let mut dec = Decoder::new(4096);
    assert_eq!(
        decode(&mut dec, &[0x82]).unwrap(),
        [Field::Method(Method::GET)]
    );
    assert!(table(&dec).is_empty());
}

const C3_C4_LISTS: [&[(&str, &str)]; 3] = [
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ],
];

const C3_C4_TABLES: [&[(&str, &str)]; 3] = [
    &[(":authority", "www.example.com")],
    &[
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ],
    &[
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ],
];

fn requests(blocks: [&str; 3]) {
    let mut dec = Decoder::new(4096);
    for (i, (block, size)) in blocks.into_iter().zip([57, 110, 164]).enumerate() {
        check(&mut dec, block, C3_C4_LISTS[i], C3_C4_TABLES[i], size);
    }
}

#[test]
fn c3_requests_without_huffman() {
    requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c4_requests_with_huffman() {
    requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

#[test]
fn c3_fields_are_typed() {
    let mut dec = Decoder::new(4096);
    let fields = decode(
        &mut dec,
        &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
    )
    .unwrap();
    assert_eq!(
        fields,
        [
            Field::Method(Method::GET),
            Field::Scheme(Bytes::from_static(b"http")),
            Field::Path(Bytes::from_static(b"/")),
            Field::Authority(Bytes::from_static(b"www.example.com")),
        ]
    );
}

const C5_C6_LISTS: [&[(&str, &str)]; 3] = [
    &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ],
];

const C5_C6_TABLES: [&[(&str, &str)]; 3] = [
    &[
        ("location", "https://www.example.com"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("cache-control", "private"),
        (":status", "302"),
    ],
    &[
        (":status", "307"),
        ("location", "https://www.example.com"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("cache-control", "private"),
    ],
    &[
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
        ("content-encoding", "gzip"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ],
];

fn responses(blocks: [&str; 3]) {
    let mut dec = Decoder::new(256);
    for (i, (block, size)) in blocks.into_iter().zip([222, 222, 215]).enumerate() {
        check(&mut dec, block, C5_C6_LISTS[i], C5_C6_TABLES[i], size);
    }
}

#[test]
fn c5_responses_without_huffman() {
    responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
         3d31",
    ]);
}

#[test]
fn c6_responses_with_huffman() {
    responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

// ---- Static table ----

#[test]
fn static_table_matches_rfc_appendix_a() {
    let rfc: [(&str, &str); STATIC_LEN] = [
        (":authority", ""),
        (":method", "GET"),
        (":method", "POST"),
        (":path", "/"),
        (":path", "/index.html"),
        (":scheme", "http"),
        (":scheme", "https"),
        (":status", "200"),
        (":status", "204"),
        (":status", "206"),
        (":status", "304"),
        (":status", "400"),
        (":status", "404"),
        (":status", "500"),
        ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", ""),
        ("accept-ranges", ""),
        ("accept", ""),
        ("access-control-allow-origin", ""),
        ("age", ""),
        ("allow", ""),
        ("authorization", ""),
        ("cache-control", ""),
        ("content-disposition", ""),
        ("content-encoding", ""),
        ("content-language", ""),
        ("content-length", ""),
        ("content-location", ""),
        ("content-range", ""),
        ("content-type", ""),
        ("cookie", ""),
        ("date", ""),
        ("etag", ""),
        ("expect", ""),
        ("expires", ""),
        ("from", ""),
        ("host", ""),
        ("if-match", ""),
        ("if-modified-since", ""),
        ("if-none-match", ""),
        ("if-range", ""),
        ("if-unmodified-since", ""),
        ("last-modified", ""),
        ("link", ""),
        ("location", ""),
        ("max-forwards", ""),
        ("proxy-authenticate", ""),
        ("proxy-authorization", ""),
        ("range", ""),
        ("referer", ""),
        ("refresh", ""),
        ("retry-after", ""),
        ("server", ""),
        ("set-cookie", ""),
        ("strict-transport-security", ""),
        ("transfer-encoding", ""),
        ("user-agent", ""),
        ("vary", ""),
        ("via", ""),
        ("www-authenticate", ""),
    ];
    let mut dec = Decoder::new(4096);
    for (i, (name, value)) in rfc.iter().enumerate() {
        let index = i + 1;
        let Entry::Field(field) = &STATIC_TABLE[i] else {
            panic!("static entry {index} is invalid")
        };
        assert_eq!(
            show(field),
            ((*name).into(), (*value).into()),
            "index {index}"
        );
        assert_eq!(field.name_len(), name.len());
        assert_eq!(field.size(), name.len() + value.len() + 32);
        // The decoder gives the same field for the indexed representation...
        let mut block = BytesMut::new();
        encode_int(&mut block, 0x80, 7, index);
        let mut dec_out = decode(&mut dec, &block).unwrap();
        // (`:path` etc. may not repeat within one block, so one block per index.)
        assert_eq!(
            dec_out.pop().as_ref().map(show),
            Some(((*name).into(), (*value).into()))
        );
        // ...and the encoder finds regular names by the same index.
        if index >= 15 {
            let header_name = HeaderName::from_static(name);
            assert_eq!(static_name_index(&header_name), Some(index as u8), "{name}");
        }
    }
    assert_eq!(static_name_index(&HeaderName::from_static("x-foo")), None);
    assert_eq!(
        static_name_index(&HeaderName::from_static("content-typf")),
        None
    );
}

// ---- Compression errors ----

fn compression(block: &[u8]) -> DecodeError {
    let mut dec = Decoder::new(4096);
    let err = decode(&mut dec, block).expect_err("block must fail");
    assert!(matches!(err, DecodeError::Compression(_)), "{err:?}");
    err
}

#[test]
fn index_zero_is_a_compression_error() {
    assert_eq!(compression(&[0x80]), DecodeError::Compression("index 0"));
    // A literal's name index of 0 means a literal name, so that is fine there.
}

#[test]
fn index_past_the_table_is_a_compression_error() {
    let past = DecodeError::Compression("index past the end of the table");
    assert_eq!(compression(&[0xbe]), past);
    assert_eq!(compression(&[0xff, 0x00]), past);
    // As a literal's name.
    assert_eq!(compression(&[0x7e, 0x01, b'x']), past);
    // One entry: 62 is there, 63 is not.
    let mut dec = Decoder::new(4096);
    let mut block = lit(0x40, "a", "b");
    block.extend_from_slice(&[0xbe, 0xbf]);
    assert_eq!(decode(&mut dec, &block), Err(past));
}

#[test]
fn integer_overflow_is_a_compression_error() {
    let mut block = vec![0x1f];
    block.extend_from_slice(&[0xff; 10]);
    assert_eq!(
        compression(&block),
        DecodeError::Compression("integer too large")
    );
    block[0] = 0xff;
    assert_eq!(
        compression(&block),
        DecodeError::Compression("integer too large")
    );
    // A string length that large.
    assert_eq!(
        compression(&[0x40, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        DecodeError::Compression("integer too large")
    );
}

#[test]
fn truncation_is_a_compression_error() {
    // Name says 10 octets, 3 follow.
    assert_eq!(
        compression(&[0x40, 0x0a, b'a', b'b', b'c']),
        DecodeError::Compression("string longer than the block")
    );
    // A huge length (within the integer limit) must not overflow anything.
    assert_eq!(
        compression(&[0x40, 0x7f, 0xff, 0xff, 0xff, 0x7f]),
        DecodeError::Compression("string longer than the block")
    );
    // Value missing.
    assert_eq!(compression(&[0x40, 0x01, b'a']), TRUNCATED);
    // Integer cut in its continuation.
    assert_eq!(compression(&[0xff]), TRUNCATED);
    assert_eq!(compression(&[0xff, 0x80]), TRUNCATED);
    // Value length cut.
    assert_eq!(compression(&[0x04, 0x7f]), TRUNCATED);
}

#[test]
fn bad_huffman_in_a_block_is_a_compression_error() {
    // Huffman name of one octet of all ones: 8 bits of padding.
    assert_eq!(
        compression(&[0x40, 0x81, 0xff, 0x01, b'v']),
        DecodeError::Compression("bad Huffman padding")
    );
    // Huffman value with a zero in the padding.
    assert_eq!(
        compression(&[0x04, 0x81, 0x1e]),
        DecodeError::Compression("bad Huffman padding")
    );
    assert_eq!(
        compression(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]),
        DecodeError::Compression("EOS in a Huffman string")
    );
}

#[test]
fn size_update_over_the_limit_is_a_compression_error() {
    // 4097 = 31 + 4066: 0x3f, 0xe2, 0x1f.
    assert_eq!(
        compression(&[0x3f, 0xe2, 0x1f]),
        DecodeError::Compression("table size update over the limit")
    );
    let mut dec = Decoder::new(100);
    assert_eq!(
        decode(&mut dec, &[0x3f, 0x46]),
        Err(DecodeError::Compression("table size update over the limit"))
    );
    assert_eq!(
        decode(&mut dec, &[0x3f, 0x45]),
        Ok(vec![]),
        "100 itself is allowed"
    );
}

#[test]
fn size_update_after_a_field_is_a_compression_error() {
    assert_eq!(
        compression(&[0x82, 0x20]),
        DecodeError::Compression("table size update after a field")
    );
    let mut block = lit(0x00, "a", "b");
    block.push(0x3f);
    block.push(0x00);
    assert_eq!(
        compression(&block),
        DecodeError::Compression("table size update after a field")
    );
}

#[test]
fn size_updates_at_the_start_apply() {
    let mut dec = Decoder::new(4096);
    let mut block = lit(0x40, "a", "b");
    block.extend(lit(0x40, "c", "d"));
    decode(&mut dec, &block).unwrap();
    assert_eq!(dec.table.size, 68);
    // Two updates (0 then 4096) and a field: the table is emptied, then usable again.
    let mut block = vec![0x20, 0x3f, 0xe1, 0x1f];
    block.extend(lit(0x40, "e", "f"));
    let fields = decode(&mut dec, &block).unwrap();
    assert_eq!(
        fields.iter().map(show).collect::<Vec<_>>(),
        pairs(&[("e", "f")])
    );
    assert_eq!(table(&dec), pairs(&[("e", "f")]));
    assert_eq!(dec.table.max_size, 4096);
    // Shrinking to 40 evicts the oldest entries until they fit.
    let mut block = lit(0x40, "g", "h");
    block.insert(0, 0x3f);
    block.insert(1, 0x45); // 100
    decode(&mut dec, &block).unwrap();
    assert_eq!(table(&dec), pairs(&[("g", "h"), ("e", "f")]));
    decode(&mut dec, &[0x3f, 0x09]).unwrap(); // 40
    assert_eq!(table(&dec), pairs(&[("g", "h")]));
    assert_eq!(dec.table.size, 34);
    // A block of size updates only is valid.
    assert_eq!(decode(&mut dec, &[0x20]), Ok(vec![]));
    assert!(table(&dec).is_empty());
}

#[test]
fn entry_larger_than_the_table_empties_it() {
    let mut dec = Decoder::new(100);
    decode(&mut dec, &lit(0x40, "a", "b")).unwrap();
    assert_eq!(dec.table.size, 34);
    let long = "x".repeat(70);
    let fields = decode(&mut dec, &lit(0x40, "big", &long)).unwrap();
    assert_eq!(fields.len(), 1, "the field is still emitted");
    assert!(table(&dec).is_empty());
    assert_eq!(dec.table.size, 0);
    // And index 62 is now past the end.
    assert!(matches!(
        decode(&mut dec, &[0xbe]),
        Err(DecodeError::Compression(_))
    ));
}

#[test]
fn literal_may_name_the_entry_it_evicts() {
    // RFC 7541 4.4: the name is resolved before the eviction.
    let mut dec = Decoder::new(70);
    decode(&mut dec, &lit(0x40, "x-name", "v1")).unwrap(); // 40
    let fields = decode(&mut dec, &[0x7e, 0x02, b'v', b'2']).unwrap();
    assert_eq!(
        fields.iter().map(show).collect::<Vec<_>>(),
        pairs(&[("x-name", "v2")])
    );
    assert_eq!(table(&dec), pairs(&[("x-name", "v2")]));
}

// ---- Malformed fields ----

fn malformed(block: &[u8]) -> &'static str {
    let mut dec = Decoder::new(4096);
    match decode(&mut dec, block) {
        Err(DecodeError::Malformed(why)) => why,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn uppercase_name_is_malformed() {
    assert_eq!(malformed(&lit(0x00, "Foo", "x")), "uppercase field name");
    // Also when Huffman-coded.
    let name = huff_encode(b"x-Foo");
    let mut block = vec![0x00, 0x80 | name.len() as u8];
    block.extend_from_slice(&name);
    block.extend_from_slice(&[0x01, b'x']);
    assert_eq!(malformed(&block), "uppercase field name");
}

#[test]
fn invalid_names_are_malformed() {
    assert_eq!(malformed(&lit(0x00, "", "x")), "empty field name");
    assert_eq!(
        malformed(&lit(0x00, "a b", "x")),
        "invalid character in a field name"
    );
    assert_eq!(
        malformed(&lit(0x00, "a:b", "x")),
        "invalid character in a field name"
    );
    assert_eq!(
        malformed(&lit(0x00, "caf\u{e9}", "x")),
        "invalid character in a field name"
    );
}

#[test]
fn bad_values_are_malformed() {
    assert_eq!(
        malformed(&lit(0x00, "foo", "a\rb")),
        "control character in a field value"
    );
    assert_eq!(
        malformed(&lit(0x00, "foo", "a\nb")),
        "control character in a field value"
    );
    assert_eq!(
        malformed(&lit(0x00, "foo", "a\0b")),
        "control character in a field value"
    );
    assert_eq!(
        malformed(&lit(0x00, "foo", " a")),
        "leading or trailing whitespace in a field value"
    );
    assert_eq!(
        malformed(&lit(0x00, "foo", "a\t")),
        "leading or trailing whitespace in a field value"
    );
    assert_eq!(
        malformed(&lit_idx(0x00, 4, "/a\rb")),
        "NUL, CR or LF in a field value"
    );
    assert_eq!(
        malformed(&lit_idx(0x00, 1, " example.com")),
        "leading or trailing whitespace in a field value"
    );
    // Inner whitespace, HTAB and obs-text are fine; so is an empty value.
    let mut dec = Decoder::new(4096);
    let mut block = lit(0x00, "foo", "a \tb\u{e9}");
    block.extend(lit(0x00, "bar", ""));
    let fields = decode(&mut dec, &block).unwrap();
    assert_eq!(fields.len(), 2);
}

#[test]
fn unknown_pseudo_header_is_malformed() {
    assert_eq!(malformed(&lit(0x00, ":foo", "x")), "unknown pseudo-header");
    assert_eq!(malformed(&lit(0x00, ":", "x")), "unknown pseudo-header");
    assert_eq!(malformed(&lit(0x00, ":Path", "/")), "unknown pseudo-header");
}

#[test]
fn pseudo_after_regular_is_malformed() {
    let mut block = lit(0x00, "foo", "x");
    block.push(0x82);
    assert_eq!(malformed(&block), "pseudo-header after a regular field");
}

#[test]
fn repeated_pseudo_header_is_malformed() {
    assert_eq!(malformed(&[0x84, 0x85]), "repeated pseudo-header");
    assert_eq!(malformed(&[0x82, 0x83]), "repeated pseudo-header");
}

#[test]
fn bad_method_is_malformed() {
    assert_eq!(malformed(&lit_idx(0x00, 2, "GE T")), "bad :method");
    assert_eq!(malformed(&lit_idx(0x00, 2, "")), "bad :method");
    let mut dec = Decoder::new(4096);
    let fields = decode(&mut dec, &lit_idx(0x00, 2, "PURGE")).unwrap();
    assert_eq!(
        fields,
        [Field::Method(Method::from_bytes(b"PURGE").unwrap())]
    );
}

#[test]
fn all_pseudo_headers_decode() {
    let mut dec = Decoder::new(4096);
    let mut block = vec![0x83, 0x87, 0x85];
    block.extend(lit_idx(0x00, 1, "example.com"));
    block.extend(lit(0x00, ":protocol", "websocket"));
    block.extend(lit(0x00, ":status", "101"));
    block.extend(lit(0x00, "x-a", "1"));
    let fields = decode(&mut dec, &block).unwrap();
    assert_eq!(
        fields,
        [
            Field::Method(Method::POST),
            Field::Scheme(Bytes::from_static(b"https")),
            Field::Path(Bytes::from_static(b"/index.html")),
            Field::Authority(Bytes::from_static(b"example.com")),
            Field::Protocol(Bytes::from_static(b"websocket")),
            Field::Status(Bytes::from_static(b"101")),
            Field::Header(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("1")
            ),
        ]
    );
}

#[test]
fn emission_stops_after_a_malformed_field() {
    let mut dec = Decoder::new(4096);
    let mut block = vec![0x82];
    block.extend(lit(0x00, "Bad", "x"));
    block.extend(lit(0x00, "good", "y"));
    let (emitted, res) = decode_limited(&mut dec, &block, usize::MAX);
    assert_eq!(res, Err(DecodeError::Malformed("uppercase field name")));
    assert_eq!(emitted, [Field::Method(Method::GET)]);
}

#[test]
fn first_error_wins_and_compression_errors_still_return() {
    let mut dec = Decoder::new(4096);
    let mut block = lit(0x00, "Bad", "x");
    block.extend(lit(0x00, ":foo", "x"));
    assert_eq!(
        decode(&mut dec, &block),
        Err(DecodeError::Malformed("uppercase field name"))
    );
    // A compression error later in the block overrides a malformed field: the connection ends.
    let mut block = lit(0x00, "Bad", "x");
    block.push(0x80);
    assert_eq!(
        decode(&mut dec, &block),
        Err(DecodeError::Compression("index 0"))
    );
}

#[test]
fn malformed_fields_inserted_with_indexing_keep_the_table_in_step() {
    let mut dec = Decoder::new(4096);
    let mut block = lit(0x40, "Bad", "1"); // invalid name
    block.extend(lit(0x40, "x-a", " v")); // valid name, invalid value
    block.extend(lit(0x40, "good", "yes")); // after the error: still inserted
    assert_eq!(
        decode(&mut dec, &block),
        Err(DecodeError::Malformed("uppercase field name"))
    );
    assert_eq!(dec.table.entries.len(), 3);
    assert_eq!(dec.table.size, (3 + 1 + 32) + (3 + 2 + 32) + (4 + 3 + 32));
    assert_eq!(table(&dec)[0], ("good".into(), "yes".into()));

    // Index 62 is the valid newest entry.
    let fields = decode(&mut dec, &[0xbe]).unwrap();
    assert_eq!(
        fields.iter().map(show).collect::<Vec<_>>(),
        pairs(&[("good", "yes")])
    );
    // 63 and 64 replay their errors.
    assert_eq!(
        decode(&mut dec, &[0xbf]),
        Err(DecodeError::Malformed(
            "leading or trailing whitespace in a field value"
        ))
    );
    assert_eq!(
        decode(&mut dec, &[0xc0]),
        Err(DecodeError::Malformed("uppercase field name"))
    );
    // A literal reusing 63's (valid) name with a good value is fine; reusing 64's is not.
    let fields = decode(&mut dec, &[0x7f, 0x00, 0x02, b'o', b'k']).unwrap();
    assert_eq!(
        fields.iter().map(show).collect::<Vec<_>>(),
        pairs(&[("x-a", "ok")])
    );
    // That insertion shifted the indexes: the bad name is now 65.
    assert_eq!(
        decode(&mut dec, &[0x0f, 0x32, 0x01, b'v']),
        Err(DecodeError::Malformed("uppercase field name"))
    );
    // The invalid name still counts its 3 octets in the table size.
    let sizes: Vec<usize> = dec.table.entries.iter().map(|(s, _)| *s).collect();
    assert_eq!(sizes, [3 + 2 + 32, 4 + 3 + 32, 3 + 2 + 32, 3 + 1 + 32]);
}

// ---- Header list size ----

#[test]
fn list_too_large_keeps_the_table_in_step() {
    let mut dec = Decoder::new(4096);
    let mut block = Vec::new();
    for (n, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        block.extend(lit(0x40, n, v)); // 34 each
    }
    let (emitted, res) = decode_limited(&mut dec, &block, 70);
    assert_eq!(res, Err(DecodeError::ListTooLarge));
    assert_eq!(
        emitted.iter().map(show).collect::<Vec<_>>(),
        pairs(&[("a", "1"), ("b", "2")])
    );
    assert_eq!(table(&dec), pairs(&[("c", "3"), ("b", "2"), ("a", "1")]));
    // The next block sees the same table as the peer.
    let fields = decode(&mut dec, &[0xbe, 0xc0]).unwrap();
    assert_eq!(
        fields.iter().map(show).collect::<Vec<_>>(),
        pairs(&[("c", "3"), ("a", "1")])
    );
    // Exactly at the limit is allowed.
    let (emitted, res) = decode_limited(&mut dec, &[0xbe, 0xbf], 68);
    assert_eq!(res.map(|f| f.len()), Ok(2));
    assert_eq!(emitted.len(), 2);
}

#[test]
fn list_size_counts_pseudo_headers() {
    let mut dec = Decoder::new(4096);
    // :method GET = 7 + 3 + 32 = 42.
    assert_eq!(
        decode_limited(&mut dec, &[0x82], 42).1.map(|f| f.len()),
        Ok(1)
    );
    assert_eq!(
        decode_limited(&mut dec, &[0x82], 41).1,
        Err(DecodeError::ListTooLarge)
    );
}

// ---- Raw values are zero-copy; table entries are not tied to the block ----

#[test]
fn raw_values_borrow_the_block_and_table_entries_do_not() {
    let mut dec = Decoder::new(4096);
    let mut block = lit(0x00, "x-a", "value-a");
    block.extend(lit(0x40, "x-b", "value-b"));
    let block = Bytes::from(block);
    let range = block.as_ptr() as usize..block.as_ptr() as usize + block.len();
    let mut fields = Vec::new();
    dec.decode(block.clone(), usize::MAX, |f| fields.push(f))
        .unwrap();
    let ptr = |f: &Field| match f {
        Field::Header(_, v) => v.as_bytes().as_ptr() as usize,
        _ => unreachable!(),
    };
    assert!(
        range.contains(&ptr(&fields[0])),
        "raw literal is a slice of the block"
    );
    assert!(
        !range.contains(&ptr(&fields[1])),
        "indexed literal is a copy"
    );
    let Entry::Field(entry) = &dec.table.entries[0].1 else {
        panic!()
    };
    assert!(!range.contains(&ptr(entry)));
}

// ---- Robustness ----

#[test]
fn random_and_mutated_blocks_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let valid = hex(
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f",
    );
    let mut dec = Decoder::new(256);
    for round in 0..5000 {
        let block: Vec<u8> = if round % 2 == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        } else {
            let mut b = valid.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            b.truncate(1 + rng.below(b.len()));
            b
        };
        let _ = decode_limited(&mut dec, &block, 1000);
        assert!(dec.table.size <= dec.table.max_size);
        let sum: usize = dec.table.entries.iter().map(|(s, _)| s).sum();
        assert_eq!(sum, dec.table.size);
        if round % 100 == 0 {
            dec = Decoder::new(256);
        }
    }
}

// ---- Encoder ----

fn round_trip(
    enc: &mut Encoder,
    dec: &mut Decoder,
    status: StatusCode,
    headers: &HeaderMap,
) -> (BytesMut, Vec<Field>) {
    let mut dst = BytesMut::new();
    enc.encode_response(status, headers, &mut dst);
    let fields = decode(dec, &dst).expect("our own block decodes");
    let mut expected = vec![Field::Status(Bytes::copy_from_slice(
        status.as_str().as_bytes(),
    ))];
    expected.extend(
        headers
            .iter()
            .map(|(n, v)| Field::Header(n.clone(), v.clone())),
    );
    assert_eq!(fields, expected);
    assert_tables_match(enc, dec);
    (dst, fields)
}

/// The encoder's table and the decoder's hold the same entries.
fn assert_tables_match(enc: &Encoder, dec: &Decoder) {
    let enc_entries: Vec<(String, String)> = enc
        .table
        .entries
        .iter()
        .map(|(_, e)| (e.name.as_str().to_owned(), text(&e.value)))
        .collect();
    assert_eq!(enc_entries, table(dec));
    assert_eq!(enc.table.size, dec.table.size);
}

fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert("server", HeaderValue::from_static("gatehouse"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "date",
        HeaderValue::from_static("Mon, 21 Oct 2013 20:13:21 GMT"),
    );
    h.insert("content-length", HeaderValue::from_static("1234"));
    h.insert("x-request-id", HeaderValue::from_static("abc-123"));
    h.append("vary", HeaderValue::from_static("accept-encoding"));
    h.append("vary", HeaderValue::from_static("origin"));
    h
}

#[test]
fn status_200_is_one_octet() {
    let mut enc = Encoder::new();
    let mut dst = BytesMut::new();
    enc.encode_response(StatusCode::OK, &HeaderMap::new(), &mut dst);
    assert_eq!(&dst[..], [0x88]);
    for (code, octet) in [
        (204, 0x89),
        (206, 0x8a),
        (304, 0x8b),
        (400, 0x8c),
        (404, 0x8d),
        (500, 0x8e),
    ] {
        let mut dst = BytesMut::new();
        enc.encode_response(
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            &mut dst,
        );
        assert_eq!(&dst[..], [octet], "{code}");
    }
}

#[test]
fn status_418_round_trips() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    let (dst, fields) = round_trip(
        &mut enc,
        &mut dec,
        StatusCode::IM_A_TEAPOT,
        &HeaderMap::new(),
    );
    assert_eq!(&dst[..], [0x08, 0x03, b'4', b'1', b'8']);
    assert_eq!(fields, [Field::Status(Bytes::from_static(b"418"))]);
    assert!(table(&dec).is_empty(), "not indexed");
}

#[test]
fn responses_reuse_the_table() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    let headers = response_headers();
    let (first, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &headers);
    let (second, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &headers);
    let (third, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &headers);
    assert!(
        second.len() < first.len(),
        "{} < {}",
        second.len(),
        first.len()
    );
    assert_eq!(second, third);
    // The per-response fields were not indexed; the others were.
    let names: Vec<String> = table(&dec).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "vary",
            "vary",
            "x-frame-options",
            "cache-control",
            "server",
            "content-type"
        ]
    );
    // Second block: :status, six indexed fields, and the three literals sent every time.
    let date = "Mon, 21 Oct 2013 20:13:21 GMT";
    // (date and content-length have static names past 14: two octets for the index.)
    let literals = (2 + 1 + date.len()) + (2 + 1 + 4) + (1 + 1 + 12 + 1 + 7);
    assert_eq!(second.len(), 1 + 6 + literals);
    // A changed value reuses the name: literal with indexing, name by static index 31.
    let mut changed = headers.clone();
    changed.insert("content-type", HeaderValue::from_static("text/plain"));
    let (block, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &changed);
    assert_eq!(block[1], 0x40 | 31);
}

#[test]
fn custom_names_are_reused_from_the_dynamic_table() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    let mut h = HeaderMap::new();
    h.insert("x-custom", HeaderValue::from_static("one"));
    let (block, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
    assert_eq!(&block[..3], [0x88, 0x40, 8], "literal name the first time");
    h.insert("x-custom", HeaderValue::from_static("two"));
    let (block, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
    assert_eq!(
        &block[..],
        [0x88, 0x40 | 62, 3, b't', b'w', b'o'],
        "name by dynamic index"
    );
    let (block, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
    assert_eq!(&block[..], [0x88, 0x80 | 62]);
    // Without indexing too: x-request-id is never indexed but may reuse a name... it is
    // not in the table, so it goes as a literal name each time.
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_static("1"));
    let (block, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
    assert_eq!(block[1], 0x00);
    let (again, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
    assert_eq!(block, again);
}

#[test]
fn long_values_are_not_indexed() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    let mut h = HeaderMap::new();
    h.insert("x-long", HeaderValue::from_str(&"v".repeat(129)).unwrap());
    h.insert("x-edge", HeaderValue::from_str(&"v".repeat(128)).unwrap());
    round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
    assert_eq!(table(&dec).len(), 1);
    assert_eq!(table(&dec)[0].0, "x-edge");
}

#[test]
fn sensitive_values_are_never_indexed() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    let mut secret = HeaderValue::from_static("hunter2");
    secret.set_sensitive(true);
    let mut h = HeaderMap::new();
    h.insert("x-token", secret.clone());
    h.insert("set-cookie", secret.clone());
    let (block, fields) = round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
    assert_eq!(block[1], 0x10, "never indexed, literal name");
    // set-cookie: never indexed, name by static index 55 (4-bit prefix: 0x1f, 55 - 15).
    assert_eq!(&block[2 + 1 + 7 + 1 + 7..][..2], [0x1f, 40]);
    for field in &fields[1..] {
        let Field::Header(_, value) = field else {
            panic!()
        };
        assert!(value.is_sensitive());
    }
    assert!(enc.table.entries.is_empty() && table(&dec).is_empty());
    // Even when the same value is in the table unmarked, a sensitive one is not indexed.
    let mut plain = HeaderMap::new();
    plain.insert("x-token", HeaderValue::from_static("hunter2"));
    round_trip(&mut enc, &mut dec, StatusCode::OK, &plain);
    let mut h = HeaderMap::new();
    h.insert("x-token", secret);
    let (block, fields) = round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
    assert_eq!(
        &block[1..3],
        [0x1f, 62 - 15],
        "never indexed, name by dynamic index 62"
    );
    let Field::Header(_, value) = &fields[1] else {
        panic!()
    };
    assert!(value.is_sensitive());
}

#[test]
fn table_size_zero_then_256() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    let headers = response_headers();
    round_trip(&mut enc, &mut dec, StatusCode::OK, &headers);
    assert!(!table(&dec).is_empty());

    enc.set_max_table_size(0);
    let (block, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &headers);
    assert_eq!(&block[..2], [0x20, 0x88]);
    assert_eq!(dec.table.max_size, 0);
    let (again, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &headers);
    assert_eq!(again[0], 0x88, "the update is sent once");
    assert!(
        enc.table.entries.is_empty() && table(&dec).is_empty(),
        "nothing inserted"
    );

    enc.set_max_table_size(256);
    // Fewer headers than above, so that they all fit in 256 octets.
    let mut small = HeaderMap::new();
    small.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    small.insert("cache-control", HeaderValue::from_static("no-cache"));
    let (block, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &small);
    assert_eq!(&block[..4], [0x3f, 0xe1, 0x01, 0x88], "256 = 31 + 225");
    assert_eq!(dec.table.max_size, 256);
    assert_eq!(table(&dec).len(), 2);
    let (shorter, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &small);
    assert_eq!(&shorter[..], [0x88, 0x80 | 63, 0x80 | 62]);
}

#[test]
fn several_size_changes_signal_the_smallest_then_the_final() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    round_trip(&mut enc, &mut dec, StatusCode::OK, &response_headers());
    enc.set_max_table_size(100);
    enc.set_max_table_size(2000);
    enc.set_max_table_size(1000);
    let (block, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &response_headers());
    // 100 = 31 + 69; 1000 = 31 + 969 (0xc9 0x07).
    assert_eq!(&block[..5], [0x3f, 69, 0x3f, 0xc9, 0x07]);
    assert_eq!(dec.table.max_size, 1000);
    // Down to 0 and back to the same size: both must be signalled (the table was emptied).
    enc.set_max_table_size(0);
    enc.set_max_table_size(1000);
    let (block, _) = round_trip(&mut enc, &mut dec, StatusCode::OK, &response_headers());
    assert_eq!(&block[..4], [0x20, 0x3f, 0xc9, 0x07]);
}

#[test]
fn table_size_changes_are_signalled_capped() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(1 << 20);
    let encode = |enc: &mut Encoder, dec: &mut Decoder| {
        let mut dst = BytesMut::new();
        enc.encode_response(StatusCode::OK, &HeaderMap::new(), &mut dst);
        decode(dec, &dst).unwrap();
        dst
    };
    // The default again: nothing to say.
    enc.set_max_table_size(4096);
    assert_eq!(&encode(&mut enc, &mut dec)[..], [0x88]);
    // Larger: used as 4096, and said so (4096 = 31 + 4065: 0xe1 0x1f).
    enc.set_max_table_size(1 << 20);
    assert_eq!(&encode(&mut enc, &mut dec)[..], [0x3f, 0xe1, 0x1f, 0x88]);
    assert_eq!(enc.table.max_size, 4096);
    // Lowered, but still above the cap: the update is still sent, the decoder may need it.
    enc.set_max_table_size(6000);
    assert_eq!(&encode(&mut enc, &mut dec)[..], [0x3f, 0xe1, 0x1f, 0x88]);
    // The same value again: nothing.
    enc.set_max_table_size(6000);
    assert_eq!(&encode(&mut enc, &mut dec)[..], [0x88]);
}

#[test]
fn encoder_and_decoder_evict_in_step() {
    let mut enc = Encoder::new();
    enc.set_max_table_size(300);
    let mut dec = Decoder::new(4096);
    let mut rng = Rng(42);
    for i in 0..300 {
        let mut h = HeaderMap::new();
        for _ in 0..rng.below(5) {
            let name = format!("x-h{}", rng.below(6));
            let value = "v".repeat(rng.below(60));
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        if i % 3 == 0 {
            h.append("cache-control", HeaderValue::from_static("max-age=60"));
        }
        if i == 150 {
            enc.set_max_table_size(120);
        }
        round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
        assert!(enc.table.size <= enc.table.max_size);
    }
}

#[test]
fn trailers_round_trip() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from_static("0"));
    h.insert("grpc-message", HeaderValue::from_static("ok"));
    for _ in 0..2 {
        let mut dst = BytesMut::new();
        enc.encode_trailers(&h, &mut dst);
        let fields = decode(&mut dec, &dst).unwrap();
        let expected: Vec<Field> = h
            .iter()
            .map(|(n, v)| Field::Header(n.clone(), v.clone()))
            .collect();
        assert_eq!(fields, expected);
    }
    let mut dst = BytesMut::new();
    enc.encode_trailers(&h, &mut dst);
    assert_eq!(&dst[..], [0x80 | 63, 0x80 | 62]);
    // An empty trailer block is empty.
    let mut dst = BytesMut::new();
    enc.encode_trailers(&HeaderMap::new(), &mut dst);
    assert!(dst.is_empty());
}

#[test]
fn long_names_and_values_use_multi_octet_lengths() {
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(4096);
    let mut h = HeaderMap::new();
    let name = "x-".to_owned() + &"n".repeat(300);
    h.insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(&"v".repeat(5000)).unwrap(),
    );
    round_trip(&mut enc, &mut dec, StatusCode::OK, &h);
}

#[test]
fn errors_display() {
    assert_eq!(
        DecodeError::Compression("index 0").to_string(),
        "HPACK compression error: index 0"
    );
    assert_eq!(
        DecodeError::Malformed("x").to_string(),
        "malformed header field: x"
    );
    assert_eq!(
        DecodeError::ListTooLarge.to_string(),
        "header list too large"
    );
}
