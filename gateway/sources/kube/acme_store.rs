//! The ACME manager's [`Store`] in a cluster: Secrets.
//!
//! - Certificates: the `kubernetes.io/tls` Secret named by the Ingress's `secretName`, in the
//!   Ingress's namespace, annotated as managed by Gatehouse ([`crate::acme::store::tls_secret`]);
//!   it comes back through the TLS Secret watch like any other certificate.
//! - The account and the orders in flight: Opaque Secrets in the controller's namespace,
//!   labelled [`SECRET_LABEL`] so the controller's own-Secrets watch sees them.
//! - Challenge answers: one Secret, [`CHALLENGES_SECRET`], every replica watches and mirrors
//!   into its data plane ([`ChallengeMirror`]), so whichever replica the CA reaches answers.
//!
//! Every Secret written carries the label `gatehouse.dev/managed-by: gatehouse`
//! ([`MANAGED_BY_LABEL`]); an existing Secret without it is never overwritten ([`NotManaged`]).
//! Every write is optimistic: read, then create or replace with the `resourceVersion` read,
//! again on a conflict. An order's Secret is deleted once the order is over.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use futures_util::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use super::SECRET_LABEL;
use crate::acme::store::{
    Issued, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NotManaged, Store, managed_by_gatehouse, tls_secret,
};
use crate::objects::{ObjectKey, Objects};
use crate::shared::ChallengeAnswers;

/// The ACME account's Secret in the controller's namespace.
pub const ACCOUNT_SECRET: &str = "gatehouse-acme-account";
/// The Secret of challenge answers every replica serves.
pub const CHALLENGES_SECRET: &str = "gatehouse-acme-challenges";
/// Prefix of the Secrets of orders in flight (then a hash of the certificate Secret's key).
pub const ORDER_SECRET_PREFIX: &str = "gatehouse-acme-order-";
/// Annotation on an order Secret: the certificate Secret it is for.
const FOR_ANNOTATION: &str = "gatehouse.dev/acme-secret";
const ACCOUNT_KEY: &str = "account.json";
const ORDER_KEY: &str = "order.json";
const HTTP01_PREFIX: &str = "http01.";
const TLS_ALPN01_PREFIX: &str = "tls-alpn01.";
/// Attempts of a read-modify-write before giving up on conflicts.
const ATTEMPTS: usize = 5;

/// Secrets in a cluster.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    /// The controller's namespace: account, orders, challenge answers.
    namespace: String,
}

// === impl KubeStore ===

impl KubeStore {
    pub fn new(client: Client, namespace: String) -> Self {
        Self { client, namespace }
    }

    fn own(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn load_key(&self, name: &str, key: &str) -> anyhow::Result<Option<String>> {
        let secret = self
            .own()
            .get_opt(name)
            .await
            .with_context(|| format!("cannot read Secret {}/{name}", self.namespace))?;
        Ok(secret.and_then(|s| data_text(&s, key)))
    }

    /// Puts one key into an Opaque Secret of the controller's namespace, creating it if needed.
    async fn save_key(
        &self,
        name: &str,
        role: &str,
        key: &str,
        value: &str,
        annotations: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let api = self.own();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some(own_labels(role)),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.clone()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some([(key.to_owned(), ByteString(value.as_bytes().to_vec()))].into()),
            ..Secret::default()
        };
        upsert(&api, &self.namespace, secret, |_| {})
            .await
            .with_context(|| format!("cannot write Secret {}/{name}", self.namespace))
    }

