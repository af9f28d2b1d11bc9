//! Building a [`Client`]: defaults that are never infinite, and each setting with its reason.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, header};

use super::client::Client;
use super::redirect::Redirects;
use crate::breaker::BreakerConfig;
use crate::dns::DnsConfig;
use crate::error::{Error, ErrorKind};
use crate::health::PassiveHealthConfig;
use crate::pool::PoolConfig;
use crate::retry::RetryPolicy;
use crate::upstream::Timeouts;

/// The service client's timeouts: connect 5 s (DNS included), response header 30 s, read
/// idle 30 s. None is infinite.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    response_header: Duration::from_secs(30),
    read_idle: Duration::from_secs(30),
};

/// Pools per origin address: 32 idle connections kept, closed after 90 s idle, at most 256
/// open (a black-holed origin cannot take every file descriptor).
pub const DEFAULT_POOL: PoolConfig = PoolConfig {
    max_idle_per_host: 32,
    idle_timeout: Duration::from_secs(90),
    max_connections_per_host: 256,
};

/// TLS roots and identity, turned into a rustls config when the first https origin is used.
#[derive(Clone, Default)]
pub(crate) struct TlsOptions {
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) accept_invalid_certs: bool,
    pub(crate) config: Option<Arc<rustls::ClientConfig>>,
}

/// Everything a [`Client`] was built with.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) timeouts: Timeouts,
    pub(crate) pool: PoolConfig,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) breaker: Option<BreakerConfig>,
    pub(crate) passive_health: Option<PassiveHealthConfig>,
    pub(crate) redirects: Redirects,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_origins: usize,
    pub(crate) origin_idle_timeout: Duration,
    pub(crate) http2: bool,
    pub(crate) http2_prior_knowledge: bool,
    pub(crate) tls: TlsOptions,
    pub(crate) dns: DnsConfig,
    pub(crate) default_headers: HeaderMap,
    pub(crate) trace_context: bool,
}

/// Builds a [`Client`]. Every setting has a finite, documented default (see
/// `docs/client.md`); call only what you need to change.
#[must_use]
pub struct ClientBuilder {
    s: Settings,
    error: Option<Error>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        let mut default_headers = HeaderMap::new();
        default_headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("portcullis-client/", env!("CARGO_PKG_VERSION"))),
        );
        default_headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        Self {
            s: Settings {
                timeouts: DEFAULT_TIMEOUTS,
                pool: DEFAULT_POOL,
                retry: Some(RetryPolicy::default()),
                breaker: Some(BreakerConfig::default()),
                passive_health: Some(PassiveHealthConfig {
                    consecutive_failures: 5,
                    eject_for: Duration::from_secs(30),
                    max_ejected_percent: 50.0,
                }),
                redirects: Redirects::default(),
                timeout: None,
                max_origins: 256,
                origin_idle_timeout: Duration::from_secs(300),
                http2: true,
                http2_prior_knowledge: false,
                tls: TlsOptions::default(),
                dns: DnsConfig {
                    timeout: DEFAULT_TIMEOUTS.connect,
                    ..DnsConfig::default()
                },
                default_headers,
                trace_context: true,
            },
            error: None,
        }
    }
}

