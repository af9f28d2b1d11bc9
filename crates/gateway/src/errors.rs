//! The one place where failures become HTTP responses: the contract's JSON error.

use http::{HeaderValue, Response, StatusCode, header};
use portcullis_client::ErrorKind;
use serde::Serialize;

use crate::body::RespBody;

/// An error the gateway answers itself.
#[derive(Debug, Clone)]
pub struct GatewayError {
    /// HTTP status.
    pub status: StatusCode,
    /// Contract code, e.g. `upstream_timeout`.
    pub code: &'static str,
    /// Message for the client.
    pub message: String,
}

impl GatewayError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 bad_request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// Maps an upstream client failure to the contract's status and code.
    pub fn from_upstream(kind: ErrorKind) -> Self {
        use ErrorKind::*;
        let (status, code, msg) = match kind {
            ConnectTimeout
            | ResponseHeaderTimeout
            | ReadIdleTimeout
            | PerTryTimeout
            | DeadlineExceeded => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            ),
            NoHealthyTarget => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                "no healthy upstream target",
            ),
            CircuitOpen => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                "the upstream is failing; its circuit breaker is open",
            ),
            PoolExhausted => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                "the upstream's connection limit is reached",
            ),
            RequestBody => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            ),
            _ => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "the upstream failed to answer",
            ),
        };
        Self::new(status, code, format!("{msg} ({})", kind.reason()))
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

/// Renders `{"error": {...}}` with `Content-Type: application/json` and `X-Request-ID`.
pub fn render(e: &GatewayError, request_id: &HeaderValue) -> Response<RespBody> {
    let body = serde_json::to_vec(&Envelope {
        error: Inner {
            status: e.status.as_u16(),
            code: e.code,
            message: &e.message,
            request_id: request_id.to_str().unwrap_or(""),
        },
    })
    .unwrap_or_default();
    let mut resp = Response::new(RespBody::full(body));
    *resp.status_mut() = e.status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        portcullis_plugins::builtin::X_REQUEST_ID.clone(),
        request_id.clone(),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
