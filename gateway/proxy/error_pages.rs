//! `custom-http-errors` and `default-backend`, as ingress-nginx applies them.
//!
//! - A route whose Service has no ready endpoint (or cannot be used) is proxied to the
//!   `default-backend` Service instead, request as it is.
//! - An upstream answer (or an upstream failure: 502, 504) with one of the intercepted statuses
//!   is replaced: the default backend gets a bodiless request for `/` (the client's method and
//!   host) with the headers
//!   ingress-nginx sends (`X-Code`, `X-Format` (the client's `Accept`), `X-Original-URI`,
//!   `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`, `X-Request-ID`), and
//!   the client gets the default backend's answer unchanged, status included (ingress-nginx:
//!   "NGINX does not change the response from the custom default backend"; such backends
//!   answer with the `X-Code` status). Without a default backend (or when it fails), Gatehouse
//!   answers the intercepted status itself.
//!
//! Routes without an error policy never come here.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::error::{ProxyError, Side};
use super::record::Record;
use super::request_body::ClientBody;
use super::{Answer, headers, upstream};
use crate::body::{BoxBody, full};
use crate::snapshot::policy::ErrorPolicy;
use crate::snapshot::{Backend, Route, ServiceBackend, UpstreamProtocol};

static X_CODE: HeaderName = HeaderName::from_static("x-code");
static X_FORMAT: HeaderName = HeaderName::from_static("x-format");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_NAMESPACE: HeaderName = HeaderName::from_static("x-namespace");
static X_INGRESS_NAME: HeaderName = HeaderName::from_static("x-ingress-name");
static X_SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
static X_SERVICE_PORT: HeaderName = HeaderName::from_static("x-service-port");

/// The default backend, when it answers in place of `backend`: the route's Service has no
/// ready endpoint, or the route points at something unusable.
pub fn fallback<'a>(
    errors: Option<&'a ErrorPolicy>,
    backend: &Backend,
) -> Option<&'a ServiceBackend> {
    let default = errors?.backend.as_deref()?;
    match backend {
        Backend::Service(service) if service.endpoints.is_empty() => Some(default),
        Backend::Unavailable { .. } => Some(default),
        _ => None,
    }
}

/// What an error page request needs of the client's request, taken before it goes upstream.
pub struct Capture<'r> {
    errors: &'r ErrorPolicy,
    service: &'r ServiceBackend,
    method: Method,
    host: Option<HeaderValue>,
    original_uri: Option<HeaderValue>,
    accept: Option<HeaderValue>,
    request_id: HeaderValue,
}

// === impl Capture ===

impl<'r> Capture<'r> {
    /// For a request to a Service on a route that intercepts statuses; gives the request its
    /// id now, so the upstream and the default backend see the same one.
    pub fn new(
        errors: Option<&'r ErrorPolicy>,
        backend: &'r Backend,
        req: &mut Request<ClientBody>,
    ) -> Option<Self> {
        let errors = errors.filter(|e| !e.intercept.is_empty())?;
        let Backend::Service(service) = backend else {
            return None;
        };
        let host = match req.uri().authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => req.headers().get(header::HOST).cloned(),
        };
        let original_uri = req
            .uri()
            .path_and_query()
            .and_then(|p| HeaderValue::from_str(p.as_str()).ok());
        Some(Self {
            errors,
            service,
            method: req.method().clone(),
            host,
            original_uri,
            accept: req.headers().get(header::ACCEPT).cloned(),
            request_id: headers::ensure_request_id(req.headers_mut()),
        })
    }

    /// The request the default backend gets for an intercepted `code`.
    fn page_request(
        &self,
        route: &Route,
        code: StatusCode,
        to: &ServiceBackend,
    ) -> Request<BoxBody> {
        let mut req = Request::new(crate::body::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = http::Uri::from_static("/");
        *req.version_mut() = match to.protocol {
            UpstreamProtocol::H2c | UpstreamProtocol::H2Tls => Version::HTTP_2,
            UpstreamProtocol::Http | UpstreamProtocol::Https => Version::HTTP_11,
        };
        let h = req.headers_mut();
        if let Some(host) = &self.host {
            h.insert(header::HOST, host.clone());
        }
        h.insert(X_CODE.clone(), HeaderValue::from(code.as_u16()));
        if let Some(accept) = &self.accept {
            h.insert(X_FORMAT.clone(), accept.clone());
        }
        if let Some(uri) = &self.original_uri {
            h.insert(X_ORIGINAL_URI.clone(), uri.clone());
        }
        let text = |s: &str| HeaderValue::from_str(s).ok();
        for (name, value) in [
            (&X_NAMESPACE, text(&route.ingress.namespace)),
            (&X_INGRESS_NAME, text(&route.ingress.name)),
            (&X_SERVICE_NAME, text(&self.service.service.name)),
            (&X_SERVICE_PORT, text(&self.service.port)),
        ] {
            if let Some(value) = value {
                h.insert(name.clone(), value);
            }
        }
        h.insert(headers::X_REQUEST_ID.clone(), self.request_id.clone());
        req
    }
}

/// The status of an answer, or of a failure on the upstream side (as Gatehouse would answer
/// it); `None` for other failures, which are never intercepted.
fn status_of(answer: &Result<Answer, ProxyError>) -> Option<StatusCode> {
    match answer {
        Ok(Answer::Done(resp)) => Some(resp.status()),
        Ok(Answer::Upstream(resp)) => Some(resp.status()),
        Err(err) if err.side() == Side::Upstream => Some(err.kind.status()),
        Err(_) => None,
    }
}

/// Replaces an answer with an intercepted status by the default backend's page (or
/// Gatehouse's own short answer of that status); other answers pass untouched.
pub async fn intercept(
    upstreams: &upstream::Upstreams,
    capture: Capture<'_>,
    route: &Route,
    answer: Result<Answer, ProxyError>,
    record: &mut Record,
) -> Result<Answer, ProxyError> {
    let Some(code) = status_of(&answer) else {
        return answer;
    };
    if capture
        .errors
        .intercept
        .binary_search(&code.as_u16())
        .is_err()
    {
        return answer;
    }
    if let Err(err) = &answer {
        // Still counted as the upstream failure it was.
        record.error = Some(err.kind);
    }
    // The upstream's own body goes (a short one is read to its end to keep the connection).
    drop(answer);
    let Some(default) = capture.errors.backend.as_deref() else {
        return Ok(Answer::Done(own_answer(code)));
    };
    let req = capture.page_request(route, code, default);
    // The record keeps the upstream that answered first; connects to the default backend
    // that failed are counted too.
    let (upstream, upstream_time) = (record.upstream, record.upstream_time);
    let (failures, retries) = (record.connect_failures, record.retries);
    let page = upstream::send_own(upstreams, default, req, record).await;
    record.upstream = upstream;
    record.upstream_time = upstream_time;
    record.connect_failures += failures;
    record.retries += retries;
    match page {
        Ok(page) => Ok(page),
        Err(err) => {
            tracing::warn!(
                service = %default.service, status = code.as_u16(), error = %err,
                "default backend failed to answer an intercepted status; answering it without"
            );
            Ok(Answer::Done(own_answer(code)))
        }
    }
}

/// Gatehouse's own short answer of an intercepted status.
fn own_answer(code: StatusCode) -> Response<BoxBody> {
    let text = match code.canonical_reason() {
        Some(reason) => format!("{} {reason}\n", code.as_u16()),
        None => format!("{}\n", code.as_u16()),
    };
    let mut resp = Response::new(full(text));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
