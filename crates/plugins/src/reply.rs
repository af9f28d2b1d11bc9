//! A response made by a plugin instead of forwarding the request.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

/// An answer from a plugin. Errors are rendered by the gateway as the contract's JSON error,
/// with the request ID; raw replies are sent as they are.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A contract error: `{"error": {"status", "code", "message", "request_id"}}`.
    Error {
        /// HTTP status.
        status: StatusCode,
        /// Machine-readable code, e.g. `unauthorized`.
        code: &'static str,
        /// Human-readable message.
        message: String,
        /// Extra response headers (e.g. `WWW-Authenticate`, `Retry-After`).
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// A response with this status, headers and body.
    Raw {
        /// HTTP status.
        status: StatusCode,
        /// Response headers.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// Body.
        body: Bytes,
    },
}

impl Reply {
    /// A contract error without extra headers.
    pub fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Reply::Error {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
}
