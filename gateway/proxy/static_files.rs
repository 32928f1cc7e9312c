//! The static-file phase: a [`StaticRoute`]'s files served by tower-http's `ServeDir`, confined
//! to the site's root by the kernel (`openat2`). ServeDir decides the answer (conditional
//! requests, ranges, precompressed siblings, types); the file's bytes are then sent by
//! [`FileBody`]: with `sendfile` on HTTP/1.x over a plain socket, else read in place from the
//! page cache. ServeDir's answers for whole files are kept while the file is unchanged
//! ([`answers`]).

use std::cell::RefCell;
use std::future::{Ready, ready};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::services::fs::{Backend as FsBackend, DefaultServeDirFallback, File as FsFile};

use super::client_io::{FileRegions, MAX_FILE_REGION, file_shrank};
use crate::body::{BoxBody, BoxError};
use crate::static_site::StaticRoute;
use answers::{Answer, Answers, Identity};

mod answers;

type Files = ServeDir<DefaultServeDirFallback, ConfinedBackend>;

/// A route's file server: ServeDir over the confined backend, and the answers it gave for whole
/// files, kept while the file is unchanged.
struct FileServer {
    files: Files,
    backend: ConfinedBackend,
    answers: Answers,
}

/// The buffer ServeDir allocates for its own body of every file response. That body is almost
/// never read (a [`FileBody`] sends the bytes), so it is kept in one of the allocator's cached
/// sizes: ServeDir's default, 64 KiB, costs a large allocation and its release per response.
const SERVE_DIR_CHUNK: usize = 4096;

/// The route's file server, made the first time the route serves and kept in its slot.
fn file_server(route: &StaticRoute) -> &FileServer {
    if let Some(server) = route.files.get::<FileServer>() {
        return server;
    }
    let site = &route.site;
    // ServeDir's own base is left empty: the backend resolves its paths beneath the root
    // directory's descriptor, and ServeDir formats each path it opens for a possible warning
    // (tower-http's `tracing` feature, which kube-client turns on): a short path costs less.
    let backend = ConfinedBackend::new(&site.root);
    let files = ServeDir::with_backend("", backend.clone())
        .with_buf_chunk_size(SERVE_DIR_CHUNK)
        .precompressed_br()
        .precompressed_gzip()
        .redirect_path_prefix(&*route.prefix);
    route.files.set(FileServer {
        files,
        backend,
        answers: Answers::default(),
    });
    route.files.get::<FileServer>().expect("set just now")
}

/// Serves a GET or HEAD request; other methods get 405. `files`: the connection's socket takes
/// file regions (`sendfile`).
// Not an `async fn`: see `proxy::handle`.
#[allow(clippy::manual_async_fn)]
pub fn serve<B>(
    route: &StaticRoute,
    req: Request<B>,
    files: Option<&Arc<FileRegions>>,
) -> impl Future<Output = Response<BoxBody>> {
    async move {
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
        let mut resp = serve_path(route, &parts.method, headers, &relative, files).await;
        if resp.status() == StatusCode::NOT_FOUND
            && let Some(fallback) = &site.fallback
        {
            let headers = std::mem::take(&mut parts.headers);
            let fallback = format!("/{fallback}");
            resp = serve_path(route, &parts.method, headers, &fallback, files).await;
        }
        let cacheable = resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED;
        if let (Some(value), true) = (&site.cache_control, cacheable) {
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, value.clone());
        }
        resp
    }
}

async fn serve_path(
    route: &StaticRoute,
    method: &Method,
    headers: http::HeaderMap,
    path: &str,
    files: Option<&Arc<FileRegions>>,
) -> Response<BoxBody> {
    let server = file_server(route);
    let keepable = answers::keepable(method, &headers);
    let now = Instant::now();
    if keepable
        && let Ok(root) = server.backend.root_fd()
        && let Some(answer) =
            server
                .answers
                .find(path, headers.get(header::ACCEPT_ENCODING), root, now)
    {
        let mut resp = Response::new(file_body(answer.file.clone(), 0, answer.len(), files));
        *resp.headers_mut() = answer.headers.clone();
        return resp;
    }
    let Ok(uri) = Uri::builder().path_and_query(path).build() else {
        return crate::body::short_response(StatusCode::BAD_REQUEST, "bad path\n");
    };
    let accept_encoding = match keepable {
        true => headers.get(header::ACCEPT_ENCODING).cloned(),
        false => None,
    };
    let mut req = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let resp = match server.files.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    // A file ServeDir asked about but did not open (HEAD, a precompressed sibling) is closed now.
    OPENED.take();
    let served = SERVED.take();
    // The file's bytes, as ServeDir framed them, go out by FileBody; ServeDir's own body (read
    // through AsyncRead) is dropped unread.
    if let (Some(served), true) = (served, method == Method::GET)
        && let Some((offset, len)) = body_range(resp.status(), resp.headers())
    {
        let (parts, _) = resp.into_parts();
        if keepable && parts.status == StatusCode::OK && len == served.identity.size() {
            let answer = Answer::new(
                accept_encoding,
                served.path,
                served.identity,
                served.file.clone(),
                parts.headers.clone(),
                now,
            );
            server.answers.keep(path, answer);
        }
        let body = file_body(served.file, offset, len, files);
        return Response::from_parts(parts, body);
    }
    resp.map(|b| b.map_err(Into::into).boxed_unsync())
}

