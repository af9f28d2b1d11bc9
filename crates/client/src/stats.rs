//! Per-target counters: plain atomics, read by the gateway's metrics and admin API.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::ErrorKind;

/// Error kinds counted per target, in a fixed order (see [`TargetStats::errors`]).
pub const COUNTED_ERRORS: [ErrorKind; 13] = [
    ErrorKind::Dns,
    ErrorKind::ConnectRefused,
    ErrorKind::ConnectTimeout,
    ErrorKind::Connect,
    ErrorKind::Tls,
    ErrorKind::ResponseHeaderTimeout,
    ErrorKind::ReadIdleTimeout,
    ErrorKind::PerTryTimeout,
    ErrorKind::Reset,
    ErrorKind::RefusedStream,
    ErrorKind::Protocol,
    ErrorKind::RequestBody,
    ErrorKind::PoolExhausted,
];

fn slot(kind: ErrorKind) -> Option<usize> {
    COUNTED_ERRORS.iter().position(|k| *k == kind)
}

/// Counters of one target. All relaxed atomics: exact ordering between them does not matter.
#[derive(Debug, Default)]
pub struct TargetStats {
    /// Requests sent (tries, retries included).
    pub requests: AtomicU64,
    /// Requests in flight (until the response body ends).
    pub in_flight: AtomicUsize,
    /// New connections made.
    pub connects: AtomicU64,
    /// Requests that reused a pooled connection.
    pub reused: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicUsize,
    /// Times `protocol: auto` fell back to HTTP/1.1 because the target did not offer h2.
    pub h2_downgrades: AtomicU64,
    /// Stale pooled connections recovered from by sending on a fresh one.
    pub stale_recovered: AtomicU64,
    errors: [AtomicU64; COUNTED_ERRORS.len()],
}

impl TargetStats {
    /// Counts one failure.
    pub fn record_error(&self, kind: ErrorKind) {
        if let Some(i) = slot(kind) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Failures so far by kind, in the order of [`COUNTED_ERRORS`].
    pub fn errors(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        COUNTED_ERRORS
            .iter()
            .zip(self.errors.iter())
            .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
    }
}

/// Retry reasons counted per upstream, in a fixed order.
pub const RETRY_REASONS: [&str; 5] = [
    "connect_failure",
    "reset",
    "refused_stream",
    "timeout",
    "status",
];

/// Counters of one upstream (across its targets).
#[derive(Debug, Default)]
pub struct UpstreamStats {
    retries: [AtomicU64; RETRY_REASONS.len()],
    /// Retries refused because the retry budget was spent.
    pub budget_exhausted: AtomicU64,
    /// Requests refused because every target's breaker was open.
    pub circuit_open: AtomicU64,
    /// Requests refused because no target was healthy.
    pub no_healthy: AtomicU64,
}

impl UpstreamStats {
    pub(crate) fn record_retry(&self, reason: &str) {
        if let Some(i) = RETRY_REASONS.iter().position(|r| *r == reason) {
            self.retries[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Retries so far by reason.
    pub fn retries(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RETRY_REASONS
            .iter()
            .zip(self.retries.iter())
            .map(|(r, v)| (*r, v.load(Ordering::Relaxed)))
    }
}
