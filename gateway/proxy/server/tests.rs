//! Serving client connections in process, over `tokio::io::duplex`: parking idle HTTP/1.1
//! connections, the HTTP/2 sniff, and the timeouts that must hold across a park; and the TLS
//! listener over loopback sockets: shutdown during handshakes, a burst of handshakes.

use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::shared::Shared;

fn settings() -> ServerSettings {
    ServerSettings {
        header_timeout: Duration::from_millis(1000),
        idle_timeout: Duration::from_millis(3000),
        ..ServerSettings::default()
    }
}

/// A client end of a connection served as the plain-HTTP listener serves its connections.
async fn connect(settings: &ServerSettings, drain: &Drain) -> DuplexStream {
    let plane = Shared::new(Default::default(), false).plane.clone();
    let (client, server) = tokio::io::duplex(64 * 1024);
    let info = ConnInfo::new(
        ([127, 0, 0, 1], 40000).into(),
        "http",
        HeaderValue::from_static("80"),
        settings,
    );
    let server_conf = Arc::new(http_builder(settings));
    serve_connection(plane, server_conf, drain, server, info, "http", settings).await;
    client
}

/// [`connect`], after one request and its response: an idle keep-alive connection.
async fn served_once(settings: &ServerSettings, drain: &Drain) -> DuplexStream {
    let mut client = connect(settings, drain).await;
    client.write_all(GET).await.unwrap();
    response(&mut client).await;
    client
}

/// Reads one response (head and Content-Length body) and returns its status line.
async fn response(client: &mut (impl AsyncRead + Unpin)) -> String {
    let head = read_response(client, false).await;
    head.lines().next().unwrap().to_owned()
}

/// Reads one response's head, and its Content-Length body unless it answers a HEAD request;
/// returns the head.
async fn read_response(client: &mut (impl AsyncRead + Unpin), head_request: bool) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte))
            .await
            .expect("no response within 5 s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let line = line.to_ascii_lowercase();
            let value = line.strip_prefix("content-length:")?;
            value.trim().parse().ok()
        })
        .unwrap_or(0);
    if !head_request {
        let mut body = vec![0u8; length];
        client.read_exact(&mut body).await.unwrap();
    }
    head
}

