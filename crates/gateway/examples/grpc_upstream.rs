//! The gRPC upstream of `bench/profiles.sh` (the transcoding profile): a tonic server of the
//! `bench.v1.Items` service of `bench/transcode/items.proto`, one unary method, answered from
//! memory so the server is never what the benchmark measures.
//!
//! - `grpc_upstream serve IP:PORT`: serves `bench.v1.Items/GetItem` over h2c until killed.
//! - `grpc_upstream request FILE`: writes the gRPC-framed request the benchmark's plain-gRPC
//!   client sends (the same call as the JSON request `bench/transcode/request.json`).
//!
//! Run: `cargo run --release -p portcullis --example grpc_upstream -- serve 127.0.0.1:50051`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use prost::Message as _;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// `bench.v1.GetItemRequest`, written by hand to match items.proto (what prost-build makes).
#[derive(Clone, PartialEq, prost::Message)]
struct GetItemRequest {
    #[prost(string, tag = "1")]
    shelf: String,
    #[prost(int64, tag = "2")]
    id: i64,
    #[prost(bool, tag = "3")]
    with_stock: bool,
}

/// `bench.v1.Item`.
#[derive(Clone, PartialEq, prost::Message)]
struct Item {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(string, tag = "2")]
    shelf: String,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, repeated, tag = "4")]
    tags: Vec<String>,
    #[prost(int64, tag = "5")]
    price_cents: i64,
    #[prost(int32, tag = "6")]
    stock: i32,
}

/// The one method: an item made from the request.
#[derive(Clone, Copy)]
struct GetItem;

impl UnaryService<GetItemRequest> for GetItem {
    type Response = Item;
    type Future = BoxFuture<Response<Item>, Status>;

    fn call(&mut self, req: Request<GetItemRequest>) -> Self::Future {
        let r = req.into_inner();
        Box::pin(async move {
            Ok(Response::new(Item {
                id: r.id,
                name: format!("item {}", r.id),
                shelf: r.shelf,
                tags: vec!["bench".into(), "small".into()],
                price_cents: 1999,
                stock: if r.with_stock { 7 } else { 0 },
            }))
        })
    }
}

/// The `bench.v1.Items` service as tonic's generated code would route it.
#[derive(Clone, Copy)]
struct Items;

impl NamedService for Items {
    const NAME: &'static str = "bench.v1.Items";
}

impl Service<http::Request<tonic::body::Body>> for Items {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() == "/bench.v1.Items/GetItem" {
            let codec = ProstCodec::<Item, GetItemRequest>::default();
            Box::pin(async move { Ok(Grpc::new(codec).unary(GetItem, req).await) })
        } else {
            Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) })
        }
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", addr] => serve(addr.parse()?),
        ["request", file] => {
            // The same call as bench/transcode/request.json.
            let msg = GetItemRequest {
                shelf: "fiction".into(),
                id: 42,
                with_stock: true,
            }
            .encode_to_vec();
            let mut framed = Vec::with_capacity(5 + msg.len());
            framed.push(0); // not compressed
            framed.extend_from_slice(&u32::try_from(msg.len())?.to_be_bytes());
            framed.extend_from_slice(&msg);
            std::fs::write(file, framed)?;
            Ok(())
        }
        _ => Err("usage: grpc_upstream serve IP:PORT | grpc_upstream request FILE".into()),
    }
}

fn serve(addr: std::net::SocketAddr) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tonic::transport::Server::builder()
            .add_service(Items)
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    })
}
