//! Metrics of config changes, in file mode and with etcd: the generation served, when it was
//! applied, how long a change took from the store's commit to being served, resyncs and
//! refused changes.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Propagation buckets, 5 ms to 30 s.
const PROPAGATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Config change metrics.
pub struct ConfigMetrics {
    /// The generation served.
    pub generation: IntGauge,
    /// Unix time the served config was applied.
    pub applied_at: Gauge,
    /// Seconds since then, refreshed on every scrape.
    pub since_applied: Gauge,
    /// From the store's commit to served, per change.
    pub propagation: Histogram,
    /// Full re-reads of the store, by reason.
    pub resyncs: IntCounterVec,
    /// Changes from the store that were refused, by reason (`invalid`, `undecodable`).
    pub rejected: IntCounterVec,
    /// 1 while the store is reachable.
    pub store_up: IntGauge,
    applied_ms: AtomicU64,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone())).expect("unique metric name");
    m
}

impl ConfigMetrics {
    /// Registers the metrics.
    pub fn new(r: &Registry) -> Self {
        let m = ConfigMetrics {
            generation: reg(
                r,
                IntGauge::new(
                    "portcullis_config_generation",
                    "Generation of the shared config served (a local counter in file mode).",
                )
                .expect("valid metric"),
            ),
            applied_at: reg(
                r,
                Gauge::new(
                    "portcullis_config_applied_timestamp_seconds",
                    "Unix time the served config was applied.",
                )
                .expect("valid metric"),
            ),
            since_applied: reg(
                r,
                Gauge::new(
                    "portcullis_config_seconds_since_applied",
                    "Seconds since the served config was applied.",
                )
                .expect("valid metric"),
            ),
            propagation: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "portcullis_config_propagation_seconds",
                        "Time from a change's commit in the store to this node serving it.",
                    )
                    .buckets(PROPAGATION_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            resyncs: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "portcullis_config_resyncs_total",
                        "Full re-reads of the shared config from etcd, by reason.",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            rejected: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "portcullis_config_changes_rejected_total",
                        "Shared config changes from etcd this node refused (the last good config kept serving), by reason.",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            store_up: reg(
                r,
                IntGauge::new(
                    "portcullis_config_store_up",
                    "1 while the config store (etcd) is reachable; 0 in file mode or when unreachable.",
                )
                .expect("valid metric"),
            ),
            applied_ms: AtomicU64::new(0),
        };
        for reason in [
            "compacted",
            "revision_backwards",
            "cluster_id",
            "unauthenticated",
        ] {
            m.resyncs.with_label_values(&[reason]);
        }
        for reason in ["invalid", "undecodable"] {
            m.rejected.with_label_values(&[reason]);
        }
        m
    }

    /// A config was applied.
    pub fn applied(&self, generation: u64, committed_at: Option<f64>) {
        let now = crate::fleet::store::unix_now();
        self.generation.set(generation as i64);
        self.applied_at.set(now);
        self.applied_ms
            .store((now * 1000.0) as u64, Ordering::Relaxed);
        if let Some(t) = committed_at {
            self.propagation.observe((now - t).max(0.0));
        }
    }

    /// Updates the seconds-since gauge (called before rendering).
    pub fn refresh(&self) {
        let at = self.applied_ms.load(Ordering::Relaxed);
        if at > 0 {
            let now = crate::fleet::store::unix_now();
            self.since_applied.set((now - at as f64 / 1000.0).max(0.0));
        }
    }
}
