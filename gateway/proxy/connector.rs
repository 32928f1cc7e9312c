//! The upstream dial side for HTTP/1.1: a pool of keep-alive connections per endpoint, and the
//! exchange on one, read and written from the task of the request that uses it (no dispatch
//! task, no channel hop, no second parse of what [`h1`] already read, as nginx's single loop
//! does it).
//!
//! A connection is checked out, carries one exchange, and goes back to its pool when the
//! response body has been read to the end. A client that goes away before the response headers
//! came does not cost the backend a new connection: the exchange is finished in the background
//! and the connection returned. Connects in flight per endpoint are bounded.

pub(super) mod h1;

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;

use self::h1::{Decoded, Decoder, RequestFraming};
use super::error::{ErrorKind, ProxyError};
use super::headers::Overrides;
use super::lingering::{LeftBehind, Lingering};
use super::timeouts::Progress;
use crate::body::{BoxBody, BoxError};

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

/// Pools by endpoint, looked up per request: foldhash (the keys are endpoint addresses from
/// the configuration, not a client's choosing; SipHash cost more than the rest of the lookup).
type Pools = HashMap<SocketAddr, Arc<Pool>, foldhash::fast::RandomState>;

/// The pools of every endpoint, made on first use.
pub struct Connector {
    settings: ConnectorSettings,
    /// Read on every request without a lock; written when a new endpoint is first used.
    pools: ArcSwap<Pools>,
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

/// One HTTP/1.1 connection to an endpoint.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet taken: empty between exchanges (left unallocated while idle; see
    /// [`spare_buffers`]).
    buf: BytesMut,
    /// Whether `buf` was asked for more room than a head's (a body's reads): such a buffer is
    /// not kept as a spare.
    grown: bool,
    /// Whether it carried a request before (a reused connection may have been closed by the
    /// backend while idle).
    reused: bool,
}

/// The response of an exchange, its body still to come.
pub type UpstreamResponse = Response<UpstreamBody>;

/// A request ready for the wire. Its head is encoded once (it is the same for every endpoint)
/// and the request itself dropped there: nothing of it is left to touch while the backend is
/// waited on, and another endpoint is tried with the same bytes.
pub struct Outgoing {
    head: Vec<u8>,
    framing: RequestFraming,
    /// Taken when it is sent.
    body: BoxBody,
    idempotent: bool,
    head_request: bool,
}

impl Outgoing {
    /// `overrides`: the headers this hop sets in place of the client's (dropped here too).
    pub fn new(req: Request<BoxBody>, overrides: Overrides) -> Self {
        let has_body = !req.body().is_end_stream();
        let (head, framing) = h1::encode_head(&req, has_body, &overrides);
        let (parts, body) = req.into_parts();
        Self {
            head,
            framing,
            body,
            idempotent: parts.method.is_idempotent(),
            head_request: parts.method == Method::HEAD,
        }
    }

    /// The encoded head (request line and fields).
    #[cfg(test)]
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}

/// Bytes asked of the socket per read of a response head (nginx's `proxy_buffer_size`).
const HEAD_READ: usize = 8 * 1024;
/// Most bytes asked of the socket per read of a response body.
const BODY_READ: usize = 64 * 1024;

// === impl Connector ===

