//! Client-facing listeners: accept loops, TLS handshakes, HTTP/1.1 and HTTP/2 (ALPN or h2c
//! prior knowledge) on one port, connection limits, slow-client and idle timeouts, draining.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use http::{HeaderValue, StatusCode};

use crate::errors::GatewayError;
use crate::framing::FramingWatch;
use crate::snapshot::ListenerRuntime;
use crate::state::{ConnInfo, ConnState, Shared};
use crate::tls::Failure;
use portcullis_plugins::ClientIdentity;

/// A bound listener and the switch that stops its accept loop.
struct Running {
    configured: SocketAddr,
    local: SocketAddr,
    stop: watch::Sender<bool>,
    gate: Arc<Gate>,
}

/// Open connections of one listener against its `max_connections`, which a reload may change
/// while connections are open (a semaphore sized at start could not follow it).
#[derive(Default)]
struct Gate {
    open: std::sync::atomic::AtomicUsize,
    /// Woken when a connection ends or a reload may have changed the limit.
    changed: Notify,
    /// Open connections by client address, kept while `max_connections_per_ip` is set. Touched
    /// once per accepted and once per closed connection, never per request.
    per_ip: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

impl Gate {
    /// Takes a per-address slot for `ip` unless it already holds `cap` connections.
    fn admit(&self, ip: IpAddr, cap: usize) -> bool {
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return false;
        }
        *n += 1;
        true
    }
}

/// Holds one of a listener's connection slots (and its client's, when counted); frees them on
/// drop.
struct Slot(Arc<Gate>, Option<IpAddr>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.1 {
            let mut m = self.0.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// The set of running listeners, kept in step with the config across reloads.
#[derive(Default)]
pub struct Listeners {
    running: HashMap<String, Running>,
}

/// Sockets bound for a new config, not yet serving.
pub struct Prepared {
    bound: Vec<(String, SocketAddr, TcpListener)>,
}

impl Listeners {
    /// Binds the listeners of `wanted` that are new or moved. Nothing changes on failure, so a
    /// reload whose address cannot be bound is refused as a whole.
    pub async fn prepare(&self, wanted: &[(String, SocketAddr)]) -> io::Result<Prepared> {
        let mut bound = Vec::new();
        for (name, addr) in wanted {
            if self
                .running
                .get(name)
                .is_some_and(|r| r.configured == *addr)
            {
                continue;
            }
            let l = bind(*addr).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener `{name}` cannot bind {addr}: {e}"),
                )
            })?;
            bound.push((name.clone(), *addr, l));
        }
        Ok(Prepared { bound })
    }

    /// Starts the prepared listeners and stops those not in `wanted` (or moved). Stopped
    /// listeners close their socket; their open connections finish normally.
    pub fn commit(
        &mut self,
        prepared: Prepared,
        wanted: &[(String, SocketAddr)],
        shared: &Arc<Shared>,
    ) {
        for (name, configured, listener) in prepared.bound {
            let local = listener.local_addr().unwrap_or(configured);
            let (stop, stop_rx) = watch::channel(false);
            if let Some(old) = self.running.remove(&name) {
                let _ = old.stop.send(true);
            }
            info!(listener = %name, address = %local, "listening");
            let gate = Arc::new(Gate::default());
            tokio::spawn(accept_loop(
                listener,
                name.clone(),
                shared.clone(),
                gate.clone(),
                stop_rx,
            ));
            self.running.insert(
                name,
                Running {
                    configured,
                    local,
                    stop,
                    gate,
                },
            );
        }
        // Listeners that stay pick up a changed `max_connections` from the new snapshot.
        for r in self.running.values() {
            r.gate.changed.notify_one();
        }
        let keep: Vec<&String> = wanted.iter().map(|(n, _)| n).collect();
        self.running.retain(|name, r| {
            let stays = keep.contains(&name);
            if !stays {
                info!(listener = %name, "listener removed");
                let _ = r.stop.send(true);
            }
            stays
        });
    }

    /// Bound addresses by listener name.
    pub fn addresses(&self) -> HashMap<String, SocketAddr> {
        self.running
            .iter()
            .map(|(n, r)| (n.clone(), r.local))
            .collect()
    }

    /// Stops every accept loop.
    pub fn stop_all(&mut self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        self.running.clear();
    }
}

