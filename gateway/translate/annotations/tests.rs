//! The annotation parser: both prefixes, one meaning; every annotation reported; broken access
//! rules refuse the routes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;

use super::*;
use crate::snapshot::policy::{Access, CorsOrigins, HeaderMatch, RedirectTo};

const NGINX: &str = "nginx.ingress.kubernetes.io/";
const OURS: &str = "gatehouse.dev/";

fn ingress(annotations: &[(&str, &str)]) -> Ingress {
    let mut ing = Ingress::default();
    ing.metadata.name = Some("web".into());
    ing.metadata.namespace = Some("shop".into());
    ing.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    ing
}

fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> (ObjectKey, Arc<Secret>) {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some(namespace.into());
    s.string_data = Some(
        data.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    (ObjectKey::new(namespace, name), Arc::new(s))
}

fn parse_with(
    annotations: &[(&str, &str)],
    secrets: &[(ObjectKey, Arc<Secret>)],
    defaults: Defaults,
) -> Parsed {
    let key = ObjectKey::new("shop", "web");
    let secrets: BTreeMap<ObjectKey, Arc<Secret>> = secrets.iter().cloned().collect();
    super::parse(
        &ingress(annotations),
        &Context {
            key: &key,
            secrets: &secrets,
            defaults,
        },
    )
}

fn parse(annotations: &[(&str, &str)]) -> Parsed {
    parse_with(annotations, &[], Defaults::default())
}

fn n(name: &str) -> String {
    format!("{NGINX}{name}")
}

fn g(name: &str) -> String {
    format!("{OURS}{name}")
}

fn outcome(p: &Parsed, key: &str) -> (Status, String) {
    let r = p
        .reports
        .iter()
        .find(|r| r.annotation == key)
        .unwrap_or_else(|| panic!("no report for {key}: {:#?}", p.reports));
    (r.outcome, r.reason.clone())
}

fn rules(p: &Parsed) -> &AccessRules {
    match &p.policy.access {
        Access::Restricted(r) => r,
        other => panic!("not restricted: {other:?}"),
    }
}

fn refusal(p: &Parsed) -> &str {
    p.refused()
        .unwrap_or_else(|| panic!("not refused: {:#?}", p.reports))
}

const APR1: &str = "alice:$apr1$hTQb2xg1$PoZngGx9aPMxyg/6qNUCm0\n";

// === both prefixes, one meaning ===

#[test]
fn both_prefixes_give_the_same_policy() {
    for prefix in [NGINX, OURS] {
        let key = format!("{prefix}whitelist-source-range");
        let p = parse(&[(&key, "10.0.0.0/8, 192.168.1.1")]);
        let allow = rules(&p).allow.as_ref().unwrap();
        assert!(allow.contains("10.2.3.4".parse().unwrap()));
        assert!(!allow.contains("11.0.0.1".parse().unwrap()));
        assert_eq!(outcome(&p, &key).0, Status::Honoured);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }
}

#[test]
fn gatehouse_prefix_wins_when_both_are_set() {
    let p = parse(&[(&n("proxy-body-size"), "1m"), (&g("proxy-body-size"), "2m")]);
    assert_eq!(p.policy.limits.body_size, Some(2 << 20));
    assert_eq!(outcome(&p, &n("proxy-body-size")).0, Status::Ignored);
    assert_eq!(
        p.warnings,
        [
            "annotation nginx.ingress.kubernetes.io/proxy-body-size ignored: gatehouse.dev/proxy-body-size is set too and wins"
        ]
    );
}

#[test]
fn no_annotation_means_an_empty_open_policy() {
    let p = parse(&[
        ("kubernetes.io/ingress.class", "nginx"),
        ("example.com/other", "x"),
    ]);
    assert!(p.policy.is_empty());
    assert!(p.reports.is_empty() && p.warnings.is_empty());
}

// === nothing silent ===

#[test]
fn unknown_annotations_are_warned_about_and_access_like_ones_refuse() {
    let p = parse(&[(&n("proxy-bufer-size"), "8k")]);
    assert_eq!(
        p.warnings,
        [
            "annotation nginx.ingress.kubernetes.io/proxy-bufer-size=\"8k\" ignored: unknown annotation"
        ]
    );
    assert!(p.refused().is_none());
    // A misspelt access rule must not leave the routes open.
    let p = parse(&[(&n("whitelist-source-ranges"), "10.0.0.0/8")]);
    assert!(
        refusal(&p).contains("whitelist-source-ranges"),
        "{:?}",
        p.refused()
    );
    let p = parse(&[(&g("auth-urll"), "https://auth.test/")]);
    assert!(p.refused().is_some());
}

#[test]
fn every_known_annotation_is_recognised_under_its_prefixes() {
    for s in ANNOTATIONS {
        let keys: Vec<String> = match s.prefixes {
            Prefixes::Both => vec![n(s.name), g(s.name)],
            Prefixes::Nginx => vec![n(s.name)],
            Prefixes::Gatehouse => vec![g(s.name)],
        };
        for key in keys {
            let p = parse(&[(&key, "x")]);
            let (_, reason) = outcome(&p, &key);
            assert!(!reason.contains("unknown annotation"), "{key}: {reason}");
        }
    }
    let mut names: Vec<&str> = ANNOTATIONS.iter().map(|s| s.name).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "a name appears twice in the table");
}

