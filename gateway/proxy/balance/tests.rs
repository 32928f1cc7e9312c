use std::sync::Arc;

use super::*;
use crate::objects::ObjectKey;
use crate::proxy::server::ServerSettings;
use crate::proxy::upstream::Upstreams;
use crate::snapshot::policy::RoutePolicy;

fn affinity() -> CookieAffinity {
    CookieAffinity {
        name: "INGRESSCOOKIE".into(),
        path: None,
        domain: None,
        max_age: None,
        expires: None,
        same_site: None,
        conditional_same_site_none: false,
        secure: false,
        persistent: false,
        change_on_failure: false,
        canary_sticky: true,
    }
}

fn conn(scheme: &'static str) -> ConnInfo {
    ConnInfo::new(
        ([127, 0, 0, 9], 40000).into(),
        scheme,
        HeaderValue::from_static("80"),
        &ServerSettings::default(),
    )
}

fn sticky<'a>(a: &'a CookieAffinity, path: &'a str, secure: bool) -> Sticky<'a> {
    Sticky {
        affinity: a,
        from_cookie: None,
        key: None,
        path,
        secure,
        omit_same_site_none: false,
    }
}

#[test]
fn the_cookie_carries_the_documented_attributes() {
    let mut a = affinity();
    a.name = "route".into();
    a.domain = Some("example.com".into());
    a.max_age = Some(172800);
    a.expires = Some(172800);
    a.same_site = Some(SameSite::Strict);
    let text = sticky(&a, "/shop", true).cookie("k", "t");
    assert!(
        text.starts_with("route=k.t; Path=/shop; Domain=example.com; Expires="),
        "{text}"
    );
    assert!(
        text.ends_with("; Max-Age=172800; Secure; HttpOnly; SameSite=Strict"),
        "{text}"
    );
    let plain = sticky(&affinity(), "/", false).cookie("k", "t");
    assert_eq!(plain, "INGRESSCOOKIE=k.t; Path=/; HttpOnly");
}

#[test]
fn same_site_none_is_left_out_for_browsers_that_mishandle_it() {
    for (ua, bad) in [
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15",
            true,
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/65.0.3325.181 Safari/537.36",
            true,
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0 Safari/537.36",
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15",
            false,
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 8.1.0) UCBrowser/12.10.8.1172 Mobile",
            true,
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 8.1.0) UCBrowser/13.4.0.1306 Mobile",
            false,
        ),
    ] {
        assert_eq!(SAME_SITE_NONE_INCOMPATIBLE.is_match(ua), bad, "{ua}");
    }
}

#[test]
fn hash_keys_are_nginx_variables_of_the_request() {
    let template = Template::parse(
        "$request_uri|$http_x_user|$cookie_sid|$arg_q|$remote_addr",
        false,
    )
    .unwrap();
    let req = Request::get("http://app.test/a/b?q=1&r=2")
        .header("x-user", "alice")
        .header("cookie", "a=1; sid=xyz")
        .body(())
        .unwrap();
    assert_eq!(
        hash_key(&template, &conn("http"), &req),
        "/a/b?q=1&r=2|alice|xyz|1|127.0.0.9"
    );
}

#[test]
fn a_cookie_counts_only_for_the_backend_that_set_it() {
    let keys = EndpointKeys::new("default/web:80", &["10.0.0.1:80".parse().unwrap()]);
    let other = EndpointKeys::new("default/canary:80", &["10.0.0.1:80".parse().unwrap()]);
    let value = format!("INGRESSCOOKIE=abc.{}", keys.tag());
    let req = Request::get("/").header("cookie", value).body(()).unwrap();
    assert_eq!(cookie_key(&req, "INGRESSCOOKIE", &keys), Some("abc"));
    assert_eq!(cookie_key(&req, "INGRESSCOOKIE", &other), None);
    assert_eq!(cookie_key(&req, "other", &keys), None);
}

fn route(policy: Option<RoutePolicy>, backend: Arc<ServiceBackend>) -> Route {
    Route {
        ingress: Arc::new(ObjectKey::new("default", "web")),
        path: PathMatch::prefix("/"),
        backend: Backend::Service(backend),
        ssl_redirect: false,
        policy: policy.map(Arc::new),
        rewrite: None,
        canary: None,
        counters: Default::default(),
    }
}

