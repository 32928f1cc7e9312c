//! An in-process fake Kubernetes API server that speaks the real HTTP protocol, so the real
//! `gatehouse` binary (kube-rs client, reflectors, leader election) runs against it unchanged.
//!
//! It serves:
//! - lists (`GET` on a collection): JSON with `metadata.resourceVersion`, items filtered by
//!   `labelSelector` (`k`, `!k`, `k=v`, `k!=v`) and `fieldSelector` (`path=v`, `path!=v`), in
//!   pages of `limit` items with a `continue` token;
//! - watches (`?watch=true&resourceVersion=N`): newline-delimited `ADDED`/`MODIFIED`/`DELETED`
//!   events after N (an object leaving or entering a selector is `DELETED`/`ADDED`, as the real
//!   server does), `BOOKMARK`s every second when asked, and an `ERROR` event with a `410 Expired`
//!   Status for a compacted resourceVersion;
//! - `GET`/`POST`/`PUT` (with resourceVersion conflicts)/`PATCH` (JSON merge patch)/`DELETE` on
//!   items, and the `status` subresource;
//! - `/version`;
//! - metadata-only requests (`Accept: application/json;as=PartialObjectMetadata…`, as kube-rs
//!   sends for `Api<PartialObjectMeta<K>>`): lists, watches and gets answer
//!   `PartialObjectMetadata` objects, metadata without data.
//!
//! Test controls: put and delete objects, go unavailable (503 or refused connections) and come
//! back, expire watches (410 on the next watch), and inspect every write.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

/// A kind the fake serves.
#[derive(Debug)]
struct Res {
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
}

const RESOURCES: &[Res] = &[
    Res {
        api_version: "networking.k8s.io/v1",
        kind: "IngressClass",
        plural: "ingressclasses",
        namespaced: false,
    },
    Res {
        api_version: "networking.k8s.io/v1",
        kind: "Ingress",
        plural: "ingresses",
        namespaced: true,
    },
    Res {
        api_version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
    },
    Res {
        api_version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
    },
    Res {
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
    Res {
        api_version: "v1",
        kind: "Node",
        plural: "nodes",
        namespaced: false,
    },
    Res {
        api_version: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        namespaced: true,
    },
    Res {
        api_version: "gatehouse.dev/v1alpha1",
        kind: "StaticSite",
        plural: "staticsites",
        namespaced: true,
    },
    Res {
        api_version: "coordination.k8s.io/v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
    },
    Res {
        api_version: "events.k8s.io/v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
    },
];

fn res_by_kind(kind: &str) -> &'static Res {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve {kind}"))
}

/// How the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Every request gets `503 Service Unavailable`.
    Unavailable,
    /// Connections are closed as soon as they are accepted.
    Refusing,
}

