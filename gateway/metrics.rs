//! Prometheus metrics, in Gatehouse's own registry.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Why a request got an error answer from Gatehouse itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    NoRoute,
    NoEndpoint,
    UpstreamFailed,
    UpstreamTimeout,
}

impl ProxyError {
    pub fn label(self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoEndpoint => "no_endpoint",
            ProxyError::UpstreamFailed => "upstream_failed",
            ProxyError::UpstreamTimeout => "upstream_timeout",
        }
    }
}

/// Every metric Gatehouse exports.
pub struct Metrics {
    pub registry: Registry,
    /// By `ingress`, `service` (or `static:NS/NAME`) and `status` class (`2xx`…).
    pub requests: IntCounterVec,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    /// Answers Gatehouse gave itself, by `reason`.
    pub proxy_errors: IntCounterVec,
    pub active_connections: IntGaugeVec,
    pub config_reloads: IntCounter,
    pub config_reload_errors: IntCounter,
    /// Warnings in the current configuration.
    pub warnings: IntGauge,
    pub routes: IntGauge,
    pub translate_duration: HistogramVec,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("gatehouse".into()), None).expect("valid prefix");
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "requests_total",
                    "Requests answered, by Ingress, backend Service and status class",
                ),
                &["ingress", "service", "status"],
            )
            .expect("metric"),
            request_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "request_duration_seconds",
                    "Time from request to response headers",
                )
                .buckets(buckets.clone()),
            )
            .expect("metric"),
            upstream_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "upstream_response_seconds",
                    "Time an upstream took to send response headers",
                )
                .buckets(buckets.clone()),
            )
            .expect("metric"),
            proxy_errors: IntCounterVec::new(
                Opts::new(
                    "proxy_errors_total",
                    "Error answers given by Gatehouse itself, by reason",
                ),
                &["reason"],
            )
            .expect("metric"),
            active_connections: IntGaugeVec::new(
                Opts::new("active_connections", "Open client connections, by listener"),
                &["listener"],
            )
            .expect("metric"),
            config_reloads: IntCounter::new(
                "config_reloads_total",
                "Configurations built and put in service",
            )
            .expect("metric"),
            config_reload_errors: IntCounter::new(
                "config_reload_errors_total",
                "Configuration sources that failed to read or parse",
            )
            .expect("metric"),
            warnings: IntGauge::new(
                "config_warnings",
                "Warnings about unusable objects in the current configuration",
            )
            .expect("metric"),
            routes: IntGauge::new("config_hosts", "Hosts in the current route table")
                .expect("metric"),
            translate_duration: HistogramVec::new(
                HistogramOpts::new(
                    "translate_seconds",
                    "Time to build a configuration snapshot",
                )
                .buckets(buckets),
                &[],
            )
            .expect("metric"),
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 10] = [
            Box::new(m.requests.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.upstream_duration.clone()),
            Box::new(m.proxy_errors.clone()),
            Box::new(m.active_connections.clone()),
            Box::new(m.config_reloads.clone()),
            Box::new(m.config_reload_errors.clone()),
            Box::new(m.warnings.clone()),
            Box::new(m.routes.clone()),
            Box::new(m.translate_duration.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric registered once");
        }
        m
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `2xx`, `4xx`… for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
