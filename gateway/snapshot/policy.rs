//! The typed traffic policy of a route: what an Ingress's annotations ask of its routes
//! (`gatehouse.dev/*` or `nginx.ingress.kubernetes.io/*`, one meaning), parsed once by
//! translate() when the configuration changes and read by the request path's policy phase.
//!
//! Nothing here is parsed per request: CIDRs are networks, passwords are parsed hashes, header
//! values are [`HeaderValue`]s, regular expressions are compiled, `$variables` are
//! [`Template`] parts. A route with no policy has `None` (see [`crate::snapshot::Route`]), so the
//! common case costs one pointer test.
//!
//! Fail closed: when an annotation that restricts access is broken or cannot be honoured,
//! [`RoutePolicy::access`] is [`Access::Refused`] and the phase answers 503 with its reason,
//! never serving the route open.

pub mod cidr;
pub mod htpasswd;
pub mod template;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

pub use cidr::{CidrSet, client_addr};
pub use htpasswd::Htpasswd;
pub use template::{Template, Var};

use crate::objects::ObjectKey;
use crate::snapshot::ServiceBackend;

/// Everything an Ingress's annotations ask of its routes. Shared (`Arc`) by every route of the
/// Ingress.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    /// Who may use the routes. Checked first.
    pub access: Access,
    /// Rate, connection and body limits, and upstream timeouts.
    pub limits: Limits,
    /// Answer every request with this redirect instead of proxying (`permanent-redirect`,
    /// `temporal-redirect`, and the host Gatehouse adds for `from-to-www-redirect`).
    pub redirect: Option<Redirect>,
    /// `app-root`: a request for exactly `/` gets a 302 to this path.
    pub app_root: Option<Box<str>>,
    /// CORS answered at the edge: preflights get 204, other responses the headers.
    pub cors: Option<Cors>,
    /// What changes on the way to the upstream.
    pub upstream: UpstreamPolicy,
    /// `custom-http-errors` / `default-backend`.
    pub errors: Option<ErrorPolicy>,
}

// === impl RoutePolicy ===

impl RoutePolicy {
    /// A policy that refuses everything with `reason` (503).
    pub fn refused(reason: impl Into<Arc<str>>) -> Self {
        Self {
            access: Access::Refused(reason.into()),
            ..Self::default()
        }
    }

    /// Whether it asks nothing at all (such a route carries no policy).
    pub fn is_empty(&self) -> bool {
        matches!(self.access, Access::Open)
            && self.limits.is_empty()
            && self.redirect.is_none()
            && self.app_root.is_none()
            && self.cors.is_none()
            && self.upstream.is_empty()
            && self.errors.is_none()
    }
}

/// Who may use a route.
#[derive(Debug, Default)]
pub enum Access {
    /// Anyone.
    #[default]
    Open,
    /// Only requests that pass these rules.
    Restricted(Box<AccessRules>),
    /// An annotation that restricts access is broken or not honoured: answer every request 503
    /// with this reason as the body (names the Ingress, the annotation and why). Never served.
    Refused(Arc<str>),
}

/// Access rules, in ingress-nginx's order: `deny` (403), then `allow` (403), then the
/// authentications (401). With [`Satisfy::Any`] passing either the source check or the
/// authentication is enough.
#[derive(Debug, Default)]
pub struct AccessRules {
    /// `whitelist-source-range` / `allowlist-source-range`: only these client addresses.
    pub allow: Option<CidrSet>,
    /// `denylist-source-range`: never these client addresses (checked before `allow`).
    pub deny: Option<CidrSet>,
    /// `auth-type: basic` with `auth-secret`.
    pub basic: Option<Arc<BasicAuth>>,
    /// `auth-url`: a subrequest decides.
    pub external: Option<Arc<ExternalAuth>>,
    /// `satisfy`.
    pub satisfy: Satisfy,
}

// === impl AccessRules ===

impl AccessRules {
    /// Whether the client address passes `deny` then `allow` (the real client address: see
    /// [`client_addr`]).
    pub fn source_allowed(&self, client: std::net::IpAddr) -> bool {
        !self.deny.as_ref().is_some_and(|d| d.contains(client))
            && self.allow.as_ref().is_none_or(|a| a.contains(client))
    }

    /// Whether any source rule exists (with [`Satisfy::Any`], a route without source rules
    /// still needs the authentication).
    pub fn has_source_rules(&self) -> bool {
        self.allow.is_some() || self.deny.is_some()
    }

    /// Whether any authentication is asked for.
    pub fn has_auth(&self) -> bool {
        self.basic.is_some() || self.external.is_some()
    }
}

/// `satisfy`: whether every access check must pass or one is enough.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Satisfy {
    #[default]
    All,
    Any,
}

