//! The policy phase: what a route's typed policy allows this request (access rules, redirects,
//! body limits). Policies are parsed when the configuration changes; here they are only
//! applied, in ingress-nginx's order: refused, redirect, app-root, source rules (403),
//! authentication (401; external authentication in [`super::external_auth`]).
//!
//! What the phase keeps between requests ([`State`]) lives beside the snapshot, never in it:
//! a new snapshot's routes start with nothing cached.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

use super::ConnInfo;
use super::error::{ErrorKind, ProxyError};
use super::external_auth;
use super::request_body::BodyLimits;
use super::upstream::{RouteUpstream, Upstreams};
use crate::body::{BoxBody, short_response};
use crate::snapshot::Route;
use crate::snapshot::policy::{
    Access, AccessRules, BasicAuth, CanaryRules, Cors, CorsOrigins, PathRewrite, Redirect,
    RedirectTo, RoutePolicy, Satisfy, Timeouts, Var,
};

/// Successful basic-auth checks remembered at most (then forgotten all at once).
const AUTH_CACHE_ENTRIES: usize = 4096;

/// What the policy phase remembers between requests.
#[derive(Default)]
pub struct State {
    /// `Authorization` values that passed a route's basic authentication, by the route's
    /// [`BasicAuth`]: bcrypt costs milliseconds, so a client pays it once, not per request.
    /// The entry holds the `BasicAuth`, so its address is never reused while cached.
    auth_ok: Mutex<HashMap<(usize, HeaderValue), Arc<BasicAuth>>>,
    /// Rate-limit buckets by route policy, limit (rps or rpm) and client address. An entry
    /// holds its policy, so the address is never reused while the bucket lives.
    buckets: Mutex<HashMap<(usize, bool, IpAddr), Bucket>>,
    /// `limit-connections`: requests in progress by route policy and client address.
    pub in_progress: super::conn_limit::InProgress,
}

/// Rate-limit buckets kept at most; beyond, the full (idle) ones are dropped, then all.
const MAX_BUCKETS: usize = 65_536;

/// A token bucket: `burst + 1` requests at once, refilled at the limit's rate (nginx's
/// `limit_req … burst=N nodelay`).
struct Bucket {
    policy: Arc<RoutePolicy>,
    tokens: f64,
    last: Instant,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

// === impl Bucket ===

impl Bucket {
    /// Whether it would be full by `now`: forgetting it changes nothing.
    fn full(&self, now: Instant) -> bool {
        let limits = &self.policy.limits;
        let slowest = [limits.rps, limits.rpm]
            .into_iter()
            .flatten()
            .map(|l| l.per.as_secs_f64() * (f64::from(l.burst) + 1.0) / f64::from(l.requests.get()))
            .fold(0.0, f64::max);
        now.duration_since(self.last).as_secs_f64() >= slowest
    }
}

// === impl State ===

impl State {
    fn cached(&self, auth: &Arc<BasicAuth>, value: &HeaderValue) -> bool {
        let key = (Arc::as_ptr(auth) as usize, value.clone());
        self.auth_ok
            .lock()
            .is_ok_and(|cache| cache.get(&key).is_some_and(|a| Arc::ptr_eq(a, auth)))
    }

    /// Whether a request of `client` fits the route's rate limits (takes a token of each).
    fn within_rate(&self, policy: &Arc<RoutePolicy>, client: IpAddr) -> bool {
        let limits = &policy.limits;
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        let now = Instant::now();
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| !b.full(now));
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let ptr = Arc::as_ptr(policy) as usize;
        let mut ok = true;
        for (per_minute, limit) in [(false, &limits.rps), (true, &limits.rpm)] {
            let Some(limit) = limit else { continue };
            let rate = f64::from(limit.requests.get()) / limit.per.as_secs_f64();
            let capacity = f64::from(limit.burst) + 1.0;
            let bucket = buckets
                .entry((ptr, per_minute, client))
                .or_insert_with(|| Bucket {
                    policy: policy.clone(),
                    tokens: capacity,
                    last: now,
                });
            let elapsed = now.duration_since(bucket.last).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
            bucket.last = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
            } else {
                ok = false;
            }
        }
        ok
    }

    fn remember(&self, auth: &Arc<BasicAuth>, value: &HeaderValue) {
        // A copy: the request's value shares the buffer of its whole head.
        let Ok(owned) = HeaderValue::from_bytes(value.as_bytes()) else {
            return;
        };
        if let Ok(mut cache) = self.auth_ok.lock() {
            if cache.len() >= AUTH_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert((Arc::as_ptr(auth) as usize, owned), auth.clone());
        }
    }
}