    /// Edits the challenge answers Secret (created on first use).
    async fn edit_answers(
        &self,
        edit: impl Fn(&mut BTreeMap<String, ByteString>),
    ) -> anyhow::Result<()> {
        let api = self.own();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(CHALLENGES_SECRET.to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some(own_labels("acme-challenges")),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::new()),
            ..Secret::default()
        };
        upsert(&api, &self.namespace, secret, |merged| {
            edit(merged.data.get_or_insert_with(BTreeMap::new))
        })
        .await
        .with_context(|| {
            format!(
                "cannot write the challenge answers Secret {}/{CHALLENGES_SECRET}",
                self.namespace
            )
        })
    }

    /// Publishes an HTTP-01 answer to every replica.
    pub async fn share_http01(&self, token: &str, key_authorization: &str) -> anyhow::Result<()> {
        let key = format!("{HTTP01_PREFIX}{token}");
        let value = ByteString(key_authorization.as_bytes().to_vec());
        self.edit_answers(|data| {
            data.insert(key.clone(), value.clone());
        })
        .await
    }

    /// Publishes a TLS-ALPN-01 answer (the SHA-256 digest of the key authorization) to every
    /// replica.
    pub async fn share_tls_alpn01(&self, host: &str, digest: &[u8]) -> anyhow::Result<()> {
        let key = format!("{TLS_ALPN01_PREFIX}{host}");
        let value = ByteString(digest.to_vec());
        self.edit_answers(|data| {
            data.insert(key.clone(), value.clone());
        })
        .await
    }

    /// Withdraws answers once their order is over.
    pub async fn withdraw(&self, tokens: &[String], hosts: &[String]) -> anyhow::Result<()> {
        let keys: BTreeSet<String> = tokens
            .iter()
            .map(|t| format!("{HTTP01_PREFIX}{t}"))
            .chain(hosts.iter().map(|h| format!("{TLS_ALPN01_PREFIX}{h}")))
            .collect();
        self.edit_answers(|data| data.retain(|k, _| !keys.contains(k)))
            .await
    }
}

/// Name of the Secret holding the order in flight for certificate Secret `secret`: a stable
/// hash, as `namespace/name` may be longer than a Secret name may be.
pub fn order_secret_name(secret: &ObjectKey) -> String {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in secret.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{ORDER_SECRET_PREFIX}{hash:016x}")
}

fn data_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Labels of the Secrets in the controller's namespace: what they hold (for the watch) and who
/// manages them.
fn own_labels(role: &str) -> BTreeMap<String, String> {
    [
        (SECRET_LABEL.to_owned(), role.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
    ]
    .into()
}

/// Whether Gatehouse may overwrite an existing Secret: labelled as managed by Gatehouse, or one
/// of its own Secrets as earlier versions labelled them.
fn ours(secret: &Secret) -> bool {
    let meta = &secret.metadata;
    managed_by_gatehouse(meta)
        || meta
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SECRET_LABEL))
}

/// Creates `desired` or, if it exists and is [`ours`], replaces it: labels, annotations and data
/// are merged over the existing ones, then `edit` runs on the result. Retries on conflicts. A
/// Secret that is not ours is left alone: a [`NotManaged`] error.
async fn upsert(
    api: &Api<Secret>,
    namespace: &str,
    desired: Secret,
    edit: impl Fn(&mut Secret),
) -> anyhow::Result<()> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let result = match api.get_opt(&name).await? {
            None => {
                let mut fresh = desired.clone();
                edit(&mut fresh);
                api.create(&PostParams::default(), &fresh).await
            }
            Some(existing) if !ours(&existing) => {
                return Err(NotManaged(ObjectKey::new(namespace, &name)).into());
            }
            Some(mut existing) => {
                let meta = &mut existing.metadata;
                if let Some(labels) = &desired.metadata.labels {
                    meta.labels
                        .get_or_insert_with(BTreeMap::new)
                        .extend(labels.clone());
                }
                if let Some(annotations) = &desired.metadata.annotations {
                    meta.annotations
                        .get_or_insert_with(BTreeMap::new)
                        .extend(annotations.clone());
                }
                if let Some(data) = &desired.data {
                    existing
                        .data
                        .get_or_insert_with(BTreeMap::new)
                        .extend(data.clone());
                }
                existing.type_ = desired.type_.clone().or(existing.type_);
                existing.metadata.managed_fields = None;
                edit(&mut existing);
                api.replace(&name, &PostParams::default(), &existing).await
            }
        };
        match result {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
                last = Some(kube::Error::Api(s));
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(last
        .unwrap_or_else(|| kube::Error::Service("too many conflicts".into()))
        .into())
}

impl Store for KubeStore {
    /// Replicas pick the answers up through their Secret watch, then serve them from the next
    /// (debounced) rebuild: at most the debounce cap after the event arrives, plus a margin for
    /// the watch itself.
    fn answer_propagation(&self) -> std::time::Duration {
        super::DEBOUNCE.cap + std::time::Duration::from_secs(1)
    }

