//! Which requests are read here and which go to hyper, and response heads as hyper writes them.
//! Whole exchanges over a connection are in `server/tests.rs` and the integration tests.

use super::*;

fn parsed(head: &str) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(head.as_bytes());
    match parse(&mut buf, 64 * 1024, &mut Spans::new()) {
        Parse::Complete(parsed) => (parsed, buf),
        Parse::Partial => panic!("partial: {head:?}"),
        Parse::Hyper => panic!("handed to hyper: {head:?}"),
    }
}

fn goes_to_hyper(head: &str) -> bool {
    let mut buf = BytesMut::from(head.as_bytes());
    let hyper = matches!(parse(&mut buf, 64 * 1024, &mut Spans::new()), Parse::Hyper);
    // hyper gets every byte back.
    assert_eq!(&buf[..], head.as_bytes());
    hyper
}

#[test]
fn a_plain_get_is_read_here_with_its_fields_in_order() {
    let (Parsed { req, keep_alive }, rest) = parsed(
        "GET /a/b?c=d HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\nX-Many: 1\r\nx-many: 2\r\n\r\n",
    );
    assert!(keep_alive);
    assert!(rest.is_empty());
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri().path(), "/a/b");
    assert_eq!(req.uri().query(), Some("c=d"));
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.headers()["host"], "app.test");
    let many: Vec<_> = req.headers().get_all("x-many").iter().collect();
    assert_eq!(many, ["1", "2"]);
    assert!(req.body().is_end_stream());
}

#[test]
fn a_pipelined_request_stays_in_the_buffer() {
    let (Parsed { req, .. }, rest) =
        parsed("HEAD /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHo");
    assert_eq!(req.method(), Method::HEAD);
    assert_eq!(req.uri().path(), "/one");
    assert_eq!(&rest[..], b"GET /two HTTP/1.1\r\nHo");
    let mut rest = rest;
    assert!(matches!(
        parse(&mut rest, 64 * 1024, &mut Spans::new()),
        Parse::Partial
    ));
}

#[test]
fn connection_close_ends_keep_alive_and_keep_alive_tokens_are_read_here() {
    let (close, _) = parsed("GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, close\r\n\r\n");
    assert!(!close.keep_alive);
    let (kept, _) = parsed("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
    assert!(kept.keep_alive);
}

#[test]
fn requests_with_bodies_upgrades_and_the_unusual_go_to_hyper() {
    for head in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-custom\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        // Malformed: hyper answers these (400), as it always has.
        "GET / HTTP/1.1\r\nHost a\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
        "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(goes_to_hyper(head), "read here: {head:?}");
    }
    let too_many = format!(
        "GET / HTTP/1.1\r\n{}\r\n",
        (0..=MAX_HEADERS)
            .map(|i| format!("x-{i}: v\r\n"))
            .collect::<String>()
    );
    assert!(goes_to_hyper(&too_many));
}

