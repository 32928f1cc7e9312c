//! Per-route limits and error pages through the real binary, with real origins: upstream
//! timeouts (`proxy-connect-timeout`, `proxy-read-timeout`, `proxy-send-timeout`),
//! `limit-connections`, and `custom-http-errors` with `default-backend`. Assertions follow
//! ingress-nginx's e2e tests and documentation for the same annotations.
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use support::yaml::{docs, ingress, svc};
use support::{Gatehouse, origin, service_yaml};

const NG: &str = "nginx.ingress.kubernetes.io/";

fn ng(name: &str) -> String {
    format!("{NG}{name}")
}

fn start(services: &[String], ingresses: &[String], args: &[&str]) -> Gatehouse {
    let mut all = services.to_vec();
    all.extend(ingresses.iter().cloned());
    Gatehouse::start_with(&[("main.yaml", &docs(&all))], args)
}

/// A client for `host` whose connections come from `source` (a loopback address).
fn client_from(gh: &Gatehouse, host: &str, source: [u8; 4]) -> reqwest::Client {
    gh.client_builder(&[host])
        .local_address(IpAddr::from(source))
        .http1_only()
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = client.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

// --- timeouts ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_answers_504_in_time_and_other_routes_wait() {
    let (slow, _started) = origin::slow("slow", Duration::from_secs(3)).await;
    let gh = start(
        &[service_yaml("default", "slow", &[slow])],
        &[
            ingress("hasty")
                .annotation(&ng("proxy-read-timeout"), "1")
                .prefix("hasty.test", "/", svc("slow", 80))
                .yaml(),
            ingress("patient")
                .prefix("patient.test", "/", svc("slow", 80))
                .yaml(),
        ],
        &[],
    );
    let client = gh.client_for(&["hasty.test", "patient.test"]);
    let started = Instant::now();
    let (status, body) = get(&client, "http://hasty.test/").await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "504 after {took:?}, the read timeout is 1 s"
    );
    assert!(!body.contains("\"origin\""), "{body}");
    // The same backend on a route without the annotation: the global 60 s apply.
    let started = Instant::now();
    let (status, body) = get(&client, "http://patient.test/").await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"upstream_timeout\""]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_cuts_a_body_that_stalls_midway() {
    let stuck = origin::stalling_body("first chunk;", Duration::from_secs(30)).await;
    let gh = start(
        &[service_yaml("default", "stuck", &[stuck])],
        &[ingress("hasty")
            .annotation(&ng("proxy-read-timeout"), "1")
            .prefix("hasty.test", "/", svc("stuck", 80))
            .yaml()],
        &[],
    );
    let client = gh.client_for(&["hasty.test"]);
    let mut resp = client.get("http://hasty.test/").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("first chunk");
    assert_eq!(first, "first chunk;");
    let started = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the body hung instead of being cut");
    assert!(rest.is_err(), "the body ended cleanly: {rest:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "cut after {took:?}"
    );
    support::wait_until("the cut counted", Duration::from_secs(5), || {
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"upstream_body_cut\""],
        ) >= 1.0
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_of_the_route_replaces_the_global_one() {
    let (hole, _guard) = support::blackhole::blackhole_addr();
    let gh = start(
        &[service_yaml("default", "hole", &[hole])],
        &[
            ingress("hasty")
                .annotation(&ng("proxy-connect-timeout"), "1")
                .prefix("hasty.test", "/", svc("hole", 80))
                .yaml(),
            ingress("patient")
                .prefix("patient.test", "/", svc("hole", 80))
                .yaml(),
        ],
        &["--upstream-connect-timeout=4s"],
    );
    let client = gh.client_for(&["hasty.test", "patient.test"]);
    let started = Instant::now();
    let (status, body) = get(&client, "http://hasty.test/").await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "502 after {took:?}, the route's connect timeout is 1 s"
    );
    let started = Instant::now();
    let (status, _) = get(&client, "http://patient.test/").await;
    let took = started.elapsed();
    assert_eq!(status, 502);
    assert!(
        took >= Duration::from_millis(3800),
        "the global 4 s connect timeout applies without the annotation; gave up after {took:?}"
    );
}