#[test]
fn an_annotation_under_the_wrong_prefix_is_unknown() {
    let p = parse(&[(&g("configuration-snippet"), "deny all;")]);
    assert!(
        outcome(&p, &g("configuration-snippet"))
            .1
            .contains("unknown annotation")
    );
    assert!(p.refused().is_none());
    let p = parse(&[(&g("auth-tls-secret"), "shop/ca")]);
    assert!(refusal(&p).contains("looks like an access rule"));
    let p = parse(&[(&n("backend-tls-server-name"), "x.test")]);
    assert!(
        outcome(&p, &n("backend-tls-server-name"))
            .1
            .contains("unknown annotation")
    );
}

#[test]
fn annotations_over_the_api_size_limit_reject_the_ingress() {
    let big = "x".repeat(MAX_ANNOTATION_BYTES);
    let p = parse(&[("example.com/blob", &big)]);
    assert!(
        p.rejected.as_deref().unwrap().contains("262144"),
        "{:?}",
        p.rejected
    );
    let p = parse(&[("example.com/blob", &big[..1000])]);
    assert!(p.rejected.is_none());
}

#[test]
fn long_values_are_shortened_in_warnings() {
    let long = "y".repeat(500);
    let p = parse(&[(&n("mirror-target"), &long)]);
    assert!(p.warnings[0].len() < 300, "{}", p.warnings[0]);
    assert!(p.warnings[0].contains("…"));
}

// === access ===

#[test]
fn broken_source_range_refuses_the_routes_naming_annotation_and_reason() {
    let p = parse(&[(&n("whitelist-source-range"), "10.0.0.0/8,not-an-ip")]);
    assert_eq!(
        refusal(&p),
        "Ingress shop/web is not served: nginx.ingress.kubernetes.io/whitelist-source-range: \"not-an-ip\" is not an IP address or CIDR"
    );
    assert_eq!(
        p.warnings,
        [
            "annotation nginx.ingress.kubernetes.io/whitelist-source-range=\"10.0.0.0/8,not-an-ip\" refused, its routes answer 503: \"not-an-ip\" is not an IP address or CIDR"
        ]
    );
    let p = parse(&[(&n("denylist-source-range"), "")]);
    assert!(p.refused().is_some());
}

#[test]
fn allowlist_wins_over_whitelist_and_denylist_and_satisfy_parse() {
    let p = parse(&[
        (&n("whitelist-source-range"), "10.0.0.0/8"),
        (&n("allowlist-source-range"), "192.168.0.0/16"),
        (&n("denylist-source-range"), "192.168.9.9"),
        (&n("satisfy"), "any"),
    ]);
    let r = rules(&p);
    assert!(
        r.allow
            .as_ref()
            .unwrap()
            .contains("192.168.1.1".parse().unwrap())
    );
    assert!(!r.source_allowed("192.168.9.9".parse().unwrap()));
    assert_eq!(r.satisfy, crate::snapshot::policy::Satisfy::Any);
    assert_eq!(outcome(&p, &n("whitelist-source-range")).0, Status::Ignored);
}

