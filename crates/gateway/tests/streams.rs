//! End-to-end streaming: large bodies both ways in bounded memory, HTTP/2 trailers, gRPC
//! (unary, server and client streaming, error statuses) and WebSocket tunnels.

#[path = "e2e/harness.rs"]
mod harness;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use harness::*;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

const MIB: usize = 1 << 20;
/// 300 MiB.
const BIG_CHUNKS: usize = 300;

/// A body of `chunks` chunks of 1 MiB, produced as it is read.
fn mib_stream(chunks: usize) -> BoxBody<Bytes, Infallible> {
    let chunk = Bytes::from(vec![b'x'; MIB]);
    let body = StreamBody::new(
        futures_util::stream::repeat(chunk)
            .take(chunks)
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    );
    BodyExt::boxed(body)
}

/// Reads a body to its end, counting bytes without keeping them.
async fn count_body(mut body: Incoming) -> Result<u64, String> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(d) = frame.into_data() {
            n += d.len() as u64;
        }
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    // POST /upload: answers with the byte count it read. GET /download: 300 MiB, streamed.
    let up = upstream(|req: Request<Incoming>| async move {
        if req.uri().path() == "/upload" {
            let body = match count_body(req.into_body()).await {
                Ok(n) => n.to_string(),
                Err(e) => format!("error: {e}"),
            };
            Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        } else {
            Response::builder()
                .header("content-length", (BIG_CHUNKS * MIB).to_string())
                .body(mib_stream(BIG_CHUNKS))
                .expect("response")
        }
    })
    .await;
    let yaml = format!(
        r#"listeners:
  - name: http
    address: 127.0.0.1:0
    limits: {{ max_body_bytes: 1000000000 }}
admin:
  address: 127.0.0.1:0
upstreams:
  big:
    targets: [{{ address: "{}" }}]
    timeouts: {{ response_header: 300s, read_idle: 60s }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: big
"#,
        up.address()
    );
    let gw = Gateway::start(&yaml);
    let (_, hwm_before) = gw.rss_kib();
    let h1: Client<_, BoxBody<Bytes, Infallible>> =
        Client::builder(TokioExecutor::new()).build_http();
    let h2c: Client<_, BoxBody<Bytes, Infallible>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let total = (BIG_CHUNKS * MIB) as u64;
    let mut times = Vec::new();

    // Uploads: HTTP/1.1 chunked (no Content-Length: the size is not known up front),
    // HTTP/1.1 with Content-Length, and HTTP/2 (flow control end to end).
    for (what, client, length) in [
        ("h1 chunked", &h1, false),
        ("h1 content-length", &h1, true),
        ("h2c", &h2c, true),
    ] {
        let t = Instant::now();
        let mut r = req("POST", &gw.url("/upload"));
        if length {
            r = r.header("content-length", total.to_string());
        }
        let resp = client
            .request(r.body(mib_stream(BIG_CHUNKS)).expect("request"))
            .await
            .unwrap_or_else(|e| panic!("{what} upload: {e}"));
        let got = collect(resp).await;
        assert_eq!(
            got.status,
            200,
            "{what}: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            total.to_string(),
            "{what}"
        );
        times.push(format!("upload {what} {:?}", t.elapsed()));
    }

    // Downloads, HTTP/1.1 and HTTP/2.
    for (what, client) in [("h1", &h1), ("h2c", &h2c)] {
        let t = Instant::now();
        let resp = client
            .request(
                req("GET", &gw.url("/download"))
                    .body(BodyExt::boxed(Full::default()))
                    .expect("request"),
            )
            .await
            .unwrap_or_else(|e| panic!("{what} download: {e}"));
        assert_eq!(resp.status(), 200, "{what}");
        assert_eq!(
            resp.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some(total.to_string().as_str()),
            "{what}"
        );
        let n = count_body(resp.into_body()).await.expect("download body");
        assert_eq!(n, total, "{what}");
        times.push(format!("download {what} {:?}", t.elapsed()));
    }

    let (rss, hwm) = gw.rss_kib();
    eprintln!(
        "{}; gateway RSS {rss} KiB, peak {hwm} KiB (before: {hwm_before} KiB)",
        times.join(", ")
    );
    assert!(hwm > 0, "cannot read the gateway's memory use");
    assert!(
        hwm < 150 * 1024,
        "gateway peak RSS {hwm} KiB while moving 5 x 300 MiB: bodies are buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_from_an_h2c_upstream_to_an_h2c_client() {
    let up = upstream(|req: Request<Incoming>| async move {
        let version = format!("{:?}", req.version());
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("sha256:abc123"));
        trailers.insert(
            "x-upstream-version",
            HeaderValue::from_str(&version).expect("v"),
        );
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"part one, "))),
            Ok(Frame::data(Bytes::from_static(b"part two"))),
            Ok(Frame::trailers(trailers)),
        ];
        Response::builder()
            .header("trailer", "x-checksum")
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .expect("response")
    })
    .await;
    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  t:\n    targets: [{{ address: \"{}\" }}]\n    protocol: h2c\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: t\n",
        up.address()
    )));
    let got = send(
        &h2c_client(),
        req("GET", &gw.url("/trailers"))
            .header("te", "trailers")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"part one, part two");
    let trailers = got.trailers.expect("the client got no trailers");
    assert_eq!(
        trailers.get("x-checksum").and_then(|v| v.to_str().ok()),
        Some("sha256:abc123")
    );
    assert_eq!(
        trailers
            .get("x-upstream-version")
            .and_then(|v| v.to_str().ok()),
        Some("HTTP/2.0")
    );
}

