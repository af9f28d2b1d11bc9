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

/// The contract's JSON error body.
fn json_body(e: &GatewayError, request_id: &str) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        error: Inner {
            status: e.status.as_u16(),
            code: e.code,
            message: &e.message,
            request_id,
        },
    })
    .unwrap_or_default()
}

/// Renders `{"error": {...}}` with `Content-Type: application/json` and `X-Request-ID`.
pub fn render(e: &GatewayError, request_id: &HeaderValue) -> Response<RespBody> {
    let body = json_body(e, request_id.to_str().unwrap_or(""));
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

/// The same error as a whole HTTP/1.1 response that closes the connection, for the few
/// answers written below hyper (see `server::Counted`). `extra` is more header lines, each
/// ending in CRLF.
pub fn render_http1(e: &GatewayError, request_id: &str, extra: &[u8]) -> Vec<u8> {
    let body = json_body(e, request_id);
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-request-id: {request_id}\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n",
            e.status.as_u16(),
            e.status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}
