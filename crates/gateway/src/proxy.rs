//! The request pipeline: checks, routing, plugins, rewrites, forwarding headers, the upstream
//! call, and the response on its way back.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use ipnet::IpNet;
use portcullis_client::{Error as ClientError, ErrorKind, hash_key};
use portcullis_config::{HashKey, Rewrite};
use portcullis_plugins::{Flow, Reply, RequestCtx};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::body::{BodyTooLarge, ReqBody, RespBody};
use crate::errors::{GatewayError, render};
use crate::snapshot::{RouteAction, RouteRuntime, Snapshot};
use crate::state::ConnInfo;
use crate::telemetry::{ObservedBody, Record};

mod bodies;
mod edge;
use edge::check_request;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_REQUEST_ID: &HeaderName = &portcullis_plugins::builtin::X_REQUEST_ID;

/// Handles one request from a client connection. Never fails: every error is a response.
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Result<Response<ObservedBody>, Infallible> {
    let index = conn.state.calls.fetch_add(1, Ordering::Relaxed) + 1;
    conn.state.in_flight.fetch_add(1, Ordering::Relaxed);
    if req.version() == Version::HTTP_2 {
        conn.state.h2.store(true, Ordering::Relaxed);
    }
    let snap = conn.shared.snapshot.load_full();
    snap.no_route.start();
    let mut rec = Record {
        start: Instant::now(),
        request_id: None,
        method: req.method().clone(),
        host: None,
        uri: req.uri().clone(),
        version: req.version(),
        client: conn.peer.ip(),
        listener: conn.listener.name.clone(),
        route: None,
        upstream: None,
        leg: 0,
        target: None,
        attempts: 0,
        error: None,
        consumer: None,
        client_cert: None,
        status: 0,
        bytes_in: req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        bytes_in_counter: None,
        upstream_time: None,
        trace: None,
        trace_ctx: None,
        spans: Vec::new(),
    };
    let resp = if conn.state.ambiguous.load(Ordering::Relaxed) == index {
        let e = GatewayError::bad_request(
            "both Content-Length and Transfer-Encoding: ambiguous framing is refused",
        );
        rec.error = Some("ambiguous_framing");
        let rid = request_id(req.headers());
        rec.request_id = Some(rid.clone());
        render(&e, &rid)
    } else {
        // Boxed: hyper keeps a connection's in-flight future allocated for the connection's
        // whole life, so the pipeline's large state machine is held per request instead of
        // per idle keep-alive connection.
        let (resp, ctx) = Box::pin(serve(req, &conn, &snap, &mut rec)).await;
        if let Some(ctx) = ctx {
            rec.consumer = ctx.consumer;
            if ctx.client_cert_authenticated {
                rec.client_cert = ctx.client_cert;
            }
        }
        resp
    };
    rec.status = resp.status().as_u16();
    conn.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    Ok(resp.map(|b| ObservedBody::new(b, rec, snap)))
}

