//! An upstream: a named set of targets, how to pick one, and how to call it so that failures
//! are survived where that is safe and visible always.
//!
//! One call (`Upstream::send`) is: pick a usable target (healthy, not ejected, breaker letting
//! calls through; a different one on each retry when there is one) → get a connection (pooled,
//! shared HTTP/2, or new within the per-target limit) → send under the per-try and response
//! header timeouts → classify the outcome for the breaker and passive health → retry when the
//! policy, the idempotency rule, the replayable body and the retry budget all allow it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{Instrument, debug, info, warn};

use crate::balance::{Balancer, Policy};
use crate::body::ResponseBody;
use crate::breaker::{Breaker, BreakerConfig};
use crate::connect::{self, TlsSettings};
use crate::dns::Dns;
use crate::error::{BoxError, Error, ErrorKind, classify_hyper};
use crate::health::{ActiveHealthConfig, HealthState, PassiveHealthConfig};
use crate::locality::{Locality, ZoneShare};
use crate::pool::{MODE_H1, MODE_H2, MODE_UNKNOWN, PoolConfig, TargetPool};
use crate::retry::{RetryBudget, RetryPolicy, backoff, idempotent};
use crate::stats::{TargetStats, UpstreamStats};
use crate::upload::{Progress, Tracked};

/// A request body the client can send again when it is held in memory.
pub trait ReplayBody: Body<Data = Bytes> + Send + Unpin + Sized + 'static {
    /// The whole body, when it is in memory (small enough to replay); `None` for a stream.
    fn replay_bytes(&self) -> Option<Bytes>;
    /// A body of these bytes (a replay, or an empty body for health probes).
    fn from_bytes(bytes: Bytes) -> Self;
}

/// A simple request body for library users: empty, bytes in memory, or a stream.
pub enum RequestBody {
    /// No body.
    Empty,
    /// Bytes in memory; replayable.
    Bytes(Option<Bytes>, Bytes),
    /// A stream; not replayable.
    Stream(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

impl RequestBody {
    /// A body of these bytes.
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        RequestBody::Bytes(Some(b.clone()), b)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => std::task::Poll::Ready(None),
            RequestBody::Bytes(b, _) => {
                std::task::Poll::Ready(b.take().map(|d| Ok(http_body::Frame::data(d))))
            }
            RequestBody::Stream(s) => std::pin::Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Bytes(b, _) => b.is_none(),
            RequestBody::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Empty => http_body::SizeHint::with_exact(0),
            RequestBody::Bytes(b, _) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Stream(s) => s.size_hint(),
        }
    }
}

impl ReplayBody for RequestBody {
    fn replay_bytes(&self) -> Option<Bytes> {
        match self {
            RequestBody::Empty => Some(Bytes::new()),
            RequestBody::Bytes(_, all) => Some(all.clone()),
            RequestBody::Stream(_) => None,
        }
    }

    fn from_bytes(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            RequestBody::Empty
        } else {
            RequestBody::bytes(bytes)
        }
    }
}

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
    /// Silence allowed before the complete response head: from the end of the request body,
    /// restarted by every body chunk sent while an upload streams (a long upload is not cut).
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

/// One target as configured: an IP or a DNS name (every address it resolves to is used).
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Relative weight.
    pub weight: u32,
    /// Zone, for locality-aware balancing.
    pub zone: Option<String>,
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
    /// Retries; none when `None` (a pooled connection found closed is still replaced).
    pub retry: Option<RetryPolicy>,
    /// A circuit breaker per target.
    pub breaker: Option<BreakerConfig>,
    /// Active health checks.
    pub active_health: Option<ActiveHealthConfig>,
    /// Passive health checks (ejection).
    pub passive_health: Option<PassiveHealthConfig>,
    /// Resolver for DNS names in `targets`; the system resolver is built when needed.
    pub dns: Option<Arc<Dns>>,
    /// Zone-aware balancing; none when `None`.
    pub locality: Option<Locality>,
}

impl UpstreamConfig {
    /// A config with defaults for everything but the name and targets.
    pub fn new(name: impl Into<String>, targets: Vec<TargetConfig>) -> Self {
        Self {
            name: name.into(),
            targets,
            protocol: Protocol::Http1,
            tls: None,
            policy: Policy::RoundRobin,
            timeouts: Timeouts::default(),
            pool: PoolConfig::default(),
            retry: None,
            breaker: None,
            active_health: None,
            passive_health: None,
            dns: None,
            locality: None,
        }
    }
}

/// One address of an upstream: its connections, counters, breaker and health.
pub struct Target<B> {
    /// `ip:port`, identifying the target.
    pub authority: Arc<str>,
    /// The configured host (name or IP): sent as SNI and verified in the certificate.
    pub host: Arc<str>,
    addr: SocketAddr,
    /// Weight as configured.
    pub weight: u32,
    /// Zone as configured (`""` when none).
    pub zone: Arc<str>,
    pub(crate) pool: TargetPool<B>,
    /// Counters.
    pub stats: TargetStats,
    /// Circuit breaker, when configured.
    pub breaker: Option<Breaker>,
    /// Active and passive health.
    pub health: HealthState,
    conn_limit: Option<Arc<Semaphore>>,
    pub(crate) freed: Notify,
}