/// One write a client made (POST, PUT, PATCH, DELETE).
#[derive(Clone, Debug)]
pub struct Write {
    pub method: String,
    /// Path without query, e.g. `/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status`.
    pub path: String,
    pub content_type: String,
    pub body: Value,
    /// HTTP status the fake answered.
    pub status: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
struct Entry {
    rv: u64,
    res: &'static Res,
    namespace: String,
    change: Change,
    old: Option<Value>,
    new: Value,
}

#[derive(Debug)]
struct State {
    rv: u64,
    /// Watches from a resourceVersion below this get 410.
    compacted: u64,
    /// Bumped to cut every open connection and watch.
    epoch: u64,
    mode: Mode,
    objects: BTreeMap<(&'static str, String, String), Value>,
    log: Vec<Entry>,
    writes: Vec<Write>,
    requests: Vec<String>,
    /// `Kind namespace/name` of every object sent in full (not metadata-only).
    served_in_full: std::collections::BTreeSet<String>,
    uids: u64,
    /// Plurals answered with 404, as for a CRD that is not installed.
    hidden: Vec<&'static str>,
    /// Each object as a list item (JSON), with the resourceVersion it was made from: lists are
    /// served from these, as the real server serves them from its watch cache.
    items: std::collections::HashMap<(&'static str, String, String), (String, Bytes)>,
}

struct Inner {
    state: Mutex<State>,
    /// Ticks on every change (objects, mode, epoch): watches and connections look again.
    tick: watch::Sender<u64>,
    /// Held by a client's write until it is in `writes`, and by the inspection methods: a test
    /// never sees an object changed (or gone) by a write it cannot find in `writes` yet.
    write_step: Mutex<()>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.tick.send_modify(|t| *t += 1);
    }

    fn write_step(&self) -> MutexGuard<'_, ()> {
        self.write_step.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake API server; stops with the test's runtime.
#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeApi {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake API");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                rv: 1,
                compacted: 0,
                epoch: 0,
                mode: Mode::Up,
                objects: BTreeMap::new(),
                log: Vec::new(),
                writes: Vec::new(),
                requests: Vec::new(),
                served_in_full: Default::default(),
                uids: 0,
                hidden: Vec::new(),
                items: Default::default(),
            }),
            tick: watch::Sender::new(0),
            write_step: Mutex::new(()),
        });
        let server = inner.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (mode, epoch) = {
                    let st = server.lock();
                    (st.mode, st.epoch)
                };
                if mode == Mode::Refusing {
                    drop(stream);
                    continue;
                }
                let inner = server.clone();
                tokio::spawn(async move {
                    let mut tick = inner.tick.subscribe();
                    let svc_inner = inner.clone();
                    let service = service_fn(move |req| {
                        let inner = svc_inner.clone();
                        async move { Ok::<_, Infallible>(handle(inner, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    let mut conn = std::pin::pin!(conn);
                    loop {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            changed = tick.changed() => {
                                if changed.is_err() || inner.lock().epoch != epoch {
                                    return; // dropping the connection closes the socket
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { addr, inner }
    }

    /// Writes a kubeconfig for this server (plain http, no credentials) into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: gatehouse\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    // --- objects ---

    /// Creates or replaces every object of a multi-document YAML text.
    pub fn apply_yaml(&self, yaml: &str) {
        // As a stream: the parser's limits then hold per document, so a text may hold any
        // number of them.
        let mut reader = yaml.as_bytes();
        for doc in serde_saphyr::read::<_, Value>(&mut reader) {
            let doc = doc.expect("yaml");
            if !doc.is_null() {
                self.apply(doc);
            }
        }
    }

    /// Creates or replaces one object (as `kubectl apply` would); returns it as stored.
    pub fn apply(&self, object: Value) -> Value {
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let res = res_by_kind(&kind);
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let namespace = if res.namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let stored = {
            let mut st = self.inner.lock();
            let old = st
                .objects
                .get(&(res.plural, namespace.clone(), name.clone()))
                .cloned();
            st.store(res, &namespace, &name, object, old)
        };
        self.inner.bump();
        stored
    }

    /// Deletes an object; true if it existed.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let res = res_by_kind(kind);
        let namespace = if res.namespaced { namespace } else { "" };
        let existed = self.inner.lock().remove(res, namespace, name);
        self.inner.bump();
        existed
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = res_by_kind(kind);
        let namespace = if res.namespaced { namespace } else { "" };
        let _step = self.inner.write_step();
        self.inner
            .lock()
            .objects
            .get(&(res.plural, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored object of a kind.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let res = res_by_kind(kind);
        let _step = self.inner.write_step();
        let st = self.inner.lock();
        st.objects
            .iter()
            .filter(|((plural, _, _), _)| *plural == res.plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The Events clients created.
    pub fn events(&self) -> Vec<Value> {
        self.list("Event")
    }

    // --- failures ---

    /// Answers every request with 503 and cuts open watches.
    pub fn set_unavailable(&self) {
        self.set_mode(Mode::Unavailable);
    }

    /// Closes every connection, open or new, as soon as it is made.
    pub fn refuse_connections(&self) {
        self.set_mode(Mode::Refusing);
    }

    /// Serves normally again.
    pub fn restore(&self) {
        self.set_mode(Mode::Up);
    }

    fn set_mode(&self, mode: Mode) {
        {
            let mut st = self.inner.lock();
            st.mode = mode;
            st.epoch += 1;
        }
        self.inner.bump();
    }

    /// Serves `kind` no more (404 on every path of it), as when its CRD is not installed.
    pub fn hide_kind(&self, kind: &str) {
        let res = res_by_kind(kind);
        self.inner.lock().hidden.push(res.plural);
    }

    /// Compacts history: every open watch is cut and resuming it from its resourceVersion gets
    /// `410 Gone`, so clients must list again.
    pub fn expire_watches(&self) {
        {
            let mut st = self.inner.lock();
            st.rv += 1;
            st.compacted = st.rv;
            st.epoch += 1;
        }
        self.inner.bump();
    }

    // --- inspection ---

    /// Every write clients made, oldest first.
    pub fn writes(&self) -> Vec<Write> {
        let _step = self.inner.write_step();
        self.inner.lock().writes.clone()
    }

    /// The writes to `.../ingresses/NAME/status`.
    pub fn status_patches(&self) -> Vec<Write> {
        self.writes()
            .into_iter()
            .filter(|w| w.path.contains("/ingresses/") && w.path.ends_with("/status"))
            .collect()
    }

    /// `METHOD path?query` of every request, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().requests.clone()
    }

    /// `Kind namespace/name` of every object a client was sent in full (in a list, a watch or a
    /// get), as opposed to its metadata only.
    pub fn served_in_full(&self) -> Vec<String> {
        self.inner.lock().served_in_full.iter().cloned().collect()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }
}

// === impl State ===

impl State {
    /// Stores an object as the server would: server-set metadata, a new resourceVersion, a log
    /// entry for watchers.
    fn store(
        &mut self,
        res: &'static Res,
        namespace: &str,
        name: &str,
        mut object: Value,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        object["apiVersion"] = json!(res.api_version);
        object["kind"] = json!(res.kind);
        let meta = object
            .as_object_mut()
            .expect("object")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        meta["name"] = json!(name);
        if res.namespaced {
            meta["namespace"] = json!(namespace);
        }
        meta["resourceVersion"] = json!(rv.to_string());
        match &old {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            }
            None => {
                self.uids += 1;
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uids));
                if meta.get("creationTimestamp").is_none_or(Value::is_null) {
                    meta["creationTimestamp"] = json!(now_rfc3339(self.uids));
                }
            }
        }
        self.objects.insert(
            (res.plural, namespace.to_owned(), name.to_owned()),
            object.clone(),
        );
        self.log.push(Entry {
            rv,
            res,
            namespace: namespace.to_owned(),
            change: if old.is_some() {
                Change::Modified
            } else {
                Change::Added
            },
            old,
            new: object.clone(),
        });
        object
    }

    fn remove(&mut self, res: &'static Res, namespace: &str, name: &str) -> bool {
        let Some(mut old) =
            self.objects
                .remove(&(res.plural, namespace.to_owned(), name.to_owned()))
        else {
            return false;
        };
        self.rv += 1;
        old["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.log.push(Entry {
            rv: self.rv,
            res,
            namespace: namespace.to_owned(),
            change: Change::Deleted,
            old: None,
            new: old,
        });
        true
    }
}

/// Creation times that sort in creation order (the gateway settles Ingress conflicts by age):
/// one second apart from 2024-01-01.
fn now_rfc3339(seq: u64) -> String {
    let t = 1_704_067_200 + seq;
    let (days, rem) = (t / 86400, t % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

// --- HTTP ---

/// What a request path names.
struct Target {
    res: &'static Res,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    let res = RESOURCES
        .iter()
        .find(|r| r.api_version == api_version && r.plural == plural)?;
    Some(Target {
        res,
        namespace,
        name,
        subresource,
    })
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .expect("response")
}

fn status_error(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).expect("code"),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let params = query(&req);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let metadata_only = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    {
        let mut st = inner.lock();
        let q = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        st.requests.push(format!("{method} {path}{q}"));
        if st.mode != Mode::Up {
            drop(st);
            return status_error(503, "ServiceUnavailable", "the fake API server is down");
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if path == "/version" {
        return json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
        );
    }
    let target = parse_path(&path).filter(|t| !inner.lock().hidden.contains(&t.res.plural));
    let Some(target) = target else {
        return status_error(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    };
    let body_json: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return status_error(400, "BadRequest", &format!("invalid JSON: {e}")),
        }
    };
    // A handle of its own: `inner` itself goes to a watch below.
    let stepping = inner.clone();
    let _step = (method != Method::GET).then(|| stepping.write_step());
    let response = match (&method, &target.name) {
        (&Method::GET, None) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            return start_watch(inner, &target, &params, metadata_only);
        }
        (&Method::GET, None) => list(&inner, &target, &params, metadata_only),
        (&Method::GET, Some(name)) => get_one(&inner, &target, name, metadata_only),
        (&Method::POST, None) => create(&inner, &target, body_json.clone()),
        (&Method::PUT, Some(name)) => replace(&inner, &target, name, body_json.clone()),
        (&Method::PATCH, Some(name)) => patch(&inner, &target, name, &content_type, &body_json),
        (&Method::DELETE, Some(name)) => {
            let ns = target.namespace.clone().unwrap_or_default();
            let removed = {
                let mut st = inner.lock();
                st.remove(target.res, &ns, name)
            };
            if removed {
                inner.bump();
                json_response(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                )
            } else {
                status_error(
                    404,
                    "NotFound",
                    &format!("{} {name} not found", target.res.plural),
                )
            }
        }
        _ => status_error(405, "MethodNotAllowed", "not supported by the fake"),
    };
    if method != Method::GET {
        let status = response.status().as_u16();
        inner.lock().writes.push(Write {
            method: method.to_string(),
            path,
            content_type,
            body: body_json,
            status,
        });
    }
    response
}

fn matches_scope(target: &Target, namespace: &str) -> bool {
    target.namespace.as_deref().is_none_or(|ns| ns == namespace)
}

/// Selector requirements: `(path, op, value)` with op one of `=`, `!=`, `exists`, `!exists`.
fn parse_selector(text: Option<&String>) -> Vec<(String, &'static str, String)> {
    let Some(text) = text else { return Vec::new() };
    text.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            if let Some(key) = r.strip_prefix('!') {
                (key.to_owned(), "!exists", String::new())
            } else if let Some((k, v)) = r.split_once("!=") {
                (k.to_owned(), "!=", v.to_owned())
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                (k.to_owned(), "=", v.to_owned())
            } else {
                (r.to_owned(), "exists", String::new())
            }
        })
        .collect()
}

struct Selectors {
    labels: Vec<(String, &'static str, String)>,
    fields: Vec<(String, &'static str, String)>,
}

impl Selectors {
    fn from(params: &BTreeMap<String, String>) -> Self {
        Self {
            labels: parse_selector(params.get("labelSelector")),
            fields: parse_selector(params.get("fieldSelector")),
        }
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label_ok = self.labels.iter().all(|(k, op, v)| {
            let value = labels.get(k).and_then(Value::as_str);
            match *op {
                "exists" => value.is_some(),
                "!exists" => value.is_none(),
                "=" => value == Some(v.as_str()),
                _ => value != Some(v.as_str()),
            }
        });
        let field_ok = self.fields.iter().all(|(path, op, v)| {
            let mut cur = object;
            for part in path.split('.') {
                cur = &cur[part];
            }
            let value = cur.as_str().unwrap_or("");
            match *op {
                "=" => value == v,
                "!=" => value != v,
                _ => true,
            }
        });
        label_ok && field_ok
    }
}

/// What a client is sent of `object`: all of it (noted in `served_in_full`), or its metadata.
fn shown(
    object: &Value,
    res: &Res,
    metadata_only: bool,
    served_in_full: &mut std::collections::BTreeSet<String>,
) -> Value {
    let meta = &object["metadata"];
    if metadata_only {
        return json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                      "metadata": meta});
    }
    let ns = meta["namespace"].as_str().unwrap_or_default();
    let name = meta["name"].as_str().unwrap_or_default();
    served_in_full.insert(format!("{} {ns}/{name}", res.kind));
    object.clone()
}

fn list(
    inner: &Inner,
    target: &Target,
    params: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Response<Body> {
    let selectors = Selectors::from(params);
    // Pages as the real server cuts them with `limit`: `continue` carries the resourceVersion of
    // the first page (every page reports it, so a watch from there misses nothing) and the
    // offset to go on from.
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let from = params
        .get("continue")
        .and_then(|c| c.split_once(':'))
        .and_then(|(rv, offset)| Some((rv.parse::<u64>().ok()?, offset.parse::<usize>().ok()?)));
    let mut st = inner.lock();
    let (rv, offset) = from.unwrap_or((st.rv, 0));
    let plural = target.res.plural;
    let keys: Vec<(&'static str, String, String)> = st
        .objects
        .range((plural, String::new(), String::new())..)
        .take_while(|((p, _, _), _)| *p == plural)
        .filter(|((_, ns, _), _)| matches_scope(target, ns))
        .filter(|(_, o)| selectors.matches(o))
        .skip(offset)
        .take(limit.saturating_add(1))
        .map(|(key, _)| key.clone())
        .collect();
    let more = keys.len() > limit;
    let mut body = Vec::new();
    for key in keys.iter().take(limit) {
        let State {
            objects,
            items,
            served_in_full,
            ..
        } = &mut *st;
        let object = &objects[key];
        if metadata_only {
            let item = shown(object, target.res, true, served_in_full);
            body.push(if body.is_empty() { b'[' } else { b',' });
            body.extend_from_slice(item.to_string().as_bytes());
            continue;
        }
        shown(object, target.res, false, served_in_full);
        let version = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        let item = match items.get(key) {
            Some((made_from, item)) if made_from == version => item.clone(),
            _ => {
                // Items of built-in lists carry no apiVersion/kind, as the real server sends them.
                let mut o = object.clone();
                if let Some(map) = o.as_object_mut()
                    && !target.res.api_version.starts_with("gatehouse.dev")
                {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                let item = Bytes::from(o.to_string());
                items.insert(key.clone(), (version.to_owned(), item.clone()));
                item
            }
        };
        body.push(if body.is_empty() { b'[' } else { b',' });
        body.extend_from_slice(&item);
    }
    if body.is_empty() {
        body.push(b'[');
    }
    body.push(b']');
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if more {
        metadata["continue"] = json!(format!("{rv}:{}", offset + limit));
    }
    let (kind, api_version) = if metadata_only {
        ("PartialObjectMetadataList".to_owned(), "meta.k8s.io/v1")
    } else {
        (format!("{}List", target.res.kind), target.res.api_version)
    };
    let head = json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": metadata,
    })
    .to_string();
    // `{...head...,"items":[...]}`
    let mut out = Vec::with_capacity(head.len() + body.len() + 10);
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"items\":");
    out.extend_from_slice(&body);
    out.push(b'}');
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(out)).boxed_unsync())
        .expect("response")
}

fn get_one(inner: &Inner, target: &Target, name: &str, metadata_only: bool) -> Response<Body> {
    let ns = target.namespace.clone().unwrap_or_default();
    let mut st = inner.lock();
    let State {
        objects,
        served_in_full,
        ..
    } = &mut *st;
    match objects.get(&(target.res.plural, ns, name.to_owned())) {
        Some(o) => json_response(
            StatusCode::OK,
            &shown(o, target.res, metadata_only, served_in_full),
        ),
        None => status_error(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", target.res.plural),
        ),
    }
}

fn create(inner: &Inner, target: &Target, body: Value) -> Response<Body> {
    let ns = target.namespace.clone().unwrap_or_default();
    let stored = {
        let mut st = inner.lock();
        let name = match body["metadata"]["name"].as_str() {
            Some(n) => n.to_owned(),
            None => match body["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{:05}", st.uids + 1),
                None => return status_error(422, "Invalid", "metadata.name is required"),
            },
        };
        if st
            .objects
            .contains_key(&(target.res.plural, ns.clone(), name.clone()))
        {
            return status_error(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", target.res.plural),
            );
        }
        st.store(target.res, &ns, &name, body, None)
    };
    inner.bump();
    json_response(StatusCode::CREATED, &stored)
}

fn replace(inner: &Inner, target: &Target, name: &str, body: Value) -> Response<Body> {
    let ns = target.namespace.clone().unwrap_or_default();
    let stored = {
        let mut st = inner.lock();
        let key = (target.res.plural, ns.clone(), name.to_owned());
        let Some(old) = st.objects.get(&key).cloned() else {
            return status_error(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", target.res.plural),
            );
        };
        let wanted = body["metadata"]["resourceVersion"].as_str();
        if wanted.is_some_and(|rv| Some(rv) != old["metadata"]["resourceVersion"].as_str()) {
            return status_error(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    target.res.plural
                ),
            );
        }
        let new = if target.subresource.as_deref() == Some("status") {
            let mut new = old.clone();
            new["status"] = body["status"].clone();
            new
        } else {
            let mut new = body;
            new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            if new["status"].is_null() {
                new.as_object_mut().map(|m| m.remove("status"));
            }
            new
        };
        st.store(target.res, &ns, name, new, Some(old))
    };
    inner.bump();
    json_response(StatusCode::OK, &stored)
}

