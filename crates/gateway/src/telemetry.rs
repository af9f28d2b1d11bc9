//! What is recorded about each request: the record filled in as the request goes, the response
//! body wrapper that closes it when the last byte is out (bytes, duration, SLO window, access
//! log line), and the access log writer.

use std::io::Write;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use portcullis_client::BoxError;
use portcullis_config::{AccessLog, AccessLogTarget};
use tokio::time::Instant;

use crate::body::RespBody;
use crate::snapshot::Snapshot;

/// Facts about one request, filled in as it goes.
#[derive(Debug)]
pub struct Record {
    /// When the head arrived.
    pub start: Instant,
    /// Request ID.
    pub request_id: Option<HeaderValue>,
    /// Method.
    pub method: Method,
    /// Host as the client sent it.
    pub host: Option<HeaderValue>,
    /// URI as the client sent it.
    pub uri: Uri,
    /// HTTP version.
    pub version: Version,
    /// Real client address.
    pub client: IpAddr,
    /// Listener name.
    pub listener: Arc<str>,
    /// Matched route index.
    pub route: Option<usize>,
    /// Upstream index.
    pub upstream: Option<usize>,
    /// Upstream leg of a split (0 otherwise).
    pub leg: usize,
    /// Target that answered.
    pub target: Option<Arc<str>>,
    /// Tries made.
    pub attempts: u32,
    /// Reason of a gateway-made error.
    pub error: Option<&'static str>,
    /// Authenticated consumer.
    pub consumer: Option<String>,
    /// The client certificate `client_cert` admitted the request with.
    pub client_cert: Option<Arc<portcullis_plugins::ClientIdentity>>,
    /// Status sent.
    pub status: u16,
    /// Request body bytes (Content-Length when known).
    pub bytes_in: u64,
    /// Counts a streamed body without Content-Length as it passes.
    pub bytes_in_counter: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Time the upstream took to answer with a head.
    pub upstream_time: Option<Duration>,
    /// Trace and span IDs of the request's server span.
    pub trace: Option<([u8; 16], [u8; 8])>,
    /// The trace context, when tracing is on.
    pub trace_ctx: Option<crate::otel::TraceCtx>,
    /// Child spans (upstream tries, plugin I/O) to export with the server span.
    pub spans: Vec<crate::otel::SpanData>,
}

impl Record {
    /// The record of a request head the HTTP/1.1 parser refused: it never reached the
    /// pipeline, so only what the raw request line showed is known. An unreadable method is
    /// `-` (as nginx logs it) and an unreadable target `*`.
    pub fn refused_head(
        listener: Arc<str>,
        client: IpAddr,
        request_line: (Option<&[u8]>, Option<&[u8]>),
        request_id: HeaderValue,
        status: u16,
        error: &'static str,
    ) -> Self {
        let method = request_line
            .0
            .and_then(|m| Method::from_bytes(m).ok())
            .unwrap_or_else(|| Method::from_bytes(b"-").unwrap_or_default());
        let uri = request_line
            .1
            .and_then(|t| Uri::try_from(t).ok())
            .unwrap_or_else(|| Uri::from_static("*"));
        Record {
            start: Instant::now(),
            request_id: Some(request_id),
            method,
            host: None,
            uri,
            version: Version::HTTP_11,
            client,
            listener,
            route: None,
            upstream: None,
            leg: 0,
            target: None,
            attempts: 0,
            error: Some(error),
            consumer: None,
            client_cert: None,
            status,
            bytes_in: 0,
            bytes_in_counter: None,
            upstream_time: None,
            trace: None,
            trace_ctx: None,
            spans: Vec::new(),
        }
    }
}

/// Writes the access-log line of a request that was answered without the pipeline.
pub fn log_unrouted(rec: &Record, bytes_out: u64, snap: &Snapshot) {
    if let Some(log) = &snap.access_log {
        log.log(rec, bytes_out, rec.start.elapsed(), snap);
    }
}

pin_project_lite::pin_project! {
    /// A response body that closes the request's record when it ends (or is dropped).
    pub struct ObservedBody {
        #[pin]
        inner: RespBody,
        rec: Option<Record>,
        bytes_out: u64,
        snap: Arc<Snapshot>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its end: the client went away or the upstream failed mid-body.
            let this = this.project();
            finish(this.rec, *this.bytes_out, this.snap, false);
        }
    }
}

impl ObservedBody {
    /// Wraps a response body.
    pub fn new(inner: RespBody, rec: Record, snap: Arc<Snapshot>) -> Self {
        Self {
            inner,
            rec: Some(rec),
            bytes_out: 0,
            snap,
        }
    }
}