impl<B> Target<B> {
    /// Idle pooled HTTP/1.1 connections now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    /// Protocol in use: "http1", "h2" or "unknown" (auto, before the first connection).
    pub fn negotiated(&self) -> &'static str {
        match self.pool.mode() {
            MODE_H1 => "http1",
            MODE_H2 => "h2",
            _ => "unknown",
        }
    }

    /// Breaker state name ("closed" when there is no breaker).
    pub fn circuit(&self) -> &'static str {
        self.breaker
            .as_ref()
            .map_or("closed", |b| b.state().as_str())
    }

    /// Whether it may take a request now.
    pub fn usable(&self) -> bool {
        self.health.usable() && self.breaker.as_ref().is_none_or(Breaker::allows)
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

/// The current targets and their balancer; replaced whole when DNS answers change.
struct TargetSet<B> {
    targets: Vec<Arc<Target<B>>>,
    balancer: Balancer,
}

/// A named set of targets with pools, a balancer, timeouts, retries, breakers and health
/// checks. Cheap to clone.
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
    cfg: UpstreamConfig,
    set: ArcSwap<TargetSet<B>>,
    budget: Option<RetryBudget>,
    stats: UpstreamStats,
    /// True once the first DNS answer is in (always true without DNS targets): a plain load
    /// on the hot path instead of the watch channel's lock.
    resolved_flag: std::sync::atomic::AtomicBool,
    resolved: tokio::sync::watch::Sender<bool>,
    /// The last DNS failure while no address is known: read only when no target exists, so
    /// a call fails with `Dns` and the resolver's reason rather than "no healthy target".
    dns_error: std::sync::Mutex<Option<String>>,
}

enum Sender<B> {
    H1 {
        tx: http1::SendRequest<Tracked<B>>,
        reused: bool,
    },
    H2(http2::SendRequest<Tracked<B>>),
}

/// Decrements a target's in-flight count unless handed on to the response body.
struct InFlight<B>(Option<Arc<Target<B>>>);

impl<B> InFlight<B> {
    fn new(t: &Arc<Target<B>>) -> Self {
        t.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Some(t.clone()))
    }

    fn hand_on(mut self) -> Option<Arc<Target<B>>> {
        self.0.take()
    }
}

impl<B> Drop for InFlight<B> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Watches the tries of one call: adjusts each try's headers (trace context) and hears how it
/// went (trace spans). Both run inline; keep them cheap.
pub trait AttemptHook: Sync {
    /// Before try `n` (from 1) is sent.
    fn before(&self, n: u32, headers: &mut HeaderMap);
    /// After try `n` finished (response head or failure).
    fn after(&self, n: u32, report: &AttemptReport<'_>);
    /// The `tracing` span try `n` runs in (none by default).
    fn span(&self, _n: u32) -> tracing::Span {
        tracing::Span::none()
    }
}

/// How one try went.
#[derive(Debug)]
pub struct AttemptReport<'a> {
    /// The target tried.
    pub target: &'a str,
    /// When it started.
    pub started: Instant,
    /// How long it took to a response head or failure.
    pub elapsed: Duration,
    /// The response status, when one came.
    pub status: Option<u16>,
    /// The failure, when it failed.
    pub error: Option<ErrorKind>,
}

