//! Static sites: what a StaticSite asks for (a root, an index, a fallback, a Cache-Control),
//! checked when the configuration changes. Serving the files is the data plane's
//! ([`crate::proxy::static_files`]); this part is pure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderValue;

use crate::objects::{ObjectKey, StaticSiteSpec};
use crate::slot::Slot;

/// A StaticSite, checked and ready to serve.
#[derive(Debug)]
pub struct Site {
    pub key: ObjectKey,
    pub root: PathBuf,
    /// The file a directory request gets, when not `index.html` (the default).
    pub index: Option<String>,
    /// The file a request for a missing file gets (single-page apps).
    pub fallback: Option<String>,
    /// Set on successful answers.
    pub cache_control: Option<HeaderValue>,
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
        Ok(Self {
            key,
            root,
            index,
            fallback,
            cache_control,
        })
    }

    /// The site as served under one route. `prefix` is the route's path for a Prefix route (files
    /// are served relative to it, like nginx's `alias`), empty for an Exact route.
    pub fn route(self: &Arc<Self>, prefix: &str) -> StaticRoute {
        StaticRoute {
            site: self.clone(),
            prefix: prefix.trim_end_matches('/').into(),
            files: Slot::default(),
        }
    }
}

/// A site bound to the path of the route that serves it; built when the configuration changes.
#[derive(Debug)]
pub struct StaticRoute {
    pub site: Arc<Site>,
    /// The route's path without its trailing `/` (empty for an Exact route).
    pub prefix: Box<str>,
    /// The data plane's file server for this route, made on first use and kept while the
    /// route is in service.
    pub files: Slot,
}
