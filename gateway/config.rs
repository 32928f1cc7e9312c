//! Command line, `GATEHOUSE_*` environment variables and the YAML `--config` file, resolved into
//! one [`Config`]. A flag beats its environment variable, which beats the file, which beats the
//! default; a flag given twice takes its last value (so a wrapper such as the Helm chart can be
//! overridden by arguments appended after its own).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Deserializer};

use crate::proxy::server::ServerSettings;
use crate::proxy::upstream::UpstreamSettings;
use crate::sources::kube::settings as kube_source;
use crate::translate;

/// Gatehouse: a Kubernetes ingress controller and edge gateway. Routes Ingress hosts and paths
/// to Services, terminates TLS, serves static sites.
///
/// It reads Ingress, IngressClass, Service, EndpointSlice, Secret and StaticSite objects from
/// the Kubernetes API or, with --manifests, from a directory of YAML manifests.
#[derive(Parser, Deserialize, Debug, Default)]
#[command(
    name = "gatehouse",
    version,
    max_term_width = 100,
    args_override_self = true
)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Args {
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,

    /// YAML file with any of these settings, named as the long flags (e.g. `http-listen: ...`).
    #[arg(long, env = "GATEHOUSE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Read objects from this directory of YAML manifests (watched for changes) instead of the
    /// Kubernetes API.
    #[arg(long, env = "GATEHOUSE_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// Kubeconfig file to reach the Kubernetes API with. [default: $KUBECONFIG, ~/.kube/config,
    /// then the in-cluster service account]
    #[arg(long, env = "GATEHOUSE_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Only watch objects in this namespace (repeatable, or comma-separated). [default: all]
    #[arg(
        long,
        env = "GATEHOUSE_WATCH_NAMESPACE",
        value_delimiter = ',',
        value_name = "NAMESPACE"
    )]
    pub watch_namespace: Vec<String>,

    /// Write the load-balancer addresses and external IPs of this Service (NAMESPACE/NAME) into
    /// the status of every Ingress served; for a NodePort Service with neither, its Ready
    /// nodes' addresses (ExternalIP, else InternalIP; needs list/watch on Nodes).
    #[arg(long, env = "GATEHOUSE_PUBLISH_SERVICE", value_name = "NAMESPACE/NAME")]
    pub publish_service: Option<String>,

    /// Write these IPs or host names into the status of every Ingress served (comma-separated;
    /// wins over --publish-service).
    #[arg(long, env = "GATEHOUSE_PUBLISH_ADDRESS", value_name = "IP|HOST,...")]
    pub publish_address: Option<String>,

    /// Namespace of the leader-election Lease. [default: $POD_NAMESPACE, else the kubeconfig's
    /// namespace]
    #[arg(
        long,
        env = "GATEHOUSE_LEADER_ELECTION_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease. [default: gatehouse-leader]
    #[arg(long, env = "GATEHOUSE_LEASE_NAME", value_name = "NAME")]
    pub lease_name: Option<String>,

    /// How long a leader's Lease stays valid without renewal. [default: 15s]
    #[arg(long, env = "GATEHOUSE_LEASE_DURATION", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub lease_duration: Option<Duration>,

    /// How often the leader renews its Lease (and others check it). [default: 5s]
    #[arg(long, env = "GATEHOUSE_LEASE_RENEW", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub lease_renew: Option<Duration>,

    /// Address of the plain HTTP listener (HTTP/1.1 and h2c). [default: 0.0.0.0:8080]
    #[arg(long, env = "GATEHOUSE_HTTP_LISTEN", value_parser = parse_listen, value_name = "ADDR")]
    #[serde(deserialize_with = "listen")]
    pub http_listen: Option<SocketAddr>,

    /// Address of the HTTPS listener. [default: 0.0.0.0:8443]
    #[arg(long, env = "GATEHOUSE_HTTPS_LISTEN", value_parser = parse_listen, value_name = "ADDR")]
    #[serde(deserialize_with = "listen")]
    pub https_listen: Option<SocketAddr>,

    /// Address of the admin listener: /healthz, /readyz, /metrics, /routes. Loopback by default:
    /// /routes shows endpoint addresses and Secret names. [default: 127.0.0.1:9090]
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN", value_parser = parse_listen, value_name = "ADDR")]
    #[serde(deserialize_with = "listen")]
    pub admin_listen: Option<SocketAddr>,

    /// IngressClass name this controller serves. [default: gatehouse]
    #[arg(long, env = "GATEHOUSE_INGRESS_CLASS", value_name = "NAME")]
    pub ingress_class: Option<String>,

    /// `spec.controller` value of the IngressClasses this controller owns.
    /// [default: gatehouse.dev/ingress-controller]
    #[arg(long, env = "GATEHOUSE_CONTROLLER_NAME", value_name = "NAME")]
    pub controller_name: Option<String>,

    /// Also serve Ingresses that name no IngressClass.
    #[arg(long, env = "GATEHOUSE_WATCH_INGRESS_WITHOUT_CLASS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub watch_ingress_without_class: Option<bool>,

    /// Log level: `error`, `warn`, `info`, `debug`, `trace`, or per module
    /// (`info,gatehouse::acme=debug`). [default: $RUST_LOG, else info]
    #[arg(long, env = "GATEHOUSE_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Export a span per request over OTLP/HTTP (protobuf) to this URL, e.g.
    /// http://otel-collector:4318 (`/v1/traces` is added to a URL without a path); requests
    /// then carry W3C trace context to backends. [default: off]
    #[arg(long, env = "GATEHOUSE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Share of new traces sampled (0 to 1); a request that continues a trace keeps its
    /// parent's decision. [default: 1]
    #[arg(long, env = "GATEHOUSE_TRACE_SAMPLE_RATIO", value_name = "RATIO")]
    pub trace_sample_ratio: Option<f64>,

    /// PEM file of CA certificates trusted for an https:// `--otlp-endpoint`, on top of the
    /// Mozilla roots.
    #[arg(long, env = "GATEHOUSE_OTLP_CA_BUNDLE", value_name = "PEM")]
    pub otlp_ca_bundle: Option<PathBuf>,

    /// Serve the Ingresses of these IngressClass names (e.g. `nginx`) as they are, whatever
    /// controller their IngressClass object names, with ingress-nginx's defaults (HTTPS redirect
    /// for TLS hosts, 1 MiB request bodies). Repeatable or comma-separated.
    #[arg(
        long,
        env = "GATEHOUSE_INGRESS_CLASS_COMPAT",
        value_delimiter = ',',
        value_name = "CLASS"
    )]
    pub ingress_class_compat: Vec<String>,

    /// Peers (CIDRs or addresses, comma-separated) whose X-Forwarded-For or PROXY protocol
    /// header gives the client address that source ranges and limits apply to. [default: none:
    /// the connection's peer is the client]
    #[arg(long, env = "GATEHOUSE_TRUSTED_PROXIES", value_name = "CIDR,...")]
    pub trusted_proxies: Option<String>,

    /// Log format. [default: text]
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Threads that serve traffic. One runs every connection in arrival order on a single
    /// thread, as one nginx worker does. [default: the CPUs the process may use, its cgroup's
    /// CPU limit included]
    #[arg(long, env = "GATEHOUSE_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,

    /// Log one line per request. [default: true]
    #[arg(long, env = "GATEHOUSE_ACCESS_LOG", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub access_log: Option<bool>,

    /// Time allowed to connect to an upstream endpoint. [default: 5s]
    #[arg(long, env = "GATEHOUSE_UPSTREAM_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub upstream_connect_timeout: Option<Duration>,

    /// Time an upstream may take to send response headers before the client gets 504. [default: 60s]
    #[arg(long, env = "GATEHOUSE_UPSTREAM_RESPONSE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub upstream_response_timeout: Option<Duration>,

    /// How long an idle upstream keep-alive connection is kept. [default: 90s]
    #[arg(long, env = "GATEHOUSE_UPSTREAM_IDLE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub upstream_idle_timeout: Option<Duration>,

    /// Time a client may take to send a request's headers. [default: 30s]
    #[arg(long, env = "GATEHOUSE_CLIENT_HEADER_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub client_header_timeout: Option<Duration>,

    /// Largest request head (request line and headers) in bytes. [default: 65536]
    #[arg(long, env = "GATEHOUSE_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,

    /// After SIGTERM, how long to keep accepting and serving (with /readyz failing) before
    /// draining: time for endpoints and load balancers to stop sending new clients. [default: 0s]
    #[arg(long, env = "GATEHOUSE_SHUTDOWN_DELAY", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub shutdown_delay: Option<Duration>,

    /// How long shutdown waits for in-flight requests. [default: 30s]
    #[arg(long, env = "GATEHOUSE_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Option<Duration>,

    /// Serve /routes on the admin listener (turn off where that listener is reachable by
    /// others). [default: true]
    #[arg(long, env = "GATEHOUSE_ADMIN_ROUTES", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub admin_routes: Option<bool>,

    /// Largest request body in bytes; larger ones get 413 (0: no limit). [default: 104857600]
    #[arg(long, env = "GATEHOUSE_MAX_REQUEST_BODY", value_name = "BYTES")]
    pub max_request_body: Option<u64>,

    /// Longest wait for the next piece of a request body (408, or the upstream request is cut
    /// off). [default: 60s]
    #[arg(long, env = "GATEHOUSE_CLIENT_BODY_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub client_body_timeout: Option<Duration>,

    /// How long a client connection (HTTP/1.1 keep-alive or HTTP/2) may stay open with no
    /// request in flight. [default: 60s]
    #[arg(long, env = "GATEHOUSE_CLIENT_IDLE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub client_idle_timeout: Option<Duration>,

    /// How long a client may take none of a response being written to it (HTTP/1.1, HTTP/2,
    /// TLS) before its connection is closed, as nginx's `send_timeout`. [default: 60s]
    #[arg(long, env = "GATEHOUSE_CLIENT_SEND_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub client_send_timeout: Option<Duration>,

    /// Concurrent streams per HTTP/2 client connection. [default: 256]
    #[arg(long, env = "GATEHOUSE_HTTP2_MAX_STREAMS", value_name = "N")]
    pub http2_max_streams: Option<u32>,

    /// Connects in flight per upstream endpoint; requests beyond wait for one. [default: 64]
    #[arg(long, env = "GATEHOUSE_UPSTREAM_MAX_CONNECTING", value_name = "N")]
    pub upstream_max_connecting: Option<usize>,

    /// Secret (NAMESPACE/NAME, type kubernetes.io/tls) served to TLS clients whose server name
    /// has no certificate, or who send none. [default: a self-signed certificate made at start]
    #[arg(
        long,
        env = "GATEHOUSE_DEFAULT_CERTIFICATE",
        value_name = "NAMESPACE/NAME"
    )]
    pub default_certificate: Option<String>,

    /// Redirect plain-HTTP requests for hosts with a certificate to HTTPS (308), unless their
    /// Ingress says `gatehouse.dev/ssl-redirect: "false"`. [default: false]
    #[arg(long, env = "GATEHOUSE_SSL_REDIRECT", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub ssl_redirect: Option<bool>,

    /// Port HTTPS redirects send clients to: the port the HTTPS listener is reached on from
    /// outside (left out of the URL when 443). [default: 443]
    #[arg(long, env = "GATEHOUSE_HTTPS_REDIRECT_PORT", value_name = "PORT")]
    pub https_redirect_port: Option<u16>,

    /// Verify the certificates of HTTPS upstreams (`gatehouse.dev/backend-protocol: HTTPS`).
    /// [default: true]
    #[arg(long, env = "GATEHOUSE_UPSTREAM_TLS_VERIFY", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub upstream_tls_verify: Option<bool>,

    /// PEM file of CA certificates trusted for HTTPS upstreams, on top of the Mozilla roots.
    #[arg(long, env = "GATEHOUSE_UPSTREAM_CA_BUNDLE", value_name = "PEM")]
    pub upstream_ca_bundle: Option<PathBuf>,

    /// ACME directory URL certificates are ordered from (for Ingresses annotated
    /// `kubernetes.io/tls-acme: "true"`); `production` and `staging` name Let's Encrypt's.
    /// Ordering means agreeing to the CA's terms of service. [default: production]
    #[arg(long, env = "GATEHOUSE_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,

    /// Contact address for the ACME account (expiry notices, policy changes).
    #[arg(long, env = "GATEHOUSE_ACME_EMAIL", value_name = "EMAIL")]
    pub acme_email: Option<String>,

    /// PEM file of extra root certificates to trust for the ACME directory (a private or test
    /// CA such as Pebble's), on top of the Mozilla roots.
    #[arg(long, env = "GATEHOUSE_ACME_CA_BUNDLE", value_name = "PEM")]
    pub acme_ca_bundle: Option<PathBuf>,

    /// How the ACME server checks a host: `http-01` (port 80), `tls-alpn-01` (port 443) or
    /// `dns-01` (a TXT record, see --acme-dns01-server). Wildcard hosts always use dns-01.
    /// [default: http-01]
    #[arg(
        long,
        env = "GATEHOUSE_ACME_CHALLENGE",
        value_enum,
        value_name = "TYPE"
    )]
    pub acme_challenge: Option<crate::acme::ChallengeKind>,

    /// Renew a certificate once less than this is left of it: a share of its lifetime (`0.33`,
    /// `33%`) or a duration (`30d`); renewals come up to 10% earlier at random. [default: 1/3]
    #[arg(long, env = "GATEHOUSE_ACME_RENEW_BEFORE", value_parser = parse_renew_before, value_name = "FRACTION|DURATION")]
    #[serde(deserialize_with = "renew_before")]
    pub acme_renew_before: Option<crate::acme::RenewBefore>,

    /// Directory where, reading manifests, Gatehouse keeps its ACME account, orders in flight
    /// and certificates (Secret manifests under `certificates/`, read back like --manifests).
    #[arg(long, env = "GATEHOUSE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// DNS server (IP[:PORT], port 53 by default) that takes RFC 2136 dynamic updates for the
    /// zones of ACME hosts: DNS-01 answers (TXT records) are put there. Needed for wildcard
    /// hosts.
    #[arg(long, env = "GATEHOUSE_ACME_DNS01_SERVER", value_name = "IP[:PORT]")]
    pub acme_dns01_server: Option<String>,

    /// TSIG key the DNS-01 updates are signed with, in BIND's format (what `tsig-keygen NAME`
    /// prints: `key "NAME" { algorithm hmac-sha256; secret "..."; };`).
    #[arg(long, env = "GATEHOUSE_ACME_DNS01_TSIG_KEY_FILE", value_name = "FILE")]
    pub acme_dns01_tsig_key_file: Option<PathBuf>,

    /// How long to wait after a DNS-01 record is added before the CA is asked to look, so the
    /// zone's secondary servers have it too. [default: 10s]
    #[arg(long, env = "GATEHOUSE_ACME_DNS01_PROPAGATION", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub acme_dns01_propagation: Option<Duration>,

    /// External Account Binding key id, for a CA that requires one (ZeroSSL, Google, Sectigo,
    /// a private CA); with --acme-eab-hmac-key.
    #[arg(long, env = "GATEHOUSE_ACME_EAB_KID", value_name = "KID")]
    pub acme_eab_kid: Option<String>,

    /// External Account Binding HMAC key (base64url, as the CA gives it).
    #[arg(long, env = "GATEHOUSE_ACME_EAB_HMAC_KEY", value_name = "BASE64URL")]
    pub acme_eab_hmac_key: Option<String>,
}

