//! Certificate parsing, name matching, the TLS table translate() builds, and the resolver.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use super::*;
use crate::objects::{ObjectKey, Objects};
use crate::proxy::sni::CertResolver;
use crate::routing::HostMatch;
use crate::shared::{DataPlane, Shared};
use crate::snapshot::Snapshot;
use crate::sources::manifests::parse_documents;
use crate::translate::{Memo, Settings, translate};

// === test helpers ===

/// A test CA that issues leaf certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
#[derive(Clone)]
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, 2000, 2100)
    }

    /// A leaf valid from January 1st of `from` to January 1st of `until`.
    fn leaf_valid(&self, names: &[&str], from: i32, until: i32) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Jan 1st 2030: inside the validity of [`Ca::leaf`].
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

fn settings() -> Settings {
    Settings {
        now: Some(now()),
        ..Settings::default()
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// A kubernetes.io/tls Secret written with `stringData`, as in a hand-written manifest.
fn secret(name: &str, leaf: &Leaf) -> String {
    secret_raw(name, &leaf.cert, &leaf.key)
}

fn secret_raw(name: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name:?}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

/// The same Secret with base64 `data`, as the API returns it.
fn secret_data(name: &str, leaf: &Leaf) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name:?}, namespace: default}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        base64(leaf.cert.as_bytes()),
        base64(leaf.key.as_bytes())
    )
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An Ingress `name` (class gatehouse) routing each host's `/` to Service `web`, no TLS.
fn rules_ingress(name: &str, hosts: &[&str], annotations: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name:?}\n  namespace: default\n"
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for (k, v) in annotations {
            out.push_str(&format!("    {k:?}: {v:?}\n"));
        }
    }
    out.push_str("spec:\n  ingressClassName: gatehouse\n  rules:\n");
    for host in hosts {
        out.push_str(&format!(
            "  - host: {host:?}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        ));
    }
    out
}

/// [`rules_ingress`] with one `spec.tls` entry for the same hosts.
fn tls_ingress(name: &str, hosts: &[&str], secret: &str, annotations: &[(&str, &str)]) -> String {
    let list: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    format!(
        "{}  tls:\n  - hosts: [{}]\n    secretName: {secret}\n",
        rules_ingress(name, hosts, annotations),
        list.join(", ")
    )
}

/// Service `web` with one ready endpoint.
fn web() -> String {
    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  ports: [{name: http, port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web\n  namespace: default\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n  - addresses: [\"10.0.0.1\"]\n    conditions: {ready: true}\n".to_owned()
}

fn objects<S: AsRef<str>>(parts: &[S]) -> Objects {
    // Part by part: a YAML stream is limited to 1024 documents.
    let mut objects = Objects::default();
    for part in parts {
        for object in parse_documents(part.as_ref()).expect("valid manifests") {
            objects.insert(object);
        }
    }
    objects
}

fn build<S: AsRef<str>>(parts: &[S], memo: &mut Memo) -> Snapshot {
    translate(&objects(parts), &settings(), memo)
}

fn warnings(snapshot: &Snapshot) -> Vec<String> {
    snapshot.warnings.iter().map(|w| w.to_string()).collect()
}

/// The Secret serving a server name, if any.
fn served_by(snapshot: &Snapshot, sni: &str) -> Option<String> {
    snapshot.tls.lookup(sni).map(|c| c.secret.to_string())
}

// === names ===

#[test]
fn names_are_lower_cased_without_trailing_dot() {
    assert_eq!(normalize_name("App.Example.COM."), "app.example.com");
    assert_eq!(normalize_name("app.example.com"), "app.example.com");
    assert!(matches!(
        normalize_name("app.example.com"),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn wildcard_name_covers_exactly_one_label() {
    assert!(name_matches("*.example.com", "a.example.com"));
    assert!(name_matches("*.example.com", "*.example.com"));
    assert!(!name_matches("*.example.com", "example.com"));
    assert!(!name_matches("*.example.com", "a.b.example.com"));
    assert!(!name_matches("*.example.com", "*.a.example.com"));
    assert!(name_matches("a.example.com", "a.example.com"));
    assert!(!name_matches("a.example.com", "b.example.com"));
}

// === parsing ===

#[test]
fn certificate_parses_with_names_and_validity() {
    let leaf = Ca::new().leaf_valid(&["App.Example.com", "10.1.2.3"], 2020, 2040);
    let key = ObjectKey::new("default", "s");
    let cert = TlsCert::from_pem(key, leaf.cert.as_bytes(), leaf.key.as_bytes()).unwrap();
    assert_eq!(cert.names, ["app.example.com", "10.1.2.3"]);
    assert_eq!(certs::rfc3339(cert.not_before), "2020-01-01T00:00:00Z");
    assert_eq!(certs::rfc3339(cert.not_after), "2040-01-01T00:00:00Z");
    assert!(cert.check_validity(now()).is_ok());
    assert!(cert.covers("app.example.com"));
}

#[test]
fn parse_errors_say_what_is_wrong() {
    let ca = Ca::new();
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));
    let parse = |cert: &str, key: &str| {
        TlsCert::from_pem(ObjectKey::new("ns", "s"), cert.as_bytes(), key.as_bytes()).err()
    };
    assert_eq!(
        parse("nothing here", &a.key),
        Some(CertError::NoCertificate)
    );
    assert_eq!(
        parse(&a.cert, "nothing here"),
        Some(CertError::NoPrivateKey)
    );
    assert_eq!(parse(&a.cert, &b.key), Some(CertError::KeyMismatch));
    let broken = a.cert.replace("MI", "!!");
    assert!(matches!(
        parse(&broken, &a.key),
        Some(CertError::BadPem(..) | CertError::BadCertificate(_))
    ));
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        parse(garbage, &a.key),
        Some(CertError::BadCertificate(_))
    ));

    let old = ca.leaf_valid(&["a.test"], 2000, 2001);
    let old = TlsCert::from_pem(
        ObjectKey::new("ns", "s"),
        old.cert.as_bytes(),
        old.key.as_bytes(),
    )
    .unwrap();
    let err = old.check_validity(now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate expired at 2001-01-01T00:00:00Z"
    );
    let future = ca.leaf_valid(&["a.test"], 2090, 2100);
    let future = TlsCert::from_pem(
        ObjectKey::new("ns", "s"),
        future.cert.as_bytes(),
        future.key.as_bytes(),
    )
    .unwrap();
    assert!(matches!(
        future.check_validity(now()),
        Err(CertError::NotYetValid(_))
    ));
}

#[test]
fn secret_data_base64_and_string_data_both_work() {
    let ca = Ca::new();
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));
    let snapshot = build(
        &[
            web(),
            secret_data("a", &a),
            secret("b", &b),
            tls_ingress("a", &["a.test"], "a", &[]),
            tls_ingress("b", &["b.test"], "b", &[]),
        ],
        &mut Memo::default(),
    );
    assert_eq!(warnings(&snapshot), Vec::<String>::new());
    assert_eq!(served_by(&snapshot, "a.test").as_deref(), Some("default/a"));
    assert_eq!(served_by(&snapshot, "b.test").as_deref(), Some("default/b"));
}

#[test]
fn secret_of_another_type_or_without_keys_is_refused() {
    let leaf = Ca::new().leaf(&["a.test"]);
    let wrong_type = secret("a", &leaf).replace("kubernetes.io/tls", "kubernetes.io/basic-auth");
    let snapshot = build(
        &[web(), wrong_type, tls_ingress("a", &["a.test"], "a", &[])],
        &mut Memo::default(),
    );
    assert_eq!(served_by(&snapshot, "a.test"), None);
    assert!(
        warnings(&snapshot)[0].contains("expected \"kubernetes.io/tls\""),
        "{:?}",
        warnings(&snapshot)
    );

    let no_key = "apiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: default}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n";
    let snapshot = build(
        &[
            web(),
            no_key.to_owned(),
            tls_ingress("a", &["a.test"], "a", &[]),
        ],
        &mut Memo::default(),
    );
    assert!(
        warnings(&snapshot)[0].contains("has no \"tls.key\" key"),
        "{:?}",
        warnings(&snapshot)
    );
}

// === the table ===

#[test]
fn sni_picks_exact_host_then_wildcard_then_nothing() {
    let ca = Ca::new();
    let (exact, wild) = (ca.leaf(&["www.example.com"]), ca.leaf(&["*.example.com"]));
    let snapshot = build(
        &[
            web(),
            secret("exact", &exact),
            secret("wild", &wild),
            tls_ingress("exact", &["www.example.com"], "exact", &[]),
            tls_ingress("wild", &["*.example.com"], "wild", &[]),
        ],
        &mut Memo::default(),
    );
    assert_eq!(warnings(&snapshot), Vec::<String>::new());
    assert_eq!(
        served_by(&snapshot, "www.example.com").as_deref(),
        Some("default/exact")
    );
    assert_eq!(
        served_by(&snapshot, "WWW.Example.com.").as_deref(),
        Some("default/exact")
    );
    assert_eq!(
        served_by(&snapshot, "api.example.com").as_deref(),
        Some("default/wild")
    );
    assert_eq!(served_by(&snapshot, "a.b.example.com"), None);
    assert_eq!(served_by(&snapshot, "example.com"), None);
    assert_eq!(served_by(&snapshot, "other.test"), None);
    let described = snapshot.tls.describe();
    assert_eq!(described["*.example.com"]["secret"], "default/wild");
    assert_eq!(described["www.example.com"]["names"][0], "www.example.com");
    assert_eq!(
        described["www.example.com"]["notAfter"],
        "2100-01-01T00:00:00Z"
    );
}

#[test]
fn tls_entry_without_hosts_covers_the_rule_hosts() {
    let leaf = Ca::new().leaf(&["a.test", "b.test"]);
    let ing = format!(
        "{}  tls:\n  - secretName: s\n",
        rules_ingress("x", &["a.test", "b.test"], &[])
    );
    let snapshot = build(&[web(), secret("s", &leaf), ing], &mut Memo::default());
    assert_eq!(served_by(&snapshot, "a.test").as_deref(), Some("default/s"));
    assert_eq!(served_by(&snapshot, "b.test").as_deref(), Some("default/s"));
}

#[test]
fn certificate_not_naming_its_host_is_served_with_a_warning() {
    let leaf = Ca::new().leaf(&["other.test"]);
    let snapshot = build(
        &[
            web(),
            secret("s", &leaf),
            tls_ingress("x", &["a.test"], "s", &[]),
        ],
        &mut Memo::default(),
    );
    assert_eq!(served_by(&snapshot, "a.test").as_deref(), Some("default/s"));
    assert_eq!(
        warnings(&snapshot),
        [
            "Ingress default/x: certificate in Secret default/s is not valid for host a.test (it names other.test)"
        ]
    );
}

#[test]
fn oldest_ingress_keeps_a_tls_host_another_one_claims() {
    let ca = Ca::new();
    let (old, new) = (ca.leaf(&["a.test"]), ca.leaf(&["a.test"]));
    let older = tls_ingress("older", &["a.test"], "old", &[]).replace(
        "  name: \"older\"\n",
        "  name: \"older\"\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\n",
    );
    let snapshot = build(
        &[
            web(),
            secret("old", &old),
            secret("new", &new),
            tls_ingress("newer", &["a.test"], "new", &[]),
            older,
        ],
        &mut Memo::default(),
    );
    assert_eq!(
        served_by(&snapshot, "a.test").as_deref(),
        Some("default/old")
    );
    assert!(
        warnings(&snapshot).iter().any(|w| w.starts_with(
            "Ingress default/newer: TLS host a.test ignored: Ingress default/older (older)"
        )),
        "{:?}",
        warnings(&snapshot)
    );
}

#[test]
fn broken_secret_costs_only_its_host_and_the_host_keeps_its_last_good_certificate() {
    let ca = Ca::new();
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));
    let ingresses = [
        tls_ingress("a", &["a.test"], "a", &[]),
        tls_ingress("b", &["b.test"], "b", &[]),
    ];
    let mut memo = Memo::default();
    let good = build(
        &[
            web(),
            secret("a", &a),
            secret("b", &b),
            ingresses[0].clone(),
            ingresses[1].clone(),
        ],
        &mut memo,
    );
    let good_key = good.tls.lookup("b.test").unwrap().key.clone();

    // b's key no longer matches its certificate.
    let broken_b = secret_raw("b", &b.cert, &a.key);
    let next = build(
        &[
            web(),
            secret("a", &a),
            broken_b,
            ingresses[0].clone(),
            ingresses[1].clone(),
        ],
        &mut memo,
    );
    assert_eq!(served_by(&next, "a.test").as_deref(), Some("default/a"));
    assert!(Arc::ptr_eq(
        &next.tls.lookup("b.test").unwrap().key,
        &good_key
    ));
    assert_eq!(
        warnings(&next),
        [
            "Ingress default/b: TLS Secret default/b for host b.test not usable: private key does not match the certificate; keeping its last good certificate (from Secret default/b, valid until 2100-01-01T00:00:00Z)"
        ]
    );
    assert!(
        next.routes.lookup("b.test", "/").is_some(),
        "routes of the host still serve"
    );

    // Still broken, then deleted: the last good one stays as long as the host asks for it.
    let gone = build(
        &[
            web(),
            secret("a", &a),
            ingresses[0].clone(),
            ingresses[1].clone(),
        ],
        &mut memo,
    );
    assert!(Arc::ptr_eq(
        &gone.tls.lookup("b.test").unwrap().key,
        &good_key
    ));
    assert!(warnings(&gone)[0].contains("Secret not found; keeping its last good certificate"));

    // A host that never had a good one gets the default certificate.
    let fresh = build(
        &[
            web(),
            secret("a", &a),
            ingresses[0].clone(),
            ingresses[1].clone(),
        ],
        &mut Memo::default(),
    );
    assert_eq!(served_by(&fresh, "b.test"), None);
    assert!(warnings(&fresh)[0].ends_with("Secret not found; served with the default certificate"));
}

