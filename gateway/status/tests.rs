use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::jiff::Timestamp;

use super::events::event_for;
use super::{Change, Publish, node_addresses, plan, service_addresses, trim_node};
use crate::objects::{Object, ObjectKey, Objects};
use crate::snapshot::Warning;

fn ip(a: &str) -> IngressLoadBalancerIngress {
    IngressLoadBalancerIngress {
        ip: Some(a.into()),
        ..Default::default()
    }
}

fn host(h: &str) -> IngressLoadBalancerIngress {
    IngressLoadBalancerIngress {
        hostname: Some(h.into()),
        ..Default::default()
    }
}

fn ingress(name: &str, status: &[&str]) -> (ObjectKey, Arc<Ingress>) {
    let lb: Vec<serde_json::Value> = status
        .iter()
        .map(|a| serde_json::json!({"ip": a}))
        .collect();
    let value = serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {},
        "status": {"loadBalancer": {"ingress": lb}},
    });
    let ingress: Ingress = serde_json::from_value(value).expect("ingress");
    (ObjectKey::new("default", name), Arc::new(ingress))
}

fn keys(names: &[&str]) -> BTreeSet<ObjectKey> {
    names
        .iter()
        .map(|n| ObjectKey::new("default", *n))
        .collect()
}

#[test]
fn publish_address_wins_and_mixes_ips_and_hosts() {
    let publish = Publish::parse(
        Some("gh/gatehouse"),
        Some("lb.example.com, 10.0.0.2,10.0.0.1"),
    );
    assert_eq!(
        publish,
        Ok(Publish::Addresses(vec![
            host("lb.example.com"),
            ip("10.0.0.1"),
            ip("10.0.0.2")
        ]))
    );
}

#[test]
fn publish_service_needs_namespace_and_name() {
    assert_eq!(
        Publish::parse(Some("gh/gatehouse"), None),
        Ok(Publish::Service(ObjectKey::new("gh", "gatehouse")))
    );
    assert!(Publish::parse(Some("gatehouse"), None).is_err());
    assert!(Publish::parse(Some("a/b/c"), None).is_err());
    assert_eq!(Publish::parse(None, None), Ok(Publish::Nothing));
}

#[test]
fn publish_address_rejects_what_is_not_an_address() {
    let err = Publish::parse(None, Some("10.0.0.1,not a host")).unwrap_err();
    assert!(err.contains("not a host"), "{err}");
}

#[test]
fn service_publishes_load_balancer_ingress_and_external_ips() {
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gh", "namespace": "gh"},
        "spec": {"type": "LoadBalancer", "externalIPs": ["192.0.2.7"]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.net"}]}},
    }))
    .expect("service");
    assert_eq!(
        service_addresses(&service),
        vec![host("lb.example.net"), ip("192.0.2.7"), ip("203.0.113.9")]
    );
}

fn node(name: &str, ready: &str, addresses: &[(&str, &str)], labels: serde_json::Value) -> Node {
    let addresses: Vec<_> = addresses
        .iter()
        .map(|(t, a)| serde_json::json!({"type": t, "address": a}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": addresses, "conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": ready},
        ]},
    }))
    .expect("node")
}

#[test]
fn node_port_addresses_are_each_ready_nodes_external_else_internal_ips() {
    let none = serde_json::json!({});
    let nodes = [
        node(
            "both",
            "True",
            &[
                ("InternalIP", "10.0.0.1"),
                ("ExternalIP", "203.0.113.1"),
                ("ExternalIP", "2001:db8::1"),
            ],
            none.clone(),
        ),
        node(
            "internal",
            "True",
            &[
                ("InternalIP", "10.0.0.2"),
                ("Hostname", "internal"),
                ("InternalDNS", "internal.local"),
            ],
            none.clone(),
        ),
        node(
            "not-ready",
            "False",
            &[("ExternalIP", "203.0.113.3")],
            none.clone(),
        ),
        node(
            "unknown",
            "Unknown",
            &[("ExternalIP", "203.0.113.4")],
            none.clone(),
        ),
        node(
            "excluded",
            "True",
            &[("ExternalIP", "203.0.113.5")],
            serde_json::json!({"node.kubernetes.io/exclude-from-external-load-balancers": "true"}),
        ),
        node(
            "junk",
            "True",
            &[("InternalIP", "not an address")],
            none.clone(),
        ),
        node("same", "True", &[("InternalIP", "10.0.0.2")], none),
    ];
    assert_eq!(
        node_addresses(&nodes),
        vec![ip("10.0.0.2"), ip("2001:db8::1"), ip("203.0.113.1")]
    );
}

