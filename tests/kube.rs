//! The Kubernetes source against an API server the tests control: the real `gatehouse` binary,
//! its real kube-rs client, and an in-process fake API server that speaks the real list/watch
//! protocol (`support/fake_apiserver.rs`).
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fake_apiserver::FakeApi;
use serde_json::{Value, json};
use support::{Gatehouse, origin};

const CONTROLLER: &str = "gatehouse.dev/ingress-controller";

/// A fake cluster: the API server and a directory for its kubeconfig.
struct Cluster {
    api: FakeApi,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Cluster {
    async fn start() -> Self {
        let api = FakeApi::start().await;
        api.apply(ingress_class("gatehouse", CONTROLLER));
        Self {
            api,
            dir: tempfile::tempdir().expect("tempdir"),
            http: support::client(),
        }
    }

    /// Starts Gatehouse against this cluster (short leases, so hand-overs are quick) and waits
    /// until it is ready.
    fn gatehouse(&self, extra: &[&str]) -> Gatehouse {
        let gh = self.spawn_gatehouse(extra);
        gh.wait_ready();
        gh
    }

    fn spawn_gatehouse(&self, extra: &[&str]) -> Gatehouse {
        let kubeconfig = self.api.kubeconfig(self.dir.path());
        let mut args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-election-namespace=gatehouse".to_owned(),
            "--lease-duration=2s".to_owned(),
            "--lease-renew=500ms".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Gatehouse::spawn_with(&[], &args)
    }

    /// A Service `name` in `ns` with one EndpointSlice holding `endpoints`.
    fn service(&self, ns: &str, name: &str, endpoints: &[SocketAddr]) {
        self.api.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }));
        self.slice(ns, name, endpoints);
    }

    fn slice(&self, ns: &str, service: &str, endpoints: &[SocketAddr]) {
        let port = endpoints.first().map(|e| e.port()).unwrap_or(1);
        let addresses: Vec<String> = endpoints.iter().map(|e| e.ip().to_string()).collect();
        self.api.apply(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-x1"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port}],
            "endpoints": [{"addresses": addresses, "conditions": {"ready": true}}],
        }));
    }

    /// `GET http://host{path}` through the gateway: status and the echoing origin's name (or
    /// the body when it is not an echo).
    async fn get(&self, gh: &Gatehouse, host: &str, path: &str) -> (u16, String) {
        let sent = self
            .http
            .get(gh.url(path))
            .header("host", host)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                let origin = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["origin"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                (status, origin)
            }
            Err(err) => (0, err.to_string()),
        }
    }

    /// Polls every few milliseconds until `host{path}` answers `status` from `origin` (origin
    /// ignored when empty); returns how long that took. Panics after `within`.
    async fn wait_answer(
        &self,
        gh: &Gatehouse,
        host: &str,
        path: &str,
        status: u16,
        origin: &str,
        within: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let (got, from) = self.get(gh, host, path).await;
            if got == status && (origin.is_empty() || from == origin) {
                return start.elapsed();
            }
            if start.elapsed() > within {
                panic!(
                    "{host}{path} still answers {got} from {from:?} after {within:?} (wanted {status} {origin:?}); routes: {:#}\nlog:\n{}",
                    gh.routes(),
                    gh.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
}

fn ingress_class(name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": controller},
    })
}

/// An Ingress of `class` routing `host` `/` (Prefix) to Service `service` port 80.
fn ingress(ns: &str, name: &str, class: &str, host: &str, service: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "ingressClassName": class,
            "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"number": 80}}}}
            ]}}],
        },
    })
}

