//! TLS termination: the certificate for each handshake chosen by SNI from the snapshot in
//! service, the fallback certificate, the TLS-ALPN-01 challenge hook, and the rustls
//! configuration of the HTTPS listener.
//!
//! Certificates are parsed and checked by translate() ([`table::TlsBuilder`]) when the
//! configuration changes; a handshake only does a hash lookup in [`TlsTable`], without locks.

pub mod certs;
pub mod table;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::body::BoxBody;

pub use certs::{CertError, TlsCert, name_matches, normalize_name};
pub use table::TlsTable;

/// ALPN protocol of ACME TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Requests under this path are never redirected to HTTPS (ACME HTTP-01 is validated over
/// plain HTTP).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// `gatehouse.dev/ssl-redirect: "true"|"false"`: redirect plain-HTTP requests of an Ingress's
/// TLS hosts to HTTPS (default: `--ssl-redirect`).
pub const SSL_REDIRECT_ANNOTATION: &str = "gatehouse.dev/ssl-redirect";
/// `gatehouse.dev/backend-tls-server-name`: the name an HTTPS upstream's certificate is
/// verified against (and sent as SNI); default: the endpoint's IP address.
pub const BACKEND_TLS_SERVER_NAME_ANNOTATION: &str = "gatehouse.dev/backend-tls-server-name";

/// TLS versions Gatehouse speaks, on both sides.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider of every TLS configuration: aws-lc-rs with its default (safe) suites.
/// Named explicitly because several providers are compiled in, so there is no process default.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    PROVIDER.clone()
}

/// Challenge certificates of TLS-ALPN-01 validations in progress, by host. Written by the ACME
/// manager (through `Shared::set_alpn_challenge`), read by handshakes without locks.
#[derive(Debug, Default)]
pub struct AlpnChallenges {
    certs: ArcSwap<HashMap<Box<str>, Arc<CertifiedKey>>>,
}

// === impl AlpnChallenges ===

impl AlpnChallenges {
    /// Sets (or with `None` removes) the challenge certificate answered for `host`.
    pub fn set(&self, host: &str, cert: Option<Arc<CertifiedKey>>) {
        let host: Box<str> = normalize_name(host).into();
        self.certs.rcu(|current| {
            let mut next = HashMap::clone(current);
            match &cert {
                Some(cert) => next.insert(host.clone(), cert.clone()),
                None => next.remove(&host),
            };
            next
        });
    }

    /// The challenge certificate for a (normalised) host.
    pub fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        if certs.is_empty() {
            return None;
        }
        certs.get(host).cloned()
    }
}

/// A self-signed certificate for `gatehouse.invalid`, made at start for handshakes no
/// configured certificate matches (a client that checks names refuses it, as it should).
pub fn self_signed() -> Result<Arc<CertifiedKey>, String> {
    let made = rcgen::generate_simple_self_signed(vec!["gatehouse.invalid".to_owned()])
        .map_err(|e| format!("cannot generate the fallback certificate: {e}"))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    CertifiedKey::from_der(vec![made.cert.der().clone()], key, &provider())
        .map(Arc::new)
        .map_err(|e| format!("cannot load the fallback certificate: {e}"))
}

/// The HTTPS listener's rustls configuration: TLS 1.2 and 1.3, ALPN `h2`, `http/1.1` and
/// (for ACME validation only) `acme-tls/1`.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // Server preference: acme-tls/1 last, so a client offering HTTP gets HTTP.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    // TLS 1.3 resumption by ticket keeps no per-client state in the server; a ticketer that
    // cannot be made only costs resumption.
    if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Ok(Arc::new(config))
}

/// `308 Permanent Redirect` to the same host, path and query over HTTPS. The port is left out
/// when it is 443.
pub fn redirect_to_https(host: &str, uri: &Uri, https_port: u16) -> Response<BoxBody> {
    let host = crate::routing::normalize_host(host);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    let Ok(location) = HeaderValue::try_from(location) else {
        return crate::body::short_response(StatusCode::BAD_REQUEST, "bad host\n");
    };
    let mut resp = Response::new(
        Full::new(Bytes::from_static(b"redirecting to https\n"))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests;