/// What is kept of a request so it can be sent again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Replay {
    fn of<B: ReplayBody>(req: &Request<B>) -> Option<Self> {
        Some(Self {
            body: req.body().replay_bytes()?,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    fn request<B: ReplayBody>(&self) -> Option<Request<B>> {
        let mut r = Request::new(B::from_bytes(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        Some(r)
    }
}

/// The outcome of one try.
enum Tried<B> {
    Response(Response<ResponseBody<B>>),
    /// Failed; the request is handed back when it was never written.
    Failed(Error, Option<Request<B>>),
}

/// Whether `s` counts as a failure: the breaker's `failure_statuses`, else 502-504.
fn is_failure_status(breaker: Option<&BreakerConfig>, s: StatusCode) -> bool {
    match breaker {
        Some(b) => b.failure_statuses.has(s),
        None => matches!(s.as_u16(), 502..=504),
    }
}

impl<B> Upstream<B>
where
    B: ReplayBody,
    B::Error: Into<BoxError>,
{
    /// Builds an upstream. Inside a Tokio runtime it also starts its background tasks (idle
    /// connection reaper, DNS re-resolution, active health checks); they end when the upstream
    /// is dropped.
    pub fn new(cfg: UpstreamConfig) -> Self {
        let mut static_targets = Vec::new();
        let mut needs_dns = false;
        for t in &cfg.targets {
            match t.host.parse::<IpAddr>() {
                Ok(ip) => static_targets.push((t.clone(), SocketAddr::new(ip, t.port))),
                Err(_) => needs_dns = true,
            }
        }
        let (resolved, _) = tokio::sync::watch::channel(!needs_dns);
        let set = build_set(&cfg, &static_targets, None);
        let inner = Arc::new(Inner {
            name: cfg.name.as_str().into(),
            budget: cfg
                .retry
                .as_ref()
                .map(|r| RetryBudget::new(r.budget_percent, r.min_retries_per_sec)),
            cfg,
            set: ArcSwap::from_pointee(set),
            stats: UpstreamStats::default(),
            resolved_flag: std::sync::atomic::AtomicBool::new(!needs_dns),
            resolved,
            dns_error: std::sync::Mutex::new(None),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap_idle(Arc::downgrade(&inner)));
            if needs_dns {
                rt.spawn(resolve_loop(Arc::downgrade(&inner), static_targets));
            }
            if inner.cfg.active_health.is_some() {
                rt.spawn(health_loop(Arc::downgrade(&inner)));
            }
        }
        Self { inner }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its current targets.
    pub fn targets(&self) -> Vec<Arc<Target<B>>> {
        self.inner.set.load().targets.clone()
    }

    /// Its config.
    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.cfg
    }

    /// Upstream-level counters (retries, budget).
    pub fn stats(&self) -> &UpstreamStats {
        &self.inner.stats
    }

    /// A `Dns` error when there is no target because no name resolved (the gateway keeps
    /// answering `NoHealthyTarget` there, for its fallback; the service client says why).
    pub(crate) fn dns_failure(&self) -> Option<Error> {
        if !self.inner.set.load().targets.is_empty() {
            return None;
        }
        let msg = self
            .inner
            .dns_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        Some(Error::new(ErrorKind::Dns).with_source(msg))
    }

    /// Whether the first DNS answer is in (always, without names).
    pub(crate) fn resolved(&self) -> bool {
        self.inner.resolved_flag.load(Ordering::Acquire)
    }

    /// Picks a usable target, avoiding `avoid` when another is usable.
    fn pick(&self, key: Option<u64>, avoid: &[Arc<str>]) -> Result<Arc<Target<B>>, ErrorKind> {
        let set = self.inner.set.load();
        let targets = &set.targets;
        if targets.is_empty() {
            return Err(ErrorKind::NoHealthyTarget);
        }
        let load = |i: usize| targets[i].stats.in_flight.load(Ordering::Relaxed);
        let zone = match &self.inner.cfg.locality {
            Some(l) => {
                let (names, counts, local) = zone_counts(targets, l);
                match crate::locality::draw(&crate::locality::shares(
                    &counts,
                    local,
                    l.min_healthy_percent,
                )) {
                    Some(z) => Some(names[z].clone()),
                    // Nothing usable anywhere: no panic routing to dead targets.
                    None => return Err(ErrorKind::NoHealthyTarget),
                }
            }
            None => None,
        };
        let in_zone = |i: usize| zone.as_ref().is_none_or(|z| *targets[i].zone == **z);
        let fresh = |i: usize| {
            in_zone(i)
                && targets[i].usable()
                && !avoid.iter().any(|a| Arc::ptr_eq(a, &targets[i].authority))
        };
        let picked = set
            .balancer
            .pick(key, fresh, load)
            .or_else(|| set.balancer.pick(key, |i| targets[i].usable(), load));
        match picked {
            Some(i) => Ok(targets[i].clone()),
            None => {
                // Say why: every target's breaker is open, or none is healthy.
                let open = targets
                    .iter()
                    .all(|t| t.health.usable() && t.breaker.as_ref().is_some_and(|b| !b.allows()));
                Err(if open {
                    ErrorKind::CircuitOpen
                } else {
                    ErrorKind::NoHealthyTarget
                })
            }
        }
    }

    /// Per zone: targets, usable targets, and the share of new requests it gets now; empty
    /// without locality settings.
    pub fn zone_shares(&self) -> Vec<ZoneShare> {
        let Some(l) = &self.inner.cfg.locality else {
            return Vec::new();
        };
        let set = self.inner.set.load();
        let (names, counts, local) = zone_counts(&set.targets, l);
        let shares = crate::locality::shares(&counts, local, l.min_healthy_percent);
        names
            .iter()
            .zip(counts)
            .zip(shares)
            .enumerate()
            .map(|(i, ((z, (n, ok)), share))| ZoneShare {
                zone: z.to_string(),
                local: Some(i) == local,
                targets: n,
                healthy: ok,
                healthy_percent: if n == 0 {
                    0.0
                } else {
                    100.0 * ok as f64 / n as f64
                },
                traffic_percent: 100.0 * share,
            })
            .collect()
    }

    /// Sends a request, retrying as the policy allows. `key` is the request's hash for
    /// consistent hashing. The URI may be origin-form (`/path?q`).
    pub async fn send(
        &self,
        req: Request<B>,
        key: Option<u64>,
    ) -> Result<Response<ResponseBody<B>>, Error> {
        self.send_with(req, key, None).await
    }

    /// Like [`send`](Self::send), with a hook that sees every try.
    pub async fn send_with(
        &self,
        req: Request<B>,
        key: Option<u64>,
        hook: Option<&dyn AttemptHook>,
    ) -> Result<Response<ResponseBody<B>>, Error> {
        let inner = &*self.inner;
        // The first try's connect budget: the wait for the first DNS answer comes out of it,
        // so name resolution and connecting together stay within the connect timeout.
        let mut connect = inner.cfg.timeouts.connect;
        if !inner.resolved_flag.load(Ordering::Acquire) {
            // The first DNS answer is not in yet: wait for it, within the connect timeout.
            let started = Instant::now();
            let mut rx = inner.resolved.subscribe();
            let _ = tokio::time::timeout(connect, rx.wait_for(|r| *r)).await;
            if inner.resolved_flag.load(Ordering::Acquire) {
                connect = connect
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1));
            }
            // Still no answer: the static targets (if any) are tried with a whole connect
            // timeout; with none, the pick fails with `NoHealthyTarget`.
        }
        let policy = inner.cfg.retry.as_ref();
        if let Some(b) = &inner.budget {
            b.record_request();
        }
        let attempts = policy.map_or(1, |p| p.attempts.max(1));
        let may_replay = idempotent(req.method(), req.headers());
        // Kept only when a second try of a written request is allowed at all.
        let replay = if may_replay { Replay::of(&req) } else { None };
        let mut req = Some(req);
        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let request = match req.take() {
                Some(r) => r,
                None => match replay.as_ref().and_then(Replay::request) {
                    Some(r) => r,
                    None => unreachable_retry()?,
                },
            };
            let target = match self.pick(key, &tried) {
                Ok(t) => t,
                Err(kind) => {
                    inner.stats.record_unavailable(kind);
                    return Err(Error::new(kind).with_attempts(attempt - 1));
                }
            };
            let mut request = request;
            let started = Instant::now();
            // The try's span is current while the hook runs, so it can record on it.
            let span = hook.map_or_else(tracing::Span::none, |h| h.span(attempt));
            if let Some(h) = hook {
                let _in = span.enter();
                h.before(attempt, request.headers_mut());
            }
            let outcome = self
                .try_once(&target, request, replay.as_ref(), connect)
                .instrument(span.clone())
                .await;
            connect = inner.cfg.timeouts.connect;
            if let Some(h) = hook {
                let _in = span.enter();
                let (status, error) = match &outcome {
                    Tried::Response(r) => (Some(r.status().as_u16()), None),
                    Tried::Failed(e, _) => (None, Some(e.kind())),
                };
                h.after(
                    attempt,
                    &AttemptReport {
                        target: &target.authority,
                        started,
                        elapsed: started.elapsed(),
                        status,
                        error,
                    },
                );
            }
            let reason = match &outcome {
                Tried::Response(resp) => policy
                    .filter(|p| p.on.statuses.contains(&resp.status().as_u16()))
                    .map(|_| "status"),
                Tried::Failed(e, _) => policy.and_then(|p| p.on.reason(e.kind())),
            };
            // A retry needs the request: handed back unsent, or a replay copy.
            let retry_allowed = attempt < attempts
                && reason.is_some()
                && match &outcome {
                    Tried::Failed(_, back) => back.is_some() || replay.is_some(),
                    Tried::Response(_) => replay.is_some(),
                };
            let retry_allowed = retry_allowed
                && inner.budget.as_ref().is_none_or(|b| {
                    let ok = b.try_withdraw();
                    if !ok {
                        inner.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                    }
                    ok
                });
            if !retry_allowed {
                return match outcome {
                    Tried::Response(mut r) => {
                        r.body_mut().set_attempts(attempt);
                        Ok(r)
                    }
                    Tried::Failed(e, _) => Err(e.with_attempts(attempt)),
                };
            }
            // The next pick avoids the targets tried so far (kept only once there is a retry).
            tried.push(target.authority.clone());
            let reason = reason.unwrap_or("other");
            inner.stats.record_retry(reason);
            match outcome {
                Tried::Failed(e, back) => {
                    debug!(upstream = %inner.name, target = %target.authority, reason, error = %e, attempt, "retrying");
                    req = back;
                }
                Tried::Response(r) => {
                    debug!(upstream = %inner.name, target = %target.authority, status = r.status().as_u16(), attempt, "retrying on status");
                }
            }
            if let Some(p) = policy {
                let wait = backoff(p.backoff_base, p.backoff_max, attempt - 1);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One try against one target, under the per-try timeout, with breaker and passive health
    /// bookkeeping.
    async fn try_once(
        &self,
        target: &Arc<Target<B>>,
        req: Request<B>,
        replay: Option<&Replay>,
        connect: Duration,
    ) -> Tried<B> {
        let cfg = &self.inner.cfg;
        let permit = match &target.breaker {
            Some(b) => match b.acquire() {
                Some(p) => Some(p),
                None => {
                    return Tried::Failed(
                        Error::new(ErrorKind::CircuitOpen).with_target(target.authority.clone()),
                        Some(req),
                    );
                }
            },
            None => None,
        };
        // Gives a probe slot back if this try is cancelled before its outcome is recorded
        // (route deadline, client gone): otherwise a half-open breaker could stay stuck.
        let guard = PermitGuard {
            breaker: target.breaker.as_ref(),
            permit,
        };
        let started = Instant::now();
        let out = match cfg.retry.as_ref().and_then(|r| r.per_try_timeout) {
            Some(t) => {
                match tokio::time::timeout(t, self.send_to_inner(target, req, replay, connect))
                    .await
                {
                    Ok(o) => o,
                    Err(_) => {
                        target.stats.record_error(ErrorKind::PerTryTimeout);
                        Tried::Failed(
                            Error::new(ErrorKind::PerTryTimeout)
                                .with_timeout(t)
                                .with_target(target.authority.clone()),
                            None,
                        )
                    }
                }
            }
            None => self.send_to_inner(target, req, replay, connect).await,
        };
        let ok = match &out {
            Tried::Response(r) => !is_failure_status(cfg.breaker.as_ref(), r.status()),
            Tried::Failed(e, _) => !e.kind().is_upstream_failure(),
        };
        if let (Some(b), Some(p)) = (&target.breaker, guard.disarm()) {
            let before = b.state();
            b.record(p, ok, started.elapsed());
            let after = b.state();
            if before != after {
                info!(upstream = %self.inner.name, target = %target.authority, from = before.as_str(), to = after.as_str(), "circuit breaker changed state");
            }
        }
        if let Some(ph) = &cfg.passive_health {
            let ejected = target.health.call_result(ok, ph, || self.may_eject(ph));
            if ejected {
                warn!(upstream = %self.inner.name, target = %target.authority, "target ejected after consecutive failures");
            }
        }
        out
    }

    /// Whether one more ejection keeps within `max_ejected_percent`.
    fn may_eject(&self, ph: &PassiveHealthConfig) -> bool {
        let set = self.inner.set.load();
        let n = set.targets.len();
        let ejected = set.targets.iter().filter(|t| t.health.ejected()).count();
        ((ejected + 1) as f64) * 100.0 <= ph.max_ejected_percent * n as f64
    }

    /// Sends to `target` (no retries, no breaker): the building block of `send`, usable alone.
    pub async fn send_to(
        &self,
        target: &Arc<Target<B>>,
        req: Request<B>,
    ) -> Result<Response<ResponseBody<B>>, Error> {
        let replay = Replay::of(&req).filter(|_| idempotent(req.method(), req.headers()));
        let connect = self.inner.cfg.timeouts.connect;
        match self
            .send_to_inner(target, req, replay.as_ref(), connect)
            .await
        {
            Tried::Response(r) => Ok(r),
            Tried::Failed(e, _) => Err(e),
        }
    }

    async fn send_to_inner(
        &self,
        target: &Arc<Target<B>>,
        mut req: Request<B>,
        replay: Option<&Replay>,
        connect: Duration,
    ) -> Tried<B> {
        target.stats.requests.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight::new(target);
        let fail = |e: Error| {
            target.stats.record_error(e.kind());
            e.with_target(target.authority.clone())
        };
        let mut sender = match self.sender(target, connect).await {
            Ok(s) => s,
            Err(e) => return Tried::Failed(fail(e), Some(req)),
        };
        let rh = self.inner.cfg.timeouts.response_header;
        let mut recovered = false;
        loop {
            let is_h2 = matches!(sender, Sender::H2(_));
            let reused = match &sender {
                Sender::H1 { reused, .. } => *reused,
                Sender::H2(_) => true,
            };
            self.prepare(target, &mut req, is_h2);
            let (wire, progress) = Tracked::new_request(req);
            let progress = progress.as_deref();
            let (result, checkin) = match sender {
                Sender::H1 { mut tx, .. } => {
                    let r = response_head(tx.try_send_request(wire), rh, progress).await;
                    let keep = r.is_ok();
                    (r, keep.then_some(tx))
                }
                Sender::H2(mut tx) => (
                    response_head(tx.try_send_request(wire), rh, progress).await,
                    None,
                ),
            };
            match result {
                Ok(resp) => {
                    // A switched protocol owns the connection now; it never returns to the pool.
                    let checkin =
                        checkin.filter(|_| resp.status() != StatusCode::SWITCHING_PROTOCOLS);
                    let read_idle = self.inner.cfg.timeouts.read_idle;
                    let Some(target) = in_flight.hand_on() else {
                        return Tried::Failed(Error::new(ErrorKind::Protocol), None);
                    };
                    return Tried::Response(
                        resp.map(|b| ResponseBody::new(b, read_idle, checkin, target)),
                    );
                }
                Err((e, back)) => {
                    // A reused connection the server had closed or reset before answering:
                    // send once more on a fresh connection when that cannot duplicate a side
                    // effect (never written, or idempotent and replayable).
                    let mut back = back;
                    let again = if !reused || recovered {
                        None
                    } else if back.is_some() {
                        back.take()
                    } else if matches!(e.kind(), ErrorKind::Reset | ErrorKind::RefusedStream) {
                        replay.and_then(Replay::request)
                    } else {
                        None
                    };
                    let Some(r) = again else {
                        return Tried::Failed(fail(e), back);
                    };
                    recovered = true;
                    debug!(target = %target.authority, error = %e, "pooled connection failed before a response; retrying on a new one");
                    target.stats.stale_recovered.fetch_add(1, Ordering::Relaxed);
                    req = r;
                    sender = match Box::pin(self.connect_new(target, connect)).await {
                        Ok(s) => s,
                        Err(e) => return Tried::Failed(fail(e), Some(req)),
                    };
                }
            }
        }
    }

    /// Sets the URI form and Host the connection's protocol needs.
    fn prepare(&self, target: &Target<B>, req: &mut Request<B>, h2: bool) {
        // Read only where it is needed: an HTTP/1.1 request that has a Host keeps it as it is.
        let host = |req: &Request<B>| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<Authority>().ok())
                .or_else(|| req.uri().authority().cloned())
        };
        if h2 {
            let host = host(req);
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
            *req.version_mut() = Version::HTTP_2;
        } else {
            if !req.headers().contains_key(header::HOST) {
                let value = match &host(req) {
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
            *req.version_mut() = Version::HTTP_11;
        }
    }

    /// A connection to send on: a pooled HTTP/1.1 one right away when there is one; otherwise
    /// (shared HTTP/2, waiting at the connection limit, a new connection) the boxed slow path,
    /// which keeps the hot path's future small.
    async fn sender(&self, target: &Arc<Target<B>>, connect: Duration) -> Result<Sender<B>, Error> {
        if target.pool.mode() != MODE_H2
            && let Some(tx) = target.pool.checkout()
        {
            target.stats.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(Sender::H1 { tx, reused: true });
        }
        Box::pin(self.sender_slow(target, connect)).await
    }

    /// The shared HTTP/2 connection, a pooled HTTP/1.1 one after waiting at the limit, or a new
    /// connection.
    async fn sender_slow(
        &self,
        target: &Arc<Target<B>>,
        connect: Duration,
    ) -> Result<Sender<B>, Error> {
        if target.pool.mode() == MODE_H2 {
            let mut slot = target.pool.h2.lock().await;
            if let Some(tx) = slot.as_ref()
                && !tx.is_closed()
            {
                target.stats.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(Sender::H2(tx.clone()));
            }
            let s = Box::pin(self.connect_new(target, connect)).await?;
            if let Sender::H2(tx) = &s {
                *slot = Some(tx.clone());
            }
            return Ok(s);
        }
        let deadline = tokio::time::Instant::now() + connect;
        loop {
            if let Some(tx) = target.pool.checkout() {
                target.stats.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(Sender::H1 { tx, reused: true });
            }
            let Some(limit) = &target.conn_limit else {
                break;
            };
            if limit.available_permits() > 0 {
                break;
            }
            // At the per-target connection limit: wait for a connection to come back or close.
            let freed = target.freed.notified();
            let permit = limit.clone().acquire_owned();
            tokio::select! {
                _ = freed => {}
                p = permit => { drop(p); }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::new(ErrorKind::PoolExhausted).with_timeout(connect));
                }
            }
        }
        let s = Box::pin(self.connect_new(target, connect)).await?;
        if let Sender::H2(tx) = &s {
            // `auto` discovered HTTP/2 on this first connection: share it from now on.
            *target.pool.h2.lock().await = Some(tx.clone());
        }
        Ok(s)
    }

    /// Connects and handshakes, choosing the protocol by config or ALPN.
    async fn connect_new(
        &self,
        target: &Arc<Target<B>>,
        connect: Duration,
    ) -> Result<Sender<B>, Error> {
        let cfg = &self.inner.cfg;
        let permit: Option<OwnedSemaphorePermit> = match &target.conn_limit {
            Some(l) => Some(
                tokio::time::timeout(connect, l.clone().acquire_owned())
                    .await
                    .map_err(|_| Error::new(ErrorKind::PoolExhausted).with_timeout(connect))?
                    .map_err(|_| Error::new(ErrorKind::PoolExhausted))?,
            ),
            None => None,
        };
        let io = connect::connect(target.addr, &target.host, cfg.tls.as_ref(), connect).await?;
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
        let owner = target.clone();
        owner.stats.open_connections.fetch_add(1, Ordering::Relaxed);
        let closed = move |owner: Arc<Target<B>>, permit: Option<OwnedSemaphorePermit>| {
            owner.stats.open_connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            owner.freed.notify_one();
        };
        if use_h2 {
            let handshake = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .handshake(io)
                .await;
            let (tx, conn) = match handshake {
                Ok(x) => x,
                Err(e) => {
                    closed(owner, permit);
                    return Err(classify_hyper(e));
                }
            };
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "upstream h2 connection ended");
                }
                closed(owner, permit);
            });
            Ok(Sender::H2(tx))
        } else {
            let (tx, conn) = match http1::Builder::new().handshake(io).await {
                Ok(x) => x,
                Err(e) => {
                    closed(owner, permit);
                    return Err(classify_hyper(e));
                }
            };
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    debug!(error = %e, "upstream connection ended");
                }
                closed(owner, permit);
            });
            Ok(Sender::H1 { tx, reused: false })
        }
    }

    /// Closes all idle connections.
    pub fn close_idle(&self) {
        for t in &self.inner.set.load().targets {
            t.pool.clear();
        }
    }
}

