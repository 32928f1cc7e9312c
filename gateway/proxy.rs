//! The data plane. A request goes through phases, each a unit of its own:
//!
//! ```text
//! listener (server) -> ACME answer -> route -> policy -> redirect | static file | upstream
//! ```
//!
//! A phase that answers ends the request; a failure is one [`ProxyError`] whose kind decides
//! the answer. What the phases learn goes into the request's [`Record`], written out once when
//! the response is over.

pub mod balance;
pub mod challenge;
pub mod client_h1;
pub mod client_h2;
pub mod client_io;
pub mod conn_limit;
pub mod connector;
pub mod error;
pub mod error_pages;
pub mod external_auth;
pub mod h2_streams;
pub mod headers;
pub mod lingering;
pub mod policy;
pub mod record;
pub mod request_body;
pub mod route;
pub mod server;
pub mod sni;
mod spare;
pub mod static_files;
mod task_wakes;
pub mod timeouts;
pub mod upstream;
pub mod vars;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use http::header::HeaderValue;
use http::{Request, Response};
use request_body::ClientBody;

pub use crate::body::{BoxBody, BoxError, short_response};
pub use error::{ErrorKind, ProxyError};
use record::Record;

use crate::shared::DataPlane;
use crate::snapshot::Backend;

/// What a connection knows about itself, for every request on it.
#[derive(Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The listener's port, as a header value for X-Forwarded-Port.
    pub port: HeaderValue,
    /// The client's IP as a header value, for X-Forwarded-For and X-Real-IP.
    pub client_ip: HeaderValue,
    /// The port HTTPS redirects point at (`--https-redirect-port`).
    pub https_port: u16,
    /// The peer is a proxy whose X-Forwarded-For is trusted.
    pub trusted_peer: bool,
    /// `--trusted-proxies`, for finding the client address behind them.
    pub trusted_proxies: Arc<crate::snapshot::policy::CidrSet>,
    /// Limits of request bodies on this listener.
    pub body_limits: request_body::BodyLimits,
    /// Requests the client gave up on before their response (HTTP/2 resets), and requests
    /// answered; see [`ConnInfo::abandoned`].
    abandoned: AtomicU32,
    answered: AtomicU32,
    told_to_go: std::sync::atomic::AtomicBool,
    /// Notified when the client abandons requests faster than it lets them finish: the
    /// connection's watch logs and counts it (the HTTP/2 connection closes itself, seeing
    /// [`ConnInfo::told_to_go`]).
    pub too_many_resets: tokio::sync::Notify,
    /// Requests started and not yet over, for the idle timeout.
    in_flight: AtomicU32,
    /// When the last request ended, in milliseconds since `opened`.
    last_done_ms: AtomicU64,
    opened: tokio::time::Instant,
    /// Where static files go by `sendfile` (HTTP/1.x on a plain socket only).
    file_regions: std::sync::OnceLock<Arc<client_io::FileRegions>>,
    /// Upstream work of requests the client abandoned, still going on (HTTP/2 only: there it
    /// counts against the stream limit).
    lingering: std::sync::OnceLock<Arc<lingering::Lingering>>,
    /// HTTP/2 streams started for the connection's task to run, and those seen waiting on the
    /// client (for the send timeout).
    pub h2_streams: h2_streams::ConnStreams,
}

/// Abandoned requests a connection may have before the ratio to completed ones is checked.
const ABANDONED_ALLOWANCE: u32 = 100;

// === impl ConnInfo ===

