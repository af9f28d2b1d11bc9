//! Per-request state shared by the plugins of one request.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, HeaderName, HeaderValue};

use crate::client_cert::ClientIdentity;

/// State of one request as it passes through the pipeline.
#[derive(Debug)]
pub struct RequestCtx {
    /// The request ID (from a sane client `X-Request-ID`, else generated).
    pub request_id: HeaderValue,
    /// The client's address after `trusted_proxies` (the real client, not the last proxy).
    pub client_ip: IpAddr,
    /// The listener's name.
    pub listener: Arc<str>,
    /// The matched route's name.
    pub route: Arc<str>,
    /// The authenticated consumer or user, when a plugin identified one.
    pub consumer: Option<String>,
    /// The client certificate the TLS handshake verified (mTLS listeners), if one was presented.
    pub client_cert: Option<Arc<ClientIdentity>>,
    /// Set when `client_cert` admitted the request on the strength of that certificate: the
    /// access log then names its subject.
    pub client_cert_authenticated: bool,
    /// The route's whole-request deadline, when it has one.
    pub timeout: Option<std::time::Duration>,
    /// Headers to add to the response to the client (e.g. rate limit state).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Typed per-request values plugins pass to each other or to later phases.
    pub extensions: Extensions,
}

/// The route name of a request not routed yet: one shared empty name, not one per request.
static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));

impl RequestCtx {
    /// A context for a request on `listener` from `client_ip`.
    pub fn new(request_id: HeaderValue, client_ip: IpAddr, listener: Arc<str>) -> Self {
        Self {
            request_id,
            client_ip,
            listener,
            route: NO_ROUTE.clone(),
            consumer: None,
            client_cert: None,
            client_cert_authenticated: false,
            timeout: None,
            response_headers: Vec::new(),
            extensions: Extensions::new(),
        }
    }
}
