//! translate(): objects and controller settings in, an immutable [`Snapshot`] out.
//!
//! All Ingress semantics live here: which Ingresses this controller owns, how hosts and paths
//! match, how Ingresses sharing a host merge and how their conflicts are settled, and what each
//! backend resolves to. It does no I/O. A bad object costs only itself: it yields a [`Warning`]
//! and every other route is still built.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressServiceBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::objects::{GROUP, ObjectKey, Objects};
use crate::routing::{HostMatch, PathMatch};
use crate::snapshot::{Backend, Route, ServiceBackend, Snapshot, UpstreamProtocol, Warning};
use crate::static_site::Site;
use crate::tls::table::TlsBuilder;
use crate::tls::{BACKEND_TLS_SERVER_NAME_ANNOTATION, SSL_REDIRECT_ANNOTATION};

/// Annotation kube-lego and older controllers used instead of `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Annotation that makes an IngressClass the default for Ingresses with no class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// `gatehouse.dev/backend-protocol`: how to speak to the Services of an Ingress.
pub const BACKEND_PROTOCOL_ANNOTATION: &str = "gatehouse.dev/backend-protocol";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Controller settings translate() depends on.
#[derive(Clone, Debug)]
pub struct Settings {
    /// IngressClass name this controller answers to when no IngressClass object says otherwise.
    pub ingress_class: String,
    /// `spec.controller` of the IngressClasses this controller owns.
    pub controller_name: String,
    /// Take Ingresses that name no class at all.
    pub watch_ingress_without_class: bool,
    /// Directory relative StaticSite roots are resolved against (the manifests directory).
    pub base_dir: Option<PathBuf>,
    /// `--default-certificate`: the Secret served to TLS clients no host certificate matches.
    pub default_certificate: Option<ObjectKey>,
    /// `--ssl-redirect`: redirect plain HTTP to HTTPS for hosts with a certificate, unless an
    /// Ingress says otherwise (`gatehouse.dev/ssl-redirect`).
    pub ssl_redirect: bool,
    /// The time certificates' validity is checked at; `None` reads the clock (tests set it).
    pub now: Option<SystemTime>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ingress_class: "gatehouse".into(),
            controller_name: "gatehouse.dev/ingress-controller".into(),
            watch_ingress_without_class: false,
            base_dir: None,
            default_certificate: None,
            ssl_redirect: false,
            now: None,
        }
    }
}

/// Builds the snapshot the data plane serves from the objects at hand. `previous` is the
/// snapshot in service (`Snapshot::default()` at start): Secrets whose data did not change are
/// not parsed again, and a host whose Secret broke keeps its last good certificate.
pub fn translate(objects: &Objects, settings: &Settings, previous: &Snapshot) -> Snapshot {
    let mut t = Translation::new(objects, settings);
    let owned = t.owned_ingresses();
    // Certificates first: whether a route redirects to HTTPS depends on its host having one.
    let now = settings.now.unwrap_or_else(SystemTime::now);
    let mut tls = TlsBuilder::new(objects, &previous.tls, now);
    if let Some(secret) = &settings.default_certificate {
        tls.set_default(secret, &mut t.warnings);
    }
    for (key, ingress) in &owned {
        tls.add_ingress(key, ingress, &mut t.warnings);
    }
    t.snapshot.tls = tls.finish();
    for (key, ingress) in &owned {
        t.add_ingress(key, ingress);
    }
    let (acme, acme_warnings) = crate::acme::wants::wants(&owned);
    let mut warnings = t.warnings;
    warnings.extend(acme_warnings);
    warnings.sort();
    warnings.dedup();
    Snapshot {
        routes: t.snapshot.routes,
        owned_ingresses: owned.into_iter().map(|(k, _)| k).collect(),
        warnings,
        acme,
        tls: t.snapshot.tls,
    }
}

