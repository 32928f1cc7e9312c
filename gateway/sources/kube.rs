//! The Kubernetes API source: kube-rs reflectors over the kinds Gatehouse reads, feeding the same
//! [`Objects`](crate::objects::Objects) and [`shared::rebuild`] path as the manifest directory.
//!
//! - One reflector per kind (per namespace with `--watch-namespace`); Secrets are restricted to
//!   `type: kubernetes.io/tls` plus Gatehouse's own labelled Secrets, so the gateway does not
//!   hold every Secret of the cluster in memory. The other Secrets are watched by metadata only;
//!   those Ingresses name in `auth-secret` are fetched in full ([`auth_secrets`]).
//! - The first configuration is built once every watch has finished its first list; until then
//!   `/readyz` says not ready.
//! - Changes are debounced ([`DEBOUNCE`]): a burst becomes one rebuild, and a storm still gets a
//!   rebuild every [`Debounce::cap`].
//! - An API server that goes away changes nothing being served: the stores keep their objects,
//!   the watches resume with backoff, and the outage shows in the logs,
//!   `gatehouse_kube_watch_errors_total{kind}` and `gatehouse_kube_connected`. Once the API
//!   server answers again every watch retries at once (its backoff may have grown to 30 s), and
//!   one told `410 Gone` lists again without waiting.
//! - Leader election ([`crate::leader`]) decides which replica writes Ingress status and Events
//!   ([`crate::status`]).

mod acme_store;
pub mod auth_secrets;
pub mod debounce;
pub mod metrics;
pub mod settings;
pub mod watches;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use self::acme_store::{
    ACCOUNT_SECRET, CHALLENGES_SECRET, ChallengeMirror, KubeStore, order_secret_name,
};
use self::auth_secrets::AuthSecrets;
pub use self::debounce::{DEBOUNCE, Debounce};
pub use self::metrics::KubeMetrics;
pub use self::settings::{Publish, Settings};
pub use self::watches::SECRET_LABEL;
use self::watches::Watches;
use crate::config::Config;
use crate::leader::{self, Elector};
use crate::shared::{self, Shared};
use crate::status::{self, InService};

/// The running source: its tasks end when `stop` fires.
pub struct KubeSource {
    tasks: Vec<JoinHandle<()>>,
}

// === impl KubeSource ===

impl KubeSource {
    /// Waits for the tasks (the leader releases its Lease on the way out), at most a few seconds.
    pub async fn join(self) {
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            tracing::warn!("Kubernetes source did not stop within 5 s");
        }
    }
}

/// Connects to the API server and starts the watches, the rebuild loop, leader election and the
/// status writer. Returns at once: readiness follows the first full sync.
pub async fn start(
    shared: Arc<Shared>,
    config: &Config,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<KubeSource> {
    let settings = &config.kube;
    let client = connect(settings).await?;
    let metrics = KubeMetrics::register(&shared.metrics.registry)
        .context("cannot register the Kubernetes metrics")?;
    let controller_namespace = settings
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let identity = leader::default_identity();
    tracing::info!(
        namespaces = %if settings.watch_namespaces.is_empty() { "(all)".to_owned() } else { settings.watch_namespaces.join(",") },
        controller_namespace = %controller_namespace,
        identity = %identity,
        "watching the Kubernetes API"
    );

    let changes = Arc::new(Notify::new());
    let trouble = Arc::new(Notify::new());
    let (reconnected_tx, reconnected) = watch::channel(0u64);
    let publish_service = match &settings.publish {
        Publish::Service(key) => Some(key.clone()),
        _ => None,
    };
    let watch_ctx = watches::Context {
        changes: changes.clone(),
        trouble: trouble.clone(),
        metrics: metrics.clone(),
        reconnected,
        stop: stop.clone(),
    };
    // Node changes (watched only to publish a NodePort Service's addresses) go to the status
    // writer, not to a rebuild.
    let status_watch_ctx = watches::Context {
        changes: Arc::new(Notify::new()),
        ..watch_ctx.clone()
    };
    let watches = Watches::start(
        &client,
        &settings.watch_namespaces,
        &controller_namespace,
        publish_service.as_ref(),
        watch_ctx,
    );
    let (in_service_tx, in_service_rx) = watch::channel(None);
    let mut tasks = watches.tasks;
    tasks.push(tokio::spawn(rebuild_loop(
        shared.clone(),
        AuthSecrets::new(client.clone(), &settings.watch_namespaces),
        watches.stores.clone(),
        watches.synced,
        config.translate.clone(),
        controller_namespace.clone(),
        changes,
        in_service_tx,
        stop.clone(),
    )));
    start_acme(&shared, config, &client, &controller_namespace, &stop)?;
    tasks.push(tokio::spawn(watch_connection(
        client.clone(),
        metrics.clone(),
        trouble,
        reconnected_tx,
        stop.clone(),
    )));
    let elector = Elector::new(
        Api::<Lease>::namespaced(client.clone(), &controller_namespace),
        leader::Settings {
            namespace: controller_namespace.clone(),
            name: settings.lease_name.clone(),
            identity: identity.clone(),
            duration: settings.lease_duration,
            renew: settings.lease_renew,
        },
    );
    tasks.push(tokio::spawn(
        elector.run(shared.leadership.clone(), stop.clone()),
    ));
    let leader_gauge = metrics.leader.clone();
    let mut leadership = shared.leadership.subscribe();
    let mut leader_stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            leader_gauge.set(i64::from(*leadership.borrow_and_update()));
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { return },
                _ = leader_stop.changed() => return,
            }
        }
    }));
    let writer = status::Writer::new(
        client.clone(),
        settings.publish.clone(),
        watches.stores.publish_service.clone(),
        status::events::Reporter::new(client, config.translate.controller_name.clone(), identity),
        metrics,
        status_watch_ctx,
    );
    tasks.push(tokio::spawn(writer.run(
        shared.leadership.clone(),
        in_service_rx,
        stop,
    )));
    Ok(KubeSource { tasks })
}

