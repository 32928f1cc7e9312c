//! The Helm chart (`charts/gatehouse`) as a cluster admin meets it: rendered by real Helm for the
//! default values and for every file in `tests/chart_values/`, validated against the Kubernetes
//! OpenAPI schemas of several versions, scanned by checkov, and read back to check what it
//! deploys, what it grants and how the gateway is started.
//!
//! The gateway is also started from the rendered arguments, against the in-process fake API
//! server, and every request it makes is checked against the rendered RBAC.
//!
//! Needs `helm` (3.6.2), `kubernetes-validate` and `checkov` on PATH: run
//! `.ci/install-chart-tools` (as root) first. A missing tool fails the tests; it never skips them.
#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fake_apiserver::FakeApi;
use serde_json::{Value, json};
use support::{admin_get, free_port};

const RELEASE: &str = "rel";
const NAMESPACE: &str = "gh-system";
/// `<release>-<chart>`: the name of every namespaced object of the release.
const FULLNAME: &str = "rel-gatehouse";

/// Kubernetes versions the manifests must be valid for: 1.25 (the oldest the chart's README
/// promises) through 1.35; kubernetes-validate 1.37 bundles the schemas of 1.25–1.37.
const KUBERNETES_VERSIONS: &[&str] = &["1.25.0", "1.29.0", "1.31.0", "1.33.0", "1.35.0"];

/// checkov findings that do not apply to an ingress controller, skipped for every values file.
const CHECKOV_SKIPS: &[&str] = &[
    // "Image should use digest": the chart pins a release tag (appVersion) by default and offers
    // `image.digest` for admins who pin digests; a digest cannot be known before the image is built.
    "CKV_K8S_43",
    // "Image Pull Policy should be Always": release tags are immutable, and Always would make every
    // gateway restart depend on the registry being reachable (an outage would take ingress down).
    "CKV_K8S_15",
    // "Service Account Tokens only where necessary": the gateway is a controller; it watches the
    // API server (Ingresses, Services, EndpointSlices, Secrets) with that token.
    "CKV_K8S_38",
];

/// checkov findings that are the point of one values file.
fn checkov_skips_for(case: &str) -> &'static [&'static str] {
    match case {
        // "Do not specify hostPort": DaemonSet mode exists to publish the gateway on the nodes'
        // ports 80/443 (bare metal, no load balancer); the hostPorts are what the admin asked for.
        "daemonset-hostports" => &["CKV_K8S_26"],
        // "Containers should not share the host network namespace": binding the node's own
        // network (no hostPort NAT) is what hostNetwork is for.
        "daemonset-hostnetwork" => &["CKV_K8S_19"],
        _ => &[],
    }
}

// === tools ===

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/gatehouse")
}

/// The path of an installed tool; fails the test (never skips it) when the tool is missing.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run `.ci/install-chart-tools` (as root) first")
        })
}

fn run<I, S>(name: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(tool(name))
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|err| panic!("cannot run `{name}`: {err}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// === rendering ===

/// `helm template` of the chart as release `rel` in `gh-system`, CRDs included.
fn helm_template(extra: &[&str]) -> Output {
    let chart = chart_dir();
    let mut args: Vec<&OsStr> = vec![
        "template".as_ref(),
        RELEASE.as_ref(),
        chart.as_os_str(),
        "--namespace".as_ref(),
        NAMESPACE.as_ref(),
        "--include-crds".as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    run("helm", args)
}

/// The manifests the chart renders for a values file (`None`: the chart's defaults).
fn render(values_file: Option<&Path>) -> String {
    let values = values_file.map(|file| file.to_str().expect("values path is UTF-8"));
    let extra: Vec<&str> = values.into_iter().flat_map(|v| ["--values", v]).collect();
    let out = helm_template(&extra);
    assert!(
        out.status.success(),
        "helm template with {values:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A values file of `tests/chart_values/` by name.
fn values(name: &str) -> PathBuf {
    repo_root()
        .join("tests/chart_values")
        .join(format!("{name}.yaml"))
}

/// Every values file of `tests/chart_values/` (sorted), so a new file is checked without edits here.
fn values_files() -> Vec<PathBuf> {
    let dir = repo_root().join("tests/chart_values");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension() == Some(OsStr::new("yaml")))
        .collect();
    files.sort();
    files
}

/// The rendered documents, parsed.
fn manifests(rendered: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(rendered)
        .unwrap_or_else(|err| panic!("rendered chart is not YAML: {err}\n{rendered}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn render_docs(values_file: Option<&Path>) -> Vec<Value> {
    manifests(&render(values_file))
}

// === validation ===

/// Validates rendered manifests with kubernetes-validate (strict: unknown fields are errors) for
/// every version of `KUBERNETES_VERSIONS`.
///
/// kubernetes-validate only knows built-in kinds. For any other kind it prints a WARN line and
/// still exits 0, which would also let a built-in kind with a wrong or removed apiVersion (say
/// policy/v1beta1) pass. So every WARN fails here, except the one documented case: the
/// ServiceMonitor (a Prometheus Operator CRD whose schema the tool does not bundle; its content
/// is asserted in `watch_namespaces_default_class_monitoring_and_autoscaling`). And every other
/// document must have been reported as passed.
fn validate(rendered: &str) {
    validate_for(rendered, KUBERNETES_VERSIONS);
}

/// [`validate`] for some Kubernetes versions only (for a field newer than 1.25).
fn validate_for(rendered: &str, versions: &[&str]) {
    let docs = manifests(rendered);
    let not_built_in = docs
        .iter()
        .filter(|doc| doc["apiVersion"] == "monitoring.coreos.com/v1")
        .count();
    let file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    fs::write(file.path(), rendered).expect("write rendered manifests");

    for version in versions {
        let out = run(
            "kubernetes-validate",
            [
                OsStr::new("--strict"),
                OsStr::new("-k"),
                OsStr::new(version),
                file.path().as_os_str(),
            ],
        );
        let report = text(&out.stdout);
        let failed = !out.status.success()
            || report.lines().any(|line| {
                line.starts_with("WARN")
                    && !line
                        .contains("kind ServiceMonitor with api version monitoring.coreos.com/v1")
            });
        assert!(
            !failed,
            "kubernetes-validate --strict -k {version} rejected the chart:\n{report}{}",
            text(&out.stderr)
        );
        let passed = report
            .lines()
            .filter(|l| l.contains(" passed for "))
            .count();
        assert_eq!(
            passed,
            docs.len() - not_built_in,
            "kubernetes-validate -k {version} did not check every document:\n{report}"
        );
    }
}

/// Runs checkov over one rendered values case; any finding not skipped (with its reason) above
/// fails.
fn checkov(case: &str, rendered: &str) {
    // Not tempfile's default ".tmp…" name: checkov silently skips hidden directories.
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-chart-")
        .tempdir()
        .expect("temp dir");
    fs::write(dir.path().join(format!("{case}.yaml")), rendered).expect("write manifests");
    let skips: Vec<&str> = CHECKOV_SKIPS
        .iter()
        .chain(checkov_skips_for(case))
        .copied()
        .collect();
    let out = run(
        "checkov",
        [
            OsStr::new("--directory"),
            dir.path().as_os_str(),
            OsStr::new("--framework"),
            OsStr::new("kubernetes"),
            OsStr::new("--skip-download"),
            OsStr::new("--quiet"),
            OsStr::new("--compact"),
            OsStr::new("--output"),
            OsStr::new("json"),
            OsStr::new("--skip-check"),
            OsStr::new(&skips.join(",")),
        ],
    );
    let stdout = text(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!(
            "checkov printed no JSON report for {case} ({err}):\n{stdout}{}",
            text(&out.stderr)
        )
    });
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|check| {
            let field = |key: &str| check[key].as_str().unwrap_or_default().to_owned();
            format!(
                "{} {} ({})",
                field("check_id"),
                field("check_name"),
                field("resource")
            )
        })
        .collect();
    assert!(
        failed.is_empty() && out.status.success(),
        "checkov findings for {case}:\n{}",
        failed.join("\n")
    );
    assert!(
        report["summary"]["passed"].as_u64().unwrap_or(0) > 0,
        "checkov checked nothing for {case}:\n{stdout}"
    );
}

// === reading the manifests ===

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered; kinds: {:?}", kinds(docs)))
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .filter_map(|doc| doc["kind"].as_str())
        .map(str::to_owned)
        .collect()
}

/// The gateway container (first, whatever sidecars follow it).
fn container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("pod template has containers");
    assert_eq!(
        containers[0]["name"], "gatehouse",
        "the gateway container comes first"
    );
    &containers[0]
}

fn workload(docs: &[Value]) -> &Value {
    docs.iter()
        .find(|doc| doc["kind"] == "Deployment" || doc["kind"] == "DaemonSet")
        .expect("a Deployment or DaemonSet")
}

/// The value of the last `--flag=value` (a later flag overrides an earlier one).
fn flag(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args.iter()
        .rev()
        .find_map(|arg| arg.strip_prefix(&prefix))
        .map(str::to_owned)
}

/// `helm template` with `--set` overrides on top of a values file (or the defaults); the
/// rendered documents, or helm's error.
fn render_with(values_file: Option<&Path>, sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut extra: Vec<&str> = Vec::new();
    if let Some(file) = values_file {
        extra.extend(["--values", file.to_str().expect("UTF-8 path")]);
    }
    extra.extend(sets.iter().flat_map(|set| ["--set", *set]));
    let out = helm_template(&extra);
    if out.status.success() {
        Ok(manifests(&text(&out.stdout)))
    } else {
        Err(text(&out.stderr))
    }
}

fn args(workload: &Value) -> Vec<String> {
    container(workload)["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|arg| arg.as_str().expect("string argument").to_owned())
        .collect()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| item.as_str().expect("string item"))
        .collect()
}

fn container_port<'a>(workload: &'a Value, name: &str) -> &'a Value {
    container(workload)["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|port| port["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// (apiGroup, resource, verb) for every permission a Role or ClusterRole grants.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.to_owned(), resource.to_owned(), verb.to_owned()));
                }
            }
        }
    }
    out
}

