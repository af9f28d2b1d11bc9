//! End-to-end observability against the real binary: `/metrics` (content, `promtool check
//! metrics`, bounded label cardinality), the JSON access log, OpenTelemetry traces received by
//! real OTLP/HTTP and OTLP/gRPC collectors started here, SLOs, the topology view and the runtime
//! log filter.

#[path = "e2e/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use harness::*;

const TOKEN_ENV: &str = "PORTCULLIS_E2E_OBS_TOKEN";
const TOKEN: &str = "obs-token-5d2a9c";

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `config(rest)` with the file watcher off: only explicit reloads happen.
fn config_no_watch(rest: &str) -> String {
    config(rest).replace("watch_interval: 200ms", "watch_interval: 0s")
}

/// Adds `admin.token: ${TOKEN_ENV}` to a config made by `config`.
fn with_token(yaml: &str) -> String {
    let admin = "admin:\n  address: 127.0.0.1:0\n";
    assert!(yaml.contains(admin));
    yaml.replace(admin, &format!("{admin}  token: ${{{TOKEN_ENV}}}\n"))
}

/// The value of one series written exactly as rendered (`name{labels}`).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Every series (name and labels, without the value) of a text exposition.
fn series_set(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

/// A loopback port nothing listens on.
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

fn status_response(code: u16, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("response")
}

/// A request with optional headers and body.
async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &'static str) -> Got {
    let mut b = req(method, url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        &h1_client(),
        b.body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request"),
    )
    .await
}

/// An admin call with an optional bearer token and a text body.
async fn admin(gw: &Gateway, method: &str, path: &str, token: Option<&str>, body: &str) -> Got {
    let mut b = req(method, &gw.admin_url(path));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    send(
        &h1_client(),
        b.body(Full::new(Bytes::from(body.to_owned())))
            .expect("request"),
    )
    .await
}

/// The access log lines written so far, parsed.
fn access_lines(gw: &Gateway) -> Vec<Value> {
    let text = std::fs::read_to_string(gw.dir.path().join("access.log")).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line is JSON ({e}): {l}"))
        })
        .collect()
}

