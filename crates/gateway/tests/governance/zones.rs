//! Zone-aware balancing: three zones with targets on 127.0.0.2-4, the local zone degraded
//! target by target (traffic shares asserted against the proportional spill), dark, then back;
//! nothing healthy anywhere answers 503.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

use crate::harness::*;

/// A target answering with its zone; its health check fails while `sick` is set.
struct ZoneTarget {
    up: Upstream,
    sick: Arc<AtomicBool>,
}

async fn target(ip: &str, zone: &'static str) -> ZoneTarget {
    let sick = Arc::new(AtomicBool::new(false));
    let s = sick.clone();
    let up = upstream_on(ip, move |req: Request<Incoming>| {
        let s = s.clone();
        async move {
            let status = if req.uri().path() == "/healthz" && s.load(Ordering::Relaxed) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            Response::builder()
                .status(status)
                .header("x-zone", zone)
                .body(Full::new(Bytes::from_static(b"ok")))
                .expect("response")
        }
    })
    .await;
    ZoneTarget { up, sick }
}

/// Share of `n` requests answered by each zone (503s under "none").
async fn shares(gw: &Gateway, n: usize) -> HashMap<String, f64> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let c = h1_client();
    for _ in 0..n {
        let got = send(
            &c,
            Request::get(gw.url("/z"))
                .body(Full::default())
                .expect("req"),
        )
        .await;
        let zone = if got.status == 503 {
            "none".to_owned()
        } else {
            got.header("x-zone").unwrap_or("?").to_owned()
        };
        *counts.entry(zone).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, v)| (k, v as f64 / n as f64))
        .collect()
}

async fn zones(gw: &Gateway) -> Vec<Value> {
    let all = get(&gw.admin_url("/admin/upstreams")).await.json();
    all.as_array()
        .and_then(|l| l.iter().find(|u| u["name"] == "svc"))
        .and_then(|u| u["zones"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits until the local zone `a` reports `healthy` usable targets.
async fn local_healthy(gw: &Gateway, healthy: u64) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = eventually(Duration::from_secs(5), async || {
        last = zones(gw).await;
        last.iter()
            .any(|z| z["zone"] == "a" && z["healthy"] == healthy)
    })
    .await;
    assert!(ok, "zone a never had {healthy} healthy: {last:?}");
    last
}

fn traffic(z: &[Value], zone: &str) -> f64 {
    z.iter()
        .find(|x| x["zone"] == zone)
        .and_then(|x| x["traffic_percent"].as_f64())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_zone_spills_in_proportion_goes_dark_and_comes_back() {
    let mut local = Vec::new();
    for _ in 0..4 {
        local.push(target("127.0.0.2", "a").await);
    }
    let b = [
        target("127.0.0.3", "b").await,
        target("127.0.0.3", "b").await,
    ];
    let c = [
        target("127.0.0.4", "c").await,
        target("127.0.0.4", "c").await,
    ];
    let mut targets = String::new();
    for (t, z) in local
        .iter()
        .map(|t| (t, "a"))
        .chain(b.iter().map(|t| (t, "b")))
        .chain(c.iter().map(|t| (t, "c")))
    {
        targets.push_str(&format!(
            "      - {{ address: \"{}\", zone: {z} }}\n",
            t.up.address()
        ));
    }
    let yaml = config(&format!(
        "upstreams:\n  svc:\n    targets:\n{targets}    locality: {{ prefer: local, min_healthy_percent: 70 }}\n    health_check:\n      active: {{ path: /healthz, interval: 100ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }}\nroutes:\n  - name: z\n    match: {{ path_prefix: /z }}\n    upstream: svc\n"
    ));
    let gw = Gateway::start_env(&yaml, &[("PORTCULLIS_ZONE", "a")]);

    let z = local_healthy(&gw, 4).await;
    assert_eq!(traffic(&z, "a"), 100.0, "{z:?}");
    assert_eq!(shares(&gw, 200).await.get("a"), Some(&1.0));

    // 3 of 4 (75 % >= 70 %): still all local.
    local[0].sick.store(true, Ordering::Relaxed);
    local_healthy(&gw, 3).await;
    assert_eq!(shares(&gw, 200).await.get("a"), Some(&1.0));

    // 2 of 4 (50 %): 50/70 stays, the rest spills to b and c by their healthy targets.
    // 1 of 4 (25 %): 25/70.
    for (sick, want) in [(1, 50.0 / 70.0), (2, 25.0 / 70.0)] {
        local[sick].sick.store(true, Ordering::Relaxed);
        let z = local_healthy(&gw, 3 - sick as u64).await;
        assert!((traffic(&z, "a") - want * 100.0).abs() < 0.1, "{z:?}");
        let s = shares(&gw, 1000).await;
        let a = s.get("a").copied().unwrap_or(0.0);
        assert!(
            (a - want).abs() < 0.06,
            "local share {a}, want {want}: {s:?}"
        );
        let (sb, sc) = (
            s.get("b").copied().unwrap_or(0.0),
            s.get("c").copied().unwrap_or(0.0),
        );
        assert!(
            (sb - sc).abs() < 0.08 && (sb + sc + a - 1.0).abs() < 1e-9,
            "{s:?}"
        );
    }

    // Dark: everything elsewhere.
    local[3].sick.store(true, Ordering::Relaxed);
    let z = local_healthy(&gw, 0).await;
    assert_eq!(traffic(&z, "a"), 0.0, "{z:?}");
    let s = shares(&gw, 400).await;
    assert_eq!(s.get("a"), None, "{s:?}");
    assert!(
        (s.get("b").copied().unwrap_or(0.0) - 0.5).abs() < 0.1,
        "{s:?}"
    );

    // Nothing healthy anywhere: 503, never a dead target.
    for t in b.iter().chain(&c) {
        t.sick.store(true, Ordering::Relaxed);
    }
    let ok = eventually(Duration::from_secs(5), async || {
        zones(&gw).await.iter().all(|z| z["healthy"] == 0)
    })
    .await;
    assert!(ok);
    let got = get(&gw.url("/z")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.json()["error"]["code"], "upstream_unavailable");

    // Back.
    for t in local.iter().chain(&b).chain(&c) {
        t.sick.store(false, Ordering::Relaxed);
    }
    local_healthy(&gw, 4).await;
    assert_eq!(shares(&gw, 200).await.get("a"), Some(&1.0));
}