/// HTTP basic authentication against an htpasswd file or auth-map Secret.
#[derive(Debug)]
pub struct BasicAuth {
    /// The `WWW-Authenticate` value of a 401: `Basic realm="…"`.
    pub challenge: HeaderValue,
    pub users: Htpasswd,
}

// === impl BasicAuth ===

impl BasicAuth {
    /// Whether an `Authorization` header value carries a user and password of the file.
    /// bcrypt hashes cost milliseconds of CPU: call it off the async workers or cache results.
    pub fn check_header(&self, authorization: &HeaderValue) -> bool {
        match htpasswd::basic_credentials(authorization) {
            Some((user, password)) => self.users.verify(&user, &password),
            None => false,
        }
    }
}

/// External authentication (`auth-url`): a subrequest per request; 2xx lets the request through
/// (copying `response_headers` into it), 401/403 are answered (401 redirects to `signin` when
/// set), anything else is a 500 as in ingress-nginx. Applied by `proxy::external_auth`.
#[derive(Debug)]
pub struct ExternalAuth {
    /// Where the subrequest goes; `$host`, `$request_uri`, … are filled in per request.
    pub url: Template,
    /// `auth-method`; `None`: GET (nginx's subrequests are GETs).
    pub method: Option<Method>,
    /// `auth-signin`: where a 401 sends the client (a 302), with `redirect_param`.
    pub signin: Option<SignIn>,
    /// `auth-response-headers`: copied from the auth response into the upstream request.
    pub response_headers: Vec<HeaderName>,
    /// `auth-request-redirect`: sent to the auth service as `X-Auth-Request-Redirect`.
    pub request_redirect: Option<HeaderValue>,
}

/// Where a client that failed external authentication is sent.
#[derive(Debug)]
pub struct SignIn {
    /// The sign-in URL; `$host`, `$escaped_request_uri`, … are filled in per request.
    pub url: Template,
    /// `auth-signin-redirect-param` (default `rd`): `?rd=$scheme://$http_host$escaped_request_uri`
    /// is added to `url` (as ingress-nginx does); `None` when `url` already has the parameter.
    pub redirect_param: Option<Box<str>>,
}

/// Limits per client address and per request.
#[derive(Debug, Default)]
pub struct Limits {
    /// `limit-rps`: requests per second per client address (503 beyond).
    pub rps: Option<RateLimit>,
    /// `limit-rpm`: requests per minute per client address (503 beyond).
    pub rpm: Option<RateLimit>,
    /// `limit-connections`: requests in progress per client address (503 beyond).
    pub connections: Option<NonZeroU32>,
    /// `limit-whitelist` / `limit-allowlist`: client addresses no limit applies to.
    pub exempt: Option<CidrSet>,
    /// `proxy-body-size`: largest request body in bytes (413 beyond); `None` is unlimited.
    pub body_size: Option<u64>,
    /// `proxy-connect-timeout`, `proxy-read-timeout`, `proxy-send-timeout`.
    pub timeouts: Timeouts,
}

// === impl Limits ===

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rps.is_none()
            && self.rpm.is_none()
            && self.connections.is_none()
            && self.body_size.is_none()
            && self.timeouts == Timeouts::default()
    }
}

/// A request rate limit per client address: `requests` per `per`, with `burst` requests more
/// accepted at once (ingress-nginx: rate × `limit-burst-multiplier`, default 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: NonZeroU32,
    pub per: Duration,
    pub burst: u32,
}

/// Per-route upstream timeouts; `None` keeps the global setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection to an endpoint.
    pub connect: Option<Duration>,
    /// Between two reads from the upstream (response headers included).
    pub read: Option<Duration>,
    /// Between two writes to the upstream.
    pub send: Option<Duration>,
}

/// A redirect answered instead of proxying.
#[derive(Debug)]
pub struct Redirect {
    pub to: RedirectTo,
    pub code: StatusCode,
}

/// Where a [`Redirect`] goes.
#[derive(Debug)]
pub enum RedirectTo {
    /// This URL as it is (`permanent-redirect`, `temporal-redirect`).
    Url(HeaderValue),
    /// The same scheme, path and query on this host (`from-to-www-redirect`).
    Host(Box<str>),
}

/// CORS at the edge (`enable-cors` and `cors-*`), as ingress-nginx answers it.
#[derive(Debug)]
pub struct Cors {
    pub allow_origin: CorsOrigins,
    pub allow_methods: HeaderValue,
    pub allow_headers: HeaderValue,
    pub expose_headers: Option<HeaderValue>,
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` (seconds).
    pub max_age: HeaderValue,
}

/// Which `Origin`s CORS answers.
#[derive(Debug)]
pub enum CorsOrigins {
    /// `*`: `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins (`scheme://host[:port]`, `*.` covering one label): the request's
    /// `Origin` is echoed when it matches one.
    List(Vec<OriginPattern>),
}