/// The pipeline; returns the response and, once routed, the request context.
async fn serve(
    req: Request<Incoming>,
    conn: &ConnInfo,
    snap: &Snapshot,
    rec: &mut Record,
) -> (Response<RespBody>, Option<RequestCtx>) {
    let (mut parts, body) = req.into_parts();
    let rid = request_id(&parts.headers);
    rec.request_id = Some(rid.clone());
    if let Some(t) = &snap.tracer {
        let ctx = t.context(&parts.headers);
        rec.trace = Some((ctx.trace_id, ctx.span_id));
        rec.trace_ctx = Some(ctx);
    }
    let limits = &conn.listener.limits;

    if let Err(e) = check_request(&parts, limits.max_header_bytes, limits.max_body_bytes) {
        rec.error = Some(e.code);
        return (render(&e, &rid), None);
    }
    // Host rules, then the one normalised path that routing, plugins and the upstream see.
    let host = match edge::host(&mut parts)
        .and_then(|h| edge::normalize(&mut parts, &limits.path).map(|()| h))
    {
        Ok(h) => h,
        Err(r) => {
            conn.shared
                .metrics
                .refused_requests
                .with_label_values(&[&conn.listener.name, r.reason])
                .inc();
            debug!(
                request_id = rid.to_str().unwrap_or(""),
                listener = %conn.listener.name,
                reason = r.reason,
                "request refused at the edge"
            );
            rec.error = Some(r.reason);
            return (render(&r.error, &rid), None);
        }
    };
    let client_ip = client_ip(
        conn.peer.ip(),
        &parts.headers,
        &conn.listener.trusted_proxies,
    );
    rec.client = client_ip;
    rec.host = host.clone();
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    let hit = snap.router.lookup(&portcullis_router::Request {
        host: host_str,
        path: parts.uri.path(),
        method: &parts.method,
        headers: &parts.headers,
        query: parts.uri.query(),
    });
    let Some(hit) = hit else {
        let e = GatewayError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {} {}", parts.method, parts.uri.path()),
        );
        rec.error = Some(e.code);
        return (render(&e, &rid), None);
    };
    let idx = *hit.value;
    rec.route = Some(idx);
    let route = &snap.routes[idx];
    // Identity headers come from verified certificates only, whatever the route.
    for h in &snap.reserved_headers {
        parts.headers.remove(h);
    }
    let mut ctx = RequestCtx::new(rid, client_ip, conn.listener.name.clone());
    ctx.route = route.name.clone();
    ctx.timeout = route.timeout;
    ctx.client_cert.clone_from(&conn.client_cert);

    for p in &route.plugins {
        let step = p.on_request(&mut ctx, &mut parts);
        if let Flow::Respond(reply) = run_phase(step, p.name(), "request", rec).await {
            return respond_reply(reply, route, ctx, rec);
        }
    }

    let steer = if route.policies.is_empty() {
        crate::policy::Steer::default()
    } else {
        match crate::policy::check(&route.policies, &route.answered, &ctx.request_id) {
            crate::policy::Check::Go(s) => s,
            crate::policy::Check::Answer(resp) => {
                rec.error = Some("policy");
                return response_phase(*resp, route, ctx);
            }
        }
    };
    let up_idx = match &route.action {
        RouteAction::Direct(d) => {
            let mut resp = Response::new(RespBody::full(d.body.clone()));
            *resp.status_mut() = d.status;
            for (n, v) in &d.headers {
                resp.headers_mut().append(n.clone(), v.clone());
            }
            return response_phase(resp, route, ctx);
        }
        RouteAction::Upstream(i) => *i,
        RouteAction::Split(legs, total) => {
            let r = fastrand::u64(..(*total).max(1));
            let at = legs
                .partition_point(|(_, acc)| *acc <= r)
                .min(legs.len() - 1);
            rec.leg = at;
            legs[at].0
        }
    };
    let up_idx = steer.reroute.unwrap_or(up_idx);
    rec.upstream = Some(up_idx);
    let upstream = &snap.upstreams[up_idx];

    let websocket = is_websocket(&parts);
    let client_upgrade = if websocket {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    parts.extensions = http::Extensions::new();
    set_forwarded(
        &mut parts.headers,
        conn.peer.ip(),
        &conn.listener.trusted_proxies,
        conn.tls,
        host.as_ref(),
    );
    strip_hop_by_hop(&mut parts.headers, websocket);
    // 100-continue was settled with the client by the HTTP layer; it is not forwarded.
    parts.headers.remove(header::EXPECT);
    if let Some(rw) = &route.rewrite {
        rewrite(&mut parts, rw);
    }
    for p in &route.plugins {
        let step = p.on_upstream_request(&mut ctx, &mut parts);
        if let Flow::Respond(reply) = run_phase(step, p.name(), "upstream_request", rec).await {
            return respond_reply(reply, route, ctx, rec);
        }
    }
    // The caller's trace context is replaced by ours for each try (see TraceHook).
    parts.headers.remove(&crate::otel::TRACEPARENT);
    // Body phases, only on routes with a plugin that has them; boxed so that the common
    // path's future does not carry their state.
    let mut incoming = Some(body);
    let mut prepared = None;
    if route.bodies && !websocket {
        let phase = bodies::request(
            &mut incoming,
            &mut parts,
            route,
            &mut ctx,
            limits.max_body_bytes,
            rec,
        );
        match Box::pin(phase).await {
            Ok(b) => prepared = b,
            Err(answer) => return answer,
        }
    }
    let key = snap.hash_keys[up_idx]
        .as_ref()
        .map(|k| request_hash(k, &parts, client_ip));
    let declared = crate::body::declared_length(&parts.headers);
    let body = if let Some(b) = prepared {
        b
    } else if let (false, Some(body)) = (websocket, incoming) {
        match declared {
            // Small bodies of requests that may be sent twice are read first, so a retry or a
            // stale pooled connection can replay them.
            Some(n)
                if n <= route.max_replay_body_bytes
                    && portcullis_client::retry::idempotent(&parts.method, &parts.headers) =>
            {
                match ReqBody::buffer(body, n).await {
                    Ok(b) => b,
                    Err(e) => {
                        debug!(error = %e, "reading the request body failed");
                        let ge = GatewayError::bad_request("the request body could not be read");
                        rec.error = Some(ge.code);
                        return (render(&ge, &ctx.request_id), Some(ctx));
                    }
                }
            }
            Some(_) => ReqBody::limited(body, limits.max_body_bytes, None),
            // No body at all (most GETs): nothing to count or to limit.
            None if http_body::Body::is_end_stream(&body) => ReqBody::Empty,
            None => {
                // No Content-Length (chunked, or HTTP/2): count the bytes as they stream.
                let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                rec.bytes_in_counter = Some(counter.clone());
                ReqBody::limited(body, limits.max_body_bytes, Some(counter))
            }
        }
    } else {
        ReqBody::Empty
    };
    let body = if route.mirrors.is_empty() || websocket {
        body
    } else {
        crate::mirror::fork(
            &route.mirrors,
            &snap.upstreams,
            &conn.shared.mirrors,
            &parts,
            body,
        )
    };
    let req = Request::from_parts(parts, body);
    let sent_at = Instant::now();
    let hook = rec.trace_ctx.as_ref().map(|t| TraceHook {
        ctx: t,
        upstream: upstream.name(),
        spans: std::sync::Mutex::new(Vec::new()),
    });
    let hook_ref = hook
        .as_ref()
        .map(|h| h as &dyn portcullis_client::AttemptHook);
    let timeout = match (route.timeout, steer.timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, upstream.send_with(req, key, hook_ref)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::new(ErrorKind::DeadlineExceeded).with_timeout(t)),
        },
        None => upstream.send_with(req, key, hook_ref).await,
    };
    if let Some(h) = hook {
        rec.spans
            .extend(h.spans.into_inner().unwrap_or_else(|p| p.into_inner()));
    }
    rec.upstream_time = Some(sent_at.elapsed());
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            rec.attempts = e.attempts().max(1);
            rec.target = e.target().map(Arc::from);
            rec.error = Some(e.kind().reason());
            let unavailable = matches!(
                e.kind(),
                ErrorKind::CircuitOpen | ErrorKind::NoHealthyTarget
            );
            if unavailable && let Some(f) = &route.fallback {
                let mut resp = Response::new(RespBody::full(f.body.clone()));
                *resp.status_mut() = f.status;
                for (n, v) in &f.headers {
                    resp.headers_mut().append(n.clone(), v.clone());
                }
                return response_phase(resp, route, ctx);
            }
            let ge = if let Some(b) = e.find_source::<BodyTooLarge>() {
                GatewayError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body larger than {} bytes", b.limit),
                )
            } else {
                warn!(
                    request_id = ctx.request_id.to_str().unwrap_or(""),
                    route = %route.name,
                    upstream = upstream.name(),
                    target = e.target().unwrap_or("-"),
                    reason = e.kind().reason(),
                    error = %e,
                    "upstream call failed"
                );
                GatewayError::from_upstream(e.kind())
            };
            if ge.code == "body_too_large" {
                rec.error = Some(ge.code);
            }
            let resp = render(&ge, &ctx.request_id);
            return response_phase(resp, route, ctx);
        }
    };
    rec.target = resp.body().target_name();
    rec.attempts = resp.body().attempts();
    let switched = websocket && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switched {
        match client_upgrade {
            Some(client) => {
                let upstream_io = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(client, upstream_io));
            }
            None => debug!("upstream switched protocols but the client connection cannot"),
        }
    }
    strip_hop_by_hop(resp.headers_mut(), switched);
    let resp = resp.map(RespBody::upstream);
    match response_phase(resp, route, ctx) {
        (resp, Some(ctx)) if route.bodies && !switched => {
            Box::pin(bodies::response(resp, route, ctx, rec)).await
        }
        done => done,
    }
}

