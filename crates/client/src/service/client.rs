//! The service client: a call is routed to its origin's upstream, redirects are followed
//! between hops, and the call is traced and counted.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Uri, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::Instrument;
use tracing::field::Empty;

use super::builder::{ClientBuilder, Settings};
use super::origin::{Origin, OriginKey, Origins};
use super::redirect::{self, Next, Redirect, Redirects};
use super::request::{CallOptions, RequestBuilder};
use super::response::{Body, Response};
use super::setup::{build_tls, origin_of};
use super::stats::{ClientStats, OriginStats};
use super::trace::{CallHook, TraceIds};
use crate::body::ResponseBody;
use crate::dns::Dns;
use crate::error::{Error, ErrorKind};
use crate::upstream::{ReplayBody, RequestBody};

/// Redirect bodies up to this size are read so their connection can be reused.
const DRAIN_MAX: u64 = 64 * 1024;

/// An HTTP client for services: an origin (scheme, host, port) gets its own pool, breaker,
/// retry budget, passive health and DNS entry on first use; no timeout is infinite; failures
/// say what happened and where. Cheap to clone (one shared state); use one per process.
///
/// ```no_run
/// # async fn demo() -> Result<(), portcullis_client::Error> {
/// let client = portcullis_client::Client::builder().build()?;
/// let resp = client
///     .get("https://api.example.com/v1/users/7")
///     .header("accept", "application/json")
///     .send()
///     .await?;
/// println!("{} after {} redirects", resp.status(), resp.redirects().len());
/// let body = resp.bytes().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(super) inner: Arc<ClientInner>,
}

/// A client held without keeping it alive (for collectors).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct WeakClient(std::sync::Weak<ClientInner>);

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl WeakClient {
    pub(crate) fn upgrade(&self) -> Option<Client> {
        self.0.upgrade().map(|inner| Client { inner })
    }
}

pub(super) struct ClientInner {
    pub(super) s: Settings,
    pub(super) origins: Origins,
    pub(super) tls: OnceLock<Result<TlsConnector, String>>,
    pub(super) dns: OnceLock<Result<Arc<Dns>, String>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("origins", &self.inner.origins.len())
            .finish()
    }
}

impl Client {
    /// A client with the defaults (see [`ClientBuilder`]).
    pub fn new() -> Self {
        Self::from_settings_unchecked(ClientBuilder::default().into_settings())
    }

