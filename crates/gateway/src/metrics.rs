//! Prometheus metrics. Per-route handles are resolved once per config snapshot, so recording
//! on the hot path is a few relaxed atomic adds: no label lookup, no lock.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::slo::RollingStats;
use crate::snapshot::Snapshot;
use crate::telemetry::Record;

/// Latency buckets from 1 ms to 60 s, dense enough for p50/p99.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide metrics.
pub struct Metrics {
    registry: Registry,
    families: Arc<Families>,
    /// Upstream names, shared by the routes that use them.
    names: Mutex<HashSet<Arc<str>>>,
    windows: Mutex<HashMap<String, Arc<RollingStats>>>,
    answered: Mutex<HashMap<String, Arc<crate::policy::Answered>>>,
    unanswered: Arc<crate::policy::Answered>,
    /// Config reloads by result (`ok` / `failed`).
    pub reloads: IntCounterVec,
    config_info: IntGaugeVec,
    /// Connections accepted, by listener.
    pub connections: IntCounterVec,
    /// Connections open now, by listener.
    pub open_connections: IntGaugeVec,
    /// TLS handshakes, by listener and result (`full`, `resumed`, `failed`).
    pub tls_handshakes: IntCounterVec,
    /// TLS handshakes failed, by listener and reason.
    pub tls_failures: IntCounterVec,
    /// TLS files read again after they changed on disk, by listener and result.
    pub tls_reloads: IntCounterVec,
    /// HTTP/1.1 request heads the parser refused before routing, by listener and status.
    pub refused_heads: IntCounterVec,
    /// Requests refused at the edge before routing (path, Host), by listener and reason.
    pub refused_requests: IntCounterVec,
    /// Connections closed at accept, by listener and reason.
    pub refused_connections: IntCounterVec,
    /// Config changes: generation, propagation, resyncs, refusals.
    pub config: crate::fleet::metrics::ConfigMetrics,
    /// Policy state: 0 idle, 1 triggered, 2 dry-run triggered.
    pub policy_state: IntGaugeVec,
    /// Policy transitions, by policy and the state entered.
    pub policy_transitions: IntCounterVec,
}

/// Cumulative counts of a route, read by the policy engine (never on the request path).
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Requests answered.
    pub requests: u64,
    /// Of which 5xx.
    pub server_errors: u64,
}

/// Method label values; anything else is `OTHER`, so the label stays bounded.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(m: &http::Method) -> usize {
    METHODS[..9]
        .iter()
        .position(|x| *x == m.as_str())
        .unwrap_or(9)
}

/// Handles of one route (or of the "no route" bucket): resolved when the snapshot is built,
/// series created at the route's first request, so recording is a few relaxed atomic adds and
/// a route that never sees traffic exports nothing (10,000 configured routes of which 100 are
/// used scrape like 100 routes).
pub struct RouteMetrics {
    route: Arc<str>,
    legs: Box<[Arc<str>]>,
    families: Arc<Families>,
    /// One request counter per leg, method and status class, allocated at the route's first
    /// request: a configured route that never sees traffic costs a few words here.
    cells: OnceLock<Box<[OnceLock<IntCounter>]>>,
    series: OnceLock<Box<RouteSeries>>,
    /// Rolling window of this route (kept across reloads).
    pub stats: Arc<RollingStats>,
}

/// The metric families a route records into, shared by every route of every snapshot.
struct Families {
    requests: IntCounterVec,
    latency: HistogramVec,
    upstream_latency: HistogramVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    in_flight: IntGauge,
}

/// The per-route series, made at the route's first request.
struct RouteSeries {
    latency: Histogram,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    /// Upstream latency of each leg.
    upstream_latency: Box<[Histogram]>,
}

impl RouteMetrics {
    /// Counts a request that started.
    pub fn start(&self) {
        self.families.in_flight.inc();
    }

    /// The request counter of one leg, method and status class. The first request of a leg
    /// and method makes the series of all five classes at once, so `5xx` exists at 0 before the
    /// first error and rate() in alerting rules sees the first one as an increase.
    fn cell(&self, leg: usize, m: usize, class: usize) -> Option<&IntCounter> {
        let cells = self.cells.get_or_init(|| {
            (0..self.legs.len() * METHODS.len() * CLASSES.len())
                .map(|_| OnceLock::new())
                .collect()
        });
        let base = (leg * METHODS.len() + m) * CLASSES.len();
        let cell = cells.get(base + class)?;
        if let Some(c) = cell.get() {
            return Some(c);
        }
        let upstream = self.legs.get(leg).map_or("", |s| &**s);
        for (c, name) in CLASSES.iter().enumerate() {
            if let Some(slot) = cells.get(base + c) {
                slot.get_or_init(|| {
                    self.families.requests.with_label_values(&[
                        &*self.route,
                        METHODS[m],
                        name,
                        upstream,
                    ])
                });
            }
        }
        cell.get()
    }