#[test]
fn basic_auth_reads_the_htpasswd_secret_at_translate_time() {
    let s = secret("shop", "users", &[("auth", APR1)]);
    let p = parse_with(
        &[
            (&n("auth-type"), "basic"),
            (&n("auth-secret"), "users"),
            (&n("auth-realm"), "Shop \"staff\""),
        ],
        std::slice::from_ref(&s),
        Defaults::default(),
    );
    let basic = rules(&p).basic.as_ref().unwrap();
    assert!(basic.users.verify("alice", b"correct horse"));
    assert_eq!(basic.challenge, "Basic realm=\"Shop staff\"");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.secrets.len(), 1);
    assert!(
        p.secrets[0]
            .1
            .as_ref()
            .is_some_and(|x| Arc::ptr_eq(x, &s.1))
    );
}

#[test]
fn basic_auth_secret_in_another_namespace_and_auth_map() {
    let s = secret(
        "auth",
        "map",
        &[
            ("alice", "{PLAIN}pw"),
            ("bob", "$apr1$hTQb2xg1$PoZngGx9aPMxyg/6qNUCm0"),
        ],
    );
    let p = parse_with(
        &[
            (&n("auth-type"), "basic"),
            (&n("auth-secret"), "auth/map"),
            (&n("auth-secret-type"), "auth-map"),
        ],
        &[s],
        Defaults::default(),
    );
    let basic = rules(&p).basic.as_ref().unwrap();
    assert!(basic.users.verify("alice", b"pw"));
    assert!(basic.users.verify("bob", b"correct horse"));
}

#[test]
fn broken_basic_auth_refuses_the_routes() {
    let users = secret("shop", "users", &[("auth", APR1)]);
    let empty = secret("shop", "empty", &[("other", "x")]);
    let garbage = secret("shop", "garbage", &[("auth", "alice:not-a-hash\n")]);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("auth-type", "basic"), ("auth-secret", "missing")],
            "Secret shop/missing not found",
        ),
        (
            &[("auth-type", "basic"), ("auth-secret", "empty")],
            "has no key \"auth\"",
        ),
        (
            &[("auth-type", "basic"), ("auth-secret", "garbage")],
            "no usable user",
        ),
        (
            &[("auth-type", "basic")],
            "auth-type basic needs auth-secret",
        ),
        (&[("auth-secret", "users")], "needs auth-type: basic"),
        (
            &[("auth-type", "digest"), ("auth-secret", "users")],
            "digest authentication is not supported",
        ),
        (
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-secret-type", "auth-json"),
            ],
            "unknown secret type",
        ),
        (
            &[("auth-type", "basic"), ("auth-secret", "Bad Name")],
            "expected a Secret name",
        ),
    ];
    for (annotations, reason) in cases {
        let full: Vec<(String, &str)> = annotations.iter().map(|(k, v)| (n(k), *v)).collect();
        let refs: Vec<(&str, &str)> = full.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let p = parse_with(
            &refs,
            &[users.clone(), empty.clone(), garbage.clone()],
            Defaults::default(),
        );
        assert!(
            refusal(&p).contains(reason),
            "{annotations:?}: {:?}",
            p.refused()
        );
        // Each annotation of the set has one report, refused (found by fuzzing).
        for (key, _) in &refs {
            let reports: Vec<_> = p.reports.iter().filter(|r| r.annotation == *key).collect();
            assert_eq!(reports.len(), 1, "{annotations:?}: {key}: {reports:?}");
            assert_eq!(
                reports[0].outcome,
                Status::Refused,
                "{annotations:?}: {key}"
            );
            assert!(
                p.warnings.iter().any(|w| w.contains(key)),
                "{annotations:?}: {key}: {:?}",
                p.warnings
            );
        }
    }
}

