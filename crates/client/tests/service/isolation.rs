//! One failing origin cannot take connections, retries or the thread from the others.

use std::time::{Duration, Instant};

use portcullis_client::{
    BreakerConfig, BreakerState, Client, ErrorKind, PoolConfig, RetryOn, RetryPolicy, Timeouts,
};
use tokio::io::AsyncWriteExt;

use crate::support::{self, text};

#[tokio::test]
async fn a_black_holed_origin_does_not_slow_or_starve_the_others() {
    let hole = support::black_hole().await;
    let healthy = support::server(|_| async { text(200, "ok") }).await;
    let client = Client::builder()
        .timeouts(Timeouts {
            connect: Duration::from_millis(800),
            ..portcullis_client::service::DEFAULT_TIMEOUTS
        })
        .pool(PoolConfig {
            max_connections_per_host: 16,
            ..portcullis_client::service::DEFAULT_POOL
        })
        .build()
        .expect("client");
    let hole_url = format!("http://{}/x", hole.addr);

    // 200 calls stuck on the black hole, on this one-thread runtime...
    let mut stuck = Vec::new();
    for _ in 0..200 {
        let c = client.clone();
        let url = hole_url.clone();
        stuck.push(tokio::spawn(async move {
            c.get(url).send().await.map(|_| ()).map_err(|e| e.kind())
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let during = client
        .origin_stats(&format!("http://{}", hole.addr))
        .expect("held");
    assert!(
        during.open_connections <= 16,
        "the black hole holds at most its own cap: {}",
        during.open_connections
    );

    // ...while the healthy origin answers at full speed on the same thread.
    let t0 = Instant::now();
    for _ in 0..50 {
        let r = client.get(healthy.url("/")).send().await.expect("healthy");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "50 healthy calls took {took:?}"
    );

    let mut kinds = std::collections::BTreeMap::new();
    for s in stuck {
        let k = s.await.expect("task").expect_err("black hole");
        *kinds.entry(k.reason()).or_insert(0) += 1;
    }
    // Past its connection cap a call waits no longer than the connect timeout; once the
    // failures add up, its breaker opens and later calls fail at once.
    assert!(
        kinds
            .keys()
            .all(|k| ["connect_timeout", "pool_exhausted", "circuit_open"].contains(k)),
        "{kinds:?}"
    );
    assert!(kinds.contains_key("connect_timeout"), "{kinds:?}");
    let stats = client.stats();
    let good = stats.origin(&healthy.origin()).expect("healthy held");
    assert_eq!(good.errors.iter().map(|(_, n)| n).sum::<u64>(), 0);
    assert_eq!(good.requests, 50);
    assert_eq!(good.connects, 1, "one keep-alive connection served all 50");
    assert_eq!(good.reused, 49);
    assert_eq!(good.breaker, BreakerState::Closed);
    let bad = stats
        .origin(&format!("http://{}", hole.addr))
        .expect("hole held");
    assert_eq!(bad.requests, 200);
    assert!(bad.errors_of(ErrorKind::ConnectTimeout) > 0);
    assert_eq!(bad.breaker, BreakerState::Open, "{bad:?}");
}

/// An origin that resets every connection once it has read a request head.
async fn resetting() -> std::net::SocketAddr {
    support::raw(|mut s| async move {
        let _ = support::read_head(&mut s).await;
        let _ = s.set_zero_linger();
        let _ = s.shutdown().await;
    })
    .await
    .0
}

#[tokio::test]
async fn retry_budgets_are_per_origin() {
    let reset = resetting().await;
    // Fails the first try of each call with 503 and answers the next: a call's tries share
    // its trace ID (the `traceparent` header), so the server can tell them apart.
    let seen_traces = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let flaky = support::server(move |s| {
        let seen = seen_traces.clone();
        async move {
            let trace = s.headers["traceparent"].to_str().expect("ascii")[3..35].to_owned();
            if seen.lock().expect("lock").insert(trace) {
                text(503, "busy")
            } else {
                text(200, "ok")
            }
        }
    })
    .await;
    let client = Client::builder()
        .retry(RetryPolicy {
            attempts: 3,
            on: RetryOn {
                connect_failure: true,
                reset: true,
                statuses: vec![503],
                ..RetryOn::default()
            },
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            budget_percent: 20.0,
            min_retries_per_sec: 3,
            ..RetryPolicy::default()
        })
        .breaker(None)
        .build()
        .expect("client");
    let reset_url = format!("http://{reset}/x");
    for _ in 0..100 {
        let e = client.get(&reset_url).send().await.expect_err("reset");
        assert_eq!(e.kind(), ErrorKind::Reset);
    }
    let bad = client
        .origin_stats(&format!("http://{reset}"))
        .expect("held");
    assert!(bad.retry_budget_exhausted > 0, "{bad:?}");
    // 20% of 100 calls plus the floor of 3/s over the 10 s window.
    assert!(bad.retries_total() <= 50, "{bad:?}");

    // The flaky origin's budget is its own: every call gets its retry.
    for _ in 0..20 {
        let resp = client.get(flaky.url("/")).send().await.expect("flaky");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.attempts(), 2);
    }
    let good = client.origin_stats(&flaky.origin()).expect("held");
    assert_eq!(good.retry_budget_exhausted, 0);
    assert_eq!(good.retries_total(), 20);
    assert_eq!(good.errors.iter().map(|(_, n)| n).sum::<u64>(), 0);
}

#[tokio::test]
async fn breakers_are_per_origin() {
    let reset = resetting().await;
    let healthy = support::server(|_| async { text(200, "ok") }).await;
    let client = Client::builder()
        .breaker(Some(BreakerConfig {
            min_requests: 10,
            ..BreakerConfig::default()
        }))
        .build()
        .expect("client");
    for _ in 0..30 {
        let _ = client.get(format!("http://{reset}/")).send().await;
        client.get(healthy.url("/")).send().await.expect("healthy");
    }
    let bad = client
        .origin_stats(&format!("http://{reset}"))
        .expect("held");
    assert_eq!(bad.breaker, BreakerState::Open);
    assert!(bad.errors_of(ErrorKind::CircuitOpen) > 0, "{bad:?}");
    let e = client
        .get(format!("http://{reset}/"))
        .send()
        .await
        .expect_err("open");
    assert_eq!(e.kind(), ErrorKind::CircuitOpen);
    let good = client.origin_stats(&healthy.origin()).expect("held");
    assert_eq!(good.breaker, BreakerState::Closed);
    assert_eq!(good.requests, 30);
}
