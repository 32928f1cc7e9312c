//! The README's cluster examples (config/examples/*.yaml) route as the README says: run from
//! the very same files.
mod support;

use std::path::Path;

use support::Gatehouse;

fn example_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("config/examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.to_string_lossy().ends_with("-values.yaml"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("read example"))
        })
        .collect();
    files.sort();
    files
}

fn backend<'a>(routes: &'a serde_json::Value, host: &str, path: &str) -> &'a serde_json::Value {
    let route = &routes["hosts"][host][path];
    assert!(!route.is_null(), "no route {host} {path}: {routes:#}");
    &route["backend"]
}

#[tokio::test]
async fn readme_examples_route_dash_flask_and_nta_with_its_static_files() {
    let files = example_files();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    assert_eq!(files.len(), 3, "dash, flask-api and nta examples");
    let gh = Gatehouse::start_with(&files, &[]);
    let routes = gh.routes();

    let dash = backend(&routes, "dash.example.com", "Prefix /");
    assert_eq!(dash["service"], "analytics/dashboard");
    assert_eq!(dash["port"], "8050");
    let api = backend(&routes, "shop.example.com", "Prefix /api");
    assert_eq!(api["service"], "shop/orders-api");
    let app = backend(&routes, "apps.example.com", "Prefix /nta");
    assert_eq!(app["service"], "nta/nta");
    let files = backend(&routes, "apps.example.com", "Prefix /nta/static");
    assert_eq!(files["staticSite"], "nta/nta-static");

    // No warnings: certificates that ACME has yet to issue are not a problem with the objects.
    assert_eq!(routes["warnings"], serde_json::json!([]), "{routes:#}");

    // /nta/static goes to the StaticSite (its volume is absent here: 404), the rest of /nta to
    // the app (no pods here: 503), and the Dash host redirects plain HTTP to HTTPS only once it
    // has a certificate of its own.
    let client = support::client();
    let get = |host: &'static str, path: &'static str| {
        let client = client.clone();
        let url = gh.url(path);
        async move { client.get(url).header("host", host).send().await.expect("request").status() }
    };
    assert_eq!(get("apps.example.com", "/nta/static/app.css").await, 404);
    assert_eq!(get("apps.example.com", "/nta/login").await, 503);
    assert_eq!(get("shop.example.com", "/api/orders").await, 503);
    assert_eq!(get("shop.example.com", "/").await, 404);
}

/// Copies a directory tree (the demo's site files).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// The README's run command serves the demo: the static site at /, Gatehouse's own admin
/// listener proxied at /routes, and 502 for /app/ while nothing listens on 127.0.0.1:5000.
#[tokio::test]
async fn readme_demo_serves_its_site_and_proxies_to_the_admin_listener() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo");
    let read = |name: &str| std::fs::read_to_string(demo.join(name)).expect("demo file");
    let gh = Gatehouse::start_with(&[("ingress.yaml", &read("ingress.yaml")), ("site.yaml", &read("site.yaml"))], &[]);
    copy_dir(&demo.join("site"), &gh.manifests().join("site"));
    // The demo's admin Service points at the README's --admin-listen port; point it at this one.
    // Its app Service points at 127.0.0.1:5000; point it at a port known to be closed.
    let closed = support::free_port().port().to_string();
    let apps = read("apps.yaml").replace("9090", &gh.admin.port().to_string());
    let (services, app_slice) = apps.split_once("name: app-1").expect("the app's EndpointSlice");
    let apps = format!("{services}name: app-1{}", app_slice.replace("port: 5000", &format!("port: {closed}")));
    assert_ne!(apps, read("apps.yaml"), "the demo proxies to the admin port 9090");
    gh.write("apps.yaml", &apps);
    gh.wait_routes("the demo's app routes", |r| !r["hosts"]["*"]["Exact /routes"].is_null());

    let client = support::client();
    let page = client.get(gh.url("/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("body").contains("Gatehouse is serving this page"));
    let routes = client.get(gh.url("/routes")).send().await.expect("GET /routes");
    assert_eq!(routes.status(), 200);
    let routes: serde_json::Value = routes.json().await.expect("routes json");
    assert_eq!(routes["hosts"]["*"]["Prefix /"]["backend"]["staticSite"], "demo/demo-site");
    let app = client.get(gh.url("/app/")).send().await.expect("GET /app/");
    assert_eq!(app.status(), 502);
}
