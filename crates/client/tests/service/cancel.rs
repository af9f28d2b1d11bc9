//! Dropping the future or the body cancels the call: the connection is closed, never put
//! back in the pool half-read.

use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis_client::Client;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::support;

/// Answers each request with a head and 1 KB of a 100 KB body, then waits: reports on `tx`
/// whether the client closed the connection.
async fn stalls_mid_body(tx: mpsc::UnboundedSender<bool>) -> std::net::SocketAddr {
    support::raw(move |mut s| {
        let tx = tx.clone();
        async move {
            if support::read_head(&mut s).await.is_some() {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    .await;
                let _ = s.write_all(&[b'x'; 1000]).await;
                let closed = support::closed_by_peer(&mut s, Duration::from_secs(5)).await;
                let _ = tx.send(closed);
            }
        }
    })
    .await
    .0
}

#[tokio::test]
async fn dropping_a_body_mid_read_closes_its_connection() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let addr = stalls_mid_body(tx).await;
    let client = Client::new();
    let url = format!("http://{addr}/big");
    let mut resp = client.get(&url).send().await.expect("head");
    let first = resp.chunk().await.expect("chunk").expect("data");
    assert!(!first.is_empty());
    drop(resp);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), rx.recv()).await,
        Ok(Some(true)),
        "the half-read connection was closed"
    );
    // The next call cannot get that connection: it makes a new one.
    let mut resp = client.get(&url).send().await.expect("head");
    resp.chunk().await.expect("chunk");
    let s = client
        .origin_stats(&format!("http://{addr}"))
        .expect("held");
    assert_eq!((s.connects, s.reused), (2, 0));
    assert_eq!(s.idle_connections, 0);
    drop(resp);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), rx.recv()).await,
        Ok(Some(true))
    );
}

#[tokio::test]
async fn dropping_the_future_before_the_head_cancels_the_request() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (addr, accepted) = support::raw(move |mut s| {
        let tx = tx.clone();
        async move {
            if support::read_head(&mut s).await.is_some() {
                let closed = support::closed_by_peer(&mut s, Duration::from_secs(5)).await;
                let _ = tx.send(closed);
            }
        }
    })
    .await;
    let client = Client::new();
    let call = client.get(format!("http://{addr}/slow")).send();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err(),
        "still waiting for the head"
    );
    // The future is gone: so is the request and its connection.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), rx.recv()).await,
        Ok(Some(true))
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let s = client
        .origin_stats(&format!("http://{addr}"))
        .expect("held");
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.idle_connections, 0);
}

#[tokio::test]
async fn a_body_read_to_the_end_returns_its_connection() {
    let srv = support::server(|_| async { support::text(200, &"z".repeat(10_000)) }).await;
    let client = Client::new();
    for _ in 0..5 {
        let body = client
            .get(srv.url("/"))
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("body");
        assert_eq!(body.len(), 10_000);
    }
    let s = client.origin_stats(&srv.origin()).expect("held");
    assert_eq!((s.connects, s.reused, s.idle_connections), (1, 4, 1));
}
