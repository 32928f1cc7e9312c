//! translate(): objects and controller settings in, an immutable [`Snapshot`] out.
//!
//! All Ingress semantics live here: which Ingresses this controller owns, how hosts and paths
//! match, how Ingresses sharing a host merge and how their conflicts are settled, and what each
//! backend resolves to. It does no I/O. A bad object costs only itself: it yields a [`Warning`]
//! and every other route is still built.
//!
//! It is incremental, so that one changed Ingress among 10,000 is served in milliseconds: each
//! owned Ingress is compiled on its own (its routes by host, its default backend, its warnings),
//! and the caller keeps those in a [`Memo`] (the config loop owns it, not the snapshot). The
//! next translate() reuses an Ingress's compiled
//! routes when the Ingress and everything they were built from are the same objects (`Arc`s:
//! sources keep the `Arc` of an object that did not change) and the settings are the same, and
//! merges again only the hosts of the Ingresses that changed. The result is the snapshot a
//! translate() from nothing gives (the tests compare the two over random edits).

pub mod annotations;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressServiceBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::objects::{GROUP, ObjectKey, Objects, StaticSite};

/// translate()'s hash maps: foldhash, several times faster than SipHash on short keys (the
/// keys are the configuration's own, so collisions cannot be forced from outside).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use crate::routing::{HostMatch, HostRoutes, PathMatch, RouteTable};
use crate::snapshot::policy::{
    Canary, CidrSet, ErrorPolicy, PathRewrite, Redirect, RedirectTo, RoutePolicy,
};
use crate::snapshot::{Backend, Route, ServiceBackend, Snapshot, UpstreamProtocol, Warning};
use crate::static_site::Site;
use crate::tls::TlsTable;
use crate::tls::table::TlsBuilder;

/// Annotation kube-lego and older controllers used instead of `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Annotation that makes an IngressClass the default for Ingresses with no class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// `gatehouse.dev/backend-protocol`: how to speak to the Services of an Ingress.
pub const BACKEND_PROTOCOL_ANNOTATION: &str = "gatehouse.dev/backend-protocol";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Controller settings translate() depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// IngressClass name this controller answers to when no IngressClass object says otherwise.
    pub ingress_class: String,
    /// `spec.controller` of the IngressClasses this controller owns.
    pub controller_name: String,
    /// Take Ingresses that name no class at all.
    pub watch_ingress_without_class: bool,
    /// Directory relative StaticSite roots are resolved against (the manifests directory).
    pub base_dir: Option<PathBuf>,
    /// `--default-certificate`: the Secret served to TLS clients no host certificate matches.
    pub default_certificate: Option<ObjectKey>,
    /// `--ssl-redirect`: redirect plain HTTP to HTTPS for hosts with a certificate, unless an
    /// Ingress says otherwise (`gatehouse.dev/ssl-redirect`).
    pub ssl_redirect: bool,
    /// `--ingress-class-compat`: IngressClass names (e.g. `nginx`) whose Ingresses Gatehouse
    /// serves as they are, whatever controller their IngressClass object names, with
    /// ingress-nginx's defaults where they differ from Gatehouse's (HTTPS redirect for TLS
    /// hosts, 1 MiB body limit: [`annotations::NGINX_DEFAULTS`]).
    pub ingress_class_compat: Vec<String>,
    /// `--trusted-proxies`: peers whose `X-Forwarded-For` (or PROXY protocol) is believed when
    /// the request path works out the client address ([`crate::snapshot::policy::client_addr`]).
    /// Not used by translate() itself.
    pub trusted_proxies: CidrSet,
    /// The time certificates' validity is checked at; `None` reads the clock (tests set it).
    pub now: Option<SystemTime>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ingress_class: "gatehouse".into(),
            controller_name: "gatehouse.dev/ingress-controller".into(),
            watch_ingress_without_class: false,
            base_dir: None,
            default_certificate: None,
            ssl_redirect: false,
            ingress_class_compat: Vec::new(),
            trusted_proxies: CidrSet::default(),
            now: None,
        }
    }
}

/// Builds the snapshot the data plane serves from the objects at hand. `memo` is what the last
/// call left (`Memo::default()` at start) and is updated for the next: Secrets whose data did
/// not change are not parsed again, a host whose Secret broke keeps its last good certificate,
/// and Ingresses that did not change (nor anything they use) are not compiled again.
pub fn translate(objects: &Objects, settings: &Settings, memo: &mut Memo) -> Snapshot {
    let settings_key = Settings {
        now: None,
        ..settings.clone()
    };
    let before = &*memo;
    let incremental = before.settings.as_ref() == Some(&settings_key);
    let mut t = Translation::new(objects, settings, before, incremental);
    let owned = t.owned_ingresses();
    // Certificates first: whether a route redirects to HTTPS depends on its host having one.
    let now = settings.now.unwrap_or_else(SystemTime::now);
    let mut tls = TlsBuilder::new(objects, &before.tls, now);
    if let Some(secret) = &settings.default_certificate {
        tls.set_default(secret, &mut t.warnings);
    }
    for (key, ingress) in &owned {
        tls.add_ingress(key, ingress, &mut t.warnings);
    }
    let tls = Arc::new(tls.finish());

    // Compile every owned Ingress, or take what it compiled to last time.
    let mut compiled: Vec<Arc<Compiled>> = Vec::with_capacity(owned.len());
    let mut by_ingress: Map<usize, Arc<Compiled>> =
        Map::with_capacity_and_hasher(owned.len(), Default::default());
    let mut fresh: Vec<Arc<Compiled>> = Vec::new();
    for &(key, ingress) in &owned {
        let last = before
            .ingresses
            .get(&address(ingress))
            .filter(|_| incremental);
        let next = match last {
            Some(last) if t.still_valid(last, ingress, &tls) => last.clone(),
            _ => {
                let next = Arc::new(t.compile(key, ingress, &tls));
                fresh.push(next.clone());
                next
            }
        };
        by_ingress.insert(address(ingress), next.clone());
        compiled.push(next);
    }
    // What the previous snapshot compiled and this one does not use: Ingresses removed,
    // changed, or no longer owned.
    let gone: Vec<&Arc<Compiled>> =
        if incremental && compiled.len() - fresh.len() < before.ingresses.len() {
            before
                .ingresses
                .iter()
                .filter(|(ptr, c)| !by_ingress.get(*ptr).is_some_and(|n| Arc::ptr_eq(n, c)))
                .map(|(_, c)| c)
                .collect()
        } else {
            Vec::new()
        };

    // Merge the routes of every host: again from nothing, or only for the changed Ingresses'.
    let current = |key: &ObjectKey| {
        let ingress = objects.ingresses.get(key)?;
        by_ingress.get(&address(ingress))
    };
    let (mut routes, shared_hosts) = if incremental {
        merge_changed(before, &gone, &fresh, current)
    } else {
        merge_all(&compiled, current)
    };
    let mut warnings = t.warnings;
    let mut default: Option<&Arc<Route>> = None;
    for c in &compiled {
        warnings.extend(c.warnings.iter().cloned());
        for host in c.hosts.iter().filter(|h| !h.warnings.is_empty()) {
            if !shared_hosts.contains_key(&host.host) {
                warnings.extend(host.warnings.iter().cloned());
            }
        }
        if let Some(route) = &c.default {
            match default {
                None => default = Some(route),
                Some(existing) => warnings.push(Warning {
                    kind: "Ingress",
                    object: (*c.key).clone(),
                    reason: format!(
                        "defaultBackend ignored: Ingress {} (older) already sets the default backend",
                        existing.ingress
                    ),
                }),
            }
        }
    }
    routes.replace_default(default.cloned());
    for host in shared_hosts.values() {
        warnings.extend(host.warnings.iter().cloned());
    }
    // Only Ingresses that name the annotation can want (or warn about) ACME.
    let acme_owned: Vec<(ObjectKey, &Ingress)> = owned
        .iter()
        .filter(|(_, i)| {
            let annotations = i.metadata.annotations.as_ref();
            annotations.is_some_and(|a| a.contains_key(crate::acme::wants::TLS_ACME_ANNOTATION))
        })
        .map(|(k, i)| ((*k).clone(), &***i))
        .collect();
    let (acme, acme_warnings) = crate::acme::wants::wants(&acme_owned);
    warnings.extend(acme_warnings);
    warnings.sort();
    warnings.dedup();
    // The same Ingress (by address) at the same place has the same key.
    let owned_order: Vec<usize> = owned.iter().map(|(_, i)| address(i)).collect();
    let same_owned = before.owned_ingresses.len() == owned.len()
        && before.owned_order.len() == owned.len()
        && (0..owned.len()).all(|i| {
            before.owned_order[i] == owned_order[i] || before.owned_ingresses[i] == *owned[i].0
        });
    let owned_ingresses = if same_owned {
        before.owned_ingresses.clone()
    } else {
        owned.iter().map(|(k, _)| (*k).clone()).collect()
    };
    *memo = Memo {
        settings: Some(settings_key),
        ingresses: by_ingress,
        shared_hosts,
        owned_order,
        seen: t.seen,
        routes: routes.clone(),
        owned_ingresses: owned_ingresses.clone(),
        tls: tls.clone(),
    };
    Snapshot {
        routes,
        owned_ingresses,
        warnings,
        acme,
        tls,
    }
}

