//! The upstream dial side for HTTP/1.1: a pool of keep-alive connections per endpoint, each
//! connection driven from the task of the request that uses it (no dispatch task, no channel
//! hop per request, as nginx's single loop does it).
//!
//! A connection is checked out, carries one exchange, and goes back to its pool when the
//! response body has been read to the end. A client that goes away before the response headers
//! came does not cost the backend a new connection: the exchange is finished in the background
//! and the connection returned. Connects in flight per endpoint are bounded.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::error::{ErrorKind, ProxyError};
use super::timeouts::Progress;
use crate::body::{BoxBody, BoxError};

type Io = TokioIo<TcpStream>;

/// Limits of the HTTP/1.1 connection pools.
#[derive(Clone, Debug)]
pub struct ConnectorSettings {
    pub connect_timeout: Duration,
    /// How long an idle connection is kept for reuse.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint; more are closed when they come back.
    pub max_idle_per_endpoint: usize,
    /// Connects in flight per endpoint; further requests wait for one to finish (or for a
    /// pooled connection to come back) instead of flooding the backend's listen queue.
    pub max_connecting_per_endpoint: usize,
    /// How long an exchange whose client went away is finished in the background to keep its
    /// connection.
    pub abandoned_timeout: Duration,
}

impl Default for ConnectorSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 1024,
            max_connecting_per_endpoint: 64,
            abandoned_timeout: Duration::from_secs(10),
        }
    }
}

/// The pools of every endpoint, made on first use.
pub struct Connector {
    settings: ConnectorSettings,
    builder: http1::Builder,
    /// Read on every request without a lock; written when a new endpoint is first used.
    pools: ArcSwap<HashMap<SocketAddr, Arc<Pool>>>,
    /// Counts connects made (for tests and metrics).
    connects: std::sync::atomic::AtomicU64,
}

/// One endpoint's idle connections.
struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Idle>>,
    connecting: Arc<Semaphore>,
    settings: ConnectorSettings,
    /// Exchanges whose client went away, finishing in the background: their connections come
    /// back to the pool soon ([`ComingBack`]).
    coming_back: AtomicUsize,
    /// Woken when a connection comes back or an abandoned exchange ends, while any are out.
    returned: Notify,
}

/// How long a request that finds no idle connection waits for one an abandoned exchange is
/// about to hand back, before it opens a new one. Without it, a client that resets its
/// streams as fast as it sends them makes every new request connect while the last batch's
/// connections are still finishing.
const COMING_BACK_WAIT: Duration = Duration::from_millis(100);

/// Counts an abandoned exchange finishing in the background for as long as it lives.
struct ComingBack(Arc<Pool>);

impl ComingBack {
    fn new(pool: Arc<Pool>) -> Self {
        pool.coming_back.fetch_add(1, Ordering::AcqRel);
        Self(pool)
    }
}

