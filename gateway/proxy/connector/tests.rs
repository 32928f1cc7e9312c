//! The connector against a real origin on loopback, in process.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::*;

/// An HTTP/1.1 origin counting the connections it accepted; each answer waits `delay` and
/// says `hello`. With `close`, every response ends its connection.
pub(in crate::proxy) async fn origin(
    delay: Duration,
    close: bool,
) -> (SocketAddr, Arc<AtomicUsize>) {
    origin_saying(delay, close, Bytes::from_static(b"hello")).await
}

/// [`origin`], answering `body`.
async fn origin_saying(
    delay: Duration,
    close: bool,
    body: Bytes,
) -> (SocketAddr, Arc<AtomicUsize>) {
    origin_answering(delay, close, move |_| body.clone()).await
}

/// [`origin`], its answers' bodies made by `body` from their number (counted from 0 across
/// all connections).
async fn origin_answering(
    delay: Duration,
    close: bool,
    body: impl Fn(usize) -> Bytes + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let answered = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let (body, answered) = (body.clone(), answered.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body(answered.fetch_add(1, Ordering::SeqCst));
                    async move {
                        tokio::time::sleep(delay).await;
                        let mut resp = Response::new(Full::new(body));
                        if close {
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn get(addr: SocketAddr) -> Request<BoxBody> {
    Request::get(format!("http://{addr}/"))
        .header(http::header::HOST, "app.test")
        .body(crate::body::empty())
        .unwrap()
}

/// A GET of `addr` that must be answered.
async fn fetch(connector: &Connector, addr: SocketAddr) -> UpstreamResponse {
    connector
        .send(addr, get(addr))
        .await
        .map_err(|(e, _)| e)
        .unwrap()
}

async fn body_text(resp: UpstreamResponse) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn sequential_requests_reuse_one_pooled_connection() {
    let (addr, accepted) = origin(Duration::ZERO, false).await;
    let connector = Connector::new(ConnectorSettings::default());
    for _ in 0..20 {
        let resp = fetch(&connector, addr).await;
        assert_eq!(body_text(resp).await, "hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(connector.connects(), 1);
}

/// A response whose client went away mid-body: a short rest is read out in the background and
/// the connection serves the next request; a long one is not worth reading, and its connection
/// closes.
#[tokio::test]
async fn a_body_dropped_before_its_end_keeps_its_connection_only_when_the_rest_is_short() {
    for (len, connections) in [(5, 1), (DRAIN_LIMIT as usize + 1, 2)] {
        let body = Bytes::from(vec![b'x'; len]);
        let (addr, accepted) = origin_saying(Duration::ZERO, false, body).await;
        let connector = Connector::new(ConnectorSettings::default());
        let resp = fetch(&connector, addr).await;
        drop(resp);
        let resp = fetch(&connector, addr).await;
        assert_eq!(body_text(resp).await.len(), len);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            connections,
            "a {len}-byte body dropped before its end"
        );
    }
}

#[tokio::test]
async fn an_abandoned_exchange_finishes_and_keeps_its_connection() {
    let (addr, accepted) = origin(Duration::from_millis(100), false).await;
    let connector = Connector::new(ConnectorSettings::default());
    // The client goes away while the origin is still answering.
    let abandoned =
        tokio::time::timeout(Duration::from_millis(30), connector.send(addr, get(addr))).await;
    assert!(
        abandoned.is_err(),
        "the origin answered before the client gave up"
    );
    // The exchange finishes in the background and hands its connection back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = fetch(&connector, addr).await;
    assert_eq!(body_text(resp).await, "hello");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a new connection was opened"
    );
}

/// A client that goes away after its connection was made and before its request's task ran
/// again (a stream reset right after its HEADERS): the connection goes to the pool, and the
/// next request takes it.
#[tokio::test]
async fn a_connection_dialled_for_a_request_that_went_away_goes_to_the_pool() {
    let (addr, accepted) = origin(Duration::ZERO, false).await;
    let connector = Connector::new(ConnectorSettings::default());
    let mut send = Box::pin(connector.send(addr, get(addr)));
    assert!(futures_util::poll!(send.as_mut()).is_pending(), "dialling");
    // The connection is made meanwhile; the request is not polled again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(send);
    let resp = fetch(&connector, addr).await;
    assert_eq!(body_text(resp).await, "hello");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "a second connection");
    assert_eq!(connector.connects(), 1);
}

/// A request sent for a client whose lingering is counted, through the entry the phases use.
fn send_counted<'a>(
    connector: &'a Connector,
    addr: SocketAddr,
    out: &'a mut Outgoing,
    lingering: &'a Arc<Lingering>,
) -> impl Future<Output = Result<UpstreamResponse, (ProxyError, bool)>> + 'a {
    connector.send_timed(addr, out, Duration::from_secs(1), None, Some(lingering))
}

/// Waits for the work left behind to end; then the connection it kept is already idle in the
/// pool (the count falls after the hand-back, so a stream it lets start finds it there).
async fn left_behind_work_ends_with_the_connection_idle(
    connector: &Connector,
    addr: SocketAddr,
    lingering: &Lingering,
) {
    for _ in 0..200 {
        if lingering.count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(lingering.count(), 0, "the work left behind never ended");
    let idle = connector.pool(addr).idle.lock().unwrap().len();
    assert_eq!(
        idle, 1,
        "the connection is back in the pool when the count falls"
    );
}

/// What a request leaves behind when its client goes away (an HTTP/2 reset) is counted in its
/// client's lingering until it ends: an exchange waiting for its answer, a
/// connect under way, a short rest of a body.
#[tokio::test]
async fn work_a_request_leaves_behind_counts_for_its_client_until_it_ends() {
    // An exchange whose answer has not come.
    let (addr, accepted) = origin(Duration::from_millis(100), false).await;
    let connector = Connector::new(ConnectorSettings::default());
    let lingering = Arc::new(Lingering::default());
    let mut out = Outgoing::new(get(addr), Overrides::default());
    let sending = send_counted(&connector, addr, &mut out, &lingering);
    let abandoned = tokio::time::timeout(Duration::from_millis(30), sending).await;
    assert!(
        abandoned.is_err(),
        "the origin answered before the client gave up"
    );
    assert_eq!(
        lingering.count(),
        1,
        "the exchange goes on in the background"
    );
    left_behind_work_ends_with_the_connection_idle(&connector, addr, &lingering).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // A connect the request went away from (the dial's task has not even run).
    let (addr, accepted) = origin(Duration::ZERO, false).await;
    let mut out = Outgoing::new(get(addr), Overrides::default());
    let mut sending = Box::pin(send_counted(&connector, addr, &mut out, &lingering));
    assert!(
        futures_util::poll!(sending.as_mut()).is_pending(),
        "dialling"
    );
    drop(sending);
    assert_eq!(lingering.count(), 1, "the connect goes on");
    left_behind_work_ends_with_the_connection_idle(&connector, addr, &lingering).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // A body dropped with a short rest still to come.
    let (addr, _) = answering_in_two(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        b"world".to_vec(),
    )
    .await;
    let mut out = Outgoing::new(get(addr), Overrides::default());
    let resp = send_counted(&connector, addr, &mut out, &lingering)
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(
        lingering.count(),
        0,
        "an exchange going on is its stream's, counted by the stream"
    );
    drop(resp);
    assert_eq!(lingering.count(), 1, "the rest is read in the background");
    left_behind_work_ends_with_the_connection_idle(&connector, addr, &lingering).await;

    // A request seen through to its end leaves nothing.
    let mut out = Outgoing::new(get(addr), Overrides::default());
    let resp = send_counted(&connector, addr, &mut out, &lingering).await;
    let text = body_text(resp.map_err(|(e, _)| e).unwrap()).await;
    assert_eq!(text, "helloworld");
    assert_eq!(lingering.count(), 0);
}

/// An origin whose every answer is a different 600-byte body: the answer's number, padded.
async fn numbered_origin(delay: Duration) -> SocketAddr {
    let (addr, _) = origin_answering(delay, false, |n| Bytes::from(format!("{n:0>600}"))).await;
    addr
}

/// A pooled connection reads each answer into the room its last one left, and takes its
/// buffer back once nothing else holds it: bodies a client still holds stay as they were.
#[tokio::test]
async fn bodies_still_held_are_untouched_by_the_answers_read_after_them() {
    let addr = numbered_origin(Duration::ZERO).await;
    let connector = Connector::new(ConnectorSettings::default());
    let mut held = Vec::new();
    // 40 answers of 600 bytes and their heads: several times the read buffer's room.
    for n in 0..40 {
        let resp = fetch(&connector, addr).await;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("{n:0>600}"));
        held.push(body);
    }
    for (n, body) in held.iter().enumerate() {
        assert_eq!(body, &format!("{n:0>600}"), "answer {n} changed");
    }
    // Nothing holds the bytes now: the buffer is taken back, and answers still come whole.
    drop(held);
    for n in 40..80 {
        let resp = fetch(&connector, addr).await;
        assert_eq!(body_text(resp).await, format!("{n:0>600}"));
    }
    assert_eq!(connector.connects(), 1);
}

/// The next exchange reads into the buffer the last one read into, not a new one: the second
/// answer's body lies just past the first's (held, so its memory cannot be handed out again).
#[tokio::test]
async fn the_next_answer_is_read_into_the_last_ones_buffer() {
    let addr = numbered_origin(Duration::ZERO).await;
    let connector = Connector::new(ConnectorSettings::default());
    let first = fetch(&connector, addr).await;
    let first = first.into_body().collect().await.unwrap().to_bytes();
    let second = fetch(&connector, addr).await;
    let second = second.into_body().collect().await.unwrap().to_bytes();
    let (a, b) = (first.as_ptr() as usize, second.as_ptr() as usize);
    assert!(
        b > a && b - a < HEAD_READ,
        "the second answer was read into a buffer of its own"
    );
}

/// Idle connections hold no read buffer; the thread keeps a bounded number of spares, however
/// many connections went idle.
#[tokio::test]
async fn idle_connections_hold_no_buffer_and_spares_are_bounded() {
    let addr = numbered_origin(Duration::from_millis(100)).await;
    let connector = Connector::new(ConnectorSettings::default());
    let parallel = spare_buffers::MAX + 6;
    // At once, so each takes a connection of its own.
    let answers = futures_util::future::join_all(
        (0..parallel).map(|_| async { body_text(fetch(&connector, addr).await).await }),
    )
    .await;
    assert!(answers.iter().all(|body| body.len() == 600));
    let pool = connector.pool(addr);
    let idle = pool.idle.lock().unwrap();
    assert_eq!(idle.len(), parallel);
    assert!(idle.iter().all(|i| i.conn.buf.capacity() == 0));
    let spares = spare_buffers::SPARES.with_borrow(|spares| spares.len());
    assert_eq!(spares, spare_buffers::MAX);
}

/// A buffer a large body made large is not kept: a chunked body's reads ask for
/// [`BODY_READ`], more than a head's, and leave room over.
#[tokio::test]
async fn a_buffer_grown_by_a_large_body_is_not_kept() {
    let mut rest = format!("{:x}\r\n", 3 * HEAD_READ).into_bytes();
    rest.extend(std::iter::repeat_n(b'x', 3 * HEAD_READ));
    rest.extend(b"\r\n0\r\n\r\n");
    let (addr, _) = chunked_hello_then(rest).await;
    let connector = Connector::new(ConnectorSettings::default());
    spare_buffers::SPARES.with_borrow_mut(|spares| spares.clear());
    let resp = fetch(&connector, addr).await;
    assert_eq!(body_text(resp).await.len(), 5 + 3 * HEAD_READ);
    assert_eq!(connector.pool(addr).idle.lock().unwrap().len(), 1);
    assert_eq!(spare_buffers::SPARES.with_borrow(|spares| spares.len()), 0);
}

/// The sweep closes idle connections past the idle timeout, and forgets a pool with nothing
/// left in it: an endpoint no request goes to any more (its Pod gone) keeps no connection and
/// no descriptor. A pool whose answer is still being read is kept.
#[tokio::test]
async fn the_sweep_closes_expired_idle_connections_and_forgets_unused_pools() {
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = closed.clone();
    let (addr, _) = scripted(move |mut s, _| {
        let closed = counter.clone();
        async move {
            let mut pending = Vec::new();
            while read_head(&mut s, &mut pending).await.is_some() {
                write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
            }
            closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let idle_timeout = Duration::from_millis(200);
    let connector = Connector::new(ConnectorSettings {
        idle_timeout,
        ..ConnectorSettings::default()
    });
    assert_eq!(body_text(fetch(&connector, addr).await).await, "hello");
    // Not expired yet: kept.
    connector.sweep();
    assert!(connector.pools.load().contains_key(&addr));
    assert_eq!(connector.pool(addr).idle.lock().unwrap().len(), 1);
    // An answer still being read holds its pool through the sweep.
    let reading = fetch(&connector, addr).await;
    tokio::time::sleep(idle_timeout).await;
    connector.sweep();
    assert!(
        connector.pools.load().contains_key(&addr),
        "a pool in use was forgotten"
    );
    assert_eq!(body_text(reading).await, "hello");
    tokio::time::sleep(idle_timeout).await;
    connector.sweep();
    assert!(
        !connector.pools.load().contains_key(&addr),
        "an unused pool was kept"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while closed.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(closed.load(Ordering::SeqCst), 1, "the origin saw no close");
    // The endpoint still works: a new pool, a new connection.
    assert_eq!(body_text(fetch(&connector, addr).await).await, "hello");
    assert_eq!(connector.connects(), 2);
}

#[tokio::test]
async fn a_connection_the_origin_closed_is_replaced_without_failing_the_request() {
    let (addr, accepted) = origin(Duration::ZERO, true).await;
    let connector = Connector::new(ConnectorSettings::default());
    for _ in 0..5 {
        let resp = fetch(&connector, addr).await;
        assert_eq!(body_text(resp).await, "hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_refused_connect_gives_the_request_back() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let connector = Connector::new(ConnectorSettings::default());
    let mut req = get(addr);
    req.headers_mut()
        .insert("x-marker", http::HeaderValue::from_static("kept"));
    let (err, unsent) = connector.send(addr, req).await.err().expect("refused");
    assert_eq!(err.kind, ErrorKind::ConnectFailed);
    assert!(err.retry_safe);
    let unsent = unsent.expect("request given back");
    let head = String::from_utf8_lossy(unsent.head());
    assert!(head.contains("x-marker: kept\r\n"), "{head}");
}

#[tokio::test]
async fn connects_in_flight_per_endpoint_are_bounded() {
    let (addr, _guard) = crate::test_util::blackhole::blackhole_addr();
    let connector = Arc::new(Connector::new(ConnectorSettings {
        max_connecting_per_endpoint: 2,
        connect_timeout: Duration::from_millis(500),
        ..ConnectorSettings::default()
    }));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            connector
                .send(addr, get(addr))
                .await
                .err()
                .map(|(e, _)| e.kind)
        }));
    }
    let mut kinds = Vec::new();
    for task in tasks {
        kinds.push(
            task.await
                .unwrap()
                .expect("no request to a blackhole succeeds"),
        );
    }
    // Ten requests to an endpoint that never answers a SYN: two connects at a time were tried
    // (a third or fourth may start as the first two time out), the others waited their turn
    // and gave up at the connect timeout. Unbounded, all ten would dial.
    let dialled = connector.connects();
    assert!((2..=4).contains(&dialled), "{dialled} connects");
    // Each connect tried failed as a connect; the requests that never got to try say so (the
    // upstream phase marks only the first kind down).
    let failed = kinds
        .iter()
        .filter(|k| **k == ErrorKind::ConnectFailed)
        .count();
    let busy = kinds
        .iter()
        .filter(|k| **k == ErrorKind::ConnectBusy)
        .count();
    let dialled = dialled as usize;
    assert_eq!((failed, busy), (dialled, 10 - dialled), "{kinds:?}");
}

/// An origin speaking raw bytes: `script` gets each accepted connection and its number (from 0).
async fn scripted<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(stream, n));
        }
    });
    (addr, accepted)
}

