//! The upstream phase: balance over a backend's endpoints, connect, send, and hand the response
//! on. Plain HTTP/1.1 goes through the owned [`Connector`]; HTTPS, HTTP/2 (h2c and over TLS)
//! and protocol upgrades through hyper-util's pooled clients. Choices other than round robin
//! (affinity cookies, `upstream-hash-by`) are made in [`super::balance`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioIo;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::time::Instant;

use super::error::{ErrorKind, ProxyError};
use super::headers::{self, Forwarded};
use super::record::Record;
use super::request_body::{self, BodyLimits, ClientBody, LimitedBody};
use super::{Answer, ConnInfo};
use crate::body::BoxError;

use super::connector::{Connector, ConnectorSettings, Outgoing};
use super::lingering::Lingering;
use super::timeouts;
use crate::body::BoxBody;
use crate::snapshot::policy::Timeouts;
use crate::snapshot::{ServiceBackend, UpstreamProtocol};

/// A pooled client of HTTPS upstreams.
type TlsClient = Client<HttpsConnector<HttpConnector>, BoxBody>;

/// A TLS server name, and whether the client speaks HTTP/2.
type NamedKey = (Arc<str>, bool);

/// Timeouts and pool settings of the upstream side.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// How long an upstream may take to send its response headers (504 after that).
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// How long an endpoint that refused a connection is skipped.
    pub down_for: Duration,
    /// Verify HTTPS upstreams' certificates (`--upstream-tls-verify`).
    pub tls_verify: bool,
    /// CA certificates trusted for HTTPS upstreams besides the webpki roots
    /// (`--upstream-ca-bundle`).
    pub tls_roots: Vec<CertificateDer<'static>>,
    /// Connects in flight per endpoint (`--upstream-max-connecting`).
    pub max_connecting: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            down_for: Duration::from_secs(10),
            tls_verify: true,
            tls_roots: Vec::new(),
            max_connecting: 64,
        }
    }
}

/// Endpoint indexes to try for one request, in order. The common case (nothing marked down)
/// is the backend's rotation itself, with no list built.
pub enum Candidates {
    Rotation(crate::snapshot::Rotation),
    Reordered(std::vec::IntoIter<usize>),
    /// One endpoint first (an affinity cookie's), then the others in rotation.
    First {
        first: Option<usize>,
        skip: usize,
        rest: crate::snapshot::Rotation,
    },
}

impl Iterator for Candidates {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Candidates::Rotation(it) => it.next(),
            Candidates::Reordered(it) => it.next(),
            Candidates::First { first, skip, rest } => {
                first.take().or_else(|| rest.find(|j| *j != *skip))
            }
        }
    }
}

/// Clients per protocol, and the endpoints currently marked down.
pub struct Upstreams {
    pub settings: UpstreamSettings,
    /// HTTP/1.1 to plain endpoints, pooled per endpoint.
    pub connector: Connector,
    http1: Client<HttpConnector, BoxBody>,
    h2c: Client<HttpConnector, BoxBody>,
    /// HTTPS upstreams verified against (and sent SNI of) their IP address.
    https: Arc<TlsClient>,
    /// HTTP/2 over TLS (GRPCS), likewise.
    h2_tls: Arc<TlsClient>,
    /// TLS upstreams with a `backend-tls-server-name` (HTTP/2 or not): one client (and pool)
    /// per name, made on first use, so a connection verified for one name is never reused for
    /// another.
    https_named: ArcSwap<HashMap<NamedKey, Arc<TlsClient>>>,
    tls_config: Arc<rustls::ClientConfig>,
    /// Endpoint → until when it is skipped. Read on every request without a lock; written
    /// only when a connect fails.
    down: ArcSwap<HashMap<SocketAddr, Instant>>,
}

// === impl Upstreams ===

