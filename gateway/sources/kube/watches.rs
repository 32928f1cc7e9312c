//! The reflectors: one per kind (and per namespace when restricted), merged into one
//! [`Objects`] on every rebuild.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::DefaultBackoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::metrics::KubeMetrics;
use crate::objects::{Object, ObjectKey, Objects, StaticSite};

/// Label that marks Gatehouse's own Secrets (ACME account and challenge state) in the
/// controller's namespace, which are watched whatever their type. Its value says what the
/// Secret holds.
pub const SECRET_LABEL: &str = "gatehouse.dev/secret";
/// Annotation `kubectl apply` keeps its last applied copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Label every EndpointSlice of a Service carries; slices without it route nothing.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What every watch task reports to.
#[derive(Clone)]
pub struct Context {
    /// Notified on every change to a store.
    pub changes: Arc<Notify>,
    /// Notified on every watch error.
    pub trouble: Arc<Notify>,
    pub metrics: KubeMetrics,
    /// Bumped each time the API server answers again after an outage.
    pub reconnected: watch::Receiver<u64>,
    pub stop: watch::Receiver<bool>,
}

/// The reflector stores, several per kind when watching several namespaces.
#[derive(Default)]
pub struct Stores {
    ingress_classes: Vec<Store<IngressClass>>,
    ingresses: Vec<Store<Ingress>>,
    services: Vec<Store<Service>>,
    endpoint_slices: Vec<Store<EndpointSlice>>,
    secrets: Vec<Store<Secret>>,
    /// The metadata (no data) of the non-TLS Secrets: which exist, at which version. The
    /// authentication Secrets among them are fetched in full ([`super::auth_secrets`]).
    pub secret_meta: super::auth_secrets::MetaStores,
    static_sites: Vec<Store<StaticSite>>,
    /// The `--publish-service` Service alone (it need not be in a watched namespace).
    pub publish_service: Option<Store<Service>>,
}

// === impl Stores ===

impl Stores {
    /// Everything watched, as translate() reads it. Cheap: objects are shared, not copied.
    pub fn objects(&self) -> Objects {
        let mut objects = Objects::default();
        fn add<K: Resource + Clone>(
            objects: &mut Objects,
            stores: &[Store<K>],
            wrap: fn(Arc<K>) -> Object,
        ) where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            for store in stores {
                for object in store.state() {
                    objects.insert(wrap(object));
                }
            }
        }
        add(&mut objects, &self.ingress_classes, Object::IngressClass);
        add(&mut objects, &self.ingresses, Object::Ingress);
        add(&mut objects, &self.services, Object::Service);
        add(&mut objects, &self.endpoint_slices, Object::EndpointSlice);
        add(&mut objects, &self.secrets, Object::Secret);
        add(&mut objects, &self.static_sites, Object::StaticSite);
        objects
    }
}

/// The started watches.
pub struct Watches {
    pub stores: Arc<Stores>,
    /// One per watch: true once its first list is in its store.
    pub synced: Vec<watch::Receiver<bool>>,
    pub tasks: Vec<JoinHandle<()>>,
}

// === impl Watches ===

impl Watches {
    /// Starts every watch: cluster-wide, or one per namespace of `namespaces`.
    pub fn start(
        client: &Client,
        namespaces: &[String],
        controller_namespace: &str,
        publish_service: Option<&ObjectKey>,
        ctx: Context,
    ) -> Self {
        let mut w = Self {
            stores: Arc::default(),
            synced: Vec::new(),
            tasks: Vec::new(),
        };
        let config = watcher::Config::default;
        let mut stores = Stores::default();
        let ic = w.watch(
            &ctx,
            "IngressClass",
            Api::all(client.clone()),
            config(),
            false,
        );
        stores.ingress_classes.push(ic);
        for api in scoped(client, namespaces) {
            stores
                .ingresses
                .push(w.watch(&ctx, "Ingress", api, config(), false));
        }
        for api in scoped(client, namespaces) {
            stores
                .services
                .push(w.watch(&ctx, "Service", api, config(), false));
        }
        for api in scoped(client, namespaces) {
            let slices = config().labels(SERVICE_NAME_LABEL);
            stores
                .endpoint_slices
                .push(w.watch(&ctx, "EndpointSlice", api, slices, false));
        }
        for api in scoped(client, namespaces) {
            let tls = config().fields("type=kubernetes.io/tls");
            stores
                .secrets
                .push(w.watch(&ctx, "Secret", api, tls, false));
        }
        for api in scoped::<PartialObjectMeta<Secret>>(client, namespaces) {
            let not_tls = config().fields("type!=kubernetes.io/tls");
            let one = spawn(
                &ctx,
                "Secret",
                api,
                not_tls,
                false,
                super::auth_secrets::trim_meta,
            );
            w.synced.push(one.synced);
            w.tasks.push(one.task);
            stores.secret_meta.push(one.store);
        }
        let own = Api::namespaced(client.clone(), controller_namespace);
        let own_secrets = w.watch(&ctx, "Secret", own, config().labels(SECRET_LABEL), false);
        stores.secrets.push(own_secrets);
        for api in scoped(client, namespaces) {
            // Optional: without the CRD installed there are simply no StaticSites.
            stores
                .static_sites
                .push(w.watch(&ctx, "StaticSite", api, config(), true));
        }
        if let Some(key) = publish_service {
            let api = Api::namespaced(client.clone(), &key.namespace);
            let one = config().fields(&format!("metadata.name={}", key.name));
            stores.publish_service = Some(w.watch(&ctx, "Service", api, one, false));
        }
        w.stores = Arc::new(stores);
        w
    }

