//! The route table: built from fuzzed hosts and paths, looked up with fuzzed hosts and paths,
//! every answer compared with a plain reference written from the README's rules (exact host,
//! then a wildcard covering exactly one label, then rules with no host; Exact paths exactly,
//! Prefix by whole `/`-separated elements, the longest winning; then the default backend).
//!
//! A clone of the table is edited (hosts added to, hosts removed): the clone must answer as
//! its own reference, and the original as before (hosts and shards are shared copy-on-write).
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use gatehouse::routing::{HostMatch, HostRoutes, PathMatch, RouteTable};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Sizes the host index (more than 256 hosts give several shards).
    capacity: u16,
    routes: Vec<RouteSpec>,
    /// Build hosts through `host_mut` instead of whole tables through `set_host`.
    via_host_mut: bool,
    default: bool,
    /// Changes made to a clone of the table.
    edits: Vec<Edit>,
    queries: Vec<Query>,
}

#[derive(Arbitrary, Debug)]
struct RouteSpec {
    host: Host,
    exact: bool,
    path: Path,
}

#[derive(Arbitrary, Debug)]
enum Edit {
    Insert(RouteSpec),
    Remove(Host),
}

#[derive(Arbitrary, Debug)]
enum Query {
    /// Any host and path.
    Free(Host, Path),
    /// A route's own host and path, changed a little.
    Near {
        route: u8,
        host: HostVariant,
        path: PathVariant,
    },
}

