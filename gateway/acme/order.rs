//! One order, start to finish: create (or resume) it, answer its challenges, finalize with a
//! fresh key, download the chain.
//!
//! The order's URL and private key are saved before anything is asked of the CA, so a restart
//! picks the same order up instead of placing a new one (orders count against rate limits).

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeStatus, ChallengeType, Identifier, NewOrder, Order,
    OrderStatus, RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use super::dns01::{self, Dns01, TxtRecord};
use super::store::{Issued, NotManaged, Store};
use super::{AcmeWant, ChallengeKind, FailureKind};
use crate::objects::ObjectKey;
use crate::shared::ChallengeAnswers;

/// How long to wait for the CA to validate, then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(500))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// Why an order failed, and what kind of failure it was.
#[derive(Debug)]
pub struct OrderError {
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl OrderError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            message: message.into(),
        }
    }

    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Rejected,
            message: message.into(),
        }
    }
}

impl From<instant_acme::Error> for OrderError {
    fn from(err: instant_acme::Error) -> Self {
        Self {
            kind: classify(&err),
            message: err.to_string(),
        }
    }
}

/// The kind of failure an instant-acme error is.
pub fn classify(err: &instant_acme::Error) -> FailureKind {
    use instant_acme::Error;
    match err {
        Error::Api(problem) => {
            let kind = problem.r#type.as_deref().unwrap_or_default();
            let kind = kind.rsplit(':').next().unwrap_or_default();
            match kind {
                "rateLimited" => FailureKind::RateLimited,
                "badNonce" | "serverInternal" => FailureKind::Transient,
                _ if problem.status.is_some_and(|s| s >= 500) => FailureKind::Transient,
                _ => FailureKind::Rejected,
            }
        }
        Error::Crypto | Error::KeyRejected | Error::Unsupported(_) | Error::Str(_) => {
            FailureKind::Rejected
        }
        // Network, timeouts, unreadable answers: the server may be down or overloaded.
        _ => FailureKind::Transient,
    }
}

/// What is saved of an order in flight.
#[derive(Serialize, Deserialize)]
struct InFlight {
    url: String,
    /// The directory the order was placed with (empty in records from before it was kept).
    #[serde(default)]
    directory: String,
    hosts: Vec<String>,
    /// The certificate's private key (PKCS#8 PEM), chosen before finalizing.
    key_pem: String,
}

/// Everything an order needs besides the want.
pub struct OrderContext<'a> {
    pub account: &'a Account,
    /// The directory URL the account belongs to, recorded with the certificate.
    pub directory: &'a str,
    pub store: &'a dyn Store,
    /// Where challenge answers go (HTTP-01 and TLS-ALPN-01; DNS-01 goes to `dns01`).
    pub challenges: &'a ChallengeAnswers,
    /// The challenge for names that are not wildcards (those always take DNS-01).
    pub kind: ChallengeKind,
    /// Where DNS-01 answers go, if configured.
    pub dns01: Option<&'a Dns01>,
}

/// A store error as an order failure: refused for a Secret Gatehouse may not touch (retrying
/// soon would not help), transient otherwise.
pub fn store_error(err: anyhow::Error) -> OrderError {
    if err.downcast_ref::<NotManaged>().is_some() {
        OrderError::rejected(format!("{err:#}"))
    } else {
        OrderError::transient(format!("{err:#}"))
    }
}

/// Obtains a certificate for `want` and stores it. The order's saved state is forgotten once
/// it is over: issued, or refused for good.
pub async fn obtain(ctx: &OrderContext<'_>, want: &AcmeWant) -> Result<Issued, OrderError> {
    let result = obtain_and_store(ctx, want).await;
    let over = match &result {
        Ok(_) => true,
        Err(err) => err.kind == FailureKind::Rejected,
    };
    if over && let Err(err) = ctx.store.save_order(&want.secret, None).await {
        tracing::warn!(secret = %want.secret, error = %format!("{err:#}"), "cannot forget a finished ACME order");
    }
    result
}

