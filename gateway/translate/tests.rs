//! Ingress semantics, on objects parsed from the YAML a user would `kubectl apply`.

use super::*;
use crate::sources::manifests::parse_documents;

use crate::test_util::yaml::{
    Endpoint, docs, endpoint, endpoint_slice, ingress, ingress_class, not_ready, ready, resource,
    service, site, static_site, svc, svc_named, terminating,
};

const OURS: &str = "gatehouse.dev/ingress-controller";

fn objects<S: AsRef<str>>(parts: &[S]) -> Objects {
    let mut objects = Objects::default();
    for object in parse_documents(&docs(parts)).expect("valid manifests") {
        objects.insert(object);
    }
    objects
}

fn build<S: AsRef<str>>(parts: &[S]) -> Snapshot {
    build_with(parts, &Settings::default())
}

fn build_with<S: AsRef<str>>(parts: &[S], settings: &Settings) -> Snapshot {
    translate(&objects(parts), settings, &mut Memo::default())
}

/// Service `name` (port `http` 80) with one ready endpoint `ip:8080`.
fn backend_service(name: &str, ip: &str) -> String {
    docs(&[
        service("default", name, &[("http", 80)]),
        endpoint_slice("default", name, name, &[("http", 8080)], &[ready(ip)]),
    ])
}

/// Services `a`, `b`, `c` with endpoints 10.0.0.1, .2, .3.
fn abc() -> Vec<String> {
    vec![
        backend_service("a", "10.0.0.1"),
        backend_service("b", "10.0.0.2"),
        backend_service("c", "10.0.0.3"),
    ]
}

fn with(mut base: Vec<String>, more: impl IntoIterator<Item = String>) -> Vec<String> {
    base.extend(more);
    base
}

/// Where a request goes, in words: a Service's name, `static:NS/NAME`, `503` (a route with an
/// unusable backend) or `404` (no route).
fn target(snapshot: &Snapshot, host: &str, path: &str) -> String {
    match snapshot.routes.lookup(host, path).map(|r| &r.backend) {
        None => "404".into(),
        Some(Backend::Service(s)) => s.service.name.clone(),
        Some(Backend::Static(s)) => format!("static:{}", s.site.key),
        Some(Backend::Unavailable { .. }) => "503".into(),
    }
}

/// The Ingress that owns the route a request takes.
fn route_owner(snapshot: &Snapshot, host: &str, path: &str) -> String {
    snapshot
        .routes
        .lookup(host, path)
        .map(|r| r.ingress.to_string())
        .unwrap_or_default()
}

fn endpoints(snapshot: &Snapshot, host: &str, path: &str) -> Vec<String> {
    match snapshot.routes.lookup(host, path).map(|r| &r.backend) {
        Some(Backend::Service(s)) => s.endpoints.iter().map(|e| e.to_string()).collect(),
        other => panic!("not a Service route: {other:?}"),
    }
}

fn warnings(snapshot: &Snapshot) -> Vec<String> {
    snapshot.warnings.iter().map(|w| w.to_string()).collect()
}

fn assert_warning(snapshot: &Snapshot, parts: &[&str]) {
    let all = warnings(snapshot);
    assert!(
        all.iter().any(|w| parts.iter().all(|p| w.contains(p))),
        "no warning containing {parts:?} in {all:#?}"
    );
}

fn owned(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .owned_ingresses
        .iter()
        .map(|k| k.to_string())
        .collect()
}

// === ownership ===

