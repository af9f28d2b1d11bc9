//! End-to-end gRPC-JSON transcoding (`grpc_transcode`) against a real tonic server: the
//! catalog service of `transcode/catalog.proto` (unary, server and client streaming, errors with
//! details, `HttpBody`), driven with hyper and curl through the real binary.

#[path = "e2e/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::*;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// Hand-written messages and service plumbing of `shop.v1.Catalog` (what tonic-build makes).
mod catalog {
    use std::time::Duration;

    use prost::Message as _;
    use tonic::codegen::{BoxFuture, BoxStream};
    use tonic::server::{ClientStreamingService, Grpc, ServerStreamingService, UnaryService};
    use tonic::{Code, Request, Response, Status, Streaming};
    use tonic_prost::ProstCodec;

    use crate::harness::{GrpcFuture, GrpcRoutes, grpc_unimplemented};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Page {
        #[prost(int32, tag = "1")]
        pub size: i32,
        #[prost(string, tag = "2")]
        pub token: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Book {
        #[prost(int64, tag = "1")]
        pub id: i64,
        #[prost(string, tag = "2")]
        pub shelf: String,
        #[prost(string, tag = "3")]
        pub title: String,
        #[prost(string, repeated, tag = "4")]
        pub tags: Vec<String>,
        #[prost(int32, tag = "5")]
        pub genre: i32,
        #[prost(message, optional, tag = "6")]
        pub published: Option<Timestamp>,
        #[prost(int32, tag = "7")]
        pub page_count: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetBookRequest {
        #[prost(string, tag = "1")]
        pub shelf: String,
        #[prost(int64, tag = "2")]
        pub id: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListBooksRequest {
        #[prost(int64, repeated, tag = "1")]
        pub ids: Vec<i64>,
        #[prost(message, optional, tag = "2")]
        pub page: Option<Page>,
        #[prost(int32, tag = "3")]
        pub genre: i32,
        #[prost(bool, tag = "4")]
        pub in_stock: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListBooksResponse {
        #[prost(message, repeated, tag = "1")]
        pub books: Vec<Book>,
        #[prost(string, tag = "2")]
        pub next_page_token: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateBookRequest {
        #[prost(string, tag = "1")]
        pub shelf: String,
        #[prost(message, optional, tag = "2")]
        pub book: Option<Book>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MoveRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub to_shelf: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HttpBody {
        #[prost(string, tag = "1")]
        pub content_type: String,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutCoverRequest {
        #[prost(int64, tag = "1")]
        pub id: i64,
        #[prost(message, optional, tag = "2")]
        pub cover: Option<HttpBody>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FailRequest {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(bool, tag = "3")]
        pub with_details: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WatchRequest {
        #[prost(int32, tag = "1")]
        pub count: i32,
        #[prost(int32, tag = "2")]
        pub interval_ms: i32,
        #[prost(bool, tag = "3")]
        pub fail_after: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImportSummary {
        #[prost(int32, tag = "1")]
        pub count: i32,
        #[prost(string, repeated, tag = "2")]
        pub titles: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ErrorReason {
        #[prost(string, tag = "1")]
        pub reason: String,
        #[prost(string, tag = "2")]
        pub field: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcStatus {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    fn book(id: i64, shelf: &str) -> Book {
        Book {
            id,
            shelf: shelf.to_owned(),
            title: format!("book {id}"),
            tags: vec!["a".into(), "b".into()],
            genre: 1,
            published: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            page_count: 0,
        }
    }

    /// A unary method made of a closure.
    struct Unary<F>(F);

    impl<Q, R, F> UnaryService<Q> for Unary<F>
    where
        Q: Send + 'static,
        R: Send + 'static,
        F: Fn(Q) -> Result<R, Status> + Send + Clone + 'static,
    {
        type Response = R;
        type Future = BoxFuture<Response<R>, Status>;
        fn call(&mut self, req: Request<Q>) -> Self::Future {
            let f = self.0.clone();
            Box::pin(async move { f(req.into_inner()).map(Response::new) })
        }
    }

    struct Watch;
    impl ServerStreamingService<WatchRequest> for Watch {
        type Response = Book;
        type ResponseStream = BoxStream<Book>;
        type Future = BoxFuture<Response<Self::ResponseStream>, Status>;
        fn call(&mut self, req: Request<WatchRequest>) -> Self::Future {
            Box::pin(async move {
                let r = req.into_inner();
                if r.count < 0 {
                    return Err(Status::invalid_argument("count must not be negative"));
                }
                let s = futures_util::stream::unfold(0, move |i| async move {
                    if i > r.count {
                        return None;
                    }
                    if i == r.count {
                        return r
                            .fail_after
                            .then(|| (Err(Status::data_loss("the feed broke")), i + 1));
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(r.interval_ms as u64)).await;
                    }
                    Some((Ok(book(i64::from(i), "feed")), i + 1))
                });
                Ok(Response::new(Box::pin(s) as Self::ResponseStream))
            })
        }
    }

    struct Import;
    impl ClientStreamingService<Book> for Import {
        type Response = ImportSummary;
        type Future = BoxFuture<Response<ImportSummary>, Status>;
        fn call(&mut self, req: Request<Streaming<Book>>) -> Self::Future {
            Box::pin(async move {
                let mut s = req.into_inner();
                let mut titles = Vec::new();
                while let Some(b) = s.message().await? {
                    titles.push(b.title);
                }
                Ok(Response::new(ImportSummary {
                    count: titles.len() as i32,
                    titles,
                }))
            })
        }
    }

    fn fail(r: FailRequest) -> Result<Book, Status> {
        let code = Code::from(r.code);
        if !r.with_details {
            return Err(Status::new(code, r.message));
        }
        let detail = ErrorReason {
            reason: "TOO_LONG".into(),
            field: "title".into(),
        };
        let st = RpcStatus {
            code: r.code,
            message: r.message.clone(),
            details: vec![
                Any {
                    type_url: "type.googleapis.com/shop.v1.ErrorReason".into(),
                    value: detail.encode_to_vec(),
                },
                Any {
                    type_url: "type.googleapis.com/unknown.Thing".into(),
                    value: vec![1, 2, 3],
                },
            ],
        };
        Err(Status::with_details(
            code,
            r.message,
            st.encode_to_vec().into(),
        ))
    }

    /// `shop.v1.Catalog`.
    #[derive(Clone)]
    pub struct Catalog;

    macro_rules! unary {
        ($req:expr, $q:ty, $r:ty, $f:expr) => {{
            let codec = ProstCodec::<$r, $q>::default();
            let req = $req;
            Box::pin(async move { Ok(Grpc::new(codec).unary(Unary($f), req).await) })
        }};
    }

    impl GrpcRoutes for Catalog {
        const NAME: &'static str = "shop.v1.Catalog";

        fn route(&mut self, req: http::Request<tonic::body::Body>) -> GrpcFuture {
            let timeout = req
                .headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            match req.uri().path() {
                "/shop.v1.Catalog/GetBook" => {
                    unary!(req, GetBookRequest, Book, move |r: GetBookRequest| {
                        if r.id == 404 {
                            return Err(Status::not_found(format!("no book {}", r.id)));
                        }
                        let mut b = book(r.id, &r.shelf);
                        if !timeout.is_empty() {
                            b.tags.push(format!("timeout={timeout}"));
                        }
                        Ok(b)
                    })
                }
                "/shop.v1.Catalog/ListBooks" | "/shop.v1.Catalog/ListTitles" => {
                    unary!(
                        req,
                        ListBooksRequest,
                        ListBooksResponse,
                        |r: ListBooksRequest| {
                            let page = r.page.unwrap_or_default();
                            Ok(ListBooksResponse {
                                books: r
                                    .ids
                                    .iter()
                                    .map(|id| {
                                        let mut b = book(*id, "list");
                                        b.genre = r.genre;
                                        b.title = format!(
                                            "size={} token={} in_stock={}",
                                            page.size, page.token, r.in_stock
                                        );
                                        b
                                    })
                                    .collect(),
                                next_page_token: "next".into(),
                            })
                        }
                    )
                }
                "/shop.v1.Catalog/CreateBook" => {
                    unary!(req, CreateBookRequest, Book, |r: CreateBookRequest| {
                        let mut b = r.book.unwrap_or_default();
                        b.shelf = r.shelf;
                        b.id = 100;
                        Ok(b)
                    })
                }
                "/shop.v1.Catalog/UpdateBook" => {
                    unary!(req, Book, Book, |mut b: Book| {
                        b.page_count += 1;
                        Ok(b)
                    })
                }
                "/shop.v1.Catalog/MoveBook" => unary!(req, MoveRequest, Book, |r: MoveRequest| {
                    let mut b = book(1, &r.to_shelf);
                    b.title = r.name;
                    Ok(b)
                }),
                "/shop.v1.Catalog/GetCover" => {
                    unary!(req, GetBookRequest, HttpBody, |r: GetBookRequest| Ok(
                        HttpBody {
                            content_type: "image/png".into(),
                            data: format!("PNG{}", r.id).into_bytes(),
                        }
                    ))
                }
                "/shop.v1.Catalog/PutCover" => {
                    unary!(req, PutCoverRequest, Book, |r: PutCoverRequest| {
                        let c = r.cover.unwrap_or_default();
                        let mut b = book(r.id, "covers");
                        b.title =
                            format!("{} {}", c.content_type, String::from_utf8_lossy(&c.data));
                        Ok(b)
                    })
                }
                "/shop.v1.Catalog/Fail" => unary!(req, FailRequest, Book, fail),
                "/shop.v1.Catalog/WatchBooks" => {
                    let codec = ProstCodec::<Book, WatchRequest>::default();
                    Box::pin(async move { Ok(Grpc::new(codec).server_streaming(Watch, req).await) })
                }
                "/shop.v1.Catalog/ImportBooks" => {
                    let codec = ProstCodec::<ImportSummary, Book>::default();
                    Box::pin(
                        async move { Ok(Grpc::new(codec).client_streaming(Import, req).await) },
                    )
                }
                _ => grpc_unimplemented(),
            }
        }
    }
}

const PROTO: &str = include_str!("transcode/catalog.proto");

fn transcode_config(addr: SocketAddr, plugin: &str) -> String {
    config(&format!(
        "upstreams:\n  catalog:\n    targets: [{{ address: \"{addr}\" }}]\n    protocol: h2c\nroutes:\n  - name: catalog\n    match: {{ path_prefix: / }}\n    upstream: catalog\n    timeout: 5s\n    plugins:\n      grpc_transcode:\n{plugin}"
    ))
}

const PROTO_PLUGIN: &str =
    "        proto: { files: [catalog.proto] }\n        services: [shop.v1.Catalog]\n";

async fn start(plugin: &str) -> (Gateway, tokio::task::JoinHandle<()>) {
    let (addr, task) = start_grpc_upstream(catalog::Catalog).await;
    let yaml = transcode_config(addr, plugin).replacen(
        "    address: 127.0.0.1:0\nadmin",
        "    address: 127.0.0.1:0\n    limits: { max_body_bytes: 65536 }\nadmin",
        1,
    );
    let gw = Gateway::start_with(&yaml, |d| {
        std::fs::write(d.join("catalog.proto"), PROTO).expect("write proto");
    });
    (gw, task)
}

async fn call(method: &str, url: &str, body: &str) -> Got {
    send(
        &h1_client(),
        req(method, url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_binding_forms() {
    let (gw, _up) = start(PROTO_PLUGIN).await;

    // GET with path variables; int64 as a string, enums by name, Timestamp as RFC 3339,
    // defaults left out.
    let got = call("GET", &gw.url("/v1/shelves/s1/books/7"), "").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert!(got.header("grpc-status").is_none());
    assert_eq!(
        got.json(),
        json!({"id": "7", "shelf": "s1", "title": "book 7", "tags": ["a", "b", "timeout=5000m"],
               "genre": "FICTION", "published": "2023-11-14T22:13:20Z"})
    );

    // additional_bindings.
    let got = call("GET", &gw.url("/v1/books/8"), "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["id"], "8");

    // Query: repeated, nested, enum, bool.
    let got = call(
        "GET",
        &gw.url("/v1/books?ids=1&ids=2&page.size=10&page.token=x%20y&genre=HISTORY&inStock=true"),
        "",
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let v = got.json();
    assert_eq!(v["books"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["books"][1]["id"], "2");
    assert_eq!(v["books"][0]["genre"], "HISTORY");
    assert_eq!(v["books"][0]["title"], "size=10 token=x y in_stock=true");
    assert_eq!(v["nextPageToken"], "next");

    // response_body.
    let got = call("GET", &gw.url("/v1/titles?ids=5"), "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()[0]["id"], "5");

    // body: "field" plus a path variable.
    let got = call(
        "POST",
        &gw.url("/v1/shelves/s9/books"),
        r#"{"title": "Dune", "tags": ["sf"], "pageCount": 412}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(
        got.json(),
        json!({"id": "100", "shelf": "s9", "title": "Dune", "tags": ["sf"], "pageCount": 412})
    );

    // body: "*" with the path variable winning over the body.
    let got = call(
        "PATCH",
        &gw.url("/v1/books/3"),
        r#"{"id": "99", "title": "t"}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), json!({"id": "3", "title": "t", "pageCount": 1}));

    // A {name=shelves/*/books/*} variable and a custom verb.
    let got = call(
        "POST",
        &gw.url("/v1/shelves/a/books/b:move"),
        r#"{"toShelf": "z"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["title"], "shelves/a/books/b");
    assert_eq!(got.json()["shelf"], "z");

    // HttpBody both ways.
    let got = call("GET", &gw.url("/v1/books/4/cover"), "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(&got.body[..], b"PNG4");
    let got = send(
        &h1_client(),
        req("PUT", &gw.url("/v1/books/4/cover"))
            .header("content-type", "image/gif")
            .body(Full::new(Bytes::from_static(b"GIF89a")))
            .expect("request"),
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["title"], "image/gif GIF89a");

    // The same through curl, over HTTP/2 this time.
    let (code, out, err) = curl(&["--http2-prior-knowledge", &gw.url("/v1/books/12")]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON from curl");
    assert_eq!(v["id"], "12");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refusals_and_limits() {
    let (gw, _up) = start(PROTO_PLUGIN).await;
    let check = |got: &Got, status: u16, code: &str, needle: &str| {
        assert_eq!(got.status, status, "{}", String::from_utf8_lossy(&got.body));
        let v = got.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "`{msg}` should mention `{needle}`");
    };
    check(
        &call("GET", &gw.url("/v2/nothing"), "").await,
        404,
        "no_operation",
        "/v2/nothing",
    );
    let got = call("DELETE", &gw.url("/v1/books/1"), "").await;
    check(&got, 405, "method_not_allowed", "DELETE");
    assert!(got.header("allow").is_some_and(|a| a.contains("GET")));
    check(
        &call("GET", &gw.url("/v1/books?color=red"), "").await,
        400,
        "bad_request",
        "color",
    );
    check(
        &call("POST", &gw.url("/v1/shelves/s/books"), "{not json").await,
        400,
        "bad_request",
        "malformed JSON",
    );
    check(
        &call(
            "POST",
            &gw.url("/v1/shelves/s/books"),
            r#"{"pageCount": "many"}"#,
        )
        .await,
        400,
        "bad_request",
        "book.pageCount",
    );
    check(
        &call(
            "POST",
            &gw.url("/v1/shelves/s/books"),
            r#"{"colour": "red"}"#,
        )
        .await,
        400,
        "bad_request",
        "colour",
    );
    check(
        &call("GET", &gw.url("/v1/books/abc"), "").await,
        400,
        "bad_request",
        "id",
    );
    // The listener's max_body_bytes (64 KiB here): with a Content-Length, and chunked
    // (read by the body phase up to the limit).
    let big = format!(r#"{{"title": "{}"}}"#, "x".repeat(100 * 1024));
    check(
        &call("POST", &gw.url("/v1/shelves/s/books"), &big).await,
        413,
        "body_too_large",
        "larger",
    );
    let file = gw.dir.path().join("big.json");
    std::fs::write(&file, &big).expect("write body");
    let (code, out, err) = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        "-w",
        "\n%{http_code}",
        &gw.url("/v1/shelves/s/books"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("\n413"), "{out}");
    assert!(out.contains("body_too_large"), "{out}");

    // unknown_query: ignore relaxes the query check only.
    drop(gw);
    let (gw, _up2) = start(&format!("{PROTO_PLUGIN}        unknown_query: ignore\n")).await;
    let got = call("GET", &gw.url("/v1/books?ids=4&color=red"), "").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["books"][0]["id"], "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_map_to_http() {
    let (gw, _up) = start(PROTO_PLUGIN).await;
    // Trailers-only error (tonic answers a failed unary call that way).
    let got = call("GET", &gw.url("/v1/books/404"), "").await;
    assert_eq!(got.status, 404);
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.json(),
        json!({"code": 5, "message": "no book 404", "details": []})
    );

    for (code, http) in [
        (3, 400),
        (4, 504),
        (7, 403),
        (8, 429),
        (12, 501),
        (13, 500),
        (14, 503),
        (16, 401),
        (6, 409),
        (9, 400),
    ] {
        let got = call(
            "GET",
            &gw.url(&format!("/v1/fail/{code}?message=m%C3%BC")),
            "",
        )
        .await;
        assert_eq!(got.status, http, "grpc code {code}");
        assert_eq!(got.json()["code"], code);
        assert_eq!(got.json()["message"], "mü");
    }

    // Details: known types decoded, unknown ones left as base64.
    let got = call(
        "GET",
        &gw.url("/v1/fail/3?message=bad&withDetails=true"),
        "",
    )
    .await;
    assert_eq!(got.status, 400);
    assert_eq!(
        got.json()["details"],
        json!([
            {"@type": "type.googleapis.com/shop.v1.ErrorReason", "reason": "TOO_LONG", "field": "title"},
            {"@type": "type.googleapis.com/unknown.Thing", "value": "AQID"}
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_pass_untouched_and_deadlines_travel() {
    use catalog::{Book, GetBookRequest};
    let (gw, _up) = start(PROTO_PLUGIN).await;
    let channel = tonic::transport::Endpoint::from_shared(gw.url(""))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.expect("ready");
    let resp: tonic::Response<Book> = client
        .unary(
            tonic::Request::new(GetBookRequest {
                shelf: "g".into(),
                id: 21,
            }),
            http::uri::PathAndQuery::from_static("/shop.v1.Catalog/GetBook"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("a plain gRPC call through the transcoding route");
    assert_eq!(resp.get_ref().id, 21);
    assert_eq!(resp.get_ref().shelf, "g");

    // A client grpc-timeout shorter than the route's wins.
    let got = send(
        &h1_client(),
        req("GET", &gw.url("/v1/books/5"))
            .header("grpc-timeout", "1500m")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["tags"][2], "timeout=1500m");
}

/// Reads a streamed response, noting when each chunk arrived.
async fn timed_chunks(url: &str, accept: Option<&str>) -> (Got, Vec<(Duration, Bytes)>) {
    let mut b = req("GET", url);
    if let Some(a) = accept {
        b = b.header("accept", a);
    }
    let started = Instant::now();
    let resp = h1_client()
        .request(b.body(Full::default()).expect("request"))
        .await
        .expect("response");
    let (parts, mut body) = resp.into_parts();
    let mut chunks = Vec::new();
    let mut all = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Ok(d) = frame.into_data() {
            all.extend_from_slice(&d);
            chunks.push((started.elapsed(), d));
        }
    }
    (
        Got {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(all),
            trailers: None,
        },
        chunks,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_formats() {
    let (gw, _up) = start(PROTO_PLUGIN).await;

    // JSON array, message by message: the first arrives long before the last.
    let (got, chunks) = timed_chunks(&gw.url("/v1/books:watch?count=3&intervalMs=400"), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/json"));
    let v = got.json();
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v[2]["id"], "2");
    let first = chunks.first().expect("chunks").0;
    let last = chunks.last().expect("chunks").0;
    assert!(
        last - first >= Duration::from_millis(600),
        "messages should arrive as they are sent: first at {first:?}, last at {last:?}"
    );

    // NDJSON by Accept, with an error after the first messages as a final object.
    let (got, _) = timed_chunks(
        &gw.url("/v1/books:watch?count=2&intervalMs=10&failAfter=true"),
        Some("application/x-ndjson"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = std::str::from_utf8(&got.body)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["id"], "1");
    assert_eq!(
        lines[2],
        json!({"error": {"code": 15, "message": "the feed broke", "details": []}})
    );

    // SSE by Accept.
    let (got, _) = timed_chunks(
        &gw.url("/v1/books:watch?count=2&intervalMs=10&failAfter=true"),
        Some("text/event-stream"),
    )
    .await;
    assert_eq!(got.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8_lossy(&got.body).into_owned();
    assert!(
        text.starts_with("data: {\"shelf\":\"feed\",\"title\":\"book 0\""),
        "{text}"
    );
    assert!(text.contains("event: error\ndata: {\"error\""), "{text}");

    // JSON array with the error as its last element.
    let (got, _) = timed_chunks(&gw.url("/v1/books:watch?count=1&failAfter=true"), None).await;
    let v = got.json();
    assert_eq!(v[0]["title"], "book 0");
    assert_eq!(v[1]["error"]["code"], 15);

    // An error before any message (trailers-only) keeps its HTTP status.
    let (got, _) = timed_chunks(&gw.url("/v1/books:watch?count=-1"), None).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["code"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_from_a_json_array() {
    let (gw, _up) = start(PROTO_PLUGIN).await;
    let got = call(
        "POST",
        &gw.url("/v1/books:import"),
        r#"[{"title": "a"}, {"title": "b"}, {"title": "c"}]"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json(), json!({"count": 3, "titles": ["a", "b", "c"]}));
    let got = call("POST", &gw.url("/v1/books:import"), r#"[{"title": 1}]"#).await;
    assert_eq!(got.status, 400);
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[0]") && m.contains("title")),
        "{}",
        got.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_sets_admin_routes_and_reload() {
    let (addr, _up) = start_grpc_upstream(catalog::Catalog).await;
    let google = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/src/transcode/protos"
    );
    let yaml = transcode_config(
        addr,
        "        descriptor: catalog.pb\n        services: [shop.v1.Catalog]\n        print: { use_proto_field_names: true, emit_defaults: true, enums_as_ints: true }\n",
    );
    let gw = Gateway::start_with(&yaml, |d| {
        std::fs::write(d.join("catalog.proto"), PROTO).expect("write proto");
        let out = std::process::Command::new("protoc")
            .arg(format!("-I{}", d.display()))
            .arg(format!("-I{google}"))
            .arg("--include_imports")
            .arg(format!("-o{}", d.join("catalog.pb").display()))
            .arg(d.join("catalog.proto"))
            .output()
            .expect("protoc is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let got = call("GET", &gw.url("/v1/books/3"), "").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let v = got.json();
    assert_eq!(v["page_count"], 0, "emit_defaults and proto names: {v}");
    assert_eq!(v["genre"], 1, "enums as numbers: {v}");

    let routes = get(&gw.admin_url("/admin/routes")).await.json();
    let ops = &routes[0]["operations"];
    assert!(
        ops.as_array().is_some_and(|a| a.iter().any(|o| o
            == &json!({"method": "GET", "path": "/v1/shelves/{shelf}/books/{id}", "grpc": "shop.v1.Catalog.GetBook"}))),
        "{routes}"
    );
    assert!(
        ops.as_array().is_some_and(|a| a
            .iter()
            .any(|o| o["path"] == "/v1/{name=shelves/*/books/*}:move")),
        "{routes}"
    );

    // A broken descriptor is refused with file and reason; the old one keeps serving.
    std::fs::write(gw.dir.path().join("catalog.pb"), b"\xffnot a descriptor").expect("write");
    let resp = h1_client()
        .request(
            req("POST", &gw.admin_url("/admin/reload"))
                .body(Full::default())
                .expect("request"),
        )
        .await
        .expect("reload");
    let got = collect(resp).await;
    let text = String::from_utf8_lossy(&got.body).into_owned();
    assert!(
        got.status.is_client_error() || got.status.is_server_error(),
        "{text}"
    );
    assert!(text.contains("catalog.pb"), "{text}");
    assert_eq!(call("GET", &gw.url("/v1/books/3"), "").await.status, 200);

    // A changed descriptor: the new binding serves after the reload.
    let changed = PROTO.replace("get: \"/v1/books/{id}\"", "get: \"/v2/books/{id}\"");
    std::fs::write(gw.dir.path().join("catalog.proto"), changed).expect("write proto");
    let out = std::process::Command::new("protoc")
        .arg(format!("-I{}", gw.dir.path().display()))
        .arg(format!("-I{google}"))
        .arg("--include_imports")
        .arg(format!("-o{}", gw.dir.path().join("catalog.pb").display()))
        .arg(gw.dir.path().join("catalog.proto"))
        .output()
        .expect("protoc");
    assert!(out.status.success());
    let resp = h1_client()
        .request(
            req("POST", &gw.admin_url("/admin/reload"))
                .body(Full::default())
                .expect("request"),
        )
        .await
        .expect("reload");
    assert_eq!(resp.status(), 200);
    assert_eq!(call("GET", &gw.url("/v2/books/3"), "").await.status, 200);
    // /v1/books/{id} is left to PATCH only.
    assert_eq!(call("GET", &gw.url("/v1/books/3"), "").await.status, 405);
}

#[test]
fn bad_annotations_refuse_the_config() {
    let proto = PROTO.replace("get: \"/v1/fail/{code}\"", "get: \"/v1/fail/{code\"");
    let yaml = transcode_config("127.0.0.1:1".parse().expect("addr"), PROTO_PLUGIN);
    let (code, out, err) = validate_in(&yaml, |d| {
        std::fs::write(d.join("catalog.proto"), &proto).expect("write proto");
    });
    assert_ne!(code, 0);
    let text = format!("{out}{err}");
    assert!(text.contains("catalog.proto"), "{text}");
    assert!(text.contains("shop.v1.Catalog.Fail"), "{text}");
    assert!(text.contains("{code"), "{text}");

    let (code, out, err) = validate_in(&yaml, |d| {
        std::fs::write(d.join("catalog.proto"), "syntax = \"proto3\"; message {").expect("write");
    });
    assert_ne!(code, 0);
    let text = format!("{out}{err}");
    assert!(text.contains("catalog.proto"), "{text}");
}
