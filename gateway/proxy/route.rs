//! The route phase: which host the request is for, and which route serves it.

use std::sync::Arc;

use http::Request;
use http::header;

use super::error::ErrorKind;
use crate::snapshot::{Route, Snapshot};

/// The host a request is for: the URI authority (HTTP/2, absolute-form) or the Host header.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// The route for a request. An HTTP/1.1 request must carry exactly one Host header (RFC 9112
/// §3.2: 400 otherwise); HTTP/2 carries the host in `:authority`.
pub fn route<B>(snapshot: &Snapshot, req: &Request<B>) -> Result<Arc<Route>, ErrorKind> {
    let host = match req.uri().authority() {
        Some(authority) => authority.as_str(),
        None => {
            let mut hosts = req.headers().get_all(header::HOST).iter();
            match (hosts.next(), hosts.next()) {
                (Some(host), None) => host.to_str().map_err(|_| ErrorKind::BadRequest)?,
                (None, _) if req.version() < http::Version::HTTP_11 => "",
                _ => return Err(ErrorKind::BadRequest),
            }
        }
    };
    snapshot
        .routes
        .lookup(host, req.uri().path())
        .cloned()
        .ok_or(ErrorKind::NoRoute)
}

#[cfg(test)]
mod tests {
    use http::Version;

    use super::*;

    fn req(version: Version, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get("/").version(version);
        for h in hosts {
            builder = builder.header(header::HOST, *h);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn http11_without_host_is_a_bad_request() {
        let snapshot = Snapshot::default();
        assert_eq!(
            route(&snapshot, &req(Version::HTTP_11, &[])).unwrap_err(),
            ErrorKind::BadRequest
        );
    }

    #[test]
    fn two_host_headers_are_a_bad_request() {
        let snapshot = Snapshot::default();
        let two = req(Version::HTTP_11, &["a.test", "b.test"]);
        assert_eq!(route(&snapshot, &two).unwrap_err(), ErrorKind::BadRequest);
    }

    #[test]
    fn one_host_without_a_route_is_not_found() {
        let snapshot = Snapshot::default();
        let one = req(Version::HTTP_11, &["a.test"]);
        assert_eq!(route(&snapshot, &one).unwrap_err(), ErrorKind::NoRoute);
        // HTTP/1.0 has no Host requirement: routed as the empty host (rules without a host).
        assert_eq!(
            route(&snapshot, &req(Version::HTTP_10, &[])).unwrap_err(),
            ErrorKind::NoRoute
        );
    }
}
