//! Listeners: accept connections and serve HTTP/1.1 and HTTP/2 (h2c prior knowledge) on them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ConnInfo;
use crate::shared::DataPlane;

/// Limits of the client side.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Port of the `Location` of HTTP → HTTPS redirects: the port clients reach the HTTPS
    /// listener on, which behind a Service or hostPort is not the one it binds.
    pub https_redirect_port: u16,
    /// Limits of request bodies.
    pub body_limits: crate::proxy::request_body::BodyLimits,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
    /// Peers whose X-Forwarded-For is believed (`--trusted-proxies`).
    pub trusted_proxies: std::sync::Arc<crate::snapshot::policy::CidrSet>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            https_redirect_port: 443,
            body_limits: Default::default(),
            idle_timeout: Duration::from_secs(60),
            http2_max_streams: 256,
            trusted_proxies: Default::default(),
        }
    }
}

/// Builds the connection server once per listener.
pub fn http_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(settings.http2_max_streams);
    builder
}

/// Tells open connections to finish (HTTP/1.1: after the request in flight; HTTP/2: GOAWAY),
/// and waits until they have.
pub struct Drain {
    signal: watch::Sender<bool>,
}

// === impl Drain ===

impl Drain {
    pub fn new() -> Self {
        Self {
            signal: watch::Sender::new(false),
        }
    }

    fn watcher(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    /// Asks every connection to finish and waits for them, at most `timeout`.
    pub async fn drain(self, timeout: Duration) {
        self.signal.send_replace(true);
        // Every connection task holds a receiver: all dropped means all connections ended.
        if tokio::time::timeout(timeout, self.signal.closed())
            .await
            .is_err()
        {
            tracing::warn!("drain timed out; closing remaining connections");
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves one accepted connection (plain or TLS) until it closes or shutdown drains it. A
/// connection that has not sent a first request within `header_timeout` is closed; one whose
/// client abandons too many requests is closed gracefully (GOAWAY).
pub async fn serve_connection<IO>(
    plane: Arc<DataPlane>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: &Drain,
    io: IO,
    info: ConnInfo,
    listener: &'static str,
    settings: &ServerSettings,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let gauge = plane
        .metrics
        .active_connections
        .with_label_values(&[listener]);
    let requested = Arc::new(AtomicBool::new(false));
    let service = service_fn({
        let (requested, info, plane) = (requested.clone(), info.clone(), plane.clone());
        move |req| {
            requested.store(true, Ordering::Relaxed);
            let (plane, info) = (plane.clone(), info.clone());
            // Boxed: hyper keeps room for one in-flight request future per connection, so an
            // unboxed (large) future would be paid for by every idle connection.
            Box::pin(async move { Ok::<_, Infallible>(super::handle(plane, info, req).await) })
        }
    });
    let (header_timeout, idle_timeout) = (settings.header_timeout, settings.idle_timeout);
    let mut stop = drain.watcher();
    tokio::spawn(async move {
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let mut conn = std::pin::pin!(conn);
        // hyper's header_read_timeout only starts once the connection is known to be HTTP/1:
        // one that sends nothing (or part of the HTTP/2 preface) would otherwise be held for ever.
        let no_first_request = async {
            tokio::time::sleep(header_timeout).await;
            if requested.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        let mut no_first_request = std::pin::pin!(no_first_request);
        let mut closing = false;
        let idle = tokio::time::sleep(idle_timeout);
        let mut idle = std::pin::pin!(idle);
        gauge.inc();
        loop {
            tokio::select! {
                () = &mut idle, if !closing => match info.idle_deadline(idle_timeout) {
                    Some(deadline) if deadline <= tokio::time::Instant::now() => {
                        tracing::debug!("connection idle past the idle timeout; closing");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Some(deadline) => idle.as_mut().reset(deadline),
                    None => idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout),
                },
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    break;
                }
                () = &mut no_first_request => {
                    tracing::debug!("no request within the header timeout; connection closed");
                    break;
                }
                _ = stop.wait_for(|stop| *stop), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = info.too_many_resets.notified(), if !closing => {
                    closing = true;
                    tracing::info!(client = %info.remote, "client abandons requests faster than it lets them finish; closing its connection");
                    plane.metrics.proxy_errors.with_label_values(&["too_many_resets"]).inc();
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        gauge.dec();
        drop(stop);
    });
}

/// Accepts plain-HTTP connections until `shutdown` fires, then drains them.
pub async fn run_http(
    plane: Arc<DataPlane>,
    listener: TcpListener,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder(&settings));
    let drain = Drain::new();
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let port = HeaderValue::from(port);
    loop {
        tokio::select! {
            (stream, remote) = accept(&listener) => {
                let info = ConnInfo::new(remote, "http", port.clone(), &settings);
                serve_connection(plane.clone(), builder.clone(), &drain, stream, info, "http", &settings).await;
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    drain.drain(settings.drain_timeout).await;
}

/// The next client connection, with Nagle's algorithm off (responses go out as written).
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                return (stream, remote);
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts TLS connections until `shutdown` fires, then drains them. Handshakes run in tasks
/// of their own, so a slow client never holds up the accept loop; finished ones come back here
/// to be served and drained like plain connections.
pub async fn run_https(
    plane: Arc<DataPlane>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder(&settings));
    let drain = Drain::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let port = HeaderValue::from(port);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(256);
    loop {
        tokio::select! {
            (stream, remote) = accept(&listener) => {
                let info = ConnInfo::new(remote, "https", port.clone(), &settings);
                let (plane, acceptor, done_tx) = (plane.clone(), acceptor.clone(), done_tx.clone());
                let timeout = settings.header_timeout;
                tokio::spawn(async move {
                    if let Some(tls) = tls_handshake(&plane, &acceptor, stream, timeout).await {
                        let _ = done_tx.send((tls, info)).await;
                    }
                });
            }
            Some((tls, info)) = done_rx.recv() => {
                serve_connection(plane.clone(), builder.clone(), &drain, tls, info, "https", &settings).await;
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    drain.drain(settings.drain_timeout).await;
}

/// Completes a TLS handshake, counting it. An ACME TLS-ALPN-01 validation ends right after
/// its handshake: that connection never carries HTTP.
async fn tls_handshake(
    plane: &DataPlane,
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use crate::metrics::HandshakeResult;
    let mut tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "TLS handshake failed");
            plane.metrics.tls_handshake(HandshakeResult::Error);
            return None;
        }
        Err(_) => {
            plane.metrics.tls_handshake(HandshakeResult::Timeout);
            return None;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
        plane.metrics.tls_handshake(HandshakeResult::AcmeChallenge);
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        return None;
    }
    plane.metrics.tls_handshake(HandshakeResult::Ok);
    Some(tls)
}

/// Binds a listener with SO_REUSEADDR, so a restart can bind while old sockets linger.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