#[test]
fn expired_certificate_is_not_put_in_service() {
    let ca = Ca::new();
    let expired = ca.leaf_valid(&["a.test"], 2000, 2001);
    let snapshot = build(
        &[
            web(),
            secret("a", &expired),
            tls_ingress("a", &["a.test"], "a", &[]),
        ],
        &mut Memo::default(),
    );
    assert_eq!(served_by(&snapshot, "a.test"), None);
    assert!(warnings(&snapshot)[0].contains("certificate expired at 2001-01-01T00:00:00Z"));
    // What the Secret holds stays visible, e.g. for the ACME manager to renew it.
    let held = snapshot.tls.secret_cert(&ObjectKey::new("default", "a"));
    let held = held.expect("parsed").expect("a certificate");
    assert_eq!(certs::rfc3339(held.not_after), "2001-01-01T00:00:00Z");
    let missing = ObjectKey::new("default", "missing");
    assert!(snapshot.tls.secret_cert(&missing).is_none());
}

#[test]
fn unchanged_secrets_are_not_parsed_again() {
    use crate::objects::Object;
    const N: usize = 10_000;
    let ca = Ca::new();
    let leaf = ca.leaf(&["*.test"]);
    // N Secrets and Ingresses, cloned from one parsed template each (YAML parsing of 20,000
    // documents would dominate the test); every call makes new Arcs, as a source does after
    // any change, so reuse must come from comparing the data.
    let template = |yaml: String| parse_documents(&yaml).unwrap().remove(0);
    let (Object::Secret(secret_t), Object::Ingress(ingress_t)) = (
        template(secret("s", &leaf)),
        template(tls_ingress("i", &["h.test"], "s", &[])),
    ) else {
        panic!("templates")
    };
    let build_objects = |first_secret: &Arc<k8s_openapi::api::core::v1::Secret>| {
        let mut objects = objects(&[web()]);
        for i in 0..N {
            let mut s = if i == 0 {
                (**first_secret).clone()
            } else {
                (*secret_t).clone()
            };
            s.metadata.name = Some(format!("s{i}"));
            objects.insert(Object::Secret(Arc::new(s)));
            let mut ing = (*ingress_t).clone();
            ing.metadata.name = Some(format!("i{i}"));
            let spec = ing.spec.as_mut().unwrap();
            spec.rules.as_mut().unwrap()[0].host = Some(format!("h{i}.test"));
            let tls = &mut spec.tls.as_mut().unwrap()[0];
            tls.hosts = Some(vec![format!("h{i}.test")]);
            tls.secret_name = Some(format!("s{i}"));
            objects.insert(Object::Ingress(Arc::new(ing)));
        }
        objects
    };

    let first_objects = build_objects(&secret_t);
    let started = std::time::Instant::now();
    let mut memo = Memo::default();
    let first = translate(&first_objects, &settings(), &mut memo);
    let first_took = started.elapsed();
    let second_objects = build_objects(&secret_t);
    let started = std::time::Instant::now();
    let second = translate(&second_objects, &settings(), &mut memo);
    let second_took = started.elapsed();
    assert_eq!(second.tls.len(), N);
    for i in 0..N {
        let host = format!("h{i}.test");
        let (a, b) = (
            first.tls.lookup(&host).unwrap(),
            second.tls.lookup(&host).unwrap(),
        );
        assert!(Arc::ptr_eq(a, b), "{host} parsed again");
    }
    eprintln!("{N} Secrets: first translate {first_took:?}, unchanged again {second_took:?}");

    // A changed Secret is parsed again; the others are still reused.
    let Object::Secret(changed) = template(secret("s", &ca.leaf(&["*.test"]))) else {
        panic!("secret")
    };
    let third = translate(&build_objects(&changed), &settings(), &mut memo);
    let same = |host: &str| {
        Arc::ptr_eq(
            second.tls.lookup(host).unwrap(),
            third.tls.lookup(host).unwrap(),
        )
    };
    assert!(!same("h0.test"));
    assert!(same("h1.test"));
}

