//! Window values from the cumulative series the gateway already keeps: a sample is a reading
//! of those counters; two samples make a window.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use portcullis_config::{Policy, Signal};

use crate::snapshot::{RouteAction, Snapshot};

/// A reading of a policy's cumulative counters.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// Every request answered (for `rps`).
    pub requests: u64,
    /// Requests that went upstream (not answered by a policy).
    pub forwarded: u64,
    /// Of those, 5xx.
    pub errors: u64,
    /// Cumulative latency histogram of forwarded requests (seconds, count), `+Inf` last.
    pub latency: Vec<(f64, u64)>,
    /// Requests in flight to the upstreams now.
    pub in_flight: u64,
}

/// Signal values over one window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Forwarded requests in the window.
    pub forwarded: u64,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
}

/// Reads the counters of the routes (or legs) `def` watches in `snap`.
pub fn sample(def: &Policy, snap: &Snapshot) -> Sample {
    let mut s = Sample {
        at: Instant::now(),
        requests: 0,
        forwarded: 0,
        errors: 0,
        latency: Vec::new(),
        in_flight: 0,
    };
    let mut upstreams_seen = HashSet::new();
    let mut in_flight_seen = HashSet::new();
    for (ri, legs) in def.routes.iter().zip(&def.legs) {
        let Some(route) = snap.routes.get(*ri) else {
            continue;
        };
        let legs = legs.as_deref();
        let t = route.metrics.totals(legs);
        let answered = route.answered.total.load(Ordering::Relaxed);
        let answered_5xx = route.answered.server_errors.load(Ordering::Relaxed);
        s.requests += t.requests;
        s.forwarded += t.requests.saturating_sub(answered);
        s.errors += t.server_errors.saturating_sub(answered_5xx);
        match legs {
            None => {
                // Policy answers are immediate: they sit in the lowest bucket, hence in every
                // cumulative one.
                let h: Vec<(f64, u64)> = route
                    .metrics
                    .latency_buckets_secs()
                    .into_iter()
                    .map(|(b, n)| (b, n.saturating_sub(answered)))
                    .collect();
                add(&mut s.latency, &h);
            }
            Some(legs) => {
                for leg in legs {
                    if let Some((up, h)) = route.metrics.upstream_buckets(*leg)
                        && upstreams_seen.insert(up.to_owned())
                    {
                        add(&mut s.latency, &h);
                    }
                }
            }
        }
        let ups: Vec<usize> = match &route.action {
            RouteAction::Upstream(u) => vec![*u],
            RouteAction::Split(l, _) => l.iter().map(|(u, _)| *u).collect(),
            RouteAction::Direct(_) => Vec::new(),
        };
        for (k, u) in ups.into_iter().enumerate() {
            if legs.is_some_and(|l| !l.contains(&k)) || !in_flight_seen.insert(u) {
                continue;
            }
            if let Some(up) = snap.upstreams.get(u) {
                for t in up.targets() {
                    s.in_flight += t.stats.in_flight.load(Ordering::Relaxed) as u64;
                }
            }
        }
    }
    s
}

fn add(into: &mut Vec<(f64, u64)>, h: &[(f64, u64)]) {
    if into.is_empty() {
        into.extend_from_slice(h);
    } else {
        for (a, b) in into.iter_mut().zip(h) {
            a.1 += b.1;
        }
    }
}

/// The value of `signal` between samples `a` (older) and `b`.
pub fn value(signal: Signal, a: &Sample, b: &Sample) -> (f64, Window) {
    let w = Window {
        forwarded: b.forwarded.saturating_sub(a.forwarded),
        requests: b.requests.saturating_sub(a.requests),
        errors: b.errors.saturating_sub(a.errors),
        seconds: b.at.duration_since(a.at).as_secs_f64().max(1e-3),
    };
    let v = match signal {
        Signal::Latency(q) => quantile(q, &a.latency, &b.latency),
        Signal::ErrorRate => ratio(w.errors, w.forwarded),
        Signal::SuccessRate => 1.0 - ratio(w.errors, w.forwarded),
        Signal::Rps => w.requests as f64 / w.seconds,
        Signal::InFlight => b.in_flight as f64,
    };
    (v, w)
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

/// The `q` quantile of the histogram difference `b - a`, interpolated inside its bucket as
/// Prometheus' `histogram_quantile` does; 0 without observations.
fn quantile(q: f64, a: &[(f64, u64)], b: &[(f64, u64)]) -> f64 {
    let diff: Vec<(f64, u64)> = b
        .iter()
        .enumerate()
        .map(|(i, (ub, n))| (*ub, n.saturating_sub(a.get(i).map_or(0, |x| x.1))))
        .collect();
    let total = diff.last().map_or(0, |x| x.1);
    if total == 0 {
        return 0.0;
    }
    let want = q * total as f64;
    let mut prev = (0.0, 0u64);
    for (ub, cum) in &diff {
        if *cum as f64 >= want {
            if ub.is_infinite() {
                return prev.0;
            }
            let inside = (*cum - prev.1) as f64;
            let frac = if inside == 0.0 {
                1.0
            } else {
                (want - prev.1 as f64) / inside
            };
            return prev.0 + (ub - prev.0) * frac;
        }
        prev = (*ub, *cum);
    }
    prev.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        let a = vec![(0.1, 0), (0.5, 0), (f64::INFINITY, 0)];
        let b = vec![(0.1, 90), (0.5, 100), (f64::INFINITY, 100)];
        assert!((quantile(0.5, &a, &b) - 0.0555).abs() < 1e-3);
        let p99 = quantile(0.99, &a, &b);
        assert!(p99 > 0.1 && p99 <= 0.5, "{p99}");
        assert_eq!(quantile(0.99, &b, &b), 0.0);
    }
}