impl Connector {
    pub fn new(settings: ConnectorSettings) -> Self {
        Self {
            settings,
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

    /// Closes idle connections past the idle timeout in every pool, and forgets the pools left
    /// with nothing (none idle, none in use): a pool expires its connections itself only when a
    /// request takes one, and endpoints no request goes to any more (their Pods gone) would
    /// otherwise keep theirs, and their descriptors, for ever. Run now and then, off the
    /// request path.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut unused = Vec::new();
        for (addr, pool) in self.pools.load().iter() {
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            pool.expire(&mut idle, now);
            // Exchanges in flight, connects and connections coming back hold the pool too.
            if idle.is_empty() && Arc::strong_count(pool) == 1 {
                unused.push(*addr);
            }
        }
        if unused.is_empty() {
            return;
        }
        // A request that takes one of these pools meanwhile keeps it until it is done; its
        // connection then goes with it, and the next request makes a new pool.
        self.pools.rcu(|current| {
            let mut next = HashMap::clone(current);
            for addr in &unused {
                next.remove(addr);
            }
            next
        });
    }

    /// Sends `req` to `addr` and returns the response headers. On error, the request comes back
    /// (encoded) when none of it was sent, so another endpoint may be tried with it.
    pub async fn send(
        &self,
        addr: SocketAddr,
        req: Request<BoxBody>,
    ) -> Result<UpstreamResponse, (ProxyError, Option<Outgoing>)> {
        let mut out = Outgoing::new(req, Overrides::default());
        match self
            .send_timed(addr, &mut out, self.settings.connect_timeout, None, None)
            .await
        {
            Ok(resp) => Ok(resp),
            Err((err, unsent)) => Err((err, unsent.then_some(out))),
        }
    }

    /// [`Connector::send`] with a route's connect timeout, and `progress`, which learns when
    /// the request has a connection (its send and read clocks start then). If the request goes
    /// away while its exchange (or its connect) is under way, the work that goes on is counted in
    /// its client connection's `lingering`. On error, `true` when none of the request was sent:
    /// `out` may go to another endpoint.
    // Not an `async fn`: see `proxy::handle`.
    #[allow(clippy::manual_async_fn)]
    pub fn send_timed<'a>(
        &'a self,
        addr: SocketAddr,
        out: &'a mut Outgoing,
        connect_timeout: Duration,
        progress: Option<&'a Progress>,
        lingering: Option<&'a Arc<Lingering>>,
    ) -> impl Future<Output = Result<UpstreamResponse, (ProxyError, bool)>> + 'a {
        async move {
            let pool = self.pool(addr);
            // A pooled connection may turn out closed by the backend before it answered: then the
            // request, if nothing of it is lost, goes out again on the next one (or a new one).
            loop {
                let conn = match pool.checkout() {
                    Some(conn) => conn,
                    None => match self.connect(&pool, connect_timeout, lingering).await {
                        Ok(conn) => conn,
                        Err(err) => return Err((err, true)),
                    },
                };
                if let Some(progress) = progress {
                    progress.connected();
                }
                match exchange(conn, out, &pool, lingering).await {
                    Ok(resp) => return Ok(resp),
                    Err(Failed::Resend) => {}
                    Err(Failed::Sent(err)) => return Err((err, false)),
                }
            }
        }
    }

    /// A new connection to the pool's endpoint. The connect runs in a task of its own: if the
    /// request that wanted it goes away meanwhile, the connection goes to the pool instead of
    /// being thrown away (a client resetting streams cannot make the backend accept
    /// connection after connection).
    async fn connect(
        &self,
        pool: &Arc<Pool>,
        timeout: Duration,
        lingering: Option<&Arc<Lingering>>,
    ) -> Result<Conn, ProxyError> {
        if let Some(conn) = pool.wait_coming_back().await {
            return Ok(conn);
        }
        let permit = tokio::time::timeout(timeout, pool.connecting.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                ProxyError::with_cause(ErrorKind::ConnectBusy, "too many connects in flight")
                    .retry_safe(true)
            })?;
        // While we waited, another exchange may have handed a connection back.
        if let Some(conn) = pool.checkout() {
            return Ok(conn);
        }
        self.connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let (abandoned, left_behind) = match lingering {
            Some(lingering) => {
                let (token_tx, token_rx) = oneshot::channel();
                (AbandonedDial(Some((token_tx, lingering))), Some(token_rx))
            }
            None => (AbandonedDial(None), None),
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            let result = dial(pool.addr, timeout).await;
            drop(permit);
            // Not taken (the request went away), the connection goes to the pool here...
            let _ = tx.send(result.map(|conn| Dialled {
                conn: Some(conn),
                pool,
            }));
            // ...and then the count its request's client connection was left with falls.
            drop(left_behind);
        });
        let dialled = rx.await;
        abandoned.disarm();
        let mut dialled =
            dialled.unwrap_or_else(|_| Err(ProxyError::new(ErrorKind::ConnectFailed)))?;
        Ok(dialled
            .conn
            .take()
            .expect("a dialled connection is taken once"))
    }
}

