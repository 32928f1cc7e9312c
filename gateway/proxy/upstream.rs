//! The upstream side: pooled keep-alive clients and which endpoints are marked down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Request;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::time::Instant;

use super::BoxBody;
use crate::snapshot::{ServiceBackend, UpstreamProtocol};

/// A pooled client of HTTPS upstreams.
type TlsClient = Client<HttpsConnector<HttpConnector>, BoxBody>;

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
        }
    }
}

/// Endpoint indexes to try for one request, in order. The common case (nothing marked down)
/// is the backend's rotation itself, with no list built.
pub enum Candidates {
    Rotation(crate::snapshot::Rotation),
    Reordered(std::vec::IntoIter<usize>),
}

impl Iterator for Candidates {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Candidates::Rotation(it) => it.next(),
            Candidates::Reordered(it) => it.next(),
        }
    }
}

/// Clients per protocol, and the endpoints currently marked down.
pub struct Upstreams {
    pub settings: UpstreamSettings,
    http1: Client<HttpConnector, BoxBody>,
    h2c: Client<HttpConnector, BoxBody>,
    /// HTTPS upstreams verified against (and sent SNI of) their IP address.
    https: Arc<TlsClient>,
    /// HTTPS upstreams with a `backend-tls-server-name`: one client (and pool) per name, made
    /// on first use, so a connection verified for one name is never reused for another.
    https_named: ArcSwap<HashMap<Arc<str>, Arc<TlsClient>>>,
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
        let https = Arc::new(tls_client(&settings, &tls_config, None));
        Self {
            http1: build(false),
            h2c: build(true),
            https,
            https_named: ArcSwap::default(),
            tls_config,
            down: ArcSwap::default(),
            settings,
        }
    }

    /// The client of a plain-HTTP protocol (HTTPS backends need [`Upstreams::client_for`]).
    pub fn client(&self, protocol: UpstreamProtocol) -> &Client<HttpConnector, BoxBody> {
        match protocol {
            UpstreamProtocol::Http | UpstreamProtocol::Https => &self.http1,
            UpstreamProtocol::H2c => &self.h2c,
        }
    }

    /// The client that speaks a backend's protocol (with its TLS server name).
    pub fn client_for(&self, backend: &ServiceBackend) -> UpstreamClient<'_> {
        match (backend.protocol, &backend.tls_server_name) {
            (UpstreamProtocol::Https, None) => UpstreamClient::Tls(self.https.clone()),
            (UpstreamProtocol::Https, Some(name)) => UpstreamClient::Tls(self.named_client(name)),
            (protocol, _) => UpstreamClient::Plain(self.client(protocol)),
        }
    }

    fn named_client(&self, name: &Arc<str>) -> Arc<TlsClient> {
        if let Some(client) = self.https_named.load().get(name) {
            return client.clone();
        }
        let Ok(server_name) = ServerName::try_from(name.to_string()) else {
            // translate() lets only valid names through; this is a last line of defence.
            return self.https.clone();
        };
        let made = Arc::new(tls_client(
            &self.settings,
            &self.tls_config,
            Some(server_name),
        ));
        let mut out = made.clone();
        self.https_named.rcu(|current| {
            let mut next = HashMap::clone(current);
            // Another request may have made one meanwhile: keep the first, share its pool.
            out = next
                .entry(name.clone())
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

/// An HTTPS client (HTTP/1.1 over TLS) sending `server_name` as SNI, or the endpoint's IP.
fn tls_client(
    settings: &UpstreamSettings,
    config: &Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
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
    let https = builder.enable_http1().wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(settings.idle_timeout)
        .pool_max_idle_per_host(1024)
        .build(https)
}