impl Drop for ComingBack {
    fn drop(&mut self) {
        self.0.coming_back.fetch_sub(1, Ordering::AcqRel);
        self.0.returned.notify_waiters();
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One HTTP/1.1 connection: the request side and the I/O side, kept together.
struct Conn {
    send: SendRequest<BoxBody>,
    /// Boxed (once per connection): hyper's connection state is most of a KiB, and a `Conn`
    /// moves with every request (pool, exchange, response body).
    io: Box<Connection<Io, BoxBody>>,
    /// Whether it carried a request before (a reused connection may have been closed by the
    /// backend while idle).
    reused: bool,
    /// When it last finished an exchange.
    idle_since: Option<Instant>,
}

/// The response of an exchange, its body still to come.
pub type UpstreamResponse = Response<UpstreamBody>;

// === impl Connector ===

impl Connector {
    pub fn new(settings: ConnectorSettings) -> Self {
        let mut builder = http1::Builder::new();
        builder.max_buf_size(256 * 1024);
        Self {
            settings,
            builder,
            pools: ArcSwap::default(),
            connects: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Connections opened so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn pool(&self, addr: SocketAddr) -> Arc<Pool> {
        if let Some(pool) = self.pools.load().get(&addr) {
            return pool.clone();
        }
        let made = Arc::new(Pool {
            addr,
            idle: Mutex::new(Vec::new()),
            connecting: Arc::new(Semaphore::new(
                self.settings.max_connecting_per_endpoint.max(1),
            )),
            settings: self.settings.clone(),
            coming_back: AtomicUsize::new(0),
            returned: Notify::new(),
        });
        let mut out = made.clone();
        self.pools.rcu(|current| {
            let mut next = HashMap::clone(current);
            out = next.entry(addr).or_insert_with(|| made.clone()).clone();
            next
        });
        out
    }

    /// Sends `req` to `addr` and returns the response headers. On error, the request comes back
    /// when none of it was sent, so another endpoint may be tried with it.
    pub async fn send(
        &self,
        addr: SocketAddr,
        req: Request<BoxBody>,
    ) -> Result<UpstreamResponse, (ProxyError, Option<Request<BoxBody>>)> {
        self.send_timed(addr, req, self.settings.connect_timeout, None)
            .await
    }

    /// [`Connector::send`] with a route's connect timeout; `progress` learns when the request
    /// has a connection (its send and read clocks start then).
    pub async fn send_timed(
        &self,
        addr: SocketAddr,
        mut req: Request<BoxBody>,
        connect_timeout: Duration,
        progress: Option<&Progress>,
    ) -> Result<UpstreamResponse, (ProxyError, Option<Request<BoxBody>>)> {
        // An origin server gets the origin-form target (RFC 9112 §3.2.1): absolute-form is for
        // proxies, and some servers (Python's http.server) answer it with 404.
        if req.uri().scheme().is_some() {
            let origin = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            *req.uri_mut() = http::Uri::from(origin);
        }
        let pool = self.pool(addr);
        // A pooled connection may turn out closed before the request went out: then the
        // request comes back untouched and the next one (or a new one) is tried.
        loop {
            let conn = match pool.checkout() {
                Some(conn) => conn,
                None => match self.connect(&pool, connect_timeout).await {
                    Ok(conn) => conn,
                    Err(err) => return Err((err, Some(req))),
                },
            };
            if let Some(progress) = progress {
                progress.connected();
            }
            match exchange(conn, req, &pool).await {
                Ok(resp) => return Ok(resp),
                Err(Failed::NotSent(r)) => req = *r,
                Err(Failed::Sent(err)) => return Err((err, None)),
            }
        }
    }

    /// A new connection to the pool's endpoint. The connect runs in a task of its own: if the
    /// request that wanted it goes away meanwhile, the connection goes to the pool instead of
    /// being thrown away (a client resetting streams cannot make the backend accept
    /// connection after connection).
    async fn connect(&self, pool: &Arc<Pool>, timeout: Duration) -> Result<Conn, ProxyError> {
        if let Some(conn) = pool.wait_coming_back().await {
            return Ok(conn);
        }
        let permit = tokio::time::timeout(timeout, pool.connecting.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                ProxyError::with_cause(ErrorKind::ConnectFailed, "too many connects in flight")
                    .retry_safe(true)
            })?;
        // While we waited, another exchange may have handed a connection back.
        if let Some(conn) = pool.checkout() {
            return Ok(conn);
        }
        self.connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (builder, dialled) = (self.builder.clone(), pool.clone());
        tokio::spawn(async move {
            let result = dial(&builder, dialled.addr, timeout).await;
            drop(permit);
            if let Err(Ok(conn)) = tx.send(result) {
                dialled.checkin(conn);
            }
        });
        rx.await
            .unwrap_or_else(|_| Err(ProxyError::new(ErrorKind::ConnectFailed)))
    }
}

/// Opens a TCP connection and sets HTTP/1.1 up on it (no bytes are exchanged for that).
async fn dial(
    builder: &http1::Builder,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Conn, ProxyError> {
    let failed =
        |cause: BoxError| ProxyError::with_cause(ErrorKind::ConnectFailed, cause).retry_safe(true);
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| failed("connect timed out".into()))?
        .map_err(|e| failed(e.into()))?;
    let _ = stream.set_nodelay(true);
    let (send, io) = builder
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.into()))?;
    Ok(Conn {
        send,
        io: Box::new(io),
        reused: false,
        idle_since: None,
    })
}

// === impl Pool ===

impl Pool {
    /// The most recently used idle connection that is still open (warm caches, and the oldest
    /// ones expire).
    fn checkout(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Expired ones are at the front.
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= self.settings.idle_timeout)
            .count();
        if expired > 0 {
            idle.drain(..expired);
        }
        while let Some(Idle { conn, .. }) = idle.pop() {
            if !conn.send.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, mut conn: Conn) {
        if conn.send.is_closed() {
            return;
        }
        let now = Instant::now();
        conn.reused = true;
        conn.idle_since = Some(now);
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.settings.max_idle_per_endpoint {
                idle.push(Idle { conn, since: now });
            }
        }
        if self.coming_back.load(Ordering::Acquire) > 0 {
            self.returned.notify_waiters();
        }
    }

