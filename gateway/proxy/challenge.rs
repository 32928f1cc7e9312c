//! The ACME answer phase: HTTP-01 challenge responses, on every host, before routing.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::acme::{ChallengeKind, Challenges, HTTP01_PREFIX, valid_token};
use crate::body::{BoxBody, full};
use crate::metrics::Metrics;

/// The answer to an HTTP-01 challenge request, on any host, if `path` asks for a token being
/// validated now. Other paths (and unknown tokens, which an app's own ACME client may serve)
/// go on to routing.
pub fn answer_http01(
    challenges: &Challenges,
    metrics: &Metrics,
    path: &str,
) -> Option<Response<BoxBody>> {
    let token = path.strip_prefix(HTTP01_PREFIX)?;
    if !valid_token(token) {
        return None;
    }
    let key_authorization = challenges.http01(token)?;
    metrics
        .acme_challenges
        .with_label_values(&[ChallengeKind::Http01.label()])
        .inc();
    tracing::debug!(token, "answered an ACME HTTP-01 challenge");
    let mut resp = Response::new(full(key_authorization.as_bytes().to_vec()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http01_answers_only_known_tokens() {
        let (challenges, metrics) = (Challenges::default(), Metrics::new());
        challenges.add_http01("tok-1", "tok-1.thumb");
        let answer = |path| answer_http01(&challenges, &metrics, path);
        let resp = answer("/.well-known/acme-challenge/tok-1").expect("answered");
        assert_eq!(resp.status(), 200);
        // Unknown and malformed tokens, and other paths, go on to routing.
        assert!(answer("/.well-known/acme-challenge/tok-2").is_none());
        assert!(answer("/.well-known/acme-challenge/../tok-1").is_none());
        assert!(answer("/.well-known/acme-challenge/").is_none());
        assert!(answer("/tok-1").is_none());
        challenges.remove_http01("tok-1");
        assert!(answer("/.well-known/acme-challenge/tok-1").is_none());
    }
}
