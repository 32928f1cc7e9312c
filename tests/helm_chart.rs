//! The Helm chart (`charts/gatehouse`) as a cluster admin meets it: rendered by real Helm for the
//! default values and for every file in `tests/chart_values/`, validated against the Kubernetes
//! OpenAPI schemas of several versions, scanned by checkov, and read back to check what it
//! deploys, what it grants and how the gateway is started.
//!
//! Needs `helm` (3.6.2), `kubernetes-validate` and `checkov` on PATH: run
//! `.ci/install-chart-tools` (as root) first. A missing tool fails the tests; it never skips them.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

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

    for version in KUBERNETES_VERSIONS {
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

fn container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("pod template has containers");
    assert_eq!(containers.len(), 1, "one gateway container per pod");
    &containers[0]
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

/// What the gateway needs without ACME: read its inputs, publish Ingress status, report Events.
fn base_cluster_grants() -> Vec<Rule> {
    vec![
        ("networking.k8s.io", &["ingresses", "ingressclasses"], READ),
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
        "daemonset-hostports",
        "nodeport",
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
    }
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
        ]),
        "leader election identity comes from the downward API"
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
fn cluster_role_grants_only_what_the_gateway_uses() {
    let docs = render_docs(None);
    let cluster_role = find(&docs, "ClusterRole", FULLNAME);
    let granted = grants(cluster_role);
    assert!(
        !granted
            .iter()
            .any(|(g, r, v)| g == "*" || r == "*" || v == "*"),
        "no wildcards: {granted:?}"
    );
    assert_eq!(
        granted,
        grant_set(&base_cluster_grants()),
        "without ACME the gateway only reads Secrets"
    );

    let acme = render_docs(Some(&values("acme")));
    let mut with_acme = base_cluster_grants();
    with_acme.push(("", &["secrets"], &["create", "update", "patch"]));
    assert_eq!(
        grants(find(&acme, "ClusterRole", FULLNAME)),
        grant_set(&with_acme),
        "ACME writes certificates, its account and challenges as Secrets"
    );

    let role = find(&docs, "Role", FULLNAME);
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        grants(role),
        grant_set(&[(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update"]
        )])
    );

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
    assert_eq!(
        find(&docs, "Service", FULLNAME)["spec"]["type"],
        "ClusterIP"
    );
    assert!(
        !args(daemonset)
            .iter()
            .any(|arg| arg.starts_with("--publish-service")),
        "clients use the nodes' addresses, not the ClusterIP"
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
    assert!(args(deployment).iter().any(|a| a == "--acme-directory=staging"));
}
