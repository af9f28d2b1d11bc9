//! The cost of the client's own machinery: a balancer pick, and a whole request through the
//! client to a loopback server compared with the same request on a bare hyper connection.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_client::{
    Balancer, BreakerConfig, PassiveHealthConfig, Policy, RequestBody, RetryPolicy, TargetConfig,
    Upstream, UpstreamConfig, hash_key,
};

fn picks(c: &mut Criterion) {
    let weights: Vec<u32> = (1..=16).collect();
    let names: Vec<String> = (0..16).map(|i| format!("10.0.0.{i}:80")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut g = c.benchmark_group("balancer_pick_16_targets");
    for policy in [
        Policy::RoundRobin,
        Policy::Random,
        Policy::LeastRequest,
        Policy::ConsistentHash,
    ] {
        let b = Balancer::new(policy, &weights, &refs);
        let key = hash_key(b"user-42");
        g.bench_function(format!("{policy:?}"), |bench| {
            bench.iter(|| black_box(b.pick(Some(key), |_| true, |i| i)))
        });
    }
    g.finish();
}

fn requests(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    });
    let target = TargetConfig {
        host: "127.0.0.1".into(),
        port: addr.port(),
        weight: 1,
        zone: None,
    };
    let plain: Upstream<RequestBody> =
        rt.block_on(async { Upstream::new(UpstreamConfig::new("plain", vec![target.clone()])) });
    let resilient: Upstream<RequestBody> = rt.block_on(async {
        let mut cfg = UpstreamConfig::new("resilient", vec![target.clone()]);
        cfg.retry = Some(RetryPolicy::default());
        cfg.breaker = Some(BreakerConfig::default());
        cfg.passive_health = Some(PassiveHealthConfig {
            consecutive_failures: 5,
            eject_for: Duration::from_secs(30),
            max_ejected_percent: 50.0,
        });
        Upstream::new(cfg)
    });
    let mut sender = rt.block_on(async {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (tx, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        tx
    });
    let _ = TokioExecutor::new();
    let mut g = c.benchmark_group("request_loopback");
    g.bench_function("bare_hyper_connection", |b| {
        b.iter(|| {
            rt.block_on(async {
                sender.ready().await.expect("ready");
                let resp = sender
                    .send_request(
                        Request::get("/")
                            .header("host", "x")
                            .body(Empty::new())
                            .expect("req"),
                    )
                    .await
                    .expect("response");
                black_box(resp.into_body().collect().await.expect("body"));
            })
        })
    });
    for (name, u) in [("client_plain", &plain), ("client_resilient", &resilient)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let req = Request::get("/").body(RequestBody::Empty).expect("req");
                    let resp = u.send(req, None).await.expect("response");
                    black_box(resp.into_body().collect().await.expect("body"));
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, picks, requests);
criterion_main!(benches);
