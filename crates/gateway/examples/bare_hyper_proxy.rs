//! A bare hyper 1 reverse proxy on a current-thread runtime: the floor a hyper-based gateway
//! starts from. `bench/run.sh` runs it next to Portcullis and nginx so the report can say how
//! much Portcullis adds on top of hyper itself.
//!
//! Run: `cargo run --release -p portcullis --example bare_hyper_proxy -- LISTEN UPSTREAM`
//! (both `IP:PORT`).

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or("LISTEN missing")?.parse()?;
    let upstream: SocketAddr = args.next().ok_or("UPSTREAM missing")?.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        let uri: Uri = format!("http://{upstream}{pq}").parse().expect("valid uri");
                        *req.uri_mut() = uri;
                        let resp = match client.request(req).await {
                            Ok(r) => r,
                            Err(_) => {
                                let mut r = http::Response::new(http_body_util::Empty::new());
                                *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                                return Ok::<_, Infallible>(r.map(
                                    |b: http_body_util::Empty<bytes::Bytes>| {
                                        http_body_util::BodyExt::boxed_unsync(
                                            http_body_util::BodyExt::map_err(
                                                b,
                                                |never| match never {},
                                            ),
                                        )
                                    },
                                ));
                            }
                        };
                        Ok(resp.map(|b| {
                            http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                                b,
                                |e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) },
                            ))
                        }))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