async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn accept_loop(
    listener: TcpListener,
    name: String,
    shared: Arc<Shared>,
    gate: Arc<Gate>,
    mut stop: watch::Receiver<bool>,
) {
    let accepted = shared.metrics.connections.with_label_values(&[&name]);
    let open = shared.metrics.open_gauge(&name);
    let refused_per_ip = shared
        .metrics
        .refused_connections
        .with_label_values(&[&name, "per_ip_limit"]);
    loop {
        // At the connection limit, stop accepting: new clients wait in the kernel backlog.
        // The limit is read from the current snapshot, so a reload moves it.
        loop {
            let limit = shared
                .snapshot
                .load()
                .listeners
                .get(&name)
                .and_then(|l| l.limits.max_connections);
            if limit.is_none_or(|l| gate.open.load(Ordering::Acquire) < l) {
                break;
            }
            tokio::select! {
                _ = gate.changed.notified() => {}
                _ = stop.changed() => return,
            }
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Some(rt) = shared.snapshot.load().listeners.get(&name).cloned() else {
            return;
        };
        accepted.inc();
        // One address may not hold more than its share: closed before TLS or any read.
        let counted = match rt.limits.max_connections_per_ip {
            Some(cap) if !gate.admit(peer.ip(), cap) => {
                refused_per_ip.inc();
                debug!(listener = %name, %peer, cap, "connection over the per-address cap refused");
                drop(stream);
                continue;
            }
            Some(_) => Some(peer.ip()),
            None => None,
        };
        gate.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(gate.clone(), counted);
        let shared = shared.clone();
        let open = open.clone();
        let task = async move {
            open.inc();
            let _drain = shared.enter();
            serve_conn(stream, peer, rt, shared).await;
            open.dec();
            drop(slot);
        };
        tokio::spawn(task);
    }
}

async fn serve_conn(
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
enum ServerIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Counts reads and writes for the connection's watchdog and follows HTTP/1.1 framing.
struct Counted {
    io: ServerIo,
    info: Arc<ConnInfo>,
    framing: Option<FramingWatch>,
    /// A contract error being written in place of one of hyper's own answers.
    rewrite: Option<Box<Rewrite>>,
}

/// Replacement bytes for a head hyper wrote, and how much of hyper's buffer they stand for.
struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    consumed: usize,
}

/// Recognises the answer hyper writes by itself to an HTTP/1.1 request it cannot parse (a
/// malformed head, differing duplicate Content-Length, a head past its buffer, a URI too
/// long): status 400, 431 or 414, an empty body, `connection: close`, and none of the headers
/// every gateway response carries (`x-request-id`). hyper offers no hook for these, so the contract's JSON error is
/// swapped in as the bytes go out. Returns the error, the length of hyper's head, and its
/// `date` line.
fn hyper_auto_error(buf: &[u8], max_header_bytes: usize) -> Option<(GatewayError, usize, &[u8])> {
    let status = buf.strip_prefix(b"HTTP/1.1 ")?.get(..4)?;
    let err = match status {
        b"400 " => GatewayError::bad_request("malformed request head"),
        b"431 " => GatewayError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers larger than {max_header_bytes} bytes"),
        ),
        b"414 " => GatewayError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "request target longer than the request head may be",
        ),
        _ => return None,
    };
    let window = &buf[..buf.len().min(512)];
    let end = window.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..end];
    let mut date: &[u8] = b"";
    let (mut empty, mut closing) = (false, false);
    for line in head.split(|b| *b == b'\n').skip(1) {
        if line.starts_with(b"x-request-id:") {
            return None;
        }
        empty |= line == b"content-length: 0\r";
        closing |= line == b"connection: close\r";
        if line.starts_with(b"date: ") {
            date = line;
        }
    }
    (empty && closing).then_some((err, end, date))
}