impl Upstreams {
    pub fn new(settings: UpstreamSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let build = |h2: bool| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(settings.idle_timeout)
                .pool_max_idle_per_host(1024)
                .http2_only(h2)
                .build(connector.clone())
        };
        let tls_config = Arc::new(crate::tls::upstream::client_config(
            settings.tls_verify,
            &settings.tls_roots,
        ));
        let https = Arc::new(tls_client(&settings, &tls_config, None, false));
        let h2_tls = Arc::new(tls_client(&settings, &tls_config, None, true));
        let connector = Connector::new(ConnectorSettings {
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            max_connecting_per_endpoint: settings.max_connecting,
            ..ConnectorSettings::default()
        });
        Self {
            connector,
            http1: build(false),
            h2c: build(true),
            https,
            h2_tls,
            https_named: ArcSwap::default(),
            tls_config,
            down: ArcSwap::default(),
            settings,
        }
    }

    /// The client of a plain-HTTP protocol (HTTPS backends need [`Upstreams::client_for`]).
    pub fn client(&self, protocol: UpstreamProtocol) -> &Client<HttpConnector, BoxBody> {
        match protocol {
            UpstreamProtocol::Http | UpstreamProtocol::Https | UpstreamProtocol::H2Tls => {
                &self.http1
            }
            UpstreamProtocol::H2c => &self.h2c,
        }
    }

    /// The client that speaks a backend's protocol (with its TLS server name).
    pub fn client_for(&self, backend: &ServiceBackend) -> UpstreamClient<'_> {
        match (backend.protocol, &backend.tls_server_name) {
            (UpstreamProtocol::Https, None) => UpstreamClient::Tls(self.https.clone()),
            (UpstreamProtocol::H2Tls, None) => UpstreamClient::Tls(self.h2_tls.clone()),
            (p @ (UpstreamProtocol::Https | UpstreamProtocol::H2Tls), Some(name)) => {
                UpstreamClient::Tls(self.named_client(name, p == UpstreamProtocol::H2Tls))
            }
            (protocol, _) => UpstreamClient::Plain(self.client(protocol)),
        }
    }

    /// The client of a request to a URL outside the backends (the external authentication
    /// service): its pools are the backends' (keyed by scheme and authority); an `https` URL is
    /// verified against its own host name.
    pub fn client_for_url(&self, https: bool) -> UpstreamClient<'_> {
        if https {
            UpstreamClient::Tls(self.https.clone())
        } else {
            UpstreamClient::Plain(&self.http1)
        }
    }

    fn named_client(&self, name: &Arc<str>, h2: bool) -> Arc<TlsClient> {
        let key = (name.clone(), h2);
        if let Some(client) = self.https_named.load().get(&key) {
            return client.clone();
        }
        let Ok(server_name) = ServerName::try_from(name.to_string()) else {
            // translate() lets only valid names through; this is a last line of defence.
            return if h2 { &self.h2_tls } else { &self.https }.clone();
        };
        let made = Arc::new(tls_client(
            &self.settings,
            &self.tls_config,
            Some(server_name),
            h2,
        ));
        let mut out = made.clone();
        self.https_named.rcu(|current| {
            let mut next = HashMap::clone(current);
            // Another request may have made one meanwhile: keep the first, share its pool.
            out = next
                .entry(key.clone())
                .or_insert_with(|| made.clone())
                .clone();
            next
        });
        out
    }

    /// The endpoints to try for one request, in order: healthy ones first (rotating per request),
    /// then the ones marked down, as a last resort.
    pub fn candidates(&self, backend: &ServiceBackend) -> Candidates {
        let down = self.down.load();
        if down.is_empty() {
            return Candidates::Rotation(backend.pick());
        }
        let now = Instant::now();
        let is_down = |i: &usize| {
            down.get(&backend.endpoints[*i])
                .is_some_and(|until| *until > now)
        };
        let (mut healthy, sick): (Vec<_>, Vec<_>) = backend.pick().partition(|i| !is_down(i));
        healthy.extend(sick);
        Candidates::Reordered(healthy.into_iter())
    }

    /// `order`, with the endpoints marked down moved to the end (each part keeps its order).
    pub fn healthy_first(&self, backend: &ServiceBackend, mut order: Vec<usize>) -> Candidates {
        let down = self.down.load();
        if !down.is_empty() {
            let now = Instant::now();
            order.sort_by_key(|i| {
                down.get(&backend.endpoints[*i])
                    .is_some_and(|until| *until > now)
            });
        }
        Candidates::Reordered(order.into_iter())
    }

    /// Whether an endpoint is marked down (a connect to it failed a moment ago).
    pub fn is_down(&self, addr: SocketAddr) -> bool {
        let down = self.down.load();
        !down.is_empty() && down.get(&addr).is_some_and(|until| *until > Instant::now())
    }

    /// Skips an endpoint for a while after a failed connect.
    pub fn mark_down(&self, addr: SocketAddr) {
        let until = Instant::now() + self.settings.down_for;
        self.down.rcu(|current| {
            let now = Instant::now();
            let mut next: HashMap<_, _> = current
                .iter()
                .filter(|(_, t)| **t > now)
                .map(|(a, t)| (*a, *t))
                .collect();
            next.insert(addr, until);
            Arc::new(next)
        });
    }
}

