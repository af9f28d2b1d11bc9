//! What can go wrong calling an upstream, where, and whether a retry is safe.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Boxed error source.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The kind of an upstream failure. Each has its own log reason and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The target's name did not resolve.
    Dns,
    /// The target refused the connection.
    ConnectRefused,
    /// Connecting (DNS and TLS included) took longer than the connect timeout.
    ConnectTimeout,
    /// Another connect failure (unreachable, reset during connect).
    Connect,
    /// The TLS handshake failed (certificate verification, protocol).
    Tls,
    /// The response head did not arrive within the response header timeout.
    ResponseHeaderTimeout,
    /// No response body bytes arrived within the read idle timeout.
    ReadIdleTimeout,
    /// A per-try timeout fired.
    PerTryTimeout,
    /// The whole-request deadline passed.
    DeadlineExceeded,
    /// The connection was closed or reset before a complete response.
    Reset,
    /// HTTP/2 REFUSED_STREAM: the upstream did not process the request.
    RefusedStream,
    /// The upstream's response could not be parsed.
    Protocol,
    /// Reading the request body from the client failed (client went away, body too large).
    RequestBody,
    /// No target is available (none configured, or all unhealthy or ejected).
    NoHealthyTarget,
    /// The circuit breaker of the chosen target is open.
    CircuitOpen,
    /// The per-target connection limit was reached and no connection freed in time.
    PoolExhausted,
    /// The request could not be built: a URL without `http`/`https` scheme or host, an
    /// invalid header name or value, a body that could not be encoded.
    InvalidRequest,
    /// A redirect was refused: too many, https to http, or an unusable `Location`.
    Redirect,
    /// The response body could not be decoded (not UTF-8, not the expected JSON).
    Decode,
    /// The client holds its maximum number of origins and none is idle enough to drop.
    OriginLimit,
}

impl ErrorKind {
    /// Short reason used in logs and as a metric label.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Connect => "connect_error",
            ErrorKind::Tls => "tls",
            ErrorKind::ResponseHeaderTimeout => "response_header_timeout",
            ErrorKind::ReadIdleTimeout => "read_idle_timeout",
            ErrorKind::PerTryTimeout => "per_try_timeout",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::Reset => "reset",
            ErrorKind::RefusedStream => "refused_stream",
            ErrorKind::Protocol => "protocol",
            ErrorKind::RequestBody => "request_body",
            ErrorKind::NoHealthyTarget => "no_healthy_target",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::PoolExhausted => "pool_exhausted",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Decode => "decode",
            ErrorKind::OriginLimit => "origin_limit",
        }
    }

    /// Whether a timer caused it.
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectTimeout
                | ErrorKind::ResponseHeaderTimeout
                | ErrorKind::ReadIdleTimeout
                | ErrorKind::PerTryTimeout
                | ErrorKind::DeadlineExceeded
        )
    }

    /// Whether it happened before any byte of the request could have reached the upstream.
    pub fn before_request_sent(self) -> bool {
        matches!(
            self,
            ErrorKind::Dns
                | ErrorKind::ConnectRefused
                | ErrorKind::ConnectTimeout
                | ErrorKind::Connect
                | ErrorKind::Tls
                | ErrorKind::NoHealthyTarget
                | ErrorKind::CircuitOpen
                | ErrorKind::PoolExhausted
                | ErrorKind::RefusedStream
                | ErrorKind::InvalidRequest
                | ErrorKind::OriginLimit
        )
    }

    /// Whether the failure is the upstream's (counts against its health and breaker).
    pub fn is_upstream_failure(self) -> bool {
        !matches!(
            self,
            ErrorKind::RequestBody
                | ErrorKind::NoHealthyTarget
                | ErrorKind::CircuitOpen
                | ErrorKind::DeadlineExceeded
                | ErrorKind::InvalidRequest
                | ErrorKind::Redirect
                | ErrorKind::Decode
                | ErrorKind::OriginLimit
        )
    }
}

/// An upstream call failure: its kind, the target it concerned and the underlying cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    origin: Option<Arc<str>>,
    target: Option<Arc<str>>,
    timeout: Option<Duration>,
    attempts: u32,
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            origin: None,
            target: None,
            timeout: None,
            attempts: 0,
            source: None,
        }
    }

    /// Sets the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Sets the target (`host:port`) this happened with.
    pub fn with_target(mut self, target: Arc<str>) -> Self {
        self.target = Some(target);
        self
    }

    /// Sets the origin (`scheme://host:port`) the call went to (service client).
    pub fn with_origin(mut self, origin: Arc<str>) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The origin (`scheme://host:port`), for calls made through [`Client`](crate::Client).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// Records the timeout that fired.
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Records how many tries were made.
    pub fn with_attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }

    /// Tries made before giving up (0 when none was made, e.g. no healthy target).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The timeout that fired, when a timer caused it.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The target, when one was chosen.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// Searches the cause chain for an error of type `T` (e.g. a body limit of the caller).
    pub fn find_source<T: StdError + 'static>(&self) -> Option<&T> {
        let mut cur: Option<&(dyn StdError + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static));
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<T>() {
                return Some(t);
            }
            cur = e.source();
        }
        None
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::Dns => "name resolution failed",
            ErrorKind::ConnectRefused => "connection refused",
            ErrorKind::ConnectTimeout => "connect timed out",
            ErrorKind::Connect => "connect failed",
            ErrorKind::Tls => "TLS handshake failed",
            ErrorKind::ResponseHeaderTimeout => "no response head in time",
            ErrorKind::ReadIdleTimeout => "response body stalled",
            ErrorKind::PerTryTimeout => "try timed out",
            ErrorKind::DeadlineExceeded => "request deadline exceeded",
            ErrorKind::Reset => "connection closed before a complete response",
            ErrorKind::RefusedStream => "stream refused by upstream",
            ErrorKind::Protocol => "malformed upstream response",
            ErrorKind::RequestBody => "reading the request body failed",
            ErrorKind::NoHealthyTarget => "no healthy upstream target",
            ErrorKind::CircuitOpen => "circuit breaker open",
            ErrorKind::PoolExhausted => "connection limit reached",
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::Redirect => "redirect refused",
            ErrorKind::Decode => "response body could not be decoded",
            ErrorKind::OriginLimit => "too many origins in use",
        };
        f.write_str(what)?;
        if let Some(o) = &self.origin {
            write!(f, " on {o}")?;
        }
        if let Some(t) = &self.target {
            write!(f, " ({t})")?;
        }
        if let Some(d) = self.timeout {
            write!(f, " after {d:?}")?;
        }
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
            let mut cur = s.source();
            while let Some(e) = cur {
                write!(f, ": {e}")?;
                cur = e.source();
            }
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Classifies a hyper error from sending a request or reading a response.
pub(crate) fn classify_hyper(e: hyper::Error) -> Error {
    let kind = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        ErrorKind::Protocol
    } else if e.is_user() || e.is_body_write_aborted() {
        // The request body we were streaming failed (client side).
        if source_is_body(&e) {
            ErrorKind::RequestBody
        } else {
            ErrorKind::Protocol
        }
    } else if h2_refused(&e) {
        ErrorKind::RefusedStream
    } else {
        ErrorKind::Reset
    };
    Error::new(kind).with_source(e)
}

fn source_is_body(e: &hyper::Error) -> bool {
    // hyper wraps the user's body error as the source of a "user body" error.
    e.source().is_some()
}

fn h2_refused(e: &hyper::Error) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = cur {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            return h2e.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cur = s.source();
    }
    false
}