/// An object's address: the same `Arc` has the same one, and while a snapshot holds the `Arc`
/// no other object can get it.
fn address<T>(object: &Arc<T>) -> usize {
    Arc::as_ptr(object) as usize
}

/// What one translate() leaves for the next to start from, kept by its caller (the config
/// loop) beside the snapshot in service, never inside it.
///
/// Objects are recognised by address (`Arc` pointer), which relies on two things sources do:
/// an object that did not change keeps its `Arc`, and an object's key in [`Objects`] is the one
/// its metadata gives ([`crate::objects::Object::key`]). Every `Arc` compared is held here, so
/// its address cannot be reused by another object meanwhile.
#[derive(Debug, Default)]
pub struct Memo {
    /// The settings it was built with (`now` aside); `None` before the first translate().
    settings: Option<Settings>,
    /// Every owned Ingress, compiled, by the Ingress's address.
    ingresses: Map<usize, Arc<Compiled>>,
    /// Hosts that more than one Ingress has rules for.
    shared_hosts: Map<HostMatch, SharedHost>,
    /// The addresses of the owned Ingresses, in order.
    owned_order: Vec<usize>,
    /// The Services, EndpointSlices and StaticSites it was built from.
    seen: Seen,
    /// The last snapshot's routes (shared with it: cloning a table is cheap), merged again
    /// only where Ingresses changed.
    routes: RouteTable<Arc<Route>>,
    /// The last snapshot's owned Ingresses, kept while the same.
    owned_ingresses: Arc<[ObjectKey]>,
    /// The last snapshot's certificates: parsed Secrets are reused, and a host whose Secret
    /// broke keeps its last good one.
    tls: Arc<TlsTable>,
}

// === impl Memo ===

impl Memo {
    /// A memo that remembers only the certificates: the next translate() compiles everything
    /// anew, with the same certificate history (what a restart that kept its certificates does).
    pub fn certificates_only(&self) -> Memo {
        Memo {
            tls: self.tls.clone(),
            ..Memo::default()
        }
    }
}

/// The Services, EndpointSlices and StaticSites a translate() saw (in map order, held), and
/// the EndpointSlices by Service: while they are the very same objects, no Ingress's backends
/// need checking, and the index is reused.
#[derive(Clone, Debug, Default)]
struct Seen {
    services: Arc<[Arc<Service>]>,
    slices: Arc<[Arc<EndpointSlice>]>,
    sites: Arc<[Arc<StaticSite>]>,
    slices_by_service: Arc<Map<ObjectKey, Vec<Arc<EndpointSlice>>>>,
}

impl Seen {
    /// What `objects` holds, reusing `last` where it is the same; and whether all of it is.
    fn of(objects: &Objects, last: &Seen) -> (Seen, bool) {
        fn same<T>(
            last: &Arc<[Arc<T>]>,
            now: &BTreeMap<ObjectKey, Arc<T>>,
        ) -> Option<Arc<[Arc<T>]>> {
            let same = last.len() == now.len()
                && last
                    .iter()
                    .zip(now.values())
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            same.then(|| last.clone())
        }
        let services = same(&last.services, &objects.services);
        let slices = same(&last.slices, &objects.endpoint_slices);
        let sites = same(&last.sites, &objects.static_sites);
        let unchanged = services.is_some() && slices.is_some() && sites.is_some();
        let slices_by_service = match &slices {
            Some(_) => last.slices_by_service.clone(),
            None => {
                let mut index: Map<ObjectKey, Vec<Arc<EndpointSlice>>> = Map::default();
                for slice in objects.endpoint_slices.values() {
                    let labels = slice.metadata.labels.as_ref();
                    if let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
                        index
                            .entry(ObjectKey::new(namespace, service.as_str()))
                            .or_default()
                            .push(slice.clone());
                    }
                }
                Arc::new(index)
            }
        };
        let seen = Seen {
            services: services.unwrap_or_else(|| objects.services.values().cloned().collect()),
            slices: slices.unwrap_or_else(|| objects.endpoint_slices.values().cloned().collect()),
            sites: sites.unwrap_or_else(|| objects.static_sites.values().cloned().collect()),
            slices_by_service,
        };
        (seen, unchanged)
    }
}

/// A host more than one Ingress has rules for.
#[derive(Clone, Debug)]
struct SharedHost {
    /// Those Ingresses, oldest first.
    ingresses: Vec<Arc<ObjectKey>>,
    /// Paths that lost to another Ingress's (or to an earlier one of the same Ingress).
    warnings: Vec<Warning>,
}

/// One owned Ingress compiled: its routes by host, its default backend, its own warnings, and
/// what they were built from.
#[derive(Debug)]
struct Compiled {
    key: Arc<ObjectKey>,
    ingress: Arc<Ingress>,
    /// The Services and StaticSites its backends were resolved from, as they were.
    deps: Vec<Dependency>,
    /// Whether its routes redirect to HTTPS when their host has a certificate (then each
    /// host's `covered` says whether it had one).
    redirect: bool,
    default: Option<Arc<Route>>,
    /// Every host it has routes for, in the order its rules first name them (then the hosts
    /// `from-to-www-redirect` adds).
    hosts: Vec<CompiledHost>,
    /// It is a canary (`canary: "true"`): its routes attach to the main Ingress's.
    canary: bool,
    /// Warnings about the Ingress itself (annotations, hosts, paths, backends).
    warnings: Vec<Warning>,
}