impl ConnInfo {
    pub fn new(
        remote: SocketAddr,
        scheme: &'static str,
        port: HeaderValue,
        settings: &server::ServerSettings,
    ) -> Self {
        let client_ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            remote,
            scheme,
            port,
            client_ip,
            https_port: settings.https_redirect_port,
            trusted_peer: settings.trusted_proxies.contains(remote.ip()),
            trusted_proxies: settings.trusted_proxies.clone(),
            body_limits: settings.body_limits,
            abandoned: AtomicU32::new(0),
            answered: AtomicU32::new(0),
            told_to_go: std::sync::atomic::AtomicBool::new(false),
            too_many_resets: tokio::sync::Notify::new(),
            in_flight: AtomicU32::new(0),
            last_done_ms: AtomicU64::new(0),
            opened: tokio::time::Instant::now(),
            file_regions: std::sync::OnceLock::new(),
            lingering: std::sync::OnceLock::new(),
            h2_streams: Default::default(),
        }
    }

    /// Lets static files on this connection be sent with `sendfile` (see
    /// [`client_io::FileRegions`]): only for an HTTP/1.x connection on a plain socket.
    pub fn use_file_regions(&self, files: Arc<client_io::FileRegions>) {
        let _ = self.file_regions.set(files);
    }

    pub fn file_regions(&self) -> Option<&Arc<client_io::FileRegions>> {
        self.file_regions.get()
    }

    /// Has the upstream work this connection's reset streams leave behind counted (see
    /// [`lingering`]), and gives the count.
    pub fn count_lingering(&self) -> Arc<lingering::Lingering> {
        self.lingering.get_or_init(Default::default).clone()
    }

    /// Where the upstream work of a request the client abandoned is counted, if anywhere.
    pub fn lingering(&self) -> Option<&Arc<lingering::Lingering>> {
        self.lingering.get()
    }

    /// The client address the source rules, limits and `$remote_addr` see: the peer, or what
    /// X-Forwarded-For says behind `--trusted-proxies`.
    pub fn client_addr<B>(&self, req: &Request<B>) -> std::net::IpAddr {
        crate::snapshot::policy::client_addr(
            self.remote.ip(),
            req.headers().get_all(&headers::X_FORWARDED_FOR),
            &self.trusted_proxies,
        )
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn request_done(&self, answered: bool) {
        if answered {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_done_ms.store(now, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Since when the connection has had no request in flight; `None` while one is.
    pub fn idle_since(&self) -> Option<tokio::time::Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = std::time::Duration::from_millis(self.last_done_ms.load(Ordering::Relaxed));
        Some(self.opened + last)
    }

    /// The client abandoned so many requests that its connection is to close.
    pub fn told_to_go(&self) -> bool {
        self.told_to_go.load(Ordering::Relaxed)
    }

    /// Counts a request the client abandoned. Past the allowance, and while more than a third
    /// of its requests are abandoned, the client is told to go: a rapid-reset client pays with
    /// its connection, not the backends; a browser cancelling now and then never does.
    fn abandoned(&self) {
        let n = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= ABANDONED_ALLOWANCE
            && n.saturating_mul(2) > self.answered.load(Ordering::Relaxed)
            && !self.told_to_go.swap(true, Ordering::Relaxed)
        {
            self.too_many_resets.notify_one();
        }
    }
}

/// Handles one request from a client.
// Not an `async fn` (nor are the other functions on the request's and the connection's path
// that take a large value): an `async fn` keeps its arguments twice in its future's state, as
// captured and as moved into its body, and copies one to the other. A request is 260 bytes,
// a TLS stream 1.2 KiB.
#[allow(clippy::manual_async_fn)]
pub fn handle(
    plane: Arc<DataPlane>,
    conn: Arc<ConnInfo>,
    mut req: Request<ClientBody>,
) -> impl Future<Output = Response<BoxBody>> {
    async move {
        let span = match plane.tracer.get() {
            Some(tracer) => tracer.start(req.headers_mut()),
            None => None,
        };
        let mut record = Record::start(&plane.metrics, &conn, &req, plane.access_log);
        record.span = span;
        let http2 = req.version() == http::Version::HTTP_2;
        // Not boxed here: the listener boxes the whole per-request future once (server.rs), and a
        // second box would cost every request another allocation of the phases' ~4.7 KiB state and
        // another pointer to follow on each poll.
        let mut resp = match serve(&plane, &conn, req, &mut record).await {
            Ok(resp) => resp.finish(record),
            Err(err) => {
                if err.kind.side() == error::Side::Upstream {
                    tracing::warn!(upstream = ?record.upstream, error = %err, "upstream request failed");
                }
                record.error = Some(err.kind);
                record.respond(err.response())
            }
        };
        if http2 {
            headers::date_never_indexed(resp.headers_mut());
        }
        resp
    }
}

/// An answer on its way to the client: either a finished response or one whose body is still
/// streaming from an upstream.
// Lives on the stack for a moment per request: boxing the larger variant would cost an
// allocation per proxied request.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Done(Response<BoxBody>),
    Upstream(Response<connector::UpstreamBody>),
}

impl Answer {
    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        match self {
            Answer::Done(resp) => resp.headers_mut(),
            Answer::Upstream(resp) => resp.headers_mut(),
        }
    }

    fn status(&self) -> http::StatusCode {
        match self {
            Answer::Done(resp) => resp.status(),
            Answer::Upstream(resp) => resp.status(),
        }
    }

    fn finish(self, record: Record) -> Response<BoxBody> {
        match self {
            Answer::Done(resp) => record.respond(resp),
            Answer::Upstream(resp) => record.respond(resp),
        }
    }
}

