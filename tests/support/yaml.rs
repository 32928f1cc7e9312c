//! YAML builders for the objects Gatehouse reads, as `kubectl apply` would take them.
//!
//! Plain string building with no dependencies, so the library's unit tests share it too
//! (`#[path]`-included from `gateway/translate/tests.rs`).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::IpAddr;

/// An Ingress backend, as the YAML flow mapping it is written as.
#[derive(Clone, Debug)]
pub struct Backend(String);

/// A Service backend by port number.
pub fn svc(name: &str, port: u16) -> Backend {
    Backend(format!(
        "{{service: {{name: {name:?}, port: {{number: {port}}}}}}}"
    ))
}

/// A Service backend by port name.
pub fn svc_named(name: &str, port: &str) -> Backend {
    Backend(format!(
        "{{service: {{name: {name:?}, port: {{name: {port:?}}}}}}}"
    ))
}

/// A StaticSite backend.
pub fn site(name: &str) -> Backend {
    resource("gatehouse.dev", "StaticSite", name)
}

/// Any `resource` backend.
pub fn resource(group: &str, kind: &str, name: &str) -> Backend {
    Backend(format!(
        "{{resource: {{apiGroup: {group:?}, kind: {kind:?}, name: {name:?}}}}}"
    ))
}

/// `(path, pathType, backend)` of one Ingress path.
type Path = (String, String, Backend);

/// An Ingress under construction: namespace `default`, class `gatehouse`, no rules.
#[derive(Clone, Debug)]
pub struct Ingress {
    name: String,
    namespace: String,
    class: Option<String>,
    annotations: Vec<(String, String)>,
    created: Option<String>,
    default_backend: Option<Backend>,
    /// `(host, paths)`; host `""` means a rule without host.
    rules: Vec<(String, Vec<Path>)>,
}

pub fn ingress(name: &str) -> Ingress {
    Ingress {
        name: name.into(),
        namespace: "default".into(),
        class: Some("gatehouse".into()),
        annotations: Vec::new(),
        created: None,
        default_backend: None,
        rules: Vec::new(),
    }
}

impl Ingress {
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// `spec.ingressClassName`; `None` leaves it out.
    pub fn class(mut self, class: Option<&str>) -> Self {
        self.class = class.map(Into::into);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }

    /// `metadata.creationTimestamp`, e.g. `2024-01-01T00:00:00Z`.
    pub fn created(mut self, timestamp: &str) -> Self {
        self.created = Some(timestamp.into());
        self
    }

    pub fn default_backend(mut self, backend: Backend) -> Self {
        self.default_backend = Some(backend);
        self
    }

    /// Adds a path to the rule of `host` (`""` for a rule without host).
    pub fn path(mut self, host: &str, path: &str, path_type: &str, backend: Backend) -> Self {
        let entry = (path.to_owned(), path_type.to_owned(), backend);
        match self.rules.iter_mut().find(|(h, _)| h == host) {
            Some((_, paths)) => paths.push(entry),
            None => self.rules.push((host.into(), vec![entry])),
        }
        self
    }

    /// A Prefix path.
    pub fn prefix(self, host: &str, path: &str, backend: Backend) -> Self {
        self.path(host, path, "Prefix", backend)
    }

    /// An Exact path.
    pub fn exact(self, host: &str, path: &str, backend: Backend) -> Self {
        self.path(host, path, "Exact", backend)
    }

    pub fn yaml(&self) -> String {
        let mut out = String::from("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n");
        let _ = writeln!(
            out,
            "  name: {:?}\n  namespace: {:?}",
            self.name, self.namespace
        );
        if let Some(created) = &self.created {
            let _ = writeln!(out, "  creationTimestamp: {created:?}");
        }
        if !self.annotations.is_empty() {
            out.push_str("  annotations:\n");
            for (k, v) in &self.annotations {
                let _ = writeln!(out, "    {k:?}: {v:?}");
            }
        }
        out.push_str("spec:\n");
        if let Some(class) = &self.class {
            let _ = writeln!(out, "  ingressClassName: {class:?}");
        }
        if let Some(Backend(b)) = &self.default_backend {
            let _ = writeln!(out, "  defaultBackend: {b}");
        }
        if !self.rules.is_empty() {
            out.push_str("  rules:\n");
        }
        for (host, paths) in &self.rules {
            if host.is_empty() {
                out.push_str("  - http:\n");
            } else {
                let _ = writeln!(out, "  - host: {host:?}\n    http:");
            }
            out.push_str("      paths:\n");
            for (path, path_type, Backend(b)) in paths {
                let _ = writeln!(
                    out,
                    "      - {{path: {path:?}, pathType: {path_type:?}, backend: {b}}}"
                );
            }
        }
        out
    }
}

