//! What a [`Client`](super::Client) can tell about each origin: a snapshot of plain atomic
//! counters, cheap enough to read on every scrape.

use std::sync::atomic::Ordering;

use crate::breaker::BreakerState;
use crate::error::ErrorKind;

use super::origin::Origin;

/// Failures counted per origin as callers saw them, in a fixed order.
pub const CALL_ERRORS: [ErrorKind; 20] = [
    ErrorKind::Dns,
    ErrorKind::ConnectRefused,
    ErrorKind::ConnectTimeout,
    ErrorKind::Connect,
    ErrorKind::Tls,
    ErrorKind::ResponseHeaderTimeout,
    ErrorKind::ReadIdleTimeout,
    ErrorKind::PerTryTimeout,
    ErrorKind::DeadlineExceeded,
    ErrorKind::Reset,
    ErrorKind::RefusedStream,
    ErrorKind::Protocol,
    ErrorKind::RequestBody,
    ErrorKind::NoHealthyTarget,
    ErrorKind::CircuitOpen,
    ErrorKind::PoolExhausted,
    ErrorKind::InvalidRequest,
    ErrorKind::Redirect,
    ErrorKind::Decode,
    ErrorKind::OriginLimit,
];

/// Counters of one origin at one moment. They start at zero when the origin is created and
/// vanish when it is dropped idle.
#[derive(Debug, Clone)]
pub struct OriginStats {
    /// `scheme://host:port`.
    pub origin: String,
    /// Calls sent to it (a redirect hop counts at the origin it goes to).
    pub requests: u64,
    /// Tries sent (retries and stale-connection recoveries included).
    pub tries: u64,
    /// Failed calls by kind, as the caller saw them (reading the body included).
    pub errors: Vec<(ErrorKind, u64)>,
    /// Failed tries by kind (a retried failure shows here, not in `errors`).
    pub try_errors: Vec<(ErrorKind, u64)>,
    /// Retries by reason (`connect_failure`, `reset`, `refused_stream`, `timeout`, `status`).
    pub retries: Vec<(&'static str, u64)>,
    /// Retries refused because the origin's retry budget was spent.
    pub retry_budget_exhausted: u64,
    /// Redirects it answered that were followed.
    pub redirects: u64,
    /// New connections made.
    pub connects: u64,
    /// Requests sent on a pooled connection (pool reuse).
    pub reused: u64,
    /// Connections open now.
    pub open_connections: usize,
    /// Idle pooled connections now.
    pub idle_connections: usize,
    /// Requests in flight now (until their bodies end).
    pub in_flight: usize,
    /// Times an https origin did not take HTTP/2 by ALPN and HTTP/1.1 was used.
    pub h2_downgrades: u64,
    /// Pooled connections the server had closed, recovered from on a fresh one.
    pub stale_recovered: u64,
    /// The worst breaker state among its addresses.
    pub breaker: BreakerState,
    /// Times one of its breakers opened.
    pub breaker_opened: u64,
    /// Its addresses (`ip:port`), as resolved now.
    pub addresses: Vec<String>,
    /// Protocol in use: `http1`, `h2` or `unknown` (before the first connection).
    pub protocol: &'static str,
}

impl OriginStats {
    /// Failed calls of one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// Retries, all reasons.
    pub fn retries_total(&self) -> u64 {
        self.retries.iter().map(|(_, n)| n).sum()
    }

    pub(crate) fn of(o: &Origin) -> Self {
        let targets = o.upstream.targets();
        let up = o.upstream.stats();
        let load = |f: fn(&crate::stats::TargetStats) -> u64| -> u64 {
            targets.iter().map(|t| f(&t.stats)).sum()
        };
        let mut try_errors: Vec<(ErrorKind, u64)> = crate::stats::COUNTED_ERRORS
            .iter()
            .map(|k| (*k, 0))
            .collect();
        for t in &targets {
            for (slot, (_, n)) in try_errors.iter_mut().zip(t.stats.errors()) {
                slot.1 += n;
            }
        }
        let breaker = targets
            .iter()
            .filter_map(|t| t.breaker.as_ref().map(|b| b.state()))
            .max_by_key(|s| match s {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            })
            .unwrap_or(BreakerState::Closed);
        Self {
            origin: o.name.to_string(),
            requests: o.counters.requests.load(Ordering::Relaxed),
            tries: load(|s| s.requests.load(Ordering::Relaxed)),
            errors: o.counters.failures().collect(),
            try_errors,
            retries: up.retries().collect(),
            retry_budget_exhausted: up.budget_exhausted.load(Ordering::Relaxed),
            redirects: o.counters.redirects.load(Ordering::Relaxed),
            connects: load(|s| s.connects.load(Ordering::Relaxed)),
            reused: load(|s| s.reused.load(Ordering::Relaxed)),
            open_connections: targets
                .iter()
                .map(|t| t.stats.open_connections.load(Ordering::Relaxed))
                .sum(),
            idle_connections: targets.iter().map(|t| t.idle_connections()).sum(),
            in_flight: o.in_flight(),
            h2_downgrades: load(|s| s.h2_downgrades.load(Ordering::Relaxed)),
            stale_recovered: load(|s| s.stale_recovered.load(Ordering::Relaxed)),
            breaker,
            breaker_opened: targets
                .iter()
                .filter_map(|t| t.breaker.as_ref())
                .map(|b| b.opened_total.load(Ordering::Relaxed))
                .sum(),
            addresses: targets.iter().map(|t| t.authority.to_string()).collect(),
            protocol: targets.first().map_or("unknown", |t| t.negotiated()),
        }
    }
}

/// The whole client: its origins and how many came and went.
#[derive(Debug, Clone)]
pub struct ClientStats {
    /// Each origin held now.
    pub origins: Vec<OriginStats>,
    /// Origins created so far.
    pub origins_created: u64,
    /// Origins dropped so far (idle, or to make room at the cap).
    pub origins_dropped: u64,
}

impl ClientStats {
    /// The origin named `scheme://host:port`, when held.
    pub fn origin(&self, name: &str) -> Option<&OriginStats> {
        self.origins.iter().find(|o| o.origin == name)
    }
}
