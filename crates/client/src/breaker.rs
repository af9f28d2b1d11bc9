//! A circuit breaker per target: failure rate over a rolling window with a minimum number of
//! calls; open for a while; then half-open with a bounded number of probes; closed again when
//! they succeed. Calls slower than a threshold can count as failures.
//!
//! Recording is lock-free (window buckets tagged with their epoch, state in an atomic); state
//! transitions are compare-and-swap, so concurrent callers agree on one transition.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::now_ms;
use crate::status_set::StatusSet;
use crate::window::PairWindow;

/// Breaker settings.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Failure ratio (0..=1] that opens the breaker.
    pub failure_rate: f64,
    /// Rolling window the ratio is measured over.
    pub window: Duration,
    /// Calls in the window before the ratio counts.
    pub min_requests: u32,
    /// How long it stays open before probing.
    pub open_for: Duration,
    /// Probes let through while half-open; all must succeed to close.
    pub half_open_requests: u32,
    /// Calls slower than this count as failures.
    pub slow_call_threshold: Option<Duration>,
    /// Response statuses that count as failures (for the breaker and passive health).
    pub failure_statuses: StatusSet,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            window: Duration::from_secs(60),
            min_requests: 20,
            open_for: Duration::from_secs(30),
            half_open_requests: 3,
            slow_call_threshold: None,
            failure_statuses: StatusSet::default(),
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls are let through.
    HalfOpen,
}

impl BreakerState {
    /// Lowercase name for the admin API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Permission to make one call, to be passed back with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// A call while closed.
    Normal,
    /// A probe while half-open.
    Probe,
}

