use super::*;
use crate::proxy::server::ServerSettings;

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
