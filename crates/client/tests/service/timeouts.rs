//! Defaults that fire: connect 5 s (DNS included), response header 30 s, read idle 30 s —
//! on a paused clock, so the test takes no such time — and the whole-call deadline.

use std::time::Duration;

use portcullis_client::service::DEFAULT_TIMEOUTS;
use portcullis_client::{Client, DnsConfig, ErrorKind};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::support;

async fn silent_after_head(head_and_some: &'static [u8]) -> std::net::SocketAddr {
    support::raw(move |mut s| async move {
        if support::read_head(&mut s).await.is_some() {
            let _ = s.write_all(head_and_some).await;
            // Then say nothing, and keep the connection open.
            let _ = support::closed_by_peer(&mut s, Duration::from_secs(3600)).await;
        }
    })
    .await
    .0
}

#[tokio::test(start_paused = true)]
async fn the_default_response_header_timeout_fires_at_30s() {
    assert_eq!(DEFAULT_TIMEOUTS.response_header, Duration::from_secs(30));
    let addr = silent_after_head(b"").await;
    let client = Client::new();
    let t0 = Instant::now();
    let e = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .expect_err("silent");
    assert_eq!(e.kind(), ErrorKind::ResponseHeaderTimeout, "{e}");
    assert_eq!(e.timeout(), Some(Duration::from_secs(30)));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(31),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_read_idle_timeout_fires_at_30s() {
    assert_eq!(DEFAULT_TIMEOUTS.read_idle, Duration::from_secs(30));
    let addr = silent_after_head(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
    let client = Client::new();
    let mut resp = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .expect("head");
    assert_eq!(
        &resp.chunk().await.expect("first bytes").expect("data")[..],
        b"abc"
    );
    let t0 = Instant::now();
    let e = resp.chunk().await.expect_err("stalled");
    assert_eq!(e.kind(), ErrorKind::ReadIdleTimeout, "{e}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(31),
        "{took:?}"
    );
    let s = client
        .origin_stats(&format!("http://{addr}"))
        .expect("held");
    assert_eq!(s.errors_of(ErrorKind::ReadIdleTimeout), 1);
}

#[tokio::test(start_paused = true)]
async fn the_default_connect_timeout_fires_at_5s() {
    assert_eq!(DEFAULT_TIMEOUTS.connect, Duration::from_secs(5));
    let hole = support::black_hole().await;
    let client = Client::builder().no_retry().build().expect("client");
    let t0 = Instant::now();
    let e = client
        .get(format!("http://{}/", hole.addr))
        .send()
        .await
        .expect_err("black hole");
    assert_eq!(e.kind(), ErrorKind::ConnectTimeout, "{e}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_dns_server_counts_against_the_connect_timeout() {
    let dns = support::dns_server("api.test", [127, 0, 0, 1], true).await;
    let client = Client::builder()
        .no_retry()
        .dns(DnsConfig {
            nameservers: vec![dns],
            timeout: DEFAULT_TIMEOUTS.connect,
            ..DnsConfig::default()
        })
        .build()
        .expect("client");
    let t0 = Instant::now();
    let e = client
        .get("http://api.test:1/")
        .send()
        .await
        .expect_err("no answer");
    assert_eq!(e.kind(), ErrorKind::ConnectTimeout, "{e}");
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(5100),
        "DNS and connect within 5 s: {took:?}"
    );
}

#[tokio::test]
async fn names_resolve_and_an_unknown_name_is_a_dns_error() {
    let srv =
        support::server(
            |s| async move { support::text(200, s.headers["host"].to_str().unwrap_or("")) },
        )
        .await;
    let dns = support::dns_server("api.test", [127, 0, 0, 1], false).await;
    let client = Client::builder()
        .dns(DnsConfig {
            nameservers: vec![dns],
            ..DnsConfig::default()
        })
        .build()
        .expect("client");
    let url = format!("http://api.test:{}/", srv.addr.port());
    let body = client
        .get(&url)
        .send()
        .await
        .expect("resolved")
        .text()
        .await
        .expect("body");
    assert_eq!(body, format!("api.test:{}", srv.addr.port()));
    let s = client
        .origin_stats(&format!("http://api.test:{}", srv.addr.port()))
        .expect("held");
    assert_eq!(s.addresses, [srv.addr.to_string()]);
    let e = client
        .get(format!("http://nowhere.test:{}/", srv.addr.port()))
        .send()
        .await
        .expect_err("unknown");
    assert_eq!(e.kind(), ErrorKind::Dns, "{e}");
}

#[tokio::test]
async fn the_call_deadline_covers_the_head_and_the_body() {
    let slow_head = support::server(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        support::text(200, "late")
    })
    .await;
    let client = Client::new();
    let t0 = std::time::Instant::now();
    let e = client
        .get(slow_head.url("/"))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .expect_err("deadline");
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(1));

    // A body that trickles (never idle for 30 s) is still cut by the call's deadline.
    let addr = support::raw(|mut s| async move {
        if support::read_head(&mut s).await.is_some() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                .await;
            for _ in 0..1000 {
                if s.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await
    .0;
    let client = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let resp = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .expect("head");
    let e = resp.bytes().await.expect_err("deadline");
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
}
