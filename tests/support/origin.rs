//! Real origin servers (hyper) for tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Starts an origin on a free port that answers every request with a JSON echo:
/// `{"origin": NAME, "method", "path" (with query), "version", "headers": {...}, "body_len"}`.
pub async fn echo(name: &str) -> SocketAddr {
    let name: Arc<str> = name.into();
    serve(move |req: Request<Incoming>| {
        let name = name.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let headers: serde_json::Map<String, serde_json::Value> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let echo = serde_json::json!({
                "origin": &*name,
                "method": parts.method.as_str(),
                "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body_len": body.len(),
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(echo.to_string())))
                .expect("response")
        }
    })
    .await
}

/// Starts a server on a free loopback port with the given handler (HTTP/1.1 and h2c).
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
