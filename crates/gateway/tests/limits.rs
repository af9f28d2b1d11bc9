//! End-to-end: client connection limits — slow request heads (slowloris), idle keep-alive
//! connections, the connection cap, and many concurrent HTTP/2 streams on one connection.

#[path = "e2e/harness.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use harness::*;

/// A config whose `http` listener has `limits: { LIMITS }`, with a route `/` to `upstream`.
fn limited(limits: &str, upstream: &str) -> String {
    let yaml = config(&format!(
        "upstreams:\n  u:\n    targets: [{{ address: \"{upstream}\" }}]\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: u\n"
    ));
    let at = "    address: 127.0.0.1:0\nadmin";
    assert!(yaml.contains(at));
    yaml.replace(
        at,
        &format!("    address: 127.0.0.1:0\n    limits: {{ {limits} }}\nadmin"),
    )
}

/// An HTTP/1.1 client connection of its own; the task ends when the connection closes.
async fn h1_conn(
    addr: std::net::SocketAddr,
) -> (http1::SendRequest<Full<Bytes>>, JoinHandle<Instant>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    (sender, task)
}

fn get_req(addr: std::net::SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", addr.to_string())
        .body(Full::default())
        .expect("request")
}

async fn h1_get(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    addr: std::net::SocketAddr,
    path: &str,
) -> Got {
    sender.ready().await.expect("connection ready");
    let resp = sender
        .send_request(get_req(addr, path))
        .await
        .expect("request");
    collect(resp).await
}