fn finish(rec: &mut Option<Record>, bytes_out: u64, snap: &Snapshot, complete: bool) {
    let Some(mut rec) = rec.take() else { return };
    if let Some(c) = rec.bytes_in_counter.take() {
        rec.bytes_in = c.load(std::sync::atomic::Ordering::Relaxed);
    }
    let total = rec.start.elapsed();
    let metrics = match rec.route {
        Some(i) => &snap.routes[i].metrics,
        None => &snap.no_route,
    };
    metrics.finish(&rec, bytes_out, total, complete);
    if let Some(log) = &snap.access_log {
        log.log(&rec, bytes_out, total, snap);
    }
    if let (Some(tracer), Some(ctx)) = (&snap.tracer, rec.trace_ctx.take())
        && ctx.sampled
    {
        export_spans(tracer, &ctx, &mut rec, bytes_out, total, snap);
    }
}

/// The server span of a finished request, and its children.
fn export_spans(
    tracer: &crate::otel::Tracer,
    ctx: &crate::otel::TraceCtx,
    rec: &mut Record,
    bytes_out: u64,
    total: Duration,
    snap: &Snapshot,
) {
    use crate::otel::{Attr, SpanData};
    let route = rec.route.map(|i| snap.routes[i].name.to_string());
    let mut attributes = vec![
        (
            "http.request.method",
            Attr::Str(rec.method.as_str().to_owned()),
        ),
        ("url.path", Attr::Str(rec.uri.path().to_owned())),
        (
            "http.response.status_code",
            Attr::Int(i64::from(rec.status)),
        ),
        ("client.address", Attr::Str(rec.client.to_string())),
        ("http.response.body.size", Attr::Int(bytes_out as i64)),
        ("portcullis.listener", Attr::Str(rec.listener.to_string())),
    ];
    if let Some(r) = &route {
        attributes.push(("http.route", Attr::Str(r.clone())));
    }
    if let Some(h) = rec.host.as_ref().and_then(|h| h.to_str().ok()) {
        attributes.push(("server.address", Attr::Str(h.to_owned())));
    }
    if let Some(id) = rec.request_id.as_ref().and_then(|h| h.to_str().ok()) {
        attributes.push(("portcullis.request_id", Attr::Str(id.to_owned())));
    }
    if let Some(u) = rec.upstream {
        attributes.push((
            "portcullis.upstream",
            Attr::Str(snap.upstreams[u].name().to_owned()),
        ));
        attributes.push(("portcullis.attempts", Attr::Int(i64::from(rec.attempts))));
    }
    if let Some(c) = &rec.consumer {
        attributes.push(("enduser.id", Attr::Str(c.clone())));
    }
    let end = crate::otel::unix_nanos_ago(Duration::ZERO);
    tracer.export(SpanData {
        trace_id: ctx.trace_id,
        span_id: ctx.span_id,
        parent: ctx.parent,
        name: format!("{} {}", rec.method, route.as_deref().unwrap_or("no_route")),
        kind: 2,
        start: end.saturating_sub(total.as_nanos() as u64),
        end,
        attributes,
        error: (rec.status >= 500).then(|| rec.error.unwrap_or("server error").to_owned()),
    });
    for s in rec.spans.drain(..) {
        tracer.export(s);
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let r = this.inner.as_mut().poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    *this.bytes_out += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    finish(this.rec, *this.bytes_out, this.snap, true);
                }
            }
            Poll::Ready(None) => finish(this.rec, *this.bytes_out, this.snap, true),
            Poll::Ready(Some(Err(_))) => {
                if let Some(rec) = this.rec.as_mut() {
                    rec.error.get_or_insert("upstream_body");
                }
                finish(this.rec, *this.bytes_out, this.snap, false);
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for ObservedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody").finish_non_exhaustive()
    }
}

/// Lines waiting for the writer thread, at most; beyond, lines are dropped and counted.
const QUEUE: usize = 65_536;

/// A buffered, non-blocking JSON access log: requests format a line and hand it to a writer
/// thread through a bounded queue; a slow disk never stalls a request.
pub struct AccessLogger {
    cfg: AccessLog,
    tx: SyncSender<String>,
    /// Lines dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Lines written (handed to the writer).
    pub lines: AtomicU64,
}