/// The routes one Ingress has for one host.
#[derive(Debug)]
struct CompiledHost {
    host: HostMatch,
    /// Every valid path for the host, in rule order; a later path with the same match loses.
    entries: Vec<Entry>,
    /// Those routes as served when no other Ingress has the host (shared by its hosts with the
    /// same routes).
    table: Arc<HostRoutes<Arc<Route>>>,
    /// Warnings for paths that lost to an earlier path of the Ingress, when no other Ingress
    /// has the host.
    warnings: Vec<Warning>,
    /// Whether the host had a certificate (for `redirect`).
    covered: bool,
    /// The Ingress uses ingress-nginx regex paths: the whole host is matched in regex mode.
    regex: bool,
    /// Only `from-to-www-redirect` redirects: left out if any Ingress has rules for the host.
    alias: bool,
}

/// One path of an Ingress for one host: its route, and where the Ingress declares it (for
/// warnings).
#[derive(Clone, Debug)]
struct Entry {
    route: Arc<Route>,
    /// The path as written (a regular expression in regex mode).
    text: Arc<str>,
    rule: usize,
    path: usize,
}

/// Something an Ingress's backends were resolved from.
#[derive(Debug)]
enum Dependency {
    Service(ObjectKey, ServiceState),
    Site(ObjectKey, Option<Arc<StaticSite>>),
    /// A Secret its annotations read (basic authentication).
    Secret(ObjectKey, Option<Arc<Secret>>),
}

/// A Service as translate() saw it: the object and its EndpointSlices, by pointer.
#[derive(Debug)]
struct ServiceState {
    service: Option<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
}

fn same<T>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The order Ingresses are taken in: oldest first, then by namespace/name. Objects without a
/// creation time (hand-written manifests) count as newest.
fn order(ingress: &Ingress) -> (bool, Option<&Time>) {
    let created = ingress.metadata.creation_timestamp.as_ref();
    (created.is_none(), created)
}

/// Whether a host's routes must be merged rather than taken from its one owner's table: more
/// than one Ingress has rules for it, or a canary does (a canary alone serves nothing).
fn needs_merge(owners: &[&Arc<Compiled>]) -> bool {
    owners.len() > 1 || owners.iter().any(|c| c.canary)
}

/// The table of a host several Ingresses have rules for (`owners` oldest first): each path goes
/// to the first Ingress that declares it, the others get a warning; `from-to-www-redirect`
/// hosts give way to real rules; canaries attach to the main route of their path. If any owner
/// uses regex paths, the whole host is in regex mode.
fn merge_host(host: &HostMatch, owners: &[&Arc<Compiled>]) -> (HostRoutes<Arc<Route>>, SharedHost) {
    let mut warnings = Vec::new();
    fn mine<'c>(c: &'c Compiled, host: &HostMatch) -> Vec<&'c CompiledHost> {
        c.hosts.iter().filter(|h| h.host == *host).collect()
    }
    let real = owners
        .iter()
        .find(|c| !c.canary && mine(c, host).iter().any(|h| !h.alias))
        .map(|c| c.key.clone());
    let regex = owners.iter().any(|c| mine(c, host).iter().any(|h| h.regex));
    // The winning entry of each path match, in declaration order, with its Ingress.
    let mut winners: Vec<(Entry, &Arc<Compiled>)> = Vec::new();
    let mut index: Map<PathMatch, usize> = Map::default();
    for c in owners.iter().filter(|c| !c.canary) {
        for h in mine(c, host) {
            if h.alias
                && let Some(real) = &real
            {
                warnings.push(Warning {
                    kind: "Ingress",
                    object: (*c.key).clone(),
                    reason: format!(
                        "from-to-www-redirect for host {} left out: Ingress {real} has rules for it",
                        host.display()
                    ),
                });
                continue;
            }
            for entry in &h.entries {
                match index.get(&entry.route.path) {
                    Some(&i) => {
                        let owner = &winners[i].1.key;
                        warnings.push(path_conflict(&c.key, &c.ingress, host, entry, owner));
                    }
                    None => {
                        index.insert(entry.route.path.clone(), winners.len());
                        winners.push((entry.clone(), c));
                    }
                }
            }
        }
    }
    for c in owners.iter().filter(|c| c.canary) {
        for h in mine(c, host) {
            for entry in &h.entries {
                let Some(canary) = entry.route.canary.clone() else {
                    continue;
                };
                let text = &entry.text;
                let reason = match index.get(&entry.route.path) {
                    Some(&i) => match &winners[i].0.route.canary {
                        None => {
                            let main = &mut winners[i].0;
                            main.route = Arc::new(main.route.with_canary(canary));
                            continue;
                        }
                        Some(other) => format!(
                            "canary path {text:?} on host {} ignored: Ingress {} is already its canary (one canary per path, as in ingress-nginx)",
                            host.display(),
                            other.ingress
                        ),
                    },
                    None => format!(
                        "canary path {text:?} on host {} not served: no main Ingress has this host and path",
                        host.display()
                    ),
                };
                warnings.push(Warning {
                    kind: "Ingress",
                    object: (*c.key).clone(),
                    reason,
                });
            }
        }
    }
    let entries: Vec<&Entry> = winners.iter().map(|(e, _)| e).collect();
    let (table, bad) = build_table(&entries, regex);
    for (entry, reason) in bad {
        let owner = winners
            .iter()
            .find(|(e, _)| Arc::ptr_eq(&e.route, &entry.route))
            .map_or_else(|| entry.route.ingress.clone(), |(_, c)| c.key.clone());
        warnings.push(Warning {
            kind: "Ingress",
            object: (*owner).clone(),
            reason: format!(
                "{reason}: not served, as host {} is in regex mode (an Ingress on it uses use-regex or rewrite-target)",
                host.display()
            ),
        });
    }
    let shared = SharedHost {
        ingresses: owners.iter().map(|c| c.key.clone()).collect(),
        warnings,
    };
    (table, shared)
}

