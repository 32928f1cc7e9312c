//! Which certificate serves which host: the [`TlsTable`] of a snapshot, and how translate()
//! builds it from the `spec.tls` of Ingresses and their Secrets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;

use super::certs::{self, CertError, TlsCert};
use crate::objects::{ObjectKey, Objects};
use crate::routing::HostMatch;
use crate::warning::Warning;

/// Certificates by host, as the current configuration declares them. Looked up by SNI on every
/// handshake: one hash lookup for the exact name, one for its parent (wildcard).
#[derive(Debug, Default)]
pub struct TlsTable {
    exact: HashMap<Arc<str>, Arc<TlsCert>>,
    /// `*.suffix` hosts, keyed by `suffix`.
    wildcard: HashMap<Arc<str>, Arc<TlsCert>>,
    /// From `--default-certificate`, for handshakes no host entry matches.
    default: Option<Arc<TlsCert>>,
    /// Every Secret parsed for this table with what it was parsed from, so the next
    /// translate() reuses the result while the Secret's data stays the same.
    parsed: HashMap<ObjectKey, Parsed>,
}

#[derive(Clone, Debug)]
struct Parsed {
    source: Arc<Secret>,
    result: Result<Arc<TlsCert>, CertError>,
}

// === impl TlsTable ===

impl TlsTable {
    /// The certificate for a TLS server name (SNI): an exact host entry, else a wildcard entry
    /// covering it. `None` means the default certificate.
    pub fn lookup(&self, server_name: &str) -> Option<&Arc<TlsCert>> {
        let name = certs::normalize_name(server_name);
        if let Some(cert) = self.exact.get(&*name) {
            return Some(cert);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// The certificate of a host entry exactly as an Ingress declares it.
    pub fn get(&self, host: &HostMatch) -> Option<&Arc<TlsCert>> {
        match host {
            HostMatch::Exact(h) => self.exact.get(h),
            HostMatch::Wildcard(s) => self.wildcard.get(s),
            HostMatch::Any => None,
        }
    }

    /// Whether requests for a rule host arrive with a certificate of their own over HTTPS (and
    /// so may be redirected there).
    pub fn covers(&self, host: &HostMatch) -> bool {
        match host {
            HostMatch::Exact(h) => self.lookup(h).is_some(),
            HostMatch::Wildcard(s) => self.wildcard.contains_key(s),
            HostMatch::Any => false,
        }
    }

    /// What a Secret named by a `spec.tls` entry (or `--default-certificate`) holds, as parsed
    /// for this table: the certificate even when it is expired or not yet valid (for renewal
    /// decisions), or why it cannot be parsed. `None`: missing, or named by no entry.
    pub fn secret_cert(&self, secret: &ObjectKey) -> Option<Result<&Arc<TlsCert>, &CertError>> {
        self.parsed.get(secret).map(|p| p.result.as_ref())
    }

    /// The Secret a `spec.tls` entry (or `--default-certificate`) names, as read for this
    /// table; `None` when it is missing.
    pub fn secret(&self, secret: &ObjectKey) -> Option<&Arc<Secret>> {
        self.parsed.get(secret).map(|p| &p.source)
    }

    /// The certificate from `--default-certificate`, if it is usable.
    pub fn default_cert(&self) -> Option<&Arc<TlsCert>> {
        self.default.as_ref()
    }

    /// Every host entry, exact hosts first, each group sorted.
    pub fn hosts(&self) -> Vec<(HostMatch, &Arc<TlsCert>)> {
        let mut exact: Vec<_> = self
            .exact
            .iter()
            .map(|(h, c)| (HostMatch::Exact(h.clone()), c))
            .collect();
        let mut wildcard: Vec<_> = self
            .wildcard
            .iter()
            .map(|(h, c)| (HostMatch::Wildcard(h.clone()), c))
            .collect();
        exact.sort_by(|a, b| a.0.cmp(&b.0));
        wildcard.sort_by(|a, b| a.0.cmp(&b.0));
        exact.into_iter().chain(wildcard).collect()
    }

    /// Number of host entries (exact and wildcard).
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// host → `{secret, names, notBefore, notAfter, issuer}` for `/routes`, plus
    /// `acmeDirectory` when Gatehouse ordered the certificate; the default certificate under
    /// `(default)`.
    pub fn describe(&self) -> BTreeMap<String, serde_json::Value> {
        let entry = |cert: &TlsCert| {
            let mut entry = serde_json::json!({
                "secret": cert.secret.to_string(),
                "names": cert.names,
                "notBefore": certs::rfc3339(cert.not_before),
                "notAfter": certs::rfc3339(cert.not_after),
                "issuer": cert.issuer,
            });
            let directory = self
                .secret(&cert.secret)
                .and_then(|s| crate::acme::store::recorded_directory(&s.metadata));
            if let Some(directory) = directory {
                entry["acmeDirectory"] = directory.into();
            }
            entry
        };
        let mut out: BTreeMap<String, serde_json::Value> = self
            .hosts()
            .into_iter()
            .map(|(host, cert)| (host.display().into_owned(), entry(cert)))
            .collect();
        if let Some(cert) = &self.default {
            out.insert("(default)".into(), entry(cert));
        }
        out
    }

    fn insert(&mut self, host: &HostMatch, cert: Arc<TlsCert>) {
        match host {
            HostMatch::Exact(h) => {
                self.exact.insert(h.clone(), cert);
            }
            HostMatch::Wildcard(s) => {
                self.wildcard.insert(s.clone(), cert);
            }
            HostMatch::Any => {}
        }
    }
}

/// Builds a [`TlsTable`] during one translate() call.
pub struct TlsBuilder<'a> {
    objects: &'a Objects,
    previous: &'a TlsTable,
    now: SystemTime,
    table: TlsTable,
    /// Which Ingress declared each host first (it keeps the host).
    owners: HashMap<HostMatch, (ObjectKey, ObjectKey)>,
}

// === impl TlsBuilder ===

impl<'a> TlsBuilder<'a> {
    /// `previous` is the table in service: its parsed Secrets are reused and its certificates
    /// are the last good ones of hosts whose Secret broke.
    pub fn new(objects: &'a Objects, previous: &'a TlsTable, now: SystemTime) -> Self {
        Self {
            objects,
            previous,
            now,
            table: TlsTable::default(),
            owners: HashMap::new(),
        }
    }