impl std::fmt::Debug for AccessLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLogger")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl AccessLogger {
    /// Opens the destination and starts the writer thread.
    pub fn start(cfg: AccessLog) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match &cfg.target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::Stderr => Box::new(std::io::stderr()),
            AccessLogTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, out))?;
        Ok(Self {
            cfg,
            tx,
            dropped: AtomicU64::new(0),
            lines: AtomicU64::new(0),
        })
    }

    /// The settings it was started with.
    pub fn config(&self) -> &AccessLog {
        &self.cfg
    }

    /// Logs one finished request (sampling successful ones as configured).
    pub fn log(&self, rec: &Record, bytes_out: u64, total: Duration, snap: &Snapshot) {
        if rec.status < 400
            && self.cfg.sample_success < 1.0
            && fastrand::f64() >= self.cfg.sample_success
        {
            return;
        }
        let line = self.format(rec, bytes_out, total, snap);
        match self.tx.try_send(line) {
            Ok(()) => {
                self.lines.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes the line by hand: this runs for every logged request, and building a JSON
    /// value first cost more than proxying the request.
    fn format(&self, rec: &Record, bytes_out: u64, total: Duration, snap: &Snapshot) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(512);
        let mut first = true;
        let mut field = |out: &mut String, name: &str| -> bool {
            if !self.wants(name) {
                return false;
            }
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            true
        };
        if field(&mut out, "time") {
            let _ = write!(
                out,
                "\"{}\"",
                humantime::format_rfc3339_millis(SystemTime::now() - total)
            );
        }
        if field(&mut out, "request_id") {
            json_opt(
                &mut out,
                rec.request_id.as_ref().and_then(|v| v.to_str().ok()),
            );
        }
        if field(&mut out, "trace_id") {
            match rec.trace {
                Some((t, _)) => hex_json(&mut out, &t),
                None => out.push_str("null"),
            }
        }
        if field(&mut out, "span_id") {
            match rec.trace {
                Some((_, sp)) => hex_json(&mut out, &sp),
                None => out.push_str("null"),
            }
        }
        if field(&mut out, "client") {
            let _ = write!(out, "\"{}\"", rec.client);
        }
        if field(&mut out, "method") {
            json_str(&mut out, rec.method.as_str());
        }
        if field(&mut out, "host") {
            json_opt(&mut out, rec.host.as_ref().and_then(|v| v.to_str().ok()));
        }
        if field(&mut out, "path") {
            let path = if self.cfg.include_query {
                rec.uri.path_and_query().map_or("/", |p| p.as_str())
            } else {
                rec.uri.path()
            };
            json_str(&mut out, path);
        }
        if field(&mut out, "protocol") {
            out.push_str(match rec.version {
                Version::HTTP_2 => "\"HTTP/2\"",
                Version::HTTP_10 => "\"HTTP/1.0\"",
                _ => "\"HTTP/1.1\"",
            });
        }
        if field(&mut out, "status") {
            let _ = write!(out, "{}", rec.status);
        }
        if field(&mut out, "bytes_in") {
            let _ = write!(out, "{}", rec.bytes_in);
        }
        if field(&mut out, "bytes_out") {
            let _ = write!(out, "{bytes_out}");
        }
        if field(&mut out, "duration_ms") {
            let _ = write!(out, "{:.3}", total.as_secs_f64() * 1000.0);
        }
        if field(&mut out, "upstream_ms") {
            match rec.upstream_time {
                Some(d) => {
                    let _ = write!(out, "{:.3}", d.as_secs_f64() * 1000.0);
                }
                None => out.push_str("null"),
            }
        }
        if field(&mut out, "route") {
            json_opt(&mut out, rec.route.map(|i| &*snap.routes[i].name));
        }
        if field(&mut out, "upstream") {
            json_opt(&mut out, rec.upstream.map(|i| snap.upstreams[i].name()));
        }
        if field(&mut out, "target") {
            json_opt(&mut out, rec.target.as_deref());
        }
        if field(&mut out, "attempts") {
            let _ = write!(out, "{}", rec.attempts);
        }
        if field(&mut out, "error") {
            json_opt(&mut out, rec.error);
        }
        if field(&mut out, "consumer") {
            json_opt(&mut out, rec.consumer.as_deref());
        }
        if field(&mut out, "client_cert") {
            json_opt(&mut out, rec.client_cert.as_ref().map(|c| c.subject()));
        }
        if field(&mut out, "listener") {
            json_str(&mut out, &rec.listener);
        }
        if first {
            out.push('{');
        }
        out.push_str("}\n");
        out
    }

    fn wants(&self, name: &str) -> bool {
        self.cfg.fields.is_empty() || self.cfg.fields.iter().any(|f| f == name)
    }
}

fn json_opt(out: &mut String, v: Option<&str>) {
    match v {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

/// A JSON string literal, escaped.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn hex_json(out: &mut String, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for x in b {
        out.push(HEX[(x >> 4) as usize] as char);
        out.push(HEX[(x & 15) as usize] as char);
    }
    out.push('"');
}

/// Writes queued lines in batches. It polls the queue every few milliseconds instead of
/// blocking on it: a blocked receiver would make every request's `try_send` wake it (a futex
/// call on the request path); polling costs one wake-up per interval, whatever the traffic.
#[allow(clippy::disallowed_methods)] // a dedicated thread, not the async runtime
fn write_loop(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(line.as_bytes());
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            let _ = out.flush();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
