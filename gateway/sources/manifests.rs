//! The manifest directory source: the same YAML files `kubectl apply` takes, watched for changes.
//!
//! The directory is polled (a stat per file) rather than watched with inotify: polling sees
//! ConfigMap volume updates (an atomic symlink swap) and network filesystems alike, and a few
//! stats every 250 ms cost nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::objects::{Object, Objects};

/// How often the directory is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Parses a multi-document YAML text into the objects Gatehouse reads. Documents of other kinds
/// are skipped; `kind: List` is unpacked. An error names the document and the reason.
pub fn parse_documents(text: &str) -> Result<Vec<Object>, String> {
    // Read as a stream: the YAML limits against hostile input (nodes, depth, aliases) then hold
    // per document, not for the whole file (which parsed at once may hold only 1,024 documents).
    let mut reader = text.as_bytes();
    let mut objects = Vec::new();
    for (i, doc) in serde_saphyr::read::<_, Value>(&mut reader).enumerate() {
        let doc = doc.map_err(|e| format!("document {}: {e}", i + 1))?;
        collect(doc, &mut objects).map_err(|e| format!("document {}: {e}", i + 1))?;
    }
    Ok(objects)
}

fn collect(doc: Value, out: &mut Vec<Object>) -> Result<(), String> {
    if doc.is_null() {
        return Ok(());
    }
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    fn typed<T: DeserializeOwned>(doc: Value, kind: &str, name: &str) -> Result<Arc<T>, String> {
        serde_json::from_value(doc)
            .map(Arc::new)
            .map_err(|e| format!("{kind} {name:?}: {e}"))
    }
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") => {
            let items = match doc {
                Value::Object(mut map) => map.remove("items").unwrap_or_default(),
                _ => Value::Null,
            };
            for item in items.as_array().into_iter().flatten() {
                collect(item.clone(), out)?;
            }
            return Ok(());
        }
        ("networking.k8s.io/v1", "IngressClass") => Object::IngressClass(typed(doc, &kind, &name)?),
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(typed(doc, &kind, &name)?),
        ("v1", "Service") => Object::Service(typed(doc, &kind, &name)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(typed(doc, &kind, &name)?)
        }
        ("v1", "Secret") => Object::Secret(typed(doc, &kind, &name)?),
        ("gatehouse.dev/v1alpha1", "StaticSite") => Object::StaticSite(typed(doc, &kind, &name)?),
        ("", _) | (_, "") => return Err(format!("{name:?} has no apiVersion or kind")),
        _ => {
            tracing::debug!(%api_version, %kind, %name, "ignoring a kind Gatehouse does not read");
            return Ok(());
        }
    };
    if object_name_missing(&object) {
        return Err(format!("{kind} has no metadata.name"));
    }
    out.push(object);
    Ok(())
}

fn object_name_missing(object: &Object) -> bool {
    let meta = match object {
        Object::IngressClass(o) => &o.metadata,
        Object::Ingress(o) => &o.metadata,
        Object::Service(o) => &o.metadata,
        Object::EndpointSlice(o) => &o.metadata,
        Object::Secret(o) => &o.metadata,
        Object::StaticSite(o) => &o.metadata,
    };
    meta.name.as_deref().is_none_or(str::is_empty)
}

/// What is known of one file: the stamp it was read at and its last good objects.
#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    objects: Vec<Object>,
}

/// Enough of a file's metadata to notice a change.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The outcome of a scan: whether anything changed, and the files that could not be used.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub changed: bool,
    /// `(file, reason)` for each file that failed to read or parse this time.
    pub errors: Vec<(PathBuf, String)>,
}

/// A directory of manifests and the last good objects of each file in it.
#[derive(Debug)]
pub struct ManifestDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// A second directory whose Secrets win over these (the ACME state directory's
    /// certificates); its other objects are ignored.
    secrets_from: Option<Box<ManifestDir>>,
}

// === impl ManifestDir ===

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
            secrets_from: None,
        }
    }

    /// Also reads the Secrets of `dir`, scanned with this one; they replace same-named ones.
    pub fn with_secrets_from(mut self, dir: impl Into<PathBuf>) -> Self {
        self.secrets_from = Some(Box::new(ManifestDir::new(dir)));
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Re-reads every new or changed `.yaml`/`.yml`/`.json` file (recursively, skipping hidden
    /// entries such as a ConfigMap volume's `..data`) and forgets removed ones. A file that fails
    /// to parse keeps its last good objects.
    pub fn scan(&mut self) -> std::io::Result<ScanReport> {
        let mut report = ScanReport::default();
        let mut seen = BTreeMap::new();
        list_files(&self.root, &mut seen)?;
        let before = self.files.len();
        self.files.retain(|path, _| seen.contains_key(path));
        report.changed |= self.files.len() != before;
        for (path, stamp) in seen {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_documents(&t));
            match parsed {
                Ok(objects) => {
                    self.files.insert(path, FileState { stamp, objects });
                    report.changed = true;
                }
                Err(reason) => {
                    // Remember the stamp so the same broken content is reported once, but keep
                    // the objects from the last good read.
                    let objects = self
                        .files
                        .remove(&path)
                        .map(|f| f.objects)
                        .unwrap_or_default();
                    self.files
                        .insert(path.clone(), FileState { stamp, objects });
                    report.errors.push((path, reason));
                }
            }
        }
        if let Some(overlay) = &mut self.secrets_from {
            let overlay = overlay.scan()?;
            report.changed |= overlay.changed;
            report.errors.extend(overlay.errors);
        }
        Ok(report)
    }

    /// The objects of every file; a later file's object replaces an earlier one of the same key.
    pub fn objects(&self) -> Objects {
        let mut objects = Objects::default();
        for file in self.files.values() {
            for object in &file.objects {
                objects.insert(object.clone());
            }
        }
        if let Some(overlay) = &self.secrets_from {
            objects.secrets.extend(overlay.objects().secrets);
        }
        objects
    }
}

fn list_files(dir: &Path, out: &mut BTreeMap<PathBuf, Stamp>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Follow symlinks: ConfigMap volumes link each file into a hidden directory.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            list_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            use std::os::unix::fs::MetadataExt;
            out.insert(
                path,
                Stamp {
                    modified: meta.modified().ok(),
                    len: meta.len(),
                    inode: meta.ino(),
                },
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