fn backend(n: u8) -> Arc<ServiceBackend> {
    Arc::new(ServiceBackend::new(
        ObjectKey::new("default", "web"),
        "80".into(),
        Default::default(),
        (1..=n).map(|i| ([10, 0, 0, i], 8080).into()).collect(),
    ))
}

#[tokio::test]
async fn hash_by_sends_a_key_to_one_endpoint_and_keys_spread() {
    let upstreams = Upstreams::new(Default::default());
    let backend = backend(3);
    let mut policy = RoutePolicy::default();
    policy.upstream.hash_by = Some(Template::parse("$http_x_user", false).unwrap());
    let route = route(Some(policy), backend.clone());
    let conn = conn("http");
    let first = |user: &str| {
        let req = Request::get("/").header("x-user", user).body(()).unwrap();
        let mut choice = choose(&upstreams, &route, None, &backend, &conn, &req);
        assert!(choice.sticky.is_none());
        choice.candidates.next().unwrap()
    };
    let mut used = std::collections::HashSet::new();
    for u in 0..30 {
        let user = format!("u{u}");
        let i = first(&user);
        assert!((0..5).all(|_| first(&user) == i));
        used.insert(i);
    }
    assert_eq!(used.len(), 3);
}

#[tokio::test]
async fn a_cookie_for_its_endpoint_is_tried_first_then_the_others() {
    let upstreams = Upstreams::new(Default::default());
    let backend = backend(4);
    let mut a = affinity();
    a.persistent = true;
    let mut policy = RoutePolicy::default();
    policy.upstream.affinity = Some(Arc::new(a));
    let route = route(Some(policy), backend.clone());
    let keys = backend.keys();
    let cookie = format!("INGRESSCOOKIE={}.{}", keys.token(2), keys.tag());
    let req = Request::get("/").header("cookie", cookie).body(()).unwrap();
    let choice = choose(&upstreams, &route, None, &backend, &conn("http"), &req);
    let order: Vec<usize> = choice.candidates.collect();
    assert_eq!(order[0], 2);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 1, 2, 3], "each endpoint once: {order:?}");
}

/// Per-request cost of the choices, side by side (debug builds inflate all of them):
/// `cargo test --lib balance::tests::cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn cost() {
    let upstreams = Upstreams::new(Default::default());
    let conn = conn("http");
    for n in [3u8, 30] {
        let backend = backend(n);
        let plain = route(None, backend.clone());
        let mut hashed = RoutePolicy::default();
        hashed.upstream.hash_by = Some(Template::parse("$request_uri", false).unwrap());
        let hashed = route(Some(hashed), backend.clone());
        let mut sticky = RoutePolicy::default();
        sticky.upstream.affinity = Some(Arc::new(affinity()));
        let sticky = route(Some(sticky), backend.clone());
        let keys = backend.keys();
        let key = "0123456789abcdef0123456789abcdef";
        let with_cookie = Request::get("/a/b?c=d")
            .header("cookie", format!("INGRESSCOOKIE={key}.{}", keys.tag()))
            .body(())
            .unwrap();
        let rounds = 100_000u32;
        let time = |what: &str, f: &dyn Fn() -> usize| {
            let start = std::time::Instant::now();
            let mut sum = 0;
            for _ in 0..rounds {
                sum += f();
            }
            let ns = start.elapsed().as_nanos() / u128::from(rounds);
            println!("{n:>3} endpoints  {what:<28} {ns:>6} ns/request  ({sum})");
        };
        time("round robin (no policy)", &|| {
            upstreams.candidates(&backend).next().unwrap_or(0)
        });
        let _ = &plain;
        time("upstream-hash-by $request_uri", &|| {
            let mut c = choose(&upstreams, &hashed, None, &backend, &conn, &with_cookie);
            c.candidates.next().unwrap_or(0)
        });
        time("affinity cookie (balanced)", &|| {
            let mut c = choose(&upstreams, &sticky, None, &backend, &conn, &with_cookie);
            c.candidates.next().unwrap_or(0)
        });
    }
}
