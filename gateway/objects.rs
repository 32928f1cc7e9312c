//! The object store: every Kubernetes object Gatehouse reads, whichever source it came from.
//!
//! Sources (the manifest directory, the Kubernetes API) fill an [`Objects`]; [`crate::translate`]
//! reads it. Values are `Arc`ed so a source can rebuild the store cheaply on every change.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of Gatehouse's own kinds and annotations.
pub const GROUP: &str = "gatehouse.dev";

/// `namespace/name` of a namespaced object (namespace empty for cluster-scoped ones).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

// === impl ObjectKey ===

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Key of a Kubernetes object; a missing namespace is `default`, as `kubectl apply` does.
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        Self::new(
            meta.namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// A directory of files served by Gatehouse itself, named by an Ingress backend
/// `resource: {apiGroup: gatehouse.dev, kind: StaticSite, name: …}`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "StaticSite",
    namespaced,
    doc = "A directory of files Gatehouse serves itself. An Ingress backend refers to it with resource {apiGroup: gatehouse.dev, kind: StaticSite, name: ...}.",
    printcolumn = r#"{"name":"Root", "type":"string", "jsonPath":".spec.root"}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#,
    label("app.kubernetes.io/name", "gatehouse"),
    label("app.kubernetes.io/part-of", "gatehouse")
)]
#[serde(rename_all = "camelCase")]
pub struct StaticSiteSpec {
    /// Directory the gateway reads the files from (absolute, or relative to the manifests
    /// directory when running from manifests).
    #[schemars(length(min = 1))]
    pub root: String,
    /// File served for a directory request. Default `index.html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "index.html"))]
    pub index: Option<String>,
    /// File (relative to `root`) served with status 200 for paths that match no file, for
    /// single-page apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// `Cache-Control` header value set on every response of the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
}

/// Everything translate() reads, keyed by object.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Cluster-scoped: keyed by name only (namespace empty).
    pub ingress_classes: BTreeMap<ObjectKey, Arc<IngressClass>>,
    pub ingresses: BTreeMap<ObjectKey, Arc<Ingress>>,
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    pub secrets: BTreeMap<ObjectKey, Arc<Secret>>,
    pub static_sites: BTreeMap<ObjectKey, Arc<StaticSite>>,
}

/// The kinds of object Gatehouse reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    IngressClass,
    Ingress,
    Service,
    EndpointSlice,
    Secret,
    StaticSite,
}