/// A Service port as spoken to: protocol and, for HTTPS, the TLS server name.
type ServiceCacheKey = (ObjectKey, String, UpstreamProtocol, Option<Arc<str>>);

/// Working state of one translate() call.
struct Translation<'a> {
    objects: &'a Objects,
    settings: &'a Settings,
    /// EndpointSlices by the Service they belong to.
    slices: HashMap<ObjectKey, Vec<&'a EndpointSlice>>,
    /// Resolved backends, shared by every route that names the same Service port.
    services: HashMap<ServiceCacheKey, Result<Arc<ServiceBackend>, String>>,
    sites: HashMap<ObjectKey, Result<Arc<Site>, String>>,
    snapshot: Snapshot,
    warnings: Vec<Warning>,
}

// === impl Translation ===

impl<'a> Translation<'a> {
    fn new(objects: &'a Objects, settings: &'a Settings) -> Self {
        let mut slices: HashMap<ObjectKey, Vec<&EndpointSlice>> = HashMap::new();
        for slice in objects.endpoint_slices.values() {
            let labels = slice.metadata.labels.as_ref();
            if let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                let namespace = slice
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                slices
                    .entry(ObjectKey::new(namespace, service.clone()))
                    .or_default()
                    .push(slice);
            }
        }
        let mut warnings = Vec::new();
        let mut sites = HashMap::new();
        for (key, site) in &objects.static_sites {
            let built =
                Site::new(key.clone(), &site.spec, settings.base_dir.as_deref()).map(Arc::new);
            if let Err(reason) = &built {
                warnings.push(Warning {
                    kind: "StaticSite",
                    object: key.clone(),
                    reason: reason.clone(),
                });
            }
            sites.insert(key.clone(), built);
        }
        Self {
            objects,
            settings,
            slices,
            services: HashMap::new(),
            sites,
            snapshot: Snapshot::default(),
            warnings,
        }
    }

    fn warn(&mut self, ingress: &ObjectKey, reason: String) {
        self.warnings.push(Warning {
            kind: "Ingress",
            object: ingress.clone(),
            reason,
        });
    }

    /// The Ingresses this controller owns, oldest first (ties broken by namespace/name), so that
    /// conflicts are settled the same way on every replica and every run.
    fn owned_ingresses(&self) -> Vec<(ObjectKey, &'a Ingress)> {
        let ours = |controller: Option<&String>| {
            controller.is_some_and(|c| *c == self.settings.controller_name)
        };
        let default_is_ours = self.objects.ingress_classes.values().any(|class| {
            let is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION));
            is_default.is_some_and(|v| v == "true")
                && ours(class.spec.as_ref().and_then(|s| s.controller.as_ref()))
        });
        let class_is_ours =
            |name: &str| match self.objects.ingress_classes.get(&ObjectKey::new("", name)) {
                Some(class) => ours(class.spec.as_ref().and_then(|s| s.controller.as_ref())),
                None => name == self.settings.ingress_class,
            };
        let mut owned: Vec<(ObjectKey, &Ingress)> = self
            .objects
            .ingresses
            .iter()
            .filter(|(_, ingress)| {
                let class_name = ingress
                    .spec
                    .as_ref()
                    .and_then(|s| s.ingress_class_name.as_deref());
                let legacy = ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
                match (class_name, legacy) {
                    (Some(name), _) => class_is_ours(name),
                    (None, Some(name)) => class_is_ours(name),
                    (None, None) => default_is_ours || self.settings.watch_ingress_without_class,
                }
            })
            .map(|(key, ingress)| (key.clone(), &**ingress))
            .collect();
        // Objects without a creation time (hand-written manifests) count as newest.
        let age = |i: &Ingress| {
            (
                i.metadata.creation_timestamp.is_none(),
                i.metadata.creation_timestamp.clone().map(|Time(t)| t),
            )
        };
        owned.sort_by(|(ka, a), (kb, b)| age(a).cmp(&age(b)).then_with(|| ka.cmp(kb)));
        owned
    }

    fn add_ingress(&mut self, key: &ObjectKey, ingress: &Ingress) {
        let protocol = self.backend_protocol(key, ingress);
        let tls_name = self.backend_tls_server_name(key, ingress, protocol);
        let redirect = self.ssl_redirect(key, ingress);
        let Some(spec) = &ingress.spec else {
            self.warn(key, "has no spec".into());
            return;
        };
        if let Some(backend) = &spec.default_backend {
            let route = Route {
                ingress: key.clone(),
                path: PathMatch::prefix("/"),
                backend: self.backend(key, backend, protocol, tls_name.as_ref(), ""),
                ssl_redirect: false,
                counters: Default::default(),
            };
            if let Err(existing) = self.snapshot.routes.set_default(Arc::new(route)) {
                let reason = format!(
                    "defaultBackend ignored: Ingress {} (older) already sets the default backend",
                    existing.ingress
                );
                self.warn(key, reason);
            }
        }
        for rule in spec.rules.iter().flatten() {
            let host = match HostMatch::parse(rule.host.as_deref()) {
                Ok(host) => host,
                Err(reason) => {
                    self.warn(key, format!("rule skipped: {reason}"));
                    continue;
                }
            };
            let Some(http) = &rule.http else { continue };
            for path in &http.paths {
                let text = path.path.as_deref().unwrap_or("/");
                let path_match = match path.path_type.as_str() {
                    _ if !text.starts_with('/') => {
                        self.warn(
                            key,
                            format!(
                                "path {text:?} on host {} skipped: a path must start with \"/\"",
                                host.display()
                            ),
                        );
                        continue;
                    }
                    "Exact" => PathMatch::exact(text),
                    // ImplementationSpecific means Prefix here (element-wise, like Prefix).
                    "Prefix" | "ImplementationSpecific" => PathMatch::prefix(text),
                    other => {
                        self.warn(
                            key,
                            format!(
                                "path {text:?} on host {} skipped: unknown pathType {other:?}",
                                host.display()
                            ),
                        );
                        continue;
                    }
                };
                let strip = match &path_match {
                    PathMatch::Prefix(p) => p.to_string(),
                    PathMatch::Exact(_) => String::new(),
                };
                let backend = self.backend(key, &path.backend, protocol, tls_name.as_ref(), &strip);
                let route = Arc::new(Route {
                    ingress: key.clone(),
                    path: path_match.clone(),
                    backend,
                    ssl_redirect: redirect && self.snapshot.tls.covers(&host),
                    counters: Default::default(),
                });
                if let Err(existing) = self
                    .snapshot
                    .routes
                    .host_mut(&host)
                    .insert(path_match, route)
                {
                    let owner = if existing.ingress == *key {
                        "an earlier path of this Ingress".to_owned()
                    } else {
                        format!("Ingress {} (older)", existing.ingress)
                    };
                    let reason = format!(
                        "path {} {text:?} on host {} ignored: already served by {owner}",
                        path.path_type,
                        host.display()
                    );
                    self.warn(key, reason);
                }
            }
        }
    }

    /// The typed value of `gatehouse.dev/backend-protocol` (HTTP when absent or unusable).
    fn backend_protocol(&mut self, key: &ObjectKey, ingress: &Ingress) -> UpstreamProtocol {
        let value = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(BACKEND_PROTOCOL_ANNOTATION));
        match value.map(|v| v.to_ascii_uppercase()).as_deref() {
            None | Some("HTTP") => UpstreamProtocol::Http,
            Some("H2C" | "GRPC") => UpstreamProtocol::H2c,
            Some("HTTPS") => UpstreamProtocol::Https,
            Some(_) => {
                let value = value.cloned().unwrap_or_default();
                self.warn(key, format!("annotation {BACKEND_PROTOCOL_ANNOTATION}={value:?} ignored: expected HTTP, HTTPS or H2C"));
                UpstreamProtocol::Http
            }
        }
    }

    /// The typed value of `gatehouse.dev/ssl-redirect` (`--ssl-redirect` when absent or unusable).
    fn ssl_redirect(&mut self, key: &ObjectKey, ingress: &Ingress) -> bool {
        let value = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION));
        match value.map(|v| v.trim()) {
            None => self.settings.ssl_redirect,
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                let reason = format!(
                    "annotation {SSL_REDIRECT_ANNOTATION}={other:?} ignored: expected \"true\" or \"false\""
                );
                self.warn(key, reason);
                self.settings.ssl_redirect
            }
        }
    }

    /// The typed value of `gatehouse.dev/backend-tls-server-name`: a DNS name or IP address,
    /// only meaningful with `backend-protocol: HTTPS`.
    fn backend_tls_server_name(
        &mut self,
        key: &ObjectKey,
        ingress: &Ingress,
        protocol: UpstreamProtocol,
    ) -> Option<Arc<str>> {
        let value = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(BACKEND_TLS_SERVER_NAME_ANNOTATION))?;
        let name = crate::tls::normalize_name(value.trim());
        if protocol != UpstreamProtocol::Https {
            let reason = format!(
                "annotation {BACKEND_TLS_SERVER_NAME_ANNOTATION} ignored: {BACKEND_PROTOCOL_ANNOTATION} is not HTTPS"
            );
            self.warn(key, reason);
            return None;
        }
        match rustls::pki_types::ServerName::try_from(&*name) {
            Ok(_) => Some(name.into()),
            Err(_) => {
                let reason = format!(
                    "annotation {BACKEND_TLS_SERVER_NAME_ANNOTATION}={value:?} ignored: not a DNS name or IP address"
                );
                self.warn(key, reason);
                None
            }
        }
    }

    /// Resolves an Ingress backend; anything unusable becomes a 503 backend plus a warning.
    fn backend(
        &mut self,
        key: &ObjectKey,
        backend: &IngressBackend,
        protocol: UpstreamProtocol,
        tls_name: Option<&Arc<str>>,
        prefix: &str,
    ) -> Backend {
        let resolved = match (&backend.service, &backend.resource) {
            (Some(service), None) => self
                .service_backend(&key.namespace, service, protocol, tls_name)
                .map(Backend::Service),
            (None, Some(resource)) => {
                let group = resource.api_group.as_deref().unwrap_or("");
                if group != GROUP || resource.kind != "StaticSite" {
                    Err(format!(
                        "backend resource {}/{} {:?} is not supported (only {GROUP} StaticSite)",
                        group, resource.kind, resource.name
                    ))
                } else {
                    let site_key = ObjectKey::new(key.namespace.clone(), resource.name.clone());
                    match self.sites.get(&site_key) {
                        Some(Ok(site)) => Ok(Backend::Static(site.route(prefix))),
                        Some(Err(_)) => Err(format!("StaticSite {site_key} is invalid")),
                        None => Err(format!("StaticSite {site_key} not found")),
                    }
                }
            }
            _ => Err("backend must name exactly one of service or resource".into()),
        };
        resolved.unwrap_or_else(|reason| {
            self.warn(key, reason.clone());
            Backend::Unavailable {
                reason: reason.into(),
            }
        })
    }

    fn service_backend(
        &mut self,
        namespace: &str,
        backend: &IngressServiceBackend,
        protocol: UpstreamProtocol,
        tls_name: Option<&Arc<str>>,
    ) -> Result<Arc<ServiceBackend>, String> {
        let service_key = ObjectKey::new(namespace, backend.name.clone());
        let port = backend
            .port
            .as_ref()
            .and_then(|p| match (p.number, &p.name) {
                (Some(n), _) => Some(n.to_string()),
                (None, Some(name)) => Some(name.clone()),
                (None, None) => None,
            });
        let Some(port) = port else {
            return Err(format!("backend Service {service_key} names no port"));
        };
        let cache_key = (service_key, port, protocol, tls_name.cloned());
        if let Some(done) = self.services.get(&cache_key) {
            return done.clone();
        }
        let resolved = self
            .resolve_service(&cache_key.0, &cache_key.1, protocol)
            .map(|b| Arc::new(b.with_tls_server_name(tls_name.cloned())));
        self.services.insert(cache_key, resolved.clone());
        resolved
    }

    fn resolve_service(
        &self,
        key: &ObjectKey,
        port: &str,
        protocol: UpstreamProtocol,
    ) -> Result<ServiceBackend, String> {
        let service = self
            .objects
            .services
            .get(key)
            .ok_or_else(|| format!("Service {key} not found"))?;
        let spec = service
            .spec
            .as_ref()
            .ok_or_else(|| format!("Service {key} has no spec"))?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return Err(format!(
                "Service {key} is of type ExternalName, which is not supported"
            ));
        }
        let by_number = port.parse::<i32>().ok();
        let service_port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| match by_number {
                Some(n) => p.port == n,
                None => p.name.as_deref() == Some(port),
            })
            .ok_or_else(|| format!("Service {key} has no port {port}"))?;
        // EndpointSlice ports carry the Service port's name ("" when unnamed).
        let port_name = service_port.name.as_deref().unwrap_or("");
        let mut ready = Vec::new();
        let mut terminating = Vec::new();
        for slice in self.slices.get(key).into_iter().flatten() {
            if slice.address_type == "FQDN" {
                continue;
            }
            let slice_port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name);
            let Some(number) = slice_port
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.as_ref();
                let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
                let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                let list = match (is_ready, serving && is_terminating) {
                    (true, _) => &mut ready,
                    (false, true) => &mut terminating,
                    (false, false) => continue,
                };
                list.extend(
                    endpoint
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse::<IpAddr>().ok())
                        .map(|ip| SocketAddr::new(ip, number)),
                );
            }
        }
        let mut endpoints = if ready.is_empty() { terminating } else { ready };
        endpoints.sort();
        endpoints.dedup();
        Ok(ServiceBackend::new(
            key.clone(),
            port.to_owned(),
            protocol,
            endpoints,
        ))
    }
}

