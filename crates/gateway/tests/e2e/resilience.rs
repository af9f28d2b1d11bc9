//! The resilient client through the gateway: retries, circuit breakers and fallbacks, health
//! checks, DNS targets, and their visibility in `/metrics` and `/admin/upstreams`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;

use crate::harness::*;

fn status(code: u16, who: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("x-upstream", who)
        .body(Full::new(Bytes::from(code.to_string())))
        .expect("response")
}

async fn metric(gw: &Gateway, needle: &str) -> Option<f64> {
    let text = String::from_utf8_lossy(&get(&gw.admin_url("/metrics")).await.body).into_owned();
    text.lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_flaky_target_and_are_counted() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let flaky = upstream(move |_req| {
        let n = h.fetch_add(1, Ordering::SeqCst);
        async move {
            if n.is_multiple_of(2) {
                status(503, "flaky")
            } else {
                status(200, "flaky")
            }
        }
    })
    .await;
    let gw = Gateway::start(&config(&format!(
        r#"upstreams:
  u:
    targets: [{{ address: "{}" }}]
    retry: {{ attempts: 3, on: [503], backoff: {{ base: 1ms, max: 5ms }}, budget_percent: 100 }}
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: u
"#,
        flaky.address()
    )));
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    let retried = metric(
        &gw,
        "portcullis_upstream_retries_total{upstream=\"u\",reason=\"status\"}",
    )
    .await
    .expect("retry metric");
    assert_eq!(retried, 20.0);
    // A POST is not retried once the upstream processed it: the 503 comes back as it is.
    let before = hits.load(Ordering::SeqCst);
    assert!(
        before.is_multiple_of(2),
        "the next answer of the flaky upstream is a 503"
    );
    let got = send(
        &h1_client(),
        req("POST", &gw.url("/x"))
            .body(Full::from("b"))
            .expect("req"),
    )
    .await;
    assert_eq!(got.status, 503);
    assert_eq!(hits.load(Ordering::SeqCst) - before, 1, "sent once");
    // With an Idempotency-Key it is retried.
    let got = send(
        &h1_client(),
        req("POST", &gw.url("/x"))
            .header("idempotency-key", "order-7")
            .body(Full::from("b"))
            .expect("req"),
    )
    .await;
    assert_eq!(got.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_answers_503_or_the_route_fallback() {
    let down = upstream(|_req| async { status(502, "down") }).await;
    let yaml = config(&format!(
        r#"upstreams:
  u:
    targets: [{{ address: "{}" }}]
    circuit_breaker: {{ failure_rate: 0.5, window: 10s, min_requests: 5, open_for: 30s, half_open_requests: 1 }}
routes:
  - name: plain
    match: {{ path_prefix: /plain }}
    upstream: u
  - name: with-fallback
    match: {{ path_prefix: /fb }}
    upstream: u
    fallback: {{ status: 200, body: "cached answer", headers: {{ x-fallback: "1" }} }}
"#,
        down.address()
    ));
    let gw = Gateway::start(&yaml);
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/plain")).await.status, 502);
    }
    let got = get(&gw.url("/plain")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.json()["error"]["code"], "upstream_unavailable");
    let got = get(&gw.url("/fb")).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"cached answer");
    assert_eq!(got.header("x-fallback"), Some("1"));
    let ups = get(&gw.admin_url("/admin/upstreams")).await.json();
    assert_eq!(ups[0]["targets"][0]["circuit"], "open");
    assert_eq!(
        metric(&gw, "portcullis_upstream_circuit_state{upstream=\"u\"").await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_steer_traffic_and_no_healthy_target_is_a_503() {
    let sick = Arc::new(AtomicBool::new(true));
    let s = sick.clone();
    let a = upstream(move |req| {
        let sick = s.load(Ordering::SeqCst);
        async move {
            if req.uri().path() == "/healthz" && sick {
                status(500, "a")
            } else {
                status(200, "a")
            }
        }
    })
    .await;
    let b = upstream(|_req| async { status(200, "b") }).await;
    let gw = Gateway::start(&config(&format!(
        r#"upstreams:
  u:
    targets: [{{ address: "{}" }}, {{ address: "{}" }}]
    health_check:
      active: {{ path: /healthz, interval: 50ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: u
"#,
        a.address(),
        b.address()
    )));
    assert!(
        eventually(Duration::from_secs(3), async || {
            get(&gw.admin_url("/admin/upstreams")).await.json()[0]["targets"][0]["health"]
                == "unhealthy"
        })
        .await
    );
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/x")).await.header("x-upstream"), Some("b"));
    }
    sick.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(3), async || {
            get(&gw.admin_url("/admin/upstreams")).await.json()[0]["targets"][0]["health"]
                == "healthy"
        })
        .await,
        "a recovered target comes back by itself"
    );

    // Every target unhealthy: 503 upstream_unavailable.
    let dead = upstream(|_req| async { status(500, "dead") }).await;
    let gw = Gateway::start(&config(&format!(
        r#"upstreams:
  u:
    targets: [{{ address: "{}" }}]
    health_check:
      active: {{ path: /healthz, interval: 30ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: u
"#,
        dead.address()
    )));
    assert!(
        eventually(Duration::from_secs(3), async || get(&gw.url("/x"))
            .await
            .status
            == 503)
        .await
    );
    let got = get(&gw.url("/x")).await;
    assert_eq!(got.json()["error"]["code"], "upstream_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_moves_traffic_off_a_failing_target() {
    let bad = upstream(|_req| async { status(502, "bad") }).await;
    let good = upstream(|_req| async { status(200, "good") }).await;
    let gw = Gateway::start(&config(&format!(
        r#"upstreams:
  u:
    targets: [{{ address: "{}" }}, {{ address: "{}" }}]
    health_check:
      passive: {{ consecutive_failures: 3, eject_for: 30s }}
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: u
"#,
        bad.address(),
        good.address()
    )));
    for _ in 0..10 {
        let _ = get(&gw.url("/x")).await;
    }
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/x")).await.header("x-upstream"), Some("good"));
    }
    let ups = get(&gw.admin_url("/admin/upstreams")).await.json();
    assert_eq!(ups[0]["targets"][0]["health"], "ejected");
    assert_eq!(ups[0]["targets"][0]["ejections"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_names_in_targets_resolve_through_the_configured_server() {
    // A minimal DNS responder answering `svc.test` with 127.0.0.1.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let ns = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            if n < 17 {
                continue;
            }
            let mut i = 12;
            while i < n && buf[i] != 0 {
                i += 1 + buf[i] as usize;
            }
            let qtype = u16::from_be_bytes([buf[i + 1], buf[i + 2]]);
            let qend = i + 5;
            let mut resp = buf[..2].to_vec();
            resp.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(qtype == 1), 0, 0, 0, 0]);
            resp.extend_from_slice(&buf[12..qend]);
            if qtype == 1 {
                resp.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 127, 0, 0, 1]);
            }
            let _ = sock.send_to(&resp, peer).await;
        }
    });
    let up = echo_upstream("by-name").await;
    let gw = Gateway::start(&config(&format!(
        r#"dns: {{ nameservers: ["{ns}"], timeout: 500ms }}
upstreams:
  u:
    targets: [{{ address: "svc.test:{}" }}]
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: u
"#,
        up.addr.port()
    )));
    let got = get(&gw.url("/x")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("x-upstream"), Some("by-name"));
    let ups = get(&gw.admin_url("/admin/upstreams")).await.json();
    assert_eq!(
        ups[0]["targets"][0]["address"],
        format!("127.0.0.1:{}", up.addr.port())
    );
    assert!(
        metric(&gw, "portcullis_dns_resolutions_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}
