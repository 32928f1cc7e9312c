//! How the Kubernetes source is set up: what `--kubeconfig`, `--watch-namespace`,
//! `--publish-*` and the Lease flags resolve to. A leaf: the configuration, the source and the
//! status writer all read it, and it reads none of them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;

use crate::objects::ObjectKey;

/// How the Kubernetes source is set up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Kubeconfig file; `None`: `$KUBECONFIG`, `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces to watch; empty: all.
    pub watch_namespaces: Vec<String>,
    pub publish: Publish,
    /// Namespace of the Lease; `None`: `$POD_NAMESPACE`, else the kubeconfig's namespace.
    pub leader_election_namespace: Option<String>,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub lease_renew: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            watch_namespaces: Vec::new(),
            publish: Publish::Nothing,
            leader_election_namespace: None,
            lease_name: "gatehouse-leader".into(),
            lease_duration: Duration::from_secs(15),
            lease_renew: Duration::from_secs(5),
        }
    }
}

// === impl Settings ===

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_renew.is_zero() || self.lease_duration <= self.lease_renew {
            return Err(format!(
                "--lease-renew ({}) must be more than zero and less than --lease-duration ({})",
                humantime::format_duration(self.lease_renew),
                humantime::format_duration(self.lease_duration)
            ));
        }
        if self.lease_name.is_empty() {
            return Err("--lease-name must not be empty".into());
        }
        if let Some(ns) = self.watch_namespaces.iter().find(|ns| !valid_name(ns)) {
            return Err(format!("--watch-namespace {ns:?} is not a namespace name"));
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Where the addresses written into Ingress status come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Publish {
    /// Status is not written.
    #[default]
    Nothing,
    /// The load-balancer ingress and external IPs of this Service (for a NodePort Service
    /// without them: its nodes' addresses).
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

/// Sorted and without duplicates, so lists compare equal whatever order they were written in.
pub fn normalized(list: &[IngressLoadBalancerIngress]) -> Vec<IngressLoadBalancerIngress> {
    let mut out = list.to_vec();
    out.sort_by(|a, b| (&a.ip, &a.hostname).cmp(&(&b.ip, &b.hostname)));
    out.dedup();
    out
}