/// Reads until the peer closes (EOF or reset); returns when, and what was read.
async fn read_until_closed(
    rd: &mut (impl AsyncReadExt + Unpin),
    max: Duration,
) -> (Instant, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + max;
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {max:?}; read: {}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (Instant::now(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off() {
    let up = echo_upstream("u").await;
    let gw = Gateway::start(&limited("header_read_timeout: 500ms", &up.address()));
    let addr = gw.http();

    // A partial head, then silence.
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial
        .write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .expect("write");
    let sent = Instant::now();

    // A head trickled one byte every 100 ms: always active, never complete.
    let trickle = TcpStream::connect(addr).await.expect("connect");
    let (mut trd, mut twr) = trickle.into_split();
    let trickle_start = Instant::now();
    let writer = tokio::spawn(async move {
        let head = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: ";
        if twr.write_all(head).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if twr.write_all(b"a").await.is_err() {
                return;
            }
        }
    });

    // Meanwhile a complete request is answered.
    let got = get(&gw.url("/ok")).await;
    assert_eq!(got.status, 200);

    let (closed, data) = read_until_closed(&mut partial, Duration::from_secs(4)).await;
    let took = closed - sent;
    eprintln!("partial head closed after {took:?}");
    assert!(
        took >= Duration::from_millis(400) && took <= Duration::from_secs(2),
        "partial head closed after {took:?}"
    );
    assert!(
        !String::from_utf8_lossy(&data).contains(" 200 "),
        "{}",
        String::from_utf8_lossy(&data)
    );

    let (closed, _) = read_until_closed(&mut trd, Duration::from_secs(4)).await;
    let took = closed - trickle_start;
    writer.abort();
    eprintln!("trickled head closed after {took:?}");
    assert!(
        took >= Duration::from_millis(400) && took <= Duration::from_secs(2),
        "trickled head closed after {took:?}"
    );

    // A keep-alive connection idle between requests is not a slow head: it outlives the
    // header timeout and serves its next request.
    let (mut sender, conn) = h1_conn(addr).await;
    assert_eq!(h1_get(&mut sender, addr, "/one").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !conn.is_finished(),
        "idle keep-alive cut by the header timeout"
    );
    assert_eq!(h1_get(&mut sender, addr, "/two").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_but_slow_requests_do_not() {
    let slow_hits = Arc::new(AtomicUsize::new(0));
    let hits = slow_hits.clone();
    let up = upstream(move |req: Request<hyper::body::Incoming>| {
        let hits = hits.clone();
        async move {
            if req.uri().path() == "/slow" {
                hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            Response::new(Full::new(Bytes::from_static(b"done")))
        }
    })
    .await;
    let gw = Gateway::start(&limited(
        "idle_timeout: 600ms, header_read_timeout: 5s",
        &up.address(),
    ));
    let addr = gw.http();

    // Idle after one complete request: closed after about the idle timeout.
    let (mut sender, conn) = h1_conn(addr).await;
    let got = h1_get(&mut sender, addr, "/fast").await;
    assert_eq!(got.status, 200);
    let idle_from = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(4), conn)
        .await
        .expect("idle connection still open after 4s")
        .expect("conn task");
    let took = closed - idle_from;
    eprintln!("idle h1 connection closed after {took:?}");
    assert!(
        took >= Duration::from_millis(450) && took <= Duration::from_secs(2),
        "idle connection closed after {took:?}"
    );

    // A connection with a slow request in flight is not idle.
    let (mut sender, conn) = h1_conn(addr).await;
    let started = Instant::now();
    let got = h1_get(&mut sender, addr, "/slow").await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"done");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(slow_hits.load(Ordering::SeqCst), 1);
    // And it is still usable afterwards, then closes when idle.
    assert_eq!(h1_get(&mut sender, addr, "/fast").await.status, 200);
    tokio::time::timeout(Duration::from_secs(4), conn)
        .await
        .expect("closed once idle")
        .expect("conn task");

    // The same for a slow request over HTTP/2.
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut h2, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    let conn = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    let started = Instant::now();
    let resp = h2
        .send_request(get_req(addr, "/slow"))
        .await
        .expect("h2 slow request not cut");
    let got = collect(resp).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"done");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(slow_hits.load(Ordering::SeqCst), 2);
    // Then, idle with the client still holding it, the server closes it (GOAWAY).
    let idle_from = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(4), conn)
        .await
        .expect("idle h2c connection still open after 4s")
        .expect("conn task");
    let took = closed - idle_from;
    eprintln!("idle h2c connection closed after {took:?}");
    assert!(
        took >= Duration::from_millis(450) && took <= Duration::from_secs(2),
        "idle h2c connection closed after {took:?}"
    );
    drop(h2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_queues_the_next_client() {
    let up = echo_upstream("u").await;
    let gw = Gateway::start(&limited("max_connections: 2", &up.address()));
    let addr = gw.http();

    let (mut first, first_conn) = h1_conn(addr).await;
    let (mut second, second_conn) = h1_conn(addr).await;
    assert_eq!(h1_get(&mut first, addr, "/1").await.status, 200);
    assert_eq!(h1_get(&mut second, addr, "/2").await.status, 200);

    // The third connection is accepted by the kernel, but not served while two are open.
    let (mut third, _third_conn) = h1_conn(addr).await;
    let queued = tokio::spawn(async move {
        let got = h1_get(&mut third, addr, "/3").await;
        (Instant::now(), got)
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !queued.is_finished(),
        "a third connection was served over max_connections: 2"
    );
    // Both open connections still work.
    assert_eq!(h1_get(&mut first, addr, "/1b").await.status, 200);
    assert_eq!(h1_get(&mut second, addr, "/2b").await.status, 200);
    assert!(!queued.is_finished());

    // Closing one lets the third in.
    let closing = Instant::now();
    drop(first);
    tokio::time::timeout(Duration::from_secs(2), first_conn)
        .await
        .expect("first connection closes")
        .expect("conn task");
    let (answered, got) = tokio::time::timeout(Duration::from_secs(3), queued)
        .await
        .expect("the queued connection is served once a slot frees")
        .expect("queued task");
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["path"], "/3");
    assert!(answered >= closing);
    assert!(!second_conn.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_max_connections_on_a_listener_that_stays() {
    let up = echo_upstream("u").await;
    let gw = Gateway::start(&limited("max_connections: 1", &up.address()));
    let addr = gw.http();

    let (mut first, _first_conn) = h1_conn(addr).await;
    assert_eq!(h1_get(&mut first, addr, "/1").await.status, 200);
    let (mut second, _second_conn) = h1_conn(addr).await;
    let queued = tokio::spawn(async move {
        let got = h1_get(&mut second, addr, "/2").await;
        (got, second)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!queued.is_finished(), "served over max_connections: 1");

    // Raising the limit lets the waiting client in while the first stays open.
    gw.write_config(&limited("max_connections: 2", &up.address()));
    let (got, _second) = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .expect("the queued connection is served after the reload")
        .expect("queued task");
    assert_eq!(got.status, 200);
    assert_eq!(gw.http(), addr, "the listener stayed on its socket");

    // Lowering it again holds new clients back until open connections drop below it.
    gw.write_config(&limited("max_connections: 1", &up.address()));
    let reloads = || {
        gw.log_lines()
            .iter()
            .filter(|l| l.contains("config reloaded"))
            .count()
    };
    assert!(eventually(Duration::from_secs(5), async || reloads() >= 2).await);
    let (mut third, _third_conn) = h1_conn(addr).await;
    let queued = tokio::spawn(async move { h1_get(&mut third, addr, "/3").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!queued.is_finished(), "served over the lowered limit");
    assert_eq!(h1_get(&mut first, addr, "/1b").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_h2c_streams_on_one_connection() {
    let up = upstream(|req: Request<hyper::body::Incoming>| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Response::new(Full::new(Bytes::from(req.uri().path().to_owned())))
    })
    .await;
    let gw = Gateway::start(&limited("max_connections: 4", &up.address()));
    let addr = gw.http();

    let stream = TcpStream::connect(addr).await.expect("connect");
    let (h2, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let mut h2 = h2.clone();
        set.spawn(async move {
            let resp = h2
                .send_request(get_req(addr, &format!("/s/{i}")))
                .await
                .map_err(|e| format!("stream {i}: {e}"))?;
            let got = collect(resp).await;
            if got.status != 200 || got.body != format!("/s/{i}") {
                return Err(format!(
                    "stream {i}: {} {}",
                    got.status,
                    String::from_utf8_lossy(&got.body)
                ));
            }
            Ok::<_, String>(())
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.expect("stream task") {
            failures.push(e);
        }
    }
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    // 100 x 200 ms one after another would take 20 s: the streams ran concurrently.
    assert!(took < Duration::from_secs(5), "100 streams took {took:?}");
    let m = metrics_text(&gw).await;
    let accepted = m
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_connections_total{listener=\"http\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(accepted, Some(1.0), "{m}");
    let r2xx = metric_sum(
        &m,
        "portcullis_requests_total",
        &[("route", "r"), ("status_class", "2xx")],
    );
    assert_eq!(r2xx, Some(100.0));
}
