//! What the phases of one request recorded, written out once when its response is over: the
//! metrics and the access log line, with the bytes really sent and any error mid-body.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::ConnInfo;
use super::error::ErrorKind;
use crate::body::{BoxBody, BoxError};
use crate::metrics::Metrics;
use crate::snapshot::Route;

/// The record of one request, filled in by the phases as they run.
pub struct Record {
    metrics: Arc<Metrics>,
    conn: Arc<ConnInfo>,
    start: Instant,
    pub route: Option<Arc<Route>>,
    pub upstream: Option<SocketAddr>,
    /// How long the upstream took to send its response headers.
    pub upstream_time: Option<Duration>,
    pub request_id: Option<HeaderValue>,
    /// The failure that decided the answer (or broke it off).
    pub error: Option<ErrorKind>,
    /// Only when access lines are written.
    access: Option<Box<AccessFields>>,
    status: u16,
    written: bool,
}

/// What an access line says of a request, copied before the request moves on.
struct AccessFields {
    method: Method,
    host: String,
    path: String,
}

// === impl Record ===

impl Record {
    pub fn start<B>(
        metrics: &Arc<Metrics>,
        conn: &Arc<ConnInfo>,
        req: &http::Request<B>,
        access_log: bool,
    ) -> Self {
        let access = access_log.then(|| {
            Box::new(AccessFields {
                method: req.method().clone(),
                host: super::route::request_host(req)
                    .unwrap_or_default()
                    .to_owned(),
                path: req.uri().path().to_owned(),
            })
        });
        conn.request_started();
        Self {
            metrics: metrics.clone(),
            conn: conn.clone(),
            start: Instant::now(),
            route: None,
            upstream: None,
            upstream_time: None,
            request_id: None,
            error: None,
            access,
            status: 0,
            written: false,
        }
    }

    /// Whether the access line will be written (then phases keep what it shows).
    pub fn logs_access(&self) -> bool {
        self.access.is_some()
    }

    /// Hands the response on; the record is written when its body is over (at once when it
    /// has none).
    pub fn respond<B>(mut self, resp: Response<B>) -> Response<BoxBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        self.status = resp.status().as_u16();
        if resp.body().is_end_stream() {
            self.write(0);
            return resp.map(|b| b.map_err(Into::into).boxed_unsync());
        }
        resp.map(|inner| {
            Recorded {
                inner,
                record: Some(self),
                bytes: 0,
            }
            .boxed_unsync()
        })
    }

    /// Metrics and the access line, once.
    fn write(&mut self, bytes: u64) {
        if self.written {
            return;
        }
        self.written = true;
        self.conn
            .request_done(self.error != Some(ErrorKind::ClientGone));
        let metrics = &self.metrics;
        let status = self.status;
        match &self.route {
            Some(route) => route.counters.for_status(route, metrics, status).inc(),
            None => metrics.unrouted(status).inc(),
        }
        if let Some(kind) = self.error {
            metrics
                .proxy_errors
                .with_label_values(&[kind.label()])
                .inc();
        }
        let elapsed = self.start.elapsed();
        metrics.request_duration.observe(elapsed.as_secs_f64());
        if let Some(t) = self.upstream_time {
            metrics.upstream_duration.observe(t.as_secs_f64());
        }
        if let Some(access) = &self.access {
            tracing::info!(
                target: "access",
                method = %access.method, host = %access.host, path = %access.path, status, bytes,
                duration_us = elapsed.as_micros() as u64,
                upstream = self.upstream.map(|a| a.to_string()),
                request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()),
                error = self.error.map(ErrorKind::label),
                client = %self.conn.remote.ip(),
            );
        }
    }
}

impl Drop for Record {
    /// A record dropped unwritten: the client went away before its response (an HTTP/2
    /// RST_STREAM, a closed connection).
    fn drop(&mut self) {
        if !self.written {
            self.error.get_or_insert(ErrorKind::ClientGone);
            if self.status == 0 {
                self.status = ErrorKind::ClientGone.status().as_u16();
                self.conn.abandoned();
            }
            self.write(0);
        }
    }
}

/// A response body that writes its request's record when it ends, fails or is dropped.
struct Recorded<B> {
    inner: B,
    record: Option<Record>,
    bytes: u64,
}

impl<B> Body for Recorded<B>
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
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
            }
            Some(Err(_)) => this.finish(Some(ErrorKind::UpstreamBodyCut)),
            None => this.finish(None),
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Recorded<B> {
    fn finish(&mut self, error: Option<ErrorKind>) {
        if let Some(mut record) = self.record.take() {
            if error.is_some() {
                record.error = error;
            }
            record.write(self.bytes);
        }
    }
}

impl<B> Drop for Recorded<B> {
    fn drop(&mut self) {
        // Dropped before its end: the client went away mid-body.
        self.finish(Some(ErrorKind::ClientGone));
    }
}
