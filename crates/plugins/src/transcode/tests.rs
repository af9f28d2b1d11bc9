use super::*;

const PROTO: &str = r#"
syntax = "proto3";
package t.v1;
import "google/api/annotations.proto";
service S {
  rpc Get(GetReq) returns (Item) { option (google.api.http) = { get: "/v1/items/{id}" }; }
  rpc Special(GetReq) returns (Item) { option (google.api.http) = { get: "/v1/items/special" }; }
  rpc Put(Item) returns (Item) { option (google.api.http) = { put: "/v1/items/{id}" body: "*" }; }
  rpc Add(AddReq) returns (Item) {
    option (google.api.http) = { post: "/v1/{parent.name=groups/*}/items" body: "item" };
  }
}
message GetReq { int64 id = 1; repeated string tags = 2; Page page = 3; Kind kind = 4; bool flag = 5; }
message Page { int32 size = 1; }
enum Kind { K_UNSPECIFIED = 0; BIG = 1; }
message Item { int64 id = 1; string name = 2; }
message Parent { string name = 1; }
message AddReq { Parent parent = 1; Item item = 2; }
"#;

fn plugin(extra: &str) -> (GrpcTranscode, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("pt-transcode-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.proto"), PROTO).unwrap();
    let conf: Value = serde_json::from_str(&format!(
        r#"{{"proto": {{"files": ["t.proto"]}}, "services": ["t.v1.S"] {extra}}}"#
    ))
    .unwrap();
    let p = build(
        &conf,
        &BuildCtx {
            scope: "r",
            base_dir: &dir,
        },
    )
    .unwrap();
    assert_eq!(p.name(), "grpc_transcode");
    let described = p.describe().unwrap();
    assert!(described.as_array().is_some_and(|a| a.len() == 4));
    // The concrete type, for the phases' helpers.
    let pool = descriptors::load_pool(&Source::Protos {
        files: vec![dir.join("t.proto")],
        include: vec![dir.clone()],
    })
    .unwrap();
    let bindings = descriptors::bindings(&pool, &["t.v1.S".into()]).unwrap();
    (
        GrpcTranscode {
            api: Api { pool, bindings },
            print: Print::default(),
            stream: StreamFormat::JsonArray,
            ignore_unknown: extra.contains("ignore"),
        },
        dir,
    )
}

fn ctx() -> RequestCtx {
    RequestCtx::new(
        HeaderValue::from_static("rid"),
        std::net::IpAddr::from([127, 0, 0, 1]),
        Arc::from("l"),
    )
}

