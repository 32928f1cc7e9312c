//! The HTTP/2 server in process: a real client (hyper's, h2's) or raw frames over
//! `tokio::io::duplex`, and handlers written here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::frame::{self, Frame, Reason};
use super::*;
use crate::proxy::lingering::Lingering;
use crate::proxy::request_body::ClientBody;
use crate::proxy::server::ServerSettings;

type Handling = Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>;

fn info() -> Arc<ConnInfo> {
    let port = HeaderValue::from_static("80");
    Arc::new(ConnInfo::new(
        "127.0.0.1:40000".parse().unwrap(),
        "http",
        port,
        &ServerSettings::default(),
    ))
}

const LIMITS: Limits = Limits {
    max_streams: 16,
    max_header_list: 16 * 1024,
};

/// Serves one connection on a duplex pipe with `handler`; returns the client's end and the
/// server's task (its result), and the connection's info.
fn serve<H>(
    handler: H,
    limits: Limits,
) -> (
    DuplexStream,
    tokio::task::JoinHandle<Result<(), ConnError>>,
    Arc<ConnInfo>,
)
where
    H: FnMut(Request<ClientBody>) -> Handling + Send + Unpin + 'static,
{
    let (client, server) = tokio::io::duplex(1 << 20);
    let info = info();
    let conn = Connection::new(ClientIo::new(server), info.clone(), limits, bodied(handler));
    (client, tokio::spawn(conn), info)
}

/// A connection the test polls by hand, to look at its state between polls.
type ByHand = Pin<
    Box<
        Connection<
            DuplexStream,
            Box<dyn FnMut(Request<Option<RequestBody>>) -> Handling + Send>,
            Handling,
        >,
    >,
>;

/// One connection on a duplex pipe with `handler`, not spawned. Returns the client's end and
/// the connection.
fn polled_by_hand<H>(handler: H) -> (DuplexStream, ByHand)
where
    H: FnMut(Request<ClientBody>) -> Handling + Send + Unpin + 'static,
{
    let (client, server) = tokio::io::duplex(1 << 16);
    let conn = Connection::new(
        ClientIo::new(server),
        info(),
        LIMITS,
        Box::new(bodied(handler)) as Box<_>,
    );
    (client, Box::pin(conn))
}

/// A handler of requests as the phases take them, as the connection's handler (which is given
/// a request's body as it comes).
fn bodied(
    mut handler: impl FnMut(Request<ClientBody>) -> Handling + Send + Unpin + 'static,
) -> impl FnMut(Request<Option<RequestBody>>) -> Handling + Send + Unpin + 'static {
    move |req| handler(req.map(|body| body.map_or(ClientBody::Empty, ClientBody::H2)))
}

/// Answers with the request's method, target and `x-test` header, and the size of its body.
fn echo(req: Request<ClientBody>) -> Handling {
    Box::pin(async move {
        let (parts, body) = req.into_parts();
        let collected = body.collect().await;
        let (len, trailer) = match collected {
            Ok(collected) => {
                let trailer = collected
                    .trailers()
                    .and_then(|t| t.get("x-trailer"))
                    .map(|v| v.to_str().unwrap().to_owned());
                (collected.to_bytes().len(), trailer)
            }
            Err(_) => return crate::body::short_response(StatusCode::BAD_REQUEST, "failed\n"),
        };
        let text = format!(
            "{} {} {} x-test={:?} body={} trailer={:?}",
            parts.method,
            parts.uri,
            parts.version == http::Version::HTTP_2,
            parts.headers.get("x-test"),
            len,
            trailer
        );
        Response::builder()
            .header("x-echo", "yes")
            .body(crate::body::full(text))
            .unwrap()
    })
}

async fn hyper_client(
    io: DuplexStream,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>> {
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

#[tokio::test]
async fn requests_are_answered_with_their_heads_and_bodies() {
    let (client, _server, _info) = serve(echo, LIMITS);
    let mut send = hyper_client(client).await;
    let req = Request::get("http://app.test/some/path?q=1")
        .header("x-test", "one")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo"], "yes");
    let len: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(len, body.len(), "content-length from the body's exact size");
    assert_eq!(
        body,
        "GET http://app.test/some/path?q=1 true x-test=Some(\"one\") body=0 trailer=None"
    );

    // Again on the same connection: the HPACK tables in step both ways.
    for n in 0..3 {
        let req = Request::post("http://app.test/up")
            .header("x-test", format!("n{n}"))
            .body(http_body_util::Full::new(Bytes::from(vec![7u8; 1000 * n])))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.headers()["x-echo"], "yes");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            format!(
                "POST http://app.test/up true x-test=Some(\"n{n}\") body={} trailer=None",
                1000 * n
            )
        );
    }
}

