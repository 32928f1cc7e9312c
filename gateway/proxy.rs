//! The data plane: route each request by host and path, then proxy it, serve files, or answer.

pub mod headers;
pub mod server;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;

use crate::metrics::ProxyError;
use crate::shared::Shared;
use crate::snapshot::{Backend, ServiceBackend, UpstreamProtocol};
use headers::Forwarded;

/// Error type of every body the proxy hands on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The one body type of requests to upstreams and responses to clients.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// A short plain-text answer from Gatehouse itself.
pub fn short_response(status: StatusCode, text: &'static str) -> Response<BoxBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What a connection knows about itself, for every request on it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The listener's port, as a header value for X-Forwarded-Port.
    pub port: HeaderValue,
    /// The client's IP as a header value, for X-Forwarded-For.
    pub client_ip: HeaderValue,
    /// The port HTTPS redirects point at (`--https-redirect-port`).
    pub https_port: u16,
}

// === impl ConnInfo ===

impl ConnInfo {
    pub fn new(remote: SocketAddr, scheme: &'static str, port: HeaderValue, https_port: u16) -> Self {
        let client_ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { remote, scheme, port, client_ip, https_port }
    }
}

/// Handles one request from a client.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    // ACME HTTP-01 answers, on every host, before routing (one prefix compare otherwise).
    if let Some(resp) = crate::acme::answer_http01(&shared, req.uri().path()) {
        return resp;
    }
    let start = Instant::now();
    let route = {
        let snapshot = shared.snapshot.load();
        let host = request_host(&req).unwrap_or_default();
        snapshot.routes.lookup(host, req.uri().path()).cloned()
    };
    // Copied only when they are logged: the request itself moves on to the backend.
    let logged = shared.access_log.then(|| AccessFields {
        method: req.method().clone(),
        host: request_host(&req).unwrap_or_default().to_owned(),
        path: req.uri().path().to_owned(),
    });
    let mut request_id = None;

    let (resp, upstream) = match &route {
        None => (proxy_error(&shared, ProxyError::NoRoute), None),
        Some(route)
            if route.ssl_redirect
                && conn.scheme == "http"
                && !req.uri().path().starts_with(crate::tls::ACME_CHALLENGE_PREFIX) =>
        {
            let host = request_host(&req).unwrap_or_default();
            let resp = crate::tls::redirect_to_https(host, req.uri(), conn.https_port);
            (resp, None)
        }
        Some(route) => match &route.backend {
            Backend::Unavailable { .. } => (proxy_error(&shared, ProxyError::NoEndpoint), None),
            Backend::Static(site) => (site.serve(req).await, None),
            Backend::Service(backend) => {
                let mut req = req;
                let id = headers::ensure_request_id(req.headers_mut());
                request_id = logged.is_some().then_some(id);
                forward(&shared, &conn, backend, req).await
            }
        },
    };

    let status = resp.status().as_u16();
    match &route {
        Some(route) => route.counters.for_status(route, &shared.metrics, status).inc(),
        None => shared.metrics.unrouted(status).inc(),
    }
    shared
        .metrics
        .request_duration
        .observe(start.elapsed().as_secs_f64());
    if let Some(AccessFields { method, host, path }) = logged {
        let bytes = resp.body().size_hint().exact();
        tracing::info!(
            target: "access",
            method = %method, host = %host, path = %path, status, bytes,
            duration_ms = start.elapsed().as_secs_f64() * 1000.0,
            upstream = upstream.map(|a| a.to_string()),
            request_id = request_id.as_ref().and_then(|v| v.to_str().ok()),
            client = %conn.remote.ip(),
        );
    }
    resp
}

/// What an access log line says of a request, kept while the request itself is handled.
struct AccessFields {
    method: http::Method,
    host: String,
    path: String,
}

/// The host a request is for: the URI authority (HTTP/2, absolute-form) or the Host header.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

fn proxy_error(shared: &Shared, error: ProxyError) -> Response<BoxBody> {
    shared
        .metrics
        .proxy_errors
        .with_label_values(&[error.label()])
        .inc();
    match error {
        ProxyError::NoRoute => {
            short_response(StatusCode::NOT_FOUND, "no route for this host and path\n")
        }
        ProxyError::NoEndpoint => short_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ready endpoint for this route\n",
        ),
        ProxyError::UpstreamFailed => short_response(StatusCode::BAD_GATEWAY, "upstream failed\n"),
        ProxyError::UpstreamTimeout => short_response(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream did not answer in time\n",
        ),
    }
}

