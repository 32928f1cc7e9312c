//! The one error type of the data plane. Its kind decides the status code, the body, the metric
//! label and the log level, here and nowhere else.

use std::fmt;

use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::body::{BoxBody, BoxError, short_response};

/// Which side of the proxy a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client: a bad request, a body that never came, a connection it closed.
    Downstream,
    /// The backend: refused, too slow, broke off.
    Upstream,
    /// Gatehouse's own configuration or limits.
    Internal,
}

/// What went wrong, as a client and an operator need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route for the host and path (404).
    NoRoute,
    /// The request is malformed in a way HTTP forbids (no or several Host headers…) (400).
    BadRequest,
    /// The route has no ready endpoint, or points at something missing (503).
    NoEndpoint,
    /// The route's policy cannot be applied safely, so it is refused rather than served open
    /// (503).
    PolicyRefused,
    /// The route's source rules refuse the client's address (403).
    Forbidden,
    /// The route asks for authentication the request does not carry (401, with the challenge).
    Unauthorized,
    /// The client is over the route's request rate (503, ingress-nginx's default
    /// `limit-req-status-code`).
    TooManyRequests,
    /// The external authentication service (`auth-url`) could not be asked, or answered
    /// something other than 2xx, 401 or 403 (500, as ingress-nginx answers it).
    AuthFailed,
    /// The request body is larger than the route allows (413).
    BodyTooLarge,
    /// The client stopped sending its request body before it was complete (408).
    ClientBodyTimeout,
    /// No connection to any endpoint could be made (502).
    ConnectFailed,
    /// The endpoint's connects in flight stayed at Gatehouse's bound
    /// (`--upstream-max-connecting`) for the whole connect timeout, and no pooled connection
    /// came free (503). The endpoint itself has not failed: it is not marked down.
    ConnectBusy,
    /// The upstream failed before its response headers were complete (502).
    UpstreamFailed,
    /// The upstream took longer than the response timeout (504).
    UpstreamTimeout,
    /// The upstream broke off in the middle of its response body (the status was already sent).
    UpstreamBodyCut,
    /// The client went away before the response was complete (nothing more is sent).
    ClientGone,
}

// === impl ErrorKind ===