async fn obtain_and_store(ctx: &OrderContext<'_>, want: &AcmeWant) -> Result<Issued, OrderError> {
    let (mut order, key_pem) = match resume(ctx, want).await? {
        Some(resumed) => resumed,
        None => {
            let identifiers: Vec<Identifier> =
                want.hosts.iter().cloned().map(Identifier::Dns).collect();
            let order = ctx.account.new_order(&NewOrder::new(&identifiers)).await?;
            let key = rcgen::KeyPair::generate()
                .map_err(|e| OrderError::rejected(format!("cannot make a key: {e}")))?;
            let record = InFlight {
                url: order.url().to_owned(),
                directory: ctx.directory.to_owned(),
                hosts: want.hosts.clone(),
                key_pem: key.serialize_pem(),
            };
            save_in_flight(ctx, want, &record).await?;
            tracing::info!(secret = %want.secret, hosts = ?want.hosts, order = order.url(), "ACME order placed");
            (order, record.key_pem)
        }
    };

    let mut answers = Answers::new(ctx.challenges);
    let chain_pem = validate_and_finalize(ctx, want, &mut order, &key_pem, &mut answers).await;
    withdraw(answers, ctx.store, ctx.dns01, &want.secret).await;
    let chain_pem = chain_pem?;

    let issued = Issued {
        secret: want.secret.clone(),
        ingress: want.ingress.clone(),
        hosts: want.hosts.clone(),
        chain_pem,
        key_pem,
        directory: ctx.directory.to_owned(),
        account: ctx.account.id().to_owned(),
    };
    ctx.store.save_certificate(&issued).await.map_err(|e| {
        let mut err = store_error(e);
        err.message = format!("cannot store the certificate: {}", err.message);
        err
    })?;
    Ok(issued)
}

/// Answers the pending authorizations, waits for the order to be ready, finalizes it and
/// returns the certificate chain.
async fn validate_and_finalize(
    ctx: &OrderContext<'_>,
    want: &AcmeWant,
    order: &mut Order,
    key_pem: &str,
    answers: &mut Answers<'_>,
) -> Result<String, OrderError> {
    if order.state().status == OrderStatus::Pending {
        authorize(ctx, order, answers).await?;
        match order.poll_ready(&POLL).await? {
            OrderStatus::Ready => {}
            status => return Err(invalid_order(order, status).await),
        }
    }
    if order.state().status == OrderStatus::Ready {
        let csr = csr(&want.hosts, key_pem)?;
        order.finalize_csr(&csr).await?;
    }
    Ok(order.poll_certificate(&POLL).await?)
}

/// The saved order for `want`, if there is one for the same hosts that can still finish. A
/// server that cannot be asked now fails the attempt (the next one resumes): only an order the
/// CA says is invalid or unknown is given up.
async fn resume(
    ctx: &OrderContext<'_>,
    want: &AcmeWant,
) -> Result<Option<(Order, String)>, OrderError> {
    let text = match ctx.store.load_order(&want.secret).await {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(err) => {
            tracing::warn!(secret = %want.secret, error = %format!("{err:#}"), "cannot read the saved ACME order; placing a new one");
            return Ok(None);
        }
    };
    let Ok(record) = serde_json::from_str::<InFlight>(&text) else {
        return Ok(None);
    };
    let other_directory = !record.directory.is_empty() && record.directory != ctx.directory;
    if record.hosts != want.hosts || other_directory {
        return Ok(None);
    }
    match ctx.account.order(record.url.clone()).await {
        Ok(mut order) => {
            if order.state().status == OrderStatus::Invalid {
                return Ok(None);
            }
            tracing::info!(secret = %want.secret, order = %record.url, "resuming the saved ACME order");
            Ok(Some((order, record.key_pem)))
        }
        Err(err) if classify(&err) == FailureKind::Transient => Err(err.into()),
        Err(err) => {
            tracing::info!(secret = %want.secret, order = %record.url, error = %err, "saved ACME order cannot be resumed; placing a new one");
            Ok(None)
        }
    }
}