fn head_of(
    status: StatusCode,
    fields: &[(&str, &str)],
    known: Option<u64>,
    head_request: bool,
    keep_alive: bool,
) -> (String, Framing, bool) {
    let mut headers = HeaderMap::new();
    for (name, value) in fields {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let mut head = BytesMut::new();
    let (framing, closes) =
        encode_head(&mut head, status, &headers, known, head_request, keep_alive);
    (String::from_utf8(head.to_vec()).unwrap(), framing, closes)
}

/// [`head_of`] without its date line (it changes every second), with the framing and whether
/// the connection closes.
fn encoded(
    status: StatusCode,
    fields: &[(&str, &str)],
    known: Option<u64>,
    head_request: bool,
    keep_alive: bool,
) -> (String, Framing, bool) {
    let (head, framing, closes) = head_of(status, fields, known, head_request, keep_alive);
    let date = head.find("date: ").expect("a date");
    let end = date + head[date..].find("\r\n").unwrap() + 2;
    assert_eq!(end - date, "date: Sat, 05 Dec 2026 12:00:00 GMT\r\n".len());
    let undated = format!("{}{}", &head[..date], &head[end..]);
    (undated, framing, closes)
}

/// What [`encoded`] gives, for comparing.
fn expect(head: &str, framing: Framing, closes: bool) -> (String, Framing, bool) {
    (head.to_owned(), framing, closes)
}

#[test]
fn a_body_of_known_length_is_declared_and_a_date_added() {
    let fields = [("content-type", "text/plain")];
    assert_eq!(
        encoded(StatusCode::OK, &fields, Some(5), false, true),
        expect(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n",
            Framing::Length(5),
            false
        )
    );
    // An empty body says so.
    assert_eq!(
        encoded(StatusCode::NOT_FOUND, &[], Some(0), false, true),
        expect(
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            Framing::Length(0),
            false
        )
    );
}

#[test]
fn a_body_of_unknown_length_is_chunked_and_the_response_framing_replaced() {
    let fields = [("transfer-encoding", "gzip, chunked"), ("x-a", "b")];
    assert_eq!(
        encoded(StatusCode::OK, &fields, None, false, true),
        expect(
            "HTTP/1.1 200 OK\r\nx-a: b\r\ntransfer-encoding: chunked\r\n\r\n",
            Framing::Chunked,
            false
        )
    );
    // A declared length frames a body that does not know its own.
    let fields = [("content-length", "12")];
    assert_eq!(
        encoded(StatusCode::OK, &fields, None, false, true),
        expect(
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
            Framing::Length(12),
            false
        )
    );
}

#[test]
fn head_and_not_modified_keep_the_declared_length_and_send_no_body() {
    let fields = [("content-length", "1234")];
    assert_eq!(
        encoded(StatusCode::OK, &fields, Some(0), true, true),
        expect(
            "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
            Framing::Length(0),
            false
        )
    );
    // HEAD of a body without a declared length: no made-up zero.
    assert_eq!(
        encoded(StatusCode::OK, &[], Some(0), true, true),
        expect("HTTP/1.1 200 OK\r\n\r\n", Framing::Length(0), false)
    );
    let fields = [("etag", "\"x\"")];
    assert_eq!(
        encoded(StatusCode::NOT_MODIFIED, &fields, Some(0), false, true),
        expect(
            "HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n",
            Framing::Length(0),
            false
        )
    );
    assert_eq!(
        encoded(StatusCode::NO_CONTENT, &[], None, false, true).0,
        "HTTP/1.1 204 No Content\r\n\r\n"
    );
}

#[test]
fn a_closing_connection_says_so_once_and_a_response_may_close_it() {
    assert_eq!(
        encoded(StatusCode::OK, &[], Some(0), false, false),
        expect(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            Framing::Length(0),
            true
        )
    );
    let fields = [("connection", "close")];
    let (head, _, closes) = encoded(
        StatusCode::SERVICE_UNAVAILABLE,
        &fields,
        Some(0),
        false,
        true,
    );
    assert_eq!(
        head,
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    assert!(closes);
}

#[test]
fn a_date_from_the_response_is_kept() {
    let date = "Tue, 01 Dec 2026 10:00:00 GMT";
    let (head, _, _) = head_of(StatusCode::OK, &[("date", date)], Some(0), false, true);
    assert_eq!(head.matches("date: ").count(), 1);
    assert!(head.contains(date));
    let now = String::from_utf8(crate::proxy::headers::http_date().to_vec()).unwrap();
    assert!(httpdate::parse_http_date(&now).is_ok(), "{now}");
}

#[test]
fn a_head_over_the_limit_goes_to_hyper_whole_or_in_part() {
    let head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nCookie: {}\r\n\r\n",
        "c".repeat(200)
    );
    let mut buf = BytesMut::from(head.as_bytes());
    assert!(matches!(
        parse(&mut buf, 200, &mut Spans::new()),
        Parse::Hyper
    ));
    assert_eq!(&buf[..], head.as_bytes());
    let mut part = BytesMut::from(&head.as_bytes()[..100]);
    assert!(matches!(
        parse(&mut part, 100, &mut Spans::new()),
        Parse::Hyper
    ));
    let mut part = BytesMut::from(&head.as_bytes()[..100]);
    assert!(matches!(
        parse(&mut part, 101, &mut Spans::new()),
        Parse::Partial
    ));
    let mut buf = BytesMut::from(head.as_bytes());
    assert!(matches!(
        parse(&mut buf, head.len(), &mut Spans::new()),
        Parse::Complete(_)
    ));
}
