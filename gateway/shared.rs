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
    pub metrics: Metrics,
    pub upstreams: Upstreams,
    /// Whether every request gets an access log line.
    pub access_log: bool,
    loaded: AtomicBool,
    draining: AtomicBool,
}

// === impl Shared ===

impl Shared {
    pub fn new(upstream: UpstreamSettings, access_log: bool) -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            metrics: Metrics::new(),
            upstreams: Upstreams::new(upstream),
            access_log,
            loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    /// Puts a new snapshot in service: in-flight requests finish on the one they started with.
    pub fn publish(&self, snapshot: Snapshot, built_in: std::time::Duration) {
        for warning in &snapshot.warnings {
            tracing::warn!(kind = warning.kind, object = %warning.object, reason = %warning.reason, "object not fully usable");
        }
        self.metrics.warnings.set(snapshot.warnings.len() as i64);
        self.metrics.routes.set(snapshot.routes.host_count() as i64);
        self.metrics.config_reloads.inc();
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
    }

    /// Ready once the first full configuration is in service, until shutdown starts.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Builds and publishes a snapshot from objects, timing it.
pub fn rebuild(
    shared: &Shared,
    objects: &crate::objects::Objects,
    settings: &crate::translate::Settings,
) {
    let start = Instant::now();
    let snapshot = crate::translate::translate(objects, settings);
    shared.publish(snapshot, start.elapsed());
}
