//! Origins: one per (scheme, host, port), created on first use, each an [`Upstream`] of its
//! own — pool, breaker, retry budget, passive health and DNS entry — so one failing origin
//! cannot take connections or retries from another. Dropped when idle, and capped in number.
//!
//! Finding an origin is a lock-free read of an immutable table (`ArcSwap`) with no
//! allocation; creating or dropping one copies the table under a mutex (rare).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::stats::CALL_ERRORS;
use crate::clock::now_ms;
use crate::error::{Error, ErrorKind};
use crate::upstream::{RequestBody, Upstream};

/// Where a request goes: scheme, host (lowercase, IPv6 in brackets) and port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OriginKey<'a> {
    pub(crate) https: bool,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
}

impl OriginKey<'_> {
    /// `scheme://host:port`.
    pub(crate) fn name(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.https { "https" } else { "http" },
            self.host.to_ascii_lowercase(),
            self.port
        )
    }
}

/// Counters kept per origin by the service client (the upstream keeps the per-try ones).
#[derive(Debug, Default)]
pub(crate) struct OriginCounters {
    /// Calls sent to this origin (each redirect hop counts at the origin it goes to).
    pub(crate) requests: AtomicU64,
    /// Redirects this origin answered that were followed.
    pub(crate) redirects: AtomicU64,
    failures: [AtomicU64; CALL_ERRORS.len()],
}

