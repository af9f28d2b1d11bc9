//! Unit tests of the openapi plugin, on the spec files of the gateway's integration tests.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

fn specs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/specs")
}

fn plugin(cfg: Value) -> Result<OpenApi, PluginConfigError> {
    let dir = specs();
    OpenApi::new(
        &cfg,
        &BuildCtx {
            scope: "test",
            base_dir: &dir,
        },
    )
}

fn ctx() -> RequestCtx {
    RequestCtx::new(
        HeaderValue::from_static("rid"),
        "127.0.0.1".parse().unwrap(),
        Arc::from("l"),
    )
}

/// Runs the head phase and, when it asks, the body phase.
async fn run(p: &OpenApi, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Flow {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if !body.is_empty() {
        b = b.header("content-length", body.len().to_string());
    }
    let (mut parts, ()) = b.body(()).unwrap().into_parts();
    let mut c = ctx();
    let flow = p.on_request(&mut c, &mut parts).resolve().await;
    if matches!(flow, Flow::Respond(_)) {
        return flow;
    }
    if p.request_body(&c, &parts).is_some() {
        let mut data = Bytes::from(body.to_owned());
        return p
            .on_request_body(&mut c, &mut parts, &mut data)
            .resolve()
            .await;
    }
    flow
}

/// The status and the `errors` list of an answer (`None` when the request went on).
fn answer(f: Flow) -> Option<(u16, Value)> {
    match f {
        Flow::Continue => None,
        Flow::Respond(Reply::Raw { status, body, .. }) => {
            let v: Value = serde_json::from_slice(&body).unwrap();
            Some((status.as_u16(), v["error"]["errors"].clone()))
        }
        Flow::Respond(Reply::Error { status, code, .. }) => Some((status.as_u16(), json!(code))),
    }
}

#[tokio::test]
async fn spec_30_params_and_bodies() {
    let p = plugin(json!({"spec": "pets-30.yaml", "unknown_query": "reject"})).unwrap();
    let ok = |f: Flow| assert!(answer(f).is_none());
    ok(run(
        &p,
        "GET",
        "/v1/pets?limit=5&tags=a&tags=b&filter[status]=sold&ids=1|2&words=ab%20cd",
        &[("x-mode", "fast"), ("cookie", "session=s-1")],
        "",
    )
    .await);
    ok(run(&p, "GET", "/v1/pets/mine", &[], "").await);
    ok(run(&p, "GET", "/v1/pets/3", &[("X-API-Version", "2")], "").await);

    let (s, e) = answer(
        run(
            &p,
            "GET",
            "/v1/pets?limit=0&filter[status]=x&ids=1|a&junk=1",
            &[("x-mode", "secret-value")],
            "",
        )
        .await,
    )
    .unwrap();
    assert_eq!(s, 400);
    let text = e.to_string();
    assert!(!text.contains("secret-value"), "{text}");
    let ins: Vec<(&str, &str)> = e
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["in"].as_str().unwrap(), f["name"].as_str().unwrap()))
        .collect();
    for want in [
        ("query", "limit"),
        ("query", "filter"),
        ("query", "ids"),
        ("header", "x-mode"),
        ("query", "junk"),
    ] {
        assert!(ins.contains(&want), "{want:?} in {ins:?}");
    }
    let (_, e) = answer(run(&p, "GET", "/v1/pets/0", &[], "").await).unwrap();
    let names: Vec<&str> = e
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"petId") && names.contains(&"x-api-version"),
        "{e}"
    );
    assert_eq!(
        answer(run(&p, "GET", "/v2/pets", &[], "").await).unwrap().1,
        json!("no_operation")
    );
    assert_eq!(
        answer(run(&p, "PUT", "/v1/pets", &[], "").await).unwrap(),
        (405, json!("method_not_allowed"))
    );

    // Bodies: nullable, exclusiveMinimum from 3.0, readOnly refused, required.
    let json_ct = [("content-type", "application/json")];
    ok(run(
        &p,
        "POST",
        "/v1/pets",
        &json_ct,
        r#"{"name":"Rex","tag":null,"age":1}"#,
    )
    .await);
    let (_, e) = answer(
        run(
            &p,
            "POST",
            "/v1/pets",
            &json_ct,
            r#"{"id":1,"name":"","age":0}"#,
        )
        .await,
    )
    .unwrap();
    let pointers: Vec<&str> = e
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/id") && pointers.contains(&"/name") && pointers.contains(&"/age"),
        "{e}"
    );
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(
        answer(
            run(
                &p,
                "POST",
                "/v1/pets",
                &[("content-type", "text/plain")],
                "x"
            )
            .await
        )
        .unwrap(),
        (415, json!("unsupported_media_type"))
    );
    let (_, e) = answer(run(&p, "POST", "/v1/pets", &[], "").await).unwrap();
    assert_eq!(e[0]["message"], "the request body is required");
    let (_, e) = answer(run(&p, "POST", "/v1/pets", &json_ct, "{nope").await).unwrap();
    assert!(e[0]["message"].as_str().unwrap().contains("not valid JSON"));
}

