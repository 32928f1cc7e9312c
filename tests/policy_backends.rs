//! Backend choices through the real binary, with three real origins each answering its own
//! name: cookie session affinity (`affinity`, `session-cookie-*`, `affinity-mode`,
//! `session-cookie-change-on-failure`, a sticky canary), `upstream-hash-by`, and `GRPCS`
//! (gRPC over TLS and HTTP/2 to a real TLS origin, trailers back to the client). Assertions
//! follow ingress-nginx's e2e tests (affinity.go, upstreamhashby.go, grpc.go).
mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use tokio::task::JoinHandle;

use support::certs::{Ca, provider};
use support::yaml::{docs, ingress, svc};
use support::{Gatehouse, service_yaml};

const NG: &str = "nginx.ingress.kubernetes.io/";

fn ng(name: &str) -> String {
    format!("{NG}{name}")
}

/// An origin answering every request with its name; aborting the handle closes its listener
/// and every connection it has (a pod gone away).
async fn named_origin(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            conns.spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, task)
}

struct Origins {
    addrs: Vec<SocketAddr>,
    names: HashMap<SocketAddr, &'static str>,
    tasks: Vec<JoinHandle<()>>,
}

impl Origins {
    async fn start() -> Self {
        let mut out = Origins {
            addrs: Vec::new(),
            names: HashMap::new(),
            tasks: Vec::new(),
        };
        for name in ["o1", "o2", "o3"] {
            let (addr, task) = named_origin(name).await;
            out.addrs.push(addr);
            out.names.insert(addr, name);
            out.tasks.push(task);
        }
        out
    }

    fn addr_of(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .copied()
            .find(|a| self.names[a] == name)
            .unwrap()
    }

    /// Stops origin `name` (its endpoint stays in the Service).
    fn kill(&self, name: &str) {
        let i = self
            .addrs
            .iter()
            .position(|a| self.names[a] == name)
            .unwrap();
        self.tasks[i].abort();
    }
}

impl Drop for Origins {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One response: status, who answered, and its `Set-Cookie`.
struct Answer {
    status: u16,
    origin: String,
    set_cookie: Option<String>,
}

async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    Answer {
        status,
        origin: resp.text().await.unwrap(),
        set_cookie,
    }
}

/// `NAME=VALUE` of a `Set-Cookie` value, as a client sends it back.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

fn web_service(endpoints: &[SocketAddr]) -> String {
    service_yaml("default", "web", endpoints)
}

/// Rewrites the Service's endpoints and waits until the routes show `count` of them.
fn set_endpoints(gh: &Gatehouse, endpoints: &[SocketAddr]) {
    gh.write("web.yaml", &web_service(endpoints));
    let wanted: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
    gh.wait_routes("the new endpoints", |routes| {
        let text = routes.to_string();
        wanted.iter().all(|e| text.contains(e)) && text.matches("127.0.0.1:").count() > 0 && {
            // No endpoint beyond the wanted ones.
            let all: HashSet<&str> = text
                .split('"')
                .filter(|s| s.starts_with("127.0.0.1:"))
                .collect();
            all.len() == wanted.len()
        }
    });
}

