//! Endpoint choices other than round robin, with ingress-nginx's meaning:
//!
//! - `affinity: cookie`: the endpoint that answers a client is named in a cookie (a hash of the
//!   endpoint, never its address), and later requests carrying it go to that endpoint while it
//!   is one of the backend's. `persistent` mode names the endpoint itself; `balanced` (the
//!   default) carries a random key that rendezvous hashing maps to an endpoint, so when pods
//!   are added some sessions move to them. A cookie naming a gone endpoint gets a new endpoint
//!   and a new cookie; with `session-cookie-change-on-failure`, so does one whose endpoint
//!   failed. A canary that served a client keeps it (`affinity-canary-behavior: sticky`).
//! - `upstream-hash-by`: the templated key picks the endpoint by rendezvous hashing over the
//!   backend's [`EndpointKeys`] (made once per endpoint set).
//!
//! Routes without these annotations never come here: they keep the round-robin rotation.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};
use http::{HeaderMap, Request};
use regex::Regex;

use super::ConnInfo;
use super::upstream::{Candidates, Upstreams};
use crate::routing::PathMatch;
use crate::snapshot::endpoint_keys::{EndpointKeys, key_hash};
use crate::snapshot::policy::{Canary, CookieAffinity, SameSite, Template};
use crate::snapshot::{Backend, Route, ServiceBackend};

/// Tries at finding a fresh balanced key that lands on a wanted endpoint.
const KEY_TRIES: usize = 32;

/// The endpoints to try for one request, and what the response must tell the client.
pub struct Choice<'r> {
    pub candidates: Candidates,
    pub sticky: Option<Sticky<'r>>,
}

/// An affinity cookie to set on the response, once it is known which endpoint answered.
pub struct Sticky<'r> {
    affinity: &'r CookieAffinity,
    /// The endpoint the request's cookie names (and that is still the backend's).
    from_cookie: Option<usize>,
    /// Balanced mode: the key of the request's cookie, or a fresh one.
    key: Option<String>,
    path: &'r str,
    secure: bool,
    omit_same_site_none: bool,
}

/// Whether the canary decision is already made by an affinity cookie: `Some(false)` for a
/// client the main backend serves, `Some(true)` for one the canary serves (sticky canary
/// behaviour); `None` when the canary's rules decide. The canary's affinity is its own
/// annotations' or, without them, the main Ingress's.
pub fn sticky_canary<B>(route: &Route, canary: &Canary, req: &Request<B>) -> Option<bool> {
    let main = route
        .policy
        .as_deref()
        .and_then(|p| p.upstream.affinity.as_deref());
    let own = canary.upstream.affinity.as_deref().or(main)?;
    if !own.canary_sticky {
        return None;
    }
    if let (Some(main), Backend::Service(backend)) = (main, &route.backend)
        && cookie_key(req, &main.name, backend.keys()).is_some()
    {
        return Some(false);
    }
    if let Backend::Service(backend) = &canary.backend
        && cookie_key(req, &own.name, backend.keys()).is_some()
    {
        return Some(true);
    }
    None
}

/// The endpoints to try for a request to `backend` (the route's, or its canary's when
/// `canary` is the one chosen).
pub fn choose<'r, B>(
    upstreams: &Upstreams,
    route: &'r Route,
    canary: Option<&'r Canary>,
    backend: &ServiceBackend,
    conn: &ConnInfo,
    req: &Request<B>,
) -> Choice<'r> {
    let main = route.policy.as_deref().map(|p| &p.upstream);
    let (affinity, hash_by) = match canary {
        Some(c) => (
            c.upstream
                .affinity
                .as_deref()
                .or(main.and_then(|m| m.affinity.as_deref())),
            c.upstream.hash_by.as_ref(),
        ),
        None => (
            main.and_then(|m| m.affinity.as_deref()),
            main.and_then(|m| m.hash_by.as_ref()),
        ),
    };
    let round_robin = || Choice {
        candidates: upstreams.candidates(backend),
        sticky: None,
    };
    if backend.endpoints.is_empty() {
        return round_robin();
    }
    if let Some(affinity) = affinity {
        return sticky(upstreams, affinity, &route.path, backend, conn, req);
    }
    if let Some(template) = hash_by {
        let key = key_hash(hash_key(template, conn, req).as_bytes());
        let keys = backend.keys();
        let candidates = match keys.best(key) {
            // The key's endpoint, then the others in rotation (no list built).
            Some(i) if !upstreams.is_down(backend.endpoints[i]) => Candidates::First {
                first: Some(i),
                skip: i,
                rest: backend.pick(),
            },
            // Its endpoint failed a moment ago: the key's next choices, healthy ones first.
            _ => upstreams.healthy_first(backend, keys.ranked(key)),
        };
        return Choice {
            candidates,
            sticky: None,
        };
    }
    round_robin()
}

