//! Live figures at one-second resolution for the dashboard: every second a sampler reads the
//! counters the gateway already keeps (each route's request and 5xx totals and latency
//! histogram, each target's request and error counters, health and circuit) and turns the
//! differences into a frame of rates, error rates and p99. The last 15 minutes of frames are
//! kept in a bounded ring; new frames are also broadcast to `GET /admin/stream` listeners.
//!
//! Nothing is added to the request path. A frame holds only the routes that had traffic in its
//! second, plus every target, so idle routes (10,000 of them) cost nothing to keep.

pub mod sse;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::snapshot::Snapshot;
use crate::state::Shared;

/// Seconds of frames kept.
pub const KEEP_SECONDS: usize = 15 * 60;
const STEP: Duration = Duration::from_secs(1);

/// One route's second.
#[derive(Debug, Clone)]
pub struct RoutePoint {
    /// The route's name.
    pub name: Arc<str>,
    /// Requests finished in the second.
    pub requests: u64,
    /// 5xx answers among them.
    pub errors: u64,
    /// 99th percentile latency in ms (upper bound of its bucket); `None` when above the last.
    pub p99_ms: Option<f64>,
}

/// One target's second.
#[derive(Debug, Clone)]
pub struct TargetPoint {
    /// The upstream it belongs to.
    pub upstream: String,
    /// The target's address.
    pub address: Arc<str>,
    /// Calls sent in the second (retries included).
    pub requests: u64,
    /// Failed calls in the second.
    pub errors: u64,
    /// Health as the admin API names it.
    pub health: &'static str,
    /// Circuit breaker state.
    pub circuit: &'static str,
    /// Requests in flight at the sample.
    pub in_flight: usize,
}

/// One second of the whole gateway.
#[derive(Debug)]
pub struct Frame {
    /// Unix ms at the end of the second.
    pub t_ms: u64,
    /// Seconds the frame covers (1, or more after a stall).
    pub secs: f64,
    /// Routes with traffic in the second.
    pub routes: Vec<RoutePoint>,
    /// Every target.
    pub targets: Vec<TargetPoint>,
}

/// A route's counters at the previous sample.
struct RouteLast {
    requests: u64,
    errors: u64,
    /// Latency histogram sample count.
    count: u64,
    /// Cumulative latency histogram (empty until the route has traffic).
    hist: Vec<(f64, u64)>,
}

#[derive(Default)]
struct Last {
    routes: HashMap<Arc<str>, RouteLast>,
    targets: HashMap<(String, Arc<str>), (u64, u64)>,
    /// A baseline was taken.
    started: bool,
}

/// The ring of frames and the broadcast of new ones.
pub struct Live {
    ring: Mutex<VecDeque<Arc<Frame>>>,
    /// New frames as the stream sends them (JSON made once per second, only when listened to).
    tx: broadcast::Sender<Arc<str>>,
    last: Mutex<Last>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        (n as f64 / d as f64).min(1.0)
    }
}

/// The `q` quantile of the difference of two cumulative histograms (same buckets).
fn quantile(now: &[(f64, u64)], before: &[(f64, u64)], q: f64) -> Option<f64> {
    let count = |i: usize, h: &[(f64, u64)]| h.get(i).map_or(0, |b| b.1);
    let total = count(now.len().saturating_sub(1), now)
        .saturating_sub(count(before.len().saturating_sub(1), before));
    if total == 0 {
        return Some(0.0);
    }
    let want = (total as f64 * q).ceil() as u64;
    for (i, (bound, n)) in now.iter().enumerate() {
        let before = if before.len() == now.len() {
            count(i, before)
        } else {
            0
        };
        if n.saturating_sub(before) >= want {
            return bound.is_finite().then_some(*bound);
        }
    }
    None
}

