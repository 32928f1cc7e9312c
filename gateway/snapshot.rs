//! The immutable result of [`crate::translate`]: what the data plane serves until the next change.

pub mod endpoint_keys;
pub mod policy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use http::uri::Authority;

use serde::Serialize;

use crate::objects::ObjectKey;
use crate::routing::{PathMatch, RouteTable};
use crate::slot::Slot;
use crate::static_site::StaticRoute;
use crate::tls::table::TlsTable;

pub use crate::acme::wants::AcmeWant;
pub use crate::warning::Warning;

/// Everything the data plane needs, built once per configuration change.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub routes: RouteTable<Arc<Route>>,
    /// Ingresses this controller owns (valid or not), oldest first.
    pub owned_ingresses: Arc<[ObjectKey]>,
    /// One entry per problem with an object that could not be used (fully or in part).
    pub warnings: Vec<Warning>,
    /// Certificates the ACME manager is asked to keep, one per Secret.
    pub acme: Vec<AcmeWant>,
    /// Which certificate serves which host (parsed and checked), by SNI. Shared with the
    /// config loop's memo, which reuses its parsed Secrets.
    pub tls: Arc<TlsTable>,
}

/// One routing decision: where requests matching a host and path go.
#[derive(Debug)]
pub struct Route {
    /// The Ingress the rule came from.
    pub ingress: Arc<ObjectKey>,
    pub path: PathMatch,
    pub backend: Backend,
    /// Plain-HTTP requests get a 308 to HTTPS instead (the host has a certificate and the
    /// Ingress or `--ssl-redirect` asks for it, or the Ingress says `force-ssl-redirect`);
    /// ACME HTTP-01 challenge paths never do.
    pub ssl_redirect: bool,
    /// What the Ingress's annotations ask (access, limits, redirects, CORS, upstream changes),
    /// shared by its routes; `None` when they ask nothing, so such a route costs nothing more.
    pub policy: Option<Arc<policy::RoutePolicy>>,
    /// `rewrite-target` on an ingress-nginx regex path: the path sent upstream.
    pub rewrite: Option<Arc<policy::PathRewrite>>,
    /// A canary Ingress for the same host and path, and when a request goes to it.
    pub canary: Option<Arc<policy::Canary>>,
    /// The data plane's state for this route (its metric handles), set when the snapshot is
    /// published; the core does not know its type.
    pub counters: Slot,
}

// === impl Route ===

impl Route {
    /// The same route with `canary` attached (new counters; a static backend is bound again).
    pub fn with_canary(&self, canary: Arc<policy::Canary>) -> Route {
        Route {
            ingress: self.ingress.clone(),
            path: self.path.clone(),
            backend: self.backend.duplicate(&self.path),
            ssl_redirect: self.ssl_redirect,
            policy: self.policy.clone(),
            rewrite: self.rewrite.clone(),
            canary: Some(canary),
            counters: Slot::default(),
        }
    }

    /// Whether a request must be refused (503) with a reason: its Ingress has an annotation
    /// that restricts access and is broken or not honoured.
    pub fn refused(&self) -> Option<&str> {
        match self.policy.as_deref().map(|p| &p.access) {
            Some(policy::Access::Refused(reason)) => Some(reason),
            _ => None,
        }
    }
}

/// Where a route sends its requests.
#[derive(Debug)]
pub enum Backend {
    /// A Service's ready endpoints.
    Service(Arc<ServiceBackend>),
    /// Files served by Gatehouse.
    Static(StaticRoute),
    /// The Ingress points at something missing or unusable: answer 503 (the warning says why).
    Unavailable { reason: Arc<str> },
}

// === impl Backend ===

impl Backend {
    /// Another backend of the same target (a static site is bound again to `path`).
    pub fn duplicate(&self, path: &PathMatch) -> Backend {
        match self {
            Backend::Service(s) => Backend::Service(s.clone()),
            Backend::Static(s) => Backend::Static(s.site.route(match path {
                PathMatch::Prefix(p) => p,
                PathMatch::Exact(_) => "",
            })),
            Backend::Unavailable { reason } => Backend::Unavailable {
                reason: reason.clone(),
            },
        }
    }
}