/// Resolves a plugin phase; a phase that waited on I/O becomes a span of its own.
async fn run_phase(
    step: portcullis_plugins::Step<'_>,
    plugin: &'static str,
    phase: &'static str,
    rec: &mut Record,
) -> Flow {
    match step {
        portcullis_plugins::Step::Done(f) => f,
        portcullis_plugins::Step::Pending(fut) => {
            let started = Instant::now();
            let flow = fut.await;
            if let Some(ctx) = rec.trace_ctx.as_ref().filter(|c| c.sampled) {
                let took = started.elapsed();
                let end = crate::otel::unix_nanos_ago(Duration::ZERO);
                rec.spans.push(crate::otel::SpanData {
                    trace_id: ctx.trace_id,
                    span_id: fastrand::u64(1..).to_be_bytes(),
                    parent: Some(ctx.span_id),
                    name: format!("plugin {plugin} {phase}"),
                    kind: 1,
                    start: end.saturating_sub(took.as_nanos() as u64),
                    end,
                    attributes: vec![(
                        "portcullis.plugin",
                        crate::otel::Attr::Str(plugin.to_owned()),
                    )],
                    error: None,
                });
            }
            flow
        }
    }
}

/// Puts our trace context on each upstream try and turns each try into a client span.
struct TraceHook<'a> {
    ctx: &'a crate::otel::TraceCtx,
    upstream: &'a str,
    spans: std::sync::Mutex<Vec<crate::otel::SpanData>>,
}