/// A client for one request, whichever protocol the backend speaks.
pub enum UpstreamClient<'a> {
    /// HTTP/1.1 or h2c.
    Plain(&'a Client<HttpConnector, BoxBody>),
    /// Shared: cloning the handle costs one reference count, not a client.
    Tls(Arc<TlsClient>),
}

// === impl UpstreamClient ===

impl UpstreamClient<'_> {
    /// Sends a request (its URI names the endpoint and the scheme).
    pub fn request(&self, req: Request<BoxBody>) -> ResponseFuture {
        match self {
            UpstreamClient::Plain(client) => client.request(req),
            UpstreamClient::Tls(client) => client.request(req),
        }
    }
}

/// A TLS client sending `server_name` as SNI, or the endpoint's IP; HTTP/2 only (ALPN `h2`,
/// for gRPC) with `h2`, else HTTP/1.1.
fn tls_client(
    settings: &UpstreamSettings,
    config: &Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
    h2: bool,
) -> TlsClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    // The TLS layer checks the scheme; the TCP layer must let https:// through.
    connector.enforce_http(false);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(rustls::ClientConfig::clone(config))
        .https_only();
    let builder = match server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    let https = if h2 {
        builder.enable_http2().wrap_connector(connector)
    } else {
        builder.enable_http1().wrap_connector(connector)
    };
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(settings.idle_timeout)
        .pool_max_idle_per_host(1024)
        .http2_only(h2)
        .build(https)
}

/// Proxies a request to one of the backend's endpoints. A connect that fails, or a pooled
/// connection found closed before the request went out, moves on to the next endpoint with the
/// same request: nothing of it was sent.
// Not an `async fn`: see `proxy::handle`.
#[allow(clippy::manual_async_fn)]
pub fn forward(
    upstreams: &Upstreams,
    conn: &ConnInfo,
    backend: &ServiceBackend,
    candidates: Candidates,
    route: &RouteUpstream<'_>,
    mut req: Request<ClientBody>,
    record: &mut Record,
) -> impl Future<Output = Result<Answer, ProxyError>> {
    async move {
        let mut candidates = candidates.peekable();
        if candidates.peek().is_none() {
            return Err(ErrorKind::NoEndpoint.into());
        }
        let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        request_body::check_declared(req.headers(), &route.body_limits)?;
        let mut overrides = headers::Overrides::new();
        let id = headers::request_id(req.headers(), &mut overrides);
        if record.logs_access() {
            record.request_id = Some(id);
        }
        let body_outcome = (!req.body().is_end_stream()).then(request_body::Outcome::default);
        let mut req = prepare(
            conn,
            backend,
            route,
            req,
            upgrade,
            body_outcome.as_ref(),
            &mut overrides,
        );
        // Only a route with timeouts of its own pays for watching them.
        let timed = route.timeouts.map(|t| {
            let s = &upstreams.settings;
            let progress = timeouts::Progress::new(body_outcome.is_some());
            (
                timeouts::Effective::new(t, s.connect_timeout, s.response_timeout),
                progress,
            )
        });
        if let Some((_, progress)) = &timed
            && body_outcome.is_some()
        {
            req = req.map(|body| timeouts::Sending::boxed(body, progress.clone()));
        }
        let watched = timed.as_ref().map(|(t, p)| (t, &**p));
        let direct = backend.protocol == UpstreamProtocol::Http && !upgrade;
        let result = if direct {
            let out = Outgoing::new(req, overrides);
            let lingering = conn.lingering();
            send_direct(
                upstreams, backend, candidates, out, watched, lingering, record,
            )
            .await
        } else {
            overrides.apply(req.headers_mut());
            // Boxed: hyper-util's client futures are large, and HTTPS, h2c and upgrades are not
            // the common path; inline, every request's future would carry their size.
            Box::pin(send_via_client(
                upstreams,
                backend,
                candidates,
                req,
                client_upgrade,
                watched,
                record,
            ))
            .await
        };
        // Between reads of the response body too.
        let result = match (result, &timed) {
            (Ok(answer), Some((t, _))) if !upgrade => Ok(Answer::Done(match answer {
                Answer::Upstream(resp) => resp.map(|b| timeouts::ReadIdle::boxed(b, t.read)),
                Answer::Done(resp) => resp.map(|b| timeouts::ReadIdle::boxed(b, t.read)),
            })),
            (result, _) => result,
        };
        // A request cut off because its body broke a limit is the client's failure, not the
        // upstream's.
        result.map_err(
            |err| match body_outcome.as_ref().and_then(request_body::Outcome::error) {
                Some(kind) => ProxyError::new(kind),
                None => err,
            },
        )
    }
}