/// How Gatehouse speaks to a Service's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (upgrades such as WebSocket pass through).
    #[default]
    Http,
    /// HTTP/2 over cleartext, prior knowledge (gRPC servers).
    H2c,
    /// HTTP/1.1 over TLS, verified per `--upstream-tls-verify`.
    Https,
    /// HTTP/2 over TLS (ALPN `h2`), verified like [`UpstreamProtocol::Https`] (gRPC servers
    /// with TLS).
    #[serde(rename = "h2tls")]
    H2Tls,
}

// === impl UpstreamProtocol ===

impl UpstreamProtocol {
    /// Whether it speaks TLS to the endpoints.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::H2Tls)
    }
}

/// A Service port resolved to its endpoints.
#[derive(Debug)]
pub struct ServiceBackend {
    pub service: ObjectKey,
    /// The port as the Ingress names it (number or name), for dumps and metrics.
    pub port: String,
    pub protocol: UpstreamProtocol,
    /// Ready endpoints; if none are ready, the serving-but-terminating ones.
    pub endpoints: Arc<[SocketAddr]>,
    /// Each endpoint as a URI authority (`IP:port`), made here rather than per request.
    authorities: Box<[Authority]>,
    /// For [`UpstreamProtocol::Https`]: the name the endpoints' certificates are verified
    /// against and sent as SNI (`gatehouse.dev/backend-tls-server-name`); else their IP.
    pub tls_server_name: Option<Arc<str>>,
    /// Round-robin cursor: each request takes the next endpoint.
    next: AtomicUsize,
    /// Cookie tokens and hash seeds of the endpoints, made on first use by a route with
    /// affinity or `upstream-hash-by` (a new endpoint set is a new `ServiceBackend`).
    keys: OnceLock<endpoint_keys::EndpointKeys>,
}

// === impl ServiceBackend ===

impl ServiceBackend {
    pub fn new(
        service: ObjectKey,
        port: String,
        protocol: UpstreamProtocol,
        endpoints: Vec<SocketAddr>,
    ) -> Self {
        // A socket address always prints as a valid authority; one that did not would be
        // dropped with its authority, keeping the two lists aligned.
        let (endpoints, authorities): (Vec<SocketAddr>, Vec<Authority>) = endpoints
            .into_iter()
            .filter_map(|e| Some((e, Authority::try_from(e.to_string()).ok()?)))
            .unzip();
        Self {
            service,
            port,
            protocol,
            endpoints: endpoints.into(),
            authorities: authorities.into(),
            tls_server_name: None,
            next: AtomicUsize::new(0),
            keys: OnceLock::new(),
        }
    }

    /// Sets the TLS server name of an HTTPS backend.
    pub fn with_tls_server_name(mut self, name: Option<Arc<str>>) -> Self {
        self.tls_server_name = name;
        self
    }

    /// Indexes of the endpoints in the order this request should try them: a rotation of the
    /// list that starts one further on at every call, so requests (not connections) spread
    /// over them.
    pub fn pick(&self) -> Rotation {
        let len = self.endpoints.len();
        let start = if len > 1 {
            self.next.fetch_add(1, Ordering::Relaxed) % len
        } else {
            0
        };
        Rotation {
            start,
            len,
            taken: 0,
        }
    }

    /// The endpoints' cookie tokens and hash seeds (made on the first call).
    pub fn keys(&self) -> &endpoint_keys::EndpointKeys {
        self.keys.get_or_init(|| {
            let salt = format!("{}:{}", self.service, self.port);
            endpoint_keys::EndpointKeys::new(&salt, &self.endpoints)
        })
    }

    /// The URI authority of endpoint `i`.
    pub fn authority(&self, i: usize) -> &Authority {
        &self.authorities[i]
    }
}

/// Endpoint indexes `start, start+1, …` wrapping around, each once.
#[derive(Clone, Debug)]
pub struct Rotation {
    start: usize,
    len: usize,
    taken: usize,
}

impl Iterator for Rotation {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        (self.taken < self.len).then(|| {
            self.taken += 1;
            (self.start + self.taken - 1) % self.len
        })
    }
}
