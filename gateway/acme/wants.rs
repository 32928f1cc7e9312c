//! The translate() part of ACME (pure): which `spec.tls` entries want a certificate.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

use crate::objects::ObjectKey;
use crate::warning::Warning;

/// A `spec.tls` entry of an Ingress annotated `kubernetes.io/tls-acme: "true"`: a certificate
/// for `hosts`, kept in the Secret `secret`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcmeWant {
    pub ingress: ObjectKey,
    pub secret: ObjectKey,
    /// Lower case, sorted, without duplicates; a wildcard (`*.example.com`) needs DNS-01.
    pub hosts: Vec<String>,
}

/// Annotation asking for certificates for an Ingress's `spec.tls` entries (kube-lego's).
pub const TLS_ACME_ANNOTATION: &str = "kubernetes.io/tls-acme";

/// Whether an Ingress asks Gatehouse to obtain its certificates (`kubernetes.io/tls-acme: "true"`).
pub fn acme_requested(ingress: &Ingress) -> bool {
    ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TLS_ACME_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The ACME wants of the owned Ingresses (oldest first), and a warning for each entry that
/// cannot be ordered. When two Ingresses want the same Secret with different hosts, the older
/// one wins.
pub fn wants(owned: &[(ObjectKey, &Ingress)]) -> (Vec<AcmeWant>, Vec<Warning>) {
    let mut by_secret: BTreeMap<ObjectKey, AcmeWant> = BTreeMap::new();
    let mut warnings = Vec::new();
    for (key, ingress) in owned {
        let mut warn = |reason: String| {
            warnings.push(Warning {
                kind: "Ingress",
                object: key.clone(),
                reason,
            })
        };
        let value = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TLS_ACME_ANNOTATION));
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("false") => continue,
            Some("true") => {}
            Some(_) => {
                let value = value.cloned().unwrap_or_default();
                warn(format!(
                    "annotation {TLS_ACME_ANNOTATION}={value:?} ignored: expected \"true\" or \"false\""
                ));
                continue;
            }
        }
        let tls = ingress.spec.as_ref().and_then(|s| s.tls.as_ref());
        if tls.is_none_or(|t| t.is_empty()) {
            warn(format!(
                "annotation {TLS_ACME_ANNOTATION} set but spec.tls is empty: nothing to order"
            ));
            continue;
        }
        for entry in tls.into_iter().flatten() {
            let Some(secret_name) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                warn("tls entry skipped for ACME: it names no secretName to store the certificate in".into());
                continue;
            };
            if !is_dns_name(secret_name) {
                warn(format!(
                    "tls entry skipped for ACME: secretName {secret_name:?} is not a valid name"
                ));
                continue;
            }
            let secret = ObjectKey::new(key.namespace.clone(), secret_name);
            let mut hosts = Vec::new();
            for host in entry.hosts.iter().flatten() {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                // A wildcard covers one label under a name of at least two (`*.example.com`);
                // the manager orders it through DNS-01.
                let name = host.strip_prefix("*.").unwrap_or(&host);
                if !is_dns_name(name) || !name.contains('.') {
                    warn(format!(
                        "tls host {host:?} skipped for ACME: not a fully qualified DNS name"
                    ));
                } else {
                    hosts.push(host);
                }
            }
            hosts.sort();
            hosts.dedup();
            if hosts.is_empty() {
                warn(format!(
                    "tls entry for Secret {secret} skipped for ACME: no host to order a certificate for"
                ));
                continue;
            }
            match by_secret.get(&secret) {
                Some(existing) if existing.hosts == hosts => {}
                Some(existing) => {
                    let owner = if existing.ingress == *key {
                        "an earlier tls entry of this Ingress".to_owned()
                    } else {
                        format!("Ingress {} (older)", existing.ingress)
                    };
                    warn(format!(
                        "tls entry for Secret {secret} skipped for ACME: {owner} already orders it for {}",
                        existing.hosts.join(", ")
                    ));
                }
                None => {
                    by_secret.insert(
                        secret.clone(),
                        AcmeWant {
                            ingress: key.clone(),
                            secret,
                            hosts,
                        },
                    );
                }
            }
        }
    }
    (by_secret.into_values().collect(), warnings)
}

/// A DNS subdomain as Kubernetes names objects: lower-case labels of letters, digits and `-`.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}
