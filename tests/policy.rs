//! Route policies through the real binary, with real origins: refused routes name their
//! reason, source ranges (from several loopback source addresses, and behind a trusted proxy),
//! basic authentication, redirects, app-root and per-route body limits. Assertions follow
//! ingress-nginx's e2e tests for the same annotations.
mod support;

use std::net::{IpAddr, SocketAddr};

use support::yaml::{docs, ingress, svc};
use support::{Gatehouse, origin, service_yaml};

const NG: &str = "nginx.ingress.kubernetes.io/";

fn ng(name: &str) -> String {
    format!("{NG}{name}")
}

/// `correct horse`, bcrypt (made with Python's bcrypt).
const BCRYPT: &str = "$2b$10$hsoaWJdLlQpAk1VfrJG7ueU8SGjzY3Fr99EH/jxZqlr8df9a35xvS";

fn secret(name: &str, auth: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\nstringData:\n  auth: {auth:?}\n"
    )
}

fn gateway(web: SocketAddr, parts: &[String], args: &[&str]) -> Gatehouse {
    let mut all = vec![service_yaml("default", "web", &[web])];
    all.extend(parts.iter().cloned());
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

async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_route_answers_503_naming_the_ingress_and_the_reason() {
    let web = origin::echo("web").await;
    let gh = gateway(
        web,
        &[ingress("oauth")
            .annotation(&ng("auth-snippet"), "proxy_set_header X-Auth 1;")
            .prefix("app.test", "/", svc("web", 80))
            .yaml()],
        &[],
    );
    let (status, body) = get(&gh.client_for(&["app.test"]), "http://app.test/x", &[]).await;
    assert_eq!(status, 503);
    assert!(
        body.contains(
            "Ingress default/oauth is not served: nginx.ingress.kubernetes.io/auth-snippet"
        ),
        "{body}"
    );
    assert!(!body.contains("\"origin\""), "reached the backend: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ranges_allow_and_deny_by_the_client_address() {
    let web = origin::echo("web").await;
    let gh = gateway(
        web,
        &[
            ingress("office")
                .annotation(&ng("whitelist-source-range"), "127.0.0.2/32, 127.0.0.3")
                .prefix("office.test", "/", svc("web", 80))
                .yaml(),
            ingress("blocked")
                .annotation(&ng("denylist-source-range"), "127.0.0.3")
                .prefix("public.test", "/", svc("web", 80))
                .yaml(),
        ],
        &[],
    );
    for (source, office, public) in [
        ([127, 0, 0, 2], 200, 200),
        ([127, 0, 0, 3], 200, 403),
        ([127, 0, 0, 4], 403, 200),
        ([127, 0, 0, 1], 403, 200),
    ] {
        let c = client_from(&gh, "office.test", source);
        let (status, body) = get(&c, "http://office.test/", &[]).await;
        assert_eq!(status, office, "office.test from {source:?}: {body}");
        if status == 403 {
            assert!(!body.contains("\"origin\""), "{body}");
        }
        let c = client_from(&gh, "public.test", source);
        let (status, _) = get(&c, "http://public.test/", &[]).await;
        assert_eq!(status, public, "public.test from {source:?}");
    }
    // An untrusted peer cannot choose its address with X-Forwarded-For.
    let c = client_from(&gh, "office.test", [127, 0, 0, 4]);
    let (status, _) = get(
        &c,
        "http://office.test/",
        &[("x-forwarded-for", "127.0.0.2")],
    )
    .await;
    assert_eq!(
        status, 403,
        "X-Forwarded-For of an untrusted peer was believed"
    );
    assert!(gh.metric("gatehouse_proxy_errors_total", &["reason=\"forbidden\""]) >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_address_decides() {
    let web = origin::echo("web").await;
    let gh = gateway(
        web,
        &[ingress("office")
            .annotation(&ng("whitelist-source-range"), "10.1.0.0/16")
            .prefix("office.test", "/", svc("web", 80))
            .yaml()],
        &["--trusted-proxies=127.0.0.5/32"],
    );
    let proxy = client_from(&gh, "office.test", [127, 0, 0, 5]);
    let (status, body) = get(
        &proxy,
        "http://office.test/",
        &[("x-forwarded-for", "10.1.2.3")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["headers"]["x-forwarded-for"], "10.1.2.3, 127.0.0.5",
        "a trusted proxy's X-Forwarded-For is appended to"
    );
    let (status, _) = get(
        &proxy,
        "http://office.test/",
        &[("x-forwarded-for", "192.0.2.1")],
    )
    .await;
    assert_eq!(status, 403, "the forwarded client is outside the range");
    // The same header from a peer that is not a trusted proxy is not believed.
    let other = client_from(&gh, "office.test", [127, 0, 0, 6]);
    let (status, _) = get(
        &other,
        "http://office.test/",
        &[("x-forwarded-for", "10.1.2.3")],
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_challenges_and_lets_the_right_password_through() {
    let web = origin::echo("web").await;
    let gh = gateway(
        web,
        &[
            secret("users", &format!("editor:{BCRYPT}\n")),
            ingress("staff")
                .annotation(&ng("auth-type"), "basic")
                .annotation(&ng("auth-secret"), "users")
                .annotation(&ng("auth-realm"), "Staff only")
                .prefix("app.test", "/", svc("web", 80))
                .yaml(),
            ingress("either")
                .annotation(&ng("auth-type"), "basic")
                .annotation(&ng("auth-secret"), "users")
                .annotation(&ng("whitelist-source-range"), "127.0.0.2")
                .annotation(&ng("satisfy"), "any")
                .prefix("either.test", "/", svc("web", 80))
                .yaml(),
        ],
        &[],
    );
    let client = gh.client_for(&["app.test", "either.test"]);
    let resp = client.get("http://app.test/").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"Staff only\""
    );
    assert!(!resp.text().await.unwrap().contains("\"origin\""));
    let wrong = client
        .get("http://app.test/")
        .basic_auth("editor", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unknown = client
        .get("http://app.test/")
        .basic_auth("nobody", Some("correct horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    // Twice: the second is answered from the remembered success.
    for _ in 0..2 {
        let ok = client
            .get("http://app.test/")
            .basic_auth("editor", Some("correct horse"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    // satisfy any: the allowed address passes without a password, others need one.
    let office = client_from(&gh, "either.test", [127, 0, 0, 2]);
    assert_eq!(get(&office, "http://either.test/", &[]).await.0, 200);
    let home = client_from(&gh, "either.test", [127, 0, 0, 3]);
    assert_eq!(get(&home, "http://either.test/", &[]).await.0, 401);
    let ok = home
        .get("http://either.test/")
        .basic_auth("editor", Some("correct horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_app_root_www_twin_and_body_size() {
    let web = origin::echo("web").await;
    let gh = gateway(
        web,
        &[
            ingress("moved")
                .annotation(&ng("permanent-redirect"), "https://new.test/landing")
                .annotation(&ng("permanent-redirect-code"), "308")
                .prefix("old.test", "/", svc("web", 80))
                .yaml(),
            ingress("temp")
                .annotation(&ng("temporal-redirect"), "https://elsewhere.test/")
                .prefix("temp.test", "/", svc("web", 80))
                .yaml(),
            ingress("app")
                .annotation(&ng("app-root"), "/app1")
                .annotation(&ng("proxy-body-size"), "1k")
                .prefix("app.test", "/", svc("web", 80))
                .yaml(),
            ingress("www")
                .annotation(&ng("from-to-www-redirect"), "true")
                .prefix("www.shop.test", "/", svc("web", 80))
                .yaml(),
        ],
        &[],
    );
    let c = gh.client_for(&["old.test", "temp.test", "app.test", "shop.test"]);
    let r = c.get("http://old.test/a?b=1").send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "https://new.test/landing");
    let r = c.get("http://temp.test/x").send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://elsewhere.test/");
    let r = c.get("http://app.test/").send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://app.test/app1");
    let r = c.get("http://app.test/other").send().await.unwrap();
    assert_eq!(r.status(), 200, "only / goes to the app root");
    let r = c
        .post("http://app.test/upload")
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "proxy-body-size 1k");
    let r = c
        .post("http://app.test/upload")
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get("http://shop.test/cart?id=7").send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "http://www.shop.test/cart?id=7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_at_the_edge_and_responses_carry_the_headers() {
    let web = origin::echo("web").await;
    let gh = gateway(
        web,
        &[
            ingress("api")
                .annotation(&ng("enable-cors"), "true")
                .annotation(&ng("cors-allow-origin"), "https://*.shop.test")
                .annotation(&ng("cors-allow-methods"), "GET, POST")
                .annotation(&ng("cors-max-age"), "600")
                .prefix("api.test", "/", svc("web", 80))
                .yaml(),
            ingress("open")
                .annotation(&ng("enable-cors"), "true")
                .prefix("open.test", "/", svc("web", 80))
                .yaml(),
        ],
        &[],
    );
    let c = gh.client_for(&["api.test", "open.test"]);
    let pre = c
        .request(reqwest::Method::OPTIONS, "http://api.test/items")
        .header("origin", "https://www.shop.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "https://www.shop.test");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    let get = c
        .get("http://api.test/items")
        .header("origin", "https://www.shop.test")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://www.shop.test"
    );
    assert!(get.text().await.unwrap().contains("\"origin\":\"web\""));
    let other = c
        .get("http://api.test/items")
        .header("origin", "https://evil.test")
        .send()
        .await
        .unwrap();
    assert!(
        !other.headers().contains_key("access-control-allow-origin"),
        "an origin outside the list is not allowed"
    );
    let any = c.get("http://open.test/").send().await.unwrap();
    assert_eq!(any.headers()["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_target_vhost_and_forwarded_prefix_reach_the_upstream() {
    let web = origin::echo("web").await;
    let gh = gateway(
        web,
        &[ingress("rewrite")
            .annotation(&ng("rewrite-target"), "/$2")
            .annotation(&ng("upstream-vhost"), "internal.svc")
            .annotation(&ng("x-forwarded-prefix"), "/something")
            .path(
                "rewrite.test",
                "/something(/|$)(.*)",
                "ImplementationSpecific",
                svc("web", 80),
            )
            .yaml()],
        &[],
    );
    let c = gh.client_for(&["rewrite.test"]);
    for (asked, sent) in [
        ("/something", "/"),
        ("/something/", "/"),
        ("/something/new?q=1", "/new?q=1"),
        ("/SOMETHING/a/b", "/a/b"),
    ] {
        let (status, body) = get(&c, &format!("http://rewrite.test{asked}"), &[]).await;
        assert_eq!(status, 200, "{asked}: {body}");
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["path"], sent, "{asked}");
        assert_eq!(seen["headers"]["host"], "internal.svc");
        assert_eq!(seen["headers"]["x-forwarded-host"], "rewrite.test");
        assert_eq!(seen["headers"]["x-forwarded-prefix"], "/something");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_503_per_client_address_and_spare_the_allowlist() {
    let web = origin::echo("web").await;
    let gh = gateway(
        web,
        &[ingress("limited")
            .annotation(&ng("limit-rpm"), "2")
            .annotation(&ng("limit-burst-multiplier"), "1")
            .annotation(&ng("limit-whitelist"), "127.0.0.2")
            .prefix("limited.test", "/", svc("web", 80))
            .yaml()],
        &[],
    );
    let url = "http://limited.test/";
    // burst 2 (2 × 1) + 1: three at once, then 503 until the bucket refills (30 s a request).
    let busy = client_from(&gh, "limited.test", [127, 0, 0, 3]);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&busy, url, &[]).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 503, 503]);
    let other = client_from(&gh, "limited.test", [127, 0, 0, 4]);
    assert_eq!(
        get(&other, url, &[]).await.0,
        200,
        "each address has its own"
    );
    let exempt = client_from(&gh, "limited.test", [127, 0, 0, 2]);
    for _ in 0..6 {
        assert_eq!(get(&exempt, url, &[]).await.0, 200, "limit-whitelist");
    }
    assert!(gh.metric("gatehouse_proxy_errors_total", &["reason=\"rate_limited\""]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_by_header_cookie_and_weight() {
    let (main, canary) = (origin::echo("main").await, origin::echo("canary").await);
    let gh = gateway(
        main,
        &[
            service_yaml("default", "canary", &[canary]),
            ingress("main")
                .prefix("shop.test", "/", svc("web", 80))
                .yaml(),
            ingress("canary")
                .annotation(&ng("canary"), "true")
                .annotation(&ng("canary-by-header"), "X-Canary")
                .annotation(&ng("canary-by-cookie"), "canary")
                .annotation(&ng("canary-weight"), "0")
                .prefix("shop.test", "/", svc("canary", 80))
                .yaml(),
            ingress("all-canary")
                .annotation(&ng("canary"), "true")
                .annotation(&ng("canary-weight"), "100")
                .prefix("shop.test", "/all", svc("canary", 80))
                .yaml(),
            ingress("main-all")
                .prefix("shop.test", "/all", svc("web", 80))
                .yaml(),
        ],
        &[],
    );
    let c = gh.client_for(&["shop.test"]);
    let origin_of = |body: String| -> String {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["origin"].as_str().unwrap().to_owned()
    };
    let url = "http://shop.test/";
    for (headers, want) in [
        (vec![], "main"),
        (vec![("x-canary", "always")], "canary"),
        (
            vec![("x-canary", "never"), ("cookie", "canary=always")],
            "main",
        ),
        (vec![("cookie", "a=b; canary=always")], "canary"),
        (vec![("cookie", "canary=never")], "main"),
        (vec![("x-canary", "other")], "main"),
    ] {
        let (status, body) = get(&c, url, &headers).await;
        assert_eq!(status, 200);
        assert_eq!(origin_of(body), want, "{headers:?}");
    }
    for _ in 0..3 {
        let (_, body) = get(&c, "http://shop.test/all", &[]).await;
        assert_eq!(origin_of(body), "canary", "weight 100 of 100");
    }
}
