//! Where the ACME manager keeps what it must not lose: its account, the orders in flight, and
//! the certificates it obtained.
//!
//! One small trait, two homes: [`FileStore`] (manifest mode: files under `--state-dir`) and, in
//! a cluster, Secrets. Certificates are written as `kubernetes.io/tls` Secrets in both, so they
//! come back through the sources and translate() like any other Secret.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures_util::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::objects::ObjectKey;

/// Label on every Secret Gatehouse writes, with the value [`MANAGED_BY_VALUE`]. An existing
/// Secret is only ever overwritten when it carries it: labelling a hand-made Secret so is how
/// it is handed over to Gatehouse.
pub const MANAGED_BY_LABEL: &str = "gatehouse.dev/managed-by";
pub const MANAGED_BY_VALUE: &str = "gatehouse";
/// Annotation (same key as the label, value `acme`) that marked certificate Secrets before the
/// label existed: still written, and still taken as ownership.
pub const LEGACY_MANAGED_BY_ANNOTATION: &str = "gatehouse.dev/managed-by";
/// Hosts the certificate of a managed Secret was ordered for, comma-separated.
pub const HOSTS_ANNOTATION: &str = "gatehouse.dev/acme-hosts";
/// The Ingress a managed Secret was ordered for.
pub const INGRESS_ANNOTATION: &str = "gatehouse.dev/acme-ingress";
/// The ACME directory URL that issued the certificate of a managed Secret.
pub const DIRECTORY_ANNOTATION: &str = "gatehouse.dev/acme-directory";
/// The ACME account (its URL) that ordered the certificate of a managed Secret.
pub const ACCOUNT_ANNOTATION: &str = "gatehouse.dev/acme-account";

/// Whether Gatehouse may overwrite a Secret with this metadata: it carries
/// [`MANAGED_BY_LABEL`] (or the annotation earlier versions wrote).
pub fn managed_by_gatehouse(meta: &ObjectMeta) -> bool {
    let label = meta.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL));
    let legacy = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(LEGACY_MANAGED_BY_ANNOTATION));
    label.is_some_and(|v| v == MANAGED_BY_VALUE) || legacy.is_some_and(|v| v == "acme")
}

/// The ACME directory recorded on a managed Secret, if any.
pub fn recorded_directory(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(DIRECTORY_ANNOTATION)
        .map(String::as_str)
}

/// An existing Secret Gatehouse did not make and so will not overwrite.
#[derive(Debug, thiserror::Error)]
#[error(
    "Secret {0} exists and is not managed by Gatehouse (no label {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}): not overwritten; add that label to hand it over"
)]
pub struct NotManaged(pub ObjectKey);

/// A certificate just obtained, to be stored as the `kubernetes.io/tls` Secret `secret`.
#[derive(Clone, Debug)]
pub struct Issued {
    pub secret: ObjectKey,
    pub ingress: ObjectKey,
    pub hosts: Vec<String>,
    /// Leaf first, then the intermediates, as the ACME server sent them.
    pub chain_pem: String,
    pub key_pem: String,
    /// The ACME directory and account it came from.
    pub directory: String,
    pub account: String,
}

/// Persistence of the ACME manager. Values other than certificates are opaque JSON the manager
/// writes and reads back; an implementation only keeps them. Every value holds private key
/// material: keep it readable by Gatehouse alone.
pub trait Store: Send + Sync + 'static {
    /// The account credentials saved last, if any.
    fn load_account(&self) -> BoxFuture<'_, anyhow::Result<Option<String>>>;
    fn save_account<'a>(&'a self, json: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// The order in flight for `secret`, if any.
    fn load_order<'a>(
        &'a self,
        secret: &'a ObjectKey,
    ) -> BoxFuture<'a, anyhow::Result<Option<String>>>;
    /// Saves (`Some`) or forgets (`None`) the order in flight for `secret`.
    fn save_order<'a>(
        &'a self,
        secret: &'a ObjectKey,
        json: Option<&'a str>,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Creates or replaces the `kubernetes.io/tls` Secret `issued.secret` (see [`tls_secret`]);
    /// an existing Secret not [`managed_by_gatehouse`] is left alone with a [`NotManaged`] error.
    fn save_certificate<'a>(&'a self, issued: &'a Issued) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Checks, before anything is ordered, that the certificate could be stored in `secret`:
    /// a [`NotManaged`] error if it exists and Gatehouse may not overwrite it. Where the
    /// manager sees every such Secret in the snapshot (manifest mode) there is nothing to add.
    fn check_certificate_secret<'a>(
        &'a self,
        _secret: &'a ObjectKey,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Makes an HTTP-01 answer visible to every replica before the CA is asked to check it,
    /// since the CA's validator may reach any of them. A lone process has nothing to share.
    fn share_http01<'a>(
        &'a self,
        _token: &'a str,
        _key_authorization: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Like [`Store::share_http01`], for a TLS-ALPN-01 answer (the key authorization digest).
    fn share_tls_alpn01<'a>(
        &'a self,
        _host: &'a str,
        _digest: &'a [u8],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// How long a shared answer takes to reach every replica; the CA is told to check only
    /// after this. A lone process answers at once.
    fn answer_propagation(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Withdraws the answers shared for an order once it is over, whatever its outcome.
    fn withdraw_answers<'a>(
        &'a self,
        _tokens: &'a [String],
        _hosts: &'a [String],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// The Secret an issued certificate is stored as: labelled as managed by Gatehouse, annotated
/// with what it was ordered for and where from.
pub fn tls_secret(issued: &Issued) -> Secret {
    let annotations = [
        (LEGACY_MANAGED_BY_ANNOTATION, "acme".to_owned()),
        (HOSTS_ANNOTATION, issued.hosts.join(",")),
        (INGRESS_ANNOTATION, issued.ingress.to_string()),
        (DIRECTORY_ANNOTATION, issued.directory.clone()),
        (ACCOUNT_ANNOTATION, issued.account.clone()),
    ];
    Secret {
        metadata: ObjectMeta {
            name: Some(issued.secret.name.clone()),
            namespace: Some(issued.secret.namespace.clone()),
            labels: Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())].into()),
            annotations: Some(
                annotations
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                (
                    "tls.crt".to_owned(),
                    ByteString(issued.chain_pem.clone().into_bytes()),
                ),
                (
                    "tls.key".to_owned(),
                    ByteString(issued.key_pem.clone().into_bytes()),
                ),
            ]
            .into(),
        ),
        ..Secret::default()
    }
}