/// Lets the request on (`None`; external authentication may have added headers to it), answers
/// it (`Some`: a redirect), or fails it (403, 401, 503, 500).
pub async fn check<B>(
    state: &State,
    upstreams: &Upstreams,
    policy: &Arc<RoutePolicy>,
    conn: &ConnInfo,
    req: &mut Request<B>,
) -> Result<Option<Response<BoxBody>>, ProxyError> {
    if let Access::Refused(reason) = &policy.access {
        return Err(ProxyError::with_body(
            ErrorKind::PolicyRefused,
            reason.clone(),
        ));
    }
    if let Some(redirect) = &policy.redirect {
        return Ok(Some(redirect_response(redirect, conn, req)));
    }
    if let Some(root) = &policy.app_root
        && req.uri().path() == "/"
    {
        let host = super::route::request_host(req).unwrap_or_default();
        let to = format!("{}://{host}{root}", conn.scheme);
        return Ok(Some(redirect_to(StatusCode::FOUND, &to)));
    }
    // Preflights are answered before the access rules: browsers send them without
    // credentials (ingress-nginx answers them in the same place).
    if let Some(cors) = &policy.cors
        && req.method() == Method::OPTIONS
    {
        let mut resp = Response::new(crate::body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        add_cors(cors, req.headers().get(header::ORIGIN), resp.headers_mut());
        if resp
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        {
            resp.headers_mut()
                .insert(header::ACCESS_CONTROL_MAX_AGE, cors.max_age.clone());
        }
        return Ok(Some(resp));
    }
    if let Access::Restricted(rules) = &policy.access
        && let Some(answer) = check_access(state, upstreams, rules, conn, req).await?
    {
        return Ok(Some(answer));
    }
    let limits = &policy.limits;
    if limits.rps.is_some() || limits.rpm.is_some() {
        let client = conn.client_addr(req);
        if !limits.exempt.as_ref().is_some_and(|e| e.contains(client))
            && !state.within_rate(policy, client)
        {
            return Err(ErrorKind::TooManyRequests.into());
        }
    }
    Ok(None)
}

/// The CORS headers of a response to a request from `origin`; nothing when the origin is not
/// allowed.
pub fn add_cors(cors: &Cors, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    let Some(allow) = cors.allow_origin.allow(origin) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if cors.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        cors.allow_methods.clone(),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        cors.allow_headers.clone(),
    );
    if let Some(expose) = &cors.expose_headers {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
    }
    if matches!(cors.allow_origin, CorsOrigins::List(_)) {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Whether a request goes to the route's canary: its header, then its cookie, then a roll
/// against the weight.
pub fn to_canary<B>(rules: &CanaryRules, req: &Request<B>) -> bool {
    let header = rules
        .header
        .as_ref()
        .and_then(|(name, _)| req.headers().get(name));
    let cookie = rules
        .cookie
        .as_deref()
        .and_then(|name| super::headers::request_cookies(req.headers(), name).next());
    let roll = if rules.weight == 0 || rules.weight_total == 0 {
        u32::MAX
    } else {
        rand::random_range(0..rules.weight_total)
    };
    rules.choose(header, cookie, roll)
}

/// What the route's policy changes on the way upstream. The request body limit: its
/// `proxy-body-size` replaces the listener's limit.
pub fn route_upstream<'r>(route: &'r Route, conn: &ConnInfo) -> RouteUpstream<'r> {
    let Some(policy) = route.policy.as_deref() else {
        return RouteUpstream {
            body_limits: conn.body_limits,
            vhost: None,
            forwarded_prefix: None,
            timeouts: None,
        };
    };
    RouteUpstream {
        body_limits: match policy.limits.body_size {
            Some(max) => BodyLimits {
                max_bytes: Some(max),
                ..conn.body_limits
            },
            None => conn.body_limits,
        },
        vhost: policy.upstream.vhost.as_ref(),
        forwarded_prefix: policy.upstream.forwarded_prefix.as_ref(),
        timeouts: Some(&policy.limits.timeouts).filter(|t| **t != Timeouts::default()),
    }
}