/// Waits for the access log line of request `id`.
async fn access_line(gw: &Gateway, id: &str) -> Value {
    let mut found = None;
    let ok = eventually(Duration::from_secs(5), async || {
        found = access_lines(gw)
            .into_iter()
            .find(|l| l["request_id"].as_str() == Some(id));
        found.is_some()
    })
    .await;
    assert!(
        ok,
        "no access log line for request {id}; lines: {:?}",
        access_lines(gw)
    );
    found.expect("line")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A W3C `traceparent` split into (trace id, span id, flags), each as lowercase hex.
fn split_traceparent(tp: &str) -> (String, String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent `{tp}`");
    assert_eq!(parts[0], "00", "version of `{tp}`");
    assert_eq!(parts[1].len(), 32, "trace id of `{tp}`");
    assert_eq!(parts[2].len(), 16, "span id of `{tp}`");
    assert_ne!(parts[1], "0".repeat(32), "trace id of `{tp}`");
    assert_ne!(parts[2], "0".repeat(16), "span id of `{tp}`");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// The `traceparent` an echo upstream received, from its JSON answer.
fn upstream_traceparent(got: &Got) -> String {
    got.json()["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("the upstream got no traceparent: {}", got.json()))
        .to_owned()
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str(s: &Span, key: &str) -> Option<String> {
    match attr(s, key) {
        Some(any_value::Value::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

fn attr_int(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key) {
        Some(any_value::Value::IntValue(v)) => Some(*v),
        _ => None,
    }
}

fn kv_str(kvs: &[KeyValue], key: &str) -> Option<String> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

// ---------------------------------------------------------------------------------------------
// OTLP collectors
// ---------------------------------------------------------------------------------------------

/// What a collector received.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<BTreeSet<String>>>,
    scopes: Arc<Mutex<BTreeSet<String>>>,
    exports: Arc<AtomicUsize>,
    /// Requests refused as not OTLP (wrong path, content type, undecodable body).
    rejected: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn add(&self, r: ExportTraceServiceRequest) {
        self.exports.fetch_add(1, Ordering::SeqCst);
        for rs in r.resource_spans {
            if let Some(name) = rs
                .resource
                .as_ref()
                .and_then(|res| kv_str(&res.attributes, "service.name"))
            {
                self.services.lock().expect("services").insert(name);
            }
            for ss in rs.scope_spans {
                if let Some(scope) = &ss.scope {
                    self.scopes
                        .lock()
                        .expect("scopes")
                        .insert(scope.name.clone());
                }
                self.spans.lock().expect("spans").extend(ss.spans);
            }
        }
    }
}

enum Stopper {
    Abort(tokio::task::JoinHandle<()>),
    Signal(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
}

/// A real OTLP receiver on an ephemeral loopback port.
struct Collector {
    addr: SocketAddr,
    got: Received,
    stopper: Option<Stopper>,
}

impl Collector {
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.got.spans.lock().expect("spans").clone()
    }

    fn rejected(&self) -> Vec<String> {
        self.got.rejected.lock().expect("rejected").clone()
    }

    /// Waits until at least `n` spans of `trace` arrived; returns them.
    async fn wait_trace(&self, trace: &[u8], n: usize) -> Vec<Span> {
        let of_trace = || -> Vec<Span> {
            self.spans()
                .into_iter()
                .filter(|s| s.trace_id == trace)
                .collect()
        };
        let ok = eventually(Duration::from_secs(10), async || of_trace().len() >= n).await;
        assert!(
            ok,
            "expected {n} spans of trace {} at the collector, got {:#?} (rejected: {:?})",
            hex(trace),
            of_trace(),
            self.rejected()
        );
        // Whatever else of the trace arrives together.
        tokio::time::sleep(Duration::from_millis(100)).await;
        of_trace()
    }

    /// Stops the receiver: the port is closed and its connections are gone.
    async fn stop(&mut self) {
        match self.stopper.take() {
            Some(Stopper::Abort(task)) => {
                task.abort();
                let _ = task.await;
            }
            Some(Stopper::Signal(tx, task)) => {
                let _ = tx.send(());
                let abort = task.abort_handle();
                if tokio::time::timeout(Duration::from_secs(5), task)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            }
            None => {}
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        match self.stopper.take() {
            Some(Stopper::Abort(task)) | Some(Stopper::Signal(_, task)) => task.abort(),
            None => {}
        }
    }
}

/// OTLP/HTTP: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
async fn otlp_http(req: Request<Incoming>, got: Received) -> Response<Full<Bytes>> {
    let what = format!("{} {}", req.method(), req.uri().path());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let post = req.method() == http::Method::POST && req.uri().path() == "/v1/traces";
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !post || content_type != "application/x-protobuf" {
        got.rejected
            .lock()
            .expect("rejected")
            .push(format!("{what} content-type={content_type}"));
        return status_response(415, "not OTLP/HTTP protobuf");
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(r) => got.add(r),
        Err(e) => {
            got.rejected
                .lock()
                .expect("rejected")
                .push(format!("undecodable body: {e}"));
            return status_response(400, "bad protobuf");
        }
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(
            ExportTraceServiceResponse::default().encode_to_vec(),
        )))
        .expect("response")
}

/// An OTLP/HTTP collector: a hyper server; stopping it aborts every connection.
async fn http_collector() -> Collector {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = Received::default();
    let g = got.clone();
    let task = tokio::spawn(async move {
        // Dropped with this task: every connection task is aborted with it.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let g = g.clone();
            conns.spawn(async move {
                let svc = service_fn(move |req| {
                    let g = g.clone();
                    async move { Ok::<_, Infallible>(otlp_http(req, g).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Collector {
        addr,
        got,
        stopper: Some(Stopper::Abort(task)),
    }
}

/// The OTLP/gRPC trace service.
struct GrpcSink(Received);

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC collector: tonic's server with the generated `TraceService`.
async fn grpc_collector() -> Collector {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = Received::default();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sink = GrpcSink(got.clone());
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await;
    });
    Collector {
        addr,
        got,
        stopper: Some(Stopper::Signal(tx, task)),
    }
}

fn tracing_yaml(collector: &Collector, protocol: &str, sampling: &str) -> String {
    format!(
        "  tracing: {{ otlp_endpoint: \"{}\", protocol: {protocol}, sampling: {sampling}, service_name: edge-gw }}\n",
        collector.endpoint()
    )
}

/// An upstream that answers 503 to its first request and 200 afterwards, keeping the
/// `traceparent` of every request it got.
async fn first_fails_upstream() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hits = Arc::new(AtomicUsize::new(0));
    let (s, h) = (seen.clone(), hits.clone());
    let up = upstream(move |req: Request<Incoming>| {
        let tp = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        s.lock().expect("seen").push(tp);
        let n = h.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                status_response(503, "try again")
            } else {
                status_response(200, "second time lucky")
            }
        }
    })
    .await;
    (up, seen)
}

// ---------------------------------------------------------------------------------------------
// a. /metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_requests_upstreams_plugins_reloads_and_pass_promtool() {
    let echo = echo_upstream("echo").await;
    let (flaky, _) = first_fails_upstream().await;
    let sick = upstream(|_req| async { status_response(502, "sick") }).await;
    let broken = upstream(|_req| async { status_response(502, "broken") }).await;
    let gate = Arc::new(Semaphore::new(0));
    let arrived = Arc::new(Notify::new());
    let (g, a) = (gate.clone(), arrived.clone());
    let gated = upstream(move |_req| {
        let (g, a) = (g.clone(), a.clone());
        async move {
            a.notify_one();
            g.acquire().await.expect("gate").forget();
            status_response(200, "released")
        }
    })
    .await;
    let dead = dead_port().await;
    let yaml = config_no_watch(&format!(
        r#"upstreams:
  echo:
    targets: [{{ address: "{echo}" }}]
  flaky:
    targets: [{{ address: "{flaky}" }}]
    retry: {{ attempts: 3, on: [503], backoff: {{ base: 1ms, max: 5ms }}, budget_percent: 100 }}
  dead:
    targets: [{{ address: "127.0.0.1:{dead}" }}]
  sick:
    targets: [{{ address: "{sick}" }}]
    health_check:
      passive: {{ consecutive_failures: 2, eject_for: 60s, max_ejected_percent: 100 }}
  broken:
    targets: [{{ address: "{broken}" }}]
    circuit_breaker: {{ failure_rate: 0.5, window: 30s, min_requests: 3, open_for: 60s, half_open_requests: 1 }}
  gated:
    targets: [{{ address: "{gated}" }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: echo
  - name: flaky
    match: {{ path: /flaky }}
    upstream: flaky
  - name: dead
    match: {{ path: /dead }}
    upstream: dead
  - name: sick
    match: {{ path: /sick }}
    upstream: sick
  - name: broken
    match: {{ path: /broken }}
    upstream: broken
  - name: slow
    match: {{ path: /slow }}
    upstream: gated
  - name: keyed
    match: {{ path: /keyed }}
    upstream: echo
    plugins:
      key_auth:
        consumers: [{{ name: team-a, key: "key-a-0123456789" }}]
  - name: limited
    match: {{ path: /limited }}
    direct_response: {{ status: 200, body: "ok" }}
    plugins:
      rate_limit: {{ limit: 1, per: 1m, burst: 0, key: ip }}
"#,
        echo = echo.address(),
        flaky = flaky.address(),
        sick = sick.address(),
        broken = broken.address(),
        gated = gated.address(),
    ));
    let gw = Gateway::start(&yaml);

    // Traffic of every kind. Sequential requests on one keep-alive client for the pool counters.
    let client = h1_client();
    let mut api_bytes_out = 0usize;
    for i in 0..3 {
        let got = send(
            &client,
            req("GET", &gw.url(&format!("/api/a{i}")))
                .body(Full::default())
                .expect("req"),
        )
        .await;
        assert_eq!(got.status, 200);
        api_bytes_out += got.body.len();
    }
    let got = send(
        &client,
        req("POST", &gw.url("/api/b"))
            .body(Full::new(Bytes::from_static(b"hello world")))
            .expect("req"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["body_length"], 11);
    api_bytes_out += got.body.len();
    // A method outside the known list is counted as OTHER (the label stays bounded).
    let got = send(
        &client,
        req("PURGE", &gw.url("/api/c"))
            .body(Full::default())
            .expect("req"),
    )
    .await;
    assert_eq!(got.status, 200);
    api_bytes_out += got.body.len();

    assert_eq!(get(&gw.url("/flaky")).await.status, 200, "retried to a 200");
    assert_eq!(get(&gw.url("/dead")).await.status, 502);
    for _ in 0..4 {
        let _ = get(&gw.url("/sick")).await;
    }
    let mut broken_statuses = Vec::new();
    for _ in 0..5 {
        broken_statuses.push(get(&gw.url("/broken")).await.status.as_u16());
    }
    assert_eq!(broken_statuses[..3], [502, 502, 502], "{broken_statuses:?}");
    assert_eq!(
        broken_statuses[4], 503,
        "the breaker opened: {broken_statuses:?}"
    );
    assert_eq!(get(&gw.url("/nowhere")).await.status, 404);
    assert_eq!(get(&gw.url("/keyed")).await.status, 401);
    assert_eq!(
        call(
            "GET",
            &gw.url("/keyed"),
            &[("x-api-key", "wrong-key-000000")],
            ""
        )
        .await
        .status,
        401
    );
    assert_eq!(
        call(
            "GET",
            &gw.url("/keyed"),
            &[("x-api-key", "key-a-0123456789")],
            ""
        )
        .await
        .status,
        200
    );
    assert_eq!(get(&gw.url("/limited")).await.status, 200);
    assert_eq!(get(&gw.url("/limited")).await.status, 429);

    // The in-flight gauge follows a request held by its upstream.
    let slow_url = gw.url("/slow");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    tokio::time::timeout(Duration::from_secs(5), arrived.notified())
        .await
        .expect("the slow request reaches its upstream");
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(&m, "portcullis_requests_in_flight"),
        Some(1.0),
        "{m}"
    );
    gate.add_permits(1);
    assert_eq!(slow.await.expect("slow").status, 200);
    assert!(
        eventually(Duration::from_secs(3), async || {
            metric(&metrics_text(&gw).await, "portcullis_requests_in_flight") == Some(0.0)
        })
        .await
    );

    let m = metrics_text(&gw).await;
    let sum = |name: &str, labels: &[(&str, &str)]| metric_sum(&m, name, labels);

    // Requests by route, method, status class and upstream.
    let req_total = "portcullis_requests_total";
    assert_eq!(
        sum(
            req_total,
            &[
                ("route", "api"),
                ("method", "GET"),
                ("status_class", "2xx"),
                ("upstream", "echo")
            ]
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sum(req_total, &[("route", "api"), ("method", "POST")]),
        Some(1.0)
    );
    assert_eq!(
        sum(req_total, &[("route", "api"), ("method", "OTHER")]),
        Some(1.0)
    );
    assert_eq!(
        sum(
            req_total,
            &[
                ("route", "dead"),
                ("status_class", "5xx"),
                ("upstream", "dead")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sum(req_total, &[("route", "keyed"), ("status_class", "4xx")]),
        Some(2.0)
    );
    assert_eq!(
        sum(req_total, &[("route", "limited"), ("status_class", "4xx")]),
        Some(1.0)
    );
    assert_eq!(
        sum(req_total, &[("route", "broken"), ("status_class", "5xx")]),
        Some(5.0)
    );
    // Unrouted requests have their own bucket with an empty route label.
    assert_eq!(
        sum(req_total, &[("route", ""), ("status_class", "4xx")]),
        Some(1.0),
        "{m}"
    );

    // Latency histograms.
    assert!(m.contains("# TYPE portcullis_request_duration_seconds histogram"));
    assert!(m.contains("# TYPE portcullis_upstream_duration_seconds histogram"));
    // Routes without an upstream (direct responses, no route) have no upstream latency series.
    assert!(
        !m.contains("portcullis_upstream_duration_seconds_count{upstream=\"\"}"),
        "{m}"
    );
    assert_eq!(
        sum(
            "portcullis_request_duration_seconds_count",
            &[("route", "api")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sum(
            "portcullis_request_duration_seconds_bucket",
            &[("route", "api"), ("le", "+Inf")]
        ),
        Some(5.0)
    );
    assert!(
        sum(
            "portcullis_request_duration_seconds_sum",
            &[("route", "api")]
        )
        .is_some_and(|s| s > 0.0)
    );
    // api (5) and the keyed request that got through (1) went to echo.
    assert_eq!(
        sum(
            "portcullis_upstream_duration_seconds_count",
            &[("upstream", "echo")]
        ),
        Some(6.0),
        "{m}"
    );
    assert_eq!(
        sum(
            "portcullis_upstream_duration_seconds_bucket",
            &[("upstream", "echo"), ("le", "60")]
        ),
        Some(6.0),
        "{m}"
    );

    // Bytes.
    assert_eq!(
        sum("portcullis_request_bytes_total", &[("route", "api")]),
        Some(11.0)
    );
    assert_eq!(
        sum("portcullis_response_bytes_total", &[("route", "api")]),
        Some(api_bytes_out as f64)
    );

    // Connections by listener.
    assert!(
        sum("portcullis_connections_total", &[("listener", "http")]).is_some_and(|n| n >= 2.0),
        "{m}"
    );
    assert!(sum("portcullis_open_connections", &[("listener", "http")]).is_some());

    // Upstream client series.
    let echo_addr = echo.address();
    let echo_t = [("upstream", "echo"), ("target", echo_addr.as_str())];
    assert_eq!(
        sum("portcullis_upstream_requests_total", &echo_t),
        Some(6.0),
        "{m}"
    );
    assert!(
        sum("portcullis_upstream_connects_total", &echo_t).is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert!(
        sum("portcullis_upstream_pool_reuse_total", &echo_t).is_some_and(|n| n >= 4.0),
        "five sequential requests on one connection: {m}"
    );
    assert_eq!(
        sum("portcullis_upstream_target_healthy", &echo_t),
        Some(1.0)
    );
    assert_eq!(sum("portcullis_upstream_in_flight", &echo_t), Some(0.0));
    assert_eq!(
        sum(
            "portcullis_upstream_errors_total",
            &[("upstream", "dead"), ("kind", "connect_refused")]
        ),
        Some(1.0),
        "{m}"
    );
    // Every counted error kind is exported, at 0 when it did not happen.
    assert_eq!(
        sum(
            "portcullis_upstream_errors_total",
            &[("upstream", "echo"), ("kind", "reset")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sum(
            "portcullis_upstream_retries_total",
            &[("upstream", "flaky"), ("reason", "status")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sum(
            "portcullis_upstream_requests_total",
            &[("upstream", "flaky")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sum(
            "portcullis_upstream_retry_budget_exhausted_total",
            &[("upstream", "flaky")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sum(
            "portcullis_upstream_circuit_state",
            &[("upstream", "broken")]
        ),
        Some(1.0),
        "open: {m}"
    );
    assert_eq!(
        sum(
            "portcullis_upstream_circuit_opened_total",
            &[("upstream", "broken")]
        ),
        Some(1.0)
    );
    assert!(
        sum(
            "portcullis_upstream_circuit_rejected_total",
            &[("upstream", "broken")]
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(
        sum("portcullis_upstream_circuit_state", &[("upstream", "echo")]),
        Some(0.0)
    );
    assert_eq!(
        sum(
            "portcullis_upstream_ejections_total",
            &[("upstream", "sick")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sum(
            "portcullis_upstream_target_ejected",
            &[("upstream", "sick")]
        ),
        Some(1.0)
    );
    assert!(
        sum(
            "portcullis_upstream_no_healthy_total",
            &[("upstream", "sick")]
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(
        sum("portcullis_upstream_tls_insecure", &[("upstream", "echo")]),
        Some(0.0)
    );

    // Plugin counters.
    assert_eq!(
        sum(
            "portcullis_auth_failures_total",
            &[
                ("plugin", "key_auth"),
                ("scope", "keyed"),
                ("reason", "missing_key")
            ]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sum(
            "portcullis_auth_failures_total",
            &[("plugin", "key_auth"), ("reason", "invalid_key")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sum("portcullis_rate_limited_total", &[("scope", "limited")]),
        Some(1.0),
        "{m}"
    );

    // Reload counters start at 0, the config is identified by its hash.
    assert_eq!(
        metric(&m, "portcullis_config_reloads_total{result=\"ok\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "portcullis_config_reloads_total{result=\"failed\"}"),
        Some(0.0)
    );
    promtool_check(&m);

    // Bounded cardinality: 200 different paths on one route add no series.
    let before = series_set(&metrics_text(&gw).await);
    for i in 0..200 {
        let got = send(
            &client,
            req("GET", &gw.url(&format!("/api/card/{i}?q={i}")))
                .body(Full::default())
                .expect("req"),
        )
        .await;
        assert_eq!(got.status, 200);
    }
    let m = metrics_text(&gw).await;
    let after = series_set(&m);
    assert_eq!(
        after.symmetric_difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "200 paths on one route must not add series"
    );
    assert!(!m.contains("/api/card"), "no path in any label");
    assert_eq!(
        metric_sum(
            &m,
            req_total,
            &[("route", "api"), ("method", "GET"), ("status_class", "2xx")]
        ),
        Some(203.0)
    );

    // Reloads: an unchanged one is ok, an invalid one is refused and counted as failed.
    let cfg = get(&gw.admin_url("/admin/config")).await.json();
    let hash = cfg["hash"].as_str().expect("hash").to_owned();
    assert_eq!(
        metric(&m, &format!("portcullis_config_info{{hash=\"{hash}\"}}")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        admin(&gw, "POST", "/admin/reload", None, "").await.status,
        200
    );
    gw.write_config(&yaml.replace("routes:", "routes: [oops"));
    assert_eq!(
        admin(&gw, "POST", "/admin/reload", None, "").await.status,
        400
    );
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(&m, "portcullis_config_reloads_total{result=\"ok\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "portcullis_config_reloads_total{result=\"failed\"}"),
        Some(1.0)
    );
    // A changed config gets a new hash; exactly one config_info series names it.
    gw.write_config(&yaml.replace("min_requests: 3", "min_requests: 4"));
    let reload = admin(&gw, "POST", "/admin/reload", None, "").await;
    assert_eq!(reload.status, 200);
    let new_hash = reload.json()["hash"].as_str().expect("hash").to_owned();
    assert_ne!(new_hash, hash);
    let cfg = get(&gw.admin_url("/admin/config")).await.json();
    assert_eq!(cfg["hash"], new_hash.as_str());
    let m = metrics_text(&gw).await;
    let info: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("portcullis_config_info"))
        .collect();
    assert_eq!(
        info,
        [format!("portcullis_config_info{{hash=\"{new_hash}\"}} 1").as_str()],
        "{m}"
    );
    promtool_check(&m);
}

// ---------------------------------------------------------------------------------------------
// b. Access log
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request_with_every_field() {
    let echo = echo_upstream("echo").await;
    let dead = dead_port().await;
    let gw = Gateway::start(&config_no_watch(&format!(
        r#"observability:
  access_log: {{ path: access.log, format: json }}
upstreams:
  echo:
    targets: [{{ address: "{echo}" }}]
  dead:
    targets: [{{ address: "127.0.0.1:{dead}" }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: echo
  - name: dead
    match: {{ path: /dead }}
    upstream: dead
  - name: keyed
    match: {{ path: /keyed }}
    upstream: echo
    plugins:
      key_auth:
        consumers: [{{ name: team-a, key: "key-a-0123456789" }}]
  - name: limited
    match: {{ path: /limited }}
    direct_response: {{ status: 200, body: "ok" }}
    plugins:
      rate_limit: {{ limit: 1, per: 1m, burst: 0, key: ip }}
"#,
        echo = echo.address()
    )));
    let host = gw.http().to_string();

    // A proxied POST with a query string and a client-chosen request ID.
    let got = call(
        "POST",
        &gw.url("/api/items?token=secret&page=2"),
        &[("x-request-id", "req-abc-123")],
        "hello",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-request-id"), Some("req-abc-123"));
    let l = access_line(&gw, "req-abc-123").await;
    let keys: BTreeSet<&str> = l
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "time",
        "request_id",
        "trace_id",
        "span_id",
        "client",
        "method",
        "host",
        "path",
        "protocol",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_ms",
        "route",
        "upstream",
        "target",
        "attempts",
        "error",
        "consumer",
        "client_cert",
        "listener",
    ] {
        assert!(keys.contains(k), "field {k} missing: {l}");
    }
    let time = l["time"].as_str().expect("time");
    assert!(
        time.len() >= 20 && time.contains('T') && time.ends_with('Z'),
        "RFC 3339 time: {time}"
    );
    assert_eq!(l["client"], "127.0.0.1");
    assert_eq!(l["method"], "POST");
    assert_eq!(l["host"], host.as_str());
    assert_eq!(l["path"], "/api/items", "no query by default: {l}");
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_in"], 5);
    assert_eq!(l["bytes_out"], got.body.len());
    let duration = l["duration_ms"].as_f64().expect("duration_ms");
    let upstream_ms = l["upstream_ms"].as_f64().expect("upstream_ms");
    assert!(
        upstream_ms > 0.0 && upstream_ms <= duration,
        "upstream_ms {upstream_ms} within duration_ms {duration}"
    );
    assert_eq!(l["route"], "api");
    assert_eq!(l["upstream"], "echo");
    assert_eq!(l["target"], echo.address().as_str());
    assert_eq!(l["attempts"], 1);
    assert_eq!(l["error"], Value::Null);
    assert_eq!(l["consumer"], Value::Null);
    assert_eq!(l["listener"], "http");
    assert_eq!(l["trace_id"], Value::Null, "tracing is off");
    assert_eq!(l["span_id"], Value::Null);

    // A generated request ID is the one in the log.
    let got = get(&gw.url("/api/plain")).await;
    let rid = got.header("x-request-id").expect("x-request-id").to_owned();
    assert!(!rid.is_empty());
    let l = access_line(&gw, &rid).await;
    assert_eq!(l["path"], "/api/plain");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["bytes_in"], 0);

    // Failures name their cause.
    let got = get(&gw.url("/dead")).await;
    assert_eq!(got.status, 502);
    let l = access_line(&gw, got.header("x-request-id").expect("id")).await;
    assert_eq!(l["status"], 502);
    assert_eq!(l["error"], "connect_refused", "{l}");
    assert_eq!(l["route"], "dead");
    assert_eq!(l["upstream"], "dead");
    assert_eq!(l["target"], format!("127.0.0.1:{dead}").as_str());
    assert_eq!(l["attempts"], 1);

    let got = get(&gw.url("/nowhere")).await;
    assert_eq!(got.status, 404);
    let l = access_line(&gw, got.header("x-request-id").expect("id")).await;
    assert_eq!(l["error"], "no_route");
    assert_eq!(l["route"], Value::Null);
    assert_eq!(l["upstream"], Value::Null);
    assert_eq!(l["upstream_ms"], Value::Null);

    assert_eq!(get(&gw.url("/limited")).await.status, 200);
    let got = get(&gw.url("/limited")).await;
    assert_eq!(got.status, 429);
    let l = access_line(&gw, got.header("x-request-id").expect("id")).await;
    assert_eq!(l["error"], "rate_limited");
    assert_eq!(l["route"], "limited");
    assert_eq!(l["status"], 429);

    // key_auth: the consumer is logged; a refused request says why.
    let got = call(
        "GET",
        &gw.url("/keyed"),
        &[
            ("x-api-key", "key-a-0123456789"),
            ("x-request-id", "keyed-ok"),
        ],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let l = access_line(&gw, "keyed-ok").await;
    assert_eq!(l["consumer"], "team-a");
    assert_eq!(l["route"], "keyed");
    let got = call(
        "GET",
        &gw.url("/keyed"),
        &[("x-request-id", "keyed-no")],
        "",
    )
    .await;
    assert_eq!(got.status, 401);
    let l = access_line(&gw, "keyed-no").await;
    assert_eq!(l["error"], "unauthorized");
    assert_eq!(l["consumer"], Value::Null);

    // One line per request, nothing dropped, and the counters agree.
    let lines = access_lines(&gw);
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let ids: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l["request_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 8, "request IDs are unique");
    let m = metrics_text(&gw).await;
    assert_eq!(metric(&m, "portcullis_access_log_lines_total"), Some(8.0));
    assert_eq!(metric(&m, "portcullis_access_log_dropped_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_counts_streamed_request_bodies() {
    let echo = echo_upstream("echo").await;
    let gw = Gateway::start(&config_no_watch(&format!(
        r#"observability:
  access_log: {{ path: access.log }}
upstreams:
  echo:
    targets: [{{ address: "{echo}" }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: echo
"#,
        echo = echo.address()
    )));
    // A chunked upload has no Content-Length; its bytes are counted all the same.
    let body = "x".repeat(3000);
    let (code, out, err) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "X-Request-ID: chunked-1",
        "--data-binary",
        &body,
        &gw.url("/api/upload"),
    ]);
    assert_eq!(code, 0, "{err}");
    let echoed: Value = serde_json::from_str(&out).expect("echo JSON");
    assert_eq!(echoed["body_length"], 3000);
    assert!(echoed["headers"]["content-length"].is_null(), "{echoed}");
    let l = access_line(&gw, "chunked-1").await;
    assert_eq!(l["bytes_in"], 3000, "{l}");
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric_sum(&m, "portcullis_request_bytes_total", &[("route", "api")]),
        Some(3000.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_fields_query_and_failure_only_sampling() {
    let echo = echo_upstream("echo").await;
    let gw = Gateway::start(&config_no_watch(&format!(
        r#"observability:
  access_log:
    path: access.log
    fields: [request_id, status, path, error]
    include_query: true
    sample_success: 0
upstreams:
  echo:
    targets: [{{ address: "{echo}" }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: echo
"#,
        echo = echo.address()
    )));
    for i in 0..5 {
        let got = call(
            "GET",
            &gw.url(&format!("/api/ok?i={i}")),
            &[("x-request-id", &format!("ok-{i}"))],
            "",
        )
        .await;
        assert_eq!(got.status, 200);
    }
    let got = call(
        "GET",
        &gw.url("/missing?q=2&x=y"),
        &[("x-request-id", "fail-1")],
        "",
    )
    .await;
    assert_eq!(got.status, 404);
    let l = access_line(&gw, "fail-1").await;
    let keys: Vec<&str> = l
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["request_id", "path", "status", "error"], "{l}");
    assert_eq!(l["path"], "/missing?q=2&x=y", "include_query: {l}");
    assert_eq!(l["status"], 404);
    assert_eq!(l["error"], "no_route");
    // The writer is FIFO: successes written before the failure would be there by now.
    let lines = access_lines(&gw);
    assert_eq!(
        lines.len(),
        1,
        "sample_success: 0 logs failures only: {lines:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// c. Tracing with real OTLP receivers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_spans_follow_the_callers_trace_propagate_and_show_retries() {
    let collector = http_collector().await;
    let echo = echo_upstream("echo").await;
    let (flaky, flaky_seen) = first_fails_upstream().await;
    let gw = Gateway::start(&config_no_watch(&format!(
        r#"observability:
  access_log: {{ path: access.log }}
{tracing}upstreams:
  echo:
    targets: [{{ address: "{echo}" }}]
  flaky:
    targets: [{{ address: "{flaky}" }}]
    retry: {{ attempts: 3, on: [503], backoff: {{ base: 1ms, max: 5ms }}, budget_percent: 100 }}
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: echo
  - name: flaky
    match: {{ path: /flaky }}
    upstream: flaky
"#,
        tracing = tracing_yaml(&collector, "http", "1.0"),
        echo = echo.address(),
        flaky = flaky.address(),
    )));

    // 1. The caller's trace context is continued.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let got = call(
        "GET",
        &gw.url("/api/items?x=1"),
        &[
            ("traceparent", &format!("00-{trace}-{caller}-01")),
            ("tracestate", "vendor=abc"),
            ("x-request-id", "traced-1"),
        ],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let (up_trace, up_span, up_flags) = split_traceparent(&upstream_traceparent(&got));
    assert_eq!(up_trace, trace, "same trace upstream");
    assert_ne!(up_span, caller, "the upstream's parent is our client span");
    assert_eq!(up_flags, "01");
    assert_eq!(got.json()["headers"]["tracestate"], "vendor=abc");

    let spans = collector.wait_trace(&unhex(trace), 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans
        .iter()
        .find(|s| s.kind == SERVER)
        .expect("server span");
    let client = spans
        .iter()
        .find(|s| s.kind == CLIENT)
        .expect("client span");
    assert_eq!(hex(&server.parent_span_id), caller, "server span's parent");
    assert_eq!(server.name, "GET api");
    assert_eq!(
        attr_str(server, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(attr_str(server, "http.route").as_deref(), Some("api"));
    assert_eq!(attr_str(server, "url.path").as_deref(), Some("/api/items"));
    assert_eq!(attr_int(server, "http.response.status_code"), Some(200));
    assert_eq!(
        attr_str(server, "portcullis.request_id").as_deref(),
        Some("traced-1")
    );
    assert_eq!(
        attr_str(server, "portcullis.upstream").as_deref(),
        Some("echo")
    );
    assert_eq!(attr_int(server, "portcullis.attempts"), Some(1));
    assert_eq!(
        attr_str(server, "portcullis.listener").as_deref(),
        Some("http")
    );
    assert_eq!(
        attr_str(server, "client.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(hex(&client.span_id), up_span, "the upstream's parent span");
    assert_eq!(
        client.parent_span_id, server.span_id,
        "client span under the server span"
    );
    assert_eq!(client.name, "upstream echo try 1");
    assert_eq!(
        attr_str(client, "server.address"),
        Some(echo.address()),
        "{client:#?}"
    );
    assert_eq!(attr_int(client, "portcullis.attempt"), Some(1));
    assert_eq!(attr_int(client, "http.response.status_code"), Some(200));
    // The client span lies within the server span (1 ms of clock slack).
    let slack = 1_000_000;
    assert!(server.start_time_unix_nano <= server.end_time_unix_nano);
    assert!(client.start_time_unix_nano + slack >= server.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano + slack);
    assert!(
        collector
            .got
            .services
            .lock()
            .expect("services")
            .contains("edge-gw"),
        "service.name from the config"
    );
    assert!(
        collector
            .got
            .scopes
            .lock()
            .expect("scopes")
            .contains("portcullis")
    );

    // The access log line carries the server span's IDs.
    let l = access_line(&gw, "traced-1").await;
    assert_eq!(l["trace_id"], trace);
    assert_eq!(l["span_id"], hex(&server.span_id).as_str());

    // 2. Without a traceparent a new (sampled) trace starts.
    let got = call(
        "GET",
        &gw.url("/api/new"),
        &[("x-request-id", "fresh-1")],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let (new_trace, new_span, flags) = split_traceparent(&upstream_traceparent(&got));
    assert_ne!(new_trace, trace);
    assert_eq!(flags, "01", "sampling 1.0");
    let spans = collector.wait_trace(&unhex(&new_trace), 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SERVER)
        .expect("server span");
    let client = spans
        .iter()
        .find(|s| s.kind == CLIENT)
        .expect("client span");
    assert!(server.parent_span_id.is_empty(), "a root span: {server:#?}");
    assert_eq!(hex(&client.span_id), new_span);
    assert_eq!(client.parent_span_id, server.span_id);
    let l = access_line(&gw, "fresh-1").await;
    assert_eq!(l["trace_id"], new_trace.as_str());
    assert_eq!(l["span_id"], hex(&server.span_id).as_str());

    // 3. A retried request: two client spans, try 1 and try 2, under one server span.
    let got = call(
        "GET",
        &gw.url("/flaky"),
        &[("x-request-id", "retried-1")],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = flaky_seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2, "two tries: {seen:?}");
    let (t1, s1, _) = split_traceparent(&seen[0]);
    let (t2, s2, _) = split_traceparent(&seen[1]);
    assert_eq!(t1, t2, "both tries in one trace");
    assert_ne!(s1, s2, "each try is its own span");
    let spans = collector.wait_trace(&unhex(&t1), 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(servers.len(), 1);
    let server = servers[0];
    assert_eq!(attr_int(server, "portcullis.attempts"), Some(2));
    assert_eq!(attr_str(server, "http.route").as_deref(), Some("flaky"));
    let mut tries: Vec<&Span> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    tries.sort_by_key(|s| attr_int(s, "portcullis.attempt"));
    assert_eq!(tries.len(), 2);
    for (i, (span, sent)) in tries.iter().zip([&s1, &s2]).enumerate() {
        let n = i as i64 + 1;
        assert_eq!(span.parent_span_id, server.span_id, "try {n}");
        assert_eq!(span.name, format!("upstream flaky try {n}"));
        assert_eq!(attr_int(span, "portcullis.attempt"), Some(n));
        assert_eq!(
            &hex(&span.span_id),
            sent,
            "try {n} is the upstream's parent"
        );
    }
    assert_eq!(attr_int(tries[0], "http.response.status_code"), Some(503));
    assert_eq!(attr_int(tries[1], "http.response.status_code"), Some(200));
    assert!(tries[0].end_time_unix_nano <= tries[1].start_time_unix_nano + 1_000_000);

    assert!(
        collector.rejected().is_empty(),
        "{:?}",
        collector.rejected()
    );
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(&m, "portcullis_trace_spans_dropped_total"),
        Some(0.0)
    );
    assert!(metric(&m, "portcullis_trace_spans_exported_total").is_some_and(|n| n >= 7.0));
    promtool_check(&m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_export_and_a_gone_collector_costs_spans_not_latency() {
    let mut collector = grpc_collector().await;
    let echo = echo_upstream("echo").await;
    let gw = Gateway::start(&config_no_watch(&format!(
        r#"observability:
{tracing}upstreams:
  echo:
    targets: [{{ address: "{echo}" }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: echo
"#,
        tracing = tracing_yaml(&collector, "grpc", "1.0"),
        echo = echo.address(),
    )));

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller = "b7ad6b7169203331";
    let got = call(
        "GET",
        &gw.url("/api/grpc"),
        &[("traceparent", &format!("00-{trace}-{caller}-01"))],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let (up_trace, up_span, _) = split_traceparent(&upstream_traceparent(&got));
    assert_eq!(up_trace, trace);
    let spans = collector.wait_trace(&unhex(trace), 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SERVER)
        .expect("server span");
    let client = spans
        .iter()
        .find(|s| s.kind == CLIENT)
        .expect("client span");
    assert_eq!(hex(&server.parent_span_id), caller);
    assert_eq!(hex(&client.span_id), up_span);
    assert_eq!(client.parent_span_id, server.span_id);
    assert!(
        collector
            .got
            .services
            .lock()
            .expect("services")
            .contains("edge-gw")
    );
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(&m, "portcullis_trace_spans_dropped_total"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "portcullis_trace_spans_exported_total"),
        Some(2.0)
    );

    // The collector goes away: requests are as quick as before, spans are dropped and counted.
    collector.stop().await;
    let exports = collector.got.exports.load(Ordering::SeqCst);
    for i in 0..10 {
        let started = Instant::now();
        let got = get(&gw.url(&format!("/api/after/{i}"))).await;
        assert_eq!(got.status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "request {i} took {:?} with the collector gone",
            started.elapsed()
        );
    }
    assert!(
        eventually(Duration::from_secs(15), async || {
            metric(
                &metrics_text(&gw).await,
                "portcullis_trace_spans_dropped_total",
            )
            .is_some_and(|n| n >= 1.0)
        })
        .await,
        "dropped spans are counted: {}",
        metrics_text(&gw).await
    );
    assert!(gw.wait_for_log("span export failed", Duration::from_secs(5)));
    assert_eq!(collector.got.exports.load(Ordering::SeqCst), exports);
    // Still serving.
    assert_eq!(get(&gw.url("/api/still")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_zero_exports_nothing_but_propagates_an_unsampled_context() {
    let collector = http_collector().await;
    let echo = echo_upstream("echo").await;
    let gw = Gateway::start(&config_no_watch(&format!(
        r#"observability:
{tracing}upstreams:
  echo:
    targets: [{{ address: "{echo}" }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: echo
"#,
        tracing = tracing_yaml(&collector, "http", "0.0"),
        echo = echo.address(),
    )));

    // A new trace is not sampled, but its context still goes upstream, flagged 00.
    let got = get(&gw.url("/api/a")).await;
    assert_eq!(got.status, 200);
    let (_, _, flags) = split_traceparent(&upstream_traceparent(&got));
    assert_eq!(flags, "00");
    // An unsampled caller stays unsampled, in its own trace.
    let trace = "5cf92f3577b34da6a3ce929d0e0e4799";
    let got = call(
        "GET",
        &gw.url("/api/b"),
        &[("traceparent", &format!("00-{trace}-1111111111111111-00"))],
        "",
    )
    .await;
    let (t, s, flags) = split_traceparent(&upstream_traceparent(&got));
    assert_eq!((t.as_str(), flags.as_str()), (trace, "00"));
    assert_ne!(s, "1111111111111111");

    // The exporter sends a batch at most a second after a span is queued.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
    assert_eq!(collector.got.exports.load(Ordering::SeqCst), 0);
    let m = metrics_text(&gw).await;
    assert_eq!(metric(&m, "portcullis_trace_spans_queued_total"), Some(0.0));
    assert_eq!(
        metric(&m, "portcullis_trace_spans_dropped_total"),
        Some(0.0)
    );

    // Parent-based: a caller's sampled decision is followed even at ratio 0.
    let trace = "6df92f3577b34da6a3ce929d0e0e4711";
    let got = call(
        "GET",
        &gw.url("/api/c"),
        &[("traceparent", &format!("00-{trace}-2222222222222222-01"))],
        "",
    )
    .await;
    let (_, _, flags) = split_traceparent(&upstream_traceparent(&got));
    assert_eq!(flags, "01");
    let spans = collector.wait_trace(&unhex(trace), 2).await;
    assert_eq!(spans.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// d. SLO
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_status_and_gauges_follow_the_window() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    // Every 20th answer is a 503: 5 in 100.
    let up = upstream(move |_req| {
        let n = h.fetch_add(1, Ordering::SeqCst);
        async move {
            if n % 20 == 19 {
                status_response(503, "overloaded")
            } else {
                status_response(200, "ok")
            }
        }
    })
    .await;
    let gw = Gateway::start(&config_no_watch(&format!(
        r#"observability:
  slo_window: 1m
upstreams:
  u:
    targets: [{{ address: "{}" }}]
routes:
  - name: checkout
    match: {{ path_prefix: /checkout }}
    upstream: u
    slo: {{ success_rate: 99, p99: 200ms }}
  - name: plain
    match: {{ path_prefix: /plain }}
    upstream: u
"#,
        up.address()
    )));

    // Untouched: no traffic means the objective holds and the budget is whole.
    let slo = admin(&gw, "GET", "/admin/slo", None, "").await;
    assert_eq!(slo.status, 200);
    let slo = slo.json();
    assert_eq!(slo["window_seconds"], 60);
    assert_eq!(slo["routes"][0]["error_budget_remaining"], 1.0, "{slo}");
    assert_eq!(slo["routes"][0]["met"], true);

    let client = h1_client();
    let mut failures = 0;
    for i in 0..100 {
        let got = send(
            &client,
            req("GET", &gw.url(&format!("/checkout/{i}")))
                .body(Full::default())
                .expect("req"),
        )
        .await;
        if got.status == StatusCode::SERVICE_UNAVAILABLE {
            failures += 1;
        }
    }
    assert_eq!(failures, 5);

    let slo = get(&gw.admin_url("/admin/slo")).await.json();
    let routes = slo["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 1, "only routes with an objective: {slo}");
    let r = &routes[0];
    assert_eq!(r["route"], "checkout");
    assert_eq!(r["objective"]["success_rate"], 99.0);
    assert_eq!(r["objective"]["p99_ms"], 200.0);
    assert_eq!(r["measured"]["requests"], 100);
    assert_eq!(r["measured"]["errors"], 5);
    let success = r["measured"]["success_rate"].as_f64().expect("success");
    assert!((success - 95.0).abs() < 1e-9, "{r}");
    let budget = r["error_budget_remaining"].as_f64().expect("budget");
    assert!(
        (budget - (1.0 - 0.05 / 0.01)).abs() < 1e-6,
        "budget {budget}"
    );
    assert_eq!(r["met"], false);
    let p99_ms = r["measured"]["p99_ms"].as_f64().expect("p99");
    assert!(p99_ms > 0.0 && p99_ms <= 200.0, "local p99 {p99_ms}");
    let rate = r["measured"]["rate"].as_f64().expect("rate");
    assert!((rate - 100.0 / 60.0).abs() < 1e-9, "rate {rate}");

    let m = metrics_text(&gw).await;
    let g = |name: &str| {
        metric(&m, &format!("{name}{{route=\"checkout\"}}"))
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
    };
    assert!((g("portcullis_slo_success_ratio") - 0.95).abs() < 1e-9);
    assert!((g("portcullis_slo_objective_success_ratio") - 0.99).abs() < 1e-9);
    assert!((g("portcullis_slo_error_budget_remaining_ratio") - budget).abs() < 1e-9);
    assert!((g("portcullis_slo_objective_p99_seconds") - 0.2).abs() < 1e-9);
    assert!((g("portcullis_slo_p99_seconds") - p99_ms / 1000.0).abs() < 1e-9);
    assert!(
        !m.contains("portcullis_slo_success_ratio{route=\"plain\"}"),
        "no SLO series for routes without an objective"
    );
    promtool_check(&m);
}

// ---------------------------------------------------------------------------------------------
// e. Topology
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_has_the_call_graph_ghost_routes_and_failing_targets() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    // One answer in four is a 500.
    let mixed = upstream(move |req: Request<Incoming>| {
        let probe = req.uri().path() == "/healthz";
        let n = if probe {
            0
        } else {
            h.fetch_add(1, Ordering::SeqCst)
        };
        async move {
            if !probe && n % 4 == 3 {
                status_response(500, "bad")
            } else {
                status_response(200, "ok")
            }
        }
    })
    .await;
    let sick = upstream(|_req| async { status_response(500, "sick") }).await;
    let yaml = config_no_watch(&format!(
        r#"observability:
  slo_window: 1m
  ghost_after: 1s
upstreams:
  mixed:
    targets: [{{ address: "{mixed}" }}]
  sick:
    targets: [{{ address: "{sick}" }}]
    health_check:
      active: {{ path: /healthz, interval: 50ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - name: busy
    match: {{ path_prefix: /busy }}
    upstream: mixed
    slo: {{ success_rate: 99.9 }}
  - name: idle
    match: {{ path_prefix: /idle }}
    upstream: mixed
  - name: to-sick
    match: {{ path_prefix: /sick }}
    upstream: sick
"#,
        mixed = mixed.address(),
        sick = sick.address(),
    ));
    let gw = Gateway::start(&yaml);
    let topology = async || {
        let got = get(&gw.admin_url("/admin/topology")).await;
        assert_eq!(got.status, 200);
        got.json()
    };
    let busy = async || {
        for _ in 0..4 {
            let _ = get(&gw.url("/busy/x")).await;
        }
    };
    busy().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    busy().await;
    let t = topology().await;

    let nodes = t["nodes"].as_array().expect("nodes");
    let node = |id: &str| -> Value {
        nodes
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no node {id}: {t:#}"))
    };
    let edge = |t: &Value, from: &str, to: &str| -> Value {
        t["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .cloned()
            .unwrap_or_else(|| panic!("no edge {from} -> {to}: {t:#}"))
    };
    let l = node("listener:http");
    assert_eq!(l["kind"], "listener");
    assert_eq!(l["address"], gw.http().to_string().as_str());
    let r = node("route:busy");
    assert_eq!(r["kind"], "route");
    assert_eq!(r["ghost"], false);
    assert!(
        (r["rate"].as_f64().expect("rate") - 8.0 / 60.0).abs() < 1e-9,
        "{r}"
    );
    assert!((r["error_rate"].as_f64().expect("error rate") - 0.25).abs() < 1e-9);
    assert!(r["p99_ms"].as_f64().is_some());
    assert_eq!(r["slo"]["success_rate"], 99.9);
    assert_eq!(node("upstream:mixed")["kind"], "upstream");
    let target_id = format!("target:mixed/{}", mixed.address());
    let tn = node(&target_id);
    assert_eq!(tn["kind"], "target");
    assert_eq!(tn["health"], "healthy");
    assert_eq!(tn["circuit"], "closed");
    edge(&t, "listener:http", "route:busy");
    let e = edge(&t, "route:busy", "upstream:mixed");
    assert!(
        (e["rate"].as_f64().expect("rate") - 8.0 / 60.0).abs() < 1e-9,
        "{e}"
    );
    assert!((e["error_rate"].as_f64().expect("error rate") - 0.25).abs() < 1e-9);
    let e = edge(&t, "upstream:mixed", &target_id);
    assert!(e["rate"].is_number() && e["error_rate"].is_number(), "{e}");

    // Ghosts: routes idle longer than ghost_after; the busy one is not.
    let ghosts: Vec<&str> = t["ghost_routes"]
        .as_array()
        .expect("ghost_routes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ghosts.contains(&"idle"), "{ghosts:?}");
    assert!(ghosts.contains(&"to-sick"), "{ghosts:?}");
    assert!(!ghosts.contains(&"busy"), "{ghosts:?}");
    assert_eq!(t["ghost_after_seconds"], 1);

    // A target failing its health checks is listed.
    let sick_target = sick.address();
    assert!(
        eventually(Duration::from_secs(5), async || {
            topology().await["failing_targets"]
                .as_array()
                .is_some_and(|a| {
                    a.iter()
                        .any(|f| f["upstream"] == "sick" && f["target"] == sick_target.as_str())
                })
        })
        .await,
        "{:#}",
        topology().await
    );
    let t = topology().await;
    let failing = t["failing_targets"].as_array().expect("failing");
    assert!(
        !failing.iter().any(|f| f["upstream"] == "mixed"),
        "{failing:?}"
    );
    let sn = t["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == format!("target:sick/{sick_target}"))
        .cloned()
        .expect("sick node");
    assert_eq!(sn["health"], "unhealthy");
    assert_eq!(sn["failing"], true);

    // Target edge rates come from a sampler of the client's counters (every 5 s).
    assert!(
        eventually(Duration::from_secs(15), async || {
            busy().await;
            let t = topology().await;
            edge(&t, "upstream:mixed", &target_id)["rate"]
                .as_f64()
                .is_some_and(|r| r > 0.0)
        })
        .await,
        "{:#}",
        topology().await
    );

    // A route added by a reload is no ghost before it has been idle for `ghost_after`.
    let ghosts = |t: &Value| -> Vec<String> {
        t["ghost_routes"]
            .as_array()
            .expect("ghost_routes")
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect()
    };
    gw.write_config(&yaml.replace(
        "routes:\n",
        "routes:\n  - name: fresh\n    match: { path_prefix: /fresh }\n    upstream: mixed\n",
    ));
    let reload = admin(&gw, "POST", "/admin/reload", None, "").await;
    assert_eq!(
        reload.status,
        200,
        "{}",
        String::from_utf8_lossy(&reload.body)
    );
    let g = ghosts(&topology().await);
    assert!(g.contains(&"idle".to_owned()), "{g:?}");
    assert!(!g.contains(&"fresh".to_owned()), "just added: {g:?}");
    assert!(
        eventually(Duration::from_secs(5), async || ghosts(&topology().await)
            .contains(&"fresh".to_owned()))
        .await
    );
}

// ---------------------------------------------------------------------------------------------
// f. Log filter at runtime
// ---------------------------------------------------------------------------------------------

/// Sends bytes that are not HTTP and waits for the gateway to close the connection: it logs the
/// connection's end with an error at debug level.
async fn garbage_connection(gw: &Gateway) {
    let mut s = tokio::net::TcpStream::connect(gw.http())
        .await
        .expect("connect");
    s.write_all(b"\x16\x03\x01 definitely not http\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
}

fn debug_lines(gw: &Gateway) -> usize {
    gw.log_lines()
        .iter()
        .filter(|l| l.contains("DEBUG"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_changes_at_runtime_behind_the_admin_token() {
    let gw = Gateway::start_env(
        &with_token(&config_no_watch(
            "routes:\n  - name: r\n    match: { path_prefix: / }\n    direct_response: { status: 200 }\n",
        )),
        &[(TOKEN_ENV, TOKEN)],
    );
    // The admin token protects both directions.
    assert_eq!(
        admin(&gw, "GET", "/admin/log_level", None, "").await.status,
        401
    );
    let refused = admin(&gw, "PUT", "/admin/log_level", None, "debug").await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        admin(&gw, "PUT", "/admin/log_level", Some("wrong"), "debug")
            .await
            .status,
        401
    );
    let got = admin(&gw, "GET", "/admin/log_level", Some(TOKEN), "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["filter"], "info");

    // At info, a connection ending in an error is not logged.
    garbage_connection(&gw).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(debug_lines(&gw), 0, "{}", gw.logs());

    let got = admin(&gw, "PUT", "/admin/log_level", Some(TOKEN), "debug").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["filter"], "debug");
    let got = admin(&gw, "GET", "/admin/log_level", Some(TOKEN), "").await;
    assert_eq!(got.json()["filter"], "debug");
    assert!(gw.wait_for_log("log filter changed", Duration::from_secs(3)));
    garbage_connection(&gw).await;
    assert!(
        gw.wait_for_log(
            "client connection ended with an error",
            Duration::from_secs(5)
        ),
        "{}",
        gw.logs()
    );
    assert!(debug_lines(&gw) >= 1);

    // An invalid filter is refused and the current one stays.
    let got = admin(
        &gw,
        "PUT",
        "/admin/log_level",
        Some(TOKEN),
        "portcullis=loudest",
    )
    .await;
    assert_eq!(got.status, 400, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"]["code"], "bad_request");
    // So is an empty one (it would silently turn every log line but errors off).
    for body in ["", "  ", "{}", r#"{"filter": ""}"#] {
        let got = admin(&gw, "PUT", "/admin/log_level", Some(TOKEN), body).await;
        assert_eq!(
            got.status,
            400,
            "body {body:?}: {}",
            String::from_utf8_lossy(&got.body)
        );
    }
    let got = admin(&gw, "GET", "/admin/log_level", Some(TOKEN), "").await;
    assert_eq!(got.json()["filter"], "debug");

    // JSON bodies work too; back at info, debug lines stop.
    let got = admin(
        &gw,
        "PUT",
        "/admin/log_level",
        Some(TOKEN),
        r#"{"filter": "info"}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["filter"], "info");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = debug_lines(&gw);
    garbage_connection(&gw).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(debug_lines(&gw), before, "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_startup_filter_falls_back_to_info_and_says_so() {
    let gw = Gateway::start_env(
        &config_no_watch(
            "routes:\n  - name: r\n    match: { path_prefix: / }\n    direct_response: { status: 200 }\n",
        ),
        &[("PORTCULLIS_LOG", "portcullis=loudest")],
    );
    // The filter in force is reported, not the refused one.
    let got = admin(&gw, "GET", "/admin/log_level", None, "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["filter"], "info");
    assert!(
        gw.wait_for_log("PORTCULLIS_LOG", Duration::from_secs(3)),
        "the refused filter is reported: {}",
        gw.logs()
    );
}
