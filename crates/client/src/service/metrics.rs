//! The `metrics` feature: the client's per-origin counters as a prometheus collector.
//!
//! Values are read from the client's atomics at each scrape, so nothing is recorded twice.
//! An origin dropped when idle stops being exported; if it comes back its counters start
//! from zero again, which prometheus' `rate()` reads as a counter reset.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::client::Client;
use super::stats::ClientStats;

const COUNTERS: [(&str, &str, &[&str]); 7] = [
    (
        "portcullis_client_requests_total",
        "Calls sent to the origin (a redirect hop counts where it goes).",
        &["origin"],
    ),
    (
        "portcullis_client_errors_total",
        "Failed calls by kind, as callers saw them.",
        &["origin", "kind"],
    ),
    (
        "portcullis_client_retries_total",
        "Retries by reason.",
        &["origin", "reason"],
    ),
    (
        "portcullis_client_connections_total",
        "New connections made.",
        &["origin"],
    ),
    (
        "portcullis_client_pool_reused_total",
        "Requests sent on a pooled connection.",
        &["origin"],
    ),
    (
        "portcullis_client_h2_downgrades_total",
        "Times an https origin did not take HTTP/2 by ALPN.",
        &["origin"],
    ),
    (
        "portcullis_client_redirects_total",
        "Redirects the origin answered that were followed.",
        &["origin"],
    ),
];

const GAUGES: [(&str, &str, &[&str]); 3] = [
    (
        "portcullis_client_open_connections",
        "Connections open now.",
        &["origin"],
    ),
    (
        "portcullis_client_breaker_state",
        "1 for the worst breaker state among the origin's addresses.",
        &["origin", "state"],
    ),
    ("portcullis_client_origins", "Origins held now.", &[]),
];

struct ClientCollector {
    read: Box<dyn Fn() -> Option<ClientStats> + Send + Sync>,
    descs: Vec<Desc>,
}

fn counter(i: usize) -> IntCounterVec {
    let (name, help, labels) = COUNTERS[i];
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("{e}"))
}

fn gauge(i: usize) -> IntGaugeVec {
    let (name, help, labels) = GAUGES[i];
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("{e}"))
}

impl Collector for ClientCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(stats) = (self.read)() else {
            return Vec::new();
        };
        let c: Vec<IntCounterVec> = (0..COUNTERS.len()).map(counter).collect();
        let g: Vec<IntGaugeVec> = (0..GAUGES.len()).map(gauge).collect();
        for o in &stats.origins {
            let origin = o.origin.as_str();
            c[0].with_label_values(&[origin]).inc_by(o.requests);
            for (kind, n) in &o.errors {
                if *n > 0 {
                    c[1].with_label_values(&[origin, kind.reason()]).inc_by(*n);
                }
            }
            for (reason, n) in &o.retries {
                c[2].with_label_values(&[origin, reason]).inc_by(*n);
            }
            c[3].with_label_values(&[origin]).inc_by(o.connects);
            c[4].with_label_values(&[origin]).inc_by(o.reused);
            c[5].with_label_values(&[origin]).inc_by(o.h2_downgrades);
            c[6].with_label_values(&[origin]).inc_by(o.redirects);
            g[0].with_label_values(&[origin])
                .set(o.open_connections as i64);
            for state in ["closed", "open", "half_open"] {
                g[1].with_label_values(&[origin, state])
                    .set(i64::from(o.breaker.as_str() == state));
            }
        }
        g[2].with_label_values::<&str>(&[])
            .set(stats.origins.len() as i64);
        c.iter()
            .flat_map(Collector::collect)
            .chain(g.iter().flat_map(Collector::collect))
            .collect()
    }
}

impl Client {
    /// Registers the client's per-origin counters with `registry` (`metrics` feature). They
    /// are read from the client at each scrape; the collector holds the client weakly.
    pub fn register_metrics(&self, registry: &Registry) -> prometheus::Result<()> {
        let weak = self.downgrade();
        let mut descs = Vec::new();
        for i in 0..COUNTERS.len() {
            descs.extend(counter(i).desc().into_iter().cloned());
        }
        for i in 0..GAUGES.len() {
            descs.extend(gauge(i).desc().into_iter().cloned());
        }
        registry.register(Box::new(ClientCollector {
            read: Box::new(move || weak.upgrade().map(|c| c.stats())),
            descs,
        }))
    }
}