impl portcullis_client::AttemptHook for TraceHook<'_> {
    fn before(&self, n: u32, headers: &mut HeaderMap) {
        headers.insert(
            crate::otel::TRACEPARENT.clone(),
            self.ctx.traceparent(self.ctx.attempt_span(n)),
        );
        if let Some(state) = &self.ctx.state {
            headers.insert(crate::otel::TRACESTATE.clone(), state.clone());
        }
    }

    fn after(&self, n: u32, r: &portcullis_client::AttemptReport<'_>) {
        if !self.ctx.sampled {
            return;
        }
        use crate::otel::Attr;
        let start = crate::otel::unix_nanos_ago(r.started.elapsed());
        let mut attributes = vec![
            ("server.address", Attr::Str(r.target.to_owned())),
            ("portcullis.upstream", Attr::Str(self.upstream.to_owned())),
            ("portcullis.attempt", Attr::Int(i64::from(n))),
        ];
        if let Some(s) = r.status {
            attributes.push(("http.response.status_code", Attr::Int(i64::from(s))));
        }
        let span = crate::otel::SpanData {
            trace_id: self.ctx.trace_id,
            span_id: self.ctx.attempt_span(n),
            parent: Some(self.ctx.span_id),
            name: format!("upstream {} try {n}", self.upstream),
            kind: 3,
            start,
            end: start + r.elapsed.as_nanos() as u64,
            attributes,
            error: r.error.map(|k| k.reason().to_owned()),
        };
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(span);
    }
}

