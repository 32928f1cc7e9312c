//! One `events.k8s.io/v1` Event per distinct warning, on the object the warning is about, so
//! `kubectl describe ingress` shows why an Ingress is not (fully) served.
//!
//! A warning is reported once while it lasts: a rebuild that finds it again says nothing new. If
//! it goes away and comes back, or leadership moves, it is reported again.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::objects::{ObjectKey, Objects};
use crate::snapshot::Warning;
use crate::sources::kube::metrics::KubeMetrics;

/// `reason` of every Event Gatehouse writes (the note says what is wrong).
pub const REASON: &str = "ConfigurationWarning";
/// `action` of every Event Gatehouse writes.
pub const ACTION: &str = "Translate";
/// Longest `note` the API accepts (1 kB).
const NOTE_LIMIT: usize = 1024;

/// Publishes warnings as Events, remembering which ones it already did.
pub struct Reporter {
    client: Client,
    /// `reportingController`, e.g. `gatehouse.dev/ingress-controller`.
    controller: String,
    /// `reportingInstance`: this replica.
    instance: String,
    published: BTreeSet<Warning>,
}

// === impl Reporter ===

impl Reporter {
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
            published: BTreeSet::new(),
        }
    }

    pub fn forget(&mut self) {
        self.published.clear();
    }

    /// Publishes the warnings (sorted, of the configuration in service, built from `objects`)
    /// not published yet; false if any failed (they are tried again on the next call).
    pub async fn report(
        &mut self,
        warnings: &[Warning],
        objects: &Objects,
        metrics: &KubeMetrics,
    ) -> bool {
        self.published.retain(|w| warnings.binary_search(w).is_ok());
        let mut ok = true;
        for warning in warnings {
            if self.published.contains(warning) {
                continue;
            }
            let Some(event) = event_for(
                warning,
                objects,
                &self.controller,
                &self.instance,
                Timestamp::now(),
            ) else {
                continue;
            };
            let namespace = event.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {
                    metrics.events.inc();
                    self.published.insert(warning.clone());
                }
                Err(err) => {
                    ok = false;
                    metrics.event_errors.inc();
                    tracing::warn!(object = %warning.object, error = %err, "cannot publish a warning Event; will retry");
                }
            }
        }
        ok
    }
}

/// `apiVersion` of the kinds warnings are about.
fn api_version(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "Service" | "Secret" => "v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "StaticSite" => "gatehouse.dev/v1alpha1",
        _ => return None,
    })
}

fn uid(kind: &str, key: &ObjectKey, objects: &Objects) -> Option<String> {
    let meta = match kind {
        "Ingress" => &objects.ingresses.get(key)?.metadata,
        "IngressClass" => &objects.ingress_classes.get(key)?.metadata,
        "Service" => &objects.services.get(key)?.metadata,
        "Secret" => &objects.secrets.get(key)?.metadata,
        "EndpointSlice" => &objects.endpoint_slices.get(key)?.metadata,
        "StaticSite" => &objects.static_sites.get(key)?.metadata,
        _ => return None,
    };
    meta.uid.clone()
}

/// The Event for a warning, regarding the object it names (`None` for a kind Events are not
/// written for).
pub fn event_for(
    warning: &Warning,
    objects: &Objects,
    controller: &str,
    instance: &str,
    now: Timestamp,
) -> Option<Event> {
    let api_version = api_version(warning.kind)?;
    let key = &warning.object;
    // Cluster-scoped objects (IngressClass) get their Events in `default`, as kubectl expects.
    let namespace = if key.namespace.is_empty() {
        "default".to_owned()
    } else {
        key.namespace.clone()
    };
    let regarding = ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(warning.kind.to_owned()),
        name: Some(key.name.clone()),
        namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
        uid: uid(warning.kind, key, objects),
        ..ObjectReference::default()
    };
    Some(Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", key.name, now.as_nanosecond())),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        action: Some(ACTION.to_owned()),
        reason: Some(REASON.to_owned()),
        note: Some(truncate(&warning.reason, NOTE_LIMIT)),
        type_: Some("Warning".to_owned()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding),
        reporting_controller: Some(controller.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        ..Event::default()
    })
}

fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
