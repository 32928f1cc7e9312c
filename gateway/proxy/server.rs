//! Listeners: accept connections and serve HTTP/1.1 and HTTP/2 (h2c prior knowledge) on them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use http::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::client_io::{ClientIo, ClientStream, Quiet};
use super::request_body::ClientBody;
use super::task_wakes::Wakes;
use super::{ConnInfo, client_h1, client_h2};
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
    /// How long a client may take none of a response being written to it before its connection
    /// is closed (nginx's `send_timeout`).
    pub send_timeout: Duration,
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
            send_timeout: Duration::from_secs(60),
            http2_max_streams: 256,
            trusted_proxies: Default::default(),
        }
    }
}

/// hyper's HTTP/1.1 server, configured once per listener, and the limits of HTTP/2
/// connections ([`client_h2`]).
pub struct HttpServer {
    http1: http1::Builder,
    http2: client_h2::Limits,
}

/// Builds the connection server once per listener.
pub fn http_builder(settings: &ServerSettings) -> HttpServer {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192));
    HttpServer {
        http1,
        http2: client_h2::Limits {
            max_streams: settings.http2_max_streams,
            max_header_list: settings.max_header_bytes as u32,
        },
    }
}

/// An HTTP/1.1 connection idle (and quiet, see [`super::client_io`]) this long is parked: its
/// server's state (read and write buffers, room for a request in flight) is dropped until the
/// client sends again.
/// Not at once: under keep-alive load every connection is idle between two requests, and
/// rebuilding the state each time would cost more CPU than the memory is worth. Short enough
/// that a burst of new connections has few unparked at any moment (their buffers are what the
/// process keeps afterwards).
const PARK_AFTER: Duration = Duration::from_millis(50);
/// How soon a connection found busy is checked for idleness again.
const BUSY_RECHECK: Duration = Duration::from_secs(1);

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
/// client abandons too many requests closes itself (client_h2) and is logged and counted here;
/// an idle HTTP/1.1 one is parked after [`PARK_AFTER`].
pub async fn serve_connection<IO>(
    plane: Arc<DataPlane>,
    server: Arc<HttpServer>,
    drain: &Drain,
    io: IO,
    info: ConnInfo,
    listener: &'static str,
    settings: &ServerSettings,
) where
    IO: ClientStream,
{
    let serving = connection(plane, server, drain.watcher(), io, info, listener, settings);
    tokio::spawn(serving);
}

/// The task serving one connection, spawned by the accept loop (plain) or by the connection's
/// handshake task (TLS). `stop` is the drain's receiver the connection holds until it ends.
fn connection<IO>(
    plane: Arc<DataPlane>,
    server: Arc<HttpServer>,
    stop: watch::Receiver<bool>,
    io: IO,
    info: ConnInfo,
    listener: &'static str,
    settings: &ServerSettings,
) -> impl Future<Output = ()> + Send + 'static
where
    IO: ClientStream,
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
            // The phases' state is built in a spare box: see `spare`.
            let req = req.map(ClientBody::Stream);
            let handling = super::spare::spared(move || super::handle(plane, info, req));
            futures_util::FutureExt::map(handling, infallible)
        }
    });
    let mut watch = Watch {
        plane,
        info,
        stop,
        requested,
        header_timeout: settings.header_timeout,
        idle_timeout: settings.idle_timeout,
        send_timeout: settings.send_timeout,
        max_header_bytes: settings.max_header_bytes,
    };
    async move {
        gauge.inc();
        serve_client(&server, ClientIo::new(io), service, &mut watch).await;
        gauge.dec();
    }
}

/// hyper's services answer with a `Result`; the phases always answer.
fn infallible(
    resp: http::Response<crate::body::BoxBody>,
) -> Result<http::Response<crate::body::BoxBody>, Infallible> {
    Ok(resp)
}

