//! One client connection, from the TLS handshake to its end: hyper's HTTP/1.1 and HTTP/2
//! server on it, and the watchdog that times slow heads and idle connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::framing::FramingWatch;
use super::io::Counted;
use super::tls::Failure;
use crate::snapshot::ListenerRuntime;
use crate::state::{ConnInfo, ConnState, Shared};
use portcullis_plugins::ClientIdentity;

/// Serves one accepted connection until it ends, times out or drains.
pub(super) async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    rt: Arc<ListenerRuntime>,
    shared: Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    let limits = rt.limits.clone();
    let (io, h2_only, client_cert) = match &rt.tls {
        None => (ServerIo::Plain(stream), None, None),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            // Boxed: the handshake's state is large and only needed for the first moments of
            // a connection; inline, every connection's task would carry it for its whole life.
            let handshake = Box::pin(acceptor.accept(stream));
            match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(s)) => {
                    let conn = s.get_ref().1;
                    let h2 = conn.alpn_protocol() == Some(b"h2");
                    tls.counters.completed(conn.handshake_kind());
                    let client_cert = conn
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|der| match ClientIdentity::from_der(der) {
                            Ok(id) => Some(Arc::new(id)),
                            Err(e) => {
                                warn!(listener = %rt.name, %peer, error = %e, "verified client certificate cannot be read; treated as absent");
                                None
                            }
                        });
                    (ServerIo::Tls(Box::new(s)), Some(h2), client_cert)
                }
                Ok(Err(e)) => {
                    let why = Failure::of(&e);
                    tls.counters.failed(why);
                    debug!(listener = %rt.name, %peer, reason = why.label(), error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tls.counters.failed(Failure::Timeout);
                    debug!(listener = %rt.name, %peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let mut stop = shared_stop(&shared);
    let info = Arc::new(ConnInfo {
        peer,
        tls: h2_only.is_some(),
        client_cert,
        listener: rt,
        state: ConnState::default(),
        shared,
    });
    let framing = (h2_only != Some(true)).then(|| FramingWatch::new(limits.max_header_bytes));
    let io = TokioIo::new(Counted {
        io,
        info: info.clone(),
        framing,
        rewrite: None,
    });
    let svc_info = info.clone();
    let svc = service_fn(move |req| crate::proxy::handle(req, svc_info.clone()));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Our watchdog times slow heads and idle connections separately (hyper's own timer
        // would also cut idle keep-alive connections at the header timeout).
        .header_read_timeout(None)
        .keep_alive(true)
        .max_headers(1000)
        .max_buf_size((limits.max_header_bytes * 2).max(16 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(1000);
    let builder = match h2_only {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    };
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);

    let head_timeout = limits.header_read_timeout;
    let idle_timeout = limits.idle_timeout;
    let tick = (head_timeout.min(idle_timeout) / 3).max(Duration::from_millis(20));
    let state = &info.state;
    let (mut last_reads, mut last_activity, mut last_calls) = (0u64, 0u64, 0u64);
    let mut head_since: Option<Instant> = None;
    let mut idle_since = Instant::now();
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => {
                if let Err(e) = res {
                    debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {
                let now = Instant::now();
                let reads = state.reads.load(Ordering::Relaxed);
                let activity = state.activity.load(Ordering::Relaxed);
                let calls = state.calls.load(Ordering::Relaxed);
                let busy = state.in_flight.load(Ordering::Relaxed) > 0;
                if busy || calls != last_calls {
                    head_since = None;
                    idle_since = now;
                } else if reads != last_reads && !state.h2.load(Ordering::Relaxed) {
                    // Bytes came in but no request started: a head is arriving.
                    head_since.get_or_insert(now);
                    idle_since = now;
                } else if activity != last_activity {
                    idle_since = now;
                }
                if head_since.is_some_and(|h| now.duration_since(h) >= head_timeout) {
                    debug!(%peer, "request head not complete in time; closing");
                    return;
                }
                if !busy && !draining && now.duration_since(idle_since) >= idle_timeout {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                (last_reads, last_activity, last_calls) = (reads, activity, calls);
            }
            _ = stop.changed(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// The process-wide shutdown signal.
fn shared_stop(shared: &Shared) -> watch::Receiver<bool> {
    shared.shutdown.subscribe()
}

/// A client connection, plain or TLS.
pub(super) enum ServerIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}
