//! Mirroring: the sampled share, consistent choice by header, methods, bodies copied as they
//! stream (larger ones skipped), and a mirror that hangs or refuses leaving the primary alone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::harness::*;
use crate::tunable;

/// What a mirror upstream saw: (method, `x-portcullis-mirror`, `x-user`, body length).
type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>, usize)>>>;

async fn recording() -> (Upstream, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let up = upstream(move |req: Request<Incoming>| {
        let s = s.clone();
        async move {
            let (parts, body) = req.into_parts();
            let n = body
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            let h = |k: &str| {
                parts
                    .headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            s.lock().expect("lock").push((
                parts.method.to_string(),
                h("x-portcullis-mirror"),
                h("x-user"),
                n,
            ));
            Response::new(Full::new(Bytes::from_static(b"shadow")))
        }
    })
    .await;
    (up, seen)
}

fn mirror_config(primary: &str, shadow: &str, mirrors: &str) -> String {
    config(&format!(
        "upstreams:\n  primary:\n    targets: [{{ address: \"{primary}\" }}]\n  shadow:\n    targets: [{{ address: \"{shadow}\" }}]\nroutes:\n{mirrors}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirrors_the_configured_fraction_marked_and_consistently_by_header() {
    let primary = echo_upstream("primary").await;
    let (shadow, seen) = recording().await;
    let gw = Gateway::start(&mirror_config(
        &primary.address(),
        &shadow.address(),
        "  - name: random\n    match: { path_prefix: /r }\n    upstream: primary\n    mirror: [{ upstream: shadow, fraction: 0.3 }]\n  - name: by-user\n    match: { path_prefix: /u }\n    upstream: primary\n    mirror: [{ upstream: shadow, fraction: 0.5, key: \"header:x-user\" }]\n",
    ));
    let total = 2000;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = gw.url("/r");
            tokio::spawn(async move {
                let c = h1_client();
                for _ in 0..total / 8 {
                    let got =
                        send(&c, Request::get(&url).body(Full::default()).expect("req")).await;
                    assert_eq!(got.status, 200);
                    assert_eq!(got.header("x-upstream"), Some("primary"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
    let settled = eventually(Duration::from_secs(5), async || {
        let m = metrics_text(&gw).await;
        let done = metric_sum(&m, "portcullis_mirror_requests_total", &[]).unwrap_or(0.0);
        done as usize == seen.lock().expect("lock").len() && done > 0.0
    })
    .await;
    assert!(settled);
    let n = seen.lock().expect("lock").len();
    let share = n as f64 / total as f64;
    assert!((share - 0.3).abs() <= 0.03, "mirrored share {share}");
    assert!(
        seen.lock()
            .expect("lock")
            .iter()
            .all(|(m, flag, _, _)| m == "GET" && flag.as_deref() == Some("1"))
    );
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric_sum(
            &m,
            "portcullis_mirror_requests_total",
            &[("outcome", "sent")]
        ),
        Some(n as f64)
    );
    assert_eq!(
        metric_sum(
            &m,
            "portcullis_mirror_requests_total",
            &[("outcome", "dropped")]
        ),
        Some(0.0)
    );

    // By header: a user is always or never mirrored.
    seen.lock().expect("lock").clear();
    let c = h1_client();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        for _ in 0..10 {
            let r = Request::get(gw.url("/u"))
                .header("x-user", user)
                .body(Full::default())
                .expect("req");
            assert_eq!(send(&c, r).await.status, 200);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().expect("lock").clone();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let k = seen.iter().filter(|s| s.2.as_deref() == Some(user)).count();
        assert!(k == 0 || k == 10, "{user} mirrored {k} of 10 times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn methods_and_body_sizes_decide_what_is_mirrored() {
    let primary = echo_upstream("primary").await;
    let (shadow, seen) = recording().await;
    let gw = Gateway::start(&mirror_config(
        &primary.address(),
        &shadow.address(),
        "  - name: reads\n    match: { path_prefix: /reads }\n    upstream: primary\n    mirror: [{ upstream: shadow }]\n  - name: writes\n    match: { path_prefix: /writes }\n    upstream: primary\n    mirror: [{ upstream: shadow, methods: [POST], max_body_bytes: 1000 }]\n",
    ));
    let c = h1_client();
    let post = |path: &str, n: usize| {
        Request::post(gw.url(path))
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .expect("req")
    };
    // Default methods: GET and HEAD only.
    let got = send(&c, post("/reads", 10)).await;
    assert_eq!(got.json()["body_length"], 10);
    assert_eq!(
        send(
            &c,
            Request::get(gw.url("/reads"))
                .body(Full::default())
                .expect("req")
        )
        .await
        .status,
        200
    );
    // Listed POST with a body under the limit: copied as it streamed.
    let got = send(&c, post("/writes", 700)).await;
    assert_eq!(got.json()["body_length"], 700);
    // Over the limit: the primary gets all of it, the mirror nothing.
    let got = send(&c, post("/writes", 5000)).await;
    assert_eq!(got.json()["body_length"], 5000);
    // Chunked (no Content-Length), over the limit while streaming.
    let chunks = futures_util_stream(vec![vec![b'y'; 600], vec![b'y'; 600]]);
    let got = send_streamed(&gw.url("/writes"), chunks).await;
    assert_eq!(got, 1200);
    let ok = eventually(Duration::from_secs(3), async || {
        seen.lock().expect("lock").len() >= 2
    })
    .await;
    assert!(ok);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().any(|s| s.0 == "GET"));
    assert!(seen.iter().any(|s| s.0 == "POST" && s.3 == 700));
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric_sum(
            &m,
            "portcullis_mirror_requests_total",
            &[("outcome", "skipped")]
        ),
        Some(2.0)
    );
}

type Frames = std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>;

/// A body of `chunks` without Content-Length.
fn futures_util_stream(
    chunks: Vec<Vec<u8>>,
) -> http_body_util::StreamBody<futures_util::stream::Iter<Frames>> {
    let frames: Vec<_> = chunks
        .into_iter()
        .map(|c| Ok(hyper::body::Frame::data(Bytes::from(c))))
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

/// POSTs a streamed body; returns the `body_length` the echo upstream saw.
async fn send_streamed<B>(url: &str, body: B) -> u64
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let c: hyper_util::client::legacy::Client<_, B> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let resp = c
        .request(Request::post(url).body(body).expect("req"))
        .await
        .expect("response");
    collect(resp).await.json()["body_length"]
        .as_u64()
        .unwrap_or(0)
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_or_refusing_mirror_does_not_touch_the_primary() {
    let primary = tunable("primary").await;
    primary
        .delay_ms
        .store(30, std::sync::atomic::Ordering::Relaxed);
    let hanging = upstream(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Response::new(Full::new(Bytes::new()))
    })
    .await;
    let refusing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  primary:\n    targets: [{{ address: \"{}\" }}]\n  hanging:\n    targets: [{{ address: \"{}\" }}]\n  refusing:\n    targets: [{{ address: \"{refusing}\" }}]\nroutes:\n  - name: plain\n    match: {{ path_prefix: /plain }}\n    upstream: primary\n  - name: mirrored\n    match: {{ path_prefix: /mirrored }}\n    upstream: primary\n    mirror: [{{ upstream: hanging }}, {{ upstream: refusing }}]\n",
        primary.up.address(),
        hanging.address()
    )));
    let c = h1_client();
    // Interleaved, so both see the same machine load; best of three rounds, as the machine
    // running the tests may be busy with other work.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let (mut plain, mut mirrored) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let path = if i % 2 == 0 { "/plain" } else { "/mirrored" };
            let started = Instant::now();
            let got = send(
                &c,
                Request::get(gw.url(path))
                    .body(Full::default())
                    .expect("req"),
            )
            .await;
            assert_eq!(got.status, 200);
            assert_eq!(got.body, "real");
            if i % 2 == 0 {
                plain.push(started.elapsed());
            } else {
                mirrored.push(started.elapsed());
            }
        }
        let (a, b) = (p99(plain), p99(mirrored));
        rounds.push((a, b));
        if (0.9..=1.1).contains(&(b.as_secs_f64() / a.as_secs_f64())) {
            break;
        }
    }
    let (a, b) = rounds[rounds.len() - 1];
    let ratio = b.as_secs_f64() / a.as_secs_f64();
    assert!(
        (0.9..=1.1).contains(&ratio),
        "p99 plain vs mirrored per round: {rounds:?}"
    );
    // More copies than the queue and the in-flight slots hold while the hanging ones wait.
    for _ in 0..200 {
        let got = send(
            &c,
            Request::get(gw.url("/mirrored"))
                .body(Full::default())
                .expect("req"),
        )
        .await;
        assert_eq!(got.status, 200);
    }
    let m = metrics_text(&gw).await;
    assert!(
        metric_sum(
            &m,
            "portcullis_mirror_requests_total",
            &[("outcome", "failed")]
        )
        .unwrap_or(0.0)
            >= 20.0
    );
    // Copies, half of them hanging: 64 in flight, 256 queued, the rest dropped.
    assert!(
        metric_sum(
            &m,
            "portcullis_mirror_requests_total",
            &[("outcome", "dropped")]
        )
        .unwrap_or(0.0)
            > 0.0
    );
}
