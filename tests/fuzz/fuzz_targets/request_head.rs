//! Client request heads read without hyper (`proxy::client_h1`), and the response heads written
//! for them.
//!
//! Whatever the bytes: a head read here is exactly what httparse reads in them (method, target,
//! fields in order, values byte for byte), HTTP/1.1 with an origin-form target, within the size
//! limit, and carries nothing that needs hyper (a body, `Expect`, `Upgrade`, `TE`, a
//! `Connection` token other than `close` / `keep-alive`); the bytes after it stay in the buffer.
//! A head handed to hyper, or not yet whole, leaves the buffer as it was. A response head
//! written for the request parses back as one response with the fields given (framing aside),
//! one framing header at most, and a date.
//!
//! Input: the bytes a client sent; the first byte picks the size limit and the response's
//! status.
#![no_main]

use bytes::BytesMut;
use gatehouse::proxy::client_h1::{Framing, Parse, Spans, encode_head, parse};
use http::{HeaderMap, Method, StatusCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, sent)) = data.split_first() else {
        return;
    };
    let max_head = 64 + usize::from(pick) * 16;
    let mut buf = BytesMut::from(sent);
    let mut spans = Spans::new();
    match parse(&mut buf, max_head, &mut spans) {
        Parse::Partial => {
            assert_eq!(&buf[..], sent);
            assert!(sent.len() < max_head);
            let mut fields = [httparse::EMPTY_HEADER; 100];
            let status = httparse::Request::new(&mut fields).parse(sent);
            assert!(
                matches!(status, Ok(httparse::Status::Partial)),
                "{status:?}"
            );
        }
        Parse::Hyper => assert_eq!(&buf[..], sent),
        Parse::Complete(parsed) => {
            let len = sent.len() - buf.len();
            assert!(len <= max_head);
            assert_eq!(&buf[..], &sent[len..]);
            let mut fields = [httparse::EMPTY_HEADER; 100];
            let mut raw = httparse::Request::new(&mut fields);
            assert_eq!(raw.parse(sent), Ok(httparse::Status::Complete(len)));
            let req = &parsed.req;
            assert_eq!(raw.version, Some(1));
            assert_eq!(Some(req.method().as_str()), raw.method);
            assert_ne!(req.method(), Method::CONNECT);
            // The target as the http types read it (as they do for hyper).
            let target = raw.path.expect("a target");
            assert!(target.starts_with('/'));
            let uri = http::Uri::try_from(target).expect("read here, so valid");
            assert_eq!(req.uri(), &uri);
            let got: Vec<(String, &[u8])> = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes()))
                .collect();
            // The HeaderMap groups a name's values; compare per name, in order.
            for (name, _) in &got {
                let mine: Vec<&[u8]> = got
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| *v)
                    .collect();
                let theirs: Vec<&[u8]> = raw
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value)
                    .collect();
                assert_eq!(mine, theirs, "{name}");
            }
            assert_eq!(got.len(), raw.headers.len());
            for name in [
                "content-length",
                "transfer-encoding",
                "expect",
                "upgrade",
                "te",
            ] {
                assert!(!req.headers().contains_key(name), "{name}");
            }
            let close = req
                .headers()
                .get_all("connection")
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .map(|t| t.trim_ascii().to_ascii_lowercase())
                .inspect(|t| assert!(t == b"close" || t == b"keep-alive", "{t:?}"))
                .fold(false, |close, t| close || t == b"close");
            assert_eq!(parsed.keep_alive, !close);
            check_response(req.headers(), pick, req.method() == Method::HEAD);
        }
    }
});

/// Writes a response head carrying the request's fields, and reads it back.
fn check_response(fields: &HeaderMap, pick: u8, head_request: bool) {
    let status = StatusCode::from_u16(200 + u16::from(pick % 4) * 100 + u16::from(pick % 5))
        .expect("a valid status");
    let known = (pick & 1 == 0).then_some(u64::from(pick));
    let keep_alive = pick & 2 == 0;
    let mut dst = BytesMut::new();
    let (framing, closes) = encode_head(&mut dst, status, fields, known, head_request, keep_alive);
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut raw = httparse::Response::new(&mut slots);
    assert_eq!(
        raw.parse(&dst),
        Ok(httparse::Status::Complete(dst.len())),
        "{:?}",
        String::from_utf8_lossy(&dst)
    );
    assert_eq!(raw.code, Some(status.as_u16()));
    let count = |name: &str| {
        raw.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    assert!(count("content-length") + count("transfer-encoding") <= 1);
    assert!(count("date") >= 1);
    if !keep_alive {
        assert!(closes);
        assert!(count("connection") >= 1);
    }
    let silent =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    match framing {
        Framing::Length(0) => {}
        Framing::Length(n) => {
            assert!(!silent);
            assert_eq!(Some(n), known);
        }
        Framing::Chunked => {
            assert!(!silent && known.is_none());
            assert_eq!(count("transfer-encoding"), 1);
        }
    }
}