/// Waits for the server to close the connection; how long it took.
async fn closed_within(client: &mut DuplexStream, limit: Duration) -> Duration {
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at(start + limit, client.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n";

#[tokio::test]
async fn an_idle_connection_is_served_again_after_it_was_parked() {
    let (settings, drain) = (settings(), Drain::new());
    let mut client = connect(&settings, &drain).await;
    for round in 0..3 {
        client.write_all(GET).await.unwrap();
        assert_eq!(
            response(&mut client).await,
            "HTTP/1.1 404 Not Found",
            "round {round}"
        );
        // Idle well past PARK_AFTER: the next request wakes a parked connection.
        tokio::time::sleep(PARK_AFTER * 3).await;
    }
}

#[tokio::test]
async fn pipelined_requests_are_all_answered() {
    let (settings, drain) = (settings(), Drain::new());
    let mut client = connect(&settings, &drain).await;
    client.write_all(&GET.repeat(3)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(response(&mut client).await, "HTTP/1.1 404 Not Found");
    }
    tokio::time::sleep(PARK_AFTER * 3).await;
    // A request split across the wake-up read and the socket.
    client.write_all(&GET[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(&GET[5..]).await.unwrap();
    assert_eq!(response(&mut client).await, "HTTP/1.1 404 Not Found");
}

#[tokio::test]
async fn a_parked_connection_is_closed_at_the_idle_timeout() {
    let settings = ServerSettings {
        idle_timeout: Duration::from_millis(800),
        ..settings()
    };
    let drain = Drain::new();
    let mut client = served_once(&settings, &drain).await;
    let took = closed_within(&mut client, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(700), "closed after {took:?}");
}

#[tokio::test]
async fn shutdown_closes_parked_connections_at_once() {
    let (settings, drain) = (settings(), Drain::new());
    let mut client = served_once(&settings, &drain).await;
    tokio::time::sleep(PARK_AFTER * 3).await;
    let start = tokio::time::Instant::now();
    drain.drain(Duration::from_secs(5)).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "drain took {:?}",
        start.elapsed()
    );
    closed_within(&mut client, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_request_head_sent_slowly_across_parks_still_meets_the_header_timeout() {
    // The idle timeout (counted from the last response) would end it too: make it long.
    let settings = ServerSettings {
        idle_timeout: Duration::from_secs(30),
        ..settings()
    };
    let drain = Drain::new();
    let mut client = served_once(&settings, &drain).await;
    tokio::time::sleep(PARK_AFTER * 3).await;
    // Part of a head, then a byte now and then: each park would start hyper's header timeout
    // over, were a connection holding part of a request parked again.
    client.write_all(b"GET / HT").await.unwrap();
    let start = tokio::time::Instant::now();
    for byte in b"TP/1.1\r\nHost: nowhere.test\r\n" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if client.write_all(&[*byte]).await.is_err() || drain.signal.receiver_count() == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "a head trickling in held the connection for 4 s"
        );
    }
    let took = start.elapsed();
    assert!(
        drain.signal.receiver_count() == 0,
        "still open after {took:?}"
    );
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
}

#[tokio::test]
async fn an_http2_client_is_recognised_by_its_preface() {
    let (settings, drain) = (settings(), Drain::new());
    let client = connect(&settings, &drain).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://nowhere.test/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::NOT_FOUND);
    assert_eq!(resp.version(), http::Version::HTTP_2);
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_closed_at_the_header_timeout() {
    let (settings, drain) = (settings(), Drain::new());
    let mut client = connect(&settings, &drain).await;
    let took = closed_within(&mut client, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
}

#[tokio::test]
async fn requests_with_and_without_bodies_share_a_connection_in_order() {
    let (settings, drain) = (settings(), Drain::new());
    let mut client = connect(&settings, &drain).await;
    // Served without hyper, then by hyper (a body) from the POST on, in one write.
    client
        .write_all(
            b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n\
              HEAD / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n\
              POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 5\r\n\r\nhello\
              GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let get = read_response(&mut client, false).await;
    assert!(get.starts_with("HTTP/1.1 404 Not Found\r\n"), "{get}");
    let head = read_response(&mut client, true).await;
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    // HEAD keeps the length a GET would have had, and sends no body: the next response
    // follows at once.
    let length = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("content-length: ").map(str::to_owned))
    };
    assert_eq!(length(&head), length(&get));
    assert_eq!(response(&mut client).await, "HTTP/1.1 404 Not Found");
    assert_eq!(response(&mut client).await, "HTTP/1.1 404 Not Found");
    closed_within(&mut client, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_request_asking_to_close_is_answered_with_the_close() {
    let (settings, drain) = (settings(), Drain::new());
    let mut client = connect(&settings, &drain).await;
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    assert_eq!(response(&mut client).await, "HTTP/1.1 404 Not Found");
    // Parked after the body request, and served without hyper again after it (hyper would
    // close without saying so).
    tokio::time::sleep(PARK_AFTER * 3).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut client, false).await;
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    closed_within(&mut client, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_closes_a_connection_between_requests_before_it_is_parked() {
    let (settings, drain) = (settings(), Drain::new());
    let mut client = served_once(&settings, &drain).await;
    let start = tokio::time::Instant::now();
    drain.drain(Duration::from_secs(5)).await;
    assert!(
        start.elapsed() < PARK_AFTER,
        "drain took {:?}",
        start.elapsed()
    );
    closed_within(&mut client, Duration::from_secs(1)).await;
}

/// A request's phase state is held per HTTP/1.1 connection and boxed per HTTP/2 stream, and
/// written per request: it stays small (see `proxy::handle` on why the phases are not
/// `async fn`s).
#[test]
fn a_requests_phase_state_stays_small() {
    let plane = Shared::new(Default::default(), false).plane.clone();
    let info = Arc::new(ConnInfo::new(
        ([127, 0, 0, 1], 40000).into(),
        "http",
        HeaderValue::from_static("80"),
        &settings(),
    ));
    let handling = crate::proxy::handle(
        plane,
        info,
        http::Request::new(crate::proxy::request_body::ClientBody::Empty),
    );
    let size = std::mem::size_of_val(&handling);
    // 4,736 bytes now (debug build); 5,856 with the phases as `async fn`s.
    assert!(size <= 5 * 1024, "the phase state is {size} bytes");
}

#[tokio::test]
async fn accepted_connections_have_nodelay_and_tcp_keepalive_from_the_listener() {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, _) = accept(&listener).await;
    assert!(stream.nodelay().unwrap(), "Nagle's algorithm is off");
    let accepted = socket2::SockRef::from(&stream);
    assert!(accepted.keepalive().unwrap(), "SO_KEEPALIVE is on");
    assert_eq!(accepted.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
    assert_eq!(
        accepted.tcp_keepalive_interval().unwrap(),
        KEEPALIVE_INTERVAL
    );
    assert_eq!(accepted.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
}

/// The fields of an HPACK header block: how each is represented, and its name's index (0: a
/// literal name). Only what the assertions below need; strings are skipped, not decoded.
fn hpack_fields(block: &[u8]) -> Vec<(&'static str, usize)> {
    fn int(block: &[u8], at: &mut usize, prefix: u32) -> usize {
        let max = (1usize << prefix) - 1;
        let mut value = usize::from(block[*at]) & max;
        *at += 1;
        if value < max {
            return value;
        }
        let mut shift = 0;
        loop {
            let byte = block[*at];
            *at += 1;
            value += usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return value;
            }
        }
    }
    fn skip_string(block: &[u8], at: &mut usize) {
        let len = int(block, at, 7);
        *at += len;
    }
    let (mut fields, mut at) = (Vec::new(), 0);
    while at < block.len() {
        let first = block[at];
        let (kind, prefix) = match first {
            _ if first & 0x80 != 0 => ("indexed", 7),
            _ if first & 0xc0 == 0x40 => ("indexed from now on", 6),
            _ if first & 0xe0 == 0x20 => ("table size update", 5),
            _ if first & 0x10 != 0 => ("never indexed", 4),
            _ => ("not indexed", 4),
        };
        let name = int(block, &mut at, prefix);
        if matches!(
            kind,
            "indexed from now on" | "never indexed" | "not indexed"
        ) {
            if name == 0 {
                skip_string(block, &mut at);
            }
            skip_string(block, &mut at);
        }
        fields.push((kind, name));
    }
    fields
}

#[tokio::test]
async fn http2_responses_carry_a_date_that_is_never_indexed() {
    const DATE: usize = 33; // `date` in HPACK's static table
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let (settings, drain) = (settings(), Drain::new());
    let mut client = connect(&settings, &drain).await;
    // GET http://nowhere.test/ on streams 1 and 3: :method GET, :scheme http, :path /, and
    // :authority as a literal.
    let get = [&[0x82, 0x86, 0x84, 0x01, 12][..], b"nowhere.test"].concat();
    let mut hello = crate::proxy::client_io::H2_PREFACE.to_vec();
    hello.extend(frame(4, 0, 0, &[]));
    hello.extend(frame(1, 0x5, 1, &get));
    hello.extend(frame(1, 0x5, 3, &get));
    client.write_all(&hello).await.unwrap();
    let mut answered = 0;
    while answered < 2 {
        let mut head = [0u8; 9];
        client.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        client.read_exact(&mut payload).await.unwrap();
        if head[3] != 1 {
            continue;
        }
        let fields = hpack_fields(&payload);
        let dates: Vec<_> = fields.iter().filter(|(_, name)| *name == DATE).collect();
        assert_eq!(dates, [&("never indexed", DATE)], "{fields:?}");
        answered += 1;
    }
}

/// A certificate for every name: enough for handshakes in these tests.
#[derive(Debug)]
struct AnyName(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for AnyName {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// An HTTPS listener serving the self-signed fallback certificate with `settings` until the
/// returned sender fires, and a client configuration that trusts that certificate (its name is
/// `gatehouse.invalid`).
async fn https_listener(
    settings: ServerSettings,
) -> (
    SocketAddr,
    rustls::ClientConfig,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let plane = Shared::new(Default::default(), false).plane.clone();
    let cert = crate::tls::self_signed().unwrap();
    // Gatehouse's own verifying client configuration, with the certificate as an extra root.
    let client = crate::tls::upstream::client_config(true, &cert.cert[..1]);
    let tls = crate::tls::server_config(Arc::new(AnyName(cert))).unwrap();
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_https(plane, listener, tls, settings, stop_rx));
    (addr, client, stop_tx, task)
}

/// The name on the test listener's certificate.
fn listener_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("gatehouse.invalid").unwrap()
}

/// A TLS connection to the [`https_listener`] at `addr`, its handshake done.
async fn tls_connect(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client);
    connector.connect(listener_name(), tcp).await.unwrap()
}

/// A client that connects and never sends its ClientHello would hold a handshake until the
/// header timeout: shutdown neither waits for it nor leaves it open, and still drains the
/// connections it serves.
#[tokio::test]
async fn shutdown_does_not_wait_for_a_handshake_in_progress() {
    let settings = ServerSettings {
        header_timeout: Duration::from_secs(30),
        ..settings()
    };
    let (addr, client, stop, listener) = https_listener(settings).await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A connection made and served.
    let mut served = tls_connect(addr, Arc::new(client)).await;
    served
        .write_all(b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    served.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 404", "no route for app.test");

    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), listener)
        .await
        .expect("shutdown waited for the unfinished handshake")
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), silent.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the silent client's connection is closed: {closed:?}"
    );
    // The served one was drained too: it heard the shutdown, between requests, and closed.
    let mut rest = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(1), served.read_to_end(&mut rest)).await;
    assert!(
        matches!(drained, Ok(Ok(_)) | Ok(Err(_))),
        "the served connection is closed by the drain: {drained:?}"
    );
}

/// A burst of new TLS connections does not hold up requests on a connection already served.
/// With the server alone on one thread (as with `--worker-threads 1`), a request sent once 200
/// ClientHellos are waiting is answered after a handshake or two, not after the batch the
/// listener took in at once (128 before, tokio's budget for one poll of the accept loop).
/// The burst's ClientHellos are sent over plain sockets while the server is paused, so all of
/// them wait at once and the only TLS work left is the server's; a burst connection that can
/// read has had its handshake.
#[test]
fn a_burst_of_handshakes_does_not_hold_up_a_served_connection() {
    const BURST: usize = 200;
    let settings = ServerSettings {
        header_timeout: Duration::from_secs(30),
        ..settings()
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // The server's thread blocks (and the server with it) from `paused` until `resume` goes.
    let (pause, mut pause_rx) =
        tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::Receiver<()>>();
    let (paused_tx, paused) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (addr, client, stop, listener) = https_listener(settings).await;
            ready_tx.send((addr, client, stop)).unwrap();
            while let Some(resume) = pause_rx.recv().await {
                paused_tx.send(()).unwrap();
                let _ = resume.recv();
            }
            listener.await.unwrap();
        });
    });
    let (addr, client, stop) = ready_rx.recv().unwrap();
    let client = Arc::new(client);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n";
    let mut served = runtime.block_on(async {
        let mut served = tls_connect(addr, client.clone()).await;
        served.write_all(request).await.unwrap();
        assert_eq!(response(&mut served).await, "HTTP/1.1 404 Not Found");
        served
    });

    // The request must go out early in the burst to have anything to wait for: a test thread
    // descheduled for too long at that moment tries again with a new burst.
    let mut measured = None;
    for _ in 0..5 {
        let (resume, resume_rx) = std::sync::mpsc::channel();
        pause.send(resume_rx).unwrap();
        paused.recv().unwrap();
        let burst: Vec<std::net::TcpStream> = (0..BURST)
            .map(|_| {
                let mut tls =
                    rustls::ClientConnection::new(client.clone(), listener_name()).unwrap();
                let mut tcp = std::net::TcpStream::connect(addr).unwrap();
                while tls.wants_write() {
                    tls.write_tls(&mut tcp).unwrap();
                }
                tcp.set_nonblocking(true).unwrap();
                tcp
            })
            .collect();
        // Burst connections the server has answered (its flight is waiting to be read).
        let handshaken = || {
            burst
                .iter()
                .filter(|tcp| matches!(tcp.peek(&mut [0u8; 1]), Ok(n) if n > 0))
                .count()
        };

        drop(resume);
        // The server is into the burst: every ClientHello was waiting when it woke.
        while handshaken() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let sent_at = handshaken();
        let status = runtime.block_on(async {
            served.write_all(request).await.unwrap();
            response(&mut served).await
        });
        let answered_at = handshaken();
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        if sent_at < 16 {
            measured = Some((sent_at, answered_at));
            break;
        }
    }
    let (sent_at, answered_at) = measured
        .expect("five times, the server was 16 handshakes into the burst before the request");
    assert!(
        answered_at - sent_at < 32,
        "the request waited for {} of the burst's {BURST} handshakes ({sent_at} were done when \
         it was sent, {answered_at} when it was answered)",
        answered_at - sent_at
    );
    drop((served, pause));
    stop.send_replace(true);
    server.join().unwrap();
}
