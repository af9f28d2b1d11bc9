//! Plugins every route has: request ID propagation and the route's header transforms. They
//! run through the same pipeline as configured plugins: first and last respectively.

use http::{HeaderName, HeaderValue};

use crate::{Plugin, RequestCtx, Step};

/// `X-Request-ID` header name.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Sends the request ID upstream and back to the client.
#[derive(Debug, Default)]
pub struct RequestId;

impl Plugin for RequestId {
    fn name(&self) -> &'static str {
        "request_id"
    }

    fn on_upstream_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        req.headers
            .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
        Step::CONTINUE
    }

    fn on_response(&self, ctx: &mut RequestCtx, resp: &mut http::response::Parts) {
        resp.headers
            .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    }
}

/// Header operations: removed, then set (replacing), then added (appending).
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    /// Replace or create.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Delete.
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// Whether nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the operations to a header map.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}

/// A route's `request_headers` and `response_headers`.
#[derive(Debug, Default)]
pub struct HeaderTransform {
    /// Applied to the request going upstream.
    pub request: HeaderOps,
    /// Applied to the response going to the client.
    pub response: HeaderOps,
}

impl Plugin for HeaderTransform {
    fn name(&self) -> &'static str {
        "headers"
    }

    fn on_upstream_request<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        self.request.apply(&mut req.headers);
        Step::CONTINUE
    }

    fn on_response(&self, _ctx: &mut RequestCtx, resp: &mut http::response::Parts) {
        self.response.apply(&mut resp.headers);
    }
}
