//! The upstream side: pooled keep-alive clients and which endpoints are marked down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::BoxBody;
use crate::snapshot::{ServiceBackend, UpstreamProtocol};

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
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            down_for: Duration::from_secs(10),
        }
    }
}

/// Clients per protocol, and the endpoints currently marked down.
pub struct Upstreams {
    pub settings: UpstreamSettings,
    http1: Client<HttpConnector, BoxBody>,
    h2c: Client<HttpConnector, BoxBody>,
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
        Self {
            http1: build(false),
            h2c: build(true),
            down: ArcSwap::default(),
            settings,
        }
    }

    pub fn client(&self, protocol: UpstreamProtocol) -> &Client<HttpConnector, BoxBody> {
        match protocol {
            UpstreamProtocol::Http => &self.http1,
            UpstreamProtocol::H2c => &self.h2c,
        }
    }

    /// The endpoints to try for one request, in order: healthy ones first (rotating per request),
    /// then the ones marked down, as a last resort.
    pub fn candidates(&self, backend: &ServiceBackend) -> Vec<SocketAddr> {
        let down = self.down.load();
        if down.is_empty() {
            return backend.pick().collect();
        }
        let now = Instant::now();
        let is_down = |a: &SocketAddr| down.get(a).is_some_and(|until| *until > now);
        let (mut healthy, sick): (Vec<_>, Vec<_>) = backend.pick().partition(|a| !is_down(a));
        healthy.extend(sick);
        healthy
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
