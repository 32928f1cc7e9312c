//! The client side of TLS: how Gatehouse verifies HTTPS upstreams
//! (`gatehouse.dev/backend-protocol: HTTPS`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Reads a PEM bundle of extra CA certificates (`--upstream-ca-bundle`), checking that each one
/// can serve as a trust anchor.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    load_ca_bundle_of("--upstream-ca-bundle", path)
}

/// [`load_ca_bundle`] for the setting `flag` (named in errors).
pub fn load_ca_bundle_of(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let what = || format!("{flag} {}", path.display());
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", what()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", what()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", what()));
    }
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", what()))?;
    }
    Ok(certs)
}

/// The rustls client configuration of HTTPS upstreams: TLS 1.2 and 1.3 with the webpki roots
/// plus `extra_roots`, or, with `verify` false, accepting any certificate (the connection is
/// still encrypted, but not authenticated).
pub fn client_config(verify: bool, extra_roots: &[CertificateDer<'static>]) -> ClientConfig {
    let provider = super::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(super::PROTOCOL_VERSIONS)
        .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3");
    if verify {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots.add_parsable_certificates(extra_roots.iter().cloned());
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    }
}

/// `--upstream-tls-verify=false`: any certificate is accepted, but the handshake signatures
/// are still checked so the session keys belong to whoever holds the certificate's key.
/// Accepts any server certificate (handshake signatures are still checked): what
/// `--upstream-tls-verify=false` means, and what tests use to reach self-signed servers.
#[derive(Debug)]
pub struct NoVerification(pub Arc<rustls::crypto::CryptoProvider>);

// === impl NoVerification ===

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
