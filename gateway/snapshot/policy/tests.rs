//! The pure parts of the route policy: CIDR sets, client addresses behind proxies, htpasswd
//! hashes (made by real tools: openssl, Python's bcrypt and crypt), templates, rewrites,
//! canary choices, CORS origins.

use std::net::IpAddr;

use http::HeaderValue;

use super::htpasswd::basic_credentials;
use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn hv(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("header value")
}

// === CIDR sets ===

#[test]
fn cidr_set_takes_networks_and_bare_addresses_of_both_families() {
    let set = CidrSet::parse("10.0.0.0/24, 172.10.0.1,2001:db8::/32").unwrap();
    assert!(set.contains(ip("10.0.0.255")));
    assert!(!set.contains(ip("10.0.1.0")));
    assert!(set.contains(ip("172.10.0.1")));
    assert!(!set.contains(ip("172.10.0.2")));
    assert!(set.contains(ip("2001:db8:1::7")));
    // A dual-stack listener reports IPv4 clients as IPv4-mapped IPv6.
    assert!(set.contains(ip("::ffff:10.0.0.9")));
    assert_eq!(set.to_string(), "10.0.0.0/24,172.10.0.1/32,2001:db8::/32");
}

#[test]
fn cidr_host_bits_are_ignored_as_ingress_nginx_does() {
    let set = CidrSet::parse("192.168.1.77/24").unwrap();
    assert!(set.contains(ip("192.168.1.1")));
}

