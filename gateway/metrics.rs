//! Prometheus metrics, in Gatehouse's own registry. Request metrics carry the labels
//! ingress-nginx's do (`namespace`, `ingress`, `service`, `host`, `method`, `status`); each route
//! keeps its handles in a [`RouteMetrics`] made when a snapshot is published, so a request
//! hashes no labels, and series of routes that are gone are removed then.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http::Method;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::routing::HostMatch;
use crate::snapshot::{Backend, Route, Snapshot};

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
    /// By `namespace`, `ingress`, `service` (or `static:NS/NAME`), `host`, `method`, `status`.
    pub requests: IntCounterVec,
    /// By `namespace`, `ingress`, `service` (as are the three below).
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub request_size: HistogramVec,
    pub response_size: HistogramVec,
    /// 1 after a configuration was read and put in service, 0 after a source failed to read.
    pub last_reload_successful: IntGauge,
    pub last_reload_success_timestamp: IntGauge,
    /// 1 while this replica leads (always, reading manifests).
    pub leader: IntGauge,
    /// `process_*` (CPU, memory, file descriptors), without the `gatehouse_` prefix, as every
    /// exporter names them.
    process: Registry,
    /// The handles of each route's label set in service, for reuse and removal on publish.
    route_metrics: Mutex<HashMap<RouteLabels, Arc<RouteMetrics>>>,
    /// Snapshots published so far: handles not marked with the latest number are gone.
    publications: AtomicU64,
    unrouted: OnceLock<Arc<RouteMetrics>>,
    /// Answers Gatehouse gave itself, by `reason`.
    pub proxy_errors: IntCounterVec,
    /// Connects to upstream endpoints that failed (or pooled connections found closed) before
    /// a request went out on them.
    pub upstream_connect_errors: IntCounter,
    /// Requests sent to another endpoint (or a new connection) after such a failure.
    pub upstream_retries: IntCounter,
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
                    "Requests answered, by Ingress, backend Service, host, method and status code",
                ),
                &[
                    "namespace",
                    "ingress",
                    "service",
                    "host",
                    "method",
                    "status",
                ],
            )
            .expect("metric"),
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "request_duration_seconds",
                    "Time from request to the end of its response",
                )
                .buckets(buckets.clone()),
                &ROUTE_LABELS,
            )
            .expect("metric"),
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    "upstream_response_seconds",
                    "Time an upstream took to send response headers",
                )
                .buckets(buckets.clone()),
                &ROUTE_LABELS,
            )
            .expect("metric"),
            request_size: HistogramVec::new(
                HistogramOpts::new(
                    "request_size_bytes",
                    "Request sizes: request line, headers and declared body length",
                )
                .buckets(size_buckets()),
                &ROUTE_LABELS,
            )
            .expect("metric"),
            response_size: HistogramVec::new(
                HistogramOpts::new("response_size_bytes", "Response body bytes really sent")
                    .buckets(size_buckets()),
                &ROUTE_LABELS,
            )
            .expect("metric"),
            last_reload_successful: IntGauge::new(
                "config_last_reload_successful",
                "1 if the last configuration reload succeeded, 0 if a source failed to read",
            )
            .expect("metric"),
            last_reload_success_timestamp: IntGauge::new(
                "config_last_reload_success_timestamp_seconds",
                "When a configuration was last put in service (Unix time)",
            )
            .expect("metric"),
            leader: IntGauge::new("leader", "1 while this replica leads").expect("metric"),
            process: Registry::new(),
            route_metrics: Mutex::default(),
            publications: AtomicU64::new(0),
            unrouted: OnceLock::new(),
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
            upstream_connect_errors: IntCounter::new(
                "upstream_connect_errors_total",
                "Upstream connects that failed before a request went out on them",
            )
            .expect("metric"),
            upstream_retries: IntCounter::new(
                "upstream_retries_total",
                "Requests sent to another endpoint after a failed connect",
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
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Always 1: the version of Gatehouse running"),
            &["version"],
        )
        .expect("metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let collectors: [Box<dyn prometheus::core::Collector>; 18] = [
            Box::new(build_info),
            Box::new(m.upstream_connect_errors.clone()),
            Box::new(m.upstream_retries.clone()),
            Box::new(m.requests.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.upstream_duration.clone()),
            Box::new(m.request_size.clone()),
            Box::new(m.response_size.clone()),
            Box::new(m.last_reload_successful.clone()),
            Box::new(m.last_reload_success_timestamp.clone()),
            Box::new(m.leader.clone()),
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
        #[cfg(target_os = "linux")]
        let _ = m.process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        m
    }

    /// A configuration source failed to read: the one in service stays.
    pub fn reload_failed(&self) {
        self.config_reload_errors.inc();
        self.last_reload_successful.set(0);
    }

    /// Gives each new route of a snapshot about to be published its metric handles (those of its
    /// label set where one is in service already), and removes the series of label sets no route
    /// has any more. Routes kept from the snapshot before (translate's memo keeps what a change
    /// did not touch) carry their handles: a change costs what it touched, not a walk over the
    /// labels of every route.
    pub fn publish(&self, snapshot: &Snapshot) {
        self.config_reloads.inc();
        self.last_reload_successful.set(1);
        self.last_reload_success_timestamp.set(unix_now());
        // Handles in use are marked with this publication's number; the hosts each new route
        // is declared for are gathered (keyed by the route's address while the snapshot holds
        // it). Under the lock: one publication at a time.
        let mut map = self.route_metrics.lock().unwrap_or_else(|e| e.into_inner());
        let publication = self.publications.fetch_add(1, Ordering::Relaxed) + 1;
        let mut new: HashMap<*const Route, (&Arc<Route>, Vec<String>)> = HashMap::new();
        for (host, table) in snapshot.routes.hosts_unordered() {
            for route in table.values() {
                visit(publication, &mut new, route, Some(&host));
            }
        }
        if let Some(route) = snapshot.routes.default_route() {
            visit(publication, &mut new, route, None);
        }
        for (route, mut route_hosts) in new.into_values() {
            route_hosts.sort();
            route_hosts.dedup();
            let labels = RouteLabels::of(route, route_hosts);
            let handles = map
                .entry(labels)
                .or_insert_with_key(|labels| Arc::new(RouteMetrics::new(self, labels.clone())))
                .clone();
            handles.published.store(publication, Ordering::Relaxed);
            route.counters.set(handles);
        }
        let mut gone = Vec::new();
        map.retain(|labels, handles| {
            let keep = handles.published.load(Ordering::Relaxed) == publication;
            if !keep {
                gone.push(labels.clone());
            }
            keep
        });
        if !gone.is_empty() {
            self.remove_gone(&gone, &map);
        }
    }

    /// The histograms every route has, in the order of [`RouteMetrics::histogram`]'s indexes.
    fn route_histograms(&self) -> [&HistogramVec; 4] {
        [
            &self.request_duration,
            &self.upstream_duration,
            &self.request_size,
            &self.response_size,
        ]
    }

    /// Removes the series of the label sets in `gone` that none of `live` has.
    fn remove_gone(&self, gone: &[RouteLabels], live: &HashMap<RouteLabels, Arc<RouteMetrics>>) {
        let touched: HashSet<[&str; 3]> = gone.iter().map(RouteLabels::base).collect();
        // What the live label sets with a touched base still have.
        let mut bases: HashSet<[&str; 3]> = HashSet::new();
        let mut hosts: HashSet<[&str; 4]> = HashSet::new();
        for labels in live.keys() {
            let [ns, ing, svc] = labels.base();
            if !touched.contains(&[ns, ing, svc]) {
                continue;
            }
            bases.insert([ns, ing, svc]);
            hosts.insert([ns, ing, svc, OTHER_HOST]);
            for host in &labels.hosts {
                hosts.insert([ns, ing, svc, host]);
            }
        }
        for base in touched.iter().filter(|base| !bases.contains(*base)) {
            for vec in self.route_histograms() {
                // Not there when the route never served.
                let _ = vec.remove_label_values(base);
            }
        }
        // Methods and status codes are whatever requests brought: read the series back.
        for family in self.requests.collect() {
            for metric in family.get_metric() {
                let labels: HashMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                let get = |name| labels.get(name).copied().unwrap_or_default();
                let [ns, ing, svc] = [get("namespace"), get("ingress"), get("service")];
                if touched.contains(&[ns, ing, svc])
                    && !hosts.contains(&[ns, ing, svc, get("host")])
                {
                    let _ = self.requests.remove(&labels);
                }
            }
        }
    }

    /// The handles of a request's route, or of requests that matched none.
    pub fn for_route<'a>(&'a self, route: Option<&'a Route>) -> &'a RouteMetrics {
        if let Some(handles) = route.and_then(|r| r.counters.get::<Arc<RouteMetrics>>()) {
            return handles;
        }
        self.unrouted.get_or_init(|| {
            Arc::new(RouteMetrics::new(
                self,
                RouteLabels {
                    namespace: String::new(),
                    ingress: String::new(),
                    service: String::new(),
                    hosts: Vec::new(),
                },
            ))
        })
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

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const ROUTE_LABELS: [&str; 3] = ["namespace", "ingress", "service"];

/// The `host` of requests for hosts no Ingress rule covers by name (host-less rules, default
/// backends, no route): one value, so clients cannot make series up. A request a wildcard rule
/// routes carries the rule's host (`*.example.com`), not its own.
pub const OTHER_HOST: &str = "_other";

/// `method` label values; any other method is `OTHER`.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER",
];

