//! Hostile clients cost nothing but themselves: HTTP/2 rapid reset, bodies that never come or
//! never end, idle connections, malformed Host headers, a slow admin client, origins that break
//! off. Raw sockets and raw HTTP/2 frames where that is what shows it.
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::yaml::{docs, ingress, svc};
use support::{Gatehouse, origin, raw_request, service_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Gatehouse serving `app.test` from Service `web` with these endpoints.
fn gateway(endpoints: &[SocketAddr], args: &[&str]) -> Gatehouse {
    let ing = ingress("web").prefix("app.test", "/", svc("web", 80));
    let yaml = docs(&[service_yaml("default", "web", endpoints), ing.yaml()]);
    Gatehouse::start_with(&[("main.yaml", &yaml)], args)
}

// === HTTP/2 rapid reset ===

/// A raw HTTP/2 (h2c prior knowledge) connection to Gatehouse.
async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn h2_get() -> http::Request<()> {
    h2_get_path("/")
}

/// Sends `total` requests in batches of `batch` streams on HTTP/2 connections; with `reset`,
/// each stream is cancelled (RST_STREAM) right after its HEADERS instead of awaited. Returns how
/// many connections the client needed (a GOAWAY makes it open another).
async fn h2_batches(addr: SocketAddr, total: usize, batch: usize, reset: bool) -> usize {
    let mut connections = 1;
    let mut send = h2_connect(addr).await;
    let mut sent = 0;
    while sent < total {
        let mut streams = Vec::new();
        for _ in 0..batch.min(total - sent) {
            let ready = match send.clone().ready().await {
                Ok(ready) => ready,
                Err(_) => {
                    // GOAWAY or closed: a new connection.
                    connections += 1;
                    send = h2_connect(addr).await;
                    send.clone().ready().await.expect("new connection ready")
                }
            };
            let mut ready = ready;
            match ready.send_request(h2_get(), true) {
                Ok((resp, stream)) => streams.push((resp, stream)),
                Err(_) => {
                    connections += 1;
                    send = h2_connect(addr).await;
                }
            }
        }
        sent += streams.len();
        if reset {
            for (_, stream) in &mut streams {
                stream.send_reset(h2::Reason::CANCEL);
            }
        } else {
            for (resp, _) in streams {
                let resp = resp.await.expect("response");
                assert_eq!(resp.status(), 200);
                read_releasing(&mut resp.into_body(), 0, Duration::ZERO).await;
            }
        }
    }
    connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_costs_the_backend_no_more_connections_than_ordinary_requests() {
    const TOTAL: usize = 10_000;
    // Gatehouse's stream limit (--http2-max-streams): either client may have this many streams
    // at once, and the ordinary one uses them all.
    const BATCH: usize = 256;
    // The origin takes a moment per answer: reset streams are in flight upstream, and a batch
    // of ordinary requests is all sent before its first answer frees a connection.
    let (ordinary_origin, ordinary_seen) = origin::counting(Duration::from_millis(20)).await;
    let (reset_origin, reset_seen) = origin::counting(Duration::from_millis(20)).await;
    let ordinary = gateway(&[ordinary_origin], &["--access-log=false"]);
    let resets = gateway(&[reset_origin], &["--access-log=false"]);

    h2_batches(ordinary.http, TOTAL, BATCH, false).await;
    let client_connections = h2_batches(resets.http, TOTAL, BATCH, true).await;
    // Let abandoned exchanges finish.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (ordinary_conns, reset_conns) = (ordinary_seen.connections(), reset_seen.connections());
    eprintln!(
        "{TOTAL} requests in batches of {BATCH}: {ordinary_conns} upstream connections; \
         {TOTAL} reset streams: {reset_conns} upstream connections ({} requests reached the \
         origin), client needed {client_connections} connections",
        reset_seen.requests()
    );
    assert_eq!(ordinary_seen.requests(), TOTAL);
    assert!(
        reset_conns <= ordinary_conns,
        "resets opened {reset_conns} upstream connections, ordinary requests {ordinary_conns}"
    );
    // The resetting client was told to go: its new streams refused, then GOAWAY once its work
    // upstream was over (it may have sent all it had by then).
    let told = resets.metric(
        "gatehouse_proxy_errors_total",
        &["reason=\"too_many_resets\""],
    );
    assert!(
        told >= 1.0,
        "the client was never told to go after {TOTAL} resets"
    );
}

// === request bodies ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_the_limit_gets_413_without_reaching_the_origin() {
    let (addr, seen) = origin::counting(Duration::ZERO).await;
    let gh = gateway(&[addr], &["--max-request-body=1024"]);
    let request = b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n";
    let resp = raw_request(gh.http, request).await.expect("response");
    assert_eq!(resp.status, 413);
    assert_eq!(resp.text(), "request body too large\n");
    assert_eq!(seen.requests(), 0);
    assert_eq!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"body_too_large\""]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_body_over_the_limit_gets_413() {
    let gh = gateway(&[origin::echo("a").await], &["--max-request-body=65536"]);
    let (tx, body) = origin::channel_body();
    tokio::spawn(async move {
        for _ in 0..64 {
            if tx.send(Bytes::from(vec![b'x'; 8192])).await.is_err() {
                break;
            }
        }
    });
    let resp = gh
        .client_for(&["app.test"])
        .post("http://app.test/upload")
        .body(reqwest::Body::wrap(body))
        .send()
        .await;
    // The limit breaks while the body streams: the client gets 413, or (if it was still
    // sending) sees its connection closed. Either way the origin never got the whole body.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
    }
    assert_eq!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"body_too_large\""]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_is_cut_off_at_the_body_timeout() {
    let (addr, _started) = origin::slow("slow", Duration::from_secs(30)).await;
    let gh = gateway(&[addr], &["--client-body-timeout=1s"]);
    let mut stream = tokio::net::TcpStream::connect(gh.http).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000\r\n\r\nhello")
        .await
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"client_body_timeout\""]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_retried_on_the_next_endpoint_when_a_connect_fails() {
    let echo = origin::echo("a").await;
    let gh = gateway(&[origin::refused_addr(), echo], &[]);
    let client = gh.client_for(&["app.test"]);
    for _ in 0..4 {
        let resp = client
            .post("http://app.test/")
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "a POST failed on the refused endpoint");
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echo["body_len"], 7);
    }
    // The refused connect is counted, and so is the retry on the next endpoint.
    assert!(gh.metric("gatehouse_upstream_connect_errors_total", &[]) >= 1.0);
    assert!(gh.metric("gatehouse_upstream_retries_total", &[]) >= 1.0);
}