/// Host names from a few labels (so that routes and requests meet), or any text.
#[derive(Arbitrary, Debug)]
enum Host {
    Labels(Vec<Label>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Label {
    A,
    B,
    Example,
    Com,
    Star,
    Empty,
    Upper,
    Dash,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum HostVariant {
    Same,
    Upper,
    Port(u16),
    TrailingDot,
    EmptyLabel,
    ExtraLabel,
}

/// Paths from a few segments, or any text.
#[derive(Arbitrary, Debug)]
enum Path {
    Segments(Vec<Segment>, bool),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Segment {
    Empty,
    A,
    B,
    Ab,
    Dot,
    DotDot,
    Upper,
    Encoded,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum PathVariant {
    Same,
    TrailingSlash,
    Child(Segment),
    /// Text glued to the last element (`/foo` → `/foobar`): a different element.
    Longer(String),
    Shorter,
}

impl Host {
    fn text(&self) -> String {
        match self {
            Host::Raw(s) => s.clone(),
            Host::Labels(labels) => {
                let labels: Vec<&str> = labels
                    .iter()
                    .map(|l| match l {
                        Label::A => "a",
                        Label::B => "b",
                        Label::Example => "example",
                        Label::Com => "com",
                        Label::Star => "*",
                        Label::Empty => "",
                        Label::Upper => "A",
                        Label::Dash => "x-y",
                        Label::Raw(s) => s,
                    })
                    .collect();
                labels.join(".")
            }
        }
    }
}

impl Segment {
    fn text(&self) -> &str {
        match self {
            Segment::Empty => "",
            Segment::A => "a",
            Segment::B => "b",
            Segment::Ab => "ab",
            Segment::Dot => ".",
            Segment::DotDot => "..",
            Segment::Upper => "A",
            Segment::Encoded => "%2F",
            Segment::Raw(s) => s,
        }
    }
}

impl Path {
    fn text(&self) -> String {
        match self {
            Path::Raw(s) => s.clone(),
            Path::Segments(segments, trailing) => {
                let mut path = String::new();
                for segment in segments {
                    path.push('/');
                    path.push_str(segment.text());
                }
                if *trailing || path.is_empty() {
                    path.push('/');
                }
                path
            }
        }
    }
}

/// The reference: every route as declared (the first of a host and match wins).
#[derive(Clone, Default)]
struct Reference {
    routes: Vec<(HostMatch, PathMatch, usize)>,
    default: Option<usize>,
}

impl Reference {
    fn insert(&mut self, host: HostMatch, path: PathMatch, id: usize) -> Result<(), usize> {
        match self
            .routes
            .iter()
            .find(|(h, p, _)| *h == host && *p == path)
        {
            Some(&(_, _, existing)) => Err(existing),
            None => {
                self.routes.push((host, path, id));
                Ok(())
            }
        }
    }

    fn remove(&mut self, host: &HostMatch) {
        self.routes.retain(|(h, _, _)| h != host);
    }

    fn lookup(&self, host: &str, path: &str) -> Option<usize> {
        // The port (after the last `:` not inside `[...]`) and one trailing dot are ignored.
        let host = match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => &host[..i],
            _ => host,
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let has = |h: &HostMatch| self.routes.iter().any(|(rh, _, _)| rh == h);
        let exact = HostMatch::Exact(host.as_str().into());
        // A wildcard covers one more label: not empty and without a dot.
        let wildcard = host
            .split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .map(|(_, parent)| HostMatch::Wildcard(parent.into()));
        let chosen = [Some(exact), wildcard, Some(HostMatch::Any)]
            .into_iter()
            .flatten()
            .find(has);
        let Some(chosen) = chosen else {
            return self.default;
        };
        let mine = self.routes.iter().filter(|(h, _, _)| *h == chosen);
        let mut best: Option<(usize, usize)> = None;
        for (_, route, id) in mine {
            match route {
                PathMatch::Exact(p) if **p == *path => return Some(*id),
                PathMatch::Exact(_) => {}
                PathMatch::Prefix(p) => {
                    let whole_elements = *path == **p
                        || path
                            .strip_prefix(&**p)
                            .is_some_and(|rest| rest.starts_with('/'));
                    if whole_elements && best.is_none_or(|(len, _)| p.len() > len) {
                        best = Some((p.len(), *id));
                    }
                }
            }
        }
        best.map(|(_, id)| id).or(self.default)
    }
}

/// A parsed host is a valid lower-case DNS name, and parses to itself again.
fn check_host(text: &str, host: &HostMatch) {
    let name = match host {
        HostMatch::Any => return assert!(text.is_empty(), "{text:?} parsed as every host"),
        HostMatch::Exact(n) | HostMatch::Wildcard(n) => n,
    };
    assert!(name.len() <= 253, "{text:?}: {} bytes", name.len());
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        assert!(
            ok,
            "{text:?} parsed to {host:?}, label {label:?} is not valid"
        );
    }
    let again = HostMatch::parse(Some(&host.display()));
    assert_eq!(
        again.as_ref(),
        Ok(host),
        "{text:?}: {host:?} does not parse to itself"
    );
}

/// The route of a spec, if translate() would make one (a valid host, a path starting with `/`).
fn route_of(spec: &RouteSpec) -> Option<(HostMatch, PathMatch)> {
    let text = spec.host.text();
    let host = HostMatch::parse(Some(&text)).ok()?;
    check_host(&text, &host);
    let path = spec.path.text();
    if !path.starts_with('/') {
        return None;
    }
    let path = if spec.exact {
        PathMatch::exact(&path)
    } else {
        PathMatch::prefix(&path)
    };
    Some((host, path))
}

fn check(
    table: &RouteTable<usize>,
    reference: &Reference,
    queries: &[(String, String)],
    what: &str,
) {
    for (host, path) in queries {
        let got = table.lookup(host, path).copied();
        let expected = reference.lookup(host, path);
        assert_eq!(got, expected, "{what}: lookup({host:?}, {path:?})");
    }
}

fuzz_target!(|input: Input| {
    let mut table = RouteTable::with_capacity(usize::from(input.capacity % 4096));
    let mut reference = Reference::default();
    let mut hosts: HashMap<HostMatch, HostRoutes<usize>> = HashMap::new();
    let mut declared = Vec::new();
    for (id, spec) in input.routes.iter().enumerate() {
        let Some((host, path)) = route_of(spec) else {
            continue;
        };
        declared.push((host.clone(), path.clone()));
        let expected = reference.insert(host.clone(), path.clone(), id);
        let got = if input.via_host_mut {
            table.host_mut(&host).insert(path, id).map_err(|e| *e)
        } else {
            hosts
                .entry(host)
                .or_default()
                .insert(path, id)
                .map_err(|e| *e)
        };
        assert_eq!(got, expected, "insert {spec:?}");
    }
    for (host, routes) in hosts {
        table.set_host(&host, Some(Arc::new(routes)));
    }
    if input.default {
        assert_eq!(table.set_default(usize::MAX), Ok(()));
        reference.default = Some(usize::MAX);
    }

    let mut queries = Vec::new();
    for query in &input.queries {
        queries.push(match query {
            Query::Free(host, path) => (host.text(), path.text()),
            Query::Near { route, host, path } => {
                let Some((h, p)) = declared.get(usize::from(*route)).or(declared.first()) else {
                    continue;
                };
                let name = match h {
                    HostMatch::Exact(n) => n.to_string(),
                    HostMatch::Wildcard(s) => format!("x.{s}"),
                    HostMatch::Any => "unused.invalid".into(),
                };
                let name = match host {
                    HostVariant::Same => name,
                    HostVariant::Upper => name.to_ascii_uppercase(),
                    HostVariant::Port(port) => format!("{name}:{port}"),
                    HostVariant::TrailingDot => format!("{name}."),
                    HostVariant::EmptyLabel => format!(".{name}"),
                    HostVariant::ExtraLabel => format!("y.{name}"),
                };
                let p = p.path();
                let p = match path {
                    PathVariant::Same => p.to_owned(),
                    PathVariant::TrailingSlash => format!("{p}/"),
                    PathVariant::Child(s) => format!("{}/{}", p.trim_end_matches('/'), s.text()),
                    PathVariant::Longer(s) => format!("{p}{s}"),
                    PathVariant::Shorter => {
                        let mut p = p.to_owned();
                        p.pop();
                        p
                    }
                };
                (name, p)
            }
        });
    }
    check(&table, &reference, &queries, "table");

    // A clone, edited: the original must not see the edits.
    let mut edited = table.clone();
    let mut edited_reference = reference.clone();
    for (i, edit) in input.edits.iter().enumerate() {
        let id = 1_000_000 + i;
        match edit {
            Edit::Insert(spec) => {
                let Some((host, path)) = route_of(spec) else {
                    continue;
                };
                let expected = edited_reference.insert(host.clone(), path.clone(), id);
                let got = edited.host_mut(&host).insert(path, id).map_err(|e| *e);
                assert_eq!(got, expected, "insert into the clone {spec:?}");
            }
            Edit::Remove(host) => {
                let Ok(host) = HostMatch::parse(Some(&host.text())) else {
                    continue;
                };
                edited_reference.remove(&host);
                edited.set_host(&host, None);
            }
        }
    }
    check(&edited, &edited_reference, &queries, "edited clone");
    check(
        &table,
        &reference,
        &queries,
        "table after its clone was edited",
    );
});
