//! ACME: certificates for the hosts of Ingresses annotated `kubernetes.io/tls-acme: "true"`.
//!
//! [`crate::translate`] lists what is wanted ([`AcmeWant`] in the snapshot); the [`manager`]
//! compares each want with the certificate its Secret holds now, orders the missing and the
//! due ones (instant-acme), answers their challenges (HTTP-01 here in [`Challenges`],
//! TLS-ALPN-01 through the TLS resolver, DNS-01 with RFC 2136 updates in [`dns01`]), and writes
//! the results through a [`store::Store`] so they come back through the sources like any other
//! Secret. Only Secrets labelled as Gatehouse's are ever overwritten, and each certificate records
//! the ACME directory it came from, so a changed directory orders anew. The decisions (renewal
//! time, directory, backoff, token syntax) are pure functions, tested in `acme/tests.rs`.

pub mod client;
pub mod dns01;
pub mod manager;
pub mod metrics;
pub mod order;
pub mod store;
pub mod wants;

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::tls::certs::{TlsCert, name_matches};
pub use wants::AcmeWant;

/// Let's Encrypt's production directory, the default `--acme-directory`.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`--acme-directory staging`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// Path prefix of HTTP-01 challenge requests (RFC 8555 section 8.3).
pub const HTTP01_PREFIX: &str = crate::tls::ACME_CHALLENGE_PREFIX;
/// Share of the time from issuance to the renewal point by which a renewal may come early, so
/// certificates issued together do not all renew in the same minute.
const RENEWAL_JITTER: f64 = 0.1;
/// How far a new certificate's validity may start in the future (the CA's clock ahead of
/// ours) and still count as the one to keep.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// ACME settings, resolved from `--acme-*` and `--state-dir`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Directory URL of the ACME server.
    pub directory: String,
    /// Contact address given to the ACME server when the account is created.
    pub email: Option<String>,
    /// PEM file of extra roots to trust for the directory (a test CA such as Pebble's).
    pub ca_bundle: Option<PathBuf>,
    pub challenge: ChallengeKind,
    /// Manifest mode: where the account, orders in flight and certificates are kept.
    pub state_dir: Option<PathBuf>,
    pub renew_before: RenewBefore,
    /// Orders run at the same time, at most.
    pub max_concurrent_orders: usize,
    /// DNS-01 answers through RFC 2136 updates; wildcard hosts need them.
    pub dns01: Option<dns01::Settings>,
    /// External Account Binding for a CA that requires it when the account is created.
    pub eab: Option<Eab>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            directory: LETS_ENCRYPT_PRODUCTION.into(),
            email: None,
            ca_bundle: None,
            challenge: ChallengeKind::Http01,
            state_dir: None,
            renew_before: RenewBefore::default(),
            max_concurrent_orders: 4,
            dns01: None,
            eab: None,
        }
    }
}

impl Settings {
    /// Settings that cannot work together, found before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.challenge == ChallengeKind::Dns01 && self.dns01.is_none() {
            return Err(
                "--acme-challenge dns-01 needs --acme-dns01-server and --acme-dns01-tsig-key-file"
                    .into(),
            );
        }
        Ok(())
    }

    /// What an operator should hear at start about settings that work but may surprise.
    pub fn start_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.email.is_none() {
            let mut text = String::from(
                "no --acme-email: the ACME account gets no contact address, so the CA cannot warn anyone of certificates about to expire or of problems with the account",
            );
            if self.directory == LETS_ENCRYPT_PRODUCTION {
                text.push_str(
                    "; certificates are ordered from Let's Encrypt production (the default --acme-directory): try --acme-directory staging first",
                );
            }
            warnings.push(text);
        }
        warnings
    }
}

/// External Account Binding (RFC 8555 section 7.3.4): the key id and HMAC key a CA hands out
/// to tie a new ACME account to an account with it.
#[derive(Clone)]
pub struct Eab {
    pub kid: String,
    hmac_key: Vec<u8>,
}

impl std::fmt::Debug for Eab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

// === impl Eab ===