/// Permissions as written in a rule: (apiGroup, resources, verbs).
type Rule = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

fn grant_set(list: &[Rule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (group, resources, verbs) in list {
        for resource in *resources {
            for verb in *verbs {
                out.insert((group.to_string(), resource.to_string(), verb.to_string()));
            }
        }
    }
    out
}

const READ: &[&str] = &["get", "list", "watch"];

/// What the gateway needs in a namespace whose Ingresses it serves, without ACME: read its
/// inputs, publish Ingress status, report Events.
fn served_namespace_grants() -> Vec<Rule> {
    vec![
        ("networking.k8s.io", &["ingresses"], READ),
        (
            "networking.k8s.io",
            &["ingresses/status"],
            &["update", "patch"],
        ),
        ("", &["services", "secrets"], READ),
        ("discovery.k8s.io", &["endpointslices"], READ),
        ("gatehouse.dev", &["staticsites"], READ),
        ("", &["events"], &["create", "patch"]),
        ("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

// === RBAC, as the API server's authorizer decides ===

/// One request of the chart's ServiceAccount, as `kubectl auth can-i` asks it.
#[derive(Debug)]
struct Access<'a> {
    verb: &'a str,
    group: &'a str,
    /// `secrets`, `ingresses/status`, ...
    resource: &'a str,
    /// `None` for cluster-scoped objects and requests across all namespaces.
    namespace: Option<&'a str>,
    /// `None` for create, and list/watch without a `metadata.name` field selector.
    name: Option<&'a str>,
}

/// The rules bound to the chart's ServiceAccount that apply to `namespace`: every
/// ClusterRoleBinding's ClusterRole, plus (in a namespace) the Roles and ClusterRoles of that
/// namespace's RoleBindings. A binding to a role that is not rendered fails the test.
fn bound_rules<'a>(docs: &'a [Value], namespace: Option<&str>) -> Vec<&'a Value> {
    let ours = |binding: &Value| {
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == FULLNAME
                    && s["namespace"] == NAMESPACE
            })
    };
    let role = |kind: &str, name: &Value, ns: Option<&str>| -> &'a Value {
        docs.iter()
            .find(|d| {
                d["kind"] == kind
                    && &d["metadata"]["name"] == name
                    && ns.is_none_or(|ns| d["metadata"]["namespace"] == ns)
            })
            .unwrap_or_else(|| panic!("a binding refers to {kind} {name} in {ns:?}: not rendered"))
    };
    let mut rules = Vec::new();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" && ours(d))
    {
        let cluster_role = role("ClusterRole", &binding["roleRef"]["name"], None);
        rules.extend(cluster_role["rules"].as_array().into_iter().flatten());
    }
    if let Some(ns) = namespace {
        for binding in docs
            .iter()
            .filter(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == ns && ours(d))
        {
            let reference = &binding["roleRef"];
            let kind = reference["kind"].as_str().unwrap_or_default();
            let scope = (kind == "Role").then_some(ns);
            rules.extend(
                role(kind, &reference["name"], scope)["rules"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            );
        }
    }
    rules
}

/// Whether the rendered RBAC allows `access` (RBAC's rule matching, `*` included; a rule with
/// `resourceNames` matches only requests that name one of them).
fn can_i(docs: &[Value], access: &Access) -> bool {
    bound_rules(docs, access.namespace).iter().any(|rule| {
        let has = |field: &str, want: &str| {
            strings(&rule[field])
                .iter()
                .any(|v| *v == want || *v == "*")
        };
        let names = strings(&rule["resourceNames"]);
        has("apiGroups", access.group)
            && has("resources", access.resource)
            && has("verbs", access.verb)
            && (names.is_empty() || access.name.is_some_and(|n| names.contains(&n)))
    })
}

const SECRET_WRITES: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// `can_i` for one verb on core Secrets in `namespace`, named `name`.
fn can_secret(docs: &[Value], verb: &str, namespace: &str, name: Option<&str>) -> bool {
    can_i(
        docs,
        &Access {
            verb,
            group: "",
            resource: "secrets",
            namespace: Some(namespace),
            name,
        },
    )
}

/// Whether the ServiceAccount may change any Secret in `namespace` (named or not).
fn can_write_secrets(docs: &[Value], namespace: &str) -> bool {
    SECRET_WRITES.iter().any(|verb| {
        can_secret(docs, verb, namespace, None) || can_secret(docs, verb, namespace, Some("x"))
    })
}

/// Verb, resource (`RESOURCE.GROUP`), subresource or empty, namespace, object name.
type RequestAccess = (String, String, String, Option<String>, Option<String>);

/// The authorization attributes of a request as the API server derives them from its method,
/// path and query (`GET /apis/networking.k8s.io/v1/namespaces/a/ingresses?watch=true` → watch
/// ingresses.networking.k8s.io in a); `None` for discovery paths, which every client may read.
fn access_of(request: &str) -> Option<RequestAccess> {
    let (method, target) = request.split_once(' ')?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: BTreeMap<&str, String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k, percent_decode(v)))
        .collect();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return None,
    };
    let (group, rest) = rest;
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(name.to_string())),
        [resource, name, sub] => (format!("{resource}/{sub}"), Some(name.to_string())),
        _ => panic!("unexpected API path {path}"),
    };
    let watch = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (method, &name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if watch => "watch",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => panic!("unexpected method in {request}"),
    };
    // A list or watch of one object by `metadata.name` is authorized against that name.
    let name = name.or_else(|| {
        params
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .filter(|n| !n.contains(','))
            .map(str::to_owned)
    });
    let name = if verb == "create" { None } else { name };
    Some((verb.to_owned(), group.to_owned(), resource, namespace, name))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === tests ===

#[test]
fn every_values_file_lints_validates_and_passes_checkov() {
    let files = values_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for expected in [
        "acme",
        "acme-private-ca-namespaces",
        "daemonset-hostnetwork",
        "daemonset-hostports",
        "nodeport",
        "pod-extras",
        "rollout-labels-objects",
        "service-knobs",
        "static-volumes",
        "watch-namespaces-monitoring-hpa",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "tests/chart_values/{expected}.yaml is missing"
        );
    }

    let cases = std::iter::once((String::from("default"), None))
        .chain(names.into_iter().zip(files.into_iter().map(Some)));
    for (case, file) in cases {
        let chart = chart_dir();
        let mut lint: Vec<&OsStr> = vec!["lint".as_ref(), chart.as_os_str(), "--strict".as_ref()];
        if let Some(file) = &file {
            lint.extend(["--values".as_ref(), file.as_os_str()]);
        }
        let out = run("helm", lint);
        assert!(
            out.status.success(),
            "helm lint --strict failed for {case}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );

        let rendered = render(file.as_deref());
        validate(&rendered);
        checkov(&case, &rendered);
        binary_accepts(&case, &args(workload(&manifests(&rendered))));
    }
}

/// The container's arguments as the kubelet passes them: `$(VAR)` references to the
/// container's downward-API variables expanded (to loopback values here).
fn kubelet_expand(args: &[String], pod_name: &str) -> Vec<String> {
    args.iter()
        .map(|arg| {
            arg.replace("$(POD_IP)", "127.0.0.1")
                .replace("$(POD_NAME)", pod_name)
                .replace("$(POD_NAMESPACE)", NAMESPACE)
        })
        .collect()
}

