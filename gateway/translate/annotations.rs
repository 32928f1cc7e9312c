//! The one parser of an Ingress's annotations, for both prefixes: Gatehouse's own
//! `gatehouse.dev/*` and ingress-nginx's `nginx.ingress.kubernetes.io/*` (with ingress-nginx's
//! documented value syntax). Both give the same typed [`RoutePolicy`]; when both prefixes set
//! the same annotation, `gatehouse.dev/` wins.
//!
//! Nothing is silent: every annotation under either prefix gets a [`Report`] saying whether it
//! is honoured, ignored (with a warning; the routes are served without it) or refused (with a
//! warning; the routes answer 503 because ignoring it would open access). The table of every
//! known annotation is [`ANNOTATIONS`]; the migration guide shows it ([`markdown_table`]).
//!
//! Called once per Ingress when the configuration changes (translate() reuses the result while
//! the Ingress and the Secrets it read are the same), never per request.

mod table;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

use crate::objects::ObjectKey;
use crate::snapshot::policy::{
    Access, AccessRules, BackendProtocol, BasicAuth, CanaryRules, CidrSet, CookieAffinity, Cors,
    CorsOrigins, ErrorPolicy, ExternalAuth, HeaderMatch, Htpasswd, OriginPattern, RateLimit,
    Redirect, RedirectTo, RoutePolicy, SameSite, Satisfy, SignIn, Template, UpstreamPolicy,
};

pub use table::ANNOTATIONS;

/// Prefix of Gatehouse's own annotations.
pub const GATEHOUSE_PREFIX: &str = "gatehouse.dev/";
/// Prefix of ingress-nginx's annotations.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";
/// The Kubernetes API server refuses an object whose annotations (keys and values) exceed this;
/// an Ingress from a manifest that does is refused too.
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// Set by Gatehouse on an Ingress converted from an old API version.
pub const CONVERTED_FROM_ANNOTATION: &str = "gatehouse.dev/converted-from";

/// What Gatehouse does with an annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Parsed into the routes' policy.
    Honoured,
    /// Not supported, harmless to leave out: a warning, the routes are served without it.
    Ignored,
    /// Not supported and restricts access: a warning, the routes answer 503.
    Refused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Honoured => "honoured",
            Status::Ignored => "ignored",
            Status::Refused => "refused",
        }
    }
}

/// Under which prefixes an annotation exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefixes {
    Both,
    Nginx,
    Gatehouse,
}

/// One row of the annotation table.
#[derive(Clone, Copy, Debug)]
pub struct AnnotationSpec {
    /// The name after the prefix, e.g. `whitelist-source-range`.
    pub name: &'static str,
    pub prefixes: Prefixes,
    /// Value syntax (Markdown).
    pub syntax: &'static str,
    pub status: Status,
    /// What it does in Gatehouse (Markdown).
    pub meaning: &'static str,
}

/// The spec of an annotation name (after its prefix), if known.
pub fn spec(name: &str) -> Option<&'static AnnotationSpec> {
    ANNOTATIONS.iter().find(|s| s.name == name)
}

/// Why an annotation is not honoured, from the table: a row that says "See `other`." takes
/// the other row's words.
fn table_reason(s: &AnnotationSpec) -> &'static str {
    s.meaning
        .strip_prefix("See `")
        .and_then(|rest| rest.split_once('`'))
        .and_then(|(other, _)| spec(other))
        .map_or(s.meaning, |other| other.meaning)
}

/// The annotation table as Markdown (the migration guide embeds exactly this).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| annotation | value | Gatehouse | what it does |\n| --- | --- | --- | --- |\n",
    );
    for s in ANNOTATIONS {
        let names = match s.prefixes {
            Prefixes::Both => format!(
                "`gatehouse.dev/{0}`<br>`nginx.ingress.kubernetes.io/{0}`",
                s.name
            ),
            Prefixes::Nginx => format!("`nginx.ingress.kubernetes.io/{}`", s.name),
            Prefixes::Gatehouse => format!("`gatehouse.dev/{}`", s.name),
        };
        let _ = writeln!(
            out,
            "| {names} | {} | {} | {} |",
            s.syntax.replace('|', "\\|"),
            s.status.as_str(),
            s.meaning.replace('|', "\\|")
        );
    }
    out
}

/// What became of one annotation of an Ingress.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Report {
    /// The annotation's full name.
    pub annotation: String,
    pub outcome: Status,
    /// Why (for ignored and refused), or what it does (for honoured).
    pub reason: String,
}

// === impl Report ===

impl Report {
    /// The warning text for an ignored or refused annotation (`None` for an honoured one).
    pub fn warning(&self, value: Option<&str>) -> Option<String> {
        let shown = value
            .map(|v| format!("={:?}", shorten(v)))
            .unwrap_or_default();
        match self.outcome {
            Status::Honoured => None,
            Status::Ignored => Some(format!(
                "annotation {}{shown} ignored: {}",
                self.annotation, self.reason
            )),
            Status::Refused => Some(format!(
                "annotation {}{shown} refused, its routes answer 503: {}",
                self.annotation, self.reason
            )),
        }
    }
}

/// A value as quoted in a warning: at most 80 characters.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &value[..i]),
        None => value.to_owned(),
    }
}

/// Defaults that depend on the Ingress's class (`--ingress-class-compat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// `ssl-redirect` when the Ingress does not say.
    pub ssl_redirect: bool,
    /// `proxy-body-size` when the Ingress does not say.
    pub body_size: Option<u64>,
}

/// ingress-nginx's defaults where they differ from Gatehouse's: HTTPS redirects for TLS hosts,
/// a 1 MiB request body limit.
pub const NGINX_DEFAULTS: Defaults = Defaults {
    ssl_redirect: true,
    body_size: Some(1024 * 1024),
};

/// What the parser reads besides the Ingress.
pub struct Context<'a> {
    pub key: &'a ObjectKey,
    pub secrets: &'a BTreeMap<ObjectKey, Arc<Secret>>,
    pub defaults: Defaults,
}

/// An Ingress's annotations, typed.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The Ingress must not be served at all (its annotations are over the size limit).
    pub rejected: Option<String>,
    pub policy: RoutePolicy,
    pub protocol: Option<BackendProtocol>,
    pub tls_server_name: Option<Arc<str>>,
    /// `ssl-redirect` (or the class default).
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    pub use_regex: bool,
    /// `rewrite-target`, with `$1`…`$9`.
    pub rewrite_target: Option<Template>,
    pub from_to_www: bool,
    /// `canary: "true"`: its rules and its own upstream settings.
    pub canary: Option<(CanaryRules, UpstreamPolicy)>,
    pub service_upstream: bool,
    /// `default-backend`: a Service name in the Ingress's namespace.
    pub default_backend: Option<String>,
    /// One per annotation under either prefix, in name order.
    pub reports: Vec<Report>,
    /// The warnings of ignored and refused annotations.
    pub warnings: Vec<String>,
    /// The Secrets it read, as they were (for reuse checks).
    pub secrets: Vec<(ObjectKey, Option<Arc<Secret>>)>,
}

// === impl Parsed ===

impl Parsed {
    /// The reason its routes are refused, if they are.
    pub fn refused(&self) -> Option<&str> {
        match &self.policy.access {
            Access::Refused(reason) => Some(reason),
            _ => None,
        }
    }
}