fn file_body(
    file: Arc<std::fs::File>,
    offset: u64,
    len: u64,
    files: Option<&Arc<FileRegions>>,
) -> BoxBody {
    FileBody {
        file,
        offset,
        remaining: len,
        regions: files.cloned(),
    }
    .boxed_unsync()
}

/// Where in the file the body of ServeDir's answer lies: all of it for 200, the range of
/// Content-Range for 206; `None` for answers without the file's bytes.
fn body_range(status: StatusCode, headers: &HeaderMap) -> Option<(u64, u64)> {
    let len: u64 = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    match status {
        StatusCode::OK => Some((0, len)),
        StatusCode::PARTIAL_CONTENT => {
            // `bytes START-END/SIZE`, as ServeDir writes it (single ranges only).
            let range = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
            let (start, _) = range.strip_prefix("bytes ")?.split_once('-')?;
            Some((start.parse().ok()?, len))
        }
        _ => None,
    }
}

/// The bytes of a file served, from `offset` on, as many as the response declared (the length
/// the file had when opened: a file that grew since would overrun it; one that shrank ends the
/// body with an error, and the connection says so by closing).
///
/// Given the connection's [`FileRegions`], a frame is a placeholder the socket replaces by the
/// file's bytes (`sendfile`, no copy through user space); otherwise the bytes are read in place
/// with `pread`, into a buffer of the frame's size, never zeroed first.
struct FileBody {
    file: Arc<std::fs::File>,
    offset: u64,
    remaining: u64,
    regions: Option<Arc<FileRegions>>,
}

/// The largest frame read into memory (TLS, HTTP/2): ServeDir's chunk size.
const READ_CHUNK: usize = 64 * 1024;

impl Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let data = match &this.regions {
            Some(regions) => {
                let len = this.remaining.min(MAX_FILE_REGION as u64) as usize;
                regions.push(this.file.clone(), this.offset, len)
            }
            None => {
                let len = this.remaining.min(READ_CHUNK as u64) as usize;
                let mut buf = Vec::with_capacity(len);
                let read = rustix::io::pread(
                    &*this.file,
                    rustix::buffer::spare_capacity(&mut buf),
                    this.offset,
                );
                match read {
                    Ok(0) => return Poll::Ready(Some(Err(file_shrank().into()))),
                    Ok(_) => Bytes::from(buf),
                    Err(err) => return Poll::Ready(Some(Err(io::Error::from(err).into()))),
                }
            }
        };
        this.offset += data.len() as u64;
        this.remaining -= data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
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
    /// The site's root directory.
    root: Arc<PathBuf>,
    /// The root directory, opened on first use (a volume may be mounted after the site is
    /// configured) and kept: files are resolved beneath it at every request.
    root_fd: Arc<OnceLock<OwnedFd>>,
    /// Without `openat2`: the root with every symlink resolved, likewise taken once.
    root_real: Arc<OnceLock<PathBuf>>,
}

/// ServeDir's base for an empty root (`./`): the start of every path it asks the backend for.
const BASE: &str = "./";

// === impl ConfinedBackend ===

impl ConfinedBackend {
    fn new(root: &Path) -> Self {
        Self {
            root: Arc::new(root.to_owned()),
            root_fd: Arc::default(),
            root_real: Arc::default(),
        }
    }

    fn root_fd(&self) -> io::Result<&OwnedFd> {
        once(&self.root_fd, || {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            Ok(rustix::fs::open(self.root.as_path(), flags, Mode::empty())?)
        })
    }

    /// Opens `path` (ServeDir's base joined with the request path) beneath the root.
    fn open_beneath(&self, path: &Path, flags: OFlags) -> io::Result<std::fs::File> {
        let relative = relative(path).ok_or_else(|| self.outside(path))?;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(
            self.root_fd()?,
            relative,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        ) {
            Ok(fd) => Ok(std::fs::File::from(fd)),
            Err(Errno::XDEV) => Err(self.outside(relative)),
            Err(Errno::NOSYS) => self.open_checked(relative, flags),
            Err(err) => Err(err.into()),
        }
    }