fn patch(
    inner: &Inner,
    target: &Target,
    name: &str,
    content_type: &str,
    body: &Value,
) -> Response<Body> {
    if !content_type.starts_with("application/merge-patch+json")
        && !content_type.starts_with("application/strategic-merge-patch+json")
    {
        return status_error(
            415,
            "UnsupportedMediaType",
            &format!("the fake only takes merge patches, not {content_type}"),
        );
    }
    let ns = target.namespace.clone().unwrap_or_default();
    let stored = {
        let mut st = inner.lock();
        let key = (target.res.plural, ns.clone(), name.to_owned());
        let Some(old) = st.objects.get(&key).cloned() else {
            return status_error(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", target.res.plural),
            );
        };
        let mut new = old.clone();
        if target.subresource.as_deref() == Some("status") {
            // The status subresource changes status only, whatever else the patch says.
            let mut status = new.get("status").cloned().unwrap_or(json!({}));
            merge_patch(&mut status, &body["status"]);
            new["status"] = status;
        } else {
            let mut patch = body.clone();
            if let Some(map) = patch.as_object_mut() {
                map.remove("status");
            }
            merge_patch(&mut new, &patch);
        }
        st.store(target.res, &ns, name, new, Some(old))
    };
    inner.bump();
    json_response(StatusCode::OK, &stored)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
}

