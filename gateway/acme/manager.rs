//! The ACME manager: watches the snapshot's wants, orders what is missing or due, and keeps
//! track of failures.
//!
//! One loop owns all bookkeeping (no locks); orders run as tasks, at most
//! `max_concurrent_orders` at a time, and report back over a channel. A want whose order fails
//! waits out its own backoff; the others carry on. The certificate in place keeps serving until
//! its replacement is stored and comes back through the sources.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{Account, AccountCredentials, NewAccount};
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, Semaphore, mpsc, watch};

use super::client::{AcmeHttp, capture_retry_after};
use super::dns01::Dns01;
use super::metrics::CertificateMetrics;
use super::order::{OrderContext, OrderError, obtain, store_error};
use super::store::{Store, managed_by_gatehouse, recorded_directory};
use super::{
    AcmeWant, CertInfo, CertStatus, Decision, FailureKind, OrderReason, Settings, decide,
    jitter_seed, next_attempt,
};
use crate::objects::ObjectKey;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::tls::certs::{TlsCert, rfc3339};

/// Longest sleep between two looks at the wants (clocks jump; certificates expire).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// What is saved of the account: the directory it belongs to, and its credentials.
#[derive(Serialize, Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Orders certificates for the snapshot's ACME wants.
pub struct Manager {
    shared: Arc<Shared>,
    settings: Settings,
    store: Arc<dyn Store>,
    http: AcmeHttp,
    dns01: Option<Dns01>,
    account: OnceCell<Account>,
    orders: Semaphore,
}

/// What the loop knows of one want.
#[derive(Debug, Default)]
struct Tracked {
    hosts: Vec<String>,
    running: bool,
    /// Failures in a row, the last one's error, and when the next try may start.
    failures: u32,
    last_error: Option<String>,
    retry_at: Option<SystemTime>,
    /// A certificate stored but not yet seen in the snapshot: it counts as in place.
    issued: Option<CertInfo>,
    /// Why it cannot be ordered, as last logged (logged again only when it changes).
    blocked: Option<String>,
}

/// An order task's report.
struct Done {
    secret: ObjectKey,
    hosts: Vec<String>,
    result: Result<CertInfo, OrderError>,
    retry_after: Option<SystemTime>,
}

/// The certificate in place for a want: what it is, and who issued it.
struct InPlace {
    info: CertInfo,
    issuer: Option<String>,
}

// === impl Manager ===

