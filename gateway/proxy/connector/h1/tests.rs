//! The HTTP/1.1 codec on byte strings: what goes out, and what the upstream's bytes mean.

use super::*;

fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::post(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(()).unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn the_head_is_origin_form_with_the_headers_as_they_are() {
    let req = Request::get("http://10.0.0.1:8080/a/b?x=1")
        .header("host", "app.test")
        .header("x-many", "1")
        .header("x-many", "2")
        .body(())
        .unwrap();
    let (head, framing) = encode_head(&req, false, &Overrides::default());
    assert_eq!(
        text(&head),
        "GET /a/b?x=1 HTTP/1.1\r\nhost: app.test\r\nx-many: 1\r\nx-many: 2\r\n\r\n"
    );
    assert_eq!(framing, RequestFraming::Empty);
}

/// What this hop sets replaces the client's headers of the same names, whatever their case,
/// and what it removes is not sent.
#[test]
fn overrides_replace_the_clients_headers_of_their_names() {
    let req = Request::get("/")
        .header("host", "app.test")
        .header("X-Real-IP", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("accept", "*/*")
        .body(())
        .unwrap();
    let mut overrides = Overrides::default();
    static FORWARDED: HeaderName = header::FORWARDED;
    overrides.set(
        &crate::proxy::headers::X_REAL_IP,
        HeaderValue::from_static("10.0.0.7"),
    );
    overrides.remove(&FORWARDED);
    overrides.set(
        &crate::proxy::headers::HOST,
        HeaderValue::from_static("vhost.internal"),
    );
    let (head, _) = encode_head(&req, false, &overrides);
    assert_eq!(
        text(&head),
        "GET / HTTP/1.1\r\naccept: */*\r\nx-real-ip: 10.0.0.7\r\nhost: vhost.internal\r\n\r\n"
    );
}

#[test]
fn a_body_goes_by_its_declared_length_or_else_chunked() {
    let (head, framing) = encode_head(
        &request("/up", &[("content-length", "5")]),
        true,
        &Overrides::default(),
    );
    assert_eq!(framing, RequestFraming::Length(5));
    assert!(!text(&head).contains("transfer-encoding"));

    // A length the client did not declare (a chunked upload, an HTTP/2 stream): chunked here,
    // whatever Transfer-Encoding the request carried.
    let req = request("/up", &[("transfer-encoding", "gzip, chunked")]);
    let (head, framing) = encode_head(&req, true, &Overrides::default());
    assert_eq!(framing, RequestFraming::Chunked);
    assert_eq!(
        text(&head),
        "POST /up HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn chunks_and_the_last_chunk_with_trailers() {
    assert_eq!(&chunk_line(26)[..], b"1A\r\n");
    assert_eq!(&last_chunk(None)[..], b"0\r\n\r\n");
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    assert_eq!(
        &last_chunk(Some(&trailers))[..],
        b"0\r\ngrpc-status: 0\r\n\r\n"
    );
}

fn parse(bytes: &[u8]) -> (Result<Option<Head>, Malformed>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let head = parse_head(&mut buf, false);
    (head, buf)
}

fn parsed_whole(bytes: &[u8]) -> (Head, BytesMut) {
    let (head, rest) = parse(bytes);
    (head.unwrap().expect("a whole head"), rest)
}

#[test]
fn a_head_in_pieces_waits_for_the_rest_and_leaves_the_body_in_the_buffer() {
    let whole = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-App: yes\r\n\r\nhello";
    for cut in 1..whole.len() - 5 {
        let (head, rest) = parse(&whole[..cut]);
        assert!(head.unwrap().is_none(), "a head cut at {cut} was taken");
        assert_eq!(rest.len(), cut, "bytes were taken from a partial head");
    }
    let (head, rest) = parsed_whole(whole);
    assert_eq!(head.response.status(), StatusCode::CREATED);
    assert_eq!(head.response.headers()["x-app"], "yes");
    assert_eq!(head.body, Decoder::Length(5));
    assert!(head.keep_alive);
    assert_eq!(&rest[..], b"hello");
}

#[test]
fn hop_by_hop_headers_are_read_and_not_passed_on() {
    let (head, _) = parsed_whole(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Session\r\nKeep-Alive: timeout=5\r\n\
          X-Session: 1\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nX-App: kept\r\n\r\n",
    );
    let names: Vec<&str> = head.response.headers().keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["x-app"]);
    assert_eq!(head.body, Decoder::Chunked(Chunked::Size));
    assert!(head.keep_alive);
    // Coding lines in order: the last line's last coding decides.
    let (head, _) = parsed_whole(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(head.body, Decoder::UntilClose);
}

#[test]
fn interim_responses_are_skipped_and_a_switch_without_upgrade_is_refused() {
    let (head, rest) =
        parsed_whole(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.response.status(), StatusCode::OK);
    assert!(!head.response.headers().contains_key("link"));
    assert!(rest.is_empty());
    let (head, _) = parse(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(head.err(), Some(Malformed::UnexpectedSwitch));
}

#[test]
fn bodiless_answers_have_no_body_whatever_their_headers_say() {
    for status in ["204 No Content", "304 Not Modified"] {
        let (head, _) =
            parsed_whole(format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n").as_bytes());
        assert_eq!(head.body, Decoder::Length(0), "{status}");
        assert!(head.keep_alive);
    }
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"[..]);
    let head = parse_head(&mut buf, true).unwrap().unwrap();
    assert_eq!(head.body, Decoder::Length(0), "the answer to HEAD");
}

#[test]
fn framing_and_connection_reuse_follow_rfc_9112() {
    let cases: [(&[u8], Decoder, bool); 7] = [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Decoder::Chunked(Chunked::Size),
            true,
        ),
        // Both: chunked wins, and the connection is not trusted with another exchange.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            Decoder::Chunked(Chunked::Size),
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Decoder::UntilClose,
            false,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", Decoder::UntilClose, false),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            Decoder::Length(2),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
            Decoder::Length(2),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n\r\n",
            Decoder::Length(2),
            true,
        ),
    ];
    for (bytes, body, keep_alive) in cases {
        let (head, _) = parsed_whole(bytes);
        assert_eq!(head.body, body, "{}", text(bytes));
        assert_eq!(head.keep_alive, keep_alive, "{}", text(bytes));
    }
    // The client gets this hop's version, not the backend's.
    let (head, _) = parsed_whole(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.response.version(), Version::HTTP_11);
}

#[test]
fn lengths_that_disagree_or_are_not_numbers_are_refused() {
    for bad in ["-1", "1x", "", "2, 3", "+4"] {
        let (head, _) =
            parse(format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n").as_bytes());
        assert_eq!(head.err(), Some(Malformed::ContentLength), "{bad:?}");
    }
    let (head, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(head.err(), Some(Malformed::ContentLength));
    // The same length twice is one length (RFC 9110 §8.6).
    let (head, _) =
        parsed_whole(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(head.body, Decoder::Length(3));
}

#[test]
fn oversized_or_garbled_heads_are_refused() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    while huge.len() <= MAX_HEAD {
        huge.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    let (head, _) = parse(&huge);
    assert!(head.is_err(), "a head over {MAX_HEAD} bytes was taken");
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    let (head, _) = parse(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes());
    assert_eq!(
        head.err(),
        Some(Malformed::Head(httparse::Error::TooManyHeaders))
    );
    let (head, _) = parse(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n");
    assert!(head.is_err());
    let (head, _) = parse(b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n");
    assert!(head.is_err(), "an obsolete line folding was taken");
    let (head, _) = parse(b"SSH-2.0-OpenSSH\r\n\r\n");
    assert!(head.is_err());
}

/// Feeds `wire` to a decoder `step` bytes at a time; the data, the trailers, and how it ended.
fn decode_all(
    mut decoder: Decoder,
    wire: &[u8],
    step: usize,
) -> (Vec<u8>, Option<HeaderMap>, Result<(), DecodeError>) {
    let (mut buf, mut data, mut trailers) = (BytesMut::new(), Vec::new(), None);
    let mut fed = 0;
    loop {
        let eof = fed == wire.len();
        match decoder.decode(&mut buf, eof) {
            Ok(Decoded::Data(d)) => data.extend_from_slice(&d),
            Ok(Decoded::Trailers(t)) => trailers = Some(t),
            Ok(Decoded::End) => return (data, trailers, Ok(())),
            Ok(Decoded::NeedMore) => {
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
            Err(err) => return (data, trailers, Err(err)),
        }
    }
}

#[test]
fn a_chunked_body_in_any_pieces_comes_out_whole_with_its_trailers() {
    let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nGrpc-Status: 0\r\nX-Sum: 9\r\n\r\n";
    for step in [1, 2, 3, 7, wire.len()] {
        let (data, trailers, end) = decode_all(Decoder::Chunked(Chunked::Size), wire, step);
        assert_eq!(text(&data), "hello, world", "fed {step} at a time");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-sum"], "9");
        assert_eq!(end, Ok(()));
    }
    let (data, trailers, end) =
        decode_all(Decoder::Chunked(Chunked::Size), b"2\r\nok\r\n0\r\n\r\n", 1);
    assert_eq!((text(&data), trailers, end), ("ok", None, Ok(())));
}

#[test]
fn a_broken_or_cut_body_is_an_error_not_an_end() {
    let chunked = || Decoder::Chunked(Chunked::Size);
    let (_, _, end) = decode_all(chunked(), b"zz\r\nhello\r\n0\r\n\r\n", 4);
    assert_eq!(end, Err(DecodeError::Malformed(Malformed::ChunkSize)));
    let (_, _, end) = decode_all(chunked(), b"2\r\nokXX0\r\n\r\n", 4);
    assert_eq!(end, Err(DecodeError::Malformed(Malformed::ChunkEnd)));
    let (data, _, end) = decode_all(chunked(), b"5\r\nhel", 2);
    assert_eq!((text(&data), end), ("hel", Err(DecodeError::Cut)));
    let (_, _, end) = decode_all(chunked(), b"5\r\nhello\r\n", 4);
    assert_eq!(end, Err(DecodeError::Cut), "no last chunk");
    let (_, _, end) = decode_all(chunked(), &vec![b'1'; MAX_CHUNK_LINE + 10], 512);
    assert_eq!(end, Err(DecodeError::Malformed(Malformed::ChunkSize)));

    let (data, _, end) = decode_all(Decoder::Length(10), b"hello", 2);
    assert_eq!((text(&data), end), ("hello", Err(DecodeError::Cut)));
    let (data, _, end) = decode_all(Decoder::UntilClose, b"all of it", 4);
    assert_eq!((text(&data), end), ("all of it", Ok(())));
}

#[test]
fn a_length_body_stops_at_its_length() {
    let mut buf = BytesMut::from(&b"helloHTTP/1.1"[..]);
    let mut decoder = Decoder::Length(5);
    assert_eq!(
        decoder.decode(&mut buf, false),
        Ok(Decoded::Data(Bytes::from_static(b"hello")))
    );
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(&mut buf, false), Ok(Decoded::End));
    assert_eq!(&buf[..], b"HTTP/1.1", "bytes past the body were taken");
}

#[test]
fn interim_answers_while_sending_are_skipped_and_a_final_one_stops_the_body() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]);
    assert!(!skip_interim(&mut buf), "100 Continue stopped the body");
    assert!(buf.is_empty());
    let mut buf = BytesMut::from(&b"HTTP/1.1 10"[..]);
    assert!(
        !skip_interim(&mut buf),
        "an unfinished status line stopped the body"
    );
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Too Large\r\nContent-Le"[..]);
    assert!(
        skip_interim(&mut buf),
        "a 413 on its way did not stop the body"
    );
    assert!(
        buf.starts_with(b"HTTP/1.1 413"),
        "the final answer was taken"
    );
    let mut buf = BytesMut::from(&b"garbage\r\n\r\n"[..]);
    assert!(skip_interim(&mut buf));
}