    /// Sets the default certificate from a Secret; a bad one keeps the last good default.
    pub fn set_default(&mut self, secret: &ObjectKey, warnings: &mut Vec<Warning>) {
        match self.load(secret) {
            Ok(cert) => self.table.default = Some(cert),
            Err(err) => {
                let kept = self.previous.default.clone();
                warnings.push(Warning {
                    kind: "Secret",
                    object: secret.clone(),
                    reason: format!(
                        "--default-certificate not usable: {err}{}",
                        kept_note(kept.as_deref())
                    ),
                });
                self.table.default = kept;
            }
        }
    }

    /// Adds the `spec.tls` entries of an Ingress. Ingresses come oldest first: the first to
    /// declare a host chooses its certificate.
    pub fn add_ingress(&mut self, key: &ObjectKey, ingress: &Ingress, warnings: &mut Vec<Warning>) {
        let Some(spec) = &ingress.spec else { return };
        // A Secret that ACME has yet to create is expected to be missing: the ACME manager
        // reports the order's progress and failures itself.
        let acme = crate::acme::wants::acme_requested(ingress);
        let warn = |warnings: &mut Vec<Warning>, reason: String| {
            warnings.push(Warning {
                kind: "Ingress",
                object: key.clone(),
                reason,
            })
        };
        for entry in spec.tls.iter().flatten() {
            // An entry without hosts covers the hosts of the Ingress's rules.
            let listed: Vec<Option<&str>> = match entry.hosts.as_deref() {
                Some(hosts) if !hosts.is_empty() => {
                    hosts.iter().map(|h| Some(h.as_str())).collect()
                }
                _ => spec
                    .rules
                    .iter()
                    .flatten()
                    .filter_map(|r| r.host.as_deref())
                    .map(Some)
                    .collect(),
            };
            let mut hosts = Vec::new();
            for host in listed {
                match HostMatch::parse(host) {
                    Ok(HostMatch::Any) => {}
                    Ok(host) => hosts.push(host),
                    Err(reason) => warn(warnings, format!("TLS host skipped: {reason}")),
                }
            }
            if hosts.is_empty() {
                continue;
            }
            let Some(secret_name) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                let list = host_list(&hosts);
                warn(
                    warnings,
                    format!(
                        "spec.tls entry for {list} has no secretName: served with the default certificate"
                    ),
                );
                continue;
            };
            let secret = ObjectKey::new(key.namespace.clone(), secret_name);
            let loaded = self.load(&secret);
            let mut mine = Vec::new();
            for host in hosts {
                match self.owners.get(&host) {
                    Some((owner, owner_secret)) if owner != key && *owner_secret != secret => {
                        warn(
                            warnings,
                            format!(
                                "TLS host {} ignored: Ingress {owner} (older) already serves it with Secret {owner_secret}",
                                host.display()
                            ),
                        );
                    }
                    Some(_) => {}
                    None => {
                        self.owners
                            .insert(host.clone(), (key.clone(), secret.clone()));
                        mine.push(host);
                    }
                }
            }
            match loaded {
                Ok(cert) => {
                    for host in &mine {
                        if !cert.covers(&host.display()) {
                            warn(
                                warnings,
                                format!(
                                    "certificate in Secret {secret} is not valid for host {} (it names {})",
                                    host.display(),
                                    cert.names.join(", ")
                                ),
                            );
                        }
                        self.table.insert(host, cert.clone());
                    }
                }
                Err(err) => {
                    let awaiting_acme = acme && matches!(err, CertError::SecretNotFound);
                    for host in &mine {
                        let kept = self.previous.get(host).cloned();
                        if !awaiting_acme {
                            warn(
                                warnings,
                                format!(
                                    "TLS Secret {secret} for host {} not usable: {err}{}",
                                    host.display(),
                                    kept_note(kept.as_deref())
                                ),
                            );
                        }
                        if let Some(kept) = kept {
                            self.table.insert(host, kept);
                        }
                    }
                }
            }
        }
    }

