//! TLS termination end to end: the real binary, certificates from an own CA written as Secret
//! manifests, real TLS clients (rustls, reqwest, openssl).
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::certs::{
    self, Ca, cert_names, handshake, https_client, leaf_secret, leaf_secret_data, secret_yaml,
    served_cert, tls_ingress, tls_origin,
};
use support::{Gatehouse, origin, service_yaml};

/// Polls an async check every 50 ms until it holds, at most `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Waits for `/routes` in a blocking task (the harness helper blocks, origins share the runtime).
async fn wait_routes(
    gh: &Arc<Gatehouse>,
    what: &'static str,
    check: fn(&serde_json::Value) -> bool,
) {
    let gh = gh.clone();
    tokio::task::spawn_blocking(move || gh.wait_routes(what, check))
        .await
        .expect("wait_routes");
}

fn warnings(routes: &serde_json::Value) -> Vec<String> {
    routes["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_selects_exact_wildcard_and_fallback_certificates() {
    let ca = Ca::new("test CA");
    let (www, wild) = (ca.leaf(&["www.example.test"]), ca.leaf(&["*.example.test"]));
    let web = origin::echo("web").await;
    let files = [
        ("web.yaml", service_yaml("default", "web", &[web])),
        (
            "secrets.yaml",
            format!(
                "{}---\n{}",
                leaf_secret("default", "www", &www),
                leaf_secret_data("default", "wild", &wild)
            ),
        ),
        (
            "www.yaml",
            tls_ingress(
                "www",
                &["www.example.test"],
                "web",
                &["www.example.test"],
                "www",
                &[],
            ),
        ),
        (
            "wild.yaml",
            tls_ingress(
                "wild",
                &["*.example.test"],
                "web",
                &["*.example.test"],
                "wild",
                &[],
            ),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let gh = Gatehouse::start_with(&files, &[]);

    // Real clients that trust the CA: exact and wildcard hosts verify.
    let hosts = ["www.example.test", "api.example.test", "a.b.example.test"];
    let client = https_client(&ca, &hosts, gh.https).build().unwrap();
    for host in ["www.example.test", "api.example.test"] {
        let resp = client
            .get(format!("https://{host}:{}/x", gh.https.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
        assert_eq!(
            echo["headers"]["host"],
            format!("{host}:{}", gh.https.port())
        );
    }
    assert_eq!(
        served_cert(gh.https, Some("www.example.test")).await,
        www.der
    );
    assert_eq!(
        served_cert(gh.https, Some("WWW.Example.Test")).await,
        www.der
    );
    assert_eq!(
        served_cert(gh.https, Some("api.example.test")).await,
        wild.der
    );

    // A wildcard covers one label only; unknown names and no SNI get the generated certificate.
    for name in [Some("a.b.example.test"), Some("other.test"), None] {
        let cert = served_cert(gh.https, name).await;
        assert_eq!(cert_names(&cert), ["gatehouse.invalid"], "{name:?}");
    }
    let err = client
        .get(format!("https://a.b.example.test:{}/", gh.https.port()))
        .send()
        .await
        .expect_err("the fallback certificate does not verify");
    assert!(err.is_connect(), "{err:?}");

    // Plain HTTP to a TLS host is still served (no --ssl-redirect).
    let plain = gh.client_for(&["www.example.test"]);
    let resp = plain
        .get(format!("http://www.example.test:{}/", gh.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let routes = gh.routes();
    assert_eq!(routes["tls"]["www.example.test"]["secret"], "default/www");
    assert_eq!(
        routes["tls"]["*.example.test"]["notAfter"],
        "2100-01-01T00:00:00Z"
    );
    assert!(gh.metric("gatehouse_tls_handshakes_total", &["result=\"ok\""]) >= 5.0);
    assert_eq!(
        gh.metric(
            "gatehouse_certificate_expiry_seconds",
            &["host=\"www.example.test\""]
        ),
        4_102_444_800.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn default_certificate_flag_serves_its_secret_to_unknown_names() {
    let ca = Ca::new("test CA");
    let fallback = ca.leaf(&["fallback.test"]);
    let secret = leaf_secret("ops", "fallback", &fallback);
    let gh = Gatehouse::start_with(
        &[("s.yaml", &secret)],
        &["--default-certificate=ops/fallback"],
    );
    assert_eq!(
        served_cert(gh.https, Some("unknown.test")).await,
        fallback.der
    );
    assert_eq!(served_cert(gh.https, None).await, fallback.der);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tls_1_2_and_1_3_are_spoken() {
    let gh = Gatehouse::start("");
    let s_client = |version: &'static str| {
        let addr = gh.https;
        async move {
            let out = tokio::process::Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &addr.to_string(),
                    "-servername",
                    "app.test",
                    version,
                ])
                // Let the client offer old versions at all (OpenSSL 3 refuses them by default).
                .args(["-cipher", "DEFAULT@SECLEVEL=0"])
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .expect("openssl s_client");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        }
    };
    for old in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(old).await;
        assert!(!ok, "{old} accepted: {text}");
        // The server answers with an alert (protocol_version or handshake_failure): it is the
        // server refusing, not the client failing to offer the version.
        assert!(
            text.contains("SSL alert number"),
            "{old}: the server must refuse the version: {text}"
        );
        assert!(text.contains("Cipher is (NONE)"), "{old}: {text}");
    }
    for new in ["-tls1_2", "-tls1_3"] {
        let (ok, text) = s_client(new).await;
        assert!(ok, "{new} refused: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_is_negotiated_by_alpn() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(&["app.test"]);
    let web = origin::echo("web").await;
    let yaml = [
        service_yaml("default", "web", &[web]),
        leaf_secret("default", "app", &leaf),
        tls_ingress("app", &["app.test"], "web", &["app.test"], "app", &[]),
    ]
    .join("---\n");
    let gh = Gatehouse::start(&yaml);
    let url = format!("https://app.test:{}/h", gh.https.port());

    let h2 = https_client(&ca, &["app.test"], gh.https).build().unwrap();
    let resp = h2.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "the upstream side stays HTTP/1.1"
    );

    let h1 = https_client(&ca, &["app.test"], gh.https)
        .http1_only()
        .build()
        .unwrap();
    let resp = h1.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);

    let shown = handshake(gh.https, Some("app.test"), &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(shown.alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_tls_alpn_handshake_is_closed_without_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(&["app.test"]);
    let yaml = [
        leaf_secret("default", "app", &leaf),
        tls_ingress("app", &["app.test"], "web", &["app.test"], "app", &[]),
    ]
    .join("---\n");
    let gh = Gatehouse::start(&yaml);
    let mut shown = handshake(gh.https, Some("app.test"), &[b"acme-tls/1"])
        .await
        .unwrap();
    assert_eq!(shown.alpn.as_deref(), Some(&b"acme-tls/1"[..]));
    let _ = shown
        .stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(5), shown.stream.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {buf:?}");
    assert!(buf.is_empty(), "no HTTP answer on an acme-tls/1 connection");
    assert_eq!(
        gh.metric(
            "gatehouse_tls_handshakes_total",
            &["result=\"acme_challenge\""]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_swap_under_load_fails_no_request() {
    let ca = Ca::new("test CA");
    let (old, new) = (ca.leaf(&["app.test"]), ca.leaf(&["app.test"]));
    let web = origin::echo("web").await;
    let yaml = [
        service_yaml("default", "web", &[web]),
        tls_ingress("app", &["app.test"], "web", &["app.test"], "app", &[]),
    ]
    .join("---\n");
    let secret = leaf_secret("default", "app", &old);
    let gh = Gatehouse::start_with(&[("main.yaml", &yaml), ("secret.yaml", &secret)], &[]);
    assert_eq!(served_cert(gh.https, Some("app.test")).await, old.der);

    let url = format!("https://app.test:{}/load", gh.https.port());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        // Two workers keep one connection alive; two make a new connection per request.
        let fresh = worker % 2 == 0;
        let keep_alive = https_client(&ca, &["app.test"], gh.https).build().unwrap();
        let (ca_pem, addr) = (ca.pem.clone(), gh.https);
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let client = if fresh {
                    reqwest::Client::builder()
                        .no_proxy()
                        .resolve("app.test", addr)
                        .tls_certs_only(
                            [reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()],
                        )
                        .build()
                        .unwrap()
                } else {
                    keep_alive.clone()
                };
                match client.get(&url).send().await {
                    Ok(resp) if resp.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    gh.write("secret.yaml", &leaf_secret("default", "app", &new));
    eventually(
        "the new certificate on new connections",
        Duration::from_secs(10),
        || async { served_cert(gh.https, Some("app.test")).await == new.der },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} requests across the swap, {failed} failed");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok > 20, "only {ok} requests ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_secret_costs_only_its_own_host() {
    let ca = Ca::new("test CA");
    let (a, b, c, d) = (
        ca.leaf(&["a.test"]),
        ca.leaf(&["b.test"]),
        ca.leaf(&["c.test"]),
        ca.leaf_valid(&["d.test"], 2000, 2001),
    );
    let web = origin::echo("web").await;
    let ingresses = ["a", "b", "c", "d"].map(|h| {
        tls_ingress(
            h,
            &[&format!("{h}.test")],
            "web",
            &[&format!("{h}.test")],
            h,
            &[],
        )
    });
    let main = [service_yaml("default", "web", &[web])]
        .into_iter()
        .chain(ingresses)
        .collect::<Vec<_>>()
        .join("---\n");
    let bad_pem = secret_yaml(
        "default",
        "c",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        &c.key_pem,
    );
    let files = [
        ("main.yaml", main),
        ("a.yaml", leaf_secret("default", "a", &a)),
        ("b.yaml", leaf_secret("default", "b", &b)),
        ("c.yaml", bad_pem),
        ("d.yaml", leaf_secret("default", "d", &d)),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let gh = Arc::new(Gatehouse::start_with(&files, &[]));

    // A bad PEM and an expired certificate: those hosts get the fallback, with a warning each.
    assert_eq!(served_cert(gh.https, Some("a.test")).await, a.der);
    assert_eq!(served_cert(gh.https, Some("b.test")).await, b.der);
    assert_eq!(
        cert_names(&served_cert(gh.https, Some("c.test")).await),
        ["gatehouse.invalid"]
    );
    assert_eq!(
        cert_names(&served_cert(gh.https, Some("d.test")).await),
        ["gatehouse.invalid"]
    );
    let w = warnings(&gh.routes());
    assert!(w.iter().any(|w| w.starts_with("Ingress default/c: TLS Secret default/c for host c.test not usable: tls.crt is not valid PEM")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("Ingress default/d: TLS Secret default/d for host d.test not usable: certificate expired at 2001-01-01T00:00:00Z")), "{w:?}");

    // b's Secret breaks (its key no longer matches): b keeps its last good certificate.
    gh.write(
        "b.yaml",
        &secret_yaml("default", "b", &b.cert_pem, &a.key_pem),
    );
    wait_routes(&gh, "the key mismatch warning", |r| {
        warnings(r).iter().any(|w| w.contains("default/b for host b.test not usable: private key does not match the certificate; keeping its last good certificate"))
    })
    .await;
    assert_eq!(served_cert(gh.https, Some("b.test")).await, b.der);
    assert_eq!(served_cert(gh.https, Some("a.test")).await, a.der);

    let client = https_client(&ca, &["a.test", "b.test"], gh.https)
        .build()
        .unwrap();
    for host in ["a.test", "b.test"] {
        let resp = client
            .get(format!("https://{host}:{}/", gh.https.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_redirect_sends_http_to_https_except_acme_challenges() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(&["app.test", "keep.test"]);
    let web = origin::echo("web").await;
    let yaml = [
        service_yaml("default", "web", &[web]),
        leaf_secret("default", "tls", &leaf),
        tls_ingress("app", &["app.test"], "web", &["app.test"], "tls", &[]),
        tls_ingress(
            "keep",
            &["keep.test"],
            "web",
            &["keep.test"],
            "tls",
            &[("gatehouse.dev/ssl-redirect", "false")],
        ),
        tls_ingress("plain", &["plain.test"], "web", &[], "", &[]),
    ]
    .join("---\n");
    let https_port = support::free_port().port();
    let mut gh = Gatehouse::start_with(
        &[("main.yaml", &yaml)],
        &[
            "--ssl-redirect",
            &format!("--https-redirect-port={https_port}"),
        ],
    );
    let http = gh.client_for(&["app.test", "keep.test", "plain.test"]);
    let get = |host: &str, path: &str| {
        http.get(format!("http://{host}:{}{path}", gh.http.port()))
            .send()
    };

    let resp = get("app.test", "/some/path?x=1&y=2").await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://app.test:{https_port}/some/path?x=1&y=2")
    );
    let challenge = get("app.test", "/.well-known/acme-challenge/token123")
        .await
        .unwrap();
    assert_eq!(
        challenge.status(),
        200,
        "ACME HTTP-01 paths are never redirected"
    );
    assert_eq!(
        get("keep.test", "/").await.unwrap().status(),
        200,
        "annotation false"
    );
    assert_eq!(
        get("plain.test", "/").await.unwrap().status(),
        200,
        "no TLS, no redirect"
    );
    assert_eq!(
        gh.routes()["hosts"]["app.test"]["Prefix /"]["sslRedirect"],
        true
    );

    // Without a redirect port the Location names no port (443); HTTPS itself is not redirected.
    gh.kill();
    let gh = Gatehouse::start_with(&[("main.yaml", &yaml)], &["--ssl-redirect"]);
    let http = gh.client_for(&["app.test"]);
    let resp = http
        .get(format!("http://app.test:{}/p", gh.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["location"], "https://app.test/p");
    let https = https_client(&ca, &["app.test"], gh.https).build().unwrap();
    let resp = https
        .get(format!("https://app.test:{}/p", gh.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// An Ingress to Service `tls-origin` at `origin` speaking HTTPS, with extra annotations.
fn https_backend(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let mut all = vec![("gatehouse.dev/backend-protocol", "HTTPS")];
    all.extend_from_slice(annotations);
    tls_ingress(name, &[host], "tls-origin", &[], "", &all)
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_protocol_https_verifies_the_origin_or_not() {
    let origin_ca = Ca::new("origin CA");
    let origin_leaf = origin_ca.leaf(&["origin.internal"]);
    let tls_origin_addr: SocketAddr = tls_origin("secure", &origin_leaf).await;
    let yaml = [
        service_yaml("default", "tls-origin", &[tls_origin_addr]),
        https_backend(
            "named",
            "named.test",
            &[("gatehouse.dev/backend-tls-server-name", "origin.internal")],
        ),
        https_backend("by-ip", "ip.test", &[]),
        https_backend(
            "wrong",
            "wrong.test",
            &[("gatehouse.dev/backend-tls-server-name", "other.internal")],
        ),
    ]
    .join("---\n");
    let dir = tempfile::tempdir().unwrap();
    let bundle = origin_ca.write_pem(dir.path(), "origin-ca");
    let bundle_arg = format!("--upstream-ca-bundle={}", bundle.display());
    let hosts = ["named.test", "ip.test", "wrong.test"];

    // Verification on, with the origin's CA: only the name the certificate carries verifies.
    let gh = Gatehouse::start_with(&[("main.yaml", &yaml)], &[&bundle_arg]);
    let http = gh.client_for(&hosts);
    let get = |host: &str| {
        http.get(format!("http://{host}:{}/up", gh.http.port()))
            .send()
    };
    let resp = get("named.test").await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["origin"], "secure");
    assert_eq!(echo["sni"], "origin.internal");
    assert_eq!(echo["path"], "/up");
    assert_eq!(
        get("ip.test").await.unwrap().status(),
        502,
        "the certificate names no IP"
    );
    assert_eq!(get("wrong.test").await.unwrap().status(), 502, "wrong name");
    drop(gh);

    // Verification on without the CA: nothing verifies.
    let gh = Gatehouse::start_with(&[("main.yaml", &yaml)], &[]);
    let http = gh.client_for(&hosts);
    let resp = http
        .get(format!("http://named.test:{}/", gh.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    drop(gh);

    // Verification off: encrypted, not authenticated.
    let gh = Gatehouse::start_with(&[("main.yaml", &yaml)], &["--upstream-tls-verify=false"]);
    let http = gh.client_for(&hosts);
    for host in hosts {
        let resp = http
            .get(format!("http://{host}:{}/", gh.http.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
    }
    let _ = certs::provider();
}
