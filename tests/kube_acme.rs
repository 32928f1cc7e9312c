//! ACME in a cluster: the real `gatehouse` binary against the in-process fake API server
//! (`support/fake_apiserver.rs`) and a real Pebble. Which Secrets Gatehouse writes, which it
//! leaves alone, and what it cleans up.
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
mod support;

use std::time::{Duration, Instant};

use fake_apiserver::FakeApi;
use serde_json::{Value, json};
use support::certs::{Ca, leaf_secret_data};
use support::pebble::Pebble;
use support::{Gatehouse, origin};

/// The API server, Pebble validating on Gatehouse's listeners, and Gatehouse pointed at both.
struct Cluster {
    api: FakeApi,
    _dir: tempfile::TempDir,
    pebble: Pebble,
    gh: Gatehouse,
}

impl Cluster {
    /// Starts everything with `objects` already in the API, and waits until Gatehouse leads.
    async fn start(objects: &[Value]) -> Self {
        let api = FakeApi::start().await;
        api.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "gatehouse"},
            "spec": {"controller": "gatehouse.dev/ingress-controller"},
        }));
        let web = origin::echo("web").await;
        api.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }));
        api.apply(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-x1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": web.port()}],
            "endpoints": [{"addresses": [web.ip().to_string()], "conditions": {"ready": true}}],
        }));
        for object in objects {
            api.apply(object.clone());
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (http, https) = (support::free_port(), support::free_port());
        let mut pebble = Pebble::new(http, https);
        pebble.start();
        let mut args = vec![
            format!("--kubeconfig={}", api.kubeconfig(dir.path()).display()),
            "--leader-election-namespace=gatehouse".to_owned(),
            "--lease-duration=2s".to_owned(),
            "--lease-renew=500ms".to_owned(),
        ];
        args.extend(pebble.gatehouse_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gh = Gatehouse::spawn_on(http, https, &[], &args);
        gh.wait_ready();
        Self {
            api,
            _dir: dir,
            pebble,
            gh,
        }
    }

    /// Writes (POST, PUT, PATCH, DELETE) to Secret `name` in `ns`, creation included.
    fn secret_writes(&self, ns: &str, name: &str) -> Vec<String> {
        self.api
            .writes()
            .into_iter()
            .filter(|w| {
                w.path
                    .ends_with(&format!("/namespaces/{ns}/secrets/{name}"))
                    || (w.path.ends_with(&format!("/namespaces/{ns}/secrets"))
                        && w.body["metadata"]["name"] == name)
            })
            .map(|w| format!("{} {}", w.method, w.path))
            .collect()
    }
}

/// An Ingress annotated for ACME whose one tls entry asks for `host` in Secret `secret`.
fn acme_ingress(name: &str, host: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default",
                     "annotations": {"kubernetes.io/tls-acme": "true"}},
        "spec": {
            "ingressClassName": "gatehouse",
            "tls": [{"secretName": secret, "hosts": [host]}],
            "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}
            ]}}],
        },
    })
}

/// A `kubernetes.io/tls` Secret made by hand holding a certificate for `host` that expired in
/// 2001, with `labels`.
fn expired_secret(name: &str, host: &str, labels: Value) -> Value {
    let leaf = Ca::new("hand-made CA").leaf_valid(&[host], 2000, 2001);
    let mut secret: Value =
        serde_saphyr::from_str(&leaf_secret_data("default", name, &leaf)).expect("secret yaml");
    secret["metadata"]["labels"] = labels;
    secret
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_gatehouse_did_not_make_are_never_overwritten() {
    // Two Secrets someone else made: a TLS Secret with an expired certificate (Gatehouse sees
    // it through its watch) and an Opaque one (not watched: only a read before ordering finds
    // it). Pebble is up, so an order would succeed and overwrite them if nothing checked.
    let cluster = Cluster::start(&[
        expired_secret("hand-tls", "hand.test", json!({"app": "hand-made"})),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "opaque-tls", "namespace": "default"},
               "data": {"password": "aHVudGVyMg=="}}),
        acme_ingress("hand", "hand.test", "hand-tls"),
        acme_ingress("opaque", "opaque.test", "opaque-tls"),
    ])
    .await;
    let gh = &cluster.gh;
    let line = gh.wait_log(
        &["ACME certificate not ordered", "hand-tls"],
        Duration::from_secs(10),
    );
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("default/hand"), "names the Ingress: {line}");
    assert!(
        line.contains("not managed by Gatehouse (no label gatehouse.dev/managed-by=gatehouse)"),
        "{line}"
    );
    let line = gh.wait_log(
        &["ACME order failed", "opaque-tls"],
        Duration::from_secs(10),
    );
    assert!(
        line.contains("Secret default/opaque-tls exists and is not managed by Gatehouse"),
        "{line}"
    );
    assert!(line.contains("failed_rejected"), "{line}");
    gh.wait_routes("the hand-made Secret blocked", |r| {
        r["acme"]["default/hand-tls"]["state"] == "blocked"
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    for name in ["hand-tls", "opaque-tls"] {
        assert_eq!(cluster.secret_writes("default", name), Vec::<String>::new());
    }
    let opaque = cluster
        .api
        .get("Secret", "default", "opaque-tls")
        .expect("kept");
    assert_eq!(opaque["data"]["password"], "aHVudGVyMg==");
    assert_eq!(
        cluster.pebble.count("POST /order-plz"),
        0,
        "nothing ordered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_labelled_secret_is_taken_over_and_the_order_secret_deleted() {
    // Labelled by hand as Gatehouse's: handed over, so its expired certificate is replaced.
    let cluster = Cluster::start(&[
        expired_secret(
            "take-tls",
            "take.test",
            json!({"gatehouse.dev/managed-by": "gatehouse"}),
        ),
        acme_ingress("take", "take.test", "take-tls"),
    ])
    .await;
    let api = &cluster.api;
    let issued =
        |s: &Value| s["metadata"]["annotations"]["gatehouse.dev/acme-directory"].is_string();
    eventually(
        "the certificate Secret rewritten",
        Duration::from_secs(30),
        || {
            api.get("Secret", "default", "take-tls")
                .is_some_and(|s| issued(&s))
        },
    )
    .await;
    let secret = api.get("Secret", "default", "take-tls").expect("secret");
    let meta = &secret["metadata"];
    assert_eq!(meta["labels"]["gatehouse.dev/managed-by"], "gatehouse");
    assert_eq!(
        meta["annotations"]["gatehouse.dev/acme-directory"],
        cluster.pebble.directory()
    );
    assert!(
        meta["annotations"]["gatehouse.dev/acme-account"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("https://{}/", cluster.pebble.listen))),
        "{meta:#}"
    );
    assert_eq!(
        meta["annotations"]["gatehouse.dev/acme-ingress"],
        "default/take"
    );

    // The order's Secret (with the certificate's private key) is gone, deleted, not emptied.
    eventually("the order Secret deleted", Duration::from_secs(5), || {
        !api.list("Secret").iter().any(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("gatehouse-acme-order-"))
        })
    })
    .await;
    let deletes: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|w| w.method == "DELETE" && w.path.contains("/secrets/gatehouse-acme-order-"))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].status, 200);
    // Every Secret Gatehouse wrote carries the label.
    for name in ["gatehouse-acme-account", "gatehouse-acme-challenges"] {
        let own = api.get("Secret", "gatehouse", name).expect(name);
        assert_eq!(
            own["metadata"]["labels"]["gatehouse.dev/managed-by"], "gatehouse",
            "{name}"
        );
    }
}