#[tokio::test]
async fn many_streams_at_once_are_all_answered() {
    let (client, _server, _info) = serve(echo, LIMITS);
    let send = hyper_client(client).await;
    let mut answers = Vec::new();
    for n in 0..40 {
        let mut send = send.clone();
        answers.push(tokio::spawn(async move {
            let req = Request::get(format!("http://app.test/{n}"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            resp.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    for (n, answer) in answers.into_iter().enumerate() {
        let body = answer.await.unwrap();
        assert!(
            body.starts_with(format!("GET http://app.test/{n} ").as_bytes()),
            "{body:?}"
        );
    }
}

#[tokio::test]
async fn an_upload_larger_than_the_windows_arrives_whole_with_its_trailers() {
    let (client, _server, _info) = serve(echo, LIMITS);
    let (h2, conn) = h2::client::handshake(client).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let req = Request::post("http://app.test/big").body(()).unwrap();
    let (resp, mut send) = h2.send_request(req, false).unwrap();
    // 3 MiB: three times the stream's and the connection's window, so it goes through only if
    // the server gives window back as the handler takes the data.
    let total = 3 << 20;
    let mut left = total;
    while left > 0 {
        let n = left.min(64 * 1024);
        send.reserve_capacity(n);
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx))
            .await
            .unwrap()
            .unwrap();
        let n = granted.min(n);
        send.send_data(Bytes::from(vec![1u8; n]), false).unwrap();
        left -= n;
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("end"));
    send.send_trailers(trailers).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("answered")
        .unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(
        String::from_utf8(got).unwrap(),
        format!("POST http://app.test/big true x-test=None body={total} trailer=Some(\"end\")")
    );
}

/// Answers with `len` bytes counting up, in pieces of 10,000, and trailers.
fn big_answer(len: usize) -> impl FnMut(Request<ClientBody>) -> Handling {
    move |_req| {
        Box::pin(async move {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut frames: Vec<Result<BodyFrame<Bytes>, BoxError>> = bytes
                .chunks(10_000)
                .map(|c| Ok(BodyFrame::data(Bytes::copy_from_slice(c))))
                .collect();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            frames.push(Ok(BodyFrame::trailers(trailers)));
            let body = StreamBody::new(futures_util::stream::iter(frames));
            Response::new(BodyExt::boxed_unsync(body))
        })
    }
}

#[tokio::test]
async fn a_response_larger_than_the_clients_window_is_sent_as_the_window_opens() {
    let (client, _server, _info) = serve(big_answer(300_000), LIMITS);
    let (h2, conn) = h2::client::Builder::new()
        .initial_window_size(5_000)
        .initial_connection_window_size(7_000)
        .handshake::<_, Bytes>(client)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let (resp, _) = h2
        .send_request(Request::get("http://app.test/").body(()).unwrap(), true)
        .unwrap();
    let resp = resp.await.unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= 5_000, "no more than the window at once");
        body.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(got.len(), 300_000);
    assert!(got.iter().enumerate().all(|(i, b)| *b == i as u8));
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn a_stream_the_client_resets_drops_its_handler_and_the_connection_goes_on() {
    let dropped = Arc::new(AtomicBool::new(false));
    let handler = {
        let dropped = dropped.clone();
        move |req: Request<ClientBody>| -> Handling {
            if req.uri().path() == "/hang" {
                let flag = DropFlag(dropped.clone());
                Box::pin(async move {
                    let _flag = flag;
                    std::future::pending().await
                })
            } else {
                echo(req)
            }
        }
    };
    let (client, _server, _info) = serve(handler, LIMITS);
    let (h2, conn) = h2::client::handshake(client).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let (resp, mut stream) = h2
        .send_request(
            Request::get("http://app.test/hang").body(()).unwrap(),
            false,
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!dropped.load(Ordering::Relaxed), "still handling");
    stream.send_reset(h2::Reason::CANCEL);
    drop(resp);
    for _ in 0..100 {
        if dropped.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dropped.load(Ordering::Relaxed), "the handler was dropped");
    let mut h2 = h2.ready().await.unwrap();
    let (resp, _) = h2
        .send_request(
            Request::get("http://app.test/after").body(()).unwrap(),
            true,
        )
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
}

/// A client writing raw frames and reading the server's.
struct Raw {
    io: DuplexStream,
    buf: BytesMut,
}

impl Raw {
    /// Sends the preface and empty SETTINGS.
    async fn start(io: DuplexStream) -> Self {
        let mut raw = Raw {
            io,
            buf: BytesMut::new(),
        };
        let mut out = BytesMut::from(&frame::PREFACE[..]);
        frame::write_settings(&mut out, &frame::Settings::default());
        raw.send(&out).await;
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The server's next frame; `None` once it closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = frame::parse(&mut self.buf, frame::MAX_FRAME_SIZE_LIMIT).unwrap() {
                return Some(frame);
            }
            let read =
                tokio::time::timeout(Duration::from_secs(5), self.io.read_buf(&mut self.buf))
                    .await
                    .expect("the server answers within 5 s")
                    .unwrap();
            if read == 0 {
                return None;
            }
        }
    }

    /// The next frame that is neither SETTINGS nor WINDOW_UPDATE nor a PING ack.
    async fn next_interesting(&mut self) -> Option<Frame> {
        loop {
            match self.next().await? {
                Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
                frame => return Some(frame),
            }
        }
    }

    /// A HEADERS frame carrying `fields` as literals without indexing (RFC 7541 6.2.2).
    async fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let block = literal_block(fields);
        let mut out = BytesMut::new();
        frame::write_headers(&mut out, stream, &block, end_stream, 16_384);
        self.send(&out).await;
    }
}

fn literal_block(fields: &[(&str, &str)]) -> BytesMut {
    let mut block = BytesMut::new();
    for (name, value) in fields {
        block.put_u8(0);
        put_string(&mut block, name.as_bytes());
        put_string(&mut block, value.as_bytes());
    }
    block
}

/// An HPACK string literal, raw, with its length as a 7-bit-prefix integer.
fn put_string(block: &mut BytesMut, s: &[u8]) {
    let mut len = s.len();
    if len < 127 {
        block.put_u8(len as u8);
    } else {
        block.put_u8(127);
        len -= 127;
        while len >= 128 {
            block.put_u8((len % 128) as u8 | 0x80);
            len /= 128;
        }
        block.put_u8(len as u8);
    }
    block.put_slice(s);
}

const GET: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "app.test"),
    (":path", "/"),
];