fn method_index(method: &Method) -> usize {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    KNOWN.iter().position(|m| m == method).unwrap_or(9)
}

/// Status codes whose counters a route keeps at hand; others are looked up by label.
const COMMON_STATUSES: [u16; 22] = [
    200, 201, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 413, 429, 499, 500,
    502, 503, 504,
];

fn size_buckets() -> Vec<f64> {
    vec![
        100.0,
        1_000.0,
        10_000.0,
        100_000.0,
        1_000_000.0,
        10_000_000.0,
        100_000_000.0,
    ]
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The labels of a route's series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteLabels {
    namespace: String,
    ingress: String,
    service: String,
    /// The hosts Ingresses declare for the route (exact names and `*.suffix` wildcards), sorted.
    hosts: Vec<String>,
}

impl RouteLabels {
    fn of(route: &Route, hosts: Vec<String>) -> Self {
        let service = match &route.backend {
            Backend::Service(s) => s.service.name.clone(),
            Backend::Static(s) => format!("static:{}", s.site.key.name),
            Backend::Unavailable { .. } => String::new(),
        };
        Self {
            namespace: route.ingress.namespace.clone(),
            ingress: route.ingress.name.clone(),
            service,
            hosts,
        }
    }

    fn base(&self) -> [&str; 3] {
        [&self.namespace, &self.ingress, &self.service]
    }
}