#[test]
fn ingress_naming_our_class_is_served_without_an_ingress_class_object() {
    let s = build(&with(
        abc(),
        [ingress("web").prefix("app.test", "/", svc("a", 80)).yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/"), "a");
    assert_eq!(owned(&s), ["default/web"]);
}

#[test]
fn ingress_naming_another_class_is_ignored() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .class(Some("nginx"))
            .prefix("app.test", "/", svc("a", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/"), "404");
    assert!(owned(&s).is_empty());
    assert!(warnings(&s).is_empty(), "{:?}", warnings(&s));
}

#[test]
fn ingress_class_object_decides_ownership_by_its_controller() {
    let s = build(&with(
        abc(),
        [
            ingress_class("edge", OURS, false),
            ingress_class("gatehouse", "example.com/other", false),
            ingress("mine")
                .class(Some("edge"))
                .prefix("mine.test", "/", svc("a", 80))
                .yaml(),
            ingress("theirs")
                .prefix("theirs.test", "/", svc("b", 80))
                .yaml(),
        ],
    ));
    assert_eq!(target(&s, "mine.test", "/"), "a");
    // Named like our default class, but that IngressClass belongs to another controller.
    assert_eq!(target(&s, "theirs.test", "/"), "404");
    assert_eq!(owned(&s), ["default/mine"]);
}

#[test]
fn ingress_without_class_is_ignored_by_default() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .class(None)
            .prefix("app.test", "/", svc("a", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/"), "404");
}

#[test]
fn ingress_without_class_is_served_when_our_class_is_the_default() {
    let classless = ingress("web")
        .class(None)
        .prefix("app.test", "/", svc("a", 80))
        .yaml();
    let s = build(&with(
        abc(),
        [ingress_class("gatehouse", OURS, true), classless.clone()],
    ));
    assert_eq!(target(&s, "app.test", "/"), "a");

    // The annotation must say "true"; any other value is not a default.
    let not_default = ingress_class("gatehouse", OURS, false).replace(
        "metadata:\n",
        "metadata:\n  annotations: {\"ingressclass.kubernetes.io/is-default-class\": \"false\"}\n",
    );
    let s = build(&with(abc(), [not_default, classless]));
    assert_eq!(target(&s, "app.test", "/"), "404");
}

#[test]
fn default_class_of_another_controller_does_not_give_us_classless_ingresses() {
    let s = build(&with(
        abc(),
        [
            ingress_class("nginx", "k8s.io/ingress-nginx", true),
            ingress("web")
                .class(None)
                .prefix("app.test", "/", svc("a", 80))
                .yaml(),
        ],
    ));
    assert_eq!(target(&s, "app.test", "/"), "404");
}

#[test]
fn watch_ingress_without_class_takes_classless_ingresses_only() {
    let settings = Settings {
        watch_ingress_without_class: true,
        ..Settings::default()
    };
    let s = build_with(
        &with(
            abc(),
            [
                ingress("classless")
                    .class(None)
                    .prefix("app.test", "/", svc("a", 80))
                    .yaml(),
                ingress("other")
                    .class(Some("nginx"))
                    .prefix("other.test", "/", svc("b", 80))
                    .yaml(),
            ],
        ),
        &settings,
    );
    assert_eq!(target(&s, "app.test", "/"), "a");
    assert_eq!(target(&s, "other.test", "/"), "404");
}

#[test]
fn legacy_class_annotation_is_honoured() {
    let s = build(&with(
        abc(),
        [
            ingress("legacy")
                .class(None)
                .annotation(LEGACY_CLASS_ANNOTATION, "gatehouse")
                .prefix("legacy.test", "/", svc("a", 80))
                .yaml(),
            ingress("other")
                .class(None)
                .annotation(LEGACY_CLASS_ANNOTATION, "nginx")
                .prefix("other.test", "/", svc("b", 80))
                .yaml(),
        ],
    ));
    assert_eq!(target(&s, "legacy.test", "/"), "a");
    assert_eq!(target(&s, "other.test", "/"), "404");
}

#[test]
fn ingress_class_name_field_beats_the_legacy_annotation() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .class(Some("nginx"))
            .annotation(LEGACY_CLASS_ANNOTATION, "gatehouse")
            .prefix("app.test", "/", svc("a", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/"), "404");
}

#[test]
fn configured_class_name_replaces_the_default_one() {
    let settings = Settings {
        ingress_class: "edge".into(),
        ..Settings::default()
    };
    let parts = with(
        abc(),
        [
            ingress("edge")
                .class(Some("edge"))
                .prefix("edge.test", "/", svc("a", 80))
                .yaml(),
            ingress("default-name")
                .prefix("gh.test", "/", svc("b", 80))
                .yaml(),
        ],
    );
    let s = build_with(&parts, &settings);
    assert_eq!(target(&s, "edge.test", "/"), "a");
    assert_eq!(target(&s, "gh.test", "/"), "404");
}

// === hosts ===

#[test]
fn exact_host_serves_only_that_host_in_any_case() {
    let s = build(&with(
        abc(),
        [ingress("web").prefix("app.test", "/", svc("a", 80)).yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/x"), "a");
    assert_eq!(target(&s, "APP.Test:8080", "/x"), "a");
    assert_eq!(target(&s, "other.test", "/x"), "404");
    assert_eq!(target(&s, "sub.app.test", "/x"), "404");
}

#[test]
fn wildcard_host_covers_exactly_one_label_and_exact_host_beats_it() {
    let s = build(&with(
        abc(),
        [
            ingress("wild")
                .prefix("*.example.test", "/", svc("a", 80))
                .yaml(),
            ingress("exact")
                .prefix("www.example.test", "/", svc("b", 80))
                .yaml(),
        ],
    ));
    assert_eq!(target(&s, "foo.example.test", "/"), "a");
    assert_eq!(target(&s, "www.example.test", "/"), "b");
    assert_eq!(target(&s, "a.b.example.test", "/"), "404");
    assert_eq!(target(&s, "example.test", "/"), "404");
}

#[test]
fn rule_without_host_serves_every_host_without_rules_of_its_own() {
    let s = build(&with(
        abc(),
        [
            ingress("any").prefix("", "/", svc("a", 80)).yaml(),
            ingress("named")
                .prefix("app.test", "/api", svc("b", 80))
                .yaml(),
        ],
    ));
    assert_eq!(target(&s, "whatever.test", "/"), "a");
    assert_eq!(target(&s, "10.1.2.3", "/x"), "a");
    assert_eq!(target(&s, "", "/x"), "a");
    assert_eq!(target(&s, "app.test", "/api/v1"), "b");
}

#[test]
fn invalid_host_is_skipped_with_a_warning_and_other_rules_still_serve() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .prefix("foo.*.test", "/", svc("a", 80))
            .prefix("good.test", "/", svc("b", 80))
            .yaml()],
    ));
    assert_warning(
        &s,
        &["Ingress default/web", "foo.*.test", "not a valid DNS name"],
    );
    assert_eq!(target(&s, "good.test", "/"), "b");
}

// === paths ===

#[test]
fn exact_path_matches_only_the_identical_path() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .exact("app.test", "/foo", svc("a", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/foo"), "a");
    for miss in ["/foo/", "/FOO", "/foo/bar", "/fo", "/foobar"] {
        assert_eq!(target(&s, "app.test", miss), "404", "{miss}");
    }
}

#[test]
fn prefix_matches_whole_elements_case_sensitively_ignoring_trailing_slash() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .prefix("app.test", "/aaa/bbb/", svc("a", 80))
            .yaml()],
    ));
    for hit in ["/aaa/bbb", "/aaa/bbb/", "/aaa/bbb/ccc"] {
        assert_eq!(target(&s, "app.test", hit), "a", "{hit}");
    }
    for miss in ["/aaa/bbbxyz", "/aaa", "/AAA/bbb", "/aaa/bb"] {
        assert_eq!(target(&s, "app.test", miss), "404", "{miss}");
    }
}

#[test]
fn implementation_specific_matches_like_prefix() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .path("app.test", "/api", "ImplementationSpecific", svc("a", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/api"), "a");
    assert_eq!(target(&s, "app.test", "/api/v1"), "a");
    assert_eq!(target(&s, "app.test", "/apiv1"), "404");
}

#[test]
fn longest_match_wins_across_ingresses_of_one_host() {
    let s = build(&with(
        abc(),
        [
            ingress("root").prefix("app.test", "/", svc("a", 80)).yaml(),
            ingress("api")
                .prefix("app.test", "/api", svc("b", 80))
                .yaml(),
            ingress("v2")
                .prefix("app.test", "/api/v2", svc("c", 80))
                .yaml(),
        ],
    ));
    assert_eq!(target(&s, "app.test", "/api/v2/users"), "c");
    assert_eq!(target(&s, "app.test", "/api/v1/users"), "b");
    assert_eq!(target(&s, "app.test", "/apiv2"), "a");
    assert_eq!(route_owner(&s, "app.test", "/api/v2"), "default/v2");
}

#[test]
fn exact_beats_prefix_of_equal_length() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .prefix("app.test", "/foo", svc("a", 80))
            .exact("app.test", "/foo", svc("b", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/foo"), "b");
    assert_eq!(target(&s, "app.test", "/foo/"), "a");
    assert_eq!(target(&s, "app.test", "/foo/x"), "a");
    assert!(warnings(&s).is_empty(), "{:?}", warnings(&s));
}

#[test]
fn unusable_paths_are_skipped_with_a_warning_each() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .path("app.test", "/regex.*", "Regex", svc("a", 80))
            .path("app.test", "relative", "Prefix", svc("a", 80))
            .prefix("app.test", "/ok", svc("b", 80))
            .yaml()],
    ));
    assert_warning(&s, &["default/web", "unknown pathType \"Regex\""]);
    assert_warning(
        &s,
        &["default/web", "\"relative\"", "must start with \"/\""],
    );
    assert_eq!(target(&s, "app.test", "/ok"), "b");
    assert_eq!(target(&s, "app.test", "/regex.x"), "404");
}

// === default backend ===

