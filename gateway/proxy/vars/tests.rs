use super::*;
use crate::proxy::server::ServerSettings;
use crate::snapshot::policy::{CidrSet, Template};
use http::HeaderValue;

fn conn(trusted: Option<&str>) -> ConnInfo {
    let mut settings = ServerSettings::default();
    if let Some(trusted) = trusted {
        settings.trusted_proxies = std::sync::Arc::new(CidrSet::parse(trusted).unwrap());
    }
    ConnInfo::new(
        ([127, 0, 0, 9], 40000).into(),
        "https",
        HeaderValue::from_static("443"),
        &settings,
    )
}

fn fill(template: &str, conn: &ConnInfo, req: &Request<()>) -> String {
    Template::parse(template, false)
        .unwrap()
        .render(|var| value(var, conn, req))
}

#[test]
fn escaped_request_uri_escapes_all_but_unreserved_characters() {
    let mut out = String::new();
    escape_component("/?a=b&c=d e~_.-ü", &mut out);
    assert_eq!(out, "%2F%3Fa%3Db%26c%3Dd%20e~_.-%C3%BC");
}

#[test]
fn variables_read_the_request_as_nginx_does() {
    let req = Request::builder()
        .method("PUT")
        .uri("/a/b?Q=7&flag&q=8")
        .header("host", "App.Test:8443")
        .header("x-tag", "one")
        .header("x-tag", "two")
        .header("cookie", "a=1")
        .header("cookie", "session=s3cret; a=2")
        .header("x-forwarded-for", "203.0.113.7")
        .body(())
        .unwrap();
    let c = conn(None);
    assert_eq!(
        fill("$scheme://$host$request_uri $uri|$args", &c, &req),
        "https://app.test/a/b?Q=7&flag&q=8 /a/b|Q=7&flag&q=8"
    );
    assert_eq!(
        fill("$escaped_request_uri", &c, &req),
        "%2Fa%2Fb%3FQ%3D7%26flag%26q%3D8"
    );
    // Repeated lines joined; cookies with `; `.
    assert_eq!(fill("$http_x_tag", &c, &req), "one, two");
    assert_eq!(fill("$http_cookie", &c, &req), "a=1; session=s3cret; a=2");
    // The first cookie or argument of the name (arguments without case); `flag` is empty.
    assert_eq!(fill("$cookie_a $cookie_session", &c, &req), "1 s3cret");
    assert_eq!(fill("[$arg_q][$arg_flag][$arg_none]", &c, &req), "[7][][]");
    assert_eq!(fill("$request_method", &c, &req), "PUT");
    // The peer itself: it is not a trusted proxy, so X-Forwarded-For is not believed.
    assert_eq!(fill("$remote_addr", &c, &req), "127.0.0.9");
    assert_eq!(
        fill("$remote_addr", &conn(Some("127.0.0.0/8")), &req),
        "203.0.113.7"
    );
}