/// Counters by method and common status, one slot each.
type Cells = Box<[OnceLock<IntCounter>]>;

/// One route's metric handles, looked up in the registry once.
pub struct RouteMetrics {
    metrics_requests: IntCounterVec,
    labels: RouteLabels,
    /// Per declared host (as in `labels.hosts`), then [`OTHER_HOST`]: counters by method and
    /// common status, made on first use.
    requests: Box<[OnceLock<Cells>]>,
    /// The route's histograms, made on first use: a route that never serves exports none (at
    /// 10,000 Ingresses, eager ones were tens of MiB and a /metrics page of empty histograms).
    histograms: [(HistogramVec, OnceLock<Histogram>); 4],
    /// The last publication ([`Metrics::publish`]) that had a route with these handles.
    published: AtomicU64,
}

impl RouteMetrics {
    fn new(metrics: &Metrics, labels: RouteLabels) -> Self {
        Self {
            metrics_requests: metrics.requests.clone(),
            requests: (0..=labels.hosts.len()).map(|_| OnceLock::new()).collect(),
            histograms: metrics
                .route_histograms()
                .map(|vec| (vec.clone(), OnceLock::new())),
            published: AtomicU64::new(0),
            labels,
        }
    }

    fn histogram(&self, which: usize) -> &Histogram {
        let (vec, histogram) = &self.histograms[which];
        histogram.get_or_init(|| vec.with_label_values(&self.labels.base()))
    }