#[test]
fn default_backend_serves_what_no_rule_matches() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .default_backend(svc("a", 80))
            .prefix("app.test", "/api", svc("b", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/api"), "b");
    assert_eq!(target(&s, "app.test", "/other"), "a");
    assert_eq!(target(&s, "unknown.test", "/"), "a");
}

#[test]
fn second_default_backend_loses_to_the_older_one_with_a_warning() {
    let s = build(&with(
        abc(),
        [
            ingress("new")
                .created("2024-06-01T00:00:00Z")
                .default_backend(svc("b", 80))
                .yaml(),
            ingress("old")
                .created("2023-01-01T00:00:00Z")
                .default_backend(svc("a", 80))
                .yaml(),
        ],
    ));
    assert_eq!(target(&s, "any.test", "/"), "a");
    assert_warning(
        &s,
        &[
            "Ingress default/new",
            "defaultBackend ignored",
            "default/old",
        ],
    );
}

// === several Ingresses, conflicts ===

#[test]
fn ingresses_sharing_a_host_merge_their_paths() {
    let s = build(&with(
        abc(),
        [
            ingress("front")
                .prefix("app.test", "/", svc("a", 80))
                .yaml(),
            ingress("api")
                .namespace("default")
                .prefix("app.test", "/api", svc("b", 80))
                .yaml(),
        ],
    ));
    assert_eq!(target(&s, "app.test", "/index.html"), "a");
    assert_eq!(target(&s, "app.test", "/api/x"), "b");
    assert!(warnings(&s).is_empty(), "{:?}", warnings(&s));
}

#[test]
fn conflicting_path_goes_to_the_oldest_ingress_with_a_warning_for_the_other() {
    let parts = with(
        abc(),
        [
            ingress("newer")
                .created("2024-06-01T00:00:00Z")
                .prefix("app.test", "/api", svc("b", 80))
                .yaml(),
            ingress("older")
                .created("2024-01-01T00:00:00Z")
                .prefix("app.test", "/api/", svc("a", 80))
                .yaml(),
        ],
    );
    let s = build(&parts);
    assert_eq!(target(&s, "app.test", "/api"), "a");
    assert_warning(
        &s,
        &[
            "Ingress default/newer",
            "\"/api\"",
            "app.test",
            "default/older",
        ],
    );
    // The same objects in another order decide the same way.
    let reversed: Vec<String> = parts.into_iter().rev().collect();
    assert_eq!(target(&build(&reversed), "app.test", "/api"), "a");
}

#[test]
fn conflict_between_equally_old_ingresses_goes_by_namespace_then_name() {
    let at = "2024-01-01T00:00:00Z";
    let mut parts = vec![
        backend_service("a", "10.0.0.1"),
        docs(&[
            service("zeta", "a", &[("http", 80)]),
            endpoint_slice("zeta", "a", "a", &[("http", 8080)], &[ready("10.0.9.9")]),
        ]),
    ];
    parts.extend([
        ingress("a-first")
            .namespace("zeta")
            .created(at)
            .prefix("app.test", "/", svc("a", 80))
            .yaml(),
        ingress("z-last")
            .created(at)
            .prefix("app.test", "/", svc("a", 80))
            .yaml(),
        ingress("b-second")
            .created(at)
            .prefix("app.test", "/", svc("a", 80))
            .yaml(),
    ]);
    let s = build(&parts);
    assert_eq!(route_owner(&s, "app.test", "/"), "default/b-second");
    assert_eq!(
        owned(&s),
        ["default/b-second", "default/z-last", "zeta/a-first"]
    );
    assert_warning(&s, &["Ingress default/z-last", "default/b-second"]);
    assert_warning(&s, &["Ingress zeta/a-first", "default/b-second"]);
}

#[test]
fn ingress_without_creation_timestamp_loses_to_one_with() {
    let s = build(&with(
        abc(),
        [
            ingress("aaa-handwritten")
                .prefix("app.test", "/", svc("b", 80))
                .yaml(),
            ingress("zzz-applied")
                .created("2024-01-01T00:00:00Z")
                .prefix("app.test", "/", svc("a", 80))
                .yaml(),
        ],
    ));
    assert_eq!(target(&s, "app.test", "/"), "a");
}

#[test]
fn duplicate_path_within_one_ingress_keeps_the_first() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .prefix("app.test", "/x", svc("a", 80))
            .prefix("app.test", "/x/", svc("b", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "app.test", "/x"), "a");
    assert_warning(&s, &["default/web", "an earlier path of this Ingress"]);
}

// === Services and endpoints ===

#[test]
fn service_port_by_number_resolves_to_the_endpoint_slice_port_of_the_same_name() {
    let s = build(&[
        service("default", "web", &[("http", 80), ("metrics", 9000)]),
        endpoint_slice(
            "default",
            "web-1",
            "web",
            &[("http", 8080), ("metrics", 9100)],
            &[ready("10.0.0.1")],
        ),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
        ingress("metrics")
            .prefix("metrics.test", "/", svc("web", 9000))
            .yaml(),
    ]);
    assert_eq!(endpoints(&s, "app.test", "/"), ["10.0.0.1:8080"]);
    assert_eq!(endpoints(&s, "metrics.test", "/"), ["10.0.0.1:9100"]);
}

#[test]
fn service_port_by_name_resolves_through_endpoint_slices() {
    let s = build(&[
        service("default", "web", &[("http", 80), ("admin", 81)]),
        endpoint_slice(
            "default",
            "web-1",
            "web",
            &[("http", 8080), ("admin", 8081)],
            &[ready("10.0.0.1")],
        ),
        ingress("web")
            .prefix("app.test", "/", svc_named("web", "admin"))
            .yaml(),
    ]);
    assert_eq!(endpoints(&s, "app.test", "/"), ["10.0.0.1:8081"]);
}

#[test]
fn unnamed_service_port_matches_the_unnamed_slice_port() {
    let s = build(&[
        service("default", "web", &[("", 80)]),
        endpoint_slice(
            "default",
            "web-1",
            "web",
            &[("", 3000)],
            &[ready("10.0.0.1")],
        ),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
    ]);
    assert_eq!(endpoints(&s, "app.test", "/"), ["10.0.0.1:3000"]);
}

#[test]
fn only_ready_endpoints_of_all_slices_are_used_once_each() {
    let s = build(&[
        service("default", "web", &[("http", 80)]),
        endpoint_slice(
            "default",
            "web-1",
            "web",
            &[("http", 8080)],
            &[
                ready("10.0.0.2"),
                not_ready("10.0.0.3"),
                terminating("10.0.0.4", true),
                // Conditions left out: ready means ready (Kubernetes: nil is true).
                endpoint("10.0.0.5", None, None, None),
            ],
        ),
        endpoint_slice(
            "default",
            "web-2",
            "web",
            &[("http", 8080)],
            &[ready("10.0.0.1"), ready("10.0.0.2")],
        ),
        // Another Service's slice in the same namespace is not ours.
        endpoint_slice(
            "default",
            "other-1",
            "other",
            &[("http", 8080)],
            &[ready("10.0.0.9")],
        ),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
    ]);
    assert_eq!(
        endpoints(&s, "app.test", "/"),
        ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.5:8080"]
    );
}