impl ErrorKind {
    /// Every kind, for metrics that show all of them from the start.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::NoRoute,
        ErrorKind::BadRequest,
        ErrorKind::NoEndpoint,
        ErrorKind::PolicyRefused,
        ErrorKind::Forbidden,
        ErrorKind::Unauthorized,
        ErrorKind::TooManyRequests,
        ErrorKind::AuthFailed,
        ErrorKind::BodyTooLarge,
        ErrorKind::ClientBodyTimeout,
        ErrorKind::ConnectFailed,
        ErrorKind::ConnectBusy,
        ErrorKind::UpstreamFailed,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamBodyCut,
        ErrorKind::ClientGone,
    ];

    /// The `reason` label of `gatehouse_proxy_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NoEndpoint => "no_endpoint",
            ErrorKind::PolicyRefused => "policy_refused",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::TooManyRequests => "rate_limited",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::ClientBodyTimeout => "client_body_timeout",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::ConnectBusy => "connect_busy",
            ErrorKind::UpstreamFailed => "upstream_failed",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamBodyCut => "upstream_body_cut",
            ErrorKind::ClientGone => "client_gone",
        }
    }

    pub fn side(self) -> Side {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::Forbidden
            | ErrorKind::Unauthorized
            | ErrorKind::TooManyRequests
            | ErrorKind::BodyTooLarge
            | ErrorKind::ClientBodyTimeout
            | ErrorKind::ClientGone => Side::Downstream,
            ErrorKind::ConnectFailed
            | ErrorKind::ConnectBusy
            | ErrorKind::UpstreamFailed
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamBodyCut => Side::Upstream,
            // The auth service is neither the client nor the backend; its failures are logged
            // where they happen, with the auth URL.
            ErrorKind::NoRoute
            | ErrorKind::NoEndpoint
            | ErrorKind::PolicyRefused
            | ErrorKind::AuthFailed => Side::Internal,
        }
    }

    /// The status code of Gatehouse's own answer.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NoEndpoint
            | ErrorKind::PolicyRefused
            | ErrorKind::TooManyRequests
            | ErrorKind::ConnectBusy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::AuthFailed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::ConnectFailed | ErrorKind::UpstreamFailed | ErrorKind::UpstreamBodyCut => {
                StatusCode::BAD_GATEWAY
            }
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            // Never sent (the client is gone); 499 is what nginx logs for it.
            ErrorKind::ClientGone => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    fn text(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no route for this host and path\n",
            ErrorKind::BadRequest => "bad request\n",
            ErrorKind::NoEndpoint => "no ready endpoint for this route\n",
            ErrorKind::PolicyRefused => {
                "this route is refused until its configuration is fixed (see the controller's warnings)\n"
            }
            ErrorKind::Forbidden => "forbidden\n",
            ErrorKind::Unauthorized => "authentication required\n",
            ErrorKind::TooManyRequests => "too many requests from this address\n",
            ErrorKind::AuthFailed => "authentication service failed\n",
            ErrorKind::BodyTooLarge => "request body too large\n",
            ErrorKind::ClientBodyTimeout => "request body not received in time\n",
            ErrorKind::ConnectFailed | ErrorKind::UpstreamFailed | ErrorKind::UpstreamBodyCut => {
                "upstream failed\n"
            }
            ErrorKind::UpstreamTimeout => "upstream did not answer in time\n",
            ErrorKind::ConnectBusy => "upstream busy: no connection could be made in time\n",
            ErrorKind::ClientGone => "",
        }
    }

    /// Gatehouse's own answer for this kind of failure.
    pub fn response(self) -> Response<BoxBody> {
        short_response(self.status(), self.text())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A failure of one request: its kind, whether trying another endpoint is safe, and the cause.
#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
    /// Nothing of the request reached an upstream (or what did may be sent again): another
    /// endpoint may be tried.
    pub retry_safe: bool,
    pub cause: Option<BoxError>,
    /// What the answer says beyond the kind's own text (boxed: only failures pay for it).
    pub answer: Option<Box<AnswerDetail>>,
}

/// A failure's answer beyond its kind: a body naming the reason (a refused route's), a
/// header (a 401's `WWW-Authenticate`).
#[derive(Debug, Default)]
pub struct AnswerDetail {
    pub body: Option<std::sync::Arc<str>>,
    pub header: Option<(HeaderName, HeaderValue)>,
}

// === impl ProxyError ===

impl ProxyError {
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            retry_safe: false,
            cause: None,
            answer: None,
        }
    }

    pub fn with_cause(kind: ErrorKind, cause: impl Into<BoxError>) -> Self {
        Self {
            kind,
            retry_safe: false,
            cause: Some(cause.into()),
            answer: None,
        }
    }

    /// A failure answered with `reason` as its body (a refused route names why).
    pub fn with_body(kind: ErrorKind, reason: std::sync::Arc<str>) -> Self {
        let mut err = Self::new(kind);
        err.answer = Some(Box::new(AnswerDetail {
            body: Some(reason),
            header: None,
        }));
        err
    }

    /// A failure answered with one more header (a 401's challenge).
    pub fn with_header(kind: ErrorKind, name: HeaderName, value: HeaderValue) -> Self {
        let mut err = Self::new(kind);
        err.answer = Some(Box::new(AnswerDetail {
            body: None,
            header: Some((name, value)),
        }));
        err
    }

    /// Gatehouse's answer to the client for this failure.
    pub fn response(&self) -> Response<BoxBody> {
        let Some(detail) = &self.answer else {
            return self.kind.response();
        };
        let mut resp = self.kind.response();
        if let Some(body) = &detail.body {
            *resp.body_mut() = crate::body::full(format!("{body}\n"));
        }
        if let Some((name, value)) = &detail.header {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        resp
    }

    pub fn retry_safe(mut self, safe: bool) -> Self {
        self.retry_safe = safe;
        self
    }

    pub fn side(&self) -> Side {
        self.kind.side()
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{}: {cause}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl From<ErrorKind> for ProxyError {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}
