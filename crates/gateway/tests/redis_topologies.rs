//! `rate_limit.redis` beyond one node: a real Redis Cluster of three masters shared by three
//! gateways (exact counts per client, keys spread over the masters), and a master found through
//! a real Redis Sentinel.

#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/stores.rs"]
mod stores;

use harness::*;
use http_body_util::Full;
use stores::{RedisCluster, RedisSentinel};

fn limited(redis: &str) -> String {
    config(&format!(
        "routes:\n  - name: limited\n    match: {{ path_prefix: / }}\n    direct_response: {{ status: 200, body: \"ok\" }}\n    plugins:\n      rate_limit: {{ limit: 3, per: 1m, burst: 0, key: \"header:x-client\", policy: redis, on_failure: deny, redis: {redis} }}\n"
    ))
}

async fn hit(url: &str, client: &str) -> u16 {
    send(
        &h1_client(),
        req("GET", url)
            .header("x-client", client)
            .body(Full::default())
            .expect("request"),
    )
    .await
    .status
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_of_three_masters_is_shared_by_three_gateways() {
    let cluster = RedisCluster::start();
    let seeds = cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = limited(&format!("{{ cluster: [{seeds}], timeout: 2s }}"));
    let gws: Vec<Gateway> = (0..3).map(|_| Gateway::start(&yaml)).collect();
    // 40 clients, 6 requests each spread over the three gateways: exactly 3 pass per client.
    for c in 0..40 {
        let client = format!("client-{c}");
        let mut passed = 0;
        for i in 0..6 {
            match hit(&gws[i % 3].url("/x"), &client).await {
                200 => passed += 1,
                429 => {}
                s => panic!("unexpected status {s}"),
            }
        }
        assert_eq!(passed, 3, "{client}");
    }
    let per_master = cluster.keys_per_master("portcullis:rl:*");
    assert_eq!(per_master.iter().sum::<usize>(), 40, "{per_master:?}");
    assert!(
        per_master.iter().filter(|n| **n > 0).count() >= 2,
        "keys on one master only: {per_master:?}"
    );
    for gw in &gws {
        let errors = metric_sum(
            &metrics_text(gw).await,
            "portcullis_rate_limit_redis_errors_total",
            &[],
        )
        .unwrap_or(0.0);
        assert_eq!(errors, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_is_found_through_sentinel() {
    let s = RedisSentinel::start();
    let yaml = limited(&format!(
        "{{ sentinel: [\"{}\"], master: mymaster, timeout: 2s }}",
        s.sentinel_url()
    ));
    let gw = Gateway::start(&yaml);
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(hit(&gw.url("/x"), "one").await);
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let keys = s.cli(s.master_port, &["--scan", "--pattern", "portcullis:rl:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");

    // A sentinel config without the master name is refused, placed in the file.
    let (code, _, err) = validate(&limited(&format!(
        "{{ sentinel: [\"{}\"] }}",
        s.sentinel_url()
    )));
    assert_eq!(code, 1);
    assert!(err.contains("redis.master"), "{err}");
}