    /// Starts one reflector and the task that drives it; returns its store.
    fn watch<K>(
        &mut self,
        ctx: &Context,
        kind: &'static str,
        api: Api<K>,
        config: watcher::Config,
        optional: bool,
    ) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let one = spawn(ctx, kind, api, config, optional, |_| {});
        self.synced.push(one.synced);
        self.tasks.push(one.task);
        one.store
    }
}

/// One running reflector.
pub struct Watch<K: Resource<DynamicType = ()> + 'static> {
    pub store: Store<K>,
    /// True once its first list is in the store.
    pub synced: watch::Receiver<bool>,
    pub task: JoinHandle<()>,
}

/// Starts a reflector over `api` and the task that drives it (until `ctx.stop`): every change
/// notifies `ctx.changes`, every error `ctx.trouble`. `optional`: a kind the API server does not
/// serve counts as listed and empty. `trim` drops what is never read from each object, to keep
/// the store small.
pub fn spawn<K>(
    ctx: &Context,
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
    optional: bool,
    trim: fn(&mut K),
) -> Watch<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    // ListWatch (the default initial list strategy), not streaming lists: older API servers
    // and etcd reject those. No backoff adapter: the task below backs off itself, so that
    // it can cut a backoff short when the API server is back and re-list at once on 410.
    let stream = watcher(api, config)
        .modify(move |object: &mut K| {
            object.managed_fields_mut().clear();
            // kubectl's copy of the whole object (a Secret's data included): never read.
            object.annotations_mut().remove(LAST_APPLIED);
            trim(object);
        })
        .reflect(writer);
    let (synced_tx, synced_rx) = watch::channel(false);
    let changes = ctx.changes.clone();
    let trouble = ctx.trouble.clone();
    let errors = ctx.metrics.watch_errors.with_label_values(&[kind]);
    let mut stop = ctx.stop.clone();
    let mut reconnected = ctx.reconnected.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut backoff = Retry::default();
        let mut missing_reported = false;
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = stop.changed() => return,
            };
            let err = match item {
                None => return,
                Some(Ok(event)) => {
                    backoff.healthy();
                    // A reconnection seen while healthy is old news.
                    reconnected.borrow_and_update();
                    match event {
                        watcher::Event::InitDone => {
                            synced_tx.send_replace(true);
                            changes.notify_one();
                        }
                        watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                            changes.notify_one();
                        }
                        watcher::Event::Init | watcher::Event::InitApply(_) => {}
                    }
                    continue;
                }
                Some(Err(err)) => err,
            };
            errors.inc();
            trouble.notify_one();
            if optional && is_not_found(&err) {
                // The kind is not served (CRD not installed): count it as listed and
                // empty, and keep looking for it with backoff.
                if !missing_reported {
                    tracing::warn!(
                        kind,
                        "the API server does not serve this kind (CRD not installed?): none are used"
                    );
                    missing_reported = true;
                }
                synced_tx.send_replace(true);
            } else {
                tracing::warn!(kind, error = %err, "Kubernetes watch failed: serving the last known objects, retrying with backoff");
            }
            let delay = backoff.after(&err, Instant::now());
            if delay.is_zero() {
                tracing::info!(
                    kind,
                    "watch history expired (410 Gone): listing again at once"
                );
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // The API server answers again: whatever the backoff grew to during the
                // outage, try now.
                changed = reconnected.changed() => {
                    if changed.is_ok() {
                        backoff.healthy();
                    }
                }
                _ = stop.changed() => return,
            }
        }
    });
    Watch {
        store: reader,
        synced: synced_rx,
        task,
    }
}

/// When a watch tries again after an error: at once after `410 Gone` (the watcher lists
/// afresh; waiting gains nothing), otherwise after an exponential backoff (client-go's: 0.8 s
/// doubling to 30 s, with jitter), which the caller cuts short when the API server is reachable
/// again.
#[derive(Default)]
pub struct Retry {
    backoff: DefaultBackoff,
    /// When the last immediate re-list was: a server that answers 410 again and again gets
    /// the backoff instead of a tight loop.
    last_relist: Option<Instant>,
}

/// Two re-lists on 410 within this time: the second one backs off.
const RELIST_GAP: Duration = Duration::from_secs(5);

// === impl Retry ===

impl Retry {
    /// How long to wait after `err`, seen at `now`.
    pub fn after(&mut self, err: &watcher::Error, now: Instant) -> Duration {
        if is_gone(err)
            && self
                .last_relist
                .is_none_or(|t| now.duration_since(t) >= RELIST_GAP)
        {
            self.last_relist = Some(now);
            return Duration::ZERO;
        }
        self.backoff.next().unwrap_or(MAX_BACKOFF)
    }

    /// The watch works (or the API server is back): the next error starts the backoff afresh.
    pub fn healthy(&mut self) {
        self.backoff.reset();
    }
}

/// The most a watch waits between attempts (the default backoff's cap).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether the API server said the watch's resourceVersion is too old (`410 Gone`/`Expired`).
fn is_gone(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

fn is_not_found(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.is_not_found(),
        _ => false,
    }
}

/// One `Api` per watched namespace, or one for all namespaces.
fn scoped<K>(client: &Client, namespaces: &[String]) -> Vec<Api<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}
