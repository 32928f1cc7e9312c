//! The annotation parser (`translate::annotations::parse`), both prefixes, with the Secrets
//! basic auth reads, and the regex paths and `rewrite-target` it switches on.
//!
//! Never panics; every annotation under either prefix gets exactly one report, and each one
//! that is not honoured a reason and a warning; any refused annotation refuses the routes
//! (fail closed, never served open). In regex mode, the host's paths compile or are reported
//! (as translate does), a request finds the first matching path (longest first), and the
//! rewrite of a matched request gives a path starting with `/`, and a valid request target
//! whenever the template's own text is.
//!
//! Input: text in sections split by `---` lines:
//! 1. annotations, `name: value` a line (`\n` in a value is a newline; a name without `/` is
//!    under ingress-nginx's prefix, `@name` under `gatehouse.dev/`);
//! 2. the htpasswd file of Secret `default/auth` (key `auth`), also read as an auth map
//!    `default/auth-map` (`user:hash` lines);
//! 3. the Ingress's paths (in regex mode: regular expressions);
//! 4. request paths (`path?query`).
#![no_main]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use gatehouse::objects::ObjectKey;
use gatehouse::routing::{RegexRoutes, regex_first_match, regex_routes};
use gatehouse::snapshot::policy::{PathRewrite, Var};
use gatehouse::translate::annotations::{
    Context, Defaults, GATEHOUSE_PREFIX, NGINX_DEFAULTS, NGINX_PREFIX, Status, parse,
};
use http::uri::PathAndQuery;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static ObjectKey {
    static KEY: OnceLock<ObjectKey> = OnceLock::new();
    KEY.get_or_init(|| ObjectKey::new("default", "fuzz"))
}

thread_local! {
    /// Compiled path sets by their text. Most mutations leave the paths section as it was, and
    /// compiling it again (the regex crate's DFA construction) took two thirds of each run while
    /// adding no coverage of Gatehouse's own code. Cleared when large.
    static COMPILED: RefCell<HashMap<String, Arc<RegexRoutes<String>>>> = RefCell::default();
}

/// `regex_routes` over the paths, once per distinct path list.
fn compiled(paths: &[&str]) -> Arc<RegexRoutes<String>> {
    let key = paths.join("\n");
    COMPILED.with_borrow_mut(|cache| {
        if let Some(hit) = cache.get(&key) {
            return hit.clone();
        }
        if cache.len() >= 256 {
            cache.clear();
        }
        let made = Arc::new(regex_routes(
            paths.iter().map(|p| (*p, (*p).to_owned())).collect(),
        ));
        cache.insert(key, made.clone());
        made
    })
}

