//! An upstream: a named set of targets, how to pick one, and how to send a request to it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body::Body;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::{debug, warn};

use crate::balance::{Balancer, Policy};
use crate::body::ResponseBody;
use crate::connect::{self, TlsSettings};
use crate::error::{BoxError, Error, ErrorKind, classify_hyper};
use crate::pool::{MODE_H1, MODE_H2, MODE_UNKNOWN, PoolConfig, TargetPool};
use crate::stats::TargetStats;

/// Wire protocol towards the targets of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over plaintext with prior knowledge.
    H2c,
    /// HTTP/2 when TLS ALPN agrees, else HTTP/1.1 (the downgrade is logged and counted).
    Auto,
}

/// The three upstream timeouts, each its own error kind.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Name resolution, TCP connect and TLS handshake together.
    pub connect: Duration,
    /// From sending the request to receiving the complete response head.
    pub response_header: Duration,
    /// Longest silence between response body frames (not a cap on the whole body).
    pub read_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            response_header: Duration::from_secs(15),
            read_idle: Duration::from_secs(30),
        }
    }
}

/// One target as configured.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Relative weight.
    pub weight: u32,
}

/// Everything needed to build an [`Upstream`].
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Name, for logs and metrics.
    pub name: String,
    /// Targets.
    pub targets: Vec<TargetConfig>,
    /// Protocol.
    pub protocol: Protocol,
    /// TLS, when the targets speak it.
    pub tls: Option<TlsSettings>,
    /// Balancing policy.
    pub policy: Policy,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Pool settings.
    pub pool: PoolConfig,
}

/// One target of an upstream: its connections and counters.
pub struct Target<B> {
    /// `host:port`.
    pub authority: Arc<str>,
    host: String,
    port: u16,
    /// Weight as configured.
    pub weight: u32,
    pub(crate) pool: TargetPool<B>,
    /// Counters.
    pub stats: TargetStats,
}

impl<B> Target<B> {
    /// Idle pooled HTTP/1.1 connections now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    /// Protocol in use: "h1", "h2" or "unknown" (auto, before the first connection).
    pub fn negotiated(&self) -> &'static str {
        match self.pool.mode() {
            MODE_H1 => "http1",
            MODE_H2 => "h2",
            _ => "unknown",
        }
    }
}

impl<B> std::fmt::Debug for Target<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("authority", &self.authority)
            .field("weight", &self.weight)
            .finish()
    }
}

/// A named set of targets with pools, a balancer and timeouts. Cheap to clone.
pub struct Upstream<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Upstream<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B> {
    name: Arc<str>,
    targets: Vec<Arc<Target<B>>>,
    balancer: Balancer,
    cfg: UpstreamConfig,
}

enum Sender<B> {
    H1 {
        tx: http1::SendRequest<B>,
        reused: bool,
    },
    H2(http2::SendRequest<B>),
}

/// Decrements a target's in-flight count unless handed on to the response body.
struct InFlight<B>(Option<Arc<Target<B>>>);

impl<B> InFlight<B> {
    fn new(t: &Arc<Target<B>>) -> Self {
        t.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Some(t.clone()))
    }

    fn hand_on(mut self) -> Arc<Target<B>> {
        // Always Some until here; the body takes over the decrement.
        self.0.take().unwrap_or_else(|| unreachable!())
    }
}

