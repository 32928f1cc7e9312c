//! ACME against a real CA: Pebble validates Gatehouse's HTTP-01 and TLS-ALPN-01 answers on its
//! real listeners, and clients check the issued chains against Pebble's root over real TLS.
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::pebble::Pebble;
use support::{Gatehouse, free_port, origin, service_yaml};

const ISSUED: &str = "gatehouse_acme_orders_total";

/// A Service for `origin` and an Ingress annotated for ACME whose one tls entry asks for `hosts`
/// in Secret `secret`.
fn site(name: &str, origin: SocketAddr, secret: &str, hosts: &[&str]) -> String {
    let tls_hosts = hosts.join(", ");
    let rules: String = hosts
        .iter()
        .map(|h| {
            format!(
                "  - host: {h}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}\n"
            )
        })
        .collect();
    format!(
        "{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{kubernetes.io/tls-acme: \"true\"}}\nspec:\n  ingressClassName: gatehouse\n  tls:\n  - {{secretName: {secret}, hosts: [{tls_hosts}]}}\n  rules:\n{rules}",
        service_yaml("default", name, &[origin])
    )
}

/// Pebble (configured, not started) and the Gatehouse arguments that point at it.
struct Setup {
    pebble: Pebble,
    http: SocketAddr,
    https: SocketAddr,
    state: tempfile::TempDir,
    args: Vec<String>,
}

impl Setup {
    fn new(pebble: impl FnOnce(Pebble) -> Pebble, extra: &[&str]) -> Self {
        let (http, https) = (free_port(), free_port());
        let pebble = pebble(Pebble::new(http, https));
        let state = tempfile::tempdir().expect("state dir");
        let mut args = pebble.gatehouse_args();
        args.push(format!("--state-dir={}", state.path().display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        Self {
            pebble,
            http,
            https,
            state,
            args,
        }
    }

    fn gatehouse(&self, yaml: &str) -> Gatehouse {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let gh = Gatehouse::spawn_on(self.http, self.https, &[("main.yaml", yaml)], &args);
        gh.wait_ready();
        gh
    }

    /// An HTTPS client that trusts only Pebble's issuing root and reaches `hosts` at Gatehouse;
    /// a fresh connection (and handshake) per request.
    async fn client(&self, hosts: &[&str]) -> reqwest::Client {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let root = self.pebble.issuing_root().await;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(root.as_bytes()).expect("root pem"))
            .expect("root");
        let mut tls = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every handshake a full one, so it shows the certificate in service now.
        tls.resumption = rustls::client::Resumption::disabled();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .tls_backend_preconfigured(tls)
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10));
        for host in hosts {
            builder = builder.resolve(host, self.https);
        }
        builder.build().expect("client")
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https.port())
    }
}

