//! Target health: active HTTP probes and passive ejection on observed failures.
//!
//! A target takes traffic when it is healthy by its active checks (targets start healthy) and
//! not ejected. Passive ejection lasts longer each time it repeats, and never takes more than
//! `max_ejected_percent` of an upstream's targets out at once, so a bad deploy that fails
//! everything still leaves traffic flowing somewhere.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::now_ms;

/// Active health check settings.
#[derive(Debug, Clone)]
pub struct ActiveHealthConfig {
    /// Path probed with GET.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Consecutive successes before an unhealthy target is healthy again.
    pub healthy_threshold: u32,
    /// Consecutive failures before a healthy target is unhealthy.
    pub unhealthy_threshold: u32,
    /// Healthy statuses; 200-399 when empty.
    pub expected_statuses: Vec<u16>,
}

impl ActiveHealthConfig {
    /// Whether a probe answered with `status` counts as a success.
    pub fn expected(&self, status: u16) -> bool {
        if self.expected_statuses.is_empty() {
            (200..400).contains(&status)
        } else {
            self.expected_statuses.contains(&status)
        }
    }
}

/// Passive health (outlier ejection) settings.
#[derive(Debug, Clone)]
pub struct PassiveHealthConfig {
    /// Consecutive failures that eject a target.
    pub consecutive_failures: u32,
    /// First ejection length; the n-th repeat lasts n times as long (up to 10x). The
    /// multiplier steps back down by one for each `eject_for` the target then stays in service.
    pub eject_for: Duration,
    /// At most this share of an upstream's targets is ejected at once.
    pub max_ejected_percent: f64,
}

/// Health of one target.
#[derive(Debug)]
pub struct HealthState {
    healthy: AtomicBool,
    probe_successes: AtomicU32,
    probe_failures: AtomicU32,
    consecutive_failures: AtomicU32,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    /// When the ejection multiplier may next step down (ms since the clock's epoch).
    decay_from: AtomicU64,
    /// Times this target was ejected.
    pub ejections_total: AtomicU64,
    /// Times active checks changed this target's health.
    pub transitions_total: AtomicU64,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            probe_successes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            decay_from: AtomicU64::new(0),
            ejections_total: AtomicU64::new(0),
            transitions_total: AtomicU64::new(0),
        }
    }
}