// === impl CorsOrigins ===

impl CorsOrigins {
    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is allowed.
    pub fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            CorsOrigins::Any => Some(HeaderValue::from_static("*")),
            CorsOrigins::List(list) => {
                let origin = origin?;
                let text = origin.to_str().ok()?;
                list.iter().any(|p| p.matches(text)).then(|| origin.clone())
            }
        }
    }
}

/// One allowed origin: scheme, host (a leading `*.` covers exactly one label, as ingress-nginx
/// documents) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    pub scheme: Box<str>,
    /// Lower case; with `wildcard`, the part after `*.`.
    pub host: Box<str>,
    pub wildcard: bool,
    pub port: Option<u16>,
}

// === impl OriginPattern ===

impl OriginPattern {
    /// Whether an `Origin` header value is this origin.
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => match p.parse() {
                Ok(p) => (h, Some(p)),
                Err(_) => return false,
            },
            _ => (rest, None),
        };
        if port != self.port {
            return false;
        }
        if self.wildcard {
            match host.split_once('.') {
                Some((label, parent)) => {
                    !label.is_empty() && parent.eq_ignore_ascii_case(&self.host)
                }
                None => false,
            }
        } else {
            host.eq_ignore_ascii_case(&self.host)
        }
    }
}

/// What changes on the way to the upstream.
#[derive(Clone, Debug, Default)]
pub struct UpstreamPolicy {
    /// `upstream-vhost`: the `Host` header sent upstream instead of the client's.
    pub vhost: Option<HeaderValue>,
    /// `x-forwarded-prefix`: sent upstream as `X-Forwarded-Prefix`.
    pub forwarded_prefix: Option<HeaderValue>,
    /// `affinity: cookie` and `session-cookie-*`.
    pub affinity: Option<Arc<CookieAffinity>>,
    /// `upstream-hash-by`: the endpoint is chosen by consistent hashing of this key.
    pub hash_by: Option<Template>,
}

// === impl UpstreamPolicy ===

impl UpstreamPolicy {
    pub fn is_empty(&self) -> bool {
        self.vhost.is_none()
            && self.forwarded_prefix.is_none()
            && self.affinity.is_none()
            && self.hash_by.is_none()
    }
}

/// Cookie session affinity: the endpoint that served a client is named in a cookie, and later
/// requests carrying it go to the same endpoint while it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAffinity {
    /// `session-cookie-name` (default `INGRESSCOOKIE`).
    pub name: Box<str>,
    /// `session-cookie-path` (default: the route's path).
    pub path: Option<Box<str>>,
    pub domain: Option<Box<str>>,
    /// `Max-Age` in seconds.
    pub max_age: Option<u64>,
    /// `Expires`, seconds from when the cookie is set.
    pub expires: Option<u64>,
    pub same_site: Option<SameSite>,
    /// Omit `SameSite=None` for clients known to mishandle it.
    pub conditional_same_site_none: bool,
    pub secure: bool,
    /// `affinity-mode: persistent` (never moved to a new endpoint while its own is ready);
    /// `balanced` may move some sessions when endpoints are added.
    pub persistent: bool,
    /// `session-cookie-change-on-failure`: a failed endpoint gets the client a new cookie.
    pub change_on_failure: bool,
    /// `affinity-canary-behavior: sticky` (default): a client the canary served stays on it.
    pub canary_sticky: bool,
}

/// A cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

/// `custom-http-errors` and `default-backend`.
#[derive(Debug, Default)]
pub struct ErrorPolicy {
    /// Upstream answers with these statuses are replaced by `backend`'s answer (sorted).
    pub intercept: Vec<u16>,
    /// `default-backend`: a Service (its first port) that answers when the route's Service has
    /// no ready endpoint, and the intercepted statuses. `None`: Gatehouse's own short answer.
    pub backend: Option<Arc<ServiceBackend>>,
}

/// A canary Ingress's backend for a host and path, chosen per request by its rules
/// (precedence: header, then cookie, then weight; ingress-nginx's).
#[derive(Debug)]
pub struct Canary {
    /// The canary Ingress.
    pub ingress: Arc<ObjectKey>,
    pub backend: crate::snapshot::Backend,
    pub rules: CanaryRules,
    /// The canary Ingress's own `affinity` / `upstream-hash-by` (the only annotations of a
    /// canary that are not inherited from the main Ingress).
    pub upstream: UpstreamPolicy,
}