impl OriginCounters {
    pub(crate) fn record_failure(&self, kind: ErrorKind) {
        if let Some(i) = CALL_ERRORS.iter().position(|k| *k == kind) {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn failures(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        CALL_ERRORS
            .iter()
            .zip(&self.failures)
            .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
    }
}

/// One origin and everything it owns.
pub(crate) struct Origin {
    pub(crate) https: bool,
    pub(crate) host: Box<str>,
    pub(crate) port: u16,
    /// `scheme://host:port`, for errors, spans and metrics.
    pub(crate) name: Arc<str>,
    pub(crate) upstream: Upstream<RequestBody>,
    pub(crate) counters: OriginCounters,
    /// `requests` when the sweeper last looked, and since when it has not moved (ms).
    seen: AtomicU64,
    idle_since: AtomicU64,
}

impl Origin {
    pub(crate) fn new(key: OriginKey<'_>, upstream: Upstream<RequestBody>) -> Self {
        Self {
            https: key.https,
            host: key.host.to_ascii_lowercase().into(),
            port: key.port,
            name: key.name().into(),
            upstream,
            counters: OriginCounters::default(),
            seen: AtomicU64::new(0),
            idle_since: AtomicU64::new(now_ms()),
        }
    }

    fn is(&self, key: &OriginKey<'_>) -> bool {
        self.https == key.https && self.port == key.port && self.host.eq_ignore_ascii_case(key.host)
    }

    /// Requests in flight on its targets (until their bodies end).
    pub(crate) fn in_flight(&self) -> usize {
        self.upstream
            .targets()
            .iter()
            .map(|t| t.stats.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether only the table holds it and nothing is in flight.
    fn unused(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1 && self.in_flight() == 0
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin").field("name", &self.name).finish()
    }
}

#[derive(Default)]
struct Table {
    buckets: HashMap<u64, Vec<Arc<Origin>>>,
    len: usize,
}

impl Table {
    fn with(&self, hash: u64, o: Arc<Origin>) -> Self {
        let mut buckets = self.buckets.clone();
        buckets.entry(hash).or_default().push(o);
        Self {
            buckets,
            len: self.len + 1,
        }
    }

    fn without(&self, gone: &[Arc<Origin>]) -> Self {
        let mut buckets = HashMap::with_capacity(self.buckets.len());
        let mut len = 0;
        for (h, os) in &self.buckets {
            let kept: Vec<Arc<Origin>> = os
                .iter()
                .filter(|o| !gone.iter().any(|g| Arc::ptr_eq(g, o)))
                .cloned()
                .collect();
            if !kept.is_empty() {
                len += kept.len();
                buckets.insert(*h, kept);
            }
        }
        Self { buckets, len }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Origin>> {
        self.buckets.values().flatten()
    }
}

/// The origins of one client.
pub(crate) struct Origins {
    table: ArcSwap<Table>,
    write: Mutex<()>,
    hasher: RandomState,
    max: usize,
    idle: Duration,
    /// Origins created and dropped so far.
    pub(crate) created: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) sweeping: AtomicBool,
}

impl Origins {
    pub(crate) fn new(max: usize, idle: Duration) -> Self {
        Self {
            table: ArcSwap::from_pointee(Table::default()),
            write: Mutex::new(()),
            hasher: RandomState::new(),
            max,
            idle,
            created: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
        }
    }

    fn hash(&self, key: &OriginKey<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(u8::from(key.https));
        h.write_u16(key.port);
        for b in key.host.bytes() {
            h.write_u8(b.to_ascii_lowercase());
        }
        h.finish()
    }

    /// The origin for `key`, when it exists.
    pub(crate) fn get(&self, key: &OriginKey<'_>) -> Option<Arc<Origin>> {
        let hash = self.hash(key);
        self.table
            .load()
            .buckets
            .get(&hash)?
            .iter()
            .find(|o| o.is(key))
            .cloned()
    }

    /// The origin for `key`, made by `make` when it does not exist yet. At the cap, the
    /// longest-idle unused origin is dropped first.
    pub(crate) fn get_or_create(
        &self,
        key: &OriginKey<'_>,
        make: impl FnOnce() -> Result<Origin, Error>,
    ) -> Result<(Arc<Origin>, bool), Error> {
        if let Some(o) = self.get(key) {
            return Ok((o, false));
        }
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = self.get(key) {
            return Ok((o, false));
        }
        let mut table = self.table.load_full();
        if table.len >= self.max {
            let victim = table
                .all()
                .filter(|o| o.unused())
                .min_by_key(|o| o.idle_since.load(Ordering::Relaxed))
                .cloned();
            let Some(victim) = victim else {
                return Err(Error::new(ErrorKind::OriginLimit).with_source(format!(
                    "{} origins in use, none idle (max_origins)",
                    table.len
                )));
            };
            tracing::debug!(origin = %victim.name, "dropping the longest idle origin to make room");
            table = Arc::new(table.without(&[victim]));
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let origin = Arc::new(make()?);
        self.table
            .store(Arc::new(table.with(self.hash(key), origin.clone())));
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok((origin, true))
    }

    /// Every origin now.
    pub(crate) fn all(&self) -> Vec<Arc<Origin>> {
        self.table.load().all().cloned().collect()
    }

    /// Number of origins now.
    pub(crate) fn len(&self) -> usize {
        self.table.load().len
    }

    /// How often [`sweep`](Self::sweep) should run.
    pub(crate) fn sweep_period(&self) -> Duration {
        (self.idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30))
    }

    /// Drops origins that took no request for the idle timeout and have nothing in flight.
    /// Idleness is seen by the request counter standing still between sweeps, so the call
    /// path reads no clock for it.
    pub(crate) fn sweep(&self) {
        let now = now_ms();
        let idle_ms = self.idle.as_millis() as u64;
        let mut candidates: Vec<*const Origin> = Vec::new();
        for o in self.table.load().all() {
            let n = o.counters.requests.load(Ordering::Relaxed);
            if o.seen.swap(n, Ordering::Relaxed) != n {
                o.idle_since.store(now, Ordering::Relaxed);
            } else if now.saturating_sub(o.idle_since.load(Ordering::Relaxed)) >= idle_ms {
                candidates.push(Arc::as_ptr(o));
            }
        }
        if candidates.is_empty() {
            return;
        }
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.table.load_full();
        // Checked again under the lock: only the table may hold it, nothing in flight.
        let gone: Vec<Arc<Origin>> = current
            .all()
            .filter(|o| candidates.contains(&Arc::as_ptr(o)) && o.unused())
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        for o in &gone {
            tracing::debug!(origin = %o.name, "dropping idle origin");
        }
        self.dropped.fetch_add(gone.len() as u64, Ordering::Relaxed);
        self.table.store(Arc::new(current.without(&gone)));
    }
}
