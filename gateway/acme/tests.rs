use std::time::{Duration, SystemTime};

use k8s_openapi::api::networking::v1::Ingress;

use super::client::{parse_retry_after, problem_label};
use super::order::{Answers, alpn_certificate, classify, withdraw};
use super::store::{FileStore, Issued, Store};
use super::*;
use crate::objects::ObjectKey;

const DAY: Duration = Duration::from_secs(24 * 3600);
/// The ACME directory configured in these tests.
const DIR: &str = "https://ca.test/dir";

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn cert(names: &[&str], not_before: SystemTime, lifetime: Duration) -> CertInfo {
    CertInfo {
        not_before,
        not_after: not_before + lifetime,
        names: hosts(names),
        directory: None,
    }
}

// === tokens ===

#[test]
fn token_accepts_base64url_only() {
    assert!(valid_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
    assert!(valid_token("a-b_c"));
    for bad in ["", "..", "a/b", "a.b", "a b", "a%2e", "a+b", "a=", "tökén"] {
        assert!(!valid_token(bad), "{bad:?} accepted");
    }
    assert!(!valid_token(&"a".repeat(257)));
}

// === settings ===

#[test]
fn directory_shorthands_name_lets_encrypt() {
    assert_eq!(directory_url("production"), LETS_ENCRYPT_PRODUCTION);
    assert_eq!(directory_url("staging"), LETS_ENCRYPT_STAGING);
    assert_eq!(
        directory_url("https://127.0.0.1:14000/dir"),
        "https://127.0.0.1:14000/dir"
    );
}

#[test]
fn renew_before_parses_fractions_percentages_and_durations() {
    assert_eq!("0.25".parse(), Ok(RenewBefore::Fraction(0.25)));
    assert_eq!("50%".parse(), Ok(RenewBefore::Fraction(0.5)));
    assert_eq!("30d".parse(), Ok(RenewBefore::Duration(30 * DAY)));
    for bad in ["0", "1", "1.5", "100%", "-0.1", "soon", ""] {
        assert!(bad.parse::<RenewBefore>().is_err(), "{bad:?} accepted");
    }
}

// === renewal ===

#[test]
fn renewal_point_is_two_thirds_of_lifetime_by_default_with_early_jitter_only() {
    let (nb, na) = (t0(), t0() + 90 * DAY);
    let rb = RenewBefore::default();
    assert_eq!(renew_at(nb, na, rb, 0), nb + 60 * DAY);
    // The most jitter moves it at most 10% of 60 days earlier, never later.
    let earliest = renew_at(nb, na, rb, u64::MAX);
    assert!(
        earliest < nb + 60 * DAY && earliest >= nb + 54 * DAY,
        "{earliest:?}"
    );
    for seed in [1, 42, 1 << 40, u64::MAX / 3] {
        let at = renew_at(nb, na, rb, seed);
        assert!(at >= earliest && at <= nb + 60 * DAY);
        assert_eq!(at, renew_at(nb, na, rb, seed), "same seed, same point");
    }
}

#[test]
fn renewal_by_duration_and_extremes() {
    let (nb, na) = (t0(), t0() + 90 * DAY);
    assert_eq!(
        renew_at(nb, na, RenewBefore::Duration(30 * DAY), 0),
        nb + 60 * DAY
    );
    // Longer than the lifetime: due from the start.
    assert_eq!(
        renew_at(nb, na, RenewBefore::Duration(400 * DAY), u64::MAX),
        nb
    );
    // A share close to 1 renews shortly after issuance, jitter staying inside that time.
    let at = renew_at(nb, na, RenewBefore::Fraction(0.999_999), u64::MAX);
    assert!(at > nb && at <= nb + Duration::from_secs(8), "{at:?}");
    // A broken validity period (not_after first) is due at once.
    assert_eq!(renew_at(na, nb, RenewBefore::default(), 0), na);
}

#[test]
fn decide_orders_missing_wrong_hosts_expired_and_due_certificates() {
    let want = hosts(&["a.example.com", "b.example.com"]);
    let rb = RenewBefore::default();
    let now = t0() + 10 * DAY;
    assert_eq!(
        decide(&want, None, DIR, rb, now, 0),
        Decision::Order(OrderReason::Missing)
    );
    let partial = cert(&["a.example.com"], t0(), 90 * DAY);
    assert_eq!(
        decide(&want, Some(&partial), DIR, rb, now, 0),
        Decision::Order(OrderReason::HostsNotCovered(hosts(&["b.example.com"])))
    );
    let good = cert(
        &["a.example.com", "b.example.com", "c.example.com"],
        t0(),
        90 * DAY,
    );
    assert_eq!(
        decide(&want, Some(&good), DIR, rb, now, 0),
        Decision::Keep {
            renew_at: t0() + 60 * DAY
        }
    );
    assert_eq!(
        decide(&want, Some(&good), DIR, rb, t0() + 61 * DAY, 0),
        Decision::Order(OrderReason::RenewalDue)
    );
    assert_eq!(
        decide(&want, Some(&good), DIR, rb, t0() + 91 * DAY, 0),
        Decision::Order(OrderReason::Expired)
    );
    assert_eq!(
        decide(&want, Some(&good), DIR, rb, t0() - DAY, 0),
        Decision::Order(OrderReason::NotYetValid)
    );
    // A CA clock a little ahead of ours: keep it, look again when it starts.
    assert_eq!(
        decide(
            &want,
            Some(&good),
            DIR,
            rb,
            t0() - Duration::from_secs(2),
            0
        ),
        Decision::Keep { renew_at: t0() }
    );
}

#[test]
fn decide_keeps_a_valid_wildcard_certificate() {
    let wildcard = cert(&["*.example.com"], t0(), 90 * DAY);
    let now = t0() + DAY;
    assert!(matches!(
        decide(
            &hosts(&["a.example.com"]),
            Some(&wildcard),
            DIR,
            RenewBefore::default(),
            now,
            7
        ),
        Decision::Keep { .. }
    ));
    assert!(matches!(
        decide(
            &hosts(&["a.b.example.com"]),
            Some(&wildcard),
            DIR,
            RenewBefore::default(),
            now,
            7
        ),
        Decision::Order(OrderReason::HostsNotCovered(_))
    ));
}

#[test]
fn a_certificate_from_another_directory_is_ordered_again_one_unrecorded_is_kept() {
    let want = hosts(&["a.example.com"]);
    let rb = RenewBefore::default();
    let now = t0() + DAY;
    let staging = CertInfo {
        directory: Some(LETS_ENCRYPT_STAGING.into()),
        ..cert(&["a.example.com"], t0(), 90 * DAY)
    };
    assert_eq!(
        decide(&want, Some(&staging), LETS_ENCRYPT_PRODUCTION, rb, now, 0),
        Decision::Order(OrderReason::OtherDirectory(LETS_ENCRYPT_STAGING.into()))
    );
    assert!(matches!(
        decide(&want, Some(&staging), LETS_ENCRYPT_STAGING, rb, now, 0),
        Decision::Keep { .. }
    ));
    // Made by hand, or by a Gatehouse that did not record it: kept until its renewal point.
    let unrecorded = cert(&["a.example.com"], t0(), 90 * DAY);
    assert!(matches!(
        decide(
            &want,
            Some(&unrecorded),
            LETS_ENCRYPT_PRODUCTION,
            rb,
            now,
            0
        ),
        Decision::Keep { .. }
    ));
}

// === settings (start) ===

#[test]
fn no_email_warns_at_start_and_names_lets_encrypt_production() {
    let settings = Settings::default();
    let warnings = settings.start_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("no --acme-email"), "{warnings:?}");
    assert!(
        warnings[0].contains("Let's Encrypt production"),
        "{warnings:?}"
    );
    let elsewhere = Settings {
        directory: "https://ca.internal/dir".into(),
        ..Settings::default()
    };
    assert!(!elsewhere.start_warnings()[0].contains("Let's Encrypt"));
    let with_email = Settings {
        email: Some("ops@example.com".into()),
        ..Settings::default()
    };
    assert!(with_email.start_warnings().is_empty());
}