impl Counted {
    /// Writes `buf` through, or, for one of hyper's own error heads, the contract's JSON error
    /// instead (reported as `buf`'s head written).
    fn write_or_rewrite(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        if self.rewrite.is_none() {
            let h1 = self.framing.as_ref().is_some_and(|w| !w.switched);
            if !h1 || !buf.starts_with(b"HTTP/1.1 4") {
                return None;
            }
            let (err, consumed, date) =
                hyper_auto_error(buf, self.info.listener.limits.max_header_bytes)?;
            let rid = crate::proxy::new_request_id();
            let rid = rid.to_str().unwrap_or("0");
            let mut extra = date.to_vec();
            if !extra.is_empty() {
                extra.push(b'\n');
            }
            debug!(peer = %self.info.peer, status = err.status.as_u16(), request_id = rid, "request head refused by the HTTP/1.1 parser");
            self.info
                .shared
                .metrics
                .refused_heads
                .with_label_values(&[&self.info.listener.name, err.status.as_str()])
                .inc();
            let bytes = crate::errors::render_http1(&err, rid, &extra);
            let line = self
                .framing
                .as_ref()
                .map_or((None, None), FramingWatch::request_line);
            let rec = crate::telemetry::Record::refused_head(
                self.info.listener.name.clone(),
                self.info.peer.ip(),
                line,
                HeaderValue::from_str(rid).unwrap_or_else(|_| HeaderValue::from_static("0")),
                err.status.as_u16(),
                err.code,
            );
            crate::telemetry::log_unrouted(
                &rec,
                bytes.len() as u64,
                &self.info.shared.snapshot.load(),
            );
            self.rewrite = Some(Box::new(Rewrite {
                bytes,
                written: 0,
                consumed,
            }));
        }
        let rw = self.rewrite.as_mut()?;
        while rw.written < rw.bytes.len() {
            let r = match &mut self.io {
                ServerIo::Plain(s) => Pin::new(s).poll_write(cx, &rw.bytes[rw.written..]),
                ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, &rw.bytes[rw.written..]),
            };
            match r {
                Poll::Ready(Ok(0)) => return Some(Poll::Ready(Ok(0))),
                Poll::Ready(Ok(n)) => rw.written += n,
                other => return Some(other),
            }
        }
        let consumed = rw.consumed;
        self.rewrite = None;
        self.info.state.activity.fetch_add(1, Ordering::Relaxed);
        Some(Poll::Ready(Ok(consumed)))
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = match &mut this.io {
            ServerIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if buf.filled().len() > before {
            this.info.state.reads.fetch_add(1, Ordering::Relaxed);
            this.info.state.activity.fetch_add(1, Ordering::Relaxed);
            if let Some(w) = &mut this.framing {
                w.feed(&buf.filled()[before..]);
                if w.ambiguous != 0 {
                    this.info
                        .state
                        .ambiguous
                        .store(w.ambiguous, Ordering::Relaxed);
                }
            }
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = this.write_or_rewrite(cx, buf) {
            return r;
        }
        let r = match &mut this.io {
            ServerIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.info.state.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(r) = this.write_or_rewrite(cx, first)
        {
            return r;
        }
        let r = match &mut this.io {
            ServerIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.info.state.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ServerIo::Plain(s) => s.is_write_vectored(),
            ServerIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ServerIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ServerIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hyper_auto_error;

    #[test]
    fn only_hyper_s_own_error_heads_are_recognised() {
        let own = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 14:28:52 GMT\r\n\r\n";
        let (e, end, date) = hyper_auto_error(own, 1024).expect("hyper's own 400");
        assert_eq!(
            (e.status.as_u16(), e.code, end),
            (400, "bad_request", own.len())
        );
        assert_eq!(date, b"date: Mon, 23 Nov 2026 14:28:52 GMT\r");
        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            hyper_auto_error(big, 1024).expect("431").0.code,
            "headers_too_large"
        );
        for other in [
            // A response the gateway made or proxied: it carries X-Request-ID.
            &b"HTTP/1.1 400 Bad Request\r\nx-request-id: abc\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            // With a body, or on a connection that stays open.
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            // Another status, or a head not whole in this write.
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-len",
        ] {
            assert!(hyper_auto_error(other, 1024).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