/// The routes of a host from its entries (each path match once). In regex mode they are also
/// ordered as ingress-nginx does; entries whose path is not a valid regex are left out and
/// returned with the reason.
fn build_table<'e>(
    entries: &[&'e Entry],
    regex: bool,
) -> (HostRoutes<Arc<Route>>, Vec<(&'e Entry, String)>) {
    let mut table = HostRoutes::default();
    if !regex {
        for entry in entries {
            // A later path with the same match loses (the caller warns).
            let _ = table.insert(entry.route.path.clone(), entry.route.clone());
        }
        return (table, Vec::new());
    }
    let (ordered, bad) =
        crate::routing::regex_routes(entries.iter().map(|e| (&*e.text, *e)).collect());
    let mut list = Vec::with_capacity(ordered.len());
    for (re, entry) in ordered {
        let _ = table.insert(entry.route.path.clone(), entry.route.clone());
        list.push((re, entry.route.clone()));
    }
    table.set_regex(list);
    (table, bad)
}

/// The warning for a path of Ingress `key` that `owner` (an older Ingress, or `key` itself)
/// already serves on `host`.
fn path_conflict(
    key: &ObjectKey,
    ingress: &Ingress,
    host: &HostMatch,
    entry: &Entry,
    owner: &ObjectKey,
) -> Warning {
    let path = ingress.spec.as_ref().and_then(|s| {
        s.rules
            .as_ref()?
            .get(entry.rule)?
            .http
            .as_ref()?
            .paths
            .get(entry.path)
    });
    let path_type = path.map_or("", |p| p.path_type.as_str());
    let text = path.and_then(|p| p.path.as_deref()).unwrap_or("/");
    let owner = if owner == key {
        "an earlier path of this Ingress".to_owned()
    } else {
        format!("Ingress {owner} (older)")
    };
    Warning {
        kind: "Ingress",
        object: key.clone(),
        reason: format!(
            "path {path_type} {text:?} on host {} ignored: already served by {owner}",
            host.display()
        ),
    }
}

/// Orders Ingresses as [`Translation::owned_ingresses`] does.
fn sort_owners(owners: &mut [&Arc<Compiled>]) {
    owners.sort_by(|a, b| {
        order(&a.ingress)
            .cmp(&order(&b.ingress))
            .then_with(|| a.key.cmp(&b.key))
    });
}

/// The route table of compiled Ingresses (oldest first), from nothing. `current` finds the
/// compiled Ingress of a key.
fn merge_all<'c>(
    compiled: &'c [Arc<Compiled>],
    current: impl Fn(&ObjectKey) -> Option<&'c Arc<Compiled>>,
) -> (RouteTable<Arc<Route>>, Map<HostMatch, SharedHost>) {
    let mut routes: RouteTable<Arc<Route>> =
        RouteTable::with_capacity(compiled.iter().map(|c| c.hosts.len()).sum());
    // Hosts of more than one Ingress, with those Ingresses in order.
    let mut shared: Map<HostMatch, Vec<&Arc<Compiled>>> = Map::default();
    for c in compiled {
        for host in &c.hosts {
            if let Some(owners) = shared.get_mut(&host.host) {
                if !owners.last().is_some_and(|o| Arc::ptr_eq(o, c)) {
                    owners.push(c);
                }
                continue;
            }
            if c.canary {
                // A canary is always merged: alone it serves nothing (and is warned about).
                let first = routes
                    .host(&host.host)
                    .and_then(|t| t.values().next())
                    .and_then(|r| current(&r.ingress));
                shared.insert(host.host.clone(), first.into_iter().chain([c]).collect());
                continue;
            }
            match routes.host(&host.host) {
                None => routes.set_host(&host.host, Some(host.table.clone())),
                Some(first) => {
                    // The first Ingress's table: every route in it is that Ingress's.
                    let first = first.values().next().and_then(|r| current(&r.ingress));
                    let mut owners: Vec<&Arc<Compiled>> = first.into_iter().collect();
                    if !owners.last().is_some_and(|o| Arc::ptr_eq(o, c)) {
                        owners.push(c);
                    }
                    shared.insert(host.host.clone(), owners);
                }
            }
        }
    }
    let mut shared_hosts = Map::default();
    for (host, owners) in shared {
        let (table, info) = merge_host(&host, &owners);
        routes.set_host(&host, Some(Arc::new(table)));
        if needs_merge(&owners) {
            shared_hosts.insert(host, info);
        }
    }
    (routes, shared_hosts)
}

/// The route table of the previous snapshot with the hosts of the Ingresses it had and this
/// one has not (`gone`) and of those compiled anew (`fresh`) merged again. `current` finds the
/// compiled Ingress of a key.
fn merge_changed<'c>(
    before: &Memo,
    gone: &[&Arc<Compiled>],
    fresh: &'c [Arc<Compiled>],
    current: impl Fn(&ObjectKey) -> Option<&'c Arc<Compiled>>,
) -> (RouteTable<Arc<Route>>, Map<HostMatch, SharedHost>) {
    let mut routes = before.routes.clone();
    let mut shared_hosts = before.shared_hosts.clone();
    // Every host of a changed Ingress, before or now, with the fresh Ingresses that have it.
    let mut dirty: Map<&HostMatch, Vec<&Arc<Compiled>>> = Map::default();
    for c in gone {
        for host in &c.hosts {
            dirty.entry(&host.host).or_default();
        }
    }
    for c in fresh {
        for host in &c.hosts {
            dirty.entry(&host.host).or_default().push(c);
        }
    }
    for (host, now) in dirty {
        // Who had the host before (as they are now), and the fresh Ingresses that have it.
        let mut owners: Vec<&Arc<Compiled>> = match before.shared_hosts.get(host) {
            Some(shared) => shared.ingresses.iter().filter_map(|k| current(k)).collect(),
            None => before
                .routes
                .host(host)
                .and_then(|t| t.values().next())
                .and_then(|r| current(&r.ingress))
                .into_iter()
                .collect(),
        };
        owners.retain(|c| c.hosts.iter().any(|h| h.host == *host));
        owners.extend(now);
        sort_owners(&mut owners);
        owners.dedup_by(|a, b| Arc::ptr_eq(a, b));
        shared_hosts.remove(host);
        match owners.as_slice() {
            [] => routes.set_host(host, None),
            [only] if !only.canary => {
                let table = only
                    .hosts
                    .iter()
                    .find(|h| h.host == *host)
                    .map(|h| h.table.clone());
                routes.set_host(host, table);
            }
            _ => {
                let (table, info) = merge_host(host, &owners);
                routes.set_host(host, Some(Arc::new(table)));
                shared_hosts.insert(host.clone(), info);
            }
        }
    }
    (routes, shared_hosts)
}

/// A Service port as spoken to: protocol and, for HTTPS, the TLS server name.
type ServiceCacheKey = (ObjectKey, String, UpstreamProtocol, Option<Arc<str>>);

/// An Ingress path's backend, as written: paths with the same match and backend get one route.
#[derive(PartialEq, Eq, Hash)]
enum BackendSpec<'i> {
    Service(&'i str, Option<i32>, Option<&'i str>),
    Resource(Option<&'i str>, &'i str, &'i str),
    Other,
}

impl<'i> BackendSpec<'i> {
    fn of(backend: &'i IngressBackend) -> Self {
        match (&backend.service, &backend.resource) {
            (Some(s), None) => {
                let port = s.port.as_ref();
                BackendSpec::Service(
                    &s.name,
                    port.and_then(|p| p.number),
                    port.and_then(|p| p.name.as_deref()),
                )
            }
            (None, Some(r)) => BackendSpec::Resource(r.api_group.as_deref(), &r.kind, &r.name),
            _ => BackendSpec::Other,
        }
    }
}

/// Working state of one translate() call.
struct Translation<'a> {
    objects: &'a Objects,
    settings: &'a Settings,
    /// The Services, EndpointSlices (by Service too) and StaticSites at hand.
    seen: Seen,
    /// Whether those are the very same objects as last time, so that no Ingress's backends
    /// need checking.
    backends_unchanged: bool,
    /// Resolved backends, shared by every route that names the same Service port.
    services: Map<ServiceCacheKey, Result<Arc<ServiceBackend>, String>>,
    sites: Map<ObjectKey, Result<Arc<Site>, String>>,
    warnings: Vec<Warning>,
    /// What the Ingress being compiled depends on.
    deps: Vec<Dependency>,
}

