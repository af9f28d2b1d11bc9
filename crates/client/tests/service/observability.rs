//! What the client makes visible: spans per call and per try, W3C trace context on every
//! try, per-origin counters, prometheus metrics; and origins dropped when idle or at the cap.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_client::{Client, ErrorKind, RetryOn, RetryPolicy};

use crate::support::{self, redirect, text};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

fn trace_id(v: &http::HeaderValue) -> String {
    let s = v.to_str().expect("ascii");
    assert_eq!(s.len(), 55, "{s}");
    assert!(s.starts_with("00-") && s.ends_with("-01"), "{s}");
    s[3..35].to_owned()
}

#[tokio::test]
async fn spans_per_call_and_try_and_traceparent_on_every_try() {
    let flaky_count = Arc::new(Mutex::new(0));
    let fc = flaky_count.clone();
    let srv = support::server(move |s| {
        let fc = fc.clone();
        async move {
            match s.uri.path() {
                "/hop" => redirect(302, "/flaky"),
                _ => {
                    let mut n = fc.lock().expect("lock");
                    *n += 1;
                    if *n == 1 {
                        text(503, "busy")
                    } else {
                        text(200, "ok")
                    }
                }
            }
        }
    })
    .await;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let client = Client::builder()
        .retry(RetryPolicy {
            on: RetryOn {
                statuses: vec![503],
                ..RetryOn::default()
            },
            backoff_base: Duration::from_millis(1),
            ..RetryPolicy::default()
        })
        .build()
        .expect("client");
    let resp = client.get(srv.url("/hop")).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.redirects().len(), 1);
    let seen = srv.seen();
    assert_eq!(seen.len(), 3, "the redirect, the 503, its retry");
    let ids: Vec<String> = seen
        .iter()
        .map(|s| trace_id(&s.headers["traceparent"]))
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one trace: {ids:?}");
    let parents: std::collections::HashSet<&str> = seen
        .iter()
        .map(|s| &s.headers["traceparent"].to_str().expect("ascii")[36..52])
        .collect();
    assert_eq!(parents.len(), 3, "a span ID per try");

    let out = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf-8");
    let tries = out.matches("http.client.try").count();
    assert!(tries >= 3, "{out}");
    assert!(out.contains("http.client.request"), "{out}");
    assert!(out.contains(&format!("trace_id={}", ids[0])), "{out}");
    assert!(out.contains("http.response.status_code=503"), "{out}");

    // A caller's trace continues: its trace ID is kept, the parent is our try.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    client
        .get(srv.url("/flaky"))
        .header("traceparent", incoming)
        .send()
        .await
        .expect("send");
    let last = srv.seen().pop().expect("seen");
    let tp = last.headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        trace_id(&last.headers["traceparent"]),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_ne!(&tp[36..52], "00f067aa0ba902b7");
}

#[tokio::test]
async fn counters_per_origin_and_prometheus_export() {
    let a = support::server(|_| async { text(200, "a") }).await;
    let b = support::server(|_| async { text(502, "b") }).await;
    let client = Client::new();
    for _ in 0..3 {
        client
            .get(a.url("/"))
            .send()
            .await
            .expect("a")
            .bytes()
            .await
            .expect("body");
    }
    client
        .get(b.url("/"))
        .send()
        .await
        .expect("b")
        .bytes()
        .await
        .expect("body");
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let _ = client.get(format!("http://{refused}/")).send().await;

    let stats = client.stats();
    assert_eq!(stats.origins.len(), 3);
    assert_eq!(stats.origins_created, 3);
    let sa = stats.origin(&a.origin()).expect("a");
    assert_eq!(
        (sa.requests, sa.tries, sa.connects, sa.reused),
        (3, 3, 1, 2)
    );
    let sr = stats.origin(&format!("http://{refused}")).expect("refused");
    assert_eq!(sr.errors_of(ErrorKind::ConnectRefused), 1);
    assert_eq!(
        sr.retries_total(),
        1,
        "a connect failure is retried once by default"
    );
    assert_eq!(sr.tries, 2);

    let registry = prometheus::Registry::new();
    client.register_metrics(&registry).expect("register");
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encode");
    let origin_a = a.origin();
    for line in [
        format!("portcullis_client_requests_total{{origin=\"{origin_a}\"}} 3"),
        format!("portcullis_client_pool_reused_total{{origin=\"{origin_a}\"}} 2"),
        format!(
            "portcullis_client_errors_total{{kind=\"connect_refused\",origin=\"http://{refused}\"}} 1"
        ),
        format!(
            "portcullis_client_retries_total{{origin=\"http://{refused}\",reason=\"connect_failure\"}} 1"
        ),
        format!("portcullis_client_breaker_state{{origin=\"{origin_a}\",state=\"closed\"}} 1"),
        "portcullis_client_origins 3".to_owned(),
    ] {
        assert!(text.contains(&line), "missing `{line}` in:\n{text}");
    }
}

#[tokio::test]
async fn origins_are_dropped_when_idle_and_capped() {
    let servers = [
        support::server(|_| async { text(200, "0") }).await,
        support::server(|_| async { text(200, "1") }).await,
        support::server(|_| async { text(200, "2") }).await,
    ];
    let client = Client::builder()
        .origin_idle_timeout(Duration::from_millis(200))
        .max_origins(2)
        .build()
        .expect("client");
    for s in &servers[..2] {
        client
            .get(s.url("/"))
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("body");
    }
    assert_eq!(client.stats().origins.len(), 2);
    // At the cap, a third origin makes room by dropping an unused one.
    client
        .get(servers[2].url("/"))
        .send()
        .await
        .expect("send")
        .bytes()
        .await
        .expect("body");
    let stats = client.stats();
    assert_eq!((stats.origins.len(), stats.origins_dropped), (2, 1));

    // An origin in use is never dropped: with one body still open on each origin held,
    // a new origin is refused.
    let hold_a = client.get(servers[2].url("/")).send().await.expect("send");
    let others: Vec<_> = stats.origins.iter().map(|o| o.origin.clone()).collect();
    let other = servers
        .iter()
        .find(|s| others.contains(&s.origin()) && s.origin() != servers[2].origin())
        .expect("the other held origin");
    let hold_b = client.get(other.url("/")).send().await.expect("send");
    let outsider = servers
        .iter()
        .find(|s| !others.contains(&s.origin()))
        .expect("the dropped one");
    let e = client
        .get(outsider.url("/"))
        .send()
        .await
        .expect_err("no room");
    assert_eq!(e.kind(), ErrorKind::OriginLimit, "{e}");
    drop((hold_a, hold_b));

    // Idle: all dropped after the idle timeout, pools and all.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stats = client.stats();
    assert_eq!(stats.origins.len(), 0, "{stats:?}");
    assert_eq!(stats.origins_dropped, 3);
    // And made again on the next call.
    client.get(servers[0].url("/")).send().await.expect("send");
    assert_eq!(client.stats().origins_created, 4);
}