#[test]
fn serving_terminating_endpoints_are_used_only_when_none_is_ready() {
    let terminating_only: [Endpoint; 3] = [
        terminating("10.0.0.1", true),
        terminating("10.0.0.2", false),
        not_ready("10.0.0.3"),
    ];
    let s = build(&[
        service("default", "web", &[("http", 80)]),
        endpoint_slice(
            "default",
            "web-1",
            "web",
            &[("http", 8080)],
            &terminating_only,
        ),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
    ]);
    assert_eq!(endpoints(&s, "app.test", "/"), ["10.0.0.1:8080"]);
}

#[test]
fn service_without_ready_endpoints_routes_to_an_empty_endpoint_list() {
    let s = build(&[
        service("default", "web", &[("http", 80)]),
        endpoint_slice(
            "default",
            "web-1",
            "web",
            &[("http", 8080)],
            &[not_ready("10.0.0.1")],
        ),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
    ]);
    assert!(endpoints(&s, "app.test", "/").is_empty());
}

#[test]
fn backend_service_is_looked_up_in_the_ingress_namespace() {
    let s = build(&[
        service("team-a", "web", &[("http", 80)]),
        endpoint_slice(
            "team-a",
            "web-1",
            "web",
            &[("http", 8080)],
            &[ready("10.0.1.1")],
        ),
        service("default", "web", &[("http", 80)]),
        endpoint_slice(
            "default",
            "web-1",
            "web",
            &[("http", 8080)],
            &[ready("10.0.0.1")],
        ),
        ingress("web")
            .namespace("team-a")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
    ]);
    assert_eq!(endpoints(&s, "app.test", "/"), ["10.0.1.1:8080"]);
}

#[test]
fn missing_service_gives_a_warning_and_503_while_other_routes_keep_working() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .prefix("app.test", "/missing", svc("nope", 80))
            .prefix("app.test", "/", svc("a", 80))
            .yaml()],
    ));
    assert_warning(
        &s,
        &["Ingress default/web", "Service default/nope not found"],
    );
    assert_eq!(target(&s, "app.test", "/missing/x"), "503");
    assert_eq!(target(&s, "app.test", "/x"), "a");
}

#[test]
fn missing_service_port_gives_a_warning_and_503() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .prefix("app.test", "/num", svc("a", 81))
            .prefix("app.test", "/name", svc_named("a", "grpc"))
            .yaml()],
    ));
    assert_warning(&s, &["default/web", "Service default/a has no port 81"]);
    assert_warning(&s, &["default/web", "Service default/a has no port grpc"]);
    assert_eq!(target(&s, "app.test", "/num"), "503");
    assert_eq!(target(&s, "app.test", "/name"), "503");
}

#[test]
fn external_name_service_is_refused_with_a_warning() {
    let external = service("default", "ext", &[("http", 80)]).replace(
        "spec:\n",
        "spec:\n  type: ExternalName\n  externalName: example.com\n",
    );
    let s = build(&[
        external,
        ingress("web")
            .prefix("app.test", "/", svc("ext", 80))
            .yaml(),
    ]);
    assert_warning(&s, &["default/web", "ExternalName"]);
    assert_eq!(target(&s, "app.test", "/"), "503");
}

#[test]
fn backend_protocol_annotation_selects_h2c_and_rejects_unknown_values() {
    let s = build(&with(
        abc(),
        [
            ingress("grpc")
                .annotation(BACKEND_PROTOCOL_ANNOTATION, "h2c")
                .prefix("grpc.test", "/", svc("a", 80))
                .yaml(),
            ingress("bad")
                .annotation(BACKEND_PROTOCOL_ANNOTATION, "spdy")
                .prefix("bad.test", "/", svc("b", 80))
                .yaml(),
        ],
    ));
    let protocol = |host: &str| match s.routes.lookup(host, "/").map(|r| &r.backend) {
        Some(Backend::Service(b)) => b.protocol,
        other => panic!("{other:?}"),
    };
    assert_eq!(protocol("grpc.test"), UpstreamProtocol::H2c);
    assert_eq!(protocol("bad.test"), UpstreamProtocol::Http);
    assert_warning(
        &s,
        &["default/bad", BACKEND_PROTOCOL_ANNOTATION, "\"spdy\""],
    );
}

// === StaticSite backends ===

#[test]
fn static_site_backend_serves_from_a_root_relative_to_the_manifests_directory() {
    let settings = Settings {
        base_dir: Some("/srv/manifests".into()),
        ..Settings::default()
    };
    let s = build_with(
        &[
            static_site("default", "docs", "site", &[]),
            ingress("web").prefix("docs.test", "/", site("docs")).yaml(),
        ],
        &settings,
    );
    assert_eq!(target(&s, "docs.test", "/"), "static:default/docs");
    let Some(Backend::Static(route)) = s.routes.lookup("docs.test", "/").map(|r| &r.backend) else {
        panic!("static route");
    };
    assert_eq!(route.site.root, std::path::Path::new("/srv/manifests/site"));
}

#[test]
fn missing_or_invalid_static_site_gives_a_warning_and_503() {
    let s = build(&[
        static_site(
            "default",
            "escape",
            "/srv/site",
            &[("index", "../../etc/passwd")],
        ),
        ingress("web")
            .prefix("app.test", "/missing", site("nope"))
            .prefix("app.test", "/bad", site("escape"))
            .prefix("app.test", "/cm", resource("", "ConfigMap", "x"))
            .yaml(),
    ]);
    assert_warning(
        &s,
        &["Ingress default/web", "StaticSite default/nope not found"],
    );
    assert_warning(
        &s,
        &[
            "StaticSite default/escape",
            "spec.index",
            "inside the site's root",
        ],
    );
    assert_warning(
        &s,
        &[
            "Ingress default/web",
            "StaticSite default/escape is invalid",
        ],
    );
    assert_warning(&s, &["Ingress default/web", "ConfigMap", "not supported"]);
    for path in ["/missing", "/bad", "/cm"] {
        assert_eq!(target(&s, "app.test", path), "503", "{path}");
    }
}

#[test]
fn routes_dump_names_hosts_paths_and_backends() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .prefix("app.test", "/", svc("a", 80))
            .exact("app.test", "/health", svc("b", 80))
            .default_backend(svc("c", 80))
            .yaml()],
    ));
    let dump = serde_json::to_value(describe_routes(&s)).expect("json");
    assert_eq!(
        dump["app.test"]["Prefix /"]["backend"]["service"],
        "default/a"
    );
    assert_eq!(
        dump["app.test"]["Exact /health"]["backend"]["endpoints"][0],
        "10.0.0.2:8080"
    );
    assert_eq!(dump["(default backend)"]["/"]["ingress"], "default/web");
}

// === incremental translate ===

/// A small deterministic generator (xorshift), so a failing sequence reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'p, T>(&mut self, items: &'p [T]) -> &'p T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

