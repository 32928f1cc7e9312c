//! Command line, `GATEHOUSE_*` environment variables and the YAML `--config` file, resolved into
//! one [`Config`]. A flag beats its environment variable, which beats the file, which beats the
//! default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Deserializer};

use crate::proxy::server::ServerSettings;
use crate::proxy::upstream::UpstreamSettings;
use crate::translate;

/// Gatehouse: a Kubernetes ingress controller and edge gateway. Routes Ingress hosts and paths
/// to Services, terminates TLS, serves static sites.
///
/// It reads Ingress, IngressClass, Service, EndpointSlice, Secret and StaticSite objects from
/// the Kubernetes API or, with --manifests, from a directory of YAML manifests.
#[derive(Parser, Deserialize, Debug, Default)]
#[command(name = "gatehouse", version, max_term_width = 100)]
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

    /// Address of the plain HTTP listener (HTTP/1.1 and h2c). [default: 0.0.0.0:8080]
    #[arg(long, env = "GATEHOUSE_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,

    /// Address of the HTTPS listener. [default: 0.0.0.0:8443]
    #[arg(long, env = "GATEHOUSE_HTTPS_LISTEN", value_name = "ADDR")]
    pub https_listen: Option<SocketAddr>,

    /// Address of the admin listener: /healthz, /readyz, /metrics, /routes. [default: 0.0.0.0:9090]
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN", value_name = "ADDR")]
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

    /// Log format. [default: text]
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

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

    /// How long shutdown waits for in-flight requests. [default: 30s]
    #[arg(long, env = "GATEHOUSE_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Option<Duration>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print the StaticSite CustomResourceDefinition as YAML.
    Crd,
}

#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
    pub access_log: bool,
    pub translate: translate::Settings,
    pub upstream: UpstreamSettings,
    pub server: ServerSettings,
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
        let manifests = self.manifests.or(file.manifests);
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
                .unwrap_or(([0, 0, 0, 0], 9090).into()),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
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
                ..upstream_defaults
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
            },
            manifests,
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
        format!(
            "config file {}: {}",
            path.display(),
            first_line(&e.to_string())
        )
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
