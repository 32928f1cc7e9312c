//! The static-file phase: a [`StaticRoute`]'s files served by tower-http's `ServeDir`, confined
//! to the site's root by the kernel (`openat2`), read in place from the page cache.

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
    match files(route).clone().oneshot(req).await {
        Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
        Err(never) => match never {},
    }
}

/// Opens the files ServeDir asks for beneath the site's root, never outside it: `openat2` with
/// `RESOLVE_BENEATH` makes the kernel refuse any resolution that leaves the root (`..`, absolute
/// or escaping symlinks), in one race-free step. ServeDir already rejects `..` and other escapes
/// in the URL itself; this also covers symlinks.
///
/// File I/O is done in place, not on tokio's blocking pool: like nginx without `aio`, a read from
/// the page cache costs microseconds, while a hop to the pool and back costs more than the read.
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

impl FsBackend for ConfinedBackend {
    type File = PageCacheFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = Ready<io::Result<PageCacheFile>>;
    type MetadataFuture = Ready<io::Result<std::fs::Metadata>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        ready(
            self.open_beneath(&path, OFlags::RDONLY)
                .and_then(PageCacheFile::new),
        )
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        ready(
            self.open_beneath(&path, OFlags::PATH)
                .and_then(|f| f.metadata()),
        )
    }
}

/// A file read in place (see [`ConfinedBackend`]).
#[derive(Debug)]
pub struct PageCacheFile {
    file: std::fs::File,
    /// Bytes left from the current position: a read prepares only this much of the (64 KiB)
    /// buffer, not all of it, since safe code must zero a buffer before reading into it.
    remaining: u64,
}

impl PageCacheFile {
    fn new(file: std::fs::File) -> io::Result<Self> {
        let remaining = file.metadata()?.len();
        Ok(Self { file, remaining })
    }
}

impl AsyncRead for PageCacheFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // At least one byte, so a file that grew since it was opened still reads to its end.
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .clamp(1, buf.remaining().max(1));
        let n = std::io::Read::read(
            &mut self.file,
            buf.initialize_unfilled_to(want.min(buf.remaining())),
        )?;
        buf.advance(n);
        self.remaining = self.remaining.saturating_sub(n as u64);
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for PageCacheFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        let at = std::io::Seek::seek(&mut self.file, position)?;
        self.remaining = self.file.metadata()?.len().saturating_sub(at);
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
        ready(self.file.metadata())
    }
}
