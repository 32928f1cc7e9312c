//! Certificates from Secrets: PEM parsing, key matching, validity period and names, all checked
//! once when the configuration changes so a handshake only picks an already parsed key.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use crate::objects::ObjectKey;

/// `type` of a Secret holding a certificate and its key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Secret key holding the PEM certificate chain, leaf first.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key holding the PEM private key.
pub const TLS_PRIVATE_KEY: &str = "tls.key";

/// A certificate chain and its key, parsed and checked, ready to serve.
#[derive(Debug)]
pub struct TlsCert {
    /// The Secret it came from.
    pub secret: ObjectKey,
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// Names the leaf certificate is valid for, lower case: its DNS and IP subject alternative
    /// names, or its common name when it has none.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The common name of the leaf's issuer (its whole name when it has no common name).
    pub issuer: String,
}

/// Why a Secret's certificate cannot be served. The text is the reason of a [`Warning`].
///
/// [`Warning`]: crate::warning::Warning
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("Secret not found")]
    SecretNotFound,
    #[error("Secret type is {0:?}, expected {TLS_SECRET_TYPE:?}")]
    WrongSecretType(String),
    #[error("Secret has no {0:?} key")]
    MissingKey(&'static str),
    #[error("{TLS_CERT_KEY} holds no PEM certificate")]
    NoCertificate,
    #[error("{0} is not valid PEM: {1}")]
    BadPem(&'static str, String),
    #[error("{TLS_PRIVATE_KEY} holds no PEM private key")]
    NoPrivateKey,
    #[error("private key not usable: {0}")]
    BadKey(String),
    #[error("private key does not match the certificate")]
    KeyMismatch,
    #[error("certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("certificate expired at {0}")]
    Expired(String),
    #[error("certificate not valid before {0}")]
    NotYetValid(String),
}

// === impl TlsCert ===

impl TlsCert {
    /// Parses a PEM chain (leaf first) and PEM private key and checks they belong together.
    /// The validity period is read but not checked: see [`TlsCert::check_validity`].
    pub fn from_pem(secret: ObjectKey, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::BadPem(TLS_CERT_KEY, e.to_string()))?;
        if chain.is_empty() {
            return Err(CertError::NoCertificate);
        }
        let key = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(key) => key,
            Err(rustls::pki_types::pem::Error::NoItemsFound) => {
                return Err(CertError::NoPrivateKey);
            }
            Err(e) => return Err(CertError::BadPem(TLS_PRIVATE_KEY, e.to_string())),
        };
        let (names, not_before, not_after, issuer) = leaf_facts(&chain[0])?;
        let signing_key = super::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::BadKey(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            // Unknown: the key type cannot tell its public key; the handshake will tell.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => return Err(CertError::KeyMismatch),
            Err(e) => return Err(CertError::BadCertificate(e.to_string())),
        }
        Ok(Self {
            secret,
            key: Arc::new(certified),
            names,
            not_before,
            not_after,
            issuer,
        })
    }

    /// Parses the `tls.crt` and `tls.key` of a Secret.
    pub fn from_secret(secret_key: ObjectKey, secret: &Secret) -> Result<Self, CertError> {
        let (cert, key) = secret_pem(secret)?;
        Self::from_pem(secret_key, cert, key)
    }

    /// Whether `now` lies in the certificate's validity period.
    pub fn check_validity(&self, now: SystemTime) -> Result<(), CertError> {
        if now > self.not_after {
            return Err(CertError::Expired(rfc3339(self.not_after)));
        }
        if now < self.not_before {
            return Err(CertError::NotYetValid(rfc3339(self.not_before)));
        }
        Ok(())
    }

    /// Whether the certificate is valid for a host as an Ingress names it (`*.example.com` is
    /// covered only by that same wildcard).
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|name| name_matches(name, host))
    }

    /// `not_after` in seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> i64 {
        unix_seconds(self.not_after)
    }
}

/// The PEM certificate and key of a Secret: `stringData` (as written in manifests) wins over
/// `data` (base64, as the API returns it), like the API server merges them.
pub fn secret_pem(secret: &Secret) -> Result<(&[u8], &[u8]), CertError> {
    match secret.type_.as_deref() {
        // Hand-made Secrets are often Opaque; what matters is that both keys are there.
        None | Some(TLS_SECRET_TYPE | "Opaque") => {}
        Some(other) => return Err(CertError::WrongSecretType(other.to_owned())),
    }
    let value = |key: &'static str| {
        let from_string = secret.string_data.as_ref().and_then(|d| d.get(key));
        let from_data = secret.data.as_ref().and_then(|d| d.get(key));
        from_string
            .map(|s| s.as_bytes())
            .or(from_data.map(|b| b.0.as_slice()))
            .ok_or(CertError::MissingKey(key))
    };
    Ok((value(TLS_CERT_KEY)?, value(TLS_PRIVATE_KEY)?))
}

/// Names, validity period and issuer of a leaf certificate.
fn leaf_facts(
    der: &CertificateDer<'_>,
) -> Result<(Vec<String>, SystemTime, SystemTime, String), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    let validity = cert.validity();
    let not_before = from_unix(validity.not_before.timestamp());
    let not_after = from_unix(validity.not_after.timestamp());
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(normalize_name(dns).into_owned()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|cn| normalize_name(cn).into_owned()),
        );
    }
    let issuer = cert
        .issuer()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .map_or_else(|| cert.issuer().to_string(), str::to_owned);
    Ok((names, not_before, not_after, issuer))
}

/// Lower-cases a DNS name and strips a trailing dot, borrowing when it can.
pub fn normalize_name(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Whether a certificate name (maybe `*.suffix`) matches a host (maybe `*.suffix` itself). A
/// wildcard covers exactly one label: `*.example.com` matches `a.example.com`, not
/// `example.com` nor `a.b.example.com`. Both sides are expected normalised.
pub fn name_matches(cert_name: &str, host: &str) -> bool {
    if cert_name == host {
        return true;
    }
    match (cert_name.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, parent))) => {
            !label.is_empty() && label != "*" && parent == suffix
        }
        _ => false,
    }
}

fn from_unix(seconds: i64) -> SystemTime {
    match u64::try_from(seconds) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()),
    }
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `2025-01-31T12:00:00Z`, for messages and dumps.
pub fn rfc3339(time: SystemTime) -> String {
    if time < UNIX_EPOCH {
        return format!("{} s before 1970", -unix_seconds(time));
    }
    humantime::format_rfc3339_seconds(time).to_string()
}
