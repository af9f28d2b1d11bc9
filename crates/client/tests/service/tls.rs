//! HTTPS: verified by default, HTTP/2 by ALPN with the downgrade counted, and https to http
//! redirects refused unless allowed.

use http::Version;
use portcullis_client::{Client, ErrorKind, Redirects};

use crate::support::{self, redirect, text};

#[tokio::test]
async fn https_is_verified_and_h2_is_negotiated_or_the_downgrade_counted() {
    let h2 = support::certs(&[b"h2", b"http/1.1"]);
    let srv = support::tls_server(h2.server.clone(), |_| async { text(200, "tls") }).await;
    let client = Client::builder()
        .ca_pem(h2.ca_pem.clone())
        .build()
        .expect("client");
    for _ in 0..3 {
        let resp = client.get(srv.url("/")).send().await.expect("https");
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.text().await.expect("body"), "tls");
    }
    let s = client.origin_stats(&srv.origin()).expect("held");
    assert_eq!((s.protocol, s.h2_downgrades, s.connects), ("h2", 0, 1));

    // A server that only speaks HTTP/1.1: it works, and the downgrade is counted.
    let h1 = support::tls_server(support::certs(&[b"http/1.1"]).server, |_| async {
        text(200, "h1")
    })
    .await;
    let other_ca = Client::builder()
        .ca_pem(h2.ca_pem.clone())
        .build()
        .expect("client");
    // Its certificate comes from another CA: refused.
    let e = other_ca
        .get(h1.url("/"))
        .send()
        .await
        .expect_err("unknown CA");
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert!(e.to_string().contains("invalid peer certificate"), "{e}");

    let certs = support::certs(&[b"http/1.1"]);
    let h1 = support::tls_server(certs.server.clone(), |_| async { text(200, "h1") }).await;
    let client = Client::builder()
        .ca_pem(certs.ca_pem)
        .build()
        .expect("client");
    let resp = client.get(h1.url("/")).send().await.expect("https h1");
    assert_eq!(resp.version(), Version::HTTP_11);
    let s = client.origin_stats(&h1.origin()).expect("held");
    assert_eq!((s.protocol, s.h2_downgrades), ("http1", 1));
}

#[tokio::test]
async fn an_https_to_http_redirect_is_refused_unless_allowed() {
    let plain = support::server(|_| async { text(200, "clear text") }).await;
    let certs = support::certs(&[b"h2", b"http/1.1"]);
    let to = plain.url("/x");
    let secure = support::tls_server(certs.server.clone(), move |_| {
        let to = to.clone();
        async move { redirect(302, &to) }
    })
    .await;
    let client = Client::builder()
        .ca_pem(certs.ca_pem.clone())
        .build()
        .expect("client");
    let e = client
        .get(secure.url("/start"))
        .header("authorization", "Bearer t")
        .send()
        .await
        .expect_err("downgrade");
    assert_eq!(e.kind(), ErrorKind::Redirect);
    assert!(e.to_string().contains("https to http"), "{e}");
    assert_eq!(e.origin(), Some(secure.origin().as_str()));
    assert_eq!(plain.hits(), 0, "nothing went out in clear text");

    let allowing = Client::builder()
        .ca_pem(certs.ca_pem)
        .redirects(Redirects::default().allow_https_to_http(true))
        .build()
        .expect("client");
    let resp = allowing
        .get(secure.url("/start"))
        .header("authorization", "Bearer t")
        .send()
        .await
        .expect("allowed");
    assert_eq!(resp.text().await.expect("body"), "clear text");
    assert!(
        !plain.seen()[0].headers.contains_key("authorization"),
        "another origin: credentials dropped"
    );
}
