//! The static-file phase: a [`StaticRoute`]'s files served by tower-http's `ServeDir`, confined
//! to the site's root by the kernel (`openat2`), read in place from the page cache.

use std::cell::RefCell;
use std::future::{Ready, ready};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::services::fs::{Backend as FsBackend, DefaultServeDirFallback, File as FsFile};

use crate::body::BoxBody;
use crate::static_site::StaticRoute;

type Files = ServeDir<DefaultServeDirFallback, ConfinedBackend>;

/// The route's file server, made the first time the route serves and kept in its slot.
fn files(route: &StaticRoute) -> &Files {
    if let Some(files) = route.files.get::<Files>() {
        return files;
    }
    let site = &route.site;
    let files = ServeDir::with_backend(&site.root, ConfinedBackend::new(&site.root))
        .precompressed_br()
        .precompressed_gzip()
        .redirect_path_prefix(&*route.prefix);
    route.files.set(files);
    route.files.get::<Files>().expect("set just now")
}

/// Serves a GET or HEAD request; other methods get 405.
pub async fn serve<B>(route: &StaticRoute, req: Request<B>) -> Response<BoxBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp =
            crate::body::short_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let site = &*route.site;
    let (mut parts, _) = req.into_parts();
    let path = parts.uri.path();
    // The route's own path is the site's root directory: like any directory asked for
    // without its slash, send the client to `PREFIX/`, else the relative links of the index
    // page would resolve one level up, outside the route.
    if !route.prefix.is_empty() && path == &*route.prefix {
        let location = match parts.uri.query() {
            Some(query) => format!("{path}/?{query}"),
            None => format!("{path}/"),
        };
        if let Ok(location) = HeaderValue::from_str(&location) {
            let mut resp = crate::body::short_response(StatusCode::TEMPORARY_REDIRECT, "");
            resp.headers_mut().insert(header::LOCATION, location);
            return resp;
        }
    }
    let relative = path.strip_prefix(&*route.prefix).unwrap_or(path);
    let mut relative = if relative.starts_with('/') {
        relative.to_owned()
    } else {
        format!("/{relative}")
    };
    if let (Some(index), true) = (&site.index, relative.ends_with('/')) {
        relative.push_str(index);
    }
    // The headers go to ServeDir as they are; a copy is kept only for a fallback page.
    let headers = match &site.fallback {
        Some(_) => parts.headers.clone(),
        None => std::mem::take(&mut parts.headers),
    };
    let mut resp = serve_path(route, &parts.method, headers, &relative).await;
    if resp.status() == StatusCode::NOT_FOUND
        && let Some(fallback) = &site.fallback
    {
        let headers = std::mem::take(&mut parts.headers);
        resp = serve_path(route, &parts.method, headers, &format!("/{fallback}")).await;
    }
    let cacheable = resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED;
    if let (Some(value), true) = (&site.cache_control, cacheable) {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, value.clone());
    }
    resp
}

async fn serve_path(
    route: &StaticRoute,
    method: &Method,
    headers: http::HeaderMap,
    path: &str,
) -> Response<BoxBody> {
    let Ok(uri) = Uri::builder().path_and_query(path).build() else {
        return crate::body::short_response(StatusCode::BAD_REQUEST, "bad path\n");
    };
    let mut req = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let resp = match files(route).clone().oneshot(req).await {
        Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
        Err(never) => match never {},
    };
    // A file ServeDir asked about but did not open (HEAD, a precompressed sibling) is closed now.
    OPENED.take();
    resp
}

/// Opens the files ServeDir asks for beneath the site's root, never outside it: `openat2` with
/// `RESOLVE_BENEATH` makes the kernel refuse any resolution that leaves the root (`..`, absolute
/// or escaping symlinks), in one race-free step. ServeDir already rejects `..` and other escapes
/// in the URL itself; this also covers symlinks.
///
/// File I/O is done in place, not on tokio's blocking pool: like nginx without `aio`, a read from
/// the page cache costs microseconds, while a hop to the pool and back costs more than the read.
///
/// ServeDir asks for a path's metadata (is it a directory?) and then opens it: the metadata call
/// opens the file as nginx does (read-only, non-blocking, so a FIFO cannot hold the worker) and
/// leaves it in [`OPENED`] for the open that follows, so a file costs one open and one stat.
#[derive(Clone, Debug)]
struct ConfinedBackend {
    /// ServeDir's base path (the root as ServeDir spells it), stripped from the paths it asks for.
    base: Arc<PathBuf>,
    /// The root directory, opened on first use (a volume may be mounted after the site is
    /// configured) and kept: files are resolved beneath it at every request.
    root: Arc<OnceLock<OwnedFd>>,
}

// === impl ConfinedBackend ===

impl ConfinedBackend {
    fn new(root: &Path) -> Self {
        // ServeDir joins the request path onto `./ROOT` (an absolute root replaces the `.`).
        let mut base = PathBuf::from(".");
        base.push(root);
        Self {
            base: Arc::new(base),
            root: Arc::default(),
        }
    }