#[tokio::test]
async fn spec_31_forms_and_refs_across_files() {
    let p = plugin(json!({"spec": "store-31.json", "status": 422})).unwrap();
    let ct = [("content-type", "application/vnd.shop+json")];
    assert!(
        answer(
            run(
                &p,
                "POST",
                "/api/orders",
                &ct,
                r#"{"qty":1,"note":null,"lines":[{"sku":"abc"}]}"#
            )
            .await
        )
        .is_none()
    );
    let (s, e) = answer(
        run(
            &p,
            "POST",
            "/api/orders",
            &ct,
            r#"{"qty":0,"note":1,"lines":[{"sku":"a"}]}"#,
        )
        .await,
    )
    .unwrap();
    assert_eq!(s, 422);
    assert_eq!(e.as_array().unwrap().len(), 3, "{e}");
    assert!(answer(run(&p, "GET", "/api/orders/o-1?verbose=true", &[], "").await).is_none());
    assert!(answer(run(&p, "GET", "/api/orders/x?verbose=maybe", &[], "").await).is_some());

    let f = plugin(json!({"spec": "forms.yaml"})).unwrap();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert!(
        answer(
            run(
                &f,
                "POST",
                "/login",
                &form,
                "user=alice&remember=true&scopes=read&scopes=write"
            )
            .await
        )
        .is_none()
    );
    let (_, e) = answer(
        run(
            &f,
            "POST",
            "/login",
            &form,
            "user=al&remember=maybe&scopes=x",
        )
        .await,
    )
    .unwrap();
    assert_eq!(e.as_array().unwrap().len(), 3, "{e}");
    let mp = "--XX\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHi there\r\n--XX\r\nContent-Disposition: form-data; name=\"count\"\r\n\r\n3\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x01\x02\r\n--XX--\r\n";
    let mct = [("content-type", "multipart/form-data; boundary=XX")];
    assert!(answer(run(&f, "POST", "/upload", &mct, mp).await).is_none());
    let bad = mp
        .replace("\r\n3\r\n", "\r\n30\r\n")
        .replace("name=\"file\"", "name=\"other\"");
    let (_, e) = answer(run(&f, "POST", "/upload", &mct, &bad).await).unwrap();
    assert_eq!(e.as_array().unwrap().len(), 2, "{e}");
    assert_eq!(f.findings().len(), 2, "{:?}", f.findings());

    let s = plugin(json!({"spec": "split/main.yaml"})).unwrap();
    assert!(answer(run(&s, "GET", "/items?limit=5", &[], "").await).is_none());
    assert!(answer(run(&s, "GET", "/items?limit=500", &[], "").await).is_some());
    assert!(answer(run(&s, "GET", "/items", &[], "").await).is_some());
    let jct = [("content-type", "application/json")];
    assert!(answer(run(&s, "POST", "/items", &jct, r#"{"sku":"ABC"}"#).await).is_none());
    assert!(answer(run(&s, "POST", "/items", &jct, r#"{"sku":"abc"}"#).await).is_some());
    assert!(
        s.findings().iter().any(|f| f.contains("x-internal")),
        "{:?}",
        s.findings()
    );
}

#[test]
fn bad_specs_refuse_the_config() {
    let e = plugin(json!({"spec": "broken.yaml"})).err().unwrap();
    assert_eq!(e.path, "spec");
    assert!(
        e.message.contains("broken.yaml:11:15") && e.message.contains("does not resolve"),
        "{}",
        e.message
    );
    let e = plugin(json!({"spec": "missing.yaml"})).err().unwrap();
    assert!(e.message.contains("cannot read"), "{}", e.message);
    let dir = std::env::temp_dir().join(format!("pt-oas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.yaml"), "openapi: 3.0.0\npaths: [\n").unwrap();
    std::fs::write(dir.join("v2.yaml"), "swagger: '2.0'\n").unwrap();
    let b = |f: &str| {
        OpenApi::new(
            &json!({"spec": f}),
            &BuildCtx {
                scope: "t",
                base_dir: &dir,
            },
        )
        .err()
        .unwrap()
        .message
    };
    assert!(b("bad.yaml").contains("bad.yaml:"), "{}", b("bad.yaml"));
    assert!(b("v2.yaml").contains("not supported"), "{}", b("v2.yaml"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn responses_are_checked() {
    let p = plugin(json!({"spec": "pets-30.yaml", "response": {"mode": "enforce"}})).unwrap();
    let spec_op = match p.find("/v1/pets/3", &http::Method::GET) {
        Found::Op(op, _) => op,
        _ => panic!("no op"),
    };
    let head = |status: u16, ct: &str| {
        let (parts, ()) = http::Response::builder()
            .status(status)
            .header("content-type", ct)
            .body(())
            .unwrap()
            .into_parts();
        parts
    };
    let ok = Bytes::from_static(br#"{"id":1,"name":"Rex"}"#);
    assert!(check_response(&spec_op, &head(200, "application/json"), &ok).is_empty());
    assert_eq!(
        check_response(&spec_op, &head(500, "application/json"), &ok).len(),
        1
    );
    assert_eq!(
        check_response(&spec_op, &head(200, "text/html"), &ok).len(),
        1
    );
    let leaky = Bytes::from_static(br#"{"id":1,"name":"Rex","password":"x"}"#);
    let f = check_response(&spec_op, &head(200, "application/json"), &leaky);
    assert!(f[0].message.contains("write-only"), "{f:?}");
}

/// `(in, name, message)` of each failure of an answer.
fn failures(f: Flow) -> Vec<(String, String, String)> {
    let (_, e) = answer(f).expect("an answer");
    e.as_array()
        .expect("errors")
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or("").to_owned();
            (s("in"), s("name"), s("message"))
        })
        .collect()
}

#[tokio::test]
async fn empty_query_values_need_allow_empty_value() {
    let empty = |name: &str| ("query".into(), name.into(), "must not be empty".into());
    // 3.0: `q` allows an empty value (unchecked against its minLength), `limit` does not.
    let p = plugin(json!({"spec": "pets-30.yaml", "unknown_query": "reject"})).unwrap();
    for uri in [
        "/v1/pets?q=",
        "/v1/pets?q",
        "/v1/pets?q=&q=",
        "/v1/pets?q=ab",
    ] {
        assert!(
            answer(run(&p, "GET", uri, &[], "").await).is_none(),
            "{uri}"
        );
    }
    assert!(answer(run(&p, "GET", "/v1/pets?q=a", &[], "").await).is_some());
    for uri in ["/v1/pets?limit=", "/v1/pets?limit", "/v1/pets?limit=&q="] {
        assert_eq!(
            failures(run(&p, "GET", uri, &[], "").await),
            vec![empty("limit")],
            "{uri}"
        );
    }
    // An exploded array with some values: the empty one is an item the schema judges.
    assert!(answer(run(&p, "GET", "/v1/pets?tags=a&tags=", &[], "").await).is_none());
    assert_eq!(
        failures(run(&p, "GET", "/v1/pets?tags=&ids=", &[], "").await),
        vec![empty("tags"), empty("ids")]
    );
    // deepObject fields are values of their own: `""` is not in the enum.
    let f = failures(run(&p, "GET", "/v1/pets?filter[status]=", &[], "").await);
    assert_eq!((f[0].0.as_str(), f[0].1.as_str()), ("query", "filter"));
    assert_ne!(f[0].2, "must not be empty");

    // 3.1 reads the flag the same way.
    let s = plugin(json!({"spec": "store-31.json"})).unwrap();
    assert!(answer(run(&s, "GET", "/api/orders/o-1?fields=", &[], "").await).is_none());
    assert!(answer(run(&s, "GET", "/api/orders/o-1?fields=A", &[], "").await).is_some());
    assert_eq!(
        failures(run(&s, "GET", "/api/orders/o-1?verbose=", &[], "").await),
        vec![empty("verbose")]
    );

    // `required`: an empty value is there; it passes only with `allowEmptyValue`.
    let dir = std::env::temp_dir().join(format!("pt-oas-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("req.yaml"),
        "openapi: 3.1.0\ninfo: { title: t, version: '1' }\npaths:\n  /s:\n    get:\n      parameters:\n        - { name: a, in: query, required: true, allowEmptyValue: true, schema: { type: integer } }\n        - { name: b, in: query, required: true, schema: { type: string } }\n      responses: { '200': { description: ok } }\n",
    )
    .unwrap();
    let r = OpenApi::new(
        &json!({"spec": "req.yaml"}),
        &BuildCtx {
            scope: "t",
            base_dir: &dir,
        },
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(answer(run(&r, "GET", "/s?a=&b=x", &[], "").await).is_none());
    assert_eq!(
        failures(run(&r, "GET", "/s?a&b", &[], "").await),
        vec![empty("b")]
    );
    let missing = failures(run(&r, "GET", "/s", &[], "").await);
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(
        missing
            .iter()
            .all(|f| f.2 == "required parameter is missing")
    );
}
