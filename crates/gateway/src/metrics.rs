//! Prometheus metrics. Per-route handles are resolved once per config snapshot, so recording
//! on the hot path is a few relaxed atomic adds: no label lookup, no lock.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::snapshot::Snapshot;

/// Latency buckets from 1 ms to 60 s, dense enough for p50/p99.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Config reloads by result (`ok` / `failed`).
    pub reloads: IntCounterVec,
    config_info: IntGaugeVec,
    /// Connections accepted, by listener.
    pub connections: IntCounterVec,
    /// Connections open now, by listener.
    pub open_connections: IntGaugeVec,
    /// TLS handshakes failed, by listener.
    pub tls_failures: IntCounterVec,
}

/// Handles of one route (or of the "no route" bucket).
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [IntCounter; 5],
    latency: Histogram,
}

impl RouteMetrics {
    /// Records one finished request.
    pub fn record(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.latency.observe(seconds);
    }
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
            "Requests answered, by route and status class.",
            &["route", "status_class"],
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from request head to response head, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(latency.clone()))
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
        let tls_failures = counter_vec(
            &registry,
            "portcullis_tls_handshake_failures_total",
            "TLS handshakes that failed, by listener.",
            &["listener"],
        );
        Self {
            registry,
            requests,
            latency,
            reloads,
            config_info,
            connections,
            open_connections,
            tls_failures,
        }
    }

    /// Handles for a route name.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let c = |class: &str| self.requests.with_label_values(&[route, class]);
        RouteMetrics {
            by_class: [c("1xx"), c("2xx"), c("3xx"), c("4xx"), c("5xx")],
            latency: self.latency.with_label_values(&[route]),
        }
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
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut out = String::from_utf8(buf).unwrap_or_default();
        render_upstreams(&mut out, snap);
        portcullis_plugins::metrics::render(&mut out);
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

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
