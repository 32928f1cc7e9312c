//! Route lookup and configuration build at scale: `cargo bench --bench routing`.
//!
//! - `lookup/*`: one request routed in a table built from 10,000 Ingresses with 50,000 hosts
//!   (exact hosts, one wildcard in ten Ingresses, five paths per host).
//! - `lookup_flatness/*`: the same lookup in tables of 100 to 100,000 hosts, beside a linear scan
//!   over the hosts (what a lookup without a hash map would cost), to show it stays flat.
//! - `build/translate`: translate() of the 10,000-Ingress set (objects already in memory), what
//!   every configuration change costs; `build/parse_documents`: parsing that set from YAML, what
//!   a start from a manifest directory costs.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gatehouse::objects::Objects;
use gatehouse::routing::{HostMatch, PathMatch, RouteTable};
use gatehouse::sources::manifests::parse_documents;
use gatehouse::translate::{Memo, Settings, translate};

#[path = "../tests/support/yaml.rs"]
mod yaml;

const INGRESSES: usize = 10_000;
const HOSTS_PER_INGRESS: usize = 5;

/// Exact host `j` of Ingress `i`.
fn host(i: usize, j: usize) -> String {
    format!("app{i}-{j}.team{}.example.com", i % 100)
}

/// The manifests of the big set: per Ingress a Service with three ready endpoints, and five
/// hosts (the last one a wildcard in every tenth Ingress) with five paths each.
fn big_set_yaml() -> String {
    let mut out = String::with_capacity(INGRESSES * 3_000);
    for i in 0..INGRESSES {
        let (ns, name) = (format!("ns-{}", i % 50), format!("svc-{i}"));
        let ip = |k: usize| {
            format!(
                "10.{}.{}.{}",
                i / 65_536 % 256,
                i / 256 % 256,
                (i + k) % 256
            )
        };
        let endpoints = [
            yaml::ready(&ip(0)),
            yaml::ready(&ip(1)),
            yaml::ready(&ip(2)),
        ];
        let mut ing = yaml::ingress(&format!("ing-{i}")).namespace(&ns);
        for j in 0..HOSTS_PER_INGRESS {
            let h = if i % 10 == 0 && j == HOSTS_PER_INGRESS - 1 {
                format!("*.wild{i}.example.com")
            } else {
                host(i, j)
            };
            ing = ing
                .prefix(&h, "/", yaml::svc(&name, 80))
                .prefix(&h, "/api", yaml::svc(&name, 80))
                .prefix(&h, "/api/v1", yaml::svc(&name, 80))
                .prefix(&h, "/static", yaml::svc(&name, 80))
                .exact(&h, "/healthz", yaml::svc(&name, 80));
        }
        out.push_str(&yaml::docs(&[
            yaml::service(&ns, &name, &[("http", 80)]),
            yaml::endpoint_slice(
                &ns,
                &format!("{name}-1"),
                &name,
                &[("http", 8080)],
                &endpoints,
            ),
            ing.yaml(),
        ]));
        out.push_str("---\n");
    }
    out
}

/// The big set as YAML and as objects, built once for every benchmark.
fn big_set() -> &'static (String, Objects) {
    static SET: OnceLock<(String, Objects)> = OnceLock::new();
    SET.get_or_init(|| {
        let text = big_set_yaml();
        let objects = objects_of(&text);
        (text, objects)
    })
}

fn objects_of(text: &str) -> Objects {
    let mut objects = Objects::default();
    for object in parse_documents(text).expect("valid manifests") {
        objects.insert(object);
    }
    objects
}

/// The prefixes of every host of the bare tables, each route's value its index here.
const PATHS: [&str; 4] = ["/", "/api", "/api/v1", "/static"];

/// A bare table of `hosts` exact hosts with the four [`PATHS`] each.
fn table_of(hosts: usize) -> RouteTable<u32> {
    let mut table = RouteTable::default();
    for i in 0..hosts {
        let h = HostMatch::parse(Some(&host(i, 0))).expect("valid host");
        for (k, path) in PATHS.iter().enumerate() {
            let _ = table
                .host_mut(&h)
                .insert(PathMatch::prefix(path), (i * 4 + k) as u32);
        }
    }
    table
}

