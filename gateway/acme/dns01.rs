//! DNS-01 answers through RFC 2136 dynamic updates signed with TSIG (RFC 8945): the TXT record
//! `_acme-challenge.NAME` is added on the authoritative server given by `--acme-dns01-server`
//! before the CA is told to look, and removed once the order is over. The only challenge that
//! can prove a wildcard name (`*.example.com`).
//!
//! The zone to update is the one the server says holds the name (the owner of the SOA it
//! answers with), so one key may serve several zones.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use base64::Engine;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode, update_message};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time allowed for one exchange with the DNS server, connection included.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// TTL of the challenge records: short, as they live for one validation.
const TXT_TTL: u32 = 60;
/// Clock difference between Gatehouse and the DNS server that TSIG tolerates (RFC 8945
/// recommends 300 s).
const TSIG_FUDGE: u16 = 300;
/// The label in front of the name validated (RFC 8555 section 8.4).
const CHALLENGE_LABEL: &str = "_acme-challenge";

/// Where DNS-01 answers go, from `--acme-dns01-*`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The primary (authoritative) server that takes dynamic updates.
    pub server: SocketAddr,
    pub key: TsigKey,
    /// How long to wait after an update before asking the CA to look, so the record reaches
    /// the zone's secondary servers too.
    pub propagation: Duration,
}

/// A TSIG key: its name, algorithm and secret, as `tsig-keygen` writes them.
#[derive(Clone)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

// === impl TsigKey ===

impl TsigKey {
    /// Reads a key file in BIND's format (what `tsig-keygen NAME` prints):
    /// `key "NAME" { algorithm hmac-sha256; secret "BASE64"; };`
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--acme-dns01-tsig-key-file {}: {e}", path.display()))?;
        Self::parse(&text)
            .map_err(|e| format!("--acme-dns01-tsig-key-file {}: {e}", path.display()))
    }

    /// Parses one `key` statement in BIND's format.
    pub fn parse(text: &str) -> Result<Self, String> {
        let tokens = tokens(text)?;
        let mut tokens = tokens.iter().map(String::as_str);
        if tokens.next() != Some("key") {
            return Err("expected a `key \"NAME\" { ... };` statement".into());
        }
        let name = tokens.next().ok_or("key statement without a name")?;
        if tokens.next() != Some("{") {
            return Err(format!("key {name:?}: expected `{{` after the name"));
        }
        let (mut algorithm, mut secret) = (None, None);
        loop {
            match tokens.next() {
                Some("}") => break,
                Some(field @ ("algorithm" | "secret")) => {
                    let value = tokens
                        .next()
                        .ok_or_else(|| format!("key {name:?}: {field} has no value"))?;
                    if tokens.next() != Some(";") {
                        return Err(format!("key {name:?}: expected `;` after {field}"));
                    }
                    match field {
                        "algorithm" => algorithm = Some(value.to_ascii_lowercase()),
                        _ => secret = Some(value),
                    }
                }
                Some(other) => return Err(format!("key {name:?}: unexpected {other:?}")),
                None => return Err(format!("key {name:?}: missing `}}`")),
            }
        }
        let algorithm = algorithm.ok_or_else(|| format!("key {name:?} names no algorithm"))?;
        tsig_algorithm(&algorithm).map_err(|e| format!("key {name:?}: {e}"))?;
        let secret = secret.ok_or_else(|| format!("key {name:?} has no secret"))?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret)
            .map_err(|e| format!("key {name:?}: secret is not base64: {e}"))?;
        if secret.is_empty() {
            return Err(format!("key {name:?}: empty secret"));
        }
        Name::from_ascii(name).map_err(|e| format!("key name {name:?}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            algorithm,
            secret,
        })
    }

    fn signer(&self) -> anyhow::Result<TSigner> {
        let algorithm = tsig_algorithm(&self.algorithm).map_err(anyhow::Error::msg)?;
        let name = Name::from_ascii(&self.name)?;
        TSigner::new(self.secret.clone(), algorithm, name, TSIG_FUDGE)
            .map_err(|e| anyhow::anyhow!("TSIG key {}: {e}", self.name))
    }
}

/// The TSIG algorithms hickory can sign with.
fn tsig_algorithm(name: &str) -> Result<TsigAlgorithm, String> {
    match name.trim_end_matches('.') {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(format!(
            "algorithm {other:?} not supported: use hmac-sha256, hmac-sha384 or hmac-sha512"
        )),
    }
}

/// Splits a BIND configuration snippet into words, quoted strings (unquoted) and the
/// punctuation `{`, `}`, `;`; drops `#`, `//` and `/* */` comments.
fn tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                chars.by_ref().find(|c| *c == '\n');
            }
            '/' if chars.peek() == Some(&'/') => {
                chars.by_ref().find(|c| *c == '\n');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                loop {
                    match chars.next() {
                        Some('/') if last == '*' => break,
                        Some(c) => last = c,
                        None => return Err("unterminated comment".into()),
                    }
                }
            }
            '{' | '}' | ';' => out.push(c.to_string()),
            '"' => {
                let mut word = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated string".into()),
                    }
                }
                out.push(word);
            }
            c => {
                let mut word = c.to_string();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '{' | '}' | ';' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(word);
            }
        }
    }
    Ok(out)
}

/// The owner name of the TXT record that answers a DNS-01 challenge for `domain` (the
/// identifier without any `*.`).
pub fn record_name(domain: &str) -> String {
    let domain = domain.strip_prefix("*.").unwrap_or(domain);
    format!("{CHALLENGE_LABEL}.{}.", domain.trim_end_matches('.'))
}

/// A TXT record put up for a challenge, to take down afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtRecord {
    pub zone: String,
    pub name: String,
    pub value: String,
}