fn head(method: &str, uri: &str) -> http::request::Parts {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// Runs the request phases and returns the protobuf message sent, decoded, as JSON.
fn transcode(
    p: &GrpcTranscode,
    method: &str,
    uri: &str,
    body: &str,
) -> Result<(String, Value), String> {
    let mut c = ctx();
    let mut parts = head(method, uri);
    if let Flow::Respond(r) = p.route(&mut c, &parts) {
        return Err(format!("{r:?}"));
    }
    let Step::Done(Flow::Continue) = p.on_upstream_request(&mut c, &mut parts) else {
        return Err("upstream phase".into());
    };
    let mut b = Bytes::from(body.to_owned());
    match p.on_request_body(&mut c, &mut parts, &mut b) {
        Step::Done(Flow::Continue) => {}
        Step::Done(Flow::Respond(r)) => return Err(format!("{r:?}")),
        Step::Pending(_) => return Err("pending".into()),
    }
    assert_eq!(parts.method, Method::POST);
    assert_eq!(parts.headers["content-type"], "application/grpc");
    let call = c.extensions.get::<Call>().unwrap();
    let mut buf = BytesMut::from(&b[..]);
    let frame = next_frame(&mut buf).unwrap().unwrap();
    let msg = prost_reflect::DynamicMessage::decode(call.binding.rpc.input(), frame).unwrap();
    Ok((
        parts.uri.path().to_owned(),
        serde_json::to_value(&msg).unwrap(),
    ))
}

#[test]
fn maps_path_query_and_body() {
    let (p, dir) = plugin("");
    let (path, v) = transcode(
        &p,
        "GET",
        "/v1/items/7?tags=a&tags=b&page.size=3&kind=BIG&flag=true",
        "",
    )
    .unwrap();
    assert_eq!(path, "/t.v1.S/Get");
    assert_eq!(
        v,
        serde_json::json!({"id": "7", "tags": ["a", "b"], "page": {"size": 3}, "kind": "BIG", "flag": true})
    );
    let (path, _) = transcode(&p, "GET", "/v1/items/special", "").unwrap();
    assert_eq!(
        path, "/t.v1.S/Special",
        "the literal template is more specific"
    );
    let (_, v) = transcode(&p, "PUT", "/v1/items/5", r#"{"id": "1", "name": "n"}"#).unwrap();
    assert_eq!(v, serde_json::json!({"id": "5", "name": "n"}));
    let (path, v) = transcode(&p, "POST", "/v1/groups/g1/items", r#"{"name": "x"}"#).unwrap();
    assert_eq!(path, "/t.v1.S/Add");
    assert_eq!(
        v,
        serde_json::json!({"parent": {"name": "groups/g1"}, "item": {"name": "x"}})
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn refuses_what_cannot_be_transcoded() {
    let (p, dir) = plugin("");
    let e = transcode(&p, "GET", "/v1/nothing", "").unwrap_err();
    assert!(e.contains("no_operation"), "{e}");
    let e = transcode(&p, "DELETE", "/v1/items/1", "").unwrap_err();
    assert!(e.contains("method_not_allowed"), "{e}");
    let e = transcode(&p, "GET", "/v1/items/1?nope=1", "").unwrap_err();
    assert!(e.contains("unknown query parameter `nope`"), "{e}");
    let e = transcode(&p, "PUT", "/v1/items/1", r#"{"name": 5}"#).unwrap_err();
    assert!(e.contains("name"), "{e}");
    let e = transcode(&p, "PUT", "/v1/items/1", r#"{"other": 5}"#).unwrap_err();
    assert!(e.contains("other"), "{e}");
    let e = transcode(&p, "PUT", "/v1/items/1", r#"{"#).unwrap_err();
    assert!(e.contains("malformed JSON"), "{e}");
    let (p, _) = plugin(r#", "unknown_query": "ignore""#);
    assert!(transcode(&p, "GET", "/v1/items/1?nope=1", "").is_ok());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_annotations_name_file_method_and_reason() {
    let dir = std::env::temp_dir().join(format!("pt-transcode-bad-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("t.proto"),
        PROTO.replace("/v1/items/special", "/v1/items/{x"),
    )
    .unwrap();
    let conf = serde_json::json!({"proto": {"files": ["t.proto"]}, "services": ["t.v1.S"]});
    let e = build(
        &conf,
        &BuildCtx {
            scope: "r",
            base_dir: &dir,
        },
    )
    .unwrap_err();
    assert_eq!(e.path, "services");
    assert!(
        e.message.contains("t.proto") && e.message.contains("t.v1.S.Special"),
        "{}",
        e.message
    );
    let conf = serde_json::json!({"proto": {"files": ["t.proto"]}, "services": ["t.v1.Nope"]});
    let e = build(
        &conf,
        &BuildCtx {
            scope: "r",
            base_dir: &dir,
        },
    )
    .unwrap_err();
    assert!(e.message.contains("t.v1.S"), "{}", e.message);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn grpc_timeouts() {
    assert_eq!(
        parse_grpc_timeout("1500m"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
    assert_eq!(parse_grpc_timeout("x"), None);
    assert_eq!(parse_grpc_timeout("123456789S"), None);
    assert_eq!(format_grpc_timeout(Duration::from_secs(5)), "5000m");
}
