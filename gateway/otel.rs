//! OpenTelemetry tracing, on only with `--otlp-endpoint`: each request continues the W3C trace
//! its `traceparent` header names (or starts one), the backend gets a `traceparent` naming
//! Gatehouse's span, and sampled spans are exported in batches over OTLP/HTTP (protobuf), to an
//! `http://` or (verified) `https://` collector.
//! Off, nothing here runs: the header passes through like any other.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;
use tokio::sync::mpsc;

/// `--otlp-endpoint`, `--trace-sample-ratio` and `--otlp-ca-bundle`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where spans are POSTed (`…/v1/traces`).
    pub endpoint: Uri,
    /// Share of new traces sampled (0–1); a continued trace keeps its parent's decision.
    pub sample_ratio: f64,
    /// CAs trusted for an `https://` endpoint besides the Mozilla roots.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// Spans waiting for export at most; past it, new spans are dropped (and counted in the log).
const QUEUE: usize = 4096;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_millis(500);

pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Starts spans and hands finished ones to the exporter task.
pub struct Tracer {
    sample_ratio: f64,
    spans: mpsc::Sender<Span>,
}

/// A request's span, from its start to the end of its response.
pub struct ActiveSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start: SystemTime,
    spans: mpsc::Sender<Span>,
}

/// What the request's record knows when the span ends.
pub struct SpanEnd<'a> {
    pub method: &'a Method,
    pub host: &'a str,
    pub status: u16,
    pub namespace: Option<&'a str>,
    pub ingress: Option<&'a str>,
    pub service: Option<&'a str>,
    pub upstream: Option<std::net::SocketAddr>,
    pub error: Option<&'static str>,
    pub duration: Duration,
}

// === impl Tracer ===

impl Tracer {
    /// The tracer and the task exporting its spans (spawn it on the runtime).
    pub fn new(settings: &Settings) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let tracer = Self {
            sample_ratio: settings.sample_ratio.clamp(0.0, 1.0),
            spans: tx,
        };
        (tracer, export(settings.clone(), rx))
    }

    /// Continues the request's trace or starts one, and points its `traceparent` at the new
    /// span for the backend. `None` when the trace is not sampled (the header still passes on,
    /// with Gatehouse's span id, so the backend joins the same trace).
    pub fn start(&self, headers: &mut HeaderMap) -> Option<Box<ActiveSpan>> {
        let incoming = headers.get(&TRACEPARENT).and_then(parse_traceparent);
        let span_id = nonzero_id::<8>();
        let (trace_id, parent, sampled) = match incoming {
            Some((trace_id, parent, flags)) => (trace_id, Some(parent), flags & 1 == 1),
            None => (
                nonzero_id::<16>(),
                None,
                rand::random::<f64>() < self.sample_ratio,
            ),
        };
        headers.insert(&TRACEPARENT, traceparent(&trace_id, &span_id, sampled));
        sampled.then(|| {
            Box::new(ActiveSpan {
                trace_id,
                span_id,
                parent,
                start: SystemTime::now(),
                spans: self.spans.clone(),
            })
        })
    }
}

// === impl ActiveSpan ===

impl ActiveSpan {
    /// Ends the span and queues it for export.
    pub fn end(&self, end: SpanEnd<'_>) {
        let unix_nanos = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let mut attributes = vec![
            string("http.request.method", end.method.as_str()),
            string("server.address", end.host),
            int("http.response.status_code", i64::from(end.status)),
        ];
        let optional = [
            ("k8s.namespace.name", end.namespace),
            ("gatehouse.ingress", end.ingress),
            ("gatehouse.service", end.service),
            ("error.type", end.error),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.push(string(key, value));
            }
        }
        if let Some(addr) = end.upstream {
            attributes.push(string("network.peer.address", &addr.ip().to_string()));
            attributes.push(int("network.peer.port", i64::from(addr.port())));
        }
        let name = match end.ingress {
            Some(ingress) => format!("{} {ingress}", end.method),
            None => end.method.to_string(),
        };
        let span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name,
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: unix_nanos(self.start),
            end_time_unix_nano: unix_nanos(self.start + end.duration),
            attributes,
            // Server spans are errors on 5xx only (OpenTelemetry HTTP conventions).
            status: (end.status >= 500).then(|| Status {
                code: 2,
                message: String::new(),
            }),
            ..Default::default()
        };
        if self.spans.try_send(span).is_err() {
            tracing::debug!("span dropped: the OTLP export queue is full");
        }
    }
}

