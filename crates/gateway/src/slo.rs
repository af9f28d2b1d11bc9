//! Rolling request statistics per route: rate, error rate and p99 over a window, for SLOs and
//! the topology view. Lock-free: the window is split into slots tagged with their epoch, each
//! slot holding counts per latency bucket.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Slots per window.
const SLOTS: usize = 12;

/// Latency bucket upper bounds in microseconds (log-spaced, 100µs .. 60s); the last is +Inf.
const BOUNDS_US: [u64; 24] = [
    100, 250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 25_000, 50_000, 75_000,
    100_000, 150_000, 250_000, 400_000, 600_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    30_000_000, 60_000_000,
];
const BUCKETS: usize = BOUNDS_US.len() + 1;

struct Slot {
    epoch: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Rolling statistics of one route.
pub struct RollingStats {
    slot_ms: u64,
    /// Made at the first request: a route that never sees traffic costs a few words, not the
    /// 2.7 KiB of its slots (10,000 configured routes, most of them idle, are common).
    slots: OnceLock<Box<[Slot]>>,
    /// Unix ms of the last request (0: none since start).
    pub last_seen_ms: AtomicU64,
    /// Unix ms when the window was made (the route's first appearance with this window).
    pub created_ms: u64,
    /// Requests and 5xx answers since start, to measure what happened after a change.
    totals: [AtomicU64; 2],
}

/// What the window says.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    /// Requests in the window.
    pub requests: u64,
    /// 5xx answers in the window.
    pub errors: u64,
    /// Requests per second over the window.
    pub rate: f64,
    /// Share of non-5xx answers, percent (100 when there was no traffic).
    pub success_rate: f64,
    /// 99th percentile latency in milliseconds (upper bound of its bucket).
    pub p99_ms: f64,
    /// 50th percentile latency in milliseconds.
    pub p50_ms: f64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RollingStats {
    /// Statistics over `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            slot_ms: (window.as_millis() as u64 / SLOTS as u64).max(1),
            slots: OnceLock::new(),
            last_seen_ms: AtomicU64::new(0),
            created_ms: now_ms(),
            totals: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Records one finished request.
    pub fn record(&self, latency: Duration, server_error: bool) {
        let now = now_ms();
        self.last_seen_ms.store(now, Ordering::Relaxed);
        let epoch = now / self.slot_ms;
        let slots = self
            .slots
            .get_or_init(|| (0..SLOTS).map(|_| Slot::default()).collect());
        let slot = &slots[(epoch % SLOTS as u64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Release);
            slot.errors.store(0, Ordering::Release);
            for b in &slot.latency {
                b.store(0, Ordering::Release);
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        self.totals[0].fetch_add(1, Ordering::Relaxed);
        if server_error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
            self.totals[1].fetch_add(1, Ordering::Relaxed);
        }
        let us = latency.as_micros() as u64;
        let i = BOUNDS_US.partition_point(|b| *b < us);
        slot.latency[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests and 5xx answers since the route first appeared.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.totals[0].load(Ordering::Relaxed),
            self.totals[1].load(Ordering::Relaxed),
        )
    }

    /// Sums the window.
    pub fn summary(&self) -> Summary {
        let epoch = now_ms() / self.slot_ms;
        let mut requests = 0;
        let mut errors = 0;
        let mut hist = [0u64; BUCKETS];
        for s in self.slots.get().map_or(&[][..], |s| &s[..]) {
            if epoch.saturating_sub(s.epoch.load(Ordering::Acquire)) >= SLOTS as u64 {
                continue;
            }
            requests += s.requests.load(Ordering::Relaxed);
            errors += s.errors.load(Ordering::Relaxed);
            for (h, b) in hist.iter_mut().zip(&s.latency) {
                *h += b.load(Ordering::Relaxed);
            }
        }
        let quantile = |q: f64| -> f64 {
            let total: u64 = hist.iter().sum();
            if total == 0 {
                return 0.0;
            }
            let want = (total as f64 * q).ceil() as u64;
            let mut acc = 0;
            for (i, n) in hist.iter().enumerate() {
                acc += n;
                if acc >= want {
                    let us = BOUNDS_US.get(i).copied().unwrap_or(u64::MAX);
                    return if us == u64::MAX {
                        f64::INFINITY
                    } else {
                        us as f64 / 1000.0
                    };
                }
            }
            f64::INFINITY
        };
        let window_s = (self.slot_ms * SLOTS as u64) as f64 / 1000.0;
        Summary {
            requests,
            errors,
            rate: requests as f64 / window_s,
            success_rate: if requests == 0 {
                100.0
            } else {
                100.0 * (requests - errors) as f64 / requests as f64
            },
            p99_ms: quantile(0.99),
            p50_ms: quantile(0.50),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_rate_errors_and_quantiles() {
        let s = RollingStats::new(Duration::from_secs(60));
        for i in 0..1000u64 {
            let lat = if i < 990 {
                Duration::from_millis(4)
            } else {
                Duration::from_millis(300)
            };
            s.record(lat, i % 100 == 0);
        }
        let m = s.summary();
        assert_eq!(m.requests, 1000);
        assert_eq!(m.errors, 10);
        assert!((m.success_rate - 99.0).abs() < 1e-9);
        assert_eq!(m.p50_ms, 5.0);
        assert_eq!(m.p99_ms, 5.0);
        for _ in 0..20 {
            s.record(Duration::from_millis(300), false);
        }
        assert_eq!(s.summary().p99_ms, 400.0);
    }

    #[test]
    fn an_idle_route_has_no_slots_and_an_empty_summary() {
        let s = RollingStats::new(Duration::from_secs(60));
        let m = s.summary();
        assert_eq!((m.requests, m.errors, m.p99_ms), (0, 0, 0.0));
        assert_eq!(m.success_rate, 100.0);
        assert!(s.slots.get().is_none());
        s.record(Duration::from_millis(1), false);
        assert_eq!(s.summary().requests, 1);
    }
}
