//! A TLS connection generator: opens connections for a while, each with one handshake and one
//! small HTTP/1.1 request (`Connection: close`), either always with a full handshake or
//! resuming the session of an earlier connection (TLS 1.3 tickets, TLS 1.2 tickets), and prints
//! how many it made and how many resumed. `bench/run.sh` runs it against Portcullis and nginx
//! and divides each server's CPU time by the connections: full against resumed.
//!
//! Run: `cargo run --release -p portcullis --example tls_handshakes -- ADDR SERVER_NAME CA_PEM
//! VERSION MODE SECONDS CONCURRENCY` with VERSION `1.2` or `1.3` and MODE `full` or `resumed`.
//! Prints `connections=N resumed=R errors=E seconds=S`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    resumed: AtomicU64,
    errors: AtomicU64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut next = |what: &str| args.next().ok_or(format!("{what} missing"));
    let addr: SocketAddr = next("ADDR")?.parse()?;
    let name = ServerName::try_from(next("SERVER_NAME")?)?;
    let ca = next("CA_PEM")?;
    let version = match next("VERSION")?.as_str() {
        "1.2" => &rustls::version::TLS12,
        "1.3" => &rustls::version::TLS13,
        v => return Err(format!("VERSION {v}: 1.2 or 1.3").into()),
    };
    let resume = match next("MODE")?.as_str() {
        "full" => false,
        "resumed" => true,
        m => return Err(format!("MODE {m}: full or resumed").into()),
    };
    let seconds: u64 = next("SECONDS")?.parse()?;
    let concurrency: usize = next("CONCURRENCY")?.parse()?;

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca)? {
        roots.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.resumption = if resume {
        Resumption::in_memory_sessions(4096)
    } else {
        Resumption::disabled()
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        name.to_str()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (connector, name, request, counts) = (
                connector.clone(),
                name.clone(),
                request.clone(),
                counts.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    match one(&connector, addr, name.clone(), &request).await {
                        Ok(resumed) => {
                            counts.connections.fetch_add(1, Ordering::Relaxed);
                            if resumed {
                                counts.resumed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    println!(
        "connections={} resumed={} errors={} seconds={:.3}",
        counts.connections.load(Ordering::Relaxed),
        counts.resumed.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One connection: handshake, request, the whole answer. Returns whether it resumed.
async fn one(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: ServerName<'static>,
    request: &str,
) -> std::io::Result<bool> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name, tcp).await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    // Reading to the end also takes in TLS 1.3 session tickets, sent after the handshake.
    match tls.read_to_end(&mut buf).await {
        Ok(_) => {}
        // A server may close without close_notify once the answer is out.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e),
    }
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("not a 200 answer"));
    }
    Ok(resumed)
}