// === annotations: policy, refusal, canaries, regex hosts ===

const NG: &str = "nginx.ingress.kubernetes.io/";

fn ng(name: &str) -> String {
    format!("{NG}{name}")
}

fn route<'s>(snapshot: &'s Snapshot, host: &str, path: &str) -> &'s Arc<Route> {
    snapshot
        .routes
        .lookup(host, path)
        .unwrap_or_else(|| panic!("no route for {host}{path}"))
}

/// An Opaque Secret with string data.
fn opaque_secret(name: &str, data: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: Opaque\nstringData:\n"
    );
    for (k, v) in data {
        out.push_str(&format!("  {k:?}: {v:?}\n"));
    }
    out
}

#[test]
fn a_route_without_annotations_carries_no_policy() {
    let s = build(&with(
        abc(),
        [ingress("web").prefix("app.test", "/", svc("a", 80)).yaml()],
    ));
    let r = route(&s, "app.test", "/");
    assert!(r.policy.is_none() && r.rewrite.is_none() && r.canary.is_none());
}

#[test]
fn nginx_and_gatehouse_source_ranges_restrict_the_routes_alike() {
    use crate::snapshot::policy::Access;
    let s = build(&with(
        abc(),
        [
            ingress("n")
                .annotation(&ng("whitelist-source-range"), "10.0.0.0/8")
                .prefix("n.test", "/", svc("a", 80))
                .yaml(),
            ingress("g")
                .annotation("gatehouse.dev/whitelist-source-range", "10.0.0.0/8")
                .prefix("g.test", "/", svc("a", 80))
                .yaml(),
        ],
    ));
    for host in ["n.test", "g.test"] {
        let policy = route(&s, host, "/").policy.as_ref().expect("policy");
        let Access::Restricted(rules) = &policy.access else {
            panic!("{:?}", policy.access)
        };
        assert!(rules.source_allowed("10.1.2.3".parse().unwrap()));
        assert!(!rules.source_allowed("127.0.0.1".parse().unwrap()));
    }
    assert!(s.warnings.is_empty(), "{:?}", warnings(&s));
}

#[test]
fn a_broken_access_annotation_refuses_every_route_of_its_ingress_only() {
    let s = build(&with(
        abc(),
        [
            ingress("locked")
                .annotation(&ng("auth-type"), "basic")
                .annotation(&ng("auth-secret"), "missing-users")
                .prefix("app.test", "/admin", svc("a", 80))
                .prefix("other.test", "/", svc("a", 80))
                .default_backend(svc("a", 80))
                .yaml(),
            ingress("open").prefix("app.test", "/", svc("b", 80)).yaml(),
        ],
    ));
    let reason = route(&s, "app.test", "/admin").refused().expect("refused");
    assert_eq!(
        reason,
        "Ingress default/locked is not served: nginx.ingress.kubernetes.io/auth-secret: Secret default/missing-users not found; nginx.ingress.kubernetes.io/auth-type: basic authentication is not usable (see the other auth-* annotations)"
    );
    assert!(route(&s, "other.test", "/").refused().is_some());
    assert!(
        s.routes
            .lookup("nowhere.test", "/")
            .unwrap()
            .refused()
            .is_some(),
        "its default backend too"
    );
    assert!(
        route(&s, "app.test", "/").refused().is_none(),
        "another Ingress of the host is served"
    );
    assert_warning(
        &s,
        &[
            "Ingress default/locked",
            "auth-secret",
            "refused",
            "Secret default/missing-users not found",
        ],
    );
    assert_eq!(
        describe_routes(&s)["app.test"]["Prefix /admin"]["policy"]["refused"],
        reason
    );
}