/// Waits for a response head within the response header timeout; on failure, the request
/// comes back when it was never written.
///
/// While a request body is still streaming, the timeout restarts with every frame the
/// connection takes: it measures the upstream's silence, not the length of the upload (which
/// the route's `timeout` and a per-try timeout can still bound).
// The error carries the unsent request back for a retry; it only moves on the failure path.
#[allow(clippy::result_large_err)]
async fn response_head<B>(
    send: impl Future<Output = Result<Response<Incoming>, TrySendError<Request<Tracked<B>>>>>,
    timeout: Duration,
    progress: Option<&Progress>,
) -> Result<Response<Incoming>, (Error, Option<Request<B>>)> {
    let timed_out = || {
        Err((
            Error::new(ErrorKind::ResponseHeaderTimeout).with_timeout(timeout),
            None,
        ))
    };
    let mut send = std::pin::pin!(send);
    if let Some(p) = progress {
        let mut deadline = tokio::time::Instant::now() + timeout;
        while !p.done() {
            tokio::select! {
                biased;
                r = &mut send => return sent(r),
                () = p.moved() => deadline = tokio::time::Instant::now() + timeout,
                () = tokio::time::sleep_until(deadline) => return timed_out(),
            }
        }
    }
    match tokio::time::timeout(timeout, send).await {
        Err(_) => timed_out(),
        Ok(r) => sent(r),
    }
}

