//! The manifest directory source: the same YAML files `kubectl apply` takes, watched for changes.
//!
//! The directory is polled (a stat per file) rather than watched with inotify: polling sees
//! ConfigMap volume updates (an atomic symlink swap) and network filesystems alike, and a few
//! stats every [`POLL_INTERVAL`] cost next to nothing (big directories are polled less often,
//! [`ManifestDir::poll_interval`]).
//!
//! Parsing is built for large directories (issue 5: 10,000 Ingresses, 100,000 hosts): files are
//! split at their `---` lines, documents are parsed (by serde-saphyr) on every core, and a
//! changed file only parses the documents whose text changed; the others keep their objects (the
//! same `Arc`s, so translate() sees them unchanged).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::objects::{Kind, Object, ObjectKey, Objects};

/// How often the directory is checked for changes (at most): a change is served within this
/// plus the time to parse and translate it. Listing a directory of tens of files takes well
/// under 0.1 ms, so this costs under 0.5% of a core; see [`ManifestDir::poll_interval`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The longest wait between scans, for directories so big that listing them is slow.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Scans wait at least this many times as long as listing the directory took (1% of a core).
const POLL_COST_RATIO: u32 = 100;

/// Below this many bytes to parse, one thread does it all.
const PARALLEL_MIN_BYTES: usize = 256 * 1024;

/// Parses a multi-document YAML text into the objects Gatehouse reads. Documents of other kinds
/// are skipped; `kind: List` is unpacked. An error names the document and the reason.
pub fn parse_documents(text: &str) -> Result<Vec<Object>, String> {
    let parsed = parse_files(&[(text, &[])])
        .pop()
        .unwrap_or_else(|| Ok(Vec::new()))?;
    Ok(parsed.into_iter().flat_map(|d| d.objects).collect())
}

/// The whole text through serde-saphyr, as a stream: the reference for every result and the
/// source of every error message. Public for the fuzz targets (tests/fuzz), which hold
/// [`parse_documents`] and [`reparse`] to it.
#[doc(hidden)]
pub fn parse_stream(text: &str) -> Result<Vec<Object>, String> {
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

/// Parses `new` as a rescan does when the file held `old` before (documents whose text did not
/// change keep their objects). Public for the fuzz targets, which compare it with a parse from
/// nothing.
#[doc(hidden)]
pub fn reparse(old: &str, new: &str) -> Result<Vec<Object>, String> {
    let previous = parse_files(&[(old, &[])])
        .pop()
        .and_then(Result::ok)
        .unwrap_or_default();
    let parsed = parse_files(&[(new, &previous)])
        .pop()
        .unwrap_or_else(|| Ok(Vec::new()))?;
    Ok(parsed.into_iter().flat_map(|d| d.objects).collect())
}

/// One document of a file: a fingerprint of its text and its objects.
#[derive(Debug)]
struct Document {
    fingerprint: Fingerprint,
    objects: Vec<Object>,
}

/// 128 bits of keyed SipHash over a document's text: equal fingerprints mean equal text (the
/// keys are random per process, so no text can be made to collide on purpose).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Fingerprint(u64, u64);

fn fingerprint(text: &str) -> Fingerprint {
    static KEYS: LazyLock<(RandomState, RandomState)> =
        LazyLock::new(|| (RandomState::new(), RandomState::new()));
    let hash = |state: &RandomState| {
        let mut hasher = state.build_hasher();
        hasher.write(text.as_bytes());
        hasher.write_usize(text.len());
        hasher.finish()
    };
    Fingerprint(hash(&KEYS.0), hash(&KEYS.1))
}

/// The documents of a text, split at its `---` lines (each but the first starting with its
/// `---` line). `None` when the text has what makes document bounds more than `---` lines
/// (directives, `...` end markers, a byte order mark): it is then parsed as one stream.
fn split_documents(text: &str) -> Option<Vec<&str>> {
    if text.contains('\u{feff}') {
        return None;
    }
    let bytes = text.as_bytes();
    let marker = |at: usize, what: &[u8]| {
        bytes[at..].starts_with(what)
            && matches!(bytes.get(at + 3), None | Some(b' ' | b'\t' | b'\r' | b'\n'))
    };
    let mut docs = Vec::new();
    let mut start = 0;
    let mut line = 0;
    while line < bytes.len() {
        match bytes[line] {
            b'%' => return None,
            b'.' if marker(line, b"...") => return None,
            b'-' if marker(line, b"---") => {
                if line > start {
                    docs.push(&text[start..line]);
                }
                start = line;
            }
            _ => {}
        }
        line = match bytes[line..].iter().position(|&b| b == b'\n') {
            Some(i) => line + i + 1,
            None => bytes.len(),
        };
    }
    if start < bytes.len() {
        docs.push(&text[start..]);
    }
    Some(docs)
}

/// One document's objects from its text. `Err` means it failed to parse (the caller gets the
/// error message from the stream).
fn parse_document(text: &str) -> Result<Vec<Object>, ()> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|_| ())?;
    let mut out = Vec::new();
    collect(doc, &mut out).map_err(|_| ())?;
    Ok(out)
}

