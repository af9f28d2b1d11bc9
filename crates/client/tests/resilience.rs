//! The client against real misbehaving servers on loopback: stale keep-alive connections,
//! retries and their budget, circuit breakers, health checks, connection limits, DNS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use portcullis_client::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// A hyper server whose handler gets the request number (from 1) and the request.
async fn server<F, Fut>(f: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    server_on("127.0.0.1:0", f).await
}

async fn server_on<F, Fut>(bind: &str, f: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let l = TcpListener::bind(bind).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let f = f.clone();
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    let f = f.clone();
                    async move { Ok::<_, Infallible>(f(n, req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

fn status(code: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::from(code.to_string())))
        .expect("response")
}

fn target(addr: SocketAddr) -> TargetConfig {
    TargetConfig {
        host: addr.ip().to_string(),
        port: addr.port(),
        weight: 1,
        zone: None,
    }
}

fn get() -> Request<RequestBody> {
    Request::get("/x")
        .body(RequestBody::Empty)
        .expect("request")
}

async fn status_of(u: &Upstream<RequestBody>, req: Request<RequestBody>) -> Result<u16, ErrorKind> {
    match u.send(req, None).await {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.into_body().collect().await;
            Ok(s)
        }
        Err(e) => Err(e.kind()),
    }
}

fn retry(attempts: u32, statuses: &[u16]) -> RetryPolicy {
    RetryPolicy {
        attempts,
        on: RetryOn {
            connect_failure: true,
            reset: true,
            refused_stream: true,
            timeout: true,
            statuses: statuses.to_vec(),
        },
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

/// A server that answers the first request on each connection, then closes the connection as
/// soon as the next request arrives, without answering: the race a keep-alive timeout on the
/// server side produces.
async fn closes_on_second_request() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut pending = Vec::new();
                let mut answered = false;
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if pending.len() < end + 4 + len {
                            break;
                        }
                        pending.drain(..end + 4 + len);
                        seen.fetch_add(1, Ordering::SeqCst);
                        if answered {
                            // Drop the connection without an answer.
                            return;
                        }
                        answered = true;
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_reset_pooled_connection_is_retried_once_for_idempotent_requests_only() {
    let (addr, seen) = closes_on_second_request().await;
    let u: Upstream<RequestBody> = Upstream::new(UpstreamConfig::new("u", vec![target(addr)]));
    // No retry policy at all: the recovery from a stale connection is built in.
    for i in 0..20 {
        assert_eq!(status_of(&u, get()).await, Ok(200), "GET #{i}");
    }
    let stale = u.targets()[0].stats.stale_recovered.load(Ordering::Relaxed);
    assert!(stale >= 10, "recoveries: {stale}");

    // A POST without Idempotency-Key whose bytes reached the server is not sent again.
    let before = seen.load(Ordering::SeqCst);
    let post = || {
        Request::post("/orders")
            .body(RequestBody::bytes("{\"item\":1}"))
            .expect("request")
    };
    let r = status_of(&u, post()).await;
    assert_eq!(
        r,
        Err(ErrorKind::Reset),
        "a POST on a reset connection must fail, not replay"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst) - before,
        1,
        "the POST reached the server once"
    );

    // With an Idempotency-Key it may be replayed.
    let mut keyed = post();
    keyed
        .headers_mut()
        .insert("idempotency-key", "k-1".parse().expect("value"));
    // Make sure a pooled connection exists so the keyed POST lands on a stale one.
    assert_eq!(status_of(&u, get()).await, Ok(200));
    assert_eq!(status_of(&u, keyed).await, Ok(200));
}

#[tokio::test]
async fn retries_follow_conditions_and_reach_another_target() {
    // One dead target and one live: connect failures move to the live one.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (live, count) = server(|_, _| async { status(200) }).await;
    let mut cfg = UpstreamConfig::new("u", vec![target(dead), target(live)]);
    cfg.retry = Some(retry(2, &[]));
    let u = Upstream::new(cfg);
    for _ in 0..20 {
        assert_eq!(status_of(&u, get()).await, Ok(200));
    }
    assert_eq!(count.load(Ordering::SeqCst), 20);
    let retried: u64 = u.stats().retries().map(|(_, n)| n).sum();
    assert!(
        retried >= 5,
        "about half the requests hit the dead target first: {retried}"
    );

    // Status conditions: 503 twice, then 200.
    let (flaky, count) =
        server(|n, _| async move { if n <= 2 { status(503) } else { status(200) } }).await;
    let mut cfg = UpstreamConfig::new("u", vec![target(flaky)]);
    cfg.retry = Some(retry(3, &[503]));
    let u = Upstream::new(cfg);
    assert_eq!(status_of(&u, get()).await, Ok(200));
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // Out of attempts: the last answer is returned as it is.
    let (always, _) = server(|_, _| async { status(503) }).await;
    let mut cfg = UpstreamConfig::new("u", vec![target(always)]);
    cfg.retry = Some(retry(2, &[503]));
    let u = Upstream::new(cfg);
    assert_eq!(status_of(&u, get()).await, Ok(503));

    // A POST is not retried on a status (it was processed), unless it has an Idempotency-Key.
    let (flaky, count) =
        server(|n, _| async move { if n == 1 { status(503) } else { status(200) } }).await;
    let mut cfg = UpstreamConfig::new("u", vec![target(flaky)]);
    cfg.retry = Some(retry(3, &[503]));
    let u = Upstream::new(cfg);
    let post = Request::post("/")
        .body(RequestBody::bytes("x"))
        .expect("req");
    assert_eq!(status_of(&u, post).await, Ok(503));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let mut post = Request::post("/")
        .body(RequestBody::bytes("x"))
        .expect("req");
    post.headers_mut()
        .insert("idempotency-key", "abc".parse().expect("v"));
    assert_eq!(status_of(&u, post).await, Ok(200));
}

#[tokio::test]
async fn the_retry_budget_caps_a_retry_storm() {
    let (down, count) = server(|_, _| async { status(503) }).await;
    let mut cfg = UpstreamConfig::new("u", vec![target(down)]);
    let mut policy = retry(5, &[503]);
    policy.budget_percent = 20.0;
    policy.min_retries_per_sec = 1;
    cfg.retry = Some(policy);
    let u = Upstream::new(cfg);
    let requests = 500;
    for _ in 0..requests {
        assert_eq!(status_of(&u, get()).await, Ok(503));
    }
    let sent = count.load(Ordering::SeqCst);
    // Without a budget: 5 tries each = 2500. With it: 500 + 20% + the floor (10).
    assert!(sent <= requests + requests / 5 + 10, "sent {sent}");
    assert!(sent > requests, "some retries happen: {sent}");
    assert!(u.stats().budget_exhausted.load(Ordering::Relaxed) > 300);
}

#[tokio::test]
async fn a_failing_target_opens_its_own_breaker_only() {
    let (bad, bad_count) = server(|_, _| async { status(502) }).await;
    let (good, _) = server(|_, _| async { status(200) }).await;
    let mut cfg = UpstreamConfig::new("u", vec![target(bad), target(good)]);
    cfg.breaker = Some(BreakerConfig {
        failure_rate: 0.5,
        window: Duration::from_secs(10),
        min_requests: 5,
        open_for: Duration::from_millis(300),
        half_open_requests: 2,
        slow_call_threshold: None,
        failure_statuses: Default::default(),
    });
    let u = Upstream::new(cfg);
    let mut results = Vec::new();
    for _ in 0..40 {
        results.push(status_of(&u, get()).await);
    }
    let targets = u.targets();
    let (b, g) = if targets[0].authority.ends_with(&bad.port().to_string()) {
        (&targets[0], &targets[1])
    } else {
        (&targets[1], &targets[0])
    };
    assert_eq!(b.circuit(), "open");
    assert_eq!(g.circuit(), "closed");
    // Once open, the bad target gets nothing: about 5 failures, then everything goes to good.
    assert_eq!(bad_count.load(Ordering::SeqCst), 5);
    assert_eq!(results.iter().filter(|r| **r == Ok(502)).count(), 5);
    assert!(results[10..].iter().all(|r| *r == Ok(200)));

    // Half-open after open_for: probes still fail, so it opens again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..6 {
        let _ = status_of(&u, get()).await;
    }
    assert_eq!(b.circuit(), "open");
    assert!(
        b.breaker
            .as_ref()
            .expect("breaker")
            .opened_total
            .load(Ordering::Relaxed)
            >= 2
    );
}

#[tokio::test]
async fn an_open_breaker_on_the_only_target_fails_fast_then_recovers() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let (addr, count) = server(move |_, _| {
        let h = h.clone();
        async move {
            if h.load(Ordering::SeqCst) {
                status(200)
            } else {
                status(503)
            }
        }
    })
    .await;
    let mut cfg = UpstreamConfig::new("u", vec![target(addr)]);
    cfg.breaker = Some(BreakerConfig {
        min_requests: 4,
        open_for: Duration::from_millis(200),
        half_open_requests: 1,
        ..BreakerConfig::default()
    });
    let u = Upstream::new(cfg);
    for _ in 0..4 {
        assert_eq!(status_of(&u, get()).await, Ok(503));
    }
    let t0 = Instant::now();
    assert_eq!(status_of(&u, get()).await, Err(ErrorKind::CircuitOpen));
    assert!(t0.elapsed() < Duration::from_millis(50), "open fails fast");
    assert_eq!(count.load(Ordering::SeqCst), 4);
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        status_of(&u, get()).await,
        Ok(200),
        "the probe goes through"
    );
    assert_eq!(u.targets()[0].circuit(), "closed");
}

