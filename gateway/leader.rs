//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica serves the same routes; only the leader writes Ingress status and Events and
//! places ACME orders. The protocol is client-go's, on plain get/create/replace with the
//! Lease's `resourceVersion` for optimistic concurrency (the chart's Role grants exactly
//! `get/create/update`):
//!
//! - a candidate takes a Lease that is free, or whose record has not changed for its
//!   `leaseDurationSeconds` as measured on the candidate's own monotonic clock (so clock skew
//!   between nodes does not matter);
//! - the leader renews every `renew` interval and steps down by itself if it could not renew for
//!   `duration - renew`, before anyone else may take the Lease over;
//! - a leader that shuts down releases the Lease, so the next one takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::shared::Leadership;

/// Where the Lease is and how it is held.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub name: String,
    /// This replica's name in `spec.holderIdentity`: unique per process.
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// How often the leader renews and candidates check.
    pub renew: Duration,
}

/// What a candidate does with the Lease record it just read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// It holds the Lease: renew it.
    Renew,
    /// The Lease is free or expired: take it.
    TakeOver,
    /// Someone else holds a live Lease.
    Wait,
}

/// Decides from the holder named in the Lease and how long its record has been unchanged
/// (on this replica's clock) against the duration the holder asked for.
pub fn next_step(
    holder: Option<&str>,
    me: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Step {
    match holder {
        Some(h) if h == me => Step::Renew,
        None | Some("") => Step::TakeOver,
        Some(_) if unchanged_for >= lease_duration => Step::TakeOver,
        Some(_) => Step::Wait,
    }
}

/// The identity of this process: `$POD_NAME` in a pod, else `hostname_pid` (two processes on one
/// machine must never share an identity, or both would think they lead).
pub fn default_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gatehouse".into());
    format!("{host}_{}", std::process::id())
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
    /// `resourceVersion` of the record last read and when it was first seen.
    observed: Option<(String, Instant)>,
    last_renewed: Option<Instant>,
    leading: bool,
}

// === impl Elector ===

impl Elector {
    pub fn new(api: Api<Lease>, settings: Settings) -> Self {
        Self {
            api,
            settings,
            observed: None,
            last_renewed: None,
            leading: false,
        }
    }

    /// Campaigns and renews until `stop`, publishing it in `leadership`; releases
    /// the Lease on the way out if it holds it.
    pub async fn run(mut self, leadership: Leadership, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            lease = %format!("{}/{}", self.settings.namespace, self.settings.name),
            identity = %self.settings.identity,
            "leader election started"
        );
        let renew_deadline = self.settings.duration.saturating_sub(self.settings.renew);
        loop {
            // A round never outlives the time a leader may go without renewing.
            let round = renew_deadline.max(self.settings.renew);
            let outcome = tokio::time::timeout(round, self.try_acquire_or_renew())
                .await
                .unwrap_or_else(|_| {
                    Err(kube::Error::Service(
                        "leader Lease request timed out".into(),
                    ))
                });
            let now = Instant::now();
            let leading = match outcome {
                Ok(held) => {
                    if held {
                        self.last_renewed = Some(now);
                    }
                    held
                }
                Err(err) => {
                    // Keep leading through a short outage, never past the point where another
                    // replica may consider the Lease expired.
                    let fresh = self
                        .last_renewed
                        .is_some_and(|t| now.duration_since(t) < renew_deadline);
                    tracing::warn!(error = %err, leading = self.leading && fresh, "cannot read or renew the leader Lease");
                    self.leading && fresh
                }
            };
            self.set_leading(&leadership, leading);
            tokio::select! {
                _ = tokio::time::sleep(self.settings.renew) => {}
                _ = stop.changed() => break,
            }
        }
        if self.leading {
            self.release().await;
            self.set_leading(&leadership, false);
        }
    }

    fn set_leading(&mut self, leadership: &Leadership, leading: bool) {
        if leading != self.leading {
            if leading {
                tracing::info!(identity = %self.settings.identity, "became the leader: writing Ingress status and Events");
            } else {
                tracing::warn!(identity = %self.settings.identity, "no longer the leader");
            }
        }
        self.leading = leading;
        leadership.set(leading);
    }

    /// Reads the Lease and creates, renews or takes it over if this replica may. `Ok(true)` when
    /// this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let me = self.settings.identity.clone();
        let duration_secs = i32::try_from(self.settings.duration.as_secs().max(1)).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
                Err(err) => Err(err),
            };
        };
        let unchanged_for = self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let their_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(self.settings.duration);
        let holder = spec.holder_identity.as_deref();
        let step = next_step(holder, &me, unchanged_for, their_duration);
        if step == Step::Wait {
            return Ok(false);
        }
        let had_holder = holder.is_some_and(|h| !h.is_empty());
        let taking_over = step == Step::TakeOver;
        if taking_over {
            tracing::info!(
                previous = holder.unwrap_or(""),
                "taking over the leader Lease"
            );
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if taking_over {
                Some(now.clone())
            } else {
                spec.acquire_time.or(Some(now.clone()))
            },
            renew_time: Some(now),
            lease_transitions: Some(
                spec.lease_transitions.unwrap_or(0) + i32::from(taking_over && had_holder),
            ),
            ..spec
        });
        // `metadata.resourceVersion` stays what was read: a concurrent writer makes this fail.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Records the Lease's version; returns how long that version has been seen unchanged.
    fn observe(&mut self, lease: &Lease) -> Duration {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let now = Instant::now();
        match &self.observed {
            Some((seen, since)) if *seen == version => now.duration_since(*since),
            _ => {
                self.observed = Some((version, now));
                Duration::ZERO
            }
        }
    }

    /// Gives the Lease up so the next replica need not wait for it to expire.
    async fn release(&mut self) {
        let lease = match self.api.get_opt(&self.settings.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot release the leader Lease; it will expire");
                return;
            }
        };
        let mut lease = lease;
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("released the leader Lease"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot release the leader Lease; it will expire")
            }
        }
    }
}

#[cfg(test)]
mod tests;