/// The DNS-01 settings from their flags: none without a server; a server needs a key.
fn dns01_settings(
    server: Option<String>,
    key_file: Option<PathBuf>,
    propagation: Option<Duration>,
) -> Result<Option<crate::acme::dns01::Settings>, String> {
    let server = match (server, &key_file) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err("--acme-dns01-tsig-key-file needs --acme-dns01-server".into());
        }
        (Some(server), _) => server,
    };
    let server = match server.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => server
            .parse::<std::net::IpAddr>()
            .map(|ip| SocketAddr::new(ip, 53))
            .map_err(|_| format!("--acme-dns01-server {server:?}: expected IP or IP:PORT"))?,
    };
    let Some(key_file) = key_file else {
        return Err(
            "--acme-dns01-server needs --acme-dns01-tsig-key-file (updates are signed with TSIG)"
                .into(),
        );
    };
    Ok(Some(crate::acme::dns01::Settings {
        server,
        key: crate::acme::dns01::TsigKey::load(&key_file)?,
        propagation: propagation.unwrap_or(Duration::from_secs(10)),
    }))
}

/// External Account Binding from its two flags, which go together.
fn eab_settings(
    kid: Option<String>,
    hmac_key: Option<String>,
) -> Result<Option<crate::acme::Eab>, String> {
    match (kid, hmac_key) {
        (None, None) => Ok(None),
        (Some(kid), Some(key)) => crate::acme::Eab::new(&kid, &key).map(Some),
        (Some(_), None) => Err("--acme-eab-kid needs --acme-eab-hmac-key".into()),
        (None, Some(_)) => Err("--acme-eab-hmac-key needs --acme-eab-kid".into()),
    }
}