// === impl Translation ===

impl<'a> Translation<'a> {
    fn new(objects: &'a Objects, settings: &'a Settings, last: &Memo, incremental: bool) -> Self {
        let (seen, unchanged) = Seen::of(objects, &last.seen);
        let mut warnings = Vec::new();
        let mut sites = Map::default();
        for (key, site) in &objects.static_sites {
            let built =
                Site::new(key.clone(), &site.spec, settings.base_dir.as_deref()).map(Arc::new);
            if let Err(reason) = &built {
                warnings.push(Warning {
                    kind: "StaticSite",
                    object: key.clone(),
                    reason: reason.clone(),
                });
            }
            sites.insert(key.clone(), built);
        }
        Self {
            objects,
            settings,
            seen,
            backends_unchanged: incremental && unchanged,
            services: Map::default(),
            sites,
            warnings,
            deps: Vec::new(),
        }
    }

    fn warn(&mut self, ingress: &ObjectKey, reason: String) {
        self.warnings.push(Warning {
            kind: "Ingress",
            object: ingress.clone(),
            reason,
        });
    }

    /// The Ingresses this controller owns, oldest first (ties broken by namespace/name), so that
    /// conflicts are settled the same way on every replica and every run.
    fn owned_ingresses(&self) -> Vec<(&'a ObjectKey, &'a Arc<Ingress>)> {
        let ours = |controller: Option<&String>| {
            controller.is_some_and(|c| *c == self.settings.controller_name)
        };
        let default_is_ours = self.objects.ingress_classes.values().any(|class| {
            let is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION));
            is_default.is_some_and(|v| v == "true")
                && ours(class.spec.as_ref().and_then(|s| s.controller.as_ref()))
        });
        // Each class name is looked up once.
        let mut classes: Vec<(&str, bool)> = Vec::new();
        let mut class_is_ours = |name: &'a str| {
            if let Some((_, mine)) = classes.iter().find(|(n, _)| *n == name) {
                return *mine;
            }
            // A compat class is served whatever controller its IngressClass object names (it
            // is usually ingress-nginx's, left behind).
            let compat = self.settings.ingress_class_compat.iter().any(|c| c == name);
            let mine = compat
                || match self.objects.ingress_classes.get(&ObjectKey::new("", name)) {
                    Some(class) => ours(class.spec.as_ref().and_then(|s| s.controller.as_ref())),
                    None => name == self.settings.ingress_class,
                };
            classes.push((name, mine));
            mine
        };
        let mut owned = Vec::with_capacity(self.objects.ingresses.len());
        for (key, ingress) in &self.objects.ingresses {
            let class_name = ingress
                .spec
                .as_ref()
                .and_then(|s| s.ingress_class_name.as_deref());
            let legacy = ingress
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
            let mine = match (class_name, legacy) {
                (Some(name), _) => class_is_ours(name),
                (None, Some(name)) => class_is_ours(name),
                (None, None) => default_is_ours || self.settings.watch_ingress_without_class,
            };
            if mine {
                owned.push((key, ingress));
            }
        }
        owned.sort_by(|(ka, a), (kb, b)| order(a).cmp(&order(b)).then_with(|| ka.cmp(kb)));
        owned
    }

    /// Whether what an Ingress compiled to last time still holds: the same Ingress, the same
    /// Services, EndpointSlices and StaticSites, the same certificate coverage where it
    /// redirects.
    fn still_valid(&self, last: &Compiled, ingress: &Arc<Ingress>, tls: &TlsTable) -> bool {
        Arc::ptr_eq(&last.ingress, ingress)
            && last.deps.iter().all(|dep| match dep {
                Dependency::Service(key, state) => {
                    self.backends_unchanged || self.service_unchanged(key, state)
                }
                Dependency::Site(key, site) => {
                    self.backends_unchanged
                        || same(site.as_ref(), self.objects.static_sites.get(key))
                }
                // Secrets are not among the backends: always compared.
                Dependency::Secret(key, secret) => {
                    same(secret.as_ref(), self.objects.secrets.get(key))
                }
            })
            && (!last.redirect || last.hosts.iter().all(|h| tls.covers(&h.host) == h.covered))
    }

    /// The EndpointSlices of a Service.
    fn slices_of(&self, service: &ObjectKey) -> &[Arc<EndpointSlice>] {
        self.seen
            .slices_by_service
            .get(service)
            .map_or(&[], Vec::as_slice)
    }

    fn service_unchanged(&self, key: &ObjectKey, state: &ServiceState) -> bool {
        let slices = self.slices_of(key);
        same(state.service.as_ref(), self.objects.services.get(key))
            && slices.len() == state.slices.len()
            && slices
                .iter()
                .zip(&state.slices)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Whether an Ingress is of a class served with ingress-nginx's defaults.
    fn compat(&self, ingress: &Ingress) -> bool {
        if self.settings.ingress_class_compat.is_empty() {
            return false;
        }
        let class = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                let annotations = ingress.metadata.annotations.as_ref();
                annotations
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                    .map(String::as_str)
            });
        class.is_some_and(|c| self.settings.ingress_class_compat.iter().any(|n| n == c))
    }

    /// Compiles one owned Ingress.
    fn compile(&mut self, key: &ObjectKey, ingress: &Arc<Ingress>, tls: &TlsTable) -> Compiled {
        let first_warning = self.warnings.len();
        let shared_key = Arc::new(key.clone());
        let defaults = if self.compat(ingress) {
            annotations::NGINX_DEFAULTS
        } else {
            annotations::Defaults::default()
        };
        let parsed = annotations::parse(
            ingress,
            &annotations::Context {
                key,
                secrets: &self.objects.secrets,
                defaults,
            },
        );
        let mut compiled = Compiled {
            key: shared_key.clone(),
            ingress: ingress.clone(),
            deps: Vec::new(),
            redirect: false,
            default: None,
            hosts: Vec::new(),
            canary: parsed.canary.is_some(),
            warnings: Vec::new(),
        };
        if let Some(reason) = &parsed.rejected {
            self.warn(key, reason.clone());
            compiled.warnings = self.warnings.split_off(first_warning);
            return compiled;
        }
        for warning in &parsed.warnings {
            self.warn(key, warning.clone());
        }
        for (secret, seen) in &parsed.secrets {
            self.deps
                .push(Dependency::Secret(secret.clone(), seen.clone()));
        }
        let transport = match parsed.protocol {
            None => Ok(UpstreamProtocol::Http),
            Some(p) => p.transport().ok_or(p),
        };
        let protocol = transport.unwrap_or_default();
        let tls_name = parsed.tls_server_name.clone();
        let redirect = parsed.ssl_redirect.unwrap_or(self.settings.ssl_redirect);
        compiled.redirect = redirect;
        let Some(spec) = &ingress.spec else {
            self.warn(key, "has no spec".into());
            compiled.warnings = self.warnings.split_off(first_warning);
            compiled.deps = std::mem::take(&mut self.deps);
            return compiled;
        };
        // What every route of the Ingress shares: its policy (`None` when it asks nothing).
        let mut policy = parsed.policy;
        if let Some(name) = &parsed.default_backend {
            let errors = policy.errors.get_or_insert_with(ErrorPolicy::default);
            match self.first_port_backend(key, name, protocol, tls_name.as_ref()) {
                Ok(backend) => errors.backend = Some(backend),
                Err(reason) => self.warn(key, format!("default-backend ignored: {reason}")),
            }
            if errors.intercept.is_empty() && errors.backend.is_none() {
                policy.errors = None;
            }
        }
        let canary_rules = parsed.canary;
        let policy = (!policy.is_empty()).then(|| Arc::new(policy));
        let regex = parsed.use_regex || parsed.rewrite_target.is_some();
        let service_upstream = parsed.service_upstream;
        // A refused Ingress's routes answer 503 even where no phase reads the policy.
        let refused = match policy.as_deref().map(|p| &p.access) {
            Some(crate::snapshot::policy::Access::Refused(reason)) => Some(reason.clone()),
            _ => None,
        };
        let make_backend = |this: &mut Self, backend: &IngressBackend, strip: &str| -> Backend {
            if let Some(reason) = &refused {
                return Backend::Unavailable {
                    reason: reason.clone(),
                };
            }
            match transport {
                Err(p) => {
                    let reason = format!("backend-protocol {p:?} is not supported yet");
                    Backend::Unavailable {
                        reason: reason.into(),
                    }
                }
                Ok(_) => {
                    let backend = this.backend(key, backend, protocol, tls_name.as_ref(), strip);
                    if service_upstream {
                        this.service_upstream(key, backend)
                    } else {
                        backend
                    }
                }
            }
        };
        let new_route = |path: PathMatch, backend: Backend, ssl_redirect: bool, rewrite| Route {
            ingress: shared_key.clone(),
            path,
            backend,
            ssl_redirect,
            policy: policy.clone(),
            rewrite,
            canary: None,
            counters: Default::default(),
        };
        if let Some(backend) = &spec.default_backend {
            let backend = make_backend(self, backend, "");
            compiled.default = Some(Arc::new(new_route(
                PathMatch::prefix("/"),
                backend,
                false,
                None,
            )));
        }
        // One route per path (as written), backend and redirect, shared by the hosts that have it.
        let mut routes: Map<(PathMatch, &str, BackendSpec<'_>, bool), Arc<Route>> = Map::default();
        let mut host_index: Map<HostMatch, usize> = Map::default();
        let mut hosts: Vec<(HostMatch, Vec<Entry>, bool)> = Vec::new();
        for (r, rule) in spec.rules.iter().flatten().enumerate() {
            let host = match HostMatch::parse(rule.host.as_deref()) {
                Ok(host) => host,
                Err(reason) => {
                    self.warn(key, format!("rule skipped: {reason}"));
                    continue;
                }
            };
            let Some(http) = &rule.http else { continue };
            let covered = redirect && tls.covers(&host);
            for (p, path) in http.paths.iter().enumerate() {
                let text = path.path.as_deref().unwrap_or("/");
                let path_match = match path.path_type.as_str() {
                    _ if !text.starts_with('/') => {
                        self.warn(
                            key,
                            format!(
                                "path {text:?} on host {} skipped: a path must start with \"/\"",
                                host.display()
                            ),
                        );
                        continue;
                    }
                    "Exact" => PathMatch::exact(text),
                    // ImplementationSpecific means Prefix here (element-wise, like Prefix).
                    "Prefix" | "ImplementationSpecific" => PathMatch::prefix(text),
                    other => {
                        self.warn(
                            key,
                            format!(
                                "path {text:?} on host {} skipped: unknown pathType {other:?}",
                                host.display()
                            ),
                        );
                        continue;
                    }
                };
                let spec_key = (path_match, text, BackendSpec::of(&path.backend), covered);
                let route = match routes.get(&spec_key) {
                    Some(route) => route.clone(),
                    None => {
                        // ingress-nginx rewrites when the target differs from the path.
                        let rewrite = match (&parsed.rewrite_target, regex) {
                            (_, false) => None,
                            (target, true) => match crate::routing::path_regex(text) {
                                Err(reason) => {
                                    self.warn(key, format!("{reason} (use-regex or rewrite-target): path skipped on host {}", host.display()));
                                    continue;
                                }
                                Ok(re) => {
                                    target.as_ref().filter(|t| t.to_string() != text).map(|t| {
                                        Arc::new(PathRewrite {
                                            regex: re,
                                            target: t.clone(),
                                        })
                                    })
                                }
                            },
                        };
                        let strip = match &spec_key.0 {
                            PathMatch::Prefix(p) => &**p,
                            PathMatch::Exact(_) => "",
                        };
                        let backend = make_backend(self, &path.backend, strip);
                        let ssl_redirect = covered || parsed.force_ssl_redirect;
                        let mut route =
                            new_route(spec_key.0.clone(), backend, ssl_redirect, rewrite);
                        if let Some((rules, upstream)) = &canary_rules {
                            route.canary = Some(Arc::new(Canary {
                                ingress: shared_key.clone(),
                                backend: route.backend.duplicate(&route.path),
                                rules: rules.clone(),
                                upstream: upstream.clone(),
                            }));
                        }
                        let route = Arc::new(route);
                        routes.insert(spec_key, route.clone());
                        route
                    }
                };
                let i = *host_index.entry(host.clone()).or_insert_with(|| {
                    hosts.push((host.clone(), Vec::new(), covered));
                    hosts.len() - 1
                });
                hosts[i].1.push(Entry {
                    route,
                    text: text.into(),
                    rule: r,
                    path: p,
                });
            }
        }
        drop(routes);
        let aliases = if parsed.from_to_www {
            self.www_aliases(key, &hosts, &shared_key)
        } else {
            Vec::new()
        };
        // Each host's table on its own; hosts with the same routes share one.
        let mut tables: Map<Vec<*const Route>, Arc<HostRoutes<Arc<Route>>>> = Map::default();
        let canary = compiled.canary;
        for ((host, entries, covered), alias) in hosts
            .into_iter()
            .map(|h| (h, false))
            .chain(aliases.into_iter().map(|h| (h, true)))
        {
            let shape = entries.iter().map(|e| Arc::as_ptr(&e.route)).collect();
            let table = tables.entry(shape).or_insert_with(|| {
                if canary {
                    // Served only attached to a main route (see merge_host).
                    return Arc::new(HostRoutes::default());
                }
                let all: Vec<&Entry> = entries.iter().collect();
                Arc::new(build_table(&all, regex && !alias).0)
            });
            let mut warnings = Vec::new();
            if canary {
                for entry in &entries {
                    warnings.push(Warning {
                        kind: "Ingress",
                        object: key.clone(),
                        reason: format!(
                            "canary path {:?} on host {} not served: no main Ingress has this host and path",
                            entry.text,
                            host.display()
                        ),
                    });
                }
            } else if table.len() < entries.len() {
                let mut seen = HostRoutes::default();
                for entry in &entries {
                    if seen.insert(entry.route.path.clone(), ()).is_err() {
                        warnings.push(path_conflict(key, ingress, &host, entry, key));
                    }
                }
            }
            compiled.hosts.push(CompiledHost {
                host,
                entries,
                table: table.clone(),
                warnings,
                covered,
                regex: regex && !alias,
                alias,
            });
        }
        compiled.warnings = self.warnings.split_off(first_warning);
        compiled.deps = std::mem::take(&mut self.deps);
        compiled
    }

    /// The hosts `from-to-www-redirect` adds: for each exact host of the Ingress, its `www.`
    /// twin (or the name without `www.`), unless the Ingress has rules for it itself; each with
    /// one route that redirects (308) to the host, keeping scheme, path and query.
    fn www_aliases(
        &mut self,
        key: &ObjectKey,
        hosts: &[(HostMatch, Vec<Entry>, bool)],
        shared_key: &Arc<ObjectKey>,
    ) -> Vec<(HostMatch, Vec<Entry>, bool)> {
        let mut out = Vec::new();
        for (host, _, _) in hosts {
            let HostMatch::Exact(name) = host else {
                self.warn(
                    key,
                    format!(
                        "from-to-www-redirect does not apply to host {}",
                        host.display()
                    ),
                );
                continue;
            };
            let twin = match name.strip_prefix("www.") {
                Some(bare) if bare.contains('.') => bare.to_owned(),
                Some(_) => continue,
                None => format!("www.{name}"),
            };
            let Ok(twin) = HostMatch::parse(Some(&twin)) else {
                continue;
            };
            if hosts.iter().any(|(h, _, _)| *h == twin) {
                continue;
            }
            let policy = RoutePolicy {
                redirect: Some(Redirect {
                    to: RedirectTo::Host((**name).into()),
                    code: http::StatusCode::PERMANENT_REDIRECT,
                }),
                ..RoutePolicy::default()
            };
            let route = Arc::new(Route {
                ingress: shared_key.clone(),
                path: PathMatch::prefix("/"),
                backend: Backend::Unavailable {
                    reason: format!("from-to-www-redirect to {name}").into(),
                },
                ssl_redirect: false,
                policy: Some(Arc::new(policy)),
                rewrite: None,
                canary: None,
                counters: Default::default(),
            });
            out.push((
                twin,
                vec![Entry {
                    route,
                    text: "/".into(),
                    rule: usize::MAX,
                    path: usize::MAX,
                }],
                false,
            ));
        }
        out
    }

    /// `service-upstream`: a Service backend sent to the Service's cluster IP and port instead
    /// of its endpoints.
    fn service_upstream(&mut self, key: &ObjectKey, backend: Backend) -> Backend {
        let Backend::Service(s) = &backend else {
            return backend;
        };
        let service = self.objects.services.get(&s.service);
        let spec = service.and_then(|svc| svc.spec.as_ref());
        let ip = spec
            .and_then(|sp| sp.cluster_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let by_number = s.port.parse::<i32>().ok();
        let port = spec.and_then(|sp| {
            sp.ports.iter().flatten().find(|p| match by_number {
                Some(n) => p.port == n,
                None => p.name.as_deref() == Some(&*s.port),
            })
        });
        match (ip, port.and_then(|p| u16::try_from(p.port).ok())) {
            (Some(ip), Some(port)) => Backend::Service(Arc::new(
                ServiceBackend::new(
                    s.service.clone(),
                    s.port.clone(),
                    s.protocol,
                    vec![SocketAddr::new(ip, port)],
                )
                .with_tls_server_name(s.tls_server_name.clone()),
            )),
            _ => {
                let reason = format!("service-upstream: Service {} has no cluster IP", s.service);
                self.warn(key, reason.clone());
                Backend::Unavailable {
                    reason: reason.into(),
                }
            }
        }
    }

    /// `default-backend`: the first port of a Service in the Ingress's namespace.
    fn first_port_backend(
        &mut self,
        key: &ObjectKey,
        name: &str,
        protocol: UpstreamProtocol,
        tls_name: Option<&Arc<str>>,
    ) -> Result<Arc<ServiceBackend>, String> {
        let service_key = ObjectKey::new(key.namespace.clone(), name);
        let port = self
            .objects
            .services
            .get(&service_key)
            .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port))
            .ok_or_else(|| format!("Service {service_key} not found or has no port"))?;
        let backend = IngressServiceBackend {
            name: name.to_owned(),
            port: Some(k8s_openapi::api::networking::v1::ServiceBackendPort {
                number: Some(port),
                name: None,
            }),
        };
        self.service_backend(&key.namespace, &backend, protocol, tls_name)
    }

    /// Resolves an Ingress backend; anything unusable becomes a 503 backend plus a warning.
    fn backend(
        &mut self,
        key: &ObjectKey,
        backend: &IngressBackend,
        protocol: UpstreamProtocol,
        tls_name: Option<&Arc<str>>,
        prefix: &str,
    ) -> Backend {
        let resolved = match (&backend.service, &backend.resource) {
            (Some(service), None) => self
                .service_backend(&key.namespace, service, protocol, tls_name)
                .map(Backend::Service),
            (None, Some(resource)) => {
                let group = resource.api_group.as_deref().unwrap_or("");
                if group != GROUP || resource.kind != "StaticSite" {
                    Err(format!(
                        "backend resource {}/{} {:?} is not supported (only {GROUP} StaticSite)",
                        group, resource.kind, resource.name
                    ))
                } else {
                    let site_key = ObjectKey::new(key.namespace.clone(), resource.name.clone());
                    let recorded = self
                        .deps
                        .iter()
                        .any(|d| matches!(d, Dependency::Site(k, _) if *k == site_key));
                    if !recorded {
                        let site = self.objects.static_sites.get(&site_key).cloned();
                        self.deps.push(Dependency::Site(site_key.clone(), site));
                    }
                    match self.sites.get(&site_key) {
                        Some(Ok(site)) => Ok(Backend::Static(site.route(prefix))),
                        Some(Err(_)) => Err(format!("StaticSite {site_key} is invalid")),
                        None => Err(format!("StaticSite {site_key} not found")),
                    }
                }
            }
            _ => Err("backend must name exactly one of service or resource".into()),
        };
        resolved.unwrap_or_else(|reason| {
            self.warn(key, reason.clone());
            Backend::Unavailable {
                reason: reason.into(),
            }
        })
    }

    fn service_backend(
        &mut self,
        namespace: &str,
        backend: &IngressServiceBackend,
        protocol: UpstreamProtocol,
        tls_name: Option<&Arc<str>>,
    ) -> Result<Arc<ServiceBackend>, String> {
        let service_key = ObjectKey::new(namespace, backend.name.clone());
        let port = backend
            .port
            .as_ref()
            .and_then(|p| match (p.number, &p.name) {
                (Some(n), _) => Some(n.to_string()),
                (None, Some(name)) => Some(name.clone()),
                (None, None) => None,
            });
        let Some(port) = port else {
            return Err(format!("backend Service {service_key} names no port"));
        };
        let recorded = self
            .deps
            .iter()
            .any(|d| matches!(d, Dependency::Service(k, _) if *k == service_key));
        if !recorded {
            let slices = self.slices_of(&service_key).to_vec();
            let state = ServiceState {
                service: self.objects.services.get(&service_key).cloned(),
                slices,
            };
            self.deps
                .push(Dependency::Service(service_key.clone(), state));
        }
        let cache_key = (service_key, port, protocol, tls_name.cloned());
        if let Some(done) = self.services.get(&cache_key) {
            return done.clone();
        }
        let resolved = self
            .resolve_service(&cache_key.0, &cache_key.1, protocol)
            .map(|b| Arc::new(b.with_tls_server_name(tls_name.cloned())));
        self.services.insert(cache_key, resolved.clone());
        resolved
    }

    fn resolve_service(
        &self,
        key: &ObjectKey,
        port: &str,
        protocol: UpstreamProtocol,
    ) -> Result<ServiceBackend, String> {
        let service = self
            .objects
            .services
            .get(key)
            .ok_or_else(|| format!("Service {key} not found"))?;
        let spec = service
            .spec
            .as_ref()
            .ok_or_else(|| format!("Service {key} has no spec"))?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return Err(format!(
                "Service {key} is of type ExternalName, which is not supported"
            ));
        }
        let by_number = port.parse::<i32>().ok();
        let service_port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| match by_number {
                Some(n) => p.port == n,
                None => p.name.as_deref() == Some(port),
            })
            .ok_or_else(|| format!("Service {key} has no port {port}"))?;
        // EndpointSlice ports carry the Service port's name ("" when unnamed).
        let port_name = service_port.name.as_deref().unwrap_or("");
        let mut ready = Vec::new();
        let mut terminating = Vec::new();
        for slice in self.slices_of(key) {
            if slice.address_type == "FQDN" {
                continue;
            }
            let slice_port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name);
            let Some(number) = slice_port
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.as_ref();
                let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
                let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                let list = match (is_ready, serving && is_terminating) {
                    (true, _) => &mut ready,
                    (false, true) => &mut terminating,
                    (false, false) => continue,
                };
                list.extend(
                    endpoint
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse::<IpAddr>().ok())
                        .map(|ip| SocketAddr::new(ip, number)),
                );
            }
        }
        let mut endpoints = if ready.is_empty() { terminating } else { ready };
        endpoints.sort();
        endpoints.dedup();
        Ok(ServiceBackend::new(
            key.clone(),
            port.to_owned(),
            protocol,
            endpoints,
        ))
    }
}