/// Sends queued spans in batches until every sender is gone.
async fn export(settings: Settings, mut rx: mpsc::Receiver<Span>) {
    let endpoint = settings.endpoint;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    // The upstreams' TLS client: verified against the Mozilla roots plus --otlp-ca-bundle.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::upstream::client_config(
            true,
            &settings.extra_roots,
        ))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let resource = Resource {
        attributes: vec![
            string("service.name", "gatehouse"),
            string("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let open = tokio::time::timeout(FLUSH_EVERY, rx.recv_many(&mut batch, BATCH))
            .await
            .map_or(true, |n| n > 0);
        if !batch.is_empty() && (batch.len() >= BATCH || !open || rx.is_empty()) {
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "gatehouse".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        spans: std::mem::take(&mut batch),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            send(&client, &endpoint, request.encode_to_vec()).await;
        }
        if !open {
            return;
        }
    }
}

async fn send<C>(client: &Client<C, Full<Bytes>>, endpoint: &Uri, body: Vec<u8>)
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let req = Request::post(endpoint.clone())
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)));
    let Ok(req) = req else { return };
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => {}
        Ok(Ok(resp)) => {
            tracing::warn!(endpoint = %endpoint, status = resp.status().as_u16(), "OTLP export refused; spans dropped")
        }
        Ok(Err(err)) => {
            tracing::warn!(endpoint = %endpoint, error = %err, "OTLP export failed; spans dropped")
        }
        Err(_) => tracing::warn!(endpoint = %endpoint, "OTLP export timed out; spans dropped"),
    }
}

/// `--otlp-endpoint`: an `http://` or `https://` URL; a bare `http://host:4318` gets the
/// standard `/v1/traces` path.
pub fn parse_endpoint(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("--otlp-endpoint {text:?}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(format!(
            "--otlp-endpoint {text:?}: must be an http:// or https:// URL (OTLP/HTTP, e.g. http://otel-collector:4318)"
        ));
    }
    if matches!(uri.path(), "" | "/") {
        return format!("{}/v1/traces", text.trim_end_matches('/'))
            .parse()
            .map_err(|e| format!("--otlp-endpoint {text:?}: {e}"));
    }
    Ok(uri)
}

/// `version-traceid-parentid-flags` (W3C Trace Context §3.2): version 00 (or a later one,
/// read as 00), ids not all zero.
fn parse_traceparent(value: &HeaderValue) -> Option<([u8; 16], [u8; 8], u8)> {
    let text = value.to_str().ok()?;
    let mut parts = text.split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace: [u8; 16] = hex(trace)?;
    let parent: [u8; 8] = hex(parent)?;
    let [flags]: [u8; 1] = hex(flags)?;
    (trace != [0; 16] && parent != [0; 8]).then_some((trace, parent, flags))
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        // Lower case only, as the specification asks.
        let pair = &text[2 * i..2 * i + 2];
        if pair.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> HeaderValue {
    use std::fmt::Write;
    let mut text = String::with_capacity(55);
    text.push_str("00-");
    for b in trace_id {
        let _ = write!(text, "{b:02x}");
    }
    text.push('-');
    for b in span_id {
        let _ = write!(text, "{b:02x}");
    }
    text.push_str(if sampled { "-01" } else { "-00" });
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn nonzero_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = std::array::from_fn(|_| rand::random());
        if id != [0; N] {
            return id;
        }
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