/// When a request goes to the canary.
#[derive(Clone, Debug, Default)]
pub struct CanaryRules {
    /// `canary-by-header`: the header and how its value decides.
    pub header: Option<(HeaderName, HeaderMatch)>,
    /// `canary-by-cookie`: `always` → canary, `never` → not, anything else: next rule.
    pub cookie: Option<Box<str>>,
    /// `canary-weight` out of `weight_total`.
    pub weight: u32,
    /// `canary-weight-total` (default 100).
    pub weight_total: u32,
}

/// How a `canary-by-header` value decides.
#[derive(Clone, Debug)]
pub enum HeaderMatch {
    /// `always` → canary, `never` → not, anything else: next rule.
    AlwaysNever,
    /// `canary-by-header-value`: this value → canary, anything else: next rule.
    Value(HeaderValue),
    /// `canary-by-header-pattern`: a matching value → canary.
    Pattern(Regex),
}

// === impl CanaryRules ===

impl CanaryRules {
    /// Whether a request goes to the canary: `header` is the value of the rule's header,
    /// `cookie` of its cookie, and `roll` a uniformly random number below `weight_total`.
    pub fn choose(&self, header: Option<&HeaderValue>, cookie: Option<&str>, roll: u32) -> bool {
        if let (Some((_, rule)), Some(value)) = (&self.header, header) {
            match rule {
                HeaderMatch::AlwaysNever => match value.as_bytes() {
                    b"always" => return true,
                    b"never" => return false,
                    _ => {}
                },
                HeaderMatch::Value(wanted) => {
                    if value == wanted {
                        return true;
                    }
                }
                HeaderMatch::Pattern(re) => {
                    if value.to_str().is_ok_and(|v| re.is_match(v)) {
                        return true;
                    }
                }
            }
        }
        if self.cookie.is_some() {
            match cookie {
                Some("always") => return true,
                Some("never") => return false,
                _ => {}
            }
        }
        roll < self.weight
    }
}

/// ingress-nginx's `rewrite-target` on a regex path: the path's regex (case-insensitive,
/// anchored at the start, as ingress-nginx writes its `location ~*`) and the target with
/// `$1`…`$9` for its capture groups.
#[derive(Debug)]
pub struct PathRewrite {
    pub regex: Regex,
    pub target: Template,
}

// === impl PathRewrite ===

impl PathRewrite {
    /// The path and query sent upstream for a request path and query, as nginx's
    /// `rewrite … break` makes it: the whole path is replaced by the target (captures filled
    /// in); the request's query is kept, after the target's own query if it has one. `None`
    /// when the regex does not match (the route was chosen by another rule).
    pub fn apply(
        &self,
        path: &str,
        query: Option<&str>,
        vars: impl Fn(&Var) -> String,
    ) -> Option<String> {
        let caps = self.regex.captures(path)?;
        let mut out = self.target.render(|var| match var {
            Var::Capture(n) => caps
                .get(usize::from(*n))
                .map_or_else(String::new, |m| m.as_str().to_owned()),
            other => vars(other),
        });
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            // nginx appends the original arguments unless the target ends with `?`.
            if out.ends_with('?') {
                out.pop();
            } else {
                out.push(if out.contains('?') { '&' } else { '?' });
                out.push_str(query);
            }
        } else if out.ends_with('?') {
            out.pop();
        }
        Some(out)
    }
}

/// `backend-protocol`: how an Ingress asks Gatehouse to speak to its Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    Http,
    Https,
    /// gRPC over cleartext HTTP/2.
    Grpc,
    /// gRPC over HTTP/2 with TLS.
    Grpcs,
    /// HTTP/2 over cleartext, prior knowledge.
    H2c,
}

// === impl BackendProtocol ===

impl BackendProtocol {
    /// Parses `HTTP`, `HTTPS`, `GRPC`, `GRPCS` or `H2C` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_uppercase().as_str() {
            "HTTP" => Self::Http,
            "HTTPS" => Self::Https,
            "GRPC" => Self::Grpc,
            "GRPCS" => Self::Grpcs,
            "H2C" => Self::H2c,
            _ => return None,
        })
    }

    /// The transport the data plane speaks for it; `None` for one it cannot speak (none
    /// today; such routes would answer 503).
    pub fn transport(self) -> Option<crate::snapshot::UpstreamProtocol> {
        use crate::snapshot::UpstreamProtocol as P;
        match self {
            Self::Http => Some(P::Http),
            Self::Https => Some(P::Https),
            Self::Grpc | Self::H2c => Some(P::H2c),
            Self::Grpcs => Some(P::H2Tls),
        }
    }
}

#[cfg(test)]
mod tests;