/// HTTPS, h2c and upgrades through hyper-util's clients, which have a dispatch task of their
/// own: one attempt (their pools retry closed idle connections themselves).
async fn send_via_client(
    upstreams: &Upstreams,
    backend: &ServiceBackend,
    mut candidates: std::iter::Peekable<Candidates>,
    req: Request<BoxBody>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    timed: Option<(&timeouts::Effective, &timeouts::Progress)>,
    record: &mut Record,
) -> Result<Answer, ProxyError> {
    let Some(i) = candidates.next() else {
        return Err(ErrorKind::NoEndpoint.into());
    };
    let addr = backend.endpoints[i];
    record.upstream = Some(addr);
    let req = with_endpoint(req, backend, i)?;
    let started = Instant::now();
    let client = upstreams.client_for(backend);
    // The client connects inside: the route's clocks run from here (its pool's connect timeout
    // is the global one).
    if let Some((_, progress)) = timed {
        progress.connected();
    }
    let deadline = started + upstreams.settings.response_timeout;
    let sent = std::pin::pin!(client.request(req));
    match timeouts::bounded(sent, deadline, timed).await {
        Ok(Ok(resp)) => {
            record.upstream_time = Some(started.elapsed());
            Ok(Answer::Done(upstream_response(resp, client_upgrade)))
        }
        Ok(Err(err)) if err.is_connect() => {
            upstreams.mark_down(addr);
            Err(ProxyError::with_cause(ErrorKind::ConnectFailed, err))
        }
        Ok(Err(err)) => Err(ProxyError::with_cause(ErrorKind::UpstreamFailed, err)),
        Err(err) => Err(err),
    }
}

/// Plain HTTP/1.1 through the owned connector, trying endpoints in order while nothing of the
/// request has been sent.
// Not an `async fn`: see `proxy::handle`.
#[allow(clippy::manual_async_fn)]
fn send_direct(
    upstreams: &Upstreams,
    backend: &ServiceBackend,
    candidates: std::iter::Peekable<Candidates>,
    mut out: Outgoing,
    timed: Option<(&timeouts::Effective, &timeouts::Progress)>,
    lingering: Option<&Arc<Lingering>>,
    record: &mut Record,
) -> impl Future<Output = Result<Answer, ProxyError>> {
    async move {
        let started = Instant::now();
        let (connect_timeout, progress) = match timed {
            Some((t, progress)) => (t.connect, Some(progress)),
            None => (upstreams.settings.connect_timeout, None),
        };
        let (mut tries, mut failed_connects) = (0u32, 0u32);
        let result = {
            // Pinned here, once: the timeouts wait on it in place.
            let attempts = std::pin::pin!(async {
                // Made only when a connect fails: a value kept across the wait costs a cache miss
                // to drop once a thousand connections are served.
                let mut last = None;
                for i in candidates {
                    tries += 1;
                    let addr = backend.endpoints[i];
                    match upstreams
                        .connector
                        .send_timed(addr, &mut out, connect_timeout, progress, lingering)
                        .await
                    {
                        Ok(resp) => return Ok((resp, addr)),
                        // Gatehouse's own bound on connects kept this one waiting: the
                        // endpoint did not fail, so it is not skipped by other requests.
                        Err((err, true)) if err.kind == ErrorKind::ConnectBusy => {
                            tracing::warn!(upstream = %addr, service = %backend.service, error = %err, "upstream connects all busy for the connect timeout; endpoint not marked down");
                            last = Some(err);
                        }
                        Err((err, true)) => {
                            failed_connects += 1;
                            tracing::warn!(upstream = %addr, service = %backend.service, error = %err, "upstream connect failed; endpoint marked down");
                            upstreams.mark_down(addr);
                            last = Some(err);
                        }
                        Err((err, false)) => return Err((err, Some(addr))),
                    }
                }
                Err((last.unwrap_or_else(|| ErrorKind::NoEndpoint.into()), None))
            });
            let deadline = started + upstreams.settings.response_timeout;
            timeouts::bounded(attempts, deadline, timed).await
        };
        record.connect_failures = failed_connects;
        record.retries = tries.saturating_sub(1);
        match result {
            Ok(Ok((resp, addr))) => {
                record.upstream = Some(addr);
                record.upstream_time = Some(started.elapsed());
                // The connector kept no hop-by-hop headers.
                Ok(Answer::Upstream(resp))
            }
            Ok(Err((err, addr))) => {
                record.upstream = addr.or(record.upstream);
                Err(err)
            }
            Err(err) => Err(err),
        }
    }
}