/// The real binary parses every flag the chart renders: `gatehouse ARGS... crd` parses the
/// arguments, then only prints the CRD.
fn binary_accepts(case: &str, args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(kubelet_expand(args, "pod-0"))
        .arg("crd")
        .output()
        .expect("run gatehouse");
    assert!(
        out.status.success(),
        "{case}: the gateway refuses the chart's arguments {args:?}:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn default_install_runs_two_spread_replicas_behind_a_load_balancer() {
    let docs = render_docs(None);
    let kinds = kinds(&docs);
    assert!(!kinds.contains("DaemonSet") && !kinds.contains("HorizontalPodAutoscaler"));
    assert!(
        !kinds.contains("ServiceMonitor"),
        "ServiceMonitor needs the Prometheus Operator: opt-in"
    );

    let deployment = find(&docs, "Deployment", FULLNAME);
    assert_eq!(deployment["metadata"]["namespace"], NAMESPACE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in selector.as_object().expect("selector labels") {
        assert_eq!(&pod_labels[key], value, "pods carry selector label {key}");
    }
    assert_eq!(
        deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"],
        json!([{
            "weight": 100,
            "podAffinityTerm": {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": selector},
            },
        }]),
        "replicas prefer different nodes"
    );

    let pdb = find(&docs, "PodDisruptionBudget", FULLNAME);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);

    let service = find(&docs, "Service", FULLNAME);
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(&service["spec"]["selector"], selector);
    let ports: Vec<(String, u64, u64)> = service["spec"]["ports"]
        .as_array()
        .expect("service ports")
        .iter()
        .map(|port| {
            let target = port["targetPort"].as_str().expect("named target port");
            let container_port = container_port(deployment, target)["containerPort"]
                .as_u64()
                .expect("container port number");
            (
                port["name"].as_str().unwrap_or_default().to_owned(),
                port["port"].as_u64().unwrap_or_default(),
                container_port,
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("http".to_owned(), 80, 8080),
            ("https".to_owned(), 443, 8443)
        ],
        "the Service publishes only http and https; admin stays inside the pod network"
    );
}

#[test]
fn gateway_is_started_with_its_class_listeners_and_published_service() {
    let docs = render_docs(None);
    let deployment = find(&docs, "Deployment", FULLNAME);
    assert_eq!(
        args(deployment),
        [
            "--http-listen=0.0.0.0:8080",
            "--https-listen=0.0.0.0:8443",
            "--admin-listen=0.0.0.0:9090",
            "--ingress-class=gatehouse",
            "--controller-name=gatehouse.dev/ingress-controller",
            "--publish-service=gh-system/rel-gatehouse",
            "--lease-name=rel-gatehouse-leader",
            "--lease-duration=4s",
            "--lease-renew=1s",
            "--shutdown-delay=5s",
            "--drain-timeout=30s",
            "--log-format=json",
        ]
    );
    let gateway = container(deployment);
    assert_eq!(
        gateway["image"],
        format!("ghcr.io/gatehouse/gatehouse:{}", env!("CARGO_PKG_VERSION")),
        "the image tag defaults to the chart's appVersion, which follows the crate version"
    );
    assert_eq!(
        gateway["env"],
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]),
        "leader election identity and the pod's address come from the downward API"
    );
    assert_eq!(container_port(deployment, "admin")["containerPort"], 9090);
    assert_eq!(
        gateway["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "admin"})
    );
    assert_eq!(
        gateway["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "admin"})
    );

    let class = find(&docs, "IngressClass", "gatehouse");
    assert_eq!(
        class["spec"]["controller"],
        "gatehouse.dev/ingress-controller"
    );
    assert!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"].is_null(),
        "not the default class unless asked"
    );
}

#[test]
fn pods_run_as_non_root_with_nothing_to_escalate() {
    for file in [None, Some(values("daemonset-hostports"))] {
        let docs = render_docs(file.as_deref());
        let workload = docs
            .iter()
            .find(|doc| doc["kind"] == "Deployment" || doc["kind"] == "DaemonSet")
            .expect("a workload");
        let pod = &workload["spec"]["template"]["spec"];
        for (field, expected) in [
            ("runAsNonRoot", json!(true)),
            ("runAsUser", json!(65532)),
            ("seccompProfile", json!({"type": "RuntimeDefault"})),
        ] {
            assert_eq!(
                pod["securityContext"][field], expected,
                "pod securityContext.{field}"
            );
        }
        for key in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(
                pod[key].is_null() || pod[key] == false,
                "{key} must stay off"
            );
        }

        let gateway = container(workload);
        let security = &gateway["securityContext"];
        for (field, expected) in [
            ("runAsNonRoot", json!(true)),
            ("runAsUser", json!(65532)),
            ("readOnlyRootFilesystem", json!(true)),
            ("allowPrivilegeEscalation", json!(false)),
            ("seccompProfile", json!({"type": "RuntimeDefault"})),
        ] {
            assert_eq!(
                security[field], expected,
                "container securityContext.{field}"
            );
        }
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
        // Even with hostPorts 80/443 the process binds 8080/8443 (the node maps hostPort ->
        // containerPort), so NET_BIND_SERVICE would only widen the attack surface; for a
        // non-root process it would not even be effective without file capabilities.
        assert!(
            security["capabilities"]["add"].is_null(),
            "no capability is added"
        );

        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !gateway["resources"][kind][resource].is_null(),
                    "resources.{kind}.{resource} is set"
                );
            }
        }
        let state_mount = gateway["volumeMounts"]
            .as_array()
            .expect("volume mounts")
            .iter()
            .find(|mount| mount["mountPath"] == "/var/run/gatehouse")
            .expect("state directory mounted");
        let state_volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|volume| volume["name"] == state_mount["name"])
            .expect("state volume");
        assert!(
            state_volume["emptyDir"].is_object(),
            "state lives in an emptyDir"
        );
    }
}

#[test]
fn cluster_wide_rbac_grants_only_what_the_gateway_uses() {
    let docs = render_docs(None);
    let cluster_role = find(&docs, "ClusterRole", FULLNAME);
    let granted = grants(cluster_role);
    assert!(
        !granted
            .iter()
            .any(|(g, r, v)| g == "*" || r == "*" || v == "*"),
        "no wildcards: {granted:?}"
    );
    let mut expected = served_namespace_grants();
    expected.push(("networking.k8s.io", &["ingressclasses"], READ));
    assert_eq!(
        granted,
        grant_set(&expected),
        "watching every namespace, without ACME: reads, Ingress status and Events only"
    );

    let acme = render_docs(Some(&values("acme")));
    expected.push(("", &["secrets"], &["create", "update", "patch"]));
    assert_eq!(
        grants(find(&acme, "ClusterRole", FULLNAME)),
        grant_set(&expected),
        "ACME writes the certificate Secrets Ingresses name, wherever they are; never deletes one"
    );

    // Release namespace: the Lease by name, its own state Secrets, the published Service by name.
    let role = find(&docs, "Role", FULLNAME);
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["rel-gatehouse-leader"], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["services"], "resourceNames": [FULLNAME],
             "verbs": ["get", "list", "watch"]},
        ])
    );
    let lease = |verb, name| {
        can_i(
            &docs,
            &Access {
                verb,
                group: "coordination.k8s.io",
                resource: "leases",
                namespace: Some(NAMESPACE),
                name,
            },
        )
    };
    assert!(lease("update", Some("rel-gatehouse-leader")));
    assert!(!lease("update", Some("another-controllers-lease")));

    let account = find(&docs, "ServiceAccount", FULLNAME);
    assert_eq!(account["metadata"]["namespace"], NAMESPACE);
    let deployment = find(&docs, "Deployment", FULLNAME);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        FULLNAME
    );
    for (binding, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let binding = find(&docs, binding, FULLNAME);
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": FULLNAME})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}])
        );
    }
}

