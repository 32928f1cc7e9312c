//! Per-route upstream timeouts (`proxy-connect-timeout`, `proxy-read-timeout`,
//! `proxy-send-timeout`) with nginx's meaning: the connect timeout bounds establishing a
//! connection; the send timeout bounds the time between two writes of the request body to the
//! upstream; the read timeout bounds the time between two reads from the upstream, from the end
//! of the request to the response head and then between the body's chunks.
//!
//! Only requests of a route that sets one of them come here; the others keep the global
//! `--upstream-*` settings and pay nothing. A request's [`Progress`] is shared by its body (as
//! the upstream connection takes it) and the [`watch`] that waits for the response head.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::{ErrorKind, ProxyError};
use crate::body::{BoxBody, BoxError};
use crate::snapshot::policy::Timeouts;

/// The timeouts of one request on a route that sets any (the global ones fill the gaps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effective {
    pub connect: Duration,
    pub read: Duration,
    pub send: Duration,
}

// === impl Effective ===

impl Effective {
    /// The route's timeouts over the global connect and response timeouts (the response
    /// timeout also bounds sending, as nginx's send and read timeouts share a default).
    pub fn new(route: &Timeouts, connect: Duration, response: Duration) -> Self {
        Self {
            connect: route.connect.unwrap_or(connect),
            read: route.read.unwrap_or(response),
            send: route.send.unwrap_or(response),
        }
    }
}

/// Where a request is, for the watch: still connecting, sending its body (the upstream's turn
/// or the client's), or sent and waiting for the response head.
const CONNECTING: u8 = 0;
const SENDING: u8 = 1;
const CLIENT_SLOW: u8 = 2;
const WAITING: u8 = 3;

/// How far one request has got, and when it last moved.
#[derive(Debug)]
pub struct Progress {
    base: Instant,
    /// Milliseconds from `base` to the last move.
    last_ms: AtomicU64,
    phase: AtomicU8,
    body_done: AtomicBool,
}

// === impl Progress ===

impl Progress {
    pub fn new(has_body: bool) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            phase: AtomicU8::new(CONNECTING),
            body_done: AtomicBool::new(!has_body),
        })
    }

    fn moved(&self, phase: u8) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// A connection to an endpoint is ready for the request: the send (or read) clock starts.
    pub fn connected(&self) {
        self.moved(if self.body_done.load(Ordering::Relaxed) {
            WAITING
        } else {
            SENDING
        });
    }

    /// When the request stalls if nothing moves meanwhile; `None` while connecting (bounded
    /// by the connect timeout) or while the client is the slow side.
    fn deadline(&self, t: &Effective) -> Option<Instant> {
        let last = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Relaxed) {
            SENDING => Some(last + t.send),
            WAITING => Some(last + t.read),
            _ => None,
        }
    }
}

/// How often a watch looks again while no deadline runs (connecting, or a slow client).
const RECHECK: Duration = Duration::from_millis(250);

/// Waits for `fut` (an exchange up to its response head) unless the request stalls: 504 when
/// the upstream does not take the body or does not answer within the timeouts.
///
/// `fut` is pinned by the caller: taken by value, it would be stored here a second time (and
/// copied in) for every request.
pub async fn watch<F: Future>(
    mut fut: Pin<&mut F>,
    progress: &Progress,
    t: &Effective,
) -> Result<F::Output, ProxyError> {
    loop {
        let at = progress
            .deadline(t)
            .unwrap_or_else(|| Instant::now() + RECHECK);
        tokio::select! {
            biased;
            out = fut.as_mut() => return Ok(out),
            () = tokio::time::sleep_until(at) => {
                // Something may have moved since the deadline was taken.
                if progress.deadline(t).is_some_and(|d| d <= Instant::now()) {
                    let what = if progress.phase.load(Ordering::Relaxed) == SENDING {
                        "upstream did not take the request body within proxy-send-timeout"
                    } else {
                        "upstream did not answer within proxy-read-timeout"
                    };
                    return Err(ProxyError::with_cause(ErrorKind::UpstreamTimeout, what));
                }
            }
        }
    }
}

