//! Metrics of the Kubernetes source, registered in Gatehouse's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What the Kubernetes source and the status writer count.
#[derive(Clone)]
pub struct KubeMetrics {
    /// Watch and list failures, by `kind`.
    pub watch_errors: IntCounterVec,
    /// 1 while the API server answers.
    pub connected: IntGauge,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    pub status_updates: IntCounter,
    pub status_update_errors: IntCounter,
    pub events: IntCounter,
    pub event_errors: IntCounter,
}

// === impl KubeMetrics ===

impl KubeMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            watch_errors: IntCounterVec::new(
                Opts::new(
                    "kube_watch_errors_total",
                    "Kubernetes list/watch failures, by kind (the watch resumes with backoff)",
                ),
                &["kind"],
            )?,
            connected: IntGauge::new(
                "kube_connected",
                "1 while the Kubernetes API server answers",
            )?,
            leader: IntGauge::new("kube_leader", "1 while this replica holds the leader Lease")?,
            status_updates: IntCounter::new(
                "kube_status_updates_total",
                "Ingress status patches written",
            )?,
            status_update_errors: IntCounter::new(
                "kube_status_update_errors_total",
                "Ingress status patches that failed",
            )?,
            events: IntCounter::new("kube_events_total", "Warning Events written")?,
            event_errors: IntCounter::new(
                "kube_event_errors_total",
                "Warning Events that could not be written",
            )?,
        };
        registry.register(Box::new(m.watch_errors.clone()))?;
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.status_updates.clone()))?;
        registry.register(Box::new(m.status_update_errors.clone()))?;
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.event_errors.clone()))?;
        Ok(m)
    }
}