/// Issue: `kubectl auth can-i update secrets -n kube-system` answered yes with ACME off, and
/// any Secret of the cluster was readable whatever `watchNamespaces` said.
#[test]
fn secrets_are_writable_only_with_acme_and_readable_only_where_ingresses_are_watched() {
    let cases = std::iter::once(None).chain(values_files().into_iter().map(Some));
    for file in cases {
        let docs = render_docs(file.as_deref());
        let case = file
            .as_deref()
            .map_or("default".into(), |f| f.display().to_string());
        let args = args(workload(&docs));
        let acme = args.iter().any(|a| a.starts_with("--acme-email="));
        let watched: Vec<String> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--watch-namespace="))
            .map(str::to_owned)
            .collect();
        for ns in [NAMESPACE, "kube-system", "team-a", "team-c"] {
            let watched_here = watched.is_empty() || watched.iter().any(|w| w == ns);
            let own_namespace = ns == NAMESPACE;
            assert_eq!(
                can_write_secrets(&docs, ns),
                acme && (watched_here || own_namespace),
                "{case}: may write Secrets in {ns}?"
            );
            assert_eq!(
                can_secret(&docs, "list", ns, None),
                watched_here || own_namespace,
                "{case}: may read Secrets in {ns}?"
            );
            // The gateway never deletes a certificate Secret; only its own order state.
            assert_eq!(
                can_secret(&docs, "delete", ns, Some("dash-example-com-tls")),
                acme && own_namespace,
                "{case}: may delete Secrets in {ns}?"
            );
        }
        let all_namespaces = Access {
            verb: "list",
            group: "",
            resource: "secrets",
            namespace: None,
            name: None,
        };
        assert_eq!(
            can_i(&docs, &all_namespaces),
            watched.is_empty(),
            "{case}: Secrets of all namespaces at once only when watching them all"
        );
    }
}

#[test]
fn watched_namespaces_get_roles_and_no_cluster_role_for_namespaced_kinds() {
    let docs = render_docs(Some(&values("acme-private-ca-namespaces")));
    assert_eq!(
        grants(find(&docs, "ClusterRole", FULLNAME)),
        grant_set(&[("networking.k8s.io", &["ingressclasses"], READ)]),
        "only the cluster-scoped IngressClasses are granted cluster-wide"
    );
    let mut served = served_namespace_grants();
    served.push(("", &["secrets"], &["create", "update", "patch"]));
    for ns in ["team-a", "team-b"] {
        let role = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role in {ns}"));
        assert_eq!(role["metadata"]["name"], "rel-gatehouse-watch");
        assert_eq!(grants(role), grant_set(&served), "Role in {ns}");
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no RoleBinding in {ns}"));
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rel-gatehouse-watch"})
        );
    }
    let release_role = find(&docs, "Role", FULLNAME);
    assert!(
        grants(release_role).contains(&("".into(), "secrets".into(), "delete".into())),
        "ACME deletes its finished order Secrets in the release namespace"
    );
    for (verb, group, resource) in [
        ("list", "networking.k8s.io", "ingresses"),
        ("patch", "networking.k8s.io", "ingresses/status"),
        ("list", "", "services"),
        ("list", "discovery.k8s.io", "endpointslices"),
        ("create", "events.k8s.io", "events"),
    ] {
        for (ns, allowed) in [("team-a", true), ("team-c", false), ("kube-system", false)] {
            let access = Access {
                verb,
                group,
                resource,
                namespace: Some(ns),
                name: None,
            };
            assert_eq!(can_i(&docs, &access), allowed, "{access:?}");
        }
    }
}

#[test]
fn nodes_are_readable_only_for_a_published_node_port_service() {
    let nodes = |docs: &[Value]| {
        can_i(
            docs,
            &Access {
                verb: "list",
                group: "",
                resource: "nodes",
                namespace: None,
                name: None,
            },
        )
    };
    let node_port = render_docs(Some(&values("nodeport")));
    assert!(
        nodes(&node_port),
        "NodePort status carries the nodes' addresses"
    );
    assert!(
        grants(find(&node_port, "ClusterRole", FULLNAME)).contains(&(
            "".into(),
            "nodes".into(),
            "watch".into()
        ))
    );
    assert!(
        !nodes(&render_docs(None)),
        "a LoadBalancer has its own address"
    );
    let unpublished =
        render_with(Some(&values("nodeport")), &["publishService.enabled=false"]).expect("renders");
    assert!(!nodes(&unpublished), "nothing published, nothing to read");
}

/// The API server's authorizer, replayed over requests as the fake API server logs them.
#[test]
fn request_attributes_are_derived_as_the_api_server_does() {
    let cases = [
        (
            "GET /apis/networking.k8s.io/v1/namespaces/a/ingresses?watch=true&resourceVersion=5",
            Some(("watch", "networking.k8s.io", "ingresses", Some("a"), None)),
        ),
        (
            "GET /api/v1/namespaces/gh-system/services?fieldSelector=metadata.name%3Drel-gatehouse",
            Some((
                "list",
                "",
                "services",
                Some("gh-system"),
                Some("rel-gatehouse"),
            )),
        ),
        (
            "PUT /apis/coordination.k8s.io/v1/namespaces/gh-system/leases/l",
            Some((
                "update",
                "coordination.k8s.io",
                "leases",
                Some("gh-system"),
                Some("l"),
            )),
        ),
        (
            "PATCH /apis/networking.k8s.io/v1/namespaces/a/ingresses/web/status",
            Some((
                "patch",
                "networking.k8s.io",
                "ingresses/status",
                Some("a"),
                Some("web"),
            )),
        ),
        (
            "POST /api/v1/namespaces/a/events",
            Some(("create", "", "events", Some("a"), None)),
        ),
        ("GET /api/v1/nodes", Some(("list", "", "nodes", None, None))),
        ("GET /version", None),
    ];
    for (request, expected) in cases {
        let got = access_of(request);
        let expected = expected.map(
            |(v, g, r, ns, n): (&str, &str, &str, Option<&str>, Option<&str>)| {
                (
                    v.to_owned(),
                    g.to_owned(),
                    r.to_owned(),
                    ns.map(str::to_owned),
                    n.map(str::to_owned),
                )
            },
        );
        assert_eq!(got, expected, "{request}");
    }
}

#[test]
fn daemonset_mode_publishes_the_nodes_ports_80_and_443() {
    let docs = render_docs(Some(&values("daemonset-hostports")));
    let kinds = kinds(&docs);
    for absent in [
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        assert!(!kinds.contains(absent), "no {absent} in DaemonSet mode");
    }
    let daemonset = find(&docs, "DaemonSet", FULLNAME);
    assert_eq!(daemonset["metadata"]["namespace"], NAMESPACE);
    for (name, host, inside) in [("http", 80, 8080), ("https", 443, 8443)] {
        let port = container_port(daemonset, name);
        assert_eq!(port["hostPort"], host, "{name} on the node");
        assert_eq!(port["containerPort"], inside, "{name} in the pod");
    }
    assert!(
        container_port(daemonset, "admin")["hostPort"].is_null(),
        "the admin port is never published on the node"
    );
    assert!(
        !kinds.contains("Service"),
        "clients use the nodes' addresses: no load balancer unless asked"
    );
    let gateway_args = args(daemonset);
    assert!(
        !gateway_args
            .iter()
            .any(|arg| arg.starts_with("--publish-service")),
        "no Service to publish"
    );
    assert_eq!(
        flag(&gateway_args, "--publish-address").as_deref(),
        Some("203.0.113.10,203.0.113.11"),
        "the nodes' addresses go into Ingress status"
    );
}

#[test]
fn daemonset_on_the_host_network_binds_the_node_and_renders_no_load_balancer() {
    let file = values("daemonset-hostnetwork");
    let docs = render_docs(Some(&file));
    assert!(!kinds(&docs).contains("Service"), "no Service unless asked");
    let daemonset = find(&docs, "DaemonSet", FULLNAME);
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        pod["dnsPolicy"], "ClusterFirstWithHostNet",
        "cluster DNS names still resolve on the host network"
    );
    for (name, port) in [("http", 10080), ("https", 10443), ("admin", 10254)] {
        let declared = container_port(daemonset, name);
        assert_eq!(declared["containerPort"], port, "{name}");
        assert!(
            declared["hostPort"].is_null(),
            "{name}: no hostPort mapping on the host network"
        );
    }
    let gateway_args = args(daemonset);
    assert_eq!(
        flag(&gateway_args, "--http-listen").as_deref(),
        Some("0.0.0.0:10080")
    );
    assert_eq!(
        flag(&gateway_args, "--https-listen").as_deref(),
        Some("0.0.0.0:10443")
    );
    assert_eq!(
        flag(&gateway_args, "--admin-listen").as_deref(),
        Some("$(POD_IP):10254"),
        "on the host network the admin port binds the node's own address, not every interface"
    );
    assert_eq!(
        flag(&gateway_args, "--publish-address").as_deref(),
        Some("lb.example.com")
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        daemonset["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}})
    );
    assert_eq!(daemonset["spec"]["minReadySeconds"], 5);

    // Asked for: a LoadBalancer in front of the nodes (type from service.type).
    let asked = render_with(
        Some(&file),
        &[
            "service.enabled=true",
            "publishAddress=null",
            "service.externalTrafficPolicy=Local",
        ],
    )
    .expect("renders");
    let service = find(&asked, "Service", FULLNAME);
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(
        flag(&args(workload(&asked)), "--publish-service").as_deref(),
        Some("gh-system/rel-gatehouse")
    );
}