/// Waits for `fut` until `global_deadline` (the global response timeout, counted by the caller
/// from when it started: no clock read here), or within the route's timeouts (the caller tells
/// `progress` when the request has a connection). `fut` is pinned by the caller, as for
/// [`watch`].
pub async fn bounded<F: Future>(
    fut: Pin<&mut F>,
    global_deadline: Instant,
    timed: Option<(&Effective, &Progress)>,
) -> Result<F::Output, ProxyError> {
    match timed {
        None => tokio::time::timeout_at(global_deadline, fut)
            .await
            .map_err(|_| ErrorKind::UpstreamTimeout.into()),
        Some((t, progress)) => watch(fut, progress, t).await,
    }
}

/// A request body that tells its [`Progress`] when the upstream connection takes a chunk
/// (the upstream's turn again) and when it waits for the client (not the upstream's fault).
pub struct Sending {
    inner: BoxBody,
    progress: Arc<Progress>,
}

// === impl Sending ===

impl Sending {
    pub fn boxed(inner: BoxBody, progress: Arc<Progress>) -> BoxBody {
        use http_body_util::BodyExt;
        Self { inner, progress }.boxed_unsync()
    }
}

impl Body for Sending {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let p = &this.progress;
        match &polled {
            Poll::Pending => p.phase.store(CLIENT_SLOW, Ordering::Relaxed),
            Poll::Ready(Some(Ok(_))) if !this.inner.is_end_stream() => p.moved(SENDING),
            Poll::Ready(Some(Err(_))) => {}
            Poll::Ready(_) => {
                p.body_done.store(true, Ordering::Relaxed);
                p.moved(WAITING);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body cut off when the upstream sends nothing for the read timeout (the status
/// is out already: the client sees the body break off, and the request is counted as
/// `upstream_body_cut`).
pub struct ReadIdle<B> {
    inner: B,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The sleep runs for the current wait (set at the first `Pending` after a chunk, so a
    /// client slow to read does not count against the upstream).
    armed: bool,
}

// === impl ReadIdle ===

impl<B> ReadIdle<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    pub fn boxed(inner: B, timeout: Duration) -> BoxBody {
        use http_body_util::BodyExt;
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
        .boxed_unsync()
    }
}

impl<B> Body for ReadIdle<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if !this.armed {
            this.armed = true;
            this.sleep.as_mut().reset(Instant::now() + this.timeout);
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(
                "upstream sent nothing within proxy-read-timeout mid-body".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn effective(read: u64, send: u64) -> Effective {
        Effective {
            connect: Duration::from_secs(5),
            read: Duration::from_millis(read),
            send: Duration::from_millis(send),
        }
    }

    #[tokio::test]
    async fn waiting_for_the_head_past_the_read_timeout_is_a_504() {
        let progress = Progress::new(false);
        progress.connected();
        let err = watch(
            std::pin::pin!(std::future::pending::<()>()),
            &progress,
            &effective(300, 60_000),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::UpstreamTimeout);
        assert_eq!(err.kind.status(), 504);
    }

    #[tokio::test]
    async fn while_connecting_the_read_timeout_does_not_run() {
        let progress = Progress::new(false);
        let fut = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            7
        };
        let out = watch(std::pin::pin!(fut), &progress, &effective(300, 60_000))
            .await
            .unwrap();
        assert_eq!(out, 7);
    }

    #[tokio::test]
    async fn a_body_the_upstream_does_not_take_is_cut_by_the_send_timeout() {
        let progress = Progress::new(true);
        progress.connected();
        let err = watch(
            std::pin::pin!(std::future::pending::<()>()),
            &progress,
            &effective(60_000, 200),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("proxy-send-timeout"), "{err}");
    }

    #[tokio::test]
    async fn a_stalled_response_body_breaks_off_after_the_read_timeout() {
        let (tx, body) = channel_body();
        let mut body = ReadIdle::boxed(body, Duration::from_millis(300));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(err.to_string().contains("proxy-read-timeout"), "{err}");
        drop(tx);
    }

    type Chunk = Result<Frame<Bytes>, BoxError>;
    type ChannelBody = http_body_util::StreamBody<futures_util::stream::BoxStream<'static, Chunk>>;

    fn channel_body() -> (tokio::sync::mpsc::Sender<Chunk>, ChannelBody) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, http_body_util::StreamBody::new(Box::pin(stream) as _))
    }
}
