//! What the leader writes back to the cluster: the `status.loadBalancer.ingress` of every
//! Ingress it serves, and a Kubernetes Event for each warning of the configuration in service
//! ([`events`]).
//!
//! Status comes from `--publish-address` or from the `--publish-service` Service's load-balancer
//! ingress and `spec.externalIPs`; for a `NodePort` Service with neither, from its nodes
//! ([`node_addresses`]: a Node reflector is started for that, and only for that, so only then
//! does Gatehouse need to list and watch Nodes). An Ingress is patched (merge patch on the
//! status subresource) only when its status differs; one that stops being ours has the
//! addresses removed; Ingresses of other classes are never touched.

pub mod events;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeStatus, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::objects::{ObjectKey, Objects};
use crate::shared::Leadership;
use crate::snapshot::Snapshot;
use crate::sources::kube::debounce::DEBOUNCE;
use crate::sources::kube::metrics::KubeMetrics;
pub use crate::sources::kube::settings::Publish;
use crate::sources::kube::settings::normalized;
use crate::sources::kube::watches::{self, Watch};

/// How long to wait before retrying writes that failed.
const RETRY: Duration = Duration::from_secs(2);

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

/// Whether a Service is reached through its node ports alone.
fn is_node_port(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("NodePort")
}

/// Label that keeps a node out of external load balancers (cloud load balancers honour it too).
pub const EXCLUDE_NODE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// The addresses a NodePort Service is reached at: those of every Ready node not labelled
/// [`EXCLUDE_NODE_LABEL`], each node's `ExternalIP`s, or its `InternalIP`s if it has none.
pub fn node_addresses<'n>(
    nodes: impl IntoIterator<Item = &'n Node>,
) -> Vec<IngressLoadBalancerIngress> {
    let mut out = Vec::new();
    for node in nodes {
        let excluded = node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(EXCLUDE_NODE_LABEL));
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if excluded || !ready {
            continue;
        }
        let addresses = status
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default();
        let of_type = |kind: &str| -> Vec<String> {
            addresses
                .iter()
                .filter(|a| a.type_ == kind && a.address.parse::<IpAddr>().is_ok())
                .map(|a| a.address.clone())
                .collect()
        };
        let external = of_type("ExternalIP");
        let chosen = if external.is_empty() {
            of_type("InternalIP")
        } else {
            external
        };
        out.extend(chosen.into_iter().map(|ip| IngressLoadBalancerIngress {
            ip: Some(ip),
            ..IngressLoadBalancerIngress::default()
        }));
    }
    normalized(&out)
}

/// Keeps of a Node what [`node_addresses`] reads: a big cluster's Nodes carry image lists and
/// annotations worth far more memory than that.
fn trim_node(node: &mut Node) {
    node.metadata.annotations = None;
    node.spec = None;
    node.status = node.status.take().map(|s| NodeStatus {
        addresses: s.addresses,
        conditions: s.conditions,
        ..NodeStatus::default()
    });
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
    /// For the Node reflector; its `changes` wake this writer.
    watch_ctx: watches::Context,
    /// Started the first time a NodePort Service's addresses are wanted.
    nodes: Option<Watch<Node>>,
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
        watch_ctx: watches::Context,
    ) -> Self {
        Self {
            client,
            publish,
            publish_service,
            events,
            metrics,
            watch_ctx,
            nodes: None,
            previously_owned: BTreeSet::new(),
            sent: HashMap::new(),
        }
    }

    /// Reconciles on every configuration put in service and every leadership change, until
    /// `stop`. Failed writes are retried every couple of seconds.
    pub async fn run(
        mut self,
        leadership: Leadership,
        mut in_service: watch::Receiver<Option<Arc<InService>>>,
        mut stop: watch::Receiver<bool>,
    ) {
        if self.publish == Publish::Nothing {
            tracing::info!(
                "no --publish-service or --publish-address: Ingress status is not written"
            );
        }
        let mut leadership = leadership.subscribe();
        let nodes_changed = self.watch_ctx.changes.clone();
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
                _ = nodes_changed.notified() => {
                    tokio::select! {
                        _ = DEBOUNCE.settle(&nodes_changed) => {}
                        _ = stop.changed() => return,
                    }
                }
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
        ok &= self
            .events
            .report(&current.snapshot.warnings, &current.objects, &self.metrics)
            .await;
        ok
    }

    /// The addresses every owned Ingress should show; `None` while they are not known yet
    /// (the Node reflector has not listed).
    fn desired(&mut self) -> Option<Vec<IngressLoadBalancerIngress>> {
        let key = match &self.publish {
            Publish::Nothing => return None,
            Publish::Addresses(addresses) => return Some(addresses.clone()),
            Publish::Service(key) => key,
        };
        let service = self.publish_service.as_ref().and_then(|store| {
            store
                .state()
                .into_iter()
                .find(|s| ObjectKey::of(&s.metadata) == *key)
        });
        let Some(service) = service else {
            return Some(Vec::new());
        };
        let addresses = service_addresses(&service);
        if !addresses.is_empty() || !is_node_port(&service) {
            return Some(addresses);
        }
        let nodes = self.nodes.get_or_insert_with(|| {
            tracing::info!(service = %key, "--publish-service is a NodePort Service: publishing its nodes' addresses (watching Nodes)");
            let api = Api::<Node>::all(self.client.clone());
            let config = watcher::Config::default();
            watches::spawn(&self.watch_ctx, "Node", api, config, false, trim_node)
        });
        if !*nodes.synced.borrow() {
            return None;
        }
        Some(node_addresses(
            nodes.store.state().iter().map(|n| n.as_ref()),
        ))
    }

    async fn reconcile_status(&mut self, current: &InService) -> bool {
        let Some(desired) = self.desired() else {
            return true;
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
