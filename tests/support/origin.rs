//! Real origin servers (hyper) for tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::mpsc;

/// Error type of origin response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body an origin may stream.
pub type Body = BoxBody<Bytes, BoxError>;

/// A whole response body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// A body fed chunk by chunk through the returned sender; it ends when the sender is dropped.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = receiver_stream(rx).map(|chunk| Ok::<_, BoxError>(Frame::data(chunk)));
    (tx, BodyExt::boxed(StreamBody::new(stream)))
}

fn receiver_stream(mut rx: mpsc::Receiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The JSON an echo origin answers with:
/// `{"origin": NAME, "method", "path" (with query), "version", "headers": {...}, "body_len"}`.
pub async fn echo_json(name: &str, req: Request<Incoming>) -> serde_json::Value {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    serde_json::json!({
        "origin": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
    })
}

fn json_response(value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(full(value.to_string()))
        .expect("response")
}

/// Starts an origin on a free port that answers every request with [`echo_json`].
pub async fn echo(name: &str) -> SocketAddr {
    let name: Arc<str> = name.into();
    serve(move |req: Request<Incoming>| {
        let name = name.clone();
        async move { json_response(&echo_json(&name, req).await) }
    })
    .await
}

/// Like [`echo`], but waits `delay` before answering; `started` gets a message as each request
/// arrives (so a test knows the request is in flight).
pub async fn slow(name: &str, delay: Duration) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let name: Arc<str> = name.into();
    let (started_tx, started) = mpsc::unbounded_channel();
    let addr = serve(move |req: Request<Incoming>| {
        let (name, started_tx) = (name.clone(), started_tx.clone());
        async move {
            let _ = started_tx.send(());
            tokio::time::sleep(delay).await;
            json_response(&echo_json(&name, req).await)
        }
    })
    .await;
    (addr, started)
}

/// An origin that answers with a fixed status, extra headers and body.
pub async fn fixed(status: u16, headers: &[(&str, &str)], body: &str) -> SocketAddr {
    let headers: Arc<Vec<(String, String)>> = Arc::new(
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let body = Bytes::from(body.to_owned());
    serve(move |_req: Request<Incoming>| {
        let (headers, body) = (headers.clone(), body.clone());
        async move {
            let mut resp = Response::builder().status(status);
            for (k, v) in headers.iter() {
                resp = resp.header(k, v);
            }
            resp.body(full(body)).expect("response")
        }
    })
    .await
}

/// A WebSocket origin (hyper upgrade + tungstenite): answers each text message `m` with
/// `NAME: m` and each binary message with the same bytes; ignores plain HTTP requests with 400.
pub async fn websocket_echo(name: &str) -> SocketAddr {
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let name: Arc<str> = name.into();
    serve(move |mut req: Request<Incoming>| {
        let name = name.clone();
        async move {
            let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                return Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body(full("websocket only"))
                    .expect("response");
            };
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("{name}: {}", t.as_str())),
                        Message::Binary(b) => Message::Binary(b),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                .body(full(Bytes::new()))
                .expect("response")
        }
    })
    .await
}

/// A loopback address nothing listens on: connecting is refused at once.
pub fn refused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// What a [`counting`] origin saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: std::sync::atomic::AtomicUsize,
    pub requests: std::sync::atomic::AtomicUsize,
    /// Connections the client closed (or that failed).
    pub closed: std::sync::atomic::AtomicUsize,
}

impl Seen {
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// An HTTP/1.1 origin that counts the connections it accepts and the requests it gets, and
/// answers `ok` after `delay`.
pub async fn counting(delay: Duration) -> (SocketAddr, Arc<Seen>) {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let counted = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counted.connections.fetch_add(1, Ordering::SeqCst);
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = service_fn({
                    let counted = counted.clone();
                    move |_req: Request<Incoming>| {
                        counted.requests.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(Response::new(full("ok")))
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                counted.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

/// Starts a server on a free loopback port with the given handler (HTTP/1.1 and h2c, upgrades).
pub async fn serve<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An origin that answers 200 with `first` as the first chunk of a streamed body, then sends
/// nothing more for `stall` (a backend stuck mid-body).
pub async fn stalling_body(first: &'static str, stall: Duration) -> SocketAddr {
    serve(move |_req: Request<Incoming>| async move {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(first.as_bytes())).await;
            tokio::time::sleep(stall).await;
            drop(tx);
        });
        Response::new(body)
    })
    .await
}

/// A raw origin that reads request heads and never the bodies (a backend that stopped taking
/// the request); `heads` gets a message per head read. Connections are held for a minute.
pub async fn not_reading_bodies() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = listener.local_addr().expect("addr");
    let (tx, heads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                let _ = tx.send(());
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(stream);
            });
        }
    });
    (addr, heads)
}

/// Reads from `stream` until a whole request head has come; `false` if the client closed or
/// failed first.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A raw origin that answers the first request on each connection with `answer`, byte for byte,
/// and closes: for answers hyper would not write (an HTTP/1.0 status line, a body cut short).
pub async fn raw_answer(answer: &'static [u8]) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await {
                    let _ = stream.write_all(answer).await;
                }
            });
        }
    });
    addr
}