/// Parses an Ingress's annotations.
pub fn parse(ingress: &Ingress, cx: &Context<'_>) -> Parsed {
    let empty = BTreeMap::new();
    let all = ingress.metadata.annotations.as_ref().unwrap_or(&empty);
    let size: usize = all.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ANNOTATION_BYTES {
        return Parsed {
            rejected: Some(format!(
                "not served: its annotations take {size} bytes, over the {MAX_ANNOTATION_BYTES} the Kubernetes API allows"
            )),
            ..Parsed::default()
        };
    }
    // The common case, no annotation of either prefix: nothing to look up.
    if !all
        .keys()
        .any(|k| k.starts_with(GATEHOUSE_PREFIX) || k.starts_with(NGINX_PREFIX))
    {
        let mut parsed = Parsed {
            ssl_redirect: cx.defaults.ssl_redirect.then_some(true),
            ..Parsed::default()
        };
        parsed.policy.limits.body_size = cx.defaults.body_size;
        return parsed;
    }
    let mut p = Parser::new(all, cx);
    p.any_host = serves_any_host(ingress);
    p.run();
    p.finish()
}

/// One annotation as found: its full name and value.
struct Found<'a> {
    key: &'a str,
    value: &'a str,
    /// Whether a rule has used it (anything left is reported by its table status).
    taken: bool,
}

struct Parser<'a> {
    cx: &'a Context<'a>,
    /// By name after the prefix (the `gatehouse.dev/` one when both are set).
    found: BTreeMap<&'a str, Found<'a>>,
    out: Parsed,
    /// Reasons the routes are refused.
    refusals: Vec<String>,
    access: AccessRules,
    canary: bool,
    ignore_snippets: bool,
    /// The Ingress has a rule without host (or a default backend): `$host` is the client's
    /// choice there.
    any_host: bool,
}

/// Whether an Ingress serves requests for any host the client names.
fn serves_any_host(ingress: &Ingress) -> bool {
    let Some(spec) = &ingress.spec else {
        return false;
    };
    spec.default_backend.is_some()
        || spec
            .rules
            .iter()
            .flatten()
            .any(|r| r.host.as_deref().is_none_or(str::is_empty))
}

impl<'a> Parser<'a> {
    fn new(all: &'a BTreeMap<String, String>, cx: &'a Context<'a>) -> Self {
        let mut found: BTreeMap<&'a str, Found<'a>> = BTreeMap::new();
        let mut out = Parsed::default();
        for (key, value) in all {
            let (name, ours) = if let Some(n) = key.strip_prefix(GATEHOUSE_PREFIX) {
                (n, true)
            } else if let Some(n) = key.strip_prefix(NGINX_PREFIX) {
                (n, false)
            } else {
                continue;
            };
            let misplaced = spec(name).is_some_and(|s| {
                matches!(
                    (s.prefixes, ours),
                    (Prefixes::Nginx, true) | (Prefixes::Gatehouse, false)
                )
            });
            if misplaced {
                let other = if ours { NGINX_PREFIX } else { GATEHOUSE_PREFIX };
                let (outcome, reason) = if access_like(name) {
                    (
                        Status::Refused,
                        format!(
                            "unknown annotation that looks like an access rule (it exists as {other}{name}); not served open"
                        ),
                    )
                } else {
                    (
                        Status::Ignored,
                        format!("unknown annotation (it exists as {other}{name})"),
                    )
                };
                out.reports.push(Report {
                    annotation: key.clone(),
                    outcome,
                    reason,
                });
                continue;
            }
            let this = Found {
                key,
                value,
                taken: false,
            };
            match found.get(name) {
                Some(other) if ours || !other.key.starts_with(NGINX_PREFIX) => {
                    // A `gatehouse.dev/` one is already there (maps iterate in key order, so
                    // this is the nginx one): it loses.
                    let (loser, winner) = if ours {
                        (other.key, key.as_str())
                    } else {
                        (key.as_str(), other.key)
                    };
                    out.reports.push(Report {
                        annotation: loser.to_owned(),
                        outcome: Status::Ignored,
                        reason: format!("{winner} is set too and wins"),
                    });
                    if ours {
                        found.insert(name, this);
                    }
                }
                _ => {
                    found.insert(name, this);
                }
            }
        }
        Self {
            cx,
            found,
            out,
            refusals: Vec::new(),
            access: AccessRules::default(),
            canary: false,
            ignore_snippets: false,
            any_host: false,
        }
    }

    /// The value of an annotation (by name after the prefix), marking it used.
    fn take(&mut self, name: &str) -> Option<(&'a str, &'a str)> {
        let f = self.found.get_mut(name)?;
        f.taken = true;
        Some((f.key, f.value))
    }

    fn report(&mut self, key: &str, outcome: Status, reason: impl Into<String>) {
        self.out.reports.push(Report {
            annotation: key.to_owned(),
            outcome,
            reason: reason.into(),
        });
    }

    fn honour(&mut self, key: &str, what: impl Into<String>) {
        self.report(key, Status::Honoured, what);
    }

    fn ignore(&mut self, key: &str, why: impl Into<String>) {
        self.report(key, Status::Ignored, why);
    }

    fn refuse(&mut self, key: &str, why: impl Into<String>) {
        let why = why.into();
        self.refusals.push(format!("{key}: {why}"));
        self.report(key, Status::Refused, why);
    }

    /// A boolean annotation; a value that is not `true`/`false` is reported with `bad`.
    fn flag(&mut self, name: &str) -> Option<(&'a str, Result<bool, ()>)> {
        let (key, value) = self.take(name)?;
        Some((
            key,
            match value.trim() {
                "true" | "True" | "TRUE" => Ok(true),
                "false" | "False" | "FALSE" => Ok(false),
                _ => Err(()),
            },
        ))
    }

    fn run(&mut self) {
        // A canary takes only its own rules and upstream choices; the rest is the main
        // Ingress's (ingress-nginx ignores them on a canary).
        if let Some((key, v)) = self.flag("canary") {
            match v {
                Ok(on) => {
                    self.canary = on;
                    self.honour(
                        key,
                        if on {
                            "canary of the Ingress with the same host and path"
                        } else {
                            "not a canary"
                        },
                    );
                }
                Err(()) => self.ignore(key, "expected \"true\" or \"false\""),
            }
        }
        if let Some((key, v)) = self.flag("ignore-snippets") {
            match v {
                Ok(on) => {
                    self.ignore_snippets = on;
                    self.honour(key, "snippets reviewed: served without them");
                }
                Err(()) => self.ignore(key, "expected \"true\" or \"false\""),
            }
        }
        self.canary_rules();
        self.affinity_and_hashing();
        if self.canary {
            self.canary_leftovers();
            return;
        }
        self.source_ranges();
        self.basic_auth();
        self.external_auth();
        self.client_certificates();
        self.snippets();
        self.limits();
        self.timeouts();
        self.rewrites();
        self.redirects();
        self.cors();
        self.backend();
        self.errors();
        self.behaviour_flags();
    }

    // --- canary ---