/// Sends a POST with a large declared body from a task of its own and returns the status line
/// the gateway answers with (the body need not be taken in full).
async fn post_big_body(addr: SocketAddr, host: &str, len: usize) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            write.write_all(&chunk[..n]).await?;
            left -= n;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let n = read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&got)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    })
    .await
    .expect("no answer within 20 s");
    writer.abort();
    (line, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_timeout_answers_504_when_the_backend_stops_taking_the_body() {
    let (deaf, mut heads) = origin::not_reading_bodies().await;
    let gh = start(
        &[service_yaml("default", "deaf", &[deaf])],
        &[ingress("upload")
            .annotation(&ng("proxy-send-timeout"), "1")
            .annotation(&ng("proxy-read-timeout"), "60")
            .annotation(&ng("proxy-body-size"), "512m")
            .prefix("upload.test", "/", svc("deaf", 80))
            .yaml()],
        &[],
    );
    // Far more than the socket buffers between the gateway and the backend hold.
    let (line, took) = post_big_body(gh.http, "upload.test", 256 << 20).await;
    assert!(
        heads.try_recv().is_ok(),
        "the backend never got the request"
    );
    assert!(line.starts_with("HTTP/1.1 504"), "{line}");
    assert!(took < Duration::from_secs(10), "504 only after {took:?}");
    assert!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"upstream_timeout\""]
        ) >= 1.0
    );
}