#[test]
fn basic_auth_secret_changes_are_picked_up_by_an_incremental_translate() {
    let apr1 = "alice:$apr1$hTQb2xg1$PoZngGx9aPMxyg/6qNUCm0\n";
    let mut objects = objects(&with(
        abc(),
        [
            ingress("web")
                .annotation(&ng("auth-type"), "basic")
                .annotation(&ng("auth-secret"), "users")
                .prefix("app.test", "/", svc("a", 80))
                .yaml(),
            opaque_secret("users", &[("auth", apr1)]),
        ],
    ));
    let settings = Settings::default();
    let mut memo = Memo::default();
    let first = translate(&objects, &settings, &mut memo);
    let basic = |s: &Snapshot| {
        use crate::snapshot::policy::Access;
        match &route(s, "app.test", "/").policy.as_ref().unwrap().access {
            Access::Restricted(r) => r.basic.as_ref().unwrap().users.len(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(basic(&first), 1);
    objects.insert(object(&opaque_secret(
        "users",
        &[("auth", &format!("{apr1}bob:{{PLAIN}}x\n"))],
    )));
    let second = translate(&objects, &settings, &mut memo);
    assert_eq!(basic(&second), 2, "the changed Secret is read again");
    objects.secrets.remove(&ObjectKey::new("default", "users"));
    let third = translate(&objects, &settings, &mut memo);
    assert!(
        route(&third, "app.test", "/").refused().is_some(),
        "a removed Secret refuses the routes"
    );
}

#[test]
fn a_canary_ingress_attaches_to_the_main_route_instead_of_conflicting() {
    let s = build(&with(
        abc(),
        [
            ingress("main")
                .created("2024-01-01T00:00:00Z")
                .prefix("shop.test", "/", svc("a", 80))
                .yaml(),
            ingress("canary")
                .created("2024-01-02T00:00:00Z")
                .annotation(&ng("canary"), "true")
                .annotation(&ng("canary-weight"), "10")
                .annotation(&ng("canary-by-header"), "X-Canary")
                .prefix("shop.test", "/", svc("b", 80))
                .prefix("shop.test", "/new", svc("b", 80))
                .yaml(),
        ],
    ));
    let r = route(&s, "shop.test", "/");
    assert_eq!(
        target(&s, "shop.test", "/"),
        "a",
        "the main Ingress keeps the route"
    );
    let canary = r.canary.as_ref().expect("canary attached");
    assert_eq!(canary.ingress.to_string(), "default/canary");
    assert!(matches!(&canary.backend, Backend::Service(b) if b.service.name == "b"));
    assert_eq!((canary.rules.weight, canary.rules.weight_total), (10, 100));
    assert_eq!(
        target(&s, "shop.test", "/new"),
        "a",
        "the canary's own path is not served"
    );
    assert_eq!(
        warnings(&s),
        [
            "Ingress default/canary: canary path \"/new\" on host shop.test not served: no main Ingress has this host and path"
        ]
    );
    let described = &describe_routes(&s)["shop.test"]["Prefix /"]["canary"];
    assert_eq!(described["weight"], "10/100");
    assert_eq!(described["header"], "x-canary");
}

#[test]
fn a_canary_without_main_ingress_serves_nothing_and_says_so() {
    let s = build(&with(
        abc(),
        [ingress("canary")
            .annotation(&ng("canary"), "true")
            .prefix("shop.test", "/", svc("b", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "shop.test", "/"), "404");
    assert_warning(&s, &["default/canary", "no main Ingress"]);
}

#[test]
fn a_second_canary_for_a_path_is_ignored_with_a_warning() {
    let canary = |name: &str, created: &str| {
        ingress(name)
            .created(created)
            .annotation(&ng("canary"), "true")
            .annotation(&ng("canary-weight"), "50")
            .prefix("shop.test", "/", svc("b", 80))
            .yaml()
    };
    let s = build(&with(
        abc(),
        [
            ingress("main")
                .created("2024-01-01T00:00:00Z")
                .prefix("shop.test", "/", svc("a", 80))
                .yaml(),
            canary("c1", "2024-01-02T00:00:00Z"),
            canary("c2", "2024-01-03T00:00:00Z"),
        ],
    ));
    assert_eq!(
        route(&s, "shop.test", "/")
            .canary
            .as_ref()
            .unwrap()
            .ingress
            .to_string(),
        "default/c1"
    );
    assert_warning(
        &s,
        &["default/c2", "Ingress default/c1 is already its canary"],
    );
}

#[test]
fn rewrite_target_puts_the_whole_host_in_regex_mode_longest_path_first() {
    // ingress-nginx's path-priority example: two Ingresses for one host, one with rewrite-target.
    let s = build(&with(
        abc(),
        [
            ingress("test-ingress-1")
                .created("2024-01-01T00:00:00Z")
                .path(
                    "test.com",
                    "/foo/bar",
                    "ImplementationSpecific",
                    svc("a", 80),
                )
                .path(
                    "test.com",
                    "/foo/bar/",
                    "ImplementationSpecific",
                    svc("b", 80),
                )
                .yaml(),
            ingress("test-ingress-2")
                .created("2024-01-02T00:00:00Z")
                .annotation(&ng("rewrite-target"), "/$1")
                .path(
                    "test.com",
                    "/foo/bar/(.+)",
                    "ImplementationSpecific",
                    svc("c", 80),
                )
                .yaml(),
            ingress("elsewhere")
                .prefix("plain.test", "/foo", svc("a", 80))
                .yaml(),
        ],
    ));
    // "/foo/bar" and "/foo/bar/" are one Prefix match: the second is a conflict as before.
    assert_warning(
        &s,
        &["default/test-ingress-1", "\"/foo/bar/\"", "earlier path"],
    );
    assert_eq!(target(&s, "test.com", "/foo/bar/1"), "c");
    assert_eq!(target(&s, "test.com", "/FOO/BAR"), "a", "case-insensitive");
    assert_eq!(
        target(&s, "test.com", "/foo/barn"),
        "a",
        "a regex prefix, not whole elements"
    );
    let r = route(&s, "test.com", "/foo/bar/1");
    let rewritten = r
        .rewrite
        .as_ref()
        .expect("rewrite")
        .apply("/foo/bar/1", None, |_| String::new());
    assert_eq!(rewritten.as_deref(), Some("/1"));
    assert!(
        route(&s, "test.com", "/foo/bar").rewrite.is_none(),
        "test-ingress-1 does not rewrite"
    );
    // Other hosts are untouched.
    assert_eq!(target(&s, "plain.test", "/FOO"), "404");
    assert!(describe_routes(&s)["test.com"].contains_key("(matching)"));
}

#[test]
fn use_regex_paths_that_do_not_compile_are_skipped_with_a_warning() {
    let s = build(&with(
        abc(),
        [ingress("re")
            .annotation(&ng("use-regex"), "true")
            .path(
                "re.test",
                "/ok/[0-9]+",
                "ImplementationSpecific",
                svc("a", 80),
            )
            .path(
                "re.test",
                "/broken(",
                "ImplementationSpecific",
                svc("b", 80),
            )
            .yaml()],
    ));
    assert_eq!(target(&s, "re.test", "/ok/42"), "a");
    assert_eq!(target(&s, "re.test", "/ok/x"), "404");
    assert_warning(
        &s,
        &[
            "default/re",
            "\"/broken(\" is not a valid regular expression",
        ],
    );
}

#[test]
fn from_to_www_redirect_adds_the_twin_host_unless_an_ingress_has_it() {
    use crate::snapshot::policy::RedirectTo;
    let s = build(&with(
        abc(),
        [
            ingress("www")
                .annotation(&ng("from-to-www-redirect"), "true")
                .prefix("www.shop.test", "/", svc("a", 80))
                .prefix("blog.test", "/", svc("a", 80))
                .yaml(),
            ingress("blog-bare")
                .prefix("www.blog.test", "/", svc("b", 80))
                .yaml(),
        ],
    ));
    let twin = route(&s, "shop.test", "/any/path");
    let redirect = twin.policy.as_ref().unwrap().redirect.as_ref().unwrap();
    assert_eq!(redirect.code, 308);
    assert!(matches!(&redirect.to, RedirectTo::Host(h) if &**h == "www.shop.test"));
    assert_eq!(
        target(&s, "www.blog.test", "/"),
        "b",
        "a real Ingress beats the twin"
    );
    assert_warning(
        &s,
        &[
            "default/www",
            "from-to-www-redirect for host www.blog.test left out",
            "default/blog-bare",
        ],
    );
}

#[test]
fn compat_class_is_served_whatever_its_controller_with_ingress_nginx_defaults() {
    let secret = tls_secret("shop-tls", &["shop.test"]);
    let mut nginx_ingress = ingress("legacy")
        .class(Some("nginx"))
        .prefix("shop.test", "/", svc("a", 80))
        .yaml();
    nginx_ingress.push_str("  tls:\n  - hosts: [shop.test]\n    secretName: shop-tls\n");
    let parts = with(
        abc(),
        [
            ingress_class("nginx", "k8s.io/ingress-nginx", false),
            nginx_ingress,
            secret,
        ],
    );
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000);
    let plain = Settings {
        now: Some(now),
        ..Settings::default()
    };
    assert!(
        owned(&build_with(&parts, &plain)).is_empty(),
        "without the flag, nginx's class is not ours"
    );
    let compat = Settings {
        ingress_class_compat: vec!["nginx".into()],
        now: Some(now),
        ..Settings::default()
    };
    let s = build_with(&parts, &compat);
    assert_eq!(owned(&s), ["default/legacy"]);
    let r = route(&s, "shop.test", "/");
    assert!(
        r.ssl_redirect,
        "ingress-nginx redirects TLS hosts to HTTPS by default"
    );
    assert_eq!(
        r.policy.as_ref().unwrap().limits.body_size,
        Some(1 << 20),
        "and limits bodies to 1m"
    );
}

#[test]
fn force_ssl_redirect_redirects_a_host_without_certificate() {
    let s = build(&with(
        abc(),
        [ingress("web")
            .annotation(&ng("force-ssl-redirect"), "true")
            .prefix("app.test", "/", svc("a", 80))
            .yaml()],
    ));
    assert!(route(&s, "app.test", "/").ssl_redirect);
}

#[test]
fn default_backend_annotation_and_service_upstream_resolve_services() {
    let mut cluster_ip = service("default", "a", &[("http", 80)]);
    cluster_ip = cluster_ip.replace("spec:\n", "spec:\n  clusterIP: 10.96.0.10\n");
    let s = build(&[
        cluster_ip,
        endpoint_slice("default", "a", "a", &[("http", 8080)], &[ready("10.0.0.1")]),
        backend_service("errors", "10.0.0.9"),
        ingress("web")
            .annotation(&ng("service-upstream"), "true")
            .annotation(&ng("default-backend"), "errors")
            .annotation(&ng("custom-http-errors"), "404,503")
            .prefix("app.test", "/", svc("a", 80))
            .yaml(),
    ]);
    assert_eq!(endpoints(&s, "app.test", "/"), ["10.96.0.10:80"]);
    let errors = route(&s, "app.test", "/")
        .policy
        .as_ref()
        .unwrap()
        .errors
        .as_ref()
        .unwrap();
    assert_eq!(errors.intercept, [404, 503]);
    assert_eq!(
        errors.backend.as_ref().unwrap().endpoints.as_ref(),
        ["10.0.0.9:8080".parse().unwrap()]
    );
}

#[test]
fn grpcs_backends_speak_http2_over_tls() {
    let s = build(&with(
        abc(),
        [ingress("grpcs")
            .annotation(&ng("backend-protocol"), "GRPCS")
            .prefix("g.test", "/", svc("a", 80))
            .yaml()],
    ));
    match s.routes.lookup("g.test", "/").map(|r| &r.backend) {
        Some(Backend::Service(b)) => assert_eq!(b.protocol, UpstreamProtocol::H2Tls),
        other => panic!("{other:?}"),
    }
    let all = warnings(&s);
    assert!(
        !all.iter().any(|w| w.contains("backend-protocol")),
        "{all:?}"
    );
}

#[test]
fn ingress_with_oversized_annotations_is_not_served() {
    let blob = "x".repeat(300 * 1024);
    let s = build(&with(
        abc(),
        [ingress("huge")
            .annotation("example.com/blob", &blob)
            .prefix("h.test", "/", svc("a", 80))
            .yaml()],
    ));
    assert_eq!(target(&s, "h.test", "/"), "404");
    assert_warning(&s, &["default/huge", "annotations take", "262144"]);
}

#[test]
fn old_api_version_ingress_in_a_manifest_is_read_with_a_deprecation_warning() {
    let old = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: legacy, namespace: default, annotations: {kubernetes.io/ingress.class: gatehouse}}\nspec:\n  rules:\n  - host: old.test\n    http:\n      paths:\n      - path: /\n        backend: {serviceName: a, servicePort: 80}\n";
    let s = build(&with(abc(), [old.to_owned()]));
    assert_eq!(target(&s, "old.test", "/"), "a");
    assert_warning(
        &s,
        &[
            "Ingress default/legacy",
            "removed API version extensions/v1beta1",
            "convert the manifest",
        ],
    );
}

/// One object parsed from YAML.
fn object(yaml: &str) -> crate::objects::Object {
    parse_documents(yaml)
        .expect("valid manifest")
        .pop()
        .expect("one object")
}

/// A random Ingress over a small world of hosts, paths, backends and Secrets, so that random
/// edits make and settle conflicts, redirects, missing backends and bad values.
fn random_ingress(rng: &mut Rng, name: &str) -> String {
    const HOSTS: &[&str] = &[
        "h0.t.test",
        "h1.t.test",
        "H1.T.test",
        "h2.t.test",
        "*.t.test",
        "www.h0.t.test",
        "",
        "bad_host!",
    ];
    const PATHS: &[(&str, &str)] = &[
        ("/", "Prefix"),
        ("/a", "Prefix"),
        ("/a/", "Prefix"),
        ("/a", "Exact"),
        ("/a/b", "ImplementationSpecific"),
        ("x", "Prefix"),
        ("/r", "Regex"),
        ("/re/(.*)", "ImplementationSpecific"),
        ("/bad(", "ImplementationSpecific"),
    ];
    let backends = [
        svc("s0", 80),
        svc("s1", 80),
        svc_named("s2", "http"),
        svc("s9", 80),
        svc("s0", 81),
        site("st0"),
        site("st9"),
        resource("example.com", "Thing", "t"),
    ];
    let mut ing = ingress(name).class(match rng.below(10) {
        0 => None,
        1 => Some("other"),
        _ => Some("gatehouse"),
    });
    if let Some(created) = rng.pick(&[
        None,
        Some("2024-01-01T00:00:00Z"),
        Some("2024-01-02T00:00:00Z"),
    ]) {
        ing = ing.created(created);
    }
    if rng.chance(30) {
        ing = ing.annotation(
            crate::tls::SSL_REDIRECT_ANNOTATION,
            rng.pick::<&str>(&["true", "false", "maybe"]),
        );
    }
    if rng.chance(10) {
        ing = ing.annotation(
            BACKEND_PROTOCOL_ANNOTATION,
            rng.pick::<&str>(&["h2c", "bogus"]),
        );
    }
    if rng.chance(10) {
        ing = ing.annotation("kubernetes.io/tls-acme", "true");
    }
    // ingress-nginx annotations that change how routes merge or what they carry.
    const NG: &str = "nginx.ingress.kubernetes.io/";
    if rng.chance(20) {
        ing = ing.annotation(&format!("{NG}canary"), "true").annotation(
            &format!("{NG}canary-weight"),
            rng.pick::<&str>(&["10", "x"]),
        );
    }
    if rng.chance(10) {
        ing = ing.annotation(&format!("{NG}use-regex"), "true");
    }
    if rng.chance(10) {
        ing = ing.annotation(
            &format!("{NG}rewrite-target"),
            rng.pick::<&str>(&["/$1", "/"]),
        );
    }
    if rng.chance(10) {
        ing = ing.annotation(&format!("{NG}from-to-www-redirect"), "true");
    }
    if rng.chance(10) {
        ing = ing.annotation(
            &format!("{NG}whitelist-source-range"),
            rng.pick::<&str>(&["10.0.0.0/8", "nope"]),
        );
    }
    if rng.chance(10) {
        ing = ing
            .annotation(&format!("{NG}auth-type"), "basic")
            .annotation(&format!("{NG}auth-secret"), "users");
    }
    if rng.chance(15) {
        ing = ing.default_backend(rng.pick(&backends).clone());
    }
    for _ in 0..rng.below(4) {
        let host = *rng.pick(HOSTS);
        for _ in 0..1 + rng.below(3) {
            let (path, path_type) = *rng.pick(PATHS);
            ing = ing.path(host, path, path_type, rng.pick(&backends).clone());
        }
    }
    let mut yaml = ing.yaml();
    if rng.chance(30) {
        if !yaml.contains("\nspec:\n") {
            yaml.push_str("spec:\n");
        }
        let hosts: Vec<&str> = (0..1 + rng.below(2))
            .map(|_| *rng.pick(&["h0.t.test", "h1.t.test", "*.t.test"]))
            .collect();
        yaml.push_str(&format!(
            "  tls:\n  - hosts: {hosts:?}\n    secretName: {}\n",
            rng.pick(&["tls-a", "tls-b", "tls-missing"])
        ));
    }
    yaml
}

/// A Service, sometimes of a type or with ports that cannot be used.
fn random_service(rng: &mut Rng, name: &str) -> String {
    match rng.below(6) {
        0 => service("default", name, &[("web", 80)]),
        1 => service("default", name, &[("http", 80)]).replace(
            "spec:\n",
            "spec:\n  type: ExternalName\n  externalName: x.example.com\n",
        ),
        _ => service("default", name, &[("http", 80), ("", 81)]),
    }
}

fn random_slice(rng: &mut Rng, service: &str) -> String {
    let endpoints: Vec<Endpoint> = (0..rng.below(3))
        .map(|i| {
            let ip = format!("10.9.{}.{}", rng.below(3), i);
            match rng.below(3) {
                0 => not_ready(&ip),
                1 => terminating(&ip, true),
                _ => ready(&ip),
            }
        })
        .collect();
    endpoint_slice(
        "default",
        &format!("{service}-1"),
        service,
        &[("http", 8080), ("", 8081)],
        &endpoints,
    )
}

/// A kubernetes.io/tls Secret of a self-signed certificate for `names`.
fn tls_secret(name: &str, names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).expect("certificate");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: {:?}\n  tls.key: {:?}\n",
        made.cert.pem(),
        made.signing_key.serialize_pem()
    )
}

/// Everything a user sees of a snapshot.
fn seen(s: &Snapshot) -> String {
    let body = serde_json::json!({
        "routes": describe_routes(s),
        "ingresses": owned(s),
        "warnings": warnings(s),
        "acme": s.acme,
        "tls": s.tls.describe(),
    });
    format!("{body:#}")
}

#[test]
fn incremental_translate_equals_translate_from_nothing_over_random_edits() {
    // `FUZZ_ROUNDS=5000 FUZZ_SEED=n cargo test --lib incremental` searches further.
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut rng = Rng(env("FUZZ_SEED").unwrap_or(0x2545_f491_4f6c_dd1d).max(1));
    let secrets = [
        tls_secret("tls-a", &["*.t.test", "h0.t.test"]),
        tls_secret("tls-b", &["h1.t.test"]),
    ];
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000);
    let mut settings = Settings {
        now: Some(now),
        ..Settings::default()
    };
    let mut objects = Objects::default();
    for s in ["s0", "s1", "s2"] {
        objects.insert(object(&random_service(&mut rng, s)));
        objects.insert(object(&random_slice(&mut rng, s)));
    }
    objects.insert(object(&static_site("default", "st0", "/srv/st0", &[])));
    for secret in &secrets {
        objects.insert(object(secret));
    }
    for i in 0..8 {
        objects.insert(object(&random_ingress(&mut rng, &format!("i{i}"))));
    }
    let mut memo = Memo::default();
    translate(&objects, &settings, &mut memo);
    let (mut reused, mut steps) = (0, 0);
    for step in 0..env("FUZZ_ROUNDS").unwrap_or(400) {
        let key = |name: &str| ObjectKey::new("default", name);
        let what = match rng.below(20) {
            0..=7 => {
                let name = format!("i{}", rng.below(10));
                if rng.chance(15) {
                    objects.ingresses.remove(&key(&name));
                } else {
                    objects.insert(object(&random_ingress(&mut rng, &name)));
                }
                format!("Ingress {name}")
            }
            8 | 9 => {
                let name = *rng.pick(&["s0", "s1", "s2"]);
                if rng.chance(20) {
                    objects.services.remove(&key(name));
                } else {
                    objects.insert(object(&random_service(&mut rng, name)));
                }
                format!("Service {name}")
            }
            10..=12 => {
                let name = *rng.pick(&["s0", "s1", "s2"]);
                if rng.chance(20) {
                    objects.endpoint_slices.remove(&key(&format!("{name}-1")));
                } else {
                    objects.insert(object(&random_slice(&mut rng, name)));
                }
                format!("EndpointSlice of {name}")
            }
            13 => {
                if rng.chance(50) {
                    objects.static_sites.remove(&key("st0"));
                } else {
                    let extra: &[(&str, &str)] = if rng.chance(50) {
                        &[("fallback", "../x")]
                    } else {
                        &[]
                    };
                    objects.insert(object(&static_site("default", "st0", "/srv/st0", extra)));
                }
                "StaticSite".into()
            }
            14 if rng.chance(30) => {
                let users = "alice:$apr1$hTQb2xg1$PoZngGx9aPMxyg/6qNUCm0\n";
                if rng.chance(40) {
                    objects.secrets.remove(&key("users"));
                } else {
                    let data = *rng.pick(&[users, "broken"]);
                    objects.insert(object(&opaque_secret("users", &[("auth", data)])));
                }
                "Secret users".into()
            }
            14 => {
                let i = rng.below(2);
                let name = ["tls-a", "tls-b"][i];
                if rng.chance(50) {
                    objects.secrets.remove(&key(name));
                } else {
                    objects.insert(object(&secrets[i]));
                }
                format!("Secret {name}")
            }
            15 => {
                objects.ingress_classes.clear();
                match rng.below(3) {
                    0 => {}
                    1 => objects.insert(object(&ingress_class("gatehouse", OURS, true))),
                    _ => objects.insert(object(&ingress_class("gatehouse", "x.io/other", false))),
                }
                "IngressClass".into()
            }
            16 => {
                settings.ssl_redirect = !settings.ssl_redirect;
                "--ssl-redirect".into()
            }
            _ => "nothing".into(),
        };
        // From nothing but the certificates in service (a host whose Secret broke keeps its
        // last good one: that history is an input either way).
        let fresh = translate(&objects, &settings, &mut memo.certificates_only());
        let before = memo.ingresses.clone();
        let next = translate(&objects, &settings, &mut memo);
        assert_eq!(
            seen(&next),
            seen(&fresh),
            "step {step} ({what}): incremental and fresh translate differ"
        );
        // Count how much was reused, to know the test exercises reuse at all.
        steps += memo.ingresses.len();
        reused += memo
            .ingresses
            .iter()
            .filter(|(k, c)| before.get(*k).is_some_and(|p| Arc::ptr_eq(p, c)))
            .count();
    }
    assert!(
        reused * 2 > steps,
        "only {reused} of {steps} Ingresses reused"
    );
}