impl Eab {
    /// From `--acme-eab-kid` and `--acme-eab-hmac-key` (base64url, padded or not, as CAs print
    /// it).
    pub fn new(kid: &str, hmac_key: &str) -> Result<Self, String> {
        use base64::Engine;
        let kid = kid.trim();
        if kid.is_empty() {
            return Err("--acme-eab-kid is empty".into());
        }
        let text = hmac_key.trim().trim_end_matches('=');
        let hmac_key = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| format!("--acme-eab-hmac-key is not base64url: {e}"))?;
        if hmac_key.is_empty() {
            return Err("--acme-eab-hmac-key is empty".into());
        }
        Ok(Self {
            kid: kid.to_owned(),
            hmac_key,
        })
    }

    /// The key instant-acme signs the binding with.
    pub fn key(&self) -> instant_acme::ExternalAccountKey {
        instant_acme::ExternalAccountKey::new(self.kid.clone(), &self.hmac_key)
    }
}

/// The directory URL for a `--acme-directory` value: `production` and `staging` name Let's
/// Encrypt's; anything else is taken as a URL.
pub fn directory_url(value: &str) -> String {
    match value.trim() {
        "production" | "letsencrypt" => LETS_ENCRYPT_PRODUCTION.into(),
        "staging" | "letsencrypt-staging" => LETS_ENCRYPT_STAGING.into(),
        url => url.into(),
    }
}

/// How the ACME server checks that Gatehouse serves a host.
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChallengeKind {
    /// A token answered over plain HTTP on port 80 at `/.well-known/acme-challenge/`.
    #[default]
    #[value(name = "http-01")]
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate answered on the HTTPS port (443) for ALPN `acme-tls/1`.
    #[value(name = "tls-alpn-01")]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// A TXT record `_acme-challenge.HOST` put up through RFC 2136 dynamic updates (see
    /// [`dns01`]); the only one that proves wildcard hosts, which always use it.
    #[value(name = "dns-01")]
    #[serde(rename = "dns-01")]
    Dns01,
}

impl ChallengeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Dns01 => "dns-01",
        }
    }
}

/// When to renew: once less than this much of a certificate's validity is left.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RenewBefore {
    /// A share of the certificate's lifetime, in (0, 1): 1/3 renews a 90-day certificate 30
    /// days before it expires.
    Fraction(f64),
    /// A fixed time before expiry (capped at the certificate's lifetime).
    Duration(Duration),
}

impl Default for RenewBefore {
    fn default() -> Self {
        RenewBefore::Fraction(1.0 / 3.0)
    }
}

impl FromStr for RenewBefore {
    type Err = String;

    /// `0.33`, `33%` or a duration such as `30d`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let fraction = match text.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().ok().map(|p| p / 100.0),
            None => text.parse::<f64>().ok(),
        };
        match fraction {
            Some(f) if f > 0.0 && f < 1.0 => Ok(RenewBefore::Fraction(f)),
            Some(_) => Err(format!(
                "{text:?}: a share of the lifetime must be between 0 and 1 (or 0% and 100%)"
            )),
            None => humantime::parse_duration(text)
                .map(RenewBefore::Duration)
                .map_err(|e| {
                    format!("{text:?}: expected a share of the lifetime (0.33, 33%) or a duration (30d): {e}")
                }),
        }
    }
}

// === Certificates and renewal ===

/// What the manager needs to know of the certificate a Secret holds (as [`TlsCert`] parsed it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Names the certificate is valid for, normalised (may hold wildcards).
    pub names: Vec<String>,
    /// The ACME directory recorded as its issuer, if Gatehouse ordered it and said so.
    pub directory: Option<String>,
}

impl CertInfo {
    /// The facts of `cert`, issued through `directory` if known.
    pub fn new(cert: &TlsCert, directory: Option<&str>) -> Self {
        Self {
            not_before: cert.not_before,
            not_after: cert.not_after,
            names: cert.names.clone(),
            directory: directory.map(str::to_owned),
        }
    }
}

