//! Body types of the proxy: the client's request body as sent upstream (counted against the
//! listener's limit as it streams) and the response body sent to the client. Enums rather than
//! boxed trait objects, so the hot path allocates nothing for them.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use portcullis_client::{BoxError, ResponseBody};

/// The request body exceeded `max_body_bytes` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit.
    pub limit: u64,
}

/// A request body on its way upstream.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// A small body read whole before sending, so a retry can send it again; the second field
    /// keeps the whole body for that.
    Buffered(Option<Bytes>, Bytes),
    /// The client's body, with the bytes it may still send.
    Stream {
        /// The client's body.
        inner: Incoming,
        /// Bytes left before the limit.
        remaining: u64,
        /// The limit, for the error.
        limit: u64,
        /// Bytes passed so far, when someone counts them (a body without Content-Length).
        counted: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    },
}

impl ReqBody {
    /// Wraps a client body with a size limit; `counted`, when given, follows the bytes passed.
    pub fn limited(
        inner: Incoming,
        limit: u64,
        counted: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    ) -> Self {
        if inner.is_end_stream() {
            return ReqBody::Empty;
        }
        ReqBody::Stream {
            inner,
            remaining: limit,
            limit,
            counted,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Buffered(b, _) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ReqBody::Stream {
                inner,
                remaining,
                limit,
                counted,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        let n = d.len() as u64;
                        if n > *remaining {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                                limit: *limit,
                            }))));
                        }
                        *remaining -= n;
                        if let Some(c) = counted {
                            c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Buffered(b, _) => b.is_none(),
            ReqBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Buffered(b, _) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            ReqBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

impl portcullis_client::ReplayBody for ReqBody {
    fn replay_bytes(&self) -> Option<Bytes> {
        match self {
            ReqBody::Empty => Some(Bytes::new()),
            ReqBody::Buffered(_, all) => Some(all.clone()),
            ReqBody::Stream { .. } => None,
        }
    }

    fn from_bytes(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            ReqBody::Empty
        } else {
            ReqBody::Buffered(Some(bytes.clone()), bytes)
        }
    }
}

impl ReqBody {
    /// Reads a body of known, small length whole, so it can be replayed; `Err` when the
    /// client fails or sends more than it announced.
    pub async fn buffer(mut inner: Incoming, len: u64) -> Result<Self, BoxError> {
        use http_body_util::BodyExt;
        let mut buf = bytes::BytesMut::with_capacity(len as usize);
        while let Some(frame) = inner.frame().await {
            if let Ok(d) = frame?.into_data() {
                if (buf.len() + d.len()) as u64 > len {
                    return Err("request body longer than its Content-Length".into());
                }
                buf.extend_from_slice(&d);
            }
        }
        Ok(Self::from_bytes_frozen(buf.freeze()))
    }

    fn from_bytes_frozen(b: Bytes) -> Self {
        <Self as portcullis_client::ReplayBody>::from_bytes(b)
    }
}

pin_project_lite::pin_project! {
    /// A response body on its way to the client.
    #[project = RespBodyProj]
    #[derive(Debug)]
    pub enum RespBody {
        /// Streamed from an upstream.
        Upstream { #[pin] body: ResponseBody<ReqBody> },
        /// Made by the gateway; `None` once sent.
        Full { data: Option<Bytes> },
    }
}

impl RespBody {
    /// A body of these bytes.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        RespBody::Full {
            data: (!b.is_empty()).then_some(b),
        }
    }

    /// Streams an upstream body.
    pub fn upstream(body: ResponseBody<ReqBody>) -> Self {
        RespBody::Upstream { body }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            RespBodyProj::Upstream { body } => body
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
            RespBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Upstream { body } => body.is_end_stream(),
            RespBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Upstream { body } => body.size_hint(),
            RespBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