    fn canary_rules(&mut self) {
        let names = [
            "canary-by-header",
            "canary-by-header-value",
            "canary-by-header-pattern",
            "canary-by-cookie",
            "canary-weight",
            "canary-weight-total",
        ];
        if !self.canary {
            for name in names {
                if let Some((key, _)) = self.take(name) {
                    self.ignore(key, "canary rules need nginx.ingress.kubernetes.io/canary: \"true\" (or gatehouse.dev/canary)");
                }
            }
            return;
        }
        let mut rules = CanaryRules {
            weight_total: 100,
            ..CanaryRules::default()
        };
        if let Some((key, value)) = self.take("canary-weight-total") {
            match value.trim().parse::<u32>() {
                Ok(t) if t > 0 => {
                    rules.weight_total = t;
                    self.honour(key, "total of canary-weight");
                }
                _ => self.ignore(key, "expected a positive whole number; 100 is used"),
            }
        }
        if let Some((key, value)) = self.take("canary-weight") {
            match value.trim().parse::<u32>() {
                Ok(w) => {
                    rules.weight = w.min(rules.weight_total);
                    self.honour(
                        key,
                        format!(
                            "{} of {} requests go to the canary",
                            rules.weight, rules.weight_total
                        ),
                    );
                }
                Err(_) => self.ignore(
                    key,
                    "expected a whole number; no requests go to the canary by weight",
                ),
            }
        }
        let header_value = self.take("canary-by-header-value");
        let header_pattern = self.take("canary-by-header-pattern");
        match self.take("canary-by-header") {
            Some((key, name)) => match HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(header) => {
                    let rule = if let Some((vkey, value)) = header_value {
                        if let Some((pkey, _)) = header_pattern {
                            self.ignore(pkey, "canary-by-header-value is set and wins");
                        }
                        match HeaderValue::from_str(value) {
                            Ok(v) => {
                                self.honour(vkey, "this header value sends to the canary");
                                HeaderMatch::Value(v)
                            }
                            Err(_) => {
                                self.ignore(vkey, "not a valid header value; always/never is used");
                                HeaderMatch::AlwaysNever
                            }
                        }
                    } else if let Some((pkey, pattern)) = header_pattern {
                        match regex::RegexBuilder::new(pattern)
                            .size_limit(1 << 20)
                            .build()
                        {
                            Ok(re) => {
                                self.honour(pkey, "a matching header value sends to the canary");
                                HeaderMatch::Pattern(re)
                            }
                            Err(_) => {
                                self.ignore(
                                    pkey,
                                    "not a valid regular expression; always/never is used",
                                );
                                HeaderMatch::AlwaysNever
                            }
                        }
                    } else {
                        HeaderMatch::AlwaysNever
                    };
                    self.honour(key, "this header decides first");
                    rules.header = Some((header, rule));
                }
                Err(_) => {
                    self.ignore(key, "not a valid header name");
                    for (k, _) in [header_value, header_pattern].into_iter().flatten() {
                        self.ignore(k, "canary-by-header is not usable");
                    }
                }
            },
            None => {
                for (k, _) in [header_value, header_pattern].into_iter().flatten() {
                    self.ignore(k, "needs canary-by-header");
                }
            }
        }
        if let Some((key, name)) = self.take("canary-by-cookie") {
            if valid_token(name.trim()) {
                rules.cookie = Some(name.trim().into());
                self.honour(key, "this cookie decides after the header");
            } else {
                self.ignore(key, "not a valid cookie name");
            }
        }
        self.out.canary = Some((rules, UpstreamPolicy::default()));
    }

    /// On a canary, every annotation but its rules and upstream choices is the main Ingress's.
    fn canary_leftovers(&mut self) {
        let upstream = std::mem::take(&mut self.out.policy.upstream);
        if let Some((_, own)) = &mut self.out.canary {
            *own = upstream;
        }
        let left: Vec<&'a str> = self
            .found
            .values()
            .filter(|f| !f.taken)
            .map(|f| f.key)
            .collect();
        for key in left {
            if let Some(f) = self.found.values_mut().find(|f| f.key == key) {
                f.taken = true;
            }
            self.ignore(
                key,
                "not used on a canary: the main Ingress's annotations apply to its requests",
            );
        }
    }

    // --- access ---

    fn source_ranges(&mut self) {
        let allow = self.take("allowlist-source-range");
        let white = self.take("whitelist-source-range");
        let chosen = match (allow, white) {
            (Some(a), Some((wkey, _))) => {
                self.ignore(wkey, format!("{} is set too and wins", a.0));
                Some(a)
            }
            (a, w) => a.or(w),
        };
        if let Some((key, value)) = chosen {
            match CidrSet::parse(value) {
                Ok(set) => {
                    self.honour(key, format!("only {set} may connect"));
                    self.access.allow = Some(set);
                }
                Err(e) => self.refuse(key, e),
            }
        }
        if let Some((key, value)) = self.take("denylist-source-range") {
            match CidrSet::parse(value) {
                Ok(set) => {
                    self.honour(key, format!("{set} are refused"));
                    self.access.deny = Some(set);
                }
                Err(e) => self.refuse(key, e),
            }
        }
        if let Some((key, value)) = self.take("satisfy") {
            match value.trim() {
                "any" => {
                    self.access.satisfy = Satisfy::Any;
                    self.honour(key, "the source range or the authentication is enough");
                }
                "all" | "" => self.honour(key, "every check must pass"),
                // Unknown: keep the stricter `all`.
                _ => self.ignore(key, "expected \"all\" or \"any\"; every check must pass"),
            }
        }
    }

    fn basic_auth(&mut self) {
        let auth_type = self.take("auth-type");
        let secret = self.take("auth-secret");
        let secret_type = self.take("auth-secret-type");
        let realm = self.take("auth-realm");
        self.basic_auth_from(auth_type, secret, secret_type, realm);
        // A refusal names the annotation at fault; the rest of the set is refused with it, so
        // that each one has its report (found by fuzzing: auth-type had none when its Secret
        // was missing).
        for (key, _) in [auth_type, secret, secret_type, realm]
            .into_iter()
            .flatten()
        {
            if !self.out.reports.iter().any(|r| r.annotation == key) {
                self.refuse(
                    key,
                    "basic authentication is not usable (see the other auth-* annotations)",
                );
            }
        }
    }

    fn basic_auth_from(
        &mut self,
        auth_type: Option<(&'a str, &'a str)>,
        secret: Option<(&'a str, &'a str)>,
        secret_type: Option<(&'a str, &'a str)>,
        realm: Option<(&'a str, &'a str)>,
    ) {
        let Some((type_key, kind)) = auth_type else {
            for (key, _) in [secret, secret_type, realm].into_iter().flatten() {
                self.refuse(
                    key,
                    "needs auth-type: basic (an incomplete authentication is not served open)",
                );
            }
            return;
        };
        match kind.trim() {
            "basic" => {}
            "digest" => {
                self.refuse(
                    type_key,
                    "digest authentication is not supported (use basic over HTTPS)",
                );
                for (key, _) in [secret, secret_type, realm].into_iter().flatten() {
                    self.refuse(key, "auth-type is not usable");
                }
                return;
            }
            other => {
                self.refuse(type_key, format!("unknown authentication type {other:?}"));
                for (key, _) in [secret, secret_type, realm].into_iter().flatten() {
                    self.refuse(key, "auth-type is not usable");
                }
                return;
            }
        }
        let as_map = match secret_type {
            None => false,
            Some((key, v)) => match v.trim() {
                "auth-file" => {
                    self.honour(key, "htpasswd file in the Secret's key \"auth\"");
                    false
                }
                "auth-map" => {
                    self.honour(key, "the Secret's keys are users, its values their hashes");
                    true
                }
                other => {
                    self.refuse(
                        key,
                        format!("unknown secret type {other:?} (auth-file or auth-map)"),
                    );
                    return;
                }
            },
        };
        let Some((secret_key, name)) = secret else {
            self.refuse(type_key, "auth-type basic needs auth-secret");
            return;
        };
        let Some(secret_ref) = secret_ref(&self.cx.key.namespace, name) else {
            self.refuse(secret_key, "expected a Secret name or NAMESPACE/NAME");
            return;
        };
        let found = self.cx.secrets.get(&secret_ref).cloned();
        self.out.secrets.push((secret_ref.clone(), found.clone()));
        let Some(secret) = found else {
            self.refuse(secret_key, format!("Secret {secret_ref} not found"));
            return;
        };
        let data = secret_data(&secret);
        let (users, problems) = if as_map {
            Htpasswd::from_map(data.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        } else {
            match data.get("auth") {
                Some(text) => Htpasswd::parse_file(text),
                None => {
                    self.refuse(
                        secret_key,
                        format!("Secret {secret_ref} has no key \"auth\" (an htpasswd file)"),
                    );
                    return;
                }
            }
        };
        if users.is_empty() {
            let why = problems
                .first()
                .map(|p| format!(": {p}"))
                .unwrap_or_default();
            self.refuse(
                secret_key,
                format!("Secret {secret_ref} has no usable user{why}"),
            );
            return;
        }
        let realm_text = match realm {
            Some((key, r)) => {
                self.honour(key, "realm of the challenge");
                r.replace(['"', '\\'], "")
            }
            None => String::new(),
        };
        let Ok(challenge) = HeaderValue::from_str(&format!("Basic realm=\"{realm_text}\"")) else {
            self.refuse(type_key, "auth-realm is not a valid header value");
            return;
        };
        self.honour(
            secret_key,
            format!("{} user(s) from Secret {secret_ref}", users.len()),
        );
        if !problems.is_empty() {
            // Users whose line is unusable cannot log in; the others can.
            self.out.warnings.push(format!(
                "annotation {secret_key}: users of Secret {secret_ref} left out (they cannot log in): {}",
                problems.join("; ")
            ));
        }
        self.honour(type_key, "HTTP basic authentication");
        self.access.basic = Some(Arc::new(BasicAuth { challenge, users }));
    }

    fn external_auth(&mut self) {
        let url = self.take("auth-url");
        let related = [
            "auth-method",
            "auth-signin",
            "auth-signin-redirect-param",
            "auth-response-headers",
            "auth-request-redirect",
            "auth-proxy-set-headers",
            "auth-cache-key",
            "auth-cache-duration",
            "auth-keepalive",
            "auth-keepalive-requests",
            "auth-keepalive-timeout",
            "auth-keepalive-share-vars",
            "auth-always-set-cookie",
        ];
        let Some((url_key, url_text)) = url else {
            for name in related {
                if let Some((key, _)) = self.take(name) {
                    self.refuse(
                        key,
                        "needs auth-url (an incomplete authentication is not served open)",
                    );
                }
            }
            return;
        };
        let url = match http_template(url_text.trim()) {
            // The auth service's host from the request on a rule for any host: a client could
            // name its own auth service and let itself in.
            Ok(_) if self.any_host && authority_has_variable(url_text.trim()) => Err(
                "its host comes from the request, and the Ingress has a rule without host (or a default backend): a client could choose the auth service that lets it in; name the auth service's host".to_owned(),
            ),
            other => other,
        };
        let url = match url {
            Ok(t) => t,
            Err(e) => {
                self.refuse(url_key, e);
                for name in related {
                    if let Some((key, _)) = self.take(name) {
                        self.refuse(key, "auth-url is not usable");
                    }
                }
                return;
            }
        };
        let mut auth = ExternalAuth {
            url,
            method: None,
            signin: None,
            response_headers: Vec::new(),
            request_redirect: None,
        };
        if let Some((key, m)) = self.take("auth-method") {
            match Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()) {
                Ok(m) => {
                    self.honour(key, format!("the subrequest uses {m}"));
                    auth.method = Some(m);
                }
                Err(_) => self.refuse(key, "not an HTTP method"),
            }
        }
        let param: Option<Box<str>> = match self.take("auth-signin-redirect-param") {
            Some((key, p)) if valid_token(p.trim()) => {
                self.honour(key, "carries the original URL");
                Some(p.trim().into())
            }
            Some((key, _)) => {
                self.refuse(key, "not a valid query parameter name");
                None
            }
            None => Some("rd".into()),
        };
        if let Some((key, s)) = self.take("auth-signin") {
            match http_template(s.trim()) {
                Ok(url) => {
                    self.honour(key, "a 401 redirects here");
                    // A URL that carries the parameter itself keeps it (ingress-nginx's rule).
                    let redirect_param = param.filter(|p| !has_query_param(s.trim(), p));
                    auth.signin = Some(SignIn {
                        url,
                        redirect_param,
                    });
                }
                Err(e) => self.refuse(key, e),
            }
        }
        if let Some((key, list)) = self.take("auth-response-headers") {
            let names: Result<Vec<HeaderName>, _> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| HeaderName::from_bytes(n.as_bytes()))
                .collect();
            match names {
                Ok(names) => {
                    self.honour(key, "copied into the request to the backend");
                    auth.response_headers = names;
                }
                Err(_) => self.refuse(key, "not a list of header names"),
            }
        }
        if let Some((key, v)) = self.take("auth-request-redirect") {
            match HeaderValue::from_str(v.trim()) {
                Ok(v) => {
                    self.honour(key, "sent as X-Auth-Request-Redirect");
                    auth.request_redirect = Some(v);
                }
                Err(_) => self.refuse(key, "not a valid header value"),
            }
        }
        if let Some((key, _)) = self.take("auth-proxy-set-headers") {
            self.refuse(
                key,
                "headers from a ConfigMap for the auth subrequest are not supported",
            );
        }
        for name in [
            "auth-cache-key",
            "auth-cache-duration",
            "auth-keepalive",
            "auth-keepalive-requests",
            "auth-keepalive-timeout",
            "auth-keepalive-share-vars",
            "auth-always-set-cookie",
        ] {
            if let Some((key, _)) = self.take(name) {
                let why = spec(name).map_or("not supported", table_reason);
                self.ignore(key, why);
            }
        }
        self.honour(url_key, "external authentication subrequest");
        self.access.external = Some(Arc::new(auth));
    }

    fn client_certificates(&mut self) {
        let names = [
            "auth-tls-secret",
            "auth-tls-verify-client",
            "auth-tls-verify-depth",
            "auth-tls-error-page",
            "auth-tls-pass-certificate-to-upstream",
            "auth-tls-match-cn",
        ];
        let off = self
            .found
            .get("auth-tls-verify-client")
            .is_some_and(|f| f.value.trim() == "off");
        for name in names {
            if let Some((key, _)) = self.take(name) {
                if off {
                    self.ignore(
                        key,
                        "auth-tls-verify-client is off: no client certificate is asked for",
                    );
                } else {
                    self.refuse(
                        key,
                        "client certificate authentication is not supported yet",
                    );
                }
            }
        }
    }

    fn snippets(&mut self) {
        for name in [
            "configuration-snippet",
            "server-snippet",
            "auth-snippet",
            "modsecurity-snippet",
        ] {
            if let Some((key, _)) = self.take(name) {
                if self.ignore_snippets && name != "auth-snippet" {
                    self.ignore(
                        key,
                        "never executed; served without it (gatehouse.dev/ignore-snippets)",
                    );
                } else if self.ignore_snippets {
                    // An auth snippet changes how requests are authenticated: never waived.
                    self.refuse(key, "never executed, and it changes authentication: not waived by gatehouse.dev/ignore-snippets");
                } else {
                    self.refuse(key, "never executed; nginx configuration can carry access control, so the routes are not served without it (convert it, or set gatehouse.dev/ignore-snippets: \"true\" once reviewed)");
                }
            }
        }
        if let Some((key, _)) = self.take("stream-snippet") {
            self.ignore(key, "never executed; TCP streams are not served");
        }
    }

    // --- limits ---

    fn limits(&mut self) {
        let multiplier = match self.take("limit-burst-multiplier") {
            Some((key, v)) => match v.trim().parse::<u32>() {
                Ok(m) if m >= 1 => {
                    self.honour(key, format!("burst is {m} × the rate"));
                    m
                }
                _ => {
                    self.ignore(key, "expected a whole number ≥ 1; 5 is used");
                    5
                }
            },
            None => 5,
        };
        for (name, per) in [
            ("limit-rps", Duration::from_secs(1)),
            ("limit-rpm", Duration::from_secs(60)),
        ] {
            if let Some((key, v)) = self.take(name) {
                match v.trim().parse::<u32>() {
                    Ok(0) => self.honour(key, "0: no limit"),
                    Ok(n) => {
                        let limit = RateLimit {
                            requests: NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
                            per,
                            burst: n.saturating_mul(multiplier),
                        };
                        self.honour(
                            key,
                            format!(
                                "{n} per {}s per client address, burst {}",
                                per.as_secs(),
                                limit.burst
                            ),
                        );
                        if name == "limit-rps" {
                            self.out.policy.limits.rps = Some(limit);
                        } else {
                            self.out.policy.limits.rpm = Some(limit);
                        }
                    }
                    Err(_) => self.ignore(key, "expected a whole number; no limit"),
                }
            }
        }
        if let Some((key, v)) = self.take("limit-connections") {
            match v.trim().parse::<u32>() {
                Ok(0) => self.honour(key, "0: no limit"),
                Ok(n) => {
                    self.out.policy.limits.connections = NonZeroU32::new(n);
                    self.honour(key, format!("{n} requests in progress per client address"));
                }
                Err(_) => self.ignore(key, "expected a whole number; no limit"),
            }
        }
        let allow = self.take("limit-allowlist");
        let white = self.take("limit-whitelist");
        let chosen = match (allow, white) {
            (Some(a), Some((wkey, _))) => {
                self.ignore(wkey, format!("{} is set too and wins", a.0));
                Some(a)
            }
            (a, w) => a.or(w),
        };
        if let Some((key, v)) = chosen {
            match CidrSet::parse(v) {
                Ok(set) => {
                    self.honour(key, format!("no limit for {set}"));
                    self.out.policy.limits.exempt = Some(set);
                }
                Err(e) => self.ignore(key, format!("{e}; the limits apply to every client")),
            }
        }
        self.out.policy.limits.body_size = self.cx.defaults.body_size;
        if let Some((key, v)) = self.take("proxy-body-size") {
            match parse_size(v) {
                Ok(0) => {
                    self.out.policy.limits.body_size = None;
                    self.honour(key, "no limit");
                }
                Ok(n) => {
                    self.out.policy.limits.body_size = Some(n);
                    self.honour(key, format!("request bodies up to {n} bytes"));
                }
                Err(e) => self.ignore(key, format!("{e}; the default limit applies")),
            }
        }
    }

    fn timeouts(&mut self) {
        for name in [
            "proxy-connect-timeout",
            "proxy-read-timeout",
            "proxy-send-timeout",
        ] {
            if let Some((key, v)) = self.take(name) {
                match parse_duration(v) {
                    Ok(d) => {
                        let t = &mut self.out.policy.limits.timeouts;
                        match name {
                            "proxy-connect-timeout" => t.connect = Some(d),
                            "proxy-read-timeout" => t.read = Some(d),
                            _ => t.send = Some(d),
                        }
                        self.honour(key, format!("{}", humantime::format_duration(d)));
                    }
                    Err(e) => self.ignore(key, format!("{e}; the global timeout applies")),
                }
            }
        }
    }

    // --- paths, rewrites, redirects ---

    fn rewrites(&mut self) {
        if let Some((key, v)) = self.flag("use-regex") {
            match v {
                Ok(on) => {
                    self.out.use_regex = on;
                    self.honour(
                        key,
                        if on {
                            "paths are case-insensitive regular expressions (for the whole host)"
                        } else {
                            "paths are not regular expressions"
                        },
                    );
                }
                Err(()) => self.ignore(key, "expected \"true\" or \"false\""),
            }
        }
        if let Some((key, v)) = self.take("rewrite-target") {
            match Template::parse(v.trim(), true) {
                Ok(t) if v.trim().starts_with('/') || v.trim().starts_with('$') => {
                    self.honour(
                        key,
                        "the path sent upstream (the host's paths become regular expressions)",
                    );
                    self.out.rewrite_target = Some(t);
                }
                Ok(_) => self.ignore(
                    key,
                    "expected a path starting with \"/\"; paths are sent unchanged",
                ),
                Err(e) => self.ignore(key, format!("{e}; paths are sent unchanged")),
            }
        }
        if let Some((key, v)) = self.take("app-root") {
            let v = v.trim();
            if v.starts_with('/') && !v.starts_with("//") && HeaderValue::from_str(v).is_ok() {
                self.honour(key, format!("\"/\" redirects to {v}"));
                self.out.policy.app_root = Some(v.into());
            } else {
                self.ignore(key, "expected a path starting with \"/\"");
            }
        }
        if let Some((key, v)) = self.take("x-forwarded-prefix") {
            match HeaderValue::from_str(v.trim()) {
                Ok(h) if !v.trim().is_empty() => {
                    self.honour(key, "sent as X-Forwarded-Prefix");
                    self.out.policy.upstream.forwarded_prefix = Some(h);
                }
                _ => self.ignore(key, "not a valid header value"),
            }
        }
        if let Some((key, v)) = self.take("upstream-vhost") {
            let host = v.trim();
            match HeaderValue::from_str(host) {
                Ok(h) if !host.is_empty() && !host.contains(['/', ' ']) => {
                    self.honour(key, "the Host header sent upstream");
                    self.out.policy.upstream.vhost = Some(h);
                }
                _ => self.ignore(key, "not a host name"),
            }
        }
    }

    fn redirects(&mut self) {
        let code = |p: &mut Self, name: &str, default: StatusCode| -> StatusCode {
            match p.take(name) {
                Some((key, v)) => match v.trim().parse::<u16>() {
                    Ok(c @ 300..=308) => {
                        p.honour(key, format!("status {c}"));
                        StatusCode::from_u16(c).unwrap_or(default)
                    }
                    _ => {
                        p.ignore(
                            key,
                            format!("expected 300 to 308; {} is used", default.as_u16()),
                        );
                        default
                    }
                },
                None => default,
            }
        };
        let temporal_code = code(self, "temporal-redirect-code", StatusCode::FOUND);
        let permanent_code = code(
            self,
            "permanent-redirect-code",
            StatusCode::MOVED_PERMANENTLY,
        );
        let temporal = self.take("temporal-redirect");
        let permanent = self.take("permanent-redirect");
        for (which, code) in [(temporal, temporal_code), (permanent, permanent_code)] {
            let Some((key, url)) = which else { continue };
            if self.out.policy.redirect.is_some() {
                self.ignore(key, "temporal-redirect is set too and wins");
                continue;
            }
            let url = url.trim();
            let lower = url.to_ascii_lowercase();
            let ok = (lower.starts_with("http://") || lower.starts_with("https://"))
                && url
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
            match HeaderValue::from_str(url) {
                Ok(v) if ok => {
                    self.honour(
                        key,
                        format!("every request gets a {} to {url}", code.as_u16()),
                    );
                    self.out.policy.redirect = Some(Redirect {
                        to: RedirectTo::Url(v),
                        code,
                    });
                }
                _ => self.ignore(key, "expected an http:// or https:// URL"),
            }
        }
        if let Some((key, v)) = self.flag("ssl-redirect") {
            match v {
                Ok(on) => {
                    self.out.ssl_redirect = Some(on);
                    self.honour(
                        key,
                        if on {
                            "HTTP to HTTPS redirect for hosts with a certificate"
                        } else {
                            "no HTTPS redirect"
                        },
                    );
                }
                Err(()) => self.ignore(key, "expected \"true\" or \"false\""),
            }
        }
        if let Some((key, v)) = self.flag("force-ssl-redirect") {
            match v {
                Ok(on) => {
                    self.out.force_ssl_redirect = on;
                    self.honour(
                        key,
                        if on {
                            "HTTP to HTTPS redirect, certificate or not"
                        } else {
                            "no forced redirect"
                        },
                    );
                }
                Err(()) => self.ignore(key, "expected \"true\" or \"false\""),
            }
        }
        if let Some((key, v)) = self.flag("preserve-trailing-slash") {
            match v {
                Ok(true) => self.honour(key, "HTTPS redirects keep the path as received"),
                Ok(false) => self.ignore(
                    key,
                    "HTTPS redirects always keep the path as received (a trailing slash too)",
                ),
                Err(()) => self.ignore(key, "expected \"true\" or \"false\""),
            }
        }
        if let Some((key, v)) = self.flag("from-to-www-redirect") {
            match v {
                Ok(on) => {
                    self.out.from_to_www = on;
                    self.honour(
                        key,
                        if on {
                            "the www / non-www twin of each host redirects here"
                        } else {
                            "no www redirect"
                        },
                    );
                }
                Err(()) => self.ignore(key, "expected \"true\" or \"false\""),
            }
        }
    }

    fn cors(&mut self) {
        let enabled = match self.flag("enable-cors") {
            Some((key, Ok(on))) => {
                self.honour(
                    key,
                    if on {
                        "CORS answered at the edge"
                    } else {
                        "no CORS"
                    },
                );
                on
            }
            Some((key, Err(()))) => {
                self.ignore(key, "expected \"true\" or \"false\"; no CORS");
                false
            }
            None => false,
        };
        let names = [
            "cors-allow-origin",
            "cors-allow-methods",
            "cors-allow-headers",
            "cors-expose-headers",
            "cors-allow-credentials",
            "cors-max-age",
        ];
        if !enabled {
            for name in names {
                if let Some((key, _)) = self.take(name) {
                    self.ignore(key, "needs enable-cors: \"true\"");
                }
            }
            return;
        }
        let mut cors = Cors {
            allow_origin: CorsOrigins::Any,
            allow_methods: HeaderValue::from_static("GET, PUT, POST, DELETE, PATCH, OPTIONS"),
            allow_headers: HeaderValue::from_static(
                "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization",
            ),
            expose_headers: None,
            allow_credentials: true,
            max_age: HeaderValue::from_static("1728000"),
        };
        if let Some((key, v)) = self.take("cors-allow-origin") {
            match parse_origins(v) {
                Ok(origins) => {
                    self.honour(key, "allowed origins");
                    cors.allow_origin = origins;
                }
                Err(e) => self.ignore(key, format!("{e}; \"*\" is used as ingress-nginx does")),
            }
        }
        let list = |v: &str, allowed: fn(u8) -> bool| -> Option<HeaderValue> {
            let items: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let ok = !items.is_empty() && items.iter().all(|i| i.bytes().all(allowed));
            ok.then(|| HeaderValue::from_str(&items.join(", ")).ok())
                .flatten()
        };
        if let Some((key, v)) = self.take("cors-allow-methods") {
            match list(v, |b| b.is_ascii_alphabetic()) {
                Some(h) => {
                    self.honour(key, "Access-Control-Allow-Methods");
                    cors.allow_methods = h;
                }
                None => self.ignore(
                    key,
                    "expected method names separated by commas; the default is used",
                ),
            }
        }
        if let Some((key, v)) = self.take("cors-allow-headers") {
            match list(v, |b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                Some(h) => {
                    self.honour(key, "Access-Control-Allow-Headers");
                    cors.allow_headers = h;
                }
                None => self.ignore(
                    key,
                    "expected header names separated by commas; the default is used",
                ),
            }
        }
        if let Some((key, v)) = self.take("cors-expose-headers") {
            match list(v, |b| {
                b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*'
            }) {
                Some(h) => {
                    self.honour(key, "Access-Control-Expose-Headers");
                    cors.expose_headers = Some(h);
                }
                None => self.ignore(key, "expected header names separated by commas"),
            }
        }
        if let Some((key, v)) = self.flag("cors-allow-credentials") {
            match v {
                Ok(on) => {
                    cors.allow_credentials = on;
                    self.honour(key, "Access-Control-Allow-Credentials");
                }
                Err(()) => self.ignore(key, "expected \"true\" or \"false\"; true is used"),
            }
        }
        if let Some((key, v)) = self.take("cors-max-age") {
            match v.trim().parse::<u32>() {
                Ok(n) => {
                    cors.max_age = HeaderValue::from(n);
                    self.honour(key, "Access-Control-Max-Age");
                }
                Err(_) => self.ignore(key, "expected seconds; 1728000 is used"),
            }
        }
        self.out.policy.cors = Some(cors);
    }

    // --- backends ---

    fn backend(&mut self) {
        if let Some((key, v)) = self.take("backend-protocol") {
            match BackendProtocol::parse(v) {
                Some(p) => {
                    self.out.protocol = Some(p);
                    self.honour(key, format!("{p:?}"));
                }
                None => self.ignore(
                    key,
                    if key.starts_with(GATEHOUSE_PREFIX) {
                        "expected HTTP, HTTPS, H2C, GRPC or GRPCS"
                    } else {
                        "expected HTTP, HTTPS, GRPC or GRPCS (AJP and FCGI are not supported); HTTP is used"
                    },
                ),
            }
        }
        let name = self
            .take("backend-tls-server-name")
            .or_else(|| self.take("proxy-ssl-name"));
        if let Some((key, v)) = name {
            let name = crate::tls::normalize_name(v.trim());
            if !matches!(
                self.out.protocol,
                Some(BackendProtocol::Https | BackendProtocol::Grpcs)
            ) {
                let protocol = if key.starts_with(GATEHOUSE_PREFIX) {
                    "gatehouse.dev/backend-protocol"
                } else {
                    "backend-protocol"
                };
                self.ignore(key, format!("{protocol} is not HTTPS"));
            } else if rustls::pki_types::ServerName::try_from(&*name).is_ok() {
                self.honour(key, "name the backend certificate is verified against");
                self.out.tls_server_name = Some(name.into());
            } else {
                self.ignore(key, "not a DNS name or IP address");
            }
        }
        if let Some((key, v)) = self.take("proxy-ssl-server-name") {
            if v.trim() == "on" {
                self.honour(key, "SNI is sent");
            } else {
                self.ignore(key, "SNI is always sent with a server name");
            }
        }
        if let Some((key, v)) = self.flag("service-upstream") {
            match v {
                Ok(on) => {
                    self.out.service_upstream = on;
                    self.honour(
                        key,
                        if on {
                            "requests go to the Service's cluster IP"
                        } else {
                            "requests go to the endpoints"
                        },
                    );
                }
                Err(()) => self.ignore(key, "expected \"true\" or \"false\""),
            }
        }
        if let Some((key, v)) = self.take("load-balance") {
            if v.trim() == "round_robin" {
                self.honour(key, "round robin per request");
            } else {
                self.ignore(key, "only round_robin is supported");
            }
        }
    }

    fn affinity_and_hashing(&mut self) {
        let cookie_names = [
            "affinity-mode",
            "affinity-canary-behavior",
            "session-cookie-name",
            "session-cookie-path",
            "session-cookie-domain",
            "session-cookie-max-age",
            "session-cookie-expires",
            "session-cookie-samesite",
            "session-cookie-conditional-samesite-none",
            "session-cookie-secure",
            "session-cookie-change-on-failure",
        ];
        match self.take("affinity") {
            Some((key, v)) if v.trim() == "cookie" => {
                self.honour(key, "cookie session affinity");
                let mut a = CookieAffinity {
                    name: "INGRESSCOOKIE".into(),
                    path: None,
                    domain: None,
                    max_age: None,
                    expires: None,
                    same_site: None,
                    conditional_same_site_none: false,
                    secure: false,
                    persistent: false,
                    change_on_failure: false,
                    canary_sticky: true,
                };
                for name in cookie_names {
                    let Some((key, v)) = self.take(name) else {
                        continue;
                    };
                    let v = v.trim();
                    let ok = match name {
                        "affinity-mode" => match v {
                            "balanced" => true,
                            "persistent" => {
                                a.persistent = true;
                                true
                            }
                            _ => false,
                        },
                        "affinity-canary-behavior" => match v {
                            "sticky" => true,
                            "legacy" => {
                                a.canary_sticky = false;
                                true
                            }
                            _ => false,
                        },
                        "session-cookie-name" => {
                            valid_token(v) && {
                                a.name = v.into();
                                true
                            }
                        }
                        "session-cookie-path" => {
                            v.starts_with('/')
                                && HeaderValue::from_str(v).is_ok()
                                && !v.contains(';')
                                && {
                                    a.path = Some(v.into());
                                    true
                                }
                        }
                        "session-cookie-domain" => {
                            !v.is_empty()
                                && v.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                                && {
                                    a.domain = Some(v.into());
                                    true
                                }
                        }
                        "session-cookie-max-age" => v.parse().map(|n| a.max_age = Some(n)).is_ok(),
                        "session-cookie-expires" => v.parse().map(|n| a.expires = Some(n)).is_ok(),
                        "session-cookie-samesite" => {
                            a.same_site = match v.to_ascii_lowercase().as_str() {
                                "none" => Some(SameSite::None),
                                "lax" => Some(SameSite::Lax),
                                "strict" => Some(SameSite::Strict),
                                _ => None,
                            };
                            a.same_site.is_some()
                        }
                        _ => match v {
                            "true" | "false" => {
                                let on = v == "true";
                                match name {
                                    "session-cookie-conditional-samesite-none" => {
                                        a.conditional_same_site_none = on
                                    }
                                    "session-cookie-secure" => a.secure = on,
                                    _ => a.change_on_failure = on,
                                }
                                true
                            }
                            _ => false,
                        },
                    };
                    if ok {
                        self.honour(key, "session cookie");
                    } else {
                        let syntax = spec(name).map_or("", |s| s.syntax);
                        self.ignore(key, format!("expected {syntax}; the default is used"));
                    }
                }
                // As ingress-nginx warns: with regex paths the route's path is no cookie path.
                let regex = self
                    .found
                    .get("use-regex")
                    .is_some_and(|f| f.value.trim() == "true")
                    || self.found.contains_key("rewrite-target");
                if regex && a.path.is_none() {
                    a.path = Some("/".into());
                    self.out.warnings.push(format!(
                        "annotation {key}: the paths are regular expressions and session-cookie-path is not set: the cookie's Path is /"
                    ));
                }
                self.out.policy.upstream.affinity = Some(Arc::new(a));
            }
            Some((key, _)) => {
                self.ignore(key, "only \"cookie\" affinity exists");
                self.ignore_all(&cookie_names, "needs affinity: cookie");
            }
            None => self.ignore_all(&cookie_names, "needs affinity: cookie"),
        }
        if let Some((key, v)) = self.take("upstream-hash-by") {
            match Template::parse(v.trim(), false) {
                Ok(t) if !t.is_literal() => {
                    self.honour(key, "consistent hashing of this key picks the endpoint");
                    self.out.policy.upstream.hash_by = Some(t);
                }
                Ok(_) => self.ignore(
                    key,
                    "a fixed key would send every request to one endpoint; round robin is used",
                ),
                Err(e) => self.ignore(key, format!("{e}; round robin is used")),
            }
        }
    }

    fn ignore_all(&mut self, names: &[&str], why: &str) {
        for name in names {
            if let Some((key, _)) = self.take(name) {
                self.ignore(key, why);
            }
        }
    }

    fn errors(&mut self) {
        let mut errors = ErrorPolicy::default();
        if let Some((key, v)) = self.take("custom-http-errors") {
            let codes: Result<Vec<u16>, _> = v
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| {
                    c.parse::<u16>().map_err(|_| ()).and_then(|c| {
                        if (400..=599).contains(&c) {
                            Ok(c)
                        } else {
                            Err(())
                        }
                    })
                })
                .collect();
            match codes {
                Ok(mut codes) if !codes.is_empty() => {
                    codes.sort_unstable();
                    codes.dedup();
                    self.honour(
                        key,
                        "these statuses are answered by the default backend (or Gatehouse itself without one)",
                    );
                    errors.intercept = codes;
                }
                _ => self.ignore(key, "expected status codes 400-599 separated by commas"),
            }
        }
        if let Some((key, v)) = self.take("default-backend") {
            if valid_name(v.trim()) {
                self.honour(
                    key,
                    "answers when the Service has no ready endpoint, and the intercepted statuses",
                );
                self.out.default_backend = Some(v.trim().to_owned());
            } else {
                self.ignore(key, "expected a Service name in the Ingress's namespace");
            }
        }
        if !errors.intercept.is_empty() {
            self.out.policy.errors = Some(errors);
        }
    }

    /// Annotations whose honoured value is simply what Gatehouse does.
    fn behaviour_flags(&mut self) {
        for (name, good, what) in [
            (
                "proxy-request-buffering",
                "off",
                "request bodies are streamed",
            ),
            ("proxy-buffering", "off", "responses are streamed"),
            ("proxy-http-version", "1.1", "HTTP/1.1 to backends"),
        ] {
            if let Some((key, v)) = self.take(name) {
                if v.trim() == good {
                    self.honour(key, what);
                } else {
                    self.ignore(key, format!("not supported: {what}"));
                }
            }
        }
        if let Some((key, v)) = self.take("converted-from") {
            self.honour(key, "read from an old API version");
            self.out.warnings.push(format!(
                "uses the removed API version {}: it was read as networking.k8s.io/v1 (serviceName/servicePort as service.name/port); convert the manifest, the Kubernetes API no longer accepts it",
                v.trim()
            ));
        }
    }

    /// Reports what no rule took, by the table's status, and builds the result.
    fn finish(mut self) -> Parsed {
        let left: Vec<(&'a str, &'a str)> = self
            .found
            .iter()
            .filter(|(_, f)| !f.taken)
            .map(|(name, f)| (*name, f.key))
            .collect();
        for (name, key) in left {
            let prefix_ok = |s: &AnnotationSpec| match s.prefixes {
                Prefixes::Both => true,
                Prefixes::Nginx => key.starts_with(NGINX_PREFIX),
                Prefixes::Gatehouse => key.starts_with(GATEHOUSE_PREFIX),
            };
            match spec(name).filter(|s| prefix_ok(s)) {
                Some(s) if s.status == Status::Refused => self.refuse(key, table_reason(s)),
                Some(s) => self.ignore(key, table_reason(s)),
                None if access_like(name) => self.refuse(
                    key,
                    "unknown annotation that looks like an access rule; not served open",
                ),
                None => self.ignore(key, "unknown annotation"),
            }
        }
        // The table has the last word: an annotation parsed into the policy but not applied by
        // the request path yet is refused (access) or ignored, never reported honoured.
        for i in 0..self.out.reports.len() {
            let r = &self.out.reports[i];
            if r.outcome != Status::Honoured {
                continue;
            }
            let name = r
                .annotation
                .strip_prefix(GATEHOUSE_PREFIX)
                .or_else(|| r.annotation.strip_prefix(NGINX_PREFIX))
                .unwrap_or(&r.annotation);
            match spec(name) {
                Some(s) if s.status == Status::Refused => {
                    let why = table_reason(s);
                    self.refusals.push(format!("{}: {why}", r.annotation));
                    self.out.reports[i].outcome = Status::Refused;
                    self.out.reports[i].reason = why.to_owned();
                }
                Some(s) if s.status == Status::Ignored => {
                    self.out.reports[i].outcome = Status::Ignored;
                    self.out.reports[i].reason = table_reason(s).to_owned();
                }
                _ => {}
            }
        }
        // Refusals reported before the rules ran (misplaced annotations).
        for r in &self.out.reports {
            let line = format!("{}: {}", r.annotation, r.reason);
            if r.outcome == Status::Refused && !self.refusals.contains(&line) {
                self.refusals.push(line);
            }
        }
        let mut out = self.out;
        if out.ssl_redirect.is_none() && self.cx.defaults.ssl_redirect {
            out.ssl_redirect = Some(true);
        }
        out.policy.access = if !self.refusals.is_empty() {
            Access::Refused(
                format!(
                    "Ingress {} is not served: {}",
                    self.cx.key,
                    self.refusals.join("; ")
                )
                .into(),
            )
        } else if self.access.has_source_rules() || self.access.has_auth() {
            Access::Restricted(Box::new(self.access))
        } else {
            Access::Open
        };
        out.reports.sort();
        let values: BTreeMap<&str, &str> = self.found.values().map(|f| (f.key, f.value)).collect();
        let mut warnings: Vec<String> = out
            .reports
            .iter()
            .filter_map(|r| r.warning(values.get(r.annotation.as_str()).copied()))
            .collect();
        warnings.append(&mut out.warnings);
        out.warnings = warnings;
        out
    }
}