fn sticky<'r, B>(
    upstreams: &Upstreams,
    affinity: &'r CookieAffinity,
    path: &'r PathMatch,
    backend: &ServiceBackend,
    conn: &ConnInfo,
    req: &Request<B>,
) -> Choice<'r> {
    let keys = backend.keys();
    let from_cookie = cookie_key(req, &affinity.name, keys).and_then(|key| {
        let i = if affinity.persistent {
            keys.find(key)?
        } else {
            keys.best(key_hash(key.as_bytes()))?
        };
        Some((i, key))
    });
    let failed = |i: usize| affinity.change_on_failure && upstreams.is_down(backend.endpoints[i]);
    let mut sticky = Sticky {
        affinity,
        from_cookie: None,
        key: None,
        path: match (&affinity.path, path) {
            (Some(p), _) => p,
            (None, PathMatch::Exact(p)) => p,
            (None, PathMatch::Prefix(p)) if p.is_empty() => "/",
            (None, PathMatch::Prefix(p)) => p,
        },
        secure: affinity.secure || conn.scheme == "https",
        omit_same_site_none: affinity.same_site == Some(SameSite::None)
            && affinity.conditional_same_site_none
            && req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|ua| ua.to_str().ok())
                .is_some_and(|ua| SAME_SITE_NONE_INCOMPATIBLE.is_match(ua)),
    };
    let first = match from_cookie {
        Some((i, key)) if !failed(i) => {
            sticky.from_cookie = Some(i);
            sticky.key = Some(key.to_owned());
            Some(i)
        }
        _ if affinity.persistent => None,
        // A new balanced session: a fresh key, and the endpoint it lands on (not a failed one
        // if another key avoids it).
        _ => {
            let mut fresh = None;
            for _ in 0..KEY_TRIES {
                let key = random_key();
                let Some(i) = keys.best(key_hash(key.as_bytes())) else {
                    break;
                };
                let ok = !upstreams.is_down(backend.endpoints[i]);
                if ok || fresh.is_none() {
                    fresh = Some((i, key));
                }
                if ok {
                    break;
                }
            }
            fresh.map(|(i, key)| {
                sticky.key = Some(key);
                i
            })
        }
    };
    let candidates = match first {
        Some(i) => Candidates::First {
            first: Some(i),
            skip: i,
            rest: backend.pick(),
        },
        None => upstreams.candidates(backend),
    };
    Choice {
        candidates,
        sticky: Some(sticky),
    }
}

// === impl Sticky ===

impl Sticky<'_> {
    /// Sets the cookie that names `answered` (the endpoint that served the request), unless
    /// the request's cookie already does, or it named another endpoint that is still there
    /// and `session-cookie-change-on-failure` is off (the session stays where it was).
    pub fn set_cookie(
        &self,
        backend: &ServiceBackend,
        answered: Option<std::net::SocketAddr>,
        headers: &mut HeaderMap,
    ) {
        let Some(j) = answered.and_then(|a| backend.endpoints.iter().position(|e| *e == a)) else {
            return;
        };
        if let Some(i) = self.from_cookie
            && (i == j || !self.affinity.change_on_failure)
        {
            return;
        }
        let keys = backend.keys();
        let value = if self.affinity.persistent {
            keys.token(j).to_owned()
        } else {
            let lands = |k: &str| keys.best(key_hash(k.as_bytes())) == Some(j);
            match self.key.as_deref().filter(|k| lands(k)) {
                Some(k) => k.to_owned(),
                None => match (0..KEY_TRIES).map(|_| random_key()).find(|k| lands(k)) {
                    Some(k) => k,
                    None => return,
                },
            }
        };
        if let Ok(cookie) = HeaderValue::try_from(self.cookie(&value, keys.tag())) {
            headers.append(header::SET_COOKIE, cookie);
        }
    }

    fn cookie(&self, key: &str, tag: &str) -> String {
        let a = self.affinity;
        let mut out = format!("{}={key}.{tag}; Path={}", a.name, self.path);
        if let Some(domain) = &a.domain {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        if let Some(secs) = a.expires {
            let at = SystemTime::now() + Duration::from_secs(secs);
            out.push_str("; Expires=");
            out.push_str(&httpdate::fmt_http_date(at));
        }
        if let Some(secs) = a.max_age {
            out.push_str(&format!("; Max-Age={secs}"));
        }
        if self.secure {
            out.push_str("; Secure");
        }
        out.push_str("; HttpOnly");
        match a.same_site {
            Some(SameSite::None) if self.omit_same_site_none => {}
            Some(SameSite::None) => out.push_str("; SameSite=None"),
            Some(SameSite::Lax) => out.push_str("; SameSite=Lax"),
            Some(SameSite::Strict) => out.push_str("; SameSite=Strict"),
            None => {}
        }
        out
    }
}

/// Browsers that reject or misread `SameSite=None` (Chromium's published list): iOS 12 and
/// macOS 10.14 WebKit, Chrome 51–66, UC Browser before 12.13.2.
static SAME_SITE_NONE_INCOMPATIBLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\(iP.+; CPU .*OS 12[_\d]*.*\) AppleWebKit/|\(Macintosh;.*Mac OS X 10_14[_\d]*.*\) AppleWebKit/|Chrom(e|ium)/(5[1-9]|6[0-6])\.|UCBrowser/(\d|1[01]|12\.(\d|1[0-2])|12\.13\.[01])\.",
    )
    .expect("a valid regex")
});

/// The key part of the request's affinity cookie `name` that was set for this backend.
fn cookie_key<'a, B>(req: &'a Request<B>, name: &str, keys: &EndpointKeys) -> Option<&'a str> {
    super::headers::request_cookies(req.headers(), name).find_map(|value| {
        let (key, tag) = value.rsplit_once('.')?;
        (tag == keys.tag() && !key.is_empty()).then_some(key)
    })
}

fn random_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `upstream-hash-by`'s key for a request (nginx's variables, from the request as received).
fn hash_key<B>(template: &Template, conn: &ConnInfo, req: &Request<B>) -> String {
    template.render(|var| super::vars::value(var, conn, req))
}

#[cfg(test)]
mod tests;
