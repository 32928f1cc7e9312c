//! The state every listener shares: the current snapshot, metrics, readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::proxy::upstream::{UpstreamSettings, Upstreams};
use crate::snapshot::Snapshot;

/// Shared by the proxy listeners, the admin listener and the sources.
pub struct Shared {
    /// What requests are served from; swapped whole on every change, read without locks.
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub upstreams: Upstreams,
    /// Whether every request gets an access log line.
    pub access_log: bool,
    /// Set with `--otlp-endpoint`: requests then carry trace context and export spans.
    pub tracer: std::sync::OnceLock<crate::otel::Tracer>,
    loaded: AtomicBool,
    draining: AtomicBool,
    /// Whether this replica leads: only the leader writes Ingress status and Events and places
    /// ACME orders. Set by leader election in a cluster; a process reading manifests leads alone.
    leader: tokio::sync::watch::Sender<bool>,
    /// TLS-ALPN-01 challenge certificates the HTTPS listener answers with.
    pub alpn_challenges: crate::tls::AlpnChallenges,
    /// HTTP-01 challenge answers the plain-HTTP listener gives, on every host.
    pub acme_challenges: crate::acme::Challenges,
    /// Counts published snapshots, so tasks (the ACME manager) can wait for the next one.
    published: tokio::sync::watch::Sender<u64>,
    /// What the policy phase keeps between requests (authentication results).
    pub policy: crate::proxy::policy::State,
}

// === impl Shared ===

impl Shared {
    pub fn new(upstream: UpstreamSettings, access_log: bool) -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            metrics: Arc::new(Metrics::new()),
            upstreams: Upstreams::new(upstream),
            access_log,
            tracer: std::sync::OnceLock::new(),
            loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            leader: tokio::sync::watch::Sender::new(false),
            alpn_challenges: crate::tls::AlpnChallenges::default(),
            acme_challenges: crate::acme::Challenges::default(),
            published: tokio::sync::watch::Sender::new(0),
            policy: Default::default(),
        })
    }

    /// Fires (`changed()`) after each snapshot put in service; read it from `snapshot`.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Answers TLS-ALPN-01 validation handshakes for `host` (SNI, any case) with `cert` from
    /// now on; `None` stops. Takes effect for the next handshake, on every listener.
    pub fn set_alpn_challenge(&self, host: &str, cert: Option<Arc<rustls::sign::CertifiedKey>>) {
        self.alpn_challenges.set(host, cert);
    }

    /// Whether this replica is the leader right now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Follows leadership changes (`changed()` fires on every change).
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leader.subscribe()
    }

    pub fn set_leader(&self, leading: bool) {
        self.metrics.leader.set(i64::from(leading));
        self.leader.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        });
    }

    /// Puts a new snapshot in service: in-flight requests finish on the one they started with.
    pub fn publish(&self, snapshot: Snapshot, built_in: std::time::Duration) {
        for warning in &snapshot.warnings {
            tracing::warn!(kind = warning.kind, object = %warning.object, reason = %warning.reason, "object not fully usable");
        }
        self.metrics.warnings.set(snapshot.warnings.len() as i64);
        self.metrics.routes.set(snapshot.routes.host_count() as i64);
        self.metrics.set_certificate_expiry(&snapshot.tls);
        self.metrics.publish(&snapshot);
        self.metrics
            .translate_duration
            .with_label_values::<&str>(&[])
            .observe(built_in.as_secs_f64());
        tracing::info!(
            hosts = snapshot.routes.host_count(),
            ingresses = snapshot.owned_ingresses.len(),
            warnings = snapshot.warnings.len(),
            translate_ms = built_in.as_millis() as u64,
            "configuration in service"
        );
        self.snapshot.store(Arc::new(snapshot));
        self.loaded.store(true, Ordering::Release);
        self.published.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Ready once the first full configuration is in service, until shutdown starts.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Builds snapshots from the objects of whichever source runs (manifests or Kubernetes) and
/// puts them in service: the one wiring of both. It owns translate()'s memo, so a change
/// compiles only what it touched. Call it off the async workers: a first build of thousands
/// of Ingresses takes a while.
pub struct Rebuilder {
    settings: crate::translate::Settings,
    memo: crate::translate::Memo,
}

// === impl Rebuilder ===

impl Rebuilder {
    pub fn new(settings: crate::translate::Settings) -> Self {
        Self {
            settings,
            memo: crate::translate::Memo::default(),
        }
    }

    /// Builds a snapshot from `objects` ("now" is the clock) with the source's own problems
    /// (`extra`) among its warnings, publishes it and says how long that took.
    pub fn rebuild(
        &mut self,
        shared: &Shared,
        objects: &crate::objects::Objects,
        extra: Vec<crate::warning::Warning>,
    ) {
        let start = Instant::now();
        let settings = crate::translate::Settings {
            now: Some(std::time::SystemTime::now()),
            ..self.settings.clone()
        };
        let mut snapshot = crate::translate::translate(objects, &settings, &mut self.memo);
        if !extra.is_empty() {
            snapshot.warnings.extend(extra);
            snapshot.warnings.sort();
        }
        shared.publish(snapshot, start.elapsed());
    }
}