#[test]
fn default_certificate_comes_from_its_secret_and_keeps_its_last_good_one() {
    let leaf = Ca::new().leaf(&["default.test"]);
    let settings = Settings {
        default_certificate: Some(ObjectKey::new("gatehouse", "fallback")),
        ..settings()
    };
    let fallback = secret("fallback", &leaf).replace("namespace: default", "namespace: gatehouse");
    let mut memo = Memo::default();
    let good = translate(&objects(&[fallback]), &settings, &mut memo);
    assert_eq!(
        good.tls.default_cert().unwrap().secret.to_string(),
        "gatehouse/fallback"
    );
    let missing = translate(&objects(&[web()]), &settings, &mut memo);
    assert!(missing.tls.default_cert().is_some());
    assert_eq!(
        warnings(&missing),
        [
            "Secret gatehouse/fallback: --default-certificate not usable: Secret not found; keeping its last good certificate (from Secret gatehouse/fallback, valid until 2100-01-01T00:00:00Z)"
        ]
    );
}

// === redirects ===

#[test]
fn ssl_redirect_applies_to_tls_hosts_only_and_the_annotation_wins() {
    let leaf = Ca::new().leaf(&["a.test", "b.test"]);
    let plain = rules_ingress("plain", &["c.test"], &[]);
    let off = tls_ingress(
        "off",
        &["b.test"],
        "s",
        &[(SSL_REDIRECT_ANNOTATION, "false")],
    );
    let parts = [
        web(),
        secret("s", &leaf),
        tls_ingress("on", &["a.test"], "s", &[]),
        off,
        plain,
    ];
    let redirects =
        |snapshot: &Snapshot, host: &str| snapshot.routes.lookup(host, "/").unwrap().ssl_redirect;

    let default_off = build(&parts, &mut Memo::default());
    assert!(
        !redirects(&default_off, "a.test"),
        "--ssl-redirect is off by default"
    );

    let settings = Settings {
        ssl_redirect: true,
        ..settings()
    };
    let on = translate(&objects(&parts), &settings, &mut Memo::default());
    assert!(redirects(&on, "a.test"));
    assert!(!redirects(&on, "b.test"), "annotation false beats the flag");
    assert!(
        !redirects(&on, "c.test"),
        "a host without TLS is never redirected"
    );

    let asked = tls_ingress("x", &["a.test"], "s", &[(SSL_REDIRECT_ANNOTATION, "true")]);
    let snapshot = build(&[web(), secret("s", &leaf), asked], &mut Memo::default());
    assert!(redirects(&snapshot, "a.test"));

    let bad = tls_ingress("x", &["a.test"], "s", &[(SSL_REDIRECT_ANNOTATION, "yes")]);
    let snapshot = build(&[web(), secret("s", &leaf), bad], &mut Memo::default());
    assert!(!redirects(&snapshot, "a.test"));
    assert_eq!(
        warnings(&snapshot),
        [
            "Ingress default/x: annotation gatehouse.dev/ssl-redirect=\"yes\" ignored: expected \"true\" or \"false\""
        ]
    );
}

