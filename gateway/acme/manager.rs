//! The ACME manager: watches the snapshot's wants, orders what is missing or due, and keeps
//! track of failures.
//!
//! One loop owns all bookkeeping (no locks); orders run as tasks, at most
//! `max_concurrent_orders` at a time, and report back over a channel. A want whose order fails
//! waits out its own backoff; the others carry on. The certificate in place keeps serving until
//! its replacement is stored and comes back through the sources.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{Account, AccountCredentials, NewAccount};
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, Semaphore, mpsc, watch};

use super::client::{AcmeHttp, capture_retry_after};
use super::order::{OrderContext, OrderError, obtain};
use super::store::Store;
use super::{
    AcmeWant, CertInfo, Decision, FailureKind, Settings, decide, jitter_seed, next_attempt,
};
use crate::objects::ObjectKey;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::tls::certs::TlsCert;

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
    account: OnceCell<Account>,
    orders: Semaphore,
}

/// What the loop knows of one want.
#[derive(Debug, Default)]
struct Tracked {
    hosts: Vec<String>,
    running: bool,
    /// Failures in a row, and when the next try may start.
    failures: u32,
    retry_at: Option<SystemTime>,
    /// A certificate stored but not yet seen in the snapshot: it counts as in place.
    issued: Option<CertInfo>,
}

/// An order task's report.
struct Done {
    secret: ObjectKey,
    hosts: Vec<String>,
    result: Result<CertInfo, OrderError>,
    retry_after: Option<SystemTime>,
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
        Ok(Arc::new(Self {
            orders: Semaphore::new(settings.max_concurrent_orders.max(1)),
            shared,
            settings,
            store,
            http,
            account: OnceCell::new(),
        }))
    }

    /// Runs until `stop` turns true. Orders are placed only while `may_order` is true (in a
    /// cluster: while this replica leads); in manifest mode it always is.
    pub async fn run(
        self: Arc<Self>,
        mut may_order: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut snapshots = self.shared.subscribe();
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
        let mut tracked: HashMap<ObjectKey, Tracked> = HashMap::new();
        tracing::info!(directory = %self.settings.directory, challenge = self.settings.challenge.label(), "ACME manager started");
        loop {
            if *stop.borrow() {
                return;
            }
            let snapshot = self.shared.snapshot.load_full();
            let leader = *may_order.borrow();
            let wake = self.review(&snapshot, &mut tracked, leader, &done_tx);
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

    /// Starts the orders due now; returns when the next one falls due.
    fn review(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        tracked: &mut HashMap<ObjectKey, Tracked>,
        leader: bool,
        done_tx: &mpsc::Sender<Done>,
    ) -> Option<SystemTime> {
        let now = SystemTime::now();
        tracked.retain(|secret, t| t.running || snapshot.acme.iter().any(|w| w.secret == *secret));
        let mut wake: Option<SystemTime> = None;
        let mut wake_at = |at: SystemTime| wake = Some(wake.map_or(at, |w| w.min(at)));
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
            if t.running {
                continue;
            }
            let in_snapshot = current_certificate(snapshot, want);
            let current = match (in_snapshot, &t.issued) {
                (Some(cert), Some(issued)) if cert.not_after >= issued.not_after => {
                    t.issued = None;
                    Some(cert)
                }
                (_, Some(issued)) => Some(issued.clone()),
                (cert, None) => cert,
            };
            let seed = current
                .as_ref()
                .map_or(0, |c| jitter_seed(&want.secret, c.not_after));
            let reason = match decide(
                &want.hosts,
                current.as_ref(),
                self.settings.renew_before,
                now,
                seed,
            ) {
                Decision::Keep { renew_at } => {
                    wake_at(renew_at);
                    continue;
                }
                Decision::Order(reason) => reason,
            };
            if let Some(at) = t.retry_at.filter(|at| *at > now) {
                wake_at(at);
                continue;
            }
            if !leader {
                continue;
            }
            t.running = true;
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
        wake
    }

    /// One order, when a slot is free.
    async fn order(&self, want: &AcmeWant) -> Result<CertInfo, OrderError> {
        let _slot = self
            .orders
            .acquire()
            .await
            .map_err(|_| OrderError::transient("shutting down"))?;
        let account = self
            .account
            .get_or_try_init(|| self.load_or_create_account())
            .await?;
        let ctx = OrderContext {
            account,
            store: &*self.store,
            shared: &self.shared,
            kind: self.settings.challenge,
        };
        let issued = obtain(&ctx, want).await?;
        let cert = TlsCert::from_pem(
            want.secret.clone(),
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )
        .map_err(|e| OrderError::rejected(format!("the CA sent an unusable certificate: {e}")))?;
        Ok(CertInfo::from(&cert))
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
        let (account, credentials) = builder.create(&new, directory.clone(), None).await?;
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
        tracing::info!(account = account.id(), "ACME account created");
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
                tracing::info!(secret = %done.secret, hosts = ?done.hosts, not_after = %crate::tls::certs::rfc3339(cert.not_after), "ACME certificate issued and stored");
                t.failures = 0;
                t.retry_at = None;
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

/// The certificate `want`'s Secret holds, as translate() parsed it (expired or not); `None` if
/// the Secret is missing or unusable.
fn current_certificate(snapshot: &Snapshot, want: &AcmeWant) -> Option<CertInfo> {
    match snapshot.tls.secret_cert(&want.secret)? {
        Ok(cert) => Some(CertInfo::from(&**cert)),
        Err(_) => None,
    }
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
    match store {
        Some(store) => {
            let manager = Manager::new(shared.clone(), settings.clone(), store)?;
            tokio::spawn(manager.run(shared.leadership(), stop));
        }
        None => {
            tokio::spawn(warn_unserved(shared.clone(), stop));
        }
    }
    Ok(())
}

/// Without a place to keep certificates nothing is ordered: say so once per wanted Secret.
async fn warn_unserved(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut snapshots = shared.subscribe();
    let mut warned = std::collections::HashSet::new();
    loop {
        for want in &shared.snapshot.load().acme {
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