fn start(origins: &Origins, ingresses: &[String], args: &[&str]) -> Gatehouse {
    Gatehouse::start_with(
        &[
            ("web.yaml", &web_service(&origins.addrs)),
            ("ingress.yaml", &docs(ingresses)),
        ],
        args,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_affinity_sets_the_documented_cookie_and_keeps_the_client_on_one_origin() {
    let origins = Origins::start().await;
    let gh = start(
        &origins,
        &[
            ingress("sticky")
                .annotation(&ng("affinity"), "cookie")
                .annotation(&ng("session-cookie-max-age"), "172800")
                .annotation(&ng("session-cookie-expires"), "172800")
                .annotation(&ng("session-cookie-samesite"), "Lax")
                .annotation(&ng("session-cookie-domain"), "app.test")
                .annotation(&ng("session-cookie-secure"), "true")
                .prefix("app.test", "/shop", svc("web", 80))
                .yaml(),
            ingress("named")
                .annotation(&ng("affinity"), "cookie")
                .annotation(&ng("session-cookie-name"), "SERVERID")
                .annotation(&ng("session-cookie-path"), "/")
                .prefix("named.test", "/app", svc("web", 80))
                .yaml(),
            ingress("plain")
                .prefix("plain.test", "/", svc("web", 80))
                .yaml(),
        ],
        &[],
    );
    let client = gh.client_for(&["app.test", "named.test", "plain.test"]);
    let url = format!("http://app.test:{}/shop/cart", gh.http.port());

    // The first answer sets the cookie, with the attributes ingress-nginx sets.
    let first = get(&client, &url, &[]).await;
    assert_eq!(first.status, 200);
    let cookie = first
        .set_cookie
        .expect("no affinity cookie on the first answer");
    assert!(cookie.starts_with("INGRESSCOOKIE="), "{cookie}");
    for attribute in [
        "Path=/shop",
        "Domain=app.test",
        "Max-Age=172800",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
    ] {
        assert!(
            cookie.split("; ").any(|a| a == attribute),
            "{attribute} missing: {cookie}"
        );
    }
    let expires = cookie
        .split("; ")
        .find_map(|a| a.strip_prefix("Expires="))
        .expect("Expires");
    let at = httpdate::parse_http_date(expires).expect("an HTTP date");
    let ahead = at
        .duration_since(std::time::SystemTime::now())
        .expect("Expires in the future");
    assert!(ahead > Duration::from_secs(172_000) && ahead <= Duration::from_secs(172_800));
    for addr in &origins.addrs {
        assert!(
            !cookie.contains(&addr.to_string()) && !cookie.contains(&addr.port().to_string()),
            "the cookie shows the endpoint: {cookie}"
        );
    }

    // 20 requests with the cookie all reach the origin that set it, and set nothing new.
    let sent = pair(&cookie);
    for _ in 0..20 {
        let a = get(&client, &url, &[("cookie", &sent)]).await;
        assert_eq!(a.origin, first.origin, "the cookie did not keep the origin");
        assert!(
            a.set_cookie.is_none(),
            "cookie set again: {:?}",
            a.set_cookie
        );
    }

    // Without it, requests spread (each gets a cookie of its own).
    let mut seen = HashSet::new();
    for _ in 0..30 {
        let a = get(&client, &url, &[]).await;
        assert!(a.set_cookie.is_some());
        seen.insert(a.origin);
    }
    assert!(seen.len() >= 2, "no spread without the cookie: {seen:?}");

    // A garbled or foreign cookie is a new session, not an error.
    let a = get(&client, &url, &[("cookie", "INGRESSCOOKIE=127.0.0.1:80")]).await;
    assert_eq!(a.status, 200);
    assert!(a.set_cookie.is_some());

    // Name and path as annotated; a route without affinity sets no cookie.
    let named = get(
        &client,
        &format!("http://named.test:{}/app/x", gh.http.port()),
        &[],
    )
    .await;
    let named_cookie = named.set_cookie.unwrap();
    assert!(named_cookie.starts_with("SERVERID="), "{named_cookie}");
    assert!(
        named_cookie.contains("; Path=/;") && !named_cookie.contains("Secure"),
        "{named_cookie}"
    );
    let plain = get(
        &client,
        &format!("http://plain.test:{}/", gh.http.port()),
        &[],
    )
    .await;
    assert!(plain.set_cookie.is_none());

    // The cookie's origin leaves the Endpoints: a live origin answers and sticks. In the
    // default (balanced) mode the cookie's key now hashes to a remaining origin, so it keeps
    // working as it is.
    let gone = origins.addr_of(&first.origin);
    let rest: Vec<SocketAddr> = origins
        .addrs
        .iter()
        .copied()
        .filter(|a| *a != gone)
        .collect();
    set_endpoints(&gh, &rest);
    let moved = get(&client, &url, &[("cookie", &sent)]).await;
    assert_eq!(moved.status, 200);
    assert_ne!(moved.origin, first.origin, "the removed origin answered");
    for _ in 0..10 {
        let a = get(&client, &url, &[("cookie", &sent)]).await;
        assert_eq!(a.origin, moved.origin, "not sticky after the move");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_affinity_gives_a_new_cookie_when_its_origin_is_gone() {
    let origins = Origins::start().await;
    let gh = start(
        &origins,
        &[ingress("sticky")
            .annotation(&ng("affinity"), "cookie")
            .annotation(&ng("affinity-mode"), "persistent")
            .prefix("app.test", "/", svc("web", 80))
            .yaml()],
        &[],
    );
    let client = gh.client_for(&["app.test"]);
    let url = format!("http://app.test:{}/", gh.http.port());
    let first = get(&client, &url, &[]).await;
    let sent = pair(&first.set_cookie.expect("cookie"));
    for _ in 0..20 {
        assert_eq!(
            get(&client, &url, &[("cookie", &sent)]).await.origin,
            first.origin
        );
    }
    // The same endpoint always gets the same cookie value (what replicas agree on).
    let mut values = HashMap::new();
    for _ in 0..15 {
        let a = get(&client, &url, &[]).await;
        let value = pair(&a.set_cookie.unwrap());
        let previous = values.insert(a.origin.clone(), value.clone());
        assert!(
            previous.is_none_or(|p| p == value),
            "{} got two cookies",
            a.origin
        );
    }

    let gone = origins.addr_of(&first.origin);
    let rest: Vec<SocketAddr> = origins
        .addrs
        .iter()
        .copied()
        .filter(|a| *a != gone)
        .collect();
    set_endpoints(&gh, &rest);
    let moved = get(&client, &url, &[("cookie", &sent)]).await;
    assert_eq!(moved.status, 200);
    assert_ne!(moved.origin, first.origin);
    let renewed = pair(&moved.set_cookie.expect("no new cookie for a gone endpoint"));
    assert_ne!(renewed, sent);
    for _ in 0..10 {
        let a = get(&client, &url, &[("cookie", &renewed)]).await;
        assert_eq!(a.origin, moved.origin);
        assert!(a.set_cookie.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_on_failure_moves_the_session_off_a_dead_origin() {
    let origins = Origins::start().await;
    let sticky = |name: &str, host: &str, change: &str| {
        ingress(name)
            .annotation(&ng("affinity"), "cookie")
            .annotation(&ng("affinity-mode"), "persistent")
            .annotation(&ng("session-cookie-change-on-failure"), change)
            .prefix(host, "/", svc("web", 80))
            .yaml()
    };
    let gh = start(
        &origins,
        &[
            sticky("change", "change.test", "true"),
            sticky("keep", "keep.test", "false"),
        ],
        &[],
    );
    let client = gh.client_for(&["change.test", "keep.test"]);
    let url = |host: &str| format!("http://{host}:{}/", gh.http.port());
    // Sessions on o2 for both routes (new sessions are round robin: ask until o2 answers).
    let mut cookies = HashMap::new();
    for host in ["change.test", "keep.test"] {
        for _ in 0..10 {
            let a = get(&client, &url(host), &[]).await;
            if a.origin == "o2" {
                cookies.insert(host, pair(&a.set_cookie.unwrap()));
                break;
            }
        }
    }
    origins.kill("o2");
    let a = get(
        &client,
        &url("change.test"),
        &[("cookie", &cookies["change.test"])],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_ne!(a.origin, "o2");
    let new = pair(&a.set_cookie.expect("change-on-failure set no new cookie"));
    let b = get(&client, &url("change.test"), &[("cookie", &new)]).await;
    assert_eq!(b.origin, a.origin);

    let a = get(
        &client,
        &url("keep.test"),
        &[("cookie", &cookies["keep.test"])],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_ne!(a.origin, "o2");
    assert!(
        a.set_cookie.is_none(),
        "without change-on-failure the session keeps its cookie"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_the_canary_served_stays_on_the_canary() {
    let origins = Origins::start().await;
    let (canary_addr, _canary_task) = named_origin("canary").await;
    let gh = Gatehouse::start_with(
        &[
            ("web.yaml", &web_service(&origins.addrs)),
            (
                "canary.yaml",
                &service_yaml("default", "canary", &[canary_addr]),
            ),
            (
                "ingress.yaml",
                &docs(&[
                    ingress("main")
                        .annotation(&ng("affinity"), "cookie")
                        .prefix("app.test", "/", svc("web", 80))
                        .yaml(),
                    ingress("canary")
                        .annotation(&ng("canary"), "true")
                        .annotation(&ng("canary-weight"), "50")
                        .prefix("app.test", "/", svc("canary", 80))
                        .yaml(),
                ]),
            ),
        ],
        &[],
    );
    let client = gh.client_for(&["app.test"]);
    let url = format!("http://app.test:{}/", gh.http.port());
    let mut sessions: HashMap<bool, String> = HashMap::new();
    for _ in 0..40 {
        let a = get(&client, &url, &[]).await;
        sessions
            .entry(a.origin == "canary")
            .or_insert_with(|| pair(&a.set_cookie.expect("cookie")));
        if sessions.len() == 2 {
            break;
        }
    }
    assert_eq!(sessions.len(), 2, "a 50% canary never (or always) answered");
    for _ in 0..15 {
        let a = get(&client, &url, &[("cookie", &sessions[&true])]).await;
        assert_eq!(a.origin, "canary", "a canary client left the canary");
        let a = get(&client, &url, &[("cookie", &sessions[&false])]).await;
        assert_ne!(a.origin, "canary", "a main client went to the canary");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hash_by_keeps_a_key_on_one_origin_and_spreads_keys() {
    let origins = Origins::start().await;
    let gh = start(
        &origins,
        &[ingress("hashed")
            .annotation(&ng("upstream-hash-by"), "$http_x_user")
            .prefix("app.test", "/", svc("web", 80))
            .yaml()],
        &[],
    );
    assert!(
        gh.routes()
            .to_string()
            .contains("\"hashBy\":\"${http_x_user}\""),
        "{}",
        gh.routes()
    );
    let client = gh.client_for(&["app.test"]);
    let url = format!("http://app.test:{}/", gh.http.port());
    let mut placed: HashMap<String, String> = HashMap::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let first = get(&client, &url, &[("x-user", &user)]).await.origin;
        for _ in 0..5 {
            let again = get(&client, &url, &[("x-user", &user)]).await.origin;
            assert_eq!(again, first, "{user} moved between origins");
        }
        placed.insert(user, first);
    }
    let used: HashSet<&String> = placed.values().collect();
    assert_eq!(
        used.len(),
        3,
        "30 keys did not spread over 3 origins: {placed:?}"
    );

    // Removing an origin moves only the keys that were on it.
    let gone = origins.addr_of("o3");
    let rest: Vec<SocketAddr> = origins
        .addrs
        .iter()
        .copied()
        .filter(|a| *a != gone)
        .collect();
    set_endpoints(&gh, &rest);
    for (user, before) in &placed {
        let now = get(&client, &url, &[("x-user", user)]).await.origin;
        if before == "o3" {
            assert_ne!(now, "o3");
        } else {
            assert_eq!(&now, before, "{user} moved off a remaining origin");
        }
    }
}

// === GRPCS ===

/// A gRPC message frame: uncompressed, 4-byte length, payload.
fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.into()
}

/// A gRPC server over TLS (ALPN `h2` only): answers each call with `hello <request payload>`
/// and the trailers `grpc-status: 0`, `grpc-message: ok from <name>`; headers tell what it
/// received (protocol, SNI, content type, TE).
async fn grpcs_origin(name: &'static str, ca: &Ca) -> SocketAddr {
    let leaf = ca.leaf(&["grpc.internal"]);
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let service = service_fn(move |req: Request<Incoming>| {
                    let (sni, alpn) = (sni.clone(), alpn.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let payload = body.get(5..).unwrap_or_default();
                        let mut reply = b"hello ".to_vec();
                        reply.extend_from_slice(payload);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        trailers.insert("grpc-message", format!("ok from {name}").parse().unwrap());
                        let frames = vec![
                            Ok::<_, std::convert::Infallible>(Frame::data(grpc_frame(&reply))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let header = |n: &str| {
                            parts
                                .headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let resp = Response::builder()
                            .header("content-type", "application/grpc")
                            .header("x-seen-version", format!("{:?}", parts.version))
                            .header("x-seen-alpn", alpn)
                            .header("x-seen-sni", sni)
                            .header("x-seen-content-type", header("content-type"))
                            .header("x-seen-te", header("te"))
                            .header("x-seen-path", parts.uri.path())
                            .body(StreamBody::new(futures_util::stream::iter(frames)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// One gRPC call to Gatehouse over h2c: status, headers, the reply message and the trailers.
async fn grpc_call(
    gateway: SocketAddr,
    host: &str,
    path: &str,
) -> (u16, http::HeaderMap, Bytes, Option<http::HeaderMap>) {
    let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{host}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(b"gatehouse")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, parts.headers, collected.to_bytes(), trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_speaks_http2_over_tls_and_trailers_reach_the_client() {
    let ca = Ca::new("grpc origin CA");
    let origin = grpcs_origin("grpcs", &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = ca.write_pem(dir.path(), "origin-ca");
    let bundle_arg = format!("--upstream-ca-bundle={}", bundle.display());
    let gh = Gatehouse::start_with(
        &[(
            "main.yaml",
            &docs(&[
                service_yaml("default", "grpc", &[origin]),
                ingress("grpcs")
                    .annotation(&ng("backend-protocol"), "GRPCS")
                    .annotation(&ng("proxy-ssl-name"), "grpc.internal")
                    .prefix("grpc.test", "/", svc("grpc", 80))
                    .yaml(),
                // Verified against its IP, which the certificate does not name: refused.
                ingress("unnamed")
                    .annotation(&ng("backend-protocol"), "GRPCS")
                    .prefix("unnamed.test", "/", svc("grpc", 80))
                    .yaml(),
            ]),
        )],
        &[&bundle_arg],
    );
    let (status, headers, body, trailers) =
        grpc_call(gh.http, "grpc.test", "/helloworld.Greeter/SayHello").await;
    assert_eq!(status, 200);
    let seen = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(seen("x-seen-version"), "HTTP/2.0");
    assert_eq!(seen("x-seen-alpn"), "h2");
    assert_eq!(seen("x-seen-sni"), "grpc.internal");
    assert_eq!(seen("x-seen-content-type"), "application/grpc");
    assert_eq!(seen("x-seen-te"), "trailers");
    assert_eq!(seen("x-seen-path"), "/helloworld.Greeter/SayHello");
    assert_eq!(body, grpc_frame(b"hello gatehouse"));
    let trailers = trailers.expect("no trailers reached the client");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "ok from grpcs");

    let (status, _, _, _) =
        grpc_call(gh.http, "unnamed.test", "/helloworld.Greeter/SayHello").await;
    assert_eq!(status, 502, "a certificate for another name was accepted");
    assert!(
        !gh.log_text().contains("backend-protocol GRPCS"),
        "GRPCS still warned about"
    );
}