impl ClientBuilder {
    /// The three timeouts (connect with DNS, response header, read idle). A zero duration
    /// is refused by [`build`](Self::build): no timeout is ever infinite.
    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.s.timeouts = t;
        self.s.dns.timeout = t.connect;
        self
    }

    /// A deadline for each whole call: redirects, retries and reading the body included
    /// (`ErrorKind::DeadlineExceeded`). None by default; [`RequestBuilder::timeout`]
    /// overrides it per request.
    ///
    /// [`RequestBuilder::timeout`]: super::RequestBuilder::timeout
    pub fn timeout(mut self, d: Duration) -> Self {
        self.s.timeout = Some(d);
        self
    }

    /// Retries (idempotent requests or requests with an `Idempotency-Key`, full-jitter
    /// backoff, a budget per origin). Default: [`RetryPolicy::default`].
    pub fn retry(mut self, p: RetryPolicy) -> Self {
        self.s.retry = Some(p);
        self
    }

    /// No retries. A pooled connection found closed by the server before it answered is
    /// still replaced once, when that cannot duplicate the request.
    pub fn no_retry(mut self) -> Self {
        self.s.retry = None;
        self
    }

    /// The circuit breaker of each origin address; `None` turns it off.
    pub fn breaker(mut self, b: Option<BreakerConfig>) -> Self {
        self.s.breaker = b;
        self
    }

    /// Passive health (an origin's failing addresses ejected for a while); `None` turns it
    /// off.
    pub fn passive_health(mut self, p: Option<PassiveHealthConfig>) -> Self {
        self.s.passive_health = p;
        self
    }

    /// Connection pool of each origin address.
    pub fn pool(mut self, p: PoolConfig) -> Self {
        self.s.pool = p;
        self
    }

    /// Redirect policy; [`Redirects::none`] turns following off.
    pub fn redirects(mut self, r: Redirects) -> Self {
        self.s.redirects = r;
        self
    }

    /// Origins (scheme, host, port) held at once; at the cap, the longest idle is dropped to
    /// make room, and a call fails with `ErrorKind::OriginLimit` when none is idle.
    pub fn max_origins(mut self, n: usize) -> Self {
        self.s.max_origins = n;
        self
    }

    /// An origin nobody called for this long, with nothing in flight, is dropped with its
    /// pool, breaker, budget and DNS entry.
    pub fn origin_idle_timeout(mut self, d: Duration) -> Self {
        self.s.origin_idle_timeout = d;
        self
    }

    /// Whether https origins are offered HTTP/2 by ALPN (default true). A server that does
    /// not take it is spoken to in HTTP/1.1, and the downgrade is counted per origin.
    pub fn http2(mut self, on: bool) -> Self {
        self.s.http2 = on;
        self
    }

    /// Speak HTTP/2 without TLS (h2c, prior knowledge) to http origins.
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.s.http2_prior_knowledge = true;
        self
    }

    /// Trust these CA certificates (PEM) instead of the system's.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.s.tls.ca_pem = Some(pem.into());
        self
    }

    /// A client certificate and key (PEM) for mutual TLS.
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.s.tls.identity = Some((cert.into(), key.into()));
        self
    }

    /// A rustls config of your own (roots, verifier, identity); its ALPN list is replaced by
    /// the client's.
    pub fn tls_config(mut self, cfg: Arc<rustls::ClientConfig>) -> Self {
        self.s.tls.config = Some(cfg);
        self
    }

    /// Accepts any server certificate. Only for tests against self-signed servers: it makes
    /// TLS useless against an attacker.
    pub fn danger_accept_invalid_certs(mut self, on: bool) -> Self {
        self.s.tls.accept_invalid_certs = on;
        self
    }

    /// Name servers and caching of the resolver (the system's by default). Its timeout is
    /// capped by the connect timeout, which DNS is part of.
    pub fn dns(mut self, cfg: DnsConfig) -> Self {
        self.s.dns = cfg;
        self
    }

    /// A header sent with every request that does not set it (replaces the default
    /// `User-Agent` and `Accept` when named so).
    pub fn default_header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => {
                self.s.default_headers.insert(n, v);
            }
            (Err(e), _) => self.fail(e.into()),
            (_, Err(e)) => self.fail(e.into()),
        }
        self
    }

    /// Whether a W3C `traceparent` is put on every try (default true): the trace ID of the
    /// request's own `traceparent` when it has one, else a new one per call.
    pub fn trace_context(mut self, on: bool) -> Self {
        self.s.trace_context = on;
        self
    }

    pub(crate) fn into_settings(self) -> Settings {
        self.s
    }

    fn fail(&mut self, e: http::Error) {
        self.error
            .get_or_insert(Error::new(ErrorKind::InvalidRequest).with_source(e));
    }

    /// The client. Fails on a zero timeout, a zero origin cap, or unusable TLS material.
    pub fn build(self) -> Result<Client, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut s = self.s;
        // Name resolution is part of connecting: never longer than the connect timeout.
        s.dns.timeout = s.dns.timeout.min(s.timeouts.connect);
        let t = &s.timeouts;
        for (name, d) in [
            ("connect", t.connect),
            ("response_header", t.response_header),
            ("read_idle", t.read_idle),
            ("pool idle_timeout", s.pool.idle_timeout),
            ("origin_idle_timeout", s.origin_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::new(ErrorKind::InvalidRequest)
                    .with_source(format!("{name} must be more than zero")));
            }
        }
        if s.max_origins == 0 {
            return Err(
                Error::new(ErrorKind::InvalidRequest).with_source("max_origins must be at least 1")
            );
        }
        Client::from_settings(s)
    }
}