#[test]
fn redirect_location_keeps_path_and_query_and_drops_port_443() {
    let uri: http::Uri = "/a/b?x=1".parse().unwrap();
    let resp = redirect_to_https("App.Test:8080", &uri, 443);
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "https://app.test/a/b?x=1");
    let resp = redirect_to_https("app.test", &uri, 8443);
    assert_eq!(resp.headers()["location"], "https://app.test:8443/a/b?x=1");
}

// === upstream TLS annotations ===

#[test]
fn backend_protocol_https_takes_an_optional_server_name() {
    use crate::snapshot::{Backend, UpstreamProtocol};
    let named = rules_ingress(
        "x",
        &["a.test"],
        &[
            ("gatehouse.dev/backend-protocol", "HTTPS"),
            (BACKEND_TLS_SERVER_NAME_ANNOTATION, "Origin.Internal"),
        ],
    );
    let snapshot = build(&[web(), named], &mut Memo::default());
    let route = snapshot.routes.lookup("a.test", "/").unwrap();
    let Backend::Service(backend) = &route.backend else {
        panic!("service backend")
    };
    assert_eq!(backend.protocol, UpstreamProtocol::Https);
    assert_eq!(backend.tls_server_name.as_deref(), Some("origin.internal"));

    let bad = rules_ingress(
        "x",
        &["a.test"],
        &[
            ("gatehouse.dev/backend-protocol", "HTTPS"),
            (BACKEND_TLS_SERVER_NAME_ANNOTATION, "not a name"),
        ],
    );
    let snapshot = build(&[web(), bad], &mut Memo::default());
    assert_eq!(
        warnings(&snapshot),
        [
            "Ingress default/x: annotation gatehouse.dev/backend-tls-server-name=\"not a name\" ignored: not a DNS name or IP address"
        ]
    );
}