#[allow(clippy::result_large_err)] // as `response_head`
fn sent<B>(
    r: Result<Response<Incoming>, TrySendError<Request<Tracked<B>>>>,
) -> Result<Response<Incoming>, (Error, Option<Request<B>>)> {
    r.map_err(|mut e| {
        let back = e.take_message().map(|r| r.map(Tracked::into_inner));
        (classify_hyper(e.into_error()), back)
    })
}

/// Holds a breaker permit until its outcome is recorded; releases an unrecorded probe.
struct PermitGuard<'a> {
    breaker: Option<&'a Breaker>,
    permit: Option<crate::breaker::Permit>,
}

impl PermitGuard<'_> {
    fn disarm(mut self) -> Option<crate::breaker::Permit> {
        self.permit.take()
    }
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let (Some(b), Some(p)) = (self.breaker, self.permit.take()) {
            b.release(p);
        }
    }
}

fn unreachable_retry<T>() -> Result<T, Error> {
    // A retry is only decided when the request came back or a replay copy exists.
    Err(Error::new(ErrorKind::Protocol).with_source("internal: no request to retry"))
}

impl<B> std::fmt::Debug for Upstream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// Zones in first-seen order, (targets, usable targets) of each, and the local one's index.
type ZoneCounts = (Vec<Arc<str>>, Vec<(usize, usize)>, Option<usize>);