#[test]
fn image_digest_pins_the_image_over_the_tag() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let out = helm_template(&["--set", &format!("image.digest={digest}")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs = manifests(&text(&out.stdout));
    assert_eq!(
        container(find(&docs, "Deployment", FULLNAME))["image"],
        format!("ghcr.io/gatehouse/gatehouse@{digest}")
    );
}

#[test]
fn nodeport_service_uses_the_configured_node_ports() {
    let docs = render_docs(Some(&values("nodeport")));
    let service = find(&docs, "Service", FULLNAME);
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
    let node_ports: Vec<(&str, &Value)> = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|port| (port["name"].as_str().unwrap_or_default(), &port["nodePort"]))
        .collect();
    assert_eq!(
        node_ports,
        [("http", &json!(30080)), ("https", &json!(30443))]
    );
    assert_eq!(find(&docs, "Deployment", FULLNAME)["spec"]["replicas"], 3);
}

#[test]
fn acme_flags_appear_only_when_acme_is_enabled() {
    let default_args = args(find(&render_docs(None), "Deployment", FULLNAME));
    assert!(
        !default_args
            .iter()
            .any(|arg| arg.starts_with("--acme") || arg.starts_with("--default-certificate")),
        "{default_args:?}"
    );

    let acme_args = args(find(
        &render_docs(Some(&values("acme"))),
        "Deployment",
        FULLNAME,
    ));
    for flag in [
        "--acme-email=ops@example.com",
        "--acme-directory=staging",
        "--acme-challenge=tls-alpn-01",
        "--default-certificate=gh-system/wildcard-example-com",
    ] {
        assert!(
            acme_args.iter().any(|arg| arg == flag),
            "{flag} missing in {acme_args:?}"
        );
    }
}

#[test]
fn static_volumes_are_mounted_read_only() {
    let docs = render_docs(Some(&values("static-volumes")));
    let deployment = find(&docs, "Deployment", FULLNAME);
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|volume| volume["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert_eq!(
        volume("static-docs"),
        json!({"name": "static-docs", "persistentVolumeClaim": {"claimName": "docs-site"}})
    );
    assert_eq!(
        volume("static-landing"),
        json!({"name": "static-landing", "configMap": {"name": "landing-page"}})
    );
    let mounts = container(deployment)["volumeMounts"]
        .as_array()
        .expect("mounts");
    for (name, path) in [
        ("static-docs", "/srv/docs"),
        ("static-landing", "/srv/landing"),
    ] {
        let mount = mounts
            .iter()
            .find(|mount| mount["name"] == name)
            .unwrap_or_else(|| panic!("{name} not mounted"));
        assert_eq!(mount["mountPath"], path);
        assert_eq!(mount["readOnly"], true, "{name} is read-only");
    }
}

#[test]
fn watch_namespaces_default_class_monitoring_and_autoscaling() {
    let docs = render_docs(Some(&values("watch-namespaces-monitoring-hpa")));
    let deployment = find(&docs, "Deployment", FULLNAME);
    let gateway_args = args(deployment);
    let watched: Vec<&str> = gateway_args
        .iter()
        .filter_map(|arg| arg.strip_prefix("--watch-namespace="))
        .collect();
    assert_eq!(
        watched,
        ["team-a", "team-b", "team-c"],
        "one flag per namespace, in order"
    );
    assert!(
        gateway_args
            .iter()
            .any(|arg| arg == "--watch-ingress-without-class")
    );
    assert!(
        gateway_args
            .iter()
            .any(|arg| arg == "--ingress-class=gatehouse-public")
    );

    let class = find(&docs, "IngressClass", "gatehouse-public");
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );

    assert!(
        deployment["spec"]["replicas"].is_null(),
        "the HPA owns the replica count"
    );
    let hpa = find(&docs, "HorizontalPodAutoscaler", FULLNAME);
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME})
    );
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 12);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    find(&docs, "PodDisruptionBudget", FULLNAME);

    let monitor = find(&docs, "ServiceMonitor", FULLNAME);
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{"port": "admin", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}])
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": [NAMESPACE]})
    );
    // The selector must pick exactly the ClusterIP admin Service, not the public one.
    let selected: Vec<&str> = docs
        .iter()
        .filter(|doc| doc["kind"] == "Service")
        .filter(|service| {
            let labels = &service["metadata"]["labels"];
            monitor["spec"]["selector"]["matchLabels"]
                .as_object()
                .expect("matchLabels")
                .iter()
                .all(|(key, value)| &labels[key] == value)
        })
        .filter_map(|service| service["metadata"]["name"].as_str())
        .collect();
    assert_eq!(selected, ["rel-gatehouse-admin"]);
    let admin = find(&docs, "Service", "rel-gatehouse-admin");
    assert_eq!(admin["spec"]["type"], "ClusterIP");
    assert_eq!(
        admin["spec"]["ports"],
        json!([{"name": "admin", "port": 9090, "targetPort": "admin", "protocol": "TCP"}])
    );
}

#[test]
fn network_policy_admits_clients_anywhere_and_the_admin_port_only_from_admin_peers() {
    let docs = render_docs(None);
    let policy = find(&docs, "NetworkPolicy", FULLNAME);
    let deployment = find(&docs, "Deployment", FULLNAME);
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        json!(["Ingress"]),
        "egress stays open"
    );
    assert_eq!(
        policy["spec"]["ingress"],
        json!([
            {"ports": [{"port": "http", "protocol": "TCP"}, {"port": "https", "protocol": "TCP"}]},
            {"ports": [{"port": "admin", "protocol": "TCP"}], "from": [{"namespaceSelector": {}}]},
        ])
    );
}

#[test]
fn chart_ships_the_static_site_crd() {
    let docs = render_docs(None);
    let crd = find(
        &docs,
        "CustomResourceDefinition",
        "staticsites.gatehouse.dev",
    );
    assert_eq!(crd["spec"]["group"], "gatehouse.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "StaticSite");
    assert_eq!(crd["spec"]["names"]["plural"], "staticsites");
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1);
    let version = &versions[0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["served"], true);
    assert_eq!(version["storage"], true);
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"], json!(["root"]));
    let fields: BTreeSet<&str> = spec["properties"]
        .as_object()
        .expect("spec properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["cacheControl", "fallback", "index", "root"])
    );
    for field in &fields {
        assert_eq!(
            spec["properties"][field]["type"], "string",
            "{field} is a string"
        );
    }
    assert_eq!(spec["properties"]["index"]["default"], "index.html");
}

#[test]
fn values_an_admin_could_mistype_are_rejected_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["kind=Foo"], "kind must be one of the following"),
        (
            &["replicaCount=3"],
            "Additional property replicaCount is not allowed",
        ),
        (
            &["service.type=Ingress"],
            "service.type must be one of the following",
        ),
        (
            &["acme.challenge=dns-01"],
            "acme.challenge must be one of the following",
        ),
        (&["acme.directory=http://acme.example"], "acme.directory"),
        (&["acme.enabled=true"], "acme.enabled needs acme.email"),
        (
            &["kind=DaemonSet", "autoscaling.enabled=true"],
            "autoscaling.enabled needs kind: Deployment",
        ),
        (
            &[
                "staticVolumes[0].name=Docs",
                "staticVolumes[0].mountPath=/srv",
            ],
            "staticVolumes",
        ),
        (
            &[
                "service.type=ClusterIP",
                "service.loadBalancerIP=198.51.100.7",
            ],
            "service.loadBalancerIP needs service.type LoadBalancer",
        ),
        (
            &["service.ipFamilies[0]=IPv5"],
            "service.ipFamilies.0 must be one of the following",
        ),
        (
            &[
                "podDisruptionBudget.minAvailable=1",
                "podDisruptionBudget.maxUnavailable=1",
            ],
            "set minAvailable or maxUnavailable, not both",
        ),
        (
            &["terminationGracePeriodSeconds=20"],
            "terminationGracePeriodSeconds (20) must cover the shutdown",
        ),
        (
            &["kind=DaemonSet", "publishService.enabled=true"],
            "publishService.enabled needs the Service",
        ),
        (
            &[
                "publishService.enabled=true",
                "publishAddress[0]=203.0.113.10",
            ],
            "publishAddress replaces the Service's address",
        ),
        (
            &["commonLabels.app\\.kubernetes\\.io/instance=other"],
            "commonLabels: \"app.kubernetes.io/instance\" is set by the chart itself",
        ),
        (
            &[
                "livenessProbe.exec.command[0]=true",
                "livenessProbe.tcpSocket.port=admin",
            ],
            "livenessProbe has several handlers (tcpSocket, exec)",
        ),
        (
            &["readinessProbe.httpGet=null"],
            "readinessProbe has no handler",
        ),
        (
            &["acme.caBundle.configMapName=internal-ca"],
            "acme.caBundle needs acme.enabled",
        ),
        (
            &["leaderElection.renewIntervalSeconds=4"],
            "renewIntervalSeconds must be less than leaderElection.leaseDurationSeconds",
        ),
        (&["listenAddress=localhost"], "listenAddress"),
        (&["extraArgs[0]=log-format=text"], "extraArgs.0"),
        (
            &["tracing.otlpEndpoint=otel-collector:4318"],
            "tracing.otlpEndpoint",
        ),
        (&["tracing.sampleRatio=2"], "tracing.sampleRatio"),
        (&["tracing.sampleRatio=half"], "tracing.sampleRatio"),
    ];
    for (sets, expected) in cases {
        let extra: Vec<&str> = sets.iter().flat_map(|set| ["--set", *set]).collect();
        let out = helm_template(&extra);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "helm template accepted {sets:?}");
        assert!(
            stderr.contains(expected),
            "rejection of {sets:?} should mention {expected:?}:\n{stderr}"
        );
    }
}