/// `rewrite-target`: the path (and query) sent upstream, as nginx's `rewrite … break` makes it.
/// A request the route's regex does not match keeps its path.
pub fn rewrite<B>(
    rewrite: &PathRewrite,
    conn: &ConnInfo,
    req: &mut Request<B>,
) -> Result<(), ProxyError> {
    let uri = req.uri();
    let vars = |var: &Var| super::vars::value(var, conn, req);
    let Some(target) = rewrite.apply(uri.path(), uri.query(), vars) else {
        return Ok(());
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(target)
            .map_err(|e| ProxyError::with_cause(ErrorKind::BadRequest, e))?,
    );
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|e| ProxyError::with_cause(ErrorKind::BadRequest, e))?;
    Ok(())
}

/// Source rules then authentication. `deny` always refuses; with `satisfy any`, a client
/// outside `allow` may still pass by authenticating (ingress-nginx's office-or-password).
/// `Some`: the answer instead of the backend's (external authentication's sign-in redirect).
async fn check_access<B>(
    state: &State,
    upstreams: &Upstreams,
    rules: &AccessRules,
    conn: &ConnInfo,
    req: &mut Request<B>,
) -> Result<Option<Response<BoxBody>>, ProxyError> {
    if rules.has_source_rules() {
        let client = conn.client_addr(req);
        if rules.deny.as_ref().is_some_and(|d| d.contains(client)) {
            return Err(ErrorKind::Forbidden.into());
        }
        let allowed = rules.allow.as_ref().is_none_or(|a| a.contains(client));
        match (allowed, rules.satisfy) {
            (true, Satisfy::Any) => {
                // Not asked: nothing the auth service would set may come from the client.
                if let Some(external) = &rules.external {
                    external_auth::strip_response_headers(external, req);
                }
                return Ok(None);
            }
            (false, Satisfy::All) => return Err(ErrorKind::Forbidden.into()),
            (false, Satisfy::Any) if !rules.has_auth() => {
                return Err(ErrorKind::Forbidden.into());
            }
            _ => {}
        }
    }
    if let Some(basic) = &rules.basic {
        check_basic(state, basic, req).await?;
    }
    if let Some(external) = &rules.external {
        // Boxed: a whole upstream exchange, which would otherwise grow every request's future.
        return Box::pin(external_auth::check(upstreams, external, conn, req)).await;
    }
    Ok(None)
}

/// Basic authentication: a remembered success, or bcrypt off the async workers.
async fn check_basic<B>(
    state: &State,
    basic: &Arc<BasicAuth>,
    req: &Request<B>,
) -> Result<(), ProxyError> {
    let unauthorized = || {
        ProxyError::with_header(
            ErrorKind::Unauthorized,
            header::WWW_AUTHENTICATE,
            basic.challenge.clone(),
        )
    };
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(unauthorized());
    };
    if state.cached(basic, value) {
        return Ok(());
    }
    let (auth, given) = (basic.clone(), value.clone());
    let ok = tokio::task::spawn_blocking(move || auth.check_header(&given))
        .await
        .unwrap_or(false);
    if !ok {
        return Err(unauthorized());
    }
    state.remember(basic, value);
    Ok(())
}

fn redirect_response<B>(
    redirect: &Redirect,
    conn: &ConnInfo,
    req: &Request<B>,
) -> Response<BoxBody> {
    match &redirect.to {
        RedirectTo::Url(url) => redirect_value(redirect.code, url.clone()),
        RedirectTo::Host(host) => {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            redirect_to(redirect.code, &format!("{}://{host}{path}", conn.scheme))
        }
    }
}

fn redirect_to(code: StatusCode, location: &str) -> Response<BoxBody> {
    match HeaderValue::try_from(location) {
        Ok(value) => redirect_value(code, value),
        Err(_) => short_response(StatusCode::BAD_REQUEST, "bad host\n"),
    }
}

fn redirect_value(code: StatusCode, location: HeaderValue) -> Response<BoxBody> {
    let mut resp = short_response(code, "redirecting\n");
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

#[cfg(test)]
mod tests;