/// What a route's policy does, in a few words per part, for `/routes`.
fn policy_summary(policy: &RoutePolicy) -> serde_json::Value {
    use crate::snapshot::policy::Access;
    let mut out = serde_json::Map::new();
    match &policy.access {
        Access::Open => {}
        Access::Refused(reason) => {
            out.insert("refused".into(), (**reason).into());
        }
        Access::Restricted(rules) => {
            let mut parts = Vec::new();
            if let Some(a) = &rules.allow {
                parts.push(format!("allow {a}"));
            }
            if let Some(d) = &rules.deny {
                parts.push(format!("deny {d}"));
            }
            if let Some(b) = &rules.basic {
                parts.push(format!("basic auth ({} users)", b.users.len()));
            }
            if let Some(e) = &rules.external {
                parts.push(format!("external auth {}", e.url));
            }
            out.insert("access".into(), parts.join(", ").into());
        }
    }
    let l = &policy.limits;
    let mut limits = Vec::new();
    if let Some(r) = l.rps {
        limits.push(format!("{} rps (burst {})", r.requests, r.burst));
    }
    if let Some(r) = l.rpm {
        limits.push(format!("{} rpm (burst {})", r.requests, r.burst));
    }
    if let Some(c) = l.connections {
        limits.push(format!("{c} connections"));
    }
    if let Some(b) = l.body_size {
        limits.push(format!("body {b} bytes"));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), limits.join(", ").into());
    }
    if let Some(r) = &policy.redirect {
        let to = match &r.to {
            RedirectTo::Url(u) => u.to_str().unwrap_or("").to_owned(),
            RedirectTo::Host(h) => format!("host {h}"),
        };
        out.insert(
            "redirect".into(),
            format!("{} {to}", r.code.as_u16()).into(),
        );
    }
    if policy.cors.is_some() {
        out.insert("cors".into(), true.into());
    }
    if let Some(a) = &policy.upstream.affinity {
        let mode = if a.persistent {
            "persistent"
        } else {
            "balanced"
        };
        out.insert(
            "affinity".into(),
            format!("cookie {} ({mode})", a.name).into(),
        );
    }
    if let Some(key) = &policy.upstream.hash_by {
        out.insert("hashBy".into(), key.to_string().into());
    }
    serde_json::Value::Object(out)
}