#[tokio::test]
async fn a_malformed_request_resets_its_stream_only() {
    let (client, _server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    let cases: [&[(&str, &str)]; 6] = [
        &[(":method", "GET"), (":scheme", "http"), (":authority", "a")],
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("content-length", "0"),
            ("content-length", "00"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("X-Upper", "1"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("connection", "close"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("te", "gzip"),
        ],
        &[(":method", "GET"), (":scheme", "http"), (":path", "nope")],
    ];
    for (n, fields) in cases.iter().enumerate() {
        let id = 1 + 2 * n as u32;
        raw.headers(id, fields, true).await;
        assert_eq!(
            raw.next_interesting().await,
            Some(Frame::RstStream {
                stream: id,
                reason: Reason::PROTOCOL_ERROR
            }),
            "{fields:?}"
        );
    }
    raw.headers(13, &GET, true).await;
    match raw.next_interesting().await {
        Some(Frame::Headers { stream: 13, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn streams_over_the_limit_are_refused() {
    let hang = |_req: Request<ClientBody>| -> Handling { Box::pin(std::future::pending()) };
    let limits = Limits {
        max_streams: 2,
        ..LIMITS
    };
    let (client, _server, _info) = serve(hang, limits);
    let mut raw = Raw::start(client).await;
    for id in [1, 3, 5] {
        raw.headers(id, &GET, true).await;
    }
    assert_eq!(
        raw.next_interesting().await,
        Some(Frame::RstStream {
            stream: 5,
            reason: Reason::REFUSED_STREAM
        })
    );
}

/// Upstream work a dropped handler leaves behind: counted in the connection's lingering work
/// from the drop, for `lasting`.
struct LeavesWork(Arc<Lingering>, Duration);

impl Drop for LeavesWork {
    fn drop(&mut self) {
        let (token, lasting) = (self.0.left_behind(), self.1);
        tokio::spawn(async move {
            tokio::time::sleep(lasting).await;
            drop(token);
        });
    }
}

/// The id of the next stream the server answers (its HEADERS), past other frames.
async fn next_answered(raw: &mut Raw) -> u32 {
    loop {
        match raw.next_interesting().await {
            Some(Frame::Headers { stream, .. }) => return stream,
            Some(Frame::Data { .. }) => {}
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}

/// A client that resets streams whose handlers left work upstream gets no more streams started
/// than its limit allows until that work ends: streams opened meanwhile wait, and start in the
/// order they came as the work ends; one reset while it waits never starts.
#[tokio::test]
async fn a_reset_streams_lingering_work_holds_new_streams_past_the_limit() {
    let started = Arc::new(Mutex::new(Vec::<String>::new()));
    let lingering = Arc::new(std::sync::OnceLock::<Arc<Lingering>>::new());
    let handler = {
        let (started, lingering) = (started.clone(), lingering.clone());
        move |req: Request<ClientBody>| -> Handling {
            let (started, lingering) = (started.clone(), lingering.clone());
            Box::pin(async move {
                let path = req.uri().path().to_owned();
                started.lock().unwrap().push(path.clone());
                let lasting = match path.as_str() {
                    "/slow1" => Duration::from_millis(200),
                    "/slow2" => Duration::from_millis(400),
                    "/hang" => return std::future::pending().await,
                    _ => return echo(req).await,
                };
                let _leaves = LeavesWork(lingering.get().unwrap().clone(), lasting);
                std::future::pending().await
            })
        }
    };
    let limits = Limits {
        max_streams: 2,
        ..LIMITS
    };
    let (client, _server, info) = serve(handler, limits);
    let count = info
        .lingering()
        .expect("an HTTP/2 connection counts it")
        .clone();
    lingering.set(count.clone()).unwrap();
    let mut raw = Raw::start(client).await;
    let get = |path: &'static str| [GET[0], GET[1], GET[2], (":path", path)];
    let reset = |stream| {
        let mut out = BytesMut::new();
        frame::write_rst_stream(&mut out, stream, Reason::CANCEL);
        out
    };

    raw.headers(1, &get("/slow1"), true).await;
    raw.headers(3, &get("/slow2"), true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(&reset(1)).await;
    raw.send(&reset(3)).await;
    // Both places are the reset streams' work: 5 and 7 wait.
    raw.headers(5, &get("/hang"), true).await;
    raw.headers(7, &get("/b"), true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(count.count(), 2);
    assert_eq!(started.lock().unwrap().len(), 2, "started past the limit");

    // The first work ends: the first stream waiting starts (and hangs), the second still waits.
    while started.lock().unwrap().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(count.count(), 1);
    assert_eq!(started.lock().unwrap()[2..], ["/hang"]);
    // The second ends: so does the wait.
    assert_eq!(next_answered(&mut raw).await, 7);
    assert_eq!(started.lock().unwrap()[2..], ["/hang", "/b"]);
    assert_eq!(count.count(), 0);

    // A stream reset while it waits never starts.
    let work = count.left_behind();
    raw.headers(9, &get("/c"), true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(&reset(9)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(work);
    raw.headers(11, &get("/d"), true).await;
    assert_eq!(next_answered(&mut raw).await, 11);
    assert_eq!(started.lock().unwrap()[2..], ["/hang", "/b", "/d"]);
}

/// A client told to go for abandoning too many requests: its waiting stream and new ones are
/// refused at once, and the GOAWAY comes only when nothing of this connection is left upstream
/// (its streams answered, the work of reset ones over), so its next connection does not add to
/// it.
#[tokio::test]
async fn a_client_told_to_go_is_refused_new_streams_and_told_when_its_work_is_over() {
    let release = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let release = release.clone();
        move |req: Request<ClientBody>| -> Handling {
            let release = release.clone();
            Box::pin(async move {
                release.notified().await;
                echo(req).await
            })
        }
    };
    let limits = Limits {
        max_streams: 2,
        ..LIMITS
    };
    let (client, _server, info) = serve(handler, limits);
    let lingering = info
        .lingering()
        .expect("an HTTP/2 connection counts it")
        .clone();
    let mut raw = Raw::start(client).await;
    let work = lingering.left_behind();
    raw.headers(1, &GET, true).await;
    raw.headers(3, &GET, true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Stream 1 runs, stream 3 waits for the work. Then the client is told to go.
    for _ in 0..100 {
        info.abandoned();
    }
    raw.headers(5, &GET, true).await;
    for refused in [3, 5] {
        assert_eq!(
            raw.next_interesting().await,
            Some(Frame::RstStream {
                stream: refused,
                reason: Reason::REFUSED_STREAM
            })
        );
    }
    // Stream 1 is answered; the work still runs, so no GOAWAY yet.
    release.notify_one();
    assert_eq!(next_answered(&mut raw).await, 1);
    let early = tokio::time::timeout(Duration::from_millis(100), raw.next_interesting()).await;
    assert!(
        matches!(early, Err(_) | Ok(Some(Frame::Data { .. }))),
        "before the work ended: {early:?}"
    );
    drop(work);
    loop {
        match raw.next_interesting().await {
            Some(Frame::Data { .. }) => {}
            Some(Frame::GoAway { reason, .. }) => {
                assert_eq!(reason, Reason::NO_ERROR);
                break;
            }
            other => panic!("expected the GOAWAY, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_head_over_the_header_list_limit_gets_431_and_the_connection_goes_on() {
    let (client, _server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    let big = "x".repeat(20 * 1024);
    let mut fields = GET.to_vec();
    fields.push(("x-big", &big));
    // Across HEADERS and a CONTINUATION (the block is over one frame).
    raw.headers(1, &fields, true).await;
    match raw.next_interesting().await {
        Some(Frame::Headers {
            stream: 1,
            end_stream: true,
            block,
            ..
        }) => {
            let mut decoder = hpack::Decoder::new(4096);
            let mut status = None;
            decoder
                .decode(block, 1 << 20, |f| {
                    if let hpack::Field::Status(s) = f {
                        status = Some(s);
                    }
                })
                .unwrap();
            assert_eq!(status.as_deref(), Some(&b"431"[..]));
        }
        other => panic!("{other:?}"),
    }
    raw.headers(3, &GET, true).await;
    assert!(matches!(
        raw.next_interesting().await,
        Some(Frame::Headers { stream: 3, .. })
    ));
}

/// HEADERS and then CONTINUATIONs carrying `block` in `frames` frames in all: one byte in each
/// but the last, which carries the rest and ends the block.
fn split_block(stream: u32, block: &[u8], frames: usize) -> BytesMut {
    let mut out = BytesMut::new();
    for n in 0..frames {
        let last = n + 1 == frames;
        let piece = if last { &block[n..] } else { &block[n..n + 1] };
        let kind = if n == 0 {
            frame::kind::HEADERS
        } else {
            frame::kind::CONTINUATION
        };
        let mut flags = if n == 0 { frame::flag::END_STREAM } else { 0 };
        if last {
            flags |= frame::flag::END_HEADERS;
        }
        frame::write_head(&mut out, piece.len(), kind, flags, stream);
        out.put_slice(piece);
    }
    out
}

/// A header block may come in up to eight CONTINUATION frames, as nghttp2 allows; a ninth ends
/// the connection, and so do empty ones, which never grow the block (CVE-2024-28182, the
/// CONTINUATION flood: without a count they held a connection busy for ever).
#[tokio::test]
async fn a_header_block_in_too_many_continuations_ends_the_connection() {
    let block = literal_block(&GET);
    let (client, _server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    raw.send(&split_block(1, &block, 1 + MIN_CONTINUATIONS))
        .await;
    assert!(
        matches!(
            raw.next_interesting().await,
            Some(Frame::Headers { stream: 1, .. })
        ),
        "a block in eight CONTINUATIONs is answered"
    );
    raw.send(&split_block(3, &block, 2 + MIN_CONTINUATIONS))
        .await;
    let mut goaway = None;
    while let Some(frame) = raw.next().await {
        match frame {
            Frame::GoAway { .. } => goaway = Some(frame),
            Frame::Data { stream: 1, .. } => {} // the rest of stream 1's answer
            other => panic!("{other:?}"),
        }
    }
    assert!(
        matches!(
            goaway,
            Some(Frame::GoAway {
                reason: Reason::ENHANCE_YOUR_CALM,
                ..
            })
        ),
        "{goaway:?}"
    );

    let (client, server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    let mut out = BytesMut::new();
    frame::write_head(&mut out, 0, frame::kind::HEADERS, 0, 1);
    for _ in 0..1000 {
        frame::write_head(&mut out, 0, frame::kind::CONTINUATION, 0, 1);
    }
    let _ = raw.io.write_all(&out).await;
    assert!(matches!(
        raw.next_interesting().await,
        Some(Frame::GoAway {
            reason: Reason::ENHANCE_YOUR_CALM,
            ..
        })
    ));
    assert!(matches!(
        server.await.unwrap(),
        Err(ConnError::Protocol(Reason::ENHANCE_YOUR_CALM, _))
    ));
}

#[tokio::test]
async fn protocol_errors_end_the_connection_with_goaway() {
    // DATA on a stream never opened.
    let (client, server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    let mut out = BytesMut::new();
    frame::write_data_head(&mut out, 7, 1, false);
    out.put_u8(0);
    raw.send(&out).await;
    assert_eq!(
        raw.next_interesting().await,
        Some(Frame::GoAway {
            last_stream: 0,
            reason: Reason::PROTOCOL_ERROR,
            debug: Bytes::new()
        })
    );
    assert_eq!(raw.next().await, None, "closed");
    assert!(matches!(
        server.await.unwrap(),
        Err(ConnError::Protocol(Reason::PROTOCOL_ERROR, _))
    ));

    // A header block that keeps coming in CONTINUATION frames.
    let (client, _server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    let mut out = BytesMut::new();
    frame::write_head(&mut out, 0, frame::kind::HEADERS, 0, 1);
    raw.send(&out).await;
    let chunk = vec![0u8; 16 * 1024];
    let mut ended = None;
    for _ in 0..10 {
        let mut out = BytesMut::new();
        frame::write_head(&mut out, chunk.len(), frame::kind::CONTINUATION, 0, 1);
        out.put_slice(&chunk);
        if raw.io.write_all(&out).await.is_err() {
            break;
        }
    }
    while let Some(frame) = raw.next().await {
        if let Frame::GoAway { reason, .. } = frame {
            ended = Some(reason);
        }
    }
    assert_eq!(ended, Some(Reason::COMPRESSION_ERROR));

    // CONTINUATION with no header block to continue.
    let (client, server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    let mut out = BytesMut::new();
    frame::write_head(&mut out, 0, frame::kind::CONTINUATION, 0, 1);
    raw.send(&out).await;
    assert!(matches!(
        raw.next_interesting().await,
        Some(Frame::GoAway {
            reason: Reason::PROTOCOL_ERROR,
            ..
        })
    ));
    assert!(server.await.unwrap().is_err());

    // A stream error on a stream never opened (a PRIORITY frame of the wrong size): it cannot
    // be reset, so the connection ends.
    let (client, server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    let mut out = BytesMut::new();
    frame::write_head(&mut out, 4, frame::kind::PRIORITY, 0, 9);
    out.put_slice(&[0, 0, 0, 1]);
    raw.send(&out).await;
    assert!(matches!(
        raw.next_interesting().await,
        Some(Frame::GoAway {
            reason: Reason::FRAME_SIZE_ERROR,
            ..
        })
    ));
    assert!(server.await.unwrap().is_err());

    // Not the preface at all.
    let (mut client, server, _info) = serve(echo, LIMITS);
    client
        .write_all(b"GET / HTTP/1.1\r\n\r\n....")
        .await
        .unwrap();
    assert!(matches!(
        server.await.unwrap(),
        Err(ConnError::Protocol(Reason::PROTOCOL_ERROR, _))
    ));
}

#[tokio::test]
async fn pings_are_answered() {
    let (client, _server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    let mut out = BytesMut::new();
    frame::write_head(&mut out, 8, frame::kind::PING, 0, 0);
    out.put_slice(b"12345678");
    raw.send(&out).await;
    assert_eq!(
        raw.next_interesting().await,
        Some(Frame::Ping {
            ack: true,
            payload: *b"12345678"
        })
    );
}

#[tokio::test]
async fn a_graceful_shutdown_finishes_the_streams_in_flight() {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = Arc::new(Mutex::new(Some(released)));
    let handler = move |_req: Request<ClientBody>| -> Handling {
        let released = released.lock().unwrap().take();
        Box::pin(async move {
            if let Some(released) = released {
                let _ = released.await;
            }
            Response::new(crate::body::full("done"))
        })
    };
    let (client, mut conn) = polled_by_hand(handler);
    let mut raw = Raw::start(client).await;
    raw.headers(1, &GET, true).await;
    // Served until the stream is in flight.
    let polled = tokio::time::timeout(Duration::from_millis(100), conn.as_mut()).await;
    assert!(polled.is_err(), "the connection goes on");
    conn.as_mut().get_mut().graceful_shutdown();
    let ended = tokio::spawn(conn);
    assert_eq!(
        raw.next_interesting().await,
        Some(Frame::GoAway {
            last_stream: 1,
            reason: Reason::NO_ERROR,
            debug: Bytes::new()
        })
    );
    // A stream opened after the GOAWAY is not served.
    raw.headers(3, &GET, true).await;
    release.send(()).unwrap();
    let mut got = Vec::new();
    while let Some(frame) = raw.next().await {
        got.push(frame);
    }
    assert!(
        matches!(
            &got[0],
            Frame::Headers {
                stream: 1,
                end_stream: false,
                ..
            }
        ),
        "{got:?}"
    );
    assert!(matches!(
        &got[1],
        Frame::Data { stream: 1, end_stream: true, data, .. } if data == "done"
    ));
    assert_eq!(got.len(), 2, "nothing for stream 3: {got:?}");
    assert!(ended.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_stream_held_by_a_shut_window_is_reset_at_the_send_timeout() {
    let (client, _server, info) = serve(big_answer(100_000), LIMITS);
    let mut raw = Raw::start(client).await;
    // The client's window for the stream is 65,535: the answer stops there.
    raw.headers(1, &GET, true).await;
    let mut received = 0;
    while received < 65_535 {
        match raw.next_interesting().await {
            Some(Frame::Data { data, .. }) => received += data.len(),
            Some(Frame::Headers { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(received, 65_535);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let timeout = Duration::from_secs(60);
    assert_eq!(
        info.h2_streams
            .reset_waiting(std::time::Instant::now(), timeout),
        0
    );
    let later = std::time::Instant::now() + timeout;
    assert_eq!(info.h2_streams.reset_waiting(later, timeout), 1);
    assert_eq!(
        raw.next_interesting().await,
        Some(Frame::RstStream {
            stream: 1,
            reason: Reason::CANCEL
        })
    );
}

#[tokio::test]
async fn an_idle_connection_keeps_no_read_buffer_and_its_handler_count_is_right() {
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = calls.clone();
        move |req: Request<ClientBody>| -> Handling {
            calls.fetch_add(1, Ordering::Relaxed);
            echo(req)
        }
    };
    let (client, mut conn) = polled_by_hand(handler);
    let mut raw = Raw::start(client).await;
    raw.headers(1, &GET, true).await;
    let polled = tokio::time::timeout(Duration::from_millis(100), conn.as_mut()).await;
    assert!(polled.is_err());
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(conn.read_buf.capacity(), 0, "idle: no read buffer");
    assert!(conn.streams.is_empty());
}

#[tokio::test]
async fn after_an_idle_spell_a_request_is_read_into_a_small_buffer_and_an_upload_still_arrives_whole()
 {
    let (client, mut conn) = polled_by_hand(echo);
    let mut raw = Raw::start(client).await;
    let polled = tokio::time::timeout(Duration::from_millis(50), conn.as_mut()).await;
    assert!(polled.is_err());
    assert_eq!(conn.read_buf.capacity(), 0, "idle: no read buffer");

    let post = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "app.test"),
        (":path", "/up"),
    ];
    raw.headers(1, &post, false).await;
    let polled = tokio::time::timeout(Duration::from_millis(50), conn.as_mut()).await;
    assert!(polled.is_err());
    let first = conn.read_buf.capacity();
    assert!(
        first > 0 && first <= READ_CHUNK / 2,
        "a request's first read takes a small buffer, not {first} bytes"
    );

    // 40 KiB of body, more than the first read's buffer, in frames of the default 16 KiB.
    let mut out = BytesMut::new();
    for (n, len) in [16_384usize, 16_384, 8_192].into_iter().enumerate() {
        frame::write_data_head(&mut out, 1, len as u32, n == 2);
        out.put_bytes(b'x', len);
    }
    raw.send(&out).await;
    let served = tokio::spawn(conn);
    match raw.next_interesting().await {
        Some(Frame::Headers { stream: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    match raw.next_interesting().await {
        Some(Frame::Data {
            stream: 1, data, ..
        }) => {
            let text = String::from_utf8_lossy(&data).into_owned();
            assert!(
                text.starts_with("POST http://app.test/up true") && text.contains("body=40960"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    served.abort();
}

#[tokio::test]
async fn a_stream_that_keeps_waking_itself_does_not_hold_the_worker() {
    let spins = Arc::new(AtomicUsize::new(0));
    let spun = spins.clone();
    let handler = move |req: Request<ClientBody>| -> Handling {
        if req.uri().path() == "/spin" {
            let spins = spins.clone();
            Box::pin(std::future::poll_fn(move |cx| {
                spins.fetch_add(1, Ordering::Relaxed);
                cx.waker().wake_by_ref();
                Poll::Pending
            }))
        } else {
            echo(req)
        }
    };
    // The connection on a worker of its own (one thread), beside another task that only runs
    // if the connection's task yields while its stream spins.
    let (client, server) = tokio::io::duplex(1 << 16);
    let other_task_ran = Arc::new(AtomicBool::new(false));
    let ran = other_task_ran.clone();
    std::thread::spawn(move || {
        let worker = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        worker.block_on(async move {
            let conn = tokio::spawn(Connection::new(
                ClientIo::new(server),
                info(),
                LIMITS,
                bodied(handler),
            ));
            while spun.load(Ordering::Relaxed) < 100 {
                tokio::task::yield_now().await;
            }
            ran.store(true, Ordering::Relaxed);
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        });
    });
    let mut send = hyper_client(client).await;
    let spin = Request::get("http://app.test/spin")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let _spinning = send.send_request(spin);
    for _ in 0..200 {
        if other_task_ran.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        other_task_ran.load(Ordering::Relaxed),
        "the spinning stream held the worker"
    );
    let req = Request::get("http://app.test/after")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .expect("answered while the other stream spins")
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_client_closing_with_a_request_body_unfinished_gets_its_answer_and_the_connection_ends() {
    let (client, server, _info) = serve(echo, LIMITS);
    let mut raw = Raw::start(client).await;
    let post = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "app.test"),
        (":path", "/"),
    ];
    raw.headers(1, &post, false).await;
    let mut out = BytesMut::new();
    frame::write_data_head(&mut out, 1, 3, false);
    out.put_slice(b"abc");
    raw.send(&out).await;
    raw.io.shutdown().await.unwrap();
    // The handler's body fails (no END_STREAM can come now): it answers 400, which is written.
    let mut frames = Vec::new();
    while let Some(frame) = raw.next().await {
        frames.push(frame);
    }
    let head = frames
        .iter()
        .find_map(|f| match f {
            Frame::Headers {
                stream: 1, block, ..
            } => Some(block.clone()),
            _ => None,
        })
        .expect("an answer");
    let mut status = None;
    hpack::Decoder::new(4096)
        .decode(head, 1 << 20, |f| {
            if let hpack::Field::Status(s) = f {
                status = Some(s);
            }
        })
        .unwrap();
    assert_eq!(status.as_deref(), Some(&b"400"[..]));
    let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}
