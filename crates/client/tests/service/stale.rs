//! Stale keep-alive connections: a server that closes a pooled connection as the next
//! request arrives (its keep-alive timeout racing ours) costs no failed call when sending
//! again cannot duplicate anything; a POST that reached the server is not sent twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis_client::{Client, ErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support;

/// Answers the first request of each connection, then closes the connection without an
/// answer as soon as the next request arrives. Counts requests that arrived whole.
async fn closes_on_second_request() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let arrived = Arc::new(AtomicUsize::new(0));
    let a = arrived.clone();
    let (addr, _) = support::raw(move |mut s| {
        let arrived = a.clone();
        async move {
            let mut answered = false;
            while let Some(head) = support::read_head(&mut s).await {
                let len: usize = head
                    .to_ascii_lowercase()
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                if s.read_exact(&mut body).await.is_err() {
                    return;
                }
                arrived.fetch_add(1, Ordering::SeqCst);
                if answered {
                    return;
                }
                answered = true;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await;
    (addr, arrived)
}

#[tokio::test]
async fn a_stale_pooled_connection_is_replaced_without_a_failed_call() {
    let (addr, arrived) = closes_on_second_request().await;
    let client = Client::builder().no_retry().build().expect("client");
    let url = format!("http://{addr}/");
    for i in 0..10 {
        let r = client.get(&url).send().await.expect("get");
        assert_eq!(r.text().await.expect("body"), "ok", "GET #{i}");
    }
    let s = client
        .origin_stats(&format!("http://{addr}"))
        .expect("held");
    assert!(s.stale_recovered >= 5, "{s:?}");
    assert_eq!(s.errors.iter().map(|(_, n)| n).sum::<u64>(), 0);

    // A POST whose bytes reached the server is not sent again: the failure is reported.
    let before = arrived.load(Ordering::SeqCst);
    let e = client
        .post(&url)
        .body("{\"order\":1}")
        .send()
        .await
        .expect_err("reset after the POST was written");
    assert_eq!(e.kind(), ErrorKind::Reset, "{e}");
    assert_eq!(arrived.load(Ordering::SeqCst) - before, 1, "sent once");
    // With an Idempotency-Key the server can deduplicate, so it is sent again.
    client.get(&url).send().await.expect("warm a connection");
    let r = client
        .post(&url)
        .body("{\"order\":2}")
        .idempotency_key("order-2")
        .send()
        .await
        .expect("keyed POST");
    assert_eq!(r.status(), 200);
}