#[tokio::test]
async fn active_health_checks_take_targets_out_and_back() {
    let sick = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let s = sick.clone();
    let (a, a_count) = server(move |_, req| {
        let s = s.clone();
        async move {
            if req.uri().path() == "/healthz" && s.load(Ordering::SeqCst) {
                status(500)
            } else {
                status(200)
            }
        }
    })
    .await;
    let (b, _) = server(|_, _| async { status(200) }).await;
    let mut cfg = UpstreamConfig::new("u", vec![target(a), target(b)]);
    cfg.active_health = Some(ActiveHealthConfig {
        path: "/healthz".into(),
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        expected_statuses: vec![],
    });
    let u = Upstream::new(cfg);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ta = u
        .targets()
        .into_iter()
        .find(|t| t.authority.ends_with(&a.port().to_string()))
        .expect("a");
    assert_eq!(ta.health.describe(), "unhealthy");
    let before = a_count.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(status_of(&u, get()).await, Ok(200));
    }
    // Only probes reached a, no traffic.
    let probes_only = a_count.load(Ordering::SeqCst) - before;
    assert!(probes_only < 10, "{probes_only}");
    sick.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ta.health.describe(), "healthy", "it comes back by itself");
}

#[tokio::test]
async fn no_healthy_target_is_an_error_of_its_own() {
    let (a, _) = server(|_, _| async { status(500) }).await;
    let mut cfg = UpstreamConfig::new("u", vec![target(a)]);
    cfg.active_health = Some(ActiveHealthConfig {
        path: "/healthz".into(),
        interval: Duration::from_millis(30),
        timeout: Duration::from_millis(200),
        healthy_threshold: 1,
        unhealthy_threshold: 1,
        expected_statuses: vec![200],
    });
    let u = Upstream::new(cfg);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(status_of(&u, get()).await, Err(ErrorKind::NoHealthyTarget));
}