    fn root_fd(&self) -> io::Result<&OwnedFd> {
        if let Some(fd) = self.root.get() {
            return Ok(fd);
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(self.base.as_path(), flags, Mode::empty())?;
        Ok(self.root.get_or_init(|| fd))
    }

    /// Opens `path` (ServeDir's base joined with the request path) beneath the root.
    fn open_beneath(&self, path: &Path, flags: OFlags) -> io::Result<std::fs::File> {
        let relative = path
            .strip_prefix(self.base.as_path())
            .map_err(|_| outside(path))?;
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(
            self.root_fd()?,
            relative,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        ) {
            Ok(fd) => Ok(std::fs::File::from(fd)),
            Err(Errno::XDEV) => Err(outside(path)),
            Err(Errno::NOSYS) => self.open_checked(path, flags),
            Err(err) => Err(err.into()),
        }
    }

    /// For kernels older than 5.6 (no `openat2`): resolve every symlink, then check.
    fn open_checked(&self, path: &Path, flags: OFlags) -> io::Result<std::fs::File> {
        let real = std::fs::canonicalize(path)?;
        if !real.starts_with(std::fs::canonicalize(self.base.as_path())?) {
            return Err(outside(path));
        }
        let fd = rustix::fs::open(&real, flags | OFlags::CLOEXEC, Mode::empty())?;
        Ok(std::fs::File::from(fd))
    }
}

fn outside(path: &Path) -> io::Error {
    tracing::warn!(path = %path.display(), "static file resolves outside its site's root; refused");
    io::Error::new(io::ErrorKind::NotFound, "outside the site's root")
}

thread_local! {
    /// The regular file the last [`ConfinedBackend::metadata`] on this thread opened, with its
    /// metadata, for the [`ConfinedBackend::open`] of the same path that follows at once (ServeDir
    /// does not yield between the two: both futures are ready). Emptied after every request
    /// ([`serve_path`]), so a file is never served from an earlier request's open.
    static OPENED: RefCell<Option<(PathBuf, PageCacheFile)>> = const { RefCell::new(None) };
}

impl ConfinedBackend {
    /// Opens `path` for reading, as a regular file (anything else is not found).
    fn open_file(&self, path: &Path) -> io::Result<PageCacheFile> {
        let file = self.open_beneath(path, OFlags::RDONLY | OFlags::NONBLOCK)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a regular file",
            ));
        }
        Ok(PageCacheFile::new(file, metadata))
    }
}

impl FsBackend for ConfinedBackend {
    type File = PageCacheFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = Ready<io::Result<PageCacheFile>>;
    type MetadataFuture = Ready<io::Result<std::fs::Metadata>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        let opened = OPENED.with_borrow_mut(|slot| match slot {
            Some((opened, _)) if *opened == path => slot.take(),
            _ => None,
        });
        ready(match opened {
            Some((_, file)) => Ok(file),
            None => self.open_file(&path),
        })
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        let opened = self.open_beneath(&path, OFlags::RDONLY | OFlags::NONBLOCK);
        let file = match opened {
            Ok(file) => file,
            // Not readable (a directory may be searchable only): its metadata is still wanted.
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                return ready(
                    self.open_beneath(&path, OFlags::PATH)
                        .and_then(|f| f.metadata()),
                );
            }
            Err(err) => return ready(Err(err)),
        };
        ready(file.metadata().inspect(|metadata| {
            if metadata.is_file() {
                let file = PageCacheFile::new(file, metadata.clone());
                OPENED.set(Some((path, file)));
            }
        }))
    }
}

/// A file read in place (see [`ConfinedBackend`]).
#[derive(Debug)]
pub struct PageCacheFile {
    file: std::fs::File,
    /// Taken when the file was opened: ServeDir's Content-Length and validators come from it.
    metadata: std::fs::Metadata,
    /// Bytes left from the current position: a read prepares only this much of the (64 KiB)
    /// buffer, not all of it, since safe code must zero a buffer before reading into it.
    remaining: u64,
}

impl PageCacheFile {
    fn new(file: std::fs::File, metadata: std::fs::Metadata) -> Self {
        let remaining = metadata.len();
        Self {
            file,
            metadata,
            remaining,
        }
    }
}

impl AsyncRead for PageCacheFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // The response declared the length the file had when opened: past it is the end (a
        // file that grew since would overrun its Content-Length), and no read is needed to
        // find that out.
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        let n = std::io::Read::read(&mut self.file, buf.initialize_unfilled_to(want))?;
        buf.advance(n);
        // A file that shrank ends early (n = 0): the body is then short of its length, and the
        // connection says so by closing.
        self.remaining = if n == 0 { 0 } else { self.remaining - n as u64 };
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for PageCacheFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        let at = std::io::Seek::seek(&mut self.file, position)?;
        self.remaining = self.metadata.len().saturating_sub(at);
        Ok(())
    }

    fn poll_complete(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(std::io::Seek::stream_position(&mut self.file))
    }
}

impl FsFile for PageCacheFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> = Ready<io::Result<std::fs::Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        ready(Ok(self.metadata.clone()))
    }
}

#[cfg(test)]
mod tests;