/// Why a want needs an order now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderReason {
    /// The Secret is missing or holds no usable certificate.
    Missing,
    /// The certificate does not cover these hosts.
    HostsNotCovered(Vec<String>),
    NotYetValid,
    Expired,
    /// The certificate came from another ACME directory than the one configured now (say
    /// staging, before the switch to production).
    OtherDirectory(String),
    /// The certificate is past its renewal point.
    RenewalDue,
}

impl std::fmt::Display for OrderReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderReason::Missing => f.write_str("no usable certificate in the Secret"),
            OrderReason::HostsNotCovered(hosts) => {
                write!(f, "certificate does not cover {}", hosts.join(", "))
            }
            OrderReason::NotYetValid => f.write_str("certificate not valid yet"),
            OrderReason::Expired => f.write_str("certificate expired"),
            OrderReason::OtherDirectory(from) => {
                write!(
                    f,
                    "certificate issued through another ACME directory ({from})"
                )
            }
            OrderReason::RenewalDue => f.write_str("certificate due for renewal"),
        }
    }
}

/// What to do about one want.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The certificate in place serves; look again at `renew_at`.
    Keep {
        renew_at: SystemTime,
    },
    Order(OrderReason),
}

/// Decides whether `hosts` need a new certificate from `directory`, given the one in place (if
/// any). `seed` spreads the renewal point (see [`renew_at`]); pass [`jitter_seed`]. A
/// certificate that records no directory (made elsewhere, or before Gatehouse recorded it) is
/// taken to be from `directory`.
pub fn decide(
    hosts: &[String],
    current: Option<&CertInfo>,
    directory: &str,
    renew_before: RenewBefore,
    now: SystemTime,
    seed: u64,
) -> Decision {
    let Some(cert) = current else {
        return Decision::Order(OrderReason::Missing);
    };
    let uncovered: Vec<String> = hosts
        .iter()
        .filter(|h| !cert.names.iter().any(|n| name_matches(n, h)))
        .cloned()
        .collect();
    if !uncovered.is_empty() {
        return Decision::Order(OrderReason::HostsNotCovered(uncovered));
    }
    if let Ok(ahead) = cert.not_before.duration_since(now) {
        if ahead > CLOCK_SKEW {
            return Decision::Order(OrderReason::NotYetValid);
        }
        // The CA's clock runs a little ahead: a new order would not do better. Look again
        // once it is valid.
        if ahead > Duration::ZERO {
            return Decision::Keep {
                renew_at: cert.not_before,
            };
        }
    }
    if now >= cert.not_after {
        return Decision::Order(OrderReason::Expired);
    }
    if let Some(from) = cert.directory.as_deref().filter(|d| *d != directory) {
        return Decision::Order(OrderReason::OtherDirectory(from.to_owned()));
    }
    let at = renew_at(cert.not_before, cert.not_after, renew_before, seed);
    if now >= at {
        Decision::Order(OrderReason::RenewalDue)
    } else {
        Decision::Keep { renew_at: at }
    }
}

/// The renewal point of a certificate: `renew_before` ahead of its expiry, made earlier by up
/// to [`RENEWAL_JITTER`] of its age at that point, by an amount fixed by `seed`.
pub fn renew_at(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: RenewBefore,
    seed: u64,
) -> SystemTime {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return not_before;
    };
    let window = match renew_before {
        RenewBefore::Fraction(f) => lifetime.mul_f64(f.clamp(0.0, 1.0)),
        RenewBefore::Duration(d) => d.min(lifetime),
    };
    let threshold = not_after - window;
    let age = threshold.duration_since(not_before).unwrap_or_default();
    // 53 random bits as a number in [0, 1).
    let unit = (seed >> 11) as f64 / (1u64 << 53) as f64;
    threshold - age.mul_f64(RENEWAL_JITTER * unit)
}

/// A stable seed for one certificate of one Secret, so its renewal point does not move
/// between decisions.
pub fn jitter_seed(secret: &crate::objects::ObjectKey, not_after: SystemTime) -> u64 {
    let mut h = DefaultHasher::new();
    secret.hash(&mut h);
    not_after.hash(&mut h);
    h.finish()
}