/// Runs the response phase of the route's plugins and adds headers plugins queued.
fn response_phase(
    resp: Response<RespBody>,
    route: &RouteRuntime,
    mut ctx: RequestCtx,
) -> (Response<RespBody>, Option<RequestCtx>) {
    let (mut parts, body) = resp.into_parts();
    for p in &route.plugins {
        p.on_response(&mut ctx, &mut parts);
    }
    for (n, v) in ctx.response_headers.drain(..) {
        parts.headers.append(n, v);
    }
    (Response::from_parts(parts, body), Some(ctx))
}

fn respond_reply(
    reply: Reply,
    route: &RouteRuntime,
    ctx: RequestCtx,
    rec: &mut Record,
) -> (Response<RespBody>, Option<RequestCtx>) {
    if let Reply::Error { code, .. } = &reply {
        rec.error = Some(code);
    }
    let resp = match reply {
        Reply::Error {
            status,
            code,
            message,
            headers,
        } => {
            let mut r = render(&GatewayError::new(status, code, message), &ctx.request_id);
            for (n, v) in headers {
                r.headers_mut().append(n, v);
            }
            r
        }
        Reply::Raw {
            status,
            headers,
            body,
        } => {
            let mut r = Response::new(RespBody::full(body));
            *r.status_mut() = status;
            for (n, v) in headers {
                r.headers_mut().append(n, v);
            }
            r
        }
    };
    response_phase(resp, route, ctx)
}

/// Copies bytes both ways between an upgraded client and upstream connection.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "tunnel closed");
    }
}

/// Keeps a sane client `X-Request-ID` (1-128 of `[A-Za-z0-9._:/+=-]`), else makes one.
fn request_id(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:/+=-".contains(c))
        {
            return v.clone();
        }
    }
    new_request_id()
}

/// A fresh random request ID: 32 hex digits.
pub(crate) fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let r = fastrand::u128(..);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((r >> (i * 4)) & 0xf) as usize];
    }
    // Owned by one allocation that its clones (request, response, log) share: a value copied
    // from a slice would allocate again at its first clone.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// The real client: the peer, or for a trusted peer the right-most untrusted address of
/// `X-Forwarded-For`.
fn client_ip(peer: IpAddr, h: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    for v in h.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(s) = v.to_str() else { break };
        for part in s.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !is_trusted(ip, trusted) {
                return ip;
            }
        }
    }
    client
}

