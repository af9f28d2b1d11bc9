//! Upstream calls: pooling and keep-alive, balancing, h2c, and the failure mapping of connect
//! and response timeouts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::*;

fn one_upstream(address: &str, extra: &str) -> String {
    config(&format!(
        "upstreams:\n  u:\n    targets: [{{ address: \"{address}\" }}]\n{extra}routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: u\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_reused() {
    let up = echo_upstream("u").await;
    let gw = Gateway::start(&one_upstream(&up.address(), ""));
    let client = h1_client();
    for _ in 0..20 {
        let got = send(
            &client,
            req("GET", &gw.url("/x"))
                .body(Full::default())
                .expect("req"),
        )
        .await;
        assert_eq!(got.status, 200);
    }
    assert_eq!(
        up.connection_count(),
        1,
        "20 sequential requests must share one upstream connection"
    );
    let ups = get(&gw.admin_url("/admin/upstreams")).await.json();
    let t = &ups[0]["targets"][0];
    assert_eq!(t["pool"]["connects"], 1);
    assert_eq!(t["pool"]["reused"], 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_limits_and_idle_timeout_are_applied() {
    let up = echo_upstream("u").await;
    let gw = Gateway::start(&one_upstream(
        &up.address(),
        "    pool: { max_idle_per_host: 0 }\n",
    ));
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    assert_eq!(
        up.connection_count(),
        5,
        "max_idle_per_host: 0 keeps no connection"
    );

    let up = echo_upstream("u").await;
    let gw = Gateway::start(&one_upstream(
        &up.address(),
        "    pool: { idle_timeout: 200ms }\n",
    ));
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    assert_eq!(up.connection_count(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    assert_eq!(
        up.connection_count(),
        2,
        "an expired idle connection is not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_across_targets() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  u:\n    targets:\n      - {{ address: \"{}\", weight: 2 }}\n      - {{ address: \"{}\" }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: u\n",
        a.address(),
        b.address()
    )));
    let client = h1_client();
    let (mut na, mut nb) = (0, 0);
    for _ in 0..300 {
        let got = send(
            &client,
            req("GET", &gw.url("/")).body(Full::default()).expect("req"),
        )
        .await;
        match got.header("x-upstream") {
            Some("a") => na += 1,
            Some("b") => nb += 1,
            other => panic!("unexpected upstream {other:?}"),
        }
    }
    assert_eq!((na, nb), (200, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstreams_multiplex_one_connection() {
    let up = echo_upstream("u").await;
    let gw = Gateway::start(&one_upstream(&up.address(), "    protocol: h2c\n"));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = gw.url("/h2");
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    for t in tasks {
        let got = t.await.expect("task");
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["version"], "HTTP/2.0");
    }
    assert_eq!(up.connection_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_a_502() {
    // Bind then drop: nothing listens on this port any more.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let gw = Gateway::start(&one_upstream(&addr.to_string(), ""));
    let got = get(&gw.url("/x")).await;
    assert_eq!(got.status, 502);
    let v = got.json();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("connect_refused")
    );
    assert!(
        gw.wait_for_log("reason=\"connect_refused\"", Duration::from_secs(2))
            || gw.wait_for_log("reason=connect_refused", Duration::from_secs(1)),
        "{}",
        gw.logs()
    );
}

/// A loopback address whose accept backlog is full: connects to it hang (never aimed at
/// anything but 127.0.0.1). Keep the returned listener and fillers alive.
async fn black_hole() -> (SocketAddr, TcpListener, Vec<std::net::TcpStream>) {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener = s.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..64 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    (addr, listener, fillers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_a_504() {
    let (addr, _listener, _fillers) = black_hole().await;
    let gw = Gateway::start(&one_upstream(
        &addr.to_string(),
        "    timeouts: { connect: 300ms }\n",
    ));
    let start = Instant::now();
    let got = get(&gw.url("/x")).await;
    let took = start.elapsed();
    assert_eq!(got.status, 504, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"]["code"], "upstream_timeout");
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("connect_timeout")
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_is_a_504_and_the_route_deadline_too() {
    let up = upstream(|_req| async {
        std::future::pending::<()>().await;
        Response::new(Full::new(Bytes::new()))
    })
    .await;
    let gw = Gateway::start(&one_upstream(
        &up.address(),
        "    timeouts: { response_header: 300ms }\n",
    ));
    let start = Instant::now();
    let got = get(&gw.url("/x")).await;
    assert_eq!(got.status, 504);
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("response_header_timeout")
    );
    assert!(start.elapsed() < Duration::from_secs(3));

    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  u:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: u\n    timeout: 250ms\n",
        up.address()
    )));
    let got = get(&gw.url("/x")).await;
    assert_eq!(got.status, 504);
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("deadline_exceeded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_is_cut_after_read_idle() {
    let up = upstream(|_req| async {
        let first = futures_util::stream::iter(vec![Ok::<_, Infallible>(Frame::data(
            Bytes::from_static(b"partial"),
        ))]);
        let stalled = futures_util::stream::pending();
        let body = StreamBody::new(futures_util::StreamExt::chain(first, stalled));
        Response::builder()
            .header("content-length", "100")
            .body(body)
            .expect("resp")
    })
    .await;
    let gw = Gateway::start(&one_upstream(
        &up.address(),
        "    timeouts: { read_idle: 400ms }\n",
    ));
    let start = Instant::now();
    let (code, out, _) = curl(&["-w", "\n%{http_code}", &gw.url("/x")]);
    let took = start.elapsed();
    assert_ne!(code, 0, "the transfer must fail, not hang: {out}");
    assert!(out.starts_with("partial"), "{out}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let metrics = get(&gw.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines()
            .any(|l| l.contains("kind=\"read_idle_timeout\"") && l.ends_with(" 1")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_upstream_closed_while_idle_cause_no_errors() {
    // A server that closes every keep-alive connection 100ms after its response, as load
    // balancers and nginx do with their keep-alive timeouts.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    let gw = Gateway::start(&one_upstream(&addr.to_string(), ""));
    for _ in 0..10 {
        let got = get(&gw.url("/x")).await;
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