/// A connection dialled for a request, on its way to it. Dropped before the request took it
/// (the client went away while it was made, or after it came and before the request's task
/// ran again), it goes to the pool rather than closing.
struct Dialled {
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl Drop for Dialled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }
}

/// A request waiting for its dial. Dropped so (its client went away), the dial goes on and is
/// counted in its client connection's [`Lingering`] until it is over: its token goes to the
/// dial's task, which drops it once the connection is in the pool.
struct AbandonedDial<'a>(Option<(oneshot::Sender<LeftBehind>, &'a Arc<Lingering>)>);

impl AbandonedDial<'_> {
    /// The dial's outcome came: nothing was left behind.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonedDial<'_> {
    fn drop(&mut self) {
        if let Some((to_dial, lingering)) = self.0.take() {
            // A dial already over refuses it, and the token ends at once.
            let _ = to_dial.send(lingering.left_behind());
        }
    }
}

/// Opens a TCP connection for HTTP/1.1 (no bytes are exchanged for that).
async fn dial(addr: SocketAddr, timeout: Duration) -> Result<Conn, ProxyError> {
    let failed =
        |cause: BoxError| ProxyError::with_cause(ErrorKind::ConnectFailed, cause).retry_safe(true);
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| failed("connect timed out".into()))?
        .map_err(|e| failed(e.into()))?;
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        buf: BytesMut::new(),
        grown: false,
        reused: false,
    })
}

// === impl Conn ===

impl Conn {
    /// Whether an idle connection is still open and quiet. No syscall when the runtime has
    /// seen nothing arrive on it since its last read ran dry.
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads what the socket has into `buf`, asking for up to `want` bytes; `Ok(0)` at its end.
    /// Through `AsyncRead`, which marks the socket drained after a short read: the idle check
    /// of [`Conn::is_open`] then costs no syscall.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            self.buf = spare_buffers::take();
        }
        if self.buf.capacity() - self.buf.len() < want.min(1024) {
            self.grown |= want > HEAD_READ;
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }

    /// Reads until a whole response head is in, past any interim (1xx) responses.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        got_bytes: &mut bool,
    ) -> Poll<Result<h1::Head, HeadError>> {
        loop {
            if !self.buf.is_empty()
                && let Some(head) =
                    h1::parse_head(&mut self.buf, head_request).map_err(HeadError::Malformed)?
            {
                return Poll::Ready(Ok(head));
            }
            match ready!(self.poll_fill(cx, HEAD_READ)) {
                Ok(0) if !*got_bytes => return Poll::Ready(Err(HeadError::ClosedBeforeAnswer)),
                Ok(0) => return Poll::Ready(Err(HeadError::Cut)),
                Ok(_) => *got_bytes = true,
                Err(e) if !*got_bytes && is_reset(&e) => {
                    return Poll::Ready(Err(HeadError::ClosedBeforeAnswer));
                }
                Err(e) => return Poll::Ready(Err(HeadError::Io(e))),
            }
        }
    }
}

/// Read buffers of connections that went back to a pool, for the next exchange on the same
/// thread. The buffer of a finished exchange is most likely still shared with its body's last
/// bytes, on their way to the client; by the time it is taken again they have usually gone,
/// and `reserve` takes the room back in place instead of allocating a new buffer (and freeing
/// the old). Oldest first, the likeliest to be free; per thread, so no lock, and bounded
/// however many endpoints and idle connections there are.
mod spare_buffers {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use bytes::BytesMut;

    /// At most this many per thread: about 512 KiB in all (only buffers never grown past
    /// [`super::HEAD_READ`] come back).
    pub(super) const MAX: usize = 64;

    thread_local! {
        pub(super) static SPARES: RefCell<VecDeque<BytesMut>> = const { RefCell::new(VecDeque::new()) };
    }

    /// The oldest spare buffer, or an unallocated one.
    pub(super) fn take() -> BytesMut {
        SPARES
            .with_borrow_mut(VecDeque::pop_front)
            .unwrap_or_default()
    }

