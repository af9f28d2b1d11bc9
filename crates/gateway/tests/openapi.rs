//! End-to-end `openapi` plugin against the real binary, with the spec files in `specs/`: an
//! OpenAPI 3.0 spec, a 3.1 spec in JSON, one with multipart and URL-encoded forms, one split
//! across two files by `$ref`. Requests in `enforce` and `report` mode, sampled response
//! validation, the `validate` lint, and a reload with a broken spec.

#[path = "e2e/harness.rs"]
mod harness;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use harness::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

/// Copies the spec files into the gateway's config dir, under `specs/`.
fn copy_specs(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/specs");
    for sub in ["", "split"] {
        let to = dir.join("specs").join(sub);
        std::fs::create_dir_all(&to).expect("mkdir");
        for e in std::fs::read_dir(src.join(sub)).expect("specs dir") {
            let e = e.expect("entry");
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).expect("copy spec");
            }
        }
    }
}

/// An upstream counting its requests; answers by path: `/v1/pets/7` a valid pet, `/v1/pets/8`
/// one leaking its write-only `password`, `/v1/pets/9` a 500, else an echo of the body length.
async fn backend() -> (Upstream, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let up = upstream(move |req: Request<Incoming>| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let path = req.uri().path().to_owned();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let (status, out) = match path.as_str() {
                "/v1/pets/7" => (200, json!({"id": 7, "name": "Rex"})),
                "/v1/pets/8" => (200, json!({"id": 8, "name": "Rex", "password": "hunter2"})),
                "/v1/pets/9" => (500, json!({"oops": true})),
                _ => (200, json!({"body_length": body.len()})),
            };
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(out.to_string())))
                .expect("response")
        }
    })
    .await;
    (up, hits)
}

fn route(name: &str, prefix: &str, plugin: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path_prefix: {prefix} }}\n    upstream: app\n    plugins:\n      openapi:\n{plugin}"
    )
}

/// The test gateway; `pets_response` is the `response` block of the 3.0 route.
fn gateway_yaml(addr: &str, pets_response: &str) -> String {
    config(&format!(
        "upstreams:\n  app:\n    targets: [{{ address: \"{addr}\" }}]\nroutes:\n{}{}{}{}{}",
        route(
            "pets",
            "/v1",
            &format!(
                "        spec: specs/pets-30.yaml\n        unknown_query: reject\n        max_body_bytes: 300\n        response: {pets_response}\n"
            )
        ),
        route(
            "store",
            "/api",
            "        spec: specs/store-31.json\n        mode: report\n        response: { mode: report, sample: 1.0 }\n"
        ),
        route(
            "items",
            "/items",
            "        spec: specs/split/main.yaml\n        status: 422\n"
        ),
        route("upload", "/upload", "        spec: specs/forms.yaml\n"),
        route("login", "/login", "        spec: specs/forms.yaml\n"),
    ))
}

async fn call(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
    let mut b = req(method, &gw.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        &h1_client(),
        b.body(Full::new(Bytes::from(body.to_owned())))
            .expect("request"),
    )
    .await
}

/// The `errors` list of a `request_invalid` answer, as `(in, name, pointer)`.
fn errors(got: &Got) -> Vec<(String, String, String)> {
    let v = got.json();
    assert_eq!(v["error"]["code"], "request_invalid", "{v}");
    assert_eq!(v["error"]["status"], got.status.as_u16());
    v["error"]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            assert!(!s("message").is_empty());
            (s("in"), s("name"), s("pointer"))
        })
        .collect()
}

