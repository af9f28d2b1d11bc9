//! Traffic policies, validated: which routes they watch, the conditions on measured signals,
//! and the actions taken while those hold.

use std::time::Duration;

use crate::model::DirectResponse;

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Unique name.
    pub name: String,
    /// Routes acted on (indexes into `Config::routes`), ascending.
    pub routes: Vec<usize>,
    /// Per watched route, the split legs whose signals count; `None` = the whole route.
    pub legs: Vec<Option<Vec<usize>>>,
    /// Conditions; all must hold.
    pub conditions: Vec<Condition>,
    /// Requests in a window before a ratio or latency counts.
    pub min_requests: u64,
    /// Actions while triggered.
    pub actions: Vec<PolicyAction>,
    /// Evaluate and report only.
    pub dry_run: bool,
    /// The policy as written (JSON), to tell whether a reload changed it.
    pub fingerprint: String,
}

/// A measured signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// Latency quantile (0.5, 0.9, 0.99) of forwarded requests, in seconds.
    Latency(f64),
    /// Share of forwarded requests answered 5xx (0..1).
    ErrorRate,
    /// Share of forwarded requests not answered 5xx (0..1).
    SuccessRate,
    /// Requests per second (all, including those a policy answered).
    Rps,
    /// Requests in flight now.
    InFlight,
}

impl Signal {
    /// The name used in config and the admin API.
    pub fn name(&self) -> &'static str {
        match self {
            Signal::Latency(q) if *q <= 0.5 => "p50_latency",
            Signal::Latency(q) if *q <= 0.9 => "p90_latency",
            Signal::Latency(_) => "p99_latency",
            Signal::ErrorRate => "error_rate",
            Signal::SuccessRate => "success_rate",
            Signal::Rps => "rps",
            Signal::InFlight => "in_flight",
        }
    }

    /// Whether `min_requests` gates it (ratios and latencies).
    pub fn needs_volume(&self) -> bool {
        matches!(
            self,
            Signal::Latency(_) | Signal::ErrorRate | Signal::SuccessRate
        )
    }
}

/// One condition.
#[derive(Debug, Clone)]
pub struct Condition {
    /// What is measured.
    pub signal: Signal,
    /// Holds above the threshold (else below).
    pub above: bool,
    /// Threshold: seconds for latencies, a ratio for rates, a number otherwise.
    pub threshold: f64,
    /// Window the signal is measured over.
    pub window: Duration,
    /// Windows in a row it must hold.
    pub consecutive: u32,
}

/// An action.
#[derive(Debug, Clone)]
pub enum PolicyAction {
    /// Answer instead of the upstream for `open_for`, then let traffic back gradually.
    CircuitBreaker {
        /// How long it stays open.
        open_for: Duration,
        /// The answer; 503 `upstream_unavailable` when absent.
        fallback: Option<DirectResponse>,
    },
    /// Answer a share of requests with 503 `load_shed`.
    Shed {
        /// Share in percent.
        percent: f64,
        /// `Retry-After`.
        retry_after: Duration,
    },
    /// Send to another upstream.
    Reroute {
        /// Upstream index.
        upstream: usize,
    },
    /// Tighten the route timeout.
    Timeout {
        /// The timeout.
        timeout: Duration,
    },
}