    /// For kernels older than 5.6 (no `openat2`): resolve every symlink, then check.
    fn open_checked(&self, relative: &Path, flags: OFlags) -> io::Result<std::fs::File> {
        use std::os::unix::ffi::OsStrExt;
        let root = once(&self.root_real, || {
            std::fs::canonicalize(self.root.as_path())
        })?;
        let real = std::fs::canonicalize(root.join(relative))?;
        // Both paths are canonical: a byte comparison at a separator is enough.
        let (real_bytes, root_bytes) = (real.as_os_str().as_bytes(), root.as_os_str().as_bytes());
        let beneath = real_bytes
            .strip_prefix(root_bytes)
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'/' || root_bytes.ends_with(b"/"));
        if !beneath {
            return Err(self.outside(relative));
        }
        let fd = rustix::fs::open(&real, flags | OFlags::CLOEXEC, Mode::empty())?;
        Ok(std::fs::File::from(fd))
    }

    /// `path`: beneath the root (or, when not one of ServeDir's, as ServeDir gave it).
    fn outside(&self, path: &Path) -> io::Error {
        let path = self.root.join(path);
        tracing::warn!(path = %path.display(), "static file resolves outside its site's root; refused");
        io::Error::new(io::ErrorKind::NotFound, "outside the site's root")
    }
}

/// The value in `lock`, made by `init` the first time one is wanted; a failed `init` is tried
/// again next time (a volume may be mounted after the site is configured).
fn once<T>(lock: &OnceLock<T>, init: impl FnOnce() -> io::Result<T>) -> io::Result<&T> {
    if let Some(value) = lock.get() {
        return Ok(value);
    }
    let value = init()?;
    Ok(lock.get_or_init(|| value))
}

/// `path` without ServeDir's base ([`BASE`]), compared as bytes: ServeDir joins only plain
/// components onto the base, so no component-wise comparison is needed (it cost more than the
/// open). `None`: not a path ServeDir made.
fn relative(path: &Path) -> Option<&Path> {
    use std::os::unix::ffi::OsStrExt;
    let rest = path.as_os_str().as_bytes();
    // The base itself, without its slash, is the root too.
    let rest = rest
        .strip_prefix(BASE.as_bytes())
        .or_else(|| (rest == b".").then_some(&[][..]))?;
    let start = rest.iter().position(|&b| b != b'/').unwrap_or(rest.len());
    let rest = &rest[start..];
    Some(if rest.is_empty() {
        Path::new(".")
    } else {
        Path::new(std::ffi::OsStr::from_bytes(rest))
    })
}

thread_local! {
    /// The regular file the last [`ConfinedBackend::metadata`] on this thread opened, with its
    /// metadata, for the [`ConfinedBackend::open`] of the same path that follows at once (ServeDir
    /// does not yield between the two: both futures are ready). Emptied after every request
    /// ([`serve_path`]), so a file is never served from an earlier request's open.
    static OPENED: RefCell<Option<(PathBuf, PageCacheFile)>> = const { RefCell::new(None) };
    /// The file ServeDir opened to serve (the last [`ConfinedBackend::open`]): [`serve_path`]
    /// sends its bytes with a [`FileBody`]. Emptied after every request, like [`OPENED`].
    static SERVED: RefCell<Option<Served>> = const { RefCell::new(None) };
}

/// A file ServeDir opened to serve.
struct Served {
    file: Arc<std::fs::File>,
    /// Its path relative to the site's root.
    path: PathBuf,
    identity: Identity,
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
            Some((opened, _)) if opened.as_os_str() == path.as_os_str() => slot.take(),
            _ => None,
        });
        let file = match opened {
            Some((_, file)) => Ok(file),
            None => self.open_file(&path),
        };
        if let Ok(file) = &file
            && let Some(relative) = relative(&path)
        {
            SERVED.set(Some(Served {
                file: file.file.clone(),
                path: relative.to_owned(),
                identity: Identity::of(&file.metadata),
            }));
        }
        ready(file)
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

/// A file as ServeDir sees it, read in place (see [`ConfinedBackend`]). Its bytes normally go
/// out through a [`FileBody`] instead; ServeDir's own body reads it only where [`serve_path`]
/// finds no byte range to replace that body with.
#[derive(Debug)]
pub struct PageCacheFile {
    /// Shared with the [`FileBody`] that sends it.
    file: Arc<std::fs::File>,
    /// Taken when the file was opened: ServeDir's Content-Length and validators come from it.
    metadata: std::fs::Metadata,
    /// Bytes left from the current position: a read prepares only this much of the buffer, not
    /// all of it, since safe code must zero a buffer before reading into it.
    remaining: u64,
}

impl PageCacheFile {
    fn new(file: std::fs::File, metadata: std::fs::Metadata) -> Self {
        let remaining = metadata.len();
        Self {
            file: Arc::new(file),
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
        let n = std::io::Read::read(&mut &*self.file, buf.initialize_unfilled_to(want))?;
        buf.advance(n);
        // A file that shrank ends early (n = 0): the body is then short of its length, and the
        // connection says so by closing.
        self.remaining = if n == 0 { 0 } else { self.remaining - n as u64 };
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for PageCacheFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        let at = std::io::Seek::seek(&mut &*self.file, position)?;
        self.remaining = self.metadata.len().saturating_sub(at);
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(std::io::Seek::stream_position(&mut &*self.file))
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
