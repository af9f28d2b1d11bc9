//! OpenTelemetry traces: W3C trace context in and out, parent-based ratio sampling, spans for
//! the server request, each upstream try and plugin phases that wait on I/O, exported over OTLP
//! (gRPC or HTTP/protobuf) in batches by a background task.
//!
//! Why not the OpenTelemetry SDK's exporter: it brings a second HTTP stack (tonic or reqwest)
//! for one POST, and its queue blocks or drops without telling us. Here the wire format is the
//! official `opentelemetry-proto` messages, sent with Portcullis's own client; a request only
//! ever does a non-blocking `try_send`, and every dropped span is counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use portcullis_client::{
    Protocol, RequestBody, TargetConfig, TlsSettings, Upstream, UpstreamConfig,
};
use portcullis_config::TracingConf;
use prost::Message;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// `traceparent` header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` header.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Spans waiting for export at most; beyond, spans are dropped and counted.
const QUEUE: usize = 8192;
/// Spans per export request at most.
const BATCH: usize = 512;

/// The trace context of one request.
#[derive(Debug, Clone)]
pub struct TraceCtx {
    /// Trace ID.
    pub trace_id: [u8; 16],
    /// The server span's ID.
    pub span_id: [u8; 8],
    /// The caller's span, when a `traceparent` came in.
    pub parent: Option<[u8; 8]>,
    /// Whether spans are recorded and exported.
    pub sampled: bool,
    /// `tracestate` passed on unchanged.
    pub state: Option<HeaderValue>,
}

impl TraceCtx {
    /// The `traceparent` for a child span `span`.
    pub fn traceparent(&self, span: [u8; 8]) -> HeaderValue {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex_into(&mut s, &self.trace_id);
        s.push('-');
        hex_into(&mut s, &span);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        HeaderValue::from_str(&s).unwrap_or_else(|_| {
            HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00")
        })
    }

    /// Span ID of the n-th upstream try (derived, so it can be named before the try).
    pub fn attempt_span(&self, n: u32) -> [u8; 8] {
        let mut x =
            u64::from_be_bytes(self.span_id) ^ (u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        x.max(1).to_be_bytes()
    }
}

fn hex_into(s: &mut String, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses a W3C `traceparent` (version 00; unknown versions are read the 00 way).
pub fn parse_traceparent(v: &HeaderValue) -> Option<([u8; 16], [u8; 8], bool)> {
    let s = v.to_str().ok()?;
    let mut parts = s.split('-');
    let version = parts.next()?;
    if version.len() != 2 || version == "ff" {
        return None;
    }
    let trace = parse_hex::<16>(parts.next()?)?;
    let parent = parse_hex::<8>(parts.next()?)?;
    let flags = parse_hex::<1>(parts.next()?.get(..2)?)?;
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags[0] & 1 == 1))
}

/// A finished span on its way to the exporter.
#[derive(Debug)]
pub struct SpanData {
    /// Trace ID.
    pub trace_id: [u8; 16],
    /// Span ID.
    pub span_id: [u8; 8],
    /// Parent span.
    pub parent: Option<[u8; 8]>,
    /// Name.
    pub name: String,
    /// OTLP span kind (2 server, 3 client, 1 internal).
    pub kind: i32,
    /// Start, Unix nanoseconds.
    pub start: u64,
    /// End, Unix nanoseconds.
    pub end: u64,
    /// Attributes.
    pub attributes: Vec<(&'static str, Attr)>,
    /// Error message, when the span failed.
    pub error: Option<String>,
}

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// Text.
    Str(String),
    /// Integer.
    Int(i64),
}

/// Unix nanoseconds of a moment `ago` before now.
pub fn unix_nanos_ago(ago: Duration) -> u64 {
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The process's tracer: sampling decisions and the export queue.
pub struct Tracer {
    cfg: TracingConf,
    tx: mpsc::Sender<SpanData>,
    /// Spans handed to the exporter.
    pub queued: AtomicU64,
    /// Spans dropped because the queue was full or the collector failed.
    pub dropped: Arc<AtomicU64>,
    /// Spans the collector accepted.
    pub exported: Arc<AtomicU64>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("cfg", &self.cfg).finish()
    }
}