fn lb_ips(ingress: &Value) -> Vec<String> {
    ingress["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|lb| {
            lb["ip"]
                .as_str()
                .or(lb["hostname"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

/// Waits (blocking, up to `within`) for `check`; panics naming `what`.
async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initial_sync_serves_routes_without_streaming_lists() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web"));

    let gh = cluster.gatehouse(&[]);
    cluster
        .wait_answer(&gh, "app.test", "/", 200, "a", Duration::from_secs(2))
        .await;
    assert_eq!(cluster.get(&gh, "other.test", "/").await.0, 404);

    let requests = cluster.api.requests();
    assert!(
        requests.iter().all(|r| !r.contains("sendInitialEvents")),
        "streaming lists used: {requests:#?}"
    );
    assert!(requests.iter().any(
        |r| r.starts_with("GET /apis/networking.k8s.io/v1/ingresses?") && !r.contains("watch=")
    ));
    assert!(requests.iter().any(
        |r| r.starts_with("GET /apis/networking.k8s.io/v1/ingresses?") && r.contains("watch=true")
    ));
    assert_eq!(gh.metric("gatehouse_kube_connected", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_list_cut_into_pages_is_read_whole() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    // More than two pages of 500.
    for i in 0..1100 {
        cluster.api.apply(ingress(
            "default",
            &format!("web-{i:04}"),
            "gatehouse",
            &format!("h{i}.test"),
            "web",
        ));
    }
    let gh = cluster.gatehouse(&[]);
    for host in ["h0.test", "h550.test", "h1099.test"] {
        cluster
            .wait_answer(&gh, host, "/", 200, "a", Duration::from_secs(2))
            .await;
    }
    let pages = cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.starts_with("GET /apis/networking.k8s.io/v1/ingresses?") && r.contains("continue=")
        })
        .count();
    assert_eq!(pages, 2, "{:#?}", cluster.api.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_ready_until_every_watch_has_listed() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web"));
    cluster.api.set_unavailable();

    let gh = cluster.spawn_gatehouse(&[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gh.admin("/readyz").0, 503, "ready before any list");
    assert_eq!(gh.admin("/healthz").0, 200);

    cluster.api.restore();
    gh.wait_ready();
    // Ready means the whole configuration is in service, not a partial one.
    assert_eq!(
        cluster.get(&gh, "app.test", "/").await,
        (200, "a".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_of_each_kind_reach_the_routes() {
    let cluster = Cluster::start().await;
    let (a, b) = (origin::echo("a").await, origin::echo("b").await);
    let gh = cluster.gatehouse(&[]);
    let within = Duration::from_secs(3);

    // Ingress added, Service and EndpointSlice after it.
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web"));
    cluster
        .wait_answer(&gh, "app.test", "/", 503, "", within)
        .await;
    cluster.service("default", "web", &[a]);
    cluster
        .wait_answer(&gh, "app.test", "/", 200, "a", within)
        .await;

    // EndpointSlice changed: the new endpoint serves.
    cluster.slice("default", "web", &[b]);
    cluster
        .wait_answer(&gh, "app.test", "/", 200, "b", within)
        .await;

    // Ingress changed: another host.
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "new.test", "web"));
    cluster
        .wait_answer(&gh, "new.test", "/", 200, "b", within)
        .await;
    cluster
        .wait_answer(&gh, "app.test", "/", 404, "", within)
        .await;

    // Service changed: the port the Ingress names disappears.
    cluster.api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 8080}]},
    }));
    cluster
        .wait_answer(&gh, "new.test", "/", 503, "", within)
        .await;
    cluster.service("default", "web", &[b]);
    cluster
        .wait_answer(&gh, "new.test", "/", 200, "b", within)
        .await;

    // StaticSite added, then removed.
    let site = tempfile::tempdir().expect("site dir");
    std::fs::write(site.path().join("index.html"), "<h1>docs</h1>").expect("index");
    cluster.api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "docs", "namespace": "default"},
        "spec": {"ingressClassName": "gatehouse", "rules": [{"host": "docs.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"resource": {"apiGroup": "gatehouse.dev", "kind": "StaticSite", "name": "docs"}}}
        ]}}]},
    }));
    cluster.api.apply(json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "StaticSite",
        "metadata": {"name": "docs", "namespace": "default"},
        "spec": {"root": site.path().display().to_string()},
    }));
    cluster
        .wait_answer(&gh, "docs.test", "/", 200, "<h1>docs</h1>", within)
        .await;
    cluster.api.delete("StaticSite", "default", "docs");
    cluster
        .wait_answer(&gh, "docs.test", "/", 503, "", within)
        .await;

    // EndpointSlice deleted: no endpoint left.
    cluster.api.delete("EndpointSlice", "default", "web-x1");
    cluster
        .wait_answer(&gh, "new.test", "/", 503, "", within)
        .await;

    // Ingress deleted.
    cluster.api.delete("Ingress", "default", "web");
    cluster
        .wait_answer(&gh, "new.test", "/", 404, "", within)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_ingresses_of_our_class_are_served() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster
        .api
        .apply(ingress_class("other", "example.com/other-controller"));
    cluster
        .api
        .apply(ingress("default", "ours", "gatehouse", "ours.test", "web"));
    cluster
        .api
        .apply(ingress("default", "theirs", "other", "theirs.test", "web"));
    let mut legacy = ingress("default", "legacy", "", "legacy.test", "web");
    legacy["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("ingressClassName");
    legacy["metadata"]["annotations"] = json!({"kubernetes.io/ingress.class": "gatehouse"});
    cluster.api.apply(legacy);
    let gh = cluster.gatehouse(&[]);
    let within = Duration::from_secs(3);

    cluster
        .wait_answer(&gh, "ours.test", "/", 200, "a", within)
        .await;
    cluster
        .wait_answer(&gh, "legacy.test", "/", 200, "a", within)
        .await;
    assert_eq!(cluster.get(&gh, "theirs.test", "/").await.0, 404);

    // The other class is handed to our controller: its Ingress becomes ours.
    cluster.api.apply(ingress_class("other", CONTROLLER));
    cluster
        .wait_answer(&gh, "theirs.test", "/", 200, "a", within)
        .await;
    // Our class is handed away: its Ingresses are dropped.
    cluster
        .api
        .apply(ingress_class("gatehouse", "example.com/other-controller"));
    cluster
        .wait_answer(&gh, "ours.test", "/", 404, "", within)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_namespace_restricts_what_is_read() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    for ns in ["team-a", "team-b"] {
        cluster.service(ns, "web", &[a]);
        cluster.api.apply(ingress(
            ns,
            "web",
            "gatehouse",
            &format!("{ns}.test"),
            "web",
        ));
    }
    let gh = cluster.gatehouse(&["--watch-namespace=team-a"]);
    cluster
        .wait_answer(&gh, "team-a.test", "/", 200, "a", Duration::from_secs(2))
        .await;
    assert_eq!(cluster.get(&gh, "team-b.test", "/").await.0, 404);

    let lists: Vec<String> = cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.contains("/ingresses?") || r.contains("/services?") || r.contains("/endpointslices?")
        })
        .collect();
    assert!(!lists.is_empty());
    for request in &lists {
        assert!(
            request.contains("/namespaces/team-a/"),
            "cluster-wide or foreign request: {request}"
        );
    }
}