/// Answers a watch: a stream of events after the asked resourceVersion, until the client goes,
/// the server's epoch changes, or `timeoutSeconds` pass.
fn start_watch(
    inner: Arc<Inner>,
    target: &Target,
    params: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let selectors = Selectors::from(params);
    let from: Option<u64> = params.get("resourceVersion").and_then(|v| v.parse().ok());
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(290));
    let res = target.res;
    let scope = target.namespace.clone();
    tokio::spawn(async move {
        let mut tick = inner.tick.subscribe();
        // Decided under the lock, sent after it (a guard must not live across an await).
        let start: Result<(u64, u64, Vec<Bytes>), Value> = {
            let mut st = inner.lock();
            match from {
                Some(rv) if rv != 0 && rv < st.compacted => Err(json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {rv} ({})", st.compacted),
                    "reason": "Expired", "code": 410})),
                Some(rv) if rv != 0 => Ok((st.epoch, rv, Vec::new())),
                _ => {
                    // No resourceVersion: the current objects as ADDED, then changes.
                    let State {
                        objects,
                        served_in_full,
                        ..
                    } = &mut *st;
                    let lines: Vec<Bytes> = objects
                        .iter()
                        .filter(|((plural, ns, _), _)| {
                            *plural == res.plural && scope.as_deref().is_none_or(|s| s == ns)
                        })
                        .filter(|(_, o)| selectors.matches(o))
                        .map(|(_, o)| {
                            watch_line("ADDED", &shown(o, res, metadata_only, served_in_full))
                        })
                        .collect();
                    Ok((st.epoch, st.rv, lines))
                }
            }
        };
        let (epoch, mut cursor) = match start {
            Err(status) => {
                let _ = tx.send(watch_line("ERROR", &status)).await;
                return;
            }
            Ok((epoch, cursor, lines)) => {
                for line in lines {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                (epoch, cursor)
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
        loop {
            let (lines, closed) = {
                let mut st = inner.lock();
                let State {
                    log,
                    served_in_full,
                    ..
                } = &mut *st;
                let mut lines = Vec::new();
                for entry in log.iter().filter(|e| e.rv > cursor) {
                    if entry.res.plural != res.plural
                        || scope.as_deref().is_some_and(|s| s != entry.namespace)
                    {
                        continue;
                    }
                    let now = selectors.matches(&entry.new);
                    let before = entry.old.as_ref().is_some_and(|o| selectors.matches(o));
                    let kind = match (entry.change, before, now) {
                        (Change::Added, _, true) => "ADDED",
                        (Change::Deleted, _, true) => "DELETED",
                        (Change::Modified, true, true) => "MODIFIED",
                        (Change::Modified, false, true) => "ADDED",
                        (Change::Modified, true, false) => "DELETED",
                        _ => continue,
                    };
                    lines.push(watch_line(
                        kind,
                        &shown(&entry.new, res, metadata_only, served_in_full),
                    ));
                }
                cursor = st.rv;
                (lines, st.epoch != epoch || st.mode != Mode::Up)
            };
            if closed {
                return;
            }
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                changed = tick.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(next_bookmark) => {
                    next_bookmark += BOOKMARK_EVERY;
                    if bookmarks {
                        let mark = json!({"kind": res.kind, "apiVersion": res.api_version,
                            "metadata": {"resourceVersion": cursor.to_string()}});
                        if tx.send(watch_line("BOOKMARK", &mark)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("response")
}