/// Counts the targets of each zone.
fn zone_counts<B>(targets: &[Arc<Target<B>>], l: &Locality) -> ZoneCounts {
    let mut names: Vec<Arc<str>> = Vec::with_capacity(4);
    let mut counts: Vec<(usize, usize)> = Vec::with_capacity(4);
    for t in targets {
        let i = match names.iter().position(|n| *n == t.zone) {
            Some(i) => i,
            None => {
                names.push(t.zone.clone());
                counts.push((0, 0));
                names.len() - 1
            }
        };
        counts[i].0 += 1;
        if t.usable() {
            counts[i].1 += 1;
        }
    }
    let local = names.iter().position(|n| *n == l.local_zone);
    (names, counts, local)
}

/// Builds the target set from resolved addresses, reusing targets (and their pools, stats,
/// breakers, health) that are still there.
fn build_set<B>(
    cfg: &UpstreamConfig,
    addrs: &[(TargetConfig, SocketAddr)],
    prev: Option<&TargetSet<B>>,
) -> TargetSet<B> {
    let mode = match cfg.protocol {
        Protocol::Http1 => MODE_H1,
        Protocol::H2c => MODE_H2,
        Protocol::Auto => MODE_UNKNOWN,
    };
    let targets: Vec<Arc<Target<B>>> = addrs
        .iter()
        .map(|(t, addr)| {
            let authority: Arc<str> = addr.to_string().into();
            if let Some(old) =
                prev.and_then(|p| p.targets.iter().find(|o| o.authority == authority))
            {
                return old.clone();
            }
            Arc::new(Target {
                authority,
                host: t.host.as_str().into(),
                addr: *addr,
                weight: t.weight,
                zone: t.zone.as_deref().unwrap_or("").into(),
                pool: TargetPool::new(cfg.pool, mode),
                stats: TargetStats::default(),
                breaker: cfg.breaker.clone().map(Breaker::new),
                health: HealthState::default(),
                conn_limit: (cfg.pool.max_connections_per_host > 0)
                    .then(|| Arc::new(Semaphore::new(cfg.pool.max_connections_per_host))),
                freed: Notify::new(),
            })
        })
        .collect();
    let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
    let names: Vec<&str> = targets.iter().map(|t| &*t.authority).collect();
    let balancer = Balancer::new(cfg.policy, &weights, &names);
    TargetSet { targets, balancer }
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
        for t in &i.set.load().targets {
            t.pool.purge_expired();
        }
    }
}

