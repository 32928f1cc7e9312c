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

use super::store::{Issued, Store};
use super::{AcmeWant, ChallengeKind, FailureKind};
use crate::shared::Shared;

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
    hosts: Vec<String>,
    /// The certificate's private key (PKCS#8 PEM), chosen before finalizing.
    key_pem: String,
}

/// Everything an order needs besides the want.
pub struct OrderContext<'a> {
    pub account: &'a Account,
    pub store: &'a dyn Store,
    /// Where challenge answers go: HTTP-01 to its `acme_challenges`, TLS-ALPN-01 to the TLS
    /// resolver through `set_alpn_challenge`.
    pub shared: &'a Shared,
    pub kind: ChallengeKind,
}

/// Obtains a certificate for `want` and stores it.
pub async fn obtain(ctx: &OrderContext<'_>, want: &AcmeWant) -> Result<Issued, OrderError> {
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
                hosts: want.hosts.clone(),
                key_pem: key.serialize_pem(),
            };
            save_in_flight(ctx, want, &record).await?;
            tracing::info!(secret = %want.secret, hosts = ?want.hosts, order = order.url(), "ACME order placed");
            (order, record.key_pem)
        }
    };

    let mut answers = Answers {
        shared: ctx.shared,
        tokens: Vec::new(),
        hosts: Vec::new(),
    };
    let chain_pem = validate_and_finalize(ctx, want, &mut order, &key_pem, &mut answers).await;
    let (tokens, hosts) = (std::mem::take(&mut answers.tokens), std::mem::take(&mut answers.hosts));
    drop(answers);
    if (!tokens.is_empty() || !hosts.is_empty())
        && let Err(err) = ctx.store.withdraw_answers(&tokens, &hosts).await
    {
        tracing::warn!(secret = %want.secret, error = %format!("{err:#}"), "cannot withdraw shared ACME challenge answers");
    }
    let chain_pem = chain_pem?;

    let issued = Issued {
        secret: want.secret.clone(),
        ingress: want.ingress.clone(),
        hosts: want.hosts.clone(),
        chain_pem,
        key_pem,
    };
    ctx.store
        .save_certificate(&issued)
        .await
        .map_err(|e| OrderError::transient(format!("cannot store the certificate: {e:#}")))?;
    if let Err(err) = ctx.store.save_order(&want.secret, None).await {
        tracing::warn!(secret = %want.secret, error = %format!("{err:#}"), "cannot forget a finished ACME order");
    }
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
    if record.hosts != want.hosts {
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

/// Puts up an answer for every pending authorization and tells the CA to check it.
async fn authorize(
    ctx: &OrderContext<'_>,
    order: &mut Order,
    answers: &mut Answers<'_>,
) -> Result<(), OrderError> {
    let challenge_type = match ctx.kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
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
        let Some(mut challenge) = authz.challenge(challenge_type.clone()) else {
            return Err(OrderError::rejected(format!(
                "the CA offers no {} challenge for {name}",
                ctx.kind.label()
            )));
        };
        let key_authorization = challenge.key_authorization();
        let shared = match ctx.kind {
            ChallengeKind::Http01 => {
                answers.http01(&challenge.token, key_authorization.as_str());
                ctx.store.share_http01(&challenge.token, key_authorization.as_str()).await
            }
            ChallengeKind::TlsAlpn01 => {
                let digest = key_authorization.digest();
                let cert = alpn_certificate(&name, digest.as_ref())?;
                answers.tls_alpn01(&name, cert);
                ctx.store.share_tls_alpn01(&name, digest.as_ref()).await
            }
        };
        shared.map_err(|e| OrderError::transient(format!("cannot share the challenge answer for {name}: {e:#}")))?;
        // The CA's validator may reach any replica: let the answer reach them all first.
        tokio::time::sleep(ctx.store.answer_propagation()).await;
        if challenge.status == ChallengeStatus::Pending {
            challenge.set_ready().await?;
        }
    }
    Ok(())
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

/// The challenge answers an order put up; withdrawn when dropped, whatever the outcome.
struct Answers<'a> {
    shared: &'a Shared,
    tokens: Vec<String>,
    hosts: Vec<String>,
}

// === impl Answers ===

impl Answers<'_> {
    fn http01(&mut self, token: &str, key_authorization: &str) {
        self.shared
            .acme_challenges
            .add_http01(token, key_authorization);
        self.tokens.push(token.to_owned());
    }

    fn tls_alpn01(&mut self, host: &str, cert: Arc<CertifiedKey>) {
        self.shared.set_alpn_challenge(host, Some(cert));
        self.hosts.push(host.to_owned());
    }
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.shared.acme_challenges.remove_http01(token);
        }
        for host in &self.hosts {
            self.shared.set_alpn_challenge(host, None);
        }
    }
}