impl Manager {
    /// A manager keeping its account and certificates in `store`.
    pub fn new(
        shared: Arc<Shared>,
        settings: Settings,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Arc<Self>> {
        let http = AcmeHttp::new(
            settings.ca_bundle.as_deref(),
            shared.metrics.acme_problems.clone(),
        )?;
        let dns01 = settings.dns01.clone().map(Dns01::new).transpose()?;
        Ok(Arc::new(Self {
            orders: Semaphore::new(settings.max_concurrent_orders.max(1)),
            shared,
            settings,
            store,
            http,
            dns01,
            account: OnceCell::new(),
        }))
    }

    /// Runs until `stop` turns true. Orders are placed only while `may_order` is true (in a
    /// cluster: while this replica leads); in manifest mode it always is.
    pub async fn run(
        self: Arc<Self>,
        mut metrics: CertificateMetrics,
        mut may_order: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut snapshots = self.shared.subscribe();
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
        let mut tracked: HashMap<ObjectKey, Tracked> = HashMap::new();
        tracing::info!(directory = %self.settings.directory, challenge = self.settings.challenge.label(), dns01 = ?self.settings.dns01.as_ref().map(|d| d.server), "ACME manager started");
        loop {
            if *stop.borrow() {
                return;
            }
            let snapshot = self.shared.snapshot();
            let leader = *may_order.borrow();
            let wake = self.review(&snapshot, &mut tracked, leader, &done_tx, &mut metrics);
            let sleep = wake
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = changed(&mut snapshots) => {}
                _ = changed(&mut may_order) => {}
                _ = stop.changed() => {}
                Some(done) = done_rx.recv() => self.record(&mut tracked, done),
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Starts the orders due now, publishes every certificate's state (`/routes`, metrics);
    /// returns when the next order falls due.
    fn review(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        tracked: &mut HashMap<ObjectKey, Tracked>,
        leader: bool,
        done_tx: &mpsc::Sender<Done>,
        metrics: &mut CertificateMetrics,
    ) -> Option<SystemTime> {
        let now = SystemTime::now();
        tracked.retain(|secret, t| t.running || snapshot.acme.iter().any(|w| w.secret == *secret));
        let mut wake: Option<SystemTime> = None;
        let mut wake_at = |at: SystemTime| wake = Some(wake.map_or(at, |w| w.min(at)));
        let mut statuses = BTreeMap::new();
        let mut renewals = BTreeMap::new();
        for want in &snapshot.acme {
            let t = tracked.entry(want.secret.clone()).or_default();
            if t.hosts != want.hosts {
                // New hosts: a fresh start, whatever failed for the old ones.
                *t = Tracked {
                    hosts: want.hosts.clone(),
                    running: t.running,
                    ..Tracked::default()
                };
            }
            // A Secret someone else made is never overwritten (see `store::MANAGED_BY_LABEL`).
            let managed = snapshot
                .tls
                .secret(&want.secret)
                .is_none_or(|s| managed_by_gatehouse(&s.metadata));
            let in_snapshot = current_certificate(snapshot, want, managed);
            let current = match (in_snapshot, &t.issued) {
                (Some(cert), Some(issued)) if cert.info.not_after >= issued.not_after => {
                    t.issued = None;
                    Some(cert)
                }
                (_, Some(issued)) => Some(InPlace {
                    info: issued.clone(),
                    issuer: None,
                }),
                (cert, None) => cert,
            };
            let mut status = CertStatus {
                ingress: want.ingress.to_string(),
                hosts: want.hosts.clone(),
                state: "valid",
                reason: None,
                directory: current.as_ref().and_then(|c| c.info.directory.clone()),
                issuer: current.as_ref().and_then(|c| c.issuer.clone()),
                not_after: current.as_ref().map(|c| rfc3339(c.info.not_after)),
                renew_at: None,
                next_attempt: None,
                failures: t.failures,
                last_error: t.last_error.clone(),
            };
            let key = want.secret.to_string();
            if t.running {
                status.state = "ordering";
                statuses.insert(key, status);
                continue;
            }
            let seed = current
                .as_ref()
                .map_or(0, |c| jitter_seed(&want.secret, c.info.not_after));
            let decision = decide(
                &want.hosts,
                current.as_ref().map(|c| &c.info),
                &self.settings.directory,
                self.settings.renew_before,
                now,
                seed,
            );
            let reason = match decision {
                Decision::Keep { renew_at } if managed => {
                    wake_at(renew_at);
                    status.renew_at = Some(rfc3339(renew_at));
                    renewals.insert(key.clone(), renew_at);
                    t.blocked = None;
                    statuses.insert(key, status);
                    continue;
                }
                Decision::Keep { .. } => {
                    status.reason = Some(not_managed(want));
                    statuses.insert(key, status);
                    continue;
                }
                Decision::Order(reason) => reason,
            };
            if let Some(blocker) = self.blocker(want, managed) {
                if t.blocked.as_ref() != Some(&blocker) {
                    // A certificate that still serves is its owner's to renew: no alarm.
                    if managed || !matches!(reason, OrderReason::RenewalDue) {
                        tracing::warn!(ingress = %want.ingress, secret = %want.secret, %reason, "ACME certificate not ordered: {blocker}");
                    } else {
                        tracing::info!(ingress = %want.ingress, secret = %want.secret, %reason, "ACME certificate not ordered: {blocker}");
                    }
                    t.blocked = Some(blocker.clone());
                }
                status.state = "blocked";
                status.reason = Some(format!("{reason}: {blocker}"));
                statuses.insert(key, status);
                continue;
            }
            t.blocked = None;
            status.reason = Some(reason.to_string());
            if let Some(at) = t.retry_at.filter(|at| *at > now) {
                wake_at(at);
                status.state = "waiting";
                status.next_attempt = Some(rfc3339(at));
                renewals.insert(key.clone(), at);
                statuses.insert(key, status);
                continue;
            }
            if !leader {
                status.state = "standby";
                statuses.insert(key, status);
                continue;
            }
            t.running = true;
            status.state = "ordering";
            statuses.insert(key, status);
            tracing::info!(secret = %want.secret, ingress = %want.ingress, hosts = ?want.hosts, %reason, "ordering an ACME certificate");
            let (this, want, done_tx) = (self.clone(), want.clone(), done_tx.clone());
            tokio::spawn(async move {
                let (result, retry_after) = capture_retry_after(this.order(&want)).await;
                let done = Done {
                    secret: want.secret,
                    hosts: want.hosts,
                    result,
                    retry_after,
                };
                let _ = done_tx.send(done).await;
            });
        }
        self.shared.challenges.http01.set_certificates(statuses);
        metrics.observe_renewals(&renewals);
        metrics.observe_tls(&snapshot.tls);
        wake
    }

    /// Why `want` cannot be ordered with these settings, if it cannot.
    fn blocker(&self, want: &AcmeWant, managed: bool) -> Option<String> {
        if !managed {
            return Some(not_managed(want));
        }
        let wildcard = want.hosts.iter().find(|h| h.starts_with("*."));
        match wildcard {
            Some(host) if self.dns01.is_none() => Some(format!(
                "wildcard host {host} needs the dns-01 challenge: give --acme-dns01-server and --acme-dns01-tsig-key-file"
            )),
            _ => None,
        }
    }

    /// One order, when a slot is free.
    async fn order(&self, want: &AcmeWant) -> Result<CertInfo, OrderError> {
        let _slot = self
            .orders
            .acquire()
            .await
            .map_err(|_| OrderError::transient("shutting down"))?;
        // Nothing is ordered for a Secret the certificate could not be stored in.
        self.store
            .check_certificate_secret(&want.secret)
            .await
            .map_err(store_error)?;
        let account = self
            .account
            .get_or_try_init(|| self.load_or_create_account())
            .await?;
        let ctx = OrderContext {
            account,
            directory: &self.settings.directory,
            store: &*self.store,
            challenges: &self.shared.challenges,
            kind: self.settings.challenge,
            dns01: self.dns01.as_ref(),
        };
        let issued = obtain(&ctx, want).await?;
        let cert = TlsCert::from_pem(
            want.secret.clone(),
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )
        .map_err(|e| OrderError::rejected(format!("the CA sent an unusable certificate: {e}")))?;
        Ok(CertInfo::new(&cert, Some(&self.settings.directory)))
    }

    /// The saved account if it belongs to this directory, else a new one (saved at once).
    async fn load_or_create_account(&self) -> Result<Account, OrderError> {
        let directory = &self.settings.directory;
        let saved =
            self.store.load_account().await.map_err(|e| {
                OrderError::transient(format!("cannot read the ACME account: {e:#}"))
            })?;
        let saved = saved.and_then(|text| match serde_json::from_str::<SavedAccount>(&text) {
            Ok(saved) if saved.directory == *directory => Some(saved),
            Ok(_) => {
                tracing::info!(%directory, "saved ACME account belongs to another directory; creating one");
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "saved ACME account unreadable; creating one");
                None
            }
        });
        let builder = Account::builder_with_http(Box::new(self.http.clone()));
        if let Some(saved) = saved {
            let account = builder.from_credentials(saved.credentials).await?;
            tracing::info!(account = account.id(), "using the saved ACME account");
            return Ok(account);
        }
        let contact = self.settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let eab = self.settings.eab.as_ref().map(super::Eab::key);
        let (account, credentials) = builder
            .create(&new, directory.clone(), eab.as_ref())
            .await
            .map_err(|err| {
                let mut err = OrderError::from(err);
                if err.message.contains("externalAccountRequired") {
                    err.message = format!(
                        "cannot create the ACME account: {}; this CA requires External Account Binding: give --acme-eab-kid and --acme-eab-hmac-key",
                        err.message
                    );
                } else {
                    err.message = format!("cannot create the ACME account: {}", err.message);
                }
                err
            })?;
        let saved = SavedAccount {
            directory: directory.clone(),
            credentials,
        };
        let json = serde_json::to_string(&saved)
            .map_err(|e| OrderError::transient(format!("cannot save the ACME account: {e}")))?;
        self.store
            .save_account(&json)
            .await
            .map_err(|e| OrderError::transient(format!("cannot save the ACME account: {e:#}")))?;
        tracing::info!(account = account.id(), %directory, eab = self.settings.eab.is_some(), "ACME account created");
        Ok(account)
    }

    /// Books an order's outcome: metrics, log, and the backoff of a failure.
    fn record(&self, tracked: &mut HashMap<ObjectKey, Tracked>, done: Done) {
        let metrics = &self.shared.metrics;
        let Some(t) = tracked.get_mut(&done.secret) else {
            return;
        };
        t.running = false;
        if t.hosts != done.hosts {
            // The want changed while the order ran: judge the new hosts afresh.
            *t = Tracked {
                hosts: t.hosts.clone(),
                ..Tracked::default()
            };
            if let Ok(cert) = done.result {
                t.issued = Some(cert);
            }
            return;
        }
        match done.result {
            Ok(cert) => {
                metrics.acme_orders.with_label_values(&["issued"]).inc();
                tracing::info!(secret = %done.secret, hosts = ?done.hosts, not_after = %rfc3339(cert.not_after), directory = %self.settings.directory, "ACME certificate issued and stored");
                t.failures = 0;
                t.retry_at = None;
                t.last_error = None;
                t.issued = Some(cert);
            }
            Err(err) => {
                let now = SystemTime::now();
                t.failures = t.failures.saturating_add(1);
                let retry_after = match err.kind {
                    FailureKind::RateLimited | FailureKind::Transient => done.retry_after,
                    FailureKind::Rejected => None,
                };
                let at = next_attempt(now, err.kind, t.failures, retry_after);
                t.retry_at = Some(at);
                t.last_error = Some(err.message.clone());
                metrics
                    .acme_orders
                    .with_label_values(&[err.kind.label()])
                    .inc();
                let retry_in = at.duration_since(now).unwrap_or_default().as_secs();
                tracing::warn!(
                    secret = %done.secret, hosts = ?done.hosts, failures = t.failures,
                    kind = err.kind.label(), retry_in_s = retry_in, error = %err,
                    "ACME order failed; the certificate in place (if any) keeps serving"
                );
            }
        }
    }
}

/// The certificate `want`'s Secret holds, as translate() parsed it (expired or not), with the
/// directory it records if Gatehouse manages it; `None` if the Secret is missing or unusable.
fn current_certificate(snapshot: &Snapshot, want: &AcmeWant, managed: bool) -> Option<InPlace> {
    let cert = snapshot.tls.secret_cert(&want.secret)?.ok()?;
    let directory = snapshot
        .tls
        .secret(&want.secret)
        .filter(|_| managed)
        .and_then(|s| recorded_directory(&s.metadata));
    Some(InPlace {
        info: CertInfo::new(cert, directory),
        issuer: Some(cert.issuer.clone()),
    })
}

fn not_managed(want: &AcmeWant) -> String {
    format!(
        "Secret {} is not managed by Gatehouse (no label {}={}): Gatehouse does not overwrite it; add the label to hand it over",
        want.secret,
        super::store::MANAGED_BY_LABEL,
        super::store::MANAGED_BY_VALUE
    )
}

/// Waits for a change; a closed channel never changes again.
async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Starts the ACME manager with `store` or, without one, a watcher that says why the wants of
/// the configuration go unserved. Orders wait for `shared`'s leadership.
pub fn spawn(
    shared: &Arc<Shared>,
    settings: &Settings,
    store: Option<Arc<dyn Store>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let metrics = CertificateMetrics::register(&shared.metrics.registry)?;
    match store {
        Some(store) => {
            for warning in settings.start_warnings() {
                tracing::warn!(directory = %settings.directory, "{warning}");
            }
            let manager = Manager::new(shared.clone(), settings.clone(), store)?;
            tokio::spawn(manager.run(metrics, shared.leadership.subscribe(), stop));
        }
        None => {
            tokio::spawn(warn_unserved(shared.clone(), metrics, stop));
        }
    }
    Ok(())
}

/// Without a place to keep certificates nothing is ordered: say so once per wanted Secret.
async fn warn_unserved(
    shared: Arc<Shared>,
    mut metrics: CertificateMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut snapshots = shared.subscribe();
    let mut warned = std::collections::HashSet::new();
    loop {
        let snapshot = shared.snapshot();
        metrics.observe_tls(&snapshot.tls);
        for want in &snapshot.acme {
            if warned.insert(want.secret.clone()) {
                tracing::warn!(ingress = %want.ingress, secret = %want.secret, hosts = ?want.hosts, "ACME certificate wanted but not ordered: give --state-dir to keep ACME certificates");
            }
        }
        tokio::select! {
            _ = changed(&mut snapshots) => {}
            _ = stop.changed() => return,
        }
    }
}
