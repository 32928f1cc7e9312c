//! Test certificates made with rcgen (an own CA and its leaves), TLS Secrets as manifests, TLS
//! clients that trust the CA or look at whatever certificate is served, and a TLS origin.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// The crypto provider of every test TLS config (several are compiled in, so none is default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate authority of the tests.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM (what clients trust).
    pub pem: String,
    pub der: CertificateDer<'static>,
}

/// A leaf certificate and its key.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
            der: cert.der().clone(),
        }
    }

    /// A leaf for `names` (DNS names, wildcards, IP addresses), valid 2000–2100.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, 2000, 2100)
    }

    /// A leaf valid from January 1st of `from` to January 1st of `until`.
    pub fn leaf_valid(&self, names: &[&str], from: i32, until: i32) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// Writes the CA certificate to `dir/NAME.pem` (for `--upstream-ca-bundle`).
    pub fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }
}

/// A `kubernetes.io/tls` Secret with `stringData`, as written by hand.
pub fn secret_yaml(namespace: &str, name: &str, cert_pem: &str, key_pem: &str) -> String {
    let indent = |text: &str| -> String { text.lines().map(|l| format!("    {l}\n")).collect() };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name:?}, namespace: {namespace:?}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert_pem),
        indent(key_pem)
    )
}

/// The Secret of a leaf (`stringData`).
pub fn leaf_secret(namespace: &str, name: &str, leaf: &Leaf) -> String {
    secret_yaml(namespace, name, &leaf.cert_pem, &leaf.key_pem)
}

/// The Secret of a leaf with base64 `data`, as the API server returns it.
pub fn leaf_secret_data(namespace: &str, name: &str, leaf: &Leaf) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name:?}, namespace: {namespace:?}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        base64(leaf.cert_pem.as_bytes()),
        base64(leaf.key_pem.as_bytes())
    )
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An Ingress (class gatehouse) routing each host's `/` to Service `service` port 80, with one
/// `spec.tls` entry for `tls_hosts` (none when empty) and extra annotations.
pub fn tls_ingress(
    name: &str,
    hosts: &[&str],
    service: &str,
    tls_hosts: &[&str],
    secret: &str,
    annotations: &[(&str, &str)],
) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name:?}\n  namespace: default\n"
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for (k, v) in annotations {
            out.push_str(&format!("    {k:?}: {v:?}\n"));
        }
    }
    out.push_str("spec:\n  ingressClassName: gatehouse\n  rules:\n");
    for host in hosts {
        out.push_str(&format!(
            "  - host: {host:?}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    if !tls_hosts.is_empty() {
        let list: Vec<String> = tls_hosts.iter().map(|h| format!("{h:?}")).collect();
        out.push_str(&format!(
            "  tls:\n  - hosts: [{}]\n    secretName: {secret}\n",
            list.join(", ")
        ));
    }
    out
}

/// A rustls client config trusting `cas` only, offering `alpn`.
pub fn client_config(cas: &[&Ca], alpn: &[&[u8]]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.der.clone()).expect("CA root");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A rustls client config that accepts any certificate: to look at which one is served.
pub fn look_config(alpn: &[&[u8]]) -> ClientConfig {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(gatehouse::tls::upstream::NoVerification(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// What a handshake showed.
pub struct Handshake {
    /// The leaf certificate served.
    pub cert: CertificateDer<'static>,
    pub alpn: Option<Vec<u8>>,
    pub stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

/// Handshakes with `addr`, sending `server_name` as SNI (`None`: no SNI, as a client connecting
/// by IP address), accepting any certificate.
pub async fn handshake(
    addr: SocketAddr,
    server_name: Option<&str>,
    alpn: &[&[u8]],
) -> std::io::Result<Handshake> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(look_config(alpn)));
    let name = match server_name {
        Some(name) => ServerName::try_from(name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        // rustls sends no SNI for an IP address.
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
    let conn = stream.get_ref().1;
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or_else(|| std::io::Error::other("no certificate"))?;
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok(Handshake { cert, alpn, stream })
}

/// The leaf certificate served for `server_name`.
pub async fn served_cert(addr: SocketAddr, server_name: Option<&str>) -> CertificateDer<'static> {
    handshake(addr, server_name, &[b"http/1.1"])
        .await
        .expect("handshake")
        .cert
}

/// DNS names (and IPs) of a certificate's subject alternative names.
pub fn cert_names(der: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                names.push(n.to_string());
            }
        }
    }
    names
}

/// A reqwest client trusting `ca` only, resolving each host to `addr`.
pub fn https_client(ca: &Ca, hosts: &[&str], addr: SocketAddr) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA pem")]);
    for host in hosts {
        builder = builder.resolve(host, addr);
    }
    builder
}

/// An HTTPS origin (HTTP/1.1 over TLS with `leaf`) on a free loopback port that answers every
/// request with `{"origin": NAME, "path", "headers"}`.
pub async fn tls_origin(name: &str, leaf: &Leaf) -> SocketAddr {
    let key = PrivateKeyDer::Pkcs8(leaf.key_der.clone().into());
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .expect("origin certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let name: Arc<str> = name.into();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, name) = (acceptor.clone(), name.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let service = service_fn(move |req: Request<Incoming>| {
                    let (name, sni) = (name.clone(), sni.clone());
                    async move {
                        let headers: serde_json::Map<String, serde_json::Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                            .collect();
                        let body = serde_json::json!({
                            "origin": &*name,
                            "sni": sni,
                            "path": req.uri().path_and_query().map(|p| p.as_str()),
                            "headers": headers,
                        });
                        Ok::<_, Infallible>(Response::new(
                            Full::new(Bytes::from(body.to_string())).map_err(|e| match e {}),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