async fn save_in_flight(
    ctx: &OrderContext<'_>,
    want: &AcmeWant,
    record: &InFlight,
) -> Result<(), OrderError> {
    let json = serde_json::to_string(record)
        .map_err(|e| OrderError::transient(format!("cannot save the order: {e}")))?;
    ctx.store
        .save_order(&want.secret, Some(&json))
        .await
        .map_err(|e| OrderError::transient(format!("cannot save the order: {e:#}")))
}

/// Puts up an answer for every pending authorization and tells the CA to check it. Wildcard
/// names are proven with DNS-01, the others with the configured challenge.
async fn authorize(
    ctx: &OrderContext<'_>,
    order: &mut Order,
    answers: &mut Answers<'_>,
) -> Result<(), OrderError> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(OrderError::rejected(format!(
                    "authorization for {} is {status:?}",
                    authz.identifier()
                )));
            }
        }
        let name = authz.identifier().to_string();
        let Identifier::Dns(domain) = authz.identifier().identifier.clone() else {
            return Err(OrderError::rejected(format!(
                "{name}: only DNS names are ordered"
            )));
        };
        let kind = if authz.wildcard {
            ChallengeKind::Dns01
        } else {
            ctx.kind
        };
        let challenge_type = match kind {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            ChallengeKind::Dns01 => ChallengeType::Dns01,
        };
        let Some(mut challenge) = authz.challenge(challenge_type) else {
            return Err(OrderError::rejected(format!(
                "the CA offers no {} challenge for {name}",
                kind.label()
            )));
        };
        let key_authorization = challenge.key_authorization();
        let propagation = match kind {
            ChallengeKind::Http01 => {
                answers.http01(&challenge.token, key_authorization.as_str());
                ctx.store
                    .share_http01(&challenge.token, key_authorization.as_str())
                    .await
                    .map_err(|e| share_failed(&name, e))?;
                // The CA's validator may reach any replica: let the answer reach them all.
                ctx.store.answer_propagation()
            }
            ChallengeKind::TlsAlpn01 => {
                let digest = key_authorization.digest();
                let cert = alpn_certificate(&name, digest.as_ref())?;
                answers.tls_alpn01(&name, cert);
                ctx.store
                    .share_tls_alpn01(&name, digest.as_ref())
                    .await
                    .map_err(|e| share_failed(&name, e))?;
                ctx.store.answer_propagation()
            }
            ChallengeKind::Dns01 => {
                let Some(dns) = ctx.dns01 else {
                    return Err(OrderError::rejected(format!(
                        "{name} needs the dns-01 challenge: give --acme-dns01-server and --acme-dns01-tsig-key-file"
                    )));
                };
                let record = dns
                    .add(&dns01::record_name(&domain), &key_authorization.dns_value())
                    .await
                    .map_err(|e| share_failed(&name, e))?;
                tracing::info!(name = %record.name, zone = %record.zone, "DNS-01 TXT record added");
                answers.dns01(record);
                dns.propagation()
            }
        };
        tokio::time::sleep(propagation).await;
        if challenge.status == ChallengeStatus::Pending {
            challenge.set_ready().await?;
        }
    }
    Ok(())
}

fn share_failed(name: &str, err: anyhow::Error) -> OrderError {
    OrderError::transient(format!(
        "cannot put up the challenge answer for {name}: {err:#}"
    ))
}

/// The error of an order that did not become ready, with the CA's reasons per name.
async fn invalid_order(order: &mut Order, status: OrderStatus) -> OrderError {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        if authz.refresh().await.is_err() {
            continue;
        }
        for challenge in &authz.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!("{name}: {problem}"));
            }
        }
    }
    if reasons.is_empty() {
        reasons.push("no reason given".into());
    }
    OrderError::rejected(format!("order became {status:?}: {}", reasons.join("; ")))
}

