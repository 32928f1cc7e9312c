//! The manifest directory source: the same YAML files `kubectl apply` takes, watched for changes.
//!
//! The directory is polled (a stat per file) rather than watched with inotify: polling sees
//! ConfigMap volume updates (an atomic symlink swap) and network filesystems alike, and a few
//! stats every [`POLL_INTERVAL`] cost next to nothing (big directories are polled less often,
//! [`ManifestDir::poll_interval`]).
//!
//! A change is read once it has held for [`SETTLE`] (a file half written is not read), and a
//! file that fails to read or parse, or is emptied, keeps its last good objects; what is wrong
//! is a problem ([`ManifestDir::problems`], [`ManifestDir::warnings`]) reported once, not at
//! every scan. Only the first scan can fail: later, a directory that cannot be listed keeps
//! every object in force.
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
use crate::snapshot::Warning;

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
    // serde-saphyr's reader takes a NUL for the end of the input and would drop what follows
    // it without a word; YAML text cannot hold one (it is not printable), so the file is refused.
    if let Some(at) = text.find('\0') {
        let line = text[..at].matches('\n').count() + 1;
        return Err(format!(
            "line {line}: a NUL byte (YAML text cannot hold one)"
        ));
    }
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
/// (directives, `...` end markers, a byte order mark) or lines this split would not see (YAML
/// also ends a line at a lone carriage return), or a NUL byte (the stream parse refuses it): it
/// is then parsed as one stream.
fn split_documents(text: &str) -> Option<Vec<&str>> {
    if text.contains(['\u{feff}', '\0']) {
        return None;
    }
    let bytes = text.as_bytes();
    let lone_cr = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
    if lone_cr {
        return None;
    }
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
    // Asked only for big files: available_parallelism() reads the cgroup files each time.
    let threads = if to_parse >= PARALLEL_MIN_BYTES {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    } else {
        1
    };
    let results = if threads > 1 {
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
    // From a borrowed value: the object's strings are then allocated next to each other rather
    // than taken from wherever the value put them, which makes every later pass over the
    // objects (translate() above all) faster.
    fn typed<T: DeserializeOwned>(doc: &Value, kind: &str, name: &str) -> Result<Arc<T>, String> {
        T::deserialize(doc)
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
        ("networking.k8s.io/v1", "IngressClass") => {
            Object::IngressClass(typed(&doc, &kind, &name)?)
        }
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(typed(&doc, &kind, &name)?),
        (v, "Ingress") if crate::objects::OLD_INGRESS_VERSIONS.contains(&v) => Object::Ingress(
            typed(&crate::objects::ingress_from_v1beta1(doc)?, &kind, &name)?,
        ),
        ("v1", "Service") => Object::Service(typed(&doc, &kind, &name)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(typed(&doc, &kind, &name)?)
        }
        ("v1", "Secret") => Object::Secret(typed(&doc, &kind, &name)?),
        ("gatehouse.dev/v1alpha1", "StaticSite") => Object::StaticSite(typed(&doc, &kind, &name)?),
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

/// What is known of one file: the stamp it was read at, its last good documents, and what is
/// wrong with it now.
#[derive(Debug, Default)]
struct FileState {
    stamp: Option<Stamp>,
    docs: Vec<Document>,
    /// Its objects by kind and key (a later one in the file replaces an earlier one).
    index: HashMap<(Kind, ObjectKey), Object>,
    /// A new stamp and when it was first seen: the file is read once it has held for the
    /// settle window.
    pending: Option<(Stamp, Instant)>,
    /// When the file was first found missing: its objects go once it has stayed away for the
    /// settle window.
    missing_since: Option<Instant>,
    /// Why its last read could not be used (its last good objects stay in force meanwhile).
    problem: Option<String>,
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
            ..Self::default()
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

/// The outcome of a scan.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Some object changed.
    pub changed: bool,
    /// The problems ([`ManifestDir::problems`]) are not the same as after the last scan.
    pub problems_changed: bool,
    /// `(file, reason)` for each problem that is new (or has a new reason) since the last
    /// scan: a file that failed to read or parse, an emptied file, a directory that cannot be
    /// listed. A problem that stays is reported once.
    pub errors: Vec<(PathBuf, String)>,
    /// Files and directories whose problem went away.
    pub resolved: Vec<PathBuf>,
}

/// How long a file must stay unchanged (size, modification time, inode) before it is read, and
/// a removed file stay away before its objects go: a file being written is not read half done.
/// Emptied files are handled apart (their last good objects stay), so this only needs to span
/// the gaps between a writer's writes, and is kept short because every change waits for it.
pub const SETTLE: Duration = Duration::from_millis(30);

/// Reason given for a file emptied after it had objects.
pub const EMPTIED: &str =
    "the file is empty: its last good objects stay in force (delete the file to remove them)";

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
    /// See [`SETTLE`]; the first scan reads everything at once.
    settle: Duration,
    /// A scan has listed the directory (so there are last good objects to protect).
    listed: bool,
    /// The directory (or one below it) could not be listed by the last scan, and why: every
    /// file keeps its objects meanwhile.
    unlisted: Option<(PathBuf, String)>,
    /// When the next scan must come to read a settled change (or drop a removed file).
    due: Option<Instant>,
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
            settle: SETTLE,
            listed: false,
            unlisted: None,
            due: None,
        }
    }

    /// Also reads the Secrets of `dir`, scanned with this one; they replace same-named ones.
    pub fn with_secrets_from(mut self, dir: impl Into<PathBuf>) -> Self {
        let overlay = ManifestDir::new(dir).with_settle(self.settle);
        self.secrets_from = Some(Box::new(overlay));
        self
    }

    /// Another settle window than [`SETTLE`] (zero: every change is read at the next scan).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        if let Some(overlay) = &mut self.secrets_from {
            overlay.settle = settle;
        }
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Re-reads every new or changed `.yaml`/`.yml`/`.json` file (recursively, skipping hidden
    /// entries such as a ConfigMap volume's `..data`) once it has settled, and forgets removed
    /// ones. A file that fails to read or parse, or is emptied, keeps its last good objects.
    ///
    /// Fails only if the first scan cannot list the directory; later, a directory that cannot
    /// be listed is a problem ([`ManifestDir::problems`]) and every object stays.
    pub fn scan(&mut self) -> std::io::Result<ScanReport> {
        self.scan_at(Instant::now())
    }

    /// [`ManifestDir::scan`] at the time `now`.
    pub fn scan_at(&mut self, now: Instant) -> std::io::Result<ScanReport> {
        let before = self.problems();
        let mut touched = Vec::new();
        let mut report = self.scan_files(now, &mut touched)?;
        for id in touched {
            self.settle(id);
        }
        let after = self.problems();
        report.problems_changed = before != after;
        report.errors = after
            .iter()
            .filter(|p| !before.contains(p))
            .cloned()
            .collect();
        report.resolved = before
            .into_iter()
            .filter(|(path, _)| !after.iter().any(|(p, _)| p == path))
            .map(|(path, _)| path)
            .collect();
        Ok(report)
    }

    /// Scans; `touched` gets the kind and key of every object that may have changed.
    fn scan_files(
        &mut self,
        now: Instant,
        touched: &mut Vec<(Kind, ObjectKey)>,
    ) -> std::io::Result<ScanReport> {
        let mut report = ScanReport::default();
        let mut seen = BTreeMap::new();
        let started = Instant::now();
        let listed = list_files(&self.root, &mut seen);
        self.listing = started.elapsed();
        if let Err((dir, err)) = listed {
            if !self.listed {
                return Err(err);
            }
            // A directory deleted or unreadable: nothing is known, so nothing changes.
            self.unlisted = Some((dir, err.to_string()));
            self.due = None;
            return Ok(report);
        }
        self.unlisted = None;
        let settle = if self.listed {
            self.settle
        } else {
            Duration::ZERO
        };
        self.listed = true;
        let mut due: Option<Instant> = None;
        let mut wait_until = |at: Instant| due = Some(due.map_or(at, |d| d.min(at)));

        let gone: Vec<PathBuf> = self
            .files
            .iter_mut()
            .filter(|(path, _)| !seen.contains_key(*path))
            .filter_map(|(path, file)| {
                let since = *file.missing_since.get_or_insert(now);
                if now.duration_since(since) >= settle {
                    Some(path.clone())
                } else {
                    wait_until(since + settle);
                    None
                }
            })
            .collect();
        for path in gone {
            if let Some(file) = self.files.remove(&path) {
                report.changed |= !file.index.is_empty();
                touched.extend(file.index.into_keys());
            }
        }
        // Read every new or changed file that has settled, then parse them all at once (on
        // every core).
        let mut read = Vec::new();
        for (path, stamp) in seen {
            let file = self.files.entry(path.clone()).or_default();
            file.missing_since = None;
            if file.stamp.as_ref() == Some(&stamp) {
                file.pending = None;
                continue;
            }
            match &file.pending {
                Some((pending, since)) if *pending == stamp => {
                    let settled_at = *since + settle;
                    if now < settled_at {
                        wait_until(settled_at);
                        continue;
                    }
                }
                _ if !settle.is_zero() => {
                    file.pending = Some((stamp, now));
                    wait_until(now + settle);
                    continue;
                }
                _ => {}
            }
            file.pending = None;
            match std::fs::read_to_string(&path) {
                Ok(text) if !has_content(&text) && !file.index.is_empty() => {
                    // `cmd > file` empties the file before cmd writes a byte, for as long as
                    // cmd takes: never a reason to drop every route the file had.
                    file.stamp = Some(stamp);
                    file.problem = Some(EMPTIED.to_owned());
                }
                Ok(text) => read.push((path, stamp, text)),
                Err(err) => {
                    file.stamp = Some(stamp);
                    file.problem = Some(err.to_string());
                }
            }
        }
        self.due = due;
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
        for ((path, stamp, text), parsed) in read.into_iter().zip(parsed) {
            // The text is not needed any more: give its memory back before the next file's
            // objects are indexed.
            drop(text);
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
                    // Remembers the new stamp, so the same broken content is read once, but
                    // keeps the objects of the last good read.
                    let file = self.files.entry(path).or_default();
                    file.stamp = Some(stamp);
                    file.problem = Some(reason);
                }
            }
        }
        if let Some(overlay) = &mut self.secrets_from {
            let mut overlay_touched = Vec::new();
            let overlay_report = overlay.scan_files(now, &mut overlay_touched)?;
            for id in overlay_touched {
                overlay.settle(id.clone());
                if id.0 == Kind::Secret {
                    touched.push(id);
                }
            }
            report.changed |= overlay_report.changed;
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

    /// How long to wait before the next scan: [`POLL_INTERVAL`], or longer when listing the
    /// directory (and the Secrets one) takes more than 1% of that; shorter when a change
    /// settles sooner.
    pub fn poll_interval(&self) -> Duration {
        let overlay = self.secrets_from.as_ref();
        let listing = self.listing + overlay.map_or(Duration::ZERO, |o| o.listing);
        let interval = (listing * POLL_COST_RATIO).clamp(POLL_INTERVAL, MAX_POLL_INTERVAL);
        let due = [self.due, overlay.and_then(|o| o.due)]
            .into_iter()
            .flatten()
            .min();
        match due {
            Some(due) => interval.min(
                due.saturating_duration_since(Instant::now())
                    .max(POLL_INTERVAL / 4),
            ),
            None => interval,
        }
    }

    /// The objects of every file; a later file's object replaces an earlier one of the same key,
    /// and the Secrets of the overlay directory replace both.
    pub fn objects(&self) -> &Objects {
        &self.merged
    }

    /// What keeps the objects on disk from being the ones in force, sorted: `(path, reason)`
    /// for each file whose last read could not be used and for a directory that cannot be
    /// listed (the last good objects stay in force meanwhile).
    pub fn problems(&self) -> Vec<(PathBuf, String)> {
        let mut out: Vec<(PathBuf, String)> = self
            .unlisted
            .iter()
            .cloned()
            .chain(
                self.files
                    .iter()
                    .filter_map(|(path, f)| Some((path.clone(), f.problem.clone()?))),
            )
            .collect();
        if let Some(overlay) = &self.secrets_from {
            out.extend(overlay.problems());
        }
        out.sort();
        out
    }

    /// [`ManifestDir::problems`] as configuration warnings of kind `File`, named by path.
    pub fn warnings(&self) -> Vec<Warning> {
        self.problems()
            .into_iter()
            .map(|(path, reason)| Warning {
                kind: "File",
                object: ObjectKey::new("", path.display().to_string()),
                reason,
            })
            .collect()
    }
}

/// Whether a text holds anything but blank lines, comments and document markers.
fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        !(line.is_empty() || line.starts_with('#') || line == "---" || line == "...")
    })
}

/// The files under `dir`; an error names the directory that could not be listed.
fn list_files(
    dir: &Path,
    out: &mut BTreeMap<PathBuf, Stamp>,
) -> Result<(), (PathBuf, std::io::Error)> {
    let fail = |err| (dir.to_owned(), err);
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let entry = entry.map_err(fail)?;
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