// === the resolver ===

fn shared_with(snapshot: Snapshot) -> Arc<DataPlane> {
    let shared = Shared::new(Default::default(), false);
    shared.plane.snapshot.store(Arc::new(snapshot));
    shared.plane.clone()
}

#[test]
fn resolver_picks_host_then_default_secret_then_generated_certificate() {
    let ca = Ca::new();
    let (a, fallback) = (ca.leaf(&["a.test"]), ca.leaf(&["default.test"]));
    let parts = [
        web(),
        secret("a", &a),
        secret("fallback", &fallback),
        tls_ingress("a", &["a.test"], "a", &[]),
    ];
    let snapshot = build(&parts, &mut Memo::default());
    let host_key = snapshot.tls.lookup("a.test").unwrap().key.clone();
    let generated = self_signed().unwrap();
    let resolver = CertResolver::new(shared_with(snapshot), generated.clone());
    assert!(Arc::ptr_eq(
        &resolver.choose(Some("A.test"), false),
        &host_key
    ));
    assert!(Arc::ptr_eq(
        &resolver.choose(Some("b.test"), false),
        &generated
    ));
    assert!(Arc::ptr_eq(&resolver.choose(None, false), &generated));

    let settings = Settings {
        default_certificate: Some(ObjectKey::new("default", "fallback")),
        ..settings()
    };
    let snapshot = translate(&objects(&parts), &settings, &mut Memo::default());
    let default_key = snapshot.tls.default_cert().unwrap().key.clone();
    let resolver = CertResolver::new(shared_with(snapshot), generated);
    assert!(Arc::ptr_eq(
        &resolver.choose(Some("b.test"), false),
        &default_key
    ));
    assert!(Arc::ptr_eq(&resolver.choose(None, false), &default_key));
}

