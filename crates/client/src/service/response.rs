//! The response of a service call: head, the redirects that led to it, and a body that
//! streams under the read idle timeout and the call's deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::origin::Origin;
use super::redirect::Redirect;
use crate::body::ResponseBody;
use crate::error::{Error, ErrorKind};
use crate::upstream::RequestBody;

pin_project! {
    /// A response body: streams from the connection, fails with `ReadIdleTimeout` after the
    /// read idle timeout without a frame and with `DeadlineExceeded` past the call's
    /// deadline. Read to the end, its connection goes back to the pool; dropped before, the
    /// connection is closed, never reused half-read.
    pub struct Body {
        #[pin]
        inner: ResponseBody<RequestBody>,
        deadline: Option<(Pin<Box<Sleep>>, Duration)>,
        origin: Arc<Origin>,
        failed: bool,
    }
}

impl Body {
    pub(crate) fn new(
        inner: ResponseBody<RequestBody>,
        deadline: Option<(Instant, Duration)>,
        origin: Arc<Origin>,
    ) -> Self {
        Self {
            inner,
            deadline: deadline.map(|(at, d)| (Box::pin(tokio::time::sleep_until(at)), d)),
            origin,
            failed: false,
        }
    }

    /// The next chunk of data; `None` at the end (trailers are skipped).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        while let Some(frame) = self.frame().await {
            if let Ok(data) = frame?.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let fail = |e: Error, origin: &Origin| {
            origin.counters.record_failure(e.kind());
            e.with_origin(origin.name.clone())
        };
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                *this.failed = true;
                Poll::Ready(Some(Err(fail(e, this.origin))))
            }
            Poll::Pending => {
                if let Some((sleep, d)) = this.deadline
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    *this.failed = true;
                    let e = Error::new(ErrorKind::DeadlineExceeded).with_timeout(*d);
                    return Poll::Ready(Some(Err(fail(e, this.origin))));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("origin", &self.origin.name)
            .finish()
    }
}

/// A response: status, headers, the URL it came from, the redirects that led there, and
/// its body.
#[derive(Debug)]
pub struct Response {
    head: http::response::Parts,
    body: Body,
    url: Uri,
    redirects: Vec<Redirect>,
}

impl Response {
    pub(crate) fn new(
        resp: http::Response<ResponseBody<RequestBody>>,
        deadline: Option<(Instant, Duration)>,
        origin: Arc<Origin>,
        url: Uri,
        redirects: Vec<Redirect>,
    ) -> Self {
        let (head, body) = resp.into_parts();
        Self {
            head,
            body: Body::new(body, deadline, origin),
            url,
            redirects,
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.head.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The HTTP version spoken.
    pub fn version(&self) -> Version {
        self.head.version
    }

    /// The URL that answered (the last one, after redirects).
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The redirects followed to get here, in order; empty when none.
    pub fn redirects(&self) -> &[Redirect] {
        &self.redirects
    }

    /// The origin that answered, `scheme://host:port`.
    pub fn origin(&self) -> &str {
        &self.body.origin.name
    }

    /// The address (`ip:port`) that answered.
    pub fn remote_addr(&self) -> Option<&str> {
        self.body.inner.target()
    }

    /// Tries it took at the last hop (1 when the first try answered).
    pub fn attempts(&self) -> u32 {
        self.body.inner.attempts()
    }

    /// `Content-Length`, when the server gave one.
    pub fn content_length(&self) -> Option<u64> {
        self.body.size_hint().exact()
    }

    /// The next chunk of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        self.body.chunk().await
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, Error> {
        Ok(self.body.collect().await?.to_bytes())
    }

    /// The whole body as UTF-8 text (`ErrorKind::Decode` when it is not).
    pub async fn text(self) -> Result<String, Error> {
        let origin = self.body.origin.clone();
        let bytes = self.bytes().await?;
        String::from_utf8(bytes.into()).map_err(|e| decode_error(&origin, e))
    }

    /// The whole body parsed as JSON (`ErrorKind::Decode` when it does not parse as `T`).
    #[cfg(feature = "json")]
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, Error> {
        let origin = self.body.origin.clone();
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| decode_error(&origin, e))
    }

    /// The body, as an [`http_body::Body`] to stream.
    pub fn into_body(self) -> Body {
        self.body
    }

    /// An [`http::Response`]; the URL and redirects go into its extensions (as [`Uri`] and
    /// `Vec<Redirect>`).
    pub fn into_http(self) -> http::Response<Body> {
        let mut r = http::Response::from_parts(self.head, self.body);
        r.extensions_mut().insert(self.url);
        r.extensions_mut().insert(self.redirects);
        r
    }
}

fn decode_error(origin: &Origin, e: impl Into<crate::BoxError>) -> Error {
    origin.counters.record_failure(ErrorKind::Decode);
    Error::new(ErrorKind::Decode)
        .with_source(e)
        .with_origin(origin.name.clone())
}
