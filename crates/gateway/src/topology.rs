//! The governance view of API calls: the live call graph (listeners → routes → upstreams →
//! targets) with rate, error rate, p99 and health on each edge; SLO status per route; ghost
//! dependencies (routes with no traffic) and failing targets.
//!
//! Route figures come from each route's rolling window. Target figures come from a sampler
//! that reads the client's cumulative counters every few seconds and keeps a minute of history,
//! so nothing is added to the request path for this view.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::metrics::error_budget_left;
use crate::snapshot::{RouteAction, Snapshot};
use crate::state::Shared;

const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const KEEP: usize = 13;

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    requests: u64,
    errors: u64,
}

/// Per-target history of cumulative counters.
#[derive(Default)]
pub struct TargetSampler {
    history: Mutex<HashMap<String, VecDeque<Sample>>>,
}

/// Rate and error rate of a target over the sampled history.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetRate {
    /// Requests per second.
    pub rate: f64,
    /// Share of failed calls (0..1).
    pub error_rate: f64,
    /// Requests in the history.
    pub requests: u64,
}

fn key(upstream: &str, target: &str) -> String {
    format!("{upstream}|{target}")
}

impl TargetSampler {
    /// Samples every few seconds for as long as the process runs.
    pub fn spawn(shared: Arc<Shared>) -> Arc<Self> {
        let sampler = Arc::new(Self::default());
        let s = sampler.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                s.sample(&shared.snapshot.load());
            }
        });
        sampler
    }

    fn sample(&self, snap: &Snapshot) {
        let now = Instant::now();
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = Vec::new();
        for u in &snap.upstreams {
            for t in u.targets() {
                let k = key(u.name(), &t.authority);
                let errors: u64 = t.stats.errors().map(|(_, n)| n).sum();
                let q = h.entry(k.clone()).or_default();
                q.push_back(Sample {
                    at: now,
                    requests: t.stats.requests.load(Ordering::Relaxed),
                    errors,
                });
                while q.len() > KEEP {
                    q.pop_front();
                }
                seen.push(k);
            }
        }
        h.retain(|k, _| seen.contains(k));
    }

    /// The target's figures over the last minute (or since it was first sampled).
    pub fn rate(&self, upstream: &str, target: &str) -> TargetRate {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = h.get(&key(upstream, target)) else {
            return TargetRate::default();
        };
        let (Some(first), Some(last)) = (q.front(), q.back()) else {
            return TargetRate::default();
        };
        let secs = last.at.duration_since(first.at).as_secs_f64();
        let requests = last.requests.saturating_sub(first.requests);
        let errors = last.errors.saturating_sub(first.errors);
        TargetRate {
            rate: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            error_rate: if requests > 0 {
                (errors as f64 / requests as f64).min(1.0)
            } else {
                0.0
            },
            requests,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Ghost status of a route: no request for `ghost_after`, counting from its last request or,
/// without one, from when the route appeared (process start, or the reload that added it).
fn ghost(last_seen_ms: u64, ghost_after: Duration, since_ms: u64) -> (bool, Option<f64>) {
    let now = unix_ms();
    if last_seen_ms == 0 {
        let up = now.saturating_sub(since_ms);
        return (up >= ghost_after.as_millis() as u64, None);
    }
    let idle = now.saturating_sub(last_seen_ms);
    (
        idle >= ghost_after.as_millis() as u64,
        Some(idle as f64 / 1000.0),
    )
}

/// `GET /admin/slo`: every route with an objective, measured against it.
pub fn slo_json(snap: &Snapshot) -> Value {
    let window = snap.config.observability.slo_window;
    let routes: Vec<Value> = snap
        .config
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.slo.as_ref().map(|slo| (i, slo)))
        .map(|(i, slo)| {
            let m = snap.routes[i].metrics.stats.summary();
            let success_met = slo.success_rate.map(|t| m.success_rate >= t);
            let p99_met = slo.p99.map(|t| m.p99_ms <= t.as_secs_f64() * 1000.0);
            json!({
                "route": &*snap.routes[i].name,
                "objective": {
                    "success_rate": slo.success_rate,
                    "p99_ms": slo.p99.map(|d| d.as_secs_f64() * 1000.0),
                },
                "measured": {
                    "requests": m.requests,
                    "errors": m.errors,
                    "success_rate": m.success_rate,
                    "p99_ms": finite(m.p99_ms),
                    "p50_ms": finite(m.p50_ms),
                    "rate": m.rate,
                },
                "error_budget_remaining": slo.success_rate.map(|t| error_budget_left(&m, t)),
                "met": success_met.unwrap_or(true) && p99_met.unwrap_or(true),
            })
        })
        .collect();
    json!({ "window_seconds": window.as_secs(), "routes": routes })
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

/// `GET /admin/topology`: the live call graph.
pub fn topology_json(
    snap: &Snapshot,
    sampler: &TargetSampler,
    listeners: &HashMap<String, std::net::SocketAddr>,
    started_ms: u64,
) -> Value {
    let obs = &snap.config.observability;
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let mut ghosts = Vec::new();
    let mut failing = Vec::new();
    for l in &snap.config.listeners {
        nodes.push(json!({
            "id": format!("listener:{}", l.name),
            "kind": "listener",
            "name": l.name,
            "address": listeners.get(&l.name).map(ToString::to_string),
            "tls": l.tls.is_some(),
        }));
    }
    for (i, r) in snap.routes.iter().enumerate() {
        let m = r.metrics.stats.summary();
        let (is_ghost, idle) = ghost(
            r.metrics.stats.last_seen_ms.load(Ordering::Relaxed),
            obs.ghost_after,
            started_ms.max(r.metrics.stats.created_ms),
        );
        if is_ghost {
            ghosts.push(json!(&*r.name));
        }
        nodes.push(json!({
            "id": format!("route:{}", r.name),
            "kind": "route",
            "name": &*r.name,
            "rate": m.rate,
            "error_rate": if m.requests > 0 { m.errors as f64 / m.requests as f64 } else { 0.0 },
            "p99_ms": finite(m.p99_ms),
            "idle_seconds": idle,
            "ghost": is_ghost,
            "slo": snap.config.routes[i].slo.as_ref().map(|s| json!({
                "success_rate": s.success_rate,
                "p99_ms": s.p99.map(|d| d.as_secs_f64() * 1000.0),
            })),
        }));
        for l in &snap.config.listeners {
            edges.push(json!({
                "from": format!("listener:{}", l.name),
                "to": format!("route:{}", r.name),
            }));
        }
        let legs: Vec<(usize, Option<u64>)> = match &r.action {
            RouteAction::Upstream(u) => vec![(*u, None)],
            RouteAction::Split(legs, _) => {
                let mut prev = 0;
                legs.iter()
                    .map(|(u, acc)| {
                        let w = acc - prev;
                        prev = *acc;
                        (*u, Some(w))
                    })
                    .collect()
            }
            RouteAction::Direct(_) => Vec::new(),
        };
        for (u, weight) in legs {
            edges.push(json!({
                "from": format!("route:{}", r.name),
                "to": format!("upstream:{}", snap.upstreams[u].name()),
                "weight": weight,
                "rate": m.rate,
                "error_rate": if m.requests > 0 { m.errors as f64 / m.requests as f64 } else { 0.0 },
                "p99_ms": finite(m.p99_ms),
            }));
        }
    }
    for u in &snap.upstreams {
        nodes.push(json!({
            "id": format!("upstream:{}", u.name()),
            "kind": "upstream",
            "name": u.name(),
        }));
        for t in u.targets() {
            let r = sampler.rate(u.name(), &t.authority);
            let health = t.health.describe();
            let circuit = t.circuit();
            let is_failing = health != "healthy"
                || circuit != "closed"
                || (r.requests >= 5 && r.error_rate > 0.5);
            if is_failing {
                failing.push(json!({ "upstream": u.name(), "target": &*t.authority }));
            }
            let id = format!("target:{}/{}", u.name(), t.authority);
            nodes.push(json!({
                "id": id,
                "kind": "target",
                "address": &*t.authority,
                "health": health,
                "circuit": circuit,
                "in_flight": t.stats.in_flight.load(Ordering::Relaxed),
                "failing": is_failing,
            }));
            edges.push(json!({
                "from": format!("upstream:{}", u.name()),
                "to": id,
                "rate": r.rate,
                "error_rate": r.error_rate,
                "health": health,
            }));
        }
    }
    json!({
        "window_seconds": obs.slo_window.as_secs(),
        "ghost_after_seconds": obs.ghost_after.as_secs(),
        "nodes": nodes,
        "edges": edges,
        "ghost_routes": ghosts,
        "failing_targets": failing,
    })
}
