//! Opt-in: the key Kubernetes scenarios against a real cluster.
//!
//! Runs only when `GATEHOUSE_E2E_KUBECONFIG` (a kubeconfig with rights to create namespaces,
//! IngressClasses and the objects in them) and `GATEHOUSE_E2E_BACKEND_IP` (an address of this
//! machine the test origins listen on: a real API server rejects loopback addresses in
//! EndpointSlices) are set; otherwise every test returns at once, printing why.
//!
//! Each test creates its own namespace and IngressClass, runs the real `gatehouse` binary
//! against the cluster restricted to that namespace, asserts what a user sees, and deletes both.
mod support;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::Gatehouse;

const CONTROLLER: &str = "gatehouse.dev/ingress-controller";

/// The cluster settings, or `None` (and a line saying so) when the suite is not enabled.
fn e2e_env() -> Option<(PathBuf, IpAddr)> {
    let kubeconfig = std::env::var("GATEHOUSE_E2E_KUBECONFIG").ok();
    let backend = std::env::var("GATEHOUSE_E2E_BACKEND_IP").ok();
    match (kubeconfig, backend) {
        (Some(kubeconfig), Some(ip)) => {
            let ip: IpAddr = ip
                .parse()
                .unwrap_or_else(|_| panic!("GATEHOUSE_E2E_BACKEND_IP={ip:?} is not an IP address"));
            Some((PathBuf::from(kubeconfig), ip))
        }
        _ => {
            println!(
                "skipped: set GATEHOUSE_E2E_KUBECONFIG and GATEHOUSE_E2E_BACKEND_IP to run against a real cluster"
            );
            None
        }
    }
}