#[test]
fn resolver_answers_acme_tls_alpn_with_the_challenge_certificate() {
    let leaf = Ca::new().leaf(&["a.test"]);
    let snapshot = build(
        &[
            web(),
            secret("a", &leaf),
            tls_ingress("a", &["a.test"], "a", &[]),
        ],
        &mut Memo::default(),
    );
    let host_key = snapshot.tls.lookup("a.test").unwrap().key.clone();
    let shared = shared_with(snapshot);
    let challenge = self_signed().unwrap();
    shared
        .challenges
        .alpn
        .set("A.Test", Some(challenge.clone()));
    let resolver = CertResolver::new(shared.clone(), self_signed().unwrap());
    assert!(Arc::ptr_eq(
        &resolver.choose(Some("a.test"), true),
        &challenge
    ));
    assert!(
        Arc::ptr_eq(&resolver.choose(Some("a.test"), false), &host_key),
        "HTTP clients get the real one"
    );
    shared.challenges.alpn.set("a.test", None);
    assert!(Arc::ptr_eq(
        &resolver.choose(Some("a.test"), true),
        &host_key
    ));
}

/// A real handshake in memory: a client offering only `acme-tls/1` negotiates it and gets the
/// challenge certificate; a client offering h2 gets the host's certificate and h2.
#[tokio::test]
async fn handshake_negotiates_acme_tls_alpn_and_h2() {
    use rustls::pki_types::ServerName;
    let leaf = Ca::new().leaf(&["a.test"]);
    let snapshot = build(
        &[
            web(),
            secret("a", &leaf),
            tls_ingress("a", &["a.test"], "a", &[]),
        ],
        &mut Memo::default(),
    );
    let host_der = snapshot.tls.lookup("a.test").unwrap().key.cert[0].clone();
    let shared = shared_with(snapshot);
    let challenge = self_signed().unwrap();
    shared
        .challenges
        .alpn
        .set("a.test", Some(challenge.clone()));
    let server =
        server_config(Arc::new(CertResolver::new(shared, self_signed().unwrap()))).unwrap();

    for (alpn, want_alpn, want_cert) in [
        (
            vec![ACME_TLS_ALPN.to_vec()],
            ACME_TLS_ALPN,
            challenge.cert[0].clone(),
        ),
        (
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            &b"h2"[..],
            host_der.clone(),
        ),
    ] {
        let mut client = upstream::client_config(false, &[]);
        client.alpn_protocols = alpn;
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("a.test").unwrap();
        let (client, server_side) = tokio::join!(connector.connect(name, c), acceptor.accept(s));
        let (client, _server_side) = (client.unwrap(), server_side.unwrap());
        let conn = client.get_ref().1;
        assert_eq!(conn.alpn_protocol(), Some(want_alpn));
        assert_eq!(conn.peer_certificates().unwrap()[0], want_cert);
    }
}