/// A scripted origin answering every request with a chunked body: a first chunk `hello`, a
/// pause (so the two arrive in separate reads), then `rest` (the other chunks and the end).
async fn chunked_hello_then(rest: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    answering_in_two(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        rest,
    )
    .await
}

/// A scripted origin answering every request with `first`, then after a pause (so the two
/// arrive in separate reads) `rest`.
async fn answering_in_two(first: &'static [u8], rest: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let rest = Arc::new(rest);
    scripted(move |mut s, _| {
        let rest = rest.clone();
        async move {
            let mut pending = Vec::new();
            while read_head(&mut s, &mut pending).await.is_some() {
                write(&mut s, first).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                write(&mut s, &rest).await;
            }
        }
    })
    .await
}

/// Reads one request head off `stream` (bytes after it are left in `pending`).
async fn read_head(stream: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            return Some(String::from_utf8(head).unwrap());
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

async fn write(stream: &mut tokio::net::TcpStream, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.write_all(bytes).await;
}

/// A request body whose parts the test hands over one by one.
fn streamed(
    method: &str,
    addr: SocketAddr,
    len: Option<usize>,
) -> (Request<BoxBody>, tokio::sync::mpsc::Sender<Bytes>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let part = rx.recv().await?;
        Some((Ok::<_, BoxError>(Frame::data(part)), rx))
    });
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}/upload"))
        .header(http::header::HOST, "app.test");
    if let Some(len) = len {
        req = req.header(http::header::CONTENT_LENGTH, len);
    }
    let body = http_body_util::StreamBody::new(stream).boxed_unsync();
    (req.body(body).unwrap(), tx)
}