#[test]
fn dns01_challenge_needs_a_dns_server() {
    let settings = Settings {
        challenge: ChallengeKind::Dns01,
        ..Settings::default()
    };
    let err = settings.validate().expect_err("refused");
    assert!(err.contains("--acme-dns01-server"), "{err}");
}

#[test]
fn eab_key_is_base64url_padded_or_not() {
    // "secret-hmac-key!" in base64url.
    let eab = Eab::new("kid-1", "c2VjcmV0LWhtYWMta2V5IQ").expect("unpadded");
    assert_eq!(eab.kid, "kid-1");
    assert!(
        Eab::new("kid-1", "c2VjcmV0LWhtYWMta2V5IQ==").is_ok(),
        "padded"
    );
    assert!(
        Eab::new("kid-1", "c2VjcmV0+/=")
            .expect_err("standard alphabet")
            .contains("base64url")
    );
    assert!(Eab::new(" ", "c2VjcmV0").is_err());
    assert!(Eab::new("kid", "").is_err());
    // The key stays out of debug output.
    assert!(!format!("{eab:?}").contains("c2Vj"));
}

#[test]
fn acme_flags_that_go_together_are_checked_together() {
    use clap::Parser;
    let resolve = |args: &[&str]| {
        crate::config::Args::try_parse_from(
            std::iter::once("gatehouse").chain(args.iter().copied()),
        )
        .expect("parse")
        .resolve()
    };
    let refused = |args: &[&str], why: &str| {
        let err = resolve(args).expect_err("refused");
        assert!(err.contains(why), "{args:?}: {err}");
    };
    refused(&["--acme-eab-kid=kid-1"], "--acme-eab-hmac-key");
    refused(&["--acme-eab-hmac-key=c2VjcmV0"], "--acme-eab-kid");
    refused(
        &["--acme-dns01-server=127.0.0.1"],
        "--acme-dns01-tsig-key-file",
    );
    refused(
        &["--acme-dns01-tsig-key-file=/nonexistent"],
        "--acme-dns01-server",
    );
    refused(&["--acme-challenge=dns-01"], "--acme-dns01-server");
    refused(
        &[
            "--acme-dns01-server=ns1.example.com",
            "--acme-dns01-tsig-key-file=k",
        ],
        "expected IP or IP:PORT",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k.key");
    let key_arg = format!("--acme-dns01-tsig-key-file={}", key.display());
    std::fs::write(&key, "key k { algorithm hmac-md5; secret \"c2VjcmV0\"; };").expect("key");
    refused(
        &["--acme-dns01-server=127.0.0.1", &key_arg],
        "k.key: key \"k\": algorithm",
    );
    std::fs::write(
        &key,
        "key k { algorithm hmac-sha256; secret \"c2VjcmV0\"; };",
    )
    .expect("key");
    let config = resolve(&[
        "--acme-dns01-server=127.0.0.1",
        &key_arg,
        "--acme-challenge=dns-01",
        "--acme-eab-kid=kid-1",
        "--acme-eab-hmac-key=c2VjcmV0",
    ])
    .expect("accepted");
    let dns01 = config.acme.dns01.expect("dns-01");
    assert_eq!(dns01.server, "127.0.0.1:53".parse().expect("addr"));
    assert_eq!(dns01.propagation, Duration::from_secs(10));
    assert_eq!(config.acme.eab.expect("eab").kid, "kid-1");
}

// === dns-01 ===

#[test]
fn tsig_key_file_as_tsig_keygen_writes_it() {
    let text = "key \"gh-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"fdO7IW9fFJJBrm3TRefplTTBQseQxU8X0q3FT+qLQD0=\";\n};\n";
    let key = dns01::TsigKey::parse(text).expect("parsed");
    assert_eq!(key.name, "gh-key");
    assert_eq!(key.algorithm, "hmac-sha256");
    assert!(!format!("{key:?}").contains("fdO7"), "secret not printed");
    // Comments and other spacing are fine.
    let commented = "# made by hand\nkey acme { // the key\n algorithm HMAC-SHA512; /* strong */ secret \"c2VjcmV0\"; };";
    assert_eq!(
        dns01::TsigKey::parse(commented).expect("parsed").algorithm,
        "hmac-sha512"
    );
    for (bad, why) in [
        (
            "key k { algorithm hmac-md5; secret \"c2VjcmV0\"; };",
            "not supported",
        ),
        ("key k { algorithm hmac-sha256; };", "no secret"),
        ("key k { secret \"c2VjcmV0\"; };", "no algorithm"),
        (
            "key k { algorithm hmac-sha256; secret \"%%%\"; };",
            "not base64",
        ),
        (
            "key k { algorithm hmac-sha256; secret \"c2VjcmV0\";",
            "missing `}`",
        ),
        ("zone k { };", "expected a `key"),
        ("key \"k { };", "unterminated string"),
    ] {
        let err = dns01::TsigKey::parse(bad).expect_err(bad);
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn dns01_record_name_drops_the_wildcard_label() {
    assert_eq!(
        dns01::record_name("*.wild.test"),
        "_acme-challenge.wild.test."
    );
    assert_eq!(
        dns01::record_name("a.example.com."),
        "_acme-challenge.a.example.com."
    );
}

// === challenge answers ===

/// A store that keeps everything in memory and records what was withdrawn.
#[derive(Default)]
struct MemoryStore {
    withdrawn: std::sync::Mutex<Vec<(Vec<String>, Vec<String>)>>,
}

impl Store for MemoryStore {
    fn load_account(&self) -> futures_util::future::BoxFuture<'_, anyhow::Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }
    fn save_account<'a>(
        &'a self,
        _json: &'a str,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn load_order<'a>(
        &'a self,
        _secret: &'a ObjectKey,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }
    fn save_order<'a>(
        &'a self,
        _secret: &'a ObjectKey,
        _json: Option<&'a str>,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn save_certificate<'a>(
        &'a self,
        _issued: &'a Issued,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn withdraw_answers<'a>(
        &'a self,
        tokens: &'a [String],
        hosts: &'a [String],
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>> {
        self.withdrawn
            .lock()
            .expect("lock")
            .push((tokens.to_vec(), hosts.to_vec()));
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn answers_are_withdrawn_here_and_in_the_store_when_the_order_is_over() {
    let challenges = crate::shared::ChallengeAnswers::default();
    let store = MemoryStore::default();
    let mut answers = Answers::new(&challenges);
    answers.http01("tok-1", "tok-1.thumb");
    let cert = alpn_certificate("a.example.com", &[7; 32]).expect("cert");
    answers.tls_alpn01("a.example.com", cert);
    assert!(challenges.http01.http01("tok-1").is_some());
    assert!(challenges.alpn.get("a.example.com").is_some());

    withdraw(answers, &store, None, &ObjectKey::new("web", "a-tls")).await;
    assert_eq!(challenges.http01.http01("tok-1"), None);
    assert!(challenges.alpn.get("a.example.com").is_none());
    assert_eq!(
        *store.withdrawn.lock().expect("lock"),
        vec![(hosts(&["tok-1"]), hosts(&["a.example.com"]))],
        "the shared copies are withdrawn too"
    );
}

#[test]
fn answers_of_an_interrupted_order_come_down_when_dropped() {
    let challenges = crate::shared::ChallengeAnswers::default();
    let mut answers = Answers::new(&challenges);
    answers.http01("tok-2", "tok-2.thumb");
    drop(answers);
    assert_eq!(challenges.http01.http01("tok-2"), None);
}

// === metrics ===

#[test]
fn certificate_metrics_follow_the_hosts_and_drop_those_gone() {
    use std::sync::Arc;
    let registry =
        prometheus::Registry::new_custom(Some("gatehouse".into()), None).expect("registry");
    let mut metrics = metrics::CertificateMetrics::register(&registry).expect("register");
    let render = || {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("text")
    };
    let made = rcgen::generate_simple_self_signed(vec!["a.example.com".to_owned()]).expect("cert");
    let secret: k8s_openapi::api::core::v1::Secret = serde_saphyr::from_str(&format!(
        "metadata: {{name: a-tls, namespace: web}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: {:?}, tls.key: {:?}}}\n",
        made.cert.pem(),
        made.signing_key.serialize_pem()
    ))
    .expect("secret");
    let (ingress_key, ingress) = ingress(
        "metadata: {name: a, namespace: web}\nspec: {tls: [{secretName: a-tls, hosts: [a.example.com]}]}\n",
    );
    let mut objects = crate::objects::Objects::default();
    objects
        .secrets
        .insert(ObjectKey::new("web", "a-tls"), Arc::new(secret));
    let empty = crate::tls::TlsTable::default();
    let mut builder = crate::tls::table::TlsBuilder::new(&objects, &empty, SystemTime::now());
    builder.add_ingress(&ingress_key, &ingress, &mut Vec::new());
    let table = builder.finish();

    metrics.observe_tls(&table);
    metrics.observe_renewals(&[("web/a-tls".to_owned(), t0())].into());
    let text = render();
    let expiry = text
        .lines()
        .find(|l| l.starts_with("gatehouse_certificate_expiry_timestamp_seconds{"))
        .expect("expiry series");
    assert!(expiry.contains("host=\"a.example.com\""), "{expiry}");
    assert!(expiry.contains("secret=\"web/a-tls\""), "{expiry}");
    assert!(expiry.contains("issuer=\""), "{expiry}");
    assert!(
        text.contains(
            "gatehouse_certificate_renewal_timestamp_seconds{secret=\"web/a-tls\"} 1700000000"
        ),
        "{text}"
    );

    // The host and the certificate are gone: so are their series.
    metrics.observe_tls(&empty);
    metrics.observe_renewals(&Default::default());
    let text = render();
    assert!(!text.contains("a.example.com"), "{text}");
    assert!(!text.contains("web/a-tls"), "{text}");
}

// === ownership ===

#[test]
fn a_secret_is_gatehouses_by_its_label_or_the_annotation_it_used_to_carry() {
    let meta = |yaml: &str| -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        serde_saphyr::from_str(yaml).expect("meta")
    };
    assert!(store::managed_by_gatehouse(&meta(
        "{name: a, labels: {gatehouse.dev/managed-by: gatehouse}}"
    )));
    assert!(store::managed_by_gatehouse(&meta(
        "{name: a, annotations: {gatehouse.dev/managed-by: acme}}"
    )));
    for other in [
        "{name: a}",
        "{name: a, labels: {gatehouse.dev/managed-by: cert-manager}}",
        "{name: a, annotations: {cert-manager.io/issuer-name: le}}",
        "{name: a, annotations: {gatehouse.dev/managed-by: gatehouse}}",
    ] {
        assert!(!store::managed_by_gatehouse(&meta(other)), "{other}");
    }
}

// === backoff ===

#[test]
fn backoff_doubles_up_to_a_cap_per_kind() {
    let secs = |kind, n| backoff(kind, n).as_secs();
    assert_eq!(
        (1..=5)
            .map(|n| secs(FailureKind::Transient, n))
            .collect::<Vec<_>>(),
        [2, 4, 8, 16, 32]
    );
    assert_eq!(secs(FailureKind::Transient, 20), 600);
    assert_eq!(secs(FailureKind::Rejected, 1), 300);
    assert_eq!(secs(FailureKind::Rejected, 2), 600);
    assert_eq!(secs(FailureKind::Rejected, 50), 12 * 3600);
    assert_eq!(secs(FailureKind::RateLimited, 1), 900);
    assert_eq!(secs(FailureKind::RateLimited, u32::MAX), 24 * 3600);
    assert_eq!(secs(FailureKind::Transient, 0), 2);
}

#[test]
fn retry_after_wins_when_later_and_is_bounded() {
    let now = t0();
    let later = now + Duration::from_secs(3600);
    assert_eq!(
        next_attempt(now, FailureKind::RateLimited, 1, Some(later)),
        later
    );
    // Sooner than the backoff: the backoff stands.
    assert_eq!(
        next_attempt(
            now,
            FailureKind::Rejected,
            1,
            Some(now + Duration::from_secs(1))
        ),
        now + Duration::from_secs(300)
    );
    // A year away is cut to a week.
    assert_eq!(
        next_attempt(now, FailureKind::RateLimited, 1, Some(now + 365 * DAY)),
        now + MAX_RETRY_AFTER
    );
}

#[test]
fn retry_after_header_as_seconds_or_date() {
    let now = t0();
    assert_eq!(
        parse_retry_after("120", now),
        Some(now + Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480))
    );
    assert_eq!(parse_retry_after("soon", now), None);
}

#[test]
fn problem_metric_label_is_a_known_type_or_other() {
    let body = br#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"JWS has an invalid anti-replay nonce"}"#;
    assert_eq!(problem_label(body), "badNonce");
    assert_eq!(
        problem_label(br#"{"type":"urn:ietf:params:acme:error:rateLimited"}"#),
        "rateLimited"
    );
    // Made-up types and non-problem bodies do not make new label values.
    assert_eq!(
        problem_label(br#"{"type":"urn:ietf:params:acme:error:x{a=\"b\"}"}"#),
        "other"
    );
    assert_eq!(problem_label(b"<html>502 Bad Gateway</html>"), "other");
}

#[test]
fn acme_problems_are_classified() {
    let problem =
        |json: &str| instant_acme::Error::Api(serde_json::from_str(json).expect("problem json"));
    let kind = |json| classify(&problem(json));
    assert_eq!(
        kind(r#"{"type":"urn:ietf:params:acme:error:rateLimited","status":429}"#),
        FailureKind::RateLimited
    );
    assert_eq!(
        kind(r#"{"type":"urn:ietf:params:acme:error:badNonce","status":400}"#),
        FailureKind::Transient
    );
    assert_eq!(
        kind(r#"{"type":"urn:ietf:params:acme:error:unauthorized","status":403}"#),
        FailureKind::Rejected
    );
    assert_eq!(
        kind(r#"{"type":"about:blank","status":503}"#),
        FailureKind::Transient
    );
    assert_eq!(
        classify(&instant_acme::Error::Timeout(None)),
        FailureKind::Transient
    );
}

// === wants (translate) ===

fn ingress(yaml: &str) -> (ObjectKey, Ingress) {
    let ingress: Ingress = serde_saphyr::from_str(yaml).expect("ingress yaml");
    (ObjectKey::of(&ingress.metadata), ingress)
}

#[test]
fn wants_list_each_tls_entry_of_annotated_ingresses() {
    let (ka, a) = ingress(
        r#"
metadata: {name: a, namespace: web, annotations: {kubernetes.io/tls-acme: "true"}}
spec:
  tls:
  - {secretName: a-tls, hosts: [B.example.com, a.example.com, a.example.com]}
  - {secretName: wild, hosts: ["*.Example.com", "*.com", "*"]}
  - {hosts: [c.example.com]}
"#,
    );
    let (kb, b) = ingress(
        r#"
metadata: {name: b, namespace: web}
spec: {tls: [{secretName: b-tls, hosts: [b.example.com]}]}
"#,
    );
    let (wants, warnings) = wants::wants(&[(ka.clone(), &a), (kb, &b)]);
    assert_eq!(
        wants,
        vec![
            AcmeWant {
                ingress: ka.clone(),
                secret: ObjectKey::new("web", "a-tls"),
                hosts: hosts(&["a.example.com", "b.example.com"]),
            },
            // Wildcards are wanted (the manager orders them through DNS-01), but not over a
            // top-level domain.
            AcmeWant {
                ingress: ka,
                secret: ObjectKey::new("web", "wild"),
                hosts: hosts(&["*.example.com"]),
            }
        ]
    );
    let reasons: Vec<_> = warnings.iter().map(|w| w.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.contains(&"tls host \"*.com\" skipped for ACME: not a fully qualified DNS name")
    );
    assert!(reasons.contains(&"tls host \"*\" skipped for ACME: not a fully qualified DNS name"));
    assert!(reasons.iter().any(|r| r.contains("names no secretName")));
}

#[test]
fn older_ingress_keeps_a_contested_secret() {
    let (ka, a) = ingress(
        r#"
metadata: {name: a, namespace: web, annotations: {kubernetes.io/tls-acme: "true"}}
spec: {tls: [{secretName: shared, hosts: [a.example.com]}]}
"#,
    );
    let (kb, b) = ingress(
        r#"
metadata: {name: b, namespace: web, annotations: {kubernetes.io/tls-acme: "true"}}
spec: {tls: [{secretName: shared, hosts: [b.example.com]}]}
"#,
    );
    let (wants, warnings) = wants::wants(&[(ka.clone(), &a), (kb.clone(), &b)]);
    assert_eq!(wants.len(), 1);
    assert_eq!(wants[0].ingress, ka);
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].object, kb);
    assert!(warnings[0].reason.contains("Ingress web/a (older)"));
}

#[test]
fn bad_annotation_value_and_bad_secret_name_are_warnings() {
    let (ka, a) = ingress(
        r#"
metadata: {name: a, namespace: web, annotations: {kubernetes.io/tls-acme: "yes please"}}
spec: {tls: [{secretName: a, hosts: [a.example.com]}]}
"#,
    );
    let (kb, b) = ingress(
        r#"
metadata: {name: b, namespace: web, annotations: {kubernetes.io/tls-acme: "true"}}
spec: {tls: [{secretName: "../../etc", hosts: [b.example.com]}]}
"#,
    );
    let (wants, warnings) = wants::wants(&[(ka, &a), (kb, &b)]);
    assert!(wants.is_empty());
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0]
            .reason
            .contains("expected \"true\" or \"false\"")
    );
    assert!(warnings[1].reason.contains("not a valid name"));
}

// === store ===

#[tokio::test]
async fn file_store_writes_private_files_read_back_as_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path().join("state")).expect("open");
    let secret = ObjectKey::new("web", "a-tls");
    let made = rcgen::generate_simple_self_signed(vec!["a.example.com".to_owned()]).expect("cert");
    let issued = Issued {
        secret: secret.clone(),
        ingress: ObjectKey::new("web", "a"),
        hosts: hosts(&["a.example.com"]),
        chain_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
        directory: DIR.into(),
        account: "https://ca.test/acct/1".into(),
    };
    store.save_certificate(&issued).await.expect("save cert");
    store.save_account("{\"k\":1}").await.expect("save account");
    store
        .save_order(&secret, Some("{}"))
        .await
        .expect("save order");
    assert_eq!(
        store.load_account().await.expect("load").as_deref(),
        Some("{\"k\":1}")
    );
    assert_eq!(
        store.load_order(&secret).await.expect("load").as_deref(),
        Some("{}")
    );
    store.save_order(&secret, None).await.expect("forget order");
    assert_eq!(store.load_order(&secret).await.expect("load"), None);
    store
        .save_order(&secret, None)
        .await
        .expect("forgetting twice is fine");

    let path = store.certificates_dir().join("web_a-tls.yaml");
    for file in [&path, &dir.path().join("state/account.json")] {
        let mode = std::fs::metadata(file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(store.certificates_dir())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("web_a-tls.yaml")]);

    let mut source = crate::sources::manifests::ManifestDir::new(store.certificates_dir());
    source.scan().expect("scan");
    let objects = source.objects();
    let read = objects.secrets.get(&secret).expect("Secret read back");
    // Labelled as Gatehouse's, annotated with the directory and account it came from.
    assert!(store::managed_by_gatehouse(&read.metadata));
    assert_eq!(
        store::recorded_directory(&read.metadata),
        Some("https://ca.test/dir")
    );
    let annotations = read.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(
        annotations
            .get(store::ACCOUNT_ANNOTATION)
            .map(String::as_str),
        Some("https://ca.test/acct/1")
    );
    let tls = crate::tls::TlsCert::from_secret(secret.clone(), read).expect("usable certificate");
    assert_eq!(tls.names, hosts(&["a.example.com"]));
}

#[tokio::test]
async fn file_store_refuses_names_outside_its_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("open");
    let evil = ObjectKey::new("web", "../../x");
    assert!(store.save_order(&evil, Some("{}")).await.is_err());
    assert!(store.load_order(&ObjectKey::new("", "x")).await.is_err());
}

// === tls-alpn-01 ===

#[test]
fn alpn_certificate_carries_the_critical_acme_identifier() {
    let digest = [7u8; 32];
    let cert = alpn_certificate("a.example.com", &digest).expect("cert");
    let der = cert.cert.first().expect("one certificate");
    let (_, parsed) = x509_parser::parse_x509_certificate(der).expect("parse");
    let ext = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("acmeIdentifier extension");
    assert!(ext.critical);
    // An OCTET STRING of the 32-byte digest.
    assert_eq!(&ext.value[..2], &[0x04, 32]);
    assert_eq!(&ext.value[2..], &digest);
}