#[test]
fn htpasswd_lines_that_cannot_be_used_are_warned_about_and_left_out() {
    let s = secret(
        "shop",
        "users",
        &[(
            "auth",
            "alice:$apr1$hTQb2xg1$PoZngGx9aPMxyg/6qNUCm0\nbob:oops\n",
        )],
    );
    let p = parse_with(
        &[(&n("auth-type"), "basic"), (&n("auth-secret"), "users")],
        &[s],
        Defaults::default(),
    );
    assert!(p.refused().is_none());
    assert!(
        !rules(&p)
            .basic
            .as_ref()
            .unwrap()
            .users
            .verify("bob", b"oops")
    );
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].contains("users of Secret shop/users left out")
            && p.warnings[0].contains("bob"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn external_auth_is_parsed_into_the_route_policy() {
    let p = parse(&[
        (&n("auth-url"), "https://auth.test/oauth2/auth?host=$host"),
        (&n("auth-signin"), "https://$host/oauth2/start"),
        (&n("auth-signin-redirect-param"), "orig"),
        (&n("auth-method"), "post"),
        (&n("auth-response-headers"), "X-User, X-Email"),
        (&n("auth-request-redirect"), "https://app.test/"),
        (&n("auth-cache-key"), "$remote_user$http_authorization"),
    ]);
    assert!(p.refused().is_none(), "{:?}", p.refused());
    for name in [
        "auth-url",
        "auth-signin",
        "auth-signin-redirect-param",
        "auth-method",
        "auth-response-headers",
        "auth-request-redirect",
    ] {
        assert_eq!(outcome(&p, &n(name)).0, Status::Honoured, "{name}");
    }
    assert_eq!(outcome(&p, &n("auth-cache-key")).0, Status::Ignored);
    let auth = rules(&p).external.as_ref().expect("external auth");
    assert_eq!(
        auth.url.to_string(),
        "https://auth.test/oauth2/auth?host=${host}"
    );
    assert_eq!(auth.method, Some(http::Method::POST));
    assert_eq!(auth.response_headers, ["x-user", "x-email"]);
    assert_eq!(auth.request_redirect.as_ref().unwrap(), "https://app.test/");
    let signin = auth.signin.as_ref().expect("signin");
    assert_eq!(signin.redirect_param.as_deref(), Some("orig"));
}

#[test]
fn a_signin_url_carrying_the_redirect_parameter_keeps_it() {
    for (signin, param) in [
        ("https://$host/oauth2/start?rd=$escaped_request_uri", None),
        ("https://$host/oauth2/start?rd=", Some("rd")),
        ("https://$host/oauth2/start?x=1", Some("rd")),
        ("https://$host/oauth2/start", Some("rd")),
    ] {
        let p = parse(&[
            (&n("auth-url"), "https://auth.test/"),
            (&n("auth-signin"), signin),
        ]);
        let auth = rules(&p).external.as_ref().expect("external auth");
        let got = auth.signin.as_ref().unwrap().redirect_param.as_deref();
        assert_eq!(got, param, "{signin}");
    }
}

#[test]
fn an_auth_url_host_from_the_request_refuses_on_a_rule_for_any_host() {
    use k8s_openapi::api::networking::v1::{IngressRule, IngressSpec};
    let key = ObjectKey::new("shop", "web");
    let secrets = BTreeMap::new();
    let cx = Context {
        key: &key,
        secrets: &secrets,
        defaults: Defaults::default(),
    };
    for (host, url, refused) in [
        (None, "https://$host/oauth2/auth", true),
        (Some(""), "http://${http_x_auth}:4180/", true),
        (None, "https://auth.test/check?for=$host", false),
        (Some("app.test"), "https://$host/oauth2/auth", false),
    ] {
        let mut ing = ingress(&[(&n("auth-url"), url)]);
        ing.spec = Some(IngressSpec {
            rules: Some(vec![IngressRule {
                host: host.map(str::to_owned),
                http: None,
            }]),
            ..IngressSpec::default()
        });
        let p = super::parse(&ing, &cx);
        assert_eq!(p.refused().is_some(), refused, "{host:?} {url}");
        if refused {
            assert!(refusal(&p).contains("a client could choose the auth service"));
        }
    }
}

#[test]
fn broken_external_auth_refuses() {
    for annotations in [
        vec![(n("auth-url"), "ftp://auth.test/")],
        vec![(n("auth-url"), "https:///no-host")],
        vec![(n("auth-url"), "https://auth.test/$unknown_var")],
        vec![(n("auth-signin"), "https://login.test/")],
        vec![
            (n("auth-url"), "https://auth.test/"),
            (n("auth-proxy-set-headers"), "shop/headers"),
        ],
        vec![
            (n("auth-url"), "https://auth.test/"),
            (n("auth-snippet"), "proxy_set_header X 1;"),
        ],
        vec![
            (n("auth-url"), "https://auth.test/"),
            (n("auth-response-headers"), "bad header"),
        ],
    ] {
        let refs: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert!(parse(&refs).refused().is_some(), "{annotations:?}");
    }
}

#[test]
fn client_certificate_auth_is_refused_unless_off() {
    let p = parse(&[
        (&n("auth-tls-secret"), "shop/ca"),
        (&n("auth-tls-verify-depth"), "2"),
    ]);
    assert!(refusal(&p).contains("client certificate authentication is not supported yet"));
    let p = parse(&[
        (&n("auth-tls-secret"), "shop/ca"),
        (&n("auth-tls-verify-client"), "off"),
    ]);
    assert!(p.refused().is_none());
    assert_eq!(p.warnings.len(), 2);
}

// === snippets ===

#[test]
fn access_carrying_snippets_refuse_unless_waived_and_auth_snippets_always() {
    for name in [
        "configuration-snippet",
        "server-snippet",
        "modsecurity-snippet",
    ] {
        let p = parse(&[(&n(name), "deny all;")]);
        assert!(refusal(&p).contains("never executed"), "{name}");
        let p = parse(&[(&n(name), "deny all;"), (&g("ignore-snippets"), "true")]);
        assert!(p.refused().is_none(), "{name} waived");
        assert_eq!(outcome(&p, &n(name)).0, Status::Ignored);
    }
    let p = parse(&[
        (&n("auth-url"), "https://a.test/"),
        (&n("auth-snippet"), "x"),
        (&g("ignore-snippets"), "true"),
    ]);
    assert!(p.refused().is_some());
    let p = parse(&[(&n("stream-snippet"), "server { listen 8000; }")]);
    assert!(p.refused().is_none());
    assert_eq!(p.warnings.len(), 1);
}

// === limits ===

#[test]
fn rate_limits_take_the_burst_multiplier() {
    let p = parse(&[
        (&n("limit-rps"), "10"),
        (&n("limit-rpm"), "300"),
        (&n("limit-burst-multiplier"), "3"),
        (&n("limit-connections"), "4"),
        (&n("limit-whitelist"), "10.0.0.0/8"),
    ]);
    let l = &p.policy.limits;
    let rps = l.rps.unwrap();
    assert_eq!(
        (rps.requests.get(), rps.per, rps.burst),
        (10, Duration::from_secs(1), 30)
    );
    let rpm = l.rpm.unwrap();
    assert_eq!(
        (rpm.requests.get(), rpm.per, rpm.burst),
        (300, Duration::from_secs(60), 900)
    );
    assert_eq!(l.connections.map(|c| c.get()), Some(4));
    assert!(
        l.exempt
            .as_ref()
            .unwrap()
            .contains("10.1.1.1".parse().unwrap())
    );
    let p = parse(&[(&n("limit-rps"), "5")]);
    assert_eq!(
        p.policy.limits.rps.unwrap().burst,
        25,
        "default multiplier 5"
    );
    let p = parse(&[(&n("limit-rps"), "lots")]);
    assert!(p.policy.limits.rps.is_none() && p.warnings.len() == 1);
}

#[test]
fn nginx_sizes_and_times_parse() {
    assert_eq!(parse_size("8m"), Ok(8 << 20));
    assert_eq!(parse_size("512K"), Ok(512 << 10));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    assert_eq!(parse_size("1000"), Ok(1000));
    assert_eq!(parse_size("0"), Ok(0));
    assert!(parse_size("8mb").is_err());
    assert!(parse_size("-1").is_err());
    assert!(parse_size("99999999999999999999g").is_err());
    assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("1.5").is_err());
    assert!(parse_duration("soon").is_err());
}