/// Secrets are read in full only when they are TLS Secrets or Gatehouse's own; the others are
/// watched by their metadata alone (the ones Ingresses name for authentication are fetched:
/// `basic_auth_secrets_are_read_from_the_api_and_follow_changes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_tls_and_own_secrets_are_read_in_full() {
    let cluster = Cluster::start().await;
    cluster
        .api
        .apply(htpasswd_secret("default", "unrelated", "root:x\n"));
    cluster.api.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "sh.helm.release.v1.app.v1", "namespace": "default",
                     "labels": {"owner": "helm"}},
        "type": "helm.sh/release.v1",
        "data": {"release": "c2VjcmV0"},
    }));
    let _gh = cluster.gatehouse(&[]);
    let secrets: Vec<String> = cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| r.contains("/secrets"))
        .collect();
    assert!(!secrets.is_empty());
    for request in &secrets {
        let tls = request.contains("fieldSelector=type%3Dkubernetes.io%2Ftls")
            || request.contains("fieldSelector=type=kubernetes.io/tls");
        let own = request.contains("/namespaces/gatehouse/secrets?")
            && request.contains("labelSelector=gatehouse.dev%2Fsecret");
        // The metadata-only watch of the others.
        let not_tls = request.contains("fieldSelector=type%21%3Dkubernetes.io%2Ftls");
        assert!(
            tls || own || not_tls,
            "unrestricted Secret request: {request}"
        );
    }
    let full: Vec<String> = cluster
        .api
        .served_in_full()
        .into_iter()
        .filter(|s| s.starts_with("Secret "))
        .collect();
    assert!(full.is_empty(), "Secrets read in full: {full:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_is_published_for_our_ingresses_only_and_removed_when_they_leave() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster
        .api
        .apply(ingress_class("other", "example.com/other-controller"));
    cluster
        .api
        .apply(ingress("default", "ours", "gatehouse", "ours.test", "web"));
    let mut theirs = ingress("default", "theirs", "other", "theirs.test", "web");
    theirs["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}});
    cluster.api.apply(theirs);
    let gh = cluster.gatehouse(&["--publish-address=203.0.113.10,lb.example.com"]);
    let within = Duration::from_secs(4);

    let get = |name: &str| {
        cluster
            .api
            .get("Ingress", "default", name)
            .expect("ingress")
    };
    eventually("status of ours", within, || {
        lb_ips(&get("ours")) == ["lb.example.com", "203.0.113.10"]
    })
    .await;
    // Settle, then check nothing was patched twice and the other class was never touched.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let patches = cluster.api.status_patches();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert!(patches[0].path.ends_with("/ingresses/ours/status"));
    assert!(
        patches[0]
            .content_type
            .starts_with("application/merge-patch+json")
    );
    assert_eq!(lb_ips(&get("theirs")), ["198.51.100.7"]);

    // Ours leaves for the other class: its addresses are removed; theirs still untouched.
    let mut moved = get("ours");
    moved["spec"]["ingressClassName"] = json!("other");
    cluster.api.apply(moved);
    eventually("status of ours removed", within, || {
        lb_ips(&get("ours")).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cluster
            .api
            .status_patches()
            .iter()
            .all(|p| !p.path.contains("/theirs/"))
    );
    assert_eq!(lb_ips(&get("theirs")), ["198.51.100.7"]);
    assert_eq!(gh.metric("gatehouse_kube_status_updates_total", &[]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_follows_the_published_service() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web"));
    let lb = |ip: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "gatehouse", "namespace": "gatehouse"},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}], "externalIPs": ["192.0.2.1"]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
        })
    };
    cluster.api.apply(lb("203.0.113.1"));
    let _gh = cluster.gatehouse(&[
        "--watch-namespace=default",
        "--publish-service=gatehouse/gatehouse",
    ]);
    let within = Duration::from_secs(4);
    let get = || {
        cluster
            .api
            .get("Ingress", "default", "web")
            .expect("ingress")
    };

    eventually("status from the Service", within, || {
        lb_ips(&get()) == ["192.0.2.1", "203.0.113.1"]
    })
    .await;
    cluster.api.apply(lb("203.0.113.2"));
    eventually("status following the Service", within, || {
        lb_ips(&get()) == ["192.0.2.1", "203.0.113.2"]
    })
    .await;
    // Nodes are read only for a NodePort Service.
    assert_eq!(node_requests(&cluster.api), Vec::<String>::new());
}

/// A Node with `addresses` (`(type, address)`), Ready or not, and labels.
fn node(name: &str, ready: bool, addresses: &[(&str, &str)], labels: Value) -> Value {
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|(kind, address)| json!({"type": kind, "address": address}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "images": [{"names": ["registry.example/big-image:1"], "sizeBytes": 123456789}],
        },
    })
}