    /// Keeps `buf` for a later exchange, unless there are enough (or it has no room).
    pub(super) fn give(buf: BytesMut) {
        if buf.capacity() == 0 {
            return;
        }
        SPARES.with_borrow_mut(|spares| {
            if spares.len() < MAX {
                spares.push_back(buf);
            }
        });
    }
}

/// Writes all of `bufs` (in one syscall when the socket takes them), advancing them.
async fn write_all(stream: &TcpStream, bufs: &mut [Bytes]) -> io::Result<()> {
    loop {
        let slices: Vec<io::IoSlice<'_>> = bufs
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| io::IoSlice::new(b))
            .collect();
        if slices.is_empty() {
            return Ok(());
        }
        let n = match stream.try_write_vectored(&slices) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.writable().await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut left = n;
        for b in bufs.iter_mut() {
            let step = left.min(b.len());
            b.advance(step);
            left -= step;
        }
    }
}

/// Writes the request head from a buffer that stays whole (it may be sent again). On error,
/// whether part of it went out.
async fn write_head(stream: &TcpStream, head: &[u8]) -> Result<(), (io::Error, bool)> {
    let mut written = 0;
    while written < head.len() {
        match stream.try_write(&head[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.writable().await.map_err(|e| (e, written > 0))?;
            }
            Err(e) => return Err((e, written > 0)),
        }
    }
    Ok(())
}

fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Why no response head came.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    /// Closed (or reset) before a single byte of an answer: on a reused connection, the
    /// backend most likely closed it while idle, just as the request went out.
    #[error("upstream closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("upstream closed the connection in the middle of the response head")]
    Cut,
    #[error(transparent)]
    Malformed(h1::Malformed),
    #[error(transparent)]
    Io(io::Error),
}

// === impl Pool ===

impl Pool {
    /// The most recently used idle connection that is still open (warm caches, and the oldest
    /// ones expire).
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        self.expire(&mut idle, Instant::now());
        while let Some(Idle { conn, .. }) = idle.pop() {
            if conn.is_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Closes the idle connections past the idle timeout (the oldest are at the front).
    fn expire(&self, idle: &mut Vec<Idle>, now: Instant) {
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= self.settings.idle_timeout)
            .count();
        if expired > 0 {
            idle.drain(..expired);
        }
    }