/// Publishes DNS-01 answers on one server.
pub struct Dns01 {
    settings: Settings,
    signer: TSigner,
}

// === impl Dns01 ===

impl Dns01 {
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let signer = settings.key.signer()?;
        Ok(Self { settings, signer })
    }

    /// How long to wait after an update before the CA may look.
    pub fn propagation(&self) -> Duration {
        self.settings.propagation
    }

    /// Adds the TXT record `value` at `name` (next to any others there: a wildcard and its
    /// base name share one name).
    pub async fn add(&self, name: &str, value: &str) -> anyhow::Result<TxtRecord> {
        let owner = Name::from_ascii(name).with_context(|| format!("{name:?}"))?;
        let zone = self.zone_of(&owner).await?;
        let record = TxtRecord {
            zone: zone.to_ascii(),
            name: owner.to_ascii(),
            value: value.to_owned(),
        };
        let update = update_message::append(txt_set(&owner, value, TXT_TTL), zone, false, false);
        self.update(update)
            .await
            .with_context(|| format!("cannot add TXT {name} in zone {}", record.zone))?;
        Ok(record)
    }

    /// Removes a record [`Dns01::add`] put up; one already gone is fine.
    pub async fn remove(&self, record: &TxtRecord) -> anyhow::Result<()> {
        let owner = Name::from_ascii(&record.name)?;
        let zone = Name::from_ascii(&record.zone)?;
        if !zone.zone_of(&owner) {
            bail!("{} is not in zone {}", record.name, record.zone);
        }
        let update =
            update_message::delete_by_rdata(txt_set(&owner, &record.value, 0), zone, false);
        self.update(update)
            .await
            .with_context(|| format!("cannot remove TXT {} in zone {}", record.name, record.zone))
    }

    /// The TXT values at `name`, as the server answers them.
    pub async fn lookup_txt(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let owner = Name::from_ascii(name)?;
        let answer = self.exchange(query(owner.clone(), RecordType::TXT)).await?;
        Ok(answer
            .answers
            .iter()
            .filter(|r| r.name == owner)
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    /// The zone holding `name`: the owner of the SOA record the server answers a SOA query
    /// for `name` with (in the answer for the apex, in the authority section below it).
    async fn zone_of(&self, name: &Name) -> anyhow::Result<Name> {
        let answer = self
            .exchange(query(name.clone(), RecordType::SOA))
            .await
            .with_context(|| format!("cannot find the zone of {name}"))?;
        match answer.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            code => bail!(
                "cannot find the zone of {name}: the DNS server {} answered {code}",
                self.settings.server
            ),
        }
        let soa = answer
            .answers
            .iter()
            .chain(&answer.authorities)
            .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(name));
        match soa {
            Some(soa) => Ok(soa.name.clone()),
            None => bail!(
                "the DNS server {} is not authoritative for {name} (no SOA in its answer)",
                self.settings.server
            ),
        }
    }

    /// Sends an update signed with the key; fails unless the server answers NOERROR with a
    /// valid signature.
    async fn update(&self, mut update: Message) -> anyhow::Result<()> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut verifier = update
            .finalize(&self.signer, now)?
            .context("TSIG signing gave no verifier")?;
        let bytes = self.send(&update.to_vec()?).await?;
        // An unsigned answer is the server refusing the key (BADKEY, BADSIG, NOTAUTH…).
        match verifier.verify(&bytes) {
            Ok(answer) => match answer.metadata.response_code {
                ResponseCode::NoError => Ok(()),
                code => bail!("the DNS server {} refused: {code}", self.settings.server),
            },
            Err(err) => match Message::from_vec(&bytes) {
                Ok(answer) if answer.metadata.response_code != ResponseCode::NoError => bail!(
                    "the DNS server {} refused: {} (is TSIG key {:?} allowed to update this zone?)",
                    self.settings.server,
                    answer.metadata.response_code,
                    self.settings.key.name
                ),
                _ => bail!(
                    "the DNS server {}'s answer failed TSIG verification: {err}",
                    self.settings.server
                ),
            },
        }
    }

    /// Sends an unsigned query and returns the answer.
    async fn exchange(&self, message: Message) -> anyhow::Result<Message> {
        let bytes = self.send(&message.to_vec()?).await?;
        let answer = Message::from_vec(&bytes).context("unreadable DNS answer")?;
        if answer.metadata.id != message.metadata.id {
            bail!("DNS answer for another query");
        }
        Ok(answer)
    }

    /// One message over TCP (RFC 1035 section 4.2.2: a two-byte length, then the message).
    async fn send(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let server = self.settings.server;
        let exchange = async {
            let mut stream = TcpStream::connect(server).await?;
            let len = u16::try_from(message.len())
                .map_err(|_| std::io::Error::other("DNS message too long"))?;
            let mut out = Vec::with_capacity(message.len() + 2);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(message);
            stream.write_all(&out).await?;
            let len = stream.read_u16().await?;
            let mut answer = vec![0; usize::from(len)];
            stream.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(err).with_context(|| format!("DNS server {server}")),
            Err(_) => bail!("DNS server {server} did not answer in {EXCHANGE_TIMEOUT:?}"),
        }
    }
}

/// A non-recursive query for `name`'s records of type `kind`.
fn query(name: Name, kind: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Query;
    message.metadata.recursion_desired = false;
    let mut q = Query::new();
    q.set_name(name).set_query_type(kind);
    message.add_query(q);
    message
}

/// A one-record TXT set.
fn txt_set(name: &Name, value: &str, ttl: u32) -> RecordSet {
    let mut set = RecordSet::with_ttl(name.clone(), RecordType::TXT, ttl);
    let txt = RData::TXT(TXT::new(vec![value.to_owned()]));
    set.insert(Record::from_rdata(name.clone(), ttl, txt), 0);
    set
}
