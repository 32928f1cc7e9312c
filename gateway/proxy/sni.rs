//! SNI: the certificate of every handshake of the HTTPS listener, from the snapshot in service
//! (or an ACME TLS-ALPN-01 challenge certificate).

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::shared::DataPlane;
use crate::tls::{ACME_TLS_ALPN, normalize_name};

/// Picks the certificate of every handshake of the HTTPS listener.
pub struct CertResolver {
    plane: Arc<DataPlane>,
    /// Served when neither a host entry nor `--default-certificate` applies.
    fallback: Arc<CertifiedKey>,
}

// === impl CertResolver ===

impl CertResolver {
    /// A resolver reading the snapshot in service of the data plane; `fallback` is the certificate
    /// of last resort (see [`crate::tls::self_signed`]).
    pub fn new(plane: Arc<DataPlane>, fallback: Arc<CertifiedKey>) -> Self {
        Self { plane, fallback }
    }

    /// The certificate for a server name (SNI), or for no name. `acme` says the client asked
    /// for TLS-ALPN-01 validation only: then the ACME challenge certificate of the name wins.
    pub fn choose(&self, server_name: Option<&str>, acme: bool) -> Arc<CertifiedKey> {
        let name = server_name.map(normalize_name);
        if acme
            && let Some(cert) = name
                .as_deref()
                .and_then(|n| self.plane.challenges.alpn.get(n))
        {
            return cert;
        }
        let snapshot = self.plane.snapshot.load();
        let entry = name.as_deref().and_then(|n| snapshot.tls.lookup(n));
        match entry.or(snapshot.tls.default_cert()) {
            Some(cert) => cert.key.clone(),
            None => self.fallback.clone(),
        }
    }
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name(), offers_only_acme(&hello)))
    }
}

/// True when the client offers `acme-tls/1` and none of the HTTP protocols, so `acme-tls/1` is
/// what will be negotiated.
fn offers_only_acme(hello: &ClientHello<'_>) -> bool {
    let Some(protocols) = hello.alpn() else {
        return false;
    };
    let mut acme = false;
    for protocol in protocols {
        match protocol {
            ACME_TLS_ALPN => acme = true,
            b"h2" | b"http/1.1" => return false,
            _ => {}
        }
    }
    acme
}
