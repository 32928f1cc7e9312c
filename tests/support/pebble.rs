//! A real ACME server for tests: Pebble (Let's Encrypt's test CA) and pebble-challtestsrv as its
//! DNS, which answers every name with 127.0.0.1 so Pebble validates against Gatehouse's
//! listeners (or, for DNS-01, a real DNS server such as bind9 instead). Each instance has its
//! own ports and files; the processes die on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A Pebble + pebble-challtestsrv pair, configured but maybe not started yet.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    /// The ACME API (`/dir` is the directory).
    pub listen: SocketAddr,
    /// Pebble's management API (`/roots/0` is the issuing root).
    pub management: SocketAddr,
    dns: SocketAddr,
    /// Whether `dns` is pebble-challtestsrv, started with Pebble (else a server of the test's).
    own_dns: bool,
    challtestsrv_management: SocketAddr,
    /// `PEBBLE_WFE_NONCEREJECT`: share (%) of good nonces Pebble rejects.
    nonce_reject: u8,
    /// Pebble's configuration, written when it starts.
    config: serde_json::Value,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
}

impl Pebble {
    /// Configures Pebble to validate HTTP-01 on `http`'s port and TLS-ALPN-01 on `https`'s.
    /// Nonces are never rejected (see [`Pebble::rejecting_nonces`]).
    pub fn new(http: SocketAddr, https: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut pebble = Self {
            listen: free_port(),
            management: free_port(),
            dns: free_port(),
            own_dns: true,
            challtestsrv_management: free_port(),
            nonce_reject: 0,
            config: serde_json::Value::Null,
            pebble: None,
            challtestsrv: None,
            dir,
        };
        pebble.write_certificates();
        pebble.config = serde_json::json!({
            "pebble": {
                "listenAddress": pebble.listen.to_string(),
                "managementListenAddress": pebble.management.to_string(),
                "certificate": pebble.dir.path().join("server.pem"),
                "privateKey": pebble.dir.path().join("server.key"),
                "httpPort": http.port(),
                "tlsPort": https.port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        pebble
    }

    /// Requires External Account Binding for new accounts, with one key: `kid` and its HMAC
    /// key (base64url).
    pub fn requiring_eab(mut self, kid: &str, hmac_key: &str) -> Self {
        self.config["pebble"]["externalAccountBindingRequired"] = true.into();
        self.config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: hmac_key });
        self
    }

    /// Looks names up at `dns` (a real DNS server of the test) instead of pebble-challtestsrv.
    pub fn with_dns(mut self, dns: SocketAddr) -> Self {
        self.dns = dns;
        self.own_dns = false;
        self
    }

    /// Keeps Pebble's default: 5% of good nonces rejected with `badNonce`.
    pub fn rejecting_nonces(mut self) -> Self {
        self.nonce_reject = 5;
        self
    }

    /// A test CA and a leaf for `localhost`/127.0.0.1 (CA:FALSE) that Pebble serves HTTPS with.
    fn write_certificates(&self) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Gatehouse test CA for Pebble");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");
        let dir = self.dir.path();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca");
        std::fs::write(dir.join("server.pem"), leaf.pem()).expect("write leaf");
        std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).expect("write key");
    }

    /// The CA Pebble's own HTTPS certificate comes from (for `--acme-ca-bundle`).
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// The Gatehouse flags that point its ACME manager at this Pebble.
    pub fn gatehouse_args(&self) -> Vec<String> {
        vec![
            format!("--acme-directory={}", self.directory()),
            format!("--acme-ca-bundle={}", self.ca_bundle().display()),
            "--acme-email=admin@example.com".to_owned(),
        ]
    }

    /// Starts both processes and waits until the directory answers.
    pub fn start(&mut self) {
        std::fs::write(self.dir.path().join("pebble.json"), self.config.to_string())
            .expect("pebble config");
        let log = |name: &str| std::fs::File::create(self.dir.path().join(name)).expect("log");
        if self.own_dns {
            let challtestsrv = Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-dns01", &self.dns.to_string()])
                .args(["-management", &self.challtestsrv_management.to_string()])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .stdout(log("challtestsrv.log"))
                .stderr(Stdio::null())
                .spawn()
                .expect("start pebble-challtestsrv (apt-get install pebble)");
            self.challtestsrv = Some(challtestsrv);
        }
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .args(["-dnsserver", &self.dns.to_string()])
            .arg("-strict=false")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_WFE_NONCEREJECT", self.nonce_reject.to_string())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err.log"))
            .spawn()
            .expect("start pebble (apt-get install pebble)");
        self.pebble = Some(pebble);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.listen).is_err()
            || std::net::TcpStream::connect(self.management).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pebble did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes the fake DNS answer `host` with `ip` instead of 127.0.0.1 (e.g. an address where
    /// nothing listens, so validation of that host fails).
    pub async fn set_address(&self, host: &str, ip: &str) {
        let url = format!("http://{}/add-a", self.challtestsrv_management);
        let body = serde_json::json!({"host": format!("{host}."), "addresses": [ip]});
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("POST /add-a");
        assert_eq!(resp.status(), 200, "POST {url}");
    }

    /// How many times Pebble's log shows `needle` (e.g. `POST /order-plz`, one per new order
    /// when nonces are not rejected).
    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Pebble's output so far.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("pebble.log"), read("pebble.err.log"))
    }

    /// The PEM root that issued certificates chain to (a new one at every Pebble start).
    pub async fn issuing_root(&self) -> String {
        let ca = std::fs::read(self.ca_bundle()).expect("read ca");
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("ca pem")])
            .build()
            .expect("client");
        let url = format!("https://{}/roots/0", self.management);
        let resp = client.get(&url).send().await.expect("GET /roots/0");
        assert_eq!(resp.status(), 200, "GET {url}");
        resp.text().await.expect("root pem")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [self.pebble.take(), self.challtestsrv.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
