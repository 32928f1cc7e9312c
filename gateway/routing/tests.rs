use super::*;

fn table(routes: &[(&str, PathMatch, &'static str)]) -> RouteTable<&'static str> {
    let mut t = RouteTable::default();
    for (host, path, name) in routes {
        let host = HostMatch::parse(Some(host)).expect("valid host");
        t.host_mut(&host)
            .insert(path.clone(), *name)
            .expect("no duplicate");
    }
    t
}

#[test]
fn prefix_matches_whole_elements_only() {
    let t = table(&[("a.test", PathMatch::prefix("/aaa/bbb"), "bbb")]);
    assert_eq!(t.lookup("a.test", "/aaa/bbb"), Some(&"bbb"));
    assert_eq!(t.lookup("a.test", "/aaa/bbb/"), Some(&"bbb"));
    assert_eq!(t.lookup("a.test", "/aaa/bbb/ccc"), Some(&"bbb"));
    assert_eq!(t.lookup("a.test", "/aaa/bbbxyz"), None);
    assert_eq!(t.lookup("a.test", "/aaa"), None);
}

#[test]
fn prefix_trailing_slash_in_rule_is_ignored() {
    let t = table(&[("a.test", PathMatch::prefix("/foo/"), "foo")]);
    assert_eq!(t.lookup("a.test", "/foo"), Some(&"foo"));
    assert_eq!(t.lookup("a.test", "/foo/x"), Some(&"foo"));
}

#[test]
fn prefix_is_case_sensitive() {
    let t = table(&[("a.test", PathMatch::prefix("/Foo"), "foo")]);
    assert_eq!(t.lookup("a.test", "/foo"), None);
    assert_eq!(t.lookup("a.test", "/Foo/bar"), Some(&"foo"));
}

#[test]
fn root_prefix_matches_every_path() {
    let t = table(&[("a.test", PathMatch::prefix("/"), "root")]);
    for path in ["/", "/x", "/x/y/", "//"] {
        assert_eq!(t.lookup("a.test", path), Some(&"root"), "{path}");
    }
}

#[test]
fn exact_requires_identical_path() {
    let t = table(&[("a.test", PathMatch::exact("/foo"), "exact")]);
    assert_eq!(t.lookup("a.test", "/foo"), Some(&"exact"));
    assert_eq!(t.lookup("a.test", "/foo/"), None);
    assert_eq!(t.lookup("a.test", "/FOO"), None);
    assert_eq!(t.lookup("a.test", "/foo/bar"), None);
}

#[test]
fn longest_prefix_wins() {
    let t = table(&[
        ("a.test", PathMatch::prefix("/"), "root"),
        ("a.test", PathMatch::prefix("/api"), "api"),
        ("a.test", PathMatch::prefix("/api/v2"), "v2"),
    ]);
    assert_eq!(t.lookup("a.test", "/api/v2/users"), Some(&"v2"));
    assert_eq!(t.lookup("a.test", "/api/v1/users"), Some(&"api"));
    assert_eq!(t.lookup("a.test", "/apiv2"), Some(&"root"));
}

#[test]
fn exact_beats_prefix_of_equal_length() {
    let t = table(&[
        ("a.test", PathMatch::prefix("/foo"), "prefix"),
        ("a.test", PathMatch::exact("/foo"), "exact"),
    ]);
    assert_eq!(t.lookup("a.test", "/foo"), Some(&"exact"));
    assert_eq!(t.lookup("a.test", "/foo/"), Some(&"prefix"));
}

#[test]
fn wildcard_covers_exactly_one_label() {
    let t = table(&[("*.example.com", PathMatch::prefix("/"), "wild")]);
    assert_eq!(t.lookup("foo.example.com", "/"), Some(&"wild"));
    assert_eq!(t.lookup("bar.foo.example.com", "/"), None);
    assert_eq!(t.lookup("example.com", "/"), None);
}

/// Found writing the `routing` fuzz target's reference: `.example.com` has an empty first
/// label, not one label more than `example.com`, so the wildcard must not take it (the rules
/// with no host do).
#[test]
fn wildcard_does_not_cover_an_empty_label() {
    let mut t = table(&[("*.example.com", PathMatch::prefix("/"), "wild")]);
    t.host_mut(&HostMatch::Any)
        .insert(PathMatch::prefix("/"), "any")
        .unwrap();
    assert_eq!(t.lookup(".example.com", "/"), Some(&"any"));
    assert_eq!(t.lookup(".example.com:8080", "/"), Some(&"any"));
    assert_eq!(t.lookup("a.example.com", "/"), Some(&"wild"));
}

#[test]
fn exact_host_beats_wildcard() {
    let t = table(&[
        ("*.example.com", PathMatch::prefix("/"), "wild"),
        ("foo.example.com", PathMatch::prefix("/app"), "exact"),
    ]);
    assert_eq!(t.lookup("foo.example.com", "/app"), Some(&"exact"));
    // The exact host's rules are the only ones for it: no fall-through to the wildcard.
    assert_eq!(t.lookup("foo.example.com", "/other"), None);
    assert_eq!(t.lookup("bar.example.com", "/other"), Some(&"wild"));
}

#[test]
fn rules_without_host_serve_every_other_host() {
    let mut t = table(&[("a.test", PathMatch::prefix("/"), "a")]);
    t.host_mut(&HostMatch::Any)
        .insert(PathMatch::prefix("/"), "any")
        .unwrap();
    assert_eq!(t.lookup("a.test", "/"), Some(&"a"));
    assert_eq!(t.lookup("b.test", "/"), Some(&"any"));
    assert_eq!(t.lookup("10.0.0.1:8080", "/"), Some(&"any"));
}

#[test]
fn host_is_normalised() {
    let t = table(&[("a.test", PathMatch::prefix("/"), "a")]);
    assert_eq!(t.lookup("A.Test", "/"), Some(&"a"));
    assert_eq!(t.lookup("a.test.", "/"), Some(&"a"));
    assert_eq!(t.lookup("a.test:8443", "/"), Some(&"a"));
    assert_eq!(normalize_host("[::1]:80"), "[::1]");
    assert_eq!(normalize_host("[::1]"), "[::1]");
}

#[test]
fn default_backend_when_nothing_matches() {
    let mut t = table(&[("a.test", PathMatch::prefix("/app"), "app")]);
    t.set_default("default").unwrap();
    assert_eq!(t.lookup("a.test", "/other"), Some(&"default"));
    assert_eq!(t.lookup("unknown.test", "/"), Some(&"default"));
    assert_eq!(t.set_default("second"), Err(&"default"));
}

#[test]
fn duplicate_route_is_refused_and_first_kept() {
    let mut t = table(&[("a.test", PathMatch::prefix("/x"), "first")]);
    let host = HostMatch::parse(Some("a.test")).unwrap();
    assert_eq!(
        t.host_mut(&host).insert(PathMatch::prefix("/x/"), "second"),
        Err(&"first")
    );
    assert_eq!(t.lookup("a.test", "/x"), Some(&"first"));
}

#[test]
fn invalid_hosts_are_rejected_with_reason() {
    for bad in [
        "foo.*.com",
        "*",
        "a..b",
        "-a.com",
        "under_score.com",
        "*.*.com",
    ] {
        let err = HostMatch::parse(Some(bad)).expect_err(bad);
        assert!(err.contains(bad), "{err}");
    }
    assert_eq!(
        HostMatch::parse(Some("Foo.COM.")).unwrap(),
        HostMatch::Exact("foo.com".into())
    );
    assert_eq!(HostMatch::parse(None).unwrap(), HostMatch::Any);
}

// === ingress-nginx regex mode ===

fn regex_host(paths: &[(&str, &'static str)]) -> HostRoutes<&'static str> {
    let (ordered, bad) = regex_routes(paths.to_vec());
    assert!(bad.is_empty());
    let mut h = HostRoutes::default();
    h.set_regex(ordered);
    h
}

#[test]
fn regex_paths_are_tried_longest_first_as_ingress_nginx_orders_them() {
    // ingress-nginx's path-priority example: /foo/bar, /foo/bar/ and /foo/bar/(.+).
    let h = regex_host(&[
        ("/foo/bar", "service1"),
        ("/foo/bar/", "service2"),
        ("/foo/bar/(.+)", "service3"),
    ]);
    assert_eq!(h.lookup("/foo/bar/1"), Some(&"service3"));
    assert_eq!(h.lookup("/foo/bar/"), Some(&"service2"));
    assert_eq!(h.lookup("/foo/bar"), Some(&"service1"));
    assert!(h.is_regex());
}

#[test]
fn regex_first_match_wins_even_over_a_more_exact_path() {
    // ingress-nginx's warning example: /foo/bar/[A-Z0-9]{3} is longer, so it is tried first.
    let h = regex_host(&[
        ("/foo/bar/bar", "exact-looking"),
        ("/foo/bar/[A-Z0-9]{3}", "pattern"),
    ]);
    assert_eq!(h.lookup("/foo/bar/bar"), Some(&"pattern"));
}

#[test]
fn regex_paths_are_case_insensitive_prefixes_anchored_at_the_start() {
    let h = regex_host(&[("/api", "api")]);
    assert_eq!(h.lookup("/API/v1"), Some(&"api"));
    assert_eq!(
        h.lookup("/apiary"),
        Some(&"api"),
        "a string prefix, not whole elements"
    );
    assert_eq!(h.lookup("/x/api"), None, "anchored at the start");
}

#[test]
fn equal_length_regex_paths_keep_their_order() {
    let h = regex_host(&[("/a.", "first"), ("/ab", "second")]);
    assert_eq!(h.lookup("/ab"), Some(&"first"));
}

#[test]
fn invalid_regex_paths_are_returned_with_the_reason() {
    let (ok, bad) = regex_routes(vec![("/ok", 1), ("/broken(", 2)]);
    assert_eq!(ok.len(), 1);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 2);
    assert!(
        bad[0]
            .1
            .contains("\"/broken(\" is not a valid regular expression"),
        "{}",
        bad[0].1
    );
    // A regex too big to compile is refused, not built.
    assert!(path_regex("(a{1000}){1000}").is_err());
}

#[test]
fn a_host_without_regex_mode_never_runs_a_regex() {
    let t = table(&[("a.test", PathMatch::prefix("/api.*"), "literal")]);
    assert_eq!(t.lookup("a.test", "/api.*/x"), Some(&"literal"));
    assert_eq!(t.lookup("a.test", "/apix"), None);
}