#[test]
fn tls_table_covers_rule_hosts_through_wildcards() {
    let leaf = Ca::new().leaf(&["*.example.com"]);
    let snapshot = build(
        &[
            web(),
            secret("w", &leaf),
            tls_ingress("w", &["*.example.com"], "w", &[]),
        ],
        &mut Memo::default(),
    );
    let host = |h: &str| HostMatch::parse(Some(h)).unwrap();
    assert!(snapshot.tls.covers(&host("a.example.com")));
    assert!(snapshot.tls.covers(&host("*.example.com")));
    assert!(!snapshot.tls.covers(&host("example.com")));
    assert!(!snapshot.tls.covers(&HostMatch::Any));
}

#[test]
fn secret_acme_has_yet_to_create_is_no_warning_but_other_missing_secrets_are() {
    let acme = tls_ingress(
        "pending",
        &["new.test"],
        "new-tls",
        &[("kubernetes.io/tls-acme", "true")],
    );
    let plain = tls_ingress("manual", &["manual.test"], "manual-tls", &[]);
    let snapshot = build(&[web(), acme, plain], &mut Memo::default());
    let warnings = warnings(&snapshot);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("Secret default/manual-tls")
            && warnings[0].contains("Secret not found")
    );
    // Until the certificate arrives, the host is served with the default one.
    assert_eq!(served_by(&snapshot, "new.test"), None);
}
