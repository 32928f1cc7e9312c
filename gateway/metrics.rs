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
    /// TLS handshakes on the HTTPS listener, by `result` (see [`HandshakeResult`]).
    pub tls_handshakes: IntCounterVec,
    /// When each host's certificate expires (Unix time), by `host` as the Ingress names it.
    pub certificate_expiry: IntGaugeVec,
    /// ACME orders finished, by `result` (`issued`, `failed_transient`, `failed_rejected`,
    /// `rate_limited`).
    pub acme_orders: IntCounterVec,
    /// ACME challenge requests answered, by `challenge` (`http-01`; TLS-ALPN-01 answers are
    /// `tls_handshakes_total{result="acme_challenge"}`).
    pub acme_challenges: IntCounterVec,
    /// Problem answers of the ACME server, by `type` (`badNonce`, `rateLimited`…; `other`).
    pub acme_problems: IntCounterVec,
}

/// How a TLS handshake on the HTTPS listener ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeResult {
    Ok,
    /// The client or the handshake failed (bad version, no shared cipher, reset…).
    Error,
    /// The client did not finish the handshake in time.
    Timeout,
    /// An ACME TLS-ALPN-01 validation (closed right after the handshake).
    AcmeChallenge,
}

impl HandshakeResult {
    /// The `result` label value.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Error => "error",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::AcmeChallenge => "acme_challenge",
        }
    }
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
            tls_handshakes: IntCounterVec::new(
                Opts::new(
                    "tls_handshakes_total",
                    "TLS handshakes on the HTTPS listener, by result",
                ),
                &["result"],
            )
            .expect("metric"),
            certificate_expiry: IntGaugeVec::new(
                Opts::new(
                    "certificate_expiry_seconds",
                    "Expiry (Unix time) of the certificate serving each host",
                ),
                &["host"],
            )
            .expect("metric"),
            acme_orders: IntCounterVec::new(
                Opts::new("acme_orders_total", "ACME orders finished, by result"),
                &["result"],
            )
            .expect("metric"),
            acme_challenges: IntCounterVec::new(
                Opts::new(
                    "acme_challenges_answered_total",
                    "ACME challenge requests answered, by challenge type",
                ),
                &["challenge"],
            )
            .expect("metric"),
            acme_problems: IntCounterVec::new(
                Opts::new(
                    "acme_problems_total",
                    "Problem answers of the ACME server, by problem type",
                ),
                &["type"],
            )
            .expect("metric"),
            registry,
        };
        let acme: [Box<dyn prometheus::core::Collector>; 3] = [
            Box::new(m.acme_orders.clone()),
            Box::new(m.acme_challenges.clone()),
            Box::new(m.acme_problems.clone()),
        ];
        for c in acme {
            m.registry.register(c).expect("metric registered once");
        }
        let tls: [Box<dyn prometheus::core::Collector>; 2] = [
            Box::new(m.tls_handshakes.clone()),
            Box::new(m.certificate_expiry.clone()),
        ];
        for c in tls {
            m.registry.register(c).expect("metric registered once");
        }
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

    /// Counts one TLS handshake.
    pub fn tls_handshake(&self, result: HandshakeResult) {
        self.tls_handshakes
            .with_label_values(&[result.label()])
            .inc();
    }

    /// Replaces the certificate expiry series with those of a TLS table in service.
    pub fn set_certificate_expiry(&self, table: &crate::tls::TlsTable) {
        self.certificate_expiry.reset();
        for (host, cert) in table.hosts() {
            self.certificate_expiry
                .with_label_values(&[host.display().as_ref()])
                .set(cert.not_after_unix());
        }
        if let Some(cert) = table.default_cert() {
            self.certificate_expiry
                .with_label_values(&["(default)"])
                .set(cert.not_after_unix());
        }
    }

    /// `gatehouse_requests_total` of a request that matched no route.
    pub fn unrouted(&self, status: u16) -> IntCounter {
        self.requests.with_label_values(&["", "", status_class(status)])
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

/// The `status` label values, in [`status_class_index`] order.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`STATUS_CLASSES`] of a status code's class.
pub fn status_class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

/// `2xx`, `4xx`… for a status code.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}