/// Sends a request Gatehouse made itself (an error page's) to one of a backend's endpoints,
/// under the global timeouts.
pub async fn send_own(
    upstreams: &Upstreams,
    backend: &ServiceBackend,
    req: Request<BoxBody>,
    record: &mut Record,
) -> Result<Answer, ProxyError> {
    let candidates = upstreams.candidates(backend).peekable();
    if backend.protocol == UpstreamProtocol::Http {
        let out = Outgoing::new(req, headers::Overrides::default());
        send_direct(upstreams, backend, candidates, out, None, None, record).await
    } else {
        send_via_client(upstreams, backend, candidates, req, None, None, record).await
    }
}

/// What a route's policy changes in the request to its upstream.
#[derive(Debug)]
pub struct RouteUpstream<'a> {
    /// The request body limits (`proxy-body-size` replaces the listener's).
    pub body_limits: BodyLimits,
    /// `upstream-vhost`: the Host sent upstream.
    pub vhost: Option<&'a HeaderValue>,
    /// `x-forwarded-prefix`.
    pub forwarded_prefix: Option<&'a HeaderValue>,
    /// `proxy-*-timeout`, when the route sets any.
    pub timeouts: Option<&'a Timeouts>,
}

static X_FORWARDED_PREFIX: http::HeaderName = http::HeaderName::from_static("x-forwarded-prefix");

/// The request as the upstream gets it: hop-by-hop headers out, forwarding headers in, the
/// version the backend speaks; its target is filled in per endpoint.
fn prepare(
    conn: &ConnInfo,
    backend: &ServiceBackend,
    route: &RouteUpstream<'_>,
    req: Request<ClientBody>,
    upgrade: bool,
    body_outcome: Option<&request_body::Outcome>,
    overrides: &mut headers::Overrides,
) -> Request<BoxBody> {
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
    // `TE: trailers` is the one TE value HTTP/2 allows; gRPC servers expect it.
    let h2 = matches!(
        backend.protocol,
        UpstreamProtocol::H2c | UpstreamProtocol::H2Tls
    );
    let te_trailers = h2
        && headers::list_tokens(&parts.headers, &header::TE)
            .any(|t| t.eq_ignore_ascii_case("trailers"));
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let host = parts.headers.get(header::HOST).cloned();
    let fwd = Forwarded {
        client_ip: &conn.client_ip,
        proto: conn.scheme,
        port: &conn.port,
        host: host.as_ref(),
        trusted_peer: conn.trusted_peer,
    };
    headers::forwarded(&parts.headers, fwd, overrides);
    // X-Forwarded-Host keeps the host the client asked for.
    if let Some(vhost) = route.vhost {
        overrides.set(&headers::HOST, vhost.clone());
    }
    if let Some(prefix) = route.forwarded_prefix {
        overrides.set(&X_FORWARDED_PREFIX, prefix.clone());
    }
    parts.version = match backend.protocol {
        UpstreamProtocol::Http | UpstreamProtocol::Https => Version::HTTP_11,
        UpstreamProtocol::H2c | UpstreamProtocol::H2Tls => Version::HTTP_2,
    };
    let body = match body_outcome {
        Some(outcome) => LimitedBody::new(body, &route.body_limits, outcome.clone()).boxed_unsync(),
        None => crate::body::empty(),
    };
    Request::from_parts(parts, body)
}

/// The request with its target made `scheme://endpoint/path?query` for endpoint `i` (what
/// hyper-util's clients connect to).
fn with_endpoint(
    mut req: Request<BoxBody>,
    backend: &ServiceBackend,
    i: usize,
) -> Result<Request<BoxBody>, ProxyError> {
    let scheme = if backend.protocol.is_tls() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(backend.authority(i).clone());
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|e| ProxyError::with_cause(ErrorKind::BadRequest, e))?;
    Ok(req)
}

/// Hands an upstream response on. A `101 Switching Protocols` answer to an upgrade request
/// joins the two upgraded connections and copies bytes both ways until either side closes.
fn upstream_response(
    mut resp: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<BoxBody> {
    // This hop's version (RFC 9110 §6.2): an HTTP/1.0 backend does not make the client's
    // HTTP/1.1 connection a closing HTTP/1.0 one.
    *resp.version_mut() = Version::HTTP_11;
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

#[cfg(test)]
mod tests;