    /// Takes a connection back after a complete exchange (with nothing unread on it).
    fn checkin(&self, mut conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        // An idle connection holds no buffer: its goes to the thread's spares, unless a large
        // body made it large.
        let buf = std::mem::take(&mut conn.buf);
        if !std::mem::take(&mut conn.grown) {
            spare_buffers::give(buf);
        }
        conn.reused = true;
        let now = Instant::now();
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
    /// The connection closed before the backend could have acted on the request, and the
    /// request is whole: send it again on another connection.
    Resend,
    Sent(ProxyError),
}

/// One exchange on one connection: writes the request (its body while watching for an early
/// answer), then reads the response head.
async fn exchange(
    conn: Conn,
    out: &mut Outgoing,
    pool: &Arc<Pool>,
    lingering: Option<&Arc<Lingering>>,
) -> Result<UpstreamResponse, Failed> {
    let reused = conn.reused;
    let (framing, idempotent) = (out.framing, out.idempotent);
    let mut flight = InFlight {
        conn: Some(conn),
        pool: pool.clone(),
        sent: false,
        head_request: out.head_request,
        lingering,
    };
    let failed =
        |err: BoxError| Failed::Sent(ProxyError::with_cause(ErrorKind::UpstreamFailed, err));
    let conn = flight.conn.as_mut().expect("set above");
    if let Err((err, partly)) = write_head(&conn.stream, &out.head).await {
        flight.conn = None;
        // The backend cannot have acted on a request it did not get whole; on a reused
        // connection this is a backend that closed it while idle, not a failure.
        return if reused && (!partly || idempotent) {
            Err(Failed::Resend)
        } else {
            Err(failed(err.into()))
        };
    }
    let mut early = false;
    if framing != RequestFraming::Empty {
        let body = std::mem::replace(&mut out.body, crate::body::empty());
        early = match send_body_watching(conn, body, framing).await {
            Ok(early) => early,
            Err(err) => {
                flight.conn = None;
                return Err(failed(err));
            }
        };
    }
    flight.sent = !early;
    let head_request = flight.head_request;
    let conn = flight.conn.as_mut().expect("set above");
    let mut got_bytes = !conn.buf.is_empty();
    match poll_fn(|cx| conn.poll_head(cx, head_request, &mut got_bytes)).await {
        Ok(head) => {
            let conn = flight.conn.take().expect("set above");
            let keep_alive = head.keep_alive && !early;
            let mut body = UpstreamBody::new(conn, head.body, keep_alive, pool.clone());
            if body.conn.is_some() {
                body.lingering = lingering.cloned();
            }
            Ok(head.response.map(|()| body))
        }
        Err(err) => {
            flight.conn = None;
            match err {
                HeadError::ClosedBeforeAnswer
                    if reused && framing == RequestFraming::Empty && idempotent =>
                {
                    Err(Failed::Resend)
                }
                err => Err(failed(err.into())),
            }
        }
    }
}

/// Sends the request body while watching for a response head: a backend may answer (a 413,
/// a redirect) before taking the whole body, and then the rest is not sent. `Ok(true)`: it
/// answered (or closed) early, and the connection cannot carry another exchange.
async fn send_body_watching(
    conn: &mut Conn,
    body: BoxBody,
    framing: RequestFraming,
) -> Result<bool, BoxError> {
    let Conn { stream, buf, .. } = conn;
    let stream = &*stream;
    let mut sending = std::pin::pin!(send_body(stream, body, framing));
    poll_fn(|cx| {
        if let Poll::Ready(result) = sending.as_mut().poll(cx) {
            return Poll::Ready(result.map(|()| false));
        }
        // Anything the backend says now, past interim answers (`100 Continue` to an
        // `Expect`), is an early answer: stop sending; the head read takes it from there.
        loop {
            if stream.poll_read_ready(cx).is_pending() {
                return Poll::Pending;
            }
            buf.reserve(HEAD_READ);
            match stream.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(n) if n > 0 && !h1::skip_interim(buf) => continue,
                // An end or a failure the head read finds again.
                _ => return Poll::Ready(Ok(true)),
            }
        }
    })
    .await
}

/// Writes a request body in its framing.
async fn send_body(
    stream: &TcpStream,
    mut body: BoxBody,
    framing: RequestFraming,
) -> Result<(), BoxError> {
    let mut sent = 0u64;
    loop {
        let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await else {
            break;
        };
        let frame = frame?;
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                sent += data.len() as u64;
                match framing {
                    RequestFraming::Length(n) if sent > n => {
                        return Err("request body longer than its Content-Length".into());
                    }
                    RequestFraming::Chunked => {
                        let line = h1::chunk_line(data.len());
                        write_all(stream, &mut [line, data, Bytes::from_static(b"\r\n")]).await?;
                    }
                    _ => {
                        write_all(stream, &mut [data]).await?;
                    }
                }
            }
            // Trailers go only with chunked framing; beside a declared length there is no place
            // for them, and they are dropped (as hyper's client does).
            Err(frame) => {
                if let (Ok(trailers), RequestFraming::Chunked) = (frame.into_trailers(), framing) {
                    write_all(stream, &mut [h1::last_chunk(Some(&trailers))]).await?;
                    return Ok(());
                }
            }
        }
    }
    match framing {
        RequestFraming::Chunked => {
            write_all(stream, &mut [h1::last_chunk(None)]).await?;
        }
        RequestFraming::Length(n) if sent != n => {
            return Err("request body shorter than its Content-Length".into());
        }
        _ => {}
    }
    Ok(())
}