// === connections ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connection_is_closed_after_the_idle_timeout() {
    let gh = gateway(&[origin::echo("a").await], &["--client-idle-timeout=1s"]);
    let tcp = tokio::net::TcpStream::connect(gh.http).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    // Held: a client with no handle left closes the connection itself.
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(h2_get(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    let start = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(
        ended.is_ok(),
        "HTTP/2 connection still open after 10 s idle"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_or_none_get_400() {
    let gh = gateway(&[origin::echo("a").await], &[]);
    let two = b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\nConnection: close\r\n\r\n";
    let resp = raw_request(gh.http, two).await.unwrap();
    assert_eq!(resp.status, 400);
    let none = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    let resp = raw_request(gh.http, none).await.unwrap();
    assert_eq!(resp.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_not_passed_to_the_origin() {
    let gh = gateway(&[origin::echo("a").await], &[]);
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    let resp = raw_request(gh.http, request).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.head);
    let echo: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert!(echo["headers"].get("upgrade").is_none(), "{echo}");
    assert!(echo["headers"].get("http2-settings").is_none(), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_closes_a_client_that_trickles_its_headers() {
    let gh = gateway(&[origin::echo("a").await], &["--client-header-timeout=1s"]);
    let mut stream = tokio::net::TcpStream::connect(gh.admin).await.unwrap();
    let start = Instant::now();
    let trickle = async {
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " {
            stream.write_all(&[*byte]).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        std::io::Result::Ok(())
    };
    let result = tokio::time::timeout(Duration::from_secs(15), trickle).await;
    assert!(
        matches!(result, Ok(Err(_))),
        "the admin listener still accepted header bytes after {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
}

// === origins that break off ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_off_mid_body_is_counted_and_logged() {
    // An origin that promises 100000 bytes, sends 10, and closes.
    let addr =
        origin::raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789").await;
    let gh = gateway(&[addr], &[]);
    let resp = raw_request(
        gh.http,
        b"GET /cut HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    // The client sees the status and the ten bytes, then the connection ends early.
    if let Ok(resp) = resp {
        assert!(resp.body.len() < 100_000);
    }
    let line = gh.wait_log(&["path=/cut", "upstream_body_cut"], Duration::from_secs(5));
    assert!(line.contains("bytes=10"), "{line}");
    assert_eq!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"upstream_body_cut\""]
        ),
        1.0
    );
}

// === a client that stops reading ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_response_is_closed_at_the_send_timeout() {
    // 16 MiB: more than loopback's socket buffers hold, so Gatehouse's writes must wait.
    let big = "x".repeat(16 << 20);
    let gh = gateway(
        &[origin::fixed(200, &[], &big).await],
        &["--client-send-timeout=1s"],
    );
    // A client with a small receive buffer that asks and then reads nothing.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&gh.http.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let asked = Instant::now();
    let line = gh.wait_log(
        &["client took nothing of its response for the send timeout"],
        Duration::from_secs(15),
    );
    assert!(line.contains("127.0.0.1"), "names the client: {line}");
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "closed before the send timeout: {:?}",
        asked.elapsed()
    );
    assert_eq!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"client_send_timeout\""]
        ),
        1.0
    );
    // What the client reads now is what was sent before the close, then the end: never the
    // whole response.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection is still open");
    assert!(got < big.len(), "the whole response arrived: {got} bytes");
    // Other clients are served meanwhile and after.
    let resp = raw_request(
        gh.http,
        b"GET /small HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(resp.body.len(), big.len());
}

// === HTTP/2 clients that keep a window shut ===