/// Resolves the upstream's DNS targets, then again when their TTL runs out. A failure keeps
/// the last good answer (up to `stale_for`) and is logged.
async fn resolve_loop<B>(inner: Weak<Inner<B>>, static_targets: Vec<(TargetConfig, SocketAddr)>) {
    let Some(first) = inner.upgrade() else { return };
    let dns = match &first.cfg.dns {
        Some(d) => d.clone(),
        None => match Dns::new(Default::default()) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                warn!(upstream = %first.name, error = %e, "cannot build the DNS resolver");
                first.resolved_flag.store(true, Ordering::Release);
                let _ = first.resolved.send(true);
                return;
            }
        },
    };
    let names: Vec<TargetConfig> = first
        .cfg
        .targets
        .iter()
        .filter(|t| t.host.parse::<IpAddr>().is_err())
        .cloned()
        .collect();
    drop(first);
    let mut last_good: Vec<Option<(Vec<IpAddr>, Instant)>> = vec![None; names.len()];
    loop {
        let mut next = dns.cfg.max_refresh;
        let mut addrs = static_targets.clone();
        let mut failure = None;
        for (i, t) in names.iter().enumerate() {
            match dns.resolve(&t.host).await {
                Ok(answer) => {
                    if last_good[i]
                        .as_ref()
                        .is_none_or(|(ips, _)| *ips != answer.ips)
                    {
                        info!(host = %t.host, addresses = ?answer.ips, "DNS answer");
                    }
                    next = next.min(answer.refresh_in);
                    last_good[i] = Some((answer.ips, Instant::now()));
                }
                Err(e) => {
                    warn!(host = %t.host, error = %e, "DNS resolution failed; keeping the last good answer");
                    failure = Some(e.to_string());
                    next = next.min(dns.cfg.min_refresh);
                    if last_good[i]
                        .as_ref()
                        .is_some_and(|(_, at)| at.elapsed() > dns.cfg.stale_for)
                    {
                        warn!(host = %t.host, "the last good DNS answer is too old; dropping it");
                        last_good[i] = None;
                    }
                }
            }
            if let Some((ips, _)) = &last_good[i] {
                addrs.extend(
                    ips.iter()
                        .map(|ip| (t.clone(), SocketAddr::new(*ip, t.port))),
                );
            }
        }
        let Some(inner_now) = inner.upgrade() else {
            return;
        };
        let current = inner_now.set.load();
        let same = current.targets.len() == addrs.len()
            && current
                .targets
                .iter()
                .zip(&addrs)
                .all(|(t, (_, a))| t.addr == *a);
        if !same {
            let set = build_set(&inner_now.cfg, &addrs, Some(&current));
            inner_now.set.store(Arc::new(set));
        }
        drop(current);
        *inner_now
            .dns_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = if addrs.is_empty() { failure } else { None };
        inner_now.resolved_flag.store(true, Ordering::Release);
        let _ = inner_now.resolved.send(true);
        drop(inner_now);
        tokio::time::sleep(next).await;
    }
}