/// Routes of a snapshot flattened for `/routes` and tests: host → path → description.
pub fn describe_routes(
    snapshot: &Snapshot,
) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let mut out: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    fn describe_backend(backend: &Backend) -> serde_json::Value {
        match backend {
            Backend::Service(s) => {
                let mut service = serde_json::json!({
                    "service": s.service.to_string(), "port": s.port, "protocol": s.protocol,
                    "endpoints": s.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                });
                if let Some(name) = &s.tls_server_name {
                    service["tlsServerName"] = (**name).into();
                }
                service
            }
            Backend::Static(s) => {
                serde_json::json!({"staticSite": s.site.key.to_string(), "root": s.site.root})
            }
            Backend::Unavailable { reason } => serde_json::json!({"unavailable": &**reason}),
        }
    }
    let describe = |route: &Route| {
        let mut described = serde_json::json!({
            "ingress": route.ingress.to_string(),
            "backend": describe_backend(&route.backend),
        });
        if route.ssl_redirect {
            described["sslRedirect"] = true.into();
        }
        if let Some(policy) = &route.policy {
            described["policy"] = policy_summary(policy);
        }
        if let Some(rewrite) = &route.rewrite {
            described["rewrite"] = rewrite.target.to_string().into();
        }
        if let Some(canary) = &route.canary {
            let rules = &canary.rules;
            let mut c = serde_json::json!({
                "ingress": canary.ingress.to_string(),
                "backend": describe_backend(&canary.backend),
                "weight": format!("{}/{}", rules.weight, rules.weight_total),
            });
            if let Some((header, _)) = &rules.header {
                c["header"] = header.as_str().into();
            }
            if let Some(cookie) = &rules.cookie {
                c["cookie"] = (**cookie).into();
            }
            described["canary"] = c;
        }
        described
    };
    for (host, routes) in snapshot.routes.hosts() {
        let mut paths: BTreeMap<String, serde_json::Value> = routes
            .iter()
            .map(|(path, route)| {
                let kind = if matches!(path, PathMatch::Exact(_)) {
                    "Exact"
                } else {
                    "Prefix"
                };
                (format!("{kind} {}", path.path()), describe(route))
            })
            .collect();
        if routes.is_regex() {
            let how = "ingress-nginx regex mode: case-insensitive regular expressions, longest path first";
            paths.insert("(matching)".into(), how.into());
        }
        out.insert(host.display().into_owned(), paths);
    }
    if let Some(route) = snapshot.routes.default_route() {
        out.entry("(default backend)".into())
            .or_default()
            .insert("/".into(), describe(route));
    }
    out
}

#[cfg(test)]
mod tests;