/// The README's /nta example: its Helm values render, validate, and mount the app's static
/// volume where the example's StaticSite looks for files.
#[test]
fn readme_nta_example_values_mount_the_static_volume() {
    let values_file = repo_root().join("config/examples/nta-values.yaml");
    let rendered = render(Some(&values_file));
    validate(&rendered);
    let docs = manifests(&rendered);
    let deployment = find(&docs, "Deployment", FULLNAME);
    let mounts = container(deployment)["volumeMounts"]
        .as_array()
        .expect("mounts");
    let mount = mounts
        .iter()
        .find(|mount| mount["mountPath"] == "/srv/nta-static")
        .expect("nta-static mounted at the StaticSite's root");
    assert_eq!(mount["readOnly"], true);
    assert!(
        args(deployment)
            .iter()
            .any(|a| a == "--acme-directory=staging")
    );
}

#[test]
fn service_settings_reach_the_load_balancer() {
    let docs = render_docs(Some(&values("service-knobs")));
    let service = find(&docs, "Service", FULLNAME);
    let spec = &service["spec"];
    assert_eq!(spec["type"], "LoadBalancer");
    assert_eq!(spec["loadBalancerIP"], "198.51.100.7");
    assert_eq!(
        spec["loadBalancerSourceRanges"],
        json!(["192.0.2.0/24", "2001:db8::/32"])
    );
    assert_eq!(spec["loadBalancerClass"], "service.k8s.aws/nlb");
    assert_eq!(spec["ipFamilyPolicy"], "PreferDualStack");
    assert_eq!(spec["ipFamilies"], json!(["IPv6", "IPv4"]));
    assert_eq!(spec["externalTrafficPolicy"], "Local");
    assert_eq!(
        service["metadata"]["annotations"],
        json!({"service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"})
    );
    // A dual-stack Service needs listeners that accept IPv6 too.
    let gateway_args = args(workload(&docs));
    assert_eq!(
        flag(&gateway_args, "--http-listen").as_deref(),
        Some("[::]:8080")
    );
    assert_eq!(
        flag(&gateway_args, "--https-listen").as_deref(),
        Some("[::]:8443")
    );
    assert_eq!(
        flag(&gateway_args, "--admin-listen").as_deref(),
        Some("0.0.0.0:9090")
    );

    let default_spec = find(&render_docs(None), "Service", FULLNAME)["spec"].clone();
    for key in [
        "loadBalancerIP",
        "loadBalancerSourceRanges",
        "loadBalancerClass",
        "ipFamilyPolicy",
        "ipFamilies",
        "externalTrafficPolicy",
    ] {
        assert!(
            default_spec[key].is_null(),
            "{key} is left to Kubernetes by default"
        );
    }
}

#[test]
fn pod_extras_reach_the_pod() {
    let docs = render_docs(Some(&values("pod-extras")));
    let deployment = find(&docs, "Deployment", FULLNAME);
    let template = &deployment["spec"]["template"];
    let pod = &template["spec"];
    let gateway = container(deployment);

    let env = gateway["env"].as_array().expect("env");
    let names: Vec<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "POD_IP",
            "GATEHOUSE_UPSTREAM_CONNECT_TIMEOUT",
            "NODE_NAME"
        ],
        "extraEnv after the chart's own variables"
    );
    assert_eq!(
        gateway["envFrom"],
        json!([
            {"configMapRef": {"name": "gatehouse-settings"}},
            {"configMapRef": {"name": "team-overrides", "optional": true}, "prefix": "TEAM_"},
        ])
    );

    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "site")
        .expect("extra volume");
    assert_eq!(volume["emptyDir"]["sizeLimit"], "256Mi");
    assert!(
        gateway["volumeMounts"]
            .as_array()
            .expect("mounts")
            .contains(&json!({"name": "site", "mountPath": "/srv/site", "readOnly": true}))
    );

    let init = pod["initContainers"].as_array().expect("initContainers");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0]["name"], "fetch-site");
    let containers = pod["containers"].as_array().expect("containers");
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["gatehouse", "log-shipper"],
        "sidecars follow the gateway"
    );

    assert_eq!(
        gateway["lifecycle"],
        json!({"preStop": {"httpGet": {"path": "/api/v1/flush", "port": 2020}}})
    );
    assert_eq!(
        gateway["livenessProbe"],
        json!({"tcpSocket": {"port": "admin"}, "periodSeconds": 20, "timeoutSeconds": 2, "failureThreshold": 3}),
        "tcpSocket replaces the default httpGet; the other defaults stay"
    );
    assert_eq!(
        gateway["readinessProbe"],
        json!({"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3})
    );
    assert_eq!(
        gateway["startupProbe"],
        json!({"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 2, "failureThreshold": 30})
    );
    assert!(
        container(find(&render_docs(None), "Deployment", FULLNAME))["startupProbe"].is_null(),
        "no startup probe by default"
    );

    // Overrides merge: what is not overridden keeps the hardened defaults.
    assert_eq!(
        pod["securityContext"]["fsGroupChangePolicy"],
        "OnRootMismatch"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let security = &gateway["securityContext"];
    assert_eq!(security["runAsUser"], 10001);
    assert_eq!(security["runAsGroup"], 10001);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));

    assert_eq!(pod["priorityClassName"], "gatehouse-critical");
    assert_eq!(
        template["metadata"]["annotations"],
        json!({"example.com/scrape-logs": "true"})
    );
    assert_eq!(template["metadata"]["labels"]["team"], "platform");
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(
        pod["topologySpreadConstraints"],
        json!([
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "gatehouse"}}},
        ]),
        "a constraint without labelSelector spreads this release's pods"
    );
}

