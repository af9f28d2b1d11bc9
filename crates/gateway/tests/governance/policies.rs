//! Policies (a p99 breaker with a fallback that trips and recovers, error rate gated by
//! `min_requests`, shed share, reroute, dry run, state kept across a reload) and
//! `circuit_breaker.failure_statuses`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::*;
use crate::{Load, tunable};
use http::Request;
use http_body_util::Full;
use serde_json::Value;

async fn policy(gw: &Gateway, name: &str) -> Value {
    let all = get(&gw.admin_url("/admin/policies")).await.json();
    all["policies"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no policy {name} in {all}"))
}

async fn wait_state(gw: &Gateway, name: &str, state: &str, within: Duration) -> Value {
    let mut last = Value::Null;
    let ok = eventually(within, async || {
        last = policy(gw, name).await;
        last["state"] == state
    })
    .await;
    assert!(ok, "policy {name} never reached {state}: {last:#}");
    last
}

fn transitions(p: &Value) -> Vec<String> {
    p["transitions"]
        .as_array()
        .map(|l| {
            l.iter()
                .rev()
                .filter_map(|t| t["to"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_statuses_decide_what_opens_the_breaker() {
    let five_hundred = tunable("a").await;
    five_hundred.status.store(500, Ordering::Relaxed);
    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  classes:\n    targets: [{{ address: \"{a}\" }}]\n    circuit_breaker: {{ min_requests: 5, window: 10s, open_for: 30s, failure_statuses: [5xx] }}\n  default:\n    targets: [{{ address: \"{a}\" }}]\n    circuit_breaker: {{ min_requests: 5, window: 10s, open_for: 30s }}\nroutes:\n  - name: classes\n    match: {{ path_prefix: /classes }}\n    upstream: classes\n  - name: default\n    match: {{ path_prefix: /default }}\n    upstream: default\n",
        a = five_hundred.up.address()
    )));
    // Default (502-504): a 500 is an answer, not a failure; the breaker stays closed.
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/default")).await.status, 500);
    }
    // `5xx`: the same answers open it; then the gateway answers 503 without calling.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&gw.url("/classes")).await.status.as_u16());
    }
    let first_503 = statuses.iter().position(|s| *s == 503);
    assert!(first_503.is_some_and(|i| i <= 10), "{statuses:?}");
    assert!(statuses[first_503.unwrap_or(0)..].iter().all(|s| *s == 503));
    let refused = get(&gw.url("/classes")).await;
    assert_eq!(refused.json()["error"]["code"], "upstream_unavailable");

    let (code, _, err) = validate(&config(
        "upstreams:\n  u:\n    targets: [{ address: \"127.0.0.1:1\" }]\n    circuit_breaker: { failure_statuses: [500, 9xx] }\n",
    ));
    assert_eq!(code, 1);
    assert!(
        err.contains(":11:") && err.contains("circuit_breaker.failure_statuses[1]"),
        "{err}"
    );
}

async fn reload(gw: &Gateway, yaml: String) {
    gw.write_config(&yaml);
    let r = gw.reload().await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn breaker_policy(up: &str, extra_routes: &str, threshold: &str) -> String {
    config(&format!(
        "upstreams:\n  pay:\n    targets: [{{ address: \"{up}\" }}]\nroutes:\n  - name: checkout\n    match: {{ path_prefix: /checkout }}\n    upstream: pay\n{extra_routes}policies:\n  - name: pay-guard\n    match: {{ routes: [checkout] }}\n    conditions:\n      - {{ metric: p99_latency, above: {threshold}, window: 300ms, consecutive: 2 }}\n    min_requests: 3\n    actions:\n      - {{ type: circuit_breaker, open_for: 1s, fallback: {{ status: 200, body: '{{\"mock\": true}}', headers: {{ content-type: application/json }} }} }}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p99_policy_trips_on_a_slow_upstream_serves_the_fallback_and_recovers() {
    let pay = tunable("pay").await;
    let gw = Gateway::start(&breaker_policy(&pay.up.address(), "", "150ms"));
    let _load = Load::start(gw.url("/checkout"), 6);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let p = policy(&gw, "pay-guard").await;
    assert_eq!(p["state"], "idle", "{p:#}");
    assert_eq!(get(&gw.url("/checkout")).await.body, "real");

    pay.delay_ms.store(300, Ordering::Relaxed);
    let p = wait_state(&gw, "pay-guard", "triggered", Duration::from_secs(5)).await;
    assert!(
        p["triggered_values"]["p99_latency_ms"]
            .as_f64()
            .unwrap_or(0.0)
            > 150.0,
        "{p:#}"
    );
    // Open: the fallback, at once, without calling the upstream.
    let before = pay.hits.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    let got = get(&gw.url("/checkout")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["mock"], true);
    assert!(started.elapsed() < Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        pay.hits.load(Ordering::Relaxed) <= before + 6,
        "open: the upstream is not called"
    );

    pay.delay_ms.store(0, Ordering::Relaxed);
    let p = wait_state(&gw, "pay-guard", "idle", Duration::from_secs(10)).await;
    let t = transitions(&p);
    assert!(
        t.starts_with(&["triggered".into(), "half_open".into()])
            && t.last().map(String::as_str) == Some("idle"),
        "{t:?}"
    );
    assert_eq!(get(&gw.url("/checkout")).await.body, "real");
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric_sum(
            &m,
            "portcullis_policy_transitions_total",
            &[("policy", "pay-guard"), ("to", "triggered")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_sum(&m, "portcullis_policy_state", &[("policy", "pay-guard")]),
        Some(0.0)
    );
}

fn error_policy(
    up: &str,
    min_requests: u32,
    action: &str,
    mode: &str,
    more_upstreams: &str,
) -> String {
    config(&format!(
        "upstreams:\n  svc:\n    targets: [{{ address: \"{up}\" }}]\n{more_upstreams}routes:\n  - name: svc\n    match: {{ path_prefix: /svc }}\n    upstream: svc\npolicies:\n  - name: errors\n    match: {{ upstreams: [svc] }}\n    conditions:\n      - {{ metric: error_rate, above: 0.5, window: 300ms }}\n    min_requests: {min_requests}\n    actions: [{action}]\n    mode: {mode}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_rate_needs_min_requests_then_opens_without_a_fallback() {
    let svc = tunable("svc").await;
    svc.status.store(500, Ordering::Relaxed);
    let gw = Gateway::start(&error_policy(
        &svc.up.address(),
        30,
        "{ type: circuit_breaker, open_for: 30s }",
        "enforce",
        "",
    ));
    // A trickle: every answer fails, but a window never holds 30 requests.
    for _ in 0..25 {
        assert_eq!(get(&gw.url("/svc")).await.status, 500);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(policy(&gw, "errors").await["state"], "idle");
    let _load = Load::start(gw.url("/svc"), 6);
    wait_state(&gw, "errors", "triggered", Duration::from_secs(5)).await;
    let got = get(&gw.url("/svc")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.json()["error"]["code"], "upstream_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_reports_and_changes_nothing() {
    let svc = tunable("svc").await;
    svc.status.store(500, Ordering::Relaxed);
    let gw = Gateway::start(&error_policy(
        &svc.up.address(),
        5,
        "{ type: circuit_breaker, open_for: 30s }",
        "dry_run",
        "",
    ));
    let _load = Load::start(gw.url("/svc"), 4);
    let p = wait_state(&gw, "errors", "dry_run_triggered", Duration::from_secs(5)).await;
    assert!(
        p["triggered_values"]["error_rate"].as_f64().unwrap_or(0.0) > 0.5,
        "{p:#}"
    );
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/svc")).await.status, 500);
    }
    assert_eq!(policy(&gw, "errors").await["counts"]["answered"], 0);
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric_sum(&m, "portcullis_policy_state", &[("policy", "errors")]),
        Some(2.0)
    );
    assert!(gw.logs().contains("dry_run_triggered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shed_answers_the_configured_share() {
    let svc = tunable("svc").await;
    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  svc:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: svc\n    match: {{ path_prefix: /svc }}\n    upstream: svc\npolicies:\n  - name: shed\n    match: {{ routes: [svc] }}\n    conditions:\n      - {{ metric: rps, above: 5, window: 300ms }}\n    actions: [{{ type: shed, percent: 30, retry_after: 2s }}]\n",
        svc.up.address()
    )));
    let _load = Load::start(gw.url("/svc"), 2);
    wait_state(&gw, "shed", "triggered", Duration::from_secs(5)).await;
    let shed = Arc::new(AtomicUsize::new(0));
    let total = 2000;
    let per = total / 8;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (url, shed) = (gw.url("/svc"), shed.clone());
            tokio::spawn(async move {
                let c = h1_client();
                for _ in 0..per {
                    let got =
                        send(&c, Request::get(&url).body(Full::default()).expect("req")).await;
                    if got.status == 503 {
                        assert_eq!(got.json()["error"]["code"], "load_shed");
                        assert_eq!(got.header("retry-after"), Some("2"));
                        shed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert_eq!(got.status, 200);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    let share = shed.load(Ordering::Relaxed) as f64 / total as f64;
    assert!((share - 0.30).abs() <= 0.05, "shed share {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reroute_sends_to_the_other_upstream_while_triggered() {
    let svc = tunable("svc").await;
    svc.status.store(503, Ordering::Relaxed);
    let dr = tunable("dr").await;
    let gw = Gateway::start(&error_policy(
        &svc.up.address(),
        5,
        "{ type: reroute, upstream: dr }",
        "enforce",
        &format!(
            "  dr:\n    targets: [{{ address: \"{}\" }}]\n",
            dr.up.address()
        ),
    ));
    let _load = Load::start(gw.url("/svc"), 4);
    wait_state(&gw, "errors", "triggered", Duration::from_secs(5)).await;
    let ok = eventually(Duration::from_secs(3), async || {
        get(&gw.url("/svc")).await.header("x-upstream") == Some("dr")
    })
    .await;
    assert!(ok, "no request went to dr");
    assert!(dr.hits.load(Ordering::Relaxed) > 0);
    assert!(
        policy(&gw, "errors").await["counts"]["rerouted"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_keeps_the_state_of_an_unchanged_policy() {
    let pay = tunable("pay").await;
    pay.delay_ms.store(300, Ordering::Relaxed);
    let up = pay.up.address();
    let gw =
        Gateway::start(&breaker_policy(&up, "", "150ms").replace("open_for: 1s", "open_for: 60s"));
    let load = Load::start(gw.url("/checkout"), 6);
    wait_state(&gw, "pay-guard", "triggered", Duration::from_secs(5)).await;
    drop(load);
    let other = "  - name: other\n    match: { path_prefix: /other }\n    direct_response: { status: 200 }\n";
    reload(
        &gw,
        breaker_policy(&up, other, "150ms").replace("open_for: 1s", "open_for: 60s"),
    )
    .await;
    assert_eq!(get(&gw.url("/other")).await.status, 200);
    let p = policy(&gw, "pay-guard").await;
    assert_eq!(p["state"], "triggered", "{p:#}");
    assert_eq!(get(&gw.url("/checkout")).await.json()["mock"], true);
    // A changed policy starts over.
    reload(
        &gw,
        breaker_policy(&up, other, "5s").replace("open_for: 1s", "open_for: 60s"),
    )
    .await;
    let p = policy(&gw, "pay-guard").await;
    assert_eq!(p["state"], "idle", "{p:#}");
    assert_eq!(get(&gw.url("/checkout")).await.body, "real");
}
