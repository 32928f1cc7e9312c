//! Live changes to the manifest directory: applied fast, never dropping a connection or request.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::yaml::{docs, ingress, svc};
use support::{Gatehouse, origin, service_yaml};

/// Services `web-a` and `web-b`, one per origin, in `services.yaml`.
fn services(a: SocketAddr, b: SocketAddr) -> String {
    docs(&[
        service_yaml("default", "web-a", &[a]),
        service_yaml("default", "web-b", &[b]),
    ])
}

/// `ingress.yaml`: `app.test` (every path) to Service `service`.
fn route_to(service: &str) -> String {
    ingress("web")
        .prefix("app.test", "/", svc(service, 80))
        .yaml()
}

fn serving(routes: &Value, service: &str) -> bool {
    routes["hosts"]["app.test"]["Prefix /"]["backend"]["service"] == format!("default/{service}")
}

/// Gatehouse with origins `a` and `b` behind `web-a` and `web-b`, routing `app.test` to `web-a`.
async fn start(extra: &[(&str, &str)]) -> Gatehouse {
    let (a, b) = (origin::echo("a").await, origin::echo("b").await);
    let services = services(a, b);
    let ingress = route_to("web-a");
    let mut files = vec![
        ("services.yaml", services.as_str()),
        ("ingress.yaml", ingress.as_str()),
    ];
    files.extend_from_slice(extra);
    Gatehouse::start_with(&files, &[])
}

/// Blocking waits off the async workers, so origins keep answering meanwhile.
fn wait_serving(gh: &Gatehouse, service: &str) {
    tokio::task::block_in_place(|| gh.wait_routes(service, |r| serving(r, service)));
}