/// Waits until `count` certificates were issued (`acme_orders_total{result="issued"}`).
fn wait_issued(gh: &Gatehouse, pebble: &Pebble, count: f64, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while gh.metric(ISSUED, &["result=\"issued\""]) < count {
        if std::time::Instant::now() > deadline {
            panic!(
                "{count} certificate(s) not issued in {timeout:?}\n--- gatehouse log:\n{}\n--- pebble log:\n{}",
                gh.log_text(),
                pebble.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A log line without its colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence (`...m`).
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// GET over HTTPS; the serial number of the certificate Gatehouse served, and the echo.
async fn get(client: &reqwest::Client, url: &str) -> Result<(Vec<u8>, serde_json::Value), String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e:?}"))?;
    if resp.status() != 200 {
        return Err(format!("{url}: status {}", resp.status()));
    }
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or("no peer certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    let serial = cert.raw_serial().to_vec();
    let echo = resp.json().await.map_err(|e| e.to_string())?;
    Ok((serial, echo))
}

/// GET until it succeeds (the issued certificate takes a moment to come back through the
/// manifest source), at most 10 s.
async fn get_eventually(client: &reqwest::Client, url: &str) -> (Vec<u8>, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match get(client, url).await {
            Ok(done) => return done,
            Err(err) if tokio::time::Instant::now() > deadline => panic!("{err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_issues_a_certificate_served_over_https() {
    let origin = origin::echo("app").await;
    let mut setup = Setup::new(|p| p, &[]);
    setup.pebble.start();
    let gh = setup.gatehouse(&site("app", origin, "app-tls", &["app.example.com"]));
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));

    let client = setup.client(&["app.example.com"]).await;
    let url = setup.url("app.example.com", "/hello");
    let (_, echo) = get_eventually(&client, &url).await;
    assert_eq!(echo["origin"], "app");
    assert!(
        gh.metric(
            "gatehouse_acme_challenges_answered_total",
            &["challenge=\"http-01\""]
        ) >= 1.0
    );

    // The certificate is a private Secret manifest in the state directory; so is the account.
    use std::os::unix::fs::PermissionsExt;
    for file in ["certificates/default_app-tls.yaml", "account.json"] {
        let meta = std::fs::metadata(setup.state.path().join(file)).expect(file);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
    }
    let secret =
        std::fs::read_to_string(setup.state.path().join("certificates/default_app-tls.yaml"))
            .expect("secret");
    assert!(
        secret.contains("gatehouse.dev/managed-by: acme"),
        "{secret}"
    );
    assert!(secret.contains("kubernetes.io/tls"), "{secret}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn01_issues_through_the_https_listener() {
    let origin = origin::echo("alpn").await;
    let mut setup = Setup::new(|p| p, &["--acme-challenge=tls-alpn-01"]);
    setup.pebble.start();
    let gh = setup.gatehouse(&site("alpn", origin, "alpn-tls", &["alpn.example.com"]));
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));

    let client = setup.client(&["alpn.example.com"]).await;
    let (_, echo) = get_eventually(&client, &setup.url("alpn.example.com", "/")).await;
    assert_eq!(echo["origin"], "alpn");
    assert!(
        gh.metric(
            "gatehouse_tls_handshakes_total",
            &["result=\"acme_challenge\""]
        ) >= 1.0
    );
    assert_eq!(
        gh.metric("gatehouse_acme_challenges_answered_total", &[]),
        0.0
    );
    assert_eq!(setup.pebble.count("Attempting to validate w/ HTTP"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_certificate_covers_every_host_of_a_tls_entry() {
    let origin = origin::echo("multi").await;
    let hosts = ["a.example.com", "b.example.com", "c.example.org"];
    let mut setup = Setup::new(|p| p, &[]);
    setup.pebble.start();
    let gh = setup.gatehouse(&site("multi", origin, "multi-tls", &hosts));
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));

    let client = setup.client(&hosts).await;
    let mut serials = Vec::new();
    for host in hosts {
        let (serial, echo) = get_eventually(&client, &setup.url(host, "/")).await;
        assert_eq!(echo["origin"], "multi", "{host}");
        serials.push(serial);
    }
    serials.dedup();
    assert_eq!(serials.len(), 1, "one certificate serves all hosts");
    assert_eq!(setup.pebble.count("POST /order-plz"), 1, "one order");
    assert_eq!(
        setup.pebble.count("Attempting to validate w/ HTTP"),
        9,
        "3 checks per host"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_reuses_the_stored_certificate_and_account() {
    let origin = origin::echo("keep").await;
    let mut setup = Setup::new(|p| p, &[]);
    setup.pebble.start();
    let mut gh = setup.gatehouse(&site("keep", origin, "keep-tls", &["keep.example.com"]));
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));
    let client = setup.client(&["keep.example.com", "new.example.com"]).await;
    let url = setup.url("keep.example.com", "/");
    let (before, _) = get_eventually(&client, &url).await;

    gh.restart();
    // Served at once from the state directory, with no new order.
    let (after, _) = get(&client, &url)
        .await
        .expect("served right after restart");
    assert_eq!(before, after, "the same certificate");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        gh.metric(ISSUED, &[]),
        0.0,
        "no order after restart:\n{}",
        gh.log_text()
    );
    assert_eq!(setup.pebble.count("POST /order-plz"), 1);

    // A new certificate after the restart is ordered with the saved account.
    gh.write(
        "new.yaml",
        &site("new", origin, "new-tls", &["new.example.com"]),
    );
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));
    get_eventually(&client, &setup.url("new.example.com", "/")).await;
    assert_eq!(
        setup.pebble.count("POST /sign-me-up"),
        1,
        "one account, reused"
    );
    assert!(gh.log_text().contains("using the saved ACME account"));
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_replaces_the_certificate_without_failing_a_request() {
    let origin = origin::echo("renew").await;
    // Pebble's certificates last 5 years: renew when all but ~5 s of that is left.
    let mut setup = Setup::new(|p| p, &["--acme-renew-before=0.99999997"]);
    setup.pebble.start();
    let gh = setup.gatehouse(&site("renew", origin, "renew-tls", &["renew.example.com"]));
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));
    let client = setup.client(&["renew.example.com"]).await;
    let url = setup.url("renew.example.com", "/");
    let (first, _) = get_eventually(&client, &url).await;

    // New connections (and handshakes) back to back while two renewals happen.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let requests = tokio::spawn(async move {
        let (mut ok, mut failed, mut serials) = (0, Vec::new(), vec![first]);
        while !*stop_rx.borrow() {
            match get(&client, &url).await {
                Ok((serial, _)) => {
                    ok += 1;
                    if serials.last() != Some(&serial) {
                        serials.push(serial);
                    }
                }
                Err(err) => failed.push(err),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed, serials)
    });
    let gh = tokio::task::spawn_blocking(move || {
        wait_issued(&gh, &setup.pebble, 3.0, Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(1));
        (gh, setup)
    })
    .await
    .expect("wait");
    let _ = stop_tx.send(true);
    let (ok, failed, serials) = requests.await.expect("request loop");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok >= 50, "only {ok} requests");
    assert!(
        serials.len() >= 3,
        "served {} certificates, expected the first and two renewals",
        serials.len()
    );
    let log = gh.0.log_text();
    assert!(log.contains("certificate due for renewal"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_nonces_are_retried() {
    // Pebble's default: 5% of good nonces rejected with badNonce. Add certificates until some
    // nonce was rejected; every one must still be issued, none refused.
    let origin = origin::echo("nonce").await;
    let mut setup = Setup::new(Pebble::rejecting_nonces, &[]);
    setup.pebble.start();
    let gh = setup.gatehouse("");
    let mut hosts = Vec::new();
    for round in 0..10 {
        let yaml: String = (0..4)
            .map(|i| {
                let name = format!("n{round}x{i}");
                let host = format!("{name}.example.com");
                let yaml = site(&name, origin, &format!("{name}-tls"), &[&host]);
                hosts.push(host);
                format!("{yaml}---\n")
            })
            .collect();
        gh.write(&format!("round{round}.yaml"), &yaml);
        wait_issued(
            &gh,
            &setup.pebble,
            hosts.len() as f64,
            Duration::from_secs(120),
        );
        if gh.metric("gatehouse_acme_problems_total", &["type=\"badNonce\""]) > 0.0 {
            break;
        }
    }
    assert!(gh.metric("gatehouse_acme_problems_total", &["type=\"badNonce\""]) > 0.0);
    assert_eq!(gh.metric(ISSUED, &["result=\"failed_rejected\""]), 0.0);
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let client = setup.client(&names).await;
    for host in &names {
        get_eventually(&client, &setup.url(host, "/")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_wait_for_an_acme_server_that_is_down_then_succeed() {
    let origin = origin::echo("late").await;
    let mut setup = Setup::new(|p| p, &[]);
    let gh = setup.gatehouse(&site("late", origin, "late-tls", &["late.example.com"]));
    support::wait_until("a failed order", Duration::from_secs(20), || {
        gh.metric(ISSUED, &["result=\"failed_transient\""]) >= 1.0
    });
    assert!(gh.log_text().contains("ACME order failed"));
    setup.pebble.start();
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));
    let client = setup.client(&["late.example.com"]).await;
    get_eventually(&client, &setup.url("late.example.com", "/")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_host_does_not_hold_up_the_others() {
    let origin = origin::echo("iso").await;
    let mut setup = Setup::new(|p| p, &[]);
    setup.pebble.start();
    // Pebble looks for bad.example.com where nothing listens: its validation fails.
    setup
        .pebble
        .set_address("bad.example.com", "127.0.0.2")
        .await;
    let yaml = format!(
        "{}---\n{}",
        site("bad", origin, "bad-tls", &["bad.example.com"]),
        site("good", origin, "good-tls", &["good.example.com"])
    );
    let gh = setup.gatehouse(&yaml);
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));
    support::wait_until(
        "the bad host's order to fail",
        Duration::from_secs(30),
        || gh.metric(ISSUED, &["result=\"failed_rejected\""]) >= 1.0,
    );
    let client = setup.client(&["good.example.com"]).await;
    get_eventually(&client, &setup.url("good.example.com", "/")).await;
    // Refused: the next try waits minutes, not seconds.
    let line = plain(&gh.wait_log(&["ACME order failed", "bad-tls"], Duration::from_secs(5)));
    assert!(
        line.contains("retry_in_s=300") || line.contains("retry_in_s=299"),
        "{line}"
    );
    assert!(line.contains("failed_rejected"), "{line}");
}
