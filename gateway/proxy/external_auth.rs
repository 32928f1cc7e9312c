//! External authentication (`auth-url`), as ingress-nginx's `auth_request` does it: per request
//! a subrequest without body goes to the auth service with the client's headers and where the
//! request was going (`X-Original-URL`, `X-Original-Method`, `X-Auth-Request-Redirect`, the
//! forwarding headers). Its status decides:
//!
//! - 2xx: the request goes on; the `auth-response-headers` of the answer replace the client's
//!   copies in the request to the backend (a client never sets them itself), and the answer's
//!   `Set-Cookie`s reach the client with the backend's answer.
//! - 401: a 302 to `auth-signin` with `rd=` the original URL, or a 401 with the service's
//!   `WWW-Authenticate`.
//! - 403: 403.
//! - anything else, or no answer in time: 500 ([`ErrorKind::AuthFailed`], logged with the cause).
//!
//! The subrequest goes through the data plane's pooled clients ([`Upstreams::client_for_url`]),
//! so connections to the auth service are reused across requests.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;

use super::ConnInfo;
use super::error::{ErrorKind, ProxyError};
use super::headers::{self, Forwarded};
use super::upstream::Upstreams;
use super::vars;
use crate::body::{BoxBody, short_response};
use crate::snapshot::policy::{ExternalAuth, SignIn, Template};

static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");
static X_SENT_FROM: HeaderName = HeaderName::from_static("x-sent-from");
static X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");

/// What auth services see in `X-Sent-From`: ingress-nginx's value, so services that look for it
/// keep working after the move.
const SENT_FROM: &str = "nginx-ingress-controller";

/// Most of an auth answer's body that is read (so its connection can be reused); a longer body
/// is dropped with its connection.
const MAX_DRAINED: usize = 64 * 1024;

/// The `Set-Cookie`s of a successful auth answer, carried in the request's extensions to the
/// end of the request: they are added to the client's answer as nginx's `add_header` adds them
/// (2xx and 3xx answers only).
#[derive(Clone, Debug)]
pub struct AuthCookies(Vec<HeaderValue>);

// === impl AuthCookies ===

impl AuthCookies {
    /// Adds the cookies to an answer with `status`, when nginx's `add_header` would.
    pub fn add_to(self, status: StatusCode, headers: &mut HeaderMap) {
        if matches!(
            status.as_u16(),
            200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
        ) {
            for cookie in self.0 {
                headers.append(header::SET_COOKIE, cookie);
            }
        }
    }
}

/// Asks the auth service about a request. `Ok(None)`: let it through (the auth answer's
/// headers are in it now); `Ok(Some)`: answer with this (a redirect to sign in); `Err`: 401,
/// 403 or 500.
pub async fn check<B>(
    upstreams: &Upstreams,
    auth: &ExternalAuth,
    conn: &ConnInfo,
    req: &mut Request<B>,
) -> Result<Option<Response<BoxBody>>, ProxyError> {
    let url = render(&auth.url, conn, req);
    let sub = subrequest(auth, conn, &url, req)?;
    let https = sub.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
    let limit = upstreams.settings.response_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let answer =
        match tokio::time::timeout_at(deadline, upstreams.client_for_url(https).request(sub)).await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => return Err(failed(&url, format!("not reachable: {}", chain(&err)))),
            Err(_) => {
                return Err(failed(
                    &url,
                    format!("no answer within {}", humantime::format_duration(limit)),
                ));
            }
        };
    let (parts, body) = answer.into_parts();
    drain(body, deadline).await;
    match parts.status {
        status if status.is_success() => {
            pass_response_headers(auth, &parts.headers, req.headers_mut());
            let cookies = set_cookies(&parts.headers);
            if !cookies.is_empty() {
                req.extensions_mut().insert(AuthCookies(cookies));
            }
            Ok(None)
        }
        StatusCode::UNAUTHORIZED => match &auth.signin {
            Some(signin) => sign_in(signin, conn, req, &parts.headers).map(Some),
            None => Err(match parts.headers.get(header::WWW_AUTHENTICATE) {
                Some(challenge) => ProxyError::with_header(
                    ErrorKind::Unauthorized,
                    header::WWW_AUTHENTICATE,
                    challenge.clone(),
                ),
                None => ErrorKind::Unauthorized.into(),
            }),
        },
        StatusCode::FORBIDDEN => Err(ErrorKind::Forbidden.into()),
        status => Err(failed(&url, format!("answered {status}"))),
    }
}

/// Removes the client's copies of the headers the auth service would set: a route whose
/// authentication was not asked (`satisfy: any` and an allowed address) must not let a client
/// choose them (nginx sends them empty, that is, not at all).
pub fn strip_response_headers<B>(auth: &ExternalAuth, req: &mut Request<B>) {
    for name in &auth.response_headers {
        req.headers_mut().remove(name);
    }
}

/// `auth-response-headers`: the auth answer's values replace whatever the client sent.
fn pass_response_headers(auth: &ExternalAuth, answer: &HeaderMap, request: &mut HeaderMap) {
    for name in &auth.response_headers {
        request.remove(name);
        for value in answer.get_all(name) {
            request.append(name.clone(), value.clone());
        }
    }
}