/// A CSR for `hosts` signed with the PEM key.
fn csr(hosts: &[String], key_pem: &str) -> Result<Vec<u8>, OrderError> {
    let bad = |e: rcgen::Error| OrderError::rejected(format!("cannot make the CSR: {e}"));
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(bad)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    Ok(params.serialize_request(&key).map_err(bad)?.der().to_vec())
}

/// The self-signed certificate that answers a TLS-ALPN-01 challenge (RFC 8737): `host` as its
/// only name and the critical acmeIdentifier extension holding the key authorization digest.
pub fn alpn_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, OrderError> {
    let bad = |e: String| OrderError::rejected(format!("cannot make the tls-alpn-01 answer: {e}"));
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(|e| bad(e.to_string()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| bad(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| bad(e.to_string()))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = crate::tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// The challenge answers an order put up; taken down by [`withdraw`] once the order is over or,
/// should the order task be dropped midway, when dropped (all but DNS records, which need the
/// network: those are only reported).
pub(super) struct Answers<'a> {
    challenges: &'a ChallengeAnswers,
    tokens: Vec<String>,
    hosts: Vec<String>,
    dns: Vec<TxtRecord>,
}

// === impl Answers ===

impl<'a> Answers<'a> {
    pub(super) fn new(challenges: &'a ChallengeAnswers) -> Self {
        Self {
            challenges,
            tokens: Vec::new(),
            hosts: Vec::new(),
            dns: Vec::new(),
        }
    }

    pub(super) fn http01(&mut self, token: &str, key_authorization: &str) {
        self.challenges.http01.add_http01(token, key_authorization);
        self.tokens.push(token.to_owned());
    }

    pub(super) fn tls_alpn01(&mut self, host: &str, cert: Arc<CertifiedKey>) {
        self.challenges.alpn.set(host, Some(cert));
        self.hosts.push(host.to_owned());
    }

    pub(super) fn dns01(&mut self, record: TxtRecord) {
        self.dns.push(record);
    }

    /// Stops answering in this process; returns the tokens and hosts taken down, so their
    /// shared copies can go too.
    fn take_down(&mut self) -> (Vec<String>, Vec<String>) {
        for token in &self.tokens {
            self.challenges.http01.remove_http01(token);
        }
        for host in &self.hosts {
            self.challenges.alpn.set(host, None);
        }
        (
            std::mem::take(&mut self.tokens),
            std::mem::take(&mut self.hosts),
        )
    }
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        self.take_down();
        for record in &self.dns {
            tracing::warn!(name = %record.name, zone = %record.zone, "DNS-01 TXT record left behind by an interrupted ACME order");
        }
    }
}

/// Takes an order's answers down: here, wherever the store shared them, and in DNS.
pub(super) async fn withdraw(
    mut answers: Answers<'_>,
    store: &dyn Store,
    dns01: Option<&Dns01>,
    secret: &ObjectKey,
) {
    let (tokens, hosts) = answers.take_down();
    let records = std::mem::take(&mut answers.dns);
    drop(answers);
    if (!tokens.is_empty() || !hosts.is_empty())
        && let Err(err) = store.withdraw_answers(&tokens, &hosts).await
    {
        tracing::warn!(%secret, error = %format!("{err:#}"), "cannot withdraw shared ACME challenge answers");
    }
    let Some(dns) = dns01 else { return };
    for record in &records {
        match dns.remove(record).await {
            Ok(()) => {
                tracing::info!(name = %record.name, zone = %record.zone, "DNS-01 TXT record removed")
            }
            Err(err) => {
                tracing::warn!(%secret, name = %record.name, error = %format!("{err:#}"), "cannot remove a DNS-01 TXT record")
            }
        }
    }
}
