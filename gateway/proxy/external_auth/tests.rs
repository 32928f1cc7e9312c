use super::*;
use crate::proxy::server::ServerSettings;

fn conn() -> ConnInfo {
    ConnInfo::new(
        ([127, 0, 0, 9], 40000).into(),
        "http",
        HeaderValue::from_static("80"),
        &ServerSettings::default(),
    )
}

fn auth(url: &str) -> ExternalAuth {
    ExternalAuth {
        url: Template::parse(url, false).unwrap(),
        method: None,
        signin: None,
        response_headers: vec![HeaderName::from_static("x-user")],
        request_redirect: None,
    }
}

fn request(uri: &str) -> Request<()> {
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::HOST, "App.test:8080")
        .header(header::COOKIE, "a=1; session=s3cret")
        .header(header::AUTHORIZATION, "Bearer t")
        .header(header::CONTENT_LENGTH, "12")
        .header(header::CONNECTION, "close")
        .body(())
        .unwrap()
}

#[test]
fn templates_are_filled_in_from_the_request() {
    let t = Template::parse(
        "https://auth.test/check?h=$host&u=$escaped_request_uri&s=$cookie_session&q=$arg_q&ip=$remote_addr&m=$request_method",
        false,
    )
    .unwrap();
    let got = render(&t, &conn(), &request("/a/b?q=7&r=1"));
    assert_eq!(
        got,
        "https://auth.test/check?h=app.test&u=%2Fa%2Fb%3Fq%3D7%26r%3D1&s=s3cret&q=7&ip=127.0.0.9&m=POST"
    );
}

#[test]
fn the_subrequest_is_a_bodiless_get_with_the_clients_headers_and_where_it_was_going() {
    let sub = subrequest(
        &auth("http://auth.test/check"),
        &conn(),
        "http://auth.test/check",
        &request("/p?x=1"),
    )
    .unwrap();
    assert_eq!(sub.method(), Method::GET);
    assert_eq!(sub.uri(), "http://auth.test/check");
    let h = sub.headers();
    assert_eq!(h[header::COOKIE], "a=1; session=s3cret");
    assert_eq!(h[header::AUTHORIZATION], "Bearer t");
    assert!(
        !h.contains_key(header::HOST),
        "the client sets the auth host"
    );
    assert!(!h.contains_key(header::CONTENT_LENGTH));
    assert!(!h.contains_key(header::CONNECTION));
    assert_eq!(h["x-original-url"], "http://App.test:8080/p?x=1");
    assert_eq!(h["x-original-method"], "POST");
    assert_eq!(h["x-auth-request-redirect"], "/p?x=1");
    assert_eq!(h["x-sent-from"], "nginx-ingress-controller");
    assert_eq!(h["x-forwarded-host"], "App.test:8080");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-real-ip"], "127.0.0.9");
    assert!(!h.contains_key("x-original-uri"), "only with auth-method");
}

#[test]
fn auth_method_and_request_redirect_change_the_subrequest() {
    let mut a = auth("http://auth.test/check");
    a.method = Some(Method::PUT);
    a.request_redirect = Some(HeaderValue::from_static("https://app.test/back"));
    let sub = subrequest(&a, &conn(), "http://auth.test/check", &request("/p")).unwrap();
    assert_eq!(sub.method(), Method::PUT);
    assert_eq!(
        sub.headers()["x-auth-request-redirect"],
        "https://app.test/back"
    );
    assert_eq!(sub.headers()["x-original-uri"], "/p");
    assert_eq!(sub.headers()["x-scheme"], "http");
}

#[test]
fn an_unusable_rendered_url_is_a_500() {
    let err = subrequest(
        &auth("http://auth.test/"),
        &conn(),
        "http://auth.test/a b",
        &request("/"),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AuthFailed);
    assert_eq!(err.response().status(), 500);
}

#[test]
fn sign_in_redirects_with_the_original_url_in_the_redirect_parameter() {
    let signin = |url: &str, param: Option<&str>| SignIn {
        url: Template::parse(url, false).unwrap(),
        redirect_param: param.map(Into::into),
    };
    let mut answer = HeaderMap::new();
    answer.append(header::SET_COOKIE, HeaderValue::from_static("csrf=1"));
    for (s, want) in [
        (
            signin("https://$host/start", Some("rd")),
            "https://app.test/start?rd=http://App.test:8080%2Fa%3Fb%3D1",
        ),
        (
            signin("https://login.test/start?x=1", Some("orig")),
            "https://login.test/start?x=1&orig=http://App.test:8080%2Fa%3Fb%3D1",
        ),
        (
            signin("https://login.test/start?rd=$scheme://$host", None),
            "https://login.test/start?rd=http://app.test",
        ),
    ] {
        let resp = sign_in(&s, &conn(), &request("/a?b=1"), &answer).unwrap();
        assert_eq!(resp.status(), 302);
        assert_eq!(resp.headers()[header::LOCATION], want);
        assert_eq!(resp.headers()[header::SET_COOKIE], "csrf=1");
    }
}

#[test]
fn response_headers_replace_the_clients_copies() {
    let a = auth("http://auth.test/");
    let mut req = request("/");
    req.headers_mut()
        .insert("x-user", HeaderValue::from_static("admin"));
    let mut answer = HeaderMap::new();
    answer.insert("x-user", HeaderValue::from_static("alice"));
    answer.insert("x-other", HeaderValue::from_static("not listed"));
    pass_response_headers(&a, &answer, req.headers_mut());
    assert_eq!(req.headers()["x-user"], "alice");
    assert!(!req.headers().contains_key("x-other"));
    // An answer without it: the client's copy is gone all the same.
    let mut req = request("/");
    req.headers_mut()
        .insert("x-user", HeaderValue::from_static("admin"));
    pass_response_headers(&a, &HeaderMap::new(), req.headers_mut());
    assert!(!req.headers().contains_key("x-user"));
}

#[test]
fn auth_cookies_go_with_successes_and_redirects_only() {
    for (status, added) in [(200, true), (302, true), (404, false), (502, false)] {
        let mut headers = HeaderMap::new();
        AuthCookies(vec![HeaderValue::from_static("s=1")])
            .add_to(StatusCode::from_u16(status).unwrap(), &mut headers);
        assert_eq!(headers.contains_key(header::SET_COOKIE), added, "{status}");
    }
}

#[test]
fn cookies_split_by_http2_reach_the_auth_service_in_one_header() {
    let mut req = request("/");
    req.headers_mut()
        .append(header::COOKIE, HeaderValue::from_static("b=2"));
    let sub = subrequest(
        &auth("http://auth.test/"),
        &conn(),
        "http://auth.test/",
        &req,
    )
    .unwrap();
    let cookies: Vec<_> = sub.headers().get_all(header::COOKIE).iter().collect();
    assert_eq!(cookies, ["a=1; session=s3cret; b=2"]);
}