    /// A builder, with every default set.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_settings(s: Settings) -> Result<Self, Error> {
        let eager = s.tls.ca_pem.is_some() || s.tls.identity.is_some() || s.tls.config.is_some();
        let client = Self::from_settings_unchecked(s);
        if eager {
            // Given TLS material is checked now, so a bad file fails the build.
            let tls = build_tls(&client.inner.s)?;
            let _ = client.inner.tls.set(Ok(tls));
        }
        Ok(client)
    }

    fn from_settings_unchecked(s: Settings) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                origins: Origins::new(s.max_origins, s.origin_idle_timeout),
                s,
                tls: OnceLock::new(),
                dns: OnceLock::new(),
            }),
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn downgrade(&self) -> WeakClient {
        WeakClient(Arc::downgrade(&self.inner))
    }

    /// A `GET` request.
    pub fn get<U>(&self, url: U) -> RequestBuilder
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<http::Error>,
    {
        self.request(Method::GET, url)
    }

    /// A `POST` request.
    pub fn post<U>(&self, url: U) -> RequestBuilder
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<http::Error>,
    {
        self.request(Method::POST, url)
    }

    /// A `PUT` request.
    pub fn put<U>(&self, url: U) -> RequestBuilder
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<http::Error>,
    {
        self.request(Method::PUT, url)
    }

    /// A `PATCH` request.
    pub fn patch<U>(&self, url: U) -> RequestBuilder
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<http::Error>,
    {
        self.request(Method::PATCH, url)
    }

    /// A `DELETE` request.
    pub fn delete<U>(&self, url: U) -> RequestBuilder
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<http::Error>,
    {
        self.request(Method::DELETE, url)
    }

    /// A `HEAD` request.
    pub fn head<U>(&self, url: U) -> RequestBuilder
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<http::Error>,
    {
        self.request(Method::HEAD, url)
    }

    /// A request with any method. The URL must be absolute, `http` or `https`.
    pub fn request<U>(&self, method: Method, url: U) -> RequestBuilder
    where
        Uri: TryFrom<U>,
        <Uri as TryFrom<U>>::Error: Into<http::Error>,
    {
        RequestBuilder::new(self.clone(), method, url)
    }

    /// Sends an [`http::Request`] with an absolute URL; [`CallOptions`] in its extensions
    /// set this call's deadline and redirect policy.
    pub async fn execute(&self, req: Request<RequestBody>) -> Result<Response, Error> {
        let opts = req
            .extensions()
            .get::<CallOptions>()
            .copied()
            .unwrap_or_default();
        let s = &self.inner.s;
        let redirects = opts.redirects.unwrap_or(s.redirects);
        let deadline = opts.timeout.or(s.timeout).map(|d| (Instant::now() + d, d));
        let uri = req.uri();
        let span = tracing::info_span!(
            "http.client.request",
            http.request.method = %req.method(),
            url.scheme = uri.scheme_str().unwrap_or(""),
            server.address = uri.host().unwrap_or(""),
            url.path = uri.path(),
            trace_id = Empty,
            http.response.status_code = Empty,
            redirects = Empty,
            error = Empty,
        );
        let result = self
            .run(req, redirects, deadline, &span)
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            match &result {
                Ok(r) => {
                    span.record("http.response.status_code", r.status().as_u16());
                    span.record("redirects", r.redirects().len());
                }
                Err(e) => {
                    span.record("error", e.kind().reason());
                }
            }
        }
        result
    }

    /// [`execute`](Self::execute), answering an [`http::Response`].
    pub async fn execute_http(
        &self,
        req: Request<RequestBody>,
    ) -> Result<http::Response<Body>, Error> {
        Ok(self.execute(req).await?.into_http())
    }

    /// Counters of every origin held now.
    pub fn stats(&self) -> ClientStats {
        let o = &self.inner.origins;
        ClientStats {
            origins: o.all().iter().map(|o| OriginStats::of(o)).collect(),
            origins_created: o.created.load(std::sync::atomic::Ordering::Relaxed),
            origins_dropped: o.dropped.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Counters of the origin of `url`, when it is held.
    pub fn origin_stats(&self, url: &str) -> Option<OriginStats> {
        let uri: Uri = url.parse().ok()?;
        let (https, host, port) = origin_of(&uri).ok()?;
        self.inner
            .origins
            .get(&OriginKey { https, host, port })
            .map(|o| OriginStats::of(&o))
    }

    async fn run(
        &self,
        req: Request<RequestBody>,
        policy: Redirects,
        deadline: Option<(Instant, Duration)>,
        span: &tracing::Span,
    ) -> Result<Response, Error> {
        let s = &self.inner.s;
        let (parts, mut body) = req.into_parts();
        let (mut method, mut uri, mut headers) = (parts.method, parts.uri, parts.headers);
        for (name, value) in &s.default_headers {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        let ids = TraceIds::of(&headers);
        if s.trace_context && !span.is_disabled() {
            span.record("trace_id", format_args!("{:032x}", ids.trace_id));
        }
        let follow = policy.max() > 0;
        let mut hops: Vec<Redirect> = Vec::new();
        loop {
            let origin = self.origin_for(&uri)?;
            origin
                .counters
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // What a redirect needs after the request is gone: its body (when replayable)
            // and headers.
            let replay = if follow { body.replay_bytes() } else { None };
            let mut request = Request::new(body);
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = if follow {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let hook = CallHook {
                ids,
                inject: s.trace_context,
                call: span,
                hop: hops.len() as u32,
            };
            let send = origin.upstream.send_with(request, None, Some(&hook));
            let sent = match deadline {
                Some((at, d)) => tokio::time::timeout_at(at, send)
                    .await
                    .unwrap_or_else(|_| Err(deadline_error(d))),
                None => send.await,
            };
            let resp = match sent {
                Ok(r) => r,
                Err(e) => return Err(fail(&origin, e)),
            };
            let status = resp.status();
            if follow && status.is_redirection() {
                let next = redirect::next(
                    policy,
                    hops.len() as u32,
                    status,
                    &method,
                    &uri,
                    resp.headers().get(header::LOCATION),
                    replay.is_some(),
                );
                match next {
                    Next::Return => {}
                    Next::Refuse(e) => return Err(fail(&origin, e)),
                    Next::Follow {
                        to,
                        method: next_method,
                        keep_body,
                    } => {
                        drain(resp.into_body(), deadline).await;
                        origin
                            .counters
                            .redirects
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let cross = !redirect::same_origin(&uri, &to);
                        redirect::next_headers(&mut headers, cross, keep_body);
                        tracing::debug!(from = %uri, to = %to, status = status.as_u16(), cross_origin = cross, "following redirect");
                        hops.push(Redirect {
                            from: std::mem::replace(&mut uri, to),
                            status,
                            to: uri.clone(),
                        });
                        method = next_method;
                        body = match replay {
                            Some(b) if keep_body => RequestBody::from_bytes(b),
                            _ => RequestBody::Empty,
                        };
                        continue;
                    }
                }
            }
            return Ok(Response::new(resp, deadline, origin, uri, hops));
        }
    }
}

fn fail(origin: &Origin, e: Error) -> Error {
    // No address because the name did not resolve: say so, with the resolver's reason.
    let e = match e.kind() {
        ErrorKind::NoHealthyTarget => match origin.upstream.dns_failure() {
            Some(dns) => dns.with_attempts(e.attempts()),
            None if !origin.upstream.resolved() => Error::new(ErrorKind::ConnectTimeout)
                .with_timeout(origin.upstream.config().timeouts.connect)
                .with_source("no DNS answer within the connect timeout"),
            None => e,
        },
        _ => e,
    };
    origin.counters.record_failure(e.kind());
    e.with_origin(origin.name.clone())
}

fn deadline_error(d: Duration) -> Error {
    Error::new(ErrorKind::DeadlineExceeded).with_timeout(d)
}

/// Reads a small redirect body so its connection goes back to the pool; a large or slow one
/// is dropped (its connection closed) instead.
async fn drain(body: ResponseBody<RequestBody>, deadline: Option<(Instant, Duration)>) {
    if body.is_end_stream() || body.size_hint().upper().is_none_or(|n| n > DRAIN_MAX) {
        return;
    }
    let mut limit = Instant::now() + Duration::from_secs(1);
    if let Some((at, _)) = deadline {
        limit = limit.min(at);
    }
    let _ = tokio::time::timeout_at(limit, body.collect()).await;
}

/// Compile-time check: a call's future can move between threads.
#[allow(dead_code)]
fn assert_send(c: &Client, r: Request<RequestBody>) {
    fn is_send<T: Send>(_: T) {}
    is_send(c.execute(r));
    let _ = HeaderMap::new();
}
