//! Route metrics across publications: handles kept for what a change did not touch, series of
//! what went removed, histograms only for routes that served.

use http::Method;

use super::*;
use crate::objects::Objects;
use crate::sources::manifests::parse_documents;
use crate::test_util::yaml::{docs, endpoint_slice, ingress, ready, service, svc};
use crate::translate::{Memo, Settings, translate};

/// Ingress `name` routing `host` to Service `backend` (with one ready endpoint).
fn app(name: &str, host: &str, backend: &str) -> String {
    docs(&[
        service("default", backend, &[("http", 80)]),
        endpoint_slice(
            "default",
            backend,
            backend,
            &[("http", 8080)],
            &[ready("10.0.0.1")],
        ),
        ingress(name).prefix(host, "/", svc(backend, 80)).yaml(),
    ])
}

fn objects(parts: &[String]) -> Objects {
    let mut objects = Objects::default();
    for object in parse_documents(&docs(parts)).expect("valid manifests") {
        objects.insert(object);
    }
    objects
}

/// Builds and publishes a snapshot of `parts`, as the config loop does (one memo throughout).
fn publish(metrics: &Metrics, memo: &mut Memo, parts: &[String]) -> Snapshot {
    let snapshot = translate(&objects(parts), &Settings::default(), memo);
    metrics.publish(&snapshot);
    snapshot
}

fn handles<'s>(metrics: &'s Metrics, snapshot: &'s Snapshot, host: &str) -> &'s RouteMetrics {
    let route = snapshot.routes.lookup(host, "/").expect("a route");
    metrics.for_route(Some(route))
}

/// The exposition lines of `metric` (a family name) for Ingress `ingress`.
fn lines(metrics: &Metrics, metric: &str, ingress: &str) -> Vec<String> {
    let label = format!("ingress=\"{ingress}\"");
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(metric) && l.contains(&label))
        .map(str::to_owned)
        .collect()
}

fn serve(route: &RouteMetrics, host: &str) {
    route.count(host, &Method::GET, 200);
    route.duration().observe(0.01);
}

#[test]
fn histograms_appear_with_a_routes_first_request_only() {
    let metrics = Metrics::default();
    let snapshot = publish(
        &metrics,
        &mut Memo::default(),
        &[app("web", "app.test", "web")],
    );
    let duration = "gatehouse_request_duration_seconds";
    assert!(
        lines(&metrics, duration, "web").is_empty(),
        "before any request"
    );
    serve(handles(&metrics, &snapshot, "app.test"), "app.test");
    let count = lines(&metrics, &format!("{duration}_count"), "web");
    assert_eq!(count.len(), 1, "{count:?}");
    assert!(count[0].ends_with(" 1"), "{count:?}");
    assert!(!lines(&metrics, "gatehouse_requests_total", "web").is_empty());
}

#[test]
fn a_change_keeps_the_handles_of_what_it_did_not_touch_and_removes_what_went() {
    let metrics = Metrics::default();
    let mut memo = Memo::default();
    let web = app("web", "app.test", "web");
    let first = publish(
        &metrics,
        &mut memo,
        &[web.clone(), app("old", "old.test", "old")],
    );
    serve(handles(&metrics, &first, "app.test"), "app.test");
    serve(handles(&metrics, &first, "old.test"), "old.test");
    assert!(!lines(&metrics, "gatehouse_requests_total", "old").is_empty());

    // Ingress `old` deleted: its series go; `web`'s route keeps its handles and counts on.
    let second = publish(&metrics, &mut memo, std::slice::from_ref(&web));
    assert!(std::ptr::eq(
        handles(&metrics, &first, "app.test"),
        handles(&metrics, &second, "app.test")
    ));
    assert_eq!(
        lines(&metrics, "gatehouse_requests_total", "old"),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(&metrics, "gatehouse_request_duration_seconds", "old"),
        Vec::<String>::new()
    );
    serve(handles(&metrics, &second, "app.test"), "app.test");
    let total = lines(&metrics, "gatehouse_requests_total", "web");
    assert!(total.len() == 1 && total[0].ends_with(" 2"), "{total:?}");

    // `web` moved to another Service: new labels, and the old Service's series go.
    let third = publish(&metrics, &mut memo, &[app("web", "app.test", "web2")]);
    serve(handles(&metrics, &third, "app.test"), "app.test");
    let total = lines(&metrics, "gatehouse_requests_total", "web");
    assert!(
        total.len() == 1 && total[0].contains("service=\"web2\"") && total[0].ends_with(" 1"),
        "{total:?}"
    );
    let count = lines(&metrics, "gatehouse_request_duration_seconds_count", "web");
    assert!(
        count.len() == 1 && count[0].contains("service=\"web2\""),
        "{count:?}"
    );
}
