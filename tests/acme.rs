//! ACME against a real CA: Pebble validates Gatehouse's HTTP-01 and TLS-ALPN-01 answers on its
//! real listeners and its DNS-01 answers in a real BIND 9 server, and clients check the issued
//! chains against Pebble's root over real TLS.
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::bind::Bind;
use support::pebble::Pebble;
use support::{Gatehouse, free_port, origin, service_yaml};

const ISSUED: &str = "gatehouse_acme_orders_total";

/// A Service for `origin` and an Ingress annotated for ACME whose one tls entry asks for `hosts`
/// in Secret `secret`.
fn site(name: &str, origin: SocketAddr, secret: &str, hosts: &[&str]) -> String {
    // Quoted: a wildcard's `*` would start a YAML alias.
    let tls_hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    let tls_hosts = tls_hosts.join(", ");
    let rules: String = hosts
        .iter()
        .map(|h| {
            format!(
                "  - host: {h:?}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}\n"
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
        let root = self.pebble.issuing_root().await;
        client_trusting(&[root], hosts, self.https)
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https.port())
    }
}

/// An HTTPS client that trusts only `roots` (PEM) and reaches `hosts` at `https`; a fresh
/// connection (and full handshake) per request, so it shows the certificate in service now.
fn client_trusting(roots: &[String], hosts: &[&str], https: SocketAddr) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(CertificateDer::from_pem_slice(root.as_bytes()).expect("root pem"))
            .expect("root");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    tls.resumption = rustls::client::Resumption::disabled();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    for host in hosts {
        builder = builder.resolve(host, https);
    }
    builder.build().expect("client")
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

/// The tokens Pebble fetched over HTTP-01, from its log.
fn http01_tokens(pebble: &Pebble) -> Vec<String> {
    const PREFIX: &str = "/.well-known/acme-challenge/";
    let log = pebble.log();
    let mut tokens: Vec<String> = log
        .match_indices(PREFIX)
        .map(|(at, _)| {
            log[at + PREFIX.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect::<String>()
        })
        .filter(|t| !t.is_empty())
        .collect();
    tokens.sort();
    tokens.dedup();
    tokens
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_answers_are_withdrawn_once_the_certificate_is_issued() {
    let origin = origin::echo("app").await;
    let mut setup = Setup::new(|p| p, &[]);
    setup.pebble.start();
    let gh = setup.gatehouse(&site("app", origin, "app-tls", &["app.example.com"]));
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));
    let tokens = http01_tokens(&setup.pebble);
    assert_eq!(tokens.len(), 1, "{}", setup.pebble.log());
    let path = format!("/.well-known/acme-challenge/{}", tokens[0]);

    // While validating, the answer was given on any host; now a host without routes has none.
    let resp = support::raw_get(gh.http, "elsewhere.test", &path, &[]).await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    // On the app's own host the request goes to the app, as any other path does.
    let resp = support::raw_get(gh.http, "app.example.com", &path, &[]).await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.text().contains("\"origin\":\"app\""),
        "{}",
        resp.text()
    );
    // (The echo shows the path; a key authorization would be `TOKEN.THUMBPRINT` alone.)
    assert!(!resp.text().starts_with(&tokens[0]), "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn01_certificate_is_withdrawn_once_the_certificate_is_issued() {
    use support::certs::handshake;
    let origin = origin::echo("alpn").await;
    let mut setup = Setup::new(|p| p, &["--acme-challenge=tls-alpn-01"]);
    setup.pebble.start();
    let gh = setup.gatehouse(&site("alpn", origin, "alpn-tls", &["alpn.example.com"]));
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));
    let client = setup.client(&["alpn.example.com"]).await;
    let (issued_serial, _) = get_eventually(&client, &setup.url("alpn.example.com", "/")).await;

    // A validation handshake (ALPN acme-tls/1 only) now gets the issued certificate, not a
    // challenge certificate with the acmeIdentifier extension.
    let shown = handshake(gh.https, Some("alpn.example.com"), &[b"acme-tls/1"])
        .await
        .expect("handshake");
    let (_, cert) = x509_parser::parse_x509_certificate(&shown.cert).expect("certificate");
    let acme_identifier = cert
        .extensions()
        .iter()
        .any(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31");
    assert!(
        !acme_identifier,
        "the TLS-ALPN-01 challenge certificate is still answered"
    );
    assert_eq!(cert.raw_serial(), &issued_serial[..]);
}

#[test]
fn state_dir_without_email_warns_that_the_account_has_no_contact() {
    let state = tempfile::tempdir().expect("state dir");
    let state_arg = format!("--state-dir={}", state.path().display());
    let gh = Gatehouse::start_with(&[], &[&state_arg]);
    let line = plain(&gh.wait_log(&["no --acme-email"], Duration::from_secs(5)));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("Let's Encrypt production"), "{line}");
    assert!(line.contains("--acme-directory staging"), "{line}");
}

