//! Picking a target: smooth weighted round robin, weighted random, least request (power of two
//! choices) and consistent hashing on a ring with virtual nodes.
//!
//! Every pick is lock-free: round robin walks a precomputed smooth schedule with an atomic
//! cursor, the ring is immutable, and least request reads per-target atomic counters.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How targets are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Smooth weighted round robin (nginx's algorithm).
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Weighted random.
    Random,
    /// Ring hash with virtual nodes; the caller supplies the request's key hash.
    ConsistentHash,
}

/// Virtual nodes per unit of weight on the hash ring.
const VNODES_PER_WEIGHT: u32 = 160;
/// Cap on ring size so huge weights cannot blow memory up.
const MAX_RING: usize = 200_000;
/// Cap on the round robin schedule length.
const MAX_SCHEDULE: usize = 16_384;

/// A balancer over a fixed list of weighted targets.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    weights: Vec<u32>,
    cumulative: Vec<u64>,
    schedule: Vec<u32>,
    cursor: AtomicUsize,
    ring: Vec<(u64, u32)>,
}

impl Balancer {
    /// Builds a balancer. `names` identify targets on the hash ring (stable across restarts and
    /// across gateways, so a fleet maps a key to the same target).
    pub fn new(policy: Policy, weights: &[u32], names: &[&str]) -> Self {
        let weights: Vec<u32> = weights.iter().map(|w| (*w).max(1)).collect();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut acc = 0u64;
        for w in &weights {
            acc += u64::from(*w);
            cumulative.push(acc);
        }
        let schedule = if policy == Policy::RoundRobin {
            smooth_schedule(&weights)
        } else {
            Vec::new()
        };
        let ring = if policy == Policy::ConsistentHash {
            build_ring(&weights, names)
        } else {
            Vec::new()
        };
        Self {
            policy,
            weights,
            cumulative,
            schedule,
            cursor: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            ring,
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Picks a target index. `usable(i)` says whether target `i` may take the request
    /// (healthy, not ejected, breaker closed); `load(i)` is its in-flight count; `key` is the
    /// request's hash for consistent hashing.
    pub fn pick(
        &self,
        key: Option<u64>,
        usable: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return usable(0).then_some(0);
        }
        match self.policy {
            Policy::RoundRobin => {
                let len = self.schedule.len();
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                for i in 0..len {
                    let t = self.schedule[(start + i) % len] as usize;
                    if usable(t) {
                        return Some(t);
                    }
                }
                None
            }
            Policy::Random => self.random_usable(&usable),
            Policy::LeastRequest => {
                let a = self.random_usable(&usable)?;
                let b = self.random_usable(&usable)?;
                Some(if load(b) < load(a) { b } else { a })
            }
            Policy::ConsistentHash => {
                let Some(k) = key else {
                    return self.random_usable(&usable);
                };
                let start = self.ring.partition_point(|(h, _)| *h < k);
                let len = self.ring.len();
                // Walk clockwise past unusable targets; each target appears many times, so
                // stop once every target has been seen unusable.
                let mut seen = 0usize;
                let mut tried = vec![false; 0];
                for i in 0..len {
                    let t = self.ring[(start + i) % len].1 as usize;
                    if usable(t) {
                        return Some(t);
                    }
                    if tried.is_empty() {
                        tried = vec![false; n];
                    }
                    if !tried[t] {
                        tried[t] = true;
                        seen += 1;
                        if seen == n {
                            return None;
                        }
                    }
                }
                None
            }
        }
    }

    /// A weighted random usable target: a few random draws, then a scan from a random start.
    fn random_usable(&self, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let total = *self.cumulative.last()?;
        for _ in 0..3 {
            let r = fastrand::u64(..total);
            let t = self.cumulative.partition_point(|c| *c <= r);
            if usable(t) {
                return Some(t);
            }
        }
        let n = self.weights.len();
        let start = fastrand::usize(..n);
        (0..n).map(|i| (start + i) % n).find(|&t| usable(t))
    }
}

/// nginx's smooth weighted round robin, unrolled over one period so picks need no lock.
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().fold(0u32, gcd).max(1);
    let mut w: Vec<u64> = weights.iter().map(|x| u64::from(x / g)).collect();
    let mut total: u64 = w.iter().sum();
    if total as usize > MAX_SCHEDULE {
        // Scale down, keeping every target at least once per period.
        let scale = total as f64 / MAX_SCHEDULE as f64;
        for x in &mut w {
            *x = ((*x as f64 / scale).round() as u64).max(1);
        }
        total = w.iter().sum();
    }
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0usize;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn build_ring(weights: &[u32], names: &[&str]) -> Vec<(u64, u32)> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let per_weight = (MAX_RING as u64 / total.max(1)).clamp(1, u64::from(VNODES_PER_WEIGHT));
    let mut ring = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        let name = names.get(i).copied().unwrap_or("");
        for v in 0..u64::from(*w) * per_weight {
            ring.push((hash_key(format!("{name}#{v}").as_bytes()), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// The stable 64-bit hash used for ring points and request keys: FNV-1a with a murmur3
/// finalizer for avalanche. Stable across processes, so every gateway of a fleet agrees.
pub fn hash_key(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests;