    /// The checked certificate of a Secret, parsed at most once per translate() and reused from
    /// the previous table when the Secret's data is unchanged.
    fn load(&mut self, key: &ObjectKey) -> Result<Arc<TlsCert>, CertError> {
        let Some(secret) = self.objects.secrets.get(key) else {
            return Err(CertError::SecretNotFound);
        };
        let parsed = match self.table.parsed.get(key) {
            Some(done) => done.result.clone(),
            None => {
                let reused = self
                    .previous
                    .parsed
                    .get(key)
                    .filter(|p| same_tls_data(&p.source, secret));
                let result = match reused {
                    Some(p) => p.result.clone(),
                    None => TlsCert::from_secret(key.clone(), secret).map(Arc::new),
                };
                let entry = Parsed {
                    source: secret.clone(),
                    result: result.clone(),
                };
                self.table.parsed.insert(key.clone(), entry);
                result
            }
        };
        let cert = parsed?;
        cert.check_validity(self.now)?;
        Ok(cert)
    }

    pub fn finish(self) -> TlsTable {
        self.table
    }
}

/// Whether two versions of a Secret hold the same certificate and key.
fn same_tls_data(a: &Arc<Secret>, b: &Arc<Secret>) -> bool {
    if Arc::ptr_eq(a, b) {
        return true;
    }
    a.type_ == b.type_
        && match (certs::secret_pem(a), certs::secret_pem(b)) {
            (Ok(x), Ok(y)) => x == y,
            (Err(x), Err(y)) => x == y,
            _ => false,
        }
}

fn kept_note(kept: Option<&TlsCert>) -> String {
    match kept {
        Some(cert) => format!(
            "; keeping its last good certificate (from Secret {}, valid until {})",
            cert.secret,
            certs::rfc3339(cert.not_after)
        ),
        None => "; served with the default certificate".to_owned(),
    }
}

fn host_list(hosts: &[HostMatch]) -> String {
    let names: Vec<_> = hosts.iter().map(|h| h.display().into_owned()).collect();
    names.join(", ")
}
