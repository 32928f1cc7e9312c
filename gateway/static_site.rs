//! Static sites: files served by Gatehouse itself (tower-http `ServeDir`), confined to a root.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::services::fs::{Backend as FsBackend, DefaultServeDirFallback, TokioBackend};

use crate::objects::{ObjectKey, StaticSiteSpec};
use crate::proxy::BoxBody;

/// A StaticSite, ready to serve.
#[derive(Debug)]
pub struct Site {
    pub key: ObjectKey,
    pub root: PathBuf,
    index: Option<String>,
    fallback: Option<String>,
    cache_control: Option<HeaderValue>,
    backend: ConfinedBackend,
}

// === impl Site ===

impl Site {
    /// Builds a site from its spec; `base` resolves a relative root (the manifests directory).
    /// Errors name the field that is unusable.
    pub fn new(key: ObjectKey, spec: &StaticSiteSpec, base: Option<&Path>) -> Result<Self, String> {
        if spec.root.is_empty() {
            return Err("spec.root is empty".into());
        }
        let root = match base {
            Some(base) if Path::new(&spec.root).is_relative() => base.join(&spec.root),
            _ => PathBuf::from(&spec.root),
        };
        let file_name = |field: &str, value: &Option<String>| -> Result<Option<String>, String> {
            match value.as_deref() {
                None | Some("") => Ok(None),
                Some(v) if v.split(['/', '\\']).any(|part| part == "..") => Err(format!(
                    "spec.{field} {v:?} must stay inside the site's root"
                )),
                Some(v) => Ok(Some(v.trim_start_matches('/').to_owned())),
            }
        };
        let index = file_name("index", &spec.index)?.filter(|i| i != "index.html");
        let fallback = file_name("fallback", &spec.fallback)?;
        let cache_control = match spec.cache_control.as_deref() {
            None | Some("") => None,
            Some(v) => Some(
                HeaderValue::from_str(v)
                    .map_err(|_| format!("spec.cacheControl {v:?} is not a valid header value"))?,
            ),
        };
        let backend = ConfinedBackend {
            root: root.clone(),
            canonical_root: Arc::default(),
        };
        Ok(Self {
            key,
            root,
            index,
            fallback,
            cache_control,
            backend,
        })
    }

    /// The site as served under one route. `prefix` is the route's path for a Prefix route (files
    /// are served relative to it, like nginx's `alias`), empty for an Exact route.
    pub fn route(self: &Arc<Self>, prefix: &str) -> StaticRoute {
        let prefix = prefix.trim_end_matches('/');
        let dir = ServeDir::with_backend(&self.root, self.backend.clone())
            .precompressed_br()
            .precompressed_gzip()
            .redirect_path_prefix(prefix);
        StaticRoute {
            site: self.clone(),
            prefix: prefix.into(),
            dir,
        }
    }
}

/// A site bound to the path of the route that serves it; built when the configuration changes.
#[derive(Debug)]
pub struct StaticRoute {
    pub site: Arc<Site>,
    prefix: Box<str>,
    dir: ServeDir<DefaultServeDirFallback, ConfinedBackend>,
}

// === impl StaticRoute ===

impl StaticRoute {
    /// Serves a GET or HEAD request; other methods get 405.
    pub async fn serve<B>(&self, req: Request<B>) -> Response<BoxBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = crate::proxy::short_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let site = &*self.site;
        let (parts, _) = req.into_parts();
        let path = parts.uri.path();
        // The route's own path is the site's root directory: like any directory asked for
        // without its slash, send the client to `PREFIX/`, else the relative links of the index
        // page would resolve one level up, outside the route.
        if !self.prefix.is_empty() && path == &*self.prefix {
            let location = match parts.uri.query() {
                Some(query) => format!("{path}/?{query}"),
                None => format!("{path}/"),
            };
            if let Ok(location) = HeaderValue::from_str(&location) {
                let mut resp = crate::proxy::short_response(StatusCode::TEMPORARY_REDIRECT, "");
                resp.headers_mut().insert(header::LOCATION, location);
                return resp;
            }
        }
        let relative = path.strip_prefix(&*self.prefix).unwrap_or(path);
        let mut relative = if relative.starts_with('/') {
            relative.to_owned()
        } else {
            format!("/{relative}")
        };
        if let (Some(index), true) = (&site.index, relative.ends_with('/')) {
            relative.push_str(index);
        }
        let mut resp = self.serve_path(&parts, &relative).await;
        if resp.status() == StatusCode::NOT_FOUND
            && let Some(fallback) = &site.fallback
        {
            resp = self.serve_path(&parts, &format!("/{fallback}")).await;
        }
        let cacheable = resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED;
        if let (Some(value), true) = (&site.cache_control, cacheable) {
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, value.clone());
        }
        resp
    }

    async fn serve_path(&self, parts: &http::request::Parts, path: &str) -> Response<BoxBody> {
        let Ok(uri) = Uri::builder().path_and_query(path).build() else {
            return crate::proxy::short_response(StatusCode::BAD_REQUEST, "bad path\n");
        };
        let mut req = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = parts.headers.clone();
        match self.dir.clone().oneshot(req).await {
            Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
            Err(never) => match never {},
        }
    }
}

/// Opens files like tokio does, but only when their real path (after following symlinks) is
/// inside the site's root. ServeDir already rejects `..` and other escapes in the URL itself.
#[derive(Clone, Debug)]
struct ConfinedBackend {
    root: PathBuf,
    /// Resolved on first use: the root may be mounted after the site is configured.
    canonical_root: Arc<OnceLock<PathBuf>>,
}

// === impl ConfinedBackend ===

impl ConfinedBackend {
    async fn confine(self, path: PathBuf) -> io::Result<PathBuf> {
        let root = match self.canonical_root.get() {
            Some(root) => root.clone(),
            None => {
                let root = tokio::fs::canonicalize(&self.root).await?;
                self.canonical_root.get_or_init(|| root).clone()
            }
        };
        let real = tokio::fs::canonicalize(&path).await?;
        if real.starts_with(&root) {
            Ok(real)
        } else {
            tracing::warn!(path = %path.display(), "static file resolves outside its site's root; refused");
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "outside the site's root",
            ))
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

impl FsBackend for ConfinedBackend {
    type File = <TokioBackend as FsBackend>::File;
    type Metadata = <TokioBackend as FsBackend>::Metadata;
    type OpenFuture = BoxFuture<Self::File>;
    type MetadataFuture = BoxFuture<Self::Metadata>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        let this = self.clone();
        Box::pin(async move { TokioBackend.open(this.confine(path).await?).await })
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        let this = self.clone();
        Box::pin(async move { TokioBackend.metadata(this.confine(path).await?).await })
    }
}
