//! Retries: which failures are retried, for which requests, how long to wait, and the budget
//! that stops a retry storm.

use std::time::Duration;

use http::{HeaderMap, Method};

use crate::error::ErrorKind;
use crate::window::PairWindow;

/// When a failed try may be retried.
#[derive(Debug, Clone, Default)]
pub struct RetryOn {
    /// The connection could not be made (refused, DNS, TLS, connect timeout).
    pub connect_failure: bool,
    /// The connection was reset or closed before a complete response head.
    pub reset: bool,
    /// HTTP/2 REFUSED_STREAM.
    pub refused_stream: bool,
    /// A connect, response-header or per-try timeout fired.
    pub timeout: bool,
    /// Response statuses that are retried (e.g. 502, 503, 504).
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// Whether a failure of this kind is retried, and under which reason label.
    pub fn reason(&self, kind: ErrorKind) -> Option<&'static str> {
        use ErrorKind::*;
        match kind {
            Dns | ConnectRefused | Connect | Tls | PoolExhausted if self.connect_failure => {
                Some("connect_failure")
            }
            ConnectTimeout if self.connect_failure || self.timeout => Some("connect_failure"),
            Reset if self.reset => Some("reset"),
            RefusedStream if self.refused_stream => Some("refused_stream"),
            ResponseHeaderTimeout | PerTryTimeout if self.timeout => Some("timeout"),
            _ => None,
        }
    }
}

/// A retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    /// Conditions.
    pub on: RetryOn,
    /// Backoff ceiling of the first retry; doubles each retry.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
    /// Retries may add at most this percentage of recent requests.
    pub budget_percent: f64,
    /// Retries always allowed per second, whatever the traffic (the budget's floor).
    pub min_retries_per_sec: u32,
    /// Timeout of one try (connect and response head).
    pub per_try_timeout: Option<Duration>,
    /// Request bodies up to this size are kept so they can be sent again.
    pub max_replay_body_bytes: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            on: RetryOn {
                connect_failure: true,
                reset: true,
                refused_stream: true,
                ..RetryOn::default()
            },
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_secs(1),
            budget_percent: 20.0,
            min_retries_per_sec: 10,
            per_try_timeout: None,
            max_replay_body_bytes: 64 * 1024,
        }
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, base * 2^retry))`.
pub fn backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
        .min(max);
    let ms = ceiling.as_micros() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(fastrand::u64(..ms))
}

/// Whether a request may be sent twice: idempotent methods, or an `Idempotency-Key`.
pub fn idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key("idempotency-key")
}

/// The window retries are budgeted over.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// A retry budget over the last ten seconds, as Finagle's and Envoy's: retries may add at most
/// `percent` of the requests seen, plus a small floor per second so low traffic can still
/// retry. Lock-free: one-second buckets tagged with their epoch.
#[derive(Debug)]
pub struct RetryBudget {
    percent: f64,
    min_per_sec: u32,
    /// Requests and retries.
    counts: PairWindow,
}

impl RetryBudget {
    /// A budget allowing `percent` retries of recent requests, and at least `min_per_sec`.
    pub fn new(percent: f64, min_per_sec: u32) -> Self {
        Self {
            percent,
            min_per_sec,
            counts: PairWindow::new(BUDGET_WINDOW),
        }
    }

    /// Counts a new request (not a retry).
    pub fn record_request(&self) {
        self.counts.add(1, 0);
    }

    /// Takes the right to retry once; false when the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        let (req, ret) = self.counts.totals();
        let allowed = ((req as f64) * self.percent / 100.0) as u64
            + u64::from(self.min_per_sec) * BUDGET_WINDOW.as_secs();
        if ret >= allowed {
            return false;
        }
        self.counts.add(0, 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_exponential_ceiling() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(100);
        for retry in 0..10 {
            let ceiling = (base * 2u32.pow(retry)).min(max);
            for _ in 0..100 {
                assert!(backoff(base, max, retry) < ceiling);
            }
        }
    }

    #[test]
    fn idempotency_rules() {
        let none = HeaderMap::new();
        assert!(idempotent(&Method::GET, &none));
        assert!(idempotent(&Method::PUT, &none));
        assert!(!idempotent(&Method::POST, &none));
        assert!(!idempotent(&Method::PATCH, &none));
        let mut key = HeaderMap::new();
        key.insert("idempotency-key", "abc".parse().unwrap());
        assert!(idempotent(&Method::POST, &key));
    }

    #[test]
    fn budget_caps_retries_at_a_share_of_requests_plus_a_floor() {
        let b = RetryBudget::new(20.0, 1);
        for _ in 0..1000 {
            b.record_request();
        }
        let mut granted = 0;
        for _ in 0..1000 {
            if b.try_withdraw() {
                granted += 1;
            }
        }
        // 20% of 1000, plus the floor of 1/s over the 10 s window.
        assert_eq!(granted, 210);
    }

    #[test]
    fn retry_conditions_map_to_reasons() {
        let on = RetryOn {
            connect_failure: true,
            timeout: true,
            ..RetryOn::default()
        };
        assert_eq!(
            on.reason(ErrorKind::ConnectRefused),
            Some("connect_failure")
        );
        assert_eq!(on.reason(ErrorKind::ResponseHeaderTimeout), Some("timeout"));
        assert_eq!(on.reason(ErrorKind::Reset), None);
        assert_eq!(on.reason(ErrorKind::ReadIdleTimeout), None);
    }
}
