//! The admin listener: health, readiness, metrics and a dump of the routes in service.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::shared::Shared;

/// Serves the admin endpoints until `shutdown` fires, with the proxy listeners' header and
/// idle timeouts (a client trickling bytes holds nothing for long).
pub async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    settings: AdminSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(16);
    let builder = Arc::new(builder);
    loop {
        let (stream, _) = tokio::select! {
            accepted = crate::proxy::server::accept(&listener) => accepted,
            _ = shutdown.changed() => return,
        };
        let (shared, builder) = (shared.clone(), builder.clone());
        let routes = settings.routes;
        let timeout = settings.connection_timeout;
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &req, routes)) }
            });
            // Probes and scrapes are short: a connection older than this is closed.
            let _ = tokio::time::timeout(
                timeout,
                builder.serve_connection(TokioIo::new(stream), service),
            )
            .await;
        });
    }
}

/// How the admin listener serves.
#[derive(Clone, Copy, Debug)]
pub struct AdminSettings {
    /// Whether `/routes` (endpoint addresses, Secret names, file roots) is served.
    pub routes: bool,
    pub header_timeout: std::time::Duration,
    /// Longest life of one admin connection.
    pub connection_timeout: std::time::Duration,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            routes: true,
            header_timeout: std::time::Duration::from_secs(10),
            connection_timeout: std::time::Duration::from_secs(60),
        }
    }
}

fn answer(shared: &Shared, req: &Request<Incoming>, routes: bool) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if shared.readiness.is_ready() => {
            reply(StatusCode::OK, "text/plain", "ready\n".into())
        }
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(),
        ),
        "/routes" if !routes => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "/routes is turned off on this listener (--admin-routes=false)\n".into(),
        ),
        "/routes" => {
            let snapshot = shared.snapshot();
            let body = serde_json::json!({
                "hosts": crate::translate::describe_routes(&snapshot),
                "ingresses": snapshot.owned_ingresses.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                "warnings": snapshot.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                "tls": snapshot.tls.describe(),
                "acme": *shared.challenges.http01.certificates(),
            });
            reply(StatusCode::OK, "application/json", format!("{body:#}\n"))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz /readyz /metrics /routes\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
