//! Edge hardening: the normalised path is what is routed, authenticated and sent; Host rules;
//! refusals as JSON errors with access-log lines; per-address connection caps.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

use crate::harness::*;

const SECRET: &str = "an-hs256-secret-that-is-long-enough-0123";

/// Two routes on one echo upstream: `/api` is public, `/admin` needs a JWT. `path_yaml` goes
/// under the listener's `limits:`.
fn edge_config(upstream: &str, path_yaml: &str, extra: &str) -> String {
    format!(
        r#"listeners:
  - name: http
    address: 127.0.0.1:0
    limits:
      max_header_bytes: 65536
{path_yaml}admin:
  address: 127.0.0.1:0
observability:
  access_log: {{ path: access.log, format: json }}
upstreams:
  echo:
    targets: [{{ address: "{upstream}" }}]
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: echo
  - name: admin
    match: {{ path_prefix: /admin }}
    upstream: echo
    plugins:
      jwt:
        keys: [{{ algorithm: HS256, secret: "{SECRET}" }}]
{extra}"#
    )
}

fn token() -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({ "sub": "ops", "exp": 4_000_000_000u64 }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// Sends `GET path` over HTTP/1.1 (raw bytes: nothing rewrites the target on the way) and over
/// h2c (hyper), with an optional bearer token; returns both responses' status and body.
async fn both(gw: &Gateway, path: &str, bearer: Option<&str>) -> [(u16, String); 2] {
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let h1 = raw_exchange(
        gw.http(),
        format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    let status: u16 = h1
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {h1}"));
    let body = h1.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    let mut r = Request::get(format!("http://{}{path}", gw.http()));
    if let Some(t) = bearer {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let h2 = send(&h2c_client(), r.body(Full::new(Bytes::new())).expect("req")).await;
    [
        (status, body),
        (
            h2.status.as_u16(),
            String::from_utf8_lossy(&h2.body).into_owned(),
        ),
    ]
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_and_dotted_paths_cannot_bypass_the_route_that_owns_them() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&edge_config(&up.address(), "", ""));
    // Every spelling of /admin is routed to the admin route, whose JWT plugin refuses it.
    for path in [
        "/admin",
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2E/admin",
        "/api/.%2e/admin",
        "//admin",
        "/api/./../admin",
        "/api/x/../../admin",
        "/%61dmin",
        "/api/..//admin/",
    ] {
        for (i, (status, body)) in both(&gw, path, None).await.into_iter().enumerate() {
            assert_eq!(status, 401, "{path} over {}: {body}", ["h1", "h2"][i]);
            assert_eq!(json(&body)["error"]["code"], "unauthorized", "{path}");
        }
    }
    // With a token they pass, and the upstream receives the path that was routed.
    let t = token();
    for (path, sent) in [
        ("/api/../admin", "/admin"),
        ("/api/%2e%2e/admin/x", "/admin/x"),
        ("//admin///users", "/admin/users"),
        ("/api/x/../../admin/", "/admin/"),
    ] {
        for (status, body) in both(&gw, path, Some(&t)).await {
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(json(&body)["path"], sent, "{path}");
        }
    }
    // Escaped slashes are refused by default; climbing above the root is refused; a broken
    // escape is refused. Each with the JSON error, never reaching the upstream.
    for (path, reason) in [
        ("/api%2F..%2Fadmin", "path_escaped_slash"),
        ("/api%2f..%2fadmin", "path_escaped_slash"),
        ("/api%5C..%5Cadmin", "path_escaped_slash"),
        ("/../../etc/passwd", "path_above_root"),
        ("/api/../../etc/passwd", "path_above_root"),
        ("/%2e%2e/etc/passwd", "path_above_root"),
        ("/api/%zz", "path_bad_escape"),
    ] {
        for (status, body) in both(&gw, path, Some(&t)).await {
            assert_eq!(status, 400, "{path}: {body}");
            let e = &json(&body)["error"];
            assert_eq!(e["code"], "bad_request", "{path}");
            assert!(e["request_id"].is_string(), "{path}");
        }
        let _ = reason;
    }
    // The query string is never touched.
    for (status, body) in both(&gw, "/api/./v1/../items?next=../x&q=%2e%2e%2F", None).await {
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        assert_eq!(v["path"], "/api/items");
        assert_eq!(v["query"], "next=../x&q=%2e%2e%2F");
    }
    // Refusals are counted by reason (h1 and h2 each) and logged with their reason.
    let m = metrics_text(&gw).await;
    let refused = |reason: &str| {
        metric_sum(
            &m,
            "portcullis_requests_refused_total",
            &[("listener", "http"), ("reason", reason)],
        )
    };
    assert_eq!(refused("path_escaped_slash"), Some(6.0), "{m}");
    assert_eq!(refused("path_above_root"), Some(6.0), "{m}");
    assert_eq!(refused("path_bad_escape"), Some(2.0), "{m}");
    let lines = access_lines_eventually(&gw, |l| l["error"] == "path_above_root", 6).await;
    assert!(lines.iter().all(|l| l["status"] == 400), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slash_policies_keep_and_decode() {
    let up = echo_upstream("echo").await;
    let keep = Gateway::start(&edge_config(
        &up.address(),
        "      path: { escaped_slashes: keep, merge_slashes: false }\n",
        "",
    ));
    // Kept: routed as the client sent it (to /api) and forwarded encoded, hex upper-cased.
    for (status, body) in both(&keep, "/api%2f..%2Fadmin", None).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["path"], "/api%2F..%2Fadmin");
    }
    // merge_slashes: false keeps repeated slashes, in routing and upstream alike.
    for (status, body) in both(&keep, "/api//x", None).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["path"], "/api//x");
    }
    let decode = Gateway::start(&edge_config(
        &up.address(),
        "      path: { escaped_slashes: decode }\n",
        "",
    ));
    // Decoded: /api%2F..%2Fadmin is /admin, so it needs the admin route's token.
    for (status, body) in both(&decode, "/api%2F..%2Fadmin", None).await {
        assert_eq!(status, 401, "{body}");
    }
    for (status, body) in both(&decode, "/api%5C..%5Cadmin", Some(&token())).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["path"], "/admin");
    }
    let reject = Gateway::start(&edge_config(
        &up.address(),
        "      path: { dot_segments: reject }\n",
        "",
    ));
    for (status, body) in both(&reject, "/api/./x", None).await {
        assert_eq!(status, 400, "{body}");
    }
    for (status, body) in both(&reject, "/api/.x/..y", None).await {
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_rewrite_applies_to_the_normalised_path() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&edge_config(
        &up.address(),
        "",
        r#"  - name: strip
    match: { path_prefix: /v1/ }
    upstream: echo
    rewrite: { strip_prefix: /v1 }
"#,
    ));
    for (status, body) in both(&gw, "/x/../v1//users/%7e7", None).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["path"], "/users/~7");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_on_http1() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&edge_config(
        &up.address(),
        "",
        r#"  - name: b-host
    match: { hosts: [b.example], path_prefix: /api }
    upstream: echo
    response_headers: { set: { x-route: b-host } }
  - name: b-port
    match: { hosts: ["b.example:8443"], path_prefix: /api }
    upstream: echo
    response_headers: { set: { x-route: b-port } }
"#,
    ));
    let addr = gw.http();
    // No Host on HTTP/1.1: 400 (RFC 9112 §3.2). HTTP/1.0 needs none.
    let r = raw_exchange(addr, b"GET /api/x HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_json_error(&r, "400", "bad_request");
    let r = raw_exchange(addr, b"GET /api/x HTTP/1.0\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"),
        "{r}"
    );
    // Two Host headers: 400, whether equal or not.
    for hosts in [
        "Host: a.example\r\nHost: b.example",
        "Host: b.example\r\nHost: b.example",
    ] {
        let r = raw_exchange(
            addr,
            format!("GET /api/x HTTP/1.1\r\n{hosts}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_json_error(&r, "400", "bad_request");
    }
    // Not a host: user info, spaces.
    for host in ["evil@b.example", "b.example/x"] {
        let r = raw_exchange(
            addr,
            format!("GET /api/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_json_error(&r, "400", "bad_request");
    }
    // Absolute-form: the target's authority wins over Host (RFC 9112 §3.2.2), for routing and
    // for the Host the upstream receives.
    let r = raw_exchange(
        addr,
        b"GET http://b.example/api/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.to_ascii_lowercase().contains("x-route: b-host"), "{r}");
    let body = json(r.split_once("\r\n\r\n").expect("body").1);
    assert_eq!(body["headers"]["host"], "b.example");
    assert_eq!(body["path"], "/api/x");
    // A port routes like the host without it, unless a route names the port.
    for (host, route) in [
        ("b.example", "b-host"),
        ("B.Example:80", "b-host"),
        ("b.example:8443", "b-port"),
    ] {
        let r = raw_exchange(
            addr,
            format!("GET /api/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(
            r.to_ascii_lowercase()
                .contains(&format!("x-route: {route}")),
            "{host}: {r}"
        );
    }
    let m = metrics_text(&gw).await;
    for (reason, n) in [
        ("host_missing", 1.0),
        ("host_repeated", 2.0),
        ("host_invalid", 2.0),
    ] {
        assert_eq!(
            metric_sum(
                &m,
                "portcullis_requests_refused_total",
                &[("listener", "http"), ("reason", reason)]
            ),
            Some(n),
            "{reason}: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_on_http2() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&edge_config(
        &up.address(),
        "",
        r#"  - name: b-host
    match: { hosts: [b.example], path_prefix: /api }
    upstream: echo
    response_headers: { set: { x-route: b-host } }
"#,
    ));
    let addr = gw.http();
    // curl turns a Host header into :authority on HTTP/2; a raw h2 client is needed to send
    // both, so hyper's h2 client sends the request with a URI authority and a Host header.
    let h2 = h2c_client();
    let send2 = |authority: &'static str, host: Option<&'static str>| {
        let mut r = Request::get(format!("http://{authority}/api/x"));
        if let Some(h) = host {
            r = r.header("host", h);
        }
        let req = r.body(Full::new(Bytes::new())).expect("req");
        let h2 = h2.clone();
        async move { send(&h2, req).await }
    };
    let _ = addr;
    // :authority alone routes.
    let authority: &'static str = Box::leak(addr.to_string().into_boxed_str());
    let got = send2(authority, None).await;
    assert_eq!(got.status, 200);
    // :authority and Host that disagree: 400.
    let got = send2(authority, Some("b.example")).await;
    assert_eq!(got.status, 400, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"]["code"], "bad_request");
    // Agreeing (case aside): fine.
    let got = send2(authority, Some(authority)).await;
    assert_eq!(got.status, 200);
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric_sum(
            &m,
            "portcullis_requests_refused_total",
            &[("listener", "http"), ("reason", "host_mismatch")]
        ),
        Some(1.0),
        "{m}"
    );
}

/// Waits until at least `n` access-log lines satisfy `pred`; returns them.
async fn access_lines_eventually(
    gw: &Gateway,
    pred: impl Fn(&Value) -> bool,
    n: usize,
) -> Vec<Value> {
    let path = gw.dir.path().join("access.log");
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON line ({e}): {l}")))
            .filter(|l| pred(l))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), async || read().len() >= n).await,
        "fewer than {n} matching access-log lines: {:?}",
        std::fs::read_to_string(&path).unwrap_or_default()
    );
    read()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_the_parser_refuses_have_json_errors_and_access_log_lines() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&edge_config(&up.address(), "", ""));
    // More header fields than the parser takes (1000): 431 with the JSON error.
    let mut many = b"GET /api/many HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..1100 {
        many.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let r = raw_exchange(gw.http(), &many);
    assert_json_error(&r, "431", "headers_too_large");
    // A malformed head: 400.
    let r = raw_exchange(gw.http(), b"GET /api/bad HTTP/1.1\r\nHo st: h\r\n\r\n");
    assert_json_error(&r, "400", "bad_request");
    let rid = r
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: ").map(str::to_owned))
        .expect("request id");
    // Both have an access-log line with what the request line showed.
    let lines = access_lines_eventually(&gw, |l| l["route"].is_null(), 2).await;
    let many_line = lines
        .iter()
        .find(|l| l["status"] == 431)
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(many_line["method"], "GET");
    assert_eq!(many_line["path"], "/api/many");
    assert_eq!(many_line["error"], "headers_too_large");
    let bad = lines
        .iter()
        .find(|l| l["status"] == 400)
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(bad["path"], "/api/bad");
    assert_eq!(bad["request_id"], rid.as_str());
    assert_eq!(bad["client"], "127.0.0.1");
    // HTTP/2: a header list over the limit is refused too (the h2 layer answers 431).
    let mut r = Request::get(format!("http://{}/api/big", gw.http()));
    r = r.header("x-big", "a".repeat(70_000));
    let h2 = h2c_client()
        .request(r.body(Full::new(Bytes::new())).expect("req"))
        .await;
    match h2 {
        Ok(resp) => assert_eq!(resp.status(), 431),
        // A stream refused with RST_STREAM is as good: the request never got through.
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    assert_eq!(
        up.connection_count(),
        0,
        "no refused request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_hold_every_connection() {
    let up = echo_upstream("echo").await;
    let gw = Gateway::start(&edge_config(
        &up.address(),
        "      max_connections_per_ip: 2\n",
        "",
    ));
    let addr = gw.http();
    let ask = |s: &mut TcpStream| {
        s.write_all(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("write");
        read_response(s)
    };
    let mut a = connect_from("127.0.0.1", addr).await;
    let mut b = connect_from("127.0.0.1", addr).await;
    assert!(ask(&mut a).starts_with("HTTP/1.1 200"));
    assert!(ask(&mut b).starts_with("HTTP/1.1 200"));
    // A third from the same address is closed without an answer.
    let mut c = connect_from("127.0.0.1", addr).await;
    let _ = c.write_all(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = read_response(&mut c);
    assert!(r.is_empty(), "the third connection was served: {r}");
    // Another address is not affected.
    let mut d = connect_from("127.0.0.2", addr).await;
    assert!(ask(&mut d).starts_with("HTTP/1.1 200"));
    // When one of the first two closes, the address may connect again.
    drop(a);
    assert!(
        eventually(Duration::from_secs(5), async || {
            let mut e = connect_from("127.0.0.1", addr).await;
            let _ = e.write_all(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n");
            read_response(&mut e).starts_with("HTTP/1.1 200")
        })
        .await
    );
    let m = metrics_text(&gw).await;
    assert!(
        metric_sum(
            &m,
            "portcullis_connections_refused_total",
            &[("listener", "http"), ("reason", "per_ip_limit")]
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    drop((b, d));
}

/// A blocking connection to `to` from the loopback address `ip` (any of 127.0.0.0/8).
async fn connect_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(std::net::SocketAddr::new(ip.parse().expect("ip"), 0))
        .expect("bind a loopback address");
    let s = sock.connect(to).await.expect("connect");
    let s = s.into_std().expect("std stream");
    s.set_nonblocking(false).expect("blocking");
    s
}