#[test]
fn trimmed_node_keeps_what_its_addresses_are_read_from() {
    let mut full: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n", "labels": {"a": "b"}, "annotations": {"big": "x".repeat(1000)}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "addresses": [{"type": "ExternalIP", "address": "203.0.113.1"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "images": [{"names": ["registry.example/big:1"], "sizeBytes": 1}],
            "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "",
                "operatingSystem": "linux", "osImage": "", "systemUUID": ""},
        },
    }))
    .expect("node");
    let before = node_addresses([&full]);
    trim_node(&mut full);
    assert_eq!(node_addresses([&full]), before);
    assert!(full.metadata.annotations.is_none() && full.spec.is_none());
    let status = full.status.expect("status");
    assert!(status.images.is_none() && status.node_info.is_none());
}

#[test]
fn owned_ingress_gets_the_published_addresses_once() {
    let ingresses: BTreeMap<_, _> = [ingress("new", &[]), ingress("done", &["10.0.0.1"])].into();
    let changes = plan(
        &ingresses,
        &keys(&["new", "done"]),
        &BTreeSet::new(),
        &[ip("10.0.0.1")],
    );
    assert_eq!(
        changes,
        vec![Change {
            ingress: ObjectKey::new("default", "new"),
            addresses: vec![ip("10.0.0.1")],
        }]
    );
}

#[test]
fn ingress_that_stops_being_ours_loses_its_addresses() {
    let ingresses: BTreeMap<_, _> = [ingress("left", &["10.0.0.1"])].into();
    let changes = plan(
        &ingresses,
        &BTreeSet::new(),
        &keys(&["left"]),
        &[ip("10.0.0.9")],
    );
    assert_eq!(
        changes,
        vec![Change {
            ingress: ObjectKey::new("default", "left"),
            addresses: vec![],
        }]
    );
}

#[test]
fn other_controllers_ingresses_are_never_touched() {
    let ingresses: BTreeMap<_, _> =
        [ingress("theirs", &["198.51.100.1"]), ingress("bare", &[])].into();
    let changes = plan(
        &ingresses,
        &BTreeSet::new(),
        &BTreeSet::new(),
        &[ip("10.0.0.1")],
    );
    assert_eq!(changes, vec![]);
}

#[test]
fn warning_event_regards_the_ingress_with_its_uid() {
    let mut objects = Objects::default();
    let (_, web) = ingress("web", &[]);
    objects.insert(Object::Ingress(web));
    let warning = Warning {
        kind: "Ingress",
        object: ObjectKey::new("default", "web"),
        reason: "Service default/api not found".into(),
    };
    let event = event_for(
        &warning,
        &objects,
        "gatehouse.dev/ingress-controller",
        "gh-0",
        Timestamp::UNIX_EPOCH,
    )
    .expect("event");
    let regarding = event.regarding.expect("regarding");
    assert_eq!(regarding.kind.as_deref(), Some("Ingress"));
    assert_eq!(
        regarding.api_version.as_deref(),
        Some("networking.k8s.io/v1")
    );
    assert_eq!(regarding.uid.as_deref(), Some("uid-web"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.note.as_deref(), Some("Service default/api not found"));
    assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
}