    /// While abandoned exchanges are finishing, a connection one of them hands back (at most
    /// [`COMING_BACK_WAIT`]); `None` at once when none are.
    async fn wait_coming_back(&self) -> Option<Conn> {
        if self.coming_back.load(Ordering::Acquire) == 0 {
            return None;
        }
        let wait = async {
            loop {
                // Registered before looking, so a hand-back between the look and the wait
                // still wakes it.
                let mut notified = std::pin::pin!(self.returned.notified());
                notified.as_mut().enable();
                if let Some(conn) = self.checkout() {
                    return Some(conn);
                }
                if self.coming_back.load(Ordering::Acquire) == 0 {
                    return None;
                }
                notified.await;
            }
        };
        tokio::time::timeout(COMING_BACK_WAIT, wait)
            .await
            .ok()
            .flatten()
    }
}

enum Failed {
    /// Nothing was written: the request comes back (boxed: this is the rare path).
    NotSent(Box<Request<BoxBody>>),
    Sent(ProxyError),
}

/// One exchange on one connection: waits until it can send, sends, and waits for the response
/// headers, driving the connection's I/O from this task all along.
async fn exchange(
    conn: Conn,
    req: Request<BoxBody>,
    pool: &Arc<Pool>,
) -> Result<UpstreamResponse, Failed> {
    // Ready means the previous exchange is over and the backend has not closed the connection.
    // A client gone meanwhile leaves the connection to the pool.
    let mut waiting = Waiting {
        conn: Some(conn),
        pool,
    };
    let ready = poll_fn(|cx| {
        let Some(conn) = waiting.conn.as_mut() else {
            return Poll::Ready(Err(None));
        };
        if let Poll::Ready(result) = Pin::new(&mut conn.io).poll(cx) {
            // The connection ended while idle.
            return Poll::Ready(Err(result.err()));
        }
        conn.send.poll_ready(cx).map_err(Some)
    })
    .await;
    let (Ok(()), Some(mut conn)) = (ready, waiting.conn.take()) else {
        waiting.conn = None;
        return Err(Failed::NotSent(Box::new(req)));
    };
    // A backend may close a connection that sat idle just as a request goes out on it; a
    // bodiless idempotent request on such a connection keeps its head to send it again.
    let resend = (conn.reused
        && conn
            .idle_since
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
        && req.method().is_idempotent()
        && req.body().is_end_stream())
    .then(|| clone_head(&req));
    let sent = conn.send.try_send_request(req);
    let mut in_flight = InFlight {
        sent: Some(Box::pin(sent)),
        conn: Some(conn),
        pool: pool.clone(),
        io_done: false,
    };
    match poll_fn(|cx| in_flight.poll_response(cx)).await {
        Ok(resp) => {
            let conn = in_flight.conn.take();
            in_flight.sent = None;
            let pool = pool.clone();
            Ok(resp.map(|body| UpstreamBody {
                body: Some(body),
                conn,
                pool,
            }))
        }
        Err(mut err) => {
            in_flight.sent = None;
            in_flight.conn = None;
            if let Some(req) = err.take_message() {
                return Err(Failed::NotSent(Box::new(req)));
            }
            let err = err.into_error();
            // Closed before any byte of a response came back: safe to send again.
            let closed = err.is_incomplete_message() || err.is_canceled() || err.is_closed();
            match resend {
                Some(req) if closed => Err(Failed::NotSent(Box::new(req))),
                _ => Err(Failed::Sent(ProxyError::with_cause(
                    ErrorKind::UpstreamFailed,
                    err,
                ))),
            }
        }
    }
}

/// A connection checked out for an exchange that has not started: back to the pool if the
/// exchange is dropped here.
struct Waiting<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }
}

