//! External authentication (`auth-url`) through the real binary, with a real auth service and
//! a real backend: what the auth service is asked, what reaches the backend, and what the client
//! sees for each answer of the auth service. Assertions follow ingress-nginx's e2e tests
//! (`test/e2e/annotations/auth.go`) and its documented `auth-*` annotations.
mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use support::certs::{Ca, tls_origin};
use support::yaml::{Ingress, docs, ingress, svc};
use support::{Gatehouse, origin, service_yaml};

const NG: &str = "nginx.ingress.kubernetes.io/";

fn ng(name: &str) -> String {
    format!("{NG}{name}")
}

/// A real auth service that remembers what it was asked. It decides by the `session` cookie:
/// `good` → 200 with `X-User`/`X-Email` and a refreshed cookie; `nouser` → 200 without them;
/// `forbidden` → 403; `broken` → 502; anything else → 401 with a `Bearer` challenge.
struct AuthService {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl AuthService {
    async fn start() -> Self {
        let asked: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let log = asked.clone();
        let addr = origin::serve(move |req: Request<Incoming>| {
            let log = log.clone();
            async move {
                let session = req
                    .headers()
                    .get("cookie")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|c| c.split(';').find_map(|p| p.trim().strip_prefix("session=")))
                    .unwrap_or("")
                    .to_owned();
                let seen = origin::echo_json("auth", req).await;
                log.lock().unwrap().push(seen);
                let resp = Response::builder();
                let resp = match session.as_str() {
                    "good" => resp
                        .status(200)
                        .header("x-user", "alice")
                        .header("x-email", "alice@example.test")
                        .header("set-cookie", "session=good; Path=/; HttpOnly"),
                    "nouser" => resp.status(200),
                    "forbidden" => resp.status(403),
                    "broken" => resp.status(502),
                    _ => resp
                        .status(401)
                        .header("www-authenticate", "Bearer realm=\"app\"")
                        .header("set-cookie", "csrf=c1; Path=/"),
                };
                resp.body(origin::full("auth says so")).unwrap()
            }
        })
        .await;
        Self { addr, asked }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn asked(&self) -> Vec<serde_json::Value> {
        self.asked.lock().unwrap().clone()
    }

    fn times_asked(&self) -> usize {
        self.asked.lock().unwrap().len()
    }
}

/// The backend: echoes what it received, and counts the requests.
async fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let addr = origin::serve(move |req: Request<Incoming>| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            let seen = origin::echo_json("web", req).await;
            Response::builder()
                .header("content-type", "application/json")
                .body(origin::full(seen.to_string()))
                .unwrap()
        }
    })
    .await;
    (addr, seen)
}

fn gateway(web: SocketAddr, ingresses: &[Ingress], args: &[&str]) -> Gatehouse {
    let mut all = vec![service_yaml("default", "web", &[web])];
    all.extend(ingresses.iter().map(Ingress::yaml));
    Gatehouse::start_with(&[("main.yaml", &docs(&all))], args)
}