/// Probes every target with `GET path` each interval; thresholds flip their health.
async fn health_loop<B>(inner: Weak<Inner<B>>)
where
    B: ReplayBody,
    B::Error: Into<BoxError>,
{
    let Some(interval) = inner
        .upgrade()
        .and_then(|i| i.cfg.active_health.as_ref().map(|h| h.interval))
    else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        let up = Upstream { inner: i };
        let Some(hc) = up.inner.cfg.active_health.clone() else {
            return;
        };
        let targets = up.inner.set.load().targets.clone();
        let probes = targets.into_iter().map(|t| {
            let up = up.clone();
            let hc = hc.clone();
            async move {
                let mut req = Request::new(B::from_bytes(Bytes::new()));
                *req.uri_mut() = Uri::try_from(hc.path.as_str()).unwrap_or_else(|_| Uri::from_static("/"));
                if let Ok(h) = HeaderValue::from_str(&t.host) {
                    req.headers_mut().insert(header::HOST, h);
                }
                req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static("portcullis-health-check"));
                let ok = match tokio::time::timeout(hc.timeout, up.send_to(&t, req)).await {
                    Ok(Ok(resp)) => {
                        let ok = hc.expected(resp.status().as_u16());
                        // Read the body so the connection can be reused.
                        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                        ok
                    }
                    _ => false,
                };
                if let Some(now_healthy) = t.health.probe_result(ok, &hc) {
                    if now_healthy {
                        info!(upstream = %up.inner.name, target = %t.authority, "target healthy again");
                    } else {
                        warn!(upstream = %up.inner.name, target = %t.authority, "target unhealthy (active check)");
                    }
                }
            }
        });
        futures_util::future::join_all(probes).await;
    }
}

/// Upstream-level counters.
impl UpstreamStats {
    fn record_unavailable(&self, kind: ErrorKind) {
        match kind {
            ErrorKind::CircuitOpen => self.circuit_open.fetch_add(1, Ordering::Relaxed),
            _ => self.no_healthy.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Compile-time check: the futures of `send` can move between threads.
#[allow(dead_code)]
fn assert_send<B: ReplayBody>(u: &Upstream<B>, r: Request<B>)
where
    B::Error: Into<BoxError>,
{
    fn is_send<T: Send>(_: T) {}
    is_send(u.send(r, None));
}
