//! Three gateways on one etcd follow a push within a second; many pushes under load fail no
//! request; a push of 200 objects is one reload per node.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_serve_a_push_within_a_second() {
    let etcd = Etcd::start();
    let up = echo_upstream("app").await;
    push_ok(&etcd, &shared("v1", &up.address()), &["--message", "first"]);
    let nodes: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&node_yaml(&etcd.url(), "")))
        .collect();
    let refs: Vec<&Gateway> = nodes.iter().collect();
    assert!(all_serve(&refs, "/hello", "v1", Duration::from_secs(10)).await);
    for n in &nodes {
        assert_eq!(get(&n.admin_url("/readyz")).await.status, 200);
    }

    let mut worst = Duration::ZERO;
    for round in 2..=4 {
        let want = format!("v{round}");
        let started = Instant::now();
        push_ok(&etcd, &shared(&want, &up.address()), &["--message", &want]);
        let pushed = started.elapsed();
        assert!(
            all_serve(&refs, "/hello", &want, Duration::from_secs(5)).await,
            "round {round}: not every node serves {want}"
        );
        let took = started.elapsed();
        eprintln!(
            "propagation round {round}: all 3 nodes serve the push {took:?} after `config push` started ({pushed:?} of it in the push command)"
        );
        assert!(
            took < Duration::from_secs(1),
            "round {round}: took {took:?}"
        );
        worst = worst.max(took);
    }
    eprintln!("worst propagation across 3 nodes: {worst:?}");

    // Every node measured its own propagation (commit -> served) and shows the same generation.
    for n in &nodes {
        let count = metric(n, "portcullis_config_propagation_seconds_count", &[]).await;
        assert!(count >= 3.0, "propagation observations: {count}");
        assert_eq!(metric(n, "portcullis_config_generation", &[]).await, 4.0);
        let sum = metric(n, "portcullis_config_propagation_seconds_sum", &[]).await;
        eprintln!("node propagation mean: {:.1} ms", 1000.0 * sum / count);
    }

    // The fleet view lists the three nodes at the store's generation, none lagging.
    let ok = eventually(Duration::from_secs(8), async || {
        let v = get(&nodes[0].admin_url("/admin/fleet")).await.json();
        v["generation"] == 4
            && v["nodes"].as_array().map(Vec::len) == Some(3)
            && v["lagging"].as_array().is_some_and(Vec::is_empty)
            && v["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().all(|n| n["generation"] == 4))
    })
    .await;
    assert!(
        ok,
        "{}",
        get(&nodes[0].admin_url("/admin/fleet")).await.json()
    );

    // History: who pushed what, per node.
    let h = get(&nodes[1].admin_url("/admin/config/history"))
        .await
        .json();
    let top = &h["entries"][0];
    assert_eq!(top["generation"], 4);
    assert_eq!(top["author"], "ci-bot");
    assert_eq!(top["message"], "v4");
    assert_eq!(top["via"], "push");
    assert_eq!(top["changes"][0], "~route hello");
    let one = get(&nodes[1].admin_url("/admin/config/history/4"))
        .await
        .json();
    assert!(
        one["diff_text"]
            .as_str()
            .is_some_and(|t| t.contains("direct_response.body: \"v3\" -> \"v4\"")),
        "{one}"
    );

    // The cache holds the last good shared config.
    let cache =
        std::fs::read_to_string(nodes[2].dir.path().join("shared-cache.yaml")).expect("cache");
    assert!(cache.contains("\"v4\""), "{cache}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_pushes_under_load_fail_no_request() {
    let etcd = Etcd::start();
    let up = echo_upstream("app").await;
    push_ok(&etcd, &shared("v0", &up.address()), &[]);
    let gw = Gateway::start(&node_yaml(&etcd.url(), ""));
    assert!(all_serve(&[&gw], "/hello", "v0", Duration::from_secs(10)).await);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for i in 0..4 {
        let client = h1_client();
        let url = gw.url(if i % 2 == 0 { "/app/x" } else { "/hello" });
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .request(
                        req("GET", &url)
                            .body(http_body_util::Full::default())
                            .expect("req"),
                    )
                    .await;
                match r {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = collect(resp).await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => {
                        eprintln!("failed request: {}", resp.status());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("failed request: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let reloads_before = metric(&gw, "portcullis_config_reloads_total", &[("result", "ok")]).await;
    let etcd = Arc::new(etcd);
    let addr = up.address();
    let e2 = etcd.clone();
    tokio::task::spawn_blocking(move || {
        for i in 1..=100 {
            push_ok(&e2, &shared(&format!("v{i}"), &addr), &[]);
        }
    })
    .await
    .expect("pushes");
    assert!(all_serve(&[&gw], "/hello", "v100", Duration::from_secs(5)).await);
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let reloads =
        metric(&gw, "portcullis_config_reloads_total", &[("result", "ok")]).await - reloads_before;
    eprintln!("100 pushes under load: {ok} requests ok, {failed} failed, {reloads} reloads");
    assert_eq!(failed, 0);
    assert!(ok > 200, "too little load: {ok}");
    assert!((1.0..=100.0).contains(&reloads), "{reloads}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_of_200_objects_is_one_reload_per_node() {
    let etcd = Etcd::start();
    push_ok(&etcd, &shared("v0", "127.0.0.1:9"), &[]);
    let nodes: Vec<Gateway> = (0..2)
        .map(|_| Gateway::start(&node_yaml(&etcd.url(), "")))
        .collect();
    let refs: Vec<&Gateway> = nodes.iter().collect();
    assert!(all_serve(&refs, "/hello", "v0", Duration::from_secs(10)).await);
    let mut before = Vec::new();
    for n in &nodes {
        before.push(metric(n, "portcullis_config_reloads_total", &[("result", "ok")]).await);
    }
    let mut yaml = shared("big", "127.0.0.1:9");
    yaml.push_str("  # 200 more objects\n");
    let mut ups = String::new();
    for i in 0..100 {
        yaml.push_str(&format!(
            "  - name: r{i}\n    match: {{ path: /r/{i} }}\n    upstream: u{i}\n"
        ));
        ups.push_str(&format!(
            "  u{i}:\n    targets: [{{ address: \"127.0.0.1:{}\" }}]\n",
            10000 + i
        ));
    }
    let yaml = yaml.replacen("upstreams:\n", &format!("upstreams:\n{ups}"), 1);
    let (code, out, err) = push(&etcd, &yaml, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("200 added, 1 changed, 0 removed"), "{out}");
    assert!(all_serve(&refs, "/hello", "big", Duration::from_secs(5)).await);
    // Give a second reload the time it would need to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (n, b) in nodes.iter().zip(before) {
        let after = metric(n, "portcullis_config_reloads_total", &[("result", "ok")]).await;
        assert_eq!(after - b, 1.0, "reloads for one push of 201 objects");
        let routes = get(&n.admin_url("/admin/routes")).await.json();
        assert_eq!(routes.as_array().map(Vec::len), Some(102));
    }
}