impl<B> Drop for InFlight<B> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<B> Upstream<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// Builds an upstream. Inside a Tokio runtime it also starts a task closing expired idle
    /// connections; the task ends when the upstream is dropped.
    pub fn new(cfg: UpstreamConfig) -> Self {
        let mode = match cfg.protocol {
            Protocol::Http1 => MODE_H1,
            Protocol::H2c => MODE_H2,
            Protocol::Auto => MODE_UNKNOWN,
        };
        let targets: Vec<Arc<Target<B>>> = cfg
            .targets
            .iter()
            .map(|t| {
                let authority: Arc<str> = if t.host.contains(':') {
                    format!("[{}]:{}", t.host, t.port).into()
                } else {
                    format!("{}:{}", t.host, t.port).into()
                };
                Arc::new(Target {
                    authority,
                    host: t.host.clone(),
                    port: t.port,
                    weight: t.weight,
                    pool: TargetPool::new(cfg.pool, mode),
                    stats: TargetStats::default(),
                })
            })
            .collect();
        let weights: Vec<u32> = cfg.targets.iter().map(|t| t.weight).collect();
        let names: Vec<&str> = targets.iter().map(|t| &*t.authority).collect();
        let balancer = Balancer::new(cfg.policy, &weights, &names);
        let inner = Arc::new(Inner {
            name: cfg.name.as_str().into(),
            targets,
            balancer,
            cfg,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap_idle(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its targets, in config order.
    pub fn targets(&self) -> &[Arc<Target<B>>] {
        &self.inner.targets
    }

    /// Its config.
    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.cfg
    }

    /// Picks a target; `key` is the request's hash for consistent hashing.
    pub fn pick(&self, key: Option<u64>) -> Option<Arc<Target<B>>> {
        let targets = &self.inner.targets;
        self.inner
            .balancer
            .pick(
                key,
                |_| true,
                |i| targets[i].stats.in_flight.load(Ordering::Relaxed),
            )
            .map(|i| targets[i].clone())
    }

    /// Picks a target and sends the request to it.
    pub async fn send(
        &self,
        req: Request<B>,
        key: Option<u64>,
    ) -> Result<Response<ResponseBody<B>>, Error> {
        let target = self
            .pick(key)
            .ok_or_else(|| Error::new(ErrorKind::NoHealthyTarget))?;
        self.send_to(&target, req).await
    }

    /// Sends the request to `target`. The URI may be origin-form (`/path?q`): the client sets
    /// what each protocol needs. A pooled connection that turns out closed before the request
    /// could be written is replaced by a fresh one, transparently.
    pub async fn send_to(
        &self,
        target: &Arc<Target<B>>,
        mut req: Request<B>,
    ) -> Result<Response<ResponseBody<B>>, Error> {
        target.stats.requests.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight::new(target);
        let fail = |e: Error| {
            target.stats.record_error(e.kind());
            e.with_target(target.authority.clone())
        };
        let mut sender = self.sender(target).await.map_err(fail)?;
        let rh = self.inner.cfg.timeouts.response_header;
        loop {
            let is_h2 = matches!(sender, Sender::H2(_));
            self.prepare(target, &mut req, is_h2);
            let (result, checkin) = match sender {
                Sender::H1 { mut tx, reused } => {
                    let fut = tx.try_send_request(req);
                    match tokio::time::timeout(rh, fut).await {
                        Err(_) => {
                            return Err(fail(
                                Error::new(ErrorKind::ResponseHeaderTimeout).with_timeout(rh),
                            ));
                        }
                        Ok(Ok(resp)) => (Ok(resp), Some(tx)),
                        Ok(Err(mut e)) => match e.take_message() {
                            // Never written: safe to send again on a fresh connection.
                            Some(back) if reused => {
                                debug!(target = %target.authority, "pooled connection was closed; retrying on a new one");
                                target.stats.stale_recovered.fetch_add(1, Ordering::Relaxed);
                                req = back;
                                sender = self.connect_new(target).await.map_err(fail)?;
                                continue;
                            }
                            _ => (Err(classify_hyper(e.into_error())), None),
                        },
                    }
                }
                Sender::H2(mut tx) => {
                    let fut = tx.try_send_request(req);
                    match tokio::time::timeout(rh, fut).await {
                        Err(_) => {
                            return Err(fail(
                                Error::new(ErrorKind::ResponseHeaderTimeout).with_timeout(rh),
                            ));
                        }
                        Ok(Ok(resp)) => (Ok(resp), None),
                        Ok(Err(e)) => (Err(classify_hyper(e.into_error())), None),
                    }
                }
            };
            let resp = result.map_err(fail)?;
            // A switched protocol owns the connection now; it never returns to the pool.
            let checkin = checkin.filter(|_| resp.status() != StatusCode::SWITCHING_PROTOCOLS);
            let read_idle = self.inner.cfg.timeouts.read_idle;
            let target = in_flight.hand_on();
            return Ok(resp.map(|b| ResponseBody::new(b, read_idle, checkin, target)));
        }
    }

    /// Sets the URI form and Host the connection's protocol needs.
    fn prepare(&self, target: &Target<B>, req: &mut Request<B>, h2: bool) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<Authority>().ok())
            .or_else(|| req.uri().authority().cloned());
        if h2 {
            let authority = host.unwrap_or_else(|| {
                Authority::from_maybe_shared(Bytes::copy_from_slice(target.authority.as_bytes()))
                    .unwrap_or_else(|_| Authority::from_static("upstream"))
            });
            let scheme = if self.inner.cfg.tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            };
            let pq = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme);
            parts.authority = Some(authority);
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
            req.headers_mut().remove(header::HOST);
            *req.version_mut() = http::Version::HTTP_2;
        } else {
            if !req.headers().contains_key(header::HOST) {
                let value = match &host {
                    Some(a) => HeaderValue::from_str(a.as_str()),
                    None => HeaderValue::from_str(&target.authority),
                };
                if let Ok(v) = value {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
            if req.uri().scheme().is_some() {
                let pq = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(pq);
            }
            *req.version_mut() = http::Version::HTTP_11;
        }
    }

    /// A connection to send on: the shared HTTP/2 one, a pooled HTTP/1.1 one, or a new one.
    async fn sender(&self, target: &Arc<Target<B>>) -> Result<Sender<B>, Error> {
        if target.pool.mode() == MODE_H2 {
            let mut slot = target.pool.h2.lock().await;
            if let Some(tx) = slot.as_ref()
                && !tx.is_closed()
            {
                target.stats.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(Sender::H2(tx.clone()));
            }
            let s = self.connect_new(target).await?;
            if let Sender::H2(tx) = &s {
                *slot = Some(tx.clone());
            }
            return Ok(s);
        }
        if let Some(tx) = target.pool.checkout() {
            target.stats.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(Sender::H1 { tx, reused: true });
        }
        let s = self.connect_new(target).await?;
        if let Sender::H2(tx) = &s {
            // `auto` discovered HTTP/2 on this first connection: share it from now on.
            *target.pool.h2.lock().await = Some(tx.clone());
        }
        Ok(s)
    }

    /// Connects and handshakes, choosing the protocol by config or ALPN.
    async fn connect_new(&self, target: &Arc<Target<B>>) -> Result<Sender<B>, Error> {
        let cfg = &self.inner.cfg;
        let io = connect::connect(
            &target.host,
            target.port,
            cfg.tls.as_ref(),
            cfg.timeouts.connect,
        )
        .await?;
        target.stats.connects.fetch_add(1, Ordering::Relaxed);
        let use_h2 = match cfg.protocol {
            Protocol::Http1 => false,
            Protocol::H2c => true,
            Protocol::Auto => {
                let h2 = io.alpn_h2();
                let new_mode = if h2 { MODE_H2 } else { MODE_H1 };
                let old = target.pool.mode.swap(new_mode, Ordering::Relaxed);
                if !h2 {
                    target.stats.h2_downgrades.fetch_add(1, Ordering::Relaxed);
                    if old != MODE_H1 {
                        warn!(upstream = %self.inner.name, target = %target.authority,
                            "upstream did not offer HTTP/2 by ALPN; using HTTP/1.1 (protocol: auto)");
                    }
                }
                h2
            }
        };
        let io = TokioIo::new(io);
        let stats_target = target.clone();
        if use_h2 {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .handshake(io)
                .await
                .map_err(classify_hyper)?;
            stats_target
                .stats
                .open_connections
                .fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "upstream h2 connection ended");
                }
                stats_target
                    .stats
                    .open_connections
                    .fetch_sub(1, Ordering::Relaxed);
            });
            Ok(Sender::H2(tx))
        } else {
            let (tx, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(classify_hyper)?;
            stats_target
                .stats
                .open_connections
                .fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    debug!(error = %e, "upstream connection ended");
                }
                stats_target
                    .stats
                    .open_connections
                    .fetch_sub(1, Ordering::Relaxed);
            });
            Ok(Sender::H1 { tx, reused: false })
        }
    }

    /// Closes all idle connections (used when an upstream is replaced by a reload).
    pub fn close_idle(&self) {
        for t in &self.inner.targets {
            t.pool.clear();
        }
    }
}

impl<B> std::fmt::Debug for Upstream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.inner.name)
            .field("targets", &self.inner.targets)
            .finish()
    }
}

async fn reap_idle<B>(inner: Weak<Inner<B>>) {
    let period = match inner.upgrade() {
        Some(i) => {
            (i.cfg.pool.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
        }
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        for t in &i.targets {
            t.pool.purge_expired();
        }
    }
}
