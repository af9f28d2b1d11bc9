//! Zone-aware balancing: traffic stays in the local zone while enough of it is healthy, and
//! spills to the other zones in proportion as its healthy share falls below the threshold
//! (Envoy's overprovisioning idea): with `min_healthy_percent` 70 and half the local targets
//! usable, 50/70 ≈ 71 % stays local. A dark local zone sends everything elsewhere; other zones
//! share the spill by their usable targets.

use std::sync::Arc;

/// Locality settings of an upstream.
#[derive(Debug, Clone)]
pub struct Locality {
    /// This node's zone.
    pub local_zone: Arc<str>,
    /// The local zone takes all traffic while at least this share (percent) of its targets is
    /// usable.
    pub min_healthy_percent: f64,
}

/// One zone's state now.
#[derive(Debug, Clone)]
pub struct ZoneShare {
    /// Zone name (`""` for targets without one).
    pub zone: String,
    /// Whether it is this node's zone.
    pub local: bool,
    /// Targets in the zone.
    pub targets: usize,
    /// Usable targets (healthy, not ejected, breaker letting calls through).
    pub healthy: usize,
    /// `healthy / targets`, percent.
    pub healthy_percent: f64,
    /// Share of new requests it gets now, percent.
    pub traffic_percent: f64,
}

/// Per-zone target and usable counts → each zone's share of traffic (0..1), in the same order.
/// `local` is the index of the local zone, if it has targets.
pub fn shares(
    counts: &[(usize, usize)],
    local: Option<usize>,
    min_healthy_percent: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; counts.len()];
    let usable_total: usize = counts.iter().map(|c| c.1).sum();
    if usable_total == 0 {
        return out;
    }
    let local_part = match local {
        Some(l) if counts[l].0 > 0 => {
            let healthy = 100.0 * counts[l].1 as f64 / counts[l].0 as f64;
            (healthy / min_healthy_percent.max(1e-9)).min(1.0)
        }
        _ => 0.0,
    };
    let others: usize = counts
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != local)
        .map(|(_, c)| c.1)
        .sum();
    if others == 0 {
        // Nowhere to spill: the local zone keeps what it can serve.
        if let Some(l) = local {
            out[l] = 1.0;
        }
        return out;
    }
    if let Some(l) = local {
        out[l] = local_part;
    }
    for (i, c) in counts.iter().enumerate() {
        if Some(i) != local {
            out[i] = (1.0 - local_part) * c.1 as f64 / others as f64;
        }
    }
    out
}

/// Draws a zone index from `shares` (which sum to 1, or are all 0).
pub fn draw(shares: &[f64]) -> Option<usize> {
    let mut r = fastrand::f64();
    let mut last = None;
    for (i, s) in shares.iter().enumerate() {
        if *s <= 0.0 {
            continue;
        }
        last = Some(i);
        if r < *s {
            return Some(i);
        }
        r -= s;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spill_is_proportional_and_total_when_dark() {
        // local: 4 targets; two other zones with 2 usable each
        let s = shares(&[(4, 4), (2, 2), (2, 2)], Some(0), 70.0);
        assert_eq!(s, vec![1.0, 0.0, 0.0]);
        let s = shares(&[(4, 3), (2, 2), (2, 2)], Some(0), 70.0);
        assert_eq!(s[0], 1.0);
        let s = shares(&[(4, 2), (2, 2), (2, 1)], Some(0), 70.0);
        assert!((s[0] - 50.0 / 70.0).abs() < 1e-9);
        assert!((s[1] - (1.0 - 50.0 / 70.0) * 2.0 / 3.0).abs() < 1e-9);
        let s = shares(&[(4, 0), (2, 2), (2, 2)], Some(0), 70.0);
        assert_eq!(s, vec![0.0, 0.5, 0.5]);
        assert_eq!(shares(&[(4, 0), (2, 0)], Some(0), 70.0), vec![0.0, 0.0]);
        assert_eq!(draw(&[0.0, 0.0]), None);
        // nowhere else to go
        assert_eq!(shares(&[(4, 1), (2, 0)], Some(0), 70.0), vec![1.0, 0.0]);
    }
}