#[test]
fn body_size_zero_is_unlimited_and_compat_classes_default_to_1m() {
    assert_eq!(
        parse(&[(&n("proxy-body-size"), "0")])
            .policy
            .limits
            .body_size,
        None
    );
    assert_eq!(parse(&[]).policy.limits.body_size, None);
    let compat = parse_with(&[], &[], NGINX_DEFAULTS);
    assert_eq!(compat.policy.limits.body_size, Some(1 << 20));
    assert_eq!(compat.ssl_redirect, Some(true));
    let compat = parse_with(
        &[(&n("proxy-body-size"), "0"), (&n("ssl-redirect"), "false")],
        &[],
        NGINX_DEFAULTS,
    );
    assert_eq!(compat.policy.limits.body_size, None);
    assert_eq!(compat.ssl_redirect, Some(false));
    let p = parse(&[(&n("proxy-body-size"), "huge")]);
    assert!(p.warnings[0].contains("not an nginx size"));
}

#[test]
fn timeouts_are_seconds() {
    let p = parse(&[
        (&n("proxy-connect-timeout"), "5"),
        (&n("proxy-read-timeout"), "3600"),
        (&n("proxy-send-timeout"), "30s"),
    ]);
    let t = p.policy.limits.timeouts;
    assert_eq!(t.connect, Some(Duration::from_secs(5)));
    assert_eq!(t.read, Some(Duration::from_secs(3600)));
    assert_eq!(t.send, Some(Duration::from_secs(30)));
}