/// Serves a client: HTTP/2 when it starts with the preface, HTTP/1.1 otherwise, parking the
/// HTTP/1.1 connection whenever it has been idle for [`PARK_AFTER`].
// Not an `async fn`: see `proxy::handle`.
#[allow(clippy::manual_async_fn)]
fn serve_client<IO, S>(
    server: &HttpServer,
    mut io: ClientIo<IO>,
    mut service: S,
    watch: &mut Watch,
) -> impl Future<Output = ()>
where
    IO: ClientStream,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::body::BoxBody>
        + Clone
        + Send
        + 'static,
    S::Future: Send + Unpin + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    async move {
        let sniffed = tokio::select! {
            sniffed = tokio::time::timeout(watch.header_timeout, io.sniff_http2()) => sniffed,
            _ = watch.stop.wait_for(|stop| *stop) => return,
        };
        let is_h2 = match sniffed {
            Ok(Ok(Some(is_h2))) => is_h2,
            Ok(Ok(None)) => return,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "connection failed before its first request");
                return;
            }
            Err(_) => {
                tracing::debug!("no request within the header timeout; connection closed");
                return;
            }
        };
        if is_h2 {
            let quiet = io.quiet();
            let (plane, info, requested) = (
                watch.plane.clone(),
                watch.info.clone(),
                watch.requested.clone(),
            );
            let handler = move |req: http::Request<Option<client_h2::RequestBody>>| {
                requested.store(true, Ordering::Relaxed);
                let req = req.map(|body| body.map_or(ClientBody::Empty, ClientBody::H2));
                let (plane, info) = (plane.clone(), info.clone());
                // The phases' state is built in a spare box: see `spare`.
                super::spare::spared(move || super::handle(plane, info, req))
            };
            // Boxed, like HTTP/1.1's below: the task's future is as big as its biggest state.
            let mut conn = Box::pin(client_h2::Connection::new(
                io,
                watch.info.clone(),
                server.http2,
                handler,
            ));
            watch
                .run(
                    conn.as_mut(),
                    |conn| conn.get_mut().graceful_shutdown(),
                    &quiet,
                    false,
                )
                .await;
            return;
        }
        // HTTP/1.x writes a file's bytes as they are: the static-file phase may send them with
        // sendfile (both servers below write vectored, which this relies on).
        if let Some(files) = io.file_regions() {
            watch.info.use_file_regions(files);
        }
        // Requests without a body are served by client_h1; hyper takes any other, and the
        // connection from there until it is next parked.
        let mut to_hyper = false;
        // Bytes read by client_h1 and not yet used (a pipelined request, part of a head).
        let mut buf = bytes::BytesMut::new();
        // Parking is given up on a connection that was parked holding part of a request: each new
        // server state would start its header timeout over, and a client sending a head byte by
        // byte could then take for ever.
        let mut may_park = true;
        loop {
            let quiet = io.quiet();
            if !to_hyper {
                let closing = AtomicBool::new(false);
                let (plane, info, requested) = (
                    watch.plane.clone(),
                    watch.info.clone(),
                    watch.requested.clone(),
                );
                let exchange = client_h1::Exchange {
                    plane: &plane,
                    info: &info,
                    requested: &requested,
                    closing: &closing,
                    max_header_bytes: watch.max_header_bytes,
                    header_timeout: watch.header_timeout,
                };
                let served = {
                    let serving = client_h1::serve(&mut io, &mut buf, &exchange);
                    // Boxed, so a parked task keeps only what waiting takes.
                    Box::pin(watch.run(
                        Box::pin(serving),
                        |_| closing.store(true, Ordering::Relaxed),
                        &quiet,
                        may_park,
                    ))
                    .await
                };
                match served {
                    Served::Ended(Some(client_h1::Next::Hyper)) => to_hyper = true,
                    Served::Ended(_) => return,
                    Served::Idle if buf.is_empty() => {
                        // Its buffer goes while it is parked.
                        buf = bytes::BytesMut::new();
                        if !watch.wait_parked(&mut io).await {
                            return;
                        }
                    }
                    Served::Idle => may_park = false,
                }
                continue;
            }
            // Boxed, so a parked connection's task does not keep room for it.
            let mut conn = Box::new(
                server
                    .http1
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades(),
            );
            // Boxed too (its timers and select state): a parked task keeps only what waiting takes.
            let served = Box::pin(watch.run(
                std::pin::Pin::new(&mut *conn),
                |conn| conn.graceful_shutdown(),
                &quiet,
                may_park,
            ));
            match served.await {
                Served::Ended(_) => return,
                Served::Idle => {}
            }
            let Some(parts) = conn.into_parts() else {
                return;
            };
            (io, service) = (parts.io.into_inner(), parts.service);
            to_hyper = false;
            if !parts.read_buf.is_empty() {
                io.unread(&parts.read_buf);
                may_park = false;
                continue;
            }
            drop(parts.read_buf);
            if !watch.wait_parked(&mut io).await {
                return;
            }
        }
    }
}

