//! Per-certificate metrics, registered in Gatehouse's registry by the ACME manager:
//!
//! - `gatehouse_certificate_expiry_timestamp_seconds{host,secret,issuer}`: when the certificate
//!   serving each host (and `host="(default)"`) expires, Unix time;
//! - `gatehouse_certificate_renewal_timestamp_seconds{secret}`: when the ACME manager will next
//!   order each certificate it keeps (its renewal point, or the next try after a failure).
//!
//! Series of hosts and Secrets that are gone are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use prometheus::{IntGaugeVec, Opts, Registry};

use crate::tls::TlsTable;
use crate::tls::certs::unix_seconds;

/// The per-certificate gauges and the label sets they hold now.
pub struct CertificateMetrics {
    expiry: IntGaugeVec,
    renewal: IntGaugeVec,
    expiry_series: BTreeSet<[String; 3]>,
    renewal_series: BTreeSet<String>,
}

// === impl CertificateMetrics ===

impl CertificateMetrics {
    /// Registers the gauges in `registry` (Gatehouse's, prefix `gatehouse_`).
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let expiry = IntGaugeVec::new(
            Opts::new(
                "certificate_expiry_timestamp_seconds",
                "When the certificate serving each host expires (Unix time)",
            ),
            &["host", "secret", "issuer"],
        )?;
        let renewal = IntGaugeVec::new(
            Opts::new(
                "certificate_renewal_timestamp_seconds",
                "When the ACME manager next orders each certificate it keeps (Unix time)",
            ),
            &["secret"],
        )?;
        registry.register(Box::new(expiry.clone()))?;
        registry.register(Box::new(renewal.clone()))?;
        Ok(Self {
            expiry,
            renewal,
            expiry_series: BTreeSet::new(),
            renewal_series: BTreeSet::new(),
        })
    }

    /// Sets the expiry of every host's certificate in `tls`, dropping hosts that are gone.
    pub fn observe_tls(&mut self, tls: &TlsTable) {
        let mut now = BTreeMap::new();
        let hosts = tls
            .hosts()
            .into_iter()
            .map(|(host, cert)| (host.display().into_owned(), cert))
            .chain(tls.default_cert().map(|c| ("(default)".to_owned(), c)));
        for (host, cert) in hosts {
            let labels = [host, cert.secret.to_string(), cert.issuer.clone()];
            now.insert(labels, cert.not_after_unix());
        }
        for gone in self.expiry_series.iter().filter(|l| !now.contains_key(*l)) {
            let _ = self.expiry.remove_label_values(&label_refs(gone));
        }
        for (labels, value) in &now {
            self.expiry
                .with_label_values(&label_refs(labels))
                .set(*value);
        }
        self.expiry_series = now.into_keys().collect();
    }

    /// Sets the next order time of every certificate the manager keeps, by Secret; those not
    /// listed lose their series.
    pub fn observe_renewals(&mut self, renewals: &BTreeMap<String, SystemTime>) {
        for gone in self
            .renewal_series
            .iter()
            .filter(|s| !renewals.contains_key(*s))
        {
            let _ = self.renewal.remove_label_values(&[gone.as_str()]);
        }
        for (secret, at) in renewals {
            self.renewal
                .with_label_values(&[secret.as_str()])
                .set(unix_seconds(*at));
        }
        self.renewal_series = renewals.keys().cloned().collect();
    }
}

fn label_refs(labels: &[String; 3]) -> [&str; 3] {
    [&labels[0], &labels[1], &labels[2]]
}
