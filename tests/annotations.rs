//! Annotations through the real binary: an Ingress whose access annotation cannot be honoured
//! is never served open, while the other Ingresses of the same host keep working, and the
//! warning reaches `/routes` and the metrics.
mod support;

use std::net::SocketAddr;

use support::yaml::{docs, ingress, svc};
use support::{Gatehouse, origin, service_yaml};

fn gateway(ingresses: &[String], web: SocketAddr, admin: SocketAddr) -> Gatehouse {
    let mut parts = vec![
        service_yaml("default", "web", &[web]),
        service_yaml("default", "admin", &[admin]),
    ];
    parts.extend(ingresses.iter().cloned());
    Gatehouse::start_with(&[("main.yaml", &docs(&parts))], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_access_annotations_answer_503_and_never_reach_the_backend() {
    let (web, admin) = (origin::echo("web").await, origin::echo("admin").await);
    let ingresses = [
        ingress("site")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
        ingress("admin")
            .annotation(
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.0/8,office",
            )
            .prefix("app.test", "/admin", svc("admin", 80))
            .yaml(),
        ingress("staff")
            .annotation("nginx.ingress.kubernetes.io/auth-type", "basic")
            .annotation("nginx.ingress.kubernetes.io/auth-secret", "no-such-secret")
            .prefix("app.test", "/staff", svc("admin", 80))
            .yaml(),
        ingress("snippet")
            .annotation(
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "deny all;",
            )
            .prefix("app.test", "/internal", svc("admin", 80))
            .yaml(),
    ];
    let gh = gateway(&ingresses, web, admin);
    let client = gh.client_for(&["app.test"]);
    for path in ["/admin", "/admin/users", "/staff", "/internal/x"] {
        let resp = client
            .get(format!("http://app.test{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{path} must not be served open");
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("\"name\":\"admin\""),
            "{path} reached the backend: {body}"
        );
    }
    let resp = client.get("http://app.test/").send().await.unwrap();
    assert_eq!(resp.status(), 200, "the host's other Ingress is served");
    let routes = gh.routes();
    let text = routes.to_string();
    assert!(
        text.contains("Ingress default/admin is not served: nginx.ingress.kubernetes.io/whitelist-source-range: \\\"office\\\" is not an IP address or CIDR"),
        "{routes:#}"
    );
    assert!(
        text.contains("Secret default/no-such-secret not found"),
        "{routes:#}"
    );
    assert!(gh.metric("gatehouse_config_warnings", &[]) >= 3.0);
}