/// The phases, in order.
// Not an `async fn`: see `proxy::handle`.
#[allow(clippy::manual_async_fn)]
fn serve(
    plane: &DataPlane,
    conn: &ConnInfo,
    mut req: Request<ClientBody>,
    record: &mut Record,
) -> impl Future<Output = Result<Answer, ProxyError>> {
    async move {
        // ACME HTTP-01 answers, on every host, before routing (one prefix compare otherwise).
        if let Some(resp) =
            challenge::answer_http01(&plane.challenges.http01, &plane.metrics, req.uri().path())
        {
            return Ok(Answer::Done(resp));
        }
        let route = route::route(&plane.snapshot.load(), &req)?;
        record.route = Some(route.clone());
        // HTTPS first, as ingress-nginx does: credentials and auth cookies never go over plain HTTP.
        if route.ssl_redirect
            && conn.scheme == "http"
            && !req.uri().path().starts_with(crate::acme::HTTP01_PREFIX)
        {
            let host = route::request_host(&req).unwrap_or_default();
            return Ok(Answer::Done(crate::tls::redirect_to_https(
                host,
                req.uri(),
                conn.https_port,
            )));
        }
        // A route without policy pays one pointer test.
        let mut auth_cookies = None;
        if let Some(policy) = &route.policy {
            if let Some(answer) =
                policy::check(&plane.policy, &plane.upstreams, policy, conn, &mut req).await?
            {
                return Ok(Answer::Done(answer));
            }
            auth_cookies = req.extensions_mut().remove::<external_auth::AuthCookies>();
            // After redirects, as nginx's limit_conn (preaccess) comes after its rewrites.
            record.slot = conn_limit::take(&plane.policy.in_progress, policy, conn, &req)?;
        }
        let cors = route
            .policy
            .as_ref()
            .and_then(|p| p.cors.as_ref())
            .map(|cors| (cors, req.headers().get(http::header::ORIGIN).cloned()));
        // An affinity cookie keeps a client on the side that served it; otherwise the rules decide.
        let canary = route.canary.as_deref().filter(|canary| {
            balance::sticky_canary(&route, canary, &req)
                .unwrap_or_else(|| policy::to_canary(&canary.rules, &req))
        });
        let backend = canary.map_or(&route.backend, |c| &c.backend);
        // `default-backend` / `custom-http-errors` (nothing to do for routes without them).
        let errors = route.policy.as_ref().and_then(|p| p.errors.as_ref());
        let fallback = error_pages::fallback(errors, backend);
        let capture = match fallback {
            None => error_pages::Capture::new(errors, backend, &mut req),
            Some(_) => None,
        };
        let service = match backend {
            Backend::Service(service) => Some(&**service),
            _ => None,
        };
        let answer = match (fallback.or(service), backend) {
            (None, Backend::Static(site)) => Ok(Answer::Done(
                static_files::serve(site, req, conn.file_regions()).await,
            )),
            (None, _) => Err(ErrorKind::NoEndpoint.into()),
            (Some(backend), _) => {
                // Affinity and hashing see the request as the client sent it; a default backend
                // standing in for the route's Service is balanced plainly.
                let choice = if (route.policy.is_none() && canary.is_none()) || fallback.is_some() {
                    balance::Choice {
                        candidates: plane.upstreams.candidates(backend),
                        sticky: None,
                    }
                } else {
                    balance::choose(&plane.upstreams, &route, canary, backend, conn, &req)
                };
                if let Some(rewrite) = &route.rewrite {
                    policy::rewrite(rewrite, conn, &mut req)?;
                }
                let upstream_policy = policy::route_upstream(&route, conn);
                let mut answer = upstream::forward(
                    &plane.upstreams,
                    conn,
                    backend,
                    choice.candidates,
                    &upstream_policy,
                    req,
                    record,
                )
                .await;
                if let (Ok(answer), Some(sticky)) = (&mut answer, &choice.sticky) {
                    sticky.set_cookie(backend, record.upstream, answer.headers_mut());
                }
                answer
            }
        };
        let mut answer = match capture {
            Some(capture) => {
                // Boxed: its own upstream exchange would otherwise double every request's future.
                Box::pin(error_pages::intercept(
                    &plane.upstreams,
                    capture,
                    &route,
                    answer,
                    record,
                ))
                .await?
            }
            None => answer?,
        };
        if let Some((cors, origin)) = cors {
            policy::add_cors(cors, origin.as_ref(), answer.headers_mut());
        }
        if let Some(cookies) = auth_cookies {
            let status = answer.status();
            cookies.add_to(status, answer.headers_mut());
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnInfo {
        let settings = server::ServerSettings::default();
        ConnInfo::new(
            ([127, 0, 0, 1], 40000).into(),
            "http",
            HeaderValue::from_static("80"),
            &settings,
        )
    }

    #[tokio::test]
    async fn a_client_abandoning_most_of_its_requests_is_told_to_go() {
        let conn = conn();
        for _ in 0..ABANDONED_ALLOWANCE {
            conn.request_started();
            conn.request_done(false);
            conn.abandoned();
        }
        let told = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            conn.too_many_resets.notified(),
        )
        .await;
        assert!(
            told.is_ok(),
            "not told after {ABANDONED_ALLOWANCE} abandoned requests"
        );
    }

    #[tokio::test]
    async fn a_client_that_lets_most_requests_finish_keeps_its_connection() {
        let conn = conn();
        for i in 0..1000 {
            conn.request_started();
            let abandon = i % 10 == 0;
            conn.request_done(!abandon);
            if abandon {
                conn.abandoned();
            }
        }
        let told = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            conn.too_many_resets.notified(),
        )
        .await;
        assert!(
            told.is_err(),
            "a client cancelling one request in ten was told to go"
        );
    }
}
