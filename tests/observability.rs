//! The chart's Grafana dashboard and alert rules against a real Prometheus (Debian's
//! `prometheus` package, installed by .ci/install) scraping a real Gatehouse under traffic:
//! every dashboard query and every alert expression must find series, so none names a metric or
//! label Gatehouse does not export. `promtool` checks the rules file and the /metrics text.
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::certs::{Ca, https_client, leaf_secret, tls_ingress};
use support::yaml::{docs, ingress, site, static_site, svc};
use support::{Gatehouse, free_port, origin, service_yaml};

const CHART_FILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/gatehouse/files");

/// A Prometheus server on loopback with temporary storage, scraping one target every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::copy(
            Path::new(CHART_FILES).join("alerts.yaml"),
            dir.path().join("alerts.yaml"),
        )
        .expect("copy rules");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [alerts.yaml]\n\
                 scrape_configs:\n  - job_name: gatehouse\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .expect("config");
        let listen = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log file"))
            .spawn()
            .expect("prometheus (Debian package `prometheus`, see .ci/install)");
        Self {
            child,
            url: format!("http://{listen}"),
            _dir: dir,
        }
    }

    /// Waits until Prometheus answers /-/ready (it takes a moment to open its storage).
    async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.get(format!("{}/-/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready after 20 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The series an instant query returns.
    async fn query(&self, client: &reqwest::Client, promql: &str) -> Vec<Value> {
        let resp: Value = client
            .get(
                reqwest::Url::parse_with_params(
                    &format!("{}/api/v1/query", self.url),
                    [("query", promql)],
                )
                .expect("url"),
            )
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("query answer");
        assert_eq!(resp["status"], "success", "{promql}: {resp}");
        resp["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every query of the dashboard, with its variables set to "all".
fn dashboard_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(Path::new(CHART_FILES).join("dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$__rate_interval", "15s")
                .replace("$namespace", ".*")
                .replace("$ingress", ".*")
                .replace("$job", ".*");
            assert!(!expr.contains('$'), "unknown variable in {expr}");
            out.push((panel["title"].as_str().unwrap_or("").to_owned(), expr));
        }
    }
    assert!(out.len() >= 15, "{out:?}");
    out
}

/// Every alert's query: its expression without the final comparison (`QUERY > 0.05`), which
/// holds only while the alert fires.
fn alert_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(CHART_FILES).join("alerts.yaml")).expect("rules");
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(alert) = line.strip_prefix("- alert: ") {
            name = alert.to_owned();
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            let cut = [" > ", " < ", " == ", " != ", " >= ", " <= "]
                .iter()
                .filter_map(|op| expr.rfind(op))
                .max()
                .unwrap_or_else(|| panic!("{name}: expression without a comparison: {expr}"));
            out.push((name.clone(), expr[..cut].to_owned()));
        }
    }
    assert!(out.len() >= 8, "{out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_alert_finds_series_in_a_real_prometheus() {
    let site_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(site_dir.path().join("index.html"), "<h1>hi</h1>").expect("index");
    let ca = Ca::new("obs CA");
    let leaf = ca.leaf(&["secure.test"]);
    let yaml = docs(&[
        service_yaml("default", "web", &[origin::echo("a").await]),
        service_yaml("default", "dead", &[origin::refused_addr()]),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
        ingress("dead")
            .prefix("dead.test", "/", svc("dead", 80))
            .yaml(),
        // An Ingress naming a missing Service: a configuration warning.
        ingress("broken")
            .prefix("broken.test", "/", svc("missing", 80))
            .yaml(),
        static_site(
            "default",
            "docs",
            site_dir.path().to_str().expect("utf-8"),
            &[],
        ),
        ingress("docs")
            .prefix("docs.test", "/", site("docs"))
            .yaml(),
        leaf_secret("default", "secure-tls", &leaf),
        tls_ingress(
            "secure",
            &["secure.test"],
            "web",
            &["secure.test"],
            "secure-tls",
            &[],
        ),
    ]);
    let gh = Gatehouse::start(&yaml);
    let prometheus = Prometheus::start(gh.admin);

    // Traffic until the queries are done: 200s, 404s, 502s, 503s, static files, HTTPS.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let client = gh.client_for(&[
            "app.test",
            "dead.test",
            "broken.test",
            "docs.test",
            "nope.test",
        ]);
        let tls = https_client(&ca, &["secure.test"], gh.https)
            .build()
            .expect("https client");
        let https = gh.https;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for url in [
                    "http://app.test/",
                    "http://app.test/x?y=1",
                    "http://dead.test/",
                    "http://broken.test/",
                    "http://docs.test/",
                    "http://docs.test/missing",
                    "http://nope.test/",
                ] {
                    let _ = client.get(url).send().await;
                }
                let _ = client.post("http://app.test/form").body("a=1").send().await;
                let _ = tls
                    .get(format!("https://secure.test:{}/", https.port()))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let client = reqwest::Client::new();
    prometheus.wait_ready(&client).await;
    // Rates need two scrapes with traffic between them; wait for a few.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrapes = prometheus
            .query(&client, "count_over_time(up{job=\"gatehouse\"}[1m])")
            .await;
        let n = scrapes
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if n >= 4.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped {n} times in 30 s; its log:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let up = prometheus.query(&client, "up{job=\"gatehouse\"}").await;
    assert_eq!(up[0]["value"][1], "1", "target down: {up:?}");

    let mut empty = Vec::new();
    let queries = dashboard_queries()
        .into_iter()
        .map(|(title, q)| (format!("dashboard panel {title:?}"), q))
        .chain(
            alert_queries()
                .into_iter()
                .map(|(name, q)| (format!("alert {name}"), q)),
        );
    for (what, promql) in queries {
        if prometheus.query(&client, &promql).await.is_empty() {
            empty.push(format!("{what}: {promql}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    assert!(
        empty.is_empty(),
        "queries that found no series (a missing metric or label):\n{}\n\n/metrics:\n{}",
        empty.join("\n"),
        gh.admin("/metrics").1
    );
}

#[test]
fn promtool_accepts_the_rules_file() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(Path::new(CHART_FILES).join("alerts.yaml"))
        .output()
        .expect("promtool (Debian package `prometheus`)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_no_problem_in_the_metrics_exposition() {
    let gh = Gatehouse::start(&docs(&[
        service_yaml("default", "web", &[origin::echo("a").await]),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
    ]));
    let client = gh.client_for(&["app.test", "nope.test"]);
    for url in ["http://app.test/", "http://nope.test/"] {
        client.get(url).send().await.expect("request");
    }
    let metrics = gh.admin("/metrics").1;
    for name in [
        "gatehouse_build_info{",
        "gatehouse_config_last_reload_successful 1",
        "gatehouse_config_last_reload_success_timestamp_seconds ",
        "gatehouse_leader 1",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// === OpenTelemetry ===

/// An OTLP/HTTP receiver: decodes each protobuf ExportTraceServiceRequest POSTed to
/// /v1/traces and hands its spans on.
type SpanRx = tokio::sync::mpsc::UnboundedReceiver<opentelemetry_proto::tonic::trace::v1::Span>;

async fn otlp_receiver() -> (std::net::SocketAddr, SpanRx) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = origin::serve(move |req| otlp_answer(tx.clone(), req)).await;
    (addr, rx)
}

/// [`otlp_receiver`] over TLS with `leaf` (HTTP/1.1).
async fn otlp_tls_receiver(leaf: &support::certs::Leaf) -> (std::net::SocketAddr, SpanRx) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(support::certs::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .expect("collector certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate gives up here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let tx = tx.clone();
                    async move { Ok::<_, std::convert::Infallible>(otlp_answer(tx, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// An OTLP/HTTP collector's answer to one export: its spans go to `tx`.
async fn otlp_answer(
    tx: tokio::sync::mpsc::UnboundedSender<opentelemetry_proto::tonic::trace::v1::Span>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<origin::Body> {
    use http_body_util::BodyExt;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message;
    assert_eq!(req.uri().path(), "/v1/traces");
    assert_eq!(req.headers()["content-type"], "application/x-protobuf");
    let body = req.into_body().collect().await.expect("body").to_bytes();
    let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    for resource in export.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                let _ = tx.send(span);
            }
        }
    }
    hyper::Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(origin::full(
            ExportTraceServiceResponse::default().encode_to_vec(),
        ))
        .expect("response")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_with_the_trace_the_backend_saw() {
    let (receiver, mut spans) = otlp_receiver().await;
    let endpoint = format!("http://{receiver}");
    let gh = Gatehouse::start_with(
        &[(
            "main.yaml",
            &docs(&[
                service_yaml("default", "web", &[origin::echo("a").await]),
                ingress("web")
                    .prefix("app.test", "/", svc("web", 80))
                    .yaml(),
            ]),
        )],
        &["--otlp-endpoint", &endpoint],
    );
    let client = gh.client_for(&["app.test"]);
    let seen_traceparent = |echo: Value| {
        echo["headers"]["traceparent"]
            .as_str()
            .expect("the backend got a traceparent")
            .to_owned()
    };

    // A new trace: Gatehouse starts it.
    let echo: Value = client
        .get("http://app.test/new")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("echo");
    let sent = seen_traceparent(echo);
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{sent}");
    let span = tokio::time::timeout(Duration::from_secs(10), spans.recv())
        .await
        .expect("a span within 10 s")
        .expect("span");
    assert_eq!(hex(&span.trace_id), parts[1], "trace id");
    assert_eq!(
        hex(&span.span_id),
        parts[2],
        "the backend's parent is Gatehouse's span"
    );
    assert!(span.parent_span_id.is_empty());
    assert_eq!(span.name, "GET web");
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);

    // A continued trace: same trace id, the client's span as parent.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echo: Value = client
        .get("http://app.test/continued")
        .header("traceparent", incoming)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("echo");
    let sent = seen_traceparent(echo);
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert!(
        !sent.contains("00f067aa0ba902b7"),
        "not re-parented: {sent}"
    );
    let span = tokio::time::timeout(Duration::from_secs(10), spans.recv())
        .await
        .expect("a span within 10 s")
        .expect("span");
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(hex(&span.span_id), sent.split('-').nth(2).expect("span id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_otlp_endpoint_trace_context_passes_through_untouched() {
    let gh = Gatehouse::start(&docs(&[
        service_yaml("default", "web", &[origin::echo("a").await]),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
    ]));
    let client = gh.client_for(&["app.test"]);
    let echo: Value = client
        .get("http://app.test/")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("echo");
    assert!(echo["headers"]["traceparent"].is_null(), "{echo}");
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echo: Value = client
        .get("http://app.test/")
        .header("traceparent", incoming)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("echo");
    assert_eq!(echo["headers"]["traceparent"], incoming);
}

// === series lifecycle and label bounds ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_deleted_ingress_go_and_undeclared_hosts_fold_into_one_value() {
    let echo = origin::echo("a").await;
    let web = docs(&[
        service_yaml("default", "web", &[echo]),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
    ]);
    let gone = docs(&[
        service_yaml("default", "old", &[echo]),
        // A rule without a host: every host the client makes up lands here.
        ingress("old").prefix("", "/", svc("old", 80)).yaml(),
    ]);
    let gh = Gatehouse::start_with(&[("web.yaml", &web), ("old.yaml", &gone)], &[]);
    let client = gh.client_for(&["app.test", "made-up-1.test", "made-up-2.test"]);
    for url in [
        "http://app.test/",
        "http://made-up-1.test/",
        "http://made-up-2.test/",
    ] {
        assert_eq!(client.get(url).send().await.expect("request").status(), 200);
    }
    let old = ["ingress=\"old\"", "host=\"_other\"", "status=\"200\""];
    assert_eq!(gh.metric("gatehouse_requests_total", &old), 2.0);
    let metrics = gh.admin("/metrics").1;
    assert!(
        !metrics.contains("made-up"),
        "a client-made host became a label"
    );
    assert!(metrics.contains("gatehouse_request_duration_seconds_count{ingress=\"old\""));

    gh.remove("old.yaml");
    let deadline = Instant::now() + Duration::from_secs(5);
    while gh.admin("/metrics").1.contains("ingress=\"old\"") {
        assert!(
            Instant::now() < deadline,
            "series of the deleted Ingress stayed:\n{}",
            gh.admin("/metrics").1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The Ingress still in service keeps its series and goes on counting.
    let web = [
        "ingress=\"web\"",
        "host=\"app.test\"",
        "method=\"GET\"",
        "status=\"200\"",
    ];
    assert_eq!(gh.metric("gatehouse_requests_total", &web), 1.0);
    client
        .get("http://app.test/")
        .send()
        .await
        .expect("request");
    assert_eq!(gh.metric("gatehouse_requests_total", &web), 2.0);
}

/// Issue 11: a request a wildcard rule routes is counted under the rule's host as declared
/// (`*.wild.test`, bounded: an Ingress names it), not folded into `_other` and not under the
/// name the client made up. A name the wildcard does not cover (two labels deeper) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_wildcard_rule_routes_carry_the_declared_wildcard_host() {
    let echo = origin::echo("a").await;
    let config = docs(&[
        service_yaml("default", "web", &[echo]),
        ingress("wild")
            .prefix("*.wild.test", "/", svc("web", 80))
            .prefix("exact.wild.test", "/", svc("web", 80))
            .yaml(),
        ingress("rest").prefix("", "/", svc("web", 80)).yaml(),
    ]);
    let gh = Gatehouse::start_with(&[("wild.yaml", &config)], &[]);
    let hosts = [
        "made-up-1.wild.test",
        "MADE-UP-2.wild.test",
        "exact.wild.test",
        "deeper.made-up.wild.test",
    ];
    let client = gh.client_for(&hosts);
    for host in hosts {
        let url = format!("http://{host}/");
        assert_eq!(
            client.get(&url).send().await.expect("request").status(),
            200
        );
    }
    let wild = ["ingress=\"wild\"", "host=\"*.wild.test\"", "status=\"200\""];
    let exact = [
        "ingress=\"wild\"",
        "host=\"exact.wild.test\"",
        "status=\"200\"",
    ];
    let wild_other = ["ingress=\"wild\"", "host=\"_other\""];
    let rest = ["ingress=\"rest\"", "host=\"_other\"", "status=\"200\""];
    assert_eq!(gh.metric("gatehouse_requests_total", &wild), 2.0);
    assert_eq!(gh.metric("gatehouse_requests_total", &exact), 1.0);
    assert_eq!(gh.metric("gatehouse_requests_total", &wild_other), 0.0);
    assert_eq!(gh.metric("gatehouse_requests_total", &rest), 1.0);
    let metrics = gh.admin("/metrics").1;
    assert!(
        !metrics.to_ascii_lowercase().contains("made-up"),
        "a client-made host became a label"
    );
}

/// Issue 11: an `https://` collector, its certificate verified against `--otlp-ca-bundle`; a
/// gateway that does not trust the collector's CA sends it nothing (and says so in its log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_trusted_through_the_ca_bundle() {
    let ca = Ca::new("collector CA");
    let (collector, mut spans) = otlp_tls_receiver(&ca.leaf(&["127.0.0.1"])).await;
    let endpoint = format!("https://{collector}");
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = ca.write_pem(dir.path(), "collector-ca");
    let config = docs(&[
        service_yaml("default", "web", &[origin::echo("a").await]),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
    ]);
    let trusting = Gatehouse::start_with(
        &[("main.yaml", &config)],
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-ca-bundle",
            bundle.to_str().expect("path"),
        ],
    );
    let distrusting =
        Gatehouse::start_with(&[("main.yaml", &config)], &["--otlp-endpoint", &endpoint]);

    let client = distrusting.client_for(&["app.test"]);
    let status = client
        .get("http://app.test/untrusted")
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 200);
    distrusting.wait_log(&["OTLP export failed"], Duration::from_secs(10));

    let client = trusting.client_for(&["app.test"]);
    let echo: Value = client
        .get("http://app.test/trusted")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("echo");
    let sent = echo["headers"]["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_owned();
    let span = tokio::time::timeout(Duration::from_secs(10), spans.recv())
        .await
        .expect("a span within 10 s")
        .expect("span");
    assert_eq!(
        hex(&span.trace_id),
        sent.split('-').nth(1).expect("trace id")
    );
    assert_eq!(span.name, "GET web");
    assert!(
        spans.try_recv().is_err(),
        "the untrusting gateway's span arrived"
    );
}