    /// The route's series, made at its first request.
    fn series(&self) -> &RouteSeries {
        self.series.get_or_init(|| {
            let route: &str = &self.route;
            let f = &self.families;
            Box::new(RouteSeries {
                latency: f.latency.with_label_values(&[route]),
                bytes_in: f.bytes_in.with_label_values(&[route]),
                bytes_out: f.bytes_out.with_label_values(&[route]),
                upstream_latency: self.upstream_histograms(),
            })
        })
    }

    /// The upstream latency histogram of each leg; none for routes without an upstream.
    fn upstream_histograms(&self) -> Box<[Histogram]> {
        self.legs
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| self.families.upstream_latency.with_label_values(&[&**l]))
            .collect()
    }

    /// Requests observed by the latency histogram so far (one atomic read; 0 before the
    /// route's first request, when its series do not exist yet).
    pub fn latency_count(&self) -> u64 {
        self.series
            .get()
            .map_or(0, |s| s.latency.get_sample_count())
    }

    /// The latency histogram as cumulative counts per bucket with the buckets' upper bounds
    /// in milliseconds (the last is +Inf). Reads the histogram; off the request path.
    pub fn latency_buckets(&self) -> Vec<(f64, u64)> {
        self.latency_buckets_secs()
            .into_iter()
            .map(|(b, n)| (b * 1000.0, n))
            .collect()
    }

    /// Records a finished request.
    pub fn finish(&self, rec: &Record, bytes_out: u64, total: Duration, _complete: bool) {
        self.families.in_flight.dec();
        let class = (rec.status / 100).clamp(1, 5) as usize - 1;
        let leg = rec.leg.min(self.legs.len().saturating_sub(1));
        let m = method_index(&rec.method);
        if let Some(cell) = self.cell(leg, m, class) {
            cell.inc();
        }
        let s = self.series();
        let secs = total.as_secs_f64();
        s.latency.observe(secs);
        if let (Some(t), Some(h)) = (rec.upstream_time, s.upstream_latency.get(leg)) {
            h.observe(t.as_secs_f64());
        }
        s.bytes_in.inc_by(rec.bytes_in);
        s.bytes_out.inc_by(bytes_out);
        self.stats.record(total, rec.status >= 500);
    }
}

impl RouteMetrics {
    /// Requests and 5xx answers so far, of the given split legs (all when `None`).
    pub fn totals(&self, legs: Option<&[usize]>) -> Totals {
        let mut t = Totals::default();
        let Some(cells) = self.cells.get() else {
            return t;
        };
        for (i, cell) in cells.iter().enumerate() {
            let leg = i / (METHODS.len() * CLASSES.len());
            if legs.is_some_and(|l| !l.contains(&leg)) {
                continue;
            }
            let n = cell.get().map_or(0, IntCounter::get);
            t.requests += n;
            if i % CLASSES.len() == 4 {
                t.server_errors += n;
            }
        }
        t
    }

    /// The route's latency histogram so far: cumulative (upper bound in seconds, count), all
    /// zero before the route's first request.
    pub fn latency_buckets_secs(&self) -> Vec<(f64, u64)> {
        match self.series.get() {
            Some(s) => buckets(&s.latency),
            None => LATENCY_BUCKETS
                .iter()
                .map(|b| (*b, 0))
                .chain([(f64::INFINITY, 0)])
                .collect(),
        }
    }

    /// The latency histogram of a leg's upstream, and the upstream's name.
    pub fn upstream_buckets(&self, leg: usize) -> Option<(&str, Vec<(f64, u64)>)> {
        let name = self.legs.get(leg).filter(|l| !l.is_empty())?;
        let h = match self.series.get() {
            Some(s) => s.upstream_latency.get(leg)?.clone(),
            // Off the request path: the series exists (made with the route), look it up.
            None => self.families.upstream_latency.with_label_values(&[&**name]),
        };
        Some((name, buckets(&h)))
    }
}