async fn client(kubeconfig: &PathBuf) -> Client {
    let _ = rustls::crypto::CryptoProvider::install_default(
        rustls::crypto::aws_lc_rs::default_provider(),
    );
    let file = Kubeconfig::read_from(kubeconfig).expect("read GATEHOUSE_E2E_KUBECONFIG");
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// A namespace and an IngressClass of one test; both deleted on drop (even on panic).
struct Scenario {
    kubeconfig: PathBuf,
    backend_ip: IpAddr,
    client: Client,
    namespace: String,
    class: String,
    http: reqwest::Client,
}

impl Scenario {
    async fn start(test: &str) -> Option<Self> {
        let (kubeconfig, backend_ip) = e2e_env()?;
        let client = client(&kubeconfig).await;
        let suffix = format!("{:x}", rand::random::<u32>());
        let namespace = format!("gh-e2e-{test}-{suffix}");
        let class = format!("gatehouse-e2e-{suffix}");
        let ns: Namespace = typed(json!({"metadata": {"name": namespace}}));
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        let ic: IngressClass =
            typed(json!({"metadata": {"name": class}, "spec": {"controller": CONTROLLER}}));
        Api::<IngressClass>::all(client.clone())
            .create(&PostParams::default(), &ic)
            .await
            .expect("create IngressClass");
        Some(Self {
            kubeconfig,
            backend_ip,
            client,
            namespace,
            class,
            http: support::client(),
        })
    }

    /// Runs Gatehouse on this namespace and class (short leases) and waits until it is ready.
    fn gatehouse(&self, extra: &[&str]) -> Gatehouse {
        let mut args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--watch-namespace={}", self.namespace),
            format!("--ingress-class={}", self.class),
            format!("--leader-election-namespace={}", self.namespace),
            "--lease-duration=3s".to_owned(),
            "--lease-renew=1s".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Gatehouse::start_with(&[], &args)
    }

    /// A selector-less Service with one EndpointSlice pointing at `backend`.
    async fn service(&self, name: &str, backend: SocketAddr) {
        let svc: Service = typed(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend.port()}]},
        }));
        Api::<Service>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &svc)
            .await
            .expect("create Service");
        let slice: EndpointSlice = typed(json!({
            "metadata": {"name": format!("{name}-e2e"), "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "gatehouse-e2e",
            }},
            "addressType": if backend.is_ipv4() { "IPv4" } else { "IPv6" },
            "ports": [{"name": "http", "port": backend.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}],
        }));
        Api::<EndpointSlice>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &slice)
            .await
            .expect("create EndpointSlice");
    }

    async fn ingress(&self, name: &str, host: &str, service: &str) {
        let ingress: Ingress = typed(json!({
            "metadata": {"name": name},
            "spec": {"ingressClassName": self.class, "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"number": 80}}}}
            ]}}]},
        }));
        Api::<Ingress>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &ingress)
            .await
            .expect("create Ingress");
    }

    async fn get_ingress(&self, name: &str) -> Ingress {
        Api::<Ingress>::namespaced(self.client.clone(), &self.namespace)
            .get(name)
            .await
            .expect("get Ingress")
    }

    /// An echo origin on the backend IP.
    async fn origin(&self, name: &str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind((self.backend_ip, 0))
            .await
            .expect("bind on GATEHOUSE_E2E_BACKEND_IP");
        let addr = listener.local_addr().expect("addr");
        let name: std::sync::Arc<str> = name.into();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let name = name.clone();
                        async move {
                            let echo = support::origin::echo_json(&name, req).await;
                            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(echo.to_string()),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// Waits until `host` answers 200 from `origin` through `gh`.
    async fn wait_origin(&self, gh: &Gatehouse, host: &str, origin: &str, within: Duration) {
        let start = Instant::now();
        loop {
            let sent = self.http.get(gh.url("/")).header("host", host).send().await;
            if let Ok(resp) = sent
                && resp.status() == 200
                && let Ok(v) = resp.json::<Value>().await
                && v["origin"] == origin
            {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{host} not served by {origin} within {within:?}; routes: {:#}\nlog:\n{}",
                gh.routes(),
                gh.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let (kubeconfig, namespace, class) = (
            self.kubeconfig.clone(),
            self.namespace.clone(),
            self.class.clone(),
        );
        // Drop cannot await: clean up on a thread with its own runtime.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let client = client(&kubeconfig).await;
                let _ = Api::<Namespace>::all(client.clone())
                    .delete(&namespace, &DeleteParams::background())
                    .await;
                let _ = Api::<IngressClass>::all(client)
                    .delete(&class, &DeleteParams::background())
                    .await;
            });
        });
        let _ = cleanup.join();
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object")
}

fn lb_ips(ingress: &Ingress) -> Vec<String> {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|lb| lb.ip.clone().or(lb.hostname.clone()))
        .collect()
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_routes_status_and_events() {
    let Some(s) = Scenario::start("routes").await else {
        return;
    };
    let a = s.origin("a").await;
    s.service("web", a).await;
    s.ingress("web", "web.e2e.test", "web").await;
    s.ingress("broken", "broken.e2e.test", "missing").await;
    let gh = s.gatehouse(&["--publish-address=203.0.113.10"]);

    s.wait_origin(&gh, "web.e2e.test", "a", Duration::from_secs(10))
        .await;
    eventually("Ingress status", Duration::from_secs(10), || async {
        lb_ips(&s.get_ingress("web").await) == ["203.0.113.10"]
    })
    .await;
    eventually(
        "a warning Event on the broken Ingress",
        Duration::from_secs(10),
        || async {
            let events = Api::<Event>::namespaced(s.client.clone(), &s.namespace)
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            events.iter().any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                    && e.note.as_deref().is_some_and(|n| n.contains("not found"))
            })
        },
    )
    .await;

    // A change reaches the routes.
    let b = s.origin("b").await;
    s.service("web-b", b).await;
    s.ingress("web-b", "b.e2e.test", "web-b").await;
    s.wait_origin(&gh, "b.e2e.test", "b", Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2e_leadership_moves_when_the_leader_dies() {
    let Some(s) = Scenario::start("leader").await else {
        return;
    };
    let a = s.origin("a").await;
    s.service("web", a).await;
    s.ingress("one", "one.e2e.test", "web").await;
    let publish = ["--publish-address=203.0.113.20"];
    let first = s.gatehouse(&publish);
    let second = s.gatehouse(&publish);
    let leader = |gh: &Gatehouse| gh.metric("gatehouse_kube_leader", &[]) == 1.0;
    eventually("a leader", Duration::from_secs(10), || async {
        leader(&first) || leader(&second)
    })
    .await;
    let (mut dying, survivor) = if leader(&first) {
        (first, second)
    } else {
        (second, first)
    };
    s.wait_origin(&survivor, "one.e2e.test", "a", Duration::from_secs(10))
        .await;
    dying.kill();
    let killed = Instant::now();
    eventually("the survivor to lead", Duration::from_secs(10), || async {
        leader(&survivor)
    })
    .await;
    println!(
        "leadership moved {:?} after the leader was killed",
        killed.elapsed()
    );
    s.ingress("two", "two.e2e.test", "web").await;
    eventually(
        "status by the new leader",
        Duration::from_secs(10),
        || async { lb_ips(&s.get_ingress("two").await) == ["203.0.113.20"] },
    )
    .await;
}