// === rewrites and redirects ===

#[test]
fn rewrite_target_and_use_regex() {
    let p = parse(&[(&n("rewrite-target"), "/$2"), (&n("use-regex"), "true")]);
    assert!(p.use_regex);
    assert_eq!(p.rewrite_target.as_ref().unwrap().to_string(), "/${2}");
    let p = parse(&[(&n("rewrite-target"), "/$unknown")]);
    assert!(p.rewrite_target.is_none() && p.warnings[0].contains("unknown variable"));
    let p = parse(&[
        (&n("app-root"), "/app1"),
        (&n("x-forwarded-prefix"), "/shop"),
        (&n("upstream-vhost"), "internal.shop"),
    ]);
    assert_eq!(p.policy.app_root.as_deref(), Some("/app1"));
    assert_eq!(
        p.policy.upstream.forwarded_prefix.as_ref().unwrap(),
        "/shop"
    );
    assert_eq!(p.policy.upstream.vhost.as_ref().unwrap(), "internal.shop");
    let p = parse(&[(&n("app-root"), "https://elsewhere.test/")]);
    assert!(p.policy.app_root.is_none() && p.warnings.len() == 1);
}

#[test]
fn redirect_codes_follow_ingress_nginx() {
    let p = parse(&[(&n("permanent-redirect"), "https://new.test/")]);
    let r = p.policy.redirect.as_ref().unwrap();
    assert_eq!(r.code, 301);
    assert!(matches!(&r.to, RedirectTo::Url(u) if u == "https://new.test/"));
    let p = parse(&[
        (&n("permanent-redirect"), "https://new.test/"),
        (&n("permanent-redirect-code"), "308"),
    ]);
    assert_eq!(p.policy.redirect.as_ref().unwrap().code, 308);
    let p = parse(&[
        (&n("permanent-redirect"), "https://new.test/"),
        (&n("permanent-redirect-code"), "200"),
    ]);
    assert_eq!(p.policy.redirect.as_ref().unwrap().code, 301);
    assert!(p.warnings[0].contains("expected 300 to 308"));
    let p = parse(&[
        (&n("permanent-redirect"), "https://p.test/"),
        (&n("temporal-redirect"), "https://t.test/"),
    ]);
    let r = p.policy.redirect.as_ref().unwrap();
    assert_eq!(r.code, 302);
    assert!(matches!(&r.to, RedirectTo::Url(u) if u == "https://t.test/"));
    assert_eq!(outcome(&p, &n("permanent-redirect")).0, Status::Ignored);
    let p = parse(&[(&n("temporal-redirect"), "/relative")]);
    assert!(p.policy.redirect.is_none());
}

#[test]
fn ssl_redirect_flags() {
    let p = parse(&[
        (&n("ssl-redirect"), "false"),
        (&n("force-ssl-redirect"), "true"),
        (&n("from-to-www-redirect"), "true"),
    ]);
    assert_eq!(p.ssl_redirect, Some(false));
    assert!(p.force_ssl_redirect && p.from_to_www);
    // The message a user of gatehouse.dev/ssl-redirect has always seen.
    let p = parse(&[(&g("ssl-redirect"), "yes")]);
    assert_eq!(
        p.warnings,
        ["annotation gatehouse.dev/ssl-redirect=\"yes\" ignored: expected \"true\" or \"false\""]
    );
}

// === CORS ===

