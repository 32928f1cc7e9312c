//! Host and path matching: the [`RouteTable`] the data plane looks requests up in.
//!
//! Pure and generic over the route value so it is tested and benchmarked on its own. A lookup
//! is one hash lookup for the host, one for an exact path, then one per path segment for
//! prefixes: its cost does not grow with the number of hosts or routes.
//!
//! A host where an Ingress uses ingress-nginx regex paths (`use-regex`, `rewrite-target`) is
//! matched as ingress-nginx does it instead: every path of the host is a case-insensitive
//! regular expression anchored at the start, tried longest path first; the first match wins
//! ([`regex_routes`], [`HostRoutes::set_regex`]). Other hosts never run a regex.
//!
//! Hosts share their routes by `Arc`: hosts with the same routes (one Ingress's hosts usually)
//! hold one [`HostRoutes`], and a table is cloned cheaply to build the next one from, changing
//! only the hosts that changed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};

/// Hash maps of the route table: foldhash, several times faster than SipHash on short keys.
/// Its seed is random per process, and a request only looks up keys the configuration put
/// in, so a client cannot make collisions to slow lookups down.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How a route's path matches a request path (Kubernetes `pathType`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathMatch {
    /// The request path equals this path exactly (case-sensitive, trailing slash significant).
    Exact(Box<str>),
    /// The request path's `/`-separated elements start with these elements. Stored without a
    /// trailing slash; the root prefix `/` is stored as the empty string.
    Prefix(Box<str>),
}

// === impl PathMatch ===

impl PathMatch {
    /// A Prefix match; `/foo/` and `/foo` are the same prefix, as Kubernetes documents.
    pub fn prefix(path: &str) -> Self {
        PathMatch::Prefix(path.trim_end_matches('/').into())
    }

    pub fn exact(path: &str) -> Self {
        PathMatch::Exact(path.into())
    }

    /// The path as an Ingress would spell it.
    pub fn path(&self) -> &str {
        match self {
            PathMatch::Exact(p) => p,
            PathMatch::Prefix(p) if p.is_empty() => "/",
            PathMatch::Prefix(p) => p,
        }
    }

    /// Number of bytes of a matching request path this match covers (used to serve static
    /// files relative to the route's path).
    pub fn matched_len(&self) -> usize {
        match self {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p.len(),
        }
    }
}

/// The routes of one host (or of every host, or of several hosts that share them).
#[derive(Clone, Debug)]
pub struct HostRoutes<T> {
    exact: Map<Box<str>, T>,
    prefix: Map<Box<str>, T>,
    /// Regex mode: the host's routes in the order they are tried (see [`regex_routes`]); the
    /// maps above still hold every route, for dumps and conflicts, but are not looked up.
    regex: Option<Box<[(Regex, T)]>>,
}

impl<T> Default for HostRoutes<T> {
    fn default() -> Self {
        Self {
            exact: Map::default(),
            prefix: Map::default(),
            regex: None,
        }
    }
}

// === impl HostRoutes ===

impl<T> HostRoutes<T> {
    /// Adds a route unless one with the same match exists; returns the existing one then.
    pub fn insert(&mut self, path: PathMatch, value: T) -> Result<(), &T> {
        let map = match &path {
            PathMatch::Exact(_) => &mut self.exact,
            PathMatch::Prefix(_) => &mut self.prefix,
        };
        let (PathMatch::Exact(key) | PathMatch::Prefix(key)) = path;
        match map.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => Err(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(value);
                Ok(())
            }
        }
    }

    /// Puts the host in regex mode: requests are matched against these, in order, only.
    pub fn set_regex(&mut self, routes: Vec<(Regex, T)>) {
        self.regex = Some(routes.into_boxed_slice());
    }

    /// Whether the host is in regex mode.
    pub fn is_regex(&self) -> bool {
        self.regex.is_some()
    }

    /// The best route for a request path: an Exact match (always the longest possible), else the
    /// longest Prefix match by whole path elements; in regex mode, the first regex that matches.
    pub fn lookup(&self, path: &str) -> Option<&T> {
        if let Some(routes) = &self.regex {
            return regex_first_match(routes, path);
        }
        if let Some(route) = self.exact.get(path) {
            return Some(route);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // A trailing slash in the request is ignored for Prefix matching.
        let mut candidate = path.strip_suffix('/').unwrap_or(path);
        loop {
            if let Some(route) = self.prefix.get(candidate) {
                return Some(route);
            }
            let cut = candidate.rfind('/')?;
            candidate = &candidate[..cut];
        }
    }

    /// Every route with its match, in a stable order (for dumps and tests).
    pub fn iter(&self) -> impl Iterator<Item = (PathMatch, &T)> {
        let mut all: Vec<(PathMatch, &T)> = self
            .exact
            .iter()
            .map(|(p, v)| (PathMatch::Exact(p.clone()), v))
            .chain(
                self.prefix
                    .iter()
                    .map(|(p, v)| (PathMatch::Prefix(p.clone()), v)),
            )
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter()
    }

    /// Every route, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact.values().chain(self.prefix.values())
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The regex of an ingress-nginx path in regex mode: `location ~* "^PATH"`, i.e. the path as a
/// regular expression, case-insensitive, anchored at the start only. Errors say why the path is
/// not a valid (RE2-style, as Kubernetes documents) regular expression. The compiled size is
/// capped, so a hostile path cannot take much memory.
pub fn path_regex(path: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^{path}"))
        .case_insensitive(true)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| {
            let e = e.to_string();
            let last = e.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(&e);
            format!(
                "path {path:?} is not a valid regular expression: {}",
                last.trim()
            )
        })
}