/// A histogram's cumulative buckets, `+Inf` last.
fn buckets(h: &Histogram) -> Vec<(f64, u64)> {
    use prometheus::core::Metric as _;
    let m = h.metric();
    let hist = m.get_histogram();
    let mut out: Vec<(f64, u64)> = hist
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    out.push((f64::INFINITY, hist.get_sample_count()));
    out
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "portcullis_requests_total",
            "Requests answered, by route, method, status class and upstream.",
            &["route", "method", "status_class", "upstream"],
        );
        let histogram = |name: &str, help: &str, label: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                &[label],
            )
            .expect("valid histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric name");
            h
        };
        let latency = histogram(
            "portcullis_request_duration_seconds",
            "Time from request head to the last response byte, by route.",
            "route",
        );
        let upstream_latency = histogram(
            "portcullis_upstream_duration_seconds",
            "Time from sending to an upstream to its response head (retries included), by upstream.",
            "upstream",
        );
        let bytes_in = counter_vec(
            &registry,
            "portcullis_request_bytes_total",
            "Request body bytes received, by route.",
            &["route"],
        );
        let bytes_out = counter_vec(
            &registry,
            "portcullis_response_bytes_total",
            "Response body bytes sent, by route.",
            &["route"],
        );
        let in_flight = IntGauge::new(
            "portcullis_requests_in_flight",
            "Requests being served now.",
        )
        .expect("valid gauge");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric name");
        let reloads = counter_vec(
            &registry,
            "portcullis_config_reloads_total",
            "Config reloads, by result.",
            &["result"],
        );
        // Both series exist from the start, so a first failure is an increase from 0.
        reloads.with_label_values(&["ok"]);
        reloads.with_label_values(&["failed"]);
        let config_info = gauge_vec(
            &registry,
            "portcullis_config_info",
            "The running config; the hash label identifies it.",
            &["hash"],
        );
        let connections = counter_vec(
            &registry,
            "portcullis_connections_total",
            "Client connections accepted, by listener.",
            &["listener"],
        );
        let open_connections = gauge_vec(
            &registry,
            "portcullis_open_connections",
            "Client connections open now, by listener.",
            &["listener"],
        );
        let tls_handshakes = counter_vec(
            &registry,
            "portcullis_tls_handshakes_total",
            "TLS handshakes, by listener and result: full, resumed (a session ticket or ID was accepted) or failed.",
            &["listener", "result"],
        );
        let tls_failures = counter_vec(
            &registry,
            "portcullis_tls_handshake_failures_total",
            "TLS handshakes that failed, by listener and reason (no_certificate, unknown_ca, expired, revoked, bad_certificate, timeout, other).",
            &["listener", "reason"],
        );
        let tls_reloads = counter_vec(
            &registry,
            "portcullis_tls_reloads_total",
            "TLS certificate, key, CA or CRL files read again after they changed on disk, by listener and result (ok, failed: the previous ones keep serving).",
            &["listener", "result"],
        );
        let refused_heads = counter_vec(
            &registry,
            "portcullis_refused_request_heads_total",
            "HTTP/1.1 request heads refused by the parser before routing (malformed, differing Content-Length, too large), by listener and status.",
            &["listener", "status"],
        );
        let refused_requests = counter_vec(
            &registry,
            "portcullis_requests_refused_total",
            "Requests refused with 400 before routing because of their path or Host, by listener and reason.",
            &["listener", "reason"],
        );
        let refused_connections = counter_vec(
            &registry,
            "portcullis_connections_refused_total",
            "Client connections closed when accepted (per-address cap), by listener and reason.",
            &["listener", "reason"],
        );
        let config = crate::fleet::metrics::ConfigMetrics::new(&registry);
        let policy_state = gauge_vec(
            &registry,
            "portcullis_policy_state",
            "State of a traffic policy: 0 idle, 1 triggered, 2 dry-run triggered.",
            &["policy"],
        );
        let policy_transitions = counter_vec(
            &registry,
            "portcullis_policy_transitions_total",
            "Traffic policy transitions, by policy and the state entered (triggered, open, half_open, idle, dry_run_triggered).",
            &["policy", "to"],
        );
        Self {
            config,
            policy_state,
            policy_transitions,
            registry,
            families: Arc::new(Families {
                requests,
                latency,
                upstream_latency,
                bytes_in,
                bytes_out,
                in_flight,
            }),
            names: Mutex::new(HashSet::new()),
            windows: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
            unanswered: Arc::default(),
            reloads,
            config_info,
            connections,
            open_connections,
            tls_handshakes,
            tls_failures,
            tls_reloads,
            refused_heads,
            refused_requests,
            refused_connections,
        }
    }

    /// Handles for a route whose traffic goes to `legs` (upstream names; empty for none).
    /// Its rolling window survives reloads while the route keeps its name and `window`.
    pub fn route(&self, route: &Arc<str>, legs: &[&str], window: Duration) -> RouteMetrics {
        let legs: Box<[Arc<str>]> = if legs.is_empty() {
            Box::new([Arc::from("")])
        } else {
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            legs.iter()
                .map(|l| match names.get(*l) {
                    Some(k) => k.clone(),
                    None => {
                        // The upstream's histogram exists from the first route that uses it
                        // (no upstream, no series: rather than an `upstream=""` one).
                        self.families.upstream_latency.with_label_values(&[*l]);
                        let k: Arc<str> = Arc::from(*l);
                        names.insert(k.clone());
                        k
                    }
                })
                .collect()
        };
        let stats = {
            let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let key = format!("{route}|{}", window.as_millis());
            w.entry(key)
                .or_insert_with(|| Arc::new(RollingStats::new(window)))
                .clone()
        };
        RouteMetrics {
            route: route.clone(),
            legs,
            families: self.families.clone(),
            cells: OnceLock::new(),
            series: OnceLock::new(),
            stats,
        }
    }

    /// The count of a route's requests answered by policies (kept across reloads by name).
    pub fn answered(&self, route: &str) -> Arc<crate::policy::Answered> {
        let mut m = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(route.to_owned()).or_default().clone()
    }

    /// The answered-count of routes no policy acts on: one for all of them, never written.
    pub fn unanswered(&self) -> Arc<crate::policy::Answered> {
        self.unanswered.clone()
    }

    /// A config was applied: its generation and, from a store, when it was committed.
    pub fn config_applied(&self, generation: u64, committed_at: Option<f64>) {
        self.config.applied(generation, committed_at);
    }

    /// Marks `hash` as the running config.
    pub fn set_config(&self, hash: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
    }

    /// A gauge for open connections of a listener.
    pub fn open_gauge(&self, listener: &str) -> IntGauge {
        self.open_connections.with_label_values(&[listener])
    }

    /// The Prometheus text exposition: registered metrics, then upstream client counters.
    pub fn render(&self, snap: &Snapshot) -> String {
        self.config.refresh();
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut out = String::from_utf8(buf).unwrap_or_default();
        render_upstreams(&mut out, snap);
        render_certificates(&mut out, snap);
        render_slos(&mut out, snap);
        portcullis_plugins::metrics::render(&mut out);
        if let Some(t) = &snap.tracer {
            let _ = writeln!(
                out,
                "# HELP portcullis_trace_spans_queued_total Spans handed to the exporter.\n# TYPE portcullis_trace_spans_queued_total counter\nportcullis_trace_spans_queued_total {}\n# HELP portcullis_trace_spans_exported_total Spans the collector accepted.\n# TYPE portcullis_trace_spans_exported_total counter\nportcullis_trace_spans_exported_total {}\n# HELP portcullis_trace_spans_dropped_total Spans dropped (queue full, collector slow or gone).\n# TYPE portcullis_trace_spans_dropped_total counter\nportcullis_trace_spans_dropped_total {}",
                t.queued.load(Ordering::Relaxed),
                t.exported.load(Ordering::Relaxed),
                t.dropped.load(Ordering::Relaxed)
            );
        }
        if let Some(log) = &snap.access_log {
            let _ = writeln!(
                out,
                "# HELP portcullis_access_log_lines_total Access log lines handed to the writer.\n# TYPE portcullis_access_log_lines_total counter\nportcullis_access_log_lines_total {}\n# HELP portcullis_access_log_dropped_total Access log lines dropped because the writer fell behind.\n# TYPE portcullis_access_log_dropped_total counter\nportcullis_access_log_dropped_total {}",
                log.lines.load(Ordering::Relaxed),
                log.dropped.load(Ordering::Relaxed)
            );
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Client counters live in the client crate as plain atomics; they are written out here.
type TargetGet = fn(&portcullis_client::Target<crate::body::ReqBody>) -> u64;
type UpstreamGet = fn(&portcullis_client::UpstreamStats) -> u64;

fn render_upstreams(out: &mut String, snap: &Snapshot) {
    type Get = fn(&portcullis_client::TargetStats) -> u64;
    let series: [(&str, &str, &str, Get); 7] = [
        (
            "portcullis_upstream_requests_total",
            "counter",
            "Requests sent to a target, retries included.",
            |s| s.requests.load(Ordering::Relaxed),
        ),
        (
            "portcullis_upstream_in_flight",
            "gauge",
            "Requests in flight to a target.",
            |s| s.in_flight.load(Ordering::Relaxed) as u64,
        ),
        (
            "portcullis_upstream_connects_total",
            "counter",
            "New connections made to a target.",
            |s| s.connects.load(Ordering::Relaxed),
        ),
        (
            "portcullis_upstream_pool_reuse_total",
            "counter",
            "Requests sent on a pooled connection.",
            |s| s.reused.load(Ordering::Relaxed),
        ),
        (
            "portcullis_upstream_open_connections",
            "gauge",
            "Connections open to a target.",
            |s| s.open_connections.load(Ordering::Relaxed) as u64,
        ),
        (
            "portcullis_upstream_h2_downgrades_total",
            "counter",
            "Connections where protocol auto fell back to HTTP/1.1.",
            |s| s.h2_downgrades.load(Ordering::Relaxed),
        ),
        (
            "portcullis_upstream_stale_recovered_total",
            "counter",
            "Requests moved off a pooled connection found closed.",
            |s| s.stale_recovered.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for u in &snap.upstreams {
            for t in u.targets() {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",target=\"{}\"}} {}",
                    escape(u.name()),
                    escape(&t.authority),
                    get(&t.stats)
                );
            }
        }
    }
    let target_gauges: [(&str, &str, TargetGet); 5] = [
        (
            "portcullis_upstream_target_healthy",
            "1 when the target passes its active health checks.",
            |t| u64::from(t.health.healthy()),
        ),
        (
            "portcullis_upstream_target_ejected",
            "1 while the target is ejected by passive health checks.",
            |t| u64::from(t.health.ejected()),
        ),
        (
            "portcullis_upstream_circuit_state",
            "Circuit breaker state of the target: 0 closed, 1 open, 2 half-open.",
            |t| match t.circuit() {
                "open" => 1,
                "half_open" => 2,
                _ => 0,
            },
        ),
        (
            "portcullis_upstream_ejections_total",
            "Times the target was ejected.",
            |t| t.health.ejections_total.load(Ordering::Relaxed),
        ),
        (
            "portcullis_upstream_circuit_opened_total",
            "Times the target's breaker opened.",
            |t| {
                t.breaker
                    .as_ref()
                    .map_or(0, |b| b.opened_total.load(Ordering::Relaxed))
            },
        ),
    ];
    for (name, help, get) in target_gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for u in &snap.upstreams {
            for t in u.targets() {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",target=\"{}\"}} {}",
                    escape(u.name()),
                    escape(&t.authority),
                    get(&t)
                );
            }
        }
    }
    let name = "portcullis_upstream_retries_total";
    let _ = writeln!(
        out,
        "# HELP {name} Retries by reason.\n# TYPE {name} counter"
    );
    for u in &snap.upstreams {
        for (reason, n) in u.stats().retries() {
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\",reason=\"{reason}\"}} {n}",
                escape(u.name())
            );
        }
    }
    let upstream_counters: [(&str, &str, UpstreamGet); 3] = [
        (
            "portcullis_upstream_retry_budget_exhausted_total",
            "Retries refused because the retry budget was spent.",
            |s| s.budget_exhausted.load(Ordering::Relaxed),
        ),
        (
            "portcullis_upstream_circuit_rejected_total",
            "Requests refused because every target's breaker was open.",
            |s| s.circuit_open.load(Ordering::Relaxed),
        ),
        (
            "portcullis_upstream_no_healthy_total",
            "Requests refused because no target was healthy.",
            |s| s.no_healthy.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, get) in upstream_counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for u in &snap.upstreams {
            let _ = writeln!(
                out,
                "{name}{{upstream=\"{}\"}} {}",
                escape(u.name()),
                get(u.stats())
            );
        }
    }
    if let Some((_, dns)) = &snap.dns {
        let _ = writeln!(
            out,
            "# HELP portcullis_dns_resolutions_total DNS resolutions of upstream names.\n# TYPE portcullis_dns_resolutions_total counter\nportcullis_dns_resolutions_total {}\n# HELP portcullis_dns_failures_total DNS resolutions that failed.\n# TYPE portcullis_dns_failures_total counter\nportcullis_dns_failures_total {}",
            dns.resolutions.load(Ordering::Relaxed),
            dns.failures.load(Ordering::Relaxed)
        );
    }
    let name = "portcullis_upstream_tls_insecure";
    let _ = writeln!(
        out,
        "# HELP {name} 1 for upstreams whose TLS certificates are not verified (insecure_skip_verify).\n# TYPE {name} gauge"
    );
    for u in &snap.config.upstreams {
        let insecure = u.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
        let _ = writeln!(
            out,
            "{name}{{upstream=\"{}\"}} {}",
            escape(&u.name),
            u64::from(insecure)
        );
    }
    let name = "portcullis_upstream_errors_total";
    let _ = writeln!(
        out,
        "# HELP {name} Upstream call failures by kind (connect errors, timeouts by kind, resets).\n# TYPE {name} counter"
    );
    for u in &snap.upstreams {
        for t in u.targets() {
            for (kind, n) in t.stats.errors() {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",target=\"{}\",kind=\"{}\"}} {n}",
                    escape(u.name()),
                    escape(&t.authority),
                    kind.reason()
                );
            }
        }
    }
}