/// Whether an unknown annotation name looks like one that restricts access (a misspelt
/// `auth-url` must not leave the routes open).
fn access_like(name: &str) -> bool {
    name.starts_with("auth")
        || [
            "source-range",
            "allowlist",
            "whitelist",
            "denylist",
            "blacklist",
            "satisfy",
        ]
        .iter()
        .any(|w| name.contains(w))
}

/// A Secret's data as text (`data` base64-decoded by the API types, and `stringData`).
fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
    }
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The Secret an `auth-secret` value names: `NAME` (in the Ingress's `namespace`) or
/// `NAMESPACE/NAME`.
fn secret_ref(namespace: &str, value: &str) -> Option<ObjectKey> {
    match value.trim().split_once('/') {
        None if valid_name(value.trim()) => Some(ObjectKey::new(namespace, value.trim())),
        Some((ns, n)) if valid_name(ns) && valid_name(n) => Some(ObjectKey::new(ns, n)),
        _ => None,
    }
}

/// The Secret an Ingress's `auth-secret` annotation names, read as [`parse`] reads it (the
/// `gatehouse.dev/` one wins): what a source must supply for basic authentication to work.
pub fn auth_secret_of(ingress: &Ingress) -> Option<ObjectKey> {
    let annotations = ingress.metadata.annotations.as_ref()?;
    let value = annotations
        .get(&format!("{GATEHOUSE_PREFIX}auth-secret"))
        .or_else(|| annotations.get(&format!("{NGINX_PREFIX}auth-secret")))?;
    let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
    secret_ref(namespace, value)
}

/// A DNS-1123 name (Kubernetes object names).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// An HTTP token (header and cookie names, query parameters).
fn valid_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An http(s) URL that may hold nginx variables.
fn http_template(text: &str) -> Result<Template, String> {
    let lower = text.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| format!("{:?} is not an http:// or https:// URL", shorten(text)))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{:?} has no host", shorten(text)));
    }
    if text.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("a URL cannot contain spaces".into());
    }
    Template::parse(text, false)
}