#[tokio::test]
async fn a_backend_answering_before_the_whole_body_stops_the_upload() {
    let (addr, accepted) = scripted(|mut s, _| async move {
        let mut pending = Vec::new();
        if read_head(&mut s, &mut pending).await.is_some() {
            write(
                &mut s,
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig",
            )
            .await;
        }
        // Reads nothing more: the upload must not be waited for.
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let connector = Connector::new(ConnectorSettings::default());
    let (req, parts) = streamed("POST", addr, Some(1 << 20));
    parts.send(Bytes::from_static(b"first part")).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(2), connector.send(addr, req))
        .await
        .expect("the early answer was not passed on while the body was unfinished")
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body_text(resp).await, "big");
    // The connection carries half a request: it is not used again.
    let _ = tokio::time::timeout(Duration::from_millis(500), connector.send(addr, get(addr))).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_interim_continue_does_not_stop_the_body() {
    let (addr, _) = scripted(|mut s, _| async move {
        use tokio::io::AsyncReadExt;
        let mut pending = Vec::new();
        let head = read_head(&mut s, &mut pending).await.unwrap();
        assert!(head.contains("content-length: 10"), "{head}");
        write(&mut s, b"HTTP/1.1 100 Continue\r\n\r\n").await;
        while pending.len() < 10 {
            let mut chunk = [0u8; 64];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the body stopped");
            pending.extend_from_slice(&chunk[..n]);
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            String::from_utf8(pending).unwrap()
        );
        write(&mut s, reply.as_bytes()).await;
    })
    .await;
    let connector = Connector::new(ConnectorSettings::default());
    let (mut req, parts) = streamed("PUT", addr, Some(10));
    req.headers_mut().insert(
        http::header::EXPECT,
        http::HeaderValue::from_static("100-continue"),
    );
    tokio::spawn(async move {
        parts.send(Bytes::from_static(b"hello")).await.unwrap();
        // The rest after the origin's 100 Continue has come.
        tokio::time::sleep(Duration::from_millis(100)).await;
        parts.send(Bytes::from_static(b"world")).await.unwrap();
    });
    let resp = connector.send(addr, req).await.map_err(|(e, _)| e).unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    assert_eq!(body_text(resp).await, "helloworld");
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_chunked() {
    let (addr, _) = scripted(|mut s, _| async move {
        use tokio::io::AsyncReadExt;
        let mut pending = Vec::new();
        let head = read_head(&mut s, &mut pending).await.unwrap();
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        while !pending.ends_with(b"0\r\n\r\n") {
            let mut chunk = [0u8; 64];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the body stopped");
            pending.extend_from_slice(&chunk[..n]);
        }
        let wire = String::from_utf8(pending).unwrap();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{wire}",
            wire.len()
        );
        write(&mut s, reply.as_bytes()).await;
    })
    .await;
    let connector = Connector::new(ConnectorSettings::default());
    let (req, parts) = streamed("POST", addr, None);
    tokio::spawn(async move {
        parts.send(Bytes::from_static(b"hello")).await.unwrap();
        parts.send(Bytes::from_static(b", world")).await.unwrap();
    });
    let resp = connector.send(addr, req).await.map_err(|(e, _)| e).unwrap();
    assert_eq!(
        body_text(resp).await,
        "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn a_chunked_answer_comes_through_with_its_trailers_and_keeps_its_connection() {
    let (addr, accepted) =
        chunked_hello_then(b"6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n".to_vec()).await;
    let connector = Connector::new(ConnectorSettings::default());
    for _ in 0..2 {
        let resp = fetch(&connector, addr).await;
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-checksum"], "42");
        assert_eq!(&collected.to_bytes()[..], b"hello world");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_ended_by_closing_is_read_to_the_close_and_its_connection_not_reused() {
    let (addr, accepted) = scripted(|mut s, _| async move {
        let mut pending = Vec::new();
        if read_head(&mut s, &mut pending).await.is_some() {
            write(&mut s, b"HTTP/1.1 200 OK\r\n\r\nuntil ").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            write(&mut s, b"the end").await;
        }
    })
    .await;
    let connector = Connector::new(ConnectorSettings::default());
    for _ in 0..2 {
        let resp = fetch(&connector, addr).await;
        assert_eq!(body_text(resp).await, "until the end");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// The backend closes a kept-alive connection just as the next request arrives on it: an
/// idempotent request goes again on a new connection; a POST does not (it may have acted).
#[tokio::test]
async fn a_request_a_backend_dropped_unanswered_goes_again_only_when_idempotent() {
    let (addr, accepted) = scripted(|mut s, n| async move {
        let mut pending = Vec::new();
        if read_head(&mut s, &mut pending).await.is_some() {
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        }
        // The first connection takes the second request and closes without a word.
        if n == 0 {
            let _ = read_head(&mut s, &mut pending).await;
            return;
        }
        while read_head(&mut s, &mut pending).await.is_some() {
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        }
    })
    .await;
    let connector = Connector::new(ConnectorSettings::default());
    for _ in 0..2 {
        let resp = fetch(&connector, addr).await;
        assert_eq!(body_text(resp).await, "ok");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the GET was not sent again"
    );

    let (addr, _) = scripted(|mut s, _| async move {
        let mut pending = Vec::new();
        if read_head(&mut s, &mut pending).await.is_some() {
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        }
        let _ = read_head(&mut s, &mut pending).await;
    })
    .await;
    let connector = Connector::new(ConnectorSettings::default());
    let post = || {
        Request::post(format!("http://{addr}/"))
            .header(http::header::HOST, "app.test")
            .body(crate::body::empty())
            .unwrap()
    };
    connector
        .send(addr, post())
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let (err, unsent) = connector
        .send(addr, post())
        .await
        .err()
        .expect("a POST sent twice");
    assert_eq!(err.kind, ErrorKind::UpstreamFailed);
    assert!(unsent.is_none());
}

#[tokio::test]
async fn answers_that_are_not_http_are_upstream_failures() {
    for reply in [
        &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ] {
        let (addr, _) = scripted(move |mut s, _| async move {
            let mut pending = Vec::new();
            if read_head(&mut s, &mut pending).await.is_some() {
                write(&mut s, reply).await;
            }
        })
        .await;
        let connector = Connector::new(ConnectorSettings::default());
        let (err, _) = connector
            .send(addr, get(addr))
            .await
            .err()
            .expect("a broken answer was taken");
        assert_eq!(
            err.kind,
            ErrorKind::UpstreamFailed,
            "{}",
            String::from_utf8_lossy(reply)
        );
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_its_connection_goes() {
    let (addr, accepted) = scripted(|mut s, _| async move {
        let mut pending = Vec::new();
        if read_head(&mut s, &mut pending).await.is_some() {
            write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf").await;
        }
    })
    .await;
    let connector = Connector::new(ConnectorSettings::default());
    let resp = fetch(&connector, addr).await;
    let err = resp
        .into_body()
        .collect()
        .await
        .expect_err("a cut body ended well");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    let _ = connector.send(addr, get(addr)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