/// A client for `host` whose connections come from `source` (a loopback address).
fn client_from(gh: &Gatehouse, host: &str, source: [u8; 4]) -> reqwest::Client {
    gh.client_builder(&[host])
        .local_address(IpAddr::from(source))
        .http1_only()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_request_reaches_the_backend_with_the_auth_answers_headers() {
    let auth = AuthService::start().await;
    let (web, backend_seen) = backend().await;
    let gh = gateway(
        web,
        &[ingress("app")
            .annotation(&ng("auth-url"), &auth.url("/check?for=$host"))
            .annotation(&ng("auth-response-headers"), "X-User, X-Email")
            .prefix("app.test", "/", svc("web", 80))],
        &[],
    );
    let c = gh.client_for(&["app.test"]);
    let resp = c
        .post("http://app.test/orders?id=7")
        .header("cookie", "session=good")
        .header("authorization", "Bearer t0k")
        .header("x-user", "mallory")
        .body("order body")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["set-cookie"],
        "session=good; Path=/; HttpOnly",
        "the auth answer's cookie reaches the client"
    );
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen["origin"], "web");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/orders?id=7");
    assert_eq!(seen["body_len"], 10, "the backend gets the body");
    assert_eq!(seen["headers"]["x-user"], "alice", "not the client's copy");
    assert_eq!(seen["headers"]["x-email"], "alice@example.test");
    assert_eq!(seen["headers"]["cookie"], "session=good");

    // What the auth service was asked: a GET without body, the client's credentials, and where
    // the request was going.
    let asked = auth.asked();
    assert_eq!(asked.len(), 1);
    let sub = &asked[0];
    assert_eq!(sub["method"], "GET");
    assert_eq!(sub["path"], "/check?for=app.test");
    assert_eq!(sub["body_len"], 0);
    let h = &sub["headers"];
    assert_eq!(h["cookie"], "session=good");
    assert_eq!(h["authorization"], "Bearer t0k");
    assert_eq!(h["host"], auth.addr.to_string());
    assert_eq!(h["x-original-url"], "http://app.test/orders?id=7");
    assert_eq!(h["x-original-method"], "POST");
    assert_eq!(h["x-auth-request-redirect"], "/orders?id=7");
    assert_eq!(h["x-sent-from"], "nginx-ingress-controller");
    assert_eq!(h["x-forwarded-host"], "app.test");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert!(h.get("content-length").is_none(), "{h}");

    // An auth answer without the headers: the client's copies do not reach the backend either.
    let resp = c
        .get("http://app.test/")
        .header("cookie", "session=nouser")
        .header("x-user", "mallory")
        .header("x-email", "boss@example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_none());
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert!(seen["headers"].get("x-user").is_none(), "{seen}");
    assert!(seen["headers"].get("x-email").is_none(), "{seen}");
    assert_eq!(backend_seen.load(Ordering::SeqCst), 2);
    assert_eq!(auth.times_asked(), 2, "asked on every request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_sent_to_sign_in_with_the_original_url() {
    let auth = AuthService::start().await;
    let (web, backend_seen) = backend().await;
    let gh = gateway(
        web,
        &[
            ingress("app")
                .annotation(&ng("auth-url"), &auth.url("/check"))
                .annotation(&ng("auth-signin"), "http://$host/auth/start")
                .prefix("app.test", "/", svc("web", 80)),
            ingress("custom")
                .annotation(&ng("auth-url"), &auth.url("/check"))
                .annotation(&ng("auth-signin"), "https://login.test/start?app=2")
                .annotation(&ng("auth-signin-redirect-param"), "orig")
                .annotation(&ng("auth-request-redirect"), "https://custom.test/home")
                .annotation(&ng("auth-method"), "POST")
                .prefix("custom.test", "/", svc("web", 80)),
        ],
        &[],
    );
    let c = gh.client_for(&["app.test", "custom.test"]);
    // ingress-nginx's e2e: GET /?a=b&c=d → 302 to the sign-in URL with rd= the escaped URL.
    let resp = c.get("http://app.test/?a=b&c=d").send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "http://app.test/auth/start?rd=http://app.test%2F%3Fa%3Db%26c%3Dd"
    );
    assert_eq!(
        resp.headers()["set-cookie"],
        "csrf=c1; Path=/",
        "the auth answer's cookie goes with the redirect"
    );
    let resp = c
        .get("http://custom.test/deep/page")
        .header("cookie", "session=expired")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "https://login.test/start?app=2&orig=http://custom.test%2Fdeep%2Fpage"
    );
    assert_eq!(backend_seen.load(Ordering::SeqCst), 0, "never reached");
    let asked = auth.asked();
    assert_eq!(asked.len(), 2);
    let custom = &asked[1];
    assert_eq!(custom["method"], "POST", "auth-method");
    assert_eq!(custom["body_len"], 0);
    assert_eq!(custom["headers"]["x-original-method"], "GET");
    assert_eq!(custom["headers"]["x-original-uri"], "/deep/page");
    assert_eq!(
        custom["headers"]["x-auth-request-redirect"],
        "https://custom.test/home"
    );
    assert_eq!(custom["headers"]["cookie"], "session=expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sign_in_401_carries_the_services_challenge_and_403_stays_403() {
    let auth = AuthService::start().await;
    let (web, backend_seen) = backend().await;
    let gh = gateway(
        web,
        &[ingress("api")
            .annotation(&ng("auth-url"), &auth.url("/check"))
            .prefix("api.test", "/", svc("web", 80))],
        &[],
    );
    let c = gh.client_for(&["api.test"]);
    let resp = c.get("http://api.test/v1/items").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"app\"");
    assert!(!resp.text().await.unwrap().contains("\"origin\""));
    let resp = c
        .get("http://api.test/v1/items")
        .header("cookie", "session=forbidden")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(backend_seen.load(Ordering::SeqCst), 0, "never reached");
    assert_eq!(auth.times_asked(), 2);
    assert!(gh.metric("gatehouse_proxy_errors_total", &["reason=\"unauthorized\""]) >= 1.0);
    assert!(gh.metric("gatehouse_proxy_errors_total", &["reason=\"forbidden\""]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_slow_or_missing_auth_service_answers_500_and_the_backend_is_never_reached() {
    let auth = AuthService::start().await;
    let (slow_auth, mut slow_started) = origin::slow("slow-auth", Duration::from_secs(5)).await;
    let down = origin::refused_addr();
    let (web, backend_seen) = backend().await;
    let gh = gateway(
        web,
        &[
            ingress("broken")
                .annotation(&ng("auth-url"), &auth.url("/check"))
                .prefix("broken.test", "/", svc("web", 80)),
            ingress("down")
                .annotation(&ng("auth-url"), &format!("http://{down}/check"))
                .prefix("down.test", "/", svc("web", 80)),
            ingress("slow")
                .annotation(&ng("auth-url"), &format!("http://{slow_auth}/check"))
                .prefix("slow.test", "/", svc("web", 80)),
        ],
        &["--upstream-response-timeout=1s"],
    );
    let c = gh.client_for(&["broken.test", "down.test", "slow.test"]);
    let resp = c
        .get("http://broken.test/")
        .header("cookie", "session=broken")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500, "an auth answer of 502");
    assert_eq!(auth.times_asked(), 1);
    let resp = c.get("http://down.test/").send().await.unwrap();
    assert_eq!(resp.status(), 500, "auth service refusing connections");
    let started = std::time::Instant::now();
    let resp = c.get("http://slow.test/").send().await.unwrap();
    assert_eq!(resp.status(), 500, "auth service not answering in time");
    assert!(
        slow_started.try_recv().is_ok(),
        "the slow service was asked"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("authentication service failed")
    );
    assert_eq!(backend_seen.load(Ordering::SeqCst), 0, "never reached");
    assert!(gh.metric("gatehouse_proxy_errors_total", &["reason=\"auth_failed\""]) >= 3.0);
    gh.wait_log(
        &["external authentication failed", "answered 502"],
        Duration::from_secs(5),
    );
    gh.wait_log(
        &[
            "external authentication failed",
            &down.to_string(),
            "not reachable",
        ],
        Duration::from_secs(5),
    );
    gh.wait_log(
        &["external authentication failed", "no answer within 1s"],
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn satisfy_any_lets_allowed_addresses_through_unasked_and_others_authenticate() {
    let auth = AuthService::start().await;
    let (web, _) = backend().await;
    let gh = gateway(
        web,
        &[
            ingress("either")
                .annotation(&ng("auth-url"), &auth.url("/check"))
                .annotation(&ng("auth-response-headers"), "X-User")
                .annotation(&ng("whitelist-source-range"), "127.0.0.2")
                .annotation(&ng("satisfy"), "any")
                .prefix("either.test", "/", svc("web", 80)),
            ingress("both")
                .annotation(&ng("auth-url"), &auth.url("/check"))
                .annotation(&ng("whitelist-source-range"), "127.0.0.2")
                .prefix("both.test", "/", svc("web", 80)),
        ],
        &[],
    );
    // From the allowed address: through without asking, and still no client-chosen X-User.
    let office = client_from(&gh, "either.test", [127, 0, 0, 2]);
    let resp = office
        .get("http://either.test/")
        .header("x-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert!(seen["headers"].get("x-user").is_none(), "{seen}");
    assert_eq!(
        auth.times_asked(),
        0,
        "an allowed address is not asked about"
    );
    // From elsewhere: the auth service decides.
    let home = client_from(&gh, "either.test", [127, 0, 0, 3]);
    let resp = home.get("http://either.test/").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = home
        .get("http://either.test/")
        .header("cookie", "session=good")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen["headers"]["x-user"], "alice");
    assert_eq!(auth.times_asked(), 2);
    // satisfy all (the default): the address and the authentication must both pass.
    let home = client_from(&gh, "both.test", [127, 0, 0, 3]);
    let resp = home
        .get("http://both.test/")
        .header("cookie", "session=good")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(auth.times_asked(), 2, "refused before asking");
    let office = client_from(&gh, "both.test", [127, 0, 0, 2]);
    let resp = office.get("http://both.test/").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = office
        .get("http://both.test/")
        .header("cookie", "session=good")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_auth_service_is_verified_against_its_name() {
    let ca = Ca::new("auth CA");
    let leaf = ca.leaf(&["127.0.0.1"]);
    let tls_auth = tls_origin("tls-auth", &leaf).await;
    let (web, backend_seen) = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = ca.write_pem(dir.path(), "auth-ca");
    let gh = gateway(
        web,
        &[
            ingress("secure")
                .annotation(&ng("auth-url"), &format!("https://{tls_auth}/check"))
                .prefix("secure.test", "/", svc("web", 80)),
            // The certificate names 127.0.0.1, not localhost.
            ingress("wrong-name")
                .annotation(
                    &ng("auth-url"),
                    &format!("https://localhost:{}/check", tls_auth.port()),
                )
                .prefix("wrong.test", "/", svc("web", 80)),
        ],
        &[&format!("--upstream-ca-bundle={}", bundle.display())],
    );
    let c = gh.client_for(&["secure.test", "wrong.test"]);
    let resp = c.get("http://secure.test/").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(seen["origin"], "web");
    let resp = c.get("http://wrong.test/").send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(backend_seen.load(Ordering::SeqCst), 1);
}
