//! Listeners: accept connections and serve HTTP/1.1 and HTTP/2 (h2c prior knowledge) on them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ConnInfo;
use crate::shared::Shared;

/// Limits of the client side.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
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
        .max_concurrent_streams(256);
    builder
}

/// Serves one accepted connection (plain or TLS) until it closes or shutdown drains it.
pub async fn serve_connection<IO>(
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: &GracefulShutdown,
    io: IO,
    info: ConnInfo,
    listener: &'static str,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let gauge = shared
        .metrics
        .active_connections
        .with_label_values(&[listener]);
    let service = service_fn(move |req| {
        let (shared, info) = (shared.clone(), info.clone());
        async move { Ok::<_, Infallible>(super::handle(shared, info, req).await) }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        gauge.inc();
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
        gauge.dec();
    });
}

/// Accepts plain-HTTP connections until `shutdown` fires, then drains them.
pub async fn run_http(
    shared: Arc<Shared>,
    listener: TcpListener,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder(&settings));
    let graceful = GracefulShutdown::new();
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let port = HeaderValue::from(port);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(x) => x,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let info = ConnInfo { remote, scheme: "http", port: port.clone() };
                serve_connection(shared.clone(), builder.clone(), &graceful, stream, info, "http").await;
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    drain(graceful, settings.drain_timeout).await;
}

/// Waits for in-flight requests to finish, at most `timeout`.
pub async fn drain(graceful: GracefulShutdown, timeout: Duration) {
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
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