#[test]
fn rollout_pacing_disruption_budget_autoscaling_and_scrape_relabelling() {
    let docs = render_docs(Some(&values("rollout-labels-objects")));
    let deployment = find(&docs, "Deployment", FULLNAME);
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}})
    );
    assert_eq!(deployment["spec"]["minReadySeconds"], 10);
    let default = find(&render_docs(None), "Deployment", FULLNAME).clone();
    assert_eq!(
        default["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    assert!(default["spec"]["minReadySeconds"].is_null());

    let pdb = find(&docs, "PodDisruptionBudget", FULLNAME);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(
        pdb["spec"]["minAvailable"].is_null(),
        "one or the other, never both"
    );

    let hpa = find(&docs, "HorizontalPodAutoscaler", FULLNAME);
    assert_eq!(
        hpa["spec"]["behavior"],
        json!({"scaleDown": {"stabilizationWindowSeconds": 600,
                             "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}})
    );

    let monitor = find(&docs, "ServiceMonitor", FULLNAME);
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["interval"], "10s");
    assert_eq!(
        endpoint["relabelings"],
        json!([{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}])
    );
    assert_eq!(
        endpoint["metricRelabelings"],
        json!([{"sourceLabels": ["__name__"], "regex": "gatehouse_translate_seconds_bucket", "action": "drop"}])
    );

    let gateway_args = args(deployment);
    assert_eq!(
        flag(&gateway_args, "--lease-name").as_deref(),
        Some("edge-leader")
    );
    assert_eq!(
        flag(&gateway_args, "--lease-duration").as_deref(),
        Some("6s")
    );
    assert_eq!(flag(&gateway_args, "--lease-renew").as_deref(), Some("2s"));
}

#[test]
fn common_labels_are_on_every_object_the_chart_renders() {
    let docs = render_docs(Some(&values("rollout-labels-objects")));
    let user_objects = ["rel-error-pages", "rel-internal"];
    let mut checked = BTreeSet::new();
    for doc in &docs {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        // Helm installs crds/ untemplated; extraObjects are the admin's own.
        if doc["kind"] == "CustomResourceDefinition" || user_objects.contains(&name) {
            continue;
        }
        for (key, value) in [("cost-center", "edge"), ("example.com/owner", "platform")] {
            assert_eq!(
                doc["metadata"]["labels"][key], value,
                "{} {name} lacks commonLabels.{key}",
                doc["kind"]
            );
        }
        checked.insert(doc["kind"].as_str().unwrap_or_default().to_owned());
    }
    assert!(checked.len() >= 12, "only {checked:?} checked");
    let pod_labels = &workload(&docs)["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["cost-center"], "edge", "the pods carry them too");
    let selector = &workload(&docs)["spec"]["selector"]["matchLabels"];
    assert!(
        selector["cost-center"].is_null(),
        "never in the selector (immutable after install)"
    );
}

#[test]
fn extra_objects_are_rendered_through_tpl() {
    let docs = render_docs(Some(&values("rollout-labels-objects")));
    let config_map = find(&docs, "ConfigMap", "rel-error-pages");
    assert_eq!(config_map["metadata"]["namespace"], NAMESPACE);
    assert_eq!(config_map["data"]["owner"], "platform");
    let internal = find(&docs, "Service", "rel-internal");
    assert_eq!(internal["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        internal["spec"]["selector"]["app.kubernetes.io/instance"],
        RELEASE
    );
}

/// Issue: `extraArgs` could not override a flag the chart passes ("cannot be used multiple
/// times"). The chart puts them last and the gateway keeps the last value.
#[test]
fn extra_args_come_last_so_they_override_the_charts_flags() {
    let docs = render_docs(Some(&values("rollout-labels-objects")));
    let gateway_args = args(workload(&docs));
    let formats: Vec<&String> = gateway_args
        .iter()
        .filter(|a| a.starts_with("--log-format="))
        .collect();
    assert_eq!(
        formats,
        ["--log-format=text", "--log-format=json"],
        "logFormat, then extraArgs"
    );
    assert_eq!(
        gateway_args.last().map(String::as_str),
        Some("--upstream-response-timeout=30s")
    );
    // The binary takes the last: see a_flag_given_twice_takes_its_last_value in
    // tests/admin_cli.rs, and the gateways started from rendered arguments below.
    binary_accepts("rollout-labels-objects", &gateway_args);
}

#[test]
fn acme_ca_bundle_is_mounted_read_only_and_passed_to_the_gateway() {
    let docs = render_docs(Some(&values("acme-private-ca-namespaces")));
    let deployment = find(&docs, "Deployment", FULLNAME);
    let gateway_args = args(deployment);
    assert_eq!(
        flag(&gateway_args, "--acme-ca-bundle").as_deref(),
        Some("/etc/gatehouse/acme-ca/ca.crt")
    );
    assert_eq!(
        flag(&gateway_args, "--acme-directory").as_deref(),
        Some("https://acme.internal.example/directory")
    );
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "acme-ca-bundle")
        .expect("CA bundle volume");
    assert_eq!(
        volume["secret"],
        json!({"secretName": "internal-ca", "items": [{"key": "root.pem", "path": "ca.crt"}]})
    );
    assert!(
        container(deployment)["volumeMounts"]
            .as_array()
            .expect("mounts")
            .contains(&json!({"name": "acme-ca-bundle", "mountPath": "/etc/gatehouse/acme-ca", "readOnly": true}))
    );

    let from_config_map = render_with(
        Some(&values("acme")),
        &["acme.caBundle.configMapName=internal-ca"],
    )
    .expect("renders");
    let pod = &workload(&from_config_map)["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "acme-ca-bundle")
        .expect("CA bundle volume");
    assert_eq!(
        volume["configMap"],
        json!({"name": "internal-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]})
    );
    assert!(
        flag(
            &args(workload(&render_docs(Some(&values("acme"))))),
            "--acme-ca-bundle"
        )
        .is_none(),
        "the Mozilla roots only, unless a bundle is given"
    );
}

/// Issue: 0.2 s after SIGTERM new connections were refused and the chart had no preStop. The
/// gateway now keeps serving for `--shutdown-delay` with /readyz failing, then drains; the
/// kubelet must not kill it before both are over.
#[test]
fn termination_grace_period_covers_the_shutdown_delay_and_the_drain() {
    let grace = |docs: &[Value]| {
        workload(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].clone()
    };
    let docs = render_docs(None);
    let gateway_args = args(workload(&docs));
    assert_eq!(
        flag(&gateway_args, "--shutdown-delay").as_deref(),
        Some("5s")
    );
    assert_eq!(
        flag(&gateway_args, "--drain-timeout").as_deref(),
        Some("30s")
    );
    assert_eq!(grace(&docs), 40, "5 s delay + 30 s drain + 5 s margin");
    assert!(
        container(workload(&docs))["lifecycle"].is_null(),
        "no preStop: the delay is in the process (no shell in the distroless image)"
    );

    let docs = render_docs(Some(&values("rollout-labels-objects")));
    let gateway_args = args(workload(&docs));
    assert_eq!(
        flag(&gateway_args, "--shutdown-delay").as_deref(),
        Some("10s")
    );
    assert_eq!(
        flag(&gateway_args, "--drain-timeout").as_deref(),
        Some("60s")
    );
    assert_eq!(grace(&docs), 75);

    let explicit = render_with(None, &["terminationGracePeriodSeconds=35"]).expect("renders");
    assert_eq!(
        grace(&explicit),
        35,
        "an explicit value that covers 5 s + 30 s is kept"
    );

    // Kubernetes 1.30+: a native, shell-free preStop sleep runs before SIGTERM and counts too.
    let out = helm_template(&["--set", "lifecycle.preStop.sleep.seconds=3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rendered = text(&out.stdout);
    validate_for(&rendered, &["1.31.0", "1.33.0", "1.35.0"]);
    let docs = manifests(&rendered);
    assert_eq!(grace(&docs), 43);
    assert_eq!(
        container(workload(&docs))["lifecycle"],
        json!({"preStop": {"sleep": {"seconds": 3}}})
    );
    let refused = render_with(
        None,
        &[
            "lifecycle.preStop.sleep.seconds=3",
            "terminationGracePeriodSeconds=36",
        ],
    )
    .expect_err("36 s cannot cover 3 + 5 + 30 s");
    assert!(refused.contains("= 38"), "{refused}");
}

// === the gateway started from the rendered chart ===

/// A gateway process started as the kubelet would start the rendered container, against the
/// fake API server; killed on drop.
struct Pod {
    child: Child,
    /// The plain HTTP listener.
    http: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pod {
    /// The container's rendered arguments (downward-API variables expanded), then, as an admin's
    /// extraArgs would, loopback listeners and the fake API server's kubeconfig: the later
    /// flags override the chart's.
    fn start(rendered_args: &[String], name: &str, kubeconfig: &Path, dir: &Path) -> Self {
        let (http, admin) = (free_port(), free_port());
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(kubelet_expand(rendered_args, name))
            .arg(format!("--http-listen={http}"))
            .arg(format!("--https-listen={}", free_port()))
            .arg(format!("--admin-listen={admin}"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("POD_IP", "127.0.0.1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start gatehouse");
        Self {
            child,
            http,
            admin,
            log,
        }
    }

    fn ready(&self) -> bool {
        matches!(admin_get(self.admin, "/readyz"), Ok((200, _)))
    }

    fn leads(&self) -> bool {
        admin_get(self.admin, "/metrics")
            .is_ok_and(|(_, text)| text.lines().any(|l| l.trim() == "gatehouse_kube_leader 1"))
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// How long `check` took to hold; panics after `within`, showing the gateways' logs.
async fn eventually(
    what: &str,
    within: Duration,
    pods: &[Option<Pod>],
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > within {
            let logs: Vec<String> = pods.iter().flatten().map(Pod::log).collect();
            panic!(
                "timed out after {within:?} waiting for {what}:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Every request the API server saw must be one the rendered RBAC allows the ServiceAccount.
fn assert_all_allowed(api: &FakeApi, docs: &[Value], case: &str) {
    let mut denied = BTreeSet::new();
    let requests = api.requests();
    for request in &requests {
        if let Some((verb, group, resource, namespace, name)) = access_of(request) {
            let access = Access {
                verb: &verb,
                group: &group,
                resource: &resource,
                namespace: namespace.as_deref(),
                name: name.as_deref(),
            };
            if !can_i(docs, &access) {
                denied.insert(format!("{access:?} ({request})"));
            }
        }
    }
    assert!(
        denied.is_empty(),
        "{case}: the chart's RBAC would deny:\n{}",
        denied.into_iter().collect::<Vec<_>>().join("\n")
    );
    assert!(
        requests.len() > 10,
        "{case}: hardly any requests: {requests:?}"
    );
}

/// The Ingress status the leader writes: the published Service's load-balancer address.
fn lb_ip(api: &FakeApi, namespace: &str) -> Option<String> {
    let ingress = api.get("Ingress", namespace, "web")?;
    ingress["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .map(str::to_owned)
}

/// Two replicas started from the rendered chart: both become ready and one leads, writing
/// Ingress status, with only the requests the rendered RBAC allows (cluster-wide, and with
/// watchNamespaces: Roles only). With the chart's Lease defaults, a crashed leader is replaced
/// within a few seconds (issue: 11–12 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_from_the_chart_stay_within_its_rbac_and_take_over_within_seconds() {
    for (case, file, ingress_ns) in [
        ("default", None, "default"),
        (
            "watch-namespaces-monitoring-hpa",
            Some(values("watch-namespaces-monitoring-hpa")),
            "team-a",
        ),
    ] {
        let docs = render_docs(file.as_deref());
        let rendered_args = args(workload(&docs));
        let class = flag(&rendered_args, "--ingress-class").expect("class flag");
        let api = FakeApi::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = api.kubeconfig(dir.path());
        api.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": FULLNAME, "namespace": NAMESPACE},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}},
        }));
        api.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": ingress_ns},
            "spec": {"ingressClassName": class, "rules": [{"host": "web.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
        }));

        let mut pods = ["gatehouse-a", "gatehouse-b"]
            .map(|name| Some(Pod::start(&rendered_args, name, &kubeconfig, dir.path())));
        eventually(
            &format!("{case}: both ready"),
            Duration::from_secs(20),
            &pods,
            || pods.iter().flatten().all(Pod::ready),
        )
        .await;
        eventually(
            &format!("{case}: a leader"),
            Duration::from_secs(10),
            &pods,
            || pods.iter().flatten().any(Pod::leads),
        )
        .await;
        eventually(
            &format!("{case}: Ingress status"),
            Duration::from_secs(10),
            &pods,
            || lb_ip(&api, ingress_ns).as_deref() == Some("203.0.113.7"),
        )
        .await;
        let leaders = pods.iter().flatten().filter(|p| p.leads()).count();
        assert_eq!(leaders, 1, "{case}: one leader");

        if case == "default" {
            // Crash the leader (SIGKILL: no Lease release) and time the other's takeover.
            let leader = pods
                .iter()
                .position(|p| p.as_ref().is_some_and(Pod::leads))
                .expect("a leader");
            pods[leader] = None;
            let survivor = pods[1 - leader].as_ref().expect("running");
            let took = eventually(
                "the survivor to lead",
                Duration::from_secs(10),
                &pods,
                || survivor.leads(),
            )
            .await;
            println!(
                "chart defaults (lease 4 s, renew 1 s): leadership moved {took:?} after the leader was killed"
            );
            assert!(
                took < Duration::from_secs(7),
                "takeover took {took:?}:\n{}",
                survivor.log()
            );
        }
        assert_all_allowed(&api, &docs, case);
    }
}

/// Every key of values.yaml has a row in the chart README's Values table (a row may name
/// siblings, `a.b` / `c` meaning `a.b` and `a.c`, or a whole map such as `resources`).
#[test]
fn chart_readme_documents_every_value() {
    let readme = fs::read_to_string(chart_dir().join("README.md")).expect("chart README");
    let mut documented = BTreeSet::new();
    for row in readme.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap_or_default();
        let keys: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
        let parent = keys
            .first()
            .and_then(|first| first.rsplit_once('.'))
            .map_or("", |(parent, _)| parent);
        for key in keys {
            if key.contains('.') || parent.is_empty() {
                documented.insert(key.to_owned());
            } else {
                documented.insert(format!("{parent}.{key}"));
            }
        }
    }
    let values: Value = serde_saphyr::from_str(
        &fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(&path, child, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut keys = Vec::new();
    leaves("", &values, &mut keys);
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| {
            !documented
                .iter()
                .any(|d| *key == d || key.starts_with(&format!("{d}.")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from charts/gatehouse/README.md: {missing:?}"
    );
    assert!(keys.len() > 80, "only {} values found", keys.len());
}

#[test]
fn dashboard_and_alert_rules_are_shipped_when_asked() {
    let docs = render_with(None, &[]).expect("defaults render");
    let kinds = kinds(&docs);
    assert!(!kinds.contains("PrometheusRule"), "{kinds:?}");
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == format!("{FULLNAME}-dashboard")),
        "dashboard rendered by default"
    );

    let docs = render_with(
        None,
        &[
            "metrics.dashboard.enabled=true",
            "metrics.dashboard.namespace=monitoring",
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=kps",
        ],
    )
    .expect("render");
    let dashboard = find(&docs, "ConfigMap", &format!("{FULLNAME}-dashboard"));
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(
        dashboard["data"]["gatehouse.json"]
            .as_str()
            .expect("dashboard text"),
    )
    .expect("dashboard JSON");
    assert_eq!(json["uid"], "gatehouse");

    // The PrometheusRule holds the plain rules file promtool checks, rule for rule.
    let rule = find(&docs, "PrometheusRule", FULLNAME);
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    let file: Value = serde_saphyr::from_str(
        &std::fs::read_to_string("charts/gatehouse/files/alerts.yaml").expect("rules file"),
    )
    .expect("rules YAML");
    assert_eq!(rule["spec"], file);
}

/// Issue 11: tracing is a chart value. Unset, the gateway gets no tracing flag; set, the
/// rendered `--otlp-endpoint` and `--trace-sample-ratio` (a decimal given with `--set` too)
/// start a gateway that exports each request's span to that collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_values_make_the_gateway_export_spans() {
    let default_args = args(workload(&render_docs(None)));
    assert!(
        !default_args
            .iter()
            .any(|a| a.starts_with("--otlp") || a.starts_with("--trace")),
        "tracing is off by default: {default_args:?}"
    );

    let (collector, mut spans) = otlp_receiver().await;
    let endpoint = format!("tracing.otlpEndpoint=http://{collector}");
    let out = helm_template(&["--set", &endpoint, "--set", "tracing.sampleRatio=0.5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rendered = text(&out.stdout);
    validate(&rendered);
    let rendered_args = args(workload(&manifests(&rendered)));
    for flag in [
        format!("--otlp-endpoint=http://{collector}"),
        "--trace-sample-ratio=0.5".to_owned(),
    ] {
        assert!(
            rendered_args.contains(&flag),
            "{flag} missing in {rendered_args:?}"
        );
    }
    // Every request sampled, so the test does not depend on chance: a later flag wins.
    let out = helm_template(&["--set", &endpoint, "--set", "tracing.sampleRatio=1"]);
    let rendered_args = args(workload(&manifests(&text(&out.stdout))));
    assert!(rendered_args.contains(&"--trace-sample-ratio=1".to_owned()));

    let api = FakeApi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = api.kubeconfig(dir.path());
    let pods = [Some(Pod::start(
        &rendered_args,
        "gatehouse-a",
        &kubeconfig,
        dir.path(),
    ))];
    eventually("ready", Duration::from_secs(20), &pods, || {
        pods.iter().flatten().all(Pod::ready)
    })
    .await;
    let Some(pod) = &pods[0] else { unreachable!() };
    let status = support::client()
        .get(format!("http://{}/traced", pod.http))
        .header("host", "nowhere.test")
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 404);
    let span = tokio::time::timeout(Duration::from_secs(5), spans.recv())
        .await
        .unwrap_or_else(|_| panic!("no span exported within 5 s; log:\n{}", pod.log()))
        .expect("span");
    assert_eq!(span.trace_id.len(), 16);
}

/// An OTLP/HTTP collector on loopback: the spans of every export it receives.
async fn otlp_receiver() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<opentelemetry_proto::tonic::trace::v1::Span>,
) {
    use http_body_util::BodyExt;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = support::origin::serve(move |req: hyper::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.expect("body").to_bytes();
            if path == "/v1/traces"
                && let Ok(export) = ExportTraceServiceRequest::decode(body)
            {
                for scope in export
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                {
                    for span in scope.spans {
                        let _ = tx.send(span);
                    }
                }
            }
            hyper::Response::builder()
                .header("content-type", "application/x-protobuf")
                .body(support::origin::full(
                    ExportTraceServiceResponse::default().encode_to_vec(),
                ))
                .expect("response")
        }
    })
    .await;
    (addr, rx)
}
