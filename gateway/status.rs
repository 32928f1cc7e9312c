//! What the leader writes back to the cluster: the `status.loadBalancer.ingress` of every
//! Ingress it serves, and a Kubernetes Event for each warning of the configuration in service
//! ([`events`]).
//!
//! Status comes from `--publish-address` or from the `--publish-service` Service's load-balancer
//! ingress and `spec.externalIPs` (node addresses of a NodePort Service are not published: that
//! would need read access to Nodes). An Ingress is patched (merge patch on the status
//! subresource) only when its status differs; one that stops being ours has the addresses
//! removed; Ingresses of other classes are never touched.

pub mod events;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::objects::{ObjectKey, Objects};
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::sources::kube::KubeMetrics;

/// How long to wait before retrying writes that failed.
const RETRY: Duration = Duration::from_secs(2);

/// Where the addresses written into Ingress status come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Publish {
    /// Status is not written.
    #[default]
    Nothing,
    /// The load-balancer ingress and external IPs of this Service.
    Service(ObjectKey),
    /// These fixed addresses.
    Addresses(Vec<IngressLoadBalancerIngress>),
}

// === impl Publish ===

impl Publish {
    /// From `--publish-service NAMESPACE/NAME` and `--publish-address IP|HOST,...` (which wins).
    pub fn parse(service: Option<&str>, addresses: Option<&str>) -> Result<Self, String> {
        if let Some(list) = addresses.filter(|a| !a.trim().is_empty()) {
            let parsed = list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(parse_address)
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Publish::Addresses(normalized(&parsed)));
        }
        let Some(service) = service.filter(|s| !s.trim().is_empty()) else {
            return Ok(Publish::Nothing);
        };
        match service.trim().split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Publish::Service(ObjectKey::new(ns, name)))
            }
            _ => Err(format!(
                "--publish-service {service:?}: expected NAMESPACE/NAME"
            )),
        }
    }
}

fn parse_address(text: &str) -> Result<IngressLoadBalancerIngress, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IngressLoadBalancerIngress {
            ip: Some(ip.to_string()),
            ..IngressLoadBalancerIngress::default()
        });
    }
    let valid_host = text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !valid_host {
        return Err(format!(
            "--publish-address {text:?}: not an IP address or a lowercase DNS name"
        ));
    }
    Ok(IngressLoadBalancerIngress {
        hostname: Some(text.to_owned()),
        ..IngressLoadBalancerIngress::default()
    })
}

/// The addresses a Service publishes: its load-balancer ingress, then its external IPs.
pub fn service_addresses(service: &Service) -> Vec<IngressLoadBalancerIngress> {
    let mut out: Vec<IngressLoadBalancerIngress> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|lb| IngressLoadBalancerIngress {
            ip: lb.ip.clone().filter(|s| !s.is_empty()),
            hostname: lb.hostname.clone().filter(|s| !s.is_empty()),
            ports: None,
        })
        .filter(|lb| lb.ip.is_some() || lb.hostname.is_some())
        .collect();
    let external = service.spec.as_ref().and_then(|s| s.external_ips.as_ref());
    out.extend(
        external
            .into_iter()
            .flatten()
            .map(|ip| IngressLoadBalancerIngress {
                ip: Some(ip.clone()),
                ..IngressLoadBalancerIngress::default()
            }),
    );
    normalized(&out)
}

/// Sorted and without duplicates, so lists compare equal whatever order they were written in.
fn normalized(list: &[IngressLoadBalancerIngress]) -> Vec<IngressLoadBalancerIngress> {
    let mut out = list.to_vec();
    out.sort_by(|a, b| (&a.ip, &a.hostname).cmp(&(&b.ip, &b.hostname)));
    out.dedup();
    out
}

fn current_addresses(ingress: &Ingress) -> Vec<IngressLoadBalancerIngress> {
    let list = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    normalized(list)
}

/// One status write: the addresses an Ingress should show (empty: remove them).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub ingress: ObjectKey,
    pub addresses: Vec<IngressLoadBalancerIngress>,
}

/// The status writes that make the cluster match: every owned Ingress shows `desired`; one that
/// is no longer owned loses the addresses it showed if it was ours before (or shows exactly
/// ours, for an Ingress that left while no leader was watching). Nothing else is touched.
pub fn plan(
    ingresses: &BTreeMap<ObjectKey, Arc<Ingress>>,
    owned: &BTreeSet<ObjectKey>,
    previously_owned: &BTreeSet<ObjectKey>,
    desired: &[IngressLoadBalancerIngress],
) -> Vec<Change> {
    let desired = normalized(desired);
    let mut changes = Vec::new();
    for (key, ingress) in ingresses {
        let current = current_addresses(ingress);
        if owned.contains(key) {
            if current != desired {
                changes.push(Change {
                    ingress: key.clone(),
                    addresses: desired.clone(),
                });
            }
        } else if !current.is_empty() && (previously_owned.contains(key) || current == desired) {
            changes.push(Change {
                ingress: key.clone(),
                addresses: Vec::new(),
            });
        }
    }
    changes
}