/// Both Pebbles' issuing roots.
async fn roots(pebbles: &[&Pebble]) -> Vec<String> {
    let mut roots = Vec::new();
    for pebble in pebbles {
        roots.push(pebble.issuing_root().await);
    }
    roots
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_directory_reorders_while_the_old_certificate_keeps_serving() {
    let origin = origin::echo("switch").await;
    let (http, https) = (free_port(), free_port());
    // Two CAs: "staging" (A) and "production" (B), at different directory URLs.
    let mut a = Pebble::new(http, https);
    let mut b = Pebble::new(http, https);
    a.start();
    b.start();
    let work = tempfile::tempdir().expect("tempdir");
    let bundle = work.path().join("cas.pem");
    let cas = format!(
        "{}{}",
        std::fs::read_to_string(a.ca_bundle()).expect("ca a"),
        std::fs::read_to_string(b.ca_bundle()).expect("ca b")
    );
    std::fs::write(&bundle, cas).expect("bundle");
    // The directory comes from the config file, so a restart can change it.
    let config = work.path().join("gatehouse.yaml");
    std::fs::write(&config, format!("acme-directory: {}\n", a.directory())).expect("config");
    let args = [
        format!("--config={}", config.display()),
        format!("--acme-ca-bundle={}", bundle.display()),
        "--acme-email=admin@example.com".to_owned(),
        format!("--state-dir={}", work.path().join("state").display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let yaml = site("switch", origin, "switch-tls", &["switch.example.com"]);
    let mut gh = Gatehouse::spawn_on(http, https, &[("main.yaml", &yaml)], &args);
    gh.wait_ready();
    wait_issued(&gh, &a, 1.0, Duration::from_secs(60));
    let roots_ab = roots(&[&a, &b]).await;
    let client = client_trusting(&roots_ab, &["switch.example.com"], https);
    let url = format!("https://switch.example.com:{}/", https.port());
    let (from_a, _) = get_eventually(&client, &url).await;
    let routes = gh.routes();
    assert_eq!(
        routes["acme"]["default/switch-tls"]["directory"],
        a.directory()
    );

    // Switch to B and restart: A's certificate serves at once, B's replaces it, and no
    // request fails meanwhile.
    std::fs::write(&config, format!("acme-directory: {}\n", b.directory())).expect("config");
    gh.restart();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loop_url = url.clone();
    let requests = tokio::spawn(async move {
        let (mut ok, mut failed, mut serials) = (0, Vec::new(), Vec::new());
        while !*stop_rx.borrow() {
            match get(&client, &loop_url).await {
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
    let (gh, a, b) = tokio::task::spawn_blocking(move || {
        wait_issued(&gh, &b, 1.0, Duration::from_secs(60));
        // Long enough for the new certificate to come back through the state directory.
        std::thread::sleep(Duration::from_secs(2));
        (gh, a, b)
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
    eprintln!("directory switch: {ok} HTTPS requests, none failed");
    assert_eq!(
        serials.first(),
        Some(&from_a),
        "A's certificate served first"
    );
    assert_eq!(serials.len(), 2, "then B's, and nothing else");
    assert!(
        gh.log_text()
            .contains("certificate issued through another ACME directory")
    );
    assert_eq!(a.count("POST /order-plz"), 1, "A ordered once");
    assert_eq!(b.count("POST /order-plz"), 1, "B ordered once");

    // The certificate now chains to B's root alone.
    let only_b = client_trusting(&roots(&[&b]).await, &["switch.example.com"], https);
    let (from_b, _) = get(&only_b, &url).await.expect("B's chain");
    assert_eq!(serials.last(), Some(&from_b));

    // /routes and metrics say where it came from, when it expires and when it renews.
    let routes = gh.routes();
    let acme = &routes["acme"]["default/switch-tls"];
    assert_eq!(acme["directory"], b.directory(), "{routes:#}");
    assert_eq!(acme["state"], "valid", "{routes:#}");
    assert!(acme["renewAt"].is_string(), "{routes:#}");
    assert!(acme["notAfter"].is_string(), "{routes:#}");
    assert!(
        acme["issuer"]
            .as_str()
            .is_some_and(|i| i.contains("Pebble")),
        "{routes:#}"
    );
    let tls = &routes["tls"]["switch.example.com"];
    assert_eq!(tls["acmeDirectory"], b.directory(), "{routes:#}");
    assert_eq!(tls["issuer"], acme["issuer"], "{routes:#}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let expiry = gh.metric(
        "gatehouse_certificate_expiry_timestamp_seconds",
        &[
            "host=\"switch.example.com\"",
            "secret=\"default/switch-tls\"",
        ],
    );
    let renewal = gh.metric(
        "gatehouse_certificate_renewal_timestamp_seconds",
        &["secret=\"default/switch-tls\""],
    );
    assert!(expiry > now + 365.0 * 86400.0, "expiry {expiry}");
    assert!(renewal > now && renewal < expiry, "renewal {renewal}");
}

#[tokio::test(flavor = "multi_thread")]
async fn external_account_binding_creates_the_account_a_ca_requires_it_for() {
    // Pebble's own example key (base64url).
    const KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let origin = origin::echo("eab").await;
    let mut setup = Setup::new(|p| p.requiring_eab("kid-1", KEY), &[]);
    setup.pebble.start();
    let yaml = site("eab", origin, "eab-tls", &["eab.example.com"]);

    // Without the binding the CA refuses the account, and the log says what to give.
    let gh = setup.gatehouse(&yaml);
    let line = plain(&gh.wait_log(&["ACME order failed"], Duration::from_secs(30)));
    assert!(line.contains("externalAccountRequired"), "{line}");
    assert!(line.contains("--acme-eab-kid"), "{line}");
    assert!(line.contains("failed_rejected"), "{line}");
    assert!(!setup.state.path().join("account.json").exists());
    drop(gh);

    // With it, the account is created and the certificate issued.
    setup.args.push("--acme-eab-kid=kid-1".to_owned());
    setup.args.push(format!("--acme-eab-hmac-key={KEY}"));
    let gh = setup.gatehouse(&yaml);
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));
    let client = setup.client(&["eab.example.com"]).await;
    get_eventually(&client, &setup.url("eab.example.com", "/")).await;
    let line = plain(&gh.wait_log(&["ACME account created"], Duration::from_secs(1)));
    assert!(line.contains("eab=true"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dns01_through_bind9_issues_a_wildcard_certificate_served_by_sni() {
    let bind = Bind::start("wild.test");
    let origin = origin::echo("wild").await;
    let dns = [
        format!("--acme-dns01-server={}", bind.addr),
        format!("--acme-dns01-tsig-key-file={}", bind.key_file().display()),
        "--acme-dns01-propagation=0s".to_owned(),
    ];
    let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
    // Pebble looks the TXT records up in bind9.
    let mut setup = Setup::new(|p| p.with_dns(bind.addr), &dns);
    setup.pebble.start();
    let gh = setup.gatehouse(&site("wild", origin, "wild-tls", &["*.wild.test"]));
    wait_issued(&gh, &setup.pebble, 1.0, Duration::from_secs(60));

    // One certificate for `*.wild.test`, picked by SNI for any name under it.
    let hosts = ["a.wild.test", "b.wild.test"];
    let client = setup.client(&hosts).await;
    for host in hosts {
        let (_, echo) = get_eventually(&client, &setup.url(host, "/")).await;
        assert_eq!(echo["origin"], "wild", "{host}");
    }
    let shown = support::certs::handshake(setup.https, Some("a.wild.test"), &[b"h2"])
        .await
        .expect("handshake");
    assert_eq!(support::certs::cert_names(&shown.cert), ["*.wild.test"]);

    // The TXT record was added through a signed update, validated, then removed.
    let log = bind.log();
    assert!(
        log.contains("adding an RR at '_acme-challenge.wild.test' TXT"),
        "{log}"
    );
    assert!(
        log.contains("deleting an RR at _acme-challenge.wild.test TXT"),
        "{log}"
    );
    assert!(log.contains(&format!("signer \"{}\" approved", support::bind::KEY_NAME)));
    assert_eq!(
        bind.dig("_acme-challenge.wild.test", "TXT"),
        Vec::<String>::new()
    );
    assert_eq!(setup.pebble.count("Attempting to validate w/ HTTP"), 0);
}

#[test]
fn a_wildcard_host_without_dns01_is_reported_not_ordered() {
    // Nothing listens at this directory: an order would fail, and none is placed.
    let state = tempfile::tempdir().expect("state dir");
    let args = [
        format!("--state-dir={}", state.path().display()),
        "--acme-directory=https://127.0.0.1:9/dir".to_owned(),
        "--acme-email=admin@example.com".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let yaml = site("wild", free_port(), "wild-tls", &["*.wild.test"]);
    let gh = Gatehouse::start_with(&[("main.yaml", &yaml)], &args);
    let line = plain(&gh.wait_log(
        &["ACME certificate not ordered", "wild-tls"],
        Duration::from_secs(5),
    ));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("wildcard host *.wild.test needs the dns-01 challenge"),
        "{line}"
    );
    assert!(line.contains("ingress=default/wild"), "{line}");
    gh.wait_routes("the blocked wildcard", |r| {
        r["acme"]["default/wild-tls"]["state"] == "blocked"
    });
    assert_eq!(gh.metric(ISSUED, &[]), 0.0);
}
