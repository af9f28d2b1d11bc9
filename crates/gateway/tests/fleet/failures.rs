//! What goes wrong: invalid changes (refused by `push`, and by every node when written with
//! etcdctl), etcd killed, restarted, wiped, compacted past a disconnected node; a node that
//! starts while etcd is down (cache, or not ready until etcd answers).

use std::time::Duration;

use super::*;
use stores::CutProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_changes_are_refused_and_the_old_config_keeps_serving() {
    let etcd = Etcd::start();
    push_ok(&etcd, &shared("v1", "127.0.0.1:9"), &[]);
    let nodes: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&node_yaml(&etcd.url(), "")))
        .collect();
    let refs: Vec<&Gateway> = nodes.iter().collect();
    assert!(all_serve(&refs, "/hello", "v1", Duration::from_secs(10)).await);

    // `push` itself refuses an invalid file, naming file:line:col, and writes nothing.
    let bad = shared("v2", "127.0.0.1:9").replace("upstream: app", "upstream: nowhere");
    let (code, out, err) = push(&etcd, &bad, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("shared.yaml:10:5: routes[1].upstream"),
        "{err}"
    );
    assert_eq!(
        etcd.ctl(&["get", "/fleet/generation", "--print-value-only"])
            .1
            .trim(),
        "1"
    );

    // An invalid object written straight into etcd: every node refuses it, counts it, shows
    // it, and keeps serving the last good config.
    let (code, _, err) = etcd.ctl(&[
        "put",
        "/fleet/routes/broken",
        r#"{"name": "broken", "match": {"path": "/broken"}, "upstream": "nowhere"}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    for n in &nodes {
        let refused = eventually(Duration::from_secs(5), async || {
            metric(
                n,
                "portcullis_config_changes_rejected_total",
                &[("reason", "invalid")],
            )
            .await
                >= 1.0
        })
        .await;
        assert!(refused, "{}", n.logs());
        assert!(
            n.logs().contains("etcd:/fleet/routes/broken"),
            "{}",
            n.logs()
        );
        assert_eq!(body(&n.url("/hello")).await.as_deref(), Some("v1"));
        let cfg = get(&n.admin_url("/admin/config")).await.json();
        assert!(
            cfg["etcd"]["rejected"]
                .as_str()
                .is_some_and(|r| r.contains("routes/broken")),
            "{cfg}"
        );
        assert_eq!(get(&n.admin_url("/readyz")).await.status, 200);
    }
    // Not even JSON: refused as undecodable.
    etcd.ctl(&["put", "/fleet/upstreams/junk", "{not json"]);
    for n in &nodes {
        let refused = eventually(Duration::from_secs(5), async || {
            metric(
                n,
                "portcullis_config_changes_rejected_total",
                &[("reason", "undecodable")],
            )
            .await
                >= 1.0
        })
        .await;
        assert!(refused);
        assert_eq!(body(&n.url("/hello")).await.as_deref(), Some("v1"));
    }
    // A push (with --prune) repairs the store, and every node follows.
    push_ok(&etcd, &shared("v3", "127.0.0.1:9"), &["--prune"]);
    assert!(all_serve(&refs, "/hello", "v3", Duration::from_secs(5)).await);
    assert_eq!(
        body(&nodes[0].url("/broken"))
            .await
            .map(|b| b.contains("no_route")),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_killed_restarted_and_wiped() {
    let mut etcd = Etcd::start();
    push_ok(&etcd, &shared("v1", "127.0.0.1:9"), &[]);
    let nodes: Vec<Gateway> = (0..2)
        .map(|_| Gateway::start(&node_yaml(&etcd.url(), "")))
        .collect();
    let refs: Vec<&Gateway> = nodes.iter().collect();
    assert!(all_serve(&refs, "/hello", "v1", Duration::from_secs(10)).await);

    // Killed: nodes keep serving and stay ready.
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for n in &nodes {
        for _ in 0..20 {
            assert_eq!(body(&n.url("/hello")).await.as_deref(), Some("v1"));
        }
        assert_eq!(get(&n.admin_url("/readyz")).await.status, 200);
        let down = eventually(Duration::from_secs(5), async || {
            metric(n, "portcullis_config_store_up", &[]).await == 0.0
        })
        .await;
        assert!(down);
    }

    // Restarted on the same data: the next push converges.
    etcd.restart();
    push_ok(&etcd, &shared("v2", "127.0.0.1:9"), &[]);
    assert!(all_serve(&refs, "/hello", "v2", Duration::from_secs(10)).await);

    // Wiped and restarted empty: the revision went backwards and the cluster id changed. The
    // nodes re-read, find nothing, keep serving v2 (never an empty config), and follow the
    // next push.
    etcd.wipe();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in &nodes {
        assert_eq!(body(&n.url("/hello")).await.as_deref(), Some("v2"));
    }
    push_ok(&etcd, &shared("v3", "127.0.0.1:9"), &[]);
    assert!(all_serve(&refs, "/hello", "v3", Duration::from_secs(10)).await);
    for n in &nodes {
        let resyncs = metric(n, "portcullis_config_resyncs_total", &[]).await;
        assert!(resyncs >= 1.0, "{}", metrics_text(n).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_past_a_disconnected_node_converges() {
    let etcd = Etcd::start();
    push_ok(&etcd, &shared("v1", "127.0.0.1:9"), &[]);
    let target = format!("127.0.0.1:{}", etcd.port).parse().expect("addr");
    let proxy = CutProxy::start(target).await;
    let cut_off = Gateway::start(&node_yaml(&proxy.url(), ""));
    let direct = Gateway::start(&node_yaml(&etcd.url(), ""));
    assert!(
        all_serve(
            &[&cut_off, &direct],
            "/hello",
            "v1",
            Duration::from_secs(10)
        )
        .await
    );

    proxy.cut();
    for i in 2..=4 {
        push_ok(&etcd, &shared(&format!("v{i}"), "127.0.0.1:9"), &[]);
    }
    assert!(all_serve(&[&direct], "/hello", "v4", Duration::from_secs(5)).await);
    assert_eq!(body(&cut_off.url("/hello")).await.as_deref(), Some("v1"));
    etcd.compact();
    proxy.restore();
    assert!(all_serve(&[&cut_off], "/hello", "v4", Duration::from_secs(15)).await);
    let compacted = metric(
        &cut_off,
        "portcullis_config_resyncs_total",
        &[("reason", "compacted")],
    )
    .await;
    assert_eq!(compacted, 1.0, "{}", cut_off.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_starting_while_etcd_is_down_uses_the_cache_or_waits() {
    let mut etcd = Etcd::start();
    push_ok(&etcd, &shared("cached", "127.0.0.1:9"), &[]);
    let first = Gateway::start(&node_yaml(&etcd.url(), ""));
    assert!(all_serve(&[&first], "/hello", "cached", Duration::from_secs(10)).await);
    let cache = std::fs::read_to_string(first.dir.path().join("shared-cache.yaml")).expect("cache");
    drop(first);
    etcd.kill();

    // With the cache: serves the last good shared config, ready.
    let with_cache = Gateway::start_with(&node_yaml(&etcd.url(), ""), |d| {
        std::fs::write(d.join("shared-cache.yaml"), &cache).expect("write cache");
    });
    assert_eq!(
        body(&with_cache.url("/hello")).await.as_deref(),
        Some("cached")
    );
    assert_eq!(get(&with_cache.admin_url("/readyz")).await.status, 200);

    // Without: not ready until etcd answers, then serves the store's config.
    let without = Gateway::start(&node_yaml(&etcd.url(), ""));
    assert_eq!(get(&without.admin_url("/readyz")).await.status, 503);
    etcd.restart();
    let ready = eventually(Duration::from_secs(15), async || {
        get(&without.admin_url("/readyz")).await.status == 200
    })
    .await;
    assert!(ready, "{}", without.logs());
    assert_eq!(
        body(&without.url("/hello")).await.as_deref(),
        Some("cached")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_an_empty_store_is_not_ready_until_the_first_push() {
    let etcd = Etcd::start();
    let gw = Gateway::start(&node_yaml(&etcd.url(), ""));
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 503);
    assert_eq!(get(&gw.admin_url("/healthz")).await.status, 200);
    push_ok(&etcd, &shared("first", "127.0.0.1:9"), &[]);
    assert!(all_serve(&[&gw], "/hello", "first", Duration::from_secs(5)).await);
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 200);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(gw.dir.path().join("shared-cache.yaml"))
            .expect("cache written")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}