/// A regex-mode host's routes in ingress-nginx's order: paths sorted by length, longest first
/// (stable: equal lengths keep their order, oldest Ingress first), each compiled with
/// [`path_regex`]. Paths that do not compile are returned apart, with the reason.
pub fn regex_routes<T>(paths: Vec<(&str, T)>) -> RegexRoutes<T> {
    let mut paths = paths;
    paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut ok = Vec::with_capacity(paths.len());
    let mut bad = Vec::new();
    for (path, value) in paths {
        match path_regex(path) {
            Ok(re) => ok.push((re, value)),
            Err(reason) => bad.push((value, reason)),
        }
    }
    (ok, bad)
}

/// [`regex_routes`]' result: the ordered routes, and the paths that did not compile with why.
pub type RegexRoutes<T> = (Vec<(Regex, T)>, Vec<(T, String)>);

/// The first route whose regex matches the request path.
pub fn regex_first_match<'r, T>(routes: &'r [(Regex, T)], path: &str) -> Option<&'r T> {
    routes
        .iter()
        .find(|(re, _)| re.is_match(path))
        .map(|(_, v)| v)
}

/// Which hosts a set of rules applies to (Kubernetes `rules[].host`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// One exact, lower-case name.
    Exact(Arc<str>),
    /// `*.suffix`: any name with exactly one more DNS label in front of `suffix`.
    Wildcard(Arc<str>),
    /// No host given: every host.
    Any,
}

// === impl HostMatch ===

impl HostMatch {
    /// Parses an Ingress rule's host. Errors say why the host is not a valid one.
    pub fn parse(host: Option<&str>) -> Result<Self, String> {
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return Ok(HostMatch::Any);
        };
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "host {host:?} is not a valid DNS name (a wildcard may only be a leading \"*.\")"
            ));
        }
        Ok(if wildcard {
            HostMatch::Wildcard(name.into())
        } else {
            HostMatch::Exact(name.into())
        })
    }

    /// The host as an Ingress spells it (`*` for every host).
    pub fn display(&self) -> Cow<'_, str> {
        match self {
            HostMatch::Exact(h) => Cow::Borrowed(h),
            HostMatch::Wildcard(s) => Cow::Owned(format!("*.{s}")),
            HostMatch::Any => Cow::Borrowed("*"),
        }
    }
}

/// One shard of a [`HostMap`].
type Shard<T> = Map<Arc<str>, Arc<HostRoutes<T>>>;

/// Host names to their routes, in shards: cloning copies the shards' handles, and a change
/// then copies only the shards it touches.
#[derive(Clone, Debug)]
struct HostMap<T> {
    /// A power of two of them.
    shards: Vec<Arc<Shard<T>>>,
    /// Picks a host's shard (seeded apart from the shards' own maps).
    pick: foldhash::fast::RandomState,
}

impl<T> HostMap<T> {
    /// Room for about `hosts` hosts, in shards of a few hundred.
    fn with_capacity(hosts: usize) -> Self {
        let count = (hosts / 256).clamp(1, 4096).next_power_of_two();
        let each = hosts.div_ceil(count);
        Self {
            shards: (0..count)
                .map(|_| Arc::new(Map::with_capacity_and_hasher(each, Default::default())))
                .collect(),
            pick: Default::default(),
        }
    }

    fn shard(&self, host: &str) -> usize {
        match self.shards.len() {
            1 => 0,
            n => (self.pick.hash_one(host) >> (64 - n.trailing_zeros())) as usize,
        }
    }

    fn get(&self, host: &str) -> Option<&Arc<HostRoutes<T>>> {
        self.shards[self.shard(host)].get(host)
    }

    fn shard_mut(&mut self, host: &str) -> &mut Shard<T> {
        let i = self.shard(host);
        Arc::make_mut(&mut self.shards[i])
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<HostRoutes<T>>)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

/// Hosts to routes. An exact host beats a wildcard, which beats the rules with no host; within
/// the chosen host only its own routes are considered, then the default backend.
///
/// Cloning one is cheap: hosts share their routes, and the host index is shared shard by shard
/// until a change copies a shard.
#[derive(Clone, Debug)]
pub struct RouteTable<T> {
    exact: HostMap<T>,
    wildcard: HostMap<T>,
    any: Option<Arc<HostRoutes<T>>>,
    default: Option<T>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

// === impl RouteTable ===

impl<T> RouteTable<T> {
    /// An empty table for about `hosts` exact hosts.
    pub fn with_capacity(hosts: usize) -> Self {
        Self {
            exact: HostMap::with_capacity(hosts),
            wildcard: HostMap::with_capacity(0),
            any: None,
            default: None,
        }
    }