#[test]
fn cidr_errors_name_the_bad_entry() {
    assert_eq!(
        CidrSet::parse("10.0.0.0/8,10.0.0.0/33").unwrap_err(),
        "\"10.0.0.0/33\" is not an IP address or CIDR"
    );
    assert!(
        CidrSet::parse("example.com")
            .unwrap_err()
            .contains("example.com")
    );
    assert!(CidrSet::parse(" , ").is_err());
    // Leading zeros (octal to some tools) are refused in both forms, as Go's parser does
    // (found by fuzzing: the CIDR form took them).
    for bad in [
        "010.0.0.0/8",
        "10.0.0.02/32",
        "01.0.0.0/24",
        "10.0.0.010",
        "10.0.0.0/08",
    ] {
        assert!(CidrSet::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(
        CidrSet::parse("10.0.0.0/0,::/0").unwrap().to_string(),
        "0.0.0.0/0,::/0"
    );
}

// === client address ===

#[test]
fn untrusted_peer_is_the_client_whatever_it_forwards() {
    let trusted = CidrSet::parse("10.0.0.0/8").unwrap();
    let xff = hv("1.2.3.4");
    assert_eq!(
        client_addr(ip("203.0.113.9"), [&xff], &trusted),
        ip("203.0.113.9")
    );
    // Trusting no one: the peer, always.
    assert_eq!(
        client_addr(ip("10.0.0.1"), [&xff], &CidrSet::default()),
        ip("10.0.0.1")
    );
}

#[test]
fn trusted_peer_gives_the_rightmost_untrusted_forwarded_address() {
    let trusted = CidrSet::parse("10.0.0.0/8").unwrap();
    // A client cannot pick its address: what it wrote itself is left of the real one.
    let xff = hv("6.6.6.6, 198.51.100.7, 10.0.0.5");
    assert_eq!(
        client_addr(ip("10.0.0.1"), [&xff], &trusted),
        ip("198.51.100.7")
    );
    // Several header lines are one list, in order.
    let (a, b) = (hv("198.51.100.7"), hv("10.1.1.1"));
    assert_eq!(
        client_addr(ip("10.0.0.1"), [&a, &b], &trusted),
        ip("198.51.100.7")
    );
    // Ports and brackets as some proxies write them.
    let xff = hv("[2001:db8::1]:443, 198.51.100.8:5555");
    assert_eq!(
        client_addr(ip("10.0.0.1"), [&xff], &trusted),
        ip("198.51.100.8")
    );
}

#[test]
fn all_trusted_hops_give_the_leftmost_and_garbage_stops_at_the_last_trusted() {
    let trusted = CidrSet::parse("10.0.0.0/8").unwrap();
    let xff = hv("10.9.9.9, 10.0.0.5");
    assert_eq!(
        client_addr(ip("10.0.0.1"), [&xff], &trusted),
        ip("10.9.9.9")
    );
    let xff = hv("unknown, 10.0.0.5");
    assert_eq!(
        client_addr(ip("10.0.0.1"), [&xff], &trusted),
        ip("10.0.0.5")
    );
    assert_eq!(client_addr(ip("10.0.0.1"), [], &trusted), ip("10.0.0.1"));
}

// === htpasswd ===

/// `correct horse` hashed by real tools, one line per format nginx accepts.
const HTPASSWD: &str = "\
# made with openssl passwd, Python bcrypt and crypt
apr1:$apr1$hTQb2xg1$PoZngGx9aPMxyg/6qNUCm0
md5:$1$5pZSV9va$R8/guohGvjnjJIGkE6MZK0
sha256:$5$saltsalt$myjXcpMpE2Ofk7fj9hqyNYSn6lmWG4Mqnjx.KIRRr4/
sha512:$6$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5Vvwp2scFtv/uamSo5z0
bcrypt2b:$2b$05$DhJvYDo98r7HsQbUTIs0BuI5E8b14HZOmvcICMCmCYE94HT2WA4MG
bcrypt2a:$2a$05$RznfVqYQQABK0dUWLJNVBe2CMs2rDwD1FnKyxc.zgTcvcTMYh6TSy
bcrypt2y:$2y$05$DhJvYDo98r7HsQbUTIs0BuI5E8b14HZOmvcICMCmCYE94HT2WA4MG
des:abhfCpXqd4GrI
sha:{SHA}L55TUjtiq8FBorTWAZ0jy6g129A=
ssha:{SSHA}mPU6p7FshMqDKQlDoage4flllc1OYUNsNA==
plain:{PLAIN}correct horse
";

#[test]
fn every_hash_format_nginx_accepts_verifies_the_right_password_only() {
    let (users, problems) = Htpasswd::parse_file(HTPASSWD);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(users.len(), 11);
    for user in [
        "apr1", "md5", "sha256", "sha512", "bcrypt2b", "bcrypt2a", "bcrypt2y", "des", "sha",
        "ssha", "plain",
    ] {
        assert!(
            users.verify(user, b"correct horse"),
            "{user} with the right password"
        );
        assert!(
            !users.verify(user, b"Correct horse"),
            "{user} with a wrong password"
        );
        assert!(!users.verify(user, b""), "{user} with no password");
    }
    assert!(!users.verify("nobody", b"correct horse"));
    // Traditional crypt reads 8 characters, in nginx as here: one more reason to use bcrypt.
    assert!(users.verify("des", b"correct horsf"));
    assert!(!users.verify("bcrypt2b", b"correct horsf"));
}

#[test]
fn apr1_matches_apaches_published_example_and_md5_crypt_matches_pwhash() {
    // The example of Apache's htpasswd documentation lineage used by many libraries.
    let (users, _) = Htpasswd::parse_file("user:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00");
    assert!(users.verify("user", b"password"));
    let (users, _) = Htpasswd::parse_file("user:$1$5pZSV9va$azfrPr6af3Fc7dLblQXVa0");
    assert!(users.verify("user", b"password"));
}

#[test]
fn unusable_lines_are_reported_and_leave_only_that_user_out() {
    let text = "ok:{PLAIN}pw\nbroken:$apr1$short\nnohash\n:{PLAIN}x\nyes:$y$j9T$abc$def\nok:{PLAIN}second\r\n";
    let (users, problems) = Htpasswd::parse_file(text);
    assert_eq!(users.len(), 1);
    assert!(users.verify("ok", b"pw"), "the first line of a user wins");
    assert!(!users.verify("ok", b"second"));
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(
        problems[0].starts_with("line 2 (user \"broken\")"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("line 3: expected user:hash"),
        "{problems:?}"
    );
    assert!(problems[3].contains("yescrypt"), "{problems:?}");
}

#[test]
fn auth_map_keys_are_users_and_values_hashes() {
    let (users, problems) = Htpasswd::from_map([
        ("alice", "$apr1$hTQb2xg1$PoZngGx9aPMxyg/6qNUCm0\n"),
        ("bob", "not-a-hash"),
    ]);
    assert!(users.verify("alice", b"correct horse"));
    assert!(!users.verify("bob", b"not-a-hash"));
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("key \"bob\""));
}

#[test]
fn hashes_whose_every_check_would_burn_seconds_of_cpu_are_refused() {
    let salt22 = "DhJvYDo98r7HsQbUTIs0Bu";
    let hash31 = "I5E8b14HZOmvcICMCmCYE94HT2WA4MG";
    let text = format!(
        "slow:$2b$18${salt22}{hash31}\n\
         ok:$2b$17${salt22}{hash31}\n\
         rounds:$6$rounds=999999999$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5Vvwp2scFtv/uamSo5z0\n"
    );
    let (users, problems) = Htpasswd::parse_file(&text);
    assert_eq!(users.len(), 1, "{problems:?}");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("line 1") && problems[0].contains("bcrypt cost 18 is over 17"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("line 3") && problems[1].contains("rounds=999999999"),
        "{problems:?}"
    );
    // Refused users are left out: never let in.
    assert!(!users.verify("slow", b"correct horse"));
}

#[test]
fn hashes_stay_out_of_debug_output() {
    let (users, _) = Htpasswd::parse_file(HTPASSWD);
    let shown = format!("{users:?}");
    assert!(
        shown.contains("apr1") && !shown.contains("PoZngGx9"),
        "{shown}"
    );
}

#[test]
fn basic_credentials_are_read_from_the_authorization_header() {
    // "alice:open sesame" and a password with a colon.
    let (user, pw) = basic_credentials(&hv("Basic YWxpY2U6b3BlbiBzZXNhbWU=")).unwrap();
    assert_eq!(
        (user.as_str(), pw.as_slice()),
        ("alice", &b"open sesame"[..])
    );
    let (user, pw) = basic_credentials(&hv("basic YTpiOmM=")).unwrap();
    assert_eq!((user.as_str(), pw.as_slice()), ("a", &b"b:c"[..]));
    assert!(basic_credentials(&hv("Bearer abc")).is_none());
    assert!(basic_credentials(&hv("Basic !!!")).is_none());
    assert!(basic_credentials(&hv("Basic Ym9i")).is_none(), "no colon");
}

// === templates and rewrites ===

#[test]
fn template_knows_nginx_variables_and_refuses_unknown_ones() {
    let t = Template::parse(
        "$request_uri$host-${remote_addr}x$http_x_api_key$cookie_sid$arg_page",
        false,
    )
    .unwrap();
    let vars: Vec<String> = t.vars().map(|v| v.to_string()).collect();
    assert_eq!(
        vars,
        [
            "request_uri",
            "host",
            "remote_addr",
            "http_x_api_key",
            "cookie_sid",
            "arg_page"
        ]
    );
    assert!(matches!(t.vars().nth(3), Some(Var::Header(h)) if h == "x-api-key"));
    let filled = t.render(|v| format!("<{v}>"));
    assert_eq!(
        filled,
        "<request_uri><host>-<remote_addr>x<http_x_api_key><cookie_sid><arg_page>"
    );
    assert_eq!(
        Template::parse("$nope", false).unwrap_err(),
        "unknown variable $nope"
    );
    assert!(
        Template::parse("/$1", false)
            .unwrap_err()
            .contains("rewrite-target")
    );
    assert!(Template::parse("a$", false).unwrap_err().contains("lone"));
    assert!(
        Template::parse("${host", false)
            .unwrap_err()
            .contains("unclosed")
    );
    assert!(Template::parse("plain", false).unwrap().is_literal());
}

fn rewrite(path_regex: &str, target: &str) -> PathRewrite {
    PathRewrite {
        regex: crate::routing::path_regex(path_regex).unwrap(),
        target: Template::parse(target, true).unwrap(),
    }
}

#[test]
fn rewrite_target_fills_capture_groups_as_ingress_nginx_documents() {
    // ingress-nginx's rewrite example: path /something(/|$)(.*), target /$2.
    let r = rewrite("/something(/|$)(.*)", "/$2");
    let no_vars = |_: &Var| String::new();
    assert_eq!(r.apply("/something", None, no_vars).as_deref(), Some("/"));
    assert_eq!(r.apply("/something/", None, no_vars).as_deref(), Some("/"));
    assert_eq!(
        r.apply("/something/new", None, no_vars).as_deref(),
        Some("/new")
    );
    // Case-insensitive, like `location ~*`.
    assert_eq!(
        r.apply("/SomeThing/x", None, no_vars).as_deref(),
        Some("/x")
    );
    assert_eq!(r.apply("/other", None, no_vars), None);
}

#[test]
fn rewrite_keeps_the_query_like_nginx_rewrite() {
    let no_vars = |_: &Var| String::new();
    let r = rewrite("/api/(.*)", "/v2/$1");
    assert_eq!(
        r.apply("/api/users", Some("page=2"), no_vars).as_deref(),
        Some("/v2/users?page=2")
    );
    let r = rewrite("/api/(.*)", "/v2/$1?from=api");
    assert_eq!(
        r.apply("/api/users", Some("page=2"), no_vars).as_deref(),
        Some("/v2/users?from=api&page=2")
    );
    // A trailing `?` drops the request's query.
    let r = rewrite("/api/(.*)", "/v2/$1?");
    assert_eq!(
        r.apply("/api/users", Some("page=2"), no_vars).as_deref(),
        Some("/v2/users")
    );
    // A plain target replaces the whole path (rewrite-target: / on a prefix).
    let r = rewrite("/app", "/");
    assert_eq!(
        r.apply("/app/deep/page", None, no_vars).as_deref(),
        Some("/")
    );
    // Other variables are the caller's; missing captures are empty.
    let r = rewrite("/u/(.*)", "/$host/$1$3");
    assert_eq!(
        r.apply("/u/x", None, |_| "h.test".into()).as_deref(),
        Some("/h.test/x")
    );
}

// === canary ===

fn rules() -> CanaryRules {
    CanaryRules {
        header: Some((
            http::HeaderName::from_static("x-canary"),
            HeaderMatch::AlwaysNever,
        )),
        cookie: Some("canary".into()),
        weight: 10,
        weight_total: 100,
    }
}

#[test]
fn canary_precedence_is_header_then_cookie_then_weight() {
    let r = rules();
    let (always, never, other) = (hv("always"), hv("never"), hv("maybe"));
    assert!(
        r.choose(Some(&always), Some("never"), 99),
        "header always wins over cookie and weight"
    );
    assert!(
        !r.choose(Some(&never), Some("always"), 0),
        "header never wins too"
    );
    assert!(
        r.choose(Some(&other), Some("always"), 99),
        "another header value falls through to the cookie"
    );
    assert!(
        !r.choose(None, Some("never"), 0),
        "cookie never beats the weight"
    );
    assert!(r.choose(None, Some("x"), 9), "then the weight: 10 of 100");
    assert!(!r.choose(None, None, 10));
}

#[test]
fn canary_header_value_and_pattern() {
    let mut r = rules();
    r.weight = 0;
    r.header = Some((
        http::HeaderName::from_static("x-region"),
        HeaderMatch::Value(hv("eu")),
    ));
    assert!(r.choose(Some(&hv("eu")), None, 0));
    assert!(
        !r.choose(Some(&hv("always")), None, 0),
        "a value rule knows no always"
    );
    r.header = Some((
        http::HeaderName::from_static("x-region"),
        HeaderMatch::Pattern(regex::Regex::new("^(eu|us)-").unwrap()),
    ));
    assert!(r.choose(Some(&hv("us-east")), None, 0));
    assert!(!r.choose(Some(&hv("ap-south")), None, 0));
}

#[test]
fn canary_weight_zero_and_total() {
    let r = CanaryRules {
        weight: 0,
        weight_total: 100,
        ..CanaryRules::default()
    };
    assert!((0..100).all(|roll| !r.choose(None, None, roll)));
    let r = CanaryRules {
        weight: 1,
        weight_total: 1000,
        ..CanaryRules::default()
    };
    assert_eq!(
        (0..1000).filter(|&roll| r.choose(None, None, roll)).count(),
        1
    );
}

// === CORS and access ===

#[test]
fn cors_origin_list_echoes_matching_origins_only() {
    let origins = CorsOrigins::List(vec![
        OriginPattern {
            scheme: "https".into(),
            host: "example.com".into(),
            wildcard: true,
            port: None,
        },
        OriginPattern {
            scheme: "http".into(),
            host: "localhost".into(),
            wildcard: false,
            port: Some(3000),
        },
    ]);
    let allow = |o: &str| {
        origins
            .allow(Some(&hv(o)))
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        allow("https://app.example.com").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(allow("https://a.b.example.com"), None, "one label only");
    assert_eq!(allow("https://example.com"), None);
    assert_eq!(allow("http://app.example.com"), None, "scheme matters");
    assert_eq!(
        allow("http://localhost:3000").as_deref(),
        Some("http://localhost:3000")
    );
    assert_eq!(allow("http://localhost:3001"), None);
    assert_eq!(CorsOrigins::Any.allow(None).unwrap(), "*");
    assert_eq!(origins.allow(None), None);
}

#[test]
fn deny_is_checked_before_allow() {
    let rules = AccessRules {
        allow: Some(CidrSet::parse("10.0.0.0/8").unwrap()),
        deny: Some(CidrSet::parse("10.0.0.7").unwrap()),
        ..AccessRules::default()
    };
    assert!(rules.source_allowed(ip("10.1.2.3")));
    assert!(!rules.source_allowed(ip("10.0.0.7")));
    assert!(!rules.source_allowed(ip("192.0.2.1")));
    assert!(AccessRules::default().source_allowed(ip("192.0.2.1")));
}

#[test]
fn basic_auth_checks_the_authorization_header() {
    let (users, _) = Htpasswd::parse_file("alice:{PLAIN}open sesame");
    let auth = BasicAuth {
        challenge: hv("Basic realm=\"x\""),
        users,
    };
    assert!(auth.check_header(&hv("Basic YWxpY2U6b3BlbiBzZXNhbWU=")));
    assert!(!auth.check_header(&hv("Basic YWxpY2U6b3Blbg==")));
}

#[test]
fn refused_policy_and_empty_policy() {
    assert!(RoutePolicy::default().is_empty());
    let refused = RoutePolicy::refused("no");
    assert!(!refused.is_empty());
    assert!(matches!(refused.access, Access::Refused(ref r) if &**r == "no"));
}

#[test]
fn backend_protocols_parse_in_any_case_and_map_to_transports() {
    use crate::snapshot::UpstreamProtocol as P;
    assert_eq!(
        BackendProtocol::parse("grpc").and_then(BackendProtocol::transport),
        Some(P::H2c)
    );
    assert_eq!(
        BackendProtocol::parse("HTTPS").and_then(BackendProtocol::transport),
        Some(P::Https)
    );
    assert_eq!(
        BackendProtocol::parse("h2c").and_then(BackendProtocol::transport),
        Some(P::H2c)
    );
    assert_eq!(
        BackendProtocol::parse("GRPCS").and_then(BackendProtocol::transport),
        Some(P::H2Tls)
    );
    assert_eq!(BackendProtocol::parse("AJP"), None);
}