/// Hand-written protobuf messages and gRPC plumbing (what tonic-build would generate).
mod grpc {
    use tonic::codegen::{BoxFuture, BoxStream, tokio_stream};
    use tonic::server::{ClientStreamingService, Grpc, ServerStreamingService, UnaryService};
    use tonic::{Request, Response, Status, Streaming};
    use tonic_prost::ProstCodec;

    use crate::harness::{GrpcFuture, GrpcRoutes, grpc_unimplemented};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoRequest {
        #[prost(string, tag = "1")]
        pub message: String,
        #[prost(uint32, tag = "2")]
        pub count: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoReply {
        #[prost(string, tag = "1")]
        pub message: String,
        #[prost(uint32, tag = "2")]
        pub index: u32,
    }

    /// `test.Echo`: `Say` (unary; fails with NotFound for "missing"), `Repeat` (server
    /// streaming: `count` replies, then DataLoss for "fail"), `Join` (client streaming:
    /// joins the messages).
    #[derive(Clone)]
    pub struct EchoServer;

    struct Say;
    impl UnaryService<EchoRequest> for Say {
        type Response = EchoReply;
        type Future = BoxFuture<Response<EchoReply>, Status>;
        fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
            Box::pin(async move {
                let m = req.into_inner().message;
                if m == "missing" {
                    return Err(Status::not_found("no such thing: missing"));
                }
                Ok(Response::new(EchoReply {
                    message: format!("you said {m}"),
                    index: 0,
                }))
            })
        }
    }