#[test]
fn cors_defaults_and_values() {
    let p = parse(&[(&n("enable-cors"), "true")]);
    let c = p.policy.cors.as_ref().unwrap();
    assert!(matches!(c.allow_origin, CorsOrigins::Any));
    assert_eq!(c.allow_methods, "GET, PUT, POST, DELETE, PATCH, OPTIONS");
    assert!(c.allow_credentials);
    assert_eq!(c.max_age, "1728000");
    let p = parse(&[
        (&n("enable-cors"), "true"),
        (
            &n("cors-allow-origin"),
            "https://*.shop.test, http://localhost:3000",
        ),
        (&n("cors-allow-methods"), "GET,POST"),
        (&n("cors-allow-headers"), "X-Api-Key, Content-Type"),
        (&n("cors-expose-headers"), "X-Total"),
        (&n("cors-allow-credentials"), "false"),
        (&n("cors-max-age"), "600"),
    ]);
    let c = p.policy.cors.as_ref().unwrap();
    assert!(matches!(&c.allow_origin, CorsOrigins::List(l) if l.len() == 2 && l[0].wildcard));
    assert_eq!(c.allow_methods, "GET, POST");
    assert_eq!(c.allow_headers, "X-Api-Key, Content-Type");
    assert_eq!(c.expose_headers.as_ref().unwrap(), "X-Total");
    assert!(!c.allow_credentials);
    assert_eq!(c.max_age, "600");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let p = parse(&[
        (&n("enable-cors"), "true"),
        (&n("cors-allow-origin"), "javascript:alert(1)"),
    ]);
    assert!(matches!(
        p.policy.cors.as_ref().unwrap().allow_origin,
        CorsOrigins::Any
    ));
    assert_eq!(p.warnings.len(), 1);
    let p = parse(&[(&n("cors-allow-origin"), "https://a.test")]);
    assert!(p.policy.cors.is_none() && p.warnings[0].contains("needs enable-cors"));
}

// === canary, affinity, hashing ===

