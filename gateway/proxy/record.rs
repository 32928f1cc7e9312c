//! What the phases of one request recorded, written out once when its response is over: the
//! metrics and the access log line, with the bytes really sent and any error mid-body.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use std::borrow::Cow;

use http::uri::Authority;
use http::{HeaderValue, Method, Response, Version, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::ConnInfo;
use super::error::ErrorKind;
use crate::body::{BoxBody, BoxError};
use crate::metrics::Metrics;
use crate::snapshot::{Backend, Route};

/// The record of one request, filled in by the phases as they run.
pub struct Record {
    metrics: Arc<Metrics>,
    conn: Arc<ConnInfo>,
    start: Instant,
    method: Method,
    /// The host as the client wrote it (a shared slice of the request, not a copy).
    host: Option<HostRef>,
    /// Request line, headers and declared body length, as ingress-nginx's `request_length`.
    request_size: u64,
    pub route: Option<Arc<Route>>,
    pub upstream: Option<SocketAddr>,
    /// How long the upstream took to send its response headers.
    pub upstream_time: Option<Duration>,
    /// Connects that failed (or pooled connections found closed) before the request went out.
    pub connect_failures: u32,
    /// Further endpoints the request was sent to after such a failure.
    pub retries: u32,
    pub request_id: Option<HeaderValue>,
    /// The failure that decided the answer (or broke it off).
    pub error: Option<ErrorKind>,
    /// Only when access lines are written.
    access: Option<Box<AccessFields>>,
    /// Only when tracing is on and the trace sampled.
    pub span: Option<Box<crate::otel::ActiveSpan>>,
    /// The request's place in its route's `limit-connections`, given back with the record
    /// (when the response body ends or the client goes).
    pub slot: Option<super::conn_limit::Slot>,
    status: u16,
    written: bool,
}

enum HostRef {
    Header(HeaderValue),
    Authority(Authority),
}

impl HostRef {
    fn as_str(&self) -> &str {
        match self {
            HostRef::Header(h) => h.to_str().unwrap_or_default(),
            HostRef::Authority(a) => a.as_str(),
        }
    }
}

/// What an access line says of a request, copied before the request moves on.
struct AccessFields {
    path: String,
    query: Option<String>,
    protocol: Version,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

// === impl Record ===

impl Record {
    pub fn start<B>(
        metrics: &Arc<Metrics>,
        conn: &Arc<ConnInfo>,
        req: &http::Request<B>,
        access_log: bool,
    ) -> Self {
        let headers = req.headers();
        let access = access_log.then(|| {
            Box::new(AccessFields {
                path: req.uri().path().to_owned(),
                query: req.uri().query().map(str::to_owned),
                protocol: req.version(),
                user_agent: headers.get(header::USER_AGENT).cloned(),
                referer: headers.get(header::REFERER).cloned(),
            })
        });
        let host = match req.uri().authority() {
            Some(authority) => Some(HostRef::Authority(authority.clone())),
            None => headers.get(header::HOST).cloned().map(HostRef::Header),
        };
        conn.request_started();
        Self {
            metrics: metrics.clone(),
            conn: conn.clone(),
            start: Instant::now(),
            method: req.method().clone(),
            host,
            request_size: request_size(req),
            route: None,
            upstream: None,
            upstream_time: None,
            connect_failures: 0,
            retries: 0,
            request_id: access_log
                .then(|| headers.get(&super::headers::X_REQUEST_ID).cloned())
                .flatten(),
            error: None,
            access,
            span: None,
            slot: None,
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
        // hyper stops polling a body once it has written the length it declared, without
        // asking for its end: that is the end too, not a client gone mid-body.
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .or_else(|| resp.body().size_hint().exact());
        resp.map(|inner| {
            Recorded {
                inner,
                record: Some(self),
                bytes: 0,
                declared,
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
        let host = self.host.as_ref().map_or("", HostRef::as_str);
        let route = metrics.for_route(self.route.as_deref());
        route.count(host, &self.method, status);
        if self.connect_failures > 0 {
            metrics
                .upstream_connect_errors
                .inc_by(u64::from(self.connect_failures));
        }
        if self.retries > 0 {
            metrics.upstream_retries.inc_by(u64::from(self.retries));
        }
        if let Some(kind) = self.error {
            metrics
                .proxy_errors
                .with_label_values(&[kind.label()])
                .inc();
        }
        let elapsed = self.start.elapsed();
        route.duration().observe(elapsed.as_secs_f64());
        route.request_size().observe(self.request_size as f64);
        route.response_size().observe(bytes as f64);
        if let Some(t) = self.upstream_time {
            route.upstream_duration().observe(t.as_secs_f64());
        }
        if let Some(access) = &self.access {
            self.log_access(access, host, bytes, elapsed);
        }
        if let Some(span) = self.span.take() {
            let (namespace, ingress, service) = route_names(self.route.as_deref());
            span.end(crate::otel::SpanEnd {
                method: &self.method,
                host,
                status,
                namespace,
                ingress,
                service: service.as_deref(),
                upstream: self.upstream,
                error: self.error.map(ErrorKind::label),
                duration: elapsed,
            });
        }
    }

    /// The access line (fields named as in README.md; ingress-nginx's names where a log
    /// pipeline looks for them).
    fn log_access(&self, access: &AccessFields, host: &str, bytes: u64, elapsed: Duration) {
        let request_id = match &self.request_id {
            Some(id) => id.to_str().ok().map(Cow::Borrowed),
            // Answered without an upstream (static files, redirects, errors): an id of its own,
            // so every line can be pointed at.
            None => Some(Cow::Owned(
                super::headers::new_request_id()
                    .to_str()
                    .unwrap_or_default()
                    .to_owned(),
            )),
        };
        let (namespace, ingress, service) = route_names(self.route.as_deref());
        let header = |v: &Option<HeaderValue>| {
            v.as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        tracing::info!(
            target: "access",
            method = %self.method, host = %host, path = %access.path,
            query = access.query.as_deref(),
            protocol = ?access.protocol,
            scheme = self.conn.scheme,
            status = self.status,
            bytes,
            request_length = self.request_size,
            duration_us = elapsed.as_micros() as u64,
            namespace, ingress, service = service.as_deref(),
            upstream = self.upstream.map(|a| a.to_string()),
            upstream_status = self.upstream_time.map(|_| self.status),
            upstream_response_time_us = self.upstream_time.map(|t| t.as_micros() as u64),
            request_id = request_id.as_deref(),
            error = self.error.map(ErrorKind::label),
            client = %self.conn.remote.ip(),
            http_user_agent = header(&access.user_agent),
            http_referer = header(&access.referer),
        );
    }
}

/// The Ingress's namespace and name and the backend of a route, for the access line.
fn route_names(route: Option<&Route>) -> (Option<&str>, Option<&str>, Option<Cow<'_, str>>) {
    let Some(route) = route else {
        return (None, None, None);
    };
    let service = match &route.backend {
        Backend::Service(s) => Some(Cow::Borrowed(s.service.name.as_str())),
        Backend::Static(s) => Some(Cow::Owned(format!("static:{}", s.site.key.name))),
        Backend::Unavailable { .. } => None,
    };
    (
        Some(&route.ingress.namespace),
        Some(&route.ingress.name),
        service,
    )
}

/// ingress-nginx's `request_length`: request line, headers and body, the body by its declared
/// length (a chunked body counts as 0).
fn request_size<B>(req: &http::Request<B>) -> u64 {
    let line = req.method().as_str().len() + req.uri().path().len() + 12;
    // The declared body length is picked up on the way through the fields: a lookup of its
    // own would hash the name again.
    let (mut headers, mut body) = (0usize, None);
    for (name, value) in req.headers() {
        headers += name.as_str().len() + value.len() + 4;
        if body.is_none() && name == header::CONTENT_LENGTH {
            body = Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0),
            );
        }
    }
    (line + headers) as u64 + body.unwrap_or(0)
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
    /// The body's length as the response declared it, if it did.
    declared: Option<u64>,
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
                if this.inner.is_end_stream() || this.declared == Some(this.bytes) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_size_counts_the_request_line_the_fields_and_the_declared_body() {
        let req = http::Request::post("/upload")
            .header("host", "a.test")
            .header("content-length", "1000")
            .body(())
            .unwrap();
        // "POST /upload HTTP/1.1\r\n" = 4 + 7 + 12; "host: a.test\r\n" = 4 + 6 + 4;
        // "content-length: 1000\r\n" = 14 + 4 + 4; then the body.
        assert_eq!(request_size(&req), 23 + 14 + 22 + 1000);
        let without_body = http::Request::get("/").body(()).unwrap();
        assert_eq!(request_size(&without_body), 3 + 1 + 12);
        let unreadable = http::Request::post("/")
            .header("content-length", "lots")
            .body(())
            .unwrap();
        assert_eq!(request_size(&unreadable), 4 + 1 + 12 + 14 + 4 + 4);
    }
}