fn has(errs: &[(String, String, String)], loc: &str, name: &str, pointer: &str) -> bool {
    errs.iter()
        .any(|(l, n, p)| l == loc && n == name && p == pointer)
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_validated_against_the_spec() {
    let (up, hits) = backend().await;
    let gw = Gateway::start_with(&gateway_yaml(&up.address(), "{ mode: off }"), copy_specs);

    // Valid requests pass: styles, coercion, headers case-insensitively, cookies.
    let q = "/v1/pets?limit=5&tags=a&tags=b&filter%5Bstatus%5D=sold&filter%5Bmin_age%5D=2&ids=1%7C2&words=ab%20cd";
    let got = call(
        &gw,
        "GET",
        q,
        &[("X-MODE", "fast"), ("cookie", "session=s-1")],
        "",
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(call(&gw, "GET", "/v1/pets/mine", &[], "").await.status, 200);
    let got = call(
        &gw,
        "POST",
        "/v1/pets",
        &[JSON],
        r#"{"name":"Rex","tag":null,"age":1}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json()["body_length"],
        33,
        "the body reaches the upstream whole"
    );
    let before = hits.load(Ordering::SeqCst);

    // Parameters: every failure listed, header values never echoed.
    let got = call(
        &gw,
        "GET",
        "/v1/pets?limit=0&filter%5Bstatus%5D=lost&ids=1%7Cx&junk=1",
        &[("x-mode", "top-secret-value"), ("cookie", "session=nope")],
        "",
    )
    .await;
    assert_eq!(got.status, 400);
    let body = String::from_utf8_lossy(&got.body).into_owned();
    assert!(
        !body.contains("top-secret-value") && !body.contains("nope"),
        "{body}"
    );
    let errs = errors(&got);
    for (l, n, p) in [
        ("query", "limit", ""),
        ("query", "filter", "/status"),
        ("query", "ids", "/1"),
        ("query", "junk", ""),
        ("header", "x-mode", ""),
        ("cookie", "session", ""),
    ] {
        assert!(has(&errs, l, n, p), "{l} {n} {p} in {errs:?}");
    }
    assert!(got.header("x-request-id").is_some());
    let errs = errors(&call(&gw, "GET", "/v1/pets/0", &[], "").await);
    assert!(
        has(&errs, "path", "petId", "") && has(&errs, "header", "x-api-version", ""),
        "{errs:?}"
    );
    assert_eq!(
        call(&gw, "GET", "/v1/pets/3", &[("x-api-version", "2")], "")
            .await
            .status,
        200
    );

    // Operation matching: 404 and 405 with Allow.
    let got = call(&gw, "GET", "/v1/cats", &[], "").await;
    assert_eq!(
        (got.status.as_u16(), &got.json()["error"]["code"]),
        (404, &json!("no_operation"))
    );
    let got = call(&gw, "PUT", "/v1/pets/3", &[], "").await;
    assert_eq!(got.status, 405);
    assert_eq!(got.json()["error"]["code"], "method_not_allowed");
    assert_eq!(got.header("allow"), Some("GET, DELETE"));

    // Bodies: readOnly refused, 3.0 exclusiveMinimum, required, content type, size.
    let got = call(
        &gw,
        "POST",
        "/v1/pets",
        &[JSON],
        r#"{"id":1,"name":"","age":0}"#,
    )
    .await;
    let errs = errors(&got);
    for p in ["/id", "/name", "/age"] {
        assert!(has(&errs, "body", "", p), "{p} in {errs:?}");
    }
    let errs = errors(&call(&gw, "POST", "/v1/pets", &[], "").await);
    assert!(has(&errs, "body", "", ""), "{errs:?}");
    let got = call(
        &gw,
        "POST",
        "/v1/pets",
        &[("content-type", "text/plain")],
        "hi",
    )
    .await;
    assert_eq!(got.status, 415);
    assert_eq!(got.json()["error"]["code"], "unsupported_media_type");
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(400));
    let got = call(&gw, "POST", "/v1/pets", &[JSON], &big).await;
    assert_eq!(got.status, 413);
    assert_eq!(got.json()["error"]["code"], "body_too_large");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before + 1,
        "only the valid GET went upstream"
    );

    // Empty query values: refused unless the parameter declares `allowEmptyValue: true` (`q`,
    // whose minLength then is not checked).
    let got = call(&gw, "GET", "/v1/pets?limit=&q=", &[], "").await;
    assert_eq!(got.status, 400);
    assert_eq!(
        errors(&got),
        [("query".into(), "limit".into(), String::new())]
    );
    assert_eq!(
        got.json()["error"]["errors"][0]["message"],
        "must not be empty"
    );
    let before = hits.load(Ordering::SeqCst);
    assert_eq!(call(&gw, "GET", "/v1/pets?q", &[], "").await.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), before + 1);

    assert_eq!(
        call(&gw, "GET", "/items?limit=5", &[], "").await.status,
        200
    );
    let got = call(&gw, "POST", "/items", &[JSON], r#"{"sku":"abc"}"#).await;
    assert_eq!(got.status, 422);
    assert!(has(&errors(&got), "body", "", "/sku"));
    let got = call(&gw, "GET", "/items?limit=51", &[], "").await;
    assert!(has(&errors(&got), "query", "limit", ""));

    // Forms: URL-encoded and multipart, at field level.
    let form = ("content-type", "application/x-www-form-urlencoded");
    assert_eq!(
        call(
            &gw,
            "POST",
            "/login",
            &[form],
            "user=alice&remember=true&scopes=read"
        )
        .await
        .status,
        200
    );
    let errs = errors(&call(&gw, "POST", "/login", &[form], "user=al&remember=maybe").await);
    assert!(
        has(&errs, "body", "", "/user") && has(&errs, "body", "", "/remember"),
        "{errs:?}"
    );
    let mp = |count: &str| {
        format!(
            "--XX\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello\r\n--XX\r\nContent-Disposition: form-data; name=\"count\"\r\n\r\n{count}\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\nBYTES\r\n--XX--\r\n"
        )
    };
    let mct = ("content-type", "multipart/form-data; boundary=XX");
    assert_eq!(
        call(&gw, "POST", "/upload", &[mct], &mp("3")).await.status,
        200
    );
    let errs = errors(&call(&gw, "POST", "/upload", &[mct], &mp("11")).await);
    assert!(has(&errs, "body", "", "/count"), "{errs:?}");

    // Report mode: forwarded, logged once per failure, counted.
    let before = hits.load(Ordering::SeqCst);
    let ct = ("content-type", "application/vnd.shop+json");
    let got = call(&gw, "POST", "/api/orders", &[ct], r#"{"qty":0,"note":1}"#).await;
    assert_eq!(got.status, 200, "report mode forwards");
    let got = call(&gw, "GET", "/api/orders/x?verbose=maybe", &[], "").await;
    assert_eq!(got.status, 200);
    let got = call(&gw, "GET", "/api/nothing", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), before + 3);
    let text = metrics_text(&gw).await;
    let count = |loc: &str| {
        metric_sum(
            &text,
            "portcullis_openapi_failures_total",
            &[("route", "store"), ("in", loc)],
        )
    };
    assert_eq!(count("body"), Some(2.0), "{text}");
    assert_eq!(count("query"), Some(1.0));
    assert_eq!(count("path"), Some(2.0), "the bad id and the unknown path");
    assert!(gw.wait_for_log("does not match the spec", Duration::from_secs(2)));
    let lines = gw
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("openapi: does not match the spec"))
        .count();
    assert_eq!(lines, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_validated_when_sampled() {
    let (up, _) = backend().await;
    let gw = Gateway::start_with(
        &gateway_yaml(&up.address(), "{ mode: enforce }"),
        copy_specs,
    );
    let v = [("x-api-version", "1")];
    // enforce: a valid response passes, one leaking a write-only field or with an undeclared
    // status becomes 502 upstream_error.
    let got = call(&gw, "GET", "/v1/pets/7", &v, "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["name"], "Rex");
    for path in ["/v1/pets/8", "/v1/pets/9"] {
        let got = call(&gw, "GET", path, &v, "").await;
        assert_eq!(got.status, 502, "{path}");
        let e = got.json();
        assert_eq!(e["error"]["code"], "upstream_error");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("response_invalid")
        );
    }
    // report: the body `{"body_length": 0}` is no order; it passes and is counted.
    let got = call(&gw, "GET", "/api/orders/o-1", &[], "").await;
    assert_eq!(got.status, 200);
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric_sum(
            &text,
            "portcullis_openapi_failures_total",
            &[("route", "store"), ("in", "response")]
        ),
        Some(2.0),
        "qty and note are missing: {text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "portcullis_openapi_failures_total",
            &[("route", "pets"), ("in", "response")]
        ),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_spec_is_refused_on_reload_and_the_old_one_keeps_serving() {
    let (up, _) = backend().await;
    let gw = Gateway::start_with(&gateway_yaml(&up.address(), "{ mode: off }"), copy_specs);
    let spec = gw.dir.path().join("specs/pets-30.yaml");
    let broken = std::fs::read_to_string(gw.dir.path().join("specs/broken.yaml")).expect("read");
    write_atomically(&spec, broken.as_bytes());
    let reload = gw.reload().await;
    assert_ne!(reload.status, 200);
    let body = String::from_utf8_lossy(&reload.body);
    assert!(
        body.contains("routes[0].plugins.openapi.spec") && body.contains("pets-30.yaml:11:15"),
        "{body}"
    );
    assert!(body.contains("does not resolve"), "{body}");
    // The old spec still answers, both ways.
    assert_eq!(
        call(&gw, "GET", "/v1/pets?limit=5", &[], "").await.status,
        200
    );
    assert_eq!(
        call(&gw, "GET", "/v1/pets?limit=500", &[], "").await.status,
        400
    );
}

/// Log lines of plugin lints that contain every one of `parts`.
fn lint_lines(gw: &Gateway, parts: &[&str]) -> usize {
    gw.log_lines()
        .iter()
        .filter(|l| {
            l.contains("WARN")
                && l.contains("plugin config warning")
                && l.contains("plugin=openapi")
                && parts.iter().all(|p| l.contains(p))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_lints_are_logged_at_start_and_on_reload() {
    let (up, _) = backend().await;
    let gw = Gateway::start_with(&gateway_yaml(&up.address(), "{ mode: off }"), copy_specs);
    let cost = [
        "route=items",
        "policy=openapi-internal-property",
        "`cost` marked x-internal: true",
        "field=routes[2].plugins.openapi",
        "portcullis.yaml:",
    ];
    let notes = [
        "route=upload",
        "policy=openapi-unvalidated-body",
        "POST /notes declares no request body schema",
    ];
    // The three lints of forms.yaml's two routes and the one of split/main.yaml: once each.
    let all = ["policy=openapi-"];
    assert!(
        eventually(Duration::from_secs(5), async || lint_lines(&gw, &all) >= 5).await,
        "{}",
        gw.logs()
    );
    assert_eq!(lint_lines(&gw, &all), 5, "{}", gw.logs());
    assert_eq!(lint_lines(&gw, &cost), 1, "{}", gw.logs());
    assert_eq!(lint_lines(&gw, &notes), 1, "{}", gw.logs());
    assert_eq!(lint_lines(&gw, &["route=pets"]), 0, "pets-30.yaml is clean");

    // The spec changes under an unchanged config: the reload logs the new snapshot's lints.
    let spec = gw.dir.path().join("specs/pets-30.yaml");
    let text = std::fs::read_to_string(&spec).expect("read spec");
    let leaky = text.replace(
        "        password: { type: string, writeOnly: true }\n",
        "        password: { type: string, writeOnly: true }\n        secret: { type: string, x-internal: true }\n",
    );
    assert_ne!(leaky, text);
    write_atomically(&spec, leaky.as_bytes());
    let reload = gw.reload().await;
    assert_eq!(reload.status, 200, "{:?}", reload.body);
    let secret = [
        "route=pets",
        "policy=openapi-internal-property",
        "`secret` marked x-internal: true",
    ];
    // GET /pets, POST /pets and GET /pets/{petId} return a Pet.
    assert!(
        eventually(Duration::from_secs(5), async || lint_lines(&gw, &all) >= 13).await,
        "{}",
        gw.logs()
    );
    assert_eq!(lint_lines(&gw, &secret), 3, "{}", gw.logs());
    assert_eq!(lint_lines(&gw, &cost), 2, "{}", gw.logs());
}

#[test]
fn validate_lints_specs() {
    let yaml = gateway_yaml("127.0.0.1:1", "{ mode: off }");
    let (code, _out, err) = validate_in(&yaml, copy_specs);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("POST /notes declares no request body schema"),
        "{err}"
    );
    assert!(
        err.contains("POST /raw: a request body media type has no schema"),
        "{err}"
    );
    assert!(err.contains("`cost` marked x-internal: true"), "{err}");
    let bad = yaml.replace("specs/split/main.yaml", "specs/broken.yaml");
    let (code, _, err) = validate_in(&bad, copy_specs);
    assert_ne!(code, 0);
    assert!(
        err.contains("broken.yaml:11:15: $ref `#/components/schemas/Nope` does not resolve"),
        "{err}"
    );
    let _ = Value::Null;
}
