//! The smallest end-to-end check: a manifest in, a proxied request out.
mod support;

use support::{Gatehouse, client, origin, service_yaml};

#[tokio::test]
async fn proxies_a_host_to_its_service() {
    let origin = origin::echo("a").await;
    let yaml = format!(
        "{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: default}}\nspec:\n  ingressClassName: gatehouse\n  rules:\n  - host: app.test\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n",
        service_yaml("default", "web", &[origin])
    );
    let gh = Gatehouse::start(&yaml);
    let resp = client()
        .get(gh.url("/hello?x=1"))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["origin"], "a");
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(echo["headers"]["host"], "app.test");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    let other = client()
        .get(gh.url("/"))
        .header("host", "other.test")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}