/// A client from `--kubeconfig`, else `$KUBECONFIG` / `~/.kube/config` / in-cluster.
async fn connect(settings: &Settings) -> anyhow::Result<Client> {
    // kube-rs builds its rustls client on the process-default crypto provider, and with more
    // than one provider compiled in there is none until one is installed. Already installed
    // (by another part) is fine.
    let _ = rustls::crypto::CryptoProvider::install_default(
        rustls::crypto::aws_lc_rs::default_provider(),
    );
    let mut config = match &settings.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("cannot use --kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster service account",
        )?,
    };
    // No transparent retries of 429/503/504 inside the client (kube's default retries up to 15
    // times with growing delays): a request stuck retrying would hide an outage from the
    // connected gauge and keep a leader from noticing it can no longer renew. Every caller here
    // retries on its own terms (watch backoff, election rounds, status resync).
    config.default_retry = false;
    Client::try_from(config).context("cannot build a Kubernetes client")
}

/// Starts the ACME manager with Secrets as its store, only with `--acme-email` (the chart sets
/// it exactly when ACME is enabled, which is also when it may write Secrets). Only the leader
/// orders; every replica serves the shared challenge answers.
fn start_acme(
    shared: &Arc<Shared>,
    config: &Config,
    client: &Client,
    controller_namespace: &str,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if config.acme.email.is_none() {
        tracing::info!(
            "ACME is off (no --acme-email): Ingresses annotated kubernetes.io/tls-acme get no certificate"
        );
        return Ok(());
    }
    let store = KubeStore::new(client.clone(), controller_namespace.to_owned());
    crate::acme::manager::spawn(shared, &config.acme, Some(Arc::new(store)), stop.clone())
        .context("cannot start the ACME manager")
}

/// The first retry of a failed authentication Secret fetch, doubling up to the second.
const FETCH_RETRY_MIN: Duration = Duration::from_secs(1);
const FETCH_RETRY_MAX: Duration = Duration::from_secs(30);

/// Builds the first configuration once every watch has listed, then one per settled burst of
/// changes (each with the authentication Secrets the Ingresses name), and hands each to the
/// status writer.
#[allow(clippy::too_many_arguments)]
async fn rebuild_loop(
    shared: Arc<Shared>,
    mut auth_secrets: AuthSecrets,
    stores: Arc<watches::Stores>,
    synced: Vec<watch::Receiver<bool>>,
    settings: crate::translate::Settings,
    controller_namespace: String,
    changes: Arc<Notify>,
    in_service: watch::Sender<Option<Arc<InService>>>,
    mut stop: watch::Receiver<bool>,
) {
    for mut watch_synced in synced {
        tokio::select! {
            done = watch_synced.wait_for(|s| *s) => if done.is_err() { return },
            _ = stop.changed() => return,
        }
    }
    tracing::info!("every Kubernetes watch has listed: building the first configuration");
    let mut challenges = ChallengeMirror::default();
    let mut rebuilder = shared::Rebuilder::new(settings);
    let mut retry: Option<Duration> = None;
    loop {
        let mut objects = stores.objects();
        let supplied = tokio::select! {
            supplied = auth_secrets.supply(&mut objects, &stores.secret_meta) => supplied,
            _ = stop.changed() => return,
        };
        let objects = Arc::new(objects);
        // translate() is CPU work: off the async workers, which keep serving meanwhile.
        let built = tokio::task::spawn_blocking({
            let (shared, objects) = (shared.clone(), objects.clone());
            move || {
                rebuilder.rebuild(&shared, &objects, Vec::new());
                rebuilder
            }
        })
        .await;
        rebuilder = match built {
            Ok(rebuilder) => rebuilder,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            // The runtime is shutting down.
            Err(_) => return,
        };
        challenges.sync(&shared.challenges, &objects, &controller_namespace);
        in_service.send_replace(Some(Arc::new(InService {
            objects,
            snapshot: shared.snapshot(),
        })));
        // A Secret that could not be fetched is tried again, backing off while it fails.
        retry = (supplied.failed > 0)
            .then(|| retry.map_or(FETCH_RETRY_MIN, |d| (d * 2).min(FETCH_RETRY_MAX)));
        tokio::select! {
            _ = changes.notified() => {}
            _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = DEBOUNCE.settle(&changes) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Keeps `gatehouse_kube_connected` true to what the API server answers: checked at start and
/// whenever a watch reports an error, then every second until it answers again. When it does,
/// `reconnected` wakes every watch waiting out its backoff.
async fn watch_connection(
    client: Client,
    metrics: KubeMetrics,
    trouble: Arc<Notify>,
    reconnected: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connected: Option<bool> = None;
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await;
        let ok = matches!(answer, Ok(Ok(_)));
        metrics.connected.set(i64::from(ok));
        match (connected, ok) {
            (Some(false), true) => {
                tracing::info!("Kubernetes API reachable again: watches resume now");
                reconnected.send_modify(|n| *n = n.wrapping_add(1));
            }
            (Some(true) | None, false) => {
                let error = match answer {
                    Ok(Err(err)) => err.to_string(),
                    _ => "no answer within 5 s".into(),
                };
                tracing::warn!(%error, "Kubernetes API unreachable: serving the last known configuration");
            }
            _ => {}
        }
        connected = Some(ok);
        tokio::select! {
            _ = trouble.notified(), if ok => {}
            _ = tokio::time::sleep(Duration::from_secs(1)), if !ok => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests;
