//! Request bodies on their way upstream: at most so many bytes, and no long silence between two
//! pieces (a client that announces a gigabyte and then sends nothing holds nothing for long).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::ErrorKind;
use crate::body::BoxError;

/// Limits of request bodies.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest request body accepted (413 beyond); `None` for no limit.
    pub max_bytes: Option<u64>,
    /// Longest wait for the next piece of a request body (408 or a cut-off upstream request).
    pub read_timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_bytes: Some(DEFAULT_MAX_BODY),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Default request body limit: 100 MiB.
pub const DEFAULT_MAX_BODY: u64 = 100 * 1024 * 1024;

/// Refuses a request whose declared length is over the limit before anything is sent upstream.
pub fn check_declared(headers: &HeaderMap, limits: &BodyLimits) -> Result<(), ErrorKind> {
    let Some(max) = limits.max_bytes else {
        return Ok(());
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max => Err(ErrorKind::BodyTooLarge),
        _ => Ok(()),
    }
}

/// Why a limited body stopped, for the phase that sees the upstream request fail.
#[derive(Clone, Debug, Default)]
pub struct Outcome(Arc<AtomicU8>);

const TOO_LARGE: u8 = 1;
const TOO_SLOW: u8 = 2;

// === impl Outcome ===

impl Outcome {
    /// The failure the body caused, if it did.
    pub fn error(&self) -> Option<ErrorKind> {
        match self.0.load(Ordering::Relaxed) {
            TOO_LARGE => Some(ErrorKind::BodyTooLarge),
            TOO_SLOW => Some(ErrorKind::ClientBodyTimeout),
            _ => None,
        }
    }

    fn set(&self, what: u8) {
        self.0.store(what, Ordering::Relaxed);
    }
}

/// A client's request body: none (see [`super::client_h1`], which serves only requests
/// without one), hyper's stream (HTTP/1.x), or an HTTP/2 stream's.
#[derive(Debug)]
pub enum ClientBody {
    Empty,
    Stream(Incoming),
    H2(super::client_h2::RequestBody),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Stream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Stream(body) => body.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Stream(body) => body.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
        }
    }
}

/// A request body under [`BodyLimits`].
pub struct LimitedBody {
    inner: ClientBody,
    remaining: Option<u64>,
    timeout: Duration,
    silence: Pin<Box<Sleep>>,
    outcome: Outcome,
}

// === impl LimitedBody ===

impl LimitedBody {
    pub fn new(inner: ClientBody, limits: &BodyLimits, outcome: Outcome) -> Self {
        Self {
            inner,
            remaining: limits.max_bytes,
            timeout: limits.read_timeout,
            silence: Box::pin(tokio::time::sleep(limits.read_timeout)),
            outcome,
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(remaining), Some(data)) = (this.remaining.as_mut(), frame.data_ref()) {
                    match remaining.checked_sub(data.len() as u64) {
                        Some(left) => *remaining = left,
                        None => {
                            this.outcome.set(TOO_LARGE);
                            return Poll::Ready(Some(Err("request body over the limit".into())));
                        }
                    }
                }
                let next = Instant::now() + this.timeout;
                this.silence.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => match this.silence.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.outcome.set(TOO_SLOW);
                    Poll::Ready(Some(Err("request body not received in time".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