/// How [`Watch::run`] ended.
enum Served<T> {
    /// The connection is over, or its server is: what it returned, unless it failed.
    Ended(Option<T>),
    /// Idle and quiet past [`PARK_AFTER`]: the server's state may be dropped.
    Idle,
}

/// What [`Watch::run`] watches for besides the connection.
enum Signal {
    NoFirstRequest,
    Stop,
    TooManyResets,
    IdleTimer,
}

/// What watches a connection while its server (client_h1 or hyper) serves it: shutdown,
/// timeouts, rapid resets.
struct Watch {
    plane: Arc<DataPlane>,
    info: Arc<ConnInfo>,
    stop: watch::Receiver<bool>,
    requested: Arc<AtomicBool>,
    header_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    max_header_bytes: usize,
}

impl Watch {
    /// Drives `conn` until it ends, or, with `may_park`, until it is idle and quiet past
    /// [`PARK_AFTER`]. A client that takes nothing written to it for the send timeout loses the
    /// connection at once (a graceful close would wait for those writes); an HTTP/2 stream whose
    /// client takes none of its response for that long is reset.
    async fn run<C, T, E>(
        &mut self,
        mut conn: std::pin::Pin<impl std::ops::DerefMut<Target = C>>,
        graceful_shutdown: impl Fn(std::pin::Pin<&mut C>),
        quiet: &Quiet,
        may_park: bool,
    ) -> Served<T>
    where
        C: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let Watch {
            plane,
            info,
            stop,
            requested,
            header_timeout,
            idle_timeout,
            send_timeout,
            ..
        } = self;
        let (header_timeout, idle_timeout, send_timeout) =
            (*header_timeout, *idle_timeout, *send_timeout);
        let parking = may_park.then_some(quiet);
        // How often a busy connection's writes are looked at: the send timeout is kept to
        // within a quarter of itself (an HTTP/1.1 connection is looked at each second anyway).
        let send_check = (send_timeout / 4).max(Duration::from_millis(100));
        // The servers' header timeouts start with a request (client_h1's at a head's first
        // byte): a connection that sends nothing, or the HTTP/2 preface and nothing more, would
        // otherwise be held for ever.
        let no_first_request = async {
            tokio::time::sleep(header_timeout).await;
            if requested.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        let mut no_first_request = std::pin::pin!(no_first_request);
        // Since when a graceful close has been waiting for the connection to end.
        let mut closing: Option<tokio::time::Instant> = None;
        let first_check = if parking.is_some() {
            PARK_AFTER
        } else {
            idle_timeout.min(send_check)
        };
        let idle = tokio::time::sleep(first_check);
        let mut idle = std::pin::pin!(idle);
        let wakes = Wakes::new();
        loop {
            // What rarely happens is polled only when it wakes the task, not at every wake the
            // connection causes (several per request).
            let closed = closing.is_some();
            let signal = {
                let signals = std::pin::pin!(async {
                    tokio::select! {
                        biased;
                        () = &mut no_first_request => Signal::NoFirstRequest,
                        _ = stop.wait_for(|stop| *stop), if !closed => Signal::Stop,
                        () = info.too_many_resets.notified(), if !closed => Signal::TooManyResets,
                        // Also once closing: a client that does not read would hold the close.
                        () = &mut idle => Signal::IdleTimer,
                    }
                });
                let mut signals = std::pin::pin!(wakes.on_wake(signals));
                // The connection first: when its idle timer fires in the same turn as the client's
                // next request arrives (a busy worker runs it late), the request is taken and the
                // connection is not parked only to be rebuilt at once.
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                        return Poll::Ready(Err(result));
                    }
                    signals.as_mut().poll(cx).map(Ok)
                })
                .await
            };
            match signal {
                Err(Ok(next)) => return Served::Ended(Some(next)),
                Err(Err(err)) => {
                    tracing::debug!(error = %err, "connection ended with an error");
                    return Served::Ended(None);
                }
                Ok(Signal::NoFirstRequest) => {
                    tracing::debug!("no request within the header timeout; connection closed");
                    return Served::Ended(None);
                }
                Ok(Signal::Stop) => {
                    closing = Some(tokio::time::Instant::now());
                    graceful_shutdown(conn.as_mut());
                }
                // The HTTP/2 connection refuses new streams and closes once its work upstream
                // is over (client_h2); this is what the operator sees of it.
                Ok(Signal::TooManyResets) => {
                    tracing::info!(client = %info.remote, "client abandons requests faster than it lets them finish; closing its connection");
                    plane
                        .metrics
                        .proxy_errors
                        .with_label_values(&["too_many_resets"])
                        .inc();
                }
                Ok(Signal::IdleTimer) => {
                    let now = tokio::time::Instant::now();
                    let count_send_timeouts = |n: usize| {
                        plane
                            .metrics
                            .proxy_errors
                            .with_label_values(&["client_send_timeout"])
                            .inc_by(n as u64);
                    };
                    let reset = info.h2_streams.reset_waiting(now.into_std(), send_timeout);
                    if reset > 0 {
                        tracing::info!(client = %info.remote, streams = reset, timeout = ?send_timeout, "client took nothing of its response on an HTTP/2 stream for the send timeout; stream reset");
                        count_send_timeouts(reset);
                    }
                    let writes_blocked = quiet
                        .write_blocked_for(now.into_std())
                        .is_some_and(|blocked| blocked >= send_timeout);
                    // A close with nothing in flight that still has not ended: what holds it is
                    // data queued for a client that takes none of it (an HTTP/2 stream handed
                    // over whole while its window stays shut).
                    let close_held = closing.is_some_and(|since| {
                        info.idle_since()
                            .is_some_and(|idle| now - idle.max(since) >= send_timeout)
                    });
                    let ended = if writes_blocked {
                        Some(
                            "client took nothing of its response for the send timeout; connection closed",
                        )
                    } else if close_held {
                        Some(
                            "client took none of what its connection's close waits for in the send timeout; connection closed",
                        )
                    } else {
                        None
                    };
                    if let Some(why) = ended {
                        tracing::info!(client = %info.remote, timeout = ?send_timeout, "{why}");
                        count_send_timeouts(1);
                        return Served::Ended(None);
                    }
                    if closing.is_some() {
                        idle.as_mut().reset(now + send_check);
                        continue;
                    }
                    match idle_check(info, idle_timeout, now, parking) {
                        IdleCheck::Close => {
                            tracing::debug!("connection idle past the idle timeout; closing");
                            closing = Some(now);
                            graceful_shutdown(conn.as_mut());
                            idle.as_mut().reset(now + send_check);
                        }
                        IdleCheck::Park => return Served::Idle,
                        // A request in flight: its writes are looked at within `send_check`.
                        IdleCheck::LookAgainAt(at) if info.idle_since().is_none() => {
                            idle.as_mut().reset(at.min(now + send_check));
                        }
                        IdleCheck::LookAgainAt(at) => idle.as_mut().reset(at),
                    }
                }
            }
        }
    }

    /// Holds a parked connection until the client sends again (`true`), or closes it: at the
    /// idle timeout, at shutdown, or when the client does.
    async fn wait_parked<IO: ClientStream>(&mut self, io: &mut ClientIo<IO>) -> bool {
        let now = tokio::time::Instant::now();
        let close_at = self
            .info
            .idle_since()
            .map_or(now + self.idle_timeout, |since| since + self.idle_timeout);
        let more = tokio::select! {
            data = io.wait_for_data() => match data {
                Ok(more) => return more,
                Err(err) => {
                    tracing::debug!(error = %err, "parked connection failed");
                    return false;
                }
            },
            () = tokio::time::sleep_until(close_at) => {
                tracing::debug!("connection idle past the idle timeout; closing");
                false
            }
            _ = self.stop.wait_for(|stop| *stop) => false,
        };
        let _ = tokio::io::AsyncWriteExt::shutdown(io).await;
        more
    }
}