/// A configuration in service and the objects it was built from.
#[derive(Debug)]
pub struct InService {
    pub objects: Arc<Objects>,
    pub snapshot: Arc<Snapshot>,
}

/// Writes status and Events while this replica leads.
pub struct Writer {
    client: Client,
    publish: Publish,
    /// The `--publish-service` Service, watched on its own (it may be outside the watched
    /// namespaces).
    publish_service: Option<Store<Service>>,
    events: events::Reporter,
    metrics: KubeMetrics,
    previously_owned: BTreeSet<ObjectKey>,
    /// Writes whose echo has not come back through the watch yet: the Ingress's
    /// `resourceVersion` when written, and what was written. Keeps a slow watch from causing a
    /// second identical patch.
    sent: HashMap<ObjectKey, (Option<String>, Vec<IngressLoadBalancerIngress>)>,
}

// === impl Writer ===

impl Writer {
    pub fn new(
        client: Client,
        publish: Publish,
        publish_service: Option<Store<Service>>,
        events: events::Reporter,
        metrics: KubeMetrics,
    ) -> Self {
        Self {
            client,
            publish,
            publish_service,
            events,
            metrics,
            previously_owned: BTreeSet::new(),
            sent: HashMap::new(),
        }
    }

    /// Reconciles on every configuration put in service and every leadership change, until
    /// `stop`. Failed writes are retried every couple of seconds.
    pub async fn run(
        mut self,
        shared: Arc<Shared>,
        mut in_service: watch::Receiver<Option<Arc<InService>>>,
        mut stop: watch::Receiver<bool>,
    ) {
        if self.publish == Publish::Nothing {
            tracing::info!(
                "no --publish-service or --publish-address: Ingress status is not written"
            );
        }
        let mut leadership = shared.leadership();
        loop {
            let leading = *leadership.borrow_and_update();
            let current = in_service.borrow_and_update().clone();
            let mut retry = false;
            match current {
                Some(current) if leading => retry = !self.reconcile(&current).await,
                _ if !leading => self.forget(),
                _ => {}
            }
            tokio::select! {
                changed = in_service.changed() => if changed.is_err() { return },
                changed = leadership.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(RETRY), if retry => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// A replica that stops leading forgets what it wrote: the next leader decides afresh.
    fn forget(&mut self) {
        self.previously_owned.clear();
        self.sent.clear();
        self.events.forget();
    }

    /// Brings status and Events in line with `current`; false if any write failed.
    async fn reconcile(&mut self, current: &InService) -> bool {
        let mut ok = self.reconcile_status(current).await;
        ok &= self.events.report(current, &self.metrics).await;
        ok
    }

    async fn reconcile_status(&mut self, current: &InService) -> bool {
        let desired = match &self.publish {
            Publish::Nothing => return true,
            Publish::Addresses(addresses) => addresses.clone(),
            Publish::Service(key) => self
                .publish_service
                .as_ref()
                .and_then(|store| {
                    store
                        .state()
                        .into_iter()
                        .find(|s| ObjectKey::of(&s.metadata) == *key)
                })
                .map(|s| service_addresses(&s))
                .unwrap_or_default(),
        };
        let owned: BTreeSet<ObjectKey> = current.snapshot.owned_ingresses.iter().cloned().collect();
        let ingresses = &current.objects.ingresses;
        self.sent.retain(|key, _| ingresses.contains_key(key));
        let mut ok = true;
        // A removal that fails is tried again next time: its Ingress still counts as ours.
        let mut still_ours = owned.clone();
        for change in plan(ingresses, &owned, &self.previously_owned, &desired) {
            let version = ingresses
                .get(&change.ingress)
                .and_then(|i| i.metadata.resource_version.clone());
            let already = (version.clone(), change.addresses.clone());
            if self.sent.get(&change.ingress) == Some(&already) {
                continue;
            }
            match self.patch(&change).await {
                Ok(()) => {
                    self.sent.insert(change.ingress.clone(), already);
                    self.metrics.status_updates.inc();
                    tracing::info!(ingress = %change.ingress, addresses = ?change.addresses.iter().map(display_address).collect::<Vec<_>>(), "Ingress status updated");
                }
                Err(err) => {
                    ok = false;
                    still_ours.insert(change.ingress.clone());
                    self.metrics.status_update_errors.inc();
                    tracing::warn!(ingress = %change.ingress, error = %err, "cannot update Ingress status; will retry");
                }
            }
        }
        self.previously_owned = still_ours;
        ok
    }

    async fn patch(&self, change: &Change) -> Result<(), kube::Error> {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), &change.ingress.namespace);
        let addresses = if change.addresses.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::to_value(&change.addresses).unwrap_or_default()
        };
        let body = serde_json::json!({"status": {"loadBalancer": {"ingress": addresses}}});
        api.patch_status(
            &change.ingress.name,
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
        .map(|_| ())
    }
}

fn display_address(lb: &IngressLoadBalancerIngress) -> String {
    lb.ip
        .clone()
        .or_else(|| lb.hostname.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