/// One target's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    /// Successes and failures.
    calls: PairWindow,
    state: AtomicU8,
    opened_at: AtomicU64,
    probes_taken: AtomicU32,
    probes_ok: AtomicU32,
    /// Times it opened.
    pub opened_total: AtomicU64,
    /// Calls refused because it was open.
    pub rejected_total: AtomicU64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            calls: PairWindow::new(cfg.window),
            cfg,
            state: AtomicU8::new(CLOSED),
            opened_at: AtomicU64::new(0),
            probes_taken: AtomicU32::new(0),
            probes_ok: AtomicU32::new(0),
            opened_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
        }
    }

    /// The state now (an open breaker past `open_for` reports half-open).
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            HALF_OPEN => BreakerState::HalfOpen,
            _ if self.open_expired() => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }

    fn open_expired(&self) -> bool {
        now_ms().saturating_sub(self.opened_at.load(Ordering::Acquire))
            >= self.cfg.open_for.as_millis() as u64
    }

    /// Whether a call could be let through now (no side effect; for target selection).
    pub fn allows(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            HALF_OPEN => self.probes_taken.load(Ordering::Acquire) < self.cfg.half_open_requests,
            _ => self.open_expired(),
        }
    }

    /// Takes permission for one call, or `None` when open (or half-open with no probe left).
    pub fn acquire(&self) -> Option<Permit> {
        loop {
            match self.state.load(Ordering::Acquire) {
                CLOSED => return Some(Permit::Normal),
                OPEN => {
                    if !self.open_expired() {
                        self.rejected_total.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    if self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.probes_taken.store(0, Ordering::Release);
                        self.probes_ok.store(0, Ordering::Release);
                    }
                }
                _ => {
                    let taken = self.probes_taken.fetch_add(1, Ordering::AcqRel);
                    if taken < self.cfg.half_open_requests {
                        return Some(Permit::Probe);
                    }
                    self.probes_taken.fetch_sub(1, Ordering::AcqRel);
                    self.rejected_total.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
    }

    /// Records a call's outcome. `success` is false for failures and slow calls.
    pub fn record(&self, permit: Permit, success: bool, took: Duration) {
        let slow = self.cfg.slow_call_threshold.is_some_and(|t| took > t);
        let success = success && !slow;
        match permit {
            Permit::Probe => {
                if self.state.load(Ordering::Acquire) != HALF_OPEN {
                    return;
                }
                if !success {
                    self.trip(HALF_OPEN);
                } else if self.probes_ok.fetch_add(1, Ordering::AcqRel) + 1
                    >= self.cfg.half_open_requests
                    && self
                        .state
                        .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.calls.clear();
                }
            }
            Permit::Normal => {
                if success {
                    self.calls.add(1, 0);
                    return;
                }
                self.calls.add(0, 1);
                if self.state.load(Ordering::Acquire) != CLOSED {
                    return;
                }
                let (ok, failed) = self.calls.totals();
                let total = ok + failed;
                if total >= u64::from(self.cfg.min_requests)
                    && failed as f64 / total as f64 >= self.cfg.failure_rate
                {
                    self.trip(CLOSED);
                }
            }
        }
    }

    /// Gives back a permit whose call never finished (cancelled): a probe slot is freed.
    pub fn release(&self, permit: Permit) {
        if permit == Permit::Probe && self.state.load(Ordering::Acquire) == HALF_OPEN {
            self.probes_taken.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn trip(&self, from: u8) {
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.opened_at.store(now_ms(), Ordering::Release);
            self.opened_total.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // sleeping threads in sync tests is fine
mod tests {
    use super::*;

    fn cfg(open_for_ms: u64) -> BreakerConfig {
        BreakerConfig {
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_requests: 10,
            open_for: Duration::from_millis(open_for_ms),
            half_open_requests: 2,
            slow_call_threshold: Some(Duration::from_millis(100)),
            failure_statuses: StatusSet::default(),
        }
    }

    fn call(b: &Breaker, ok: bool) -> bool {
        match b.acquire() {
            Some(p) => {
                b.record(p, ok, Duration::ZERO);
                true
            }
            None => false,
        }
    }

    #[test]
    fn opens_on_failure_rate_only_after_min_requests() {
        let b = Breaker::new(cfg(60_000));
        for _ in 0..9 {
            call(&b, false);
        }
        assert_eq!(b.state(), BreakerState::Closed, "below min_requests");
        call(&b, false);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!call(&b, true), "open refuses calls");
        assert_eq!(b.rejected_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stays_closed_under_the_rate() {
        let b = Breaker::new(cfg(60_000));
        for i in 0..100 {
            call(&b, i % 3 != 0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_probes_close_or_reopen() {
        let b = Breaker::new(cfg(30));
        for _ in 0..10 {
            call(&b, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p1 = b.acquire().expect("probe 1");
        let p2 = b.acquire().expect("probe 2");
        assert!(b.acquire().is_none(), "only two probes");
        b.record(p1, true, Duration::ZERO);
        b.record(p2, true, Duration::ZERO);
        assert_eq!(b.state(), BreakerState::Closed);

        for _ in 0..10 {
            call(&b, false);
        }
        std::thread::sleep(Duration::from_millis(40));
        let p = b.acquire().expect("probe");
        b.record(p, false, Duration::ZERO);
        assert_eq!(b.state(), BreakerState::Open, "a failed probe reopens");
        assert_eq!(b.opened_total.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_cancelled_probe_frees_its_slot() {
        let b = Breaker::new(cfg(10));
        for _ in 0..10 {
            call(&b, false);
        }
        std::thread::sleep(Duration::from_millis(20));
        let p1 = b.acquire().expect("probe 1");
        let p2 = b.acquire().expect("probe 2");
        assert!(b.acquire().is_none());
        b.release(p1);
        let p3 = b.acquire().expect("the released slot is free again");
        b.record(p2, true, Duration::ZERO);
        b.record(p3, true, Duration::ZERO);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn slow_calls_count_as_failures() {
        let b = Breaker::new(cfg(60_000));
        for _ in 0..10 {
            let p = b.acquire().expect("permit");
            b.record(p, true, Duration::from_millis(200));
        }
        assert_eq!(b.state(), BreakerState::Open);
    }
}