fn set_cookies(answer: &HeaderMap) -> Vec<HeaderValue> {
    answer.get_all(header::SET_COOKIE).iter().cloned().collect()
}

/// The subrequest: the auth method (GET by default, as nginx's subrequests), no body, the
/// client's headers (cookies, authorization, …) and where the request was going.
fn subrequest<B>(
    auth: &ExternalAuth,
    conn: &ConnInfo,
    url: &str,
    req: &Request<B>,
) -> Result<Request<BoxBody>, ProxyError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| failed(url, format!("auth-url is not a valid URL here: {e}")))?;
    let mut headers = req.headers().clone();
    headers::remove_hop_by_hop(&mut headers, false);
    // The client's Host names the app; the auth request's names the auth service (the client
    // sets it from the URL).
    for name in [header::HOST, header::CONTENT_LENGTH, header::EXPECT] {
        headers.remove(name);
    }
    join_cookies(&mut headers);
    let host = super::route::request_host(req).unwrap_or_default();
    let host_value = HeaderValue::from_str(host).ok();
    headers::set_forwarded(
        &mut headers,
        Forwarded {
            client_ip: &conn.client_ip,
            proto: conn.scheme,
            port: &conn.port,
            host: host_value.as_ref(),
            trusted_peer: conn.trusted_peer,
        },
    );
    let request_uri = vars::request_uri(req);
    let original_url = format!("{}://{host}{request_uri}", conn.scheme);
    if let Ok(v) = HeaderValue::from_str(&original_url) {
        headers.insert(X_ORIGINAL_URL.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(req.method().as_str()) {
        headers.insert(X_ORIGINAL_METHOD.clone(), v);
    }
    headers.insert(X_SENT_FROM.clone(), HeaderValue::from_static(SENT_FROM));
    let redirect = match &auth.request_redirect {
        Some(v) => Some(v.clone()),
        None => HeaderValue::from_str(request_uri).ok(),
    };
    if let Some(v) = redirect {
        headers.insert(X_AUTH_REQUEST_REDIRECT.clone(), v);
    }
    let method = auth.method.clone().unwrap_or(Method::GET);
    if auth.method.is_some() {
        // ingress-nginx adds these two only with an explicit auth-method.
        if let Ok(v) = HeaderValue::from_str(request_uri) {
            headers.insert(X_ORIGINAL_URI.clone(), v);
        }
        headers.insert(X_SCHEME.clone(), HeaderValue::from_static(conn.scheme));
    }
    let mut sub = Request::new(crate::body::empty());
    *sub.method_mut() = method;
    *sub.uri_mut() = uri;
    *sub.version_mut() = Version::HTTP_11;
    *sub.headers_mut() = headers;
    Ok(sub)
}

/// HTTP/2 clients split cookies into several fields; an HTTP/1.1 request carries them in one
/// (RFC 9113 §8.2.3), which is what auth services parse.
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// A 401 with `auth-signin`: 302 to the sign-in URL, with `?rd=` (the redirect parameter) the
/// URL the client asked for, as ingress-nginx builds it
/// (`$scheme://$http_host$escaped_request_uri`). The auth answer's cookies go along.
fn sign_in<B>(
    signin: &SignIn,
    conn: &ConnInfo,
    req: &Request<B>,
    answer: &HeaderMap,
) -> Result<Response<BoxBody>, ProxyError> {
    let mut location = render(&signin.url, conn, req);
    if let Some(param) = &signin.redirect_param {
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(param);
        location.push('=');
        location.push_str(conn.scheme);
        location.push_str("://");
        location.push_str(super::route::request_host(req).unwrap_or_default());
        vars::escape_component(vars::request_uri(req), &mut location);
    }
    let location = HeaderValue::try_from(location)
        .map_err(|e| ProxyError::with_cause(ErrorKind::BadRequest, e))?;
    let mut resp = short_response(StatusCode::FOUND, "redirecting to sign in\n");
    resp.headers_mut().insert(header::LOCATION, location);
    for cookie in set_cookies(answer) {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(resp)
}

/// A template (`auth-url`, `auth-signin`) filled in for this request, as nginx fills in its
/// variables (values unescaped, except `$escaped_request_uri`).
fn render<B>(template: &Template, conn: &ConnInfo, req: &Request<B>) -> String {
    template.render(|var| vars::value(var, conn, req))
}

/// Reads what is left of an auth answer's body (bounded, before the deadline), so its
/// connection goes back to the pool.
async fn drain(mut body: hyper::body::Incoming, deadline: tokio::time::Instant) {
    let read = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > MAX_DRAINED {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, read).await;
}

/// A 500 for a failed auth subrequest, logged with its cause.
fn failed(url: &str, why: String) -> ProxyError {
    tracing::warn!(auth_url = %url, error = %why, "external authentication failed");
    ProxyError::with_cause(ErrorKind::AuthFailed, format!("auth service {url}: {why}"))
}

/// An error with its sources (hyper-util's own text is only "client error (Connect)").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