/// Proxies a request to one of the backend's endpoints; a failed connect tries the next one
/// when the request has no body (nothing was sent, so a retry is safe).
async fn forward(
    shared: &Shared,
    conn: &ConnInfo,
    backend: &ServiceBackend,
    mut req: Request<Incoming>,
) -> (Response<BoxBody>, Option<SocketAddr>) {
    let mut candidates = shared.upstreams.candidates(backend).peekable();
    if candidates.peek().is_none() {
        return (proxy_error(shared, ProxyError::NoEndpoint), None);
    }
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    // HTTP/2 requests carry the host in :authority; HTTP/1.1 upstreams need a Host header.
    // The authority (also of an absolute-form HTTP/1.1 target) is what the request was routed
    // by, so it replaces any Host header sent beside it (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
    if let Some(authority) = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, authority);
    }
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    let host = parts.headers.get(header::HOST).cloned();
    let fwd = Forwarded {
        client_ip: &conn.client_ip,
        proto: conn.scheme,
        port: &conn.port,
        host: host.as_ref(),
    };
    headers::set_forwarded(&mut parts.headers, fwd);
    parts.version = match backend.protocol {
        UpstreamProtocol::Http | UpstreamProtocol::Https => Version::HTTP_11,
        UpstreamProtocol::H2c => Version::HTTP_2,
    };
    let scheme = match backend.protocol {
        UpstreamProtocol::Https => http::uri::Scheme::HTTPS,
        UpstreamProtocol::Http | UpstreamProtocol::H2c => http::uri::Scheme::HTTP,
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    // Without a body nothing has been sent when a connect fails, so another endpoint may be
    // tried; the request head is kept for that only when there is another endpoint to try.
    let retryable = body.is_end_stream();
    let mut body = Some(body.map_err(BoxError::from).boxed_unsync());
    let mut parts = Some(parts);
    let client = shared.upstreams.client_for(backend);

    while let Some(i) = candidates.next() {
        let addr = backend.endpoints[i];
        let last = candidates.peek().is_none();
        let mut head = match (retryable && !last, parts.take()) {
            (true, Some(p)) => {
                let copy = p.clone();
                parts = Some(p);
                copy
            }
            (_, Some(p)) => p,
            (_, None) => break,
        };
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(scheme.clone());
        uri.authority = Some(backend.authority(i).clone());
        uri.path_and_query = Some(path_and_query.clone());
        let Ok(uri) = Uri::from_parts(uri) else {
            return (short_response(StatusCode::BAD_REQUEST, "bad request target\n"), None);
        };
        head.uri = uri;
        let upstream_req = Request::from_parts(head, body.take().unwrap_or_else(empty_body));
        let started = Instant::now();
        let result = tokio::time::timeout(
            shared.upstreams.settings.response_timeout,
            client.request(upstream_req),
        )
        .await;
        match result {
            Ok(Ok(resp)) => {
                shared
                    .metrics
                    .upstream_duration
                    .observe(started.elapsed().as_secs_f64());
                return (upstream_response(resp, client_upgrade), Some(addr));
            }
            Ok(Err(err)) if err.is_connect() => {
                tracing::warn!(upstream = %addr, service = %backend.service, error = %err, "upstream connect failed; endpoint marked down");
                shared.upstreams.mark_down(addr);
                if retryable && !last {
                    continue;
                }
                return (proxy_error(shared, ProxyError::UpstreamFailed), Some(addr));
            }
            Ok(Err(err)) => {
                tracing::warn!(upstream = %addr, service = %backend.service, error = %err, "upstream request failed");
                return (proxy_error(shared, ProxyError::UpstreamFailed), Some(addr));
            }
            Err(_) => {
                return (proxy_error(shared, ProxyError::UpstreamTimeout), Some(addr));
            }
        }
    }
    (proxy_error(shared, ProxyError::UpstreamFailed), None)
}

fn empty_body() -> BoxBody {
    http_body_util::Empty::new()
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// Hands an upstream response on. A `101 Switching Protocols` answer to an upgrade request
/// joins the two upgraded connections and copies bytes both ways until either side closes.
fn upstream_response(
    mut resp: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<BoxBody> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    match (switching, client_upgrade) {
        (true, Some(client_upgrade)) => {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let (mut client, mut upstream) =
                            (TokioIo::new(client), TokioIo::new(upstream));
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(err) => tracing::debug!(error = %err, "upgrade failed"),
                }
            });
            headers::remove_hop_by_hop(resp.headers_mut(), true);
        }
        _ => headers::remove_hop_by_hop(resp.headers_mut(), false),
    }
    resp.map(|b| b.map_err(BoxError::from).boxed_unsync())
}
