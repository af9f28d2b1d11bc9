//! Routing by host, path, method, header and query; precedence; direct responses; splits.

use http_body_util::Full;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_the_contract_precedence() {
    let up_a = echo_upstream("a").await;
    let up_b = echo_upstream("b").await;
    let yaml = config(&format!(
        r#"upstreams:
  a:
    targets: [{{ address: "{a}" }}]
  b:
    targets: [{{ address: "{b}" }}]
routes:
  - name: prefix-root
    match: {{ path_prefix: /e }}
    direct_response: {{ status: 200, body: prefix-root }}
  - name: prefix-api
    match: {{ path_prefix: /api }}
    direct_response: {{ status: 200, body: prefix-api }}
  - name: template-user
    match: {{ path_template: "/api/users/{{id}}" }}
    direct_response: {{ status: 200, body: template-user }}
  - name: exact-me
    match: {{ path: /api/users/me }}
    direct_response: {{ status: 200, body: exact-me }}
  - name: regex-v
    match: {{ path_regex: "/v[0-9]+/.*" }}
    direct_response: {{ status: 200, body: regex-v }}
  - name: host-exact
    match: {{ hosts: [api.example.com], path_prefix: /api }}
    direct_response: {{ status: 200, body: host-exact }}
  - name: host-wild
    match: {{ hosts: ["*.example.com"], path_prefix: /api }}
    direct_response: {{ status: 200, body: host-wild }}
  - name: post-only
    match: {{ path_prefix: /api/orders, methods: [POST] }}
    upstream: a
  - name: beta
    match: {{ path_prefix: /api/orders, headers: {{ x-release-tag: v2-beta }} }}
    upstream: b
  - name: debug
    match: {{ path_prefix: /api/orders, query: {{ debug: "1" }} }}
    direct_response: {{ status: 200, body: debug }}
  - name: forced
    priority: 10
    match: {{ path_prefix: /forced }}
    direct_response: {{ status: 200, body: forced }}
"#,
        a = up_a.address(),
        b = up_b.address()
    ));
    let gw = Gateway::start(&yaml);
    let url = |p: &str| gw.url(p);
    let body = |host: Option<&str>, path: &str, extra: &[&str]| {
        let mut args: Vec<String> = vec![];
        if let Some(h) = host {
            args.push("-H".into());
            args.push(format!("Host: {h}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(url(path));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs).1
    };
    assert_eq!(body(None, "/api/users/me", &[]), "exact-me");
    assert_eq!(body(None, "/api/users/42", &[]), "template-user");
    assert_eq!(body(None, "/api/other", &[]), "prefix-api");
    assert_eq!(body(None, "/v2/anything", &[]), "regex-v");
    assert_eq!(body(None, "/elsewhere", &[]), "prefix-root");
    // Nothing else matches: 404.
    assert!(body(None, "/zzz", &[]).contains("no_route"));
    // On the same path, an exact host beats a wildcard beats none; the port is ignored.
    assert_eq!(
        body(Some("api.example.com:8443"), "/api/x", &[]),
        "host-exact"
    );
    assert_eq!(body(Some("www.example.com"), "/api/x", &[]), "host-wild");
    assert_eq!(body(Some("example.org"), "/api/x", &[]), "prefix-api");
    // Path specificity comes before host: the exact path wins whatever the host.
    assert_eq!(
        body(Some("api.example.com"), "/api/users/me", &[]),
        "exact-me"
    );
    // Method, header and query conditions; more conditions win on the same path.
    let v: serde_json::Value =
        serde_json::from_str(&body(None, "/api/orders", &["-X", "POST"])).expect("json");
    assert_eq!(v["upstream"], "a");
    let v: serde_json::Value = serde_json::from_str(&body(
        None,
        "/api/orders",
        &["-H", "X-Release-Tag: v2-beta"],
    ))
    .expect("json");
    assert_eq!(v["upstream"], "b");
    assert_eq!(body(None, "/api/orders?x=2&debug=1", &[]), "debug");
    assert_eq!(body(None, "/api/orders?debug=2", &[]), "prefix-api");
    assert_eq!(body(None, "/forced/x", &[]), "forced");

    // The admin API lists routes in precedence order.
    let routes = get(&gw.admin_url("/admin/routes")).await.json();
    let names: Vec<&str> = routes
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names[0], "forced");
    assert_eq!(names[1], "exact-me");
    assert_eq!(*names.last().expect("last"), "regex-v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_requests_get_a_json_404() {
    let gw = Gateway::start(&config(
        "routes:\n  - name: only\n    match: { path: /only }\n    direct_response: { status: 204 }\n",
    ));
    let got = get(&gw.url("/nope")).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.header("content-type"), Some("application/json"));
    let v = got.json();
    assert_eq!(v["error"]["code"], "no_route");
    assert_eq!(v["error"]["status"], 404);
    let rid = got.header("x-request-id").expect("request id");
    assert_eq!(v["error"]["request_id"], rid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_responses_carry_status_body_and_headers() {
    let gw = Gateway::start(&config(
        "routes:\n  - name: teapot\n    match: { path: /tea }\n    direct_response: { status: 418, body: \"short and stout\", headers: { x-kind: teapot } }\n",
    ));
    let got = get(&gw.url("/tea")).await;
    assert_eq!(got.status, 418);
    assert_eq!(&got.body[..], b"short and stout");
    assert_eq!(got.header("x-kind"), Some("teapot"));
    assert!(got.header("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_follows_the_weights() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  a:\n    targets: [{{ address: \"{}\" }}]\n  b:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: canary\n    match: {{ path_prefix: / }}\n    split: [{{ upstream: a, weight: 80 }}, {{ upstream: b, weight: 20 }}]\n",
        a.address(),
        b.address()
    )));
    let client = h1_client();
    let mut to_b = 0;
    let n = 2000;
    for _ in 0..n {
        let got = send(
            &client,
            req("GET", &gw.url("/")).body(Full::default()).expect("req"),
        )
        .await;
        assert_eq!(got.status, 200);
        if got.header("x-upstream") == Some("b") {
            to_b += 1;
        }
    }
    let share = f64::from(to_b) / f64::from(n);
    assert!((share - 0.2).abs() < 0.04, "share to b: {share}");
}