/// The same routes as a list scanned in order (longest path first): the cost a lookup without
/// a host index pays.
fn scan_list_of(hosts: usize) -> Vec<(String, Vec<(&'static str, u32)>)> {
    (0..hosts)
        .map(|i| {
            let mut paths: Vec<(&'static str, u32)> = PATHS
                .iter()
                .enumerate()
                .map(|(k, p)| (*p, (i * 4 + k) as u32))
                .collect();
            paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
            (host(i, 0), paths)
        })
        .collect()
}

fn scan(list: &[(String, Vec<(&'static str, u32)>)], host: &str, path: &str) -> Option<u32> {
    let (_, paths) = list.iter().find(|(h, _)| h == host)?;
    paths
        .iter()
        .find(|(p, _)| path.starts_with(p))
        .map(|(_, v)| *v)
}

fn lookups(c: &mut Criterion) {
    let (_, objects) = big_set();
    let snapshot = translate(objects, &Settings::default(), &mut Memo::default());
    eprintln!(
        "big set: {} Ingresses, {} host entries, {} warnings",
        snapshot.owned_ingresses.len(),
        snapshot.routes.host_count(),
        snapshot.warnings.len()
    );
    let routes = &snapshot.routes;
    let exact = host(1234, 3);
    let mixed = format!("{}:8080", exact.to_uppercase());
    assert!(routes.lookup(&exact, "/api/v1/users/42").is_some());
    assert!(
        routes
            .lookup("foo.wild120.example.com", "/static/app.css")
            .is_some()
    );
    assert!(routes.lookup("nothing.example.org", "/x").is_none());

    let mut group = c.benchmark_group("lookup");
    group.bench_function("exact host, prefix /api/v1", |b| {
        b.iter(|| routes.lookup(black_box(&exact), black_box("/api/v1/users/42")))
    });
    group.bench_function("exact host, Exact /healthz", |b| {
        b.iter(|| routes.lookup(black_box(&exact), black_box("/healthz")))
    });
    group.bench_function("exact host, upper case with port", |b| {
        b.iter(|| routes.lookup(black_box(&mixed), black_box("/api/v1/users/42")))
    });
    group.bench_function("wildcard host", |b| {
        b.iter(|| {
            routes.lookup(
                black_box("foo.wild120.example.com"),
                black_box("/static/app.css"),
            )
        })
    });
    group.bench_function("miss", |b| {
        b.iter(|| routes.lookup(black_box("nothing.example.org"), black_box("/x")))
    });
    group.finish();

    let mut group = c.benchmark_group("lookup_flatness");
    for hosts in [100, 1_000, 10_000, 100_000] {
        let table = table_of(hosts);
        let list = scan_list_of(hosts);
        // The host in the middle: half the list for the scan to walk.
        let target = host(hosts / 2, 0);
        assert_eq!(
            table.lookup(&target, "/api/v1/users/42"),
            scan(&list, &target, "/api/v1/users/42").as_ref()
        );
        group.bench_with_input(BenchmarkId::new("route_table", hosts), &hosts, |b, _| {
            b.iter(|| table.lookup(black_box(&target), black_box("/api/v1/users/42")))
        });
        group.bench_with_input(BenchmarkId::new("linear_scan", hosts), &hosts, |b, _| {
            b.iter(|| scan(&list, black_box(&target), black_box("/api/v1/users/42")))
        });
    }
    group.finish();
}

fn builds(c: &mut Criterion) {
    let (text, objects) = big_set();
    eprintln!(
        "big set: {} objects, {} MiB of YAML",
        objects.len(),
        text.len() / (1024 * 1024)
    );
    let settings = Settings::default();
    let mut group = c.benchmark_group("build");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("translate 10k Ingresses / 50k hosts", |b| {
        b.iter(|| translate(black_box(objects), &settings, &mut Memo::default()))
    });
    group.bench_function("parse_documents 10k Ingresses / 50k hosts", |b| {
        b.iter(|| parse_documents(black_box(text)).expect("valid").len())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lookups, builds
}
criterion_main!(benches);