    fn share_http01<'a>(
        &'a self,
        token: &'a str,
        key_authorization: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(KubeStore::share_http01(self, token, key_authorization))
    }

    fn share_tls_alpn01<'a>(
        &'a self,
        host: &'a str,
        digest: &'a [u8],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(KubeStore::share_tls_alpn01(self, host, digest))
    }

    fn withdraw_answers<'a>(
        &'a self,
        tokens: &'a [String],
        hosts: &'a [String],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(KubeStore::withdraw(self, tokens, hosts))
    }

    fn load_account(&self) -> BoxFuture<'_, anyhow::Result<Option<String>>> {
        Box::pin(self.load_key(ACCOUNT_SECRET, ACCOUNT_KEY))
    }

    fn save_account<'a>(&'a self, json: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(self.save_key(ACCOUNT_SECRET, "acme-account", ACCOUNT_KEY, json, &[]))
    }

    fn load_order<'a>(
        &'a self,
        secret: &'a ObjectKey,
    ) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(async move {
            let name = order_secret_name(secret);
            self.load_key(&name, ORDER_KEY).await
        })
    }

    fn save_order<'a>(
        &'a self,
        secret: &'a ObjectKey,
        json: Option<&'a str>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let name = order_secret_name(secret);
            match json {
                Some(json) => {
                    let annotations = [(FOR_ANNOTATION, secret.to_string())];
                    self.save_key(&name, "acme-order", ORDER_KEY, json, &annotations)
                        .await
                }
                // The order is over: its Secret goes (it holds a private key).
                None => {
                    let api = self.own();
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                        Err(err) => Err(err).with_context(|| {
                            format!("cannot delete Secret {}/{name}", self.namespace)
                        }),
                    }
                }
            }
        })
    }

    fn save_certificate<'a>(&'a self, issued: &'a Issued) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &issued.secret.namespace);
            upsert(&api, &issued.secret.namespace, tls_secret(issued), |_| {})
                .await
                .with_context(|| format!("cannot write certificate Secret {}", issued.secret))
        })
    }

    fn check_certificate_secret<'a>(
        &'a self,
        secret: &'a ObjectKey,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
            match api.get_opt(&secret.name).await {
                Ok(Some(existing)) if !ours(&existing) => Err(NotManaged(secret.clone()).into()),
                Ok(_) => Ok(()),
                Err(err) => Err(err).with_context(|| format!("cannot read Secret {secret}")),
            }
        })
    }
}

/// Serves the answers of [`CHALLENGES_SECRET`] from this replica's data plane, following the
/// Secret as it changes. Only answers it put up itself are ever taken down, so an order of this
/// replica keeps its own answers whatever the Secret says.
#[derive(Default)]
pub struct ChallengeMirror {
    http01: BTreeMap<String, String>,
    tls_alpn01: BTreeMap<String, Vec<u8>>,
}

// === impl ChallengeMirror ===

impl ChallengeMirror {
    /// Brings the data plane in line with the answers Secret among `objects`' Secrets.
    pub fn sync(&mut self, challenges: &ChallengeAnswers, objects: &Objects, namespace: &str) {
        let secret = objects
            .secrets
            .get(&ObjectKey::new(namespace, CHALLENGES_SECRET));
        let data = secret.and_then(|s| s.data.as_ref());
        let mut http01 = BTreeMap::new();
        let mut tls_alpn01 = BTreeMap::new();
        for (key, value) in data.into_iter().flatten() {
            if let Some(token) = key.strip_prefix(HTTP01_PREFIX) {
                match String::from_utf8(value.0.clone()) {
                    Ok(answer) if crate::acme::valid_token(token) => {
                        http01.insert(token.to_owned(), answer);
                    }
                    _ => tracing::warn!(key, "unusable HTTP-01 answer in the challenges Secret"),
                }
            } else if let Some(host) = key.strip_prefix(TLS_ALPN01_PREFIX) {
                tls_alpn01.insert(host.to_owned(), value.0.clone());
            }
        }
        for token in self.http01.keys().filter(|t| !http01.contains_key(*t)) {
            challenges.http01.remove_http01(token);
        }
        for (token, answer) in &http01 {
            if self.http01.get(token) != Some(answer) {
                challenges.http01.add_http01(token, answer);
            }
        }
        for host in self
            .tls_alpn01
            .keys()
            .filter(|h| !tls_alpn01.contains_key(*h))
        {
            challenges.alpn.set(host, None);
        }
        for (host, digest) in &tls_alpn01 {
            if self.tls_alpn01.get(host) == Some(digest) {
                continue;
            }
            match crate::acme::order::alpn_certificate(host, digest) {
                Ok(cert) => challenges.alpn.set(host, Some(cert)),
                Err(err) => {
                    tracing::warn!(host, error = %err, "cannot make a TLS-ALPN-01 answer from the challenges Secret")
                }
            }
        }
        self.http01 = http01;
        self.tls_alpn01 = tls_alpn01;
    }
}
