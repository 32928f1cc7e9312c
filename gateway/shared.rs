//! The process's shared state, split by role so each part goes only where it is needed:
//!
//! - [`DataPlane`]: what the proxy listeners serve from (snapshot, upstreams, policy state,
//!   metrics). The listeners get this and nothing else.
//! - [`ChallengeAnswers`]: ACME answers; the ACME manager (or the cluster mirror) writes them, the
//!   listeners answer them.
//! - [`Leadership`]: whether this replica leads; leader election sets it, status and ACME follow it.
//! - [`Readiness`]: ready once a configuration is in service, not ready from shutdown on.
//!
//! [`Shared`] bundles them for the wiring (sources, ACME, admin) and publishes snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::proxy::upstream::{UpstreamSettings, Upstreams};
use crate::snapshot::Snapshot;

/// Everything the data plane reads per request.
pub struct DataPlane {
    /// What requests are served from; swapped whole on every change, read without locks.
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub upstreams: Upstreams,
    /// Whether every request gets an access log line (`--access-log`, and the log filter keeps
    /// them).
    pub access_log: bool,
    /// Set with `--otlp-endpoint`: requests then carry trace context and export spans.
    pub tracer: std::sync::OnceLock<crate::otel::Tracer>,
    /// ACME challenge answers, given on every host.
    pub challenges: Arc<ChallengeAnswers>,
    /// What the policy phase keeps between requests (authentication results, rate limits).
    pub policy: crate::proxy::policy::State,
}

/// ACME challenge answers the listeners give.
#[derive(Default)]
pub struct ChallengeAnswers {
    /// HTTP-01 answers the plain-HTTP listener gives, on every host.
    pub http01: crate::acme::Challenges,
    /// TLS-ALPN-01 challenge certificates the HTTPS listener answers with, by SNI.
    pub alpn: crate::tls::AlpnChallenges,
}

/// Whether this replica leads: only the leader writes Ingress status and Events and places
/// ACME orders. Set by leader election in a cluster; a process reading manifests leads alone.
/// Cloning it gives another handle on the same state.
#[derive(Clone)]
pub struct Leadership {
    leading: Arc<tokio::sync::watch::Sender<bool>>,
    gauge: prometheus::IntGauge,
}

// === impl Leadership ===

impl Leadership {
    fn new(gauge: prometheus::IntGauge) -> Self {
        Self {
            leading: Arc::new(tokio::sync::watch::Sender::new(false)),
            gauge,
        }
    }

    /// Whether this replica is the leader right now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Follows leadership changes (`changed()` fires on every change).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leading.subscribe()
    }

    pub fn set(&self, leading: bool) {
        self.gauge.set(i64::from(leading));
        self.leading.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        });
    }
}

/// Ready once the first full configuration is in service, until shutdown starts.
#[derive(Default)]
pub struct Readiness {
    loaded: AtomicBool,
    draining: AtomicBool,
}

// === impl Readiness ===

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// The roles together, for the parts of the process that wire them (sources, ACME, admin).
pub struct Shared {
    pub plane: Arc<DataPlane>,
    /// The same as `plane.metrics`.
    pub metrics: Arc<Metrics>,
    /// The same as `plane.challenges`.
    pub challenges: Arc<ChallengeAnswers>,
    pub leadership: Leadership,
    pub readiness: Readiness,
    /// Counts published snapshots, so tasks (the ACME manager) can wait for the next one.
    published: tokio::sync::watch::Sender<u64>,
}

// === impl Shared ===

impl Shared {
    pub fn new(upstream: UpstreamSettings, access_log: bool) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let challenges = Arc::new(ChallengeAnswers::default());
        Arc::new(Self {
            plane: Arc::new(DataPlane {
                snapshot: ArcSwap::from_pointee(Snapshot::default()),
                metrics: metrics.clone(),
                upstreams: Upstreams::new(upstream),
                access_log,
                tracer: std::sync::OnceLock::new(),
                challenges: challenges.clone(),
                policy: Default::default(),
            }),
            leadership: Leadership::new(metrics.leader.clone()),
            metrics,
            challenges,
            readiness: Readiness::default(),
            published: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The snapshot in service.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.plane.snapshot.load_full()
    }

    /// Fires (`changed()`) after each snapshot put in service; read it with [`Shared::snapshot`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
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
        self.plane.snapshot.store(Arc::new(snapshot));
        self.readiness.loaded.store(true, Ordering::Release);
        self.published.send_modify(|n| *n = n.wrapping_add(1));
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