impl Live {
    /// Samples every second for as long as the process runs.
    pub fn spawn(shared: Arc<Shared>) -> Arc<Self> {
        let (tx, _) = broadcast::channel(16);
        let live = Arc::new(Self {
            ring: Mutex::new(VecDeque::with_capacity(KEEP_SECONDS)),
            tx,
            last: Mutex::default(),
        });
        let l = live.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut prev = std::time::Instant::now();
            loop {
                tick.tick().await;
                let now = std::time::Instant::now();
                let secs = now.duration_since(prev).as_secs_f64().max(0.001);
                prev = now;
                l.sample(&shared.snapshot.load(), secs);
            }
        });
        live
    }

    fn sample(&self, snap: &Snapshot, secs: f64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let first = !std::mem::replace(&mut last.started, true);
        let mut routes = Vec::new();
        let mut seen = HashMap::with_capacity(snap.routes.len());
        for r in &snap.routes {
            let (requests, errors) = r.metrics.stats.totals();
            let count = r.metrics.latency_count();
            let prev = last.routes.remove(&r.name);
            let (hist, point) = match prev {
                Some(p) if requests > p.requests => {
                    let h = if count != p.count {
                        r.metrics.latency_buckets()
                    } else {
                        p.hist.clone()
                    };
                    let point = RoutePoint {
                        name: r.name.clone(),
                        requests: requests - p.requests,
                        errors: errors.saturating_sub(p.errors),
                        p99_ms: quantile(&h, &p.hist, 0.99),
                    };
                    (h, Some(point))
                }
                Some(p) => (p.hist, None),
                None if requests > 0 => (r.metrics.latency_buckets(), None),
                None => (Vec::new(), None),
            };
            routes.extend(point);
            seen.insert(
                r.name.clone(),
                RouteLast {
                    requests,
                    errors,
                    count,
                    hist,
                },
            );
        }
        last.routes = seen;
        let mut targets = Vec::new();
        let mut tseen = HashMap::new();
        for u in &snap.upstreams {
            for t in u.targets() {
                let requests = t.stats.requests.load(Ordering::Relaxed);
                let errors: u64 = t.stats.errors().map(|(_, n)| n).sum();
                let k = (u.name().to_owned(), t.authority.clone());
                let (pr, pe) = last.targets.get(&k).copied().unwrap_or((requests, errors));
                targets.push(TargetPoint {
                    upstream: k.0.clone(),
                    address: k.1.clone(),
                    requests: requests.saturating_sub(pr),
                    errors: errors.saturating_sub(pe),
                    health: t.health.describe(),
                    circuit: t.circuit(),
                    in_flight: t.stats.in_flight.load(Ordering::Relaxed),
                });
                tseen.insert(k, (requests, errors));
            }
        }
        last.targets = tseen;
        drop(last);
        if first {
            // The first sample only sets the baseline.
            return;
        }
        let frame = Arc::new(Frame {
            t_ms: unix_ms(),
            secs,
            routes,
            targets,
        });
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEEP_SECONDS {
            ring.pop_front();
        }
        ring.push_back(frame.clone());
        drop(ring);
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(frame.json().into());
        }
    }

    /// New frames as they are made, as JSON.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }

    /// The frames of the last `seconds`, oldest first.
    pub fn recent(&self, seconds: usize) -> Vec<Arc<Frame>> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let skip = ring.len().saturating_sub(seconds);
        ring.iter().skip(skip).cloned().collect()
    }

    /// `GET /admin/series?route=NAME`: one route over the kept history.
    pub fn route_series(&self, name: &str) -> Value {
        let points: Vec<Value> = self
            .recent(KEEP_SECONDS)
            .iter()
            .map(|f| match f.routes.iter().find(|p| &*p.name == name) {
                Some(p) => json!({
                    "t": f.t_ms,
                    "rate": p.requests as f64 / f.secs,
                    "error_rate": ratio(p.errors, p.requests),
                    "p99_ms": p.p99_ms,
                }),
                None => json!({"t": f.t_ms, "rate": 0.0, "error_rate": 0.0, "p99_ms": null}),
            })
            .collect();
        json!({"route": name, "step_seconds": STEP.as_secs(), "points": points})
    }

    /// `GET /admin/series?upstream=U&target=ADDR`: one target over the kept history.
    pub fn target_series(&self, upstream: &str, address: &str) -> Value {
        let points: Vec<Value> = self
            .recent(KEEP_SECONDS)
            .iter()
            .filter_map(|f| {
                let p = f
                    .targets
                    .iter()
                    .find(|p| p.upstream == upstream && &*p.address == address)?;
                Some(json!({
                    "t": f.t_ms,
                    "rate": p.requests as f64 / f.secs,
                    "error_rate": ratio(p.errors, p.requests),
                    "health": p.health,
                    "circuit": p.circuit,
                    "in_flight": p.in_flight,
                }))
            })
            .collect();
        json!({"upstream": upstream, "target": address, "step_seconds": STEP.as_secs(), "points": points})
    }
}

impl Frame {
    /// The frame as the stream sends it.
    pub fn json(&self) -> String {
        let secs = self.secs;
        let mut r = Map::new();
        let (mut req, mut err) = (0, 0);
        for p in &self.routes {
            req += p.requests;
            err += p.errors;
            r.insert(
                p.name.to_string(),
                json!({
                    "rate": p.requests as f64 / secs,
                    "error_rate": ratio(p.errors, p.requests),
                    "p99_ms": p.p99_ms,
                }),
            );
        }
        let t: Vec<Value> = self
            .targets
            .iter()
            .map(|p| {
                json!({
                    "upstream": p.upstream,
                    "address": &*p.address,
                    "rate": p.requests as f64 / secs,
                    "error_rate": ratio(p.errors, p.requests),
                    "health": p.health,
                    "circuit": p.circuit,
                    "in_flight": p.in_flight,
                })
            })
            .collect();
        json!({
            "t": self.t_ms,
            "totals": {"rate": req as f64 / secs, "error_rate": ratio(err, req)},
            "routes": r,
            "targets": t,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_of_the_difference() {
        let before = vec![(1.0, 10), (5.0, 10), (f64::INFINITY, 10)];
        let now = vec![(1.0, 10), (5.0, 109), (f64::INFINITY, 110)];
        assert_eq!(quantile(&now, &before, 0.5), Some(5.0));
        assert_eq!(quantile(&now, &before, 0.99), Some(5.0));
        assert_eq!(quantile(&now, &before, 1.0), None);
        assert_eq!(quantile(&before, &before, 0.99), Some(0.0));
    }
}