/// A connection carrying an exchange that has no response head yet. Dropped so (the client
/// went away), a request that is all out has its answer read to the end in the background, so
/// the connection can be used again; one cut off in the middle is closed.
struct InFlight<'a> {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    /// The whole request is out.
    sent: bool,
    head_request: bool,
    lingering: Option<&'a Arc<Lingering>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if !self.sent {
            return;
        }
        let pool = self.pool.clone();
        let head_request = self.head_request;
        let left_behind = self.lingering.map(Lingering::left_behind);
        finish_in_background(&self.pool, left_behind, async move {
            let mut got_bytes = !conn.buf.is_empty();
            let head = poll_fn(|cx| conn.poll_head(cx, head_request, &mut got_bytes))
                .await
                .ok()?;
            let mut body = UpstreamBody::new(conn, head.body, head.keep_alive, pool);
            body.in_background = true;
            body.drain().await
        });
    }
}

/// Runs `work`, which reads out an exchange whose client went away so that its connection
/// goes back to the pool, in a task of its own: at most the abandoned timeout, and counted as
/// a connection coming back meanwhile ([`Pool::wait_coming_back`]), and in its client
/// connection's lingering work (`left_behind`) if that is counted.
fn finish_in_background<F>(pool: &Arc<Pool>, left_behind: Option<LeftBehind>, work: F)
where
    F: Future<Output = Option<()>> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let coming_back = ComingBack::new(pool.clone());
    let (deadline, addr) = (pool.settings.abandoned_timeout, pool.addr);
    runtime.spawn(async move {
        let finished = tokio::time::timeout(deadline, work).await;
        if !matches!(finished, Ok(Some(()))) {
            tracing::debug!(upstream = %addr, "abandoned exchange did not finish; connection closed");
        }
        // The connection is back in the pool (or closed) before either count falls.
        drop(coming_back);
        drop(left_behind);
    });
}

/// A response body from an upstream, read off its connection as it is polled; read to the
/// end, it hands the connection back to its pool. Dropped early, the connection is closed (or
/// a short rest read out in the background first).
pub struct UpstreamBody {
    /// `None` once the body is over (the connection went back or was closed).
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
    pool: Arc<Pool>,
    /// The upstream closed: what is in the buffer is all there is.
    eof: bool,
    /// Where its client counts it if it is dropped unfinished and read out in the background.
    lingering: Option<Arc<Lingering>>,
    /// Read out by Gatehouse itself for its connection: dropped unfinished, it closes.
    in_background: bool,
}

// === impl UpstreamBody ===

impl UpstreamBody {
    fn new(conn: Conn, decoder: Decoder, keep_alive: bool, pool: Arc<Pool>) -> Self {
        let mut body = Self {
            conn: Some(conn),
            decoder,
            keep_alive,
            pool,
            eof: false,
            lingering: None,
            in_background: false,
        };
        if body.decoder.is_done() {
            body.finish();
        }
        body
    }

    /// The body is over: the connection goes back when it can carry another exchange.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && self.decoder.is_done()
        {
            self.pool.checkin(conn);
        }
    }

    /// Reads the rest and throws it away; `Some` when the body ended well.
    async fn drain(&mut self) -> Option<()> {
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
            frame.ok()?;
        }
        Some(())
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
        let short = self.decoder.remaining().is_some_and(|n| n <= DRAIN_LIMIT);
        if !short || !self.keep_alive || self.in_background {
            return;
        }
        let mut rest = UpstreamBody {
            conn: Some(conn),
            decoder: self.decoder.clone(),
            keep_alive: true,
            pool: self.pool.clone(),
            eof: self.eof,
            lingering: None,
            in_background: true,
        };
        let left_behind = self.lingering.as_ref().map(Lingering::left_behind);
        finish_in_background(&self.pool, left_behind, async move { rest.drain().await });
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.buf, this.eof) {
                // Readers stop at the end of a body of known length without polling for `None`:
                // the connection goes back as soon as the last bytes are out.
                Ok(Decoded::Data(data)) => {
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Trailers(trailers)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {
                    let want = this
                        .decoder
                        .remaining()
                        .map_or(BODY_READ, |n| n.min(BODY_READ as u64) as usize);
                    match ready!(conn.poll_fill(cx, want)) {
                        Ok(0) => this.eof = true,
                        Ok(_) => {}
                        Err(err) => {
                            this.conn = None;
                            return Poll::Ready(Some(Err(err)));
                        }
                    }
                }
                Err(err) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done() || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
// Its origin is shared with the upstream phase's tests.
pub(super) mod tests;