fn parse_renew_before(text: &str) -> Result<crate::acme::RenewBefore, String> {
    text.parse()
}

fn renew_before<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::acme::RenewBefore>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print the StaticSite CustomResourceDefinition as YAML.
    Crd,
    /// Report what Gatehouse would do with the annotations of Ingresses (honoured, ignored,
    /// refused), before switching from ingress-nginx. Exits 1 when anything would be refused.
    Check(CheckArgs),
}

/// `gatehouse check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Manifest files or directories (`.yaml`, `.yml`, `.json`, read recursively), or `-` for
    /// standard input (e.g. `kubectl get ingress -A -o yaml | gatehouse check -`).
    #[arg(value_name = "PATH", default_value = "-")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub format: LogFormat,
    /// Classes whose Ingresses get ingress-nginx's defaults (see --ingress-class-compat).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "CLASS",
        default_value = "nginx"
    )]
    pub ingress_class_compat: Vec<String>,
}

#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A listen address; `:PORT` means every IPv4 address (`0.0.0.0:PORT`), as in Go programs.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let full;
    let text = match text.strip_prefix(':') {
        Some(port) if !port.contains(':') => {
            full = format!("0.0.0.0:{port}");
            &full
        }
        _ => text,
    };
    text.parse()
        .map_err(|_| format!("{text:?} is not an address (IP:PORT, [IPv6]:PORT or :PORT)"))
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| parse_listen(&t).map_err(serde::de::Error::custom))
        .transpose()
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| {
        humantime::parse_duration(&t).map_err(|e| serde::de::Error::custom(format!("{t:?}: {e}")))
    })
    .transpose()
}

