//! translate(): objects from fuzzed YAML to a snapshot.
//!
//! Never panics; every path of an owned Ingress is either served or warned about (nothing is
//! dropped silently), an unusable backend always comes with a warning, each served path is
//! what a lookup of its host and path finds, and the incremental translate (from the previous
//! snapshot) gives what a translate from nothing gives, for an added and a removed change.
//!
//! Input: an optional first byte below 8 (settings flags), then YAML documents separated by
//! `---` lines; each document that parses is kept, and those of the last one are "the change".
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse::objects::{Object, ObjectKey, Objects};
use gatehouse::routing::{HostMatch, PathMatch};
use gatehouse::snapshot::{Backend, Route, Snapshot};
use gatehouse::sources::manifests::parse_documents;
use gatehouse::translate::{Memo, Settings, describe_routes, translate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, data) = match data.split_first() {
        Some((&flags, rest)) if flags < 8 => (flags, rest),
        _ => (0, data),
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let settings = Settings {
        watch_ingress_without_class: flags & 1 != 0,
        ssl_redirect: flags & 2 != 0,
        default_certificate: (flags & 4 != 0).then(|| ObjectKey::new("default", "default-cert")),
        base_dir: Some("/srv/manifests".into()),
        now: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        ..Settings::default()
    };
    let chunks: Vec<Vec<Object>> = text
        .split("\n---")
        .filter_map(|chunk| parse_documents(chunk).ok())
        .collect();
    let Some((change, before)) = chunks.split_last() else {
        return;
    };
    let mut old = Objects::default();
    for object in before.iter().flatten() {
        old.insert(object.clone());
    }
    let mut new = old.clone();
    for object in change {
        new.insert(object.clone());
    }

    let snapshot = translate(&new, &settings, &mut Memo::default());
    check(&new, &snapshot);

    // Incremental: the change added to what translating before left, then taken away again.
    let mut memo = Memo::default();
    let old_snapshot = translate(&old, &settings, &mut memo);
    let added = translate(&new, &settings, &mut memo);
    assert_same(&snapshot, &added, "incremental translate with the change");
    let removed = translate(&old, &settings, &mut memo);
    assert_same(
        &old_snapshot,
        &removed,
        "incremental translate without the change",
    );
});

fn assert_same(fresh: &Snapshot, incremental: &Snapshot, what: &str) {
    assert_eq!(fresh.warnings, incremental.warnings, "{what}: warnings");
    assert_eq!(
        fresh.owned_ingresses, incremental.owned_ingresses,
        "{what}: owned Ingresses"
    );
    assert_eq!(
        describe_routes(fresh),
        describe_routes(incremental),
        "{what}: routes"
    );
}

/// What a user may rely on in any snapshot.
fn check(objects: &Objects, snapshot: &Snapshot) {
    let warned = |key: &ObjectKey| {
        snapshot
            .warnings
            .iter()
            .any(|w| w.kind == "Ingress" && w.object == *key)
    };
    for warning in &snapshot.warnings {
        assert!(
            !warning.reason.is_empty(),
            "a warning without a reason: {warning:?}"
        );
    }
    for key in snapshot.owned_ingresses.iter() {
        let ingress = &objects.ingresses[key];
        let Some(spec) = &ingress.spec else {
            assert!(
                warned(key),
                "Ingress {key} has no spec, and no warning says so"
            );
            continue;
        };
        if spec.default_backend.is_some() {
            let default = snapshot.routes.default_route();
            let default = default.unwrap_or_else(|| panic!("defaultBackend of {key} not served"));
            assert!(
                *default.ingress == *key || warned(key),
                "defaultBackend of {key} lost to {} without a warning",
                default.ingress
            );
        }
        let mut declared = HashSet::new();
        for rule in spec.rules.iter().flatten() {
            let Ok(host) = HostMatch::parse(rule.host.as_deref()) else {
                assert!(
                    warned(key),
                    "Ingress {key}: host {:?} skipped silently",
                    rule.host
                );
                continue;
            };
            let Some(http) = &rule.http else { continue };
            for path in &http.paths {
                let text = path.path.as_deref().unwrap_or("/");
                let wanted = match path.path_type.as_str() {
                    _ if !text.starts_with('/') => None,
                    "Exact" => Some(PathMatch::exact(text)),
                    "Prefix" | "ImplementationSpecific" => Some(PathMatch::prefix(text)),
                    _ => None,
                };
                let Some(wanted) = wanted else {
                    assert!(warned(key), "Ingress {key}: path {path:?} skipped silently");
                    continue;
                };
                let served = snapshot.routes.host(&host).and_then(|routes| {
                    routes
                        .iter()
                        .find(|(p, _)| *p == wanted)
                        .map(|(_, r)| r.clone())
                });
                let served = served.unwrap_or_else(|| {
                    panic!("Ingress {key}: {wanted:?} on {host:?} neither served nor warned about")
                });
                let first = declared.insert((host.clone(), wanted.clone()));
                assert!(
                    (first && *served.ingress == *key) || warned(key),
                    "Ingress {key}: {wanted:?} on {host:?} lost to {} without a warning",
                    served.ingress
                );
                check_lookup(snapshot, &host, &served);
            }
        }
    }
    let routes = snapshot.routes.hosts();
    let served = routes.iter().flat_map(|(_, r)| r.values());
    for route in served.chain(snapshot.routes.default_route()) {
        if let Backend::Unavailable { reason } = &route.backend {
            assert!(
                warned(&route.ingress),
                "Ingress {} answers 503 ({reason}) without a warning",
                route.ingress
            );
        }
    }
}

/// A request for the route's own host and path finds it (or, for a Prefix, an Exact route of
/// the same path, which wins).
fn check_lookup(snapshot: &Snapshot, host: &HostMatch, route: &Arc<Route>) {
    let table = &snapshot.routes;
    let request_host = match host {
        HostMatch::Exact(name) => name.to_uppercase() + ".:8080",
        HostMatch::Wildcard(suffix) => {
            let name = format!("x.{suffix}");
            if table
                .host(&HostMatch::Exact(name.as_str().into()))
                .is_some()
            {
                return;
            }
            name
        }
        HostMatch::Any => {
            let unused = HostMatch::Exact("unused.invalid".into());
            if table.host(&unused).is_some()
                || table.host(&HostMatch::Wildcard("invalid".into())).is_some()
            {
                return;
            }
            "unused.invalid".into()
        }
    };
    let path = route.path.path();
    let found = table.lookup(&request_host, path);
    let found = found
        .unwrap_or_else(|| panic!("{request_host} {path}: no route, expected {:?}", route.path));
    let expected = match &route.path {
        PathMatch::Exact(_) => Arc::ptr_eq(found, route),
        PathMatch::Prefix(_) => Arc::ptr_eq(found, route) || found.path == PathMatch::exact(path),
    };
    assert!(
        expected,
        "{request_host} {path}: found {:?}, expected {:?}",
        found.path, route.path
    );
}
