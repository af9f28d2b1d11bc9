//! Real servers on loopback for the service client's tests: a hyper server (HTTP/1.1 and
//! h2c, or TLS with ALPN) that records what it received, raw TCP servers that misbehave,
//! a black hole, a small DNS server and rcgen certificates.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// What a server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A running test server.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub https: bool,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Server {
    /// `scheme://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// `scheme://127.0.0.1:port` as the client names origins.
    pub fn origin(&self) -> String {
        self.url("")
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn hits(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

pub fn text(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("response")
}

pub fn redirect(status: u16, location: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("location", location)
        .body(Full::new(Bytes::from_static(b"moved")))
        .expect("response")
}

type Tls = Option<Arc<rustls::ServerConfig>>;

/// A plaintext server (HTTP/1.1 and h2c) calling `f` with each request, body read.
pub async fn server<F, Fut>(f: F) -> Server
where
    F: Fn(Seen) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve(None, f).await
}

/// The same over TLS with this config (its ALPN decides h2 or HTTP/1.1).
pub async fn tls_server<F, Fut>(cfg: Arc<rustls::ServerConfig>, f: F) -> Server
where
    F: Fn(Seen) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve(Some(cfg), f).await
}

async fn serve<F, Fut>(tls: Tls, f: F) -> Server
where
    F: Fn(Seen) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = Server {
        addr: l.local_addr().expect("addr"),
        https: tls.is_some(),
        seen: Arc::default(),
        connections: Arc::default(),
    };
    let s = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let f = f.clone();
            let seen = s.seen.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let f = f.clone();
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let s = Seen {
                            method: parts.method,
                            uri: parts.uri,
                            headers: parts.headers,
                            body,
                        };
                        seen.lock().expect("lock").push(s.clone());
                        Ok::<_, Infallible>(f(s).await)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(cfg) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                        else {
                            return;
                        };
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    server
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
pub struct Certs {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

/// Certificates for `127.0.0.1`; the server offers `alpn`.
pub fn certs(alpn: &[&[u8]]) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Certs {
        ca_pem: ca.pem(),
        server: Arc::new(cfg),
    }
}

/// A raw TCP server: `f` gets each accepted connection.
pub async fn raw<F, Fut>(f: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(f(s));
        }
    });
    (addr, accepted)
}

/// Reads one request head (and nothing after it).
pub async fn read_head(s: &mut TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Waits until the peer closes (EOF or error), up to `limit`; true when it did.
pub async fn closed_by_peer(s: &mut TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A listener whose accept backlog is full: connecting to it hangs (SYNs are dropped).
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _fillers: Vec<TcpStream>,
}

pub async fn black_hole() -> BlackHole {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener = s.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
            Ok(Ok(c)) => fillers.push(c),
            _ => break,
        }
    }
    BlackHole {
        addr,
        _listener: listener,
        _fillers: fillers,
    }
}

/// A DNS server answering A queries for `name` with `ip` (others: no records); `silent`
/// answers nothing at all.
pub async fn dns_server(name: &'static str, ip: [u8; 4], silent: bool) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            if silent || n < 12 {
                continue;
            }
            let q = &buf[..n];
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).into_owned());
                i += 1 + len;
            }
            let qend = i + 5;
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let hit = labels.join(".").eq_ignore_ascii_case(name) && qtype == 1;
            let mut resp = Vec::new();
            resp.extend_from_slice(&q[0..2]);
            resp.extend_from_slice(&[0x81, 0x80, 0, 1]);
            resp.extend_from_slice(&u16::from(hit).to_be_bytes());
            resp.extend_from_slice(&[0, 0, 0, 0]);
            resp.extend_from_slice(&q[12..qend]);
            if hit {
                resp.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
                resp.extend_from_slice(&ip);
            }
            let _ = sock.send_to(&resp, peer).await;
        }
    });
    addr
}