/// An address as text, on the stack; IPv4 by hand, because `Display` for addresses showed in
/// profiles.
struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut t = IpText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if o >= 100 {
                        t.push(b'0' + o / 100);
                    }
                    if o >= 10 {
                        t.push(b'0' + (o / 10) % 10);
                    }
                    t.push(b'0' + o % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                let mut rest = &mut t.buf[..];
                // The longest IPv6 text (an IPv4-mapped address in full) is 45 bytes.
                if write!(rest, "{v6}").is_ok() {
                    t.len = 45 - rest.len();
                }
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

/// Sets X-Forwarded-For/-Proto/-Host: appended to for trusted peers, replaced otherwise.
fn set_forwarded(
    h: &mut HeaderMap,
    peer: IpAddr,
    trusted: &[IpNet],
    tls: bool,
    host: Option<&HeaderValue>,
) {
    let trusted_peer = !trusted.is_empty() && is_trusted(peer, trusted);
    let peer_s = IpText::new(peer);
    let xff = if trusted_peer && h.contains_key(&X_FORWARDED_FOR) {
        let mut joined = String::new();
        for v in h.get_all(&X_FORWARDED_FOR) {
            if let Ok(s) = v.to_str() {
                if !joined.is_empty() {
                    joined.push_str(", ");
                }
                joined.push_str(s);
            }
        }
        joined.push_str(", ");
        joined.push_str(peer_s.as_str());
        HeaderValue::from_str(&joined)
    } else {
        // One allocation, of the exact size.
        HeaderValue::from_bytes(peer_s.as_bytes())
    };
    if let Ok(v) = xff {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !(trusted_peer && h.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if tls { "https" } else { "http" };
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(trusted_peer && h.contains_key(&X_FORWARDED_HOST))
        && let Some(v) = host
    {
        h.insert(X_FORWARDED_HOST.clone(), v.clone());
    }
}

fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

/// An HTTP/1.1 WebSocket upgrade request.
fn is_websocket(parts: &http::request::Parts) -> bool {
    parts.method == Method::GET
        && parts.version == Version::HTTP_11
        && parts
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| has_token(v, "websocket"))
        && parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

/// Removes hop-by-hop headers, including those named by `Connection`. `TE: trailers` stays
/// (gRPC needs it end to end, as in Envoy); an upgrade keeps `Connection: upgrade`/`Upgrade`.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the (few) headers finds whether any hop-by-hop header is there at all;
    // most requests have none but `Connection: keep-alive`, and hashed lookups of eight names
    // in both directions showed in profiles.
    let mut found = false;
    for name in h.keys() {
        if is_hop_by_hop(name) {
            found = true;
            break;
        }
    }
    if !found {
        return;
    }
    if h.contains_key(header::CONNECTION) {
        // Names listed in Connection; `keep-alive`, `close` and `upgrade` are handled below.
        let mut named: Vec<HeaderName> = Vec::new();
        for v in h.get_all(header::CONNECTION) {
            let Ok(s) = v.to_str() else { continue };
            for t in s.split(',') {
                let t = t.trim();
                if t.is_empty()
                    || t.eq_ignore_ascii_case("keep-alive")
                    || t.eq_ignore_ascii_case("close")
                    || t.eq_ignore_ascii_case("upgrade")
                {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(t.as_bytes()) {
                    named.push(n);
                }
            }
        }
        for n in named {
            h.remove(n);
        }
        h.remove(header::CONNECTION);
        if keep_upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::TRAILER);
    if !keep_upgrade {
        h.remove(header::UPGRADE);
    }
    if let Some(te) = h.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        h.remove(header::TE);
    }
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::TRANSFER_ENCODING
        || n == header::TRAILER
        || n == header::UPGRADE
        || n == header::TE
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
}

/// Applies `strip_prefix` then `path_regex` to the path, and the Host rewrite.
fn rewrite(parts: &mut http::request::Parts, rw: &Rewrite) {
    let path = parts.uri.path();
    let mut new_path: Option<String> = None;
    if let Some(prefix) = &rw.strip_prefix
        && let Some(rest) = path.strip_prefix(prefix.as_str())
    {
        new_path = Some(if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        });
    }
    if let Some((re, replacement)) = &rw.path_regex {
        let current = new_path.as_deref().unwrap_or(path);
        if re.is_match(current) {
            new_path = Some(re.replace(current, replacement.as_str()).into_owned());
        }
    }
    if let Some(p) = new_path {
        let pq = match parts.uri.query() {
            Some(q) => format!("{p}?{q}"),
            None => p,
        };
        if let Ok(uri) = Uri::builder().path_and_query(pq).build() {
            parts.uri = uri;
        }
    }
    if let Some(h) = &rw.host {
        parts.headers.insert(header::HOST, h.clone());
    }
}

/// The consistent-hash key of a request.
fn request_hash(key: &HashKey, parts: &http::request::Parts, client: IpAddr) -> u64 {
    match key {
        HashKey::Header(n) => parts.headers.get(n).map_or(0, |v| hash_key(v.as_bytes())),
        HashKey::Cookie(name) => parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| hash_key(v.as_bytes()))
            })
            .unwrap_or(0),
        HashKey::Query(name) => parts
            .uri
            .query()
            .and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then(|| hash_key(v.as_bytes()))
                })
            })
            .unwrap_or(0),
        HashKey::ClientIp => match client {
            IpAddr::V4(a) => hash_key(&a.octets()),
            IpAddr::V6(a) => hash_key(&a.octets()),
        },
        HashKey::Path => hash_key(parts.uri.path().as_bytes()),
    }
}

#[cfg(test)]
mod tests;