/// Routes of a snapshot flattened for `/routes` and tests: host → path → description.
pub fn describe_routes(
    snapshot: &Snapshot,
) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    let describe = |route: &Route| {
        let backend = match &route.backend {
            Backend::Service(s) => {
                let mut service = serde_json::json!({
                    "service": s.service.to_string(), "port": s.port, "protocol": s.protocol,
                    "endpoints": s.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                });
                if let Some(name) = &s.tls_server_name {
                    service["tlsServerName"] = (**name).into();
                }
                service
            }
            Backend::Static(s) => {
                serde_json::json!({"staticSite": s.site.key.to_string(), "root": s.site.root})
            }
            Backend::Unavailable { reason } => serde_json::json!({"unavailable": &**reason}),
        };
        let mut described =
            serde_json::json!({"ingress": route.ingress.to_string(), "backend": backend});
        if route.ssl_redirect {
            described["sslRedirect"] = true.into();
        }
        described
    };
    for (host, routes) in snapshot.routes.hosts() {
        let paths: BTreeMap<String, serde_json::Value> = routes
            .iter()
            .map(|(path, route)| {
                let kind = if matches!(path, PathMatch::Exact(_)) {
                    "Exact"
                } else {
                    "Prefix"
                };
                (format!("{kind} {}", path.path()), describe(route))
            })
            .collect();
        out.insert(host.display().into_owned(), paths);
    }
    if let Some(route) = snapshot.routes.default_route() {
        out.entry("(default backend)".into())
            .or_default()
            .insert("/".into(), describe(route));
    }
    out
}

#[cfg(test)]
mod tests;
