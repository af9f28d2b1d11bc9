//! A rolling window of two counters (e.g. successes and failures), split into buckets tagged
//! with their epoch: recording and summing are lock-free, and buckets older than the window
//! are ignored and reset on reuse. Shared by the breaker and the retry budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::now_ms;

const BUCKETS: usize = 10;

/// Two counters over a rolling window.
#[derive(Debug)]
pub(crate) struct PairWindow {
    bucket_ms: u64,
    epochs: [AtomicU64; BUCKETS],
    a: [AtomicU64; BUCKETS],
    b: [AtomicU64; BUCKETS],
}

impl PairWindow {
    /// A window of the given length (at least 10 ms).
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            bucket_ms: (window.as_millis() as u64 / BUCKETS as u64).max(1),
            epochs: Default::default(),
            a: Default::default(),
            b: Default::default(),
        }
    }

    /// Adds to the current bucket.
    pub(crate) fn add(&self, a: u64, b: u64) {
        let epoch = now_ms() / self.bucket_ms;
        let i = (epoch % BUCKETS as u64) as usize;
        let seen = self.epochs[i].load(Ordering::Acquire);
        if seen != epoch
            && self.epochs[i]
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.a[i].store(0, Ordering::Release);
            self.b[i].store(0, Ordering::Release);
        }
        if a > 0 {
            self.a[i].fetch_add(a, Ordering::Relaxed);
        }
        if b > 0 {
            self.b[i].fetch_add(b, Ordering::Relaxed);
        }
    }

    /// Sums over the window.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let epoch = now_ms() / self.bucket_ms;
        let (mut a, mut b) = (0, 0);
        for i in 0..BUCKETS {
            if epoch.saturating_sub(self.epochs[i].load(Ordering::Acquire)) < BUCKETS as u64 {
                a += self.a[i].load(Ordering::Relaxed);
                b += self.b[i].load(Ordering::Relaxed);
            }
        }
        (a, b)
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        for i in 0..BUCKETS {
            self.a[i].store(0, Ordering::Release);
            self.b[i].store(0, Ordering::Release);
        }
    }
}
