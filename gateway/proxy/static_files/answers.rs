//! ServeDir's answers for files served whole, kept per route while the file stays the same: a
//! repeated request costs one `stat` of its path instead of ServeDir's open, stat, header
//! building (an ETag and a date formatted at every request) and close. Like nginx's
//! `open_file_cache`, with every hit checked against the file system: a file replaced (a new
//! deploy renamed over it), changed, removed or swapped for a symlink is noticed at the next
//! request, which then goes through ServeDir again.
//!
//! An answer depends on the request path, its Accept-Encoding (ServeDir picks a precompressed
//! sibling by it) and the files; requests with a Range or a condition always go to ServeDir. A
//! kept answer is also asked of ServeDir again after [`REFILL_AFTER`], so a precompressed sibling
//! added or removed beside an unchanged file is picked up.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, header};

/// How long a kept answer is used before ServeDir is asked again.
pub(super) const REFILL_AFTER: Duration = Duration::from_secs(1);

/// The most answers one route keeps (each holds its file open).
pub(super) const MAX_ANSWERS: usize = 256;

/// The most answers all routes keep together: descriptors are shared with the connections, and
/// a process out of them cannot accept one.
const MAX_KEPT_FILES: usize = 1024;

/// The answers all routes keep.
static KEPT_FILES: AtomicUsize = AtomicUsize::new(0);

/// What identifies a file's contents as served: a file with the same device, inode, size and
/// modification time gets the same answer (ServeDir's ETag is made of the last two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl Identity {
    pub(super) fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
        }
    }

    pub(super) fn size(&self) -> u64 {
        self.size
    }

    fn of_stat(stat: &rustix::fs::Stat) -> Self {
        Self {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size as u64,
            mtime: (stat.st_mtime, stat.st_mtime_nsec as i64),
        }
    }
}

/// One answer ServeDir gave: a 200 with the whole file.
#[derive(Debug)]
pub(super) struct Answer {
    /// The request's Accept-Encoding, as sent.
    accept_encoding: Option<HeaderValue>,
    /// The file ServeDir opened (the one asked for or a precompressed sibling), relative to the
    /// site's root, and what it was then.
    opened: PathBuf,
    identity: Identity,
    pub(super) file: Arc<std::fs::File>,
    pub(super) headers: HeaderMap,
    kept_at: Instant,
}

impl Answer {
    pub(super) fn new(
        accept_encoding: Option<HeaderValue>,
        opened: PathBuf,
        identity: Identity,
        file: Arc<std::fs::File>,
        headers: HeaderMap,
        now: Instant,
    ) -> Self {
        Self {
            accept_encoding,
            opened,
            identity,
            file,
            headers,
            kept_at: now,
        }
    }

    pub(super) fn len(&self) -> u64 {
        self.identity.size
    }
}

/// A route's kept answers, by request path, then Accept-Encoding. Dropped with the route (a
/// configuration change), closing its files.
#[derive(Debug, Default)]
pub(super) struct Answers {
    kept: Mutex<Kept>,
}

impl Drop for Answers {
    fn drop(&mut self) {
        let count = self
            .kept
            .get_mut()
            .map_or_else(|e| e.into_inner().count, |k| k.count);
        KEPT_FILES.fetch_sub(count, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Kept {
    by_path: HashMap<Box<str>, Vec<Arc<Answer>>, foldhash::fast::RandomState>,
    count: usize,
}

/// Whether ServeDir's answer to this request depends only on its path, its Accept-Encoding and
/// the files: a GET without a Range or a condition.
pub(super) fn keepable(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && !(headers.contains_key(header::RANGE)
            || headers.contains_key(header::IF_MATCH)
            || headers.contains_key(header::IF_NONE_MATCH)
            || headers.contains_key(header::IF_MODIFIED_SINCE)
            || headers.contains_key(header::IF_UNMODIFIED_SINCE))
}

// === impl Answers ===

impl Answers {
    /// The kept answer for `path` and `accept_encoding`, if its file is still the one it was
    /// (checked by a `stat` beneath `root`, following symlinks as the open did). An answer whose
    /// file changed or went is dropped, closing the file.
    pub(super) fn find(
        &self,
        path: &str,
        accept_encoding: Option<&HeaderValue>,
        root: &OwnedFd,
        now: Instant,
    ) -> Option<Arc<Answer>> {
        let answer = {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let variants = kept.by_path.get(path)?;
            variants
                .iter()
                .find(|a| a.accept_encoding.as_ref() == accept_encoding)?
                .clone()
        };
        let fresh = now.saturating_duration_since(answer.kept_at) < REFILL_AFTER;
        let unchanged = || {
            rustix::fs::statat(root, &answer.opened, rustix::fs::AtFlags::empty())
                .is_ok_and(|stat| Identity::of_stat(&stat) == answer.identity)
        };
        if fresh && unchanged() {
            return Some(answer);
        }
        self.forget(path, &answer);
        None
    }

    /// Keeps `answer` for `path` in place of the one for the same Accept-Encoding. When the route
    /// keeps [`MAX_ANSWERS`] already, the ones due for a refill go first; if none are, the new
    /// one is not kept.
    pub(super) fn keep(&self, path: &str, answer: Answer) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let kept = &mut *kept;
        let full =
            |count| count >= MAX_ANSWERS || KEPT_FILES.load(Ordering::Relaxed) >= MAX_KEPT_FILES;
        if full(kept.count) {
            let now = answer.kept_at;
            kept.by_path.retain(|_, variants| {
                variants.retain(|a| now.saturating_duration_since(a.kept_at) < REFILL_AFTER);
                !variants.is_empty()
            });
            let count = kept.by_path.values().map(Vec::len).sum();
            KEPT_FILES.fetch_sub(kept.count - count, Ordering::Relaxed);
            kept.count = count;
            if full(kept.count) {
                return;
            }
        }
        let variants = match kept.by_path.get_mut(path) {
            Some(variants) => variants,
            None => kept.by_path.entry(path.into()).or_default(),
        };
        match variants
            .iter_mut()
            .find(|a| a.accept_encoding == answer.accept_encoding)
        {
            Some(old) => *old = Arc::new(answer),
            None => {
                variants.push(Arc::new(answer));
                kept.count += 1;
                KEPT_FILES.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn forget(&self, path: &str, answer: &Arc<Answer>) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let kept = &mut *kept;
        let Some(variants) = kept.by_path.get_mut(path) else {
            return;
        };
        let before = variants.len();
        variants.retain(|a| !Arc::ptr_eq(a, answer));
        let removed = before - variants.len();
        kept.count -= removed;
        KEPT_FILES.fetch_sub(removed, Ordering::Relaxed);
        if variants.is_empty() {
            kept.by_path.remove(path);
        }
    }

    #[cfg(test)]
    pub(super) fn kept_by_all_routes() -> usize {
        KEPT_FILES.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.kept.lock().unwrap().count
    }
}
