//! The Secrets Ingresses name for basic authentication (`auth-secret`). They are usually Opaque,
//! so the TLS Secret watch does not see them, and watching every Secret in full would put the
//! data of every Secret of the watched namespaces (Helm releases, tokens, credentials) in the
//! gateway's memory. So:
//!
//! - a metadata-only watch (`PartialObjectMetadata`, no data) over the non-TLS Secrets of the
//!   watched namespaces says which exist and their `resourceVersion`, and notifies a rebuild on
//!   every change, a password rotation included;
//! - before each rebuild, [`AuthSecrets::supply`] fetches (`GET`) the Secrets the Ingresses name
//!   whose version it has not got yet, and drops those no Ingress names any more. Only these
//!   Secrets' data is held.
//!
//! A Secret that is gone is not supplied: translate() refuses the routes (503, with a warning),
//! fail closed. A fetch that fails keeps the copy last fetched (the API server is in trouble:
//! what is served stays as it is, like every other kind) and is retried with backoff; a Secret
//! never fetched is not supplied, so its routes stay refused until the fetch works.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Api, Client};

use crate::objects::{Object, ObjectKey, Objects};
use crate::translate::annotations::auth_secret_of;

/// At most this many Secrets are fetched at once.
const PARALLEL_FETCHES: usize = 8;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The metadata of the non-TLS Secrets of the watched namespaces, one store per watch.
pub type MetaStores = Vec<Store<PartialObjectMeta<Secret>>>;

/// The fetched authentication Secrets.
pub struct AuthSecrets {
    client: Client,
    /// Empty: every namespace is watched.
    namespaces: Vec<String>,
    /// Each fetched Secret (data only), as of its `resourceVersion`. The same `Arc` is handed
    /// out until the Secret changes, so translate() sees an unchanged Secret as unchanged.
    fetched: BTreeMap<ObjectKey, Arc<Secret>>,
    /// Named Secrets outside the watched namespaces, already warned about.
    warned_unwatched: BTreeSet<ObjectKey>,
}

/// What [`AuthSecrets::supply`] could not do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Supplied {
    /// Fetches that failed (not "not found"): worth another try.
    pub failed: usize,
}

// === impl AuthSecrets ===

impl AuthSecrets {
    pub fn new(client: Client, namespaces: &[String]) -> Self {
        Self {
            client,
            namespaces: namespaces.to_vec(),
            fetched: BTreeMap::new(),
            warned_unwatched: BTreeSet::new(),
        }
    }

    /// Adds to `objects` every Secret its Ingresses name in `auth-secret` that exists, fetching
    /// those new or changed since the last fetch.
    pub async fn supply(&mut self, objects: &mut Objects, meta: &MetaStores) -> Supplied {
        let wanted: BTreeSet<ObjectKey> = objects
            .ingresses
            .values()
            .filter_map(|ingress| auth_secret_of(ingress))
            // A TLS Secret is already there, in full.
            .filter(|key| !objects.secrets.contains_key(key))
            .collect();
        self.fetched.retain(|key, _| wanted.contains(key));
        self.warned_unwatched.retain(|key| wanted.contains(key));

        let mut to_fetch = Vec::new();
        for key in &wanted {
            if !self.watched(&key.namespace) {
                if self.warned_unwatched.insert(key.clone()) {
                    tracing::warn!(
                        secret = %key,
                        "an Ingress names an auth-secret outside the watched namespaces: it is not read, and the Ingress's routes are refused"
                    );
                }
                continue;
            }
            let Some(version) = current_version(meta, key) else {
                // Gone (or never there): translate() refuses the routes.
                self.fetched.remove(key);
                continue;
            };
            let fresh = self
                .fetched
                .get(key)
                .is_some_and(|s| s.metadata.resource_version.as_deref() == Some(&version));
            if !fresh {
                to_fetch.push(key.clone());
            }
        }

        let client = &self.client;
        let results: Vec<(ObjectKey, Result<Option<Secret>, String>)> =
            futures_util::stream::iter(to_fetch)
                .map(|key| async move {
                    let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
                    let got =
                        match tokio::time::timeout(FETCH_TIMEOUT, api.get_opt(&key.name)).await {
                            Ok(Ok(found)) => Ok(found),
                            Ok(Err(err)) => Err(err.to_string()),
                            Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
                        };
                    (key, got)
                })
                .buffer_unordered(PARALLEL_FETCHES)
                .collect()
                .await;

        let mut supplied = Supplied::default();
        for (key, got) in results {
            match got {
                Ok(Some(secret)) => {
                    self.fetched.insert(key, Arc::new(trimmed(secret)));
                }
                Ok(None) => {
                    self.fetched.remove(&key);
                }
                Err(error) => {
                    supplied.failed += 1;
                    let kept = self.fetched.contains_key(&key);
                    tracing::warn!(
                        secret = %key,
                        %error,
                        kept_last_copy = kept,
                        "cannot read an auth-secret: retrying with backoff"
                    );
                }
            }
        }
        for secret in self.fetched.values() {
            objects.insert(Object::Secret(secret.clone()));
        }
        supplied
    }

    fn watched(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }
}

/// The `resourceVersion` of a Secret the metadata watch knows, if it exists.
fn current_version(meta: &MetaStores, key: &ObjectKey) -> Option<String> {
    let reference = kube::runtime::reflector::ObjectRef::new(&key.name).within(&key.namespace);
    meta.iter()
        .find_map(|store| store.get(&reference))
        .map(|m| m.metadata.resource_version.clone().unwrap_or_default())
}

/// What translate() reads of an authentication Secret: its name, version and data. The rest
/// (kubectl's last applied copy holds the data a second time) is not kept.
fn trimmed(secret: Secret) -> Secret {
    let mut keep = Secret::default();
    keep.metadata.name = secret.metadata.name;
    keep.metadata.namespace = secret.metadata.namespace;
    keep.metadata.resource_version = secret.metadata.resource_version;
    keep.data = secret.data;
    keep.type_ = secret.type_;
    keep
}

/// Drops what the metadata watch never reads: only name, namespace and version matter.
pub fn trim_meta(meta: &mut PartialObjectMeta<Secret>) {
    meta.metadata.annotations = None;
    meta.metadata.labels = None;
    meta.metadata.owner_references = None;
    meta.metadata.finalizers = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_keeps_the_data_and_drops_the_last_applied_copy() {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "users", "namespace": "default", "resourceVersion": "7",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{}}"},
                "labels": {"a": "b"}},
            "type": "Opaque",
            "data": {"auth": "dTpw"},
        }))
        .expect("secret");
        let kept = trimmed(secret);
        assert_eq!(kept.metadata.name.as_deref(), Some("users"));
        assert_eq!(kept.metadata.resource_version.as_deref(), Some("7"));
        assert!(kept.metadata.annotations.is_none() && kept.metadata.labels.is_none());
        assert_eq!(
            kept.data.and_then(|d| d.get("auth").map(|v| v.0.clone())),
            Some(b"u:p".to_vec())
        );
    }
}