/// What the idle timer firing at `now` means for the connection.
fn idle_check(
    info: &ConnInfo,
    idle_timeout: Duration,
    now: tokio::time::Instant,
    parking: Option<&Quiet>,
) -> IdleCheck {
    // A busy connection is looked at again after a while, not at every PARK_AFTER: under
    // load, that would be a timer firing ten times a second on every connection.
    let busy_step = if parking.is_some() {
        BUSY_RECHECK
    } else {
        idle_timeout
    };
    let Some(since) = info.idle_since() else {
        return IdleCheck::LookAgainAt(now + busy_step);
    };
    let close_at = since + idle_timeout;
    if close_at <= now {
        return IdleCheck::Close;
    }
    match parking {
        Some(quiet) if since + PARK_AFTER <= now => {
            if quiet.is_quiet() {
                return IdleCheck::Park;
            }
            // Still writing to a slow reader: hyper's buffers are in use.
            IdleCheck::LookAgainAt((now + PARK_AFTER).min(close_at))
        }
        Some(_) => IdleCheck::LookAgainAt(since + PARK_AFTER),
        None => IdleCheck::LookAgainAt(close_at),
    }
}

/// See [`idle_check`].
enum IdleCheck {
    Close,
    Park,
    LookAgainAt(tokio::time::Instant),
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

/// The next client connection (its socket options come from the listener, see [`bind`]).
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts TLS connections until `shutdown` fires, then drains them. Each handshake runs in a
/// task of its own, so a slow client never holds up the accept loop, and that task starts the
/// connection's: not handed back to this loop first, its first request waits one turn of the
/// run queue fewer. Handshakes still in progress at shutdown end with it (they held their
/// sockets until the header timeout).
///
/// The loop takes one new connection per turn of the run queue. A full handshake costs a few
/// hundred microseconds of CPU; a burst of connections accepted at once (clients reconnecting
/// after a restart, a load balancer's pool refilling) would queue every request of the
/// connections already served behind the whole burst. One per turn, like nginx's accept
/// without `multi_accept`, puts each handshake between rounds of the served connections'
/// work; the kernel's backlog holds the rest of the burst meanwhile.
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
    let shared_settings = Arc::new(settings.clone());
    loop {
        tokio::select! {
            (stream, remote) = accept(&listener) => {
                let info = ConnInfo::new(remote, "https", port.clone(), &settings);
                let (plane, acceptor, builder) = (plane.clone(), acceptor.clone(), builder.clone());
                let timeout = settings.header_timeout;
                let mut stop = drain.watcher();
                let settings = shared_settings.clone();
                tokio::spawn(async move {
                    let tls = tokio::select! {
                        tls = tls_handshake(&plane, &acceptor, stream, timeout) => tls,
                        // Shutdown closes connections still in their handshake at once.
                        _ = stop.wait_for(|stop| *stop) => None,
                    };
                    if let Some(tls) = tls {
                        // A task of its own, sized to the connection: this one also holds the
                        // handshake's state (2 KiB more per idle connection when run here).
                        tokio::spawn(connection(plane, builder, stop, tls, info, "https", &settings));
                    }
                });
                // Back of the queue, behind the work already waiting (see above).
                tokio::task::yield_now().await;
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

/// TCP keep-alive of client connections: a peer gone without a word (a NAT that forgot it, a
/// powered-off host) is found by the kernel after [`KEEPALIVE_IDLE`] of silence and
/// [`KEEPALIVE_PROBES`] unanswered probes, and its connection closed. The kernel's probes cost
/// nothing per request; HTTP/2 PINGs for the same purpose (hyper's keep-alive) cost the server
/// a timer and a lock at every frame, and HTTP/1.1 had nothing.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// Binds a listener with SO_REUSEADDR, so a restart can bind while old sockets linger, and with
/// the options every connection it accepts inherits (Linux copies them; no syscall per
/// connection): Nagle's algorithm off, so responses go out as written, and TCP keep-alive.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket2::SockRef::from(&socket).set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests;