/// Seconds until each served certificate expires (negative once it has), read at scrape time.
fn render_certificates(out: &mut String, snap: &Snapshot) {
    let mut listeners: Vec<_> = snap
        .listeners
        .values()
        .filter_map(|l| l.tls.as_ref().map(|t| (&*l.name, t)))
        .collect();
    if listeners.is_empty() {
        return;
    }
    listeners.sort_by_key(|(n, _)| *n);
    let name = "portcullis_tls_certificate_expiry_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Seconds until a served certificate expires (negative once expired), by listener and certificate file.\n# TYPE {name} gauge"
    );
    let now = crate::control::unix_seconds(std::time::SystemTime::now()) as i64;
    for (listener, tls) in listeners {
        for c in tls.served() {
            let _ = writeln!(
                out,
                "{name}{{listener=\"{}\",certificate=\"{}\"}} {}",
                escape(listener),
                escape(&c.file.display().to_string()),
                c.not_after - now
            );
        }
    }
}

/// SLO gauges of routes that declare an objective: measured values over the window, the
/// objectives, and the share of the error budget left.
fn render_slos(out: &mut String, snap: &Snapshot) {
    let with_slo: Vec<(usize, &portcullis_config::Slo)> = snap
        .config
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.slo.as_ref().map(|s| (i, s)))
        .collect();
    if with_slo.is_empty() {
        return;
    }
    let rows: Vec<(&str, crate::slo::Summary, &portcullis_config::Slo)> = with_slo
        .iter()
        .map(|(i, slo)| {
            (
                &*snap.routes[*i].name,
                snap.routes[*i].metrics.stats.summary(),
                *slo,
            )
        })
        .collect();
    type Get = fn(&crate::slo::Summary, &portcullis_config::Slo) -> Option<f64>;
    let series: [(&str, &str, Get); 5] = [
        (
            "portcullis_slo_success_ratio",
            "Share of non-5xx answers over the SLO window (0..1).",
            |m, _| Some(m.success_rate / 100.0),
        ),
        (
            "portcullis_slo_p99_seconds",
            "p99 latency over the SLO window.",
            |m, _| Some(m.p99_ms / 1000.0),
        ),
        (
            "portcullis_slo_objective_success_ratio",
            "The route's success objective (0..1).",
            |_, s| s.success_rate.map(|r| r / 100.0),
        ),
        (
            "portcullis_slo_objective_p99_seconds",
            "The route's p99 latency objective.",
            |_, s| s.p99.map(|d| d.as_secs_f64()),
        ),
        (
            "portcullis_slo_error_budget_remaining_ratio",
            "Share of the error budget left over the window (1 untouched, 0 spent, negative overspent).",
            |m, s| s.success_rate.map(|r| error_budget_left(m, r)),
        ),
    ];
    for (name, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (route, m, slo) in &rows {
            if let Some(v) = get(m, slo) {
                let v = if v.is_finite() { v } else { 1e9 };
                let _ = writeln!(out, "{name}{{route=\"{}\"}} {v}", escape(route));
            }
        }
    }
}

/// 1 - (observed error share / allowed error share).
pub fn error_budget_left(m: &crate::slo::Summary, objective_pct: f64) -> f64 {
    let allowed = (100.0 - objective_pct) / 100.0;
    if m.requests == 0 {
        return 1.0;
    }
    let observed = m.errors as f64 / m.requests as f64;
    if allowed <= 0.0 {
        return if observed > 0.0 { -1.0 } else { 1.0 };
    }
    1.0 - observed / allowed
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