fn secret(data: BTreeMap<String, String>) -> Arc<Secret> {
    let mut s = Secret::default();
    s.string_data = Some(data);
    Arc::new(s)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut sections = text.split("\n---\n");
    let annotations_text = sections.next().unwrap_or_default();
    let auth_file = sections.next();
    // A few paths: compiling regular expressions (the regex crate's work) would otherwise take
    // most of each run.
    let paths: Vec<&str> = sections
        .next()
        .map_or(Vec::new(), |s| s.lines().take(8).collect());
    let requests: Vec<&str> = sections.next().map_or(Vec::new(), |s| s.lines().collect());

    let mut annotations = BTreeMap::new();
    for line in annotations_text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let name = if let Some(ours) = name.strip_prefix('@') {
            format!("{GATEHOUSE_PREFIX}{ours}")
        } else if name.contains('/') {
            name.to_owned()
        } else {
            format!("{NGINX_PREFIX}{name}")
        };
        annotations.insert(name, value.trim_start().replace("\\n", "\n"));
    }
    let mut secrets = BTreeMap::new();
    if let Some(file) = auth_file {
        let map = file
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(u, h)| (u.to_owned(), h.to_owned()))
            .collect();
        secrets.insert(
            ObjectKey::new("default", "auth"),
            secret(BTreeMap::from([("auth".to_owned(), file.to_owned())])),
        );
        secrets.insert(ObjectKey::new("default", "auth-map"), secret(map));
    }
    let mut ingress = Ingress::default();
    ingress.metadata.namespace = Some("default".into());
    ingress.metadata.name = Some("fuzz".into());
    ingress.metadata.annotations = Some(annotations.clone());
    let cx = Context {
        key: key(),
        secrets: &secrets,
        defaults: if flags & 1 != 0 {
            NGINX_DEFAULTS
        } else {
            Defaults::default()
        },
    };
    let parsed = parse(&ingress, &cx);
    if let Some(reason) = &parsed.rejected {
        assert!(!reason.is_empty());
        return;
    }

    // One report per annotation of either prefix; reasons and warnings for the others.
    let ours: Vec<&String> = annotations
        .keys()
        .filter(|k| k.starts_with(GATEHOUSE_PREFIX) || k.starts_with(NGINX_PREFIX))
        .collect();
    for k in &ours {
        let n = parsed
            .reports
            .iter()
            .filter(|r| r.annotation == **k)
            .count();
        assert_eq!(n, 1, "{k}: {n} reports: {:?}", parsed.reports);
    }
    assert_eq!(parsed.reports.len(), ours.len(), "{:?}", parsed.reports);
    let mut not_honoured = 0;
    for r in &parsed.reports {
        assert!(!r.reason.is_empty(), "{r:?}");
        if r.outcome != Status::Honoured {
            not_honoured += 1;
            assert!(
                parsed.warnings.iter().any(|w| w.contains(&r.annotation)),
                "{r:?} without a warning: {:?}",
                parsed.warnings
            );
        }
        if r.outcome == Status::Refused {
            assert!(
                parsed.refused().is_some(),
                "{r:?} refused but the routes are not"
            );
        }
    }
    assert!(parsed.warnings.len() >= not_honoured);
    if parsed.refused().is_some() {
        assert!(
            parsed.reports.iter().any(|r| r.outcome == Status::Refused),
            "routes refused without a refused annotation"
        );
    }

    // Regex mode, as translate() builds a host of it.
    if !(parsed.use_regex || parsed.rewrite_target.is_some()) {
        return;
    }
    let compiled = compiled(&paths);
    let (routes, bad) = &*compiled;
    for (path, reason) in bad {
        assert!(!reason.is_empty(), "{path:?}");
    }
    for w in routes.windows(2) {
        assert!(w[0].1.len() >= w[1].1.len(), "longest path first");
    }
    let vars = |v: &Var| match v {
        Var::Capture(_) => unreachable!("captures are the rewrite's"),
        _ => "v".to_owned(),
    };
    for request in &requests {
        let (path, query) = match request.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (*request, None),
        };
        let Some(found) = regex_first_match(routes, path) else {
            continue;
        };
        let Some(target) = &parsed.rewrite_target else {
            continue;
        };
        // The route's own compiled regex, as translate() keeps it.
        let regex = routes.iter().find(|(_, p)| p == found).unwrap().0.clone();
        let rewrite = PathRewrite {
            regex,
            target: target.clone(),
        };
        let out = rewrite
            .apply(path, query, vars)
            .unwrap_or_else(|| panic!("{request:?} matched {found:?} but the rewrite does not"));
        assert!(out.starts_with('/'), "{request:?} rewritten to {out:?}");
        let literal = target.render(|_| String::new());
        // A request target as the data plane gets it: one the URI parser takes whole (a `#`
        // would start a fragment, which the parser drops before any rewrite sees the path).
        let whole_target = PathAndQuery::try_from(request.to_string())
            .is_ok_and(|target| target.as_str() == *request);
        if whole_target && PathAndQuery::try_from(format!("/{literal}")).is_ok()
        {
            assert!(
                PathAndQuery::try_from(out.clone()).is_ok(),
                "{request:?} rewritten by {target} to {out:?}, not a request target"
            );
        }
    }
});