    /// `gatehouse_request_duration_seconds`.
    pub fn duration(&self) -> &Histogram {
        self.histogram(0)
    }

    /// `gatehouse_upstream_response_seconds`.
    pub fn upstream_duration(&self) -> &Histogram {
        self.histogram(1)
    }

    /// `gatehouse_request_size_bytes`.
    pub fn request_size(&self) -> &Histogram {
        self.histogram(2)
    }

    /// `gatehouse_response_size_bytes`.
    pub fn response_size(&self) -> &Histogram {
        self.histogram(3)
    }

    /// Which of `labels.hosts` a request's host counts under (`labels.hosts.len()`: none).
    fn host_index(&self, host: &str) -> usize {
        let hosts = &self.labels.hosts;
        let host = strip_port(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(i) = hosts.iter().position(|d| d.eq_ignore_ascii_case(host)) {
            return i;
        }
        // As the route table matches a wildcard: exactly one non-empty label in front.
        let wildcard = host
            .split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, parent)| {
                hosts.iter().position(|d| {
                    d.strip_prefix("*.")
                        .is_some_and(|suffix| suffix.eq_ignore_ascii_case(parent))
                })
            });
        wildcard.unwrap_or(hosts.len())
    }

    /// Counts one request for `host` (as the client wrote it): labelled with the declared host
    /// that names it, else the declared wildcard that covers it, else [`OTHER_HOST`].
    pub fn count(&self, host: &str, method: &Method, status: u16) {
        let h = self.host_index(host);
        let m = method_index(method);
        let host_label = self.labels.hosts.get(h).map_or(OTHER_HOST, String::as_str);
        let Some(s) = COMMON_STATUSES.iter().position(|&c| c == status) else {
            let [ns, ing, svc] = self.labels.base();
            let status = status.to_string();
            self.metrics_requests
                .with_label_values(&[ns, ing, svc, host_label, METHODS[m], &status])
                .inc();
            return;
        };
        let cells = self.requests[h].get_or_init(|| {
            (0..METHODS.len() * COMMON_STATUSES.len())
                .map(|_| OnceLock::new())
                .collect()
        });
        cells[m * COMMON_STATUSES.len() + s]
            .get_or_init(|| {
                let [ns, ing, svc] = self.labels.base();
                let status = COMMON_STATUSES[s].to_string();
                self.metrics_requests
                    .with_label_values(&[ns, ing, svc, host_label, METHODS[m], &status])
            })
            .inc();
    }
}

/// Counts a route of the snapshot being published: its handles as in use when it has them, else
/// it (and `host`, a host it is declared for) among the routes that need handles.
fn visit<'s>(
    publication: u64,
    new: &mut HashMap<*const Route, (&'s Arc<Route>, Vec<String>)>,
    route: &'s Arc<Route>,
    host: Option<&HostMatch>,
) {
    if let Some(handles) = route.counters.get::<Arc<RouteMetrics>>() {
        handles.published.store(publication, Ordering::Relaxed);
        return;
    }
    let entry = new
        .entry(Arc::as_ptr(route))
        .or_insert_with(|| (route, Vec::new()));
    // Exact and wildcard hosts, as declared: bounded by the Ingresses.
    if let Some(host) = host.filter(|h| !matches!(h, HostMatch::Any)) {
        entry.1.push(host.display().into_owned());
    }
}

/// A Host header's name without its port (`[::1]:8080` -> `[::1]`).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests;
