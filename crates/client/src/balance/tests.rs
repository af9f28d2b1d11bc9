use super::*;

fn counts(b: &Balancer, picks: usize, usable: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut c = vec![0; b.len()];
    for i in 0..picks {
        let key = hash_key(&(i as u64).to_le_bytes());
        if let Some(t) = b.pick(Some(key), &usable, |_| 0) {
            c[t] += 1;
        }
    }
    c
}

fn assert_share(c: &[usize], weights: &[u32], tolerance: f64) {
    let total: usize = c.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (i, w) in weights.iter().enumerate() {
        let want = f64::from(*w) / f64::from(wsum);
        let got = c[i] as f64 / total as f64;
        assert!(
            (got - want).abs() <= tolerance,
            "target {i}: share {got:.3}, want {want:.3} (counts {c:?})"
        );
    }
}

#[test]
fn round_robin_is_smooth_and_exact() {
    let b = Balancer::new(Policy::RoundRobin, &[5, 1, 1], &["a", "b", "c"]);
    assert_eq!(b.schedule.len(), 7);
    // nginx's example: a a b a c a a (some rotation of it), never b and c back to back.
    let c = counts(&b, 7_000, |_| true);
    assert_eq!(c, vec![5_000, 1_000, 1_000]);
    let s = &b.schedule;
    assert!(
        s.windows(2).all(|w| !(w[0] != 0 && w[1] != 0)),
        "not smooth: {s:?}"
    );
}

#[test]
fn every_policy_respects_weights() {
    let weights = [1, 2, 3, 4];
    let names = ["t0", "t1", "t2", "t3"];
    for policy in [Policy::RoundRobin, Policy::Random, Policy::ConsistentHash] {
        let b = Balancer::new(policy, &weights, &names);
        let c = counts(&b, 100_000, |_| true);
        assert_share(&c, &weights, 0.03);
    }
}

#[test]
fn unusable_targets_are_skipped_by_every_policy() {
    for policy in [
        Policy::RoundRobin,
        Policy::Random,
        Policy::LeastRequest,
        Policy::ConsistentHash,
    ] {
        let b = Balancer::new(policy, &[1, 1, 1], &["a", "b", "c"]);
        let c = counts(&b, 3_000, |t| t != 1);
        assert_eq!(c[1], 0, "{policy:?} picked an unusable target");
        assert_eq!(c[0] + c[2], 3_000, "{policy:?}");
        assert_eq!(b.pick(Some(1), |_| false, |_| 0), None);
    }
}

#[test]
fn least_request_prefers_the_idle_target() {
    let b = Balancer::new(Policy::LeastRequest, &[1, 1], &["a", "b"]);
    let loads = [10usize, 0];
    let mut c = [0usize; 2];
    for _ in 0..1_000 {
        let t = b.pick(None, |_| true, |i| loads[i]).unwrap();
        c[t] += 1;
    }
    // Target 0 wins only when both draws hit it: about a quarter of the time.
    assert!(c[1] > 650, "{c:?}");
}

#[test]
fn removing_one_of_n_targets_moves_about_one_nth_of_keys() {
    for n in [3usize, 5, 10] {
        let names: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:80")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let full = Balancer::new(Policy::ConsistentHash, &vec![1; n], &refs);
        let removed = n - 1;
        let less = Balancer::new(Policy::ConsistentHash, &vec![1; n - 1], &refs[..n - 1]);
        let keys = 20_000;
        let mut moved = 0;
        for k in 0..keys {
            let h = hash_key(format!("user-{k}").as_bytes());
            let a = full.pick(Some(h), |_| true, |_| 0).unwrap();
            let b = less.pick(Some(h), |_| true, |_| 0).unwrap();
            if a != removed && a != b {
                moved += 1;
            }
            if a == removed {
                moved += 1;
            }
        }
        let share = moved as f64 / keys as f64;
        let bound = 1.0 / n as f64 + 0.05;
        assert!(share <= bound, "n={n}: moved {share:.3} > {bound:.3}");
        // Keys that were not on the removed target stay where they were.
    }
}

#[test]
fn ring_skips_unhealthy_to_the_next_point_only() {
    let names = ["a", "b", "c", "d"];
    let b = Balancer::new(Policy::ConsistentHash, &[1; 4], &names);
    let mut changed_other = 0;
    for k in 0..5_000u64 {
        let h = hash_key(&k.to_le_bytes());
        let before = b.pick(Some(h), |_| true, |_| 0).unwrap();
        let after = b.pick(Some(h), |t| t != 2, |_| 0).unwrap();
        assert_ne!(after, 2);
        if before != 2 && before != after {
            changed_other += 1;
        }
    }
    assert_eq!(changed_other, 0, "keys of healthy targets must not move");
}