/// The request line and headers of a bodiless request, to send it again.
fn clone_head(req: &Request<BoxBody>) -> Request<BoxBody> {
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

type SentFuture = Pin<
    Box<dyn Future<Output = Result<Response<Incoming>, TrySendError<Request<BoxBody>>>> + Send>,
>;

/// An exchange waiting for its response headers. Dropped before they came (the client went
/// away), it finishes in the background so the connection can be used again.
struct InFlight {
    sent: Option<SentFuture>,
    conn: Option<Conn>,
    pool: Arc<Pool>,
    io_done: bool,
}

// === impl InFlight ===

impl InFlight {
    fn poll_response(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<Incoming>, TrySendError<Request<BoxBody>>>> {
        if !self.io_done
            && let Some(conn) = self.conn.as_mut()
            && Pin::new(&mut conn.io).poll(cx).is_ready()
        {
            // The I/O side ended (closed or failed): the response future resolves with why.
            self.io_done = true;
        }
        match self.sent.as_mut() {
            Some(sent) => sent.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let (Some(sent), Some(conn)) = (self.sent.take(), self.conn.take()) else {
            return;
        };
        if self.io_done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        let deadline = pool.settings.abandoned_timeout;
        let coming_back = ComingBack::new(pool.clone());
        runtime.spawn(async move {
            let _coming_back = coming_back;
            let mut rest = InFlight { sent: Some(sent), conn: Some(conn), pool: pool.clone(), io_done: false };
            let finished = tokio::time::timeout(deadline, async {
                let resp = poll_fn(|cx| rest.poll_response(cx)).await.ok()?;
                let conn = rest.conn.take();
                rest.sent = None;
                let mut body = UpstreamBody { body: Some(resp.into_body()), conn, pool: pool.clone() };
                while let Some(frame) = body.frame().await {
                    frame.ok()?;
                }
                Some(())
            })
            .await;
            if finished.is_err() {
                tracing::debug!(upstream = %pool.addr, "abandoned exchange did not finish in time; connection closed");
            }
            rest.sent = None;
        });
    }
}

/// A response body from an upstream. Reading it drives the connection's I/O; read to the end,
/// it hands the connection back to its pool. Dropped early, the connection is closed.
pub struct UpstreamBody {
    /// `None` only once dropped.
    body: Option<Incoming>,
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

// === impl UpstreamBody ===

impl UpstreamBody {
    /// Hands the connection back once the response is complete.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }

    /// Upgraded or otherwise special responses: the plain body, driving the connection
    /// elsewhere is the caller's business.
    pub fn into_boxed(self) -> BoxBody {
        self.map_err(BoxError::from).boxed_unsync()
    }
}

/// Most a dropped response body is read on for, to keep its connection.
const DRAIN_LIMIT: u64 = 256 * 1024;

impl Drop for UpstreamBody {
    /// The client went away mid-body: a short rest is read in the background so the
    /// connection can be used again; a long one is not worth it, and the connection closes.
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let short = self
            .body
            .as_ref()
            .and_then(|b| b.size_hint().upper())
            .is_some_and(|n| n <= DRAIN_LIMIT);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !short {
            return;
        }
        let Some(body) = self.body.take() else {
            return;
        };
        let pool = self.pool.clone();
        let deadline = pool.settings.abandoned_timeout;
        let coming_back = ComingBack::new(pool.clone());
        runtime.spawn(async move {
            let _coming_back = coming_back;
            let mut rest = UpstreamBody {
                body: Some(body),
                conn: Some(conn),
                pool,
            };
            let _ = tokio::time::timeout(deadline, async {
                while let Some(frame) = rest.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
            // Readers stop at the end of stream without polling for `None`: hand the
            // connection back as soon as the last frame is out.
            if frame.is_none() || body.is_end_stream() {
                this.finish();
            }
            return Poll::Ready(frame);
        }
        if let Some(conn) = this.conn.as_mut()
            && let Poll::Ready(result) = Pin::new(&mut conn.io).poll(cx)
        {
            // The connection ended; whatever the body still has (or its error) follows.
            this.conn = None;
            if let Err(err) = result {
                tracing::debug!(error = %err, "upstream connection failed mid-body");
            }
        }
        let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
        if frame.is_none() || body.is_end_stream() {
            this.finish();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