async fn origin_of(client: &reqwest::Client, url: &str) -> String {
    let resp = client.get(url).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.expect("json");
    echo["origin"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_change_is_applied_within_a_second() {
    let gh = start(&[]).await;
    let client = gh.client_for(&["app.test", "new.test"]);
    assert_eq!(origin_of(&client, "http://app.test/").await, "a");

    let written = Instant::now();
    gh.write(
        "ingress.yaml",
        &docs(&[
            route_to("web-b"),
            ingress("new")
                .prefix("new.test", "/", svc("web-a", 80))
                .yaml(),
        ]),
    );
    while origin_of(&client, "http://app.test/").await != "b" {
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "change not applied after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin_of(&client, "http://new.test/").await, "a");
    assert!(gh.metric("gatehouse_config_reloads_total", &[]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_file_drops_its_routes_and_others_keep_serving() {
    let other = ingress("other")
        .prefix("other.test", "/", svc("web-b", 80))
        .yaml();
    let gh = start(&[("other.yaml", &other)]).await;
    let client = gh.client_for(&["app.test", "other.test"]);
    assert_eq!(origin_of(&client, "http://other.test/").await, "b");
    gh.remove("other.yaml");
    tokio::task::block_in_place(|| {
        gh.wait_routes("other.test gone", |r| {
            r["hosts"].get("other.test").is_none()
        })
    });
    assert_eq!(
        client
            .get("http://other.test/")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(origin_of(&client, "http://app.test/").await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_on_the_configuration_it_started_with() {
    let (slow, mut started) = origin::slow("slow", Duration::from_secs(2)).await;
    let yaml = docs(&[
        service_yaml("default", "slow", &[slow]),
        ingress("web")
            .prefix("app.test", "/", svc("slow", 80))
            .yaml(),
    ]);
    let gh = Gatehouse::start_with(&[("ingress.yaml", &yaml)], &[]);
    let request = tokio::spawn(
        gh.client_for(&["app.test"])
            .get("http://app.test/slow")
            .send(),
    );
    started.recv().await.expect("request reached the origin");

    // Remove the route altogether while the request is in flight.
    gh.remove("ingress.yaml");
    tokio::task::block_in_place(|| {
        gh.wait_routes("no hosts", |r| {
            r["hosts"].as_object().is_some_and(|h| h.is_empty())
        })
    });
    let resp = request.await.unwrap().expect("in-flight request completes");
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["origin"], "slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_websocket_stays_open_across_reloads() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let (ws_a, ws_b) = (
        origin::websocket_echo("a").await,
        origin::websocket_echo("b").await,
    );
    let gh = Gatehouse::start_with(
        &[
            ("services.yaml", &services(ws_a, ws_b)),
            ("ingress.yaml", &route_to("web-a")),
        ],
        &[],
    );
    let stream = tokio::net::TcpStream::connect(gh.http).await.unwrap();
    let request = "ws://app.test/chat".into_client_request().unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgrade");
    for round in 0..6 {
        let next = if round % 2 == 0 { "web-b" } else { "web-a" };
        gh.write("ingress.yaml", &route_to(next));
        wait_serving(&gh, next);
        ws.send(Message::text(format!("round {round}")))
            .await
            .unwrap();
        let reply = ws.next().await.expect("open").expect("frame");
        // Still the origin the socket was opened to.
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            format!("a: round {round}")
        );
    }
}

/// The `File` warnings of `/routes`.
fn file_warnings(gh: &Gatehouse) -> Vec<String> {
    gh.routes()["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|w| w.starts_with("File "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_is_reported_and_its_last_good_objects_stay_in_force() {
    let gh = start(&[]).await;
    let client = gh.client_for(&["app.test"]);
    gh.write("ingress.yaml", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec: {rules: 12}\n");
    let line = tokio::task::block_in_place(|| {
        gh.wait_log(&["not loaded", "ingress.yaml"], Duration::from_secs(3))
    });
    assert!(
        line.contains("Ingress") && line.contains("\"web\""),
        "{line}"
    );
    assert_eq!(gh.metric("gatehouse_config_reload_errors_total", &[]), 1.0);
    assert!(serving(&gh.routes(), "web-a"));
    assert_eq!(origin_of(&client, "http://app.test/").await, "a");
    // Not only in the log: a warning in /routes and in the warnings gauge.
    let file = gh.manifests().join("ingress.yaml");
    let warnings = file_warnings(&gh);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!(
            "File {}: document 1: Ingress \"web\"",
            file.display()
        )),
        "{warnings:?}"
    );
    assert_eq!(gh.metric("gatehouse_config_warnings", &[]), 1.0);

    // Fixed: the new content goes into service and the warning goes.
    gh.write("ingress.yaml", &route_to("web-b"));
    wait_serving(&gh, "web-b");
    assert_eq!(origin_of(&client, "http://app.test/").await, "b");
    assert_eq!(file_warnings(&gh), Vec::<String>::new());
    assert_eq!(gh.metric("gatehouse_config_warnings", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_rewritten_in_place_by_a_slow_command_keeps_its_routes() {
    let gh = start(&[]).await;
    let client = gh.client_for(&["app.test"]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let statuses = {
        let (client, stop, done) = (client.clone(), stop.clone(), done.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let resp = client.get("http://app.test/").send().await;
                statuses.push((sent, resp.map_or(0, |r| r.status().as_u16())));
                done.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            statuses
        })
    };
    // `render > ingress.yaml`: the shell empties the file at once, the command writes 300 ms
    // later (or once some requests have been answered meanwhile, on a slow machine).
    let path = gh.manifests().join("ingress.yaml");
    let mut file = std::fs::File::create(&path).expect("truncate");
    let emptied = Instant::now();
    let before = done.load(Ordering::Relaxed);
    while emptied.elapsed() < Duration::from_millis(300)
        || (done.load(Ordering::Relaxed) < before + 10
            && emptied.elapsed() < Duration::from_secs(10))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    use std::io::Write;
    file.write_all(route_to("web-b").as_bytes()).expect("write");
    drop(file);
    let filled = Instant::now();
    wait_serving(&gh, "web-b");
    stop.store(true, Ordering::Relaxed);
    let statuses = statuses.await.expect("client loop");
    let while_empty = statuses
        .iter()
        .filter(|(sent, _)| *sent > emptied && *sent < filled)
        .count();
    assert!(while_empty >= 5, "only {while_empty} requests while empty");
    let failed: Vec<u16> = statuses
        .iter()
        .map(|(_, status)| *status)
        .filter(|s| *s != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while the file was empty: {failed:?}",
        failed.len(),
        statuses.len()
    );
    assert_eq!(origin_of(&client, "http://app.test/").await, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_file_keeps_its_routes_with_a_warning_until_deleted() {
    let gh = start(&[]).await;
    let client = gh.client_for(&["app.test"]);
    gh.write("ingress.yaml", "");
    tokio::task::block_in_place(|| {
        gh.wait_routes("a warning for the emptied file", |r| {
            r["warnings"].to_string().contains("the file is empty")
        })
    });
    assert_eq!(origin_of(&client, "http://app.test/").await, "a");
    gh.remove("ingress.yaml");
    tokio::task::block_in_place(|| {
        gh.wait_routes("no hosts and no warning", |r| {
            r["hosts"].as_object().is_some_and(|h| h.is_empty())
                && r["warnings"].as_array().is_some_and(|w| w.is_empty())
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_manifest_directory_keeps_serving_and_is_logged_once() {
    let gh = start(&[]).await;
    let client = gh.client_for(&["app.test"]);
    let errors_before = gh.metric("gatehouse_config_reload_errors_total", &[]);
    std::fs::remove_dir_all(gh.manifests()).expect("rm -r manifests");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        assert_eq!(origin_of(&client, "http://app.test/").await, "a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = gh.log_text();
    let dir = gh.manifests().display().to_string();
    let lines = log
        .lines()
        .filter(|l| l.contains("manifests not loaded") && l.contains(&dir))
        .count();
    assert_eq!(
        lines, 1,
        "the error is logged once, not at every scan:\n{log}"
    );
    assert_eq!(
        gh.metric("gatehouse_config_reload_errors_total", &[]),
        errors_before + 1.0
    );
    let warnings = file_warnings(&gh);
    assert!(
        warnings.len() == 1 && warnings[0].starts_with(&format!("File {dir}: ")),
        "{warnings:?}"
    );

    // Back: read again, and the warning goes.
    std::fs::create_dir_all(gh.manifests()).expect("mkdir");
    let (a, b) = (origin::echo("a2").await, origin::echo("b2").await);
    gh.write("services.yaml", &services(a, b));
    gh.write("ingress.yaml", &route_to("web-b"));
    wait_serving(&gh, "web-b");
    assert_eq!(origin_of(&client, "http://app.test/").await, "b2");
    assert_eq!(file_warnings(&gh), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    let gh = start(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut loops = Vec::new();
    for i in 0..4 {
        // Half the clients keep their connections, half open one per request.
        let builder = gh.client_builder(&["app.test"]);
        let client = if i % 2 == 0 {
            builder.build()
        } else {
            builder.pool_max_idle_per_host(0).build()
        }
        .unwrap();
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let served = match client.get("http://app.test/").send().await {
                    Ok(resp) => resp.status() == 200 && resp.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let counter = if served { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for round in 0..20 {
        let next = if round % 2 == 0 { "web-b" } else { "web-a" };
        gh.write("ingress.yaml", &route_to(next));
        wait_serving(&gh, next);
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok >= 200, "only {ok} requests made");
    assert!(gh.metric("gatehouse_config_reloads_total", &[]) >= 21.0);
}