#[tokio::test]
async fn passive_ejection_respects_max_ejected_percent() {
    let (bad1, _) = server(|_, _| async { status(502) }).await;
    let (bad2, _) = server(|_, _| async { status(502) }).await;
    let (good, _) = server(|_, _| async { status(200) }).await;
    let mut cfg = UpstreamConfig::new("u", vec![target(bad1), target(bad2), target(good)]);
    cfg.passive_health = Some(PassiveHealthConfig {
        consecutive_failures: 2,
        eject_for: Duration::from_secs(30),
        max_ejected_percent: 34.0,
    });
    let u = Upstream::new(cfg);
    for _ in 0..30 {
        let _ = status_of(&u, get()).await;
    }
    let ejected = u.targets().iter().filter(|t| t.health.ejected()).count();
    assert_eq!(
        ejected, 1,
        "only a third of the targets may be ejected at once"
    );
}

#[tokio::test]
async fn a_black_holed_target_does_not_slow_its_healthy_sibling_upstream() {
    // Fill a listener's accept backlog: connects to it hang.
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let hole = s.listen(1).expect("listen");
    let hole_addr = hole.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(hole_addr),
        )
        .await
        {
            Ok(Ok(c)) => fillers.push(c),
            _ => break,
        }
    }
    let mut bad_cfg = UpstreamConfig::new("bad", vec![target(hole_addr)]);
    bad_cfg.timeouts.connect = Duration::from_secs(2);
    let bad: Upstream<RequestBody> = Upstream::new(bad_cfg);
    let (ok_addr, _) = server(|_, _| async { status(200) }).await;
    let good: Upstream<RequestBody> =
        Upstream::new(UpstreamConfig::new("good", vec![target(ok_addr)]));
    // 200 requests stuck connecting to the black hole...
    let mut stuck = Vec::new();
    for _ in 0..200 {
        let b = bad.clone();
        stuck.push(tokio::spawn(async move {
            b.send(get(), None).await.map(|_| ()).map_err(|e| e.kind())
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...while the healthy upstream answers at full speed.
    let t0 = Instant::now();
    for _ in 0..50 {
        assert_eq!(status_of(&good, get()).await, Ok(200));
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "50 healthy requests took {took:?}"
    );
    for s in stuck {
        assert_eq!(s.await.expect("task"), Err(ErrorKind::ConnectTimeout));
    }
    drop(fillers);
}

#[tokio::test]
async fn the_per_target_connection_limit_queues_then_gives_up() {
    let (slow, _) = server(|_, _| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        status(200)
    })
    .await;
    let mut cfg = UpstreamConfig::new("u", vec![target(slow)]);
    cfg.pool.max_connections_per_host = 2;
    cfg.timeouts.connect = Duration::from_millis(100);
    let u: Upstream<RequestBody> = Upstream::new(cfg);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let u = u.clone();
        tasks.push(tokio::spawn(async move { status_of(&u, get()).await }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    assert_eq!(
        results.iter().filter(|r| **r == Ok(200)).count(),
        2,
        "{results:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == Err(ErrorKind::PoolExhausted))
            .count(),
        2
    );
    assert!(
        u.targets()[0]
            .stats
            .open_connections
            .load(Ordering::Relaxed)
            <= 2
    );
}

/// A tiny DNS server: answers A queries for `name` with the current list of addresses, TTL 1.
async fn dns_server(
    name: &'static str,
    answers: Arc<std::sync::Mutex<Vec<[u8; 4]>>>,
) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let q = &buf[..n];
            if n < 12 {
                continue;
            }
            // Question name starts at 12; find its end.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).into_owned());
                i += 1 + len;
            }
            let qend = i + 5; // zero byte, type, class
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let asked = labels.join(".");
            let ips = answers.lock().expect("lock").clone();
            let hit = asked.eq_ignore_ascii_case(name) && qtype == 1;
            let mut resp = Vec::new();
            resp.extend_from_slice(&q[0..2]); // id
            resp.extend_from_slice(&[0x81, 0x80]); // response, recursion available
            resp.extend_from_slice(&[0, 1]); // qdcount
            let an = if hit { ips.len() as u16 } else { 0 };
            resp.extend_from_slice(&an.to_be_bytes());
            resp.extend_from_slice(&[0, 0, 0, 0]);
            resp.extend_from_slice(&q[12..qend]);
            if hit {
                for ip in ips {
                    resp.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
                    resp.extend_from_slice(&ip);
                }
            }
            let _ = sock.send_to(&resp, peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn dns_names_resolve_to_every_address_and_follow_changes() {
    let answers = Arc::new(std::sync::Mutex::new(vec![[127, 0, 0, 2], [127, 0, 0, 3]]));
    let ns = dns_server("users.test", answers.clone()).await;
    // One server per loopback address, same port.
    let (a, _) = server_on("127.0.0.2:0", |_, _| async { status(200) }).await;
    let port = a.port();
    let (b, _) = server_on(&format!("127.0.0.3:{port}"), |_, _| async { status(201) }).await;
    let (c, _) = server_on(&format!("127.0.0.4:{port}"), |_, _| async { status(202) }).await;
    let _ = (b, c);
    let dns = Arc::new(
        Dns::new(DnsConfig {
            nameservers: vec![ns],
            timeout: Duration::from_millis(500),
            stale_for: Duration::from_secs(60),
            min_refresh: Duration::from_millis(200),
            max_refresh: Duration::from_millis(200),
        })
        .expect("resolver"),
    );
    let mut cfg = UpstreamConfig::new(
        "users",
        vec![TargetConfig {
            host: "users.test".into(),
            port,
            weight: 1,
            zone: None,
        }],
    );
    cfg.dns = Some(dns.clone());
    let u = Upstream::new(cfg);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(status_of(&u, get()).await.expect("answer"));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![200, 201],
        "both addresses are used"
    );
    // The answer changes: once its TTL (1 s) has run out, the refresh moves traffic.
    *answers.lock().expect("lock") = vec![[127, 0, 0, 4]];
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(status_of(&u, get()).await, Ok(202));
    assert_eq!(u.targets().len(), 1);
    // The DNS server goes quiet: the last good answer keeps serving.
    *answers.lock().expect("lock") = vec![];
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(status_of(&u, get()).await, Ok(202));
    assert!(dns.failures.load(Ordering::Relaxed) > 0);
}

/// A body that sends `chunks` chunks of 1 KiB, one every `every`.
fn trickle(chunks: usize, every: Duration) -> RequestBody {
    let s = futures_util::stream::unfold(0, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(every).await;
        let frame = hyper::body::Frame::data(Bytes::from(vec![b'u'; 1024]));
        Some((Ok::<_, BoxError>(frame), i + 1))
    });
    RequestBody::Stream(http_body_util::StreamBody::new(s).boxed_unsync())
}

#[tokio::test]
async fn a_long_upload_is_not_a_response_header_timeout_but_a_silent_upstream_is() {
    // Reads the whole body, then answers with its length.
    let (reader, _) = server(|_, req: Request<Incoming>| async move {
        let n = req
            .into_body()
            .collect()
            .await
            .map_or(0, |b| b.to_bytes().len());
        Response::new(Full::new(Bytes::from(n.to_string())))
    })
    .await;
    let mut cfg = UpstreamConfig::new("up", vec![target(reader)]);
    cfg.timeouts.response_header = Duration::from_millis(300);
    let up: Upstream<RequestBody> = Upstream::new(cfg);
    // 12 chunks 100 ms apart: 1.2 s of upload, four times the response header timeout.
    let started = Instant::now();
    let resp = up
        .send(
            Request::post("/upload")
                .body(trickle(12, Duration::from_millis(100)))
                .expect("request"),
            None,
        )
        .await
        .expect("a streaming upload is not cut by the response header timeout");
    assert!(started.elapsed() >= Duration::from_millis(1200));
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, "12288");

    // An upload that stalls for longer than the timeout is cut...
    let started = Instant::now();
    let err = up
        .send(
            Request::post("/upload")
                .body(trickle(2, Duration::from_millis(700)))
                .expect("request"),
            None,
        )
        .await
        .expect_err("a stalled upload");
    assert_eq!(err.kind(), ErrorKind::ResponseHeaderTimeout);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );

    // ...and so is an upstream that takes the whole body and then says nothing, counted from
    // the body's end.
    let (silent, _) = server(|_, req: Request<Incoming>| async move {
        let _ = req.into_body().collect().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        status(200)
    })
    .await;
    let mut cfg = UpstreamConfig::new("silent", vec![target(silent)]);
    cfg.timeouts.response_header = Duration::from_millis(300);
    let up: Upstream<RequestBody> = Upstream::new(cfg);
    let started = Instant::now();
    let err = up
        .send(
            Request::post("/upload")
                .body(trickle(5, Duration::from_millis(100)))
                .expect("request"),
            None,
        )
        .await
        .expect_err("a silent upstream");
    assert_eq!(err.kind(), ErrorKind::ResponseHeaderTimeout);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_millis(1500),
        "500 ms of upload, then 300 ms of silence: {took:?}"
    );
}