/// Document separator-joined YAML of several objects.
pub fn docs<S: AsRef<str>>(parts: &[S]) -> String {
    parts
        .iter()
        .map(|p| p.as_ref().trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

/// An IngressClass with a controller, optionally marked the cluster default.
pub fn ingress_class(name: &str, controller: &str, default: bool) -> String {
    let annotations = if default {
        "\n  annotations: {\"ingressclass.kubernetes.io/is-default-class\": \"true\"}"
    } else {
        ""
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: {name:?}{annotations}\nspec:\n  controller: {controller:?}\n"
    )
}

/// A Service with named ports (`""` for an unnamed port).
pub fn service(namespace: &str, name: &str, ports: &[(&str, u16)]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(n, p)| match *n {
            "" => format!("{{port: {p}}}"),
            n => format!("{{name: {n:?}, port: {p}}}"),
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name:?}, namespace: {namespace:?}}}\nspec:\n  ports: [{}]\n",
        ports.join(", ")
    )
}

/// One endpoint of an EndpointSlice and its conditions (`None` leaves a condition out).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

pub fn ready(ip: &str) -> Endpoint {
    endpoint(ip, Some(true), Some(true), Some(false))
}

pub fn not_ready(ip: &str) -> Endpoint {
    endpoint(ip, Some(false), Some(false), Some(false))
}

/// A terminating endpoint, still serving or not.
pub fn terminating(ip: &str, serving: bool) -> Endpoint {
    endpoint(ip, Some(false), Some(serving), Some(true))
}

pub fn endpoint(
    ip: &str,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> Endpoint {
    Endpoint {
        ip: ip.parse().expect("endpoint ip"),
        ready,
        serving,
        terminating,
    }
}

/// An EndpointSlice of `service` with named ports (`""` for an unnamed port).
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[Endpoint],
) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(n, p)| match *n {
            "" => format!("{{port: {p}}}"),
            n => format!("{{name: {n:?}, port: {p}}}"),
        })
        .collect();
    let address_type = match endpoints.first().map(|e| e.ip) {
        Some(IpAddr::V6(_)) => "IPv6",
        _ => "IPv4",
    };
    let mut out = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name:?}\n  namespace: {namespace:?}\n  labels: {{kubernetes.io/service-name: {service:?}}}\naddressType: {address_type}\nports: [{}]\nendpoints:\n",
        ports.join(", ")
    );
    if endpoints.is_empty() {
        out.truncate(out.len() - "endpoints:\n".len());
        out.push_str("endpoints: []\n");
    }
    for e in endpoints {
        let mut conditions = Vec::new();
        for (k, v) in [
            ("ready", e.ready),
            ("serving", e.serving),
            ("terminating", e.terminating),
        ] {
            if let Some(v) = v {
                conditions.push(format!("{k}: {v}"));
            }
        }
        let _ = writeln!(
            out,
            "  - addresses: [\"{}\"]\n    conditions: {{{}}}",
            e.ip,
            conditions.join(", ")
        );
    }
    out
}

/// A StaticSite; `extra` is more `spec` fields as YAML flow entries, e.g. `fallback: index.html`.
pub fn static_site(namespace: &str, name: &str, root: &str, extra: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: gatehouse.dev/v1alpha1\nkind: StaticSite\nmetadata: {{name: {name:?}, namespace: {namespace:?}}}\nspec:\n  root: {root:?}\n"
    );
    for (k, v) in extra {
        let _ = writeln!(out, "  {k}: {v:?}");
    }
    out
}
