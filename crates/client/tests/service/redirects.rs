//! Redirects: across origins (credentials dropped, asserted at the second server), method
//! and body rules, 307/308 with a body, limits, the chain on the response.

use bytes::Bytes;
use portcullis_client::{Client, ErrorKind, Redirects, RequestBody};

use crate::support::{self, redirect, text};

#[tokio::test]
async fn a_redirect_to_another_origin_drops_credentials_there() {
    let second = support::server(|_| async { text(200, "second") }).await;
    let to = second.url("/landing");
    let first = support::server(move |s| {
        let to = to.clone();
        async move {
            match s.uri.path() {
                "/away" => redirect(302, &to),
                "/same" => redirect(301, "/here"),
                _ => text(200, "first"),
            }
        }
    })
    .await;
    let client = Client::new();
    let send = |path: &str| {
        client
            .get(first.url(path))
            .header("authorization", "Bearer secret")
            .header("cookie", "session=1")
            .header("proxy-authorization", "Basic eA==")
            .header("x-kept", "yes")
            .send()
    };

    let resp = send("/away").await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.url().to_string(), second.url("/landing"));
    let chain = resp.redirects();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].status, 302);
    assert_eq!(chain[0].from.to_string(), first.url("/away"));
    assert_eq!(chain[0].to.to_string(), second.url("/landing"));
    assert_eq!(resp.text().await.expect("body"), "second");
    let at_second = &second.seen()[0];
    for h in ["authorization", "cookie", "proxy-authorization"] {
        assert!(
            !at_second.headers.contains_key(h),
            "{h} leaked to the second origin"
        );
    }
    assert_eq!(at_second.headers["x-kept"], "yes");
    assert_eq!(
        at_second.headers["host"],
        second.addr.to_string(),
        "Host names the new origin"
    );

    // Within the origin, credentials stay.
    let resp = send("/same").await.expect("send");
    assert_eq!(resp.redirects().len(), 1);
    let here = first.seen().into_iter().last().expect("seen");
    assert_eq!(here.uri.path(), "/here");
    assert_eq!(here.headers["authorization"], "Bearer secret");
    assert_eq!(here.headers["cookie"], "session=1");

    let stats = client.origin_stats(&first.origin()).expect("held");
    assert_eq!(stats.redirects, 2);
}

#[tokio::test]
async fn post_becomes_get_on_301_302_303_and_307_308_keep_method_and_body() {
    let srv = support::server(|s| async move {
        let p = s.uri.path().to_owned();
        match p.strip_prefix("/r") {
            Some(code) => redirect(code.parse().expect("code"), "/target"),
            None => text(
                200,
                &format!(
                    "{} {} ct={}",
                    s.method,
                    String::from_utf8_lossy(&s.body),
                    s.headers.contains_key("content-type")
                ),
            ),
        }
    })
    .await;
    let client = Client::new();
    for (code, want) in [
        (301, "GET  ct=false"),
        (302, "GET  ct=false"),
        (303, "GET  ct=false"),
        (307, "POST payload ct=true"),
        (308, "POST payload ct=true"),
    ] {
        let got = client
            .post(srv.url(&format!("/r{code}")))
            .header("content-type", "text/plain")
            .body("payload")
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("body");
        assert_eq!(got, want, "{code}");
    }
    // PUT through a 303 becomes GET; through a 308 it stays PUT with its body.
    let got = client
        .put(srv.url("/r308"))
        .body("v2")
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert_eq!(got, "PUT v2 ct=false");
}

#[tokio::test]
async fn a_307_with_a_streamed_body_is_returned_not_followed() {
    let srv = support::server(|s| async move {
        match s.uri.path() {
            "/r307" => redirect(307, "/target"),
            _ => text(200, "followed"),
        }
    })
    .await;
    let client = Client::new();
    let stream = RequestBody::stream(http_body_util::Full::new(Bytes::from_static(b"once")));
    let resp = client
        .post(srv.url("/r307"))
        .body(stream)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 307, "a body sent once cannot be sent again");
    assert_eq!(resp.headers()["location"], "/target");
    assert!(resp.redirects().is_empty());
    assert_eq!(srv.hits(), 1, "the target was never asked");
}

#[tokio::test]
async fn redirect_limits_off_and_per_request() {
    let srv = support::server(|s| async move {
        let n: u32 = s.uri.path()[1..].parse().unwrap_or(0);
        redirect(302, &format!("/{}", n + 1))
    })
    .await;
    let client = Client::new();
    let e = client.get(srv.url("/0")).send().await.expect_err("a loop");
    assert_eq!(e.kind(), ErrorKind::Redirect);
    assert!(e.to_string().contains("more than 10 redirects"), "{e}");
    assert_eq!(srv.hits(), 11, "the first request and 10 redirects");

    let resp = client
        .get(srv.url("/0"))
        .redirects(Redirects::none())
        .send()
        .await
        .expect("off");
    assert_eq!(resp.status(), 302);

    let e = client
        .get(srv.url("/0"))
        .redirects(Redirects::limit(2))
        .send()
        .await
        .expect_err("limit 2");
    assert!(e.to_string().contains("more than 2 redirects"), "{e}");

    let off = Client::builder()
        .redirects(Redirects::none())
        .build()
        .expect("client");
    assert_eq!(
        off.get(srv.url("/0")).send().await.expect("send").status(),
        302
    );
}