/// One object of a kind Gatehouse reads.
#[derive(Clone, Debug)]
pub enum Object {
    IngressClass(Arc<IngressClass>),
    Ingress(Arc<Ingress>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    StaticSite(Arc<StaticSite>),
}

// === impl Object ===

impl Object {
    /// `Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{:?} {}", self.kind(), self.key())
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Ingress(_) => Kind::Ingress,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::StaticSite(_) => Kind::StaticSite,
        }
    }

    /// The key it is kept under in [`Objects`] (IngressClasses are cluster-scoped).
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::IngressClass(o) => {
                ObjectKey::new("", o.metadata.name.clone().unwrap_or_default())
            }
            Object::Ingress(o) => ObjectKey::of(&o.metadata),
            Object::Service(o) => ObjectKey::of(&o.metadata),
            Object::EndpointSlice(o) => ObjectKey::of(&o.metadata),
            Object::Secret(o) => ObjectKey::of(&o.metadata),
            Object::StaticSite(o) => ObjectKey::of(&o.metadata),
        }
    }

    /// Whether both are the very same object (the same `Arc`).
    pub fn same(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::IngressClass(a), Object::IngressClass(b)) => Arc::ptr_eq(a, b),
            (Object::Ingress(a), Object::Ingress(b)) => Arc::ptr_eq(a, b),
            (Object::Service(a), Object::Service(b)) => Arc::ptr_eq(a, b),
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => Arc::ptr_eq(a, b),
            (Object::Secret(a), Object::Secret(b)) => Arc::ptr_eq(a, b),
            (Object::StaticSite(a), Object::StaticSite(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

// === impl Objects ===

impl Objects {
    /// Adds (or replaces) one object.
    pub fn insert(&mut self, object: Object) {
        let key = object.key();
        self.insert_as(key, object);
    }

    /// Adds (or replaces) one object whose key is known ([`Object::key`]).
    pub fn insert_as(&mut self, key: ObjectKey, object: Object) {
        match object {
            Object::IngressClass(o) => {
                self.ingress_classes.insert(key, o);
            }
            Object::Ingress(o) => {
                self.ingresses.insert(key, o);
            }
            Object::Service(o) => {
                self.services.insert(key, o);
            }
            Object::EndpointSlice(o) => {
                self.endpoint_slices.insert(key, o);
            }
            Object::Secret(o) => {
                self.secrets.insert(key, o);
            }
            Object::StaticSite(o) => {
                self.static_sites.insert(key, o);
            }
        }
    }

    /// Removes the object of a kind and key, if there is one.
    pub fn remove(&mut self, kind: Kind, key: &ObjectKey) {
        match kind {
            Kind::IngressClass => drop(self.ingress_classes.remove(key)),
            Kind::Ingress => drop(self.ingresses.remove(key)),
            Kind::Service => drop(self.services.remove(key)),
            Kind::EndpointSlice => drop(self.endpoint_slices.remove(key)),
            Kind::Secret => drop(self.secrets.remove(key)),
            Kind::StaticSite => drop(self.static_sites.remove(key)),
        }
    }

    /// Number of objects of all kinds.
    pub fn len(&self) -> usize {
        self.ingress_classes.len()
            + self.ingresses.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.static_sites.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// API versions of Ingress older than `networking.k8s.io/v1` that manifests may still use.
pub const OLD_INGRESS_VERSIONS: &[&str] = &["extensions/v1beta1", "networking.k8s.io/v1beta1"];

/// Converts an `extensions/v1beta1` or `networking.k8s.io/v1beta1` Ingress document into a
/// `networking.k8s.io/v1` one, as the API server did: `serviceName`/`servicePort` become
/// `service: {name, port: {number|name}}`, `spec.backend` becomes `spec.defaultBackend`, a path
/// without `pathType` is `ImplementationSpecific`. The result carries the annotation
/// `gatehouse.dev/converted-from: <old version>`, which makes translate() warn that the
/// manifest should be converted. An error names the Ingress and what cannot be converted.
pub fn ingress_from_v1beta1(doc: serde_json::Value) -> Result<serde_json::Value, String> {
    let name = doc
        .pointer("/metadata/name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    convert_v1beta1(doc).map_err(|e| format!("Ingress {name:?}: {e}"))
}

fn convert_v1beta1(mut doc: serde_json::Value) -> Result<serde_json::Value, String> {
    use serde_json::{Value, json};
    let from = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    fn backend(old: &mut Value, at: &str) -> Result<(), String> {
        let Some(map) = old.as_object_mut() else {
            return Err(format!("{at} is not a mapping"));
        };
        let name = map.remove("serviceName");
        let port = map.remove("servicePort");
        match (name, port) {
            (None, None) => Ok(()), // a `resource` backend, unchanged
            (Some(Value::String(name)), Some(port)) => {
                let port = match port {
                    Value::Number(n) => json!({"number": n}),
                    Value::String(s) => match s.parse::<u16>() {
                        Ok(n) => json!({"number": n}),
                        Err(_) => json!({"name": s}),
                    },
                    _ => return Err(format!("{at}.servicePort is not a number or a name")),
                };
                map.insert("service".into(), json!({"name": name, "port": port}));
                Ok(())
            }
            _ => Err(format!("{at} needs both serviceName and servicePort")),
        }
    }
    if let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(mut default) = spec.remove("backend") {
            backend(&mut default, "spec.backend")?;
            spec.insert("defaultBackend".into(), default);
        }
        for (r, rule) in spec
            .get_mut("rules")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let paths = rule
                .get_mut("http")
                .and_then(|h| h.get_mut("paths"))
                .and_then(Value::as_array_mut);
            for (p, path) in paths.into_iter().flatten().enumerate() {
                let at = format!("spec.rules[{r}].http.paths[{p}]");
                let Some(map) = path.as_object_mut() else {
                    return Err(format!("{at} is not a mapping"));
                };
                map.entry("pathType")
                    .or_insert_with(|| "ImplementationSpecific".into());
                if let Some(b) = map.get_mut("backend") {
                    backend(b, &format!("{at}.backend"))?;
                }
            }
        }
    }
    doc["apiVersion"] = "networking.k8s.io/v1".into();
    let meta = doc
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or("the Ingress has no metadata")?;
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(a) = annotations.as_object_mut() {
        a.insert("gatehouse.dev/converted-from".into(), from.into());
    }
    Ok(doc)
}

#[cfg(test)]
mod tests;