// === Failures and backoff ===

/// How an order failed, which sets how long to wait before the next try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The server could not be reached or had trouble (network, 5xx, bad nonce, timeout).
    Transient,
    /// The server refused (validation failed, name rejected…): retrying soon would fail again
    /// and use up the CA's failed-validation allowance.
    Rejected,
    /// `urn:ietf:params:acme:error:rateLimited`.
    RateLimited,
}

impl FailureKind {
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Transient => "failed_transient",
            FailureKind::Rejected => "failed_rejected",
            FailureKind::RateLimited => "rate_limited",
        }
    }
}

/// Longest wait a `Retry-After` can impose (a week: Let's Encrypt's longest rate-limit window).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The wait after the `failures`-th failure in a row (1 for the first): doubling from a base,
/// up to a cap, both set by the kind of failure.
pub fn backoff(kind: FailureKind, failures: u32) -> Duration {
    let (base, cap) = match kind {
        FailureKind::Transient => (Duration::from_secs(2), Duration::from_secs(10 * 60)),
        FailureKind::Rejected => (Duration::from_secs(5 * 60), Duration::from_secs(12 * 3600)),
        FailureKind::RateLimited => (Duration::from_secs(15 * 60), Duration::from_secs(24 * 3600)),
    };
    let doublings = failures.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << doublings).min(cap)
}

/// When to try again: after the backoff, and not before the server's `Retry-After` (bounded by
/// [`MAX_RETRY_AFTER`]).
pub fn next_attempt(
    now: SystemTime,
    kind: FailureKind,
    failures: u32,
    retry_after: Option<SystemTime>,
) -> SystemTime {
    let backoff_until = now + backoff(kind, failures);
    match retry_after {
        Some(at) => backoff_until.max(at.min(now + MAX_RETRY_AFTER)),
        None => backoff_until,
    }
}

// === HTTP-01 answers ===

/// Whether `token` may be an ACME token: base64url characters only (RFC 8555 section 8.3), so
/// nothing else from a request path reaches a lookup.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the ACME manager shares with the listeners: the HTTP-01 key authorizations being
/// validated now, by token (read lock-free by the data plane), and the state of every
/// certificate it keeps (for `/routes`).
#[derive(Default)]
pub struct Challenges {
    http01: ArcSwap<HashMap<String, Arc<str>>>,
    certificates: ArcSwap<BTreeMap<String, CertStatus>>,
}

/// What `/routes` shows of one certificate the ACME manager keeps (under `acme`, by Secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertStatus {
    pub ingress: String,
    pub hosts: Vec<String>,
    /// `valid` (in place; renewed at `renewAt`), `ordering`, `waiting` (after a failure, until
    /// `nextAttempt`), `blocked` (cannot be ordered: `reason`) or `standby` (due, but another
    /// replica leads and orders).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The ACME directory that issued the certificate in place, as recorded with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// The issuer of the certificate in place (its X.509 issuer's common name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// When it will be renewed (its renewal point, jitter included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<String>,
    /// When the next order may start after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    /// Failed orders in a row, and the last one's error.
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

// === impl Challenges ===

impl Challenges {
    /// Replaces the certificates' states shown in `/routes`.
    pub fn set_certificates(&self, certificates: BTreeMap<String, CertStatus>) {
        self.certificates.store(Arc::new(certificates));
    }

    /// The certificates the ACME manager keeps, by Secret, as `/routes` shows them.
    pub fn certificates(&self) -> Arc<BTreeMap<String, CertStatus>> {
        self.certificates.load_full()
    }

    pub fn add_http01(&self, token: &str, key_authorization: &str) {
        let key_authorization: Arc<str> = key_authorization.into();
        self.http01.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(token.to_owned(), key_authorization.clone());
            map
        });
    }

    pub fn remove_http01(&self, token: &str) {
        self.http01.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(token);
            map
        });
    }

    pub fn http01(&self, token: &str) -> Option<Arc<str>> {
        self.http01.load().get(token).cloned()
    }
}

#[cfg(test)]
mod tests;