fn node_requests(api: &FakeApi) -> Vec<String> {
    api.requests()
        .into_iter()
        .filter(|r| r.contains("/api/v1/nodes"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_port_service_publishes_its_nodes_addresses() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web"));
    cluster.api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "gatehouse", "namespace": "gatehouse"},
        "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
    }));
    let none = json!({});
    let external = [("ExternalIP", "203.0.113.10"), ("InternalIP", "10.0.0.1")];
    cluster.api.apply(node("n1", true, &external, none.clone()));
    cluster.api.apply(node(
        "n2",
        true,
        &[("InternalIP", "10.0.0.2"), ("Hostname", "n2")],
        none.clone(),
    ));
    cluster.api.apply(node(
        "n3",
        false,
        &[("ExternalIP", "203.0.113.30")],
        none.clone(),
    ));
    let excluded = json!({"node.kubernetes.io/exclude-from-external-load-balancers": ""});
    cluster.api.apply(node(
        "n4",
        true,
        &[("ExternalIP", "203.0.113.40")],
        excluded,
    ));
    let _gh = cluster.gatehouse(&["--publish-service=gatehouse/gatehouse"]);
    let within = Duration::from_secs(4);
    let get = || {
        cluster
            .api
            .get("Ingress", "default", "web")
            .expect("ingress")
    };

    // Ready nodes not excluded: the external address where a node has one, else the internal.
    eventually("status from the nodes", within, || {
        lb_ips(&get()) == ["10.0.0.2", "203.0.113.10"]
    })
    .await;
    // A node that becomes Ready is added; one that goes is removed.
    cluster
        .api
        .apply(node("n3", true, &[("ExternalIP", "203.0.113.30")], none));
    cluster.api.delete("Node", "", "n1");
    eventually("status following the nodes", within, || {
        lb_ips(&get()) == ["10.0.0.2", "203.0.113.30"]
    })
    .await;
    // The Service gets an external IP: that wins over the nodes.
    cluster.api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "gatehouse", "namespace": "gatehouse"},
        "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
                 "externalIPs": ["192.0.2.7"]},
    }));
    eventually("status from the external IP", within, || {
        lb_ips(&get()) == ["192.0.2.7"]
    })
    .await;
    assert!(!node_requests(&cluster.api).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_distinct_warning_becomes_one_event() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster.api.apply(ingress(
        "default",
        "broken",
        "gatehouse",
        "broken.test",
        "missing",
    ));
    let gh = cluster.gatehouse(&[]);
    let within = Duration::from_secs(4);

    let notes = || -> Vec<(String, String, String)> {
        let mut out: Vec<_> = cluster
            .api
            .events()
            .iter()
            .map(|e| {
                (
                    e["regarding"]["name"].as_str().unwrap_or("").to_owned(),
                    e["type"].as_str().unwrap_or("").to_owned(),
                    e["note"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    eventually("an Event for the missing Service", within, || {
        notes().len() == 1
    })
    .await;
    let event = &cluster.api.events()[0];
    assert_eq!(event["regarding"]["kind"], "Ingress");
    assert_eq!(event["regarding"]["namespace"], "default");
    assert!(
        event["regarding"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert_eq!(event["reportingController"], CONTROLLER);
    assert!(
        notes()[0].2.contains("Service default/missing not found"),
        "{:?}",
        notes()
    );

    // More rebuilds with the same warning: no new Event.
    for i in 0..5 {
        cluster.api.apply(ingress(
            "default",
            &format!("ok{i}"),
            "gatehouse",
            &format!("ok{i}.test"),
            "web",
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    cluster
        .wait_answer(&gh, "ok4.test", "/", 200, "a", within)
        .await;
    // A second, different warning on another Ingress: exactly one more Event.
    let mut bad = ingress("default", "bad-annotation", "gatehouse", "bad.test", "web");
    bad["metadata"]["annotations"] = json!({"gatehouse.dev/backend-protocol": "carrier-pigeon"});
    cluster.api.apply(bad);
    eventually("an Event for the bad annotation", within, || {
        notes().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let all = notes();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0].0, "bad-annotation");
    assert!(all[0].2.contains("carrier-pigeon"));
    assert!(all.iter().all(|(_, kind, _)| kind == "Warning"));
    assert_eq!(gh.metric("gatehouse_kube_events_total", &[]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_relists_after_410_gone() {
    let cluster = Cluster::start().await;
    let (a, b) = (origin::echo("a").await, origin::echo("b").await);
    cluster.service("default", "web", &[a]);
    cluster.service("default", "web-b", &[b]);
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web"));
    let gh = cluster.gatehouse(&[]);
    cluster
        .wait_answer(&gh, "app.test", "/", 200, "a", Duration::from_secs(2))
        .await;
    let lists_before = ingress_lists(&cluster.api);

    // History is compacted and, before any watch resumes, an Ingress changes: only a fresh list
    // can show it.
    cluster.api.expire_watches();
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web-b"));
    cluster
        .wait_answer(&gh, "app.test", "/", 200, "b", Duration::from_secs(6))
        .await;

    assert!(
        ingress_lists(&cluster.api) > lists_before,
        "no re-list after 410"
    );
    assert!(gh.metric("gatehouse_kube_watch_errors_total", &["kind=\"Ingress\""]) >= 1.0);
    assert!(gh.log_text().contains("410"), "410 not in the log");
    assert_eq!(gh.admin("/readyz").0, 200);
}

fn ingress_lists(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/networking.k8s.io/v1/ingresses?") && !r.contains("watch=true")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_outage_changes_nothing_served() {
    let cluster = Cluster::start().await;
    let (a, b) = (origin::echo("a").await, origin::echo("b").await);
    cluster.service("default", "web", &[a]);
    cluster.service("default", "web-b", &[b]);
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web"));
    let gh = cluster.gatehouse(&[]);
    cluster
        .wait_answer(&gh, "app.test", "/", 200, "a", Duration::from_secs(2))
        .await;

    cluster.api.set_unavailable();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            cluster.get(&gh, "app.test", "/").await,
            (200, "a".to_owned())
        );
        assert_eq!(gh.admin("/readyz").0, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gh.metric("gatehouse_kube_connected", &[]), 0.0);
    assert!(gh.metric("gatehouse_kube_watch_errors_total", &[]) >= 1.0);
    // Refused connections instead of 503s: still serving.
    cluster.api.refuse_connections();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.get(&gh, "app.test", "/").await,
        (200, "a".to_owned())
    );
    assert!(gh.log_text().contains("Kubernetes API unreachable"));

    cluster.api.restore();
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web-b"));
    cluster
        .wait_answer(&gh, "app.test", "/", 200, "b", Duration::from_secs(8))
        .await;
    eventually("connected again", Duration::from_secs(3), || {
        gh.metric("gatehouse_kube_connected", &[]) == 1.0
    })
    .await;
    assert_eq!(gh.admin("/readyz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_after_a_long_api_outage_is_served_within_5_s() {
    let cluster = Cluster::start().await;
    let (a, b) = (origin::echo("a").await, origin::echo("b").await);
    cluster.service("default", "web", &[a]);
    cluster.service("default", "web-b", &[b]);
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web"));
    let gh = cluster.gatehouse(&[]);
    cluster
        .wait_answer(&gh, "app.test", "/", 200, "a", Duration::from_secs(2))
        .await;

    // Down for 15 s: the watches fail again and again, so the next wait of their backoff
    // (0.8 s doubling, plus up to as much again of jitter) is 12.8 s or more by the end.
    cluster.api.set_unavailable();
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        cluster.get(&gh, "app.test", "/").await,
        (200, "a".to_owned()),
        "not served during the outage"
    );
    // Back after a restart that lost the watch history: every watch that resumes from the
    // resourceVersion it had gets 410 Expired, and a new Ingress is created at once.
    cluster.api.expire_watches();
    cluster.api.restore();
    let lists_before = ingress_lists(&cluster.api);
    cluster
        .api
        .apply(ingress("default", "new", "gatehouse", "new.test", "web-b"));
    let took = cluster
        .wait_answer(&gh, "new.test", "/", 200, "b", Duration::from_secs(5))
        .await;
    eprintln!("new Ingress served {took:?} after the API came back");
    assert!(
        ingress_lists(&cluster.api) > lists_before,
        "served without a re-list"
    );
    assert!(gh.log_text().contains("410"), "410 not in the log");
    assert_eq!(
        cluster.get(&gh, "app.test", "/").await,
        (200, "a".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_moves_when_the_leader_dies() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster
        .api
        .apply(ingress("default", "one", "gatehouse", "one.test", "web"));
    let publish = ["--publish-address=203.0.113.10"];
    let mut first = cluster.gatehouse(&publish);
    let second = cluster.gatehouse(&publish);
    let leader = |gh: &Gatehouse| gh.metric("gatehouse_kube_leader", &[]) == 1.0;
    eventually("one leader", Duration::from_secs(3), || {
        leader(&first) || leader(&second)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Exactly one leads; the first one started is it (it found the Lease free).
    assert!(leader(&first) && !leader(&second));
    let lease = cluster
        .api
        .get("Lease", "gatehouse", "gatehouse-leader")
        .expect("lease");
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        holder.ends_with(&format!("_{}", first.pid().expect("pid"))),
        "holder {holder}"
    );
    // Both serve; only the leader writes.
    cluster
        .wait_answer(&first, "one.test", "/", 200, "a", Duration::from_secs(2))
        .await;
    cluster
        .wait_answer(&second, "one.test", "/", 200, "a", Duration::from_secs(2))
        .await;
    eventually("status by the leader", Duration::from_secs(3), || {
        lb_ips(&cluster.api.get("Ingress", "default", "one").expect("one")) == ["203.0.113.10"]
    })
    .await;
    assert_eq!(
        first.metric("gatehouse_kube_status_updates_total", &[]),
        1.0
    );
    assert_eq!(
        second.metric("gatehouse_kube_status_updates_total", &[]),
        0.0
    );

    let killed = Instant::now();
    first.kill();
    eventually("the second to lead", Duration::from_secs(6), || {
        leader(&second)
    })
    .await;
    let took = killed.elapsed();
    println!("leadership moved {took:?} after the leader was killed (lease 2 s, renew 0.5 s)");
    assert!(took < Duration::from_secs(4), "hand-over took {took:?}");

    // The new leader writes status.
    cluster
        .api
        .apply(ingress("default", "two", "gatehouse", "two.test", "web"));
    eventually("status by the new leader", Duration::from_secs(3), || {
        lb_ips(&cluster.api.get("Ingress", "default", "two").expect("two")) == ["203.0.113.10"]
    })
    .await;
    let lease = cluster
        .api
        .get("Lease", "gatehouse", "gatehouse-leader")
        .expect("lease");
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| h.ends_with(&format!("_{}", second.pid().expect("pid"))))
    );
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_releases_the_lease() {
    let cluster = Cluster::start().await;
    let mut first = cluster.gatehouse(&[]);
    let second = cluster.gatehouse(&[]);
    let leader = |gh: &Gatehouse| gh.metric("gatehouse_kube_leader", &[]) == 1.0;
    eventually("the first to lead", Duration::from_secs(3), || {
        leader(&first)
    })
    .await;
    let stopped = Instant::now();
    let mut child = first.terminate();
    let _ = child.wait();
    eventually("the second to lead", Duration::from_secs(3), || {
        leader(&second)
    })
    .await;
    // Released, not expired: well under the 2 s lease.
    let took = stopped.elapsed();
    println!("leadership moved {took:?} after the leader shut down");
    assert!(took < Duration::from_millis(1800), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingress_change_is_served_within_the_debounce() {
    let cluster = Cluster::start().await;
    let (a, b) = (origin::echo("a").await, origin::echo("b").await);
    cluster.service("default", "svc-a", &[a]);
    cluster.service("default", "svc-b", &[b]);
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "lat.test", "svc-a"));
    let gh = cluster.gatehouse(&[]);
    cluster
        .wait_answer(&gh, "lat.test", "/", 200, "a", Duration::from_secs(2))
        .await;

    let mut took = Vec::new();
    for i in 0..10 {
        let (service, origin) = if i % 2 == 0 {
            ("svc-b", "b")
        } else {
            ("svc-a", "a")
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        cluster
            .api
            .apply(ingress("default", "web", "gatehouse", "lat.test", service));
        cluster
            .wait_answer(&gh, "lat.test", "/", 200, origin, Duration::from_secs(3))
            .await;
        took.push(start.elapsed());
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "Ingress change -> served: min {:.0} ms, median {:.0} ms, max {:.0} ms over {} changes (debounce 30 ms quiet, 1 s cap)",
        ms(took[0]),
        ms(took[took.len() / 2]),
        ms(took[took.len() - 1]),
        took.len()
    );
    assert!(
        took[took.len() / 2] < Duration::from_millis(500),
        "{took:?}"
    );
}

#[test]
fn chart_crd_is_the_generated_one() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("crd")
        .output()
        .expect("run gatehouse crd");
    assert!(output.status.success());
    let generated: Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&output.stdout)).expect("generated CRD");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/gatehouse/crds/staticsites.gatehouse.dev.yaml"
    );
    let chart: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).expect("chart CRD"))
        .expect("chart CRD yaml");
    assert_eq!(
        chart, generated,
        "charts/gatehouse/crds/staticsites.gatehouse.dev.yaml differs from `gatehouse crd`: regenerate it with `cargo run -- crd > {path}`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn challenge_answers_shared_through_a_secret_are_served_by_every_replica() {
    let cluster = Cluster::start().await;
    let gh = cluster.gatehouse(&[]);
    let path = "/.well-known/acme-challenge/tok_123-abc";
    assert_eq!(cluster.get(&gh, "any.test", path).await.0, 404);

    cluster.api.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "gatehouse-acme-challenges", "namespace": "gatehouse",
                     "labels": {"gatehouse.dev/secret": "acme-challenges"}},
        // base64 of "tok_123-abc.thumbprint"
        "data": {"http01.tok_123-abc": "dG9rXzEyMy1hYmMudGh1bWJwcmludA=="},
    }));
    cluster
        .wait_answer(
            &gh,
            "any.test",
            path,
            200,
            "tok_123-abc.thumbprint",
            Duration::from_secs(3),
        )
        .await;

    cluster
        .api
        .delete("Secret", "gatehouse", "gatehouse-acme-challenges");
    cluster
        .wait_answer(&gh, "any.test", path, 404, "", Duration::from_secs(3))
        .await;
}

/// An HTTPS client trusting only Pebble's root, reaching `host` at `https`.
async fn pebble_client(
    pebble: &support::pebble::Pebble,
    host: &str,
    https: SocketAddr,
) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let root = pebble.issuing_root().await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root.as_bytes()).expect("root pem"))
        .expect("root");
    let tls = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(0)
        .resolve(host, https)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_place_one_order_and_the_follower_answers_the_challenge() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    let mut web = ingress("default", "web", "gatehouse", "acme.test", "web");
    web["metadata"]["annotations"] = json!({"kubernetes.io/tls-acme": "true"});
    web["spec"]["tls"] = json!([{"secretName": "web-tls", "hosts": ["acme.test"]}]);

    // Pebble validates HTTP-01 on the FOLLOWER's listener: the leader orders, so the order
    // succeeds only if the follower serves the answer the leader shared through a Secret.
    let (http, https) = (support::free_port(), support::free_port());
    let mut pebble = support::pebble::Pebble::new(http, https);
    pebble.start();
    let kubeconfig = cluster.api.kubeconfig(cluster.dir.path());
    let mut args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-election-namespace=gatehouse".to_owned(),
        "--lease-duration=2s".to_owned(),
        "--lease-renew=500ms".to_owned(),
    ];
    args.extend(pebble.gatehouse_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let leader = Gatehouse::spawn_with(&[], &args);
    leader.wait_ready();
    eventually("the first replica to lead", Duration::from_secs(3), || {
        leader.metric("gatehouse_kube_leader", &[]) == 1.0
    })
    .await;
    let follower = Gatehouse::spawn_on(http, https, &[], &args);
    follower.wait_ready();
    assert_eq!(follower.metric("gatehouse_kube_leader", &[]), 0.0);
    cluster.api.apply(web);

    let start = Instant::now();
    while cluster.api.get("Secret", "default", "web-tls").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no certificate Secret after 20 s\n--- leader:\n{}\n--- follower:\n{}\n--- pebble:\n{}",
            leader.log_text(),
            follower.log_text(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret = cluster
        .api
        .get("Secret", "default", "web-tls")
        .expect("secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(
        secret["metadata"]["annotations"]["gatehouse.dev/managed-by"],
        "acme"
    );
    // Both replicas serve it (the follower got it through its Secret watch).
    for gh in [&leader, &follower] {
        let client = pebble_client(&pebble, "acme.test", gh.https).await;
        let url = format!("https://acme.test:{}/", gh.https.port());
        let start = Instant::now();
        loop {
            match client.get(&url).send().await {
                Ok(resp) if resp.status() == 200 => break,
                other if start.elapsed() > Duration::from_secs(5) => {
                    panic!(
                        "{url} not served with the issued certificate: {other:?}\n{}",
                        gh.log_text()
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    // Settle, then count: one order at the CA, one certificate write, none by the follower.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pebble.count("POST /order-plz"), 1, "{}", pebble.log());
    let cert_writes = cluster
        .api
        .writes()
        .into_iter()
        .filter(|w| {
            w.path.ends_with("/namespaces/default/secrets") || w.path.ends_with("/secrets/web-tls")
        })
        .count();
    assert_eq!(cert_writes, 1);
    assert_eq!(follower.metric("gatehouse_acme_orders_total", &[]), 0.0);
    // The account is kept in the controller's namespace; no order is left in flight (its
    // Secret is deleted once the order is over).
    let account = cluster
        .api
        .get("Secret", "gatehouse", "gatehouse-acme-account")
        .expect("account");
    assert_eq!(
        account["metadata"]["labels"]["gatehouse.dev/secret"],
        "acme-account"
    );
    let orders_left: Vec<Value> = cluster
        .api
        .list("Secret")
        .into_iter()
        .filter(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("gatehouse-acme-order-"))
                && !s["data"]["order.json"].is_null()
        })
        .collect();
    assert!(orders_left.is_empty(), "{orders_left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_secrets_from_the_api_are_served_and_follow_changes() {
    use support::certs::{Ca, leaf_secret_data, served_cert};
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    let ca = Ca::new("kube test CA");
    let (first, second) = (ca.leaf(&["app.test"]), ca.leaf(&["app.test"]));
    for (name, host, secret) in [
        ("web", "app.test", "app-tls"),
        ("opaque", "opaque.test", "opaque-tls"),
    ] {
        let mut ing = ingress("default", name, "gatehouse", host, "web");
        ing["spec"]["tls"] = json!([{"secretName": secret, "hosts": [host]}]);
        cluster.api.apply(ing);
    }
    cluster
        .api
        .apply_yaml(&leaf_secret_data("default", "app-tls", &first));
    // The same certificate in a Secret of another type is not read at all.
    let mut opaque: Value =
        serde_saphyr::from_str(&leaf_secret_data("default", "opaque-tls", &first)).expect("secret");
    opaque["type"] = json!("Opaque");
    cluster.api.apply(opaque);
    let gh = cluster.gatehouse(&[]);

    let serves = |want: rustls::pki_types::CertificateDer<'static>, host: &'static str| {
        let https = gh.https;
        async move {
            let start = Instant::now();
            while served_cert(https, Some(host)).await != want {
                assert!(
                    start.elapsed() < Duration::from_secs(3),
                    "{host} never served the expected certificate"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    serves(first.der.clone(), "app.test").await;
    assert_ne!(served_cert(gh.https, Some("opaque.test")).await, first.der);

    // Secret changed: the new certificate is served. Secret deleted: the deletion reaches the
    // gateway (a warning) and the last good certificate keeps serving (the TLS table's rule).
    cluster
        .api
        .apply_yaml(&leaf_secret_data("default", "app-tls", &second));
    serves(second.der.clone(), "app.test").await;
    cluster.api.delete("Secret", "default", "app-tls");
    gh.wait_routes("a warning about the deleted Secret", |routes| {
        routes["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| w.as_str().is_some_and(|w| w.contains("app-tls")))
    });
    assert_eq!(served_cert(gh.https, Some("app.test")).await, second.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_static_site_crd_everything_else_is_served() {
    let cluster = Cluster::start().await;
    cluster.api.hide_kind("StaticSite");
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster
        .api
        .apply(ingress("default", "web", "gatehouse", "app.test", "web"));
    let gh = cluster.gatehouse(&[]);
    cluster
        .wait_answer(&gh, "app.test", "/", 200, "a", Duration::from_secs(2))
        .await;
    assert!(gh.log_text().contains("CRD not installed"));
}

/// An Opaque Secret `name` in `ns` holding an htpasswd file (key `auth`) with `lines`.
fn htpasswd_secret(ns: &str, name: &str, lines: &str) -> Value {
    use base64::Engine as _;
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "Opaque",
        "data": {"auth": base64::engine::general_purpose::STANDARD.encode(lines)},
    })
}

/// `openssl passwd -apr1 -salt gatehous 'old secret'` and `… 'new secret'`.
const OLD_HASH: &str = "$apr1$gatehous$.N2d73m2FmkHSbq3e3/hp.";
const NEW_HASH: &str = "$apr1$gatehous$Lu4.3f/yvzFBEONFa.03Y1";

/// An Ingress of `app.test`-style `host` → `web` with basic authentication from `secret`, under
/// `prefix` (`nginx.ingress.kubernetes.io/` or `gatehouse.dev/`).
fn basic_auth_ingress(ns: &str, name: &str, host: &str, prefix: &str, secret: &str) -> Value {
    let mut ing = ingress(ns, name, "gatehouse", host, "web");
    ing["metadata"]["annotations"] = json!({
        format!("{prefix}auth-type"): "basic",
        format!("{prefix}auth-secret"): secret,
        format!("{prefix}auth-realm"): "Staff",
    });
    ing
}

/// `GET http://host/` through the gateway as `user:password` (none when `user` is empty):
/// status and body.
async fn get_as(gh: &Gatehouse, host: &str, user: &str, password: &str) -> (u16, String) {
    let mut req = support::client().get(gh.url("/")).header("host", host);
    if !user.is_empty() {
        req = req.basic_auth(user, Some(password));
    }
    match req.send().await {
        Ok(resp) => (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        ),
        Err(err) => (0, err.to_string()),
    }
}

/// Polls until `host` answers `status` to `user:password`; returns the body and how long it took.
async fn wait_as(
    gh: &Gatehouse,
    host: &str,
    (user, password): (&str, &str),
    status: u16,
    within: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let (got, body) = get_as(gh, host, user, password).await;
        if got == status {
            return (body, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{host} as {user:?} still answers {got} after {within:?} (wanted {status}): {body}\nroutes: {:#}\nlog:\n{}",
            gh.routes(),
            gh.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 9: basic authentication in a cluster. The Opaque Secret an Ingress names is read from
/// the API (only it: other Secrets' data never reaches the gateway), a rotated password is in
/// service at once (the old one refused, even though it was accepted and remembered before), a
/// deleted Secret refuses the routes (503 with the reason, and a warning), and a Secret created
/// again, or named by an Ingress that comes later, is read then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basic_auth_secrets_are_read_from_the_api_and_follow_changes() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("default", "web", &[a]);
    cluster.service("team", "web", &[a]);
    let api = &cluster.api;
    api.apply(htpasswd_secret(
        "default",
        "users",
        &format!("editor:{OLD_HASH}\n"),
    ));
    api.apply(htpasswd_secret(
        "team",
        "later-users",
        &format!("lead:{NEW_HASH}\n"),
    ));
    api.apply(htpasswd_secret(
        "default",
        "unrelated",
        "root:$apr1$x$notreferenced\n",
    ));
    api.apply(basic_auth_ingress(
        "default",
        "staff",
        "app.test",
        "nginx.ingress.kubernetes.io/",
        "users",
    ));
    let gh = cluster.gatehouse(&[]);
    let old = ("editor", "old secret");
    let new = ("editor", "new secret");

    // Ready means the Secret is in: no 503 window at start.
    assert_eq!(get_as(&gh, "app.test", "", "").await.0, 401);
    let (body, _) = wait_as(&gh, "app.test", old, 200, Duration::ZERO).await;
    assert!(body.contains("\"origin\":\"a\""), "{body}");
    assert_eq!(get_as(&gh, "app.test", new.0, new.1).await.0, 401);

    // Password rotated: the old one is refused, the new one let through.
    api.apply(htpasswd_secret(
        "default",
        "users",
        &format!("editor:{NEW_HASH}\n"),
    ));
    let (_, rotated) = wait_as(&gh, "app.test", old, 401, Duration::from_secs(3)).await;
    assert_eq!(get_as(&gh, "app.test", new.0, new.1).await.0, 200);
    assert_eq!(get_as(&gh, "app.test", "", "").await.0, 401);

    // Deleted: fail closed, with the reason in the body and a warning.
    api.delete("Secret", "default", "users");
    let (body, _) = wait_as(&gh, "app.test", new, 503, Duration::from_secs(3)).await;
    assert!(
        body.contains("default/users") && body.contains("not found"),
        "503 without the reason: {body}"
    );
    gh.wait_routes("a warning about the missing auth Secret", |routes| {
        routes["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| {
                w.as_str()
                    .is_some_and(|w| w.contains("default/staff") && w.contains("default/users"))
            })
    });
    assert_eq!(get_as(&gh, "app.test", "", "").await.0, 503);

    // Created again: read again.
    api.apply(htpasswd_secret(
        "default",
        "users",
        &format!("editor:{OLD_HASH}\n"),
    ));
    wait_as(&gh, "app.test", old, 200, Duration::from_secs(3)).await;

    // An Ingress that comes later names a Secret (NAMESPACE/NAME, own prefix) not read so far.
    api.apply(basic_auth_ingress(
        "team",
        "lead",
        "lead.test",
        "gatehouse.dev/",
        "team/later-users",
    ));
    let (_, later) = wait_as(
        &gh,
        "lead.test",
        ("lead", "new secret"),
        200,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(get_as(&gh, "lead.test", "lead", "old secret").await.0, 401);
    eprintln!(
        "password rotation in service after {rotated:?}; a later Ingress's Secret after {later:?}"
    );

    // Only the Secrets named for authentication were sent with their data.
    let full = api.served_in_full();
    assert!(
        full.contains(&"Secret default/users".to_owned()),
        "{full:?}"
    );
    assert!(
        full.contains(&"Secret team/later-users".to_owned()),
        "{full:?}"
    );
    assert!(
        !full.iter().any(|s| s.contains("unrelated")),
        "an unreferenced Secret's data was read: {full:?}"
    );
}

/// An `auth-secret` in a namespace Gatehouse does not watch is not read (RBAC would not allow it
/// anyway): the routes are refused, with a warning, never served open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_secret_outside_the_watched_namespaces_refuses_the_routes() {
    let cluster = Cluster::start().await;
    let a = origin::echo("a").await;
    cluster.service("team", "web", &[a]);
    cluster.api.apply(htpasswd_secret(
        "other",
        "users",
        &format!("editor:{OLD_HASH}\n"),
    ));
    cluster.api.apply(basic_auth_ingress(
        "team",
        "staff",
        "app.test",
        "nginx.ingress.kubernetes.io/",
        "other/users",
    ));
    let gh = cluster.gatehouse(&["--watch-namespace=team"]);
    let (body, _) = wait_as(
        &gh,
        "app.test",
        ("editor", "old secret"),
        503,
        Duration::ZERO,
    )
    .await;
    assert!(body.contains("other/users"), "{body}");
    gh.wait_log(
        &["outside the watched namespaces", "other/users"],
        Duration::from_secs(2),
    );
    assert!(
        !cluster
            .api
            .requests()
            .iter()
            .any(|r| r.contains("/namespaces/other/")),
        "a namespace that is not watched was read"
    );
}