/// Everything resolved, with defaults applied.
#[derive(Clone, Debug)]
pub struct Config {
    pub manifests: Option<PathBuf>,
    pub http_listen: SocketAddr,
    pub https_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub log_format: LogFormat,
    /// `--worker-threads`, resolved.
    pub worker_threads: usize,
    /// `--otlp-endpoint`: tracing on.
    pub tracing: Option<crate::otel::Settings>,
    /// `--log-level`, checked; `None`: $RUST_LOG or `info`.
    pub log_level: Option<String>,
    pub access_log: bool,
    pub translate: translate::Settings,
    pub upstream: UpstreamSettings,
    pub server: ServerSettings,
    pub admin: crate::admin::AdminSettings,
    /// After SIGTERM: how long /readyz fails while the listeners still accept and serve, before
    /// they stop accepting and drain (`server.drain_timeout`).
    pub shutdown_delay: Duration,
    /// The Kubernetes API source (used when no --manifests directory is given).
    pub kube: kube_source::Settings,
    /// Certificates ordered through ACME.
    pub acme: crate::acme::Settings,
}

// === impl Args ===

impl Args {
    /// Reads the `--config` file, if any, under the flags and environment already parsed.
    pub fn resolve(self) -> Result<Config, String> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => Args::default(),
        };
        let upstream_defaults = UpstreamSettings::default();
        let server_defaults = ServerSettings::default();
        let translate_defaults = translate::Settings::default();
        let default_certificate = self
            .default_certificate
            .or(file.default_certificate)
            .map(|text| parse_object_key(&text, "--default-certificate"))
            .transpose()?;
        let upstream_tls_roots = match self.upstream_ca_bundle.or(file.upstream_ca_bundle) {
            Some(path) => crate::tls::upstream::load_ca_bundle(&path)?,
            None => Vec::new(),
        };
        let manifests = self.manifests.or(file.manifests);
        let trusted_proxies = match self.trusted_proxies.or(file.trusted_proxies) {
            Some(text) => crate::snapshot::policy::CidrSet::parse(&text)
                .map_err(|e| format!("--trusted-proxies: {e}"))?,
            None => Default::default(),
        };
        let kube_defaults = kube_source::Settings::default();
        let kube = kube_source::Settings {
            kubeconfig: self.kubeconfig.or(file.kubeconfig),
            watch_namespaces: if self.watch_namespace.is_empty() {
                file.watch_namespace
            } else {
                self.watch_namespace
            },
            publish: kube_source::Publish::parse(
                self.publish_service.or(file.publish_service).as_deref(),
                self.publish_address.or(file.publish_address).as_deref(),
            )?,
            leader_election_namespace: self
                .leader_election_namespace
                .or(file.leader_election_namespace),
            lease_name: self
                .lease_name
                .or(file.lease_name)
                .unwrap_or(kube_defaults.lease_name),
            lease_duration: self
                .lease_duration
                .or(file.lease_duration)
                .unwrap_or(kube_defaults.lease_duration),
            lease_renew: self
                .lease_renew
                .or(file.lease_renew)
                .unwrap_or(kube_defaults.lease_renew),
        };
        kube.validate()?;
        let acme = crate::acme::Settings {
            directory: crate::acme::directory_url(
                self.acme_directory
                    .or(file.acme_directory)
                    .as_deref()
                    .unwrap_or("production"),
            ),
            email: self.acme_email.or(file.acme_email),
            ca_bundle: self.acme_ca_bundle.or(file.acme_ca_bundle),
            challenge: self
                .acme_challenge
                .or(file.acme_challenge)
                .unwrap_or_default(),
            state_dir: self.state_dir.or(file.state_dir),
            renew_before: self
                .acme_renew_before
                .or(file.acme_renew_before)
                .unwrap_or_default(),
            dns01: dns01_settings(
                self.acme_dns01_server.or(file.acme_dns01_server),
                self.acme_dns01_tsig_key_file
                    .or(file.acme_dns01_tsig_key_file),
                self.acme_dns01_propagation.or(file.acme_dns01_propagation),
            )?,
            eab: eab_settings(
                self.acme_eab_kid.or(file.acme_eab_kid),
                self.acme_eab_hmac_key.or(file.acme_eab_hmac_key),
            )?,
            ..crate::acme::Settings::default()
        };
        acme.validate()?;
        Ok(Config {
            http_listen: self
                .http_listen
                .or(file.http_listen)
                .unwrap_or(([0, 0, 0, 0], 8080).into()),
            https_listen: self
                .https_listen
                .or(file.https_listen)
                .unwrap_or(([0, 0, 0, 0], 8443).into()),
            admin_listen: self
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or(([127, 0, 0, 1], 9090).into()),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            worker_threads: match self.worker_threads.or(file.worker_threads) {
                Some(0) => return Err("--worker-threads 0: at least one is needed".into()),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, usize::from),
            },
            tracing: match self.otlp_endpoint.or(file.otlp_endpoint) {
                Some(url) => Some(crate::otel::Settings {
                    endpoint: crate::otel::parse_endpoint(&url)?,
                    sample_ratio: match self.trace_sample_ratio.or(file.trace_sample_ratio) {
                        Some(r) if (0.0..=1.0).contains(&r) => r,
                        Some(r) => {
                            return Err(format!("--trace-sample-ratio {r}: must be from 0 to 1"));
                        }
                        None => 1.0,
                    },
                    extra_roots: match self.otlp_ca_bundle.or(file.otlp_ca_bundle) {
                        Some(path) => {
                            crate::tls::upstream::load_ca_bundle_of("--otlp-ca-bundle", &path)?
                        }
                        None => Vec::new(),
                    },
                }),
                None => None,
            },
            log_level: match self.log_level.or(file.log_level) {
                Some(level) => {
                    tracing_subscriber::EnvFilter::try_new(&level)
                        .map_err(|e| format!("--log-level {level:?}: {e}"))?;
                    Some(level)
                }
                None => None,
            },
            access_log: self.access_log.or(file.access_log).unwrap_or(true),
            translate: translate::Settings {
                ingress_class: self
                    .ingress_class
                    .or(file.ingress_class)
                    .unwrap_or(translate_defaults.ingress_class),
                controller_name: self
                    .controller_name
                    .or(file.controller_name)
                    .unwrap_or(translate_defaults.controller_name),
                watch_ingress_without_class: self
                    .watch_ingress_without_class
                    .or(file.watch_ingress_without_class)
                    .unwrap_or(false),
                base_dir: manifests.clone(),
                default_certificate,
                ssl_redirect: self.ssl_redirect.or(file.ssl_redirect).unwrap_or(false),
                ingress_class_compat: if self.ingress_class_compat.is_empty() {
                    file.ingress_class_compat
                } else {
                    self.ingress_class_compat
                },
                trusted_proxies: trusted_proxies.clone(),
                ..translate_defaults
            },
            upstream: UpstreamSettings {
                connect_timeout: self
                    .upstream_connect_timeout
                    .or(file.upstream_connect_timeout)
                    .unwrap_or(upstream_defaults.connect_timeout),
                response_timeout: self
                    .upstream_response_timeout
                    .or(file.upstream_response_timeout)
                    .unwrap_or(upstream_defaults.response_timeout),
                idle_timeout: self
                    .upstream_idle_timeout
                    .or(file.upstream_idle_timeout)
                    .unwrap_or(upstream_defaults.idle_timeout),
                tls_verify: self
                    .upstream_tls_verify
                    .or(file.upstream_tls_verify)
                    .unwrap_or(upstream_defaults.tls_verify),
                tls_roots: upstream_tls_roots,
                max_connecting: self
                    .upstream_max_connecting
                    .or(file.upstream_max_connecting)
                    .unwrap_or(upstream_defaults.max_connecting),
                ..upstream_defaults
            },
            admin: crate::admin::AdminSettings {
                routes: self.admin_routes.or(file.admin_routes).unwrap_or(true),
                header_timeout: self
                    .client_header_timeout
                    .or(file.client_header_timeout)
                    .unwrap_or(server_defaults.header_timeout),
                ..Default::default()
            },
            server: ServerSettings {
                max_header_bytes: self
                    .max_header_bytes
                    .or(file.max_header_bytes)
                    .unwrap_or(server_defaults.max_header_bytes),
                header_timeout: self
                    .client_header_timeout
                    .or(file.client_header_timeout)
                    .unwrap_or(server_defaults.header_timeout),
                drain_timeout: self
                    .drain_timeout
                    .or(file.drain_timeout)
                    .unwrap_or(server_defaults.drain_timeout),
                https_redirect_port: self
                    .https_redirect_port
                    .or(file.https_redirect_port)
                    .unwrap_or(server_defaults.https_redirect_port),
                body_limits: crate::proxy::request_body::BodyLimits {
                    max_bytes: match self.max_request_body.or(file.max_request_body) {
                        Some(0) => None,
                        Some(n) => Some(n),
                        None => server_defaults.body_limits.max_bytes,
                    },
                    read_timeout: self
                        .client_body_timeout
                        .or(file.client_body_timeout)
                        .unwrap_or(server_defaults.body_limits.read_timeout),
                },
                idle_timeout: self
                    .client_idle_timeout
                    .or(file.client_idle_timeout)
                    .unwrap_or(server_defaults.idle_timeout),
                send_timeout: self
                    .client_send_timeout
                    .or(file.client_send_timeout)
                    .unwrap_or(server_defaults.send_timeout),
                http2_max_streams: self
                    .http2_max_streams
                    .or(file.http2_max_streams)
                    .unwrap_or(server_defaults.http2_max_streams),
                trusted_proxies: std::sync::Arc::new(trusted_proxies.clone()),
            },
            shutdown_delay: self
                .shutdown_delay
                .or(file.shutdown_delay)
                .unwrap_or(Duration::ZERO),
            manifests,
            kube,
            acme,
        })
    }
}

fn load_file(path: &Path) -> Result<Args, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(Args::default());
    }
    serde_saphyr::from_str(&text).map_err(|e| {
        // A bad value's message says what is wrong but not which setting: quote its line.
        let line = e
            .location()
            .and_then(|l| text.lines().nth(l.line().saturating_sub(1) as usize))
            .map(|l| format!(" (in `{}`)", l.trim()))
            .unwrap_or_default();
        format!(
            "config file {}: {}{line}",
            path.display(),
            first_line(&e.to_string())
        )
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// `NAMESPACE/NAME` of a flag naming an object.
fn parse_object_key(text: &str, flag: &str) -> Result<crate::objects::ObjectKey, String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(crate::objects::ObjectKey::new(ns, name))
        }
        _ => Err(format!("{flag} {text:?}: expected NAMESPACE/NAME")),
    }
}

#[cfg(test)]
mod tests;
