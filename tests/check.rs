//! `gatehouse check`, the migration report, run as a user runs it: the real binary on a set of
//! realistic ingress-nginx Ingresses (tests/fixtures/ingress-nginx), in text and JSON, from
//! files, a directory and standard input, with the exit code CI scripts rely on.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ingress-nginx")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn check(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("check")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gatehouse runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("gatehouse exits")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn ingress<'v>(report: &'v Value, name: &str) -> &'v Value {
    report["ingresses"]
        .as_array()
        .expect("ingresses")
        .iter()
        .find(|i| i["ingress"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

fn outcome<'v>(ingress: &'v Value, annotation: &str) -> &'v Value {
    ingress["annotations"]
        .as_array()
        .expect("annotations")
        .iter()
        .find(|a| a["annotation"] == annotation)
        .unwrap_or_else(|| panic!("no {annotation} in {ingress:#}"))
}

#[test]
fn check_reports_every_ingress_of_a_directory_and_fails_when_anything_is_refused() {
    let out = check(&[&fixtures().display().to_string()], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // The verdict per Ingress, the outcome per annotation, and why.
    assert!(
        text.contains("Ingress shop/admin (class nginx): served\n"),
        "{text}"
    );
    assert!(text.contains("  honoured  nginx.ingress.kubernetes.io/auth-secret  1 user(s) from Secret shop/basic-auth\n"), "{text}");
    assert!(
        text.contains("Ingress hr/payroll (class nginx): REFUSED: its routes would answer 503\n"),
        "{text}"
    );
    assert!(text.contains("  refused   nginx.ingress.kubernetes.io/whitelist-source-range  \"office-vpn\" is not an IP address or CIDR\n"), "{text}");
    assert!(
        text.contains("Ingress web/legacy-headers (class nginx): REFUSED"),
        "{text}"
    );
    assert!(
        text.contains("configuration-snippet  never executed;"),
        "{text}"
    );
    assert!(
        text.contains("Ingress partners/partner-api (class nginx): REFUSED"),
        "{text}"
    );
    assert!(text.contains("  ignored   nginx.ingress.kubernetes.io/proxy-buffer-size   Responses are streamed: no buffers to size.\n"), "{text}");
    assert!(text.contains("  honoured  nginx.ingress.kubernetes.io/canary-weight     10 of 100 requests go to the canary\n"), "{text}");
    // The kube-lego era Ingress is read, and told to convert.
    assert!(
        text.contains("Ingress default/dashboard (class nginx): served\n"),
        "{text}"
    );
    assert!(
        text.contains("warning   uses the removed API version extensions/v1beta1"),
        "{text}"
    );
    assert!(text.ends_with("12 Ingresses: 9 served, 3 not served. Annotations: 22 honoured, 3 ignored, 5 refused.\n"), "{text}");
}

#[test]
fn check_json_has_verdicts_outcomes_values_and_a_summary() {
    let out = check(
        &["--format", "json", &fixtures().display().to_string()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert_eq!(report["summary"]["ingresses"], 12);
    assert_eq!(report["summary"]["notServed"], 3);
    assert_eq!(report["summary"]["refused"], 5);
    let payroll = ingress(&report, "hr/payroll");
    assert_eq!(payroll["verdict"], "refused");
    assert_eq!(
        payroll["reason"],
        "Ingress hr/payroll is not served: nginx.ingress.kubernetes.io/whitelist-source-range: \"office-vpn\" is not an IP address or CIDR"
    );
    let range = outcome(
        payroll,
        "nginx.ingress.kubernetes.io/whitelist-source-range",
    );
    assert_eq!(range["outcome"], "refused");
    assert_eq!(range["value"], "10.0.0.0/8, office-vpn");
    let rewrite = ingress(&report, "default/rewrite");
    assert_eq!(rewrite["verdict"], "served");
    assert_eq!(
        outcome(rewrite, "nginx.ingress.kubernetes.io/rewrite-target")["outcome"],
        "honoured"
    );
    let oauth = ingress(&report, "tools/protected");
    assert_eq!(oauth["verdict"], "served");
    assert_eq!(
        outcome(oauth, "nginx.ingress.kubernetes.io/auth-url")["outcome"],
        "honoured"
    );
    let cors = ingress(&report, "shop/api");
    assert_eq!(
        outcome(cors, "nginx.ingress.kubernetes.io/cors-allow-origin")["outcome"],
        "honoured"
    );
}

#[test]
fn check_exits_zero_when_nothing_would_be_refused() {
    let out = check(
        &[
            &fixture("01-basic-auth.yaml"),
            &fixture("04-canary.yaml"),
            &fixture("10-limits.yaml"),
        ],
        None,
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.ends_with(
            "4 Ingresses: 4 served, 0 not served. Annotations: 8 honoured, 3 ignored, 0 refused.\n"
        ),
        "{text}"
    );
}

#[test]
fn check_reads_kubectl_list_output_from_standard_input() {
    // What `kubectl get ingress -A -o yaml` prints: a v1 List.
    let list = r#"apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata:
    name: blog
    namespace: web
    annotations:
      nginx.ingress.kubernetes.io/auth-type: basic
      nginx.ingress.kubernetes.io/auth-secret: blog-users
      nginx.ingress.kubernetes.io/limit-rpm: "600"
  spec:
    ingressClassName: nginx
    rules:
    - host: blog.example.com
      http:
        paths:
        - {path: /, pathType: Prefix, backend: {service: {name: blog, port: {number: 80}}}}
metadata:
  resourceVersion: ""
"#;
    let out = check(&["-"], Some(list));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Ingress web/blog (class nginx): REFUSED"),
        "{text}"
    );
    assert!(
        text.contains("auth-secret  Secret web/blog-users not found"),
        "{text}"
    );
    assert!(text.contains("Note: the input has no Secrets"), "{text}");
    // With the Secret given too, the same Ingress is served.
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: blog-users, namespace: web}\nstringData:\n  auth: \"editor:$apr1$xd0fbPrU$2RaergRC8UwbeohteM8oF/\"\n";
    let out = check(&[], Some(&format!("{list}{secret}")));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("Ingress web/blog (class nginx): served"));
}

#[test]
fn check_says_which_input_it_cannot_read() {
    let out = check(&["/nonexistent/manifests"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("gatehouse check: /nonexistent/manifests:"),
        "{err}"
    );
    let out = check(&["-"], Some("kind: [unclosed"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input"));
}