// --- limit-connections ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_connections_refuses_one_more_per_address_and_gives_slots_back() {
    let (slow, mut started) = origin::slow("slow", Duration::from_millis(1500)).await;
    let gh = start(
        &[service_yaml("default", "slow", &[slow])],
        &[ingress("limited")
            .annotation(&ng("limit-connections"), "2")
            .prefix("limited.test", "/", svc("slow", 80))
            .yaml()],
        &[],
    );
    let url = "http://limited.test/";
    let busy = client_from(&gh, "limited.test", [127, 0, 0, 3]);
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let c = busy.clone();
            tokio::spawn(async move { get(&c, url).await.0 })
        })
        .collect();
    for _ in 0..2 {
        started.recv().await.expect("origin saw the request");
    }
    // The third concurrent request of the same address is refused at once.
    let t = Instant::now();
    let (status, body) = get(&busy, url).await;
    assert_eq!(status, 503, "{body}");
    assert!(t.elapsed() < Duration::from_millis(1000));
    assert!(!body.contains("\"origin\""), "{body}");
    // Another address has slots of its own.
    let other = client_from(&gh, "limited.test", [127, 0, 0, 4]);
    assert_eq!(get(&other, url).await.0, 200, "another address");
    for task in in_flight {
        assert_eq!(task.await.unwrap(), 200, "the requests within the limit");
    }
    // Their slots came back with their responses.
    let again: Vec<_> = (0..2)
        .map(|_| {
            let c = busy.clone();
            tokio::spawn(async move { get(&c, url).await.0 })
        })
        .collect();
    for task in again {
        assert_eq!(task.await.unwrap(), 200, "slots given back");
    }
    assert!(gh.metric("gatehouse_proxy_errors_total", &["reason=\"rate_limited\""]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_connections_counts_http2_streams_and_frees_abandoned_ones() {
    let (slow, mut started) = origin::slow("slow", Duration::from_secs(3)).await;
    let gh = start(
        &[service_yaml("default", "slow", &[slow])],
        &[ingress("limited")
            .annotation(&ng("limit-connections"), "2")
            .prefix("limited.test", "/", svc("slow", 80))
            .yaml()],
        &[],
    );
    let url = "http://limited.test/";
    let h2 = gh
        .client_builder(&["limited.test"])
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let abandoned: Vec<_> = (0..2)
        .map(|_| {
            let c = h2.clone();
            tokio::spawn(async move { get(&c, url).await.0 })
        })
        .collect();
    for _ in 0..2 {
        started.recv().await.expect("origin saw the request");
    }
    // Streams of one connection count one each.
    assert_eq!(get(&h2, url).await.0, 503, "a third stream");
    // The client gives up on both (RST_STREAM): their slots come back before the backend
    // would have answered them.
    for task in abandoned {
        task.abort();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let fresh: Vec<_> = (0..2)
        .map(|_| {
            let c = h2.clone();
            tokio::spawn(async move { get(&c, url).await.0 })
        })
        .collect();
    for task in fresh {
        assert_eq!(task.await.unwrap(), 200, "abandoned slots given back");
    }
    assert!(t.elapsed() >= Duration::from_secs(3));
}

// --- custom-http-errors and default-backend ---

/// A custom error backend as ingress-nginx's `custom-error-pages`: answers with the status
/// `X-Code` names (200 without one), its body what it received ([`origin::echo_json`]).
async fn error_pages_origin() -> SocketAddr {
    origin::serve(|req: Request<Incoming>| async move {
        let status = req
            .headers()
            .get("x-code")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(200u16);
        let seen = origin::echo_json("errors", req).await;
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(origin::full(Bytes::from(seen.to_string())))
            .unwrap()
    })
    .await
}

/// An app origin answering by path: `/missing` 404, `/down` 503, `/teapot` 418, else 200.
async fn app_origin() -> SocketAddr {
    origin::serve(|req: Request<Incoming>| async move {
        let status = match req.uri().path() {
            "/missing" => 404,
            "/down" => 503,
            "/teapot" => 418,
            _ => 200,
        };
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(origin::full(Bytes::from(format!("app says {status}"))))
            .unwrap()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_errors_are_answered_by_the_default_backend_with_the_original_status() {
    let app = app_origin().await;
    let errors = error_pages_origin().await;
    let gh = start(
        &[
            service_yaml("default", "app", &[app]),
            service_yaml("default", "errors", &[errors]),
            service_yaml("default", "empty", &[]),
        ],
        &[
            ingress("shop")
                .annotation(&ng("custom-http-errors"), "404,503")
                .annotation(&ng("default-backend"), "errors")
                .prefix("shop.test", "/", svc("app", 80))
                .yaml(),
            ingress("gone")
                .annotation(&ng("default-backend"), "errors")
                .prefix("gone.test", "/", svc("empty", 80))
                .yaml(),
            ingress("plain")
                .annotation(&ng("custom-http-errors"), "404")
                .prefix("plain.test", "/", svc("app", 80))
                .yaml(),
        ],
        &[],
    );
    let client = gh.client_for(&["shop.test", "gone.test", "plain.test"]);

    for (path, code) in [("/missing?x=1", 404), ("/down", 503)] {
        let resp = client
            .get(format!("http://shop.test{path}"))
            .header("accept", "application/json")
            .header("x-request-id", format!("req-{code}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code, "{path}");
        let body = resp.text().await.unwrap();
        let seen: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not the page: {body}"));
        assert_eq!(seen["origin"], "errors", "{body}");
        assert_eq!(
            seen["path"], "/",
            "ingress-nginx asks the default backend for /"
        );
        let h = &seen["headers"];
        assert_eq!(h["x-code"], code.to_string());
        assert_eq!(h["x-format"], "application/json");
        assert_eq!(h["x-original-uri"], path);
        assert_eq!(h["x-namespace"], "default");
        assert_eq!(h["x-ingress-name"], "shop");
        assert_eq!(h["x-service-name"], "app");
        assert_eq!(h["x-service-port"], "80");
        assert_eq!(h["x-request-id"], format!("req-{code}"));
        assert_eq!(h["host"], "shop.test");
    }
    // Statuses not intercepted pass through, and so do successes.
    assert_eq!(
        get(&client, "http://shop.test/teapot").await,
        (418, "app says 418".to_owned())
    );
    assert_eq!(
        get(&client, "http://shop.test/ok").await,
        (200, "app says 200".to_owned())
    );

    // A Service with no endpoint: the default backend answers the request as it is.
    let (status, body) = get(&client, "http://gone.test/some/page?q=1").await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["origin"], "errors");
    assert_eq!(seen["path"], "/some/page?q=1");

    // Without a default backend: Gatehouse's own short answer of the status.
    let (status, body) = get(&client, "http://plain.test/missing").await;
    assert_eq!(status, 404);
    assert_eq!(body, "404 Not Found\n");
    assert_eq!(
        get(&client, "http://plain.test/down").await,
        (503, "app says 503".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_get_the_page_and_a_failing_default_backend_gets_the_short_answer() {
    let (slow, _started) = origin::slow("slow", Duration::from_secs(3)).await;
    let app = app_origin().await;
    let errors = error_pages_origin().await;
    let gh = start(
        &[
            service_yaml("default", "slow", &[slow]),
            service_yaml("default", "app", &[app]),
            service_yaml("default", "errors", &[errors]),
            service_yaml("default", "dead", &[origin::refused_addr()]),
        ],
        &[
            ingress("maintenance")
                .annotation(&ng("custom-http-errors"), "502,504")
                .annotation(&ng("default-backend"), "errors")
                .annotation(&ng("proxy-read-timeout"), "1")
                .prefix("slow.test", "/", svc("slow", 80))
                .yaml(),
            ingress("broken")
                .annotation(&ng("custom-http-errors"), "404")
                .annotation(&ng("default-backend"), "dead")
                .prefix("broken.test", "/", svc("app", 80))
                .yaml(),
        ],
        &[],
    );
    let client = gh.client_for(&["slow.test", "broken.test"]);
    // A read timeout (504) is intercepted like an upstream answer, and still counted.
    let (status, body) = get(&client, "http://slow.test/report").await;
    assert_eq!(status, 504, "{body}");
    let seen: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not the page: {body}"));
    assert_eq!(seen["origin"], "errors");
    assert_eq!(seen["headers"]["x-code"], "504");
    assert_eq!(seen["headers"]["x-original-uri"], "/report");
    assert!(
        gh.metric(
            "gatehouse_proxy_errors_total",
            &["reason=\"upstream_timeout\""]
        ) >= 1.0
    );
    // A default backend that cannot be reached: Gatehouse answers the status itself.
    let (status, body) = get(&client, "http://broken.test/missing").await;
    assert_eq!((status, body.as_str()), (404, "404 Not Found\n"));
}