impl Tracer {
    /// Starts the exporter task. Needs a Tokio runtime.
    pub fn start(cfg: TracingConf) -> Result<Self, String> {
        let uri: http::Uri = cfg
            .endpoint
            .parse()
            .map_err(|_| format!("`{}` is not a URL", cfg.endpoint))?;
        let tls = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or("the endpoint has no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let grpc = cfg.protocol == "grpc";
        let port = uri.port_u16().unwrap_or(if grpc { 4317 } else { 4318 });
        let mut ucfg = UpstreamConfig::new(
            "otlp",
            vec![TargetConfig {
                host: host.clone(),
                port,
                weight: 1,
                zone: None,
            }],
        );
        ucfg.protocol = match (grpc, tls) {
            (true, false) => Protocol::H2c,
            (true, true) => Protocol::Auto,
            (false, _) => Protocol::Http1,
        };
        ucfg.timeouts.connect = Duration::from_secs(2);
        ucfg.timeouts.response_header = Duration::from_secs(5);
        if tls {
            let alpn: &[&[u8]] = if grpc { &[b"h2"] } else { &[b"http/1.1"] };
            let client = portcullis_client::tls_client_config(None, None, false, alpn)
                .map_err(|e| e.to_string())?;
            ucfg.tls = Some(TlsSettings {
                connector: tokio_rustls::TlsConnector::from(client),
                server_name: None,
            });
        }
        let authority = uri.authority().map_or(host, |a| a.as_str().to_owned());
        let path = if grpc {
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export".to_owned()
        } else {
            match uri.path() {
                "" | "/" => "/v1/traces".to_owned(),
                p => p.to_owned(),
            }
        };
        let upstream: Upstream<RequestBody> = Upstream::new(ucfg);
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let exported = Arc::new(AtomicU64::new(0));
        let exporter = Exporter {
            upstream,
            authority,
            path,
            grpc,
            service: cfg.service_name.clone(),
            dropped: dropped.clone(),
            exported: exported.clone(),
        };
        tokio::spawn(exporter.run(rx));
        Ok(Self {
            cfg,
            tx,
            queued: AtomicU64::new(0),
            dropped,
            exported,
        })
    }

    /// The settings it was started with.
    pub fn config(&self) -> &TracingConf {
        &self.cfg
    }

    /// The trace context of a request: continues the caller's trace (following its sampling
    /// decision) or starts a new one sampled at the configured ratio.
    pub fn context(&self, headers: &HeaderMap) -> TraceCtx {
        let span_id = fastrand::u64(1..).to_be_bytes();
        let state = headers.get(&TRACESTATE).cloned();
        match headers.get(&TRACEPARENT).and_then(parse_traceparent) {
            Some((trace_id, parent, sampled)) => TraceCtx {
                trace_id,
                span_id,
                parent: Some(parent),
                sampled,
                state,
            },
            None => TraceCtx {
                trace_id: fastrand::u128(1..).to_be_bytes(),
                span_id,
                parent: None,
                sampled: self.cfg.sampling >= 1.0 || fastrand::f64() < self.cfg.sampling,
                state: None,
            },
        }
    }

    /// Queues a finished span; never waits.
    pub fn export(&self, span: SpanData) {
        match self.tx.try_send(span) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Exporter {
    upstream: Upstream<RequestBody>,
    authority: String,
    path: String,
    grpc: bool,
    service: String,
    dropped: Arc<AtomicU64>,
    exported: Arc<AtomicU64>,
}

fn kv(key: &str, v: Attr) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(match v {
                Attr::Str(s) => any_value::Value::StringValue(s),
                Attr::Int(i) => any_value::Value::IntValue(i),
            }),
        }),
        ..Default::default()
    }
}

impl Exporter {
    async fn run(self, mut rx: mpsc::Receiver<SpanData>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut warned_at: Option<std::time::Instant> = None;
        loop {
            let first = match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(s)) => Some(s),
                Ok(None) => return,
                Err(_) => None,
            };
            batch.extend(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as u64;
            let body = self.encode(std::mem::take(&mut batch));
            match self.send(body).await {
                Ok(()) => {
                    self.exported.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        warned_at = Some(std::time::Instant::now());
                        warn!(error = %e, "span export failed; spans dropped (see portcullis_trace_spans_dropped_total)");
                    }
                }
            }
        }
    }

    fn encode(&self, spans: Vec<SpanData>) -> Bytes {
        let spans: Vec<Span> = spans
            .into_iter()
            .map(|s| Span {
                trace_id: s.trace_id.to_vec(),
                span_id: s.span_id.to_vec(),
                parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
                name: s.name,
                kind: s.kind,
                start_time_unix_nano: s.start,
                end_time_unix_nano: s.end,
                attributes: s.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
                status: Some(match s.error {
                    Some(m) => Status {
                        message: m,
                        code: status::StatusCode::Error as i32,
                    },
                    None => Status {
                        message: String::new(),
                        code: status::StatusCode::Unset as i32,
                    },
                }),
                flags: 0x100,
                ..Default::default()
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Attr::Str(self.service.clone()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "portcullis".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let len = req.encoded_len();
        let mut buf = BytesMut::with_capacity(len + 5);
        if self.grpc {
            buf.put_u8(0);
            buf.put_u32(len as u32);
        }
        // Encoding into a buffer sized by encoded_len cannot fail.
        let _ = req.encode(&mut buf);
        buf.freeze()
    }

    async fn send(&self, body: Bytes) -> Result<(), String> {
        let mut b = http::Request::post(self.path.as_str())
            .header(http::header::HOST, self.authority.as_str());
        b = if self.grpc {
            b.header(http::header::CONTENT_TYPE, "application/grpc")
                .header(http::header::TE, "trailers")
        } else {
            b.header(http::header::CONTENT_TYPE, "application/x-protobuf")
        };
        let req = b
            .body(RequestBody::bytes(body))
            .map_err(|e| e.to_string())?;
        let resp = self
            .upstream
            .send(req, None)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let collected = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("collector answered {status}"));
        }
        if self.grpc {
            let grpc_status = collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0");
            if grpc_status != "0" {
                return Err(format!("collector answered grpc-status {grpc_status}"));
            }
        }
        debug!("spans exported");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_rejects() {
        let v = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let (t, p, s) = parse_traceparent(&v).unwrap();
        assert!(s);
        let ctx = TraceCtx {
            trace_id: t,
            span_id: p,
            parent: None,
            sampled: true,
            state: None,
        };
        assert_eq!(ctx.traceparent(p), v);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(
                parse_traceparent(&HeaderValue::from_static(bad)).is_none(),
                "{bad}"
            );
        }
        assert_ne!(ctx.attempt_span(1), ctx.attempt_span(2));
    }
}