/// An origin answering `/big` with 1 MiB, `/4k` with 4 KiB, `/slow` with "o" at once and "k"
/// 2 s later, and anything else with 64 KiB.
async fn sized_origin() -> SocketAddr {
    origin::serve(|req: http::Request<hyper::body::Incoming>| async move {
        let body = match req.uri().path() {
            "/big" => vec![b'x'; 1 << 20],
            "/4k" => vec![b'x'; 4096],
            "/slow" => {
                let (tx, body) = origin::channel_body();
                tokio::spawn(async move {
                    let _ = tx.send(Bytes::from_static(b"o")).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let _ = tx.send(Bytes::from_static(b"k")).await;
                });
                return http::Response::new(body);
            }
            _ => vec![b'x'; 64 << 10],
        };
        http::Response::new(origin::full(body))
    })
    .await
}

/// An HTTP/2 connection whose streams get `stream_window` bytes of flow-control window (the
/// connection 4 MiB); the connection's task is returned to see when it ends.
async fn h2_with_window(
    addr: SocketAddr,
    stream_window: u32,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(stream_window)
        .initial_connection_window_size(4 << 20)
        .handshake(tcp)
        .await
        .unwrap();
    (send, tokio::spawn(conn))
}

fn h2_get_path(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://app.test{path}"))
        .body(())
        .unwrap()
}

/// Reads a body to its end, giving the window back as it goes: after `pause` each time a
/// `window`'s worth came (a slow reader that keeps reading); how many bytes came.
async fn read_releasing(body: &mut h2::RecvStream, window: usize, pause: Duration) -> usize {
    let (mut got, mut unreleased) = (0, 0);
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        got += chunk.len();
        unreleased += chunk.len();
        if unreleased >= window {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            body.flow_control().release_capacity(unreleased).unwrap();
            unreleased = 0;
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_whose_client_keeps_its_window_shut_is_reset_at_the_send_timeout() {
    let gh = gateway(&[sized_origin().await], &["--client-send-timeout=1s"]);
    let (send, conn) = h2_with_window(gh.http, 16 << 10).await;
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(h2_get_path("/big"), true).unwrap();
    let asked = Instant::now();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    // The client takes what its window allows and never gives the window back.
    let mut body = resp.into_body();
    let mut got = 0;
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match body.data().await {
                Some(Ok(chunk)) => got += chunk.len(),
                Some(Err(err)) => break Some(err),
                None => break None,
            }
        }
    })
    .await
    .expect("the stream is still open after 15 s");
    let err = ended.expect("the stream ended as if complete");
    assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err}");
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "reset before the send timeout: {:?}",
        asked.elapsed()
    );
    assert_eq!(got, 16 << 10, "more than the window came");
    let line = gh.wait_log(
        &["on an HTTP/2 stream for the send timeout; stream reset"],
        Duration::from_secs(5),
    );
    assert!(line.contains("127.0.0.1"), "names the client: {line}");
    assert_eq!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"client_send_timeout\""]
        ),
        1.0
    );
    // The connection itself is kept: a stream whose window is given back gets all of it.
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(h2_get_path("/big"), true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    assert_eq!(
        read_releasing(&mut body, 16 << 10, Duration::ZERO).await,
        1 << 20
    );
    assert!(!conn.is_finished(), "the connection was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_waiting_on_a_slow_backend_or_read_slowly_are_not_reset() {
    let gh = gateway(&[sized_origin().await], &["--client-send-timeout=1s"]);
    let (send, _conn) = h2_with_window(gh.http, 16 << 10).await;
    let mut send = send.ready().await.unwrap();
    // The backend takes twice the send timeout in the middle of its body: not the client's
    // doing.
    let started = Instant::now();
    let (resp, _) = send.send_request(h2_get_path("/slow"), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(read_releasing(&mut body, 16 << 10, Duration::ZERO).await, 2);
    assert!(started.elapsed() >= Duration::from_secs(2));
    // A client that gives its window back 0.4 s after each window's worth: four waits, 1.6 s in
    // all, each shorter than the send timeout.
    let started = Instant::now();
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(h2_get_path("/64k"), true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    assert_eq!(
        read_releasing(&mut body, 16 << 10, Duration::from_millis(400)).await,
        64 << 10
    );
    assert!(started.elapsed() >= Duration::from_millis(1200));
    assert_eq!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"client_send_timeout\""]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_close_held_by_a_shut_window_ends_at_the_send_timeout() {
    let gh = gateway(
        &[sized_origin().await],
        &["--client-send-timeout=1s", "--client-idle-timeout=1s"],
    );
    // The whole 4 KiB response is read from the backend at once; 1 KiB of it goes, the rest
    // waits for a window the client never gives back, and the idle timeout's close waits on it
    // until the send timeout resets the stream.
    let (send, conn) = h2_with_window(gh.http, 1024).await;
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(h2_get_path("/4k"), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let _body = resp.into_body();
    let ended = tokio::time::timeout(Duration::from_secs(15), conn).await;
    assert!(ended.is_ok(), "the connection is still open after 15 s");
    gh.wait_log(
        &["client took nothing of its response on an HTTP/2 stream for the send timeout"],
        Duration::from_secs(5),
    );
}
