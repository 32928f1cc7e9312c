//! The HTTP client instant-acme speaks to the ACME server with: Mozilla's roots plus the
//! `--acme-ca-bundle`, timeouts, and the `Retry-After` of error answers kept for the backoff
//! (instant-acme reads it only while polling).

use std::cell::Cell;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Time allowed to connect to the ACME server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one request to the ACME server, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

tokio::task_local! {
    /// The last `Retry-After` of an error answer in the current order task.
    static RETRY_AFTER: Cell<Option<SystemTime>>;
}

/// Runs `work` (one order) and returns what it returned, with the `Retry-After` of the last
/// error answer the ACME server gave during it, if any.
pub async fn capture_retry_after<T>(work: impl Future<Output = T>) -> (T, Option<SystemTime>) {
    RETRY_AFTER
        .scope(Cell::new(None), async {
            let out = work.await;
            (out, RETRY_AFTER.with(Cell::get))
        })
        .await
}

/// Problem types of RFC 8555 section 6.7 (and `badRevocationReason`'s kin): the values the
/// problem metric takes; anything else counts as `other`.
const PROBLEM_TYPES: &[&str] = &[
    "accountDoesNotExist",
    "alreadyReplaced",
    "alreadyRevoked",
    "badCSR",
    "badNonce",
    "badPublicKey",
    "badRevocationReason",
    "badSignatureAlgorithm",
    "caa",
    "compound",
    "connection",
    "dns",
    "externalAccountRequired",
    "incorrectResponse",
    "invalidContact",
    "malformed",
    "orderNotReady",
    "rateLimited",
    "rejectedIdentifier",
    "serverInternal",
    "tls",
    "unauthorized",
    "unsupportedContact",
    "unsupportedIdentifier",
    "userActionRequired",
];

/// The metric label of a problem document's `type`.
pub fn problem_label(body: &[u8]) -> &'static str {
    let kind = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    let short = kind
        .strip_prefix("urn:ietf:params:acme:error:")
        .unwrap_or_default();
    PROBLEM_TYPES
        .iter()
        .find(|t| **t == short)
        .copied()
        .unwrap_or("other")
}

/// An HTTPS client for the ACME directory.
#[derive(Clone)]
pub struct AcmeHttp {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    /// Counts the server's problem answers by type.
    problems: prometheus::IntCounterVec,
}

// === impl AcmeHttp ===

impl AcmeHttp {
    /// Trusts the Mozilla roots (webpki-roots) and every certificate in `ca_bundle`; counts
    /// problem answers in `problems` (by `type`).
    pub fn new(
        ca_bundle: Option<&Path>,
        problems: prometheus::IntCounterVec,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_bundle {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("cannot read --acme-ca-bundle {}", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!("--acme-ca-bundle {} holds no certificate", path.display());
            }
            for cert in certs {
                roots.add(cert).with_context(|| {
                    format!("--acme-ca-bundle {}: unusable certificate", path.display())
                })?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .context("TLS client settings")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            problems,
        })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        let problems = self.problems.clone();
        Box::pin(async move {
            let other = |e: Box<dyn std::error::Error + Send + Sync>| instant_acme::Error::Other(e);
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let resp = client.request(req).await.map_err(|e| other(Box::new(e)))?;
                let status = resp.status();
                if !(status.is_client_error() || status.is_server_error()) {
                    return Ok(BytesResponse::from(resp));
                }
                if let Some(at) = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()))
                {
                    let _ = RETRY_AFTER.try_with(|cell| cell.set(Some(at)));
                }
                // Problem documents are small: read them here to count them by type.
                let (parts, body) = resp.into_parts();
                let body = body.collect().await.map_err(|e| other(Box::new(e)))?;
                let body = body.to_bytes();
                problems.with_label_values(&[problem_label(&body)]).inc();
                Ok(BytesResponse {
                    parts,
                    body: Box::new(body),
                })
            });
            match answer.await {
                Ok(result) => result,
                Err(_) => Err(other("ACME server did not answer in time".into())),
            }
        })
    }
}

/// A `Retry-After` value (delay in seconds or an HTTP date) as a point in time.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<SystemTime> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(secs) => now.checked_add(Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}
