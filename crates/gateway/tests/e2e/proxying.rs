//! What the gateway adds, removes and rewrites on the way through; framing and size checks.

use std::io::Write;
use std::net::TcpStream;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;

use crate::harness::*;

fn proxy_config(upstream: &str, extra_route: &str) -> String {
    config(&format!(
        r#"upstreams:
  echo:
    targets: [{{ address: "{upstream}" }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: echo
    rewrite: {{ strip_prefix: /api, host: users.internal }}
    request_headers: {{ set: {{ x-set: "1" }}, add: {{ x-added: "2" }}, remove: [x-drop-me] }}
    response_headers: {{ set: {{ x-resp: yes }}, remove: [x-upstream] }}
  - name: regex
    match: {{ path_prefix: /re/ }}
    upstream: echo
    rewrite: {{ path_regex: {{ pattern: "^/re/(.*)/(.*)$", replacement: "/swapped/$2/$1" }} }}
  - name: plain
    match: {{ path_prefix: / }}
    upstream: echo
{extra_route}"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_request_id_and_transforms() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&proxy_config(&up.address(), ""));
    let got = send(
        &h1_client(),
        req("GET", &gw.url("/api/users/7?x=1"))
            .header("x-drop-me", "secret")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-request-id", "client-chosen-1")
            .body(Full::default())
            .expect("req"),
    )
    .await;
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_eq!(v["path"], "/users/7");
    assert_eq!(v["query"], "x=1");
    let h = &v["headers"];
    assert_eq!(h["host"], "users.internal");
    // The peer is not a trusted proxy: its X-Forwarded-For is replaced, not appended to.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], format!("{}", gw.http()));
    assert_eq!(h["x-request-id"], "client-chosen-1");
    assert_eq!(h["x-set"], "1");
    assert_eq!(h["x-added"], "2");
    assert!(h.get("x-drop-me").is_none());
    assert_eq!(got.header("x-request-id"), Some("client-chosen-1"));
    assert_eq!(got.header("x-resp"), Some("yes"));
    assert!(got.header("x-upstream").is_none());

    let got = get(&gw.url("/re/a/b")).await;
    assert_eq!(got.json()["path"], "/swapped/b/a");

    // An insane client request ID is replaced by a generated one, sent both ways.
    let got = send(
        &h1_client(),
        req("GET", &gw.url("/x"))
            .header("x-request-id", "has spaces and ; semicolons")
            .body(Full::default())
            .expect("req"),
    )
    .await;
    let rid = got.header("x-request-id").expect("rid").to_owned();
    assert_eq!(rid.len(), 32);
    assert_eq!(got.json()["headers"]["x-request-id"], rid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_get_forwarded_for_appended() {
    let up = echo_upstream("echo").await;
    let yaml = proxy_config(&up.address(), "").replace(
        "    address: 127.0.0.1:0\nadmin",
        "    address: 127.0.0.1:0\n    trusted_proxies: [127.0.0.0/8]\nadmin",
    );
    let gw = Gateway::start(&yaml);
    let got = send(
        &h1_client(),
        req("GET", &gw.url("/x"))
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .body(Full::default())
            .expect("req"),
    )
    .await;
    let h = &got.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = upstream(|_req| async {
        Response::builder()
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept")
            .body(Full::new(Bytes::from_static(b"ok")))
            .expect("resp")
    })
    .await;
    let echo = echo_upstream("echo").await;
    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  hop:\n    targets: [{{ address: \"{}\" }}]\n  echo:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: hop\n    match: {{ path: /hop }}\n    upstream: hop\n  - name: echo\n    match: {{ path_prefix: / }}\n    upstream: echo\n",
        up.address(),
        echo.address()
    )));
    // Raw request so we control Connection and friends exactly.
    let mut s = TcpStream::connect(gw.http()).expect("connect");
    s.write_all(
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-client-hop\r\nX-Client-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nX-Kept: yes\r\n\r\n",
    )
    .expect("write");
    let resp = read_response(&mut s);
    let body = &resp[resp.find("\r\n\r\n").expect("head end") + 4..];
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    let h = v["headers"].as_object().expect("headers");
    for gone in [
        "connection",
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream: {h:?}");
    }
    assert_eq!(h["x-kept"], "yes");

    let got = get(&gw.url("/hop")).await;
    assert!(got.header("x-upstream-hop").is_none());
    assert!(got.header("keep-alive").is_none());
    assert_eq!(got.header("x-end-to-end"), Some("kept"));
}

/// Reads one HTTP/1.1 response with a Content-Length body from a raw socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_and_never_forwarded() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&proxy_config(&up.address(), ""));
    // Content-Length and Transfer-Encoding together: 400 with the JSON error.
    let mut s = TcpStream::connect(gw.http()).expect("connect");
    s.write_all(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .expect("write");
    let resp = read_response(&mut s);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("\"code\":\"bad_request\""), "{resp}");
    // Differing duplicate Content-Length: refused with 400 by the HTTP parser, still the JSON
    // error of the contract with an X-Request-ID.
    let mut s = TcpStream::connect(gw.http()).expect("connect");
    s.write_all(
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .expect("write");
    let resp = read_response(&mut s);
    assert_json_error(&resp, "400", "bad_request");
    // Transfer-Encoding first: refused the same way (the HTTP parser drops the Content-Length
    // before the request reaches the pipeline; the framing watcher saw it on the wire).
    let mut s = TcpStream::connect(gw.http()).expect("connect");
    s.write_all(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .expect("write");
    let resp = read_response(&mut s);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("ambiguous framing"), "{resp}");
    // A keep-alive connection: a clean request, then an ambiguous one; only the second is refused.
    let mut s = TcpStream::connect(gw.http()).expect("connect");
    s.write_all(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        .expect("write");
    let first = read_response(&mut s);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    s.write_all(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n")
        .expect("write");
    let second = read_response(&mut s);
    assert!(second.starts_with("HTTP/1.1 400"), "{second}");
    assert_eq!(
        up.connection_count(),
        1,
        "only the clean request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_the_http_parser_refuses_get_the_json_error() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&proxy_config(&up.address(), ""));
    let raw = |bytes: &[u8]| {
        let mut s = TcpStream::connect(gw.http()).expect("connect");
        s.write_all(bytes).expect("write");
        read_response(&mut s)
    };
    // A header name with a space, a broken request line, an unparseable Content-Length.
    for bad in [
        &b"GET /x HTTP/1.1\r\nHo st: h\r\n\r\n"[..],
        b"GET /x HTTP/9\r\nHost: h\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n",
    ] {
        assert_json_error(&raw(bad), "400", "bad_request");
    }
    // A head past the parser's buffer (twice the 64 KiB default limit): 431.
    let mut big = b"GET /x HTTP/1.1\r\nHost: h\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 140_000));
    big.extend_from_slice(b"\r\n\r\n");
    assert_json_error(&raw(&big), "431", "headers_too_large");
    // A request target too long for the parser: 414.
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 70_000));
    long.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_json_error(&raw(&long), "414", "uri_too_long");
    // After a good request on a keep-alive connection, the bad one is refused the same way and
    // the good response is untouched.
    let mut s = TcpStream::connect(gw.http()).expect("connect");
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let first = read_response(&mut s);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    s.write_all(b"GET /x HTTP/1.1\r\nHo st: h\r\n\r\n")
        .expect("write");
    assert_json_error(&read_response(&mut s), "400", "bad_request");
    // Counted, by listener and status.
    let text = metrics_text(&gw).await;
    let refused = |status: &str| {
        metric_sum(
            &text,
            "portcullis_refused_request_heads_total",
            &[("listener", "http"), ("status", status)],
        )
    };
    assert_eq!(refused("400"), Some(4.0), "{text}");
    assert_eq!(refused("431"), Some(1.0), "{text}");
    assert_eq!(refused("414"), Some(1.0), "{text}");
    // An upstream's own empty 400 passes through as it is.
    let bare = upstream(|_req: http::Request<hyper::body::Incoming>| async {
        Response::builder()
            .status(400)
            .header("x-upstream", "bare")
            .body(Full::new(Bytes::new()))
            .expect("response")
    })
    .await;
    let gw = Gateway::start(&proxy_config(&bare.address(), ""));
    let mut s = TcpStream::connect(gw.http()).expect("connect");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("write");
    let resp = read_response(&mut s).to_ascii_lowercase();
    assert!(resp.starts_with("http/1.1 400 "), "{resp}");
    assert!(resp.contains("x-upstream: bare"), "{resp}");
    assert!(resp.ends_with("\r\n\r\n"), "no body added: {resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_header_limits() {
    let up = echo_upstream("echo").await;
    let yaml = proxy_config(&up.address(), "").replace(
        "    address: 127.0.0.1:0\nadmin",
        "    address: 127.0.0.1:0\n    limits: { max_body_bytes: 1000, max_header_bytes: 2048 }\nadmin",
    );
    let gw = Gateway::start(&yaml);
    // Declared too large.
    let (_, out, _) = curl(&[
        "-w",
        "\n%{http_code}",
        "--data-binary",
        &"a".repeat(1001),
        &gw.url("/x"),
    ]);
    assert!(out.ends_with("413"), "{out}");
    assert!(out.contains("\"code\":\"body_too_large\""), "{out}");
    // Chunked, counted as it streams.
    let (_, out, _) = curl(&[
        "-w",
        "\n%{http_code}",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &"b".repeat(5000),
        &gw.url("/x"),
    ]);
    assert!(out.ends_with("413"), "{out}");
    // Within the limit, chunked: passes.
    let (_, out, _) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &"c".repeat(900),
        &gw.url("/x"),
    ]);
    assert!(out.contains("\"body_length\":900"), "{out}");
    // Headers over the limit: 431 with the JSON error.
    let (_, out, _) = curl(&[
        "-w",
        "\n%{http_code}",
        "-H",
        &format!("X-Big: {}", "h".repeat(3000)),
        &gw.url("/x"),
    ]);
    assert!(out.ends_with("431"), "{out}");
    assert!(out.contains("\"code\":\"headers_too_large\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_and_h2c_share_the_plaintext_port() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&proxy_config(&up.address(), ""));
    let (_, v1, _) = curl(&["-w", " %{http_version}", &gw.url("/x")]);
    assert!(v1.ends_with(" 1.1"), "{v1}");
    let (_, v2, _) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        " %{http_version}",
        &gw.url("/x"),
    ]);
    assert!(v2.ends_with(" 2"), "{v2}");
    let got = send(
        &h2c_client(),
        req("GET", &gw.url("/api/y"))
            .body(Full::default())
            .expect("req"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["path"], "/y");
    // The upstream is HTTP/1.1: the h2 request was translated, Host included.
    assert_eq!(got.json()["version"], "HTTP/1.1");
    assert_eq!(got.json()["headers"]["host"], "users.internal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_termination_plugin_short_circuits_and_routes_override_globals() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&config(&format!(
        r#"upstreams:
  echo:
    targets: [{{ address: "{}" }}]
plugins:
  request_termination: {{ status: 503, message: "down for maintenance" }}
routes:
  - name: closed
    match: {{ path_prefix: /closed }}
    upstream: echo
  - name: teapot
    match: {{ path_prefix: /raw }}
    upstream: echo
    plugins:
      request_termination: {{ status: 418, body: "tea", headers: {{ content-type: text/plain }} }}
"#,
        up.address()
    )));
    let got = get(&gw.url("/closed")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.json()["error"]["code"], "terminated");
    assert_eq!(got.json()["error"]["message"], "down for maintenance");
    assert!(got.header("x-request-id").is_some());
    let got = get(&gw.url("/raw")).await;
    assert_eq!(got.status, 418);
    assert_eq!(&got.body[..], b"tea");
    assert_eq!(up.connection_count(), 0, "the upstream must not be called");
}