#[test]
fn canary_rules_are_typed_and_other_annotations_are_the_main_ingress() {
    let p = parse(&[
        (&n("canary"), "true"),
        (&n("canary-weight"), "10"),
        (&n("canary-by-header"), "X-Canary"),
        (&n("canary-by-header-pattern"), "^(eu|us)$"),
        (&n("canary-by-cookie"), "canary"),
        (&n("whitelist-source-range"), "not-even-valid"),
        (&n("upstream-hash-by"), "$remote_addr"),
    ]);
    let (rules, upstream) = p.canary.as_ref().unwrap();
    assert_eq!((rules.weight, rules.weight_total), (10, 100));
    assert!(matches!(&rules.header, Some((h, HeaderMatch::Pattern(_))) if h == "x-canary"));
    assert_eq!(rules.cookie.as_deref(), Some("canary"));
    assert!(
        upstream.hash_by.is_some(),
        "a canary keeps its own upstream-hash-by"
    );
    assert!(p.policy.upstream.hash_by.is_none());
    assert!(
        p.refused().is_none(),
        "a canary's access annotations are the main Ingress's"
    );
    assert!(
        outcome(&p, &n("whitelist-source-range"))
            .1
            .contains("main Ingress")
    );
    let p = parse(&[
        (&n("canary"), "true"),
        (&n("canary-weight"), "30"),
        (&n("canary-weight-total"), "1000"),
    ]);
    assert_eq!(p.canary.as_ref().unwrap().0.weight_total, 1000);
    let p = parse(&[(&n("canary-weight"), "30")]);
    assert!(
        p.canary.is_none() && p.warnings[0].contains("canary rules need"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn cookie_affinity_and_hash_by() {
    let p = parse(&[
        (&n("affinity"), "cookie"),
        (&n("affinity-mode"), "persistent"),
        (&n("session-cookie-name"), "route"),
        (&n("session-cookie-max-age"), "172800"),
        (&n("session-cookie-expires"), "172800"),
        (&n("session-cookie-path"), "/shop"),
        (&n("session-cookie-samesite"), "Strict"),
        (&n("session-cookie-secure"), "true"),
    ]);
    let a = p.policy.upstream.affinity.as_ref().unwrap();
    assert_eq!(&*a.name, "route");
    assert!(a.persistent && a.secure && a.canary_sticky);
    assert_eq!((a.max_age, a.expires), (Some(172800), Some(172800)));
    assert_eq!(a.path.as_deref(), Some("/shop"));
    assert_eq!(a.same_site, Some(crate::snapshot::policy::SameSite::Strict));
    let p = parse(&[(&n("session-cookie-name"), "x")]);
    assert!(p.policy.upstream.affinity.is_none() && p.warnings[0].contains("needs affinity"));
    let p = parse(&[(&n("affinity"), "cookie"), (&n("use-regex"), "true")]);
    let a = p.policy.upstream.affinity.as_ref().unwrap();
    assert_eq!(a.path.as_deref(), Some("/"));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("session-cookie-path is not set")),
        "{:?}",
        p.warnings
    );
    let p = parse(&[(&n("upstream-hash-by"), "$request_uri$host")]);
    let vars: Vec<String> = p
        .policy
        .upstream
        .hash_by
        .as_ref()
        .unwrap()
        .vars()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(vars, ["request_uri", "host"]);
    let p = parse(&[(&n("upstream-hash-by"), "constant")]);
    assert!(p.policy.upstream.hash_by.is_none() && p.warnings.len() == 1);
}

#[test]
fn backend_protocols_and_server_names() {
    let p = parse(&[(&n("backend-protocol"), "GRPC")]);
    assert_eq!(p.protocol, Some(BackendProtocol::Grpc));
    let p = parse(&[
        (&n("backend-protocol"), "HTTPS"),
        (&n("proxy-ssl-name"), "Origin.Internal"),
    ]);
    assert_eq!(p.tls_server_name.as_deref(), Some("origin.internal"));
    let p = parse(&[(&n("backend-protocol"), "FCGI")]);
    assert_eq!(p.protocol, None);
    assert!(p.warnings[0].contains("FCGI"));
    let p = parse(&[(&n("backend-protocol"), "GRPCS")]);
    assert_eq!(p.protocol, Some(BackendProtocol::Grpcs));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn custom_errors_and_default_backend() {
    let p = parse(&[
        (&n("custom-http-errors"), "503, 404,404"),
        (&n("default-backend"), "errors"),
    ]);
    assert_eq!(p.policy.errors.as_ref().unwrap().intercept, [404, 503]);
    assert_eq!(p.default_backend.as_deref(), Some("errors"));
    let p = parse(&[(&n("custom-http-errors"), "200")]);
    assert!(p.policy.errors.is_none() && p.warnings.len() == 1);
}

#[test]
fn behaviour_flags_are_honoured_when_they_say_what_gatehouse_does() {
    let p = parse(&[
        (&n("proxy-buffering"), "off"),
        (&n("proxy-request-buffering"), "off"),
        (&n("proxy-http-version"), "1.1"),
    ]);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let p = parse(&[(&n("proxy-buffering"), "on")]);
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn markdown_table_has_a_row_per_annotation() {
    let table = markdown_table();
    assert_eq!(table.lines().count(), ANNOTATIONS.len() + 2);
    assert!(table.contains("| `gatehouse.dev/whitelist-source-range`<br>`nginx.ingress.kubernetes.io/whitelist-source-range` |"));
}

/// The migration guide's annotation table is exactly [`markdown_table`]. After changing the
/// table, `GATEHOUSE_BLESS=1 cargo test --lib migration_guide` writes it into the guide.
#[test]
fn migration_guide_table_is_the_table_in_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("MIGRATING.md");
    let text = std::fs::read_to_string(&path).expect("MIGRATING.md");
    let (begin, end) = ("<!-- annotations:begin -->\n", "<!-- annotations:end -->");
    let start = text.find(begin).expect("begin marker") + begin.len();
    let stop = text.find(end).expect("end marker");
    let rendered = markdown_table();
    if std::env::var_os("GATEHOUSE_BLESS").is_some() {
        let updated = format!("{}{rendered}{}", &text[..start], &text[stop..]);
        std::fs::write(&path, updated).expect("write MIGRATING.md");
        return;
    }
    assert!(
        text[start..stop] == rendered,
        "MIGRATING.md's annotation table differs from the code: run GATEHOUSE_BLESS=1 cargo test --lib migration_guide"
    );
}