/// Manifest mode: files under `--state-dir`.
///
/// ```text
/// account.json                      the ACME account (0600)
/// orders/NAMESPACE_NAME.json        orders in flight, with their private keys (0600)
/// certificates/NAMESPACE_NAME.yaml  issued certificates as Secret manifests (0600), read back
///                                   by the manifest source
/// ```
/// Every write goes to a hidden temporary file first and is renamed into place, so readers
/// (the manifest source polls `certificates/`) never see half a file.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

// === impl FileStore ===

impl FileStore {
    /// Opens (creating if needed, mode 0700) the state directory and its folders.
    pub fn open(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let store = Self { root: root.into() };
        for dir in [
            store.root.clone(),
            store.orders_dir(),
            store.certificates_dir(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(store)
    }

    /// The folder of issued certificates, a manifest directory of Secrets.
    pub fn certificates_dir(&self) -> PathBuf {
        self.root.join("certificates")
    }

    fn orders_dir(&self) -> PathBuf {
        self.root.join("orders")
    }

    fn account_path(&self) -> PathBuf {
        self.root.join("account.json")
    }

    fn order_path(&self, secret: &ObjectKey) -> anyhow::Result<PathBuf> {
        Ok(self
            .orders_dir()
            .join(format!("{}.json", file_stem(secret)?)))
    }

    fn certificate_path(&self, secret: &ObjectKey) -> anyhow::Result<PathBuf> {
        Ok(self
            .certificates_dir()
            .join(format!("{}.yaml", file_stem(secret)?)))
    }
}

/// `NAMESPACE_NAME` (`_` appears in neither); refuses anything that is not a DNS name, so no
/// object name can reach outside the folder.
fn file_stem(secret: &ObjectKey) -> anyhow::Result<String> {
    let ok = |part: &str| {
        !part.is_empty()
            && part.len() <= 253
            && !part.starts_with('.')
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if ok(&secret.namespace) && ok(&secret.name) {
        Ok(format!("{}_{}", secret.namespace, secret.name))
    } else {
        anyhow::bail!("Secret name {secret} is not a valid Kubernetes name")
    }
}

/// Writes `data` to `path` atomically with mode 0600: a hidden temporary file, fsynced, then
/// renamed over the target.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("state directory task failed")?
}

impl Store for FileStore {
    fn load_account(&self) -> BoxFuture<'_, anyhow::Result<Option<String>>> {
        let path = self.account_path();
        Box::pin(blocking(move || read_optional(&path)))
    }

    fn save_account<'a>(&'a self, json: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        let (path, data) = (self.account_path(), json.as_bytes().to_vec());
        Box::pin(blocking(move || {
            write_private(&path, &data).with_context(|| format!("cannot write {}", path.display()))
        }))
    }

    fn load_order<'a>(
        &'a self,
        secret: &'a ObjectKey,
    ) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        let path = self.order_path(secret);
        Box::pin(blocking(move || read_optional(&path?)))
    }

    fn save_order<'a>(
        &'a self,
        secret: &'a ObjectKey,
        json: Option<&'a str>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        let path = self.order_path(secret);
        let data = json.map(|j| j.as_bytes().to_vec());
        Box::pin(blocking(move || {
            let path = path?;
            match data {
                Some(data) => write_private(&path, &data)
                    .with_context(|| format!("cannot write {}", path.display())),
                None => match std::fs::remove_file(&path) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        Err(err).with_context(|| format!("cannot remove {}", path.display()))
                    }
                    _ => Ok(()),
                },
            }
        }))
    }

    fn save_certificate<'a>(&'a self, issued: &'a Issued) -> BoxFuture<'a, anyhow::Result<()>> {
        let path = self.certificate_path(&issued.secret);
        let secret = tls_secret(issued);
        Box::pin(blocking(move || {
            let path = path?;
            let mut yaml =
                String::from("# Written by Gatehouse's ACME manager; replaced at every renewal.\n");
            yaml.push_str(&serde_saphyr::to_string(&secret).context("cannot render the Secret")?);
            write_private(&path, yaml.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))
        }))
    }
}