    struct Repeat;
    impl ServerStreamingService<EchoRequest> for Repeat {
        type Response = EchoReply;
        type ResponseStream = BoxStream<EchoReply>;
        type Future = BoxFuture<Response<Self::ResponseStream>, Status>;
        fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
            Box::pin(async move {
                let r = req.into_inner();
                let mut items: Vec<Result<EchoReply, Status>> = (0..r.count)
                    .map(|i| {
                        Ok(EchoReply {
                            message: r.message.clone(),
                            index: i,
                        })
                    })
                    .collect();
                if r.message == "fail" {
                    // After some messages: the status can only travel in trailers.
                    items.push(Err(Status::data_loss("lost it after the messages")));
                }
                let s: Self::ResponseStream = Box::pin(tokio_stream::iter(items));
                Ok(Response::new(s))
            })
        }
    }

    struct Join;
    impl ClientStreamingService<EchoRequest> for Join {
        type Response = EchoReply;
        type Future = BoxFuture<Response<EchoReply>, Status>;
        fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
            Box::pin(async move {
                let mut stream = req.into_inner();
                let mut parts = Vec::new();
                while let Some(m) = stream.message().await? {
                    parts.push(m.message);
                }
                Ok(Response::new(EchoReply {
                    message: parts.join("+"),
                    index: parts.len() as u32,
                }))
            })
        }
    }

    impl GrpcRoutes for EchoServer {
        const NAME: &'static str = "test.Echo";

        fn route(&mut self, req: http::Request<tonic::body::Body>) -> GrpcFuture {
            let codec = ProstCodec::<EchoReply, EchoRequest>::default();
            match req.uri().path() {
                "/test.Echo/Say" => {
                    Box::pin(async move { Ok(Grpc::new(codec).unary(Say, req).await) })
                }
                "/test.Echo/Repeat" => {
                    Box::pin(
                        async move { Ok(Grpc::new(codec).server_streaming(Repeat, req).await) },
                    )
                }
                "/test.Echo/Join" => {
                    Box::pin(async move { Ok(Grpc::new(codec).client_streaming(Join, req).await) })
                }
                _ => grpc_unimplemented(),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c_end_to_end() {
    use grpc::{EchoReply, EchoRequest};
    use http::uri::PathAndQuery;
    use tonic_prost::ProstCodec;

    let (addr, server) = start_grpc_upstream(grpc::EchoServer).await;
    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  grpc:\n    targets: [{{ address: \"{addr}\" }}]\n    protocol: h2c\nroutes:\n  - name: echo\n    match: {{ path_prefix: /test.Echo/ }}\n    upstream: grpc\n"
    )));
    let channel = tonic::transport::Endpoint::from_shared(gw.url(""))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the gateway");
    let mut client = tonic::client::Grpc::new(channel);
    let request = |m: &str, count: u32| EchoRequest {
        message: m.to_owned(),
        count,
    };

    // Unary, success.
    client.ready().await.expect("ready");
    let resp: tonic::Response<EchoReply> = client
        .unary(
            tonic::Request::new(request("hello", 0)),
            PathAndQuery::from_static("/test.Echo/Say"),
            ProstCodec::default(),
        )
        .await
        .expect("Say");
    assert_eq!(resp.get_ref().message, "you said hello");
    assert!(resp.metadata().get("x-request-id").is_some());

    // Unary, the server's error status and message arrive intact (trailers pass).
    client.ready().await.expect("ready");
    let err = client
        .unary::<EchoRequest, EchoReply, _>(
            tonic::Request::new(request("missing", 0)),
            PathAndQuery::from_static("/test.Echo/Say"),
            ProstCodec::default(),
        )
        .await
        .expect_err("Say(missing) must fail");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "no such thing: missing");

    // Server streaming.
    client.ready().await.expect("ready");
    let mut stream = client
        .server_streaming::<EchoRequest, EchoReply, _>(
            tonic::Request::new(request("tick", 5)),
            PathAndQuery::from_static("/test.Echo/Repeat"),
            ProstCodec::default(),
        )
        .await
        .expect("Repeat")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(m) = stream.message().await.expect("stream item") {
        assert_eq!(m.message, "tick");
        seen.push(m.index);
    }
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    let trailers = stream.trailers().await.expect("trailers").expect("some");
    assert_eq!(
        trailers.get("grpc-status").and_then(|v| v.to_str().ok()),
        Some("0")
    );

    // Server streaming that fails after two messages: the status is in the trailers.
    client.ready().await.expect("ready");
    let mut stream = client
        .server_streaming::<EchoRequest, EchoReply, _>(
            tonic::Request::new(request("fail", 2)),
            PathAndQuery::from_static("/test.Echo/Repeat"),
            ProstCodec::default(),
        )
        .await
        .expect("Repeat")
        .into_inner();
    assert_eq!(
        stream.message().await.expect("first").map(|m| m.index),
        Some(0)
    );
    assert_eq!(
        stream.message().await.expect("second").map(|m| m.index),
        Some(1)
    );
    let err = stream.message().await.expect_err("the trailing status");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert_eq!(err.message(), "lost it after the messages");

    // Client streaming.
    client.ready().await.expect("ready");
    let msgs = vec![request("a", 0), request("b", 0), request("c", 0)];
    let resp: tonic::Response<EchoReply> = client
        .client_streaming(
            tonic::Request::new(tonic::codegen::tokio_stream::iter(msgs)),
            PathAndQuery::from_static("/test.Echo/Join"),
            ProstCodec::default(),
        )
        .await
        .expect("Join");
    assert_eq!(resp.get_ref().message, "a+b+c");
    assert_eq!(resp.get_ref().index, 3);

    // An unknown method: the server's Unimplemented status arrives as such.
    client.ready().await.expect("ready");
    let err = client
        .unary::<EchoRequest, EchoReply, _>(
            tonic::Request::new(request("x", 0)),
            PathAndQuery::from_static("/test.Echo/Nope"),
            ProstCodec::default(),
        )
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunneled_both_ways() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{
        Request as WsRequest, Response as WsResponse,
    };
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    // An echo WebSocket server; reports the request path and when the client closed.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let seen2 = seen.clone();
                // tungstenite's callback signature, not ours.
                #[allow(clippy::result_large_err)]
                let cb = move |req: &WsRequest, resp: WsResponse| {
                    let _ = seen2.send(format!("path {}", req.uri().path()));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    let _ = seen.send("handshake failed".into());
                    return;
                };
                while let Some(msg) = ws.next().await {
                    match msg {
                        Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                            if ws.send(m).await.is_err() {
                                break;
                            }
                        }
                        Ok(Message::Close(frame)) => {
                            let what = frame
                                .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                                .unwrap_or_default();
                            let _ = seen.send(format!("close {what}"));
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                let _ = seen.send("ended".into());
            });
        }
    });
    let gw = Gateway::start(&config(&format!(
        "upstreams:\n  ws:\n    targets: [{{ address: \"{addr}\" }}]\nroutes:\n  - name: ws\n    match: {{ path_prefix: /ws }}\n    upstream: ws\n"
    )));

    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", gw.http()))
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().get("x-request-id").is_some());
    let next = async |s: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        tokio::time::timeout(Duration::from_secs(5), s.recv())
            .await
            .ok()
            .flatten()
    };
    assert_eq!(next(&mut seen_rx).await.as_deref(), Some("path /ws/chat"));

    let recv = async |ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >| {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("message")
    };
    ws.send(Message::text("hello")).await.expect("send text");
    assert_eq!(recv(&mut ws).await, Message::text("hello"));
    let bin: Vec<u8> = (0..=255u8).cycle().take(256 * 1024).collect();
    ws.send(Message::binary(bin.clone()))
        .await
        .expect("send binary");
    assert_eq!(recv(&mut ws).await, Message::binary(bin));
    // Control frames pass too: the server's automatic pong comes back.
    ws.send(Message::Ping(Bytes::from_static(b"p1")))
        .await
        .expect("ping");
    assert_eq!(
        recv(&mut ws).await,
        Message::Pong(Bytes::from_static(b"p1"))
    );
    ws.send(Message::text("after ping")).await.expect("send");
    assert_eq!(recv(&mut ws).await, Message::text("after ping"));

    // Close: the server sees it and answers, the client stream ends.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    assert_eq!(next(&mut seen_rx).await.as_deref(), Some("close 1000 bye"));
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        let mut msgs = Vec::new();
        while let Some(m) = ws.next().await {
            msgs.push(m);
        }
        msgs
    })
    .await
    .expect("the client stream ends after the close handshake");
    assert!(
        end.iter().all(|m| matches!(m, Ok(Message::Close(_)))),
        "{end:?}"
    );
    assert_eq!(next(&mut seen_rx).await.as_deref(), Some("ended"));

    // The gateway keeps serving plain requests next to it.
    let got = get(&gw.url("/other")).await;
    assert_eq!(got.status, 404);
    server.abort();
}