    /// The routes of a host, created empty on first use (and copied first if shared).
    pub fn host_mut(&mut self, host: &HostMatch) -> &mut HostRoutes<T>
    where
        T: Clone,
    {
        let routes = match host {
            HostMatch::Exact(h) => self.exact.shard_mut(h).entry(h.clone()).or_default(),
            HostMatch::Wildcard(s) => self.wildcard.shard_mut(s).entry(s.clone()).or_default(),
            HostMatch::Any => self.any.get_or_insert_default(),
        };
        Arc::make_mut(routes)
    }

    /// The routes of a host entry exactly as declared (no wildcard or every-host fallback).
    pub fn host(&self, host: &HostMatch) -> Option<&Arc<HostRoutes<T>>> {
        match host {
            HostMatch::Exact(h) => self.exact.get(h),
            HostMatch::Wildcard(s) => self.wildcard.get(s),
            HostMatch::Any => self.any.as_ref(),
        }
    }

    /// Sets (or with `None` removes) the routes of a host entry; an empty one is removed too.
    pub fn set_host(&mut self, host: &HostMatch, routes: Option<Arc<HostRoutes<T>>>) {
        let routes = routes.filter(|r| !r.is_empty());
        let (map, name) = match host {
            HostMatch::Exact(h) => (&mut self.exact, h),
            HostMatch::Wildcard(s) => (&mut self.wildcard, s),
            HostMatch::Any => {
                self.any = routes;
                return;
            }
        };
        match routes {
            Some(routes) => {
                map.shard_mut(name).insert(name.clone(), routes);
            }
            None if map.get(name).is_some() => {
                map.shard_mut(name).remove(name);
            }
            None => {}
        }
    }

    /// Sets the backend for requests that match no rule, unless one is set; returns the
    /// existing one then.
    pub fn set_default(&mut self, value: T) -> Result<(), &T> {
        match self.default {
            Some(ref existing) => Err(existing),
            None => {
                self.default = Some(value);
                Ok(())
            }
        }
    }

    /// Sets or clears the backend for requests that match no rule.
    pub fn replace_default(&mut self, value: Option<T>) {
        self.default = value;
    }

    pub fn default_route(&self) -> Option<&T> {
        self.default.as_ref()
    }

    /// The route for a request. `host` is the Host header or `:authority` as received (any case,
    /// with or without port and trailing dot); `path` is the request path without the query.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&T> {
        let host = normalize_host(host);
        self.host_routes(&host)
            .and_then(|routes| routes.lookup(path))
            .or(self.default.as_ref())
    }

    /// The most specific host entry that covers `host` (already normalised).
    fn host_routes(&self, host: &str) -> Option<&HostRoutes<T>> {
        if let Some(routes) = self.exact.get(host) {
            return Some(&**routes);
        }
        // A wildcard covers one more label, which is not empty (`.example.com` has none).
        if !self.wildcard.is_empty()
            && let Some((label, parent)) = host.split_once('.')
            && !label.is_empty()
            && let Some(routes) = self.wildcard.get(parent)
        {
            return Some(&**routes);
        }
        self.any.as_deref()
    }

    /// Every host's routes in no particular order: [`Self::hosts`] without its sort, for walks
    /// that visit each route (a sort of 100,000 names costs more than the walk).
    pub fn hosts_unordered(&self) -> impl Iterator<Item = (HostMatch, &HostRoutes<T>)> {
        let exact = self
            .exact
            .iter()
            .map(|(h, r)| (HostMatch::Exact(h.clone()), &**r));
        let wildcard = self
            .wildcard
            .iter()
            .map(|(h, r)| (HostMatch::Wildcard(h.clone()), &**r));
        let any = self.any.as_deref().map(|r| (HostMatch::Any, r));
        exact.chain(wildcard).chain(any)
    }

    /// Every host entry in a stable order: exact, wildcard, then every-host rules (the order of
    /// [`HostMatch`]'s variants), each kind by name.
    pub fn hosts(&self) -> Vec<(HostMatch, &HostRoutes<T>)> {
        let mut hosts: Vec<_> = self.hosts_unordered().collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        hosts
    }

    /// Number of host entries (exact and wildcard).
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}

/// Lower-cases a received host and strips its port and trailing dot, borrowing when it can.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = match host.rfind(':') {
        // `[::1]:8080` or `host:8080`; a bare IPv6 literal has no port after `]`.
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let name = without_port.strip_suffix('.').unwrap_or(without_port);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests;
