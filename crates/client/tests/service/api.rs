//! The request builder and the response, `http::Request` in and `http::Response` out.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use portcullis_client::{CallOptions, Client, ErrorKind, RequestBody, Timeouts};

use crate::support::{self, text};

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct User {
    id: u32,
    name: String,
}

#[tokio::test]
async fn builder_query_headers_json_text_and_bytes() {
    let srv = support::server(|s| async move {
        let body = format!(
            "{} {} ua={} ct={} key={} body={}",
            s.method,
            s.uri,
            s.headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            s.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            s.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            String::from_utf8_lossy(&s.body)
        );
        text(200, &body)
    })
    .await;
    let client = Client::builder().build().expect("client");

    let resp = client
        .get(srv.url("/users?x=1"))
        .query(&[("name", "a b&c"), ("n", "2")])
        .header("x-test", "1")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.url().to_string(),
        srv.url("/users?x=1&name=a+b%26c&n=2")
    );
    assert!(resp.redirects().is_empty());
    assert_eq!(resp.origin(), srv.origin());
    let body = resp.text().await.expect("text");
    assert!(
        body.starts_with("GET /users?x=1&name=a+b%26c&n=2 ua=portcullis-client/"),
        "{body}"
    );

    let user = User {
        id: 7,
        name: "Ada".into(),
    };
    let body = client
        .post(srv.url("/users"))
        .json(&user)
        .idempotency_key("k-7")
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("text");
    assert_eq!(
        body,
        "POST /users ua=portcullis-client/0.1.0 ct=application/json key=k-7 body={\"id\":7,\"name\":\"Ada\"}"
    );

    for (method, resp) in [
        ("PUT", client.put(srv.url("/p")).body("x").send().await),
        ("PATCH", client.patch(srv.url("/p")).body("x").send().await),
        ("DELETE", client.delete(srv.url("/p")).send().await),
    ] {
        let body = resp.expect("send").bytes().await.expect("bytes");
        assert!(body.starts_with(method.as_bytes()), "{body:?}");
    }
}

#[tokio::test]
async fn json_responses_and_decode_errors() {
    let srv = support::server(|s| async move {
        match s.uri.path() {
            "/user" => text(200, r#"{"id":1,"name":"Grace"}"#),
            "/latin1" => {
                http::Response::new(http_body_util::Full::new(Bytes::from_static(b"caf\xe9")))
            }
            _ => text(200, "not json"),
        }
    })
    .await;
    let client = Client::new();
    let u: User = client
        .get(srv.url("/user"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(u.name, "Grace");
    let e = client
        .get(srv.url("/bad"))
        .send()
        .await
        .expect("send")
        .json::<User>()
        .await
        .expect_err("not json");
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert_eq!(e.origin(), Some(srv.origin().as_str()));
    let e = client
        .get(srv.url("/latin1"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect_err("not utf-8");
    assert_eq!(e.kind(), ErrorKind::Decode);
    let stats = client.origin_stats(&srv.origin()).expect("origin held");
    assert_eq!(stats.errors_of(ErrorKind::Decode), 2);
}

#[tokio::test]
async fn http_request_in_http_response_out_and_streaming() {
    let srv = support::server(|s| async move { text(201, &format!("got {}", s.body.len())) }).await;
    let client = Client::new();
    let mut req = http::Request::post(srv.url("/upload"))
        .body(RequestBody::stream(http_body_util::Full::new(Bytes::from(
            vec![b'x'; 100_000],
        ))))
        .expect("request");
    req.extensions_mut().insert(CallOptions {
        timeout: Some(Duration::from_secs(5)),
        redirects: None,
    });
    let resp: http::Response<_> = client.execute_http(req).await.expect("execute");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.extensions().get::<http::Uri>().map(|u| u.to_string()),
        Some(srv.url("/upload"))
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"got 100000");

    // A streamed response read chunk by chunk.
    let big = support::server(|_| async { text(200, &"y".repeat(1 << 20)) }).await;
    let mut resp = client.get(big.url("/")).send().await.expect("send");
    assert_eq!(resp.content_length(), Some(1 << 20));
    let mut total = 0;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        total += chunk.len();
    }
    assert_eq!(total, 1 << 20);
}

#[tokio::test]
async fn bad_requests_fail_clearly_before_anything_is_sent() {
    let client = Client::new();
    for url in ["/relative", "ftp://host/x", "http://user:pw@127.0.0.1:1/"] {
        let e = client.get(url).send().await.expect_err(url);
        assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{url}: {e}");
    }
    let e = client
        .get("http://127.0.0.1:1/")
        .header("bad header", "v")
        .send()
        .await
        .expect_err("bad header name");
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    assert!(client.stats().origins.len() <= 1);
    let zero = Client::builder()
        .timeouts(Timeouts {
            connect: Duration::ZERO,
            ..portcullis_client::service::DEFAULT_TIMEOUTS
        })
        .build();
    assert!(zero.is_err(), "a zero timeout is refused");

    // A refused connection says what and where.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let e = client
        .get(format!("http://127.0.0.1:{port}/x"))
        .send()
        .await
        .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::ConnectRefused);
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("on http://127.0.0.1:{port}")),
        "{msg}"
    );
}