/// Parses texts (each with the documents it had when last parsed, reused where the text is the
/// same), every core taking a share of the documents.
fn parse_files(files: &[(&str, &[Document])]) -> Vec<Result<Vec<Document>, String>> {
    /// A document to parse: which file, its text, and what it had last time.
    struct Job<'t> {
        file: usize,
        text: &'t str,
        known: Option<&'t Document>,
    }
    let mut jobs = Vec::new();
    let mut whole = Vec::new();
    for (i, (text, previous)) in files.iter().enumerate() {
        let Some(docs) = split_documents(text) else {
            whole.push(i);
            continue;
        };
        let known: HashMap<Fingerprint, &Document> =
            previous.iter().map(|d| (d.fingerprint, d)).collect();
        for doc in docs {
            let known = (!known.is_empty())
                .then(|| known.get(&fingerprint(doc)).copied())
                .flatten();
            jobs.push(Job {
                file: i,
                text: doc,
                known,
            });
        }
    }
    let run = |jobs: &[Job<'_>]| -> Vec<(Fingerprint, Result<Vec<Object>, ()>)> {
        jobs.iter()
            .map(|job| match job.known {
                Some(doc) => (doc.fingerprint, Ok(doc.objects.clone())),
                None => (fingerprint(job.text), parse_document(job.text)),
            })
            .collect()
    };
    let to_parse: usize = jobs
        .iter()
        .filter(|j| j.known.is_none())
        .map(|j| j.text.len())
        .sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let results = if threads > 1 && to_parse >= PARALLEL_MIN_BYTES {
        // Contiguous shares of about equal bytes, parsed at once; results stay in order.
        let share = to_parse.div_ceil(threads);
        let mut shares = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, job) in jobs.iter().enumerate() {
            bytes += if job.known.is_none() {
                job.text.len()
            } else {
                0
            };
            if bytes >= share && shares.len() + 1 < threads {
                shares.push(&jobs[start..=i]);
                (start, bytes) = (i + 1, 0);
            }
        }
        shares.push(&jobs[start..]);
        std::thread::scope(|scope| {
            let running: Vec<_> = shares
                .into_iter()
                .map(|share| scope.spawn(move || run(share)))
                .collect();
            running
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Vec<_>>()
        })
    } else {
        run(&jobs)
    };

    let mut out: Vec<Result<Vec<Document>, String>> =
        files.iter().map(|_| Ok(Vec::new())).collect();
    let mut failed = vec![false; files.len()];
    for (job, (fingerprint, result)) in jobs.iter().zip(results) {
        match (result, &mut out[job.file]) {
            (Ok(objects), Ok(docs)) => docs.push(Document {
                fingerprint,
                objects,
            }),
            _ => failed[job.file] = true,
        }
    }
    for (i, (text, previous)) in files.iter().enumerate() {
        if !(failed[i] || whole.contains(&i)) {
            continue;
        }
        // The whole text as one stream: the same objects as the documents one by one, and
        // the error with the document's number in the file.
        let print = fingerprint(text);
        out[i] = match previous.iter().find(|d| d.fingerprint == print) {
            Some(same) if whole.contains(&i) => Ok(vec![Document {
                fingerprint: print,
                objects: same.objects.clone(),
            }]),
            _ => parse_stream(text).map(|objects| {
                vec![Document {
                    fingerprint: print,
                    objects,
                }]
            }),
        };
    }
    out
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

/// What is known of one file: the stamp it was read at and its last good documents.
#[derive(Debug, Default)]
struct FileState {
    stamp: Option<Stamp>,
    docs: Vec<Document>,
    /// Its objects by kind and key (a later one in the file replaces an earlier one).
    index: HashMap<(Kind, ObjectKey), Object>,
}

impl FileState {
    fn new(stamp: Stamp, docs: Vec<Document>) -> Self {
        let mut index = HashMap::new();
        for object in docs.iter().flat_map(|d| &d.objects) {
            index.insert((object.kind(), object.key()), object.clone());
        }
        Self {
            stamp: Some(stamp),
            docs,
            index,
        }
    }
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
    /// The objects of every file, merged; kept up to date by [`ManifestDir::scan`] one changed
    /// object at a time.
    merged: Objects,
    /// How long the last scan took to list the files (and stat them).
    listing: Duration,
}