/// Whether the host part of a URL text has a `$variable`.
fn authority_has_variable(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#'])
        .next()
        .is_some_and(|a| a.contains('$'))
}

/// Whether a URL's query has `param` with a non-empty value.
fn has_query_param(url: &str, param: &str) -> bool {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(k, v)| k == param && !v.is_empty())
}

/// An nginx size: bytes, or with `k`, `m` or `g` (either case; binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_lowercase()),
        _ => (t, ' '),
    };
    let multiplier: u64 = match unit {
        ' ' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return Err(format!("{t:?} is not an nginx size (e.g. 8m, 512k, 1g)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{t:?} is not an nginx size (e.g. 8m, 512k, 1g)"))
}

/// An ingress-nginx timeout: whole seconds, or nginx time units (`500ms`, `5s`, `1m`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{t:?} is not seconds (e.g. 60) or an nginx time (e.g. 5s, 1m)");
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: u64 = t[..split].parse().map_err(|_| bad())?;
    let d = match &t[split..] {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
        "d" => Duration::from_secs(n.checked_mul(86400).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    Ok(d)
}

/// `cors-allow-origin`: `*`, or origins `scheme://host[:port]` (a `*.` host covers one label).
fn parse_origins(text: &str) -> Result<CorsOrigins, String> {
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() || items.contains(&"*") {
        return Ok(CorsOrigins::Any);
    }
    let mut list = Vec::new();
    for item in items {
        let bad = || format!("{item:?} is not an origin (http(s)://host[:port])");
        let (scheme, rest) = item.split_once("://").ok_or_else(bad)?;
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
            return Err(bad());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
            None => (rest, None),
        };
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(h) => (true, h),
            None => (false, host),
        };
        let label_ok =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if host.is_empty() || !host.split('.').all(label_ok) {
            return Err(bad());
        }
        list.push(OriginPattern {
            scheme: scheme.to_ascii_lowercase().into(),
            host: host.to_ascii_lowercase().into(),
            wildcard,
            port,
        });
    }
    Ok(CorsOrigins::List(list))
}

#[cfg(test)]
mod tests;