impl HealthState {
    /// Healthy by active checks.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Ejected by passive checks right now.
    pub fn ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now_ms()
    }

    /// Takes traffic: healthy and not ejected.
    pub fn usable(&self) -> bool {
        self.healthy() && !self.ejected()
    }

    /// "healthy", "unhealthy" or "ejected", for the admin API.
    pub fn describe(&self) -> &'static str {
        if !self.healthy() {
            "unhealthy"
        } else if self.ejected() {
            "ejected"
        } else {
            "healthy"
        }
    }

    /// Records a probe result; returns the new health when it changed.
    pub fn probe_result(&self, ok: bool, cfg: &ActiveHealthConfig) -> Option<bool> {
        if ok {
            self.probe_failures.store(0, Ordering::Release);
            let n = self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1;
            if !self.healthy() && n >= cfg.healthy_threshold {
                self.healthy.store(true, Ordering::Release);
                self.transitions_total.fetch_add(1, Ordering::Relaxed);
                // A target back in service starts with a clean slate.
                self.consecutive_failures.store(0, Ordering::Release);
                self.ejected_until.store(0, Ordering::Release);
                return Some(true);
            }
        } else {
            self.probe_successes.store(0, Ordering::Release);
            let n = self.probe_failures.fetch_add(1, Ordering::AcqRel) + 1;
            if self.healthy() && n >= cfg.unhealthy_threshold {
                self.healthy.store(false, Ordering::Release);
                self.transitions_total.fetch_add(1, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Records a call's outcome for passive ejection. `may_eject` says whether ejecting one
    /// more target stays within `max_ejected_percent`. Returns true when this call ejected it.
    pub fn call_result(
        &self,
        ok: bool,
        cfg: &PassiveHealthConfig,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        if ok {
            self.consecutive_failures.store(0, Ordering::Release);
            self.decay(cfg);
            return false;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n < cfg.consecutive_failures || self.ejected() || !may_eject() {
            return false;
        }
        let times = self.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let length = cfg.eject_for.saturating_mul(times.min(10));
        let until = now_ms() + length.as_millis() as u64;
        self.ejected_until.store(until, Ordering::Release);
        self.decay_from.store(until, Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Release);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl HealthState {
    /// Steps the ejection multiplier down once the target has served for `eject_for` since it
    /// came back (or since the last step), so a target that failed once long ago is not
    /// ejected ten times as long on its next bad minute.
    fn decay(&self, cfg: &PassiveHealthConfig) {
        if self.ejections.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = now_ms();
        let from = self.decay_from.load(Ordering::Acquire);
        if now < from.saturating_add(cfg.eject_for.as_millis() as u64) {
            return;
        }
        // One caller wins the step; the others see the moved marker and leave it.
        if self
            .decay_from
            .compare_exchange(from, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let _ = self
                .ejections
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // sleeping threads in sync tests is fine
mod tests {
    use super::*;

    fn active() -> ActiveHealthConfig {
        ActiveHealthConfig {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_statuses: vec![],
        }
    }

    #[test]
    fn active_thresholds() {
        let h = HealthState::default();
        let c = active();
        assert!(h.healthy());
        assert_eq!(h.probe_result(false, &c), None);
        assert_eq!(h.probe_result(false, &c), None);
        assert_eq!(h.probe_result(false, &c), Some(false));
        assert!(!h.usable());
        assert_eq!(h.probe_result(true, &c), None);
        assert_eq!(h.probe_result(true, &c), Some(true));
        assert!(h.usable());
        assert!(c.expected(204) && !c.expected(500));
    }

    #[test]
    fn passive_ejection_grows_and_expires() {
        let h = HealthState::default();
        let c = PassiveHealthConfig {
            consecutive_failures: 2,
            eject_for: Duration::from_millis(30),
            max_ejected_percent: 50.0,
        };
        assert!(!h.call_result(false, &c, || true));
        assert!(h.call_result(false, &c, || true));
        assert!(h.ejected());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!h.ejected(), "the first ejection lasts eject_for");
        h.call_result(false, &c, || true);
        assert!(h.call_result(false, &c, || true));
        std::thread::sleep(Duration::from_millis(40));
        assert!(h.ejected(), "the second lasts twice as long");
        std::thread::sleep(Duration::from_millis(30));
        assert!(!h.ejected());
        // The cap forbids ejection.
        h.call_result(false, &c, || false);
        assert!(!h.call_result(false, &c, || false));
        assert!(!h.ejected());
    }

    #[test]
    fn the_ejection_multiplier_decays_while_the_target_serves() {
        let h = HealthState::default();
        let c = PassiveHealthConfig {
            consecutive_failures: 1,
            eject_for: Duration::from_millis(100),
            max_ejected_percent: 100.0,
        };
        assert!(h.call_result(false, &c, || true));
        std::thread::sleep(Duration::from_millis(120));
        assert!(h.call_result(false, &c, || true), "second ejection");
        assert_eq!(h.ejections.load(Ordering::Relaxed), 2);
        // Back in service: a success right away does not step down yet...
        std::thread::sleep(Duration::from_millis(210));
        assert!(!h.ejected());
        h.call_result(true, &c, || true);
        assert_eq!(h.ejections.load(Ordering::Relaxed), 2);
        // ...one eject_for of service later it does, once per eject_for.
        std::thread::sleep(Duration::from_millis(120));
        h.call_result(true, &c, || true);
        h.call_result(true, &c, || true);
        assert_eq!(h.ejections.load(Ordering::Relaxed), 1);
        std::thread::sleep(Duration::from_millis(120));
        h.call_result(true, &c, || true);
        assert_eq!(h.ejections.load(Ordering::Relaxed), 0);
        // The next ejection is a first one again.
        assert!(h.call_result(false, &c, || true));
        std::thread::sleep(Duration::from_millis(120));
        assert!(!h.ejected(), "lasts one eject_for");
    }
}