// === impl ManifestDir ===

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
            secrets_from: None,
            merged: Objects::default(),
            listing: Duration::ZERO,
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
        let mut touched = Vec::new();
        let report = self.scan_files(&mut touched)?;
        for id in touched {
            self.settle(id);
        }
        Ok(report)
    }

    /// Scans; `touched` gets the kind and key of every object that may have changed.
    fn scan_files(&mut self, touched: &mut Vec<(Kind, ObjectKey)>) -> std::io::Result<ScanReport> {
        let mut report = ScanReport::default();
        let mut seen = BTreeMap::new();
        let started = Instant::now();
        list_files(&self.root, &mut seen)?;
        self.listing = started.elapsed();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|path| !seen.contains_key(*path))
            .cloned()
            .collect();
        for path in gone {
            if let Some(file) = self.files.remove(&path) {
                touched.extend(file.index.into_keys());
                report.changed = true;
            }
        }
        // Read every new or changed file, then parse them all at once (on every core).
        let mut read = Vec::new();
        for (path, stamp) in seen {
            let known = self.files.get(&path);
            if known.is_some_and(|f| f.stamp.as_ref() == Some(&stamp)) {
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => read.push((path, stamp, text)),
                Err(err) => {
                    self.keep_last_good(&path, stamp);
                    report.errors.push((path, err.to_string()));
                }
            }
        }
        let no_docs = Vec::new();
        let inputs: Vec<(&str, &[Document])> = read
            .iter()
            .map(|(path, _, text)| {
                let previous = self.files.get(path).map_or(&no_docs, |f| &f.docs);
                (text.as_str(), previous.as_slice())
            })
            .collect();
        let parsed = parse_files(&inputs);
        drop(inputs);
        for ((path, stamp, _), parsed) in read.into_iter().zip(parsed) {
            match parsed {
                Ok(docs) => {
                    let file = FileState::new(stamp, docs);
                    let before = self.files.remove(&path).unwrap_or_default();
                    // Objects that are not the very same as before (documents whose text did
                    // not change keep theirs).
                    let mut differ: Vec<(Kind, ObjectKey)> = file
                        .index
                        .iter()
                        .filter(|(id, o)| !before.index.get(*id).is_some_and(|b| b.same(o)))
                        .map(|(id, _)| id.clone())
                        .collect();
                    differ.extend(
                        before
                            .index
                            .keys()
                            .filter(|id| !file.index.contains_key(*id))
                            .cloned(),
                    );
                    report.changed |= !differ.is_empty();
                    touched.extend(differ);
                    self.files.insert(path, file);
                }
                Err(reason) => {
                    self.keep_last_good(&path, stamp);
                    report.errors.push((path, reason));
                }
            }
        }
        if let Some(overlay) = &mut self.secrets_from {
            let mut overlay_touched = Vec::new();
            let overlay_report = overlay.scan_files(&mut overlay_touched)?;
            for id in overlay_touched {
                overlay.settle(id.clone());
                if id.0 == Kind::Secret {
                    touched.push(id);
                }
            }
            report.changed |= overlay_report.changed;
            report.errors.extend(overlay_report.errors);
        }
        Ok(report)
    }

    /// Puts in [`ManifestDir::objects`] the object a kind and key name now: the overlay's
    /// Secret, else the one of the last file that has it, else none.
    fn settle(&mut self, (kind, key): (Kind, ObjectKey)) {
        if kind == Kind::Secret
            && let Some(secret) = self
                .secrets_from
                .as_ref()
                .and_then(|o| o.merged.secrets.get(&key))
        {
            self.merged.secrets.insert(key, secret.clone());
            return;
        }
        let id = (kind, key);
        let winner = self.files.values().rev().find_map(|f| f.index.get(&id));
        match winner {
            Some(object) => self.merged.insert_as(id.1, object.clone()),
            None => self.merged.remove(kind, &id.1),
        }
    }

    /// Remembers a file's new stamp, so the same broken content is reported once, but keeps
    /// the objects of its last good read.
    fn keep_last_good(&mut self, path: &Path, stamp: Stamp) {
        let file = self.files.entry(path.to_owned()).or_default();
        file.stamp = Some(stamp);
    }

    /// How long to wait before the next scan: [`POLL_INTERVAL`], or longer when listing the
    /// directory (and the Secrets one) takes more than 1% of that.
    pub fn poll_interval(&self) -> Duration {
        let overlay = self
            .secrets_from
            .as_ref()
            .map_or(Duration::ZERO, |o| o.listing);
        ((self.listing + overlay) * POLL_COST_RATIO).clamp(POLL_INTERVAL, MAX_POLL_INTERVAL)
    }

    /// The objects of every file; a later file's object replaces an earlier one of the same key,
    /// and the Secrets of the overlay directory replace both.
    pub fn objects(&self) -> &Objects {
        &self.merged
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
