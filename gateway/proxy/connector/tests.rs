//! The connector against a real origin on loopback, in process.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::*;

/// An HTTP/1.1 origin counting the connections it accepted; each answer waits `delay` and
/// says `hello`. With `close`, every response ends its connection.
async fn origin(delay: Duration, close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    origin_saying(delay, close, Bytes::from_static(b"hello")).await
}

/// [`origin`], answering `body`.
async fn origin_saying(
    delay: Duration,
    close: bool,
    body: Bytes,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
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

async fn body_text(resp: UpstreamResponse) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn sequential_requests_reuse_one_pooled_connection() {
    let (addr, accepted) = origin(Duration::ZERO, false).await;
    let connector = Connector::new(ConnectorSettings::default());
    for _ in 0..20 {
        let resp = connector
            .send(addr, get(addr))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
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
        let resp = connector
            .send(addr, get(addr))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        drop(resp);
        let resp = connector
            .send(addr, get(addr))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
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
    let resp = connector
        .send(addr, get(addr))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(body_text(resp).await, "hello");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a new connection was opened"
    );
}

#[tokio::test]
async fn a_connection_the_origin_closed_is_replaced_without_failing_the_request() {
    let (addr, accepted) = origin(Duration::ZERO, true).await;
    let connector = Connector::new(ConnectorSettings::default());
    for _ in 0..5 {
        let resp = connector
            .send(addr, get(addr))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
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
    assert_eq!(
        unsent.expect("request given back").headers()["x-marker"],
        "kept"
    );
}

/// A loopback address whose connects hang: a listener whose accept queue is full.
fn blackhole() -> (SocketAddr, Vec<socket2::Socket>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut guard = vec![listener];
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        guard.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    (addr, guard)
}

#[tokio::test]
async fn connects_in_flight_per_endpoint_are_bounded() {
    let (addr, _guard) = blackhole();
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
    for task in tasks {
        assert_eq!(task.await.unwrap(), Some(ErrorKind::ConnectFailed));
    }
    // Ten requests to an endpoint that never answers a SYN: two connects at a time were tried
    // (a third or fourth may start as the first two time out), the others waited their turn
    // and gave up at the connect timeout. Unbounded, all ten would dial.
    let dialled = connector.connects();
    assert!((2..=4).contains(&dialled), "{dialled} connects");
}
